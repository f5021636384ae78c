"""Which layer of a trained model should embed? Retrieval quality of every candidate layer,
measured so that training never sees the query photos.

1. **Products outside the index** (per seed): the catalogue is split 80/20 per category with
   ``vitrine.catalog.stratified_split``; a model is trained on the 80 % only (its own
   train/validation split inside it), the 80 % is indexed and the 20 % query it, at full size
   and downscaled to 60×80 (JPEG q75). Reported: category precision@5 overall and per category.
2. **Fine-grained proxy** (no catalogue of another kind of product is available here): whole
   categories are held out of training, and within them each photo queries the others
   (leave-one-out) for the same brand (first word of the name), the same colour, the same
   article type and the same category; precision@1, pretrained vs trained.

``--train-fraction F`` trains on a fraction F of the indexed photos (a learning curve).
``--models N`` averages the trained layers of N models (seeds ``train_seed + 100·m``) to
measure what an ensemble would add; the product trains one.

The frozen layers run once per photo and view (``train_views``, as ``vitrine train``) and the
training is ``vitrine.train_fit.fit_cached``, the code ``vitrine train`` runs (refit included).
A ``--cache`` file holds the maps before the first tapped or fine-tuned block and serves runs
that cut at that block or later, with at most as many views. With ``--set
train_companion=NAME`` the companion backbone's pooled features are cached too (use another
``--cache`` file).

    python benchmarks/train_quality.py --catalog ../shared/data/demo-catalog \\
        --weights ../shared/models/mobilenet_v2_imagenet.pth --seeds 0,1,2,3,4 \\
        > benchmarks/results/train_quality.json
"""

from __future__ import annotations

import argparse
import io
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vitrine.catalog import Product, read_catalog, stratified_split
from vitrine.config import Settings
from vitrine.images import open_image, to_array
from vitrine.model_eval import retrieval_metrics
from vitrine.models import get_spec, load_state_dict, taps_for
from vitrine.split import group_split
from vitrine.train_data import FeatureCache, frozen_pass
from vitrine.train_fit import clean_outputs, fit_cached
from vitrine.trained_net import build_trained_net, combine

LAYERS = ["imagenet", "pooled", "hidden", "probs", "imagenet+hidden@0.5",
          "imagenet+hidden@0.7", "imagenet+hidden@0.8", "pooled+hidden@0.5",
          "imagenet+probs@0.5", "imagenet+probs@0.7", "imagenet+probs@0.8",
          "imagenet+probs@0.9", "pooled+probs@0.5", "hidden+probs@0.7", "hidden+probs@0.8",
          "hidden+probs@0.9"]
HOLDOUTS = [["relogio_feminino", "relogio_masculino"], ["x_bolsa_feminina",
                                                         "x_camiseta_masculina"]]


def lowres(path: Path, prep) -> np.ndarray:
    img = Image.open(path).convert("RGB").resize((60, 80), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=75)
    return to_array(open_image(buf.getvalue(), draft_size=prep.draft_size), prep)


def build(settings: Settings, n_classes: int):
    spec = get_spec(settings.backbone)
    return build_trained_net(spec, load_state_dict(spec, settings.weights),
                             settings.train_fine_tune_from, n_classes,
                             settings.train_head_units, settings.train_dropout,
                             settings.train_companion,
                             replace(spec.preprocessing, resize=settings.resize),
                             taps_for(spec, settings.train_taps))


def frozen_cache(products: list[Product], settings: Settings, path: Path | None):
    """(maps of the views of every photo, maps of its 60×80 copy) through the frozen base,
    and with a companion backbone its pooled features of both ('side', 'side_low').

    A cache file made with an earlier cut is brought forward through the blocks between
    (exact: those blocks are frozen too)."""
    net = build(settings, 2).to(memory_format=torch.channels_last).eval()
    if path is not None and path.is_file():
        data = torch.load(path)
        cut = data.get("cut", 15)
        if cut > len(net.base):
            raise SystemExit(f"{path} was cached at block {cut}, after the fine-tuned blocks.")
        if data["maps"].shape[1] < settings.train_views:
            raise SystemExit(f"{path} holds {data['maps'].shape[1]} views per photo, fewer "
                             f"than train_views={settings.train_views}.")
        if data.get("companion", "") != settings.train_companion:
            raise SystemExit(f"{path} was cached with companion {data.get('companion')!r}.")
        between = torch.nn.Sequential(*list(net.base)[cut:])
        with torch.no_grad():
            for key in ("maps", "low"):
                x = data[key]
                flat = x.reshape(-1, *x.shape[-3:])
                out = torch.cat([between(flat[i:i + 256]) for i in range(0, len(flat), 256)])
                data[key] = out.reshape(*x.shape[:-3], *out.shape[1:]).contiguous()
        return data
    spec = get_spec(settings.backbone)
    prep = replace(spec.preprocessing, resize=settings.resize)
    cache = frozen_pass(net.base, [p.image for p in products], range(settings.train_views),
                        prep, seed=settings.train_seed, companion=net.companion)
    low, side_low = [], []
    with torch.no_grad():
        for i in range(0, len(products), 32):
            x = torch.from_numpy(np.stack([lowres(p.image, prep) for p in products[i:i + 32]]))
            low.append(net.base(x).contiguous())
            if net.companion is not None:
                side_low.append(net.companion(x))
    data = {"ids": [p.product_id for p in products], "maps": cache.maps, "low": torch.cat(low),
            "cut": len(net.base), "companion": settings.train_companion,
            "side": cache.side, "side_low": torch.cat(side_low) if side_low else None}
    if path is not None:
        torch.save(data, path)
    return data


