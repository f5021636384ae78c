"""The embedded store's SQLite database: its schema, and opening it (created, migrated to
the current columns, or read as it is from a read-only folder or a full disk)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from vitrine.catalog import EDITED, UPLOADED
from vitrine.errors import NoStore, StoreError
from vitrine.store.attribute_index import make_attribute_index
from vitrine.store.base import StoredProduct
from vitrine.store.index_files import CHANGES_SCHEMA
from vitrine.store.search_key import add_search_key, refold_search_keys, searchable_sql

DB_NAME = "vitrine.sqlite"
MANIFEST_NAME = "manifest.json"
DB_PATH_MAX = 504
"""The longest path SQLite opens a database at, in bytes: its 512 less the "-journal" it adds
for the file beside it (measured: at 505 bytes it said "unable to open database file")."""
WAL_LIMIT = 64 << 20
"""Bytes the write-ahead log is cut back to once checkpointed: it grows past SQLite's own
4 MB while a long read (an index rebuild, a migrate) holds its snapshot, and stayed that
large."""
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS products (
    id INTEGER PRIMARY KEY,
    product_id TEXT UNIQUE NOT NULL,
    image TEXT NOT NULL,
    category TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL DEFAULT '',
    price REAL,
    description TEXT NOT NULL DEFAULT '',
    attributes TEXT NOT NULL DEFAULT '{}',
    content_sha256 TEXT NOT NULL,
    metadata_hash TEXT NOT NULL,
    phash TEXT NOT NULL DEFAULT '',
    thumb BLOB NOT NULL DEFAULT x'',
    vector BLOB NOT NULL,
    search_key TEXT
);
CREATE INDEX IF NOT EXISTS products_category ON products(category);
CREATE TABLE IF NOT EXISTS photo_hashes (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL, ino INTEGER NOT NULL, sha TEXT NOT NULL
);
""" + CHANGES_SCHEMA
LISTING_ORDER = "category, search_key, name, product_id"
"""The order pages list products in: by category, then by name as a reader sorts it, case
and accents aside (``search_key``: the folded name, then the folded id; "anel", "Bolsa",
"Échappe", "Óculos", "Zíper", where the raw names' code points put "Zíper" before "anel" and
"Échappe" after them all); equal folded names by the folded id, then by the name as
written and the id (each product once, in one order, page after page)."""
LISTING_INDEX_NAME = "products_listing_folded"
LISTING_INDEX = (f"CREATE INDEX IF NOT EXISTS {LISTING_INDEX_NAME} ON products("
                 f"{LISTING_ORDER})")
"""The order pages list products in, with the folded names a name search reads: a page is
found in the index alone, whatever its depth and filter."""
OLD_LISTING_INDEXES = ("products_listing",)
"""Listing indexes of earlier Vitrines (``products_listing``: the raw names' order, on
(category, name, product_id, search_key)), dropped once the current one is made: it would
only take room and slow writes. A store read-only here keeps it, and lists from a sort."""
INDEXES = (LISTING_INDEX,
           "CREATE INDEX IF NOT EXISTS products_image ON products(image)",
           "CREATE INDEX IF NOT EXISTS products_content ON products(content_sha256)",
           "CREATE INDEX IF NOT EXISTS products_filter ON products(price, attributes)")
"""Made when a store is opened where it can be written; the second finds the products of a
photo (``EmbeddedStore.names_photo``) without reading theirs, the third those of a photo's
copies (``EmbeddedStore._photo_rows``, ``vitrine.copies``: the `similar` of each product
whose photo file another product shares read every row, 90-100 ms at 100,000 products of
1,280-d beside a 10 ms search, measured by hand). The fourth answers a filter's first search
(``EmbeddedStore._filter_rows``): a price range reads its own products' entries, not every
row with its vector and thumbnail (about 50 bytes a product where a row takes kilobytes;
``benchmarks/filter_search.py``); an attribute, from the attribute index
(:mod:`vitrine.store.attribute_index`, made after these), or where the store lacks that,
from the JSON in this index's entries."""
COLUMNS = ("product_id, image, category, name, price, description, attributes, "
           "content_sha256, phash, thumb, metadata_hash")
