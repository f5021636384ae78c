"""Name search (``q``) on a large embedded store: the folded ``search_key`` column against
folding every row as it is read (what a store made before that column does when it cannot
be written), in the same process.

    python benchmarks/name_search.py --items 200000 > benchmarks/results/name_search.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from vitrine.catalog import Product
from vitrine.embed import ModelManifest
from vitrine.store import open_store
from vitrine.store.base import Record
from vitrine.store.search_key import SEARCH_KEY_SQL

WORDS = ["Relógio", "Bolsa", "Tênis", "Sapato", "Camiseta", "Dourado", "Prata", "Couro",
         "Açaí", "Café", "Feminino", "Masculino", "Clássico", "Esportivo"]
QUERIES = ["relogio", "CAFE", "couro prata", "acai", "nada assim", "esportivo"]


def build(root: Path, items: int) -> None:
    rng = np.random.default_rng(0)
    store = open_store(root, create=True)
    store.set_manifest(ModelManifest("bench", "0" * 64, {"resize": "crop"}, 8))
    for start in range(0, items, 5000):
        batch = []
        for i in range(start, min(items, start + 5000)):
            name = " ".join(rng.choice(WORDS, 3)) + f" {i}"
            vector = rng.standard_normal(8).astype(np.float32)
            batch.append(Record(Product(f"p{i}", Path(f"/p/{i}.jpg"), category=f"c{i % 8}",
                                        name=name), "0" * 64, "", b"",
                                vector / np.linalg.norm(vector)))
        store.upsert(batch)
    store.close()


def timed(store, repeats: int) -> dict:
    ms = []
    for _ in range(repeats):
        for query in QUERIES:
            t0 = time.perf_counter()
            store.list_products(query=query, limit=24)
            ms.append((time.perf_counter() - t0) * 1000)
    return {"p50_ms": round(statistics.median(ms), 2), "max_ms": round(max(ms), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        build(root, args.items)
        store = open_store(root)
        column = timed(store, args.repeats)
        store._name_search = f"({SEARCH_KEY_SQL})"  # fold each row as it is read
        per_row = timed(store, args.repeats)
        store.close()
    print(json.dumps({"items": args.items, "queries": QUERIES, "limit": 24,
                      "search_key_column": column, "folding_each_row": per_row,
                      "speedup_p50": round(per_row["p50_ms"] / column["p50_ms"], 1)}, indent=1))


if __name__ == "__main__":
    main()
