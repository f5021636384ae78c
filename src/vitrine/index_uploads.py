"""The API's products and photos in an index run: those a Vitrine from before the mark added
through the API (:func:`unmarked_uploads`), and the photos of the store's own ``uploads``
folder that no product names any more (:func:`_prune_orphan_photos`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from vitrine.catalog import UPLOAD_NAME, UPLOADED
from vitrine.store import UPLOAD_TMP, cleanable_uploads, unmarked_upload
from vitrine.store.base import VectorStore
from vitrine.store.writer_lock import part_abandoned

log = logging.getLogger("vitrine.indexer")  # (the run's log, whichever part says it)


def unmarked_uploads(store: VectorStore, images: Callable[[], dict[str, str]],
                     uploads: Path | None, stored: dict, root: Path,
                     listed: dict[str, str]) -> list[str]:
    """Ids among ``stored`` that a Vitrine from before the mark added or replaced through the
    API (:func:`unmarked_upload`); never one the catalogue lists with that very photo name
    (``listed``: id → file name), which is the catalogue's own. (The demo counts them too
    before it rebuilds its store for another model.)"""
    catalogues = (root, store.catalog_folder())
    return sorted(pid for pid, image in images().items()
                  if pid in stored and not stored[pid][1].startswith(UPLOADED)
                  and listed.get(pid) != Path(image).name
                  and unmarked_upload(image, uploads, catalogues))


def _prune_orphan_photos(store: VectorStore, uploads: Path | None) -> int:
    """Delete photos in the store's own ``uploads`` folder that no product names: left by a
    server killed between saving a photo and storing its product. Safe only while this
    process holds the store's exclusive writer lock, which the server takes before it saves
    a photo. A folder set by VITRINE_UPLOAD_DIR may serve other stores too: never pruned.
    Only files named as the server names them (``<sha256>.<ext>``) are touched, and a file
    is kept when any product names a photo of that name anywhere (a moved or copied store
    still names the old folder: its photos are not orphans). Photos half-saved by a server
    killed mid-upload (``<sha256>.<ext>.<pid>.<thread>.tmp``) go too, unless their process
    still runs and wrote them within the hour (a process number is given again: a container's
    server restarted after a kill is process 1 again)."""
    if not cleanable_uploads(store, uploads) or not uploads.is_dir():
        return 0
    entries = list(uploads.iterdir())
    refused: list[OSError] = []
    for path in entries:
        if (m := UPLOAD_TMP.fullmatch(path.name)) and part_abandoned(path, int(m[1])):
            _removed(path, refused)
    files = [p for p in entries if p.is_file() and UPLOAD_NAME.fullmatch(p.name)]
    named = {Path(image).name for image in store.images().values()} if files else set()
    removed = sum(_removed(p, refused) for p in files if p.name not in named)
    if refused:  # (the run's work was stored; its end, duplicates and index, still runs)
        log.warning("note: %d file(s) no product uses in %s could not be deleted (%s); "
                    "delete them as their owner, or give this user access there.",
                    len(refused), uploads, refused[0].strerror or refused[0])
    return removed


def _removed(path: Path, refused: list[OSError]) -> bool:
    """Delete ``path``; one this user may not delete (another user's folder: a server once
    run as root made STORE/uploads) is added to ``refused``: it stopped every later `index`
    with status 2, after its products were stored, before the duplicates and the index."""
    try:
        path.unlink(missing_ok=True)
        return True
    except OSError as exc:
        refused.append(exc)
        return False
