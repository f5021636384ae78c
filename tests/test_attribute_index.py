"""The embedded store's attribute index (``product_attributes``,
:mod:`vitrine.store.attribute_index`): attribute filters read their products' ids from it,
not every product's JSON; it follows every write (triggers, also of an older Vitrine's
writes); a store made before it opens, searches as before while it is not made, and has it
made at an opening where it can be written. Every search, page and count it answers is the
one :meth:`ProductFilter.admits` tells, product by product."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading

import numpy as np
import pytest
from test_store import DIM, MANIFEST, record

from vitrine.ann import IndexConfig
from vitrine.store import open_store
from vitrine.store.attribute_index import OBJECTS, TABLE, attribute_index_ready
from vitrine.store.filters import ProductFilter

KEYS = ("cor", "Gênero", "Coleção", 'we"ird', "back\\slash", "a.b", "$", "tab\tkey",
        "emoji 👟", "tamanho")
VALUES = ("azul", "Azul", "verão", "", " azul", "1", "a=b", '"q"', "ç\\n", "P")
PRICES = (None, 0.0, 9.9, 10.0, 49.9, 50.0, 120.0)
FLAT = IndexConfig.defaults(kind="flat")


def _catalogue(rng: np.random.Generator, n: int, start: int = 0) -> list:
    """``n`` products of random attributes (a few of :data:`KEYS`, values of :data:`VALUES`),
    prices and categories."""
    vecs = rng.standard_normal((n, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    made = []
    for i in range(n):
        keys = rng.choice(len(KEYS), size=int(rng.integers(0, 5)), replace=False)
        attrs = {KEYS[k]: VALUES[int(rng.integers(len(VALUES)))] for k in keys}
        made.append(record(f"p{start + i:03d}", vecs[i], category="ab"[int(rng.integers(2))],
                           price=PRICES[int(rng.integers(len(PRICES)))], attributes=attrs))
    return made


def _filters(rng: np.random.Generator, attributes: list[dict], count: int
             ) -> list[ProductFilter]:
    """Random filters: up to three attributes (mostly of pairs some product holds, else any
    key and value), with or without price bounds."""
    held = sorted({pair for attrs in attributes for pair in attrs.items()})
    chosen = []
    for _ in range(count):
        pairs = []
        for _ in range(int(rng.integers(1, 4))):
            if held and rng.random() < 0.8:
                pairs.append(held[int(rng.integers(len(held)))])
            else:
                pairs.append((KEYS[int(rng.integers(len(KEYS)))],
                              VALUES[int(rng.integers(len(VALUES)))]))
        low = PRICES[int(rng.integers(len(PRICES)))] if rng.random() < 0.3 else None
        high = PRICES[int(rng.integers(len(PRICES)))] if rng.random() < 0.3 else None
        if low is not None and high is not None and low > high:
            low, high = high, low
        chosen.append(ProductFilter(low, high, tuple(pairs[:1 + int(rng.integers(3))])))
    return chosen


def _check(store, query: np.ndarray, filters: list[ProductFilter]) -> None:
    """Every filter's search (all its products, flat), listing and count, with and without
    a category, are those ``admits`` lets through."""
    listed = store.list_products(limit=10_000)
    for where in filters:
        for category in (None, "a"):
            want = [p.product_id for p in listed
                    if (category is None or p.category == category)
                    and where.admits(p.price, p.attributes)]
            found = store.search(query, len(listed), category=category, where=where)
            assert sorted(m.product.product_id for m in found) == sorted(want), where
            got = store.list_products(category=category, limit=10_000, where=where)
            assert [p.product_id for p in got] == want, (where, category)
            assert store.count_products(category=category, where=where) == len(want), where
    counted: dict[str, dict[str, int]] = {}  # (the web form's values, from the same rows)
    for p in listed:
        for key, value in p.attributes.items():
            counted.setdefault(key, {}).setdefault(value, 0)
            counted[key][value] += 1
    assert store.attribute_values(10_000) == counted


def _json_rows(db) -> list[tuple]:
    """What the attribute index should hold: every product's text attributes, from JSON."""
    return sorted(db.execute("SELECT p.id, j.key, j.value FROM products p, "
                             "json_each(p.attributes) j WHERE j.type = 'text'"))


def _index_rows(db) -> list[tuple]:
    return sorted(db.execute(f"SELECT id, key, value FROM {TABLE}"))


def _make_old(path) -> None:
    """The store at ``path`` as a Vitrine before the attribute index left it."""
    db = sqlite3.connect(path / "vitrine.sqlite")
    for name in OBJECTS[2:]:
        db.execute(f"DROP TRIGGER {name}")
    db.execute(f"DROP TABLE {TABLE}")
    db.commit()
    db.close()


