"""What `index` above ``VITRINE_DUP_MAX_PRODUCTS`` pays to count every shared photo file's
products (``vitrine.dedupe_store.recount_every_shared``) on an embedded store of
``--products`` products, a tenth of them sharing ``--shared`` files: every product's
fingerprint read and counted in Python (as before) against the store's own count
(``shared_photo_counts``: a GROUP BY over the ``products_content`` index), interleaved
(median of ``--repeats``; peak: tracemalloc's, Python's allocations).

    python benchmarks/shared_photo_counts.py --products 200000 \
        > benchmarks/results/shared_photo_counts.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np

from vitrine.bench import machine
from vitrine.catalog import Product
from vitrine.manifest import ModelManifest
from vitrine.store.base import Record
from vitrine.store.embedded import EmbeddedStore


def sha(i: int, shared: int) -> str:
    """Product ``i``'s photo sha256: one of ``shared`` files for every tenth, else its own."""
    return f"s{i // 10 % shared:063x}" if i % 10 == 0 else f"{i:064x}"


def by_fingerprints(store: EmbeddedStore) -> dict[str, int]:
    """The count before: every product's (sha256, metadata hash) read, then counted."""
    shared = Counter(sha for sha, _ in store.fingerprints().values() if sha)
    return {sha: n for sha, n in shared.items() if n > 1}


def measured(count, store: EmbeddedStore) -> tuple[float, float, dict[str, int]]:
    """Seconds, peak MB (tracemalloc) and result of one ``count(store)``."""
    tracemalloc.start()
    start = time.perf_counter()
    result = count(store)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return seconds, peak, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--products", type=int, default=200_000)
    ap.add_argument("--shared", type=int, default=1000, help="files a tenth of them share")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    ways = {"fingerprints": by_fingerprints,
            "shared_photo_counts": EmbeddedStore.shared_photo_counts}
    with tempfile.TemporaryDirectory() as tmp:
        store = EmbeddedStore(Path(tmp) / "store", create=True)
        try:
            store.set_manifest(ModelManifest("bench", "0" * 64, {}, 4))
            store.lock_for_writing()
            vector = np.ones(4, np.float32)
            for start in range(0, args.products, 10_000):
                store.upsert([Record(Product(f"p{i}", Path(f"/photos/p{i}.jpg"), category="c"),
                                     sha(i, args.shared), "0" * 16, b"\0" * 768, vector)
                              for i in range(start, min(start + 10_000, args.products))])
            seconds: dict[str, list[float]] = {name: [] for name in ways}
            peaks: dict[str, list[float]] = {name: [] for name in ways}
            results = {}
            for _ in range(args.repeats):
                for name, count in ways.items():
                    took, peak, results[name] = measured(count, store)
                    seconds[name].append(took)
                    peaks[name].append(peak)
            assert results["fingerprints"] == results["shared_photo_counts"]
            out = {"products": args.products, "shared_files": len(results["fingerprints"]),
                   "repeats": args.repeats, "machine": machine(),
                   **{name: {"median_s": round(statistics.median(seconds[name]), 3),
                             "min_s": round(min(seconds[name]), 3),
                             "max_s": round(max(seconds[name]), 3),
                             "peak_mb": round(max(peaks[name]), 1)} for name in ways}}
        finally:
            store.close()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
