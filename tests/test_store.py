"""The embedded SQLite + FAISS store: add, update, remove, search, persistence."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vitrine.catalog import Product
from vitrine.embed import ModelManifest
from vitrine.errors import StoreError, VitrineError
from vitrine.store import open_store
from vitrine.store.base import Record

DIM = 8
MANIFEST = ModelManifest("test", "0" * 64, {"size": 8, "resize": "crop"}, DIM)


def unit(*values) -> np.ndarray:
    v = np.zeros(DIM, np.float32)
    v[: len(values)] = values
    return v / np.linalg.norm(v)


def record(pid: str, vec: np.ndarray, category: str = "c", **kw) -> Record:
    product = Product(product_id=pid, image=Path(f"/photos/{pid}.jpg"), category=category,
                      name=kw.pop("name", pid.upper()), **kw)
    return Record(product, "sha-" + pid, "0" * 16, b"\0" * 768, vec)


@pytest.fixture
def store(tmp_path):
    s = open_store(tmp_path / "store", create=True)
    s.set_manifest(MANIFEST)
    s.upsert([record("a", unit(1, 0)), record("b", unit(1, 0.2)),
              record("c", unit(0, 1), category="d", price=9.5, attributes={"cor": "azul"}),
              record("e", unit(1, 1), category="d")])
    yield s
    s.close()


def test_search_ranks_by_cosine_and_filters(store):
    matches = store.search(unit(1, 0), 4)
    assert [m.product.product_id for m in matches] == ["a", "b", "e", "c"]
    assert matches[0].score == pytest.approx(1.0)
    assert matches[2].score == pytest.approx(np.sqrt(0.5))
    only_d = store.search(unit(1, 0), 5, category="d")
    assert [m.product.product_id for m in only_d] == ["e", "c"]
    without_a = store.search(unit(1, 0), 2, exclude="a")
    assert [m.product.product_id for m in without_a] == ["b", "e"]
    assert store.search(unit(1, 0), 3, category="nope") == []


def test_metadata_round_trip(store):
    c = store.get("c")
    assert (c.category, c.price, c.attributes, c.name) == ("d", 9.5, {"cor": "azul"}, "C")
    assert store.get("zzz") is None
    assert store.categories() == {"c": 2, "d": 2}
    assert np.allclose(store.vector("c"), unit(0, 1))


def test_update_and_delete(store):
    store.upsert([record("a", unit(0, 1), category="d")])  # replaced photo
    assert store.count() == 4
    top = store.search(unit(0, 1), 2)
    assert {m.product.product_id for m in top} == {"a", "c"}
    product = Product("b", Path("/photos/b.jpg"), category="new", name="Renamed", price=1.0)
    store.update_metadata([product])
    assert store.get("b").name == "Renamed" and store.get("b").category == "new"
    assert store.delete(["a", "missing"]) == 1
    assert store.get("a") is None
    assert "a" not in [m.product.product_id for m in store.search(unit(0, 1), 10)]


FOLD_NAMES = {"r1": "Relógio Dourado", "r2": "relógio prata", "r3": "RELÓGIO Feminino",
              "x1": "AÇAÍ", "x2": "Sapato Café", "Calçados/Sandália-1": "Chinelo",
              "n1": "Bolsa de\nCouro"}


def check_name_search_ignores_case_and_accents(store):
    """``q`` finds any part of the name or id whatever its case and accents: shoppers type
    "relogio" for "Relógio" (RELÓGIO found nothing, relogio and acai missed); the same on
    every store (test_milvus_store runs this on Milvus)."""
    store.upsert([record(pid, unit(1, 0.5), name=name) for pid, name in FOLD_NAMES.items()])

    def ids(query, **kw):
        return [p.product_id for p in store.list_products(query=query, **kw)]

    watches = ["r1", "r3", "r2"]  # ordered by category, then name as a reader sorts it
    for query in ("relogio", "RELÓGIO", "Relogio", "relógio", "RELOGIO"):
        assert ids(query) == watches, query
    for query in ("acai", "AÇAÍ", "açaí", "Acai"):
        assert ids(query) == ["x1"], query
    assert ids("cafe") == ids("CAFÉ") == ["x2"]
    assert ids("ogio d") == ["r1"]  # any part, across a space
    assert ids("sandalia") == ids("calcados/") == ["Calçados/Sandália-1"]  # the id
    assert ids("relogio", limit=2) + ids("relogio", limit=2, offset=2) == watches
    assert ids("relogio", category="d") == [] and ids("%") == ids("_") == []  # no wildcards
    assert ids("de couro") == ids("DE\nCOURO") == ["n1"]  # a name over two lines


def test_name_search_ignores_case_and_accents(store):
    check_name_search_ignores_case_and_accents(store)


READER_NAMES = {"o1": "Óculos escuros", "z1": "Zíper dourado", "a1": "anel de prata",
                "b1": "Bolsa de couro", "e1": "Échappe", "b0": "Bolsa", "a2": "Anel de Prata",
                "a0": "ANEL DE PRATA", "k": "kit", "K": "Kit"}
READER_ORDER = ["a0", "a1", "a2", "b0", "b1", "e1", "K", "k", "o1", "z1"]
"""Names as a reader sorts them, case and accents aside (by code point, "Zíper" came before
"anel", and "Échappe" and "Óculos" after every other); one name in three forms by id; equal
folded names and ids ("Kit" of K, "kit" of k) by the name as written."""


def check_pages_list_names_as_a_reader_sorts_them(store):
    """A category's pages list names in the order a reader expects, page after page (each
    product once); the whole catalogue by category first (the same on every store:
    test_milvus_store runs this on Milvus)."""
    store.upsert([record(pid, unit(1, 0.5), category="acessórios", name=name)
                  for pid, name in READER_NAMES.items()])

    def ids(**kw):
        return [p.product_id for p in store.list_products(**kw)]

    assert ids(category="acessórios") == READER_ORDER
    assert [name for pid in READER_ORDER for name in [READER_NAMES[pid]]] == [
        p.name for p in store.list_products(category="acessórios")]
    paged = [ids(category="acessórios", limit=2, offset=o) for o in range(0, 12, 2)]
    assert sum(paged, []) == READER_ORDER and paged[-1] == []
    every = READER_ORDER + ["a", "b", "c", "e"]  # (acessórios, then c and d)
    assert sum((ids(limit=2, offset=o) for o in range(0, 14, 2)), []) == every
    assert ids(query="anel", limit=2, offset=1) == ["a1", "a2"]  # a name search too
    assert ids(query="DE", category="acessórios") == ["a0", "a1", "a2", "b1"]


def test_pages_list_names_as_a_reader_sorts_them(store):
    check_pages_list_names_as_a_reader_sorts_them(store)


def check_shared_photo_counts_are_those_of_every_products_sha256(store):
    """``shared_photo_counts`` (counted inside the store: ``recount_every_shared`` read every
    product's fingerprint, 1.1-2.1 s and 74 MB at 200,000 products) is the count of the
    products' sha256s, those of more than one product; products without one are no photo."""
    from collections import Counter

    from vitrine.copies import copies_in
    from vitrine.dedupe_store import recount_every_shared

    shas = {"s0": "x" * 64, "s1": "x" * 64, "s2": "x" * 64, "s3": "y" * 64, "s4": "y" * 64,
            "s5": "z" * 64, "n0": "", "n1": ""}
    store.upsert([Record(Product(pid, Path(f"/photos/{pid}.jpg"), category="c"), sha,
                         "0" * 16, b"\0" * 768, unit(1, i)) for i, (pid, sha)
                  in enumerate(shas.items())])
    store.delete(["s4"])  # ("y" * 64 is one product's now)
    every = Counter(sha for sha, _ in store.fingerprints().values() if sha)
    counted = store.shared_photo_counts()
    assert counted == {sha: n for sha, n in every.items() if n > 1} == {"x" * 64: 3}
    assert all(type(n) is int for n in counted.values())
    recount_every_shared(store)
    assert copies_in(store.duplicate_cache()).shared == {"x" * 64: 3}


def test_shared_photo_counts_are_those_of_every_products_sha256(store):
    check_shared_photo_counts_are_those_of_every_products_sha256(store)


def check_an_empty_category_lists_the_products_without_one(store):
    """``list_products(category="")`` listed every product (the category taken as no
    filter), where ``search(category="")`` finds the products without a category: the
    demo's "(uncategorised)" example was the catalogue's first product, one without a
    category only because "" sorts first."""
    from vitrine.store.search_key import listing_order

    store.upsert([record("n2", unit(0, 1, 1), category="", name="Zebra"),
                  record("n1", unit(1, 1, 1), category="", name="Anta")])
    assert [p.product_id for p in store.list_products(category="")] == ["n1", "n2"]
    assert [p.product_id for p in store.list_products(category="", offset=1)] == ["n2"]
    first = store.get("n1")
    after = listing_order(first.category, first.name, first.product_id)
    assert [p.product_id for p in store.list_products(category="", after=after)] == ["n2"]
    last = store.list_products(category="d")[-1]  # (a cursor of a page of another category)
    assert store.list_products(category="", after=listing_order(
        last.category, last.name, last.product_id)) == []
    assert [p.product_id for p in store.list_products(category="", query="zeb")] == ["n2"]
    assert len(store.list_products()) == 6  # (None: every product)


def test_an_empty_category_lists_the_products_without_one(store):
    check_an_empty_category_lists_the_products_without_one(store)

def test_a_store_with_the_older_listing_index_gets_the_new_one(store, tmp_path, monkeypatch):
    """A store made by a Vitrine that listed by the raw names has their listing index: opened
    where it can be written it gets the folded names' one (a deep page stays an index walk),
    the old one dropped; where it cannot be (the old index only) it lists the same, sorting."""
    import sqlite3

    store.upsert([record(pid, unit(1, 0.5), category="acessórios", name=name)
                  for pid, name in READER_NAMES.items()])
    store.close()
    db_path = tmp_path / "store" / "vitrine.sqlite"

    def as_before():
        with sqlite3.connect(db_path) as db:
            for name in ("products_listing_folded", "products_listing"):
                db.execute(f"DROP INDEX IF EXISTS {name}")
            db.execute("CREATE INDEX products_listing ON products(category, name, "
                       "product_id, search_key)")
        db.close()

    def indexes(db):
        return {row[0] for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type='index' AND name LIKE 'products_l%'")}

    def ids(handle, **kw):
        return [p.product_id for p in handle.list_products(**kw)]

    # read-only here: no index made nor dropped, the same pages
    as_before()
    with monkeypatch.context() as m:
        m.setattr("vitrine.store.sqlite_db.INDEXES", ())  # (as where it cannot be written)
        frozen = open_store(tmp_path / "store")
    try:
        assert indexes(frozen.db) == {"products_listing"}
        assert ids(frozen, category="acessórios") == READER_ORDER
        assert sum((ids(frozen, category="acessórios", limit=2, offset=o)
                    for o in range(0, 10, 2)), []) == READER_ORDER
    finally:
        frozen.close()
    again = open_store(tmp_path / "store")
    try:
        assert indexes(again.db) == {"products_listing_folded"}
        assert ids(again, category="acessórios") == READER_ORDER
        statements = []
        again.db.set_trace_callback(statements.append)
        assert ids(again, category="acessórios", limit=2, offset=6) == ["K", "k"]
        assert ids(again, limit=2, offset=12) == ["c", "e"]
        again.db.set_trace_callback(None)
        statements = [sql for sql in statements if "FROM products" in sql]  # (not meta's)
        assert len(statements) == 2
        for sql in statements:  # the page's ids: a walk of the index, no sort
            plan = again.db.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
            inner = {row[0] for row in plan if "SUBQUERY" in row[3]}
            reads = [row[3] for row in plan if row[1] in inner]
            assert reads and all("COVERING INDEX products_listing_folded" in step
                                 for step in reads), plan
    finally:
        again.close()


def test_a_store_made_before_the_search_key_gets_it(store, tmp_path, monkeypatch):
    """Name search reads a folded copy of name and id kept beside them (one scan in C, not a
    Python call per row); a store made before that column gets it, filled, when opened, and
    renames keep it current."""
    import sqlite3

    from vitrine.store.search_key import search_key

    store.upsert([record(pid, unit(1, 0.5), name=name) for pid, name in FOLD_NAMES.items()])
    store.close()
    with sqlite3.connect(tmp_path / "store" / "vitrine.sqlite") as db:
        db.execute("DROP INDEX products_listing_folded")  # (made with the column)
        db.execute("ALTER TABLE products DROP COLUMN search_key")
    again = open_store(tmp_path / "store")
    try:
        keys = dict(again.db.execute("SELECT product_id, search_key FROM products"))
        assert keys["x1"] == search_key("AÇAÍ", "x1") == "acai\nx1"
        assert [p.product_id for p in again.list_products(query="acai")] == ["x1"]
        again.update_metadata([Product("x1", Path("/p/x1.jpg"), name="Pão de Queijo")])
        assert [p.product_id for p in again.list_products(query="pao de q")] == ["x1"]
        assert again.list_products(query="acai") == []
        listed = [p.product_id for p in again.list_products()]
    finally:
        again.close()
    # where it cannot be written (a read-only volume), search folds each row as it reads
    with sqlite3.connect(tmp_path / "store" / "vitrine.sqlite") as db:
        db.execute("DROP INDEX products_listing_folded")  # (made with the column)
        db.execute("ALTER TABLE products DROP COLUMN search_key")
    monkeypatch.setattr("vitrine.store.sqlite_db.add_search_key", lambda db: False)
    frozen = open_store(tmp_path / "store")
    try:
        # (listed by the names as written, as it listed then: folding each row as it sorts
        # called Python twice a row of the catalogue for each page, helper-228)
        assert [p.product_id for p in frozen.list_products(query="RELOGIO")] == ["r3", "r1",
                                                                                  "r2"]
        # every product listed once, page after page
        paged = sum(([p.product_id for p in frozen.list_products(limit=2, offset=o)]
                     for o in range(0, 12, 2)), [])
        assert sorted(paged) == sorted(listed) and len(paged) == 11
        assert paged == [p.product_id for p in frozen.list_products(limit=50)]
    finally:
        frozen.close()


def test_rows_an_older_vitrine_wrote_are_found_by_name(store, tmp_path, monkeypatch):
    """A Vitrine from before the ``search_key`` column writing into a store that has it (a
    rollback, a host not yet upgraded) added products with no key and renamed others
    without theirs: never found by name, or by the old one, and an unchanged ``index``
    mended nothing. The next opening that can write folds them again, once."""
    import sqlite3

    store.upsert([record(pid, unit(1, 0.5), name=name) for pid, name in FOLD_NAMES.items()])
    store.close()
    with sqlite3.connect(tmp_path / "store" / "vitrine.sqlite") as db:  # the older writer
        db.execute("INSERT INTO products(product_id, image, category, name, attributes, "
                   "content_sha256, metadata_hash, vector) SELECT 'novo', image, category, "
                   "'Bolsa Ágata', attributes, content_sha256, metadata_hash, vector "
                   "FROM products WHERE product_id='x1'")
        db.execute("UPDATE products SET name='Pão de Queijo' WHERE product_id='x2'")
        db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 "
                   "WHERE key='generation'")
    again = open_store(tmp_path / "store")
    try:
        def ids(query):
            return [p.product_id for p in again.list_products(query=query)]

        assert ids("agata") == ["novo"] and ids("pao de") == ["x2"] and ids("cafe") == []
        assert ids("acai") == ["x1"]
        folded_at = again.db.execute(
            "SELECT value FROM meta WHERE key='search_keys_at'").fetchone()[0]
        assert folded_at == str(again.generation())
        # folded on opening: its first write does not fold them all again (1 s at 200,000)
        folds = []
        monkeypatch.setattr("vitrine.store.embedded.refold_in", folds.append)
        again.lock_for_writing()
        again.upsert([record("outro", unit(0, 1), name="Outro")])
        assert folds == [] and ids("outro") == ["outro"]
    finally:
        again.close()


def test_an_older_vitrines_write_into_an_open_store_is_folded_by_the_next_write(
        store, tmp_path, monkeypatch):
    """A store opened before an older Vitrine wrote into it (`vitrine index` waiting for
    the writer lock while the older one finished): opening saw nothing to fold, and its own
    next write marked the store as written by this Vitrine, so the older one's renames were
    never folded. That write folds them, in its transaction. A store only this Vitrine
    wrote is never folded again (a second per open at 200,000 products)."""
    import sqlite3

    import vitrine.store.search_key as module

    folds = []
    real_fold = module._fold
    monkeypatch.setattr(module, "_fold", lambda *a: folds.append(a) or real_fold(*a))
    store.upsert([record(pid, unit(1, 0.5), name=name) for pid, name in FOLD_NAMES.items()])
    store.close()
    opened = open_store(tmp_path / "store")
    assert folds == []  # written by this Vitrine: nothing to fold
    try:
        with sqlite3.connect(tmp_path / "store" / "vitrine.sqlite") as db:  # the older writer
            db.execute("UPDATE products SET name='Pão de Queijo' WHERE product_id='x2'")
            db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 "
                       "WHERE key='generation'")
        opened.lock_for_writing()
        opened.upsert([record("novo", unit(0, 1), name="Bolsa")])
        assert [p.product_id for p in opened.list_products(query="pao de")] == ["x2"]
        assert opened.list_products(query="cafe") == []
    finally:
        opened.close()


