"""The embedded store's reads of products (:class:`EmbeddedReads`, a part of
:class:`vitrine.store.embedded.EmbeddedStore`): one product, its vector, the fingerprints
and photos of all, where a stored photo is, the categories, the catalogue's pages with the
name search, and every vector in one array or page by page."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterator

import numpy as np

from vitrine.catalog import UPLOAD_NAME, UPLOADS
from vitrine.fold import searchable
from vitrine.store.attribute_index import attribute_index_ready
from vitrine.store.base import PhotoFacts, StoredProduct
from vitrine.store.filters import ProductFilter
from vitrine.store.index_files import stored_vectors
from vitrine.store.search_key import refold_search_keys
from vitrine.store.sqlite_db import COLUMNS, row_to_product

FILTER_PROBE_ROWS = 2000
"""The listing's first rows a filtered page is looked for in, read in order and tested,
before the filter's ids are read whole (``EmbeddedReads.list_products``): a page of 24 of a
filter that lets a tenth of the products through reads about 240 rows."""
FILTER_SORT_MAX = 5000
"""A price range of at most this many products lists them sorted, read by id, rather than
looking up each product of the listing in them (715 products of 100,000: 3 ms against 41 at
offset 2,000)."""
ATTRIBUTE_COUNT_MAX = 20_000
"""Entries of each attribute of a filter of several counted, up to this, to start from the
attribute of the fewest products; a search's filter of attributes that all reach it reads
each one's ids whole and intersects them (:meth:`EmbeddedReads._filter_id_queries`)."""


