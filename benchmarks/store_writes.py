"""What a write costs a large embedded store with an approximate (HNSW) index, or with an
exact flat one (``--kind flat``, what a store below 100,000 products has): adding a
product through the API commits it, flushes the store and the server's next search must see
it. Before the ``changes`` table every write meant rebuilding the whole HNSW graph; now the
products written since the saved index are searched from an exact layer
(``vitrine.store.index_files``) until ``RECENT_MAX`` of them.

Synthetic clustered vectors (``vitrine.bench.ClusterModel``) of the pretrained model's width in
a new store; then, for ``layered`` and for ``rebuild`` (``RECENT_MAX`` 0: what every write did
before), one product is written, the writer flushes, and a reader that had the index loaded
runs its next search (``flush_s``, ``first_search_s``) and 200 more (``p50_ms``, ``p99_ms``;
``layered_index_p50_ms`` and ``saved_index_p50_ms``: the layered index and the saved index
alone, interleaved on the same queries; the two runs' store latencies come from different
moments of a shared machine).
``recall_at_10`` of the layered index after ``--changed`` products are replaced, against exact
search of the same store. ``write_seconds``: the products' writes (transactions of 5,000;
``--attributes K`` gives each K attributes: what indexing them costs a write),
``changed_write_seconds`` the ``--changed`` products' one, ``database_mb`` the database
file after the writes.

    python benchmarks/store_writes.py --items 100000 > benchmarks/results/store_writes.json
    python benchmarks/store_writes.py --items 90000 --kind flat \
        > benchmarks/results/store_writes_flat.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vitrine.ann import IndexConfig
from vitrine.bench import ClusterModel, clusters_for, machine, percentile_ms
from vitrine.catalog import Product
from vitrine.manifest import ModelManifest
from vitrine.store import index_files
from vitrine.store.base import Record
from vitrine.store.embedded import EmbeddedStore


def attributes(i: int, count: int) -> dict[str, str]:
    """``count`` attributes of product ``i``, as a ``products.csv``'s extra columns: ``a0``
    of 8 values, ``a1`` of 200, the others of 50."""
    return {f"a{j}": f"v{(i * (7 + 24 * j)) % (8, 200, 50)[min(j, 2)]}" for j in range(count)}


def records(ids: range, vecs: np.ndarray, tag: str = "", shared_from: int | None = None,
            attrs: int = 0) -> list[Record]:
    """Products ``p{i}`` of ``vecs`` (``attrs``: with that many attributes); from
    ``shared_from`` on, of one photo file (one sha256: give them one vector)."""
    return [Record(Product(f"p{i}", Path(f"/photos/p{i}.jpg"), category=f"c{i % 8}",
                           attributes=attributes(i, attrs)),
                   "sha-placeholder" if shared_from is not None and i >= shared_from
                   else f"sha-{i}{tag}", "0" * 16, b"\0" * 768, v)
            for i, v in zip(ids, vecs, strict=True)]


def synthetic_store(root: Path, vecs: np.ndarray, n: int, config: IndexConfig,
                    shared_from: int | None = None, writes: list | None = None,
                    attrs: int = 0) -> float:
    """A store of the first ``n`` of ``vecs`` (products ``p0``…, 8 categories; from
    ``shared_from`` on, of one photo file: :func:`records`) with its index built and saved,
    closed; the seconds the index took (``writes``: given the seconds of the products'
    writes, their transactions of 5,000)."""
    store = EmbeddedStore(root, create=True, index_config=config)
    store.set_manifest(ModelManifest("synthetic", "0" * 64, {}, vecs.shape[1]))
    store.lock_for_writing()
    for start in range(0, n, 5000):
        stop = min(n, start + 5000)
        batch = records(range(start, stop), vecs[start:stop], shared_from=shared_from,
                        attrs=attrs)
        started = time.perf_counter()
        store.upsert(batch)
        if writes is not None:
            writes.append(time.perf_counter() - started)
    started = time.perf_counter()
    store.flush()
    build_s = time.perf_counter() - started
    store.close()
    return build_s


def timed_searches(store: EmbeddedStore, queries: np.ndarray) -> dict:
    """p50/p99 of the store's searches; for a layered index also, interleaved on the same
    queries, those of the index search itself (``layered_index_*``) and of its saved index
    alone (``saved_index_*``): their difference is the layer's own cost."""
    index = store._current_index()  # noqa: SLF001 - what is measured
    runs = {"": lambda q: store.search(q, 10)}
    if hasattr(index, "base"):
        runs |= {"layered_index_": lambda q: index.search(q, 10),
                 "saved_index_": lambda q: index.base.search(q, 10)}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs.items())
    for k, q in enumerate(queries):  # each first in turn: a query repeated runs warmer
        for name, run in order[k % len(order):] + order[:k % len(order)]:
            started = time.perf_counter()
            run(q)
            seconds[name].append(time.perf_counter() - started)
    return {f"{name}p{q}_ms": percentile_ms(t, q) for name, t in seconds.items() for q in (50, 99)}


