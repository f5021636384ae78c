"""What ``total=1`` costs ``GET /api/products``: the first page of 24 of a 100 k embedded
store (the rows of ``listing_filters.py``: real size, prices log-uniform, two attributes),
through the API, with and without the count, unfiltered, of a category and of each of
``listing_filters.py``'s filters, interleaved in one process (median of ``--repeats``).

    python benchmarks/listing_total.py --items 100000 > benchmarks/results/listing_total.json

Needs the model's weights (``VITRINE_WEIGHTS``): the server loads its model before it
answers, though a listing never runs it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient
from listing_filters import CASES, PER_PAGE, build

from vitrine.api import create_app
from vitrine.bench import load_average, machine
from vitrine.config import Settings
from vitrine.embed import Embedder
from vitrine.store import open_store
from vitrine.store.filters import ProductFilter


def params(where: ProductFilter | None, category: str | None) -> dict[str, object]:
    """The listing's query for ``where`` (as the API's address writes it)."""
    query: dict[str, object] = {"limit": PER_PAGE}
    if category is not None:
        query["category"] = category
    if where is not None:
        if where.min_price is not None:
            query["min_price"] = where.min_price
        if where.max_price is not None:
            query["max_price"] = where.max_price
        query["attr"] = [f"{k}={v}" for k, v in where.attributes]
    return query


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    settings = Settings()
    embedder = Embedder.from_settings(settings)
    cases: dict[str, tuple[ProductFilter | None, str | None]] = {
        "unfiltered": (None, None), "category": (None, "c3"),
        **{name: (where, None) for name, where in CASES.items()}}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        build(root, args.items)
        store = open_store(root)
        store.set_manifest(embedder.manifest)  # (the server's model: it checks the store's)
        store.close()
        with TestClient(create_app(settings, root, embedder=embedder)) as client:
            for name, (where, category) in cases.items():
                query = params(where, category)
                plain, counted, total = [], [], None
                for asked in (False, True):  # (untimed: the pages the first read brings in)
                    client.get("/api/products", params={**query, "total": asked})
                for _ in range(args.repeats):  # interleaved: the same load on both
                    for asked, times in ((False, plain), (True, counted)):
                        t0 = time.perf_counter()
                        answer = client.get("/api/products", params={**query, "total": asked})
                        times.append((time.perf_counter() - t0) * 1000)
                        assert answer.status_code == 200, answer.text
                        if asked:
                            total = answer.json()["total"]
                results[name] = {"total": total,
                                 "first_page_ms": round(statistics.median(plain), 2),
                                 "with_total_ms": round(statistics.median(counted), 2)}
    print(json.dumps({"benchmark": "listing_total", "machine": machine(),
                      "load_average": load_average(), "items": args.items,
                      "per_page": PER_PAGE, "repeats": args.repeats, "cases": results},
                     indent=2))


if __name__ == "__main__":
    main()