@pytest.mark.parametrize("seed", range(4))
def test_attribute_filters_find_what_admits_tells(tmp_path, seed, monkeypatch):
    """A random catalogue (accented keys, keys JSON escapes or a JSON path cannot quote,
    near-equal values) and random filters: the search, the page and the count of each are
    the products ``admits`` lets through, from the attribute index, from the JSON (a store
    without it), and again after products are rewritten, changed and deleted. (Seeds 2
    and 3: a search's attributes each read whole and intersected, as common ones are.)"""
    if seed >= 2:
        monkeypatch.setattr("vitrine.store.embedded_reads.ATTRIBUTE_COUNT_MAX", 1)
    rng = np.random.default_rng(seed)
    made = _catalogue(rng, 90)
    store = open_store(tmp_path / "s", create=True, index_config=FLAT)
    store.set_manifest(MANIFEST)
    store.upsert(made)
    store.flush()
    filters = _filters(rng, [r.product.attributes for r in made], 25)
    query = made[0].vector
    try:
        assert attribute_index_ready(store.db)
        _check(store, query, filters)
        # writes: some products written again with other attributes, some fields changed,
        # some deleted, some new
        again = _catalogue(rng, 20)
        store.upsert(again + _catalogue(rng, 10, start=900))
        changed = [dataclasses.replace(r.product, attributes={"cor": "azul", "Gênero": "P"})
                   for r in made[40:50]] + [  # (a price alone changed, or removed)
            dataclasses.replace(r.product, price=PRICES[i % len(PRICES)])
            for i, r in enumerate(made[50:60])]
        store.update_metadata(changed)
        store.delete([r.product.product_id for r in made[60:70]])
        store.flush()
        assert _index_rows(store.db) == _json_rows(store.db)  # (in step with every write)
        filters += _filters(rng, [p.attributes for p in store.list_products(limit=10_000)],
                            15)
        _check(store, query, filters)
    finally:
        store.close()
    _make_old(tmp_path / "s")
    with pytest.MonkeyPatch.context() as m:  # (read as a store it cannot be made in)
        m.setattr("vitrine.store.sqlite_db.make_attribute_index", lambda db: None)
        old = open_store(tmp_path / "s", index_config=FLAT)
    try:
        assert not attribute_index_ready(old.db)
        _check(old, query, filters)
    finally:
        old.close()


def test_an_attribute_filter_reads_no_products_json(tmp_path):
    """An attribute filter's first search, page and count read the attribute index's
    entries (covering, by key and value), never every product's JSON (``json_extract`` or
    ``json_each`` over products: 53-75 ms at 100,000 products, 0.4-0.6 s at 1,000,000)."""
    rng = np.random.default_rng(5)
    made = _catalogue(rng, 60)
    store = open_store(tmp_path / "s", create=True, index_config=FLAT)
    store.set_manifest(MANIFEST)
    store.upsert(made)
    store.flush()
    statements: list[str] = []
    try:
        store.db.set_trace_callback(statements.append)
        for where in (ProductFilter(attributes=(("Gênero", "azul"),)),
                      ProductFilter(attributes=(("cor", "azul"), ('we"ird', "1"))),
                      ProductFilter(10.0, 50.0, (("cor", "Azul"),))):
            for category in (None, "a"):
                store.search(made[0].vector, 5, category=category, where=where)
                store.list_products(category=category, limit=5, where=where)
                store.count_products(category=category, where=where)
        store.db.set_trace_callback(None)
        filtered = [s for s in statements if TABLE in s and "sqlite_master" not in s]
        assert len(filtered) >= 3 * 2 * 3 - 6, statements  # (a search's ids kept)
        assert not [s for s in statements if "json_" in s and "json_each('[" not in s]
        for sql in filtered:
            plan = " | ".join(row[3] for row in store.db.execute(
                "EXPLAIN QUERY PLAN " + sql))
            assert "COVERING INDEX product_attributes_value (key=? AND value=?" in plan \
                or "USING PRIMARY KEY (id=? AND key=?)" in plan, plan  # (a row's, by id)
            if "price >= " in sql and "a0." in sql:  # (the range in the attribute's entries)
                assert "(key=? AND value=? AND price>? AND price<?)" in plan, plan
            if not sql.startswith("SELECT id, ("):  # (a page's probe walks the listing's
                # first rows in order: LIMIT FILTER_PROBE_ROWS; see test_listing_filters)
                assert "SCAN products" not in plan.replace("SCAN products USING COVERING",
                                                           ""), (sql, plan)
    finally:
        store.close()