def test_an_older_vitrines_write_is_found_by_a_reader_that_never_writes(store, tmp_path):
    """A server (a reader that does not write) open while a Vitrine from before the
    ``search_key`` column indexed into the store: the products it added had no key and its
    renames kept the old one, never found by name until the server wrote or restarted."""
    import sqlite3

    store.upsert([record(pid, unit(1, 0.5), name=name) for pid, name in FOLD_NAMES.items()])
    store.close()
    reader = open_store(tmp_path / "store")
    try:
        with sqlite3.connect(tmp_path / "store" / "vitrine.sqlite") as db:  # the older writer
            db.execute("INSERT INTO products(product_id, image, category, name, attributes, "
                       "content_sha256, metadata_hash, vector) SELECT 'novo', image, "
                       "category, 'Bolsa Ágata', attributes, content_sha256, metadata_hash, "
                       "vector FROM products WHERE product_id='x1'")
            db.execute("UPDATE products SET name='Pão de Queijo' WHERE product_id='x2'")
            db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 "
                       "WHERE key='generation'")
        assert [p.product_id for p in reader.list_products(query="agata")] == ["novo"]
        assert [p.product_id for p in reader.list_products(query="pao de")] == ["x2"]
    finally:
        reader.close()


def test_a_fold_the_disk_cannot_hold_leaves_the_store_readable():
    """SQLite undoes the transaction itself on a full disk: the fold's own ROLLBACK then
    failed ("no transaction is active") and the store was "not a readable Vitrine store"."""
    import sqlite3

    from vitrine.store.search_key import REFOLD, _fold

    real = sqlite3.connect(":memory:", isolation_level=None)
    real.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    class FullDisk:
        in_transaction = property(lambda self: real.in_transaction)

        def execute(self, sql, *args):
            if sql == REFOLD:
                real.execute("ROLLBACK")
                raise sqlite3.OperationalError("database or disk is full")
            return real.execute(sql, *args)

    assert _fold(FullDisk(), REFOLD) is False and not real.in_transaction

def test_persistence_and_index_rebuild(store, tmp_path):
    store.flush()
    root = store.root
    store.close()
    files = list(root.glob("index.*.faiss"))
    assert len(files) == 1
    files[0].unlink()  # the FAISS file is a cache: rebuilt from SQLite when missing
    again = open_store(root)
    assert again.count() == 4 and again.manifest() == MANIFEST
    assert [m.product.product_id for m in again.search(unit(0, 1), 1)] == ["c"]
    assert len(list(root.glob("index.*.faiss"))) == 1
    again.close()


def test_index_file_follows_writes_from_another_handle(store):
    reader = open_store(store.root)
    assert len(reader.search(unit(1, 0), 10)) == 4
    store.delete(["b"])
    assert [m.product.product_id for m in reader.search(unit(1, 0), 10)] == ["a", "e", "c"]
    reader.close()


def test_a_metadata_edit_keeps_the_index_and_moves_the_category_filter(store):
    """Names, prices and categories change without rebuilding the FAISS index (an API edit
    used to rebuild it: seconds on a large store, under the writer lock); a reader in
    another handle, which keeps category filters, sees a product move category at once."""
    reader = open_store(store.root)
    assert [m.product.product_id for m in reader.search(unit(1, 0), 5, category="d")] == \
        ["e", "c"]
    store.flush()
    files, generation = sorted(store.root.glob("index.*.faiss")), store.generation()
    store.update_metadata([Product("a", Path("/photos/a.jpg"), category="d", name="A2")])
    store.flush()
    assert store.generation() == generation
    assert sorted(store.root.glob("index.*.faiss")) == files
    assert [m.product.product_id for m in reader.search(unit(1, 0), 5, category="d")] == \
        ["a", "e", "c"]
    assert [m.product.product_id for m in reader.search(unit(1, 0), 5, category="c")] == ["b"]
    assert reader.get("a").name == "A2"
    reader.close()


def test_pages_and_photo_look_ups_read_indexes_not_every_product(store, tmp_path):
    """A page deep in a large catalogue (a crawler at ``?page=12500``), with a category or a
    name search, is found in the listing index, and whether a photo is still used in the
    photo index: sorting or reading every product took 14-19 s per page and 2.5 s per delete
    at 300,000 products, holding up every other request meanwhile."""
    store.upsert([record(f"x{i}", unit(1, i / 10), category="c", name=f"Bolsa {i:02d}")
                  for i in range(30)])
    last = store.get("e")  # the last of 34
    statements = []
    store.db.set_trace_callback(statements.append)
    page = store.list_products(category="c", query="bolsa", limit=5, offset=25)
    assert [p.product_id for p in page] == ["x25", "x26", "x27", "x28", "x29"]
    assert store.list_products(limit=2, offset=33) == [last]
    assert store.names_photo("/photos/x3.jpg") and not store.names_photo("/photos/y.jpg")
    assert store.has_category("c") and not store.has_category("nada")
    assert store.count_photo("sha-x3") == 1 and store.count_photo("sha-y") == 0
    facts = store.photo_facts()  # (read from every row, once: not an index question)
    store.db.set_trace_callback(None)
    statements = [sql for sql in statements if "FROM meta" not in sql]  # (a primary key)
    assert len(statements) == 9, statements
    statements.pop()
    assert facts["x3"] == ("/photos/x3.jpg", "sha-x3", "0" * 16, b"\0" * 768)
    assert len(facts) == 34
    for sql in statements:
        plan = store.db.execute("EXPLAIN QUERY PLAN " + sql).fetchall()  # id, parent, _, step
        inner = {row[0] for row in plan if "SUBQUERY" in row[3]}
        reads = [row[3] for row in plan if row[1] in inner or not inner]
        assert any("USING COVERING INDEX" in step for step in reads), plan
        assert not any("TEMP B-TREE" in step for step in reads), plan  # no sort of them all
        assert all("USING" in step for step in reads if step.startswith("SCAN")), plan


