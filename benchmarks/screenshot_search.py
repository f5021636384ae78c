"""Photo search with phone screenshots: the product photo in the middle of a tall page with a
wide plain border, searched as it is (the old path: one embedding of the whole picture) and
with the product cut out of the frame as well (the new path, `vitrine search` and
``POST /api/search``: :func:`vitrine.images.query_arrays`, each product's better score).

Indexes the demo catalogue's photos except a held-out 20 % per category (the split of
benchmarks/retrieval_quality.py) into a FAISS store, then queries, in one process, with
(a) the held-out photos as they are, (b) the same placed in 1170 x 2532 screenshots (white,
black and grey pages; the product 40-60 % of the width, seeded; saved as JPEG quality 85 and
as PNG), reporting category precision@k on both paths and, query by query, whether its
own-category hits among the first k rose, fell or stayed; and (c) every indexed photo as a
query: the rank of the photo itself (first, or tied at the top score with an identical photo).
``framed`` counts the queries in which a frame was found (two embeddings).

    python benchmarks/screenshot_search.py --catalog ../shared/data/demo-catalog \\
        --weights ../shared/models/mobilenet_v2_imagenet.pth \\
        > benchmarks/results/screenshot_search.json
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from vitrine.bench import machine
from vitrine.catalog import read_catalog, stratified_split
from vitrine.config import Settings
from vitrine.embed import Embedder
from vitrine.images import framed_product, open_image, to_array
from vitrine.indexer import index_catalog
from vitrine.recommend import Recommender
from vitrine.store import open_store

PAGE = (1170, 2532)
BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0), "grey": (128, 128, 128)}


def screenshot(path: Path, colour: tuple, fmt: str, rng: random.Random) -> bytes:
    """The photo at ``path`` 40-60 % of a phone page's width, a little above its middle."""
    photo = Image.open(path).convert("RGB")
    width = round(PAGE[0] * rng.uniform(0.4, 0.6))
    height = round(photo.height * width / photo.width)
    page = Image.new("RGB", PAGE, colour)
    top = round(PAGE[1] * rng.uniform(0.25, 0.4))
    page.paste(photo.resize((width, height), Image.Resampling.LANCZOS),
               ((PAGE[0] - width) // 2, top))
    buf = io.BytesIO()
    page.save(buf, fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return buf.getvalue()


def index_subset(products, catalog: Path, folder: Path, embedder: Embedder):
    """A store of ``products`` (their photos copied to a temporary catalogue folder)."""
    rows = []
    with open(catalog / "products.csv", newline="") as fh:
        table = {r["product_id"]: r for r in csv.DictReader(fh)}
    for p in products:
        row = table[p.product_id]
        target = folder / "catalog" / row["image"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(catalog / row["image"], target)
        rows.append(row)
    with open(folder / "catalog" / "products.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    store = open_store(folder / "store", create=True)
    index_catalog(folder / "catalog", store, embedder, show_progress=False)
    return store


def run(rec: Recommender, queries: list[tuple[str, object]], k: int) -> dict:
    """Both paths for each (category, photo) query: precision@k, per-query changes, and the
    milliseconds a query took (decode, embedding(s), search) on each."""
    embedder = rec.embedder
    hits = {"old": [], "new": []}
    framed = 0
    seconds = {"old": 0.0, "new": 0.0}
    for category, photo in queries:
        started = time.perf_counter()
        image = open_image(photo, max_pixels=embedder.settings.max_image_pixels,
                           draft_size=embedder.prep.size)  # (what the API's search did)
        old = rec.search_vector(embedder.embed_arrays(to_array(image, embedder.prep)[None])[0], k)
        seconds["old"] += time.perf_counter() - started
        started = time.perf_counter()
        vectors = embedder.embed_query(photo)
        new = rec.search_vectors(vectors, k)[0]
        seconds["new"] += time.perf_counter() - started
        framed += len(vectors) > 1
        hits["old"].append(sum(m.product.category == category for m in old))
        hits["new"].append(sum(m.product.category == category for m in new))
    old, new = np.asarray(hits["old"]), np.asarray(hits["new"])
    return {"queries": len(queries), "framed": framed,
            f"precision_at_{k}_old": round(float(old.mean() / k), 4),
            f"precision_at_{k}_new": round(float(new.mean() / k), 4),
            "queries_better": int((new > old).sum()), "queries_worse": int((new < old).sum()),
            "queries_same": int((new == old).sum()),
            "ms_per_query_old": round(seconds["old"] / len(queries) * 1e3, 1),
            "ms_per_query_new": round(seconds["new"] / len(queries) * 1e3, 1)}


def self_ranks(rec: Recommender, products, k: int) -> dict:
    """Each indexed photo searched for on the new path: is it first (or tied first)?"""
    first, framed, worst = 0, 0, []
    for p in products:
        vectors = rec.embedder.embed_query(p.image)
        framed += len(vectors) > 1
        matches = rec.search_vectors(vectors, k)[0]
        ids = [m.product.product_id for m in matches]
        top = matches[0].score
        if p.product_id in ids and matches[ids.index(p.product_id)].score >= top - 1e-6:
            first += 1
        else:
            worst.append(p.product_id)
    return {"queries": len(products), "framed": framed, "self_first": first,
            "not_first": worst}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", type=Path, required=True)
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=5)
    args = ap.parse_args()

    products = read_catalog(args.catalog)
    train, test = stratified_split(products, 0.2, seed=args.seed)
    settings = Settings(weights=args.weights)
    embedder = Embedder.from_settings(settings)
    rng = random.Random(args.seed)
    report = {"catalog": str(args.catalog), "products": len(products), "indexed": len(train),
              "held_out": len(test), "k": args.k, "seed": args.seed,
              "resize": embedder.prep.resize, "engine": settings.engine,
              "page": list(PAGE), "machine": machine()}
    with tempfile.TemporaryDirectory() as tmp:
        store = index_subset(train, args.catalog, Path(tmp), embedder)
        rec = Recommender(store, settings, embedder)
        report["held_out_as_they_are"] = run(rec, [(p.category, p.image) for p in test],
                                             args.k)
        shots = {}
        for name, colour in BACKGROUNDS.items():
            for fmt in ("JPEG", "PNG"):
                queries = [(p.category, screenshot(p.image, colour, fmt, rng)) for p in test]
                shots[f"{name}_{fmt.lower()}"] = run(rec, queries, args.k)
        report["held_out_screenshots"] = shots
        report["indexed_photos_self_match"] = self_ranks(rec, train, args.k)
        report["catalogue_photos_with_a_frame"] = sum(
            framed_product(open_image(p.image, draft_size=embedder.prep.size)) is not None
            for p in products)
        store.close()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
