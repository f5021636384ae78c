"""The catalogue listing filtered by price and attributes (``list_products(where=...)`` and
``count_products``), on the embedded store and Milvus Lite: only the filter's products, in
the listing's order, page by page by offset and by cursor, counted; on SQLite from the
listing index walked in order (no sort of the filter's rows)."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import IN_CI
from test_filters import FILTERS, _allowed, _filled, _products

from vitrine.store.filters import ProductFilter
from vitrine.store.search_key import listing_order

LISTED = [*FILTERS, ProductFilter(min_price=10, max_price=40, attributes=(("size", "M"),))]


def _milvus_or_skip() -> None:
    try:
        import milvus_lite  # noqa: F401
        import pymilvus  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the extra
        if IN_CI:
            raise
        pytest.skip("the milvus extra is not installed")


@pytest.fixture(params=["embedded", "milvus"])
def filled(request, tmp_path):
    """A store of each kind holding ``_products(120)``, and those records by id."""
    if request.param == "milvus":
        _milvus_or_skip()
    made = _products(120)
    where = tmp_path / "e" if request.param == "embedded" else f"milvus-lite://{tmp_path}/m.db"
    store = _filled(where, made)
    yield store, {r.product.product_id: r for r in made}
    store.close()


def _ids(products) -> list[str]:
    return [p.product_id for p in products]


def _place(p) -> tuple[str, str, str, str]:
    return listing_order(p.category, p.name, p.product_id)


@pytest.mark.parametrize("category", [None, "b"])
@pytest.mark.parametrize("query", [None, "P01"])
def test_a_filtered_listing_pages_by_offset_and_cursor(filled, category, query, monkeypatch):
    """Every filter (a price bound, a range, attributes, one matching nothing) lists exactly
    the products it lets through (a product without a price matches no bound), in the
    catalogue's order; pages of 7 by offset and by cursor walk it whole, each product once;
    its count is theirs. On SQLite also with a page found past the listing's first rows
    (FILTER_PROBE_ROWS of 10; 0: none tested one by one), and the filter's products sorted
    or (FILTER_SORT_MAX -1) each of the listing looked up in them."""
    from vitrine.store import embedded_reads

    store, made = filled
    every = store.list_products(category=category, query=query, limit=1000)
    ways = ((2000, 5000), (10, 5000), (0, 5000), (0, -1)) if hasattr(store, "db") else \
        ((2000, 5000),)
    for (probe, most), where in ((way, where) for way in ways for where in LISTED):
        monkeypatch.setattr(embedded_reads, "FILTER_PROBE_ROWS", probe)
        monkeypatch.setattr(embedded_reads, "FILTER_SORT_MAX", most)
        want = [p.product_id for p in every if _allowed(made[p.product_id], where, category)]
        got = store.list_products(category=category, query=query, limit=1000, where=where)
        assert _ids(got) == want, where
        by_offset = [pid for offset in range(0, len(want) + 7, 7) for pid in _ids(
            store.list_products(category=category, query=query, limit=7, offset=offset,
                                where=where))]
        assert by_offset == want, where
        walked, after = [], None
        while page := store.list_products(category=category, query=query, limit=7,
                                          after=after, where=where):
            walked += _ids(page)
            after = _place(page[-1])
        assert walked == want, where
        if query is None:
            assert store.count_products(category=category, where=where) == len(want), where
    assert store.count_products(category=category) == (
        len(every) if query is None else len(store.list_products(category=category,
                                                                 limit=1000)))


def test_a_price_changed_is_listed_by_its_new_price_at_once(filled):
    """A product repriced out of the range leaves the filtered listing and its count, one
    repriced into it joins them (the Milvus store's kept order of that filter dropped)."""
    store, made = filled
    where = ProductFilter(min_price=40, max_price=60)
    before = _ids(store.list_products(limit=1000, where=where))
    out, into = before[0], next(pid for pid, r in made.items()
                                if r.product.price is not None and r.product.price > 60)
    store.update_metadata([dataclasses.replace(made[out].product, price=99.0),
                           dataclasses.replace(made[into].product, price=50.0)])
    after = _ids(store.list_products(limit=1000, where=where))
    assert out not in after and into in after and len(after) == len(before)
    assert store.count_products(where=where) == len(before)


def _plan(db, statement: str) -> str:
    """The query plan of ``statement`` but the page's own rows, read by id and sorted."""
    return " | ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + statement)
                      if row[1] != 0 or not statement.startswith("SELECT product_id"))


@pytest.mark.parametrize("way", ["probe", "walk", "few"])
def test_a_filtered_page_walks_the_listing_index_without_a_sort(tmp_path, monkeypatch, way):
    """On SQLite a filtered page is the listing index walked in order: its first rows
    (FILTER_PROBE_ROWS) tested one by one until the page is full, else each entry looked up
    in the filter's ids (read from the products_filter index, no row read to test it); no
    sort of the filter's products, but of a price range's few (FILTER_SORT_MAX, counted in
    that index), read by id. (The filter's clause beside the others sorted every product a
    wide price range let through, or read every row in turn along the listing until the page
    filled, all of them when none matched: 100-490 ms at 100,000 products.)"""
    from vitrine.store import embedded_reads

    probe, most = {"probe": (2000, -1), "walk": (0, -1), "few": (2000, 5000)}[way]
    monkeypatch.setattr(embedded_reads, "FILTER_PROBE_ROWS", probe)
    monkeypatch.setattr(embedded_reads, "FILTER_SORT_MAX", most)
    store = _filled(tmp_path / "s", _products(60))
    statements: list[str] = []
    try:
        store.db.set_trace_callback(statements.append)
        for where in LISTED:
            for category in (None, "a"):
                statements.clear()
                listed = store.list_products(category=category, limit=5, offset=3,
                                             where=where)
                assert len(listed) <= 5
                walks = [s for s in statements if "ORDER BY" in s and "json_each('[" not in s]
                assert len(walks) == 1, statements
                plan = _plan(store.db, walks[0])
                assert "json_" not in walks[0], walks[0]  # (no product's JSON parsed)
                if where.attributes:  # (from the attribute index: their ids, or a row's)
                    assert "COVERING INDEX product_attributes_value (key=? AND value=?" \
                        in plan or "USING PRIMARY KEY (id=? AND key=?)" in plan, (where, plan)
                if way == "few":  # (the filter's few ids, counted in its indexes, sorted)
                    assert where.attributes or "COVERING INDEX products_filter (price" \
                        in plan, (where, plan)
                    continue
                index = "COVERING INDEX" if way == "walk" or not (
                    where.min_price is not None or where.max_price is not None) else "INDEX"
                assert f"SCAN products USING {index} products_listing_folded" in plan \
                    or f"SEARCH products USING {index} products_listing_folded " \
                    "(category=?)" in plan, (where, plan)
                if way == "walk" and not where.attributes:  # (a price alone)
                    assert "COVERING INDEX products_filter" in plan, (where, plan)
                assert "TEMP B-TREE FOR ORDER BY" not in plan, (where, plan)
    finally:
        store.db.set_trace_callback(None)
        store.close()