def test_a_write_to_an_exact_store_is_layered_not_rebuilt(tmp_path):
    """A product added through the API to a store under the approximate-index size (an exact
    flat index) is searched from a layer over the saved index: rebuilding and rewriting the
    whole index took seconds per write at 90,000 products. Searches stay exact."""
    from vitrine.ann import IndexConfig

    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((260, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    flat = IndexConfig.defaults(kind="flat")
    store = open_store(tmp_path / "s", create=True, index_config=flat)
    store.set_manifest(MANIFEST)
    store.lock_for_writing()
    store.upsert([record(f"p{i:03d}", vecs[i], category="ab"[i % 2]) for i in range(250)])
    store.flush()
    store.close()
    files = sorted((tmp_path / "s").glob("index.*.faiss"))
    writer = open_store(tmp_path / "s", index_config=flat)
    writer.lock_for_writing()
    writer.upsert([record(f"n{i}", vecs[250 + i], category="b") for i in range(5)])
    writer.upsert([record("p000", vecs[255])])  # a replaced photo
    writer.delete(["p001", "p002"])
    writer.flush()
    writer.close()
    assert sorted((tmp_path / "s").glob("index.*.faiss")) == files  # nothing rebuilt
    reader = open_store(tmp_path / "s", index_config=flat)
    ids, stored = reader.all_vectors()
    categories = {p.product_id: p.category for p in reader.list_products(limit=300)}
    for q in (0, 3, 250, 255, 259):
        order = [ids[i] for i in np.argsort(-(stored @ vecs[q]), kind="stable")]
        assert [m.product.product_id for m in reader.search(vecs[q], 10)] == order[:10]
        in_b = [pid for pid in order if categories[pid] == "b" and pid != order[0]]
        assert [m.product.product_id for m in reader.search(
            vecs[q], 5, category="b", exclude=order[0])] == in_b[:5]
    reader.close()


def test_a_write_through_the_api_never_builds_the_index(tmp_path, monkeypatch):
    """A write through the API (``flush(rebuild=False)``) that finds no saved index of the
    store's size's kind (it grew past the approximate index's size) builds nothing: the
    rebuild is due, and done apart; one that finds the store replaced meanwhile (deleted and
    indexed anew) does not save the old database's index into the new store's folder."""
    from vitrine.ann import IndexConfig

    config = IndexConfig.defaults(kind="auto", ann_min_items=30)
    rng = np.random.default_rng(4)
    vecs = rng.standard_normal((40, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    store = open_store(tmp_path / "s", create=True, index_config=config)
    store.set_manifest(MANIFEST)
    store.lock_for_writing()
    store.upsert([record(f"p{i:02d}", vecs[i]) for i in range(25)])
    store.flush()
    before = sorted(p.name for p in (tmp_path / "s").glob("index.*.faiss"))
    store.upsert([record(f"p{i:02d}", vecs[i]) for i in range(25, 40)])  # past 30: HNSW
    store.flush(rebuild=False)
    assert sorted(p.name for p in (tmp_path / "s").glob("index.*.faiss")) == before
    assert store.index_due()
    monkeypatch.setattr(store, "replaced", lambda: True)
    with pytest.raises(StoreError, match=r"could not be saved \(the store was deleted and "
                                         r"indexed anew meanwhile\)\.$"):
        store.rebuild_index()
    assert sorted(p.name for p in (tmp_path / "s").glob("index.*.faiss")) == before
    monkeypatch.undo()
    # the system's reason, not a guess (a folder this user may not write: "a full disk")
    from vitrine.ann import VectorIndex

    def denied(self, path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(VectorIndex, "save", denied)
    with pytest.raises(StoreError, match=r"could not be saved \(Permission denied\)\.$"):
        store.rebuild_index()
    monkeypatch.undo()
    store.rebuild_index()
    assert not store.index_due()
    assert [p.name.split(".")[2] for p in (tmp_path / "s").glob("index.*.faiss")] == [
        config.tag(40)] != [before[0].split(".")[2]]
    store.close()


def test_missing_store_and_writer_lock(tmp_path, store):
    with pytest.raises(StoreError, match="no Vitrine store"):
        open_store(tmp_path / "nothing")
    # an empty vitrine.sqlite (a failed copy): refused by readers, not given a schema
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "vitrine.sqlite").write_bytes(b"")
    with pytest.raises(StoreError, match="vitrine.sqlite is empty"):
        open_store(tmp_path / "empty")
    assert (tmp_path / "empty" / "vitrine.sqlite").stat().st_size == 0
    open_store(tmp_path / "empty", create=True).close()  # index may fill it
    store.lock_for_writing()
    other = open_store(store.root)
    with pytest.raises(StoreError, match=r"another process is writing .* \(waited \d+\.\d s\)\.$"):
        other.lock_for_writing(wait=0.2)
    with pytest.raises(StoreError, match=r"another process is writing to the store \S+\.$"):
        other.lock_for_writing(wait=0)  # (what was left of a request's wait: nothing said)
    other.close()


def test_a_writer_whose_store_was_removed_while_it_waited_is_refused(tmp_path):
    """A `migrate` refused before writing removes the store it made; another one that had
    opened it meanwhile waited for the lock, then wrote into files no folder held any more
    and reported success."""
    import fcntl
    import threading

    open_store(tmp_path / "s", create=True).close()
    waiting = open_store(tmp_path / "s")
    held = open(tmp_path / "s" / "write.lock", "a")  # noqa: SIM115 - the maker's lock

    def made_then_removed() -> None:
        shutil.rmtree(tmp_path / "s")
        held.close()

    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    threading.Timer(0.3, made_then_removed).start()
    with pytest.raises(StoreError, match=r"/s was removed while this process waited"):
        waiting.lock_for_writing(wait=10)
    waiting.close()
    # the lock file alone deleted while it waited: it would lock nothing, so it stops too
    open_store(tmp_path / "t", create=True).close()
    waiting = open_store(tmp_path / "t")
    held = open(tmp_path / "t" / "write.lock", "a")  # noqa: SIM115 - another writer's
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def unlinked() -> None:
        (tmp_path / "t" / "write.lock").unlink()
        held.close()

    threading.Timer(0.3, unlinked).start()
    with pytest.raises(StoreError, match=r"lock file of the store .*/t was deleted or"):
        waiting.lock_for_writing(wait=10)
    waiting.close()


def test_a_writer_waits_for_another_process_short_write(tmp_path):
    """A server's upload holds the writer lock for milliseconds: `vitrine index` (or another
    server's upload) started meanwhile waits for it instead of failing."""
    import fcntl
    import threading

    store = open_store(tmp_path / "s", create=True)
    store.close()
    held = open(tmp_path / "s" / "write.lock", "a")  # noqa: SIM115 - another process's lock
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    threading.Timer(0.3, held.close).start()
    writer = open_store(tmp_path / "s")
    writer.lock_for_writing(wait=10)
    with open(tmp_path / "s" / "write.lock", "a") as probe, pytest.raises(BlockingIOError):
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the lock is the writer's now
    writer.close()


def test_a_new_store_another_process_is_making_is_waited_for(tmp_path):
    """Two `vitrine index` runs started together on a new store: the second opened the
    database while the first switched it to WAL, and SQLite answers that "database is
    locked" at once, without its busy timeout: it ended with "is not a readable Vitrine
    store (database is locked)", status 2, as if the store were damaged."""
    import sqlite3
    import threading

    (tmp_path / "s").mkdir()
    other = sqlite3.connect(tmp_path / "s" / "vitrine.sqlite", isolation_level=None,
                            check_same_thread=False)  # the first run, making its store
    other.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    other.execute("BEGIN IMMEDIATE")
    threading.Timer(0.3, lambda: other.execute("COMMIT")).start()
    store = open_store(tmp_path / "s", create=True)
    store.set_manifest(MANIFEST)
    assert store.manifest() == MANIFEST
    store.close()
    other.close()


def test_two_makers_of_a_new_store_without_hard_links_keep_one_database(tmp_path,
                                                                       monkeypatch):
    """Where hard links cannot be made (FAT, exFAT: os.link fails), a new store's database
    is renamed in when none is there. Two processes making the same store each looked, found
    none, and the later one renamed its empty database over the other's, which that one had
    opened and written into already: its write was lost, said done. The look and the rename
    are one step between makers now (the second maker here runs while the first is between
    them)."""
    import errno
    import fcntl
    import sqlite3
    import threading

    from vitrine.store import sqlite_db

    root = tmp_path / "s"
    root.mkdir()
    real_replace, real_flock = os.replace, fcntl.flock
    second_stopped = threading.Event()  # (done, or waiting for the first's lock)
    failed = []

    def second_maker() -> None:  # another process making the store
        try:
            db, *_ = sqlite_db.open_database(root, create=True)
            db.execute("INSERT INTO meta VALUES ('written_by', 'second')")
            db.close()
        except BaseException as exc:  # (said below)
            failed.append(exc)
        finally:
            second_stopped.set()

    second = threading.Thread(target=second_maker)

    def no_link(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    def replace(src, dst, *args, **kwargs):
        if threading.current_thread() is not second and not second.is_alive() \
                and not second_stopped.is_set():  # the first maker, between look and rename
            second.start()
            assert second_stopped.wait(60)
        return real_replace(src, dst, *args, **kwargs)

    def flock(fd, operation):
        if threading.current_thread() is second and operation == fcntl.LOCK_EX:
            second_stopped.set()
        return real_flock(fd, operation)

    monkeypatch.setattr(sqlite_db.os, "link", no_link)
    monkeypatch.setattr(sqlite_db.os, "replace", replace)
    monkeypatch.setattr(fcntl, "flock", flock)
    db, *_ = sqlite_db.open_database(root, create=True)  # the first maker
    db.execute("INSERT INTO meta VALUES ('also', 'first')")
    db.close()
    second.join(60)
    assert not failed and not second.is_alive()
    check = sqlite3.connect(root / sqlite_db.DB_NAME)
    try:
        assert set(check.execute("SELECT key, value FROM meta")) >= {
            ("written_by", "second"), ("also", "first")}  # (one database, both writes)
    finally:
        check.close()
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(
        sqlite_db.DB_NAME)) == []  # (no side file left)


def test_files_half_written_by_a_killed_process_are_removed_a_live_ones_kept(tmp_path):
    """A server killed while saving an upload leaves ``<sha>.<ext>.<pid>.<thread>.tmp`` in
    STORE/uploads: `vitrine index` removes it (with the orphan photos; the folder may hold
    thousands, not listed at every write), but not one a live process is writing, nor a file
    that is not a photo being saved. In the store folder the next writer removes what a
    killed process left, but not an index a live one is saving without the lock, nor a file
    that is not the store's own."""
    import subprocess
    import sys

    from vitrine.indexer import _prune_orphan_photos

    store = open_store(tmp_path / "s", create=True)
    uploads = tmp_path / "s" / "uploads"
    uploads.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    sha = "ab" * 32
    killed = uploads / f"{sha}.jpg.{dead}.140201.tmp"
    running = uploads / f"{sha}.png.{os.getpid()}.140202.tmp"
    other = uploads / "notes.1.2.tmp"
    # an index being saved without the lock (a reader, the server's rebuild thread), and
    # what a killed process left in the store folder
    saving = tmp_path / "s" / f"index.9.hnsw32-fp32.faiss.{os.getpid()}.77.tmp"
    left = [tmp_path / "s" / f"index.9.hnsw32-fp32.faiss.{dead}.77.tmp",
            tmp_path / "s" / "manifest.json.tmp"]
    # and files not the store's: `vitrine related --out STORE/x.csv`'s part file (a writer
    # removed it mid-export), a user's own
    theirs = [tmp_path / "s" / f".vitrine-related-{dead}-0a1b2c3d.tmp",
              tmp_path / "s" / "notes.tmp"]
    for path in (killed, running, other, saving, *left, *theirs):
        path.write_bytes(b"partial")
    store.lock_for_writing()
    assert saving.exists() and not any(path.exists() for path in left)
    assert all(path.exists() for path in theirs)
    assert killed.exists()  # (not at each write)
    assert _prune_orphan_photos(store, uploads) == 0
    assert sorted(uploads.iterdir()) == sorted([running, other])
    store.close()


def test_part_files_of_a_killed_process_whose_number_is_taken_again_go(tmp_path):
    """In a container the server is process 1, and so is the server restarted after a kill
    (the out-of-memory killer during an index rebuild): the part files the killed one left,
    an index being saved and an upload, were named by a process number that runs again, and
    stayed in the store for good. One not written for an hour is a killed process's."""
    import time

    from vitrine.files import STALE_PART_S
    from vitrine.indexer import _prune_orphan_photos

    store = open_store(tmp_path / "s", create=True)
    uploads = tmp_path / "s" / "uploads"
    uploads.mkdir()
    me = os.getpid()  # (a number that runs now, as process 1 does after the restart)
    old_index = tmp_path / "s" / f"index.9.hnsw32-fp32.faiss.{me}.77.tmp"
    old_photo = uploads / f"{'ab' * 32}.jpg.{me}.140201.tmp"
    saving = tmp_path / "s" / f"index.10.hnsw32-fp32.faiss.{me}.78.tmp"  # being saved now
    uploading = uploads / f"{'cd' * 32}.jpg.{me}.140202.tmp"
    for path in (old_index, old_photo, saving, uploading):
        path.write_bytes(b"partial")
    past = time.time() - STALE_PART_S - 60
    for path in (old_index, old_photo):
        os.utime(path, (past, past))
    store.lock_for_writing()
    assert not old_index.exists() and saving.exists()
    _prune_orphan_photos(store, uploads)
    assert sorted(uploads.iterdir()) == [uploading]
    store.close()


def test_not_a_store(tmp_path):
    root = tmp_path / "junk"
    root.mkdir()
    (root / "vitrine.sqlite").write_bytes(b"garbage" * 100)
    with pytest.raises(StoreError, match="not a readable"):
        open_store(root)
    # a file given as the store: said so (the advice to index into it could only fail)
    (tmp_path / "afile").write_text("x")
    for create in (False, True):
        with pytest.raises(StoreError, match=r"afile is a file, not a store folder\.$"):
            open_store(tmp_path / "afile", create=create)


def test_another_programs_database_is_refused_and_left_as_it_is(tmp_path):
    """A folder whose vitrine.sqlite is another program's database: `vitrine info` said "0
    products", after adding the store's tables to it and switching it to WAL mode."""
    import sqlite3

    root = tmp_path / "theirs"
    root.mkdir()
    with sqlite3.connect(root / "vitrine.sqlite") as theirs:
        theirs.execute("CREATE TABLE users(name TEXT)")
        theirs.execute("INSERT INTO users VALUES ('ana')")
    theirs.close()
    before = (root / "vitrine.sqlite").read_bytes()
    for create in (False, True):
        with pytest.raises(StoreError, match=r"is a database of another program, not a "
                                             r"Vitrine store \(its tables: users\)"):
            open_store(root, create=create)
    assert (root / "vitrine.sqlite").read_bytes() == before
    assert sorted(p.name for p in root.iterdir()) == ["vitrine.sqlite"]
    # a table named meta is common: only the store's own (key, value) makes it one
    with sqlite3.connect(root / "vitrine.sqlite") as theirs:
        theirs.execute("CREATE TABLE meta(id INTEGER, blob BLOB)")
    theirs.close()
    before = (root / "vitrine.sqlite").read_bytes()
    with pytest.raises(StoreError, match="another program"):
        open_store(root)
    assert (root / "vitrine.sqlite").read_bytes() == before
    # a store whose creation stopped after its first table is the store, opened and made
    half = tmp_path / "half"
    half.mkdir()
    with sqlite3.connect(half / "vitrine.sqlite") as made:
        made.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    made.close()
    assert open_store(half).count() == 0


def test_a_store_from_an_older_version_is_refused_in_one_sentence(store):
    """A store written before thumbnails were kept (no ``thumb`` column): refused when
    opened, not a SQL error at the first search; its data stays untouched."""
    root = store.root
    store.db.execute("ALTER TABLE products DROP COLUMN thumb")
    store.db.execute("DROP INDEX products_listing_folded")  # nor a name search key
    store.db.execute("ALTER TABLE products DROP COLUMN search_key")
    store.close()
    with pytest.raises(StoreError, match="older Vitrine .no thumb column"):
        open_store(root)
    import sqlite3

    db = sqlite3.connect(root / "vitrine.sqlite")
    assert db.execute("SELECT COUNT(*) FROM products").fetchone()[0] == 4
    # refused, and not changed either: the name search key is not added to it
    assert "search_key" not in {r[1] for r in db.execute("PRAGMA table_info(products)")}
    db.close()


def test_photo_paths_do_not_depend_on_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    relative = open_store(Path("rel"), create=True)
    assert relative.root == tmp_path / "rel" and relative.root.is_absolute()
    relative.close()


def test_a_store_too_deep_for_sqlite_is_one_sentence_and_the_deepest_that_opens_works(
        tmp_path):
    """SQLite opens no database at a path over 504 bytes: such a store was "not a readable
    Vitrine store (unable to open database file)", after its folders were made."""
    from vitrine.store.sqlite_db import DB_NAME, DB_PATH_MAX

    def folder(db_path_bytes: int) -> Path:
        rest = db_path_bytes - len(os.fsencode(str(tmp_path))) - len(f"/{DB_NAME}")
        parts = []
        while rest > 101:  # "/" and 99 letters a folder; the last one 1 to 100 letters
            parts.append("d" * 99)
            rest -= 100
        return tmp_path.joinpath(*parts, "e" * (rest - 1))

    deepest = folder(DB_PATH_MAX)
    assert len(os.fsencode(str(deepest / DB_NAME))) == DB_PATH_MAX
    store = open_store(deepest, create=True)
    store.close()
    assert open_store(deepest).count() == 0
    too_deep = folder(DB_PATH_MAX + 1)
    with pytest.raises(StoreError, match=f"too deep: SQLite opens vitrine.sqlite at a path of "
                                         f"at most {DB_PATH_MAX} bytes, .* {DB_PATH_MAX + 1};"):
        open_store(too_deep, create=True)
    assert not too_deep.exists()


def test_a_full_disk_is_one_sentence_and_loses_nothing(store):
    """SQLite's 'database or disk is full' (here: a page limit) rolls the write back; the
    store says so in one sentence instead of a second error from a rollback that found no
    transaction, keeps what it had, and writes again once there is room."""
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages}")
    many = [record(f"n{i}", unit(1, i / 100), description="x" * 2000) for i in range(50)]
    with pytest.raises(StoreError, match="is full; the write in progress was undone, what "
                                         "was stored before it is kept"):
        store.upsert(many)
    assert store.count() == 4 and store.get("a") is not None
    store.db.execute(f"PRAGMA max_page_count = {pages * 1000}")
    store.upsert(many)
    assert store.count() == 54


def test_a_store_on_a_read_only_volume_serves_reads(store, tmp_path):
    """A store folder mounted read-only (replicas sharing one volume): searches and lookups
    work; a write is refused in one sentence. Needs bind mounts (root), else skipped."""
    root = store.root
    store.close()
    with read_only_mount(root, tmp_path / "ro") as ro:
        replica = open_store(ro)
        assert replica.count() == 4 and replica.get("c").price == 9.5
        assert [m.product.product_id for m in replica.search(unit(1, 0), 2)] == ["a", "b"]
        assert [m.product.product_id for m in replica.search(unit(0, 1), 1, category="d")] \
            == ["c"]
        with pytest.raises(StoreError, match="read-only here"):
            replica.lock_for_writing()
        replica.close()
        # opened to be written into (index, migrate): the same sentence, not "not a
        # readable Vitrine store (unable to open database file)"
        with pytest.raises(StoreError, match=r"cannot write to the store .*; it is read-only"):
            open_store(ro, create=True)
    (tmp_path / "empty").mkdir()  # a new store in a read-only folder: the same sentence
    with read_only_mount(tmp_path / "empty", tmp_path / "ro-empty") as ro, pytest.raises(
            StoreError, match=r"^cannot write to the store .*; it is read-only here\.$"):
        open_store(ro, create=True)


def test_a_read_only_replica_sees_the_writers_changes(store, tmp_path):
    """Replicas of a read-only volume read the database as a file that does not change
    (SQLite's ``immutable``): after the writer changed it they served deleted products
    (then, as its pages moved, 500s), never the new ones. The store now says it changed,
    and opened again it reads what the writer wrote."""
    root = store.root
    store.close()
    with read_only_mount(root, tmp_path / "ro") as ro:
        replica = open_store(ro)
        assert replica.count() == 4 and not replica.replaced() and replica.present()
        writer = open_store(root)
        writer.lock_for_writing()
        writer.delete(["a"])
        writer.close()  # (its last writes folded into vitrine.sqlite)
        assert replica.replaced()
        replica.close()
        again = open_store(ro)
        assert again.count() == 3 and again.get("a") is None and not again.replaced()
        again.close()


def test_a_full_disk_is_not_taken_for_a_damaged_store(store, monkeypatch):
    """SQLite needs room for its WAL files to open a store: on a full disk every command
    said the store was "not a readable Vitrine store (disk I/O error)", as if damaged."""
    import sqlite3

    root = store.root
    store.close()

    def no_room(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(sqlite3, "connect", no_room)
    with pytest.raises(StoreError, match="not a readable Vitrine store"):  # room: damaged
        open_store(root)
    import os
    from types import SimpleNamespace

    for room in (SimpleNamespace(f_bavail=1, f_frsize=4096, f_files=10**6, f_favail=10**5),
                 SimpleNamespace(f_bavail=10**9, f_frsize=4096, f_files=10**6, f_favail=0)):
        monkeypatch.setattr(os, "statvfs", lambda path, room=room: room)  # no bytes, no files
        with pytest.raises(StoreError, match=f"cannot open the store {root}: the disk holding "
                                             r"it is full \(disk I/O error; .*the store "
                                             "itself is as it was"):
            open_store(root)
    # out of files, one left (SQLite makes two beside the database): SQLite cannot open it,
    # which was said as a store not readable (helper-245)

    def no_files(*args, **kwargs):
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(sqlite3, "connect", no_files)
    monkeypatch.setattr(os, "statvfs", lambda path: SimpleNamespace(
        f_bavail=10**9, f_frsize=4096, f_files=10**6, f_favail=1))
    with pytest.raises(StoreError, match=r"the disk holding it is full \(unable to open"):
        open_store(root)
    monkeypatch.setattr(os, "statvfs", lambda path: SimpleNamespace(
        f_bavail=10**9, f_frsize=4096, f_files=10**6, f_favail=10**5))
    with pytest.raises(StoreError, match="not a readable Vitrine store"):  # room: as before
        open_store(root)
    # a database this user may not open, on a disk nearly full: not said to be the disk's
    monkeypatch.setattr(os, "statvfs", lambda path: SimpleNamespace(
        f_bavail=100, f_frsize=4096, f_files=10**6, f_favail=10**5))
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: access(path, mode, **kw) and
                        not str(path).endswith(".sqlite"))
    with pytest.raises(StoreError, match="not a readable Vitrine store"):
        open_store(root)
    # a new store on a disk out of files: no database yet, which is no permission refused
    # (it was said to be "not a readable Vitrine store": helper-251)
    monkeypatch.undo()
    monkeypatch.setattr(sqlite3, "connect", no_files)
    monkeypatch.setattr(os, "statvfs", lambda path: SimpleNamespace(
        f_bavail=10**9, f_frsize=4096, f_files=10**6, f_favail=1))
    with pytest.raises(StoreError, match=r"the disk holding it is full \(unable to open"):
        open_store(root.parent / "new-store", create=True)



def test_a_sqlite_without_its_json_functions_is_refused_when_a_store_is_opened(
        store, tmp_path, monkeypatch):
    """The attribute filters (json_extract, json_each) and the products of a product's
    copies (json_each) are read with SQLite's JSON functions, optional before SQLite 3.38:
    where this Python's SQLite lacked them, the store opened and a search failed half-way
    ("no such table: json_each", an OperationalError). The store is refused as it is
    opened, in one sentence naming the SQLite, and no new store is made."""
    import sqlite3

    from vitrine.store.filters import ProductFilter

    root = store.root
    store.close()

    class WithoutJson(sqlite3.Connection):  # (what SQLite built without JSON1 says)
        def execute(self, sql, *args):
            for name, kind in (("json_each", "table"), ("json_extract", "function")):
                if name in sql:
                    raise sqlite3.OperationalError(f"no such {kind}: {name}")
            return super().execute(sql, *args)

    connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect",
                        lambda *a, **kw: connect(*a, factory=WithoutJson, **kw))
    said = (rf"^this Python's SQLite \({sqlite3.sqlite_version}\) was built without its JSON "
            r"functions \(no such .*json.*\), which the store's searches need: .*SQLite 3\.38")
    with pytest.raises(StoreError, match=said):  # (was: opened, then the filter below
        # raised sqlite3.OperationalError "no such function: json_extract")
        opened = open_store(root)
        opened.search(unit(1, 0), 2, where=ProductFilter(attributes=(("cor", "azul"),)))
    with pytest.raises(StoreError, match=said):
        open_store(tmp_path / "new", create=True)
    assert not (tmp_path / "new").exists()
    monkeypatch.undo()
    again = open_store(root)  # (as it was)
    assert again.count() == 4
    again.close()


@contextlib.contextmanager
def read_only_mount(folder: Path, at: Path):
    """``folder`` bind-mounted read-only at ``at``; skips the test where mounts need root."""
    import subprocess

    at.mkdir()
    steps = [["mount", "--bind", str(folder), str(at)],
             ["mount", "-o", "remount,ro,bind", str(at)]]
    for i, step in enumerate(steps):
        if subprocess.run(step, capture_output=True).returncode != 0:
            if i:
                subprocess.run(["umount", "--lazy", str(at)], capture_output=True)
            pytest.skip("bind mounts are not available here (they need root)")
    try:
        yield at
    finally:
        subprocess.run(["umount", "--lazy", str(at)], capture_output=True)


def test_a_store_through_a_bind_mount_is_the_same_store(store, tmp_path):
    """`migrate S S-bind`, S mounted at both: not refused, and the copy rewrote the source's
    own rows (its photos' paths) through the other name. Needs bind mounts (root)."""
    from vitrine.store import store_identity

    assert store_identity(tmp_path) != store_identity(store.root)
    assert store_identity(tmp_path / "new") == ("folder", str(tmp_path / "new"))
    assert store_identity(f"{tmp_path}//new/") == store_identity(tmp_path / "new")
    with read_only_mount(store.root, tmp_path / "bound") as bound:
        assert store_identity(bound) == store_identity(store.root)
        assert store_identity(f"{bound}/") == store_identity(str(store.root))


def test_a_read_only_copy_with_writes_only_in_its_wal_is_refused(store, tmp_path,
                                                                  cli_here):
    """A store copied while its writer ran (or after it was killed) keeps its last writes
    in vitrine.sqlite-wal; read-only without the -shm file, they were silently not served
    (a deleted product still found, a new one missing). Refused, and the refusal says
    what to do, which works."""
    import shutil
    import sqlite3

    root = store.root
    store.close()  # (at rest: its tables and products in vitrine.sqlite)
    writer = open_store(root)
    writer.lock_for_writing()
    writer.delete(["a"])  # in the WAL until a checkpoint
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("vitrine.sqlite", "vitrine.sqlite-wal"):
        shutil.copyfile(root / name, copy / name)
    writer.close()
    assert (copy / "vitrine.sqlite-wal").stat().st_size > 0
    with read_only_mount(copy, tmp_path / "ro") as ro:
        with pytest.raises(StoreError) as refused:
            open_store(ro)
        # read as a file that does not change (as a store at rest is), it would miss them:
        # SQLite reads a WAL only through its -shm file, which cannot be made here
        frozen = sqlite3.connect(f"{(ro / 'vitrine.sqlite').as_uri()}?mode=ro&immutable=1",
                                 uri=True)
        assert frozen.execute("SELECT count(*) FROM products WHERE product_id = 'a'"
                              ).fetchone() == (1,)  # (the deleted product)
        frozen.close()
    said = str(refused.value)
    assert said.startswith(f"the store {ro} is read-only here, and its last writes are still "
                           "in vitrine.sqlite-wal, which SQLite reads only with the "
                           "vitrine.sqlite-shm file beside it (missing here, and it cannot be "
                           "made here)"), said
    assert ("run `vitrine info --store` on it once where its folder can be written, which "
            "folds them into vitrine.sqlite, or copy the store again with its "
            "vitrine.sqlite-shm file, or once every process writing to it has stopped.") in said
    # what it says to do, done: `vitrine info` where the folder can be written
    assert "3 products" in cli_here("info", "--store", copy).stdout
    assert not (copy / "vitrine.sqlite-wal").exists()
    with read_only_mount(copy, tmp_path / "ro2") as ro:
        replica = open_store(ro)  # folded in when it was closed
        assert replica.get("a") is None and replica.count() == 3
        replica.close()


def test_what_counts_as_a_photo_added_through_the_api_before_the_mark(tmp_path):
    """Stores from before the mark (a Milvus one too, where VITRINE_UPLOAD_DIR is not set
    here) named the server's photos ``<sha256>.<ext>`` in an uploads folder."""
    from vitrine.store import unmarked_upload

    name = "ab" * 32 + ".jpg"
    assert unmarked_upload(f"/srv/loja/uploads/{name}", None)
    assert unmarked_upload(f"loja/uploads/{name}", None)  # relative: from the old server's folder
    assert unmarked_upload(tmp_path / "fotos" / name, tmp_path / "fotos")  # VITRINE_UPLOAD_DIR
    assert not unmarked_upload(tmp_path / "fotos" / name, None)
    assert not unmarked_upload(f"/srv/catalogo/bolsas/{name}", tmp_path / "fotos")
    assert not unmarked_upload("/srv/loja/uploads/bolsa-azul.jpg", None)  # not a server name
    # elsewhere: an upload when it is a file outside every catalogue folder the store knows
    photo = tmp_path / "fotos" / name
    photo.parent.mkdir()
    photo.write_bytes(b"jpeg")
    assert unmarked_upload(photo, None, (tmp_path / "catalogo", None))
    assert not unmarked_upload(photo, None, (None,))  # no folder known
    assert not unmarked_upload(tmp_path / "gone" / name, None, (tmp_path / "catalogo",))
    # inside a catalogue folder it is the catalogue's, even in a category called uploads
    assert not unmarked_upload(f"/srv/catalogo/uploads/{name}", None, ("/srv/catalogo",))


def test_migrate_refuses_to_mix_two_catalogues_in_one_store(tmp_path):
    """Products of another catalogue copied into a store would be removed, silently, by the
    next index of its catalogue: the copy is refused and the target keeps what it held; a copy
    between stores of one catalogue (a resumed one) goes ahead."""
    from vitrine.migrate import migrate_store

    def made(name: str, folder: str | None, pid: str):
        s = open_store(tmp_path / name, create=True)
        s.set_manifest(MANIFEST)
        if folder is not None:
            s.set_catalog_folder(folder)
        s.upsert([record(pid, unit(1, 0))])
        return s

    source, target = made("a", "/shops/a", "a1"), made("b", "/shops/b", "b1")
    with pytest.raises(StoreError, match=r"holds products \(catalogue folder /shops/b\) and "
                                         r".* another catalogue's \(folder /shops/a\)"):
        migrate_store(source, target, show_progress=False)
    assert [p.product_id for p in target.list_products()] == ["b1"]
    # a store from before folders were recorded is no match either way
    older = made("old", None, "o1")
    for a, b in ((older, target), (source, older)):
        with pytest.raises(StoreError, match="not recorded"):
            migrate_store(a, b, show_progress=False)
    assert [p.product_id for p in older.list_products()] == ["o1"]
    again = made("c", "/shops/a", "a0")  # a0: deleted from the source since the last copy
    kept = migrate_store(source, again, show_progress=False)
    assert (kept.copied, kept.not_in_source, kept.removed) == (1, ["a0"], 0)
    assert [p.product_id for p in again.list_products()] == ["a0", "a1"]  # said, not removed
    pruned = migrate_store(source, again, prune=True, show_progress=False)
    assert (pruned.not_in_source, pruned.removed) == (["a0"], 1)
    assert [m.product.product_id for m in again.search(unit(1, 0), 5)] == ["a1"]
    # stores with no folder recorded (filled through the API): a copy resumed goes ahead, but
    # a target with products of its own is refused (the pruning copy emptied it of them)
    api_a, api_b = made("api_a", None, "x1"), made("api_b", None, "y1")
    api_a.upsert([record("x2", unit(0, 1))])
    resumed = made("api_c", None, "x2")
    assert migrate_store(api_a, resumed, show_progress=False).copied == 2
    with pytest.raises(StoreError, match="not recorded"):
        migrate_store(api_a, api_b, prune=True, show_progress=False)
    assert [p.product_id for p in api_b.list_products()] == ["y1"]
    # the same id with another photo (ids are photo-file names, shared by catalogues)
    clash = made("clash", None, "a1")
    clash.upsert([Record(Product("b1", Path("/elsewhere/b1.jpg"), category="c"), "sha-other",
                         "0" * 16, b"\0" * 768, unit(1, 0))])
    with pytest.raises(StoreError, match="not recorded"):
        migrate_store(clash, target, show_progress=False)
    assert [p.product_id for p in target.list_products()] == ["b1"]
    for s in (source, target, again, older, api_a, api_b, resumed, clash):
        s.close()


def test_migrate_reads_the_target_under_its_writer_lock(tmp_path, monkeypatch):
    """Two `migrate` runs into one new store at once each read the empty target before
    taking its lock: the second, let in when the first finished, copied its catalogue's
    products over the first's and wrote its model over theirs (two models' vectors under
    one description)."""
    import dataclasses

    from vitrine.migrate import migrate_store

    def made(name: str, manifest: ModelManifest, folder: str, pid: str):
        s = open_store(tmp_path / name, create=True)
        s.set_manifest(manifest)
        s.set_catalog_folder(folder)
        s.upsert([record(pid, unit(1, 0))])
        return s

    padded = dataclasses.replace(MANIFEST, preprocessing={"size": 8, "resize": "pad"})
    first, second = made("a", MANIFEST, "/shops/a", "a1"), made("b", padded, "/shops/b", "b1")
    target = open_store(tmp_path / "t", create=True)
    take = target.lock_for_writing

    def while_waiting(*args, **kwargs):  # the other copy finishes while this one waits
        rival = open_store(tmp_path / "t")
        try:
            migrate_store(second, rival, show_progress=False)
        finally:
            rival.close()
        take(*args, **kwargs)

    monkeypatch.setattr(target, "lock_for_writing", while_waiting)
    with pytest.raises(StoreError, match=r"was built with a different model than .*a "
                                         r"\(resize pad in it, crop in the source\)"):
        migrate_store(first, target, show_progress=False)
    assert [p.product_id for p in target.list_products()] == ["b1"]
    assert (target.manifest(), target.catalog_folder()) == (padded, "/shops/b")
    for s in (first, second, target):
        s.close()


def test_a_category_filter_in_either_accent_form_finds_the_category(tmp_path):
    """A terminal on a Mac types "Relógio" decomposed; stores keep it composed, and one
    indexed before that keeps the decomposed form it was given: either is found by either."""
    import sqlite3
    import types
    import unicodedata

    from vitrine.catalog import stored_category
    from vitrine.cli_support import check_category
    from vitrine.config import Settings
    from vitrine.recommend import Recommender

    composed, decomposed = "Relógio", unicodedata.normalize("NFD", "Relógio")
    s = open_store(tmp_path / "store", create=True)
    s.set_manifest(MANIFEST)
    s.upsert([record("a", unit(1, 0), category=decomposed), record("b", unit(1, 0.3)),
              record("c", unit(1, 0.5), category=composed)])
    assert s.categories() == {composed: 2, "c": 1}  # written in one form
    s.close()
    with sqlite3.connect(tmp_path / "store" / "vitrine.sqlite") as db:  # an older store
        db.execute("UPDATE products SET category=? WHERE category=?", (decomposed, composed))
    s = open_store(tmp_path / "store")
    assert set(s.categories()) == {decomposed, "c"}
    rec = Recommender(s, Settings())
    for typed in (composed, decomposed):
        assert stored_category(typed, s.categories()) == decomposed
        assert check_category(types.SimpleNamespace(store=s), typed) == decomposed
    assert stored_category("relógio", s.categories()) == "relógio"  # case still counts
    # but --category finds the one category of that name in any case, without accents, with
    # spaces for underscores, as the pages do (it had to be typed exactly)
    for typed in ("relogio", " RELÓGIO "):
        assert check_category(types.SimpleNamespace(store=s), typed) == decomposed
    twins = types.SimpleNamespace(categories=lambda: {"relogio_feminino": 3,
                                                      "Relogio Feminino": 1, "c": 1})
    with pytest.raises(VitrineError, match="'Relogio Feminino' and 'relogio_feminino', which "
                                           "differ only in case, accents or spaces"):
        check_category(types.SimpleNamespace(store=twins), "relógio feminino")
    assert check_category(types.SimpleNamespace(store=twins), "relogio_feminino") == \
        "relogio_feminino"
    with pytest.raises(VitrineError, match="no products of category 'relogios'; it has"):
        check_category(types.SimpleNamespace(store=s), "relogios")
    # the product's own category, as stored: "similar, same category" on such a store
    assert [m.product.product_id for m in rec.similar("a", 5, same_category=True)[1]] == ["c"]
    s.close()
    # a store of 2,000 categories: those holding the typed text or spelled close to it, not
    # all 2,000 in one line of 35 kB (helper-244)
    many = types.SimpleNamespace(store=types.SimpleNamespace(
        categories=lambda: {f"categoria_{i}": 1 for i in range(1, 2001)}))
    for typed, near in (("categria_5", "'categoria_5'"), ("ATEGORIA 199", "'categoria_199', "
                        "'categoria_1990', 'categoria_1991'")):
        with pytest.raises(VitrineError) as refused:
            check_category(many, typed)
        said = str(refused.value)
        assert said.startswith(f"the store has no products of category {typed!r} among its "
                               f"2,000 categories; close to it: {near}"), said
        assert said.count("'categoria_") <= 8, said
    # named in the order a reader expects them (the store's code points put 'Zíper' before
    # 'anel' and 'Óculos' last)
    few = types.SimpleNamespace(store=types.SimpleNamespace(categories=lambda: {
        "Zíper": 1, "anel": 1, "Óculos": 1}))
    with pytest.raises(VitrineError, match="it has 'anel', 'Óculos', 'Zíper'."):
        check_category(few, "pulseira")
    # the largest first, as the pages suggest them (the command listed them by name)
    bags = types.SimpleNamespace(store=types.SimpleNamespace(categories=lambda: {
        "bolsa_azul": 1, "bolsa_vermelha": 5, **{f"outra_{i}": 2 for i in range(20)}}))
    with pytest.raises(VitrineError, match="close to it: 'bolsa_vermelha', 'bolsa_azul'."):
        check_category(bags, "Bolsa")


def test_index_files_of_another_copy_of_the_database_are_never_used(tmp_path):
    """A backup of vitrine.sqlite restored (or the database deleted to start over) counts
    its writes from its own number again: the next write took the number of an index file
    the abandoned copy left, and searches read other rows' vectors from it (a product at
    score 1.0 that looked nothing like the photo)."""
    import shutil

    root = tmp_path / "store"
    s = open_store(root, create=True)
    s.set_manifest(MANIFEST)
    s.upsert([record("a", unit(1, 0)), record("b", unit(0, 1))])
    s.search(unit(1, 0), 1)
    s.close()
    shutil.copyfile(root / "vitrine.sqlite", tmp_path / "backup.sqlite")
    s = open_store(root)
    s.upsert([record("c", unit(0, 0, 1)), record("d", unit(0, 0, 0, 1))])
    assert s.search(unit(0, 0, 1), 1)[0].product.product_id == "c"  # its index file saved
    s.close()
    for leftover in root.glob("vitrine.sqlite*"):
        leftover.unlink()
    shutil.copyfile(tmp_path / "backup.sqlite", root / "vitrine.sqlite")
    s = open_store(root)
    s.upsert([record("e", unit(0, 0, 0, 0, 1)), record("f", unit(0, 0, 0, 0, 0, 1))])
    found = s.search(unit(0, 0, 1), 4)  # c's vector: none of the stored products is near
    assert {m.product.product_id for m in found} == {"a", "b", "e", "f"}
    assert max(m.score for m in found) == pytest.approx(0.0, abs=1e-6)
    assert s.search(unit(0, 0, 0, 0, 1), 1)[0].score == pytest.approx(1.0)
    s.close()


def test_reads_in_a_snapshot_agree_while_another_process_writes(store, tmp_path, monkeypatch):
    """`migrate` read the source's fingerprints, vectors and rows apart: a product a server
    added or deleted in between failed the copy half-way (KeyError); `similar` read the
    product and its vector apart (500 from FAISS on the vector of a deleted product)."""
    from vitrine.migrate import migrate_store
    from vitrine.recommend import ProductNotFound, Recommender

    other = open_store(tmp_path / "store")
    with store.snapshot():
        before = store.fingerprints()
        other.delete(["a"])
        other.upsert([record("new", unit(0.5, 1))])
        assert store.fingerprints() == before and store.get("a") is not None
        assert store.vector("a") is not None and store.get("new") is None
    assert store.get("a") is None and store.get("new") is not None

    real = store.iter_products

    def written_meanwhile(*args, **kwargs):  # a server's writes between migrate's reads
        other.delete(["b"])
        other.upsert([record("late", unit(1, 0.5))])
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "iter_products", written_meanwhile)
    target = open_store(tmp_path / "copy", create=True)
    copied = migrate_store(store, target, show_progress=False)
    assert copied.copied == 4 and sorted(target.fingerprints()) == ["b", "c", "e", "new"]
    target.close()

    recommender = Recommender(store, None)
    monkeypatch.setattr(store, "vector", lambda pid: None)  # deleted after get (Milvus)
    with pytest.raises(ProductNotFound, match="'c' is not in the store"):
        recommender.similar("c", 2)
    other.close()


def test_category_filters_of_no_product_are_not_kept(store, monkeypatch):
    """Each filter string a client sent stayed in memory (2 kB each, never freed): only
    categories that have products are kept, within a memory bound."""
    from vitrine.store import embedded

    for n in range(50):
        assert store.search(unit(1, 0), 2, category=f"nothing-{n}") == []
    assert store._category_ids == {}
    assert [m.product.product_id for m in store.search(unit(1, 0), 1, category="c")] == ["a"]
    kept = store._category_ids["c"].nbytes
    monkeypatch.setattr(embedded, "CATEGORY_FILTER_BYTES", kept + 1)  # room for one
    assert [m.product.product_id for m in store.search(unit(1, 0), 1, category="d")] == ["e"]
    assert list(store._category_ids) == ["d"]


def test_an_index_file_that_cannot_be_saved_leaves_no_part_behind(store, monkeypatch):
    """On a full disk each process that tried to save the index left its part-written
    temporary file (only a writer swept them): searches still answer from memory, and the
    part is removed."""
    from vitrine.ann import VectorIndex

    def full_disk(self, path):
        Path(path).write_bytes(b"\0" * 4096)
        raise OSError(28, "No space left on device")

    for old in store.root.glob("index.*"):
        old.unlink()
    monkeypatch.setattr(VectorIndex, "save", full_disk)
    reader = open_store(store.root)
    assert [m.product.product_id for m in reader.search(unit(1, 0), 2)] == ["a", "b"]
    reader.close()
    assert list(store.root.glob("*.tmp")) == [] and list(store.root.glob("index.*")) == []


def test_an_emptied_target_takes_the_catalogue_folder_of_the_copy(tmp_path):
    """A store emptied of another catalogue's products kept that catalogue's folder after a
    copy into it: the next index of that catalogue removed every product copied, unasked."""
    from vitrine.migrate import migrate_store

    source = open_store(tmp_path / "a", create=True)
    source.set_manifest(MANIFEST)
    source.set_catalog_folder("/shops/a")
    source.upsert([record("a1", unit(1, 0))])
    target = open_store(tmp_path / "b", create=True)
    target.set_manifest(MANIFEST)
    target.set_catalog_folder("/shops/b")
    target.upsert([record("b1", unit(0, 1))])
    target.delete(["b1"])
    assert migrate_store(source, target, show_progress=False).copied == 1
    assert target.catalog_folder() == "/shops/a"
    # a source that records no folder (filled through the API) leaves none: /shops/a's next
    # index would remove its products
    api = open_store(tmp_path / "api", create=True)
    api.set_manifest(MANIFEST)
    api.upsert([record("x1", unit(1, 1))])
    target.delete(["a1"])
    assert migrate_store(api, target, show_progress=False).copied == 1
    assert target.catalog_folder() is None
    for s in (source, target, api):
        s.close()


def test_a_copy_stopped_as_it_records_the_model_says_it_is_unfinished(tmp_path,
                                                                      monkeypatch):
    """A migrate killed outright (SIGKILL, a power cut) once the target's model was
    recorded, before its first product: the new target said nothing, an empty store as if
    complete (`vitrine info`, the server's log). It is marked unfinished before its first
    write, and the same migrate run again finishes it."""
    from vitrine.migrate import migrate_store

    source = open_store(tmp_path / "a", create=True)
    source.set_manifest(MANIFEST)
    source.set_catalog_folder("/shops/a")
    source.upsert([record("a1", unit(1, 0))])
    target = open_store(tmp_path / "b", create=True)
    real = type(target).set_manifest

    def killed(self, manifest):
        real(self, manifest)
        raise SystemExit(137)  # (the process ends here: nothing after it runs)

    monkeypatch.setattr(type(target), "set_manifest", killed)
    with pytest.raises(SystemExit):
        migrate_store(source, target, show_progress=False)
    monkeypatch.undo()
    target.close()
    target = open_store(tmp_path / "b")
    assert target.manifest() == MANIFEST and target.count() == 0
    assert target.copying_from() == str(source.location)
    assert migrate_store(source, target, show_progress=False).copied == 1
    assert target.copying_from() is None
    for s in (source, target):
        s.close()


def test_migrate_again_from_a_store_with_no_folder_that_changed_meanwhile(tmp_path):
    """A store with no catalogue folder recorded (filled through the API) copied, then given
    a new photo for one product: copying it again was refused as "another catalogue's". A
    copy that holds the source's photos for most ids both hold goes on; one that holds
    others for most of them is still refused, saying why."""
    from vitrine.migrate import migrate_store

    def photo(pid: str, sha: str, vector) -> Record:
        return Record(Product(pid, Path(f"/up/{pid}.jpg"), category="c"), sha, "0" * 16,
                      b"\0" * 768, vector)

    source = open_store(tmp_path / "a", create=True)
    source.set_manifest(MANIFEST)
    source.upsert([photo(f"p{i}", f"sha{i}", unit(1, i)) for i in range(3)])
    target = open_store(tmp_path / "b", create=True)
    assert migrate_store(source, target, show_progress=False).copied == 3
    source.upsert([photo("p0", "sha-new", unit(0, 1))])
    assert migrate_store(source, target, show_progress=False).copied == 3
    assert target.fingerprints()["p0"][0] == "sha-new"
    assert [m.product.product_id for m in target.search(unit(0, 1), 1)] == ["p0"]
    source.upsert([photo(f"p{i}", f"other{i}", unit(1, i)) for i in (1, 2)])
    other = open_store(tmp_path / "c", create=True)  # p0 copied, p1 and p2 another photo
    other.set_manifest(MANIFEST)
    other.upsert([photo("p0", "sha-new", unit(0, 1)), photo("p1", "sha1", unit(1, 1)),
                  photo("p2", "sha2", unit(1, 2))])
    with pytest.raises(StoreError, match=r"does not look like a copy of .* \(its catalogue "
                                         r"folder not recorded, the source's not recorded; 2 "
                                         r"of its 3 products are not the source's, photo and "
                                         r"all\)"):
        migrate_store(source, other, show_progress=False)
    assert other.fingerprints()["p1"][0] == "sha1"
    # a store of another catalogue sharing a photo or two: not let in (the next index of the
    # source's catalogue, whose folder it would take, removed the others)
    foreign = open_store(tmp_path / "d", create=True)
    foreign.set_manifest(MANIFEST)
    foreign.upsert([photo("p0", "sha-new", unit(0, 1)),
                    *(photo(f"q{i}", f"q{i}", unit(1, i)) for i in range(5))])
    with pytest.raises(StoreError, match="5 of its 6 products are not the source's"):
        migrate_store(source, foreign, show_progress=False)
    assert foreign.count() == 6 and foreign.catalog_folder() is None
    for s in (source, target, other, foreign):
        s.close()


def test_a_store_folder_this_user_may_not_enter_is_one_sentence(tmp_path, monkeypatch):
    """A store folder made unreadable (chmod 000, another user's): every command ended in a
    PermissionError traceback (Python 3.11's pathlib raises there). Root ignores the mode,
    so the refusal is played by pathlib."""
    made = open_store(tmp_path / "s", create=True)
    made.close()
    real = Path.exists

    def refused(self: Path, *args, **kwargs) -> bool:
        if self.name == "vitrine.sqlite":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "exists", refused)
    for create in (False, True):
        with pytest.raises(StoreError, match=r"^cannot open the store .*/s \(Permission "
                                             r"denied: its folder, or one above it"):
            open_store(tmp_path / "s", create=create)


