"""Price and attribute filters inside the vector query (issue 6): the embedded store against
an exact scan, with categories and hidden copies, Milvus Lite giving the same results, the
recommender's copies re-search, the command line and the API."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from conftest import IN_CI
from test_store import DIM, MANIFEST, read_only_mount, record

from vitrine.catalog import Product
from vitrine.config import Settings
from vitrine.recommend import Recommender
from vitrine.store import open_store
from vitrine.store.base import Record
from vitrine.store.filters import ProductFilter, parse_filter

COLOURS = ("red", "blue", None)


def _products(n: int = 300, seed: int = 7) -> list[Record]:
    """``n`` products of two categories, a price on four of five (0 to 100), a colour
    attribute on two of three, a size on half."""
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    made = []
    for i in range(n):
        attrs = {}
        if COLOURS[i % 3]:
            attrs["colour"] = COLOURS[i % 3]
        if i % 2:
            attrs["size"] = "M"
        made.append(record(f"p{i:03d}", vecs[i], category="ab"[i % 2],
                           price=None if i % 5 == 0 else round(float(rng.uniform(0, 100)), 2),
                           attributes=attrs))
    return made


def _allowed(rec: Record, where: ProductFilter, category: str | None) -> bool:
    p = rec.product
    if category is not None and p.category != category:
        return False
    if (where.min_price is not None or where.max_price is not None) and p.price is None:
        return False
    if where.min_price is not None and p.price < where.min_price:
        return False
    if where.max_price is not None and p.price > where.max_price:
        return False
    return all(p.attributes.get(k) == v for k, v in where.attributes)


FILTERS = [ProductFilter(min_price=20), ProductFilter(max_price=30.5),
           ProductFilter(min_price=40, max_price=60),
           ProductFilter(attributes=(("colour", "red"),)),
           ProductFilter(min_price=10, attributes=(("colour", "blue"), ("size", "M"))),
           ProductFilter(min_price=1000), ProductFilter(attributes=(("colour", "green"),))]


def _ids(matches) -> list[str]:
    return [m.product.product_id for m in matches]


def _filled(path, made, **kw):
    store = open_store(path, create=True, **kw)
    store.set_manifest(MANIFEST)
    store.upsert(made)
    store.flush()
    return store


def test_filter_and_its_sentences():
    assert parse_filter(None, None, ()) is None and not ProductFilter()
    assert parse_filter(" 10 ", "20.5", ["cor=azul", "a=b=c"]) == ProductFilter(
        10.0, 20.5, (("cor", "azul"), ("a", "b=c")))
    names = ("--min-price", "--max-price", "--attr")
    for args, said in (
            (("abc", None, ()), "--min-price must be a number, not 'abc'."),
            ((None, "nan", ()), "--max-price must be a finite number, not nan."),
            (("30", "20", ()), "--min-price (30) is above --max-price (20)."),
            ((None, None, ["colour"]), "--attr is written KEY=VALUE, not 'colour'."),
            ((None, None, ["=red"]), "--attr is written KEY=VALUE, not '=red'."),
            ((None, None, [f"k{i}=v" for i in range(21)]),
             "--attr is given 21 times; at most 20 attributes can filter one search.")):
        with pytest.raises(ValueError) as caught:
            parse_filter(*args, names=names)
        assert str(caught.value) == said


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_the_embedded_store_filters_inside_the_search(tmp_path, kind):
    """Every filter, with and without a category: the top ``k`` of the products it lets
    through, as an exact scan orders them (flat), or only such products, as many as asked
    (HNSW: its own order); a product without a price matches no price bound."""
    from vitrine.ann import IndexConfig

    made = _products()
    store = _filled(tmp_path / "s", made,
                    index_config=IndexConfig.defaults(kind=kind, ann_min_items=30))
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((4, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    stored = np.stack([r.vector for r in made])
    try:
        for where in FILTERS:
            for category in (None, "b"):
                keep = np.array([_allowed(r, where, category) for r in made])
                found = store.search_many(queries, 10, category=category, where=where)
                for q, matches in zip(queries, found, strict=True):
                    order = [made[i].product.product_id
                             for i in np.argsort(-(stored @ q), kind="stable") if keep[i]]
                    assert len(matches) == min(10, len(order))
                    if kind == "flat":
                        assert _ids(matches) == order[:10]
                    else:
                        assert set(_ids(matches)) <= set(order)
                    if kind == "flat" and order:  # (its own product left out)
                        assert _ids(store.search(q, 10, category=category, where=where,
                                                 exclude=order[0])) == order[1:11]
        # no filter, and an empty one: the search as it was
        assert _ids(store.search(queries[0], 10)) == \
            _ids(store.search(queries[0], 10, where=ProductFilter()))
    finally:
        store.close()


def test_an_attribute_whose_name_has_an_accent_is_filtered_on(tmp_path):
    """A shop's columns named in Portuguese ("Gênero", "Coleção") or holding a character
    JSON escapes: the store keeps attributes as ``json.dumps`` writes them ("G\\u00eanero"),
    and SQLite's JSON path (3.40) compared that as written, so `--attr Gênero=Feminino`
    found nothing on the embedded store where Milvus found every such product."""
    keys = ("Gênero", "Coleção", "tab\tkey", "emoji 👟", "colour")
    made = []
    for i, v in enumerate(np.eye(DIM, dtype=np.float32)[:6]):
        attrs = {key: ("Verão" if i % 2 else "Inverno") for key in keys}
        made.append(record(f"p{i}", v, attributes=attrs))
    store = _filled(tmp_path / "s", made)
    try:
        for key in keys:
            for value, want in (("Verão", ["p1", "p3", "p5"]), ("Inverno", ["p0", "p2", "p4"])):
                where = ProductFilter(attributes=((key, value),))
                assert sorted(_ids(store.search(made[0].vector, 6, where=where))) == want, key
        both = ProductFilter(attributes=(("Gênero", "Verão"), ("colour", "Verão")))
        assert sorted(_ids(store.search(made[0].vector, 6, where=both))) == ["p1", "p3", "p5"]
    finally:
        store.close()


def test_a_changed_price_or_product_is_filtered_on_at_once(tmp_path):
    """The products a filter lets through are kept between searches, but not past a write:
    ``update_metadata`` (a price changed; it starts no new generation) or ``upsert``."""
    made = _products(30)
    store = _filled(tmp_path / "s", made)
    try:
        where = ProductFilter(max_price=100)
        assert _ids(store.search(made[3].vector, 1, where=where)) == ["p003"]
        store.update_metadata([dataclasses.replace(made[3].product, price=500.0)])
        assert "p003" not in _ids(store.search(made[3].vector, 30, where=where))
        store.upsert([record("new", made[3].vector, price=1.0)])
        assert _ids(store.search(made[3].vector, 1, where=where)) == ["new"]
        store.upsert([record("new", made[3].vector, price=101.0)])
        assert _ids(store.search(made[3].vector, 30, where=where))[:1] != ["new"]
    finally:
        store.close()


def _filter_indexes(db) -> set[str]:
    return {row[0] for row in db.execute(
        "SELECT name FROM sqlite_master WHERE type='index' AND name='products_filter'")}


def _every_filtered(store, made, queries) -> list:
    """Every filter's (with a key no JSON path can quote) and category's products, all of
    them in the flat index's order, with their scores."""
    where_all = [*FILTERS, ProductFilter(max_price=50, attributes=(('we"ird', "x"),))]
    return [[[(m.product.product_id, round(m.score, 5)) for m in found]
             for found in store.search_many(queries, len(made), category=category,
                                            where=where)]
            for where in where_all for category in (None, "b")]