def test_the_index_follows_an_older_vitrines_writes(tmp_path):
    """Writes that are not this Vitrine's (an older one's, or SQL by hand) keep the index in
    step: it is kept by triggers in their transaction, not by the store's own writes."""
    rng = np.random.default_rng(2)
    made = _catalogue(rng, 30)
    store = open_store(tmp_path / "s", create=True)
    store.set_manifest(MANIFEST)
    store.upsert(made)
    store.close()
    db = sqlite3.connect(tmp_path / "s" / "vitrine.sqlite")
    try:
        db.execute("UPDATE products SET attributes = ? WHERE product_id = 'p001'",
                   (json.dumps({"cor": "verde", "n": 3, "o": {"cor": "azul"}}),))
        db.execute("DELETE FROM products WHERE product_id = 'p002'")
        db.execute("INSERT INTO products(product_id, image, attributes, content_sha256, "
                   "metadata_hash, vector) SELECT 'new', image, ?, content_sha256, "
                   "metadata_hash, vector FROM products WHERE product_id = 'p003'",
                   (json.dumps({"cor": "verde"}),))
        db.execute("UPDATE products SET attributes = 'not json' WHERE product_id = 'p004'")
        db.commit()
        assert _index_rows(db) == sorted(
            row for row in _json_rows_valid(db))
    finally:
        db.close()
    again = open_store(tmp_path / "s")
    try:
        where = ProductFilter(attributes=(("cor", "verde"),))
        assert sorted(p.product_id for p in again.list_products(where=where)) == ["new",
                                                                                  "p001"]
        assert again.count_products(where=ProductFilter(attributes=(("n", "3"),))) == 0
    finally:
        again.close()


def _json_rows_valid(db) -> list[tuple]:
    return sorted(db.execute("SELECT p.id, j.key, j.value FROM products p, "
                             "json_each(p.attributes) j WHERE json_valid(p.attributes) "
                             "AND j.type = 'text'"))


def test_a_store_made_before_the_index_is_searched_then_given_it(tmp_path):
    """A store an older Vitrine made (no attribute index): opened while another process's
    write holds it, it opens without waiting (busy timeout 0) and filters from the JSON, the
    same products; the next opening fills the index from the rows, and the filters read it."""
    rng = np.random.default_rng(3)
    made = _catalogue(rng, 50)
    store = open_store(tmp_path / "s", create=True, index_config=FLAT)
    store.set_manifest(MANIFEST)
    store.upsert(made)
    store.flush()
    filters = _filters(rng, [r.product.attributes for r in made], 12)
    want = [[p.product_id for p in store.list_products(limit=1000, where=w)] for w in filters]
    store.close()
    _make_old(tmp_path / "s")
    writer = sqlite3.connect(tmp_path / "s" / "vitrine.sqlite", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # (an `index` run mid-transaction)
    try:
        opened: list = []
        thread = threading.Thread(target=lambda: opened.append(
            open_store(tmp_path / "s", index_config=FLAT)), daemon=True)
        thread.start()
        thread.join(20)
        assert opened, "the store's opening waited for the writer"
        busy = opened[0]
        try:
            assert not attribute_index_ready(busy.db)  # (not made: a writer at work)
            assert busy.db.execute("PRAGMA busy_timeout").fetchone()[0] == 30000
            assert [[p.product_id for p in busy.list_products(limit=1000, where=w)]
                    for w in filters] == want
        finally:
            busy.close()
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    again = open_store(tmp_path / "s", index_config=FLAT)
    try:
        assert attribute_index_ready(again.db)
        assert _index_rows(again.db) == _json_rows(again.db)
        _check(again, made[0].vector, filters)
        assert [[p.product_id for p in again.list_products(limit=1000, where=w)]
                for w in filters] == want
    finally:
        again.close()


def test_an_attribute_index_made_otherwise_is_not_trusted(tmp_path):
    """An attribute index whose table, index or triggers are not as this Vitrine makes them
    (another version's, or a products table made again by hand, which drops the triggers:
    its rows no longer follow the writes) is not read: the JSON is, the same products; the
    next opening where the store can be written makes it again from the rows."""
    rng = np.random.default_rng(4)
    made = _catalogue(rng, 40)
    store = open_store(tmp_path / "s", create=True, index_config=FLAT)
    store.set_manifest(MANIFEST)
    store.upsert(made)
    store.close()
    db = sqlite3.connect(tmp_path / "s" / "vitrine.sqlite")
    db.execute("DROP TRIGGER product_attributes_update")  # (its rows no longer followed)
    db.execute("UPDATE products SET attributes = '{\"cor\": \"azul\"}'")
    db.commit()
    db.close()
    filters = [ProductFilter(attributes=(("cor", "azul"),)),
               *(ProductFilter(attributes=(("Gênero", v),)) for v in VALUES[:3])]
    with pytest.MonkeyPatch.context() as m:
        m.setattr("vitrine.store.sqlite_db.make_attribute_index", lambda db: None)
        stale = open_store(tmp_path / "s", index_config=FLAT)
    try:
        assert not attribute_index_ready(stale.db)
        assert stale.count_products(where=filters[0]) == 40
        _check(stale, made[0].vector, filters)
    finally:
        stale.close()
    again = open_store(tmp_path / "s", index_config=FLAT)
    try:
        assert attribute_index_ready(again.db)
        assert _index_rows(again.db) == _json_rows(again.db)
        _check(again, made[0].vector, filters)
    finally:
        again.close()