DISK_FULL = 1 << 20
"""Free bytes below which a failure to open the database is said to be the full disk's."""
FILES_FULL = 4
"""Free files (inodes) below which it is said to be the full disk's: SQLite makes two
beside the database (-wal, -shm), and without them says "unable to open database file"."""


def row_to_product(row: sqlite3.Row | tuple, photo: Callable[[str], str]) -> StoredProduct:
    pid, image, category, name, price, description, attributes, sha, phash, thumb, meta = row
    return StoredProduct(product_id=pid, image=photo(image), category=category, name=name,
                         price=price, description=description,
                         attributes=json.loads(attributes or "{}"), content_sha256=sha,
                         phash=phash, thumb=bytes(thumb), uploaded=meta.startswith(UPLOADED),
                         edited=meta.startswith(EDITED))


def file_id(path: Path, version: bool = False) -> tuple[int, ...] | None:
    """The device and inode of ``path`` (which file it is), with ``version`` also its size
    and modification time (which content), or None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) if version else (
        st.st_dev, st.st_ino)


def disk_full(root: Path, exc: Exception) -> bool:
    """Whether SQLite's ``exc`` on the store at ``root`` comes from a full disk: SQLite says
    so ("database or disk is full"), or says "disk I/O error" or "unable to open database
    file" (making its WAL files) where no room is left, in bytes or in files (a disk out of
    files was said to hold a store that is not readable: helper-245)."""
    name = getattr(exc, "sqlite_errorname", "")
    if name == "SQLITE_FULL" or "full" in str(exc):
        return True
    if not (name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN")) or any(
            words in str(exc) for words in ("disk I/O error", "unable to open database file"))):
        return False  # ("readonly database", "no such table": not the disk's room)
    if (name.startswith("SQLITE_CANTOPEN") or "unable to open database file" in str(exc)) \
            and not all(os.access(f, os.R_OK | os.W_OK) for f in (
                root / f"{DB_NAME}{s}" for s in ("", "-wal", "-shm"))
                        if f.exists()):  # (none yet: a new store, out of room to make it)
        return False  # (a database this user may not open: no room would open it)
    return out_of_room(root)


def out_of_room(root: Path, unknown: bool = False) -> bool:
    """Whether the disk holding ``root`` has less than :data:`DISK_FULL` bytes or
    :data:`FILES_FULL` files free; ``unknown`` where it cannot be told."""
    try:
        room = os.statvfs(root)
    except OSError:
        return unknown
    return (room.f_bavail * room.f_frsize < DISK_FULL
            or room.f_files > 0 and room.f_favail < FILES_FULL)


def room_to_write(root: Path, size: int = DISK_FULL) -> bool:
    """Whether ``size`` bytes can be written in the folder ``root`` now: a file without a
    name there (gone as it is closed) is given them. Where the file system shows room and
    SQLite still said "database or disk is full" (a quota), this is how room is seen again
    (:meth:`EmbeddedStore.replaced`)."""
    try:
        with tempfile.TemporaryFile(dir=root) as fh:
            if hasattr(os, "posix_fallocate"):  # (blocks taken, nothing written)
                os.posix_fallocate(fh.fileno(), 0, size)
            else:
                fh.write(bytes(size))
                fh.flush()
                os.fsync(fh.fileno())
    except OSError:
        return False
    return True


def wal_holds_writes(root: Path) -> bool:
    """Whether the store at ``root`` has writes in its WAL file not folded into the
    database yet (read as a file that does not change, they would be missed)."""
    wal = root / f"{DB_NAME}-wal"
    return wal.is_file() and wal.stat().st_size > 0


def _refuse_foreign(db: sqlite3.Connection, db_path: Path) -> None:
    """A StoreError, before anything is written, when ``db_path`` is another program's
    database (tables, none of them a store's meta or products table: a store whose creation
    stopped has one): `vitrine info` added the store's tables to it and switched it to WAL
    mode."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    def columns(table: str) -> set[str]:
        return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}

    if tables and not (columns("meta") == {"key", "value"}
                       or "product_id" in columns("products")):
        db.close()
        raise StoreError(f"{db_path} is a database of another program, not a Vitrine store "
                         f"(its tables: {', '.join(sorted(tables)[:3])}"
                         f"{' …' if len(tables) > 3 else ''}); it is left as it is.")


