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
type, a coloured button, a bottom navigation bar; light and dark; JPEG and PNG); (b'') the
same app's pages laid out otherwise (:data:`LAYOUTS`, ``held_out_app_layouts``), each a
PNG, light or dark (seeded, ``dark_pages``), of every second held-out photo
(``--layout-every``; ``app_layouts_photos`` has their precision as they are): ``thumbnails``,
a gallery's strip of 4-5 thumbnails under the photo (the photo itself, then other held-out
photos); ``recommended``, a "Recommended for you" row of four other held-out products under
the name and price; ``notification``, a messenger's banner over coloured status and app
bars; ``landscape``, a 2532 x 1170 (tablet, landscape) page with the photo on the left and
the name, the price in 110-px type, a paragraph and an "Add to cart" button in a column
beside it; these also count ``box_on_the_photo``, the pages whose box cut out is the
photo's (:data:`BOX_IOU`); and (c) every indexed photo as a query: the rank of the photo
itself (first, or tied at the top score with an identical photo). ``framed`` counts the
queries in which a frame was found (two embeddings).

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
from vitrine.images import open_image, to_array
from vitrine.indexer import index_catalog
from vitrine.recommend import Recommender
from vitrine.store import open_store

try:
    from vitrine import image_frames as frames
except ImportError:  # (code from before image_frames.py, run with PYTHONPATH)
    from vitrine import images as frames
FRAME_TOLERANCE, framed_product = frames.FRAME_TOLERANCE, frames.framed_product
# (code from before framed_box, run with PYTHONPATH, gives no box figure: box_on_the_photo None)
framed_box = getattr(frames, "framed_box", None)

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


LAYOUTS = ("thumbnails", "recommended", "notification", "landscape")
"""The app pages laid out otherwise (:func:`app_screenshot`'s ``layout``): a gallery's strip
of thumbnails under the photo, a "recommended for you" row of four products under the
product's name and price, a notification banner over coloured status and app bars, and a
landscape (tablet) page with the name, price, a paragraph and the button in a column beside
the photo."""
LAYOUT_FORMAT = "PNG"
"""How the layouts' pages are saved (a phone's screenshot is a PNG)."""
ROOM_BELOW = {"thumbnails": 800, "recommended": 960}
"""How high (px) what a layout draws under the photo is, down to the navigation bar: a photo
that would push it under the bar is made smaller."""
PARAGRAPH = ["Material: couro legitimo. Solado de borracha", "antiderrapante, palmilha macia",
             "e acabamento costurado a mao. Ideal para o", "dia a dia e ocasioes especiais.",
             "Entrega em ate 5 dias uteis para todo o Brasil."]


