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
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from vitrine.ann import IdSet, IndexConfig, LayeredIndex, VectorIndex
from vitrine.catalog import UPLOAD_NAME, UPLOADS, Product
from vitrine.errors import StoreError
from vitrine.fold import searchable
from vitrine.manifest import ModelManifest
from vitrine.photo_hashes import Signature
from vitrine.store.base import CatalogRecord, Match, PhotoFacts, Record, StoredProduct
from vitrine.store.index_files import IndexFiles, stored_vectors
from vitrine.store.search_key import (
    FOLDED_AT,
    SEARCH_KEY_SQL,
    refold_due,
    refold_in,
    refold_search_keys,
    search_key,
)
from vitrine.store.sqlite_db import (
    COLUMNS,
    DB_NAME,
    LISTING_ORDER,
    MANIFEST_NAME,
    disk_full,
    file_id,
    open_database,
    row_to_product,
)
from vitrine.store.writer_lock import WRITE_WAIT, rebuild_lock, take_writer_lock

__all__ = ["DB_NAME", "EmbeddedStore"]


CATEGORY_FILTER_BYTES = 256 * 2**20
"""Memory the category filters kept between searches may take (each holds its category's
ids and a bitmap up to the largest: 125 kB at a million products); past it they start
again."""


class EmbeddedStore(CatalogRecord):
    """SQLite + FAISS store in one folder. Writers hold an exclusive lock file."""

    exclusive_writer = True
    concurrent_reads = False  # (one SQLite connection and FAISS index, shared)

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
        helper-222)."""
        now = file_id(self._given / DB_NAME, version=self._frozen)
        return now is not None and now != self._file

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
    def lock_for_writing(self, wait: float = WRITE_WAIT) -> None:
        """Take the store's writer lock (:func:`take_writer_lock`)."""
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
        """The write generation and the count of field edits (one read of the meta table):
        a new mark after any process's write of products."""
        return tuple(self.db.execute("SELECT key, value FROM meta WHERE key IN "
                                     "('generation', 'categories') ORDER BY key"))

    # ---- manifest -------------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def manifest(self) -> ModelManifest | None:
        value = self._meta("manifest")
        return ModelManifest.read(value, self.root) if value else None

    def set_manifest(self, manifest: ModelManifest) -> None:
        blob = json.dumps(manifest.as_dict(), sort_keys=True)
        tmp = self.root / (MANIFEST_NAME + ".tmp")
        try:  # (first: written after the database's copy, a rerun never wrote it)
            tmp.write_text(json.dumps(manifest.as_dict(), indent=2) + "\n")
            os.replace(tmp, self.root / MANIFEST_NAME)
        except OSError as exc:  # (a full disk: a traceback)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StoreError(f"cannot write {MANIFEST_NAME} in the store {self.root} "
                             f"({exc.strerror or exc}); make room or give write access there, "
                             "then run the command again.") from None
        with self._transaction():
            self._set_meta("manifest", blob)

    def _set_or_forget(self, key: str, value: str | None) -> None:
        with self._transaction(new_generation=False):  # the vectors and index stay as they are
            if value is None:
                self.db.execute("DELETE FROM meta WHERE key=?", (key,))
            else:
                self._set_meta(key, value)

    def duplicate_cache(self) -> bytes | None:
        value = self._meta("duplicates")
        return value if isinstance(value, bytes) else None

    def set_duplicate_cache(self, data: bytes) -> None:
        with self._transaction(new_generation=False):  # a BLOB in the meta table
            self._set_meta("duplicates", data)

    def photo_hashes(self) -> dict[str, tuple[Signature, str]]:
        """Catalogue photo path → ((size, mtime_ns, ctime_ns, inode), sha256) as the last
        ``vitrine index`` saw them (``vitrine.photo_hashes``)."""
        rows = self.db.execute("SELECT path, size, mtime_ns, ctime_ns, ino, sha FROM photo_hashes")
        return {path: ((size, mtime, ctime, ino), sha)
                for path, size, mtime, ctime, ino, sha in rows}

    def set_photo_hashes(self, fresh: dict[str, tuple[Signature, str]],
                         keep: set[str] | None = None) -> None:
        """Remember ``fresh`` hashes; with ``keep``, forget the photos not in it."""
        with self._transaction(new_generation=False):
            self.db.executemany(
                "INSERT OR REPLACE INTO photo_hashes(path, size, mtime_ns, ctime_ns, ino, sha) "
                "VALUES(?,?,?,?,?,?)", [(path, *sig, sha) for path, (sig, sha) in fresh.items()])
            if keep is not None:
                gone = [(path,) for (path,) in self.db.execute("SELECT path FROM photo_hashes")
                        if path not in keep]
                self.db.executemany("DELETE FROM photo_hashes WHERE path=?", gone)

    # ---- writes ---------------------------------------------------------------------------
    def upsert(self, records: Sequence[Record]) -> None:
        """Insert or replace products with their vectors, in one transaction."""
        if not records:
            return
        with self._transaction() as gen:
            for rec in records:
                p = rec.product
                vec = np.ascontiguousarray(rec.vector, dtype=np.float32)
                self.db.execute(
                    "INSERT INTO products(product_id, image, category, name, price, "
                    "description, attributes, content_sha256, metadata_hash, phash, thumb, vector, "
                    "search_key) "
                    "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(product_id) DO UPDATE SET "
                    "image=excluded.image, category=excluded.category, name=excluded.name, "
                    "price=excluded.price, description=excluded.description, "
                    "attributes=excluded.attributes, content_sha256=excluded.content_sha256, "
                    "metadata_hash=excluded.metadata_hash, phash=excluded.phash, "
                    "thumb=excluded.thumb, vector=excluded.vector, "
                    "search_key=excluded.search_key",
                    (p.product_id, str(p.image), p.category, p.name, p.price, p.description,
                     json.dumps(p.attributes, sort_keys=True), rec.content_sha256,
                     p.metadata_hash(), rec.phash, rec.thumb, vec.tobytes(),
                     search_key(p.name, p.product_id)))
                self._changed(gen, p.product_id)

    def update_metadata(self, products: Sequence[Product]) -> None:
        """Change names, prices, categories… of stored products without touching vectors: the
        FAISS index stays (no new generation); readers drop their category filters."""
        if not products:
            return
        with self._transaction(new_generation=False):
            self._bump("categories")
            for p in products:
                self.db.execute(
                    "UPDATE products SET image=?, category=?, name=?, price=?, description=?, "
                    "attributes=?, metadata_hash=?, search_key=? WHERE product_id=?",
                    (str(p.image), p.category, p.name, p.price, p.description,
                     json.dumps(p.attributes, sort_keys=True), p.metadata_hash(),
                     search_key(p.name, p.product_id), p.product_id))

    def set_thumbs(self, thumbs: dict[str, tuple[str, bytes]]) -> list[str]:
        """New thumbnails in one transaction; the vectors and the FAISS index stay (no new
        generation)."""
        if not thumbs:
            return []
        written = []
        with self._transaction(new_generation=False):
            for pid, (sha, thumb) in thumbs.items():
                if self.db.execute("UPDATE products SET thumb=? WHERE product_id=? AND "
                                   "content_sha256=?", (thumb, pid, sha)).rowcount:
                    written.append(pid)
        return written

    def delete(self, product_ids: Iterable[str]) -> int:
        ids = list(product_ids)
        if not ids:
            return 0
        removed = 0
        with self._transaction() as gen:
            for pid in ids:
                self._changed(gen, pid)
                removed += self.db.execute("DELETE FROM products WHERE product_id=?",
                                           (pid,)).rowcount
        return removed

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

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM products").fetchone()[0]

    def categories(self) -> dict[str, int]:
        rows = self.db.execute(
            "SELECT category, COUNT(*) FROM products GROUP BY category ORDER BY category")
        return dict(rows.fetchall())

    def has_category(self, category: str) -> bool:
        return self.db.execute("SELECT 1 FROM products WHERE category=? LIMIT 1",
                               (category,)).fetchone() is not None

    def list_products(self, *, category: str | None = None, query: str | None = None,
                      limit: int = 50, offset: int = 0,
                      after: tuple[str, str, str, str] | None = None) -> list[StoredProduct]:
        # the page's ids from the listing index (LISTING_INDEX: walked in order, no row read
        # or sorted), then only those rows: a page deep in 300,000 products is milliseconds;
        # in LISTING_ORDER, names as a reader sorts them (case and accents aside)
        if self._keyed and not self._frozen and not self.db.in_transaction:
            refold_search_keys(self.db)  # (an older Vitrine wrote since this process opened
            # the store: its new and renamed products' keys; a no-op once folded)
        page, args = "SELECT id FROM products WHERE 1=1", []
        if category:
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
            if category and after[0] == category:  # (within the category: the index's
                del place["category"]  # range, where the whole row value scanned it all)
            if not category or after[0] == category:
                page += f" AND ({', '.join(place)}) > ({', '.join('?' * len(place))})"
                args += place.values()
            elif after[0] > category:  # (every product of the category is before it)
                page += " AND 0"
        # (a store made before the search_key column, read-only here: by the names as
        # written, as it listed then; folding them as it sorted called Python twice a row of
        # the catalogue for each page, 90 ms became 420 ms at 100,000 products: helper-228)
        order = " ORDER BY " + self._listing_order
        sql = (f"SELECT {COLUMNS} FROM products WHERE id IN ({page}{order} LIMIT ? OFFSET ?)"
               + order)
        args += [limit, offset]
        return [row_to_product(r, self._photo) for r in self.db.execute(sql, args)]

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
               exclude: str | None = None) -> list[Match]:
        """Top-``k`` products by cosine similarity (vectors are L2-normalised).

        Index, category filter and product rows come from one database snapshot, so a search
        running while another process writes sees one committed state."""
        vector = np.ascontiguousarray(vector, np.float32).reshape(1, -1)
        return self.search_many(vector, k, category=category,
                                exclude=None if exclude is None else [exclude])[0]

    def search_many(self, vectors: np.ndarray, k: int, *, category: str | None = None,
                    exclude: Sequence[str] | None = None) -> list[list[Match]]:
        """:meth:`search` for each row of ``vectors`` (without ``exclude[i]`` in the i-th's
        results), in one index call: a batch of flat queries is one matrix product, and a
        batch of HNSW ones runs on every core."""
        with self.snapshot():
            index = self._current_index()
            if index.ntotal == 0 or k <= 0 or not len(vectors):
                return [[] for _ in range(len(vectors))]
            subset = None if category is None else self._category_subset(category)
            if subset is not None and len(subset) == 0:
                return [[] for _ in range(len(vectors))]
            fetch = min(k + (1 if exclude is not None else 0), index.ntotal)
            # one query on one thread (VectorIndex.search), and the two of a framed photo
            # (the whole team woke for them: 0.7 ms became 22 ms, helper-229), a batch on
            # every core
            found = index.search_many(vectors, fetch, subset,
                                      threads=1 if len(vectors) <= 2 else None)
            rows = self._products_by_row({int(i) for _, ids in found for i in ids})
        results = []
        for i, (scores, ids) in enumerate(found):
            skip = None if exclude is None else exclude[i]
            matches = [Match(rows[int(rowid)], float(score))
                       for score, rowid in zip(scores, ids, strict=True)
                       if int(rowid) in rows and rows[int(rowid)].product_id != skip]
            results.append(matches[:k])
        return results

    def _category_subset(self, category: str) -> IdSet:
        """The row ids of ``category``'s products, kept for the next searches until another
        process changes a category (up to ``CATEGORY_FILTER_BYTES`` of them)."""
        version = self._counter("categories")  # another process may have changed some
        if version != self._category_version:
            self._category_ids, self._category_version = {}, version
        subset = self._category_ids.get(category)
        if subset is None:
            rows = self.db.execute("SELECT id FROM products WHERE category=?", (category,))
            subset = IdSet(np.fromiter((r[0] for r in rows), dtype=np.int64))
            if len(subset) == 0:  # not kept: any string a client sends would stay
                return subset
            if sum(kept.nbytes for kept in self._category_ids.values()) \
                    + subset.nbytes > CATEGORY_FILTER_BYTES:
                self._category_ids.clear()
            self._category_ids[category] = subset
        return subset

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
