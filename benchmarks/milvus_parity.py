"""Milvus Lite vs the embedded store on held-out demo photos, or on products with copies.

Indexes 80 % of the catalogue (per category, seeded) into an embedded store, copies it into
Milvus Lite with ``vitrine migrate``'s library function, and queries both with the other 20 %:
reports category precision@5 of each, and how often both give the same top-1 category and the
same top-5 products.

    python benchmarks/milvus_parity.py --catalog ../shared/data/demo-catalog \
        --weights ../shared/models/mobilenet_v2_imagenet.pth

With ``--copies N`` it indexes ``--per-category`` photos of each category and their planted
copies instead (:mod:`milvus_parity_copies`: identical bytes under other ids, photos saved
again, one placeholder photo that N products share) and asks both stores for each product's
similar products as `vitrine similar`, the API and the product page do (k of ``--ks``, of
every category, of its own, of one), and `vitrine related`'s file, then the API and the page
themselves: whether both give the same products up to ties, any copy, fewer than k where k
other photos exist (a list shows one product a photo).

    python benchmarks/milvus_parity.py --catalog ../shared/data/demo-catalog \
        --weights ../shared/models/mobilenet_v2_imagenet.pth --copies 50 --ks 1-50
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from vitrine.catalog import read_catalog, stratified_split
from vitrine.config import Settings
from vitrine.embed import Embedder
from vitrine.evaluate import precision_at_k
from vitrine.indexer import index_catalog
from vitrine.migrate import migrate_store
from vitrine.store import open_store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", type=Path, required=True)
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--copies", type=int, default=0,
                    help="products of one placeholder photo (and the other copies planted)")
    ap.add_argument("--per-category", type=int, default=12)
    ap.add_argument("--ks", default="1-50", help="k values: a range (1-50) or a list (1,5)")
    ap.add_argument("--queries", type=int, default=0,
                    help="products asked (seeded sample; 0: all) besides placeholder ones")
    ap.add_argument("--placeholder-queries", type=int, default=10)
    ap.add_argument("--related-ks", default="5,50",
                    help="k of each `related` file compared ('': none)")
    args = ap.parse_args()
    settings = Settings(weights=args.weights)
    embedder = Embedder.from_settings(settings)
    if args.copies:
        from milvus_parity_copies import copies_parity

        print(json.dumps(copies_parity(args, settings, embedder), indent=2))
        return
    train, test = stratified_split(read_catalog(args.catalog), 0.2, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        catalog = Path(tmp) / "catalog"
        for p in train:
            target = catalog / p.category / p.image.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p.image, target)
        embedded = open_store(Path(tmp) / "store", create=True)
        index_catalog(catalog, embedded, embedder, show_progress=False)
        milvus = open_store(f"milvus-lite://{tmp}/milvus.db", create=True)
        started = time.perf_counter()
        migrate_store(embedded, milvus, show_progress=False)
        copy_seconds = time.perf_counter() - started
        labels = [p.category for p in test]
        runs = {"embedded": [], "milvus_lite": []}
        seconds = {"embedded": 0.0, "milvus_lite": 0.0}
        for p in test:
            vec = embedder.embed_image(p.image)
            for name, store in (("embedded", embedded), ("milvus_lite", milvus)):
                t = time.perf_counter()
                runs[name].append(store.search(vec, 5))
                seconds[name] += time.perf_counter() - t
        embedded.close()
        milvus.close()
    cats = {n: [[m.product.category for m in r] for r in rs] for n, rs in runs.items()}
    same_top1 = sum(a[0] == b[0] for a, b in zip(cats["embedded"], cats["milvus_lite"],
                                                 strict=True)) / len(test)
    same_top5 = sum([m.product.product_id for m in a] == [m.product.product_id for m in b]
                    for a, b in zip(runs["embedded"], runs["milvus_lite"], strict=True))
    print(json.dumps({
        "indexed": len(train), "queries": len(test),
        "precision_at_5": {n: round(precision_at_k(labels, c, 5), 4) for n, c in cats.items()},
        "same_top1_category": round(same_top1, 4),
        "same_top5_products": round(same_top5 / len(test), 4),
        "mean_search_ms": {n: round(1000 * s / len(test), 2) for n, s in seconds.items()},
        "migrate_seconds": round(copy_seconds, 2),
    }, indent=2))


if __name__ == "__main__":
    main()
