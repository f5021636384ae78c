"""``milvus_parity.py --copies N``: the embedded store and Milvus Lite on products with copies.

A catalogue of ``--per-category`` demo photos of each category, and planted copies: every
16th product's photo copied byte for byte under 1 to 3 other ids (every other one in the
next category), every 16th from the 8th saved again at JPEG quality 60 under another id
(another sha256: `index`'s duplicate search groups it), and N products of one placeholder
photo (the categories in turn). Indexed into an embedded store (the duplicate groups
saved), copied into Milvus Lite, and both asked for each product's similar products (every
product but the placeholder's, a seeded sample of ``--queries`` where given, and
``--placeholder-queries`` of those) with :class:`vitrine.recommend.Recommender` (what
`vitrine similar`, the API and the product page call) for each k of ``--ks``: of every
category, of the product's own (the page's), and of the largest category (``?category=``);
then `vitrine related`'s file (each k of ``--related-ks``, with and without
``--same-category``) and the API and the product page themselves for a few products.

Counted for each store: results holding a copy (the product itself, the same photo, or its
duplicate group), results shorter than k where k photos that are not its copies exist (one
product a photo: :func:`vitrine.copies.one_a_photo`; a copies group one photo), and
the deepest search asked; and for both, lists that differ beyond ties (a score at a rank,
or the ids of a run of tied scores both lists hold whole: the placeholder's products tie).
"""

from __future__ import annotations

import csv
import json
import random
import re
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

from PIL import Image, ImageDraw

from vitrine.bench import machine
from vitrine.config import Settings
from vitrine.copies import saved_copies
from vitrine.indexer import index_catalog
from vitrine.migrate import migrate_store
from vitrine.placeholders import placeholders
from vitrine.recommend import Recommender
from vitrine.related import write_related
from vitrine.store import open_store

STORES = ("embedded", "milvus_lite")
TIE = 2e-4
"""Scores this close are a tie (the two stores sum a product's terms in another order)."""


