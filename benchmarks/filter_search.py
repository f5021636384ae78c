"""Price- and attribute-filtered search on a large embedded store: the first search of a
filter (its products' row ids read from SQLite, ``EmbeddedStore._filter_rows``) and the same
filter again (those ids kept until the next write), beside the same query unfiltered (the
baseline), interleaved query by query in one run.

Cases: a price range of 1 % and of 50 % of the products, an attribute of 200 values (0.5 %)
and one of 8 (12.5 %), a price range of 10 % within a category (1 of 8), the same range
with an attribute of 8 values, and two attributes (of 8 and 3 values: 4.2 %). Every first
search is of a filter not seen before (a new window of prices, the next attribute value)
with the kept filters dropped first (as a write drops them): a shop whose shoppers each pick
their own price range.

Rows are the size of real ones: synthetic clustered vectors (``vitrine.bench.ClusterModel``,
1,280-d by default), 1,568-byte thumbnails, three attributes as a ``products.csv``'s columns
make them (about 50 bytes of JSON), prices log-uniform from 5 to 5,000; the store's default
index for its size (HNSW from 100,000 products). ``opening_s``: opening the built store
where it can be written (what makes a missing index); ``indexes``: the products table's
indexes then, ``sizes_mb`` their sizes and the table's; ``filter_matched_median``: the
products a case's filter lets through (its price range and attribute; a category's products
are read and kept apart); ``results_short``: searches that found fewer than k.

    python benchmarks/filter_search.py --items 100000 > benchmarks/results/filter_search.json

``--store PATH`` keeps the store there (built when missing, else searched as it is): a store
built and searched by one Vitrine, then searched by another, measures an upgrade.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vitrine.ann import IndexConfig
from vitrine.bench import ClusterModel, clusters_for, load_average, machine, percentile_ms
from vitrine.catalog import Product
from vitrine.manifest import ModelManifest
from vitrine.store.base import Record
from vitrine.store.embedded import EmbeddedStore
from vitrine.store.filters import ProductFilter

CATEGORIES = 8
COLOURS = [f"cor{i}" for i in range(8)]
BRANDS = [f"marca{i:03d}" for i in range(200)]
SIZES = ["P", "M", "G"]
THUMB = bytes(1568)
CASES = {  # name: (share of products by price, or None; attribute values, or None; category)
    "price_narrow": (0.01, None, False),
    "price_wide": (0.5, None, False),
    "attribute_rare": (None, ("marca", BRANDS), False),
    "attribute_common": (None, ("cor", COLOURS), False),
    "price_and_category": (0.1, None, True),
    "price_and_attribute": (0.1, ("cor", COLOURS), False),
    "two_attributes": (None, ("cor", COLOURS, "tamanho", SIZES), False),
}


def product(i: int, price: float) -> Product:
    return Product(f"p{i:07d}", Path(f"/photos/{i}.jpg"), category=f"c{i % CATEGORIES}",
                   name=f"Produto {i}", price=price,
                   attributes={"cor": COLOURS[i * 7 % len(COLOURS)],
                               "marca": BRANDS[i * 31 % len(BRANDS)],
                               "tamanho": SIZES[i % len(SIZES)]})


def prices(n: int) -> np.ndarray:
    """Every product's price (from the items' count alone: a kept store's are the same)."""
    rng = np.random.default_rng(1)
    return np.round(np.exp(rng.uniform(np.log(5), np.log(5000), n)), 2)


def build(root: Path, n: int, dim: int, config: IndexConfig) -> float:
    """A store of ``n`` products with its index saved, closed; the seconds it took."""
    started = time.perf_counter()
    model = ClusterModel.create(dim, clusters_for(n), seed=0)
    price = prices(n)
    store = EmbeddedStore(root, create=True, index_config=config)
    store.set_manifest(ModelManifest("synthetic", "0" * 64, {}, dim))
    store.lock_for_writing()
    for start in range(0, n, 5000):
        stop = min(n, start + 5000)
        vecs, _ = model.sample(stop - start, seed=start + 1)
        store.upsert([Record(product(i, float(price[i])), f"{i:064x}", "0" * 16, THUMB,
                             vecs[i - start]) for i in range(start, stop)])
    store.flush()
    store.close()
    return time.perf_counter() - started


def filters(name: str, price: np.ndarray, count: int, rng: np.random.Generator
            ) -> list[tuple[ProductFilter, str | None]]:
    """``count`` filters of case ``name``, each new: a random window of prices holding the
    case's share of the products, the next value of its attribute, a category in turn."""
    share, attribute, in_category = CASES[name]
    ordered = np.sort(price)
    made = []
    for i in range(count):
        low = high = None
        if share is not None:
            start = int(rng.integers(0, int(len(ordered) * (1 - share))))
            low, high = float(ordered[start]), float(ordered[start + int(len(ordered) * share)
                                                             - 1])
        pairs = () if attribute is None else tuple(
            (key, values[i % len(values)])
            for key, values in zip(attribute[::2], attribute[1::2], strict=True))
        made.append((ProductFilter(low, high, pairs),
                     f"c{i % CATEGORIES}" if in_category else None))
    return made


