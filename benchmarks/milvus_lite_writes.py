"""Memory of writing many products to a Milvus Lite store (`vitrine index` or `vitrine migrate`
into ``milvus-lite://…``): ``--items`` synthetic products (random vectors of the pretrained
model's width, 1,280) written 256 at a time, as `migrate` does, into a new Milvus Lite file;
the peak resident memory of this process and the Milvus Lite server it starts (VmRSS of the
process tree, read every 100 ms) while writing, up to the final flush
(``written_peak_rss_mb``), and with the count read afterwards, which loads the collection as
any search does (``peak_rss_mb``); the seconds the writes and the final flush took.

Each row runs in a process of its own, one after the other in this command: ``flushed`` with
the store's ``LITE_FLUSH_ROWS`` (a flush every 5,000 rows written), ``unflushed`` with the
flush at the end alone (what every write did up to this script's commit: Milvus Lite's growing
segments held every row).

    python benchmarks/milvus_lite_writes.py --items 20000 \
        > benchmarks/results/milvus_lite_writes.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

BATCH = 256
DIM = 1280


def _tree(pid: int) -> list[int]:
    found = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                for child in fh.read().split():
                    found += _tree(int(child))
    except OSError:
        pass
    return found


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def write(items: int, flush_rows: int) -> dict:
    """Write ``items`` products into a new Milvus Lite store, the store flushing every
    ``flush_rows`` rows; the peak memory of the process tree and the seconds taken."""
    from vitrine.catalog import Product
    from vitrine.manifest import ModelManifest
    from vitrine.store import milvus_store, open_store
    from vitrine.store.base import Record

    milvus_store.LITE_FLUSH_ROWS = flush_rows
    peak, done = [0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], sum(_rss(p) for p in _tree(os.getpid())))
            time.sleep(0.1)

    threading.Thread(target=watch, daemon=True).start()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"milvus-lite://{tmp}/store.db", create=True)
        store.set_manifest(ModelManifest("synthetic", "0" * 64, {}, DIM))
        started = time.perf_counter()
        for start in range(0, items, BATCH):
            vecs = rng.standard_normal((min(BATCH, items - start), DIM)).astype(np.float32)
            store.upsert([Record(Product(f"p{i}", Path(f"/photos/p{i}.jpg"),
                                         category=f"c{i % 8}"),
                                 f"sha-{i}", "0" * 16, b"\0" * 768, v)
                          for i, v in enumerate(vecs, start)])
        store.flush()
        seconds = time.perf_counter() - started
        written = peak[0]
        count = store.count()
        store.close()
    done.set()
    return {"items": count, "flush_rows": flush_rows,
            "written_peak_rss_mb": round(written / 2**20),
            "peak_rss_mb": round(peak[0] / 2**20), "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--flush-rows", type=int, help=argparse.SUPPRESS)  # (one row)
    args = parser.parse_args()
    if args.flush_rows is not None:
        print(json.dumps(write(args.items, args.flush_rows)))
        return
    from vitrine.bench import machine
    from vitrine.store.milvus_store import LITE_FLUSH_ROWS

    rows = {}
    for name, rows_between in (("flushed", LITE_FLUSH_ROWS), ("unflushed", args.items + 1)):
        out = subprocess.run([sys.executable, __file__, "--items", str(args.items),
                              "--flush-rows", str(rows_between)],
                             capture_output=True, text=True, check=True)
        rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps({"machine": machine(), **rows}, indent=2))


if __name__ == "__main__":
    main()