def train_on(data: dict, idx: np.ndarray, labels: list[str], settings: Settings):
    """Train on photos ``idx`` (85/15 train/validation); returns the net and its classes."""
    classes = sorted({labels[i] for i in idx})
    pos = {c: j for j, c in enumerate(classes)}
    names = group_split([labels[i] for i in idx], [], 0.15, 0.0, settings.train_seed)
    tr = idx[[n == "train" for n in names]]
    va = idx[[n == "val" for n in names]]
    torch.manual_seed(settings.train_seed)  # the new head's initial weights, as vitrine train
    net = build(settings, len(classes)).to(memory_format=torch.channels_last)

    def fc(rows, views):
        side = None if data.get("side") is None else data["side"][rows, :views]
        return FeatureCache(data["maps"][rows, :views],
                            torch.as_tensor([pos[labels[i]] for i in rows]), side=side)

    fit = fit_cached(net, {"train": fc(tr, settings.train_views), "val": fc(va, 1)},
                     len(classes), settings, None,
                     show_progress=False)
    return net, fit


def embed(net, maps: torch.Tensor, side: torch.Tensor | None) -> dict:
    """Every layer's output for the clean view of each photo (maps (n, C, H, W), companion
    features (n, D))."""
    with torch.inference_mode():
        return clean_outputs(net, FeatureCache(maps[:, None], torch.zeros(len(maps)),
                                               side=None if side is None else side[:, None]))


def clean_side(data: dict, rows=slice(None)) -> torch.Tensor | None:
    return None if data.get("side") is None else data["side"][rows, 0]


def vectors(outputs: dict, layer: str) -> np.ndarray:
    name, _, w = layer.partition("@")
    parts = name.split("+")
    weights = [float(w), 1 - float(w)] if w else [1.0]
    return combine(outputs, parts, weights).numpy()


def ensemble(outputs: list[dict]) -> dict:
    """Mean of the trained layers of several models (the pretrained layer is shared)."""
    return {key: torch.stack([o[key] for o in outputs]).mean(0) for key in outputs[0]}


def subsample(idx: np.ndarray, labels: list[str], fraction: float, seed: int) -> np.ndarray:
    """``fraction`` of the photos ``idx`` of each category (at least 2), drawn with ``seed``."""
    if fraction >= 1:
        return idx
    rng = np.random.default_rng(seed)
    kept: list[int] = []
    for category in sorted({labels[i] for i in idx}):
        rows = rng.permutation([i for i in idx if labels[i] == category])
        kept += rows[:max(2, round(len(rows) * fraction))].tolist()
    return np.asarray(sorted(kept))


def outside_index(data, products, labels, settings, seed: int, k: int,
                  models: int = 1, fraction: float = 1.0) -> dict:
    position = {p.product_id: i for i, p in enumerate(products)}
    keep, held = stratified_split(products, 0.2, seed=seed)
    a = np.asarray([position[p.product_id] for p in keep])
    b = np.asarray([position[p.product_id] for p in held])
    started = time.perf_counter()
    fits, cleans, lows = [], [], []
    trained_on = subsample(a, labels, fraction, seed)
    for m in range(models):
        net, fit = train_on(data, trained_on, labels, settings.model_copy(
            update={"train_seed": settings.train_seed + 100 * m}))
        fits.append(fit)
        cleans.append(embed(net, data["maps"][:, 0], clean_side(data)))
        lows.append(embed(net, data["low"], data.get("side_low")))
    seconds = time.perf_counter() - started
    fit, clean, low = fits[0], ensemble(cleans), ensemble(lows)
    classes = sorted({labels[i] for i in a})
    pred = clean["logits"][b].argmax(1).numpy()
    run = {"trained_photos": len(trained_on), "indexed_photos": len(a),
           "train_seconds": round(seconds, 1), "epochs": [len(fit.phase1.history),
                                                          len(fit.phase2.history)],
           "held_out_accuracy": round(float(np.mean([classes[j] == labels[i]
                                                     for i, j in zip(b, pred, strict=True)])),
                                      4), "layers": {}}
    for layer in LAYERS:
        vc, vl = vectors(clean, layer), vectors(low, layer)
        full = retrieval_metrics(vc[a], [labels[i] for i in a], vc[b], [labels[i] for i in b], k)
        small = retrieval_metrics(vc[a], [labels[i] for i in a], vl[b],
                                  [labels[i] for i in b], k)
        run["layers"][layer] = {
            "p_at_k": full["precision"],
            "p_at_k_relogio_feminino": full["per_category"]["relogio_feminino"]["precision"],
            "p_at_k_60x80": small["precision"],
            "per_category": {c: v["precision"] for c, v in full["per_category"].items()}}
    return run


