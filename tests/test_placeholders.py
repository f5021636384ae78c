"""Placeholder photos ("image coming soon", one photo many products share) left out of other
products' similar products and photo searches (vitrine.placeholders), on both stores, in the
API, the product page and `related`."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import IN_CI, copy_subset
from PIL import Image, ImageDraw

from vitrine.catalog import Product
from vitrine.config import Settings
from vitrine.copies import Copies, copies_in
from vitrine.dedupe_store import encode
from vitrine.manifest import ModelManifest
from vitrine.placeholders import PLACEHOLDER_MIN, placeholders
from vitrine.recommend import Recommender
from vitrine.related import write_related
from vitrine.store.base import Record
from vitrine.store.embedded import EmbeddedStore

DIM = 16
CARD, STAMPED = 6, 5
"""Products of one grey card's file, and products each with the card and its SKU on it
(other bytes: `index`'s duplicate search groups them with the card)."""
MIN = 5
"""``VITRINE_PLACEHOLDER_MIN`` of the tests of the demo photos (the default, 20, is more
products than they index: 11 of the card are a photo shown once a list, test_one_a_photo)."""


@pytest.fixture
def five(settings):
    return settings.model_copy(update={"placeholder_min": MIN})


def test_a_photo_is_a_placeholder_by_its_products_counted_with_its_copies():
    """Products of one file count, and so do photos of other bytes grouped as copies (the
    card saved with each product's SKU on it): every photo of the group is hidden."""
    a, b, c, d, e = (ch * 64 for ch in "abcde")
    copies = Copies([b, c, d], [1, 1, 1], shared={a: 5, b: 3, e: 4})
    held = placeholders(copies, 5)
    assert held.photos == {a, b, c, d} and held.products == 5 + (3 + 1 + 1)
    assert held.shared_by == {a: 5, b: 5, c: 5, d: 5}
    assert placeholders(copies, 6).photos == frozenset()
    assert placeholders(copies, 4).photos == {a, b, c, d, e}
    assert placeholders(copies, 0).photos == frozenset()  # (0: none is)
    assert placeholders(copies, 5) is held  # (counted once for the groups a reader holds)
    assert Settings().placeholder_min == PLACEHOLDER_MIN == 20


def test_the_counts_are_kept_with_the_duplicate_groups():
    shared = (np.array([b"a" * 64], dtype="S64"), np.array([7]))
    data = encode("key", np.arange(2, dtype=np.uint64), np.array([[0, 1]]),
                  ["b" * 64, "c" * 64], shared)
    copies = copies_in(data)
    assert copies.shared == {"a" * 64: 7} and copies.of("b" * 64) == {"b" * 64, "c" * 64}
    old = encode("key", np.arange(2, dtype=np.uint64), np.array([[0, 1]]),
                 ["b" * 64, "c" * 64])  # (a cache saved before the counts: none counted)
    assert copies_in(old).shared == {} and copies_in(old).of("b" * 64) == {"b" * 64, "c" * 64}


def test_a_write_counts_the_products_of_its_photo_file_again(tmp_path):
    """recount_shared (a write through the API): the products of one photo file are
    counted again, the duplicate groups and pairs saved as they were; a photo of its own
    reads nothing; no counts saved (no duplicate search yet) saves none."""
    from vitrine.dedupe_store import recount_shared

    card, other = "c" * 64, "d" * 64
    store = EmbeddedStore(tmp_path / "store", create=True)
    try:
        store.set_manifest(ModelManifest("test", "0" * 64, {}, DIM))
        store.lock_for_writing()

        def add(pid: str, sha: str) -> None:
            store.upsert([Record(Product(pid, Path(f"/photos/{pid}.jpg"), category="c"), sha,
                                 "0" * 16, b"\0" * 768, np.ones(DIM, np.float32))])

        for i in range(3):
            add(f"p{i}", card)
        add("q", other)
        recount_shared(store, card)
        assert store.duplicate_cache() is None  # (no search saved counts: none made)
        saved = encode("key", np.arange(2, dtype=np.uint64), np.array([[0, 1]]),
                       [other, "e" * 64], (np.array([card.encode()], dtype="S64"),
                                           np.array([3])))
        store.set_duplicate_cache(saved)
        add("p3", card)  # (as the API adds it: then counts it)
        recount_shared(store, card)
        copies = copies_in(store.duplicate_cache())
        assert copies.shared == {card: 4} and copies.of(other) == {other, "e" * 64}
        assert placeholders(copies, 4).photos == {card}
        with np.load(io.BytesIO(store.duplicate_cache())) as now, \
                np.load(io.BytesIO(saved)) as before:
            assert all(np.array_equal(now[name], before[name]) for name in before.files
                       if name not in ("shared_shas", "shared_counts"))
        add("r", other)  # another of q's file: shared now
        recount_shared(store, other)
        assert copies_in(store.duplicate_cache()).shared == {card: 4, other: 2}
        store.delete(["p0", "p1", "p2"])
        recount_shared(store, removed=card)
        assert copies_in(store.duplicate_cache()).shared == {other: 2}
        kept = store.duplicate_cache()
        add("s", "f" * 64)  # a photo of its own: nothing to count again
        recount_shared(store, "f" * 64)
        assert store.duplicate_cache() == kept
    finally:
        store.close()


DAMAGED = {  # (a cache whose counts copies_in reads as none, or that cannot be saved back)
    "counts of another length": (np.array([b"c" * 64], dtype="S64"), np.array([3, 4])),
    "a photo that is no ASCII": (np.array([b"\xff" * 64], dtype="S64"), np.array([3])),
    "numbers for photos": (np.array([1, 2]), np.array([3, 4])),
    "no list": (np.array(b"c" * 64, dtype="S64"), np.array(3)),
}


def _damaged(shared: tuple[np.ndarray, np.ndarray]) -> bytes:
    """A duplicate cache as `index` saves it, but for its photo counts, ``shared``."""
    buf = io.BytesIO()
    np.savez(buf, key=np.array("key"), digests=np.arange(2, dtype=np.uint64),
             pairs=np.zeros((0, 2), np.uint64), searched_at=np.array(0.0),
             group_shas=np.array([b"a" * 64, b"b" * 64], dtype="S64"),
             group_labels=np.array([0, 0]), shared_shas=shared[0], shared_counts=shared[1])
    return buf.getvalue()


@pytest.mark.parametrize("damage", sorted(DAMAGED))
def test_a_damaged_count_is_left_for_the_next_search_not_a_failed_write(tmp_path, damage):
    """Photo counts saved damaged (which ``copies_in`` reads as none, a damaged cache being
    no cache) are left as they are by a write's recount, for the next `index` to count
    anew, as one above VITRINE_DUP_MAX_PRODUCTS does (the groups kept): each raised
    (ValueError, UnicodeEncodeError, AttributeError, TypeError), the API's write a 500 after
    its product was stored, `index` a traceback after its writes."""
    from vitrine.dedupe_store import recount_every_shared, recount_shared

    card = "c" * 64
    store = EmbeddedStore(tmp_path / "store", create=True)
    try:
        store.set_manifest(ModelManifest("test", "0" * 64, {}, DIM))
        store.lock_for_writing()
        store.upsert([Record(Product(f"p{i}", Path(f"/photos/p{i}.jpg"), category="c"),
                             card, "0" * 16, b"\0" * 768, np.ones(DIM, np.float32))
                      for i in range(3)])
        saved = _damaged(DAMAGED[damage])
        store.set_duplicate_cache(saved)
        recount_shared(store, card)
        store.delete(["p0"])
        recount_shared(store, removed=card)
        assert store.duplicate_cache() == saved
        recount_every_shared(store)
        counted = copies_in(store.duplicate_cache())
        assert counted.shared == {card: 2} and counted.of("a" * 64) == {"a" * 64, "b" * 64}
    finally:
        store.close()


def test_placeholder_min_of_one_is_refused_in_one_sentence(monkeypatch):
    from vitrine.config import load_settings
    from vitrine.errors import VitrineError

    monkeypatch.setenv("VITRINE_PLACEHOLDER_MIN", "1")
    with pytest.raises(VitrineError, match="VITRINE_PLACEHOLDER_MIN='1': use 0"):
        load_settings()
    monkeypatch.setenv("VITRINE_PLACEHOLDER_MIN", "0")
    assert load_settings().placeholder_min == 0


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_the_nearest_products_that_are_no_placeholders_are_found(tmp_path, kind):
    """40 products of one placeholder photo and 20 of the card's copies (their own bytes)
    sit nearest to ``p000``: they filled its similar products and a photo search near it.
    Now its lists are the exact best of the others, whether the placeholders were dropped
    from a search k deeper or, where they took more places than that, hidden inside it."""
    from vitrine.ann import IndexConfig

    rng = np.random.default_rng(3)
    ordinary, card, stamped = 80, 40, 20
    n = ordinary + card + stamped
    vecs = rng.normal(size=(n, DIM)).astype(np.float32)
    base = vecs[0] + 0.15 * rng.normal(size=DIM).astype(np.float32)
    vecs[ordinary:ordinary + card] = base
    vecs[ordinary + card:] = base + 0.05 * rng.normal(size=(stamped, DIM))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    shas = [f"{i:064x}" if i < ordinary or i >= ordinary + card else "c" * 64
            for i in range(n)]
    store = EmbeddedStore(tmp_path / "store", create=True,
                          index_config=IndexConfig.defaults(kind=kind))
    try:
        store.set_manifest(ModelManifest("test", "0" * 64, {}, DIM))
        store.lock_for_writing()
        store.upsert([Record(Product(f"p{i:03d}", Path(f"/photos/p{i}.jpg"), category="c",
                                     name="Sem foto" if i >= ordinary else f"Produto {i}"),
                             shas[i], "0" * 16, b"\0" * 768, vecs[i]) for i in range(n)])
        store.flush()
        grouped = ["c" * 64] + shas[ordinary + card:]  # (as `index` saves them)
        store.set_duplicate_cache(encode(
            "key", np.arange(len(grouped), dtype=np.uint64),
            np.array([[0, j] for j in range(1, len(grouped))]), grouped,
            (np.array([b"c" * 64], dtype="S64"), np.array([card]))))
        rec = Recommender(store, Settings())
        for k in (3, 10, 30):
            for pid in ("p000", "p001", "p050"):
                q = vecs[int(pid[1:])]
                scores = vecs[:ordinary] @ q
                scores[int(pid[1:])] = -np.inf
                best = [f"p{i:03d}" for i in np.argsort(-scores, kind="stable")[:k]]
                _, matches = rec.similar(pid, k)
                assert [m.product.product_id for m in matches] == best, (pid, k)
            found = rec.search_vector(vecs[0], k)  # (a shopper's photo of p000)
            best = np.argsort(-(vecs[:ordinary] @ vecs[0]), kind="stable")[:k]
            assert [m.product.product_id for m in found] == [f"p{i:03d}" for i in best]
        assert rec.placeholders().products == card + stamped
        before = Recommender(store, Settings(placeholder_min=0)).similar("p000", 10)[1]
        assert sum(int(m.product.product_id[1:]) >= ordinary for m in before) == 1  # (no
        # placeholder: the card and its copies, one photo, shown once; they took most of its
        # places)
        assert len(store.list_products(query="Sem foto", limit=100)) == card + stamped
    finally:
        store.close()


# ---- the whole way: `index` counts them, both stores, the API, the page, `related` --------

def _card(sku: str | None = None) -> Image.Image:
    image = Image.new("RGB", (400, 400), (232, 232, 232))
    draw = ImageDraw.Draw(image)
    draw.rectangle((100, 110, 300, 250), outline=(170, 170, 170), width=6)
    draw.text((200, 300), "IMAGEM EM BREVE", fill=(120, 120, 120), anchor="mm")
    if sku:
        draw.text((200, 350), sku, fill=(150, 150, 150), anchor="mm")
    return image


def _plant(catalog: Path, card: int, first: int = 0) -> None:
    """``card`` products of one placeholder file (from number ``first``) and ``STAMPED`` of
    its copies with their SKU, added to the catalogue's table."""
    (catalog / "sem_foto").mkdir(exist_ok=True)
    if not (catalog / "sem_foto" / "card.jpg").exists():
        _card().save(catalog / "sem_foto" / "card.jpg", quality=90)
        for i in range(STAMPED):
            _card(f"SKU {1000 + i}").save(catalog / "sem_foto" / f"sku{i}.jpg", quality=90)
    with open(catalog / "products.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    cats = sorted({r["category"] for r in rows if not r["product_id"].startswith("ph")})
    rows += [{**dict.fromkeys(rows[0], ""), "product_id": f"ph{i}", "name": f"Sem foto {i}",
              "image": "sem_foto/card.jpg", "category": cats[i % len(cats)]}
             for i in range(first, card)]
    if not first:
        rows += [{**dict.fromkeys(rows[0], ""), "product_id": f"phsku{i}",
                  "name": f"Sem foto SKU {i}", "image": f"sem_foto/sku{i}.jpg",
                  "category": cats[i % len(cats)]} for i in range(STAMPED)]
    with open(catalog / "products.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def planted(demo_catalog, embedder, tmp_path_factory):
    """3 demo photos of each category and the planted placeholders, indexed."""
    from vitrine.indexer import index_catalog
    from vitrine.store import open_store

    root = tmp_path_factory.mktemp("placeholders")
    catalog = copy_subset(demo_catalog, root / "catalog", 3)
    _plant(catalog, CARD)
    store = open_store(root / "store", create=True)
    try:
        report = index_catalog(catalog, store, embedder, show_progress=False)
    finally:
        store.close()
    assert any(len(g) == CARD + STAMPED for g in report.duplicates)  # (the card's copies)
    return root, catalog


def _is_placeholder(pid: str) -> bool:
    return pid.startswith("ph")


def _lists(rec: Recommender, ids: list[str], k: int) -> dict:
    out = {}
    for pid in ids:
        out[pid, "every"] = [m.product.product_id for m in rec.similar(pid, k)[1]]
        out[pid, "own"] = [m.product.product_id
                           for m in rec.similar(pid, k, same_category=True)[1]]
        out[pid, "photo"] = [m.product.product_id for m in rec.search_vectors(
            rec.store.vector(pid).reshape(1, -1), k)[0]]
    return out


def test_ordinary_products_lists_hold_no_placeholder_on_either_store(planted, five,
                                                                    tmp_path):
    """k = 40 in a store of 24 demo products and 11 placeholder ones: every similar list and
    photo search of a demo product held all 11 (of every category; its own category's,
    as its page asks, those of it). Both stores leave them out, the same way, and `related`
    too; they are still listed by name."""
    from vitrine.migrate import migrate_store
    from vitrine.store import open_store

    root, _ = planted
    embedded = open_store(root / "store")
    stores = {"embedded": embedded}
    try:
        try:
            import milvus_lite  # noqa: F401
        except ImportError:  # pragma: no cover - depends on the extra
            if IN_CI:
                raise
        else:
            stores["milvus"] = open_store(f"milvus-lite://{tmp_path}/m.db", create=True)
            migrate_store(embedded, stores["milvus"], show_progress=False)
        ids = [p.product_id for p in embedded.list_products(limit=100)]
        ordinary = [pid for pid in ids if not _is_placeholder(pid)]
        assert len(ids) == 24 + CARD + STAMPED and len(ordinary) == 24
        found = {}
        for name, store in stores.items():
            rec = Recommender(store, five)
            found[name] = lists = _lists(rec, ordinary, 40)
            for (pid, mode), shown in lists.items():
                assert not any(map(_is_placeholder, shown)), (name, pid, mode, shown)
                assert len(shown) == (24 if mode == "photo" else 23 if mode == "every"
                                      else 2), (name, pid, mode)
            held = rec.placeholders()
            assert held.products == CARD + STAMPED and len(held.photos) == 1 + STAMPED
            out = tmp_path / f"related-{name}.jsonl"
            write_related(store, out, 40, show_progress=False, placeholder_min=MIN)
            rows = {r["product_id"]: [s["product_id"] for s in r["similar"]]
                    for r in map(json.loads, out.read_text().splitlines())}
            assert all(not any(map(_is_placeholder, rows[pid])) and len(rows[pid]) == 23
                       for pid in ordinary)
            # a placeholder product's own list: neither its copies nor other placeholders
            assert all(not any(map(_is_placeholder, rows[pid])) for pid in ids
                       if _is_placeholder(pid))
            named = store.list_products(query="Sem foto", limit=100)
            assert len(named) == CARD + STAMPED  # (still in the catalogue, by name)
            off = Recommender(store, five.model_copy(update={"placeholder_min": 0}))
            assert sum(_is_placeholder(m.product.product_id)  # (one photo: shown once)
                       for m in off.similar(ordinary[0], 40)[1]) == 1
        if "milvus" in found:
            assert {key: sorted(v) for key, v in found["embedded"].items()} == \
                {key: sorted(v) for key, v in found["milvus"].items()}
    finally:
        for store in stores.values():
            store.close()


def test_the_api_and_the_page_say_what_was_left_out(planted, five, embedder, tmp_path):
    """The API says how many placeholder products it left out, and whether the product's
    own photo is one; the product page of a placeholder product says that its photo is
    shared, so that its similar products are not like it."""
    from fastapi.testclient import TestClient

    from vitrine.api import create_app

    root, catalog = planted
    client = TestClient(create_app(five, root / "store", embedder=embedder))
    ordinary = next(p["product_id"] for p in client.get(
        "/api/products", params={"limit": 100}).json()["products"]
        if not _is_placeholder(p["product_id"]))
    body = client.get(f"/api/products/{ordinary}/similar", params={"k": 40}).json()
    assert not any(_is_placeholder(r["product_id"]) for r in body["results"])
    assert body["placeholder"] is False and body["placeholders_left_out"] == CARD + STAMPED
    body = client.get("/api/products/ph0/similar", params={"k": 40}).json()
    assert body["placeholder"] is True and body["placeholders_left_out"] == 0  # (its copies)
    photo = (catalog / "sem_foto" / "card.jpg").read_bytes()  # (a shopper's: the card)
    body = client.post("/api/search", params={"k": 40},
                       files={"image": ("card.jpg", photo, "image/jpeg")}).json()
    assert body["placeholders_left_out"] == CARD + STAMPED
    assert body["results"] and not any(_is_placeholder(r["product_id"])
                                       for r in body["results"])
    page = client.get("/products/ph0").text
    assert 'id="shared-photo"' in page and f"{CARD + STAMPED} produtos" in page
    assert 'id="shared-photo"' not in client.get(f"/products/{ordinary}").text
    assert "look like the photo" in client.get("/products/ph0", params={"lang": "en"}).text


@pytest.mark.parametrize("searched", [True, False])
def test_a_product_added_with_the_placeholder_photo_is_counted_at_the_next_index(
        planted, embedder, five, tmp_path, searched):
    """A product of the card's file added to the table changes no photo the duplicate
    search compares (its file's first product stands for it): the counts are saved again
    all the same; and where `index` searches no duplicates (above VITRINE_DUP_MAX_PRODUCTS,
    here 0), as the products of one file need no search (they were the last search's)."""
    from vitrine.indexer import index_catalog
    from vitrine.store import open_store

    root, catalog = planted
    shutil.copytree(catalog, tmp_path / "catalog")
    shutil.copytree(root / "store", tmp_path / "store")
    _plant(tmp_path / "catalog", CARD + 1, first=CARD)
    store = open_store(tmp_path / "store")
    try:
        rules = None if searched else dataclasses.replace(embedder.duplicate_rules(),
                                                          max_products=0)
        report = index_catalog(tmp_path / "catalog", store, embedder, rules=rules,
                               show_progress=False)
        assert report.duplicates_searched is searched
        rec = Recommender(store, five)
        assert rec.placeholders().sharing(store.get("ph0")) == CARD + 1 + STAMPED
    finally:
        store.close()


def test_a_store_never_searched_for_duplicates_counts_its_photo_files_products(
        planted, embedder, five, tmp_path):
    """A store above VITRINE_DUP_MAX_PRODUCTS from its first `index` (here 0) is never
    searched for duplicates, yet the products of one photo file need no search: counted
    all the same, its placeholder left out of the other products' similar products and
    one more of it at once when the API adds one (no counts were saved where no search had
    saved any: a catalogue too large to search kept every placeholder in its lists). No
    search is said to have run (``duplicates_as_of`` null), and its copies of other bytes
    (the card with an SKU) are not grouped."""
    from fastapi.testclient import TestClient

    from vitrine.api import create_app
    from vitrine.copies import last_search
    from vitrine.indexer import index_catalog
    from vitrine.store import open_store

    _, catalog = planted
    store = open_store(tmp_path / "store", create=True)
    try:
        rules = dataclasses.replace(embedder.duplicate_rules(), max_products=0)
        report = index_catalog(catalog, store, embedder, rules=rules, show_progress=False)
        assert report.duplicates_searched is False and report.duplicates_as_of is None
        assert last_search(store.duplicate_cache()) is None
        rec = Recommender(store, five)
        assert rec.placeholders().sharing(store.get("ph0")) == CARD
        assert rec.copies().same_photo(store.get("phsku0")) == 0  # (no search: ungrouped)
        ordinary = next(p.product_id for p in store.list_products(limit=100)
                        if not _is_placeholder(p.product_id))
        _, matches = rec.similar(ordinary, 40)
        assert not any(m.product.product_id.startswith("ph") and
                       not m.product.product_id.startswith("phsku") for m in matches)
    finally:
        store.close()
    keyed = five.model_copy(update={"api_key": "k" * 32})
    client = TestClient(create_app(keyed, tmp_path / "store", embedder=embedder))
    added = client.post("/api/products", headers={"Authorization": "Bearer " + "k" * 32},
                        data={"product_id": "ph-api", "name": "Sem foto API"},
                        files={"image": ("card.jpg",
                                         (catalog / "sem_foto" / "card.jpg").read_bytes(),
                                         "image/jpeg")})
    assert added.status_code == 201, added.text
    assert client.get("/api/products/ph0/similar").json()["placeholders_left_out"] == 0
    assert client.get("/api/products/" + ordinary + "/similar", params={"k": 40}
                      ).json()["placeholders_left_out"] == CARD + 1


def test_a_product_added_through_the_api_with_a_shared_file_counts_at_once(
        planted, embedder, five, tmp_path):
    """A product added through the API with the bytes of a photo others name (its sha256)
    is one more product of it at once: an exact copy needs no duplicate search. The counts
    were the last `index`'s, so the card's 11 products under a placeholder count of 12
    stayed no placeholder with a 12th added (shown in lists, said "10 others share it"),
    and a placeholder's products left out were said one too few; deleted, it counts no
    more."""
    from fastapi.testclient import TestClient

    from vitrine.api import create_app

    root, catalog = planted
    shutil.copytree(root / "store", tmp_path / "store")
    twelve = five.model_copy(update={"placeholder_min": CARD + STAMPED + 1,
                                     "api_key": "k" * 32})
    client = TestClient(create_app(twelve, tmp_path / "store", embedder=embedder))
    auth = {"Authorization": "Bearer " + "k" * 32}
    ordinary = next(p["product_id"] for p in client.get(
        "/api/products", params={"limit": 100}).json()["products"]
        if not _is_placeholder(p["product_id"]))

    def similar(pid: str) -> dict:
        return client.get(f"/api/products/{pid}/similar", params={"k": 40}).json()

    body = similar(ordinary)  # (11 products of the card: no placeholder under 12)
    assert body["placeholders_left_out"] == 0
    assert [r["same_photo"] for r in body["results"] if _is_placeholder(r["product_id"])
            ] == [CARD + STAMPED - 1]
    card = (catalog / "sem_foto" / "card.jpg").read_bytes()
    added = client.post("/api/products", headers=auth,
                        data={"product_id": "ph-api", "name": "Sem foto API"},
                        files={"image": ("card.jpg", card, "image/jpeg")})
    assert added.status_code == 201, added.text
    body = similar(ordinary)  # 12 now: a placeholder, its products left out
    assert not any(_is_placeholder(r["product_id"]) for r in body["results"])
    assert body["placeholders_left_out"] == CARD + STAMPED + 1
    body = similar("ph-api")
    assert body["placeholder"] is True and body["placeholders_left_out"] == 0
    assert f"{CARD + STAMPED + 1} produtos" in client.get("/products/ph0").text
    assert client.delete("/api/products/ph-api", headers=auth).status_code == 204
    body = similar(ordinary)  # 11 again: shown once, saying so
    assert body["placeholders_left_out"] == 0
    assert [r["same_photo"] for r in body["results"] if _is_placeholder(r["product_id"])
            ] == [CARD + STAMPED - 1]


def test_an_api_write_beside_damaged_counts_is_done_and_said_done(planted, embedder,
                                                                  five, tmp_path):
    """A product added, replaced and deleted through the API where the saved photo counts
    are damaged: each write answered as done (201, 200, 204), not a 500 after its product
    was stored, and the product's pages served."""
    from fastapi.testclient import TestClient

    from vitrine.api import create_app
    from vitrine.store import open_store

    root, catalog = planted
    shutil.copytree(root / "store", tmp_path / "store")
    store = open_store(tmp_path / "store")
    try:
        store.lock_for_writing()
        store.set_duplicate_cache(_damaged(DAMAGED["counts of another length"]))
    finally:
        store.close()
    keyed = five.model_copy(update={"api_key": "k" * 32})
    client = TestClient(create_app(keyed, tmp_path / "store", embedder=embedder),
                        raise_server_exceptions=False)
    auth = {"Authorization": "Bearer " + "k" * 32}
    card = (catalog / "sem_foto" / "card.jpg").read_bytes()
    other = next((catalog / "sem_foto").glob("sku*.jpg")).read_bytes()
    for photo, status in ((card, 201), (other, 200)):  # added, then given another photo
        sent = client.post("/api/products", headers=auth,
                           data={"product_id": "ph-api", "name": "Sem foto API"},
                           files={"image": ("card.jpg", photo, "image/jpeg")})
        assert sent.status_code == status, sent.text
    assert client.get("/api/products/ph-api/similar").status_code == 200
    assert client.get("/products/ph-api").status_code == 200
    assert client.delete("/api/products/ph-api", headers=auth).status_code == 204
    assert client.get("/api/products/ph-api").status_code == 404


ENV = {"VITRINE_PLACEHOLDER_MIN": str(MIN)}


def test_the_command_line_says_it_too(planted, cli_here):
    """`similar` says under its table that a placeholder product's list is near its photo,
    and its JSON and `search`'s say what was left out."""
    root, catalog = planted
    body = json.loads(cli_here("similar", "ph0", "--store", root / "store", "--json",
                               "-k", "40", env_extra=ENV).stdout)
    assert not any(_is_placeholder(r["product_id"]) for r in body["results"])
    assert body["placeholder"] is True and body["placeholders_left_out"] == 0
    said = cli_here("similar", "ph0", "--store", root / "store", env_extra=ENV).stdout
    assert f"the one of {CARD + STAMPED} products (a placeholder)" in " ".join(said.split())
    body = json.loads(cli_here("search", catalog / "sem_foto" / "card.jpg", "--store",
                               root / "store", "--json", "-k", "40", env_extra=ENV).stdout)
    assert body["results"] and not any(_is_placeholder(r["product_id"])
                                       for r in body["results"])
    assert body["placeholders_left_out"] == CARD + STAMPED


def test_below_the_placeholder_count_a_photo_is_shown_once_and_says_how_many_share_it(
        planted, settings, embedder, cli_here):
    """Under the default (20), the card's 11 products are no placeholder: an ordinary
    product's list, the API's and the command line's, shows one of them, the best scored,
    saying that 10 others share its photo; the other results share theirs with none."""
    from fastapi.testclient import TestClient

    from vitrine.api import create_app

    root, catalog = planted
    client = TestClient(create_app(settings, root / "store", embedder=embedder))
    ordinary = [p["product_id"] for p in client.get(
        "/api/products", params={"limit": 100}).json()["products"]
        if not _is_placeholder(p["product_id"])]
    for pid in ordinary:
        body = client.get(f"/api/products/{pid}/similar", params={"k": 40}).json()
        assert body["placeholders_left_out"] == 0 and len(body["results"]) == 24
        shown = [r for r in body["results"] if _is_placeholder(r["product_id"])]
        assert [r["same_photo"] for r in shown] == [CARD + STAMPED - 1], pid
        assert all(r["same_photo"] == 0 for r in body["results"] if r not in shown)
        scores = [r["score"] for r in body["results"]]
        assert scores == sorted(scores, reverse=True)
    photo = (catalog / "sem_foto" / "card.jpg").read_bytes()
    body = client.post("/api/search", params={"k": 40},
                       files={"image": ("card.jpg", photo, "image/jpeg")}).json()
    assert body["results"][0]["same_photo"] == CARD + STAMPED - 1
    assert sum(map(_is_placeholder, (r["product_id"] for r in body["results"]))) == 1
    body = json.loads(cli_here("similar", ordinary[0], "--store", root / "store", "--json",
                               "-k", "40").stdout)
    assert [r["same_photo"] for r in body["results"]
            if _is_placeholder(r["product_id"])] == [CARD + STAMPED - 1]
    body = json.loads(cli_here("search", catalog / "sem_foto" / "card.jpg", "--store",
                               root / "store", "--json", "-k", "40").stdout)
    assert sum(map(_is_placeholder, (r["product_id"] for r in body["results"]))) == 1


def _result_cards(text: str) -> dict[str, str | None]:
    """Each result card's product id → its same-photo note (None: none), in order."""
    import html
    import re
    from urllib.parse import unquote, urlsplit

    cards = {}
    for chunk in text.split('<li class="card">')[1:]:
        href = html.unescape(re.search(r'class="card-link" href="([^"]+)"', chunk).group(1))
        note = re.search(r'<p class="same-photo" title="[^"]+">([^<]+)</p>', chunk)
        cards[unquote(urlsplit(href).path.rsplit("/", 1)[1])] = \
            html.unescape(note.group(1)) if note else None
    return cards


def test_a_result_card_says_how_many_other_products_share_its_photo(planted, settings,
                                                                    embedder):
    """The card's 11 products (below the placeholder count, 20) are one result of a list:
    its card says "+10 com a mesma foto" ("+10 with the same photo"), as the API's
    ``same_photo`` says 10, on a product's similar products and a photo's results (the whole
    page and the block the script puts in place); a result whose photo no other product
    shares says nothing, nor does a catalogue card."""
    from fastapi.testclient import TestClient

    from vitrine.api import create_app

    root, catalog = planted
    client = TestClient(create_app(settings, root / "store", embedder=embedder))
    ordinary = [p["product_id"] for p in client.get(
        "/api/products", params={"limit": 100}).json()["products"]
        if not _is_placeholder(p["product_id"])]
    near_card = None
    for pid in ordinary:  # (a product whose 10 similar ones hold one of the card's)
        results = client.get(f"/api/products/{pid}/similar", params={"k": 10}).json()["results"]
        if any(_is_placeholder(r["product_id"]) for r in results):
            near_card = pid, {r["product_id"]: r["same_photo"] for r in results}
            break
    assert near_card is not None
    pid, said = near_card
    page = client.get(f"/products/{pid}", params={"same": 0})  # (every category: the API's)
    assert page.status_code == 200
    cards = _result_cards(page.text)
    assert list(cards) == list(said)
    want = {r: f"+{n} com a mesma foto" if n else None for r, n in said.items()}
    assert cards == want and sorted(map(str, want.values())).count(
        f"+{CARD + STAMPED - 1} com a mesma foto") == 1
    english = _result_cards(client.get(f"/products/{pid}", params={"same": 0, "lang": "en"}).text)
    assert [n for n in english.values() if n] == [f"+{CARD + STAMPED - 1} with the same photo"]
    photo = (catalog / "sem_foto" / "card.jpg").read_bytes()
    for fragment in ("0", "1"):
        found = client.post("/search", params={"fragment": fragment},
                            files={"image": ("card.jpg", photo, "image/jpeg")})
        assert found.status_code == 200
        shown = _result_cards(found.text)
        first = next(iter(shown))
        assert _is_placeholder(first) and shown[first] == f"+{CARD + STAMPED - 1} com a mesma foto"
        assert all(note is None for r, note in shown.items() if r != first)
    catalogue = client.get("/", params={"category": "sem_foto"}).text
    assert 'class="same-photo"' not in catalogue


def test_under_a_price_filter_a_card_says_its_photo_is_counted_in_the_whole_catalogue(
        planted, settings, embedder, tmp_path):
    """"+n com a mesma foto" counts the products of the photo in the whole catalogue, as the
    API's ``same_photo`` does, whatever the filter: under "preço até R$ 60,00", where most of
    the card's products (R$ 278,66) are outside the list, the card says so ("+10 com a mesma
    foto no catálogo", its title: also those outside the filter), and the API's count is the
    page's; without a filter the card says it as before."""
    from fastapi.testclient import TestClient

    from vitrine.api import create_app
    from vitrine.indexer import index_catalog
    from vitrine.store import open_store

    root, _ = planted
    catalog = shutil.copytree(root / "catalog", tmp_path / "catalog")
    with open(catalog / "products.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:  # the card's first product cheap, its others dear, the rest cheap
        row["price"] = "278.66" if _is_placeholder(row["product_id"]) and \
            row["product_id"] != "ph0" else "49.90"
    with open(catalog / "products.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    store = open_store(tmp_path / "store", create=True)
    try:
        index_catalog(catalog, store, embedder, show_progress=False)
    finally:
        store.close()
    client = TestClient(create_app(settings, tmp_path / "store", embedder=embedder))
    photo = (catalog / "sem_foto" / "card.jpg").read_bytes()
    others = CARD + STAMPED - 1
    api = client.post("/api/search", params={"k": 10, "max_price": "60"},
                      files={"image": ("card.jpg", photo, "image/jpeg")}).json()["results"]
    assert [(r["product_id"], r["same_photo"]) for r in api if _is_placeholder(r["product_id"])
            ] == [("ph0", others)]
    for lang, said, note in (("pt", "com a mesma foto no catálogo", "fora do filtro"),
                             ("en", "with the same photo in the catalogue", "outside the filter")):
        found = client.post("/search", params={"fragment": 1, "lang": lang},
                            data={"max_price": "60"},
                            files={"image": ("card.jpg", photo, "image/jpeg")})
        assert found.status_code == 200
        assert _result_cards(found.text)["ph0"] == f"+{others} {said}", lang
        title = re.search(r'<p class="same-photo" title="([^"]+)"', found.text).group(1)
        assert note in title, title
    unfiltered = client.post("/search", params={"fragment": 1},
                             files={"image": ("card.jpg", photo, "image/jpeg")})
    first, note = next(iter(_result_cards(unfiltered.text).items()))
    assert _is_placeholder(first) and note == f"+{others} com a mesma foto"
