"""Catalogue pages and photo look-ups on a large embedded store: the listing and photo
indexes (``vitrine.store.sqlite_db.INDEXES``) against what Vitrine did before them (commit
0ab4f44: sort every product for each page, here in the order pages list now,
``LISTING_ORDER``; read every product's photo path to tell whether an uploaded photo is
still used), in the same process on the same store. Also the pages of a store that has only
the listing index of the Vitrines that listed by the raw names (``products_listing``), as
one read-only here lists (sorting a category's or the whole catalogue's products from that
index), and the opening that replaces that index where the store can be written.

Rows are the size of real ones (1280-float vectors, 768-byte thumbnails as stores
before the duplicate views, 1,568 bytes now, a description);
one category holds a third of the products.

    python benchmarks/store_pages.py --items 300000 > benchmarks/results/store_pages.json
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from vitrine.catalog import Product
from vitrine.embed import ModelManifest
from vitrine.store import open_store
from vitrine.store.base import Record
from vitrine.store.sqlite_db import (
    COLUMNS,
    DB_NAME,
    LISTING_INDEX_NAME,
    LISTING_ORDER,
    OLD_LISTING_INDEXES,
    row_to_product,
)

DIM = 1280
INDEX_NAMES = (LISTING_INDEX_NAME, "products_image")
BEFORE_LISTING = (f"SELECT {COLUMNS} FROM products WHERE 1=1{{where}} "
                  f"ORDER BY {LISTING_ORDER} LIMIT ? OFFSET ?")
PREVIOUS_LISTING_INDEX = ("CREATE INDEX products_listing ON products(category, name, "
                          "product_id, search_key)")
"""The listing index of the Vitrines that listed by the raw names."""


def build(root: Path, items: int) -> None:
    rng = np.random.default_rng(0)
    store = open_store(root, create=True)
    store.set_manifest(ModelManifest("bench", "0" * 64, {"resize": "crop"}, DIM))
    store.lock_for_writing()
    for start in range(0, items, 5000):
        batch = []
        vectors = rng.standard_normal((min(items, start + 5000) - start, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        for j, vector in enumerate(vectors):
            i = start + j
            category = "big" if i % 3 == 0 else f"c{i % 47:02d}"
            product = Product(f"p{i:07d}", Path(f"/photos/{i % 500}.jpg"), category=category,
                              name=f"Produto {(i * 7919) % items}", price=10.0 + i % 100,
                              description=f"Descrição do produto {i}. " * 4)
            batch.append(Record(product, f"{i:064x}", "0" * 16,
                                rng.integers(0, 256, 768, dtype=np.uint8).tobytes(), vector))
        store.upsert(batch)
    store.close()


def timed(run, repeats: int) -> float:
    """Median milliseconds of ``run()``."""
    ms = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        ms.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(ms), 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=300_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    n, per_page = args.items, 24
    cases = {  # name: (category, name search, offset)
        "first_page": (None, None, 0),
        "last_page": (None, None, n - per_page),
        "deep_category_page": ("big", None, n // 3 - per_page),
        "name_search_no_match": (None, "nada assim", 0),
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        t0 = time.perf_counter()
        build(root, n)
        built = time.perf_counter() - t0
        with sqlite3.connect(root / DB_NAME) as db:  # as a store from before the indexes
            for index in INDEX_NAMES:
                db.execute(f"DROP INDEX {index}")
        t0 = time.perf_counter()
        store = open_store(root)  # makes them (once per store)
        indexing = time.perf_counter() - t0
        now, before = {}, {}
        for name, (category, query, offset) in cases.items():
            now[name] = timed(lambda c=category, q=query, o=offset: store.list_products(
                category=c, query=q, limit=per_page + 1, offset=o), args.repeats)
        now["photo_no_longer_used"] = timed(lambda: store.names_photo("/gone/uploads/x.jpg"),
                                        args.repeats)
        store.db.execute(f"DROP INDEX {INDEX_NAMES[0]}")  # the previous listing index only
        store.db.execute(PREVIOUS_LISTING_INDEX)
        previous = {}
        for name, (category, query, offset) in cases.items():
            previous[name] = timed(lambda c=category, q=query, o=offset: store.list_products(
                category=c, query=q, limit=per_page + 1, offset=o), args.repeats)
        for index in (*OLD_LISTING_INDEXES, *INDEX_NAMES[1:]):
            store.db.execute(f"DROP INDEX {index}")
        for name, (category, query, offset) in cases.items():
            where, values = "", []
            if category:
                where, values = " AND category=?", [category]
            if query:
                where += f" AND instr({store._name_search}, ?) > 0"
                values.append(query)
            sql = BEFORE_LISTING.format(where=where)

            def listing(sql=sql, values=values, offset=offset):
                return [row_to_product(r, store._photo)
                        for r in store.db.execute(sql, [*values, per_page + 1, offset])]

            before[name] = timed(listing, args.repeats)
        before["photo_no_longer_used"] = timed(
            lambda: "/gone/uploads/x.jpg" in set(store.images().values()), args.repeats)
        store.db.execute(PREVIOUS_LISTING_INDEX)  # a store of the previous Vitrine
        store.db.execute(f"CREATE INDEX {INDEX_NAMES[1]} ON products(image)")
        store.close()
        t0 = time.perf_counter()
        store = open_store(root)  # replaces its listing index
        replacing = time.perf_counter() - t0
        made = {row[0] for row in store.db.execute(
            "SELECT name FROM sqlite_master WHERE type='index' AND name LIKE 'products_l%'")}
        assert made == {INDEX_NAMES[0]}, made
        store.close()
    print(json.dumps({
        "items": n, "page_size": per_page, "repeats": args.repeats,
        "build_seconds": round(built, 1),
        "opening_a_store_from_before_the_indexes_seconds": round(indexing, 2),
        "opening_a_store_with_the_previous_listing_index_seconds": round(replacing, 2),
        "median_ms_with_indexes": now, "median_ms_before": before,
        "speedup": {k: round(before[k] / max(now[k], 0.01), 1) for k in now},
        "median_ms_previous_listing_index_only": previous}, indent=1))


if __name__ == "__main__":
    main()
