"""Photo search with phone screenshots: the product photo in the middle of a tall page with a
wide plain border, searched as it is (the old path: one embedding of the whole picture) and
with the product cut out of the frame as well (the new path, `vitrine search` and
``POST /api/search``: :func:`vitrine.images.query_arrays`, each product's better score).

Indexes the demo catalogue's photos except a held-out 20 % per category (the split of
benchmarks/retrieval_quality.py) into a FAISS store, then queries, in one process, with
(a) the held-out photos as they are, (b) the same placed in 1170 x 2532 screenshots (white,
black and grey pages; the product 40-60 % of the width, seeded; saved as JPEG quality 85 and
as PNG), reporting category precision@k on both paths and, query by query, whether its
own-category hits among the first k rose, fell or stayed; (b') the same in a shopping app's
page (:func:`app_screenshot`: a status bar with the clock and a battery, an app bar, the
photo 40-100 % of the width or the whole width, the product's name and a price in large
type, a coloured button, a bottom navigation bar; light and dark; JPEG and PNG); and (c)
every indexed photo as a
query: the rank of the photo itself (first, or tied at the top score with an identical photo).
``framed`` counts the queries in which a frame was found (two embeddings).

    python benchmarks/screenshot_search.py --catalog ../shared/data/demo-catalog \\
        --weights ../shared/models/mobilenet_v2_imagenet.pth \\
        > benchmarks/results/screenshot_search.json
"""

from __future__ import annotations

import argparse
import csv
import functools
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


ACCENTS = [(33, 150, 243), (255, 87, 34), (76, 175, 80), (156, 39, 176), (233, 30, 99),
           (255, 193, 7), (0, 150, 136)]
THEMES = {"light": {"page": [(255, 255, 255), (245, 245, 245)], "ink": (33, 33, 33),
                    "faint": (117, 117, 117), "nav": [(255, 255, 255), (238, 238, 242)]},
          "dark": {"page": [(0, 0, 0), (18, 18, 18)], "ink": (240, 240, 240),
                   "faint": (170, 170, 170), "nav": [(18, 18, 18), (40, 40, 44)]}}


