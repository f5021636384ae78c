"""Whether an HNSW graph should hold one node per copies group (near copies too), not only one
per photo file (:mod:`vitrine.ann_distinct`): the measurement behind leaving it as it is.

Today the products of one photo file (one vector) are one node, and each near copy (other
bytes of the photo: re-encoded, resized; ``index``'s duplicate groups) is a node of its own.
Here both are measured in one run, back to back, on the same vectors and queries:

- ``per photo``: the index as built (:func:`vitrine.ann.build_index`);
- ``per group``: a simulation of one node per copies group: the graph holds the group's first
  product (its vector the representative) and no other member of the group; a node found
  gives its group's products, each scored exactly with its own vector (what ``Copies.expand``
  would have to do, with each near copy's vector kept beside the graph), best first; a
  group is hidden from the walk where all of its products are;
- ``per group, 2k nodes``: the same graph (built once) asked for twice as many nodes (k
  more) before its groups are scored: a near copy may score above its group's
  representative, whose node then fell short of the top k nodes while that copy belongs in
  the top k products.

Groups are planted as in ``copies_search.py`` (its ``plant``, ``run`` and ``others``: the same
figures, the same seeds): half of each group one vector, half near it (cosine 0.97-0.995),
``--same`` the share that is one vector. ``others_near_copies`` is the recall@10 of the 200
products that are no copies nearest to a group (itself left out, nothing hidden); ``runs``
search a group's member with its whole group hidden (a product's similar products).

    python benchmarks/near_copies_nodes.py --items 20000 --dim 256 --copies 0,10,1000,4000 \
        > benchmarks/results/near_copies_nodes_20k_256d.json
    python benchmarks/near_copies_nodes.py --items 100000 \
        > benchmarks/results/near_copies_nodes_100k.json
    python benchmarks/near_copies_nodes.py --items 20000 --dim 256 --copies 3 --queries 1000 \
        --budget 3000 --same 0 > benchmarks/results/near_copies_nodes_20k_256d_small.json
    (1,000 groups of a product and 3 near copies of it: what re-encoded photos look like)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from copies_search import others, plant, run  # noqa: E402

from vitrine.ann import IdSet, IndexConfig, Result, build_index  # noqa: E402
from vitrine.bench import ClusterModel, clusters_for, load_average, machine  # noqa: E402


class GroupNodes:
    """One HNSW node per copies group (its first row's vector), searched as
    ``VectorIndex.search``/``search_many`` (``hidden``: row ids), each node found given as
    its group's rows scored exactly with their own vectors; ``deeper``: nodes asked for
    besides ``k``."""

    def __init__(self, config: IndexConfig, vecs: np.ndarray, groups: list[np.ndarray],
                 deeper: int = 0):
        n = len(vecs)
        self.vecs, self.deeper = vecs, deeper
        self.node = np.arange(n, dtype=np.int64)
        self.members: dict[int, np.ndarray] = {}
        for rows in groups:
            self.node[rows] = rows[0]
            self.members[int(rows[0])] = np.asarray(rows, np.int64)
        keep = self.node == np.arange(n)
        ids = np.arange(n, dtype=np.int64)
        self.index = build_index(config, vecs.shape[1], int(keep.sum()),
                                 [(ids[keep], vecs[keep])])
        self.nodes = self.index.nodes

    def search(self, query: np.ndarray, k: int, hidden: IdSet | None = None) -> Result:
        return self.search_many(np.asarray(query, np.float32).reshape(1, -1), k, hidden,
                                threads=1)[0]

    def search_many(self, queries: np.ndarray, k: int, hidden: IdSet | None = None, *,
                    threads: int | None = None) -> list[Result]:
        past = None
        if hidden is not None:  # (a node is hidden where its whole group is)
            nodes = np.unique(self.node[hidden.ids])
            past = IdSet(np.array([g for g in nodes.tolist() if hidden.contains(
                self.members.get(g, np.array([g]))).all()], np.int64))
        found = self.index.search_many(queries, k + self.deeper, hidden=past,
                                       threads=threads)
        results = []
        for query, (_, ids) in zip(queries, found, strict=True):
            rows = np.concatenate([np.zeros(0, np.int64)] + [
                self.members.get(i, np.array([i], np.int64)) for i in ids.tolist()])
            if hidden is not None:
                rows = rows[~hidden.contains(rows)]
            scores = self.vecs[rows] @ query
            top = np.lexsort((rows, -scores))[:k]
            results.append((scores[top], rows[top]))
        return results


def measure(index, vecs, groups, counts, planted, args) -> dict:
    about: dict = {"runs": []}
    for count in counts:
        for _ in range(2):  # (warm-up)
            index.search(vecs[groups[count][0][0]], args.k, hidden=IdSet(groups[count][0]))
        about["runs"].append({"copies": count, "groups": len(groups[count]),
                              **run(index, vecs, groups[count], args.queries, args.k,
                                    np.random.default_rng(count))})
    about["others"] = others(index, vecs, planted, args.others, args.k)
    if planted.any():
        about["others_near_copies"] = others(index, vecs, planted, args.others, args.k,
                                             vecs[[rows[0] for rows in sum(
                                                 (groups[c] for c in counts if c), [])]])
    about["nodes"] = index.nodes
    return about


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--copies", default="0,10,100,1000,20000",
                    help="copy counts, comma-separated")
    ap.add_argument("--queries", type=int, default=20,
                    help="searches per copy count (and most groups of one count)")
    ap.add_argument("--budget", type=int, default=5000,
                    help="about how many rows the groups of one copy count take")
    ap.add_argument("--others", type=int, default=200)
    ap.add_argument("--same", type=float, default=0.5,
                    help="share of each group that is the same vector (the rest near it)")
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    n, rng = args.items, np.random.default_rng(0)
    vecs, _ = ClusterModel.create(args.dim, clusters_for(n), seed=0).sample(n, seed=0)
    counts = [int(c) for c in args.copies.split(",")]
    groups = plant(vecs, counts, args.queries, args.budget, rng, args.same)
    planted = np.zeros(n, bool)
    every = [rows for count in counts if count for rows in groups[count]]
    for rows in every:
        planted[rows] = True
    config = IndexConfig.defaults(kind="hnsw")
    indexes = []
    for nodes in ("per photo", "per group"):
        start = time.perf_counter()
        index = build_index(config, args.dim, n, [(np.arange(n, dtype=np.int64), vecs)]) \
            if nodes == "per photo" else GroupNodes(config, vecs, every)
        about = {"nodes_per": nodes, "index": config.tag(n),
                 "build_seconds": round(time.perf_counter() - start, 1)}
        indexes.append({**about, **measure(index, vecs, groups, counts, planted, args)})
        if nodes == "per group":  # (the same graph, asked k nodes deeper)
            index.deeper = args.k
            indexes.append({**about, "nodes_per": "per group, 2k nodes",
                            **measure(index, vecs, groups, counts, planted, args)})
        del index
    print(json.dumps({"items": n, "dim": args.dim, "k": args.k, "queries": args.queries,
                      "same": args.same, "machine": machine(),
                      "load_average": load_average(), "indexes": indexes}, indent=2))


if __name__ == "__main__":
    main()
