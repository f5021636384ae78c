"""What the attribute index (``product_attributes``, ``vitrine.store.attribute_index``) costs
the embedded store's writes and its room: the same products written into two new stores,
one with the index (kept by its triggers) and one without it (a store an older Vitrine made,
opened where it is not made), batch by batch in turn (which goes first alternating), in one
process: transactions of 5,000 new products, 5,000 products' fields changed
(``update_metadata``: a price and an attribute), single products written again (the API's
``POST /api/products``), products deleted; then each database's size, and the index's own
(``dbstat``), and the time the index took to be made from the rows of the store without it
(what the first opening of an older store does).

Rows are the size of real ones: ``--dim`` float vectors (1,280 by default), 1,568-byte
thumbnails, three attributes as a ``products.csv``'s columns make them (8, 200 and 3
values), a price.

    python benchmarks/attribute_writes.py --items 100000 \
        > benchmarks/results/attribute_writes.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np

from vitrine.bench import load_average, machine, percentile_ms
from vitrine.catalog import Product
from vitrine.manifest import ModelManifest
from vitrine.store.attribute_index import attribute_index_ready, make_attribute_index
from vitrine.store.base import Record
from vitrine.store.embedded import EmbeddedStore

THUMB = bytes(1568)
BATCH = 5000


def product(i: int, tag: str = "") -> Product:
    return Product(f"p{i:07d}", Path(f"/photos/{i}.jpg"), category=f"c{i % 8}",
                   name=f"Produto {i}{tag}", price=round(5 + (i * 37 % 4995) + 0.9, 2),
                   attributes={"cor": f"cor{i * 7 % 8}{tag}", "marca": f"marca{i * 31 % 200:03d}",
                               "tamanho": "PMG"[i % 3]})


def records(ids: range, dim: int, rng: np.random.Generator, tag: str = "") -> list[Record]:
    vecs = rng.standard_normal((len(ids), dim), dtype=np.float32)
    return [Record(product(i, tag), f"{i:064x}", "0" * 16, THUMB, v)
            for i, v in zip(ids, vecs, strict=True)]


def opened(root: Path, indexed: bool, dim: int) -> EmbeddedStore:
    """A new store at ``root``, with the attribute index or (``indexed`` False) without."""
    if indexed:
        store = EmbeddedStore(root, create=True)
    else:
        with mock.patch("vitrine.store.sqlite_db.make_attribute_index", lambda db: None):
            store = EmbeddedStore(root, create=True)
    store.set_manifest(ModelManifest("synthetic", "0" * 64, {}, dim))
    store.lock_for_writing()
    assert attribute_index_ready(store.db) == indexed
    return store


def in_turn(stores: dict, step, count: int) -> dict[str, list[float]]:
    """``step(name, store, i)`` on each store ``count`` times, which goes first
    alternating; the seconds of each."""
    seconds: dict[str, list[float]] = {name: [] for name in stores}
    order = list(stores.items())
    for i in range(count):
        for name, store in (order if i % 2 == 0 else order[::-1]):
            started = time.perf_counter()
            took = step(name, store, i)  # (a step that makes its rows first times itself)
            seconds[name].append(time.perf_counter() - started if took is None else took)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--singles", type=int, default=200, help="single products written again")
    args = ap.parse_args()
    n, batches = args.items, -(-args.items // BATCH)
    with tempfile.TemporaryDirectory() as tmp:
        stores = {"indexed": opened(Path(tmp) / "indexed", True, args.dim),
                  "without": opened(Path(tmp) / "without", False, args.dim)}
        rngs = {name: np.random.default_rng(1) for name in stores}  # (the same rows)

        def write(name, store, b):
            rows = records(range(b * BATCH, min(n, (b + 1) * BATCH)), args.dim, rngs[name])
            started = time.perf_counter()
            store.upsert(rows)
            return time.perf_counter() - started

        times = {"write_5000": in_turn(stores, write, batches)}

        def change(name, store, b):
            ids = range(b * 1000, (b + 1) * 1000)
            store.update_metadata([dataclasses.replace(product(i, "-x"), price=1.0 + i % 7)
                                   for i in ids])

        times["change_1000"] = in_turn(stores, change, min(5, batches))
        single_rng = np.random.default_rng(2)
        singles = records(range(args.singles), args.dim, single_rng, tag="-y")
        times["write_one"] = in_turn(stores, lambda _, s, i: s.upsert([singles[i]]),
                                     args.singles)

        def delete(name, store, b):
            store.delete([f"p{i:07d}" for i in range(n - (b + 1) * 1000, n - b * 1000)])

        times["delete_1000"] = in_turn(stores, delete, 3)
        sizes = {}
        for name, store in stores.items():
            store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            found = dict(store.db.execute(
                "SELECT name, SUM(pgsize) FROM dbstat WHERE name IN ('product_attributes', "
                "'product_attributes_value') GROUP BY name").fetchall())
            sizes[name] = {"database_mb": round((store.root / "vitrine.sqlite").stat().st_size
                                                / 1e6, 1),
                           **{f"{k}_mb": round(v / 1e6, 2) for k, v in sorted(found.items())}}
        plain = stores["without"]
        started = time.perf_counter()
        make_attribute_index(plain.db)
        made_s = time.perf_counter() - started
        assert attribute_index_ready(plain.db)
        counts = {name: store.count() for name, store in stores.items()}
        for store in stores.values():
            store.close()
    report = {"command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
              "machine": machine(), "items": n, "dim": args.dim, "products_left": counts,
              "timings": {step: {name: {"p50_ms": percentile_ms(s, 50),
                                        "p99_ms": percentile_ms(s, 99),
                                        "total_s": round(sum(s), 2)}
                                 for name, s in by_store.items()}
                          for step, by_store in times.items()},
              "sizes": sizes, "index_made_from_rows_s": round(made_s, 2),
              "load_average": load_average()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
