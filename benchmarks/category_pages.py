"""Size and time of the catalogue and search pages of a store with many categories: each
page's category field lists them (up to ``CATEGORY_SELECT_MAX``, then suggests the largest).
The store holds 4 photos of the demo catalogue, then one product per category. The pages
are measured as they are (``typed``: a text field past the limit) and, in the same run, with
the limit lifted (``listed``: every category in the list, as every page did before).

    python benchmarks/category_pages.py --categories 20000 > benchmarks/results/category_pages.json
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from fastapi.testclient import TestClient

from vitrine.api import create_app
from vitrine.config import Settings
from vitrine.embed import Embedder
from vitrine.indexer import index_catalog
from vitrine.store import open_store
from vitrine.store.base import Record
from vitrine.web import pages


def build(root: Path, catalog: Path, categories: int, embedder: Embedder) -> None:
    tiny = root / "catalog"
    with open(catalog / "products.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[:4]
    for row in rows:
        (tiny / row["image"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(catalog / row["image"], tiny / row["image"])
    with open(tiny / "products.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    store = open_store(root / "store", create=True)
    index_catalog(tiny, store, embedder, show_progress=False)
    first = store.get(rows[0]["product_id"])
    vector = store.vector(first.product_id)
    store.lock_for_writing()
    store.upsert([Record(replace(first.to_product(category=f"categoria_{i:05d}"),
                                 product_id=f"c{i}"), f"{i:064x}", "0" * 16, b"", vector)
                  for i in range(categories)])
    store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--categories", type=int, default=20_000)
    ap.add_argument("--catalog", type=Path, help="where the 4 photos come from (default: "
                    "VITRINE_DEMO_CATALOG)")
    args = ap.parse_args()
    settings = Settings()
    embedder = Embedder.from_settings(settings)
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp), args.catalog or settings.demo_catalog, args.categories, embedder)
        out: dict[str, object] = {"categories": args.categories}
        for field, limit in (("typed", pages.CATEGORY_SELECT_MAX), ("listed", 1 << 62)):
            pages.CATEGORY_SELECT_MAX = limit
            # a new app for each: its service keeps the field it derived from the counts
            # (VitrineService.derived), which a changed limit alone does not renew
            client = TestClient(create_app(settings, Path(tmp) / "store", embedder=embedder))
            for name, path in (("catalogue", "/"), ("search", "/search")):
                client.get(path)  # counts the categories (then shared for a while)
                start = time.perf_counter()
                page = client.get(path)
                out[f"{name}_{field}"] = {"bytes": len(page.content),
                                          "ms": round((time.perf_counter() - start) * 1000, 1)}
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
