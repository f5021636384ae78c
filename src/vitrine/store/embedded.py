"""The default store: one folder with SQLite (source of truth) and a FAISS index file (cache).

SQLite holds products, attributes, hashes and vectors, so every write is one transaction and a
killed process loses nothing committed. The FAISS inner-product index is a cache in files
named by the database's write generation (``vitrine.store.index_files``): a generation without
its own file is searched through the newest saved index plus the rows written since, or the
index is rebuilt from SQLite and saved atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vitrine.ann import TIE_DEPTH, IdSet, IndexConfig, LayeredIndex, VectorIndex
from vitrine.catalog import Product
from vitrine.errors import StoreError
from vitrine.store.base import CatalogRecord, Match, StoredProduct
from vitrine.store.embedded_meta import EmbeddedMeta
from vitrine.store.embedded_reads import EmbeddedReads
from vitrine.store.embedded_writes import EmbeddedWrites
from vitrine.store.filters import ProductFilter
from vitrine.store.index_files import IndexFiles
from vitrine.store.search_key import FOLDED_AT, SEARCH_KEY_SQL, refold_due, refold_in
from vitrine.store.sqlite_db import (
    COLUMNS,
    DB_NAME,
    LISTING_ORDER,
    disk_full,
    file_id,
    open_database,
    out_of_room,
    room_to_write,
    row_to_product,
)
from vitrine.store.writer_lock import rebuild_lock, take_writer_lock

__all__ = ["DB_NAME", "EmbeddedStore"]


FULL_RETRY_SECONDS = 5.0
"""How often a store read as it is from a disk full by SQLite's word alone (a quota: the
file system shows room) tries whether it has room again (:meth:`EmbeddedStore.replaced`)."""
CATEGORY_FILTER_BYTES = 256 * 2**20
"""Memory the category filters kept between searches may take (each holds its category's
ids and a bitmap up to the largest: 125 kB at a million products); past it they start
again."""


class EmbeddedStore(EmbeddedMeta, EmbeddedWrites, EmbeddedReads, CatalogRecord):
    """SQLite + FAISS store in one folder. Writers hold an exclusive lock file."""

    exclusive_writer = True
    concurrent_reads = False  # (one SQLite connection and FAISS index, shared)
    hides_photos = True
    """:meth:`search_many` takes ``exclude_photos`` (``vitrine.copies``)."""

    def __init__(self, root: Path, *, create: bool = False,
                 index_config: IndexConfig | None = None):
        self.root = Path(root).expanduser().resolve()  # stored photo paths must not
        # depend on the folder the server or `vitrine index` was started from
        self._given = Path(root).expanduser().absolute()  # (a link as a link: replaced())
        self.index_config = index_config or IndexConfig.defaults()
        self.location = str(root)
        db_path = self.root / DB_NAME
        seen = file_id(db_path, version=True)  # (before reading: a change after is seen)
        self.db, have, missing, self._frozen = open_database(self.root, create=create)
        self._file = seen if self._frozen else file_id(db_path)
        # read as it is though its folder can be written: its disk was full (open_database);
        # short of room as the file system counts it, or else (a quota) tried: replaced()
        self._full = self._frozen and os.access(self.root, os.W_OK)
        self._short = self._full and out_of_room(self.root)
        self._room_tried, self._room = time.monotonic(), False
        if missing:
            self.db.close()
            raise StoreError(f"{self.root} was written by an older Vitrine (no "
                             f"{', '.join(missing)} column); index the catalogue into a new "
                             "store.")
        self._keyed = "search_key" in have
        # (a row an older Vitrine wrote while this process had the store open has no key
        # until a write or the next opening folds it: such a row is folded as it is read)
        trusted = self._keyed and not (self._frozen and refold_due(self.db))
        self._name_search = (f"COALESCE(search_key, {SEARCH_KEY_SQL})" if trusted
                             else f"({SEARCH_KEY_SQL})")  # (read-only here, keys unfolded:
        # each row folded as it is read, as in a store made before the column)
        # what pages sort by after the category: the keys kept, or where they cannot be
        # trusted each row folded as it is read, as a cursor's place is (listing_order):
        # sorted by an older Vitrine's rename's stale key, a cursor after that product
        # started at its new name's place, and every product between was never listed
        self._listing_key = "search_key" if trusted else f"({SEARCH_KEY_SQL})"
        self._listing_order = (LISTING_ORDER.replace("search_key", self._listing_key)
                               if self._keyed else "category, name, product_id")
        self._lock_fh = None
        self._files = IndexFiles(self.root, self.index_config, self.db,
                                 lambda: getattr(self.manifest(), "dim", 1), self._meta,
                                 self._forget_changes)
        self._index: VectorIndex | LayeredIndex | None = None
        self._index_gen = -1
        self._index_stamp: tuple[int, int | None] | None = None
        self._category_ids: dict[str, IdSet] = {}
        self._category_version = -1
        self._filter_ids: dict[ProductFilter, IdSet] = {}
        self._filter_stamp: tuple[int, int] | None = None
        self._photo_ids: dict[frozenset[str], IdSet] = {}
        self._photo_gen = -1

    def too_long(self, product: Product | StoredProduct) -> str | None:
        """Nothing is too long for SQLite's text columns."""
        return None

    def replaced(self) -> bool:
        """True when the store's database is now another file than the one opened (deleted
        and indexed anew); not while there is none. Read from a read-only folder (as a file
        that does not change: ``immutable``), also when the file changed (written where it
        can be: the replicas of a read-only volume served deleted products, then 500s).
        Looked up by the path the store was opened by: a link to the store's folder pointed
        at another store (``ln -sfn releases/b current``) is another file there (the server
        read the old store and wrote to the new one, its uploads in the old one's folder:
        helper-222). Read as it is from a full disk, also once the disk has room again."""
        now = file_id(self._given / DB_NAME, version=self._frozen)
        if now is not None and now != self._file:
            return True
        # opened on a full disk: once there is room again it is opened anew, in WAL mode (as
        # a file that does not change it missed what writers left in their WAL)
        if not self._full or now is None:
            return False
        if self._short:
            return not out_of_room(self._given, unknown=True)
        # full by SQLite's word alone, the file system showing room (a quota's limit): its
        # room is tried every FULL_RETRY_SECONDS (a running server answered every write
        # "free some space" until it was restarted)
        if not self._room and time.monotonic() >= self._room_tried + FULL_RETRY_SECONDS:
            self._room = room_to_write(self._given)
            self._room_tried = time.monotonic()
        return self._room

    def present(self) -> bool:
        """(A folder this user may no longer enter raises PermissionError: not gone.) Looked
        up by the path the store was opened by, as :meth:`replaced` (a link to it deleted:
        /healthz said ok, writes "no store": helper-225)."""
        try:
            (self._given / DB_NAME).stat()
        except PermissionError:
            raise
        except OSError:
            return False
        return True

    # ---- locking and transactions -------------------------------------------------------
    def lock_for_writing(self, wait: float | None = None) -> None:
        """Take the store's writer lock (:func:`take_writer_lock`; ``wait`` None:
        :data:`~vitrine.store.writer_lock.WRITE_WAIT`)."""
        if self._lock_fh is None and self._frozen:  # (its connection reads only)
            raise StoreError(
                f"the disk holding the store {self.root} is full: it was opened to be read "
                "only, and nothing was changed (free some space and try again)."
                if self._full else f"cannot write to the store {self.root}; it is "
                "read-only here.")
        if self._lock_fh is None:
            self._lock_fh = take_writer_lock(self.root, wait)

    @contextlib.contextmanager
    def _transaction(self, *, new_generation: bool = True):
        """One write transaction; it starts a new write generation (yielded: the FAISS index
        then takes the rows written, ``changes``) unless ``new_generation`` is False (a write
        the index does not depend on)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            gen = None
            if new_generation:
                last = self._counter("generation")
                # past every index file in the folder: one left by another copy of this
                # database (a backup restored, a database deleted to start over) was named
                # by the same numbers for other rows
                gen = max(last, self._files.newest_generation()) + 1
                if gen != last + 1:  # no index file before this write is this database's
                    self._set_meta("changes_from", gen + 1)
                elif self._meta("tracked") != str(last):  # a write that did not record its
                    self._set_meta("changes_from", gen)  # rows (a Vitrine from before them)
                    if self._keyed and self._meta(
                            FOLDED_AT) != str(last):  # nor their search keys (unless
                        refold_in(self.db)  # opening folded them)
                self._set_meta("generation", gen)
                self._set_meta("tracked", gen)
            yield gen
            self.db.execute("COMMIT")
        except BaseException as exc:
            if self.db.in_transaction:  # SQLite may have rolled back already (disk full)
                self.db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError) and disk_full(self.root, exc):
                raise StoreError(f"the disk holding the store {self.root} is full; the "
                                 "write in progress was undone, what was stored before it is "
                                 "kept (free some space and try again).") from None
            raise

    @contextlib.contextmanager
    def snapshot(self):
        """Run several reads on one consistent database snapshot (WAL read transaction)."""
        if self.db.in_transaction:
            yield
            return
        self.db.execute("BEGIN")
        try:
            yield
        finally:
            self.db.execute("COMMIT")

    def _set_meta(self, key: str, value: object) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", (key, value))

    def _changed(self, gen: int, product_id: str) -> None:
        """Record that the row of ``product_id`` is written or deleted in ``gen``."""
        self.db.execute("INSERT OR REPLACE INTO changes(id, gen) SELECT id, ? FROM products "
                        "WHERE product_id=?", (gen, product_id))

    def _forget_changes(self, generation: int) -> None:
        """Delete the changes up to ``generation``: a writer saved an index that covers them."""
        with self._transaction(new_generation=False):
            self.db.execute("DELETE FROM changes WHERE gen <= ?", (generation,))
            self._set_meta("changes_pruned", generation)

    def _bump(self, key: str) -> None:
        """Count one more write of a kind (inside a transaction)."""
        self.db.execute("INSERT INTO meta(key, value) VALUES(?, '1') ON CONFLICT(key) "
                        "DO UPDATE SET value = CAST(value AS INTEGER) + 1", (key,))

    def _counter(self, key: str) -> int:
        return int(self._meta(key) or 0)

    def generation(self) -> int:
        return self._counter("generation")

    def write_mark(self) -> tuple:
        """The write generation, the count of field edits and of duplicate cache saves (one
        read of the meta table): a new mark after any process's write of products or of
        the photo counts saved with them (``set_duplicate_cache``)."""
        return tuple(self.db.execute("SELECT key, value FROM meta WHERE key IN "
                                     "('generation', 'categories', 'duplicates_saved') "
                                     "ORDER BY key"))

    # ---- search ---------------------------------------------------------------------------
    def _current_index(self) -> VectorIndex | LayeredIndex:
        """The FAISS index for the database's current generation (``IndexFiles``); a layered
        one until the generation's own file is saved, and on the newest index saved meanwhile
        (the server's rebuild, saved under the generation of its snapshot while writes went
        on: no write need come after it): looked for again when this process saved an index
        in the folder or the folder changed since (``IndexFiles.stamp``: one stat a
        search)."""
        gen = self.generation()
        index = self._index
        if index is not None and self._index_gen == gen:
            if not isinstance(index, LayeredIndex):
                return index
            stamp = self._files.stamp()
            if stamp == self._index_stamp and stamp[1] is not None:
                return index
            n = index.ntotal
        else:
            stamp, n = self._files.stamp(), self.count()
        # (looking again at the generation held: a saved index to layer on, or the one held,
        # never a build inside the search for a layer still right: helper-186)
        again = index is not None and self._index_gen == gen
        fresh = self._files.current(gen, n, writer=self._lock_fh is not None,
                                    build=not again)
        if fresh is None:
            fresh = index
        if fresh is not index or self._index_gen != gen:
            self._index, self._index_gen, self._category_ids = fresh, gen, {}
        self._index_stamp = stamp
        return fresh

    def search(self, vector: np.ndarray, k: int, *, category: str | None = None,
               exclude: str | None = None, where: ProductFilter | None = None
               ) -> list[Match]:
        """Top-``k`` products by cosine similarity (vectors are L2-normalised).

        Index, category filter and product rows come from one database snapshot, so a search
        running while another process writes sees one committed state."""
        vector = np.ascontiguousarray(vector, np.float32).reshape(1, -1)
        return self.search_many(vector, k, category=category,
                                exclude=None if exclude is None else [exclude],
                                where=where)[0]

    def search_many(self, vectors: np.ndarray, k: int, *, category: str | None = None,
                    exclude: Sequence[str] | None = None,
                    exclude_photos: frozenset[str] | None = None,
                    where: ProductFilter | None = None) -> list[list[Match]]:
        """:meth:`search` for each row of ``vectors`` (without ``exclude[i]`` in the i-th's
        results), in one index call: a batch of flat queries is one matrix product, and a
        batch of HNSW ones runs on every core. ``exclude_photos``: photo sha256s whose
        products are left out of every row's results inside the index search
        (:mod:`vitrine.copies`: thousands of copies of a placeholder photo are not fetched
        to be dropped). ``where``: the products of a price range and attributes only
        (:mod:`vitrine.store.filters`), their row ids read as the category's are."""
        with self.snapshot():
            index = self._current_index()
            if index.ntotal == 0 or k <= 0 or not len(vectors):
                return [[] for _ in range(len(vectors))]
            subset = None if category is None else self._category_subset(category)
            if where:
                allowed = self._filter_rows(where)
                subset = allowed if subset is None else IdSet(np.intersect1d(
                    subset.ids, allowed.ids, assume_unique=True))
            hidden = self._photo_rows(exclude_photos) if exclude_photos else None
            if hidden is not None and subset is not None:
                subset, hidden = IdSet(np.setdiff1d(subset.ids, hidden.ids,
                                                    assume_unique=True)), None
            if hidden is not None and not len(hidden):
                hidden = None
            if subset is not None and len(subset) == 0:
                return [[] for _ in range(len(vectors))]
            fetch = min(k + (1 if exclude is not None else 0), index.ntotal)
            # one query on one thread (VectorIndex.search), and the two of a framed photo
            # (the whole team woke for them: 0.7 ms became 22 ms, helper-229), a batch on
            # every core
            threads = 1 if len(vectors) <= 2 else None
            found = index.search_many(vectors, min(fetch + 1, index.ntotal), subset, hidden,
                                      threads=threads)
            # equal scores at the last place taken by product id, as Milvus takes them (the
            # index takes them by row: s06 here, s00 there, of one photo's products written
            # s06 to s00; :func:`vitrine.copies.one_a_photo` shows the first by id)
            tied = [i for i, (scores, _) in enumerate(found)
                    if fetch < len(scores) and scores[fetch] == scores[fetch - 1]]
            deeper = min(index.ntotal, max(2 * (fetch + 1), TIE_DEPTH))
            if tied and deeper > fetch + 1:
                again = index.search_many(np.asarray(vectors)[tied], deeper, subset, hidden,
                                          threads=threads)
                for i, top in zip(tied, again, strict=True):
                    found[i] = top
            rows = self._products_by_row({int(i) for _, ids in found for i in ids})
        results = []
        for i, (scores, ids) in enumerate(found):
            skip = None if exclude is None else exclude[i]
            matches = [Match(rows[int(rowid)], float(score))
                       for score, rowid in zip(scores, ids, strict=True)
                       if int(rowid) in rows and rows[int(rowid)].product_id != skip]
            matches.sort(key=lambda m: (-m.score, m.product.product_id))
            results.append(matches[:k])
        return results

    def _category_subset(self, category: str) -> IdSet:
        """The row ids of ``category``'s products, kept for the next searches until another
        process changes a category (up to ``CATEGORY_FILTER_BYTES`` of them)."""
        version = self._counter("categories")  # another process may have changed some
        if version != self._category_version:
            self._category_ids, self._category_version = {}, version
        return self._rows_kept(self._category_ids, category,
                               [("SELECT id FROM products WHERE category=?", (category,))])

    def _filter_rows(self, where: ProductFilter) -> IdSet:
        """The row ids of the products ``where`` lets through, kept for the next searches
        until another write (a new generation, or ``update_metadata``'s count of changes: a
        price changed starts no generation), up to ``CATEGORY_FILTER_BYTES`` of them. Read
        from the ``products_filter`` index (``sqlite_db.INDEXES``) and the attribute index
        (:mod:`vitrine.store.attribute_index`), not from every row: a store read-only here
        that lacks them is scanned (140-260 ms at 100,000 products, an attribute's JSON
        parsed from the first 53-75 ms; ``benchmarks/filter_search.py``)."""
        stamp = (self.generation(), self._counter("categories"))
        if stamp != self._filter_stamp:
            self._filter_ids, self._filter_stamp = {}, stamp
        return self._rows_kept(self._filter_ids, where, self._filter_id_queries(where),
                               most=64)

    def _rows_kept(self, kept: dict, key, queries: list[tuple[str, Sequence]],
                   most: int | None = None) -> IdSet:
        """The row ids the ``queries`` (SQL, parameters) all select, kept in ``kept`` under
        ``key`` for the next searches (up to ``CATEGORY_FILTER_BYTES`` of them all, and
        ``most`` keys); none kept when they select none: any value a client sends would
        stay."""
        rows = kept.get(key)
        if rows is None:  # (as one string: read a row at a time, the first search of half
            # of 100,000 products' prices took 42-50 ms, now 10-14; filter_search.py)
            ids = None  # (several: each one's ids, intersected)
            for sql, params in queries:
                text = self.db.execute(f"SELECT group_concat(id) FROM ({sql})",
                                       params).fetchone()[0]
                found = np.fromstring(text or "", dtype=np.int64, sep=",")
                ids = found if ids is None else np.intersect1d(ids, found)
                if not len(ids):
                    break
            rows = IdSet(ids)
            if len(rows) == 0:
                return rows
            if most is not None and len(kept) >= most or \
                    sum(r.nbytes for r in kept.values()) + rows.nbytes > CATEGORY_FILTER_BYTES:
                kept.clear()
            kept[key] = rows
        return rows

    def _photo_rows(self, shas: frozenset[str]) -> IdSet:
        """The row ids of the products of these photo sha256s, kept for the next searches
        of this write generation (through the ``products_content`` index; a store read-only
        here that lacks it is scanned)."""
        gen = self.generation()
        if gen != self._photo_gen:
            self._photo_ids, self._photo_gen = {}, gen
        rows = self._photo_ids.get(shas)
        if rows is None:  # (one scan, however many photos)
            found = self.db.execute("SELECT id FROM products WHERE content_sha256 IN "
                                    "(SELECT value FROM json_each(?))",
                                    (json.dumps(sorted(shas)),))
            rows = IdSet(np.fromiter((r[0] for r in found), dtype=np.int64))
            if len(self._photo_ids) >= 64:  # (a few large groups are what is kept for)
                self._photo_ids.clear()
            self._photo_ids[shas] = rows
        return rows

    def _products_by_row(self, rowids: set[int], chunk: int = 500) -> dict[int, StoredProduct]:
        """The products of these row ids (a row deleted meanwhile is left out)."""
        ordered = sorted(rowids)
        found = {}
        for start in range(0, len(ordered), chunk):
            part = ordered[start:start + chunk]
            marks = ",".join("?" * len(part))
            for row in self.db.execute(f"SELECT id, {COLUMNS} FROM products WHERE id IN "
                                       f"({marks})", part):
                found[row[0]] = row_to_product(row[1:], self._photo)
        return found

    def flush(self, rebuild: bool = True) -> None:
        """Make sure the saved index files let a searcher start at once (nothing to do when
        the current generation's file is there, or a saved index to layer it on). Without
        ``rebuild`` (a write through the API, which must not take minutes) an index past
        its layer's limit is left for :meth:`rebuild_index`."""
        gen = self.generation()
        if self._index is None or self._index_gen != gen:
            self._files.flush(gen, self.count(), writer=self._lock_fh is not None,
                              rebuild=rebuild)

    def index_unsaved(self) -> str | None:
        return self._files.unsaved

    def index_due(self) -> bool:
        """Whether the saved index is past its layer's limit (or missing): a rebuild is due."""
        with self.snapshot():
            return self._files.due(self.generation(), self.count())

    def rebuild_due_beside_reads(self) -> bool:
        """Whether a rebuild of a store holding products is due (:meth:`index_due`) while
        this process's searches layer
        meanwhile: where a search cannot, it builds the index itself, and a rebuild beside
        it built the same index twice (two copies of the vectors at once)."""
        with self.snapshot():
            gen, n = self.generation(), self.count()
            return n > 0 and self._files.due(gen, n) and self._files.reader_layers(gen, n)

    def rebuild_index(self) -> bool:
        """Build and save the index of the current generation (minutes for a large HNSW
        index): the server runs it beside its requests, other processes' searches start
        from the file. False, with nothing done, while another process rebuilds it; a
        StoreError when it could not be saved."""
        with rebuild_lock(self.root) as mine:
            if not mine:
                return False
            with self.snapshot():
                why = self._files.rebuild(self.generation(), self.count(),
                                          lambda: not self.replaced())
        if why is not None:
            raise StoreError(f"the rebuilt index of {self.root} could not be saved ({why}).")
        return True

    def close(self) -> None:
        self.db.close()
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None
