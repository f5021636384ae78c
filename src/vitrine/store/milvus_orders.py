"""The catalogue orders a Milvus store keeps (:class:`MilvusOrders`, a part of
:class:`vitrine.store.milvus_store.MilvusStore`): Milvus sorts no query, so a catalogue page
reads the category, name and id of every product it lists from, sorted as the embedded store
lists them, and the order is kept for the next pages (:data:`ORDER_TTL_S`) and read again
beside the requests once old; name search and the categories' counts are served from it
too, and every write of this store drops it. A price and attribute filter's listing reads and
keeps its own order (the collection's query filtered by :meth:`ProductFilter.milvus`)."""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from vitrine.fold import searchable
from vitrine.store.base import StoredProduct, attribute_tally, kept_until
from vitrine.store.filters import ProductFilter
from vitrine.store.milvus_collections import FIELDS, READS, _to_product
from vitrine.store.milvus_support import quote
from vitrine.store.search_key import listing_order

log = logging.getLogger("vitrine.store.milvus_store")  # (the store's log, whichever part says it)

ORDER_TTL_S = 10.0
"""How long a catalogue's order is kept for its next pages (reading it reads three fields of
every product: 0.15 s a page at 3,000 products on Milvus Lite, growing with the store). This
store's own writes drop it at once; another process's show within this time, as the
categories' counts do (vitrine.service_categories.CATEGORIES_TTL_S), or, for an order read
again beside the requests (ORDER_STALE_S), once that read is done."""
ORDER_STALE_S = 60.0
"""How long past its time an order is still served while one read beside the requests
renews it (at 20,000 products on Milvus Lite the page that read it took 2.5 s; 10.8 s at
50,000): a page of a catalogue not looked at for longer reads it afresh."""
RENEW_JOIN_S = 30.0
"""How long closing the store waits for an order being read beside the requests."""
ORDERS_KEPT = 64
"""Category filters whose order is kept at once (category, name and id of each product)."""


class _Order:
    """A catalogue's order as read: the (category, search key, name, id) of each product of
    it, sorted as the embedded store lists them (``LISTING_ORDER``: names as a reader sorts
    them, case and accents aside, by their folded name and id,
    :func:`vitrine.store.search_key.search_key`, which name search looks in too), and until
    when it is kept."""

    __slots__ = ("keys", "rows", "until")

    def __init__(self, until: float, rows: list[tuple[str, str, str, str]]):
        self.until = until
        self.rows = rows
        self.keys = [r[1] for r in rows]

    def span(self, category: str | None) -> tuple[int, int]:
        """Where the products of ``category`` (None: all) lie in the order: sorted by
        category first, one category of the whole catalogue's order is one run of it."""
        if category is None:
            return 0, len(self.rows)
        lo = bisect.bisect_left(self.rows, category, key=_category)
        return lo, bisect.bisect_right(self.rows, category, lo=lo, key=_category)


def _category(row: tuple[str, str, str, str]) -> str:
    return row[0]


OrderKey = str | None | tuple[str | None, ProductFilter]
"""What an order is kept under: its category (None: the whole catalogue), with a filter's
the pair of both."""


def _key(category: str | None, where: ProductFilter | None) -> OrderKey:
    return (category, where) if where else category


def _unkey(key: OrderKey) -> tuple[str | None, ProductFilter | None]:
    return key if isinstance(key, tuple) else (key, None)


