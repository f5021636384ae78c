"""Uploads, for the service: the file extension of a photo sent, from its leading bytes
(:func:`image_suffix`); the check of the folder that keeps the photos of products added through
the API (:func:`check_upload_folder`, also run by ``vitrine demo``); and the memory a large
decode freed given back to the system after it (:func:`_trimmed`, in the service's decoding
threads).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from vitrine.config import Settings
from vitrine.errors import StoreError
from vitrine.images import container_kind

log = logging.getLogger("vitrine.service")  # (the service's log, whichever part says it)
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