def attribute(p: Product, name: str) -> str:
    if name == "brand":
        return (p.name.split() or [""])[0].lower()
    if name == "category":
        return p.category
    return p.attributes.get(name, "")


def fine_grained(data, products, labels, settings, holdout: list[str]) -> dict:
    inside = np.asarray([i for i, c in enumerate(labels) if c in holdout])
    train = np.asarray([i for i, c in enumerate(labels) if c not in holdout])
    net, _ = train_on(data, train, labels, settings)
    clean = embed(net, data["maps"][inside, 0], clean_side(data, inside))
    out = {"held_out": holdout, "photos": len(inside), "layers": {}}
    for layer in LAYERS:
        out["layers"][layer] = same_attribute_at_1(
            [products[i] for i in inside], vectors(clean, layer),
            ("brand", "colour", "article_type", "category"))
    return out


def same_attribute_at_1(products: list[Product], vec: np.ndarray,
                        attrs: tuple[str, ...]) -> dict[str, float]:
    """Leave-one-out precision@1 of each attribute: how often a photo's nearest other photo
    (by inner product of ``vec``) shares it."""
    sims = vec @ vec.T
    np.fill_diagonal(sims, -np.inf)
    nearest = sims.argmax(1)
    scores = {}
    for attr in attrs:
        values = [attribute(p, attr) for p in products]
        scores[attr] = round(float(np.mean([values[q] == values[j]
                                            for q, j in enumerate(nearest)])), 4)
    return scores


def recommend(report: dict, tolerance: float = 0.02) -> dict:
    """The layer to embed with: the best mean category P@k among the layers whose
    fine-grained precision@1 (brand and colour, every held-out set) stays within
    ``tolerance`` of the pretrained ('imagenet') layer."""
    kept = []
    for layer, mean in report["mean"].items():
        drops = [fg["layers"]["imagenet"][a] - fg["layers"][layer][a]
                 for fg in report["fine_grained"] for a in ("brand", "colour")]
        if all(d <= tolerance for d in drops):
            kept.append((mean["p_at_k"], mean["p_at_k_relogio_feminino"], layer,
                         round(max(drops, default=0.0), 4)))
    if not kept:
        return {}
    p, fem, layer, drop = max(kept)
    return {"layer": layer, "p_at_k": p, "p_at_k_relogio_feminino": fem,
            "largest_fine_grained_drop": drop, "tolerance": tolerance,
            "eligible": sorted(k[2] for k in kept)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", type=Path, required=True)
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--cache", type=Path, help="Keep the frozen-layer outputs in this file.")
    ap.add_argument("--no-proxy", action="store_true")
    ap.add_argument("--models", type=int, default=1,
                    help="Average the outputs of this many models trained with seeds "
                         "train_seed + 100·m (an ensemble; outside-index check only).")
    ap.add_argument("--train-fraction", type=float, default=1.0,
                    help="Train on this fraction of the indexed photos of each category (a "
                         "learning curve; the index still holds all of them).")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="Override a training setting, e.g. --set train_fine_tune_from=12.")
    args = ap.parse_args()
    overrides = dict(item.split("=", 1) for item in args.set)
    settings = Settings(weights=args.weights, **overrides)
    products = read_catalog(args.catalog)
    labels = [p.category for p in products]
    started = time.perf_counter()
    data = frozen_cache(products, settings, args.cache)
    report = {"catalog": str(args.catalog), "products": len(products), "k": args.k,
              "models": args.models, "train_fraction": args.train_fraction,
              "settings": {k: v for k, v in settings.model_dump().items()
                           if k.startswith("train_")},
              "frozen_seconds": round(time.perf_counter() - started, 1), "outside_index": {},
              "fine_grained": []}
    for seed in [int(s) for s in args.seeds.split(",")]:
        report["outside_index"][str(seed)] = outside_index(data, products, labels, settings,
                                                           seed, args.k, args.models,
                                                           args.train_fraction)
    runs = report["outside_index"].values()
    report["mean"] = {layer: {m: round(float(np.mean([r["layers"][layer][m] for r in runs])), 4)
                              for m in ("p_at_k", "p_at_k_relogio_feminino", "p_at_k_60x80")}
                      for layer in LAYERS}
    if not args.no_proxy:
        report["fine_grained"] = [fine_grained(data, products, labels, settings, h)
                                  for h in HOLDOUTS]
        report["recommended"] = recommend(report)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
