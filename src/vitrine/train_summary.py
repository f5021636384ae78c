"""What a training run writes about itself: ``model.json``'s description
(:func:`model_config`), the duplicate rule calibrated on the trained model's vectors, and the
summary's parts (the test split's figures, each phase, the cache, conflicting groups)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from vitrine.catalog import Product
from vitrine.config import Settings
from vitrine.display import counted
from vitrine.images import Preprocessing
from vitrine.models import get_spec, taps_for
from vitrine.train_data import FeatureCache, MapStorage
from vitrine.train_loop import PhaseResult
from vitrine.trained_net import combine_rows, layer_parts, probs_tail


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
