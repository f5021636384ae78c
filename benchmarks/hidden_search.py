"""A page of `vitrine related` (1,000 queries) on a flat index that hides some of its rows, as
the layered index of a store hides its base's changed products until the next rebuild (a
fifth of them at most): searched past the hidden ids (the top k + hidden, those dropped; what
``VectorIndex.search_many`` does) against excluding them with a FAISS selector (what it did
before 2026-12-05: the flat search then scans query by query, without its matrix product), in
one run, on synthetic clustered vectors of the pretrained model's width.
``same_lists_share`` is the share of queries whose lists are the same ids in the same order,
``max_score_difference`` the largest difference of scores at one rank (tied products may come
in another order).

    python benchmarks/hidden_search.py --items 50000 > benchmarks/results/hidden_search.json
"""

from __future__ import annotations

import argparse
import json
import time

import faiss
import numpy as np

from vitrine.ann import IdSet, IndexConfig, build_index
from vitrine.bench import ClusterModel, clusters_for, machine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--hidden", default="50,500,5000")
    args = ap.parse_args()
    n, rng = args.items, np.random.default_rng(0)
    vecs, _ = ClusterModel.create(args.dim, clusters_for(n), seed=0).sample(n, seed=0)
    ids = np.arange(n, dtype=np.int64)
    index = build_index(IndexConfig.defaults(kind="flat"), args.dim, n, [(ids, vecs)])
    queries = vecs[rng.choice(n, args.queries, replace=False)]
    runs = []
    for count in map(int, args.hidden.split(",")):
        hidden = IdSet(rng.choice(n, count, replace=False).astype(np.int64))
        start = time.perf_counter()
        past = index.search_many(queries, args.k, hidden=hidden)
        past_s = time.perf_counter() - start
        params = faiss.SearchParameters()
        params.sel = faiss.IDSelectorNot(hidden.selector())
        start = time.perf_counter()
        scores, selected = index.index.search(queries, args.k, params=params)
        selector_s = time.perf_counter() - start
        pairs = list(zip(past, scores, selected, strict=True))
        runs.append({"hidden": count, "past_hidden_seconds": round(past_s, 3),
                     "selector_seconds": round(selector_s, 3),
                     "speedup": round(selector_s / past_s, 1),
                     # (the two ways compute scores in another order: ties may swap)
                     "same_lists_share": sum(np.array_equal(got, want)
                                             for (_, got), _, want in pairs) / len(pairs),
                     "max_score_difference": float(max(np.abs(np.clip(s, -1, 1) - w).max()
                                                       for (s, _), w, _ in pairs))})
    print(json.dumps({"items": n, "dim": args.dim, "queries": args.queries, "k": args.k,
                      "machine": machine(), "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
