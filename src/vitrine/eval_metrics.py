"""Retrieval metrics of ``vitrine evaluate`` (P@k, R@k, mAP@k overall and per category,
a query's duplicates skipped) and the duplicate groups' photos counted once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from vitrine.catalog import Product
from vitrine.evaluate import average_precision_at_k, per_label, precision_at_k, recall_at_k

DIGITS = 6
"""Decimals the retrieval metrics keep: the tables show three, and rounded to four first
17/21 showed as 0.809, not 0.810 (helper-187)."""


def retrieval_metrics(index_vecs: np.ndarray, index_labels: Sequence[str],
                      query_vecs: np.ndarray, query_labels: Sequence[str], k: int = 5, *,
                      leave_one_out: bool = False,
                      skip: Sequence[Sequence[int]] | None = None) -> dict:
    """P@k, R@k and mAP@k of category retrieval, overall and per category.

    With ``leave_one_out`` the queries are the index itself and each query's own row is
    skipped; ``skip[q]`` lists more index rows that query ``q`` neither retrieves nor counts
    as relevant (its duplicates: finding a copy of the photo is no recommendation). A query
    with nothing of its category to find (the only photo of its category) has no score: it
    is left out of the means (``without_relevant`` counts them), and a category of such
    queries only scores None.
    """
    import faiss

    skips = [set(s) for s in skip] if skip is not None else [set() for _ in query_labels]
    if leave_one_out:
        for q, rows in enumerate(skips):
            rows.add(q)
    extra = max((len(rows) for rows in skips), default=0)
    # exact, without an index's copy of the vectors (they may be a file mapped into memory)
    _, ids = faiss.knn(np.ascontiguousarray(query_vecs, dtype=np.float32),
                       np.ascontiguousarray(index_vecs, dtype=np.float32),
                       min(k + extra, len(index_labels)), metric=faiss.METRIC_INNER_PRODUCT)
    ids = [[j for j in row if j >= 0 and j not in skips[q]][:k] for q, row in enumerate(ids)]
    retrieved = [[index_labels[j] for j in row] for row in ids]
    counts = Counter(index_labels)
    relevant_all = [counts[label] - sum(index_labels[j] == label for j in skips[q])
                    for q, label in enumerate(query_labels)]
    scored = [i for i, n in enumerate(relevant_all) if n > 0]
    labels = [query_labels[i] for i in scored]
    retrieved = [retrieved[i] for i in scored]
    relevant = [relevant_all[i] for i in scored]
    metrics = {"precision": precision_at_k, "recall": recall_at_k,
               "map": average_precision_at_k}
    out: dict = {"n_queries": len(labels), "without_relevant": len(query_labels) - len(labels)}
    for name, fn in metrics.items():
        kwargs = {} if name == "precision" else {"relevant_counts": relevant}
        out[name] = round(fn(labels, retrieved, k, **kwargs), DIGITS) if labels else None
    per_cat: dict = {q: dict.fromkeys(metrics) for q in query_labels}
    for name, fn in metrics.items():
        kwargs = {} if name == "precision" else {"relevant_counts": relevant}
        for cat, value in per_label(fn, labels, retrieved, k, **kwargs).items():
            per_cat[cat][name] = round(value, DIGITS)
    out["per_category"] = dict(sorted(per_cat.items()))
    return out


def one_per_group(ids: Sequence[str], groups: Sequence[Sequence[str]]) -> list[int]:
    """Positions of ``ids`` (the photos that query, or are scored) that count: each
    duplicate group's photos among them once (by its smallest id), every other photo. Copies
    of one photo (a shirt's sizes under one picture, a photo saved again) kept in one split
    counted as that many test photos, and the interval as if they were independent
    (helper-231)."""
    group_of = {pid: g for g, group in enumerate(groups) for pid in group}
    first: dict[int, int] = {}
    for position, pid in enumerate(ids):
        if (g := group_of.get(pid)) is not None and (
                g not in first or pid < ids[first[g]]):
            first[g] = position
    return [position for position, pid in enumerate(ids)
            if (g := group_of.get(pid)) is None or first[g] == position]


def _duplicates_of_queries(queries: np.ndarray, index: np.ndarray,
                           groups: Sequence[Sequence[str]], products: Sequence[Product]
                           ) -> list[list[int]]:
    """For each query, the index rows (positions in ``index``) holding one of its duplicates:
    a resized or recompressed copy of the photo would otherwise count as a hit."""
    row = {p.product_id: i for i, p in enumerate(products)}
    group_of = {row[pid]: g for g, group in enumerate(groups) for pid in group}
    members: dict[int, list[int]] = {}
    for position, i in enumerate(index.tolist()):
        if i in group_of:
            members.setdefault(group_of[i], []).append(position)
    return [[j for j in members.get(group_of[i], []) if index[j] != i]
            if i in group_of else [] for i in queries.tolist()]
