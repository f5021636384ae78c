"""``vitrine train``: transfer learning then fine-tuning of the backbone on the shop's
categories.

1. Pass every photo once through the layers that stay frozen; the same pass gives the
   pretrained embeddings, perceptual hashes and thumbnails that find duplicates.
2. Split the catalogue (duplicate-aware, see :mod:`vitrine.split`), and pass the augmented
   views of the training photos through the frozen layers once (:mod:`vitrine.train_data` says
   what is cached and what that changes).
3. Phase 1, transfer learning: the whole backbone frozen, a new head (dense + dropout) trained
   with Adam on the cached pooled features.
4. Phase 2, fine-tuning: the top blocks unfrozen, trained with the head at a lower rate.
5. Both phases: early stopping with the best weights restored, a best checkpoint on disk,
   reduce-LR-on-plateau, class-weighted loss (for imbalanced categories), seeded.
6. Refit (``train_refit``): both phases again from the start on the training and validation
   photos, replaying the epochs and learning rates validation chose.
7. Write the model, its history, test metrics, figures and a report (:mod:`vitrine.report`).

With ``train_companion`` a second pretrained backbone, frozen whole, runs beside the first;
its pooled features (cached per view like the frozen layers' maps) join the head's input.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vitrine.catalog import Product
from vitrine.config import Settings
from vitrine.errors import CatalogError
from vitrine.images import Preprocessing
from vitrine.models import (
    ClassifierHead,
    TrainedNet,
    build_trained_net,
    fuse,
    get_spec,
    load_state_dict,
    state_hash,
)
from vitrine.progress import progress_bar
from vitrine.split import Split, make_split, read_split_catalog
from vitrine.train_data import FeatureCache, FrozenPass, frozen_pass
from vitrine.train_loop import Metrics, PhaseConfig, PhaseResult, fit_phase, replay_phase


def train_catalog(catalog_dir: Path, out_dir: Path, settings: Settings, *,
                  show_progress: bool = True) -> dict:
    """Split ``catalog_dir``, train, and write the model folder ``out_dir``; returns the
    summary also written as ``summary.json``. The folder appears (or replaces an earlier
    model) only when everything is written: a failed or interrupted run leaves it as it was."""
    from vitrine.trained import staged_model_dir

    if Path(out_dir).expanduser().resolve().is_relative_to(Path(catalog_dir).resolve()):
        raise CatalogError(f"--out {out_dir} is inside the catalogue {catalog_dir}; its figures "
                           "would be read as photos of a category next time. Put it outside.")
    with staged_model_dir(out_dir) as stage:
        return _train(catalog_dir, stage, Path(out_dir), settings, show_progress)


def _train(catalog_dir: Path, stage: Path, out_dir: Path, settings: Settings,
           show_progress: bool) -> dict:
    from vitrine.report import write_outputs
    from vitrine.trained import training_fingerprint, write_model

    started = time.perf_counter()
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    products, given = read_split_catalog(catalog_dir)
    products = [p for p in products if p.category]  # a photo without a category teaches nothing
    spec = get_spec(settings.backbone)
    pretrained = load_state_dict(spec, settings.weights)
    prep = replace(spec.preprocessing, resize=settings.resize)
    net = build_trained_net(spec, pretrained, settings.train_fine_tune_from, 1,
                            settings.train_head_units, settings.train_dropout,
                            settings.train_companion, prep)
    net = net.to(memory_format=torch.channels_last)

    # One pass of every photo through the frozen layers: the clean view, its hashes, and
    # (pooled by the frozen top) the pretrained embedding that finds duplicates.
    with progress_bar("Reading photos", len(products), enabled=show_progress) as adv:
        clean = frozen_pass(net.base, [p.image for p in products], [0], prep,
                            seed=settings.train_seed, batch_size=settings.train_batch_size,
                            workers=settings.decode_workers,
                            max_pixels=settings.max_image_pixels, with_hash=True,
                            companion=net.companion, advance=adv)
    ok = [i for i, e in enumerate(clean.errors) if e is None]
    bad = [{"product_id": products[i].product_id, "reason": clean.errors[i]}
           for i in range(len(products)) if clean.errors[i] is not None]
    vectors = nn.functional.normalize(pool_views(net, clean.maps[ok])[:, 0], dim=1).numpy()
    usable = [products[i] for i in ok]
    groups = find_groups(usable, vectors, [clean.phashes[i] for i in ok],
                         [clean.thumbs[i] for i in ok], settings)
    split = make_split(usable, groups, settings, given)
    split.save(stage / "split.json")
    seconds = {"read_and_split": round(time.perf_counter() - started, 1)}

    t0 = time.perf_counter()
    row = {p.product_id: i for i, p in enumerate(products)}
    classes, caches = split_caches(net, products, row, clean, split, prep, settings,
                                   show_progress)
    seconds["augmented_views"] = round(time.perf_counter() - t0, 1)
    torch.manual_seed(settings.train_seed)
    net.head = ClassifierHead(net.head_dim, settings.train_head_units, len(classes),
                              settings.train_dropout)
    fit = fit_cached(net, caches, len(classes), settings, stage / "checkpoints",
                     show_progress=show_progress)
    seconds.update(fit.seconds)
    config = model_config(spec.name, settings, classes, prep, state_hash(pretrained))
    config["training_fingerprint"] = training_fingerprint(products, settings)
    digest = write_model(stage, net, config)
    seconds["total"] = round(time.perf_counter() - started, 1)
    summary = {
        "model_dir": str(out_dir), "classes": classes, "weights_sha256": digest,
        "split": {**split.counts(), "source": split.source,
                  "duplicate_groups": len(split.groups),
                  "crossing_groups": split.crossing(),
                  "conflicting_groups": conflicting_labels(split.groups, usable)},
        "unreadable_photos": bad,
        "settings": config["training"], "cached": cache_note(settings),
        "phases": {"transfer_learning": _phase_summary(fit.phase1, fit.after1),
                   "fine_tuning": _phase_summary(fit.phase2, fit.after2)},
        "refit": fit.refit,
        "history": fit.phase1.history + fit.phase2.history,
        "class_counts": {name: dict(sorted(Counter(classes[i] for i in c.labels.tolist())
                                           .items())) for name, c in caches.items()},
        "test": _test_detail(fit.outputs, caches, classes, settings),
        "seconds": seconds,
    }
    write_outputs(stage, summary)
    return summary


def conflicting_labels(groups: Sequence[Sequence[str]],
                       products: Sequence[Product]) -> list[list[str]]:
    """Duplicate groups whose photos carry different categories: the same picture is then
    trained under two labels (a mistake in the catalogue, most likely)."""
    category = {p.product_id: p.category for p in products}
    return [[f"{pid} ({category.get(pid, '')})" for pid in group] for group in groups
            if len({category.get(pid, "") for pid in group}) > 1]


def find_groups(products: Sequence[Product], vectors: np.ndarray, phashes: list[str],
                thumbs: list[bytes], settings: Settings) -> list[list[str]]:
    """Duplicate groups (product ids) by :func:`vitrine.dedupe.find_duplicates`."""
    from vitrine.dedupe import DuplicateRules, find_duplicates
    from vitrine.indexer import file_sha256

    shas = [file_sha256(p.image) for p in products]
    groups = find_duplicates([p.product_id for p in products], vectors, phashes, thumbs, shas,
                             DuplicateRules.from_settings(settings))
    return [list(map(str, g)) for g in groups]


def split_caches(net: TrainedNet, products: Sequence[Product], row: dict[str, int],
                 clean: FrozenPass, split: Split, prep: Preprocessing,
                 settings: Settings, show_progress: bool
                 ) -> tuple[list[str], dict[str, FeatureCache]]:
    """The classes (categories of the training split) and a cache per split: the clean view
    for every photo, plus ``train_views - 1`` augmented views of each training photo."""
    by_id = {p.product_id: p for p in products}
    parts = {name: [by_id[i] for i in split.ids(name) if i in by_id] for name in split.counts()}
    classes = sorted({p.category for p in parts["train"]})
    if len(classes) < 2:
        raise CatalogError("training needs photos of at least two categories in the training "
                           "split.")
    position = {c: i for i, c in enumerate(classes)}
    if not any(p.category in position for p in parts["val"]):
        remedy = ("add photos of them to the val folder" if split.source == "folders"
                  else "add photos or raise VITRINE_TRAIN_VAL_FRACTION")
        raise CatalogError("the validation split has no photo of a category the training "
                           f"split has; {remedy}.")
    caches = {}
    for name, items in parts.items():
        items = [p for p in items if p.category in position]  # untrained classes: unscored
        if not items:
            continue
        rows = [row[p.product_id] for p in items]
        maps = clean.maps[rows]
        side = None if clean.side is None else clean.side[rows]
        if name == "train" and settings.train_views > 1:
            with progress_bar("Augmenting", len(items), enabled=show_progress) as adv:
                extra = frozen_pass(net.base, [p.image for p in items],
                                    range(1, settings.train_views), prep,
                                    seed=settings.train_seed, keys=rows,
                                    batch_size=settings.train_batch_size,
                                    workers=settings.decode_workers,
                                    max_pixels=settings.max_image_pixels,
                                    companion=net.companion, advance=adv)
            maps = torch.cat([maps, extra.maps], dim=1)
            if side is not None:
                side = torch.cat([side, extra.side], dim=1)
        labels = torch.as_tensor([position[p.category] for p in items], dtype=torch.long)
        caches[name] = FeatureCache(maps, labels, items, side)
    return classes, caches


def class_weights(labels: Sequence[int], n_classes: int, power: float = 1.0) -> torch.Tensor:
    """Loss weights ∝ count^-power (1: inverse frequency, a balanced loss; 0.5: dampened;
    0: none), scaled to mean 1 over the samples; 0 for absent classes."""
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=n_classes).astype(float)
    raw = np.where(counts > 0, np.maximum(counts, 1) ** -power, 0.0)
    weights = raw * len(labels) / max(float((raw * counts).sum()), 1e-12)
    return torch.as_tensor(weights, dtype=torch.float32)


@dataclass
class Fit:
    """Both phases' results, metrics after each, and the final clean-view outputs."""

    phase1: PhaseResult
    phase2: PhaseResult
    after1: dict
    after2: dict
    outputs: dict
    seconds: dict
    refit: dict | None = None
    """With ``train_refit``: photos and epochs of the final training on train + validation,
    and the metrics after it (validation no longer held out)."""