class MilvusOrders:
    """The catalogue orders of :class:`vitrine.store.milvus_store.MilvusStore`, read
    through its ``_rows`` and ``_lookup`` (its ``_orders``, ``_orders_lock``,
    ``_written``, ``_reading``, ``_renewing`` and ``_closed`` are set up by the
    store)."""

    def categories(self) -> dict[str, int]:
        """Counted from the whole catalogue's order (:meth:`_ordered`), kept or read now and
        kept: reading it costs what reading the category of every product alone did (2 s at
        20,000 products on Milvus Lite), and the catalogue page that counts them lists it
        next."""
        order = self._kept(None) or self._read_order(None)
        return dict(sorted(Counter(row[0] for row in order.rows).items()))

    def attribute_values(self, most: int) -> dict[str, dict[str, int]]:
        """Counted from every product's attributes, read now (their field alone); the
        service keeps the count as long as the categories' (CATEGORIES_TTL_S)."""
        return attribute_tally((row["attributes"] for rows in self._batches(
            'product_id != ""', ["attributes"]) for row in rows), most)

    def has_category(self, category: str) -> bool:
        """From the order kept for the catalogue pages, where there is one (the page lists
        from it next; a query filtered by category scans the collection: 30-120 ms at
        20,000 products on Milvus Lite, most of a category page's time)."""
        order = self._kept(category)
        if order is not None:
            lo, hi = order.span(category)
            return hi > lo
        return self._has_products() and bool(self.client.query(
            self.collection, filter=f"category == {quote(category)}",
            output_fields=["product_id"], limit=1, **READS))

    def count_products(self, *, category: str | None = None,
                       where: ProductFilter | None = None) -> int:
        """From the order a filtered page lists from (kept, or read now and kept)."""
        order = self._kept(category, where) or self._read_order(category, where)
        lo, hi = order.span(category)
        return hi - lo

    def list_products(self, *, category: str | None = None, query: str | None = None,
                      limit: int = 50, offset: int = 0,
                      after: tuple[str, str, str, str] | None = None,
                      where: ProductFilter | None = None) -> list[StoredProduct]:
        page, stale = self._page(category, query, limit, offset, after, where)
        if stale:  # another process renamed or moved a product of the page since the order
            # kept was read: a cursor made from its row (its place now) bisected the old
            # order there, and skipped every product in between (or changed its price or
            # attributes out of the filter's); read the order again
            self._forget_orders()
            page, _ = self._page(category, query, limit, offset, after, where)
        return [p for p in page if not where or where.admits(p.price, p.attributes)]

    def _page(self, category: str | None, query: str | None, limit: int, offset: int,
              after: tuple[str, str, str, str] | None, where: ProductFilter | None = None
              ) -> tuple[list[StoredProduct], bool]:
        """A page of the order kept (or read), and whether any of its rows no longer sits
        where that order put it (or no longer passes ``where``)."""
        ordered = self._ordered(category, query, after, where)
        page: list[StoredProduct] = []
        stale, start = False, offset
        while len(page) < limit and start < len(ordered):  # past products deleted since
            places = ordered[start:start + limit - len(page)]
            rows = {r["product_id"]: r for r in self._lookup([p[3] for p in places], FIELDS)}
            for place in places:
                if (row := rows.get(place[3])) is not None:
                    page.append(product := _to_product(row))
                    stale = stale or listing_order(
                        row["category"], row["name"], row["product_id"]) != place or (
                        where is not None and not where.admits(product.price,
                                                               product.attributes))
            start += len(places)
        return page, stale

    def _ordered(self, category: str | None, query: str | None,
                 after: tuple[str, str, str, str] | None = None,
                 where: ProductFilter | None = None) -> list[tuple[str, str, str, str]]:
        """The places (:func:`listing_order`) of the products a catalogue page lists, in its
        order. Milvus sorts no
        query, so the order's fields of every row are read (then only the page's whole rows:
        photo thumbnails and descriptions of the rest are never read, where 20,000 of them
        took 6 s a page), and the order kept for the next pages (:func:`kept_until`
        ``ORDER_TTL_S``; past that, served ``ORDER_STALE_S`` more while it is read again
        beside the requests). The whole catalogue's order serves each category's too, and
        a name search filters the order kept (no read: 1.3 s a search at 20,000 products on
        Milvus Lite), ignoring case and accents as the embedded store: Milvus' like can do
        neither, so the name filter runs here. ``after``: only those after that place
        (:func:`listing_order`). ``where``: the order of its products alone, read with its
        filter expression and kept as the category's is."""
        order = self._kept(category, where)
        if order is None:
            order = self._read_order(category, where)
        lo, hi = order.span(category)
        if after is not None:
            lo = max(lo, bisect.bisect_right(order.rows, after, lo, hi))
        if not query:
            return order.rows[lo:hi]
        needle = searchable(query)  # in the name or id (search_key), as the embedded store
        keys, rows = order.keys, order.rows
        return [rows[i] for i in range(lo, hi) if needle in keys[i]]

    def _kept(self, category: str | None, where: ProductFilter | None = None
              ) -> _Order | None:
        """The order kept that lists ``category`` (its own, else the whole catalogue's) of
        ``where``'s products, or None; one past its time but within ``ORDER_STALE_S`` of it
        is served while a read beside the requests renews it."""
        now = time.monotonic()
        with self._orders_lock:
            for old in [c for c, o in self._orders.items() if now >= o.until + ORDER_STALE_S]:
                del self._orders[old]  # (not held for the server's life)
            key = _key(category, where)
            order = self._orders.get(key)
            if order is None and category is not None:
                order = self._orders.get(_key(None, where))
            if order is None or now < order.until:
                return order
            if not self._closed and (self._renewing is None
                                     or not self._renewing.is_alive()):  # (else being read)
                served = key if self._orders.get(key) is order else _key(None, where)
                self._renewing = threading.Thread(target=self._renew, args=(served,),
                                                  name="vitrine-milvus-order", daemon=True)
                self._renewing.start()
            return order

    def _renew(self, key: OrderKey) -> None:
        """Read the order kept under ``key`` again beside the requests, its search keys made
        with it (a name search then folds nothing); an error leaves the old order to
        expire."""
        try:
            self._read_order(*_unkey(key), renew=True)
        except Exception:  # noqa: BLE001 - (the store closed meanwhile; Milvus gone): the
            # next page past ORDER_STALE_S reads it itself and says why
            log.debug("reading the order of %s again failed", self.location, exc_info=True)

    def _read_order(self, category: str | None, where: ProductFilter | None = None,
                    renew: bool = False) -> _Order:
        """Read the order of ``category`` (None: every product) and ``where`` and keep it
        unless this store wrote meanwhile; one read at a time, a page waiting for another's
        takes it."""
        key = _key(category, where)
        with self._reading:
            if not renew:
                kept = self._kept(category, where)
                if kept is not None:  # (read by the page this one waited for)
                    return kept
            with self._orders_lock:
                written = self._written
            started = time.monotonic()
            expr = ['product_id != ""']
            if category is not None:  # ("": the products without one)
                expr.append(f"category == {quote(category)}")
            expr += where.milvus() if where else []
            rows = sorted(listing_order(r["category"], r["name"], r["product_id"])
                          for r in self._rows(" and ".join(expr),
                                              ["product_id", "category", "name"]))
            order = _Order(kept_until(started, ORDER_TTL_S), rows)
            with self._orders_lock:
                if not rows and self._written == written:  # (a category no product has
                    # takes no place; one emptied by another writer is no longer served
                    # stale, walking its deleted ids, until ORDER_STALE_S: helper-186)
                    self._orders.pop(key, None)
                elif rows and self._written == written and ORDER_TTL_S > 0:
                    if key not in self._orders and len(self._orders) >= ORDERS_KEPT:
                        # the one kept for the shortest time goes
                        del self._orders[min(self._orders, key=lambda c: self._orders[c].until)]
                    self._orders[key] = order
            return order

    @contextmanager
    def _changing(self) -> Iterator[None]:
        """A write of products: the orders kept are dropped before and after it, so that an
        order read meanwhile (another thread's page: the server lists without its lock) is
        not kept without it."""
        self._forget_orders()
        try:
            yield
        finally:
            self._forget_orders()

    def _forget_orders(self) -> None:
        with self._orders_lock:
            self._orders.clear()
            self._written += 1