WAL_SWITCH_WAIT = 30.0
"""Seconds an opening waits for another process's opening of a new store to let go of it."""


def _journal_mode_wal(db: sqlite3.Connection, wait: float | None = None) -> None:
    """Put the database in WAL mode. Switching a new database's journal needs it alone, and
    SQLite answers "database is locked" at once there, without its busy timeout: two `vitrine
    index` runs started together on a new store (or a server started as the first run made
    it) had one end "is not a readable Vitrine store (database is locked)", status 2. Tried
    again until the other opening is done, for up to ``wait`` seconds (None:
    :data:`WAL_SWITCH_WAIT`)."""
    deadline = time.monotonic() + (WAL_SWITCH_WAIT if wait is None else wait)
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorname", "").startswith("SQLITE_BUSY") or \
                "database is locked" in str(exc)
            if not busy or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def _make_indexes(db: sqlite3.Connection) -> None:
    """Make those of :data:`INDEXES` the store lacks, without waiting for a writer at work:
    the next opening makes them (a reader opening a store an older Vitrine made waited up to
    SQLite's 30 s behind an `index` run's transaction to make one: helper-355)."""
    names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    wanted = [sql for sql in INDEXES if sql.split()[5] not in names]
    if not wanted:
        return
    waits = db.execute("PRAGMA busy_timeout").fetchone()[0]
    db.execute("PRAGMA busy_timeout = 0")
    try:
        for sql in wanted:
            with contextlib.suppress(sqlite3.OperationalError):
                db.execute(sql)
    finally:
        db.execute(f"PRAGMA busy_timeout = {int(waits)}")


def _drop_old_listing_indexes(db: sqlite3.Connection) -> None:
    """Drop :data:`OLD_LISTING_INDEXES` once the current listing index is there (not made:
    a full disk, a read-only store; the old one then still serves name search's reads)."""
    names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    if LISTING_INDEX_NAME not in names:
        return
    for old in OLD_LISTING_INDEXES:
        if old in names:
            with contextlib.suppress(sqlite3.OperationalError):
                db.execute(f"DROP INDEX IF EXISTS {old}")


def _require_json(db: sqlite3.Connection) -> None:
    """A StoreError when this Python's SQLite lacks its JSON functions (``json_each`` finds
    the products of a product's copies, ``json_extract`` and ``json_each`` read the
    attribute filters: :mod:`vitrine.store.filters`): built in since SQLite 3.38, optional
    before; without them a search failed half-way, "no such table: json_each"."""
    try:
        db.execute("SELECT json_extract('{\"a\": 1}', '$.a'), "
                   "(SELECT count(*) FROM json_each('[1]'))").fetchone()
    except sqlite3.OperationalError as exc:
        if "json" not in str(exc):  # (not the functions': a full disk reading the schema)
            raise
        db.close()
        raise StoreError(
            f"this Python's SQLite ({sqlite3.sqlite_version}) was built without its JSON "
            f"functions ({exc}), which the store's searches need: run Vitrine with a "
            "Python whose sqlite3 module has them (SQLite 3.38 or later has them built "
            "in).") from None