def test_a_manifest_that_cannot_be_written_is_one_sentence(tmp_path, monkeypatch):
    """A full disk while writing manifest.json (its copy beside the database) was a
    traceback; it is one sentence, with no part file left."""
    import errno

    store = open_store(tmp_path / "s", create=True)

    def full(*args, **kwargs):  # (a full disk says so as the data reaches it)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StoreError, match=r"cannot write manifest.json in the store .* \(No "
                                         r"space left on device\); make room"):
        store.set_manifest(MANIFEST)
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "s").iterdir()
                  if "manifest" in p.name) == []
    # nothing recorded: the next run sets the manifest again, and writes the file then
    assert store.manifest() is None
    store.set_manifest(MANIFEST)
    assert (tmp_path / "s" / "manifest.json").is_file() and store.manifest() == MANIFEST
    store.close()



def test_the_manifest_file_is_on_disk_before_it_replaces_the_last_one(tmp_path, monkeypatch):
    """manifest.json (the database's copy of the model, beside it) was written and renamed
    over the last one without fsync, where every other file written whole is synced first:
    a power cut after the rename could leave it empty."""
    store = open_store(tmp_path / "s", create=True)
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst, **kwargs):
        events.append(("replace", os.fspath(src), os.fspath(dst)))
        return real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    store.set_manifest(MANIFEST)
    monkeypatch.undo()
    target = str(tmp_path / "s" / "manifest.json")
    (renamed,) = [i for i, e in enumerate(events) if e[0] == "replace" and e[2] == target]
    assert ("fsync", events[renamed][1]) in events[:renamed]
    assert ModelManifest.read((tmp_path / "s" / "manifest.json").read_text(),
                              tmp_path / "s") == MANIFEST
    store.close()


