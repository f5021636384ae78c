"""The metrics ``vitrine train`` computes for its report: a split's loss and accuracy, the test
classification report, the misclassified test photos and the retrieval per embedding layer
from the training cache."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vitrine.config import Settings
from vitrine.evaluate import (
    accuracy,
    confusion_matrix,
    macro_f1,
    per_class_prf,
    wilson_interval,
)
from vitrine.report_text import _under_one

RETRIEVAL_LAYERS = ("imagenet", "pooled", "hidden", "imagenet+hidden", "pooled+hidden",
                    "imagenet+probs", "pooled+probs", "hidden+probs")


def split_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """Cross-entropy loss and accuracy of a split."""
    loss = torch.nn.functional.cross_entropy(logits.float(), labels)
    return {"loss": round(float(loss), 4),
            "acc": round(float((logits.argmax(1) == labels).float().mean()), 4),
            "n": len(labels)}


def classification_report(y_true: Sequence[str], y_pred: Sequence[str],
                          classes: Sequence[str]) -> dict:
    """Accuracy with its 95 % Wilson interval, per-class precision/recall/F1, confusion."""
    matrix = confusion_matrix(y_true, y_pred, classes)
    correct = int(np.trace(matrix))
    prf = per_class_prf(matrix, classes)
    low, high = wilson_interval(correct, len(y_true))
    return {"n": len(y_true), "correct": correct, "acc": accuracy(y_true, y_pred),
            "acc_ci95": [low, high], "macro_f1": macro_f1(prf), "per_class": prf,
            "classes": list(classes), "confusion": matrix.tolist()}


def misclassified(products: Sequence, labels: Sequence[int], probs: np.ndarray,
                  classes: Sequence[str]) -> list[dict]:
    """The photos the model puts in another category than their label, most confident
    first: a wrong label or an ambiguous photo, worth a look either way."""
    rows = []
    for product, label, row in zip(products, labels, probs, strict=True):
        guess = int(row.argmax())
        if guess != label:
            rows.append({"product_id": product.product_id, "name": product.name,
                         "image": str(product.image), "labelled": classes[label],
                         "predicted": classes[guess], "probability": _below_one(row[guess]),
                         "probability_of_label": _below_one(row[label])})
    return sorted(rows, key=lambda r: (-r["probability"], r["product_id"]))


def _below_one(p: float) -> float:
    """A probability to four decimals that stays under 1 when it is (0.99996 was 1.0: a
    mistake every table and figure then showed as certain)."""
    return _under_one(p, 4)


def retrieval_from_cache(outputs: dict, caches: dict, classes: list[str],
                         settings: Settings, queries: torch.Tensor, k: int = 5,
                         zeros=torch.zeros) -> dict:
    """Category retrieval of test photos (the rows ``queries`` of them) against
    train + validation photos, per layer; the vectors of train + validation in one tensor
    from ``zeros`` (the training cache's storage)."""
    from vitrine.model_eval import retrieval_metrics
    from vitrine.trained_net import combine_rows, layer_parts

    index_labels = [classes[i] for i in
                    torch.cat([caches["train"].labels, caches["val"].labels]).tolist()]
    query_labels = [classes[i] for i in caches["test"].labels[queries].tolist()]
    out = {}
    w = settings.train_embedding_weight
    for layer in RETRIEVAL_LAYERS:
        parts, weights = layer_parts(layer, w)
        index = combine_rows([outputs["train"], outputs["val"]], parts, weights, zeros=zeros)
        asked = combine_rows([outputs["test"]], parts, weights)[queries]
        out[layer] = retrieval_metrics(index.numpy(), index_labels, asked.numpy(),
                                       query_labels, k)
        del index
    return {"k": k, "protocol": "test photos query train+validation photos",
            "chosen": settings.train_embedding, "weight": w, "layers": out}