def app_screenshot(path: Path, name: str, theme: str, fmt: str, rng: random.Random,
                   share: tuple[float, float] = (0.4, 1.0)) -> bytes:
    """A shopping app's product page as a phone captures it: a status bar (the clock, a
    battery), an app bar (back arrow, title, icons; the accent colour or the page's), the
    photo ``share`` of the width (seeded), the product's name and a price in large type, a
    coloured button and a bottom navigation bar with five icons; ``theme`` light or dark."""
    from PIL import ImageDraw, ImageFont

    t = THEMES[theme]
    page_colour, accent = rng.choice(t["page"]), rng.choice(ACCENTS)
    page = Image.new("RGB", PAGE, page_colour)
    draw = ImageDraw.Draw(page)
    font = functools.partial(ImageFont.load_default)
    bar = accent if rng.random() < 0.5 else page_colour  # a coloured app bar, or a plain one
    bar_ink = (255, 255, 255) if bar == accent else t["ink"]
    status = rng.choice([bar, page_colour, (0, 0, 0)] if theme == "light" else [bar, (0, 0, 0)])
    status_ink = (255, 255, 255) if status in (accent, (0, 0, 0)) or theme == "dark" \
        else t["ink"]
    draw.rectangle((0, 0, PAGE[0], 140), fill=status)
    draw.text((70, 40), "9:41", fill=status_ink, font=font(size=52))
    draw.rectangle((980, 50, 1060, 90), outline=status_ink, width=4)  # battery
    draw.rectangle((986, 56, 1040, 84), fill=status_ink)
    draw.rectangle((1062, 62, 1070, 78), fill=status_ink)
    for i, h in enumerate((14, 22, 30, 38)):  # signal bars
        draw.rectangle((850 + 18 * i, 88 - h, 862 + 18 * i, 88), fill=status_ink)
    draw.rectangle((0, 140, PAGE[0], 300), fill=bar)
    draw.line((60, 220, 100, 180), fill=bar_ink, width=8)  # back arrow
    draw.line((60, 220, 100, 260), fill=bar_ink, width=8)
    draw.text((150, 190), rng.choice(["Details", "Product", "Shop"]), fill=bar_ink,
              font=font(size=64))
    draw.ellipse((930, 190, 990, 250), outline=bar_ink, width=6)  # a heart, a cart
    draw.rectangle((1030, 195, 1090, 245), outline=bar_ink, width=6)
    photo = Image.open(path).convert("RGB")
    width = round(PAGE[0] * rng.uniform(*share))
    height = round(photo.height * width / photo.width)
    top = 300 + rng.randint(0, 80)
    page.paste(photo.resize((width, height), Image.Resampling.LANCZOS),
               ((PAGE[0] - width) // 2, top))
    y = top + height + 50
    words, lines = name.split(), [""]
    for word in words:  # the name in lines of at most 28 characters, two at most
        if len(lines[-1]) + len(word) > 28 and lines[-1]:
            lines.append("")
        lines[-1] = (lines[-1] + " " + word).strip()
    for line in lines[:2]:
        draw.text((60, y), line, fill=t["ink"], font=font(size=60))
        y += 80
    y += 20
    draw.text((60, y), f"R$ {rng.randint(49, 999)},{rng.randint(0, 99):02d}", fill=t["ink"],
              font=font(size=110))
    draw.text((60, y + 140), f"{rng.randint(2, 12)}x sem juros  ·  frete gratis",
              fill=t["faint"], font=font(size=44))
    y += 230
    draw.rounded_rectangle((60, y, PAGE[0] - 60, y + 150), radius=30, fill=accent)
    draw.text((PAGE[0] // 2 - 220, y + 40), "Add to cart", fill=(255, 255, 255),
              font=font(size=70))
    nav = rng.choice(t["nav"])
    draw.rectangle((0, PAGE[1] - 220, PAGE[0], PAGE[1]), fill=nav)
    draw.line((0, PAGE[1] - 220, PAGE[0], PAGE[1] - 220), fill=t["faint"], width=2)
    for i in range(5):  # five icons with labels
        x = 117 + 234 * i
        colour = accent if i == 0 else t["faint"]
        draw.rounded_rectangle((x - 35, PAGE[1] - 190, x + 35, PAGE[1] - 120), radius=12,
                               outline=colour, width=6)
        draw.text((x - 45, PAGE[1] - 105), ["Home", "Search", "Cart", "Saved", "Me"][i],
                  fill=colour, font=font(size=34))
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
    ap.add_argument("--pages", default="plain,app",
                    help="which screenshots: plain (a photo on a plain page), app (a shopping "
                         "app's page: bars, text, a button), or both (the default)")
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
        for name, colour in BACKGROUNDS.items() if "plain" in args.pages else ():
            for fmt in ("JPEG", "PNG"):
                queries = [(p.category, screenshot(p.image, colour, fmt, rng)) for p in test]
                shots[f"{name}_{fmt.lower()}"] = run(rec, queries, args.k)
        report["held_out_screenshots"] = shots
        app, app_rng = {}, random.Random(args.seed)  # (its own: the same pages without plain)
        for theme, fmt, share in [(t, f, (0.4, 1.0)) for t in THEMES for f in ("JPEG", "PNG")] \
                + [(t, "JPEG", (1.0, 1.0)) for t in THEMES] if "app" in args.pages else ():
            queries = [(p.category, app_screenshot(p.image, p.name, theme, fmt, app_rng, share))
                       for p in test]
            key = f"{theme}_{fmt.lower()}" + ("_full_width" if share[0] == 1.0 else "")
            app[key] = run(rec, queries, args.k)
        report["held_out_app_screenshots"] = app
        report["indexed_photos_self_match"] = self_ranks(rec, train, args.k)
        report["catalogue_photos_with_a_frame"] = sum(
            framed_product(open_image(p.image, draft_size=embedder.prep.size)) is not None
            for p in products)
        store.close()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