def run(store: EmbeddedStore, name: str, queries: np.ndarray, price: np.ndarray, k: int
        ) -> dict:
    """One case: for each query a new filter searched twice (first, again) and the query
    unfiltered, the baseline taken before the filter for even queries, after for odd ones."""
    chosen = filters(name, price, len(queries), np.random.default_rng(len(name)))
    times: dict[str, list[float]] = {"unfiltered": [], "first": [], "again": []}
    matched, found = [], []
    for i, (q, (where, category)) in enumerate(zip(queries, chosen, strict=True)):
        if i % 2 == 0:
            started = time.perf_counter()
            store.search(q, k)
            times["unfiltered"].append(time.perf_counter() - started)
        store._filter_ids.clear()  # noqa: SLF001 - what a write does: a filter's first search
        for run_name in ("first", "again"):
            started = time.perf_counter()
            results = store.search(q, k, category=category, where=where)
            times[run_name].append(time.perf_counter() - started)
        found.append(len(results))
        matched.append(len(store._filter_ids.get(where, ())))  # noqa: SLF001 - (kept)
        if i % 2 == 1:
            started = time.perf_counter()
            store.search(q, k)
            times["unfiltered"].append(time.perf_counter() - started)
    example, category = chosen[0]
    return {"example": {"min_price": example.min_price, "max_price": example.max_price,
                        "attributes": dict(example.attributes), "category": category},
            "filter_matched_median": int(np.median(matched)),
            "results_short": int(sum(f < k for f in found)),
            **{f"{run_name}_{q}_ms": percentile_ms(seconds, q)
               for run_name, seconds in times.items() for q in (50, 99)}}


def table_sizes(store: EmbeddedStore) -> dict[str, float] | None:
    """Megabytes of the products table and of each of its indexes (None where SQLite has no
    ``dbstat`` table)."""
    try:
        found = store.db.execute(
            "SELECT name, SUM(pgsize) FROM dbstat WHERE name IN (SELECT name FROM "
            "sqlite_master WHERE tbl_name IN ('products', 'product_attributes')) "
            "GROUP BY name").fetchall()
    except sqlite3.OperationalError:
        return None
    return {name: round(size / 1e6, 2) for name, size in sorted(found)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--kind", default="auto", help="the store's index: auto, flat, hnsw, ivf")
    ap.add_argument("--queries", type=int, default=100, help="searches per case")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated, of: "
                    + ", ".join(CASES))
    ap.add_argument("--store", type=Path, help="keep the store here (built when missing)")
    ap.add_argument("--out", type=Path, help="write the JSON here (default: stdout)")
    args = ap.parse_args()
    cases = args.cases.split(",")
    if unknown := sorted(set(cases) - set(CASES)):
        raise SystemExit(f"unknown case {unknown[0]!r}; the cases are {', '.join(CASES)}.")
    n, config = args.items, IndexConfig.defaults(kind=args.kind)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.store or Path(tmp) / "store"
        built_s = None if (root / "vitrine.sqlite").exists() else build(root, n, args.dim,
                                                                        config)
        started = time.perf_counter()
        store = EmbeddedStore(root, index_config=config)
        opening_s = time.perf_counter() - started
        if store.count() != n or store.manifest().dim != args.dim:
            raise SystemExit(f"the store at {root} holds {store.count()} products of "
                             f"{store.manifest().dim}-d, not {n} of {args.dim}-d.")
        indexes = sorted(row[0] for row in store.db.execute(
            "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name IN "
            "('products', 'product_attributes') AND name NOT LIKE 'sqlite_%'"))
        model = ClusterModel.create(args.dim, clusters_for(n), seed=0)
        queries, _ = model.sample(args.queries, seed=10**9)
        price = prices(n)
        for q in queries[:5]:  # (the index loaded, the categories' ids read and kept)
            store.search(q, args.k)
            for c in range(CATEGORIES):
                store.search(q, args.k, category=f"c{c}")
        results = {name: run(store, name, queries, price, args.k) for name in cases}
        sizes = table_sizes(store)
        store.close()
    report = {"command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
              "machine": machine(), "items": n, "dim": args.dim, "k": args.k,
              "queries": args.queries, "index": config.tag(n),
              "built_s": None if built_s is None else round(built_s, 1),
              "opening_s": round(opening_s, 3), "indexes": indexes, "sizes_mb": sizes,
              "cases": results,
              "load_average": load_average()}
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
