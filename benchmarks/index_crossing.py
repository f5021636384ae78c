"""A store crossing the size of the approximate index (``ann_min_items``, 100,000 products):
the write that crosses it needs an index of another kind (HNSW instead of flat), which the
server builds in a thread beside its requests. Before, every search meanwhile built the HNSW
graph itself (``first_search_s`` was the build); now it layers the products written since on
the flat index (``vitrine.store.index_files``) until the HNSW index is saved.

Synthetic clustered vectors of the pretrained model's width, ``--items - 1`` products in a
flat store; one product written the way the API writes (``flush(rebuild=False)``); then a
reader's first search and 200 more (``p50_ms``, ``p99_ms``), the store's rebuild
(``rebuild_s``: what the first search cost before) and a search after it.

    python benchmarks/index_crossing.py > benchmarks/results/index_crossing.json
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
from vitrine.manifest import ModelManifest
from vitrine.store.embedded import EmbeddedStore

sys.path.insert(0, str(Path(__file__).parent))
from store_writes import records  # noqa: E402


def timed(store: EmbeddedStore, queries: np.ndarray) -> list[float]:
    """Seconds of each top-10 search."""
    seconds = []
    for q in queries:
        started = time.perf_counter()
        store.search(q, 10)
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1280)
    args = ap.parse_args()
    n = args.items
    config = IndexConfig.defaults(kind="auto", ann_min_items=n)
    vecs, _ = ClusterModel.create(args.dim, clusters_for(n), seed=0).sample(n, seed=1)
    queries = np.random.default_rng(3).standard_normal((200, args.dim), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        store = EmbeddedStore(root, create=True, index_config=config)
        store.set_manifest(ModelManifest("synthetic", "0" * 64, {}, args.dim))
        store.lock_for_writing()
        for start in range(0, n - 1, 5000):
            stop = min(n - 1, start + 5000)
            store.upsert(records(range(start, stop), vecs[start:stop]))
        store.flush()
        reader = EmbeddedStore(root, index_config=config)
        reader.search(queries[0], 10)  # the server has its flat index loaded
        store.upsert(records(range(n - 1, n), vecs[n - 1:n]))
        started = time.perf_counter()
        store.flush(rebuild=False)  # an API write
        flush_s = time.perf_counter() - started
        started = time.perf_counter()
        found = reader.search(vecs[n - 1], 1)[0].product.product_id == f"p{n - 1}"
        first_s = time.perf_counter() - started
        seconds = timed(reader, queries)
        kind_before = reader._current_index().base.kind  # noqa: SLF001 - what is measured
        started = time.perf_counter()
        store.rebuild_index()  # the server's thread; before, each search's own build
        rebuild_s = time.perf_counter() - started
        started = time.perf_counter()
        reader.search(queries[1], 10)
        after_s = time.perf_counter() - started
        after = timed(reader, queries)
        kind_after = reader._current_index().kind  # noqa: SLF001 - what is measured
        reader.close()
        store.close()
    print(json.dumps({
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": machine(), "items": n, "dim": args.dim,
        "index_before": config.tag(n - 1), "index_after": config.tag(n),
        "flush_s": round(flush_s, 3), "first_search_s": round(first_s, 3), "found": found,
        "searched_on": f"{kind_before} index + exact layer",
        "p50_ms": percentile_ms(seconds, 50), "p99_ms": percentile_ms(seconds, 99),
        "rebuild_s": round(rebuild_s, 2), "first_search_after_rebuild_s": round(after_s, 3),
        "searched_after_rebuild_on": kind_after,
        "p50_ms_after_rebuild": percentile_ms(after, 50),
        "p99_ms_after_rebuild": percentile_ms(after, 99),
        "load_average": [round(x, 2) for x in os.getloadavg()]}, indent=2))


if __name__ == "__main__":
    main()
