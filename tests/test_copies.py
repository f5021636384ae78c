"""A product's copies left out of its similar products inside the store's search
(vitrine.copies): a placeholder photo thousands of products share."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vitrine import copies
from vitrine.catalog import Product
from vitrine.config import Settings
from vitrine.manifest import ModelManifest
from vitrine.recommend import Recommender
from vitrine.related import write_related
from vitrine.store.base import Record
from vitrine.store.embedded import EmbeddedStore

DIM = 16


def _store(root: Path, placeholders: int, others: int) -> EmbeddedStore:
    """``placeholders`` products of one photo (one sha256, one vector) and ``others``."""
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(placeholders + others, DIM)).astype(np.float32)
    vecs[:placeholders] = vecs[0]
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    store = EmbeddedStore(root, create=True)
    store.set_manifest(ModelManifest("test", "0" * 64, {}, DIM))
    store.lock_for_writing()
    store.upsert([Record(Product(f"p{i:03d}", Path(f"/photos/p{i}.jpg"), category="c"),
                         "a" * 64 if i < placeholders else f"{i:064x}", "0" * 16, b"\0" * 768,
                         v) for i, v in enumerate(vecs)])
    store.flush()
    return store


@pytest.mark.parametrize("layered", [False, True])
def test_a_product_with_more_copies_than_the_deepest_search_still_gets_similar_ones(
        tmp_path, monkeypatch, layered):
    """Copies were dropped after the search, asked up to DEEPEST (16,384) deep: a product
    whose placeholder photo more products share got no similar product at all (30,000
    products, 20,000 of one photo: `similar` gave [] in 256 ms, `related` ran past 10
    minutes, 26 s before the copies were left out). The store leaves them out inside the
    search."""
    monkeypatch.setattr(copies, "DEEPEST", 16)  # (40 copies: more than the deepest search)
    store = _store(tmp_path / "store", 40, 20)
    if layered:  # (written since the index was saved: its rows and the saved index's)
        first = store.vector("p000")
        store.upsert([Record(Product(pid, Path(f"/photos/{pid}.jpg"), category="c"), sha,
                             "0" * 16, b"\0" * 768, -first if pid == "p101" else first)
                      for pid, sha in (("p000", "b" * 64), ("p100", "a" * 64),
                                       ("p101", "c" * 64))])
        assert type(store._current_index()).__name__ == "LayeredIndex"  # noqa: SLF001
    asked = []
    search_many = store.search_many

    def counted(vectors, k, **kw):
        asked.append(k)
        return search_many(vectors, k, **kw)

    monkeypatch.setattr(store, "search_many", counted)
    try:
        rec = Recommender(store, Settings())
        for same in (False, True):
            _, matches = rec.similar("p005", 5, same_category=same)
            assert [m.product.content_sha256 != "a" * 64 for m in matches] == [True] * 5
            shown = [m.product.product_id for m in matches]
            assert ("p000" in shown) == layered  # (its photo replaced: no copy now)
        out = tmp_path / "related.jsonl"
        write_related(store, out, 5, same_category=False, show_progress=False)
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(rows) == 60 + 2 * layered and all(len(r["similar"]) == 5 for r in rows)
        assert max(asked) <= 10  # (k plus at most k: not as deep as the copies)
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_similar_after_a_delete_still_leaves_out_a_product_s_copies(tmp_path, kind):
    """A delete (through the API, or a writer not rebuilding) leaves the saved index layered
    with no row written since: its layer is an empty flat index. Searched past a product's
    copies, that empty layer asked FAISS for its top 0 (its ``min(k, 0)``) and FAISS
    asserted k > 0: `similar` of any product sharing its photo with another raised an
    AssertionError (a 500 from the API; `related` stopped), until the next rebuild."""
    from vitrine.ann import IndexConfig

    store = _store(tmp_path / "store", 10, 20)
    if kind == "hnsw":
        store.close()
        store = EmbeddedStore(tmp_path / "store",
                              index_config=IndexConfig.defaults(kind="hnsw"))
        store.lock_for_writing()
        store.flush()
    try:
        store.delete(["p025"])  # (no product written since the index saved: an empty layer)
        assert type(store._current_index()).__name__ == "LayeredIndex"  # noqa: SLF001
        _, matches = Recommender(store, Settings()).similar("p005", 5)
        assert len(matches) == 5
        assert all(m.product.content_sha256 != "a" * 64 for m in matches)
        assert "p025" not in [m.product.product_id for m in matches]
        out = tmp_path / "related.jsonl"
        write_related(store, out, 5, same_category=False, show_progress=False)
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(rows) == 29 and all(len(r["similar"]) == 5 for r in rows)
    finally:
        store.close()


def test_a_write_that_leaves_the_duplicate_cache_as_it_was_does_not_make_the_groups_again(
        monkeypatch):
    """The server read the groups again after every write (an upload) and every 10 s:
    for 200,000 grouped photos of a million products, 0.6 s each time under its store lock,
    from the same bytes. They are made again only when the saved bytes changed."""
    from vitrine.dedupe_store import encode

    made = []

    class Counted(copies.Copies):
        def __init__(self, *args, **kwargs):
            made.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(copies, "Copies", Counted)
    shas = [f"{i:064x}" for i in range(4)]
    saved = [encode("key", np.arange(4, dtype=np.uint64), np.array([[0, 1]]), shas)]

    class Store:
        writes = 0

        def write_mark(self):
            self.writes += 1  # (another write before each read)
            return self.writes

        def duplicate_cache(self):
            return bytes(bytearray(saved[0]))  # (read anew each time)

    reader, store = copies.CopiesReader(), Store()
    for _ in range(3):
        assert reader(store).of(shas[0]) == {shas[0], shas[1]}
    assert len(made) == 1
    saved[0] = encode("key", np.arange(4, dtype=np.uint64), np.array([[2, 3]]), shas)
    assert reader(store).of(shas[0]) == {shas[0]} and len(made) == 2


def test_a_write_through_the_api_makes_the_groups_again_only_where_it_changed_them(
        monkeypatch):
    """After each write through the API the server forgets the groups it read
    (``forget``: the write's counts are saved after its products, with no write mark of
    their own, ``recount_shared``). Forgotten, the saved bytes are read again at the next
    list: new counts are seen at once, and where the write changed none (an edit, a photo
    of its own: most writes) the groups and their placeholders are not made again (they
    were, each time: a second at 200,000 grouped photos, under the store lock)."""
    from vitrine.dedupe_store import encode
    from vitrine.placeholders import placeholders

    made = []

    class Counted(copies.Copies):
        def __init__(self, *args, **kwargs):
            made.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(copies, "Copies", Counted)
    shas = [f"{i:064x}" for i in range(4)]

    def cache(count: int) -> bytes:
        return encode("key", np.arange(4, dtype=np.uint64), np.array([[0, 1]]), shas,
                      (np.array([shas[2].encode()], dtype="S64"), np.array([count])))

    saved = [cache(2)]

    class Store:  # (one write mark throughout: the counts' save gives none)
        def write_mark(self):
            return ("generation", 1)

        def duplicate_cache(self):
            return bytes(bytearray(saved[0]))  # (read anew each time)

    reader, store = copies.CopiesReader(), Store()
    first = reader(store)
    assert first.products_of(shas[2]) == 2
    held = placeholders(first, 2)
    for _ in range(3):  # writes that changed no count
        reader.forget()
        assert reader(store) is first and placeholders(reader(store), 2) is held
    assert len(made) == 1
    saved[0] = cache(3)  # a write that added a product of shas[2]'s file
    reader.forget()
    assert reader(store).products_of(shas[2]) == 3 and len(made) == 2


def test_an_hnsw_store_leaves_out_hundreds_of_copies_and_still_finds_the_nearest_others(
        tmp_path):
    """An HNSW graph searched past a product's copies with a FAISS selector walked among
    them (they are the query's nearest) with efSearch candidates, and stopped there: 5 far
    poorer products (best 0.48 where the best that is not a copy scores 0.77)."""
    from vitrine.ann import IndexConfig
    from vitrine.dedupe_store import encode

    rng = np.random.default_rng(0)
    same, group, others = 300, 300, 800
    n = same + group + others
    vecs = rng.normal(size=(n, DIM)).astype(np.float32)
    vecs[:same] = vecs[0]
    vecs[same:same + group] = vecs[0] + 0.05 * rng.normal(size=(group, DIM))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    shas = ["a" * 64 if i < same else f"{i:064x}" for i in range(n)]
    store = EmbeddedStore(tmp_path / "store", create=True,
                          index_config=IndexConfig.defaults(kind="hnsw"))
    try:
        store.set_manifest(ModelManifest("test", "0" * 64, {}, DIM))
        store.lock_for_writing()
        store.upsert([Record(Product(f"p{i:04d}", Path(f"/photos/p{i}.jpg"), category="c"),
                             shas[i], "0" * 16, b"\0" * 768, vecs[i]) for i in range(n)])
        store.flush()
        grouped = ["a" * 64] + shas[same:same + group]  # (one duplicate group)
        store.set_duplicate_cache(encode("key", np.arange(len(grouped), dtype=np.uint64),
                                         np.array([[0, j] for j in range(1, len(grouped))]),
                                         grouped))
        rec = Recommender(store, Settings())
        for pid in ("p0000", "p0450"):
            q = vecs[int(pid[1:])]
            scores = vecs[same + group:] @ q
            best = [f"p{same + group + i:04d}" for i in np.argsort(-scores, kind="stable")[:5]]
            _, matches = rec.similar(pid, 5)
            assert [m.product.product_id for m in matches] == best
    finally:
        store.close()


def test_each_store_says_whether_it_hides_copies_and_both_leave_them_out(tmp_path):
    """Whether a store leaves a product's copies out inside its own search was read in two
    places, each with a default for a store that did not say (Milvus): the stores say it
    (both do: the embedded one inside FAISS, Milvus in its filter) and ``hiding_search``
    alone reads it. `similar` and `related` find the same products either way."""
    from conftest import IN_CI

    from vitrine.store import open_store

    try:
        import milvus_lite  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the extra
        if IN_CI:
            raise
        pytest.skip("the milvus extra is not installed")
    embedded = _store(tmp_path / "store", 12, 10)
    milvus = open_store(f"milvus-lite://{tmp_path}/m.db", create=True)
    try:
        milvus.set_manifest(embedded.manifest())
        ids, vectors = embedded.all_vectors()
        stored = [embedded.get(pid) for pid in ids]
        milvus.upsert([Record(p.to_product(), p.content_sha256, "0" * 16, b"\0" * 768, v)
                       for p, v in zip(stored, vectors, strict=True)])
        milvus.flush()
        assert (embedded.hides_photos, milvus.hides_photos) == (True, True)
        for store in (embedded, milvus):
            hiding = copies.hiding_search(store, vectors, ids, None)
            hidden = hiding([0], 30, frozenset({"a" * 64}))[0]
            assert len(hidden) == 10 and all(m.product.content_sha256 != "a" * 64
                                             for m in hidden)
        found = []
        for store in (embedded, milvus):
            similar = Recommender(store, Settings()).similar("p000", 3)[1]
            out = tmp_path / f"related-{type(store).__name__}.jsonl"
            write_related(store, out, 3, same_category=False, show_progress=False)
            related = {row["product_id"]: [s["product_id"] for s in row["similar"]]
                       for row in map(json.loads, out.read_text().splitlines())}
            copied = {pid: r for pid, r in related.items() if int(pid[1:]) < 12}
            found.append(([m.product.product_id for m in similar], copied))
            assert len(similar) == 3 and len(copied) == 12 and len(related) == 22
            assert all(len(r) == 3 and all(int(p[1:]) >= 12 for p in r)
                       for r in [found[-1][0], *copied.values()])  # (no copy of p000's)
        assert found[0] == found[1]  # (the others' ties between copies: in either order)
    finally:
        milvus.close()
        embedded.close()


def test_a_store_let_go_for_its_new_database_is_not_kept_alive_by_the_copies_reader(
        tmp_path):
    """The server opens the store again when its database is replaced (a store deleted and
    indexed anew) and lets the old one go (``VitrineService._follow_new_database``: the
    recommender's store swapped); the reader of the copies kept the old store, with its
    search index, in memory until the next ``similar`` (photo searches loaded the new
    index beside it meanwhile). It holds the store it read weakly now, and reads the new
    one's groups."""
    import gc
    import weakref

    from vitrine.dedupe_store import encode

    old = _store(tmp_path / "old", 2, 10)
    new = _store(tmp_path / "new", 2, 10)
    try:
        shas = [old.get(pid).content_sha256 for pid in ("p002", "p003")]
        old.set_duplicate_cache(encode("key", np.arange(2, dtype=np.uint64),
                                       np.array([[0, 1]]), shas))
        rec = Recommender(old, Settings())
        _, matches = rec.similar("p002", 12)
        assert "p003" not in [m.product.product_id for m in matches]  # (its copy)
        held = weakref.ref(old)
        old.close()
        rec.store = new  # (as the service swaps it)
        del old
        rec.search_vector(np.ones(DIM, np.float32) / 4, 3)  # (the new index loaded)
        gc.collect()
        assert held() is None
        _, matches = rec.similar("p002", 12)  # (the new store's groups: none)
        assert "p003" in [m.product.product_id for m in matches]
    finally:
        new.close()


def test_the_products_of_a_products_copies_are_found_from_an_index(tmp_path):
    """A product whose photo file another product shares (the same photo listed twice) is
    searched again with the products of its photo hidden (``EmbeddedStore._photo_rows``):
    that look-up read every row of the store (content_sha256 had no index), 90-100 ms at
    100,000 products where the search took 10 ms, for each such product's `similar` (a
    product page, under the server's store lock) and each such photo in `related`. A store
    made before the index gets it when opened where it can be written; the look-up reads
    the index."""
    import sqlite3

    store = _store(tmp_path / "store", 2, 20)  # (p000 and p001: one photo file)
    store.close()
    with sqlite3.connect(tmp_path / "store" / "vitrine.sqlite") as db:  # (a store made before)
        db.execute("DROP INDEX IF EXISTS products_content")
    db.close()
    store = EmbeddedStore(tmp_path / "store")
    try:
        statements = []
        store.db.set_trace_callback(statements.append)
        _, matches = Recommender(store, Settings()).similar("p000", 5)
        store.db.set_trace_callback(None)
        assert len(matches) == 5 and "p001" not in [m.product.product_id for m in matches]
        looked = [sql for sql in statements if "content_sha256 IN" in sql]
        assert looked  # (its copy took a place: searched again without it)
        for sql in looked:
            plan = [row[3] for row in store.db.execute("EXPLAIN QUERY PLAN " + sql)]
            assert any("INDEX products_content" in step for step in plan), plan
            assert not any(step == "SCAN products" for step in plan), plan
    finally:
        store.close()


def test_copies_a_capped_index_does_not_search_are_said_to_be_as_of_the_last_search(
        demo_catalog, weights_path, tmp_path, cli_here):
    """Above VITRINE_DUP_MAX_PRODUCTS `index` searches no duplicates, and `similar` kept the
    groups of the last search without a word: a resized copy added since was the first
    similar product of its original, a byte copy of a grouped photo was left out. `index`
    and `info` now say of when the groups are (JSON too), and the next search takes them in."""
    import re
    import shutil

    from conftest import copy_subset
    from PIL import Image

    catalog = copy_subset(demo_catalog, tmp_path / "catalog", 1)  # (8 products)
    table = catalog / "products.csv"
    first = table.read_text().splitlines()[1].split(",")
    pid, image, category = first[0], catalog / first[1], first[2]
    photo = Image.open(image)

    def add(name: str, make) -> None:
        make(image.parent / f"{name}.jpg")
        with table.open("a") as fh:
            fh.write(f"{name},{category}/{name}.jpg,{category},{name},,,\n")

    add("half", lambda path: photo.resize((photo.width // 2, photo.height // 2)).save(
        path, quality=85))
    env = {"VITRINE_WEIGHTS": str(weights_path)}
    store = tmp_path / "store"
    report = json.loads(cli_here("index", catalog, "--store", store, "--json",
                                 env_extra=env).stdout)
    assert report["duplicates_searched"] and len(report["duplicates"]) == 1
    assert report["duplicates_as_of"] is None  # (searched now: the groups are this run's)
    add("small", lambda path: photo.resize((150, 150)).save(path, quality=80))  # a copy
    add("bytes", lambda path: shutil.copyfile(image.parent / "half.jpg", path))
    capped = {**env, "VITRINE_DUP_MAX_PRODUCTS": "5"}
    report = json.loads(cli_here("index", catalog, "--store", store, "--json",
                                 env_extra=capped).stdout)
    assert report["indexed"] == 2 and report["duplicates_searched"] is False
    as_of = report["duplicates_as_of"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", as_of["at"]), as_of
    assert (as_of["photos"], as_of["groups"]) == (9, 1)

    def similar() -> list[str]:
        out = cli_here("similar", pid, "--store", store, "--k", "3", "--json", env_extra=env)
        return [r["product_id"] for r in json.loads(out.stdout)["results"]]

    shown = similar()
    assert "half" not in shown and "bytes" not in shown  # (the group's photo, its bytes)
    assert "small" in shown  # (not searched: not known as a copy)
    said = " ".join(cli_here("index", catalog, "--store", store, env_extra=capped
                             ).stdout.split())
    when = as_of["at"].replace("T", " ")[:16] + " UTC"
    assert (f"Similar products leave out the copies the duplicate search of {when} found "
            "(1 group among 9 photos); a product added or replaced since has only copies of "
            "the same bytes left out.") in said, said
    info = json.loads(cli_here("info", "--store", store, "--json").stdout)
    assert info["duplicate_search"] == as_of
    said = " ".join(cli_here("info", "--store", store).stdout.split())
    assert (f"copies left out of similar products: 1 group among 9 photos, from the "
            f"duplicate search of {when}") in said, said
    report = json.loads(cli_here("index", catalog, "--store", store, "--json",
                                 env_extra=env).stdout)  # (the cap lifted: searched again)
    assert report["duplicates_searched"] and report["duplicates_as_of"] is None
    assert [len(group) for group in report["duplicates"]] == [4]
    assert "small" not in similar()
    assert json.loads(cli_here("info", "--store", store, "--json").stdout
                      )["duplicate_search"]["photos"] == 10  # (distinct files)


def test_counts_saved_by_another_process_are_read_at_its_next_request(tmp_path):
    """A write through the API saves its photo counts after its products
    (``recount_shared``); another process serving the same store that read between the two
    kept the old count for ``KEPT_S`` (10 s), as saving the cache left the write mark as it
    was. Saving it changes the mark: the other handle's next read has the new count."""
    from vitrine.dedupe_store import recount_every_shared, recount_shared

    card = "a" * 64
    writer = _store(tmp_path / "store", 2, 2)
    recount_every_shared(writer)
    other = EmbeddedStore(tmp_path / "store")
    try:
        reader = copies.CopiesReader()
        assert reader(other).products_of(card) == 2
        writer.upsert([Record(Product("new", Path("/photos/new.jpg"), category="c"), card,
                              "0" * 16, b"\0" * 768, writer.vector("p000"))])
        assert reader(other).products_of(card) == 2  # (read between the two: counts as saved)
        mark = other.write_mark()
        recount_shared(writer, added=card)
        assert other.write_mark() != mark
        assert reader(other).products_of(card) == 3
        writer.delete(["new", "p001"])
        reader(other)
        recount_shared(writer, removed=card)
        assert reader(other).products_of(card) == 1 and reader(other).shared == {}
    finally:
        other.close()
        writer.close()
