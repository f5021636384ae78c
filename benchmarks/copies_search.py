"""A product's similar products with its copies hidden inside the index search (what the
embedded store does for a product whose copies took the places of its first search:
``EmbeddedStore.search_many(exclude_photos=...)``, ``VectorIndex.search(hidden=...)``), for
products of 0, 10, 100, 1,000 and 20,000 copies, on a flat, an HNSW and an IVF index built
with the default settings: latency of one such search (p50/p99, one thread, as a server's)
and recall@10 against the exact top 10 of the products that are not copies; and ``others``:
products that are no copies searched with nothing hidden (what a store's copies do to the
rest of it), and ``others_near_copies``: the same for the ones nearest to a group; ``nodes``:
the index's vectors (an HNSW graph holds one per distinct vector, :mod:`vitrine.ann_distinct`).

Synthetic clustered vectors as in `vitrine bench`; each group of copies is planted at a
product's vector: half of it the same vector (products of one photo file, a placeholder
photo), half near it (cosine 0.97–0.995: `index`'s duplicate groups); ``--same 1``: all of
it the same vector. A query is one member of a group, the whole group hidden.
``recall_at_10`` counts a result as found when its exact score reaches the exact 10th best
non-copy's (equal scores are not misses); ``short`` is the queries given fewer than k
results, ``copies_returned`` the copies among all results, ``batch_ms_per_query`` the same
queries asked a group at a time (one ``search_many`` on every core, as `vitrine related`
asks them).

    python benchmarks/copies_search.py --items 100000 > benchmarks/results/copies_search.json
    python benchmarks/copies_search.py --items 100000 --same 1 \
        > benchmarks/results/copies_search_same.json

One HNSW node per distinct vector (:mod:`vitrine.ann_distinct`), HNSW alone, before (the
``src`` of the commit before it: ``*_before.json``) and after:

    python benchmarks/copies_search.py --items 100000 --kinds hnsw \
        > benchmarks/results/copies_search_graph.json
    (``--same 1``: ``copies_search_graph_same.json``; ``--items 20000 --dim 256 --copies
    0,10,1000,4000``: ``copies_search_graph_20k_256d.json``, with ``--same 1``:
    ``copies_search_graph_20k_256d_same.json``)
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from vitrine.ann import IdSet, IndexConfig, build_index
from vitrine.bench import ClusterModel, clusters_for, load_average, machine, percentile_ms


def plant(vecs: np.ndarray, counts: list[int], queries: int, budget: int,
          rng: np.random.Generator, same_share: float = 0.5) -> dict[int, list[np.ndarray]]:
    """For each copy count, groups of that many copies of a product (the product's row
    first), at most ``queries`` groups and about ``budget`` rows a count: rows of ``vecs``
    rewritten in place. Returns each count's groups of row ids."""
    n, free = len(vecs), rng.permutation(len(vecs))
    taken, groups = 0, {}
    for count in counts:
        number = max(1, min(queries, budget // max(count, 1)))
        groups[count] = []
        for _ in range(number):
            rows = np.sort(free[taken:taken + count + 1])
            taken += count + 1
            if taken > n:
                raise SystemExit("--items too few for the copies planted")
            base = vecs[rows[0]]
            same = rows[1:1 + round(count * same_share)]
            near = rows[1 + round(count * same_share):]
            vecs[same] = base
            if len(near):
                noise = rng.standard_normal((len(near), vecs.shape[1])).astype(np.float32)
                noise -= np.outer(noise @ base, base)
                noise /= np.linalg.norm(noise, axis=1, keepdims=True)
                cos = rng.uniform(0.97, 0.995, size=(len(near), 1)).astype(np.float32)
                vecs[near] = cos * base + np.sqrt(1 - cos ** 2) * noise
            groups[count].append(rows)
    return groups


def run(index, vecs: np.ndarray, groups: list[np.ndarray], queries: int, k: int,
        rng: np.random.Generator) -> dict:
    """One index, one copy count: ``queries`` searches, each from a member of a group
    (cycling through the groups), the group hidden."""
    latencies, recalls, short, copies_returned, got_scores, best_scores = [], [], 0, 0, [], []
    asked: dict[int, list[int]] = {}
    for i in range(queries):
        rows = groups[i % len(groups)]
        asked.setdefault(i % len(groups), []).append(int(rows[rng.integers(len(rows))]))
        q = vecs[asked[i % len(groups)][-1]]
        hidden = IdSet(rows)
        start = time.perf_counter()
        _, ids = index.search(q, k, hidden=hidden)
        latencies.append(time.perf_counter() - start)
        exact = vecs @ q
        exact[rows] = -np.inf
        kth = np.partition(exact, len(exact) - k)[len(exact) - k]
        found = exact[ids]  # (a copy scores -inf: never counted as found)
        recalls.append(min(k, int((found >= kth - 1e-6).sum())) / k)
        short += len(ids) < k
        copies_returned += int(hidden.contains(ids).sum())
        got_scores.append(float(found[np.isfinite(found)].mean()) if len(ids) else 0.0)
        best_scores.append(float(np.sort(exact)[-k:].mean()))
    start = time.perf_counter()  # (as `related` asks: a group's products in one call)
    for group, rows in asked.items():
        index.search_many(vecs[rows], k, hidden=IdSet(groups[group]))
    batch_s = time.perf_counter() - start
    return {"p50_ms": percentile_ms(latencies, 50), "p99_ms": percentile_ms(latencies, 99),
            "batch_ms_per_query": round(batch_s / queries * 1e3, 3),
            "mean_ms": round(float(np.mean(latencies)) * 1e3, 3),
            "recall_at_10": round(float(np.mean(recalls)), 4),
            "min_recall_at_10": round(float(np.min(recalls)), 2),
            "short": short, "copies_returned": copies_returned,
            "mean_score_found": round(float(np.mean(got_scores)), 4),
            "mean_score_exact": round(float(np.mean(best_scores)), 4)}


def others(index, vecs: np.ndarray, planted: np.ndarray, queries: int, k: int,
           near: np.ndarray | None = None) -> dict:
    """Products that are no copies, searched as a product's page does when it has none
    (nothing hidden, itself left out): the recall every other product of the store gets;
    with ``near`` (the groups' vectors), the ``queries`` of them nearest to a group."""
    rest = np.flatnonzero(~planted)
    if near is None:
        rows = np.random.default_rng(1).choice(rest, queries, replace=False)
    else:
        rows = rest[np.argsort(-(vecs[rest] @ near.T).max(axis=1))[:queries]]
    exact = vecs[rows] @ vecs.T
    exact[np.arange(len(rows)), rows] = -np.inf
    kth = np.partition(exact, exact.shape[1] - k, axis=1)[:, exact.shape[1] - k]
    latencies, recalls = [], []
    for i, row in enumerate(rows):
        start = time.perf_counter()
        _, ids = index.search(vecs[row], k + 1)
        latencies.append(time.perf_counter() - start)
        ids = ids[ids != row][:k]
        recalls.append(min(k, int((exact[i, ids] >= kth[i] - 1e-6).sum())) / k)
    return {"queries": queries, "p50_ms": percentile_ms(latencies, 50),
            "p99_ms": percentile_ms(latencies, 99),
            "recall_at_10": round(float(np.mean(recalls)), 4),
            "below_0.5": int((np.asarray(recalls) < 0.5).sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--copies", default="0,10,100,1000,20000",
                    help="copy counts, comma-separated")
    ap.add_argument("--queries", type=int, default=20, help="searches per copy count")
    ap.add_argument("--budget", type=int, default=5000,
                    help="about how many rows the groups of one copy count take (at least one "
                         "group)")
    ap.add_argument("--others", type=int, default=200,
                    help="products that are no copies searched with nothing hidden")
    ap.add_argument("--same", type=float, default=0.5,
                    help="share of each group that is the same vector (the rest near it)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--kinds", default="flat,hnsw,ivf")
    args = ap.parse_args()
    n, rng = args.items, np.random.default_rng(0)
    vecs, _ = ClusterModel.create(args.dim, clusters_for(n), seed=0).sample(n, seed=0)
    counts = [int(c) for c in args.copies.split(",")]
    groups = plant(vecs, counts, args.queries, args.budget, rng, args.same)
    planted = np.zeros(n, bool)
    for rows in (rows for count in counts if count for rows in groups[count]):
        planted[rows] = True
    ids = np.arange(n, dtype=np.int64)
    indexes = []
    for kind in args.kinds.split(","):
        config = IndexConfig.defaults(kind=kind)
        start = time.perf_counter()
        index = build_index(config, args.dim, n, [(ids, vecs)],
                            lambda m: vecs[np.sort(rng.choice(n, min(m, n), replace=False))])
        about = {"kind": kind, "index": config.tag(n),
                 "build_seconds": round(time.perf_counter() - start, 1), "runs": []}
        for count in counts:
            for _ in range(2):  # (warm-up)
                index.search(vecs[groups[count][0][0]], args.k, hidden=IdSet(groups[count][0]))
            about["runs"].append({"copies": count, "groups": len(groups[count]),
                                  **run(index, vecs, groups[count], args.queries, args.k,
                                        np.random.default_rng(count))})
        about["others"] = others(index, vecs, planted, args.others, args.k)
        if planted.any():  # (the products that are no copies nearest to the groups)
            about["others_near_copies"] = others(index, vecs, planted, args.others, args.k,
                                                 vecs[[rows[0] for rows in sum(
                                                     (groups[c] for c in counts if c), [])]])
        about["nodes"] = getattr(index, "nodes", index.ntotal)
        indexes.append(about)
        del index
    print(json.dumps({"items": n, "dim": args.dim, "k": args.k, "queries": args.queries,
                      "machine": machine(), "load_average": load_average(),
                      "indexes": indexes}, indent=2))


if __name__ == "__main__":
    main()