def fit_cached(net: TrainedNet, caches: dict[str, FeatureCache], n_classes: int,
               settings: Settings, checkpoint_dir: Path | None, *,
               show_progress: bool = True) -> Fit:
    """Phase 1 (head on the frozen network) then phase 2 (top blocks + head) on cached
    frozen-layer outputs; ``caches`` has 'train' and 'val', and may have 'test'."""
    from vitrine.report import split_metrics

    torch.manual_seed(settings.train_seed)
    head_start = {k: v.clone() for k, v in net.head.state_dict().items()}
    criterion = _criterion(caches["train"].labels, n_classes, settings)
    gen = torch.Generator().manual_seed(settings.train_seed)
    steps = _steps(len(caches["train"]), settings.train_batch_size)
    ckpt = checkpoint_dir or None
    seconds = {}

    t0 = time.perf_counter()
    pooled = {k: fuse(pool_views(net, c.maps), c.side) for k, c in caches.items()}
    net.head.requires_grad_(True)
    phase1 = fit_phase(
        _phase_config("transfer learning", settings, 1), net.head, list(net.head.parameters()),
        _epoch_fn(net.head, net.head, (pooled["train"],), caches["train"].labels, criterion,
                  gen, settings.train_batch_size),
        lambda: _metrics(net.head, (pooled["val"][:, 0],), caches["val"].labels),
        steps_per_epoch=steps, checkpoint=ckpt and ckpt / "phase1-best.pt",
        show_progress=show_progress)
    seconds["phase1"] = round(time.perf_counter() - t0, 1)
    net.head.eval()
    with torch.inference_mode():
        after1 = {k: split_metrics(net.head(pooled[k][:, 0]), caches[k].labels)
                  for k in caches}

    t0 = time.perf_counter()
    trainable = nn.ModuleDict({"top": net.top, "head": net.head})
    net.top.requires_grad_(True)

    def forward(maps: torch.Tensor, side: torch.Tensor | None = None) -> torch.Tensor:
        return net.head(fuse(net.pooled(maps), side))

    phase2 = fit_phase(
        _phase_config("fine-tuning", settings, 2), trainable, list(trainable.parameters()),
        _epoch_fn(forward, trainable, caches["train"].inputs(), caches["train"].labels,
                  criterion, gen, settings.train_batch_size,
                  freeze_bn=settings.train_freeze_bn),
        lambda: _metrics(forward, tuple(t[:, 0] for t in caches["val"].inputs()),
                         caches["val"].labels, modules=trainable),
        steps_per_epoch=steps, checkpoint=ckpt and ckpt / "phase2-best.pt",
        show_progress=show_progress)
    seconds["phase2"] = round(time.perf_counter() - t0, 1)
    outputs = _frozen_outputs(net, caches)
    after2 = {k: split_metrics(o["logits"], caches[k].labels) for k, o in outputs.items()}
    fit = Fit(phase1, phase2, after1, after2, outputs, seconds)
    if settings.train_refit:
        t0 = time.perf_counter()
        epochs = refit(net, caches, pooled, forward, fit, head_start, n_classes, settings,
                       show_progress)
        fit.outputs = _frozen_outputs(net, caches)
        seconds["refit"] = round(time.perf_counter() - t0, 1)
        fit.refit = {"photos": len(caches["train"]) + len(caches["val"]), "epochs": epochs,
                     "seconds": seconds["refit"],
                     "metrics": {k: split_metrics(o["logits"], caches[k].labels)
                                 for k, o in fit.outputs.items()}}
    return fit