def app_screenshot(path: Path, name: str, theme: str, fmt: str, rng: random.Random,
                   share: tuple[float, float] = (0.4, 1.0), layout: str = "product",
                   others: tuple[Path, ...] = ()) -> tuple[bytes, tuple[int, list[tuple]]]:
    """A shopping app's product page as a phone captures it: a status bar (the clock, a
    battery), an app bar (back arrow, title, icons; the accent colour or the page's), the
    photo ``share`` of the width (seeded), the product's name and a price in large type, a
    coloured button and a bottom navigation bar with five icons; ``theme`` light or dark.
    The other ``layout`` values (:data:`LAYOUTS`): ``thumbnails``, a strip of 4-5 thumbnails
    under the photo (the photo itself, outlined, then ``others``); ``recommended``, no button
    but a "Recommended for you" row of four of ``others`` with names and prices under the
    price; ``notification``, the status and app bars in the accent colour and a messenger's
    banner over them; ``landscape``, a 2532 x 1170 page, the photo 50-68 % of its height on
    the left and the name, the price, a paragraph and the button in a column beside it (no
    navigation bar). Returns the page's bytes and where the photo is: the page's width, and
    the photo's box and the box of what in it differs from the page's colour (left, top,
    right, bottom)."""
    from PIL import ImageDraw, ImageFont, ImageOps

    t = THEMES[theme]
    landscape = layout == "landscape"
    width_px, height_px = size = (PAGE[1], PAGE[0]) if landscape else PAGE
    page_colour, accent = rng.choice(t["page"]), rng.choice(ACCENTS)
    page = Image.new("RGB", size, page_colour)
    draw = ImageDraw.Draw(page)
    font = functools.partial(ImageFont.load_default)
    coloured = layout == "notification"  # (the bars under the banner in the accent colour)
    # a coloured app bar, or a plain one
    bar = accent if coloured or rng.random() < 0.5 else page_colour
    bar_ink = (255, 255, 255) if bar == accent else t["ink"]
    status = accent if coloured else rng.choice(
        [bar, page_colour, (0, 0, 0)] if theme == "light" else [bar, (0, 0, 0)])
    status_ink = (255, 255, 255) if status in (accent, (0, 0, 0)) or theme == "dark" \
        else t["ink"]
    right = width_px - 1170  # (the icons at the right-hand edge, wherever it is)
    draw.rectangle((0, 0, width_px, 140), fill=status)
    draw.text((70, 40), "9:41", fill=status_ink, font=font(size=52))
    draw.rectangle((right + 980, 50, right + 1060, 90), outline=status_ink, width=4)  # battery
    draw.rectangle((right + 986, 56, right + 1040, 84), fill=status_ink)
    draw.rectangle((right + 1062, 62, right + 1070, 78), fill=status_ink)
    for i, h in enumerate((14, 22, 30, 38)):  # signal bars
        draw.rectangle((right + 850 + 18 * i, 88 - h, right + 862 + 18 * i, 88), fill=status_ink)
    draw.rectangle((0, 140, width_px, 300), fill=bar)
    draw.line((60, 220, 100, 180), fill=bar_ink, width=8)  # back arrow
    draw.line((60, 220, 100, 260), fill=bar_ink, width=8)
    draw.text((150, 190), rng.choice(["Details", "Product", "Shop"]), fill=bar_ink,
              font=font(size=64))
    draw.ellipse((right + 930, 190, right + 990, 250), outline=bar_ink, width=6)  # a heart,
    draw.rectangle((right + 1030, 195, right + 1090, 245), outline=bar_ink, width=6)  # a cart
    photo = Image.open(path).convert("RGB")
    if landscape:
        height = round(height_px * rng.uniform(0.5, 0.68))
        width = round(photo.width * height / photo.height)
        left, top = 80, 340
    else:
        width = round(width_px * rng.uniform(*share))
        height = round(photo.height * width / photo.width)
        top = 300 + rng.randint(0, 80)
        room = height_px - 220 - ROOM_BELOW.get(layout, height_px) - top
        if height > room > 0:  # (what goes under it would be under the navigation bar)
            width, height = round(width * room / height), room
        left = (width_px - width) // 2
    page.paste(photo.resize((width, height), Image.Resampling.LANCZOS), (left, top))
    box = (left, top, left + width, top + height)
    boxes = [box]
    if layout != "product":  # (and what in it differs from the page: a product on white)
        off = np.asarray(page.crop(box)).astype(np.int16) - np.asarray(page_colour, np.int16)
        rows, columns = np.nonzero(np.abs(off).max(axis=2) > FRAME_TOLERANCE)
        if len(rows):
            boxes.append((left + int(columns.min()), top + int(rows.min()),
                          left + int(columns.max()) + 1, top + int(rows.max()) + 1))
    if landscape:  # the name, the price, a paragraph and the button beside the photo
        x, y = left + width + 80, top
        for line in _lines(name, 30):
            draw.text((x, y), line, fill=t["ink"], font=font(size=60))
            y += 80
        draw.text((x, y + 20), f"R$ {rng.randint(49, 999)},{rng.randint(0, 99):02d}",
                  fill=t["ink"], font=font(size=110))
        y += 170
        for line in PARAGRAPH:
            draw.text((x, y), line, fill=t["faint"], font=font(size=40))
            y += 56
        y += 30
        draw.rounded_rectangle((x, y, min(width_px - 80, x + 800), y + 130), radius=30,
                               fill=accent)
        draw.text((x + 220, y + 35), "Add to cart", fill=(255, 255, 255), font=font(size=64))
    else:
        y = top + height + 50
        if layout == "thumbnails":  # the gallery's strip: this photo (outlined), then others
            side, gap, y = 150, 20, top + height + 30
            for i, thumb in enumerate([path, *others][:rng.randint(4, 5)]):
                x = 60 + i * (side + gap)
                page.paste(ImageOps.fit(Image.open(thumb).convert("RGB"), (side, side),
                                        Image.Resampling.LANCZOS), (x, y))
                draw.rectangle((x, y, x + side - 1, y + side - 1),
                               outline=t["ink"] if i == 0 else t["faint"],
                               width=4 if i == 0 else 2)
            y += side + 50
        for line in _lines(name, 28):
            draw.text((60, y), line, fill=t["ink"], font=font(size=60))
            y += 80
        y += 20
        draw.text((60, y), f"R$ {rng.randint(49, 999)},{rng.randint(0, 99):02d}",
                  fill=t["ink"], font=font(size=110))
        draw.text((60, y + 140), f"{rng.randint(2, 12)}x sem juros  ·  frete gratis",
                  fill=t["faint"], font=font(size=44))
        y += 230
        if layout == "recommended":  # four other products, their names and prices
            draw.text((60, y + 40), "Recommended for you", fill=t["ink"], font=font(size=56))
            y += 140
            gap = 30
            side = (width_px - 120 - 3 * gap) // 4
            for i, other in enumerate(others[:4]):
                x = 60 + i * (side + gap)
                page.paste(ImageOps.fit(Image.open(other).convert("RGB"), (side, side),
                                        Image.Resampling.LANCZOS), (x, y))
                draw.text((x, y + side + 10), f"Produto {i + 1}", fill=t["ink"],
                          font=font(size=32))
                draw.text((x, y + side + 55), f"R$ {rng.randint(49, 999)},90", fill=t["ink"],
                          font=font(size=36))
        else:
            draw.rounded_rectangle((60, y, width_px - 60, y + 150), radius=30, fill=accent)
            draw.text((width_px // 2 - 220, y + 40), "Add to cart", fill=(255, 255, 255),
                      font=font(size=70))
        nav = rng.choice(t["nav"])
        draw.rectangle((0, height_px - 220, width_px, height_px), fill=nav)
        draw.line((0, height_px - 220, width_px, height_px - 220), fill=t["faint"], width=2)
        for i in range(5):  # five icons with labels
            x = 117 + 234 * i
            colour = accent if i == 0 else t["faint"]
            draw.rounded_rectangle((x - 35, height_px - 190, x + 35, height_px - 120),
                                   radius=12, outline=colour, width=6)
            draw.text((x - 45, height_px - 105), ["Home", "Search", "Cart", "Saved", "Me"][i],
                      fill=colour, font=font(size=34))
    if layout == "notification":  # a messenger's banner over the status and app bars
        draw.rounded_rectangle((24, 24, width_px - 24, 236), radius=38, fill=(225, 225, 228))
        draw.rounded_rectangle((24, 20, width_px - 24, 230), radius=38, fill=(242, 242, 247))
        draw.rounded_rectangle((54, 65, 174, 185), radius=26, fill=(37, 211, 102))
        draw.text((204, 60), "WhatsApp", fill=(20, 20, 20), font=font(size=44))
        draw.text((width_px - 154, 60), "now", fill=(120, 120, 120), font=font(size=38))
        draw.text((204, 130), "Maria: olha esse, gostei muito!", fill=(40, 40, 40),
                  font=font(size=42))
    buf = io.BytesIO()
    # (a layout's PNG at zlib's level 1: the same pixels, written in two thirds of the time)
    page.save(buf, fmt, **({"quality": 85} if fmt == "JPEG" else
                           {"compress_level": 1} if layout != "product" else {}))
    return buf.getvalue(), (size[0], boxes)


def _lines(name: str, chars: int) -> list[str]:
    """The product's name in lines of at most ``chars`` characters, two at most."""
    lines = [""]
    for word in name.split():
        if len(lines[-1]) + len(word) > chars and lines[-1]:
            lines.append("")
        lines[-1] = (lines[-1] + " " + word).strip()
    return lines[:2]


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


def run(rec: Recommender, queries: list[tuple], k: int) -> dict:
    """Both paths for each (category, photo) query: precision@k, per-query changes, and the
    milliseconds a query took (decode, embedding(s), search) on each. A query that carries
    the photo's boxes on its page as a third item (:func:`app_screenshot`'s layouts) is also
    counted in ``box_on_the_photo`` when the box cut out (:func:`cut_out_box`) is one of them
    (intersection over union at least :data:`BOX_IOU`)."""
    embedder = rec.embedder
    hits = {"old": [], "new": []}
    framed, on_photo = 0, 0
    seconds = {"old": 0.0, "new": 0.0}
    for category, photo, *truth in queries:
        started = time.perf_counter()
        image = open_image(photo, max_pixels=embedder.settings.max_image_pixels,
                           draft_size=embedder.prep.draft_size)  # (the page searched whole)
        old = rec.search_vector(embedder.embed_arrays(to_array(image, embedder.prep)[None])[0], k)
        seconds["old"] += time.perf_counter() - started
        started = time.perf_counter()
        vectors = embedder.embed_query(photo)
        new = rec.search_vectors(vectors, k)[0]
        seconds["new"] += time.perf_counter() - started
        framed += len(vectors) > 1
        if truth:
            found = cut_out_box(image, truth[0][0])
            on_photo += found is not None and max(iou(found, b) for b in truth[0][1]) >= BOX_IOU
        hits["old"].append(sum(m.product.category == category for m in old))
        hits["new"].append(sum(m.product.category == category for m in new))
    old, new = np.asarray(hits["old"]), np.asarray(hits["new"])
    return {"queries": len(queries), "framed": framed,
            **({"box_on_the_photo": on_photo if framed_box else None}
               if queries and len(queries[0]) > 2 else {}),
            f"precision_at_{k}_old": round(float(old.mean() / k), 4),
            f"precision_at_{k}_new": round(float(new.mean() / k), 4),
            "queries_better": int((new > old).sum()), "queries_worse": int((new < old).sum()),
            "queries_same": int((new == old).sum()),
            "ms_per_query_old": round(seconds["old"] / len(queries) * 1e3, 1),
            "ms_per_query_new": round(seconds["new"] / len(queries) * 1e3, 1)}


BOX_IOU = 0.7
"""A box cut out is the photo's when its intersection over union with the photo's rectangle,
or with what in it differs from the page's colour (a product on a white backdrop on a white
page), is at least this."""


def cut_out_box(img: Image.Image, page_width: int) -> tuple[int, int, int, int] | None:
    """The box :func:`vitrine.image_frames.framed_product` cuts out of ``img`` (the picture as a
    search decodes it), in the pixels of the page ``page_width`` wide; None when none."""
    found = framed_box and framed_box(img if img.mode == "RGB" else img.convert("RGB"))
    if not found:
        return None
    (left, top, right, bottom), _ = found
    scale = page_width / img.width
    return (round(left * scale), round(top * scale), round(right * scale),
            round(bottom * scale))


def iou(a: tuple, b: tuple) -> float:
    """The intersection over union of boxes ``a`` and ``b`` (left, top, right, bottom)."""
    across = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    down = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    both = across * down
    return both / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - both)


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
    ap.add_argument("--pages", default="plain,app,layouts",
                    help="which screenshots, comma-separated: plain (a photo on a plain page), "
                         "app (a shopping app's page: bars, text, a button), layouts (app "
                         "pages laid out otherwise: thumbnails, recommended products, a "
                         "notification, landscape); all three by default")
    ap.add_argument("--layout-every", type=int, default=2,
                    help="the layouts' pages of every N-th held-out photo (2, the default: "
                         "half of them, for a run of about 7 minutes on 2 cores; 1: all)")
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
            queries = [(p.category,
                        app_screenshot(p.image, p.name, theme, fmt, app_rng, share)[0])
                       for p in test]
            key = f"{theme}_{fmt.lower()}" + ("_full_width" if share[0] == 1.0 else "")
            app[key] = run(rec, queries, args.k)
        report["held_out_app_screenshots"] = app
        layouts, some = {}, test[::args.layout_every]  # (the split's order: by category)
        if "layouts" in args.pages:
            report["app_layouts_photos"] = {
                "held_out_every": args.layout_every, "queries": len(some),
                f"precision_at_{args.k}_as_they_are": run(
                    rec, [(p.category, p.image) for p in some], args.k)[
                        f"precision_at_{args.k}_new"]}
        for layout in LAYOUTS if "layouts" in args.pages else ():
            # (each its own generator: the same pages whichever others are drawn)
            layout_rng, queries, dark = random.Random(f"{args.seed}/{layout}"), [], 0
            for p in some:
                others = tuple(layout_rng.sample([o.image for o in test if o is not p], 4))
                theme = layout_rng.choice(list(THEMES))
                dark += theme == "dark"
                page, where = app_screenshot(p.image, p.name, theme, LAYOUT_FORMAT, layout_rng,
                                             layout=layout, others=others)
                queries.append((p.category, page, where))
            layouts[layout] = {**run(rec, queries, args.k),
                               "format": LAYOUT_FORMAT.lower(), "dark_pages": dark}
        report["held_out_app_layouts"] = layouts
        report["indexed_photos_self_match"] = self_ranks(rec, train, args.k)
        report["catalogue_photos_with_a_frame"] = sum(
            framed_product(open_image(p.image, draft_size=embedder.prep.draft_size)) is not None
            for p in products)
        store.close()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
