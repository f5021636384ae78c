"""Catalogue pages filtered by price and attributes on a large embedded store
(``EmbeddedStore.list_products(where=...)`` and ``count_products``): the page's ids found by
walking the listing index in order, each looked up in the filter's ids (read from the
``products_filter`` index), against the filter's clause put beside the others in the same
query ("naive": SQLite then sorts every product a price range lets through, or reads the
rows one by one along the listing index to test an attribute), in the same process on the
same store, interleaved; where the store has the attribute index
(``vitrine.store.attribute_index``), also the same pages and counts with the attributes read
from the JSON as before it (``json_ms``, ``count_json_ms``, ``category_count_json_ms``).

Cases: a price range of about 1 % and of about 50 % of the products, an attribute of 200
values (0.5 %) and one of 8 (12.5 %), a range within a category (1 of 8), and a price no
product has; each at the first page, at offset 2,000 and within a category. Rows are the
size of real ones (1,280-float vectors, 1,568-byte thumbnails, a description, two attributes
as a ``products.csv``'s columns make them), prices log-uniform from 5 to 5,000.

    python benchmarks/listing_filters.py --items 100000 > benchmarks/results/listing_filters.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np

from vitrine.bench import load_average, machine
from vitrine.catalog import Product
from vitrine.embed import ModelManifest
from vitrine.store import open_store
from vitrine.store.base import Record
from vitrine.store.filters import ProductFilter
from vitrine.store.sqlite_db import COLUMNS, row_to_product

DIM = 1280
CATEGORIES = 8
COLOURS = [f"cor{i}" for i in range(8)]
BRANDS = [f"marca{i:03d}" for i in range(200)]
PER_PAGE = 24
CASES = {
    "price_1pct": ProductFilter(100, 105),
    "price_50pct": ProductFilter(max_price=158),
    "attribute_rare": ProductFilter(attributes=(("marca", "marca007"),)),
    "attribute_common": ProductFilter(attributes=(("cor", "cor3"),)),
    "price_and_attribute": ProductFilter(max_price=500, attributes=(("cor", "cor2"),)),
    "no_match": ProductFilter(min_price=1e7),
}
PLACES = {"first_page": (None, 0), "offset_2000": (None, 2000), "category_page": ("c3", 0)}


def build(root: Path, items: int) -> None:
    rng = np.random.default_rng(0)
    prices = np.round(np.exp(rng.uniform(np.log(5), np.log(5000), items)), 2)
    store = open_store(root, create=True)
    store.set_manifest(ModelManifest("bench", "0" * 64, {"resize": "crop"}, DIM))
    store.lock_for_writing()
    thumb = bytes(1568)
    for start in range(0, items, 5000):
        vectors = rng.standard_normal((min(items, start + 5000) - start, DIM)
                                      ).astype(np.float32)
        batch = []
        for j, vector in enumerate(vectors):
            i = start + j
            product = Product(f"p{i:07d}", Path(f"/photos/{i}.jpg"),
                              category=f"c{i % CATEGORIES}",
                              name=f"Produto {(i * 7919) % items}", price=float(prices[i]),
                              description=f"Descrição do produto {i}. " * 4,
                              attributes={"cor": COLOURS[(i // CATEGORIES + i) % 8],
                                          "marca": BRANDS[i * 31 % 200]})
            batch.append(Record(product, f"{i:064x}", "0" * 16, thumb, vector))
        store.upsert(batch)
    store.close()


def naive(store, category: str | None, offset: int, where: ProductFilter) -> list:
    """The page with the filter's clause beside the others (no name search, no cursor)."""
    clause, params = where.sql()
    page, args = "SELECT id FROM products WHERE 1=1", []
    if category is not None:
        page += " AND category=?"
        args.append(category)
    page += f" AND {clause}"
    args += params
    order = " ORDER BY " + store._listing_order
    sql = (f"SELECT {COLUMNS} FROM products WHERE id IN ({page}{order} LIMIT ? OFFSET ?)"
           + order)
    return [row_to_product(r, store._photo)
            for r in store.db.execute(sql, [*args, PER_PAGE, offset])]


def json_only(store):
    """The store reading attributes from their JSON, as one without the attribute index
    (``json_ms``: the same pages, in the same run)."""
    return mock.patch.object(store, "_attributes_indexed", lambda: False)


def timed(run, repeats: int) -> tuple[float, object]:
    ms, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = run()
        ms.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(ms), 2), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        t0 = time.perf_counter()
        build(root, args.items)
        built = time.perf_counter() - t0
        store = open_store(root)
        indexed = hasattr(store, "_attributes_indexed") and store._attributes_indexed()
        try:
            unfiltered = {place: timed(lambda c=c, o=o: store.list_products(
                category=c, limit=PER_PAGE, offset=o), args.repeats)[0]
                for place, (c, o) in PLACES.items()}
            for name, where in CASES.items():
                case: dict[str, object] = {"matched": store.count_products(where=where)}
                for place, (category, offset) in PLACES.items():
                    now, got = timed(lambda c=category, o=offset, w=where: store.list_products(
                        category=c, limit=PER_PAGE, offset=o, where=w), args.repeats)
                    before, old = timed(lambda c=category, o=offset, w=where: naive(
                        store, c, o, w), args.repeats)
                    assert [p.product_id for p in got] == [p.product_id for p in old], name
                    case[place] = {"ms": now, "naive_ms": before, "listed": len(got)}
                    if indexed:
                        with json_only(store):
                            case[place]["json_ms"], old = timed(
                                lambda c=category, o=offset, w=where: store.list_products(
                                    category=c, limit=PER_PAGE, offset=o, where=w),
                                args.repeats)
                        assert [p.product_id for p in got] == [p.product_id for p in old]
                for category in (None, "c3"):
                    ms, n = timed(lambda c=category, w=where: store.count_products(
                        category=c, where=w), args.repeats)
                    case["count_ms" if category is None else "category_count_ms"] = ms
                    if indexed:
                        with json_only(store):
                            ms, again = timed(lambda c=category, w=where: store.count_products(
                                category=c, where=w), args.repeats)
                        assert again == n
                        case[("count" if category is None else "category_count")
                             + "_json_ms"] = ms
                results[name] = case
        finally:
            store.close()
    print(json.dumps({"benchmark": "listing_filters", "machine": machine(),
                      "load_average": load_average(), "items": args.items,
                      "per_page": PER_PAGE, "repeats": args.repeats,
                      "build_s": round(built, 1), "unfiltered_ms": unfiltered,
                      "cases": results}, indent=2))


if __name__ == "__main__":
    main()