def _frozen_outputs(net: TrainedNet, caches: dict[str, FeatureCache]) -> dict:
    """Freeze the trained parts (eval mode, no gradients) and return every split's clean-view
    outputs."""
    net.eval()
    net.top.requires_grad_(False)
    net.head.requires_grad_(False)
    with torch.inference_mode():
        return {k: clean_outputs(net, c) for k, c in caches.items()}


def refit(net: TrainedNet, caches: dict[str, FeatureCache], pooled: dict[str, torch.Tensor],
          forward: Callable, fit: Fit, head_start: dict, n_classes: int, settings: Settings,
          show_progress: bool) -> list[int]:
    """Train the head (from ``head_start``) and the top (from the pretrained weights) again
    on the training and validation photos together, replaying both phases up to their best
    epochs with the learning rates they had (the schedule validation chose). Validation
    photos contribute their clean view only. Returns the epochs run per phase."""
    net.head.load_state_dict(head_start)
    net.top.load_state_dict(net.ref_top.state_dict())
    train, val = caches["train"], caches["val"]
    labels = torch.cat([train.labels, val.labels])
    criterion = _criterion(labels, n_classes, settings)
    gen = torch.Generator().manual_seed(settings.train_seed)
    torch.manual_seed(settings.train_seed)
    steps = _steps(len(labels), settings.train_batch_size)
    net.head.requires_grad_(True)
    epochs = [replay_phase(
        _phase_config("refit: transfer learning", settings, 1),
        fit.phase1.history[:fit.phase1.best_epoch], list(net.head.parameters()),
        _epoch_fn(net.head, net.head, (Joined(pooled["train"], pooled["val"]),), labels,
                  criterion, gen, settings.train_batch_size),
        steps_per_epoch=steps, show_progress=show_progress)]
    trainable = nn.ModuleDict({"top": net.top, "head": net.head})
    net.top.requires_grad_(True)
    inputs = tuple(Joined(a, b) for a, b in zip(train.inputs(), val.inputs(), strict=True))
    epochs.append(replay_phase(
        _phase_config("refit: fine-tuning", settings, 2),
        fit.phase2.history[:max(fit.phase2.best_epoch, 0)], list(trainable.parameters()),
        _epoch_fn(forward, trainable, inputs, labels, criterion, gen,
                  settings.train_batch_size, freeze_bn=settings.train_freeze_bn),
        steps_per_epoch=steps, show_progress=show_progress))
    return epochs