class EmbeddedReads:
    """The product reads of an :class:`~vitrine.store.embedded.EmbeddedStore`."""

    # ---- reads ----------------------------------------------------------------------------
    def get(self, product_id: str) -> StoredProduct | None:
        row = self.db.execute(f"SELECT {COLUMNS} FROM products WHERE product_id=?",
                              (product_id,)).fetchone()
        return row_to_product(row, self._photo) if row else None

    def vector(self, product_id: str) -> np.ndarray | None:
        row = self.db.execute("SELECT vector FROM products WHERE product_id=?",
                              (product_id,)).fetchone()
        return stored_vectors([row[0]], getattr(self.manifest(), "dim", None), self.root,
                              [product_id])[0] if row else None

    def fingerprints(self) -> dict[str, tuple[str, str]]:
        """product_id → (content sha256, metadata hash) for incremental re-indexing."""
        rows = self.db.execute("SELECT product_id, content_sha256, metadata_hash FROM products")
        return {pid: (sha, meta) for pid, sha, meta in rows}

    def images(self) -> dict[str, str]:
        """product_id → the path of its photo."""
        rows = self.db.execute("SELECT product_id, image FROM products")
        return {pid: self._photo(image) for pid, image in rows}

    def photo_facts(self) -> dict[str, PhotoFacts]:
        rows = self.db.execute("SELECT product_id, image, content_sha256, phash, thumb FROM "
                               "products")
        return {pid: PhotoFacts(self._photo(image), sha, phash, bytes(thumb))
                for pid, image, sha, phash, thumb in rows}

    def names_photo(self, photo: str) -> bool:
        """Whether a product's photo is ``photo`` (a path as :meth:`images` gives them): a
        scan of the photo-path index (a moved store names its photos at the old place, so
        the file name is matched, not the whole path; one served from inside its folder by a
        Vitrine before 29 Nov 2026 as ``uploads/NAME``), not of every product's row."""
        pattern = f"%{UPLOADS}/" + re.sub(r"([%_!])", r"!\1", os.path.basename(photo))
        rows = self.db.execute("SELECT image FROM products WHERE image = ? OR image LIKE ? "
                               "ESCAPE '!'", (photo, pattern))
        return any(self._photo(image) == photo for (image,) in rows)

    def count_photo(self, sha: str) -> int:
        """How many products' photos are of sha256 ``sha`` (its index, no scan)."""
        return self.db.execute("SELECT count(*) FROM products WHERE content_sha256 = ?",
                               (sha,)).fetchone()[0]

    def shared_photo_counts(self) -> dict[str, int]:
        """Photo sha256 → its products, where more than one: a GROUP BY over the
        ``products_content`` index (200,000 products: 0.13 s, where every product's
        :meth:`fingerprints` counted took 3.2 s and 87 MB:
        ``benchmarks/shared_photo_counts.py``)."""
        return dict(self.db.execute(
            "SELECT content_sha256, count(*) FROM products WHERE content_sha256 != '' "
            "GROUP BY content_sha256 HAVING count(*) > 1"))

    def _photo(self, image: str) -> str:
        """Where a stored photo is: for one the server saved (named by its content in a
        store's ``uploads``), this store's own copy when it has one, since a store that was
        moved, copied or restored elsewhere still names the photos of its old folder; else the
        stored path."""
        folder, name = os.path.split(image)
        if os.path.basename(folder) == UPLOADS and UPLOAD_NAME.fullmatch(name):
            own = self.root / UPLOADS / name
            if own.is_file():
                return str(own)
        return image

    def _attributes_indexed(self) -> bool:
        """Whether attribute filters read the attribute index (there whole: made at an
        opening where the store could be written), else every product's JSON."""
        return attribute_index_ready(self.db)

    def _filter_ids_sql(self, where: ProductFilter) -> tuple[str, list]:
        """``where.ids_sql`` on this store: from the attribute index where it is there, its
        attribute of the fewest products first (its entries are each looked up for the
        others)."""
        return self._filter_id_queries(where, whole=True)[0]

    def _filter_id_queries(self, where: ProductFilter, whole: bool = False
                           ) -> list[tuple[str, list]]:
        """The queries whose ids, intersected, are those of the products ``where`` lets
        through: one (``where.ids_sql``), but for attributes that each hold at least
        :data:`ATTRIBUTE_COUNT_MAX` products (counted in the attribute index, up to that),
        unless ``whole``: then one per attribute, read whole, where each of the first's
        entries looked up for the others cost more (1.0 s against 1.8 s of JSON for two of
        125,000 and 333,000 of 1,000,000 products; ``benchmarks/filter_search.py``)."""
        indexed = self._attributes_indexed()
        if not indexed or len(where.attributes) < 2:
            return [where.ids_sql(indexed)]
        sizes = {pair: self.db.execute(
            "SELECT COUNT(*) FROM (SELECT 1 FROM product_attributes WHERE key = ? AND "
            f"value = ? LIMIT {ATTRIBUTE_COUNT_MAX})", pair).fetchone()[0]
            for pair in where.attributes}
        ordered = dataclasses.replace(where, attributes=tuple(
            sorted(where.attributes, key=sizes.__getitem__)))
        if whole or min(sizes.values()) < ATTRIBUTE_COUNT_MAX:
            return [ordered.ids_sql(indexed)]
        return [dataclasses.replace(where, attributes=(pair,)).ids_sql(indexed)
                for pair in ordered.attributes]

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM products").fetchone()[0]

    def count_products(self, *, category: str | None = None,
                       where: ProductFilter | None = None) -> int:
        # (the filter's ids from the products_filter index and the attribute index, no row
        # read; an attribute's JSON parsed from the first, where the store lacks the second:
        # 44-69 ms at 100,000 products; a category's rows read: 17-23 ms,
        # benchmarks/listing_filters.py)
        chosen, params = self._filter_ids_sql(where) if where else ("", [])
        if category is None and chosen:
            return self.db.execute(f"SELECT COUNT(*) FROM ({chosen})", params).fetchone()[0]
        sql, args = "SELECT COUNT(*) FROM products WHERE 1=1", []
        if category is not None:
            sql += " AND category=?"
            args.append(category)
        if chosen:
            sql += f" AND id IN ({chosen})"
            args += params
        return self.db.execute(sql, args).fetchone()[0]

    def categories(self) -> dict[str, int]:
        rows = self.db.execute(
            "SELECT category, COUNT(*) FROM products GROUP BY category ORDER BY category")
        return dict(rows.fetchall())

    def attribute_values(self, most: int) -> dict[str, dict[str, int]]:
        # one pass over the attribute index (its entries in (key, value) order), or where
        # the store lacks it over the attribute JSON of every product; the keys of more than
        # ``most`` values (each value's group counted by the window) are not sent back
        source = ("product_attributes AS j" if self._attributes_indexed() else
                  "products, json_each(products.attributes) AS j WHERE j.type = 'text'")
        rows = self.db.execute(
            "SELECT key, value, n FROM (SELECT j.key AS key, j.value AS value, COUNT(*) AS n, "
            f"COUNT(*) OVER (PARTITION BY j.key) AS kinds FROM {source} "
            "GROUP BY j.key, j.value) WHERE kinds <= ? ORDER BY key, value", (most,))
        values: dict[str, dict[str, int]] = {}
        for key, value, n in rows:
            values.setdefault(key, {})[value] = n
        return values

    def has_category(self, category: str) -> bool:
        return self.db.execute("SELECT 1 FROM products WHERE category=? LIMIT 1",
                               (category,)).fetchone() is not None

    def list_products(self, *, category: str | None = None, query: str | None = None,
                      limit: int = 50, offset: int = 0,
                      after: tuple[str, str, str, str] | None = None,
                      where: ProductFilter | None = None) -> list[StoredProduct]:
        # the page's ids from the listing index (LISTING_INDEX: walked in order, no row read
        # or sorted), then only those rows: a page deep in 300,000 products is milliseconds;
        # in LISTING_ORDER, names as a reader sorts them (case and accents aside)
        if self._keyed and not self._frozen and not self.db.in_transaction:
            refold_search_keys(self.db)  # (an older Vitrine wrote since this process opened
            # the store: its new and renamed products' keys; a no-op once folded)
        page, args = "", []  # (the page's conditions)
        if category is not None:  # ("": the products without one, as search filters)
            page += " AND category=?"
            args.append(category)
        needle = searchable(query or "")
        if needle:  # any part of the name or id, ignoring case and accents (vitrine.fold)
            page += f" AND instr({self._name_search}, ?) > 0"
            args.append(needle)
        if after is not None:  # a row value the listing index's range starts from
            place = dict(zip(("category", self._listing_key, "name", "product_id"), after,
                             strict=True))
            if not self._keyed:
                del place[self._listing_key]
            if category is not None and after[0] == category:  # (within the category: the
                del place["category"]  # index's range, where the whole row value scanned it all)
            if category is None or after[0] == category:
                page += f" AND ({', '.join(place)}) > ({', '.join('?' * len(place))})"
                args += place.values()
            elif after[0] > category:  # (every product of the category is before it)
                page += " AND 0"
        # (a store made before the search_key column, read-only here: by the names as
        # written, as it listed then; folding them as it sorted called Python twice a row of
        # the catalogue for each page, 90 ms became 420 ms at 100,000 products: helper-228)
        order = " ORDER BY " + self._listing_order
        sql = (f"SELECT {COLUMNS} FROM products WHERE id IN ({{}}{order} LIMIT ? OFFSET ?)"
               + order)
        if where:
            indexed = self._attributes_indexed()  # (attributes from their own index)
            clause, params = where.sql(indexed)
            chosen, chosen_params = self._filter_ids_sql(where)

            def few() -> bool:  # (the filter's products counted, up to FILTER_SORT_MAX)
                return self.db.execute(
                    f"SELECT COUNT(*) FROM ({chosen} LIMIT {FILTER_SORT_MAX + 1})",
                    chosen_params).fetchone()[0] <= FILTER_SORT_MAX
            # a price range alone counted first; attributes (from their index) once the
            # listing's first rows did not hold the page (a common attribute's first page
            # took 3.7 ms counted first, against 0.5 ms tested row by row)
            sort = not where.attributes and few()
            if not sort and offset + limit <= FILTER_PROBE_ROWS:  # the page within the
                # listing's first rows, walked in order and tested (a wide range or a common
                # attribute: a page in under 2 ms, where its ids read all first took 30-90
                # ms at 100,000 products; benchmarks/listing_filters.py)
                ids = self._probe(f"SELECT id, ({clause}) FROM products WHERE 1=1{page}"
                                  f"{order} LIMIT {FILTER_PROBE_ROWS}", [*params, *args],
                                  limit, offset)
                if ids is not None:
                    rows = self.db.execute(f"SELECT {COLUMNS} FROM products WHERE id IN "
                                           f"(SELECT value FROM json_each(?)){order}",
                                           (json.dumps(ids),))
                    return [row_to_product(r, self._photo) for r in rows]
            # else the ids of the filter's products (the products_filter index: a price
            # range's own entries; the attribute index's, or each entry's JSON where the
            # store lacks it; no row), each entry of the listing index looked up there as it
            # is walked in order: the "+" keeps SQLite from reading each filtered row and
            # sorting them all, unless the filter holds few (counted in those indexes, up to
            # FILTER_SORT_MAX: a price range's before any probe, attributes' after it): those
            # rows sorted (no match, or a rare attribute: 300-490 ms at 100,000 products read
            # row by row, against 10-100 ms; benchmarks/listing_filters.py)
            sort = sort or bool(indexed and where.attributes and few())
            page += f" AND {'' if sort else '+'}id IN ({chosen})"
            args += chosen_params
        rows = self.db.execute(sql.format("SELECT id FROM products WHERE 1=1" + page),
                               [*args, limit, offset])
        return [row_to_product(r, self._photo) for r in rows]

    def _probe(self, sql: str, args: list, limit: int, offset: int) -> list[int] | None:
        """The ids of a filtered page from ``sql``'s (id, passes the filter) rows in the
        listing's order, read until the page is full; None when its rows ran out first
        (past :data:`FILTER_PROBE_ROWS`: the page is further on, or there is none)."""
        ids: list[int] = []
        seen = 0
        cursor = self.db.execute(sql, args)
        try:
            while len(ids) < limit and (rows := cursor.fetchmany(64)):
                seen += len(rows)
                for rowid, passes in rows:
                    if passes:
                        if offset:
                            offset -= 1
                        elif len(ids) < limit:
                            ids.append(rowid)
        finally:
            cursor.close()
        return ids if len(ids) == limit or seen < FILTER_PROBE_ROWS else None

    def all_vectors(self) -> tuple[list[str], np.ndarray]:
        """Every product id and vector, in the order they were stored; the vectors are
        read into one array as they come (not kept twice: 1.5 GB at 300,000 products)."""
        with self.snapshot():
            dim = getattr(self.manifest(), "dim", None)
            if dim is None:  # (no model recorded: the first row's width)
                first = self.db.execute("SELECT length(vector) FROM products LIMIT 1"
                                        ).fetchone()
                dim = first[0] // 4 if first else 0
            vectors = np.empty((self.count(), dim), np.float32)
            ids = []
            rows = self.db.execute("SELECT product_id, vector FROM products ORDER BY id")
            for i, (pid, blob) in enumerate(rows):
                ids.append(pid)
                if len(blob) != 4 * dim:  # (said by stored_vectors, naming the product)
                    stored_vectors([blob], dim, self.root, [pid])
                vectors[i] = np.frombuffer(blob, dtype=np.float32)
        return ids, vectors

    def iter_products(self, batch: int = 1000, vectors: bool = True
                      ) -> Iterator[list[tuple[StoredProduct, np.ndarray | None]]]:
        with self.snapshot():
            dim = getattr(self.manifest(), "dim", None)
            rows = self.db.execute(f"SELECT {COLUMNS}{', vector' if vectors else ''} "
                                   "FROM products ORDER BY id")
            while page := rows.fetchmany(batch):
                vecs = stored_vectors([r[11] for r in page], dim, self.root,
                                      [r[0] for r in page]) if vectors else [None] * len(page)
                yield [(row_to_product(r[:11], self._photo), v)
                       for r, v in zip(page, vecs, strict=True)]
