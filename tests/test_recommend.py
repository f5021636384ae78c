"""Recommender on a real (small) store: by product id, by photo, quality sanity check."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import loafer, phone_screenshot

from vitrine.errors import ImageError
from vitrine.evaluate import precision_at_k
from vitrine.recommend import ProductNotFound, Recommender
from vitrine.store import open_store


@pytest.fixture
def rec(small_store, settings, embedder):
    store = open_store(small_store)
    yield Recommender(store, settings, embedder)
    store.close()


def test_similar_excludes_itself_and_is_sorted(rec):
    first = rec.store.list_products(limit=1)[0]
    product, matches = rec.similar(first.product_id, k=5)
    assert product.product_id == first.product_id
    assert len(matches) == 5 and first.product_id not in {m.product.product_id for m in matches}
    assert [m.score for m in matches] == sorted((m.score for m in matches), reverse=True)
    assert all(-1.0 <= m.score <= 1.0 + 1e-6 for m in matches)
    with pytest.raises(ProductNotFound):
        rec.similar("nope")


def test_held_out_photos_find_their_category(rec, demo_catalog):
    """Photos of products not in the store (the store holds the first 6 of each category)."""
    with open(demo_catalog / "products.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_cat: dict[str, list[dict]] = {}
    for row in rows:
        by_cat.setdefault(row["category"], []).append(row)
    queries = [r for cat in sorted(by_cat) for r in by_cat[cat][6:9]]
    retrieved = [[m.product.category for m in rec.search_image(demo_catalog / r["image"], 5)]
                 for r in queries]
    p5 = precision_at_k([r["category"] for r in queries], retrieved, 5)
    assert p5 >= 0.6, p5  # only 6 products per category indexed; full-size runs give ~0.89


@pytest.mark.parametrize("colour", [(255, 255, 255), (0, 0, 0)], ids=["white", "black"])
def test_a_screenshot_of_a_product_finds_it_first(rec, small_catalog, colour):
    """The product photo 40 % of a tall page's width filled a fifth of the square the model
    saw: loafer 10308's screenshot found it 7th to 13th (heels and trainers first). The
    product cut out of the page is searched for as well, each product keeping its better
    score: it comes first; the stored photo itself still matches itself at 1.0."""
    photo = loafer(small_catalog)
    for fmt in ("JPEG", "PNG"):
        matches, _ = rec.search_image_guess(phone_screenshot(photo, colour, fmt), 5)
        assert matches[0].product.product_id == "10308", (fmt, matches)
        assert len(matches) == 5 and len({m.product.product_id for m in matches}) == 5
        assert [m.score for m in matches] == sorted((m.score for m in matches), reverse=True)
    itself = rec.search_image(photo, 5)
    assert itself[0].product.product_id == "10308" and itself[0].score > 0.999


def test_a_screenshot_is_guessed_from_the_view_that_matched_best(rec, small_catalog,
                                                                monkeypatch):
    """A trained model's category guess reads the query vector: of a screenshot, the product
    cut out of the page (its best match scored higher than the whole page's); of a photo with
    no frame, its one vector."""
    shot = phone_screenshot(loafer(small_catalog), (255, 255, 255), "PNG")
    views = rec.embedder.embed_query(shot)
    assert len(views) == 2
    seen = []
    monkeypatch.setattr(rec.embedder, "guess_category", lambda v: seen.append(v))
    rec.search_image_guess(shot, 5)
    assert np.allclose(seen[-1], views[1], atol=1e-5)
    plain = loafer(small_catalog)
    assert len(rec.embedder.embed_query(plain)) == 1
    rec.search_image_guess(plain, 5)
    assert np.allclose(seen[-1], rec.embedder.embed_image(plain), atol=1e-6)


def test_search_rejects_bad_upload(rec):
    with pytest.raises(ImageError, match="uploaded image"):
        rec.search_image(b"\x89PNG\r\n\x1a\nbroken", 5)


def test_a_photo_search_refuses_a_store_made_by_another_model(settings, embedder, tmp_path,
                                                              demo_catalog):
    """A store whose vectors another model made (a trained one, say) cannot be searched by
    photo with this model: its vectors would be compared with ones from another space, so
    the recommender says 'different model' instead of returning meaningless results."""
    import dataclasses

    from vitrine.errors import StoreError

    store = open_store(tmp_path / "store", create=True)
    other = dataclasses.replace(embedder.manifest, weights_sha256="f" * 64,
                                embedding="trained:hidden")
    store.lock_for_writing()
    store.set_manifest(other)
    rec = Recommender(store, settings, embedder)
    photo = next((demo_catalog / "relogio_feminino").glob("*.jpg"))
    try:
        with pytest.raises(StoreError, match="different model"):
            rec.search_image(photo, 5)
        with pytest.raises(StoreError, match="different model"):
            rec.embedder  # noqa: B018 - the check is in the property
        store.set_manifest(embedder.manifest)  # the same model: accepted
        assert rec.embedder is embedder and rec.search_image(photo, 5) == []
    finally:
        store.close()


def test_a_server_refused_at_start_closes_its_store(settings, embedder, tmp_path,
                                                    monkeypatch):
    """A server that cannot start on a store (another model's vectors) closes it: a Milvus
    Lite file stays locked while it is open, so a retry in the same process would fail."""
    import dataclasses
    import sqlite3

    from vitrine.errors import StoreError
    from vitrine.service import VitrineService

    store = open_store(tmp_path / "store", create=True)
    store.lock_for_writing()
    store.set_manifest(dataclasses.replace(embedder.manifest, weights_sha256="f" * 64))
    store.close()
    opened = []
    real = VitrineService._open
    monkeypatch.setattr(VitrineService, "_open", lambda self: opened.append(real(self))
                        or opened[-1])
    with pytest.raises(StoreError, match="different model"):
        VitrineService(settings, tmp_path / "store", embedder)
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        opened[0].db.execute("SELECT 1")


@pytest.mark.parametrize("app", ["light", "dark"])
def test_a_screenshot_of_a_shopping_app_finds_its_product_first(rec, small_catalog, app):
    """A real screenshot has an app's bars, the product's name, its price and a button
    around the photo: its edges were not one colour, no frame was found, and the page was
    searched whole (loafer 10308 came after others). The photo is found among them and
    searched for as well: the product comes first."""
    colour = (18, 18, 18) if app == "dark" else (255, 255, 255)
    for fmt in ("JPEG", "PNG"):
        shot = phone_screenshot(loafer(small_catalog), colour, fmt, app=app)
        assert len(rec.embedder.embed_query(shot)) == 2
        matches, _ = rec.search_image_guess(shot, 5)
        assert matches[0].product.product_id == "10308", (fmt, matches)


def test_a_photos_two_searches_merge_each_product_once_with_its_best_score():
    """A photo in a wide frame is searched twice (whole and its product cut out): a product
    both searches find is listed once, with the better of its two scores, and ranked by it;
    the query whose first match scored highest leads."""
    from vitrine.recommend import merge_matches
    from vitrine.store.base import Match, StoredProduct

    def found(*pairs: tuple[str, float]) -> list[Match]:
        return [Match(StoredProduct(pid, f"{pid}.jpg"), score) for pid, score in pairs]

    whole = found(("a", 0.80), ("b", 0.55), ("c", 0.50))
    cut_out = found(("b", 0.95), ("a", 0.40), ("d", 0.30))
    merged, leading = merge_matches([whole, cut_out], k=3)
    assert [(m.product.product_id, m.score) for m in merged] == [
        ("b", 0.95), ("a", 0.80), ("c", 0.50)]
    assert leading == 1


MIXED = "Café S" + "a\u0303o"  # "Café" composed, "São" decomposed: neither Unicode form


def _unicode_store(path, *ids):
    """A store of ``ids`` (as given, in any Unicode form) and two other products."""
    from test_store import MANIFEST, record, unit

    store = open_store(path, create=True)
    store.set_manifest(MANIFEST)
    store.upsert([record(pid, unit(1, 0.1 * k)) for k, pid in enumerate(ids)]
                 + [record("b", unit(1, 1)), record("c", unit(0, 1))])
    return store


def test_an_id_stored_in_a_mix_of_unicode_forms_is_found_by_either_form(tmp_path, settings,
                                                                         cli_here):
    """A product id stored part composed, part decomposed ("Café" typed, "São" a Mac's file
    name) answered 404 to both whole forms: only the two forms of the id asked for were
    tried, and it is neither."""
    import json
    import unicodedata

    store = _unicode_store(tmp_path / "s", MIXED)
    rec = Recommender(store, settings)
    for form in ("NFC", "NFD"):
        typed = unicodedata.normalize(form, MIXED)
        assert typed != MIXED
        product, matches = rec.similar(typed, k=2)
        assert product.product_id == MIXED and MIXED not in [m.product.product_id
                                                             for m in matches]
    assert rec.similar(MIXED, k=2)[0].product_id == MIXED
    with pytest.raises(ProductNotFound, match="is not in the store"):
        rec.product("Cafe Sao")  # (not the same id without its accents)
    store.close()
    said = cli_here("similar", "--store", tmp_path / "s", "--json",
                    unicodedata.normalize("NFC", MIXED))
    assert json.loads(said.stdout)["product"]["product_id"] == MIXED


def test_an_id_two_stored_ids_are_spelled_as_is_not_guessed(tmp_path, settings, cli_here):
    """Two products whose ids differ only in their accents' Unicode form (two files of a
    folder, two rows of a table): each is found by its own spelling, and a third spelling of
    both is refused with the two named, not answered with one picked."""
    import unicodedata

    composed, decomposed = (unicodedata.normalize(f, MIXED) for f in ("NFC", "NFD"))
    store = _unicode_store(tmp_path / "s", composed, decomposed)
    rec = Recommender(store, settings)
    assert rec.product(composed).product_id == composed
    assert rec.product(decomposed).product_id == decomposed
    with pytest.raises(ProductNotFound, match=r"2 stored ids differ from it only in how their "
                                              r"accents are encoded \('Cafe\\u0301 "
                                              r"Sa\\u0303o', 'Caf\\xe9 S\\xe3o'\)"):
        rec.similar(MIXED)
    store.close()
    said = cli_here("similar", "--store", tmp_path / "s", MIXED, check=False)
    assert said.returncode == 2 and said.stderr.startswith(f"error: product {MIXED!r} is "
                                                           "not in the store as written")


def test_an_accented_id_not_in_the_store_reads_no_catalogue(tmp_path, settings, monkeypatch):
    """An id with an accent that no product has ("relógio", "é": a shopper's guess at an
    address, a typo) was looked for by a name search of it, which read every product it
    named: 0.2 s of the embedded store (under the server's lock) and 0.6-3 s of Milvus at
    20,000 products, for a 404. Its few spellings are looked up instead; each form of a
    mixed id, and Windows' Vietnamese "ê" with a combining dot, are still found."""
    import unicodedata

    viet = "Vi\u00ea\u0323t/1"  # ("ê" and a combining dot below: neither form of "Việt")
    store = _unicode_store(tmp_path / "s", MIXED, viet)
    monkeypatch.setattr(store, "list_products", lambda **kw: pytest.fail("a name search"))
    rec = Recommender(store, settings)
    for missing in ("relógio", "é", "relo\u0301gio_feminino/1"):
        with pytest.raises(ProductNotFound, match="is not in the store"):
            rec.product(missing)
    for form in ("NFC", "NFD"):
        assert rec.product(unicodedata.normalize(form, MIXED)).product_id == MIXED
        assert rec.product(unicodedata.normalize(form, viet)).product_id == viet
    store.close()


def test_a_products_copies_are_not_its_similar_products(demo_catalog, embedder, settings,
                                                        tmp_path):
    """A product's similar products left out only the product itself: the demo's 13026 and
    22277 (one photo under two ids, the duplicate group `index` reports) each showed the
    other first, "98% similar", and products sharing a placeholder photo each showed the
    others at 100%. A copy of the photo is the same product listed twice (as `evaluate`
    counts it); its copies are left out of `similar`, the pages and `related` alike, and the
    list is still k long."""
    from conftest import copy_subset
    from PIL import Image

    from vitrine.indexer import index_catalog
    from vitrine.related import write_related

    catalog = copy_subset(demo_catalog, tmp_path / "catalog", 8,
                          categories=("salto_feminino", "x_tenis_masculino"))
    with open(demo_catalog / "products.csv", newline="") as fh:
        pair = [r for r in csv.DictReader(fh) if r["product_id"] in ("13026", "22277")]
    with open(catalog / "products.csv", "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(pair[0]))
        for row in pair:
            (catalog / row["image"]).write_bytes((demo_catalog / row["image"]).read_bytes())
            writer.writerow(row)
    blank = catalog / "x_tenis_masculino" / "sem_foto_1.jpg"
    Image.new("RGB", (225, 300), "white").save(blank, quality=90)
    for n in (2, 3):
        (blank.parent / f"sem_foto_{n}.jpg").write_bytes(blank.read_bytes())
    store = open_store(tmp_path / "store", create=True)
    try:
        report = index_catalog(catalog, store, embedder, show_progress=False)
        assert ["salto_feminino/13026.jpg", "salto_feminino/22277.jpg"] in report.duplicates
        rec = Recommender(store, settings, embedder)
        placeholders = {f"x_tenis_masculino/sem_foto_{n}.jpg" for n in (1, 2, 3)}
        copies = {"13026": {"22277"}, "22277": {"13026"},
                  **{p: placeholders - {p} for p in placeholders}}
        for pid, others in copies.items():
            for same in (True, False):
                _, matches = rec.similar(pid, 5, same_category=same)
                shown = [m.product.product_id for m in matches]
                assert len(shown) == 5 and not others & set(shown), (pid, same, shown)
        out = tmp_path / "related.jsonl"
        write_related(store, out, 5, same_category=True, show_progress=False)
        for line in out.read_text().splitlines():
            row = json.loads(line)
            _, matches = rec.similar(row["product_id"], 5, same_category=True)
            assert [s["product_id"] for s in row["similar"]] == \
                [m.product.product_id for m in matches]
    finally:
        store.close()


def test_a_batch_is_not_searched_as_deep_as_its_largest_group_of_copies():
    """`related` searches a batch of products at once: one product whose placeholder photo
    thousands share asked every product of its batch that deep. The batch is asked for
    twice k at most; the product whose copies took the places is asked again, deeper."""
    from vitrine.copies import Copies, similar_without_copies
    from vitrine.store.base import Match, StoredProduct

    def product(pid: str, sha: str) -> StoredProduct:
        return StoredProduct(product_id=pid, name=pid, category="c", image=f"{pid}.jpg",
                             content_sha256=sha)

    placeholder = [product(f"blank{i:03}", f"b{i:063x}") for i in range(300)]  # (copies
    # of one photo in 300 encodings, one duplicate group)
    others = [product(f"p{i:03}", f"{i:064x}") for i in range(40)]
    asked = []

    def search(rows: list[int], n: int) -> list[list[Match]]:
        asked.append((len(rows), n))
        return [[Match(p, 1.0 - i / 1000) for i, p in enumerate(
            q for q in shelf(queried[r]) if q.product_id != queried[r].product_id)][:n]
            for r in rows]

    def shelf(of: StoredProduct) -> list[StoredProduct]:  # (the copies score highest for
        # one of them: the same photo; another product's nearest are others, then one copy)
        return placeholder + others if of in placeholder else others + placeholder

    queried = [placeholder[0], others[0], others[1]]
    copies = Copies([p.content_sha256 for p in placeholder], [1] * len(placeholder))
    found = similar_without_copies(search, queried, 5, copies)
    assert asked[0] == (3, 10)  # (not 5 + 299 for every product of the batch)
    assert all(rows == 1 for rows, _ in asked[1:])  # (the placeholder's product alone)
    assert [m.product.product_id for m in found[0]] == ["p000", "p001", "p002", "p003", "p004"]
    assert [m.product.product_id for m in found[1]] == ["p001", "p002", "p003", "p004",
                                                        "p005"]
