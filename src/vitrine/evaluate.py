"""Retrieval metrics as small pure functions over label arrays.

``retrieved`` is an (n_queries, k) array of the labels of each query's ranked results;
``relevant_counts`` gives, per query, how many relevant items the index holds (for recall/AP).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _hits(query_labels: Sequence, retrieved: Sequence[Sequence], k: int) -> np.ndarray:
    q = np.asarray(query_labels, dtype=object).reshape(-1, 1)
    r = np.asarray([list(row[:k]) + [None] * (k - len(row[:k])) for row in retrieved],
                   dtype=object)
    if r.size == 0:
        return np.zeros((len(q), k), dtype=bool)
    return r == q


def precision_at_k(query_labels: Sequence, retrieved: Sequence[Sequence], k: int) -> float:
    """Mean fraction of the top ``k`` results sharing the query's label."""
    if k < 1:
        raise ValueError("k must be at least 1")
    if len(query_labels) == 0:
        return float("nan")
    return float(_hits(query_labels, retrieved, k).sum(axis=1).mean() / k)


def recall_at_k(query_labels: Sequence, retrieved: Sequence[Sequence], k: int,
                relevant_counts: Sequence[int]) -> float:
    """Mean fraction of all relevant items found in the top ``k``."""
    hits = _hits(query_labels, retrieved, k).sum(axis=1)
    counts = np.asarray(relevant_counts, dtype=float)
    return float(np.mean(np.where(counts > 0, hits / np.maximum(counts, 1), 0.0)))


def average_precision_at_k(query_labels: Sequence, retrieved: Sequence[Sequence], k: int,
                           relevant_counts: Sequence[int]) -> float:
    """Mean average precision at ``k`` (AP normalised by min(k, relevant count))."""
    hits = _hits(query_labels, retrieved, k).astype(float)
    ranks = np.arange(1, k + 1)
    precision_at_rank = np.cumsum(hits, axis=1) / ranks
    denom = np.minimum(np.asarray(relevant_counts, dtype=float), k)
    ap = np.where(denom > 0, (precision_at_rank * hits).sum(axis=1) / np.maximum(denom, 1), 0.0)
    return float(ap.mean())


def per_label(metric, query_labels: Sequence, retrieved: Sequence[Sequence], k: int,
              **kwargs) -> dict:
    """Apply ``metric`` to the queries of each label separately."""
    labels = np.asarray(query_labels, dtype=object)
    out = {}
    for label in sorted(set(query_labels)):
        mask = labels == label
        sub = {key: np.asarray(v)[mask] for key, v in kwargs.items()}
        out[label] = metric(labels[mask], [r for r, m in zip(retrieved, mask, strict=True)
                                           if m], k, **sub)
    return out


# --- Classification metrics -------------------------------------------------------------------


def accuracy(y_true: Sequence, y_pred: Sequence) -> float:
    """Fraction of predictions equal to the true label."""
    if len(y_true) == 0:
        return float("nan")
    return float(np.mean(np.asarray(y_true, dtype=object) == np.asarray(y_pred, dtype=object)))


def confusion_matrix(y_true: Sequence, y_pred: Sequence, labels: Sequence) -> np.ndarray:
    """Counts: row = true label, column = predicted label, in the order of ``labels``
    (pairs with a label outside ``labels`` are left out)."""
    position = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(y_true, y_pred, strict=True):
        if t in position and p in position:
            matrix[position[t], position[p]] += 1
    return matrix


def per_class_prf(matrix: np.ndarray, labels: Sequence) -> dict:
    """Precision, recall, F1, support and how many photos were predicted as it, per label
    from a confusion matrix (0 where a ratio has no denominator)."""
    matrix = np.asarray(matrix, dtype=float)
    tp = np.diag(matrix)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    out = {}
    for i, label in enumerate(labels):
        p = tp[i] / predicted[i] if predicted[i] else 0.0
        r = tp[i] / actual[i] if actual[i] else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        out[label] = {"precision": float(p), "recall": float(r), "f1": float(f1),
                      "support": int(actual[i]), "predicted": int(predicted[i])}
    return out


def macro_f1(prf: dict) -> float:
    """Unweighted mean F1 over the labels with support."""
    scores = [v["f1"] for v in prf.values() if v["support"] > 0]
    return float(np.mean(scores)) if scores else float("nan")


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score confidence interval of a proportion (default 95 %)."""
    if n <= 0:
        return (float("nan"), float("nan"))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else float(max(0.0, centre - half))
    high = 1.0 if successes == n else float(min(1.0, centre + half))  # not 0.9999999999999999
    return (low, high)