def test_a_filter_reads_its_products_from_an_index(tmp_path, monkeypatch):
    """A filter's first search (its products' row ids, then kept until a write) read every
    row, each with its vector and thumbnail: 140-260 ms at 100,000 products
    (``benchmarks/filter_search.py``), paid by every shopper choosing another price range.
    The ``products_filter`` index on (price, attributes) is made with the store, and when a
    store made before it is opened where it can be written: a price range reads its own
    products' entries, an attribute the index's, never the rows. Where it cannot be made (a
    store read-only here) the rows are read as before: the same products either way."""
    made = _products()
    made[3].product.attributes['we"ird'] = "x"  # (found through json_each, not a path)
    store = _filled(tmp_path / "s", made)
    queries = np.stack([made[i].vector for i in (0, 3, 50)])
    try:
        assert _filter_indexes(store.db) == {"products_filter"}  # (made with the store)
        statements = []
        store.db.set_trace_callback(statements.append)
        indexed = _every_filtered(store, made, queries)
        store.db.set_trace_callback(None)
    finally:
        store.close()
    for where, found in zip(FILTERS, indexed[:2 * len(FILTERS):2], strict=True):
        assert {pid for pid, _ in found[0]} == {  # (every product it lets through, no other)
            r.product.product_id for r in made if _allowed(r, where, None)}, where
    read = [sql for sql in statements if "SELECT group_concat(id) FROM (" in sql
            and "category=" not in sql]
    assert len(read) >= len(FILTERS) + 1  # (each filter's products read, then kept)
    db = sqlite3.connect(tmp_path / "s" / "vitrine.sqlite")
    try:
        for sql in read:  # (an attribute's from the attribute index: test_attribute_index)
            plan = [row[3].strip() for row in db.execute("EXPLAIN QUERY PLAN " + sql)]
            reads = [step for step in plan if "products" in step.split(" USING")[0]]
            assert (reads or "product_attributes" in sql) and all(
                "COVERING INDEX products_filter" in step for step in reads) \
                and "SCAN products" not in plan, (sql, plan)
            if "price" in sql and reads:  # (a range of the index, not all of it)
                assert reads[0].startswith("SEARCH products"), (sql, plan)
        db.execute("DROP INDEX products_filter")  # a store made before it
    finally:
        db.close()
    with monkeypatch.context() as m:
        m.setattr("vitrine.store.sqlite_db.INDEXES", ())  # (as where it cannot be written)
        before = open_store(tmp_path / "s")
    try:
        assert _filter_indexes(before.db) == set()
        assert _every_filtered(before, made, queries) == indexed
    finally:
        before.close()
    again = open_store(tmp_path / "s")  # where it can be written: made
    try:
        assert _filter_indexes(again.db) == {"products_filter"}
        assert _every_filtered(again, made, queries) == indexed
    finally:
        again.close()


