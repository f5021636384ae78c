"""The service's writes: a product added with its photo, edited or deleted through the API, one
write at a time, through a second store object that holds the store's writer lock (the writes
ahead waited for :data:`API_WRITE_WAIT` at most), and the index rebuild beside the requests
that a write or the server's start finds due (:class:`ServiceWrites`, a part of
:class:`vitrine.service.VitrineService`, whose store, model and locks it uses).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from vitrine.catalog import Product
from vitrine.dedupe_store import recount_shared
from vitrine.embed import decode
from vitrine.errors import CatalogError, StoreBusy, StoreError
from vitrine.index_embed import check_manifest
from vitrine.recommend import ProductNotFound, stored_product
from vitrine.service_uploads import _no_upload_folder, image_suffix
from vitrine.store import EmbeddedStore, cleanable_uploads, save_photo, unmarked_upload
from vitrine.store.base import Record, StoredProduct, VectorStore
from vitrine.store.writer_lock import busy, writer_running
from vitrine.write_ticket import WriteCancelled, committing, write_cancelled

log = logging.getLogger("vitrine.service")  # (the service's log, whichever part says it)
API_WRITE_WAIT = 2.0
"""Seconds a write through the API waits, in all, for the writes ahead of it (this server's,
another server's, a `vitrine index` run) before it is refused (409)."""
WRITER_POLL_S = 2.0
"""Seconds between a server's looks at whether the process writing its store (a `vitrine
index` running as it started) is done, to tell then whether a rebuild is due."""
T = TypeVar("T")


@dataclass
class NewProduct:
    """The fields of a product added through the API (its photo comes separately)."""

    product_id: str
    name: str = ""
    category: str = ""
    price: float | None = None
    description: str = ""


class ServiceWrites:
    """The writes of :class:`vitrine.service.VitrineService`, and the index rebuilds they
    leave due."""

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
            try:
                previous = stored_product(writer, fields.product_id)
            except ProductNotFound as exc:  # (spelled as several stored ids: not a third
                raise CatalogError(exc.shown()) from None  # beside them, nor one guessed)
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
            if previous is None or previous.content_sha256 != sha:  # (its photo's
                # products, counted at once: a placeholder's file is one more of it)
                recount_shared(writer, sha, previous.content_sha256 if previous else "")
            if previous is not None:
                _remove_orphan(writer, Path(previous.image), folder)
            stored = writer.get(product.product_id)
        assert stored is not None
        return stored, previous is None

    def edit_product(self, product_id: str, changes: dict) -> StoredProduct:
        """Change a stored product's name, category, price or description (the keys of
        ``changes``) and keep its photo and vector. A catalogue product keeps being one,
        marked as edited (:data:`vitrine.catalog.EDITED`): the next ``vitrine index`` sets
        a product its table's row names back to the row's values (the table is where its
        fields come from), and keeps the edit of one no row names (a folder-only
        catalogue's: no table says otherwise)."""
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
            changed = current.to_product(uploaded=uploaded, edited=not uploaded, **changes)
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
            recount_shared(writer, removed=previous.content_sha256)
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
                self._recommender.forget_copies()  # (read beside the write: recount_shared)
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