def plant(demo: Path, dest: Path, per_category: int, placeholders: int) -> int:
    """The catalogue with its planted copies in ``dest``; returns how many products."""
    with open(demo / "products.csv", newline="") as fh:
        by_cat: dict[str, list[dict]] = {}
        for row in csv.DictReader(fh):
            by_cat.setdefault(row["category"], []).append(row)
    cats = sorted(by_cat)
    chosen = [r for c in cats for r in by_cat[c][:per_category]]
    rows = []

    def add(pid: str, image: str, category: str, name: str) -> None:
        rows.append({"product_id": pid, "image": image, "category": category, "name": name})

    for r in chosen:
        (dest / r["image"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(demo / r["image"], dest / r["image"])
        add(r["product_id"], r["image"], r["category"], r["name"])
    for j, r in enumerate(chosen[::16]):  # the same bytes under other ids
        for c in range(1 + j % 3):
            cat = r["category"] if c % 2 == 0 else cats[(cats.index(r["category"]) + 1)
                                                         % len(cats)]
            image = f"{cat}/copy_{r['product_id']}_{c}.jpg"
            (dest / cat).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(demo / r["image"], dest / image)
            add(f"{r['product_id']}-copy{c}", image, cat, r["name"])
    for r in chosen[8::16]:  # the photo saved again: another sha256, one duplicate group
        image = f"{r['category']}/q60_{r['product_id']}.jpg"
        with Image.open(demo / r["image"]) as photo:
            photo.convert("RGB").save(dest / image, quality=60)
        add(f"{r['product_id']}-q60", image, r["category"], r["name"])
    grey = Image.new("RGB", (224, 224), (235, 235, 235))
    draw = ImageDraw.Draw(grey)
    draw.rectangle((62, 62, 162, 162), outline=(160, 160, 160), width=6)
    draw.line((62, 162, 162, 62), fill=(160, 160, 160), width=6)
    (dest / "placeholder").mkdir(parents=True, exist_ok=True)
    grey.save(dest / "placeholder/none.jpg", quality=90)
    for i in range(placeholders):  # one photo file that every one of them names
        add(f"ph{i:05d}", "placeholder/none.jpg", cats[i % len(cats)], f"Sem foto {i}")
    with open(dest / "products.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def differ(a: list[tuple[str, float]], b: list[tuple[str, float]]) -> bool:
    """Whether two ranked (id, score) lists differ beyond ties."""
    if len(a) != len(b) or any(abs(x[1] - y[1]) > TIE for x, y in zip(a, b, strict=True)):
        return True
    i = 0
    while i < len(a):
        j = i
        while j < len(a) and abs(a[j][1] - a[i][1]) <= TIE:
            j += 1
        if j < len(a) and {x[0] for x in a[i:j]} != {x[0] for x in b[i:j]}:
            return True  # (a run cut by the end of the list may hold any of the tied)
        i = j
    return False


class Catalogue:
    """Every product, its copies (as `similar` leaves them out) and how many photos each
    category holds (a list shows one product a photo: :func:`vitrine.copies.one_a_photo`;
    the placeholder's, which every list leaves out, not counted: :mod:`vitrine.placeholders`)."""

    def __init__(self, store):
        self.products = {p.product_id: p for batch in store.iter_products(vectors=False)
                         for p, _ in batch}
        self.copies = saved_copies(store)
        held = placeholders(self.copies, Settings().placeholder_min).photos
        self.placeholder_ids = frozenset(pid for pid, p in self.products.items()
                                         if p.content_sha256 in held)
        self.by_sha: dict[str, list[str]] = {}
        for p in self.products.values():
            self.by_sha.setdefault(p.content_sha256, []).append(p.product_id)
        self.counts = Counter(p.category for p in self.products.values())
        self.photos: dict[str | None, set] = {None: set()}
        for pid, p in self.products.items():
            if pid not in self.placeholder_ids:
                photo = self.copies.photo_of(p)
                self.photos[None].add(photo)
                self.photos.setdefault(p.category, set()).add(photo)
        self._copies: dict[frozenset[str], frozenset[str]] = {}

    def copies_of(self, pid: str) -> frozenset[str]:
        """``pid`` and its copies (made once for each photo: 17,000 products may share it)."""
        shas = self.copies.of(self.products[pid].content_sha256)
        if (own := self._copies.get(shas)) is None:
            own = self._copies[shas] = frozenset(c for s in shas for c in self.by_sha.get(s, ()))
        return own  # (``pid`` among them: its photo is)

    def left(self, pid: str, category: str | None) -> int:
        """The photos (a copies group one) that are not ``pid``'s nor a placeholder (of
        ``category``): the most a list of ``pid``'s similar products can show."""
        photos = self.photos.get(category, set())
        return len(photos) - (self.copies.photo_of(self.products[pid]) in photos)


def copies_parity(args, settings, embedder) -> dict:
    ks = (list(range(int(args.ks.split("-")[0]), int(args.ks.split("-")[1]) + 1))
          if "-" in args.ks else [int(k) for k in args.ks.split(",")])
    with tempfile.TemporaryDirectory() as tmp:
        catalog = Path(tmp) / "catalog"
        planted = plant(args.catalog, catalog, args.per_category, args.copies)
        started = time.perf_counter()
        embedded = open_store(Path(tmp) / "store", create=True)
        report = index_catalog(catalog, embedded, embedder, show_progress=False)
        index_s = time.perf_counter() - started
        uri = f"milvus-lite://{tmp}/milvus.db"
        milvus = open_store(uri, create=True)
        started = time.perf_counter()
        migrate_store(embedded, milvus, show_progress=False)
        migrate_s = time.perf_counter() - started
        stores = dict(zip(STORES, (embedded, milvus), strict=True))
        deepest = {name: _count_depth(store) for name, store in stores.items()}
        cat = Catalogue(embedded)
        largest = max(sorted(cat.counts), key=lambda c: cat.counts[c])
        ordinary = sorted(p for p in cat.products if not p.startswith("ph"))
        if args.queries:
            ordinary = sorted(random.Random(args.seed).sample(ordinary, args.queries))
        queries = ordinary + [f"ph{i:05d}" for i in range(min(args.placeholder_queries,
                                                              args.copies))]
        out = {"products": planted, "stored": cat.counts.total(), "placeholders": args.copies,
               "duplicate_groups": len(report.duplicates), "largest_category": largest,
               "queries": len(queries), "ks": args.ks, "index_seconds": round(index_s, 1),
               "migrate_seconds": round(migrate_s, 1),
               "similar": _similar(stores, cat, queries, ks, largest)}
        out["related"] = [_related(stores, cat, Path(tmp), int(k), same)
                          for k in args.related_ks.split(",") if k for same in (False, True)]
        out["deepest_search"] = {name: max(asked, default=0) for name, asked in deepest.items()}
        embedded.close()
        milvus.close()
        out["api_and_page"] = _served(settings, embedder, {"embedded": Path(tmp) / "store",
                                                           "milvus_lite": uri},
                                      cat, ordinary[:10] + queries[len(ordinary):][:3],
                                      largest)
    out["machine"] = machine()
    return out


def _count_depth(store) -> list[int]:
    """The k of every search of ``store`` from here on."""
    asked: list[int] = []
    for name in ("search", "search_many"):
        real = getattr(store, name)
        setattr(store, name, lambda v, k, real=real, **kw: (asked.append(k),
                                                            real(v, k, **kw))[1])
    return asked


def _similar(stores, cat: Catalogue, queries: list[str], ks: list[int], largest: str) -> dict:
    recs = {name: Recommender(store, Settings()) for name, store in stores.items()}
    modes = (("every", {}), ("own", {"same_category": True}), ("one", {"category": largest}))
    tally: Counter = Counter()
    seconds = {name: 0.0 for name in STORES}
    placeholder_s = {name: 0.0 for name in STORES}
    for pid in queries:
        for k in ks:
            for _, kw in modes:
                got = {}
                for name, rec in recs.items():
                    started = time.perf_counter()
                    got[name] = [(m.product.product_id, m.score) for m in rec.similar(
                        pid, k, **kw)[1]]
                    spent = time.perf_counter() - started
                    seconds[name] += spent
                    if pid.startswith("ph"):
                        placeholder_s[name] += spent
                where = kw.get("category") or (cat.products[pid].category
                                               if kw else None)
                want, own = min(k, cat.left(pid, where)), cat.copies_of(pid)
                tally["checks"] += 1
                tally["placeholder_checks"] += pid.startswith("ph")
                for name, found in got.items():
                    tally[f"{name}_copies_returned"] += sum(i in own for i, _ in found)
                    tally[f"{name}_short"] += len(found) < want
                tally["differ_beyond_ties"] += differ(got["embedded"], got["milvus_lite"])
                tally["same_order"] += [i for i, _ in got["embedded"]] == \
                    [i for i, _ in got["milvus_lite"]]
    checks, ph = tally["checks"], tally["placeholder_checks"]
    return {**{key: tally[key] for key in ("checks", "placeholder_checks",
                                           "differ_beyond_ties")},
            "same_order_share": round(tally["same_order"] / checks, 4),
            **{f"{what}": {name: tally[f"{name}_{what}"] for name in STORES}
               for what in ("copies_returned", "short")},
            "mean_ms": {name: round(1000 * s / checks, 1) for name, s in seconds.items()},
            "mean_ms_placeholder_products": {name: round(1000 * s / ph, 1) if ph else None
                                             for name, s in placeholder_s.items()}}


def _related(stores, cat: Catalogue, tmp: Path, k: int, same: bool) -> dict:
    rows, seconds = {}, {}
    for name, store in stores.items():
        out = tmp / f"related_{name}.jsonl"
        started = time.perf_counter()
        write_related(store, out, k, same_category=same, show_progress=False)
        seconds[name] = round(time.perf_counter() - started, 1)
        rows[name] = {r["product_id"]: [(m["product_id"], m["score"]) for m in r["similar"]]
                      for r in map(json.loads, out.read_text().splitlines())}
    result = {"k": k, "same_category": same, "products": len(rows["embedded"]),
              "differ_beyond_ties": sum(differ(found, rows["milvus_lite"].get(pid, []))
                                        for pid, found in rows["embedded"].items()),
              "copies_returned": {}, "short": {}, "seconds": seconds}
    for name, found in rows.items():
        result["copies_returned"][name] = sum(
            sum(i in own for i, _ in hits) for pid, hits in found.items()
            if (own := cat.copies_of(pid)))
        result["short"][name] = sum(
            len(hits) < min(k, cat.left(pid, cat.products[pid].category if same else None))
            for pid, hits in found.items())
    return result


def _served(settings, embedder, stores: dict, cat: Catalogue, pids: list[str],
            largest: str) -> dict:
    """GET /api/products/{id}/similar (k=10, and ?category=) and the product page (its
    own category's, and every one's) on a server of each store: copies shown, short lists,
    API lists that differ beyond ties."""
    from fastapi.testclient import TestClient

    from vitrine.api import create_app

    got: dict[str, dict] = {}
    for name, store in stores.items():
        found: dict = {}
        with TestClient(create_app(settings, store, embedder=embedder)) as client:
            for pid in pids:
                for query in ("", f"&category={largest}"):
                    body = client.get(f"/api/products/{pid}/similar?k=10{query}").json()
                    found["api", pid, query] = [(r["product_id"], r["score"])
                                                for r in body["results"]]
                for same in (1, 0):
                    html = client.get(f"/products/{pid}?same={same}").text
                    part = html.split('id="similar-title"', 1)[-1]
                    found["page", pid, same] = [
                        (i, 0.0) for i in re.findall(r'class="card-link" href="/products/'
                                                     r'([^"?#]+)', part)]
        got[name] = found
    tally: Counter = Counter()
    for key, hits in got["embedded"].items():
        kind, pid, how = key
        where = (largest if how else None) if kind == "api" else (
            cat.products[pid].category if how else None)
        tally[f"{kind}_lists"] += 1
        for name in STORES:
            found = got[name][key]
            tally[f"{name}_{kind}_copies_shown"] += sum(i in cat.copies_of(pid)
                                                        for i, _ in found)
            tally[f"{name}_{kind}_short"] += len(found) < min(10, cat.left(pid, where))
        if kind == "api":
            tally["api_differ_beyond_ties"] += differ(hits, got["milvus_lite"][key])
    return dict(sorted(tally.items()))