class _Clock:
    """``time`` for a module whose waits a test counts: its sleeps advance ``now`` at once."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def time(self) -> float:
        import time

        return time.time()


def test_the_writer_wait_patched_in_the_module_is_the_default(tmp_path, monkeypatch):
    """``lock_for_writing(wait=WRITE_WAIT)`` took the constant as the module was imported: a
    test or a setting patching ``vitrine.store.writer_lock.WRITE_WAIT`` still waited 5 s."""

    import vitrine.store.writer_lock
    from vitrine.errors import StoreBusy

    first = open_store(tmp_path / "s", create=True)
    first.lock_for_writing()
    second = open_store(tmp_path / "s")
    monkeypatch.setattr(vitrine.store.writer_lock, "WRITE_WAIT", 0.2)
    clock = _Clock()  # (the wait counted on a clock of its own: no test of elapsed time)
    monkeypatch.setattr(vitrine.store.writer_lock, "time", clock)
    with pytest.raises(StoreBusy, match="another process is writing"):
        second.lock_for_writing()
    assert 0.2 <= clock.now < 1, clock.now  # (WRITE_WAIT's 5 s before)
    second.close()
    first.close()


def test_the_wal_switch_wait_patched_in_the_module_is_the_default(tmp_path, monkeypatch):
    """``_journal_mode_wal(wait=WAL_SWITCH_WAIT)`` took the constant as the module was
    imported: patching ``vitrine.store.sqlite_db.WAL_SWITCH_WAIT`` still waited 30 s."""
    import sqlite3

    from vitrine.store import sqlite_db

    other = sqlite3.connect(tmp_path / "db", isolation_level=None)
    other.execute("CREATE TABLE t (x)")
    other.execute("BEGIN EXCLUSIVE")  # (another process making the store)
    db = sqlite3.connect(tmp_path / "db", isolation_level=None, timeout=0)
    monkeypatch.setattr(sqlite_db, "WAL_SWITCH_WAIT", 0.2)
    clock = _Clock()
    monkeypatch.setattr(sqlite_db, "time", clock)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        sqlite_db._journal_mode_wal(db)
    assert 0.2 <= clock.now < 1, clock.now  # (WAL_SWITCH_WAIT's 30 s before)
    db.close()
    other.close()

MEASURE_MIGRATE = """
import sys, tracemalloc
from pathlib import Path
from vitrine.migrate import migrate_store
from vitrine.store import open_store