def write_one(root: Path, vec: np.ndarray, pid: int, config: IndexConfig) -> dict:
    reader = EmbeddedStore(root, index_config=config)
    reader.search(vec, 10)  # the server has its index loaded
    writer = EmbeddedStore(root, index_config=config)
    writer.lock_for_writing()
    started = time.perf_counter()
    writer.upsert(records(range(pid, pid + 1), vec[None]))
    writer.flush()
    flush_s = time.perf_counter() - started
    writer.close()
    started = time.perf_counter()
    top = reader.search(vec, 1)[0].product.product_id
    first = time.perf_counter() - started
    queries = np.random.default_rng(pid).standard_normal((200, len(vec)), dtype=np.float32)
    latency = timed_searches(reader, queries / np.linalg.norm(queries, axis=1, keepdims=True))
    index = type(reader._current_index()).__name__  # noqa: SLF001 - what is measured
    reader.close()
    return {"flush_s": round(flush_s, 3), "first_search_s": round(first, 3), **latency,
            "index": index, "found": top == f"p{pid}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--changed", type=int, default=5000)
    ap.add_argument("--kind", choices=["hnsw", "flat"], default="hnsw")
    ap.add_argument("--attributes", type=int, default=0,
                    help="attributes of each product (the writes' cost of indexing them)")
    args = ap.parse_args()
    n, config = args.items, IndexConfig.defaults(kind=args.kind)
    vecs, _ = ClusterModel.create(args.dim, clusters_for(n), seed=0).sample(
        n + 2 + args.changed, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        writes: list[float] = []
        build_s = synthetic_store(root, vecs, n, config, writes=writes,
                                  attrs=args.attributes)
        database_mb = round((root / "vitrine.sqlite").stat().st_size / 1e6, 1)
        runs = {"layered": write_one(root, vecs[n], n, config)}
        saved = index_files.RECENT_MAX
        index_files.RECENT_MAX = 0
        try:
            runs["rebuild"] = write_one(root, vecs[n + 1], n + 1, config)
        finally:
            index_files.RECENT_MAX = saved
        print(json.dumps(runs), file=sys.stderr)

        store = EmbeddedStore(root, index_config=config)  # replace --changed products
        store.lock_for_writing()
        changed = range(0, args.changed)
        batch = records(changed, vecs[n + 2:n + 2 + args.changed], tag="-new",
                        attrs=args.attributes)
        started = time.perf_counter()
        store.upsert(batch)
        changed_s = time.perf_counter() - started
        ids, stored = store.all_vectors()
        layered = type(store._current_index()).__name__  # noqa: SLF001 - what is measured
        rng = np.random.default_rng(7)
        hits = []
        for q in rng.choice(len(ids), 300, replace=False):
            want = {ids[i] for i in np.argsort(-(stored @ stored[q]))[:10]}
            got = {m.product.product_id for m in store.search(stored[q], 10)}
            hits.append(len(want & got) / 10)
        store.close()
    print(json.dumps({
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": machine(), "items": n, "dim": args.dim, "index": config.tag(n),
        "attributes": args.attributes, "build_seconds": round(build_s, 2),
        "write_seconds": round(sum(writes), 2),
        "write_5000_p50_ms": percentile_ms(writes, 50), "database_mb": database_mb,
        "changed_write_seconds": round(changed_s, 2), "write_one_product": runs,
        "changed": args.changed, "index_after_changes": layered,
        "recall_at_10_after_changes": round(float(np.mean(hits)), 4),
        "load_average": [round(x, 2) for x in os.getloadavg()]}, indent=2))


if __name__ == "__main__":
    main()