class Joined:
    """The photos of ``first`` (n, views, …) then those of ``second`` (m, 1, …), indexed like
    one (n + m, views, …) tensor in which each photo of ``second`` has its one view everywhere,
    without copying either (the refit reads the cached training and validation views)."""

    def __init__(self, first: torch.Tensor, second: torch.Tensor):
        self.first, self.second = first, second
        self.shape = (len(first) + len(second), *first.shape[1:])

    def __getitem__(self, key: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        rows, views = key
        out = self.first.new_empty((len(rows), *self.first.shape[2:]))
        here = rows < len(self.first)
        out[here] = self.first[rows[here], views[here]]
        out[~here] = self.second[rows[~here] - len(self.first), 0]
        return out


def _criterion(labels: torch.Tensor, n_classes: int, settings: Settings) -> nn.Module:
    """Cross-entropy with the class weights and label smoothing of the settings."""
    return nn.CrossEntropyLoss(
        weight=class_weights(labels.tolist(), n_classes, settings.train_class_weight_power),
        label_smoothing=settings.train_label_smoothing)


def cache_note(settings: Settings) -> str:
    """What the training caches, in one paragraph for the summary."""
    v = settings.train_views
    note = (f"Frozen blocks run once per view: {v} views per training photo (the photo and "
            f"{v}-1 seeded augmentations), 1 per validation/test photo; each epoch draws one "
            "cached view per photo, so augmentation is a fixed set of views rather than fresh "
            "each epoch. Phase 1 also caches the pooled output of the frozen top.")
    if settings.train_companion:
        note += (f" The companion backbone {settings.train_companion} is frozen whole: its "
                 "pooled features of the same views are cached.")
    return note


@torch.no_grad()
def pool_views(net: TrainedNet, maps: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Pooled output of the frozen (reference) top for every cached view: (n, views, dim)."""
    n, v = maps.shape[:2]
    flat = maps.reshape(n * v, *maps.shape[2:])
    net.ref_top.eval()
    out = [net.pooled(flat[i:i + batch], reference=True) for i in range(0, len(flat), batch)]
    return torch.cat(out).reshape(n, v, -1) if out else torch.zeros(0, v, 1)


@torch.no_grad()
def clean_outputs(net: TrainedNet, cache: FeatureCache, batch: int = 128) -> dict:
    """imagenet / pooled / hidden / logits / probs of each photo's clean view."""
    maps = cache.maps[:, 0]
    side = None if cache.side is None else cache.side[:, 0]
    names = {"imagenet", "pooled", "hidden", "logits", "probs"}
    parts: dict[str, list[torch.Tensor]] = {}
    for i in range(0, len(maps), batch):
        out = net.outputs(maps[i:i + batch], None if side is None else side[i:i + batch],
                          names)
        for k, v in out.items():
            parts.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in parts.items()}


def _steps(n: int, batch: int) -> int:
    return max(1, -(-n // batch))


def _epoch_fn(forward: Callable, module: nn.Module, inputs: tuple[torch.Tensor, ...],
              labels: torch.Tensor, criterion: nn.Module, gen: torch.Generator, batch: int, *,
              freeze_bn: bool = False):
    """One epoch over shuffled photos, each with a randomly drawn cached view (the same view
    of every tensor in ``inputs`` — (photos, views, …) tensors or :class:`Joined` — passed to
    ``forward`` in that order); with ``freeze_bn`` the batch-norm layers keep their running
    statistics (eval mode)."""

    def run(optimizer: torch.optim.Optimizer, advance) -> Metrics:
        module.train()
        if freeze_bn:
            for m in module.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        n, n_views = inputs[0].shape[:2]
        order = torch.randperm(n, generator=gen)
        views = torch.randint(0, n_views, (n,), generator=gen)
        total_loss, correct = 0.0, 0
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            x = [t[idx, views[idx]] for t in inputs]
            y = labels[idx]
            optimizer.zero_grad(set_to_none=True)
            logits = forward(*x)
            loss = criterion(logits, y)
            loss.backward()
            optimizer.step()
            hits = int((logits.argmax(1) == y).sum())
            value = loss.item()
            total_loss += value * len(idx)
            correct += hits
            advance(1, loss=value, acc=hits / len(idx))
        return Metrics(total_loss / n, correct / n)

    return run


@torch.no_grad()
def _metrics(forward: Callable, inputs: tuple[torch.Tensor, ...], labels: torch.Tensor, *,
             modules: nn.Module | None = None, batch: int = 128) -> Metrics:
    """Plain cross-entropy and accuracy in eval mode."""
    module = modules if modules is not None else forward
    module.eval()
    logits = torch.cat([forward(*(t[i:i + batch] for t in inputs))
                        for i in range(0, len(labels), batch)])
    loss = nn.functional.cross_entropy(logits, labels)
    return Metrics(float(loss), float((logits.argmax(1) == labels).float().mean()))


def _phase_config(name: str, settings: Settings, phase: int) -> PhaseConfig:
    return PhaseConfig(name, getattr(settings, f"train_phase{phase}_epochs"),
                       getattr(settings, f"train_phase{phase}_lr"), settings.train_patience,
                       settings.train_lr_patience, settings.train_lr_factor,
                       settings.train_min_lr, settings.train_weight_decay)


def _phase_summary(result: PhaseResult, metrics: dict) -> dict:
    return {"epochs": len(result.history), "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early, "seconds": round(result.seconds, 1),
            "metrics": metrics}


def _test_detail(outputs: dict, caches: dict[str, FeatureCache], classes: list[str],
                 settings: Settings) -> dict:
    from vitrine.report import classification_report, misclassified, retrieval_from_cache

    if "test" not in caches:
        return {}
    labels = caches["test"].labels
    pred = outputs["test"]["logits"].argmax(1)
    detail = classification_report([classes[i] for i in labels.tolist()],
                                   [classes[i] for i in pred.tolist()], classes)
    detail["loss"] = float(nn.functional.cross_entropy(outputs["test"]["logits"], labels))
    detail["misclassified"] = misclassified(caches["test"].products, labels.tolist(),
                                            outputs["test"]["probs"].numpy(), classes)
    detail["retrieval"] = retrieval_from_cache(outputs, caches, classes, settings)
    return detail


def model_config(backbone: str, settings: Settings, classes: list[str], prep: Preprocessing,
                 pretrained_sha256: str) -> dict:
    """The description written to ``model.json``."""
    training = {k.removeprefix("train_"): v for k, v in settings.model_dump().items()
                if k.startswith("train_")}
    return {"backbone": backbone, "companion": settings.train_companion,
            "cut": settings.train_fine_tune_from, "classes": classes,
            "head_units": settings.train_head_units,
            "dropout": settings.train_dropout, "preprocessing": prep.as_dict(),
            "embedding": {"layer": settings.train_embedding,
                          "weight": settings.train_embedding_weight},
            "pretrained_weights_sha256": pretrained_sha256, "training": training}