folder = Path(sys.argv[1])
source, target = open_store(folder / "source"), open_store(folder / "target", create=True)
type(target).flush = lambda self, rebuild=True: None  # (its index: not migrate's pages)
tracemalloc.start()  # (numpy's arrays are counted)
done = migrate_store(source, target, show_progress=False)
peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
print(done.copied, peak)
"""
"""Copies the store in ``sys.argv[1]``'s ``source`` to its ``target`` and prints how many
products it copied and the most memory Python allocated meanwhile."""


def test_migrate_copies_a_store_page_by_page_in_bounded_memory(tmp_path):
    """migrate read every product and every vector of the source before copying (2 GB at
    300,000 products): it holds one page at a time, a small part of what the store holds,
    and copies every product and vector."""
    # (12,000 products, 64 MB of them: a page of the copy and what the process allocates
    # beside it, up to 11 MB measured, stayed near 6,000's quarter, 8 MB, and failed at times)
    dim, n = 1024, 12_000
    vecs = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    manifest = ModelManifest("test", "0" * 64, {"size": 8, "resize": "crop"}, dim)
    source = open_store(tmp_path / "source", create=True)
    source.set_manifest(manifest)
    source.upsert([Record(Product(f"p{i:05d}", Path(f"/photos/p{i}.jpg"), category="c",
                                  description="d" * 500), f"sha-{i}", "0" * 16, b"\1" * 768,
                          vecs[i]) for i in range(n)])
    source.close()
    # measured in a process of its own: after test_backbones, in the same process, the peak
    # was 17.4 MB against 11 MB alone (tracemalloc counts what every thread allocates)
    measured = subprocess.run([sys.executable, "-c", MEASURE_MIGRATE, str(tmp_path)],
                              capture_output=True, text=True, timeout=300)
    assert measured.returncode == 0, measured.stderr
    copied, peak = map(int, measured.stdout.split())
    held = vecs.nbytes + n * (768 + 500)  # the vectors, thumbnails and descriptions
    source, target = open_store(tmp_path / "source"), open_store(tmp_path / "target")
    assert copied == target.count() == n
    assert peak < held / 4, (peak, held)
    ids, copied = target.all_vectors()
    assert ids == [f"p{i:05d}" for i in range(n)] and np.array_equal(copied, vecs)
    assert target.get("p00042").description == "d" * 500
    assert target.search(vecs[4242], 1)[0].product.product_id == "p04242"
    source.close()
    target.close()


def test_the_write_ahead_log_is_cut_back_after_a_long_read(tmp_path, monkeypatch):
    """Writes while a long read holds its snapshot (the server's index rebuild) grow the
    WAL past SQLite's checkpoints; it stayed that size for good. Once the read is over and
    the log checkpointed, it is cut back to ``WAL_LIMIT``."""
    from vitrine.store import sqlite_db

    monkeypatch.setattr(sqlite_db, "WAL_LIMIT", 256 << 10)
    writer = open_store(tmp_path / "s", create=True)
    writer.set_manifest(MANIFEST)
    reader = open_store(tmp_path / "s")
    wal = tmp_path / "s" / f"{sqlite_db.DB_NAME}-wal"
    with reader.snapshot():
        reader.count()
        for i in range(300):  # 300 transactions of 40 products: well past 4 MB of log
            writer.upsert([record(f"p{i}-{j}", unit(1, i, j), description="d" * 4096)
                           for j in range(40)])
        grown = wal.stat().st_size
    for i in range(2):  # the first write checkpoints (the read is over), the next resets
        writer.upsert([record(f"last{i}", unit(0, 1))])
    assert grown > 4 << 20 and wal.stat().st_size <= 256 << 10, (grown, wal.stat().st_size)
    assert writer.count() == reader.count() == 12_002
    reader.close()
    writer.close()


def test_a_photo_a_store_names_by_a_relative_path_is_still_in_use(tmp_path):
    """A Vitrine before 29 Nov 2026 served from inside its store (``--store .``) named the
    photos it was sent ``uploads/<sha256>.jpg``: deleting one of two products sharing such a
    photo deleted the photo of the other (its image 404 for good; helper-63)."""
    root = tmp_path / "s"
    store = open_store(root, create=True)
    store.set_manifest(MANIFEST)
    name = "ab" * 32 + ".jpg"
    (root / "uploads").mkdir()
    (root / "uploads" / name).write_bytes(b"photo")
    store.upsert([record("b", unit(1, 0)), record("c", unit(0, 1))])
    with store.db:  # what the old server stored
        store.db.execute("UPDATE products SET image=? WHERE product_id='b'", (f"uploads/{name}",))
        store.db.execute("UPDATE products SET image=? WHERE product_id='c'",
                         (f"/photos/notuploads/{'cd' * 32}.jpg",))
    photo = str(root / "uploads" / name)
    assert store.get("b").image == photo and store.names_photo(photo)
    assert not store.names_photo(str(root / "uploads" / ("ef" * 32 + ".jpg")))
    assert not store.names_photo(str(root / "uploads" / ("cd" * 32 + ".jpg")))
    store.close()


def test_a_damaged_stored_vector_is_one_sentence_naming_its_product(small_store, tmp_path):
    """A vector row edited or damaged (its bytes not the model's width): `related` and
    `migrate` ended in numpy's "buffer size must be a multiple of element size" or FAISS's
    assertion, a traceback."""
    import sqlite3

    copy = tmp_path / "store"
    shutil.copytree(small_store, copy)
    with sqlite3.connect(copy / "vitrine.sqlite") as db:
        pid = db.execute("SELECT product_id FROM products ORDER BY id LIMIT 1 OFFSET 3"
                         ).fetchone()[0]
        db.execute("UPDATE products SET vector=? WHERE product_id=?", (b"\0" * 8, pid))
    store = open_store(copy)
    said = rf"^a stored vector of product '{pid}' in .* is damaged \(8 bytes, not the model"
    with pytest.raises(StoreError, match=said):
        store.all_vectors()
    with pytest.raises(StoreError, match=said):
        [page for page in store.iter_products(2)]
    assert sum(len(page) for page in store.iter_products(2, vectors=False)) == store.count()
    store.close()
    # the search index built anew from the rows (its file deleted): `similar` says it too
    for index in copy.glob("index.*.faiss"):
        index.unlink()
    with sqlite3.connect(copy / "vitrine.sqlite") as db:
        other = db.execute("SELECT product_id FROM products WHERE product_id != ? LIMIT 1",
                           (pid,)).fetchone()[0]
    proc = subprocess.run([sys.executable, "-m", "vitrine.cli", "similar", "--store",
                           str(copy), other], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith(
        f"error: a stored vector in {copy} is damaged (8 bytes"), proc.stderr
    # migrate stops at it, and leaves no store it made (a model recorded, no product)
    proc = subprocess.run([sys.executable, "-m", "vitrine.cli", "migrate", str(copy),
                           str(tmp_path / "new")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "is damaged" in proc.stderr, proc.stderr
    assert not (tmp_path / "new").exists()


def test_a_value_read_slowly_is_kept_for_its_time_within_bounds(monkeypatch):
    """A catalogue order or category count whose read took longer than its TTL was stamped
    when the read began, so it was stale when kept; it is kept from the read's end, twice
    the read's time when longer, never more than six TTLs, and not at all for a TTL of 0."""
    import types

    import vitrine.store.base as base

    clock = [0.0]
    monkeypatch.setattr(base, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    for now, ttl, until in ((100.5, 10, 110.5), (125, 10, 175), (200, 10, 260),
                            (125, 0, 125), (125, -1, 125)):
        clock[0] = now
        assert base.kept_until(100.0, ttl) == until, (now, ttl)


def test_the_model_a_store_records_is_read_quietly_before_a_command_builds_its_own(
        small_store, monkeypatch, tmp_path):
    """`index` reads an existing store's model before building its own (a trained model's
    store indexed without one is refused at once: manifest.kind_mismatch); a store it cannot
    read there is left for the command's own opening to say why (a folder shut to this user
    said "Permission denied" of a database file the user could not see: helper-177)."""
    from vitrine.store import recorded_model

    manifest, folder = recorded_model(small_store)
    assert manifest is not None and manifest.embedding == "pooled" and folder is None
    assert recorded_model(tmp_path / "none") == (None, None)
    assert recorded_model("milvus://localhost/x") == (None, None)
    real = Path.is_file

    def shut(self):
        if self.parent == small_store:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "is_file", shut)
    assert recorded_model(small_store) == (None, None)


def test_a_store_of_another_pretrained_backbone_is_refused_before_a_model_is_built(
        small_store, settings, tmp_path, monkeypatch):
    """A store indexed with VITRINE_BACKBONE=efficientnet_lite0, searched or served without
    it, built (offline: tried to download) mobilenet_v2's weights first, to say something
    else (helper-236): the store's backbone and the setting to set are said at once."""
    import dataclasses

    from vitrine.embed import Embedder
    from vitrine.recommend import Recommender

    store = shutil.copytree(small_store, tmp_path / "store")
    db = open_store(store)
    try:
        db.set_manifest(dataclasses.replace(db.manifest(), backbone="efficientnet_lite0"))
    finally:
        db.close()

    def built(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(Embedder, "from_settings", built)
    db = open_store(store)
    try:
        with pytest.raises(StoreError) as refused:
            _ = Recommender(db, settings).embedder
    finally:
        db.close()
    said = str(refused.value)
    assert "backbone efficientnet_lite0 in the store, mobilenet_v2 here" in said
    assert "VITRINE_BACKBONE=efficientnet_lite0" in said
    # the same store with its own backbone set goes on to build it
    db = open_store(store)
    try:
        with pytest.raises(AssertionError, match="a model was built"):
            _ = Recommender(db, settings.model_copy(update={"backbone": "efficientnet_lite0"})
                            ).embedder
    finally:
        db.close()


def test_a_milvus_address_without_the_extra_says_the_extra_first(tmp_path, monkeypatch):
    """Without the milvus extra, a Milvus Lite file not made yet was "no Vitrine store here;
    create one with 'vitrine index … --store …'", and that command then said the extra was
    missing (helper-236): the extra is said first, for a file there or not, and a server."""
    monkeypatch.setitem(sys.modules, "pymilvus", None)  # (its import fails)
    (tmp_path / "there.db").write_bytes(b"")
    for location, create in ((f"milvus-lite://{tmp_path}/new.db", False),
                             (f"milvus-lite://{tmp_path}/there.db", False),
                             (f"milvus-lite://{tmp_path}/new.db", True),
                             ("milvus://localhost:19530", False)):
        with pytest.raises(StoreError, match=r"^Milvus stores need Vitrine's milvus extra \("):
            open_store(location, create=create)
    assert not (tmp_path / "new.db").exists()


def test_cursor_pages_of_a_read_only_store_an_older_vitrine_renamed_into(store, tmp_path):
    """A store on a read-only volume, into which a Vitrine from before the ``search_key``
    column renamed a product (its key kept the old name's, and cannot be folded there):
    pages sorted it by that stale key, while a cursor after it (an API page's next_cursor,
    made from the name it has now) started at the new name's place: every product between
    was never listed. Needs bind mounts (root)."""
    import sqlite3

    from vitrine.store.search_key import listing_order

    store.upsert([record(f"p{i}", unit(1, 0.1 * i), name=f"P{i}") for i in range(8)])
    store.close()
    db = sqlite3.connect(tmp_path / "store" / "vitrine.sqlite")  # the older writer
    with db:
        db.execute("UPDATE products SET name='Zz' WHERE product_id='p1'")
        db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 "
                   "WHERE key='generation'")
    db.close()
    with read_only_mount(tmp_path / "store", tmp_path / "ro") as ro:
        frozen = open_store(ro)
        try:
            every = [p.product_id for p in frozen.list_products(category="c", limit=100)]
            walked, after = [], None
            while page := frozen.list_products(category="c", limit=2, after=after):
                walked += [p.product_id for p in page]
                after = listing_order(page[-1].category, page[-1].name, page[-1].product_id)
            assert walked == every and len(every) == 10, (walked, every)
        finally:
            frozen.close()


def test_equal_scores_keep_one_order_whatever_k_and_the_index_state(tmp_path):
    """Products with the same photo score the same: they are listed by id, so a top 2 is
    the start of the top 4, and sending one of them again (the same photo: nothing changed)
    or rebuilding the index leaves the list as it was (FAISS listed them last id first
    after keeping the first it met: the top 2 was b, a and the top 4 d, c, b, a; after b
    was sent again the top 2 was c, a)."""
    from vitrine.ann import IndexConfig

    flat = IndexConfig.defaults(kind="flat")
    same = unit(1, 1)
    store = open_store(tmp_path / "s", create=True, index_config=flat)
    store.set_manifest(MANIFEST)
    store.lock_for_writing()
    store.upsert([record(f"x{i}", unit(0, 0, 1, i)) for i in range(20)]
                 + [record(pid, same) for pid in "abcd"])
    store.flush()

    def top(k):
        return [m.product.product_id for m in store.search(same, k)]

    assert top(2) == ["a", "b"]
    assert top(4) == ["a", "b", "c", "d"]
    store.upsert([record("b", same)])  # searched from the layer of rows written since
    assert top(2) == ["a", "b"]
    assert top(4) == ["a", "b", "c", "d"]
    assert [m.product.product_id for m in store.search(same, 3, exclude="a")] == ["b", "c", "d"]
    store.rebuild_index()
    assert top(2) == ["a", "b"]
    store.close()
