"""What a training run writes about itself: ``model.json``'s description
(:func:`model_config`, :func:`model_description`), the duplicate rule calibrated on the trained
model's vectors, and the summary (:func:`run_summary`) and its parts (the split, the test
split's figures, each phase, the cache, conflicting groups)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from vitrine.catalog import Product, category_twins, recategorised
from vitrine.config import Settings
from vitrine.display import counted
from vitrine.images import Preprocessing
from vitrine.models import get_spec, state_hash, taps_for
from vitrine.train_data import FeatureCache, MapStorage
from vitrine.train_loop import PhaseResult
from vitrine.trained_net import combine_rows, layer_parts, probs_tail

if TYPE_CHECKING:
    from vitrine.split import Split
    from vitrine.train_fit import Fit


@dataclass
class CatalogueRead:
    """The catalogue as training read it: its photos with a category, and those it left out
    before any photo was read."""

    products: list[Product]
    given: dict[str, str] | None
    """The split its folders give (None: not split in folders)."""
    unsplit: list[dict]
    uncategorised: list[dict]


@dataclass
class PhotosRead:
    """The photos training could read, those it could not, and the split made of them."""

    usable: list[Product]
    bad: list[dict]
    split: Split
    phash_of: dict[str, str]


def conflicting_labels(groups: Sequence[Sequence[str]],
                       products: Sequence[Product]) -> list[list[str]]:
    """Duplicate groups whose photos carry different categories: the same picture is then
    trained under two labels (a mistake in the catalogue, most likely)."""
    category = {p.product_id: p.category for p in products}
    return [[f"{pid} ({category.get(pid, '')})" for pid in group] for group in groups
            if len({category.get(pid, "") for pid in group}) > 1]


def duplicate_calibration(outputs: dict, caches: dict[str, FeatureCache],
                          phash_of: dict[str, str], groups: Sequence[Sequence[str]],
                          settings: Settings, zeros: Callable = torch.zeros) -> dict:
    """The duplicate rule's embedding cosine for the trained model's vectors, calibrated on
    every photo of the catalogue (:func:`vitrine.dedupe.calibrated_embed_cosine`; recorded in
    model.json, used by index and dedupe with this model)."""
    from vitrine.dedupe import DuplicateRules, calibrated_embed_cosine

    parts, weights = layer_parts(settings.train_embedding, settings.train_embedding_weight)
    ids = [p.product_id for name in outputs for p in caches[name].products]
    vectors = combine_rows(list(outputs.values()), parts, weights, zeros=zeros).numpy()
    row = {pid: i for i, pid in enumerate(ids)}
    known = [[row[pid] for pid in group if pid in row] for group in groups]
    tail = probs_tail(settings.train_embedding, outputs["train"]["probs"].shape[1])
    cosine, closest = calibrated_embed_cosine(vectors, [phash_of[pid] for pid in ids], known,
                                              DuplicateRules.from_settings(settings,
                                                                           probs_tail=tail))
    return {"embed_cosine": cosine, "closest_different_products": closest,
            "photos": len(ids), "without_probabilities": bool(tail)}


def cache_note(settings: Settings, storage: MapStorage) -> str:
    """What the training caches, and where, in one paragraph for the summary."""
    v = settings.train_views
    note = ("Frozen blocks run once per photo (1 view, no augmentation: "
            "VITRINE_TRAIN_VIEWS=1). " if v == 1 else
            f"Frozen blocks run once per view: {v} views per training photo (the photo and "
            f"{counted(v - 1, 'seeded augmentation')}), 1 per validation/test "
            "photo; each epoch draws one cached view per photo, so augmentation is a fixed set "
            "of views rather than fresh each epoch. ")
    note += "Phase 1 also caches the head's input from the frozen network."
    taps = taps_for(get_spec(settings.backbone), settings.train_taps)
    if taps:
        note += (f" The cached maps are those before the first tapped block ({min(taps)}); "
                 "the tapped blocks before the fine-tuned ones stay frozen and run on them "
                 "every epoch.")
    if settings.train_companion:
        note += (f" The companion backbone {settings.train_companion} is frozen whole: its "
                 "pooled features of the same views are cached.")
    note += (" The cached tensors (maps, the head's inputs, the outputs) were "
             f"{storage.in_memory / 2**20:,.0f} MiB allocated in memory")
    if storage.on_disk:
        limit = ("VITRINE_TRAIN_CACHE_MEMORY_MB" if settings.train_cache_memory_mb is not None
                 else "half the available memory (VITRINE_TRAIN_CACHE_MEMORY_MB unset)")
        note += (f" and {storage.on_disk / 2**20:,.0f} MiB in files mapped into memory, past "
                 f"the {storage.budget / 2**20:,.0f} MiB that {limit} allows")
    return note + "."


def _phase_summary(result: PhaseResult, metrics: dict) -> dict:
    return {"epochs": len(result.history), "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early, "seconds": round(result.seconds, 1),
            "metrics": metrics}


def _counted_test_rows(caches: dict[str, FeatureCache],
                       groups: Sequence[Sequence[str]]) -> torch.Tensor | None:
    """The rows of the test split its figures count: the copies of one photo among them
    (``groups``, the split's duplicate groups) once (:func:`vitrine.model_eval.one_per_group`),
    as `vitrine evaluate` counts them (helper-231)."""
    from vitrine.model_eval import one_per_group

    if "test" not in caches:
        return None
    products = list(caches["test"].products)
    return torch.as_tensor(one_per_group([p.product_id for p in products], groups)
                           if products else range(len(caches["test"])), dtype=torch.long)


def _test_detail(outputs: dict, caches: dict[str, FeatureCache], classes: list[str],
                 settings: Settings, zeros: Callable, keep: torch.Tensor | None) -> dict:
    """The test split's figures, of its rows ``keep`` (:func:`_counted_test_rows`: None
    where there is no test split)."""
    from vitrine.report import classification_report, misclassified, retrieval_from_cache

    if "test" not in caches:
        return {}
    products = list(caches["test"].products)
    labels = caches["test"].labels[keep]
    logits = outputs["test"]["logits"][keep]
    pred = logits.argmax(1)
    detail = classification_report([classes[i] for i in labels.tolist()],
                                   [classes[i] for i in pred.tolist()], classes)
    detail["copies_counted_once"] = len(caches["test"]) - len(keep)
    detail["loss"] = float(nn.functional.cross_entropy(logits, labels))
    detail["misclassified"] = misclassified([products[i] for i in keep.tolist()]
                                            if products else (), labels.tolist(),
                                            outputs["test"]["probs"][keep].numpy(), classes)
    detail["retrieval"] = retrieval_from_cache(outputs, caches, classes, settings, keep,
                                               zeros=zeros)
    return detail


def model_config(backbone: str, settings: Settings, classes: list[str], prep: Preprocessing,
                 pretrained_sha256: str) -> dict:
    """The description written to ``model.json``."""
    training = {k.removeprefix("train_"): v for k, v in settings.training_choices().items()}
    return {"backbone": backbone, "companion": settings.train_companion,
            "cut": settings.train_fine_tune_from,
            "taps": taps_for(get_spec(backbone), settings.train_taps),
            "classes": classes,
            "head_units": settings.train_head_units,
            "dropout": settings.train_dropout, "preprocessing": prep.as_dict(),
            "embedding": {"layer": settings.train_embedding,
                          "weight": settings.train_embedding_weight},
            "pretrained_weights_sha256": pretrained_sha256, "training": training}


def model_description(backbone: str, pretrained: dict, prep: Preprocessing,
                      classes: list[str], products: Sequence[Product], photos: PhotosRead,
                      fit: Fit, caches: dict[str, FeatureCache], settings: Settings,
                      storage: MapStorage) -> dict:
    """The description ``model.json`` gets: the model's settings, the training's
    fingerprint, the refit's outcome and the calibrated duplicate rule."""
    from vitrine.trained import training_fingerprint

    split = photos.split
    config = model_config(backbone, settings, classes, prep, state_hash(pretrained))
    config["training_fingerprint"] = training_fingerprint(products, settings, split.contents,
                                                          folders=split.source == "folders")
    if fit.refit:  # whose weights these are: the refit's, or the validated ones (helper-231)
        config["refit"] = {k: fit.refit[k] for k in ("kept", "why_not_kept", "check")}
    config["duplicates"] = duplicate_calibration(fit.outputs, caches, photos.phash_of,
                                                 split.groups, settings, storage.zeros)
    return config


