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
