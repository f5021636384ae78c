"""Category-filtered search with the approximate index: latency and recall@10 against exact
filtered search, for small and large categories, queried from inside and from outside them.

Synthetic clustered vectors as in `vitrine bench` (clusters play categories). Strategies:

* ``vitrine``: what the store does (vitrine.ann.VectorIndex.search): exact over the category
  up to ``filter_exact_max`` products; above, the approximate top 2k/share post-filtered, with
  an exact fallback when fewer than k members come back;
* ``selector``: FAISS's own filtered HNSW/IVF search with an ID selector (search breadth
  widened by 1/share), for comparison;
* ``exact``: exact search over the category's vectors (the ground truth), timed.

    python benchmarks/filtered_search.py --items 200000 --index hnsw --fp16
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import faiss
import numpy as np

from vitrine.ann import IdSet, IndexConfig, build_index
from vitrine.bench import ClusterModel, clusters_for, recall_at_k, synthetic_chunks


def selector_search(index, query: np.ndarray, k: int, subset: IdSet, share: float):
    """FAISS's filtered search: ID selector, breadth widened by 1/share."""
    params = index._params(k)  # noqa: SLF001 - benchmark of the alternative
    if index.kind == "hnsw":
        params.efSearch = int(min(4096, index.config.hnsw_ef_search / share))
    else:
        params.nprobe = int(min(index.inner.nlist, math.ceil(index.config.ivf_nprobe / share)))
    params.sel = subset.selector()
    scores, ids = index.index.search(query[None], k, params=params)
    return scores[0], ids[0][ids[0] >= 0]


def measure(fn, queries: np.ndarray, truth: np.ndarray, k: int) -> dict:
    times, found = [], np.full((len(queries), k), -1, np.int64)
    faiss.omp_set_num_threads(1)
    for i, q in enumerate(queries):
        t0 = time.perf_counter()
        _, ids = fn(q)
        times.append(time.perf_counter() - t0)
        found[i, :len(ids)] = ids[:k]
    ms = np.asarray(times) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "recall_at_10": round(recall_at_k(found, truth, k), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--index", default="hnsw", choices=["hnsw", "ivf"])
    ap.add_argument("--fp16", action="store_true", help="fp16 storage (default: the setting)")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--filter-exact-max", type=int, default=20_000)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/filtered_search.json"))
    args = ap.parse_args()
    k, dim = 10, 1280
    config = IndexConfig.defaults(kind=args.index, fp16=True if args.fp16 else None,
                                  filter_exact_max=args.filter_exact_max)
    model = ClusterModel.create(dim, clusters_for(args.items), seed=0)
    vectors, labels = [], []
    for _, vecs, labs in synthetic_chunks(model, args.items, seed=0):
        vectors.append(vecs)
        labels.append(labs)
    vectors, labels = np.concatenate(vectors), np.concatenate(labels)
    ids = np.arange(len(vectors), dtype=np.int64)
    started = time.perf_counter()
    index = build_index(config, dim, len(vectors), [(ids, vectors)],
                        sample=lambda m: vectors[:: max(1, len(vectors) // m)])
    build_seconds = time.perf_counter() - started
    order = np.argsort(np.bincount(labels))
    sizes = np.bincount(labels)
    small = [order[len(order) // 2]]  # a median cluster: far below filter_exact_max
    large, total = [], 0
    for c in order[::-1]:  # the biggest clusters up to a quarter of the store
        if total >= len(vectors) // 4:
            break
        large.append(c)
        total += sizes[c]
    report = {"items": args.items, "index": config.tag(args.items),
              "build_seconds": round(build_seconds, 1), "filter_exact_max": args.filter_exact_max,
              "load_average": list(os.getloadavg()), "cases": {}}
    rng = np.random.default_rng(1)
    for name, cats in (("small", small), ("large", large)):
        member = np.isin(labels, cats)
        subset = IdSet(ids[member])
        share = len(subset) / len(vectors)
        for origin in ("inside", "outside"):
            pool = np.flatnonzero(member if origin == "inside" else ~member)
            queries = vectors[rng.choice(pool, args.queries, replace=False)]
            queries = queries + 0.02 * rng.standard_normal(queries.shape).astype(np.float32)
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
            sub_vecs, sub_ids = vectors[member], ids[member]
            _, pos = faiss.knn(queries, sub_vecs, k, metric=faiss.METRIC_INNER_PRODUCT)
            truth = sub_ids[pos]
            flat = faiss.IndexFlatIP(dim)
            flat.add(sub_vecs)
            report["cases"][f"{name}-{origin}"] = {
                "category_items": len(subset), "share": round(share, 4),
                "vitrine": measure(lambda q, s=subset: index.search(q, k, s), queries, truth, k),
                "selector": measure(lambda q, s=subset, f=share: selector_search(
                    index, q, k, s, f), queries, truth, k),
                "exact": measure(lambda q, fl=flat, si=sub_ids: (None, si[fl.search(
                    q[None], k)[1][0]]), queries, truth, k),
            }
            print(name, origin, json.dumps(report["cases"][f"{name}-{origin}"]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
