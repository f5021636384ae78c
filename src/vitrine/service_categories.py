"""The service's categories: the count of products per category that the catalogue and search
pages share (until the store is written, or for :data:`CATEGORIES_TTL_S` on a store that keeps
no record of its writes), what is derived from each count once, and a category as the store
spells it, for a filter or a write (:class:`ServiceCategories`, a part of
:class:`vitrine.service.VitrineService`, whose store and locks it reads).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from vitrine.catalog import (
    categories_by_key,
    first_of_each_form,
    named_alike,
    one_form,
    stored_category,
)
from vitrine.errors import CatalogError
from vitrine.recommend import ProductNotFound, stored_product
from vitrine.store.base import kept_until

CATEGORIES_TTL_S = 10.0
"""How long the pages reuse one count of the products per category of a store that keeps no
record of its writes (Milvus: writes through this service renew it at once, another
process's show after this long); the embedded store's are counted again after any write."""
ATTRIBUTES_TTL_S = 60.0
"""The least time the pages reuse one count of the products' attribute values (the filter
fields' choices): kept until the store is written (the embedded store's write mark; a
Milvus store has none: counted again after this long), and counted again at most this often
however often it is written. Counting reads every product's attributes (on SQLite, 0.44 s for
100,000 products of three keys, 0.87 s with a fourth key of a value each: a synthetic table,
hunt375; under the embedded store's lock, which every search waits for); a value written
since is missing from the choices, or a value gone still offered (it then finds nothing), for
up to this long."""
T = TypeVar("T")


class ServiceCategories:
    """The category reads of :class:`vitrine.service.VitrineService`."""

    def stored_category(self, category: str | None) -> str | None:
        """A category filter as the store spells it (either Unicode form; None for none), or
        the one category it names in another case, without accents or with spaces for
        underscores, as the command line and the pages find it (the API's filter
        ``relogio feminino`` found nothing where `vitrine similar --category` and the pages
        found relogio_feminino: helper-220). Else as given: a filter that matches nothing.
        A category the store holds as written costs one row read, not a count (a scan of a
        Milvus collection); the counts the others are looked up in are shared for a while."""
        return self.resolved_category(category)[0] if category else None

    def resolved_category(self, category: str) -> tuple[str, bool, list[str]]:
        """:meth:`stored_category` of a non-empty ``category``, whether the store holds it,
        and the stored categories it names in another spelling: read once for callers that
        need all three (a write, a page's filter)."""
        if not one_form(category):
            # (from an index kept with the counts: each filter with an accent normalised
            # every one of 20,000 categories)
            category = stored_category(category, *self._derived(first_of_each_form))
        if self.has_category(category):
            return category, True, [category]
        alike = named_alike(category, self._derived(categories_by_key)[1])
        return (alike[0], True, alike) if len(alike) == 1 else (category, False, alike)

    def written_category(self, category: str) -> str:
        """The category a product written through the API is stored under: the one the store
        holds that ``category`` names in another case, without accents or with spaces for
        underscores (the pages' own label, "Salto feminino", made a second category beside
        salto_feminino, each listed apart, and a filter by either spelling then found neither:
        helper-230); a new one as sent. A CatalogError (422) when it would name two."""
        if not category:
            return category
        found, held, alike = self.resolved_category(category)
        if not held and len(alike) > 1:
            raise CatalogError(
                f"the category {category!r} is written in the store as "
                f"{' and '.join(repr(c) for c in sorted(alike))}, which differ only in case, "
                "accents or spaces; send it as one of them is written.")
        return found

    def _edited_category(self, product_id: str, category: str) -> str:
        """:meth:`written_category` for a product's edit or replacement; the product alone in
        its category may respell it ("relogio" to "Relógio": else never changed)."""
        written = self.written_category(category)
        if written != category and self._counted()[0].get(written) == 1:
            try:
                mine = stored_product(self.store, product_id)
            except ProductNotFound:  # (spelled as several stored ids: the write says so)
                mine = None
            if mine is not None and mine.category == written:
                return category
        return written

    def _forget_categories(self) -> None:
        """The counts may have changed (a write, another database): counted anew, and a
        count begun before is not kept (one read beside a write kept its old counts for
        CATEGORIES_TTL_S: helper-191)."""
        self._categories = None
        self._categories_forgotten += 1

    def _counted(self) -> tuple[dict[str, int], dict[Callable, object]]:
        # (a store whose reads run side by side counts under a lock of its own: counting a
        # Milvus store may read its whole catalogue's order, seconds that held every read)
        with (self._counting if getattr(self._store, "concurrent_reads", False)
              else self._store_lock):
            cached, started = self._categories, time.monotonic()
            # (another process's write, `vitrine index` or a second server's upload, showed
            # only after CATEGORIES_TTL_S: "0 products" above a product of a new category;
            # one read of the embedded store's meta table, helper-222); a store with a mark
            # keeps them until it changes: expired every CATEGORIES_TTL_S as well, a page
            # every 10 s counted every product (under the store lock) and folded every
            # category's name again, with no write (1 s at 60,000 categories)
            mark = self.store.write_mark()
            if cached is None or mark != cached[3] or mark is None and started > cached[0]:
                forgotten = self._categories_forgotten
                counts = self.store.categories()
                cached = (kept_until(started, CATEGORIES_TTL_S), counts, {}, mark)
                if forgotten == self._categories_forgotten:
                    self._categories = cached
            return cached[1], cached[2]

    def categories(self) -> dict[str, int]:
        """Products per category. Counting them reads every product (a GROUP BY, or a scan of
        a Milvus collection), so the catalogue and search pages share one count for
        ``CATEGORIES_TTL_S`` seconds (the embedded store's, until any process writes);
        this service's own writes renew it at once."""
        return dict(self._counted()[0])

    def categories_and(self, derive: Callable[[dict[str, int]], T]
                       ) -> tuple[dict[str, int], T]:
        """:meth:`categories` and ``derive`` of them (given a copy), computed once per count
        and kept with it: folding the names of a store's 20,000 categories took the pages 0.1 s
        of CPU a request. ``derive`` is the key: pass the same function each time."""
        counts, derived = self._derived(derive)
        return dict(counts), derived

    def derived(self, derive: Callable[[dict[str, int]], T]) -> T:
        """``derive`` of :meth:`categories` alone, as :meth:`categories_and` keeps it (the
        counts not copied: not to be changed, nor what it returns)."""
        return self._derived(derive)[1]

    def _derived(self, derive: Callable[[dict[str, int]], T]) -> tuple[dict[str, int], T]:
        """As :meth:`categories_and`, the counts not copied (not to be changed)."""
        counts, derived = self._counted()
        if derive not in derived:
            with self._deriving:  # (not the store's lock: reads go on meanwhile)
                if derive not in derived:
                    derived[derive] = derive(dict(counts))
        return counts, derived[derive]  # type: ignore[return-value]

    def attribute_values(self, most: int) -> dict[str, dict[str, int]]:
        """The store's attribute keys of at most ``most`` values, each value's products
        (:meth:`VectorStore.attribute_values`; not to be changed), counted again only once
        a store with a write mark has been written since, and at most every
        :data:`ATTRIBUTES_TTL_S` (a store without a mark: every ``ATTRIBUTES_TTL_S``)."""
        with (self._counting if getattr(self._store, "concurrent_reads", False)
              else self._store_lock):
            kept, mark, now = self._attributes, self.store.write_mark(), time.monotonic()
            if kept is None or kept[1] != most or \
                    (mark is None or mark != kept[3]) and now > kept[0]:
                values = self.store.attribute_values(most)
                kept = (time.monotonic() + ATTRIBUTES_TTL_S, most, values, mark)
                self._attributes = kept
        return kept[2]

    def has_category(self, category: str) -> bool:
        """Whether the store holds a product of ``category`` (one row read)."""
        with self._store_lock:
            return self.store.has_category(category)
