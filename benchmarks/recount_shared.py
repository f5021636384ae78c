"""What a write through the API pays to count its photo file's products again
(``vitrine.dedupe_store.recount_shared``), on an embedded store whose last duplicate search
saved the digests of ``--photos`` distinct photos (a pair per 100 of them, 1,000 shared
files): a product added, then deleted, with a shared file's bytes (its count changed: the
saved bytes read and saved again), and with a photo of its own (one count read, nothing
saved). The store holds ``--products`` products (the count is read from an index of the
photo sha256s: it does not grow with them); the saved bytes grow with ``--photos``.

    python benchmarks/recount_shared.py --photos 100000,1000000 \
        > benchmarks/results/recount_shared.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from vitrine.bench import machine
from vitrine.catalog import Product
from vitrine.dedupe_store import encode, recount_shared
from vitrine.manifest import ModelManifest
from vitrine.store.base import Record
from vitrine.store.embedded import EmbeddedStore

SHARED = 1000


def _record(pid: str, sha: str) -> Record:
    return Record(Product(pid, Path(f"/photos/{pid}.jpg"), category="c"), sha, "0" * 16,
                  b"\0" * 768, np.ones(4, np.float32))


def run(photos: int, products: int, writes: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        store = EmbeddedStore(Path(tmp) / "store", create=True)
        try:
            store.set_manifest(ModelManifest("bench", "0" * 64, {}, 4))
            store.lock_for_writing()
            shas = [f"{i:064x}" for i in range(photos)]
            store.upsert([_record(f"p{i}", shas[i % max(SHARED, products - SHARED)])
                          for i in range(products)])
            pairs = np.array([[i, i + 1] for i in range(0, photos - 1, 100)])
            counts = {s: 0 for s in shas[:SHARED]}
            for i in range(products):
                sha = shas[i % max(SHARED, products - SHARED)]
                if sha in counts:
                    counts[sha] += 1
            shared = {s: n for s, n in counts.items() if n > 1}
            data = encode("bench", np.arange(photos, dtype=np.uint64), pairs, shas,
                          (np.array([s.encode() for s in sorted(shared)], dtype="S64"),
                           np.array([shared[s] for s in sorted(shared)], dtype=np.int64)))
            store.set_duplicate_cache(data)
            out = {"photos": photos, "products": products, "saved_mb": round(len(data) / 1e6, 1)}
            for label, sha in (("shared_file", shas[0]), ("own_photo", "f" * 64)):
                times = []
                for j in range(writes):
                    store.upsert([_record(f"x{j}", sha)])
                    start = time.perf_counter()
                    recount_shared(store, sha)
                    times.append(time.perf_counter() - start)
                    store.delete([f"x{j}"])
                    start = time.perf_counter()
                    recount_shared(store, removed=sha)
                    times.append(time.perf_counter() - start)
                out[f"{label}_median_ms"] = round(float(np.median(times)) * 1000, 2)
            return out
        finally:
            store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", default="100000,1000000")
    ap.add_argument("--products", type=int, default=20_000)
    ap.add_argument("--writes", type=int, default=5, help="adds and deletes of each kind")
    args = ap.parse_args()
    runs = [run(int(n), args.products, args.writes) for n in args.photos.split(",")]
    print(json.dumps({"writes": 2 * args.writes, "machine": machine(), "runs": runs},
                     indent=2))


if __name__ == "__main__":
    main()