def test_a_store_without_the_filter_index_filters_read_only(tmp_path):
    """A store made before the filter index, mounted read-only (replicas of one volume):
    opened (the index cannot be made there), it filters from its rows, the same products as
    with the index. Needs bind mounts (root), else skipped."""
    made = _products(60)
    store = _filled(tmp_path / "s", made)
    queries = np.stack([made[i].vector for i in (0, 7)])
    indexed = _every_filtered(store, made, queries)
    store.close()
    db = sqlite3.connect(tmp_path / "s" / "vitrine.sqlite")
    db.execute("DROP INDEX IF EXISTS products_filter")  # (a store made before it)
    db.close()
    with read_only_mount(tmp_path / "s", tmp_path / "ro") as ro:
        replica = open_store(ro)
        try:
            assert _filter_indexes(replica.db) == set()
            assert _every_filtered(replica, made, queries) == indexed
        finally:
            replica.close()


def test_a_missing_index_is_not_waited_for_behind_a_writer(tmp_path):
    """A store made before the filter index, opened while another process's write holds
    the database: it opens without waiting for that writer (it waited SQLite's whole busy
    time, 30 s, to make the index), and a later opening makes the index."""
    import threading

    made = _products(40)
    _filled(tmp_path / "s", made).close()
    db_path = tmp_path / "s" / "vitrine.sqlite"
    db = sqlite3.connect(db_path)
    db.execute("DROP INDEX products_filter")
    db.commit()
    db.close()
    writer = sqlite3.connect(db_path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # (an `index` run mid-transaction)
    try:
        opened: list = []
        thread = threading.Thread(target=lambda: opened.append(open_store(tmp_path / "s")),
                                  daemon=True)
        thread.start()
        thread.join(20)  # (it waited 30 s before: here it must be done while the lock is held)
        assert opened, "the store's opening waited for the writer"
        store = opened[0]
        try:
            assert _filter_indexes(store.db) == set()  # (not made: a writer at work)
            assert store.db.execute("PRAGMA busy_timeout").fetchone()[0] == 30000
        finally:
            store.close()
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    again = open_store(tmp_path / "s")
    try:
        assert _filter_indexes(again.db) == {"products_filter"}
    finally:
        again.close()


def test_hidden_copies_and_the_recommender_keep_the_filter(tmp_path):
    """A product with more copies (its photo) than the first search fetches: the re-search
    that leaves the copies out inside the store's search keeps the price filter (it had
    none: the nearest products of any price came back)."""
    q = np.zeros(DIM, np.float32)
    q[0] = 1
    made = [Record(Product(f"c{i:02d}", Path(f"/photos/c{i}.jpg"), price=50.0), "s" * 64,
                   "0" * 16, b"\0" * 768, q) for i in range(12)]
    for i in range(20):  # the nearer ones without a price or too cheap
        v = q.copy()
        v[1] = 0.05 * (i + 1)
        made.append(record(f"n{i:02d}", v / np.linalg.norm(v),
                           price=None if i < 10 and i % 2 else (5.0 if i < 10 else 20.0),
                           attributes={"colour": "red" if i % 3 else "blue"}))
    store = _filled(tmp_path / "s", made)
    try:
        where = ProductFilter(min_price=10)
        _, matches = Recommender(store, Settings()).similar("c00", 3, where=where)
        assert _ids(matches) == ["n10", "n11", "n12"]
        where = ProductFilter(min_price=10, attributes=(("colour", "blue"),))
        _, matches = Recommender(store, Settings()).similar("c00", 3, where=where)
        assert _ids(matches) == ["n12", "n15", "n18"]
        hidden = store.search_many(q.reshape(1, -1), 3, exclude=["c00"], where=where,
                                   exclude_photos=frozenset({"s" * 64}), category="c")
        assert _ids(hidden[0]) == ["n12", "n15", "n18"]
    finally:
        store.close()


def test_milvus_lite_filters_as_the_embedded_store(tmp_path):
    """The same products in both stores: every filter gives the same products in the same
    order (Milvus's expression: ``price >= x``, ``attributes["k"] == "v"``; a null price
    matches no bound there either), also with a key that holds quotes."""
    try:
        import milvus_lite  # noqa: F401
        import pymilvus  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the extra
        if IN_CI:
            raise
        pytest.skip("the milvus extra is not installed")
    made = _products(120)
    made[7].product.attributes['we"ird \\ key'] = 'a "b"'
    made[8].product.attributes["a.b [c]"] = "x"
    made[9].product.attributes["Coleção"] = "Verão"
    embedded = _filled(tmp_path / "e", made)
    milvus = _filled(f"milvus-lite://{tmp_path}/m.db", made)
    queries = np.stack([made[i].vector for i in (0, 7, 50)])
    try:
        for where in [*FILTERS, ProductFilter(attributes=(('we"ird \\ key', 'a "b"'),)),
                      ProductFilter(attributes=(("a.b [c]", "x"),)),
                      ProductFilter(attributes=(("Coleção", "Verão"),))]:
            for category in (None, "b"):
                a = embedded.search_many(queries, 6, category=category, where=where)
                b = milvus.search_many(queries, 6, category=category, where=where)
                assert [_ids(m) for m in a] == [_ids(m) for m in b], where
                assert _ids(embedded.search(queries[1], 6, where=where, exclude="p007")) == \
                    _ids(milvus.search(queries[1], 6, where=where, exclude="p007"))
        assert _ids(milvus.search(queries[1], 3, where=FILTERS[-2])) == []
        for store in (embedded, milvus):  # (the keys no JSON path can quote, and one it can)
            assert _ids(store.search(queries[0], 3, where=ProductFilter(
                attributes=(('we"ird \\ key', 'a "b"'),)))) == ["p007"]
            assert _ids(store.search(queries[0], 3, where=ProductFilter(
                attributes=(("a.b [c]", "x"),)))) == ["p008"]
            assert _ids(store.search(queries[0], 3, where=ProductFilter(
                attributes=(("Coleção", "Verão"),)))) == ["p009"]
    finally:
        milvus.close()
        embedded.close()


def test_the_commands_take_price_and_attribute_filters(tmp_path, cli_here):
    """`vitrine similar --min-price/--max-price/--attr`; a bad value is one sentence and
    exit status 2 on both commands, before the store or the model is opened."""
    made = _products(60)
    _filled(tmp_path / "s", made).close()
    args = ("similar", "p000", "--store", tmp_path / "s", "--json", "-k", "8")
    got = json.loads(cli_here(*args, "--min-price", "20", "--max-price", "80",
                              "--attr", "colour=red").stdout)["results"]
    assert got and all(20 <= r["price"] <= 80 and r["attributes"]["colour"] == "red"
                       for r in got)
    plain = json.loads(cli_here(*args).stdout)["results"]
    assert len(plain) == 8 and [r["product_id"] for r in plain] != [r["product_id"]
                                                                   for r in got]
    for command in (["similar", "p000"], ["search", tmp_path / "photo.jpg"]):
        for bad, said in ((["--min-price", "cheap"], "--min-price must be a number, not "
                                                     "'cheap'."),
                          (["--min-price", "9", "--max-price", "1"],
                           "--min-price (9) is above --max-price (1)."),
                          (["--attr", "colour"], "--attr is written KEY=VALUE, not 'colour'.")):
            proc = cli_here(*command, "--store", tmp_path / "nowhere", *bad, check=False)
            assert proc.returncode == 2 and proc.stdout == ""
            assert proc.stderr.strip() == f"error: {said}"


@pytest.fixture(scope="module")
def priced_store(small_store, tmp_path_factory) -> Path:
    """A copy of the small store, each product given a price (its row number in the
    catalogue's listing order, 1 to 48)."""
    path = tmp_path_factory.mktemp("priced") / "store"
    shutil.copytree(small_store, path)
    store = open_store(path)
    try:
        store.lock_for_writing()
        listed = store.list_products(limit=100)
        store.update_metadata([p.to_product(price=float(i + 1)) for i, p in enumerate(listed)])
        store.flush()
    finally:
        store.close()
    return path


def test_search_by_photo_on_the_command_line_filters(priced_store, small_catalog, weights_path,
                                                     cli_here):
    photo = next(small_catalog.rglob("*.jpg"))
    proc = cli_here("search", photo, "--store", priced_store, "--weights", weights_path,
                    "--json", "-k", "10", "--max-price", "20", "--attr", "gender=Women")
    results = json.loads(proc.stdout)["results"]
    assert results and all(r["price"] <= 20 and r["attributes"]["gender"] == "Women"
                           for r in results)


def test_the_api_filters_similar_and_search(priced_store, settings, embedder, small_catalog):
    from fastapi.testclient import TestClient

    from vitrine.api import create_app

    client = TestClient(create_app(settings, priced_store, embedder=embedder))
    pid = client.get("/api/products", params={"limit": 1}).json()["products"][0]["product_id"]
    url = f"/api/products/{pid}/similar"
    r = client.get(url, params={"k": 100, "min_price": "10", "max_price": "30",
                                "attr": ["gender=Men", "colour=Black"]})
    assert r.status_code == 200, r.text
    got = [client.get(f"/api/products/{p['product_id']}").json() for p in r.json()["results"]]
    assert got and all(10 <= p["price"] <= 30 and p["attributes"]["gender"] == "Men"
                       and p["attributes"]["colour"] == "Black" for p in got)
    assert len(got) == sum(10 <= p["price"] <= 30 and p["attributes"]["gender"] == "Men"
                           and p["attributes"]["colour"] == "Black" and p["product_id"] != pid
                           for p in client.get("/api/products",
                                               params={"limit": 100}).json()["products"])
    assert len(client.get(url, params={"k": 100}).json()["results"]) == 47
    photo = next(small_catalog.rglob("*.jpg")).read_bytes()
    r = client.post("/api/search", params={"k": 100, "min_price": 40},
                    files={"image": ("p.jpg", photo, "image/jpeg")})
    assert r.status_code == 200, r.text
    assert sorted(p["price"] for p in r.json()["results"]) == [float(i) for i in range(40, 49)]
    for params, said in (({"min_price": "cheap"},
                          "Invalid query parameter: min_price must be a number, not 'cheap'."),
                         ({"min_price": 5, "max_price": 1},
                          "Invalid query parameter: min_price (5) is above "
                          "max_price (1)."),
                         ({"attr": "colour"}, "Invalid query parameter: attr is written KEY=VALUE, "
                                            "not 'colour'.")):
        r = client.get(url, params=params)
        assert r.status_code == 422 and r.json()["detail"] == said
        r = client.post("/api/search", params=params,
                        files={"image": ("p.jpg", photo, "image/jpeg")})
        assert r.status_code == 422 and r.json()["detail"] == said
    r = client.post("/api/search", data={"min_price": "3"},
                    files={"image": ("p.jpg", photo, "image/jpeg")})
    assert r.status_code == 422 and "query parameter" in r.json()["detail"]
