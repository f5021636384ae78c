"""The web app's view of one store: thread-safe reads, photo search with timings, and adding or
removing products. The REST API and the web pages both call this; neither touches the store.

Concurrency: the SQLite connection and the FAISS index of the read store are shared, so every
read holds ``_store_lock`` (reads are sub-millisecond), but the listing and the category
counts of a store whose reads may run side by side (Milvus: ``concurrent_reads``), which may
read a whole catalogue's order for seconds. Forward passes hold ``_model_lock``:
torch already uses every core for one image, so queuing them beats running them side by side.
Decoding runs unlocked. Writes go through a short-lived second store object that takes the
store's writer lock, so ``vitrine index`` and the server never write at the same time.
Photos added through the API are kept in ``STORE/uploads`` (``VITRINE_UPLOAD_DIR`` for a store
that is not a folder, such as Milvus).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from vitrine.catalog import (
    Product,
    categories_by_key,
    first_of_each_form,
    named_alike,
    one_form,
    stored_category,
)
from vitrine.config import Settings
from vitrine.embed import CategoryGuess, Embedder, decode, decode_query
from vitrine.errors import CatalogError, ServerBusy, StoreBusy, StoreError
from vitrine.images import container_kind
from vitrine.indexer import check_manifest
from vitrine.manifest import ModelManifest, mismatch_error
from vitrine.recommend import ProductNotFound, Recommender, stored_product
from vitrine.store import (
    EmbeddedStore,
    cleanable_uploads,
    save_photo,
    store_for,
    unmarked_upload,
    upload_folder,
)
from vitrine.store.base import Match, Record, StoredProduct, VectorStore, kept_until
from vitrine.store.writer_lock import busy, writer_running
from vitrine.write_ticket import WriteCancelled, committing, write_cancelled

log = logging.getLogger(__name__)
CATEGORIES_TTL_S = 10.0
"""How long the pages reuse one count of the products per category of a store that keeps no
record of its writes (Milvus: writes through this service renew it at once, another
process's show after this long); the embedded store's are counted again after any write."""
FOLLOW_RETRY_SECONDS = 1.0
"""How long the server waits before trying again to open a store's new database it could not
read yet (being created, or written where a read-only replica cannot read it)."""
API_WRITE_WAIT = 2.0
"""Seconds a write through the API waits, in all, for the writes ahead of it (this server's,
another server's, a `vitrine index` run) before it is refused (409)."""
WRITER_POLL_S = 2.0
"""Seconds between a server's looks at whether the process writing its store (a `vitrine
index` running as it started) is done, to tell then whether a rebuild is due."""
_SIGNATURES = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG\r\n\x1a\n", ".png"), (b"GIF8", ".gif"),
               (b"BM", ".bmp"), (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"))


def image_suffix(data: bytes) -> str:
    """File extension for an already-decoded photo, from its leading bytes."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    kind = container_kind(data)  # ISO-BMFF: AVIF or HEIF
    if kind:
        return "." + kind
    for magic, suffix in _SIGNATURES:
        if data.startswith(magic):
            return suffix
    return ".img"


@dataclass
class SearchTimings:
    """Where the time of one photo search went, in milliseconds."""

    decode_ms: float
    model_ms: float
    search_ms: float

    def server_timing(self) -> str:
        """The value of a ``Server-Timing`` response header."""
        return (f"decode;dur={self.decode_ms:.2f}, model;dur={self.model_ms:.2f}, "
                f"search;dur={self.search_ms:.2f}")


@dataclass
class NewProduct:
    """The fields of a product added through the API (its photo comes separately)."""

    product_id: str
    name: str = ""
    category: str = ""
    price: float | None = None
    description: str = ""


DECODE_SLOTS = max(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else os.cpu_count() or 2)
"""Photos decoded at once, uploaded or copied for the pages (the others wait for a slot): one
per core this process may use."""


SEARCHES_AT_ONCE = 16
"""Photo searches the server takes at once (decoding, waiting for the model or the store);
more are refused at once with a 503 to try again (ServerBusy). A hundred sent together, each
a 40-megapixel PNG of 132 kB, took every one of the server's 40 request threads: pages and
/healthz waited 62 s (helper-238); now they keep 24."""


def _malloc_trim() -> Callable[[], object]:
    """glibc's ``malloc_trim(0)``, or a no-op where there is none (musl, macOS)."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


_release_memory = _malloc_trim()
T = TypeVar("T")


def _no_upload_folder(location: str | Path) -> str:
    return (f"the store {location} is not a folder; set VITRINE_UPLOAD_DIR to a folder for "
            "the photos of products added through the API")


def check_upload_folder(folder: Path | None, settings: Settings,
                        location: str | Path) -> None:
    """Said when a server opens writes (VITRINE_API_KEY), not at each upload (a 409 after
    the model's work): an upload folder that is a file or under one is a StoreError; none
    (a Milvus store without VITRINE_UPLOAD_DIR) a note, since deleting and editing products
    still work. Nothing is made here: a read-only replica keeps starting."""
    if folder is None:
        log.warning("note: %s; until then adding a product is refused.",
                    _no_upload_folder(location))
        return
    named = " (VITRINE_UPLOAD_DIR)" if settings.upload_dir else ""
    if folder.is_symlink() and not folder.exists():
        raise StoreError(f"the upload folder {folder}{named} is a link to nothing; the "
                         "photos of products added through the API need a folder there.")
    above = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if above is not None and not above.is_dir():  # (every upload was a 500, then a 409)
        where = "is a file" if above == folder else f"is under a file ({above})"
        raise StoreError(f"the upload folder {folder}{named} {where}; the photos of "
                         "products added through the API need a folder there.")


class VitrineService:
    """One store, one model, shared by all request threads."""

    def __init__(self, settings: Settings, location: str | Path,
                 embedder: Embedder | None = None):
        self.settings = settings
        self.location = location
        self._store_lock = threading.RLock()  # re-entrant: a read may call another
        self._store = self._open()
        self._follow_after = 0.0  # (monotonic time before which a new database is not tried)
        self._refusal_logged = ""  # (the last new database's refusal, logged once)
        try:
            self._recommender = Recommender(self._store, settings, embedder)
            self.embedder = self._recommender.embedder  # loads the model; checks the manifest
            size = self.embedder.prep.size  # one forward pass now: no request pays for set-up
            self.embedder.embed_arrays(np.zeros((1, 3, size, size), np.float32))
        except BaseException:  # (a Milvus Lite file stays locked while it is open)
            self._store.close()
            raise
        self._model_checked = self._store.manifest() is not None  # (and matched: see above)
        if (source := self._store.copying_from()) is not None:  # (it looked complete)
            log.warning("%s is an unfinished copy of %s: `vitrine migrate` stopped before its "
                        "end; run it again to finish it", location, source)
        if settings.api_key:  # writes open: where their photos go is said now
            try:
                check_upload_folder(self._upload_folder(), settings, location)
            except StoreError:
                self._store.close()
                raise
        self._model_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._rebuilding = threading.Lock()  # held while the index is rebuilt beside requests
        self._rebuilding_start = threading.Lock()  # (a rebuild starts wholly before close())
        self.rebuild_thread: threading.Thread | None = None
        # photos decoded at once: each may take hundreds of MB (a 40-MP PNG), and the server's
        # 40 request threads decoding together took gigabytes; in threads of their own, since
        # glibc keeps what each thread freed for that thread (a slot for any request thread
        # still left 20 uploads of 40 megapixels at 4 GB, idle)
        self._decoder = ThreadPoolExecutor(DECODE_SLOTS, thread_name_prefix="vitrine-decode")
        self._searches = threading.BoundedSemaphore(SEARCHES_AT_ONCE)
        # (when the counts are counted again; the counts; what was derived from them; the
        # store's write mark when they were read)
        self._categories: tuple[float, dict[str, int], dict[Callable, object], object
                                ] | None = None
        self._deriving = threading.Lock()  # one request derives, the others wait for it
        self._counting = threading.Lock()  # (counts of a store read without _store_lock)
        self._categories_forgotten = 0  # (how many times the counts were dropped)
        self._catalogue: tuple[str | None, float] | None = None
        self._closing = threading.Event()  # (set by close(): no rebuild starts after it)
        self._rebuild_if_due_at_start()

    def _open(self) -> VectorStore:
        return store_for(self.location, self.settings)

    @property
    def store(self) -> VectorStore:
        """The store read from: opened again when its database is now another file (the
        store deleted and indexed anew), which the server kept reading while its writes,
        each through a new handle, went to the new one."""
        # (the clock first: while a failed reopen waits its second, no stat per read)
        if time.monotonic() >= self._follow_after and self._store.replaced():
            with self._store_lock:
                if time.monotonic() >= self._follow_after and self._store.replaced():
                    self._follow_new_database()
        return self._store

    @property
    def recommender(self) -> Recommender:
        """The recommender over :attr:`store` (as current)."""
        self.store  # noqa: B018 - opened again if replaced
        return self._recommender

    def _follow_new_database(self) -> None:
        """Read the store's new database once it names its model; until then (it is being
        written) the old one, tried again a second later (each try held every read: a
        read-only replica's while its writer ran). One made by another model is refused,
        as at start."""
        self._follow_after = time.monotonic() + FOLLOW_RETRY_SECONDS
        try:
            fresh = self._open()
        except StoreError:  # not a store yet (being created; read-only, its writer running)
            return
        try:
            stored = fresh.manifest()
        except StoreError:
            stored = None
        if stored is None:
            fresh.close()
            return
        self._follow_after = 0.0
        if stored != self.embedder.manifest:
            try:
                refused = self._model_refused(fresh, stored)
            finally:
                fresh.close()
            raise refused
        self._store.close()
        self._store = self._recommender.store = fresh
        self._forget_categories()

    def _check_model(self) -> None:
        """Refuse a photo search with another model than the store's, as at start, also for a
        store that named none then (the server started while its first `index` ran, or on
        one a killed index left empty): that index may have used another model. Read until
        the store names one; checked once it matches."""
        if self._model_checked:
            return
        with self._store_lock:
            stored = self.store.manifest()
        if stored is None:
            return
        if stored != self.embedder.manifest:
            with self._store_lock:
                refused = self._model_refused(self.store, stored)
            raise refused
        self._model_checked = True

    def _model_refused(self, store: VectorStore, stored: ModelManifest) -> StoreError:
        """The error for a store whose vectors another model than the server's made (indexed
        anew under it): logged whole, once, since it names the model folders and the command
        line's options (a client was shown the server's paths); a client is told the store
        cannot be used until the server is started again."""
        whole = str(mismatch_error(store.location, stored, self.embedder.manifest,
                                   store.model_folder(), self.embedder.model_dir))
        if whole != self._refusal_logged:  # (a new database is tried again each second)
            self._refusal_logged = whole
            log.error("%s", whole)
        return StoreError(f"the store {self.location} holds the vectors of another model "
                          "than the server's (indexed with it since the server started): it "
                          "cannot be used until the server is started again with that model "
                          "(its log says which).")

    def _upload_folder(self) -> Path | None:
        return upload_folder(self.store, self.settings.upload_dir)

    # ---- reads ----------------------------------------------------------------------------
    def product(self, product_id: str) -> StoredProduct:
        with self._store_lock:
            return self.recommender.product(product_id)

    def products(self, *, category: str | None, query: str | None, limit: int,
                 offset: int, resolved: bool = False,
                 after: tuple[str, str, str, str] | None = None
                 ) -> tuple[list[StoredProduct], bool]:
        """One page of products and whether another page follows; ``query`` is read without
        the spaces around it, as the page's search box is. ``resolved``: ``category`` is as
        the store spells it already (a page's, :func:`vitrine.web.pages.page_category`), not
        looked up again. ``after``: the page after that place in the order (a cursor)."""
        if not resolved:
            category = self.stored_category(category)  # (takes the lock itself)
        # a store whose reads may run side by side (Milvus: a page may read its whole
        # catalogue's order, 2.5 s at 20,000 products, which held every other request) lists
        # without the lock; the embedded store's connection and index are shared
        with (contextlib.nullcontext() if getattr(self._store, "concurrent_reads", False)
              else self._store_lock):
            found = self.store.list_products(category=category,
                                             query=(query or "").strip() or None,
                                             limit=limit + 1, offset=offset, after=after)
        return found[:limit], len(found) > limit

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
            mine = stored_product(self.store, product_id)
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

    def has_category(self, category: str) -> bool:
        """Whether the store holds a product of ``category`` (one row read)."""
        with self._store_lock:
            return self.store.has_category(category)

    def count(self) -> int:
        with self._store_lock:
            return self.store.count()

    def present(self) -> bool:
        """Whether the store's files are still there (see VectorStore.present)."""
        return self._store.present()

    def similar(self, product_id: str, k: int, category: str | None = None, *,
                same_category: bool = False) -> tuple[StoredProduct, list[Match]]:
        category = self.stored_category(category)
        with self._store_lock:
            return self.recommender.similar(product_id, k, category,
                                            same_category=same_category)

    def image_path(self, product_id: str) -> Path:
        """The stored photo of a product; raises ProductNotFound when it has none on disk."""
        path = Path(self.product(product_id).image)
        if not path.is_file():
            raise ProductNotFound(product_id, "the photo of product {id} is missing.")
        if not self.settings.follow_outside_links and not self._inside(path):
            # a photo replaced by a link elsewhere since it was indexed (a supplier's zip
            # unpacked over the catalogue): served until the next `index` removed it
            raise ProductNotFound(product_id, "the photo of product {id} is outside the "
                                  "catalogue folder (VITRINE_FOLLOW_OUTSIDE_LINKS=false).")
        return path

    def _inside(self, path: Path) -> bool:
        """Whether the photo at ``path`` is still where `index` let it be: under the catalogue
        folder or the upload folder, by its real path, when the stored path is under one of
        them; else (a store that records no folder, a release the catalogue link has left)
        at a path with no link in it."""
        folders = [f for f in (self._catalogue_folder(), self._upload_folder()) if f]
        real = os.path.realpath(path)
        # (each folder it is under: a store's uploads inside the catalogue may link elsewhere)
        under = [f for f in folders if path.is_relative_to(f)]
        if under:
            return any(Path(real).is_relative_to(os.path.realpath(f)) for f in under)
        return real == os.path.abspath(path)

    def _catalogue_folder(self) -> str | None:
        """The store's catalogue folder, read again after CATEGORIES_TTL_S (a Milvus store's
        is a query: 1 ms, under the store lock, for each photo sent)."""
        now = time.monotonic()
        if self._catalogue is None or now - self._catalogue[1] > CATEGORIES_TTL_S:
            with self._store_lock:
                self._catalogue = (self.store.catalog_folder(), now)
        return self._catalogue[0]

    # ---- photo search ---------------------------------------------------------------------
    def decoded(self, work: Callable[..., T], *args: object) -> T:
        """``work(*args)`` (a photo decoded: an upload, or a copy of a stored photo the pages
        show, a card or a TIFF's view, which anyone may ask for) in one of the
        :data:`DECODE_SLOTS` decoding threads, waiting for one (four 40-megapixel copies at
        once took the server to 5 GB); what a large one allocated is given back to the system
        after it (its pixels are freed, but glibc kept them: :data:`TRIM_AFTER_S`)."""
        return self._decoder.submit(_trimmed, work, *args).result()

    def search_photo(self, data: bytes, k: int, category: str | None = None, *,
                     resolved: bool = False
                     ) -> tuple[list[Match], SearchTimings, CategoryGuess | None]:
        """Products most similar to uploaded photo bytes, the timings, and the photo's likely
        category (a trained model's, else None); raises ImageError for a bad file, and
        ServerBusy when :data:`SEARCHES_AT_ONCE` are under way. ``resolved``: as
        :meth:`products`."""
        if not self._searches.acquire(blocking=False):
            raise ServerBusy("The server has too many photo searches under way; try again "
                             "in a moment.")
        try:
            return self._search_photo(data, k, category, resolved)
        finally:
            self._searches.release()

    def _search_photo(self, data: bytes, k: int, category: str | None, resolved: bool
                      ) -> tuple[list[Match], SearchTimings, CategoryGuess | None]:
        self._check_model()
        prep = self.embedder.prep
        t0 = time.perf_counter()
        batch = self.decoded(decode_query, data, prep, self.settings.max_image_pixels)
        t1 = time.perf_counter()
        with self._model_lock:  # (a photo in a wide frame: it and its product, one batch)
            vectors = self.embedder.embed_arrays(batch)
        t2 = time.perf_counter()
        if not resolved:
            category = self.stored_category(category)
        with self._store_lock:
            matches, leading = self.recommender.search_vectors(vectors, k, category)
        t3 = time.perf_counter()
        timings = SearchTimings((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)
        return matches, timings, self.embedder.guess_category(vectors[leading])

    # ---- writes ---------------------------------------------------------------------------
    def add_product(self, fields: NewProduct, data: bytes) -> tuple[StoredProduct, bool]:
        """Store a product with its photo (replacing one with the same id); returns it and
        whether it is new. The photo is saved as ``STORE/uploads/<sha256><ext>``."""
        sent = fields.category
        fields = dataclasses.replace(fields, category=self._edited_category(  # (a product
            fields.product_id, sent))  # replaced may respell its own, as a PATCH)
        _check_fits(self.store, Product(  # before the model's work (the photo's path aside)
            product_id=fields.product_id, image=Path(), category=fields.category,
            name=fields.name, price=fields.price, description=fields.description))
        folder = self._upload_folder()  # (also before it)
        if folder is None:
            raise StoreError(_no_upload_folder(self.location) + ".")
        array, phash, thumb = self.decoded(decode, data, self.embedder.prep,
                                           self.settings.max_image_pixels)
        with self._model_lock:
            vector = self.embedder.embed_arrays(array[None])[0]
        sha = hashlib.sha256(data).hexdigest()
        photo = folder / f"{sha}{image_suffix(data)}"
        product = Product(product_id=fields.product_id, image=photo, category=fields.category,
                          name=fields.name, price=fields.price, description=fields.description,
                          uploaded=True)
        # the category read again once the writes before are in (two uploads of a new
        # category in two spellings at once each found none and made twins; the first read
        # refused a bad one before the model's work)
        with self._writer(lambda: self._edited_category(fields.product_id, sent)
                          ) as (writer, category):
            check_manifest(writer, self.embedder, refused=self._model_refused)
            if category != product.category:
                product = dataclasses.replace(product, category=category)
            previous = stored_product(writer, fields.product_id)
            if previous is not None:  # replaced under the id as the store spells it
                product = dataclasses.replace(product, product_id=previous.product_id)
            with committing() as committed:  # (a request the server answered, stopping:
                # nothing saved, its photo neither)
                wrote_photo = save_photo(folder, photo, data)
                try:
                    writer.upsert([Record(product, sha, phash, thumb, vector)])
                except BaseException:
                    if wrote_photo:
                        photo.unlink(missing_ok=True)
                    raise
                committed(product.product_id)
            writer.flush(rebuild=False)
            if previous is not None:
                _remove_orphan(writer, Path(previous.image), folder)
            stored = writer.get(product.product_id)
        assert stored is not None
        return stored, previous is None

    def edit_product(self, product_id: str, changes: dict) -> StoredProduct:
        """Change a stored product's name, category, price or description (the keys of
        ``changes``) and keep its photo and vector. A catalogue product keeps being one:
        the next ``vitrine index`` of its table, which is where its fields come from, sets
        them back to the table's values."""
        changes = dict(changes)
        sent = changes.get("category")
        with self._writer(lambda: sent and self._edited_category(product_id, sent)
                          ) as (writer, category):  # (read with the writes before it in)
            if category:
                changes["category"] = category
            current = stored_product(writer, product_id)
            if current is None:
                raise ProductNotFound(product_id)
            uploaded = current.uploaded or unmarked_upload(
                current.image, self._upload_folder(), (writer.catalog_folder(),))
            changed = current.to_product(uploaded=uploaded, **changes)
            _check_fits(writer, changed)
            with committing() as committed:
                writer.update_metadata([changed])
                committed(current.product_id)
            writer.flush(rebuild=False)
            stored = writer.get(current.product_id)
        assert stored is not None
        return stored

    def delete_product(self, product_id: str) -> None:
        """Remove a product (and its uploaded photo when no other product uses it)."""
        with self._writer() as (writer, _):
            previous = stored_product(writer, product_id)
            if previous is None:
                raise ProductNotFound(product_id)
            with committing() as committed:
                writer.delete([previous.product_id])
                committed(previous.product_id)
            writer.flush(rebuild=False)
            _remove_orphan(writer, Path(previous.image), self._upload_folder())

    @contextlib.contextmanager
    def _writer(self, first: Callable[[], T] | None = None
                ) -> Iterator[tuple[VectorStore, T | None]]:
        """The store to write through, one write at a time, with what ``first`` returned.
        For the embedded store, a second store object holding the store's writer lock until
        it closes; other stores (Milvus) serialise writers themselves and are written
        through the read store. ``first`` runs once this write holds the write locks,
        before the read store's lock is taken for the others (a count of a Milvus store's
        categories under it held every read for seconds: helper-239)."""
        if write_cancelled():  # (answered already, the server stopping: not worth
            # waiting for the store; each write checks again as it changes the store)
            raise WriteCancelled()
        started = time.monotonic()  # one wait for both locks: a burst of uploads queued
        # behind `vitrine index` would hold every request thread
        if not self._write_lock.acquire(timeout=API_WRITE_WAIT):
            raise StoreBusy(f"another write to the store {self.location} is still in "
                            "progress; try again in a moment.")
        try:
            if not isinstance(self.store, EmbeddedStore):
                found = first() if first is not None else None
                with self._store_lock:
                    yield self.store, found
                return
            writer = self._open_writer()
            try:
                try:
                    writer.lock_for_writing(max(0.0, started + API_WRITE_WAIT
                                                - time.monotonic()))
                except StoreBusy:  # (said with the whole wait: it said 0.5 s after 2 s)
                    raise busy(self.location, time.monotonic() - started) from None
                yield writer, first() if first is not None else None
                self._rebuild_if_due(writer.index_due)
            finally:
                writer.close()
        finally:
            with self._store_lock:  # (before the next write reads them)
                self._forget_categories()  # the counts may have changed
            self._write_lock.release()

    def _open_writer(self) -> VectorStore:
        """The store opened again to write through. A store whose database is no longer where
        the server opened it (deleted or moved away; being made anew by a `vitrine index`
        that has not created it yet) is said as such: "create one with 'vitrine index'" told
        a client to run what may be running already."""
        try:
            return self._open()
        except StoreError:
            try:
                there = self.present()
            except PermissionError:  # (its folder shut, not gone: said as it was)
                there = True
            if there:
                raise
            raise StoreError(f"the store {self.location} is gone: its database is no longer "
                             "where the server opened it; nothing changed (if it is being "
                             "indexed anew, try again once that is done).") from None

    def _rebuild_if_due(self, due_now: Callable[[], bool]) -> None:
        """Start the index rebuild when ``due_now()`` says it is due (a write left it so, or
        the server starts); a failure to tell is logged, not a request's error."""
        try:
            due = due_now()
        except Exception:
            log.exception("could not tell whether the index of %s needs a rebuild",
                          self.location)
            return
        if due:
            self._rebuild_index()

    def _rebuild_if_due_at_start(self) -> None:
        """Start the index rebuild at once where the store has no index of this server's
        settings to search (another kind, size or precision named since `vitrine index`
        saved its own): searches layered on the other kind's index, exact and slower at
        scale, until a write or `vitrine index` rebuilt it (helper-183). Not in a folder the
        server may not write in (a read-only replica), which cannot save it, nor where its
        first search builds the index itself (none saved; told `flat` on a store of
        graphs): the two built it twice (helper-225)."""
        store = self._store
        if not (isinstance(store, EmbeddedStore) and os.access(store.root, os.W_OK)):
            return
        if not writer_running(store.root):
            self._rebuild_if_due(store.rebuild_due_beside_reads)
            return
        # another process writes (`vitrine index`, which saves its own index at its end): a
        # rebuild now built from the products written so far, and that end removed it when
        # the settings differ (helper-199); told once the writer is done
        root = store.root

        def after_the_writer() -> None:
            # (asked every WRITER_POLL_S, each time at the folder's path: a thread blocked
            # on the lock outlived close() with its file open, for hours; a second run
            # right after the first is waited for too: helper-235)
            while writer_running(root):
                if self._closing.wait(WRITER_POLL_S):
                    return
            if not self._closing.is_set():
                self._rebuild_if_due(self._due_beside_reads)

        threading.Thread(target=after_the_writer, name="vitrine-index-wait",
                         daemon=True).start()

    def _due_beside_reads(self) -> bool:
        """:meth:`EmbeddedStore.rebuild_due_beside_reads`, through a store opened for it (not
        the request threads' own)."""
        store = self._open()
        try:
            return store.rebuild_due_beside_reads()  # type: ignore[attr-defined]
        finally:
            store.close()

    def _rebuild_index(self) -> None:
        """Rebuild the store's index beside the requests (a large HNSW graph takes minutes,
        which no write request may wait for; searches layer on the old index meanwhile),
        once at a time."""
        with self._rebuilding_start:
            if self._closing.is_set() or not self._rebuilding.acquire(blocking=False):
                return
            self._start_rebuild()

    def _start_rebuild(self) -> None:
        """:meth:`_rebuild_index`'s thread (``_rebuilding`` held, released as it ends)."""

        def rebuild() -> None:
            try:
                store = self._open()
                try:
                    if not store.rebuild_index():
                        log.info("another process is rebuilding the search index of %s",
                                 self.location)
                finally:
                    store.close()
            except StoreError as exc:  # (its sentence says why: no traceback, not a bug)
                log.warning("rebuilding the search index of %s failed: %s", self.location,
                            exc)
            except Exception:  # the next write tries again; searches go on meanwhile
                log.exception("rebuilding the search index of %s failed", self.location)
            finally:
                self._rebuilding.release()

        thread = threading.Thread(target=rebuild, name="vitrine-index-rebuild", daemon=True)
        thread.start()  # (then made known: one started from the writer's watch could be seen
        self.rebuild_thread = thread  # before it started, and joining it failed, ci60)

    def close(self) -> None:
        """Close the store. A rebuild still running is not waited for (it can take minutes,
        which no shutdown should): the process ends it unsaved as it exits, the next writer
        then removes its part file, and the next write that finds the index due starts it
        again. Said as a warning (the server's log shows no info of ours)."""
        with self._rebuilding_start:
            self._closing.set()
        if self.rebuild_thread is not None and self.rebuild_thread.is_alive():
            log.warning("the search index rebuild of %s is left unfinished; the next write "
                        "starts it again", self.location)
        self._decoder.shutdown(wait=False, cancel_futures=True)
        with self._store_lock:
            self._store.close()


TRIM_AFTER_S = 0.05
"""A decode that took this long (a large photo: 40 megapixels take a third of a second) gives
what it freed back to the system after it; trimming after every one cost a small photo's
decode 0.4 ms (its pages faulted in again), for memory the two decoding threads keep anyway."""


def _trimmed(work: Callable[..., T], *args: object) -> T:
    started = time.perf_counter()
    try:
        return work(*args)
    finally:
        if time.perf_counter() - started >= TRIM_AFTER_S:
            _release_memory()


def _remove_orphan(store: VectorStore, image: Path, folder: Path | None) -> None:
    """Delete an uploaded photo that no stored product refers to any more, from the store's
    own STORE/uploads only: a VITRINE_UPLOAD_DIR folder may hold other stores' photos too
    (`vitrine index` never prunes it either)."""
    if not cleanable_uploads(store, folder) or image.parent != folder or not image.is_file():
        return
    if not store.names_photo(str(image)):
        image.unlink(missing_ok=True)


def _check_fits(store: VectorStore, product: Product) -> None:
    """A CatalogError (the API's 422) for a product the store cannot hold (a field longer
    than a Milvus store keeps), before anything is written."""
    problem = store.too_long(product)
    if problem:
        raise CatalogError(f"product {product.product_id!r}: {problem}.")
