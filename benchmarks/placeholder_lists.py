"""Placeholder photos in ordinary products' similar lists, on the demo catalogue.

The demo catalogue (copied into a temporary folder) plus three kinds of shared photo, the
categories in turn: ``--placeholders`` products naming one grey "IMAGEM EM BREVE" card (one
file), ``--stamped`` products each with its own copy of the card with its SKU written on it
(other bytes, near copies: `index`'s duplicate search groups them), and ``--shared-real``
products naming one real demo photo (a photo used for many products). Indexed into an
embedded store (its duplicate groups saved) and copied into Milvus Lite (``--stores``); then
for every demo product (the ordinary ones) its ``--k`` similar products as `vitrine similar`
and the API ask for them (of every category) and as the product page does (of its own), and
an upload search with its stored vector (a shopper's photo of it): counted, the places taken
by the planted products, the lists with one, and the most in one list; the places taken
by another product of a photo the list already shows (a repeat: one photo, the same file
or its copies group) and the lists as the exact ones (brute force over every vector, one
product a photo, placeholders left out); and where the real shared photo is: in how many
lists, at most how many times in one, and in how many lists at the place the exact lists
give it (or absent from both).

    python benchmarks/placeholder_lists.py --catalog ../shared/data/demo-catalog \
        --weights ../shared/models/mobilenet_v2_imagenet.pth \
        > benchmarks/results/placeholder_lists.json

(``placeholder_lists_before.json``: the same command, of the measure then, with the ``src``
before the placeholders were left out; ``placeholder_lists_154bd2b.json`` and
``placeholder_lists_154bd2b_min20.json``: with the ``src`` of commit 154bd2b, that left them
out but showed each product of a photo, at its ``VITRINE_PLACEHOLDER_MIN`` default, 5, and
at 20; ``placeholder_lists_unplanted*.json``: ``--placeholders 0 --stamped 0 --shared-real
0``, the demo catalogue alone, with this ``src`` and 154bd2b's.)
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vitrine.bench import machine
from vitrine.config import Settings
from vitrine.copies import saved_copies
from vitrine.embed import Embedder
from vitrine.indexer import index_catalog
from vitrine.migrate import migrate_store
from vitrine.recommend import Recommender
from vitrine.store import open_store
from vitrine.store.base import StoredProduct

STORES = ("embedded", "milvus_lite")


def card(sku: str | None = None) -> Image.Image:
    """The grey "image coming soon" card; with ``sku``, that written small under it."""
    image = Image.new("RGB", (600, 600), (232, 232, 232))
    draw = ImageDraw.Draw(image)
    draw.rectangle((150, 170, 450, 370), outline=(170, 170, 170), width=8)
    draw.ellipse((260, 220, 340, 300), outline=(170, 170, 170), width=8)
    draw.text((300, 430), "IMAGEM EM BREVE", fill=(120, 120, 120), anchor="mm",
              font=ImageFont.load_default(40))
    if sku:
        draw.text((300, 520), sku, fill=(150, 150, 150), anchor="mm",
                  font=ImageFont.load_default(22))
    return image


def plant(demo: Path, dest: Path, placeholders: int, stamped: int, shared_real: int
          ) -> tuple[list[str], dict[str, set[str]]]:
    """The demo catalogue and the planted products in ``dest``: the demo product ids, and
    each planted kind's product ids."""
    with open(demo / "products.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    cats = sorted({r["category"] for r in rows})
    for r in rows:
        (dest / r["image"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(demo / r["image"], dest / r["image"])
    ordinary = [r["product_id"] for r in rows]
    (dest / "placeholder").mkdir()
    card().save(dest / "placeholder/em-breve.jpg", quality=90)
    kinds: dict[str, set[str]] = {"placeholder": set(), "stamped": set(), "shared_real": set()}

    def add(kind: str, i: int, image: str) -> None:
        pid = f"{kind}-{i:04d}"
        rows.append({**dict.fromkeys(rows[0], ""), "product_id": pid, "image": image,
                     "category": cats[i % len(cats)], "name": f"{kind} {i}"})
        kinds[kind].add(pid)

    for i in range(placeholders):
        add("placeholder", i, "placeholder/em-breve.jpg")
    for i in range(stamped):
        card(f"SKU {100000 + 7919 * i}").save(dest / f"placeholder/sku-{i}.jpg", quality=90)
        add("stamped", i, f"placeholder/sku-{i}.jpg")
    real = rows[0]["image"]  # (a real photo, named by many products besides its own: a
    # product listed once a size)
    for i in range(shared_real):
        add("shared_real", i, real)
    kinds["shared_real"].add(rows[0]["product_id"])
    ordinary.remove(rows[0]["product_id"])
    with open(dest / "products.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return ordinary, kinds


def count(lists: list[list[str]], kinds: dict[str, set[str]], k: int) -> dict:
    """The places the ``kinds``' products take in ``lists``."""
    shared = set().union(*kinds.values())
    taken = [sum(pid in shared for pid in found) for found in lists]
    return {"lists": len(lists), "places": k * len(lists),
            "places_taken": sum(taken),
            "places_taken_by_kind": {kind: sum(pid in ids for found in lists for pid in found)
                                     for kind, ids in kinds.items()},
            "lists_with_one": sum(t > 0 for t in taken),
            "most_in_one_list": max(taken, default=0),
            "lists_by_places_taken": dict(sorted(Counter(taken).items())),
            "short_lists": sum(len(found) < k for found in lists)}


def exact_photos(rec: Recommender, ordinary: list[str], k: int, hidden: frozenset[str]
                 ) -> dict[str, dict[str, list]]:
    """Each ordinary product's exact ``k`` best photos by brute force over every stored vector
    (one a photo: the same file or its copies group; its own and ``hidden`` left out), as
    ``similar`` (of every category), the page (of its own) and an upload search ask."""
    copies = saved_copies(rec.store)
    stored = [pair for page in rec.store.iter_products(1000, vectors=True) for pair in page]
    products = [p for p, _ in stored]
    vectors = np.stack([v for _, v in stored])
    photo = [photo_key(copies, p) for p in products]
    row = {p.product_id: i for i, p in enumerate(products)}
    out: dict[str, dict[str, list]] = {"similar": {}, "page": {}, "upload": {}}
    for pid in ordinary:
        i = row[pid]
        order = np.argsort(-(vectors @ vectors[i]), kind="stable")
        for mode in out:
            shown, own = [], None if mode == "upload" else photo[i]
            for j in order.tolist():
                if photo[j] == own or photo[j] in shown \
                        or products[j].content_sha256 in hidden \
                        or (mode == "page" and products[j].category != products[i].category):
                    continue
                shown.append(photo[j])
                if len(shown) == k:
                    break
            out[mode][pid] = shown
    return out


def photo_key(copies, product) -> object:
    """The photo a product shows: its duplicate group, or its own file."""
    return copies.of(product.content_sha256) if product.content_sha256 \
        else product.product_id


def repeats(lists: list[list], exact: list[list], real: object) -> dict:
    """Places taken by another product of a photo already shown in the list, and where the
    real photo many products share (``--shared-real``) is: in how many lists, how many times
    at most, and whether where the exact photo lists have it (the same place, or none)."""
    again = [len(found) - len(set(found)) for found in lists]
    return {"places_taken_by_repeats": sum(again),
            "lists_with_repeats": sum(n > 0 for n in again),
            "most_repeats_in_one_list": max(again, default=0),
            "lists_as_exact": sum(found == want for found, want in zip(lists, exact,
                                                                         strict=True)),
            "shared_real_photo": {
                "lists_with_it": sum(real in found for found in lists),
                "most_in_one_list": max((found.count(real) for found in lists), default=0),
                "lists_it_belongs_in": sum(real in want for want in exact),
                "lists_where_it_belongs": sum(
                    (found.index(real) if real in found else None)
                    == (want.index(real) if real in want else None)
                    for found, want in zip(lists, exact, strict=True))}}


def measure(rec: Recommender, ordinary: list[str], kinds: dict[str, set[str]], k: int,
            real_id: str) -> dict:
    copies = saved_copies(rec.store)
    held = rec.placeholders().photos if hasattr(rec, "placeholders") else frozenset()
    exact = exact_photos(rec, ordinary, k, held)
    real = photo_key(copies, rec.store.get(real_id))
    cache: dict[str, StoredProduct] = {}

    def photos(matches) -> list:
        return [photo_key(copies, cache.setdefault(m.product.product_id, m.product))
                for m in matches]

    out = {}
    for mode, kw in (("similar", {}), ("page", {"same_category": True})):
        started = time.perf_counter()
        found = [rec.similar(pid, k, **kw)[1] for pid in ordinary]
        ms = 1000 * (time.perf_counter() - started) / len(ordinary)
        lists = [[m.product.product_id for m in matches] for matches in found]
        out[mode] = {**count(lists, kinds, k), **repeats(
            [photos(m) for m in found], [exact[mode][pid] for pid in ordinary], real),
            "mean_ms": round(ms, 2)}
    started = time.perf_counter()
    found = [rec.search_vectors(rec.store.vector(pid).reshape(1, -1), k)[0]
             for pid in ordinary]
    ms = 1000 * (time.perf_counter() - started) / len(ordinary)
    lists = [[m.product.product_id for m in matches] for matches in found]
    out["upload"] = {**count(lists, kinds, k), **repeats(
        [photos(m) for m in found], [exact["upload"][pid] for pid in ordinary], real),
        "mean_ms": round(ms, 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", type=Path, required=True)
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--placeholders", type=int, default=40)
    ap.add_argument("--stamped", type=int, default=20)
    ap.add_argument("--shared-real", type=int, default=8)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--stores", default=",".join(STORES))
    args = ap.parse_args()
    settings = Settings(weights=args.weights)
    embedder = Embedder.from_settings(settings)
    with tempfile.TemporaryDirectory() as tmp:
        catalog = Path(tmp) / "catalog"
        ordinary, kinds = plant(args.catalog, catalog, args.placeholders, args.stamped,
                                args.shared_real)
        embedded = open_store(Path(tmp) / "store", create=True)
        started = time.perf_counter()
        report = index_catalog(catalog, embedded, embedder, show_progress=False)
        out = {"products": embedded.count(), "ordinary": len(ordinary),
               "planted": {kind: len(ids) for kind, ids in kinds.items()},
               "duplicate_group_sizes": sorted(len(g) for g in report.duplicates),
               "k": args.k,
               "placeholder_min": getattr(settings, "placeholder_min", None),
               "index_seconds": round(time.perf_counter() - started, 1), "stores": {}}
        stores = {"embedded": embedded}
        if "milvus_lite" in args.stores.split(","):
            stores["milvus_lite"] = open_store(f"milvus-lite://{tmp}/milvus.db", create=True)
            migrate_store(embedded, stores["milvus_lite"], show_progress=False)
        for name, store in stores.items():
            if name in args.stores.split(","):
                rec = Recommender(store, settings, embedder)
                out["stores"][name] = measure(rec, ordinary, kinds, args.k,
                                                sorted(kinds["shared_real"])[-1])
                if hasattr(rec, "placeholders"):  # (the products it leaves out)
                    held = rec.placeholders()
                    out["stores"][name]["placeholders"] = {"photos": len(held.photos),
                                                           "products": held.products}
        for store in stores.values():
            store.close()
    out["machine"] = machine()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