def _create_database(db_path: Path) -> None:
    """Make a new store's database whole or not at all: its tables made in a file of this
    process beside it (a rollback journal: all in that file once committed), then linked in
    under its name (not over another process's making the same store: theirs is kept; where
    the file system makes no hard links, renamed in under a lock of the folder,
    :func:`_folder_locked`, when none is there yet). A
    first `vitrine index` on a full disk left an empty or half-made vitrine.sqlite, which
    every later command refused as empty, or as written by an older Vitrine."""
    while True:  # (a name of this process's own, no longer than the database's: DB_PATH_MAX)
        part = db_path.with_name(f"vitrine.{secrets.token_hex(3)}")
        try:
            os.close(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            break
        except FileExistsError:
            continue
    try:
        db = sqlite3.connect(part, isolation_level=None)
        try:
            _require_json(db)
            db.executescript(f"BEGIN; {SCHEMA} COMMIT;")
        finally:
            db.close()
        try:
            os.link(part, db_path)
        except FileExistsError:  # (made meanwhile by another process: theirs)
            pass
        except OSError:  # (a file system without hard links)
            with _folder_locked(db_path.parent):
                if not db_path.exists():
                    os.replace(part, db_path)
    finally:
        for leftover in (part, part.with_name(part.name + "-journal")):
            leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def _folder_locked(folder: Path) -> Iterator[None]:
    """An flock on the store folder itself while a new database is renamed in where hard
    links cannot be made: the look for one there and the rename are one step between
    processes (two making the same store each found none, and the second renamed its empty
    database over the first's, into which that one may have written already). A file system
    that takes no flock either is left as before (the look and the rename, unlocked)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # (a folder this user may write in, not read)
        fd = None
    try:
        with contextlib.suppress(OSError):  # (ENOLCK, EOPNOTSUPP: no locks there)
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)  # (held for a rename: no wait to bound)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # (the lock with it)


def _made_new(root: Path, made_folder: bool) -> None:
    """Make the database of a new store at ``root``; where it cannot be, leave nothing (the
    folder too, when made for it) and say so."""
    try:
        _create_database(root / DB_NAME)
    except BaseException as exc:
        writable = os.access(root, os.W_OK)
        full = writable and (isinstance(exc, sqlite3.Error) and disk_full(root, exc) or
                             isinstance(exc, OSError) and exc.errno == errno.ENOSPC)
        if made_folder:
            with contextlib.suppress(OSError):
                root.rmdir()
        if not isinstance(exc, (sqlite3.Error, OSError)):
            raise
        if not writable:  # (a read-only volume: as for a store there, EmbeddedStore)
            raise StoreError(f"cannot write to the store {root}; it is read-only here."
                             ) from None
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise StoreError(f"cannot make the store {root}: " + (
            f"the disk holding it is full ({reason}). Free some space there and run the "
            "command again; no store was left there." if full else
            f"{reason}; no store was left there.")) from None


def open_database(root: Path, *, create: bool,
                  ) -> tuple[sqlite3.Connection, set[str], list[str], bool]:
    """Open (``create``: or make) the database of the store folder ``root``: the connection,
    the columns its products table has, those it lacks (a store of an older Vitrine), and
    whether it is read as a file that does not change (``immutable``: a read-only folder,
    or one on a full disk, where SQLite cannot make its WAL files; a change made elsewhere
    is not seen through it, so its reader opens it again: EmbeddedStore.replaced)."""
    db_path = root / DB_NAME
    try:
        str(root).encode("utf-8")
    except UnicodeEncodeError:  # (its index files are saved and read by FAISS, which takes
        # UTF-8 paths only: `index` wrote every product, then ended in a TypeError
        # traceback, and so did every search of the store)
        raise StoreError(f"the store's folder {root} has a path that is not UTF-8 (named by "
                         "another system, such as a zip made on Windows); choose a --store "
                         "path without such a name, or rename it.") from None
    length = len(os.fsencode(os.path.abspath(db_path)))
    if length > DB_PATH_MAX:  # said as "not a readable Vitrine store (unable to open ...)"
        raise StoreError(f"the store's folder {root} is too deep: SQLite opens {DB_NAME} at a "
                         f"path of at most {DB_PATH_MAX} bytes, and there it would be {length}; "
                         "choose a shorter --store path.")
    try:  # (Python 3.11's pathlib raises on a folder this user may not enter)
        there = db_path.exists()
    except PermissionError as exc:
        raise StoreError(f"cannot open the store {root} ({exc.strerror}: its folder, or one "
                         "above it, does not let this user in); give read access there, or "
                         "run as the store's owner.") from None
    if not create and db_path.is_file() and db_path.stat().st_size == 0:
        raise StoreError(f"{db_path} is empty: no Vitrine store was written there (a copy "
                         "that failed?); index into it, or restore it.")
    if not there:
        if root.exists() and not root.is_dir():
            raise StoreError(f"{root} is a file, not a store folder.")
        if not create:
            raise NoStore(f"no Vitrine store at {root}; create one with "
                          f"'vitrine index CATALOG_DIR --store {root}'.")
        made_folder = not root.exists()
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create store folder {root} ({exc.strerror}).") from None
        _made_new(root, made_folder)
    frozen = False
    db = None
    try:
        try:
            db = sqlite3.connect(db_path, timeout=30, isolation_level=None,
                                 check_same_thread=False)
            _require_json(db)
            _refuse_foreign(db, db_path)
            _journal_mode_wal(db)
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
            db.executescript(SCHEMA)
        except sqlite3.OperationalError as exc:
            if db is not None:
                db.close()
            full = None
            if os.access(root, os.W_OK):
                if not disk_full(root, exc):
                    raise
                full = StoreError(  # (not a damaged store)
                    f"cannot open the store {root}: the disk holding it is full ({exc}; "
                    "SQLite needs a little room beside its database to open it). Free "
                    "some space there; the store itself is as it was" + (
                        "" if there else ": made now, empty") + ".")
                # SQLite cannot make its WAL files, as in a read-only folder: a store at
                # rest (its writes all in the database) is read as it is (`similar`,
                # `info` and the server's pages and searches all failed until space was
                # freed); its writes are refused (EmbeddedStore.lock_for_writing)
                if create or wal_holds_writes(root):
                    raise full from None
            # a read-only folder (a read-only volume of replicas, say): SQLite cannot make
            # its WAL files there, so read the file as it is; writes are refused
            elif create:  # to write into (index, migrate): say why it cannot be
                raise StoreError(f"cannot write to the store {root}; it is read-only "
                                 "here.") from None
            elif wal_holds_writes(root):  # read as it is, they would be lost
                wal = root / f"{DB_NAME}-wal"
                raise StoreError(
                    f"the store {root} is read-only here, and its last writes are still in "
                    f"{wal.name}, which SQLite reads only with the {DB_NAME}-shm file beside "
                    "it (missing here, and it cannot be made here): read without them, the "
                    "store would lack those writes. To read it here, run `vitrine info "
                    "--store` on it once where its folder can be written, which folds them "
                    f"into {DB_NAME}, or copy the store again with its {DB_NAME}-shm file, "
                    "or once every process writing to it has stopped.") from None
            try:
                db = sqlite3.connect(f"{db_path.as_uri()}?mode=ro&immutable=1", uri=True,
                                     isolation_level=None, check_same_thread=False)
            except sqlite3.OperationalError:
                if full is None:
                    raise
                raise full from None
            frozen = True
            _require_json(db)
        # name search folds case and accents in SQL (see list_products)
        db.create_function("vitrine_searchable", 1, searchable_sql, deterministic=True)
        have = {row[1] for row in db.execute("PRAGMA table_info(products)")}
        missing = [c for c in (*COLUMNS.split(", "), "vector") if c not in have]
        # a store lacking columns is refused by its opener, left as it was
        if not missing and "search_key" not in have and add_search_key(db):
            have.add("search_key")
        elif not missing and "search_key" in have and not frozen:
            refold_search_keys(db)  # (rows an older Vitrine wrote since)
        if not missing and "search_key" in have:  # made once per store (read-only here:
            _make_indexes(db)  # pages sort as they read, photo look-ups read every row)
            _drop_old_listing_indexes(db)
            make_attribute_index(db)  # (read-only here: attribute filters read the JSON)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{db_path} is not a readable Vitrine store ({exc}).") from None
    return db, have, missing, frozen
