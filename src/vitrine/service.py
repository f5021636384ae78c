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

The service is made of parts, each a module: the category counts and spellings the pages
share (:mod:`vitrine.service_categories`), the writes and the index rebuilds they leave due
(:mod:`vitrine.service_writes`), and the handling of uploads: a photo's file extension, the
upload folder's check, the memory a large decode freed given back
(:mod:`vitrine.service_uploads`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from vitrine import service_categories
from vitrine.config import Settings
from vitrine.copies import Copies
from vitrine.embed import CategoryGuess, Embedder, decode_query
from vitrine.errors import ServerBusy, StoreError
from vitrine.manifest import ModelManifest, mismatch_error
from vitrine.placeholders import Placeholders
from vitrine.recommend import ProductNotFound, Recommender
from vitrine.service_categories import ServiceCategories
from vitrine.service_uploads import _trimmed, check_upload_folder
from vitrine.service_writes import ServiceWrites
from vitrine.store import store_for, upload_folder
from vitrine.store.base import Match, StoredProduct, VectorStore
from vitrine.store.filters import ProductFilter

log = logging.getLogger(__name__)
FOLLOW_RETRY_SECONDS = 1.0
"""How long the server waits before trying again to open a store's new database it could not
read yet (being created, or written where a read-only replica cannot read it)."""


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


DECODE_SLOTS = max(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else os.cpu_count() or 2)
"""Photos decoded at once, uploaded or copied for the pages (the others wait for a slot): one
per core this process may use."""


SEARCHES_AT_ONCE = 16
"""Photo searches the server takes at once (decoding, waiting for the model or the store);
more are refused at once with a 503 to try again (ServerBusy). A hundred sent together, each
a 40-megapixel PNG of 132 kB, took every one of the server's 40 request threads: pages and
/healthz waited 62 s (helper-238); now they keep 24."""


T = TypeVar("T")


class VitrineService(ServiceCategories, ServiceWrites):
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
        # (until when, for how many values a key at most, the attribute values, the mark)
        self._attributes: tuple[float, int, dict[str, dict[str, int]], object] | None = None
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
        self._attributes = None

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
                 after: tuple[str, str, str, str] | None = None,
                 where: ProductFilter | None = None) -> tuple[list[StoredProduct], bool]:
        """One page of products and whether another page follows; ``query`` is read without
        the spaces around it, as the page's search box is. ``resolved``: ``category`` is as
        the store spells it already (a page's, :func:`vitrine.web.pages.page_category`), not
        looked up again. ``after``: the page after that place in the order (a cursor).
        ``where``: of its prices and attributes only."""
        if not resolved:
            category = self.stored_category(category)  # (takes the lock itself)
        # a store whose reads may run side by side (Milvus: a page may read its whole
        # catalogue's order, 2.5 s at 20,000 products, which held every other request) lists
        # without the lock; the embedded store's connection and index are shared
        with (contextlib.nullcontext() if getattr(self._store, "concurrent_reads", False)
              else self._store_lock):
            found = self.store.list_products(category=category,
                                             query=(query or "").strip() or None,
                                             limit=limit + 1, offset=offset, after=after,
                                             where=where)
        return found[:limit], len(found) > limit

    def count_products(self, category: str | None, where: ProductFilter | None) -> int:
        """The products a filtered listing of ``category`` (as the store spells it) holds."""
        with (contextlib.nullcontext() if getattr(self._store, "concurrent_reads", False)
              else self._store_lock):
            return self.store.count_products(category=category, where=where)

    def count(self) -> int:
        with self._store_lock:
            return self.store.count()

    def present(self) -> bool:
        """Whether the store's files are still there (see VectorStore.present)."""
        return self._store.present()

    def similar(self, product_id: str, k: int, category: str | None = None, *,
                same_category: bool = False, where: ProductFilter | None = None
                ) -> tuple[StoredProduct, list[Match]]:
        category = self.stored_category(category)
        with self._store_lock:
            return self.recommender.similar(product_id, k, category,
                                            same_category=same_category, where=where)

    def placeholders(self) -> Placeholders:
        """The placeholder photos similar products and photo searches leave out."""
        with self._store_lock:
            return self.recommender.placeholders()

    def copies(self) -> Copies:
        """The store's photo groups (:meth:`Recommender.copies`)."""
        with self._store_lock:
            return self.recommender.copies()

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
        """The store's catalogue folder, read again after
        :data:`vitrine.service_categories.CATEGORIES_TTL_S` (a Milvus store's
        is a query: 1 ms, under the store lock, for each photo sent)."""
        now, ttl = time.monotonic(), service_categories.CATEGORIES_TTL_S
        if self._catalogue is None or now - self._catalogue[1] > ttl:
            with self._store_lock:
                self._catalogue = (self.store.catalog_folder(), now)
        return self._catalogue[0]

    # ---- photo search ---------------------------------------------------------------------
    def decoded(self, work: Callable[..., T], *args: object) -> T:
        """``work(*args)`` (a photo decoded: an upload, or a copy of a stored photo the pages
        show, a card or a TIFF's view, which anyone may ask for) in one of the
        :data:`DECODE_SLOTS` decoding threads, waiting for one (four 40-megapixel copies at
        once took the server to 5 GB); what a large one allocated is given back to the system
        after it (its pixels are freed, but glibc kept them:
        :data:`vitrine.service_uploads.TRIM_AFTER_S`)."""
        return self._decoder.submit(_trimmed, work, *args).result()

    def search_photo(self, data: bytes, k: int, category: str | None = None, *,
                     resolved: bool = False, where: ProductFilter | None = None
                     ) -> tuple[list[Match], SearchTimings, CategoryGuess | None]:
        """Products most similar to uploaded photo bytes, the timings, and the photo's likely
        category (a trained model's, else None); raises ImageError for a bad file, and
        ServerBusy when :data:`SEARCHES_AT_ONCE` are under way. ``resolved``: as
        :meth:`products`; ``where``: a price and attribute filter
        (:mod:`vitrine.store.filters`)."""
        if not self._searches.acquire(blocking=False):
            raise ServerBusy("The server has too many photo searches under way; try again "
                             "in a moment.")
        try:
            return self._search_photo(data, k, category, resolved, where)
        finally:
            self._searches.release()

    def _search_photo(self, data: bytes, k: int, category: str | None, resolved: bool,
                      where: ProductFilter | None = None
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
            matches, leading = self.recommender.search_vectors(vectors, k, category,
                                                               where=where)
        t3 = time.perf_counter()
        timings = SearchTimings((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)
        return matches, timings, self.embedder.guess_category(vectors[leading])

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