def run_summary(out_dir: Path, catalogue: CatalogueRead, photos: PhotosRead,
                fresh_because: str | None, classes: list[str], digest: str, config: dict,
                unaugmented: list[dict], fit: Fit, caches: dict[str, FeatureCache],
                test: dict, seconds: dict, settings: Settings, storage: MapStorage) -> dict:
    """The run's summary (``summary.json``): the split, the photos left out and why, the
    cache, each phase, the history and the test figures."""
    products, usable, split = catalogue.products, photos.usable, photos.split
    return {
        "model_dir": str(out_dir), "classes": classes, "weights_sha256": digest,
        "split": split_summary(split, usable, catalogue.given, fresh_because),
        "unreadable_photos": photos.bad, "unaugmented_photos": unaugmented,
        "uncategorised_photos": catalogue.uncategorised,
        "unsplit_photos": catalogue.unsplit,
        "category_from_table": recategorised(products),
        "category_twins": category_twins(products),
        "untrained_categories": dict(sorted(Counter(
            p.category for p in usable if p.category not in classes).items())),
        "duplicates": config["duplicates"],
        "settings": config["training"], "cached": cache_note(settings, storage),
        "cache_mib": {"memory": round(storage.in_memory / 2**20, 1),
                      "files": round(storage.on_disk / 2**20, 1)},
        "phases": {"transfer_learning": _phase_summary(fit.phase1, fit.after1),
                   "fine_tuning": _phase_summary(fit.phase2, fit.after2)},
        "refit": fit.refit,
        "history": fit.phase1.history + fit.phase2.history,
        "class_counts": {name: dict(sorted(Counter(classes[i] for i in c.labels.tolist())
                                           .items())) for name, c in caches.items()},
        "test": test,
        "seconds": seconds,
    }


def split_summary(split: Split, usable: Sequence[Product], given: dict[str, str] | None,
                  fresh_because: str | None) -> dict:
    """The summary's ``split``: its counts, where it came from, and its duplicate groups."""
    return {**split.counts(), "source": split.source,
            "duplicate_groups": len(split.groups),
            "product_groups": split.product_groups,
            "crossing_groups": split.crossing(), "left_out_of_test": split.left_out,
            "left_out_of_val": split.left_out_val,
            "alike_across_folders": split.alike_across_folders,
            "conflicting_groups": conflicting_labels(split.groups, usable),
            **({"kept_from_earlier": split.kept_from_earlier}
               if split.kept_from_earlier is not None else
               {"fresh_because": fresh_because} if fresh_because and given is None
               else {})}
