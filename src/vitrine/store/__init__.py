"""Vector stores: products + their vectors. The rest of Vitrine only sees :class:`VectorStore`."""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from vitrine.ann import IndexConfig
from vitrine.catalog import UPLOAD_NAME, UPLOADS
from vitrine.errors import NoStore, StoreError
from vitrine.store.base import Match, StoredProduct, VectorStore
from vitrine.store.embedded import DB_NAME, EmbeddedStore
from vitrine.store.sqlite_db import file_id

if TYPE_CHECKING:
    from vitrine.manifest import ModelManifest

__all__ = ["UPLOAD_TMP", "UPLOADS_DIR", "EmbeddedStore", "Match", "StoredProduct", "VectorStore",
           "inside_store", "new_store_path", "open_store", "cleanable_uploads", "save_photo",
           "unmarked_upload", "upload_folder"]

DEFAULT_COLLECTION = "vitrine"
UPLOAD_TMP = re.compile(UPLOAD_NAME.pattern + r"\.(\d+)\.\d+\.tmp")
"""A photo being saved by :func:`save_photo` in the process numbered ``[1]`` (removed by
``vitrine index`` once that process is gone)."""
UPLOADS_DIR = UPLOADS  # one name: the catalogue reader skips this folder of a store


def unmarked_upload(image: str | Path, uploads: Path | None,
                    catalogues: Sequence[str | Path | None] = ()) -> bool:
    """Whether a product that is not marked as added through the API was added through it
    anyway, by a Vitrine from before the mark (29 Nov 2026): its photo is named as the server
    names one, and is in ``uploads``; else, unless it is inside one of the known catalogue
    folders, it is in a folder called ``uploads`` or is an existing file outside them (a
    Milvus store's photos when VITRINE_UPLOAD_DIR is not set here). Such a store named its
    photos from the folder its server was started in, so a relative path is resolved from
    here as it did."""
    path = Path(os.path.abspath(image))
    if not UPLOAD_NAME.fullmatch(path.name):
        return False
    if uploads is not None and path.parent == uploads:
        return True
    known = [Path(c) for c in catalogues if c]
    if any(path.is_relative_to(c) for c in known):
        return False
    return path.parent.name == UPLOADS_DIR or (bool(known) and path.is_file())


def cleanable_uploads(store: VectorStore, folder: Path | None) -> bool:
    """Whether Vitrine may delete unused photos from ``folder``: only when it is the store's
    own STORE/uploads. A folder set by VITRINE_UPLOAD_DIR may hold other stores' photos."""
    own = getattr(store, "root", None)
    return folder is not None and own is not None and folder == own / UPLOADS_DIR


def save_photo(folder: Path, photo: Path, data: bytes) -> bool:
    """Save ``data`` at ``photo`` (in ``folder``) atomically unless it is already there; True
    if written. Uploaded photos are named by their content, so one file serves every product
    that has it. A failure (a full disk, say) is a StoreError and leaves nothing behind."""
    if photo.is_file():
        return False
    tmp = photo.with_name(photo.name + f".{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, photo)
    except OSError as exc:
        with contextlib.suppress(OSError):  # (a folder that is a file: no part file either)
            tmp.unlink(missing_ok=True)
        raise StoreError(f"cannot save the photo in {folder} ({exc.strerror or exc}); nothing "
                         "was written.") from None
    return True


def upload_folder(store: VectorStore | str | Path, configured: Path | None) -> Path | None:
    """Where the photos of products added through the API live: ``configured``
    (VITRINE_UPLOAD_DIR), else STORE/uploads for a folder store; None for a store that is
    not a folder and no setting. `vitrine index` prunes orphan photos only in a store's own
    STORE/uploads, and migrate copies the API's photos into the target's folder. ``store``
    may be a location not opened yet."""
    if configured is not None:
        try:
            return Path(configured).expanduser().resolve()
        except RuntimeError:  # a loop of links (Python 3.11 and 3.12; 3.13 leaves it)
            raise StoreError(f"VITRINE_UPLOAD_DIR {configured} is a loop of links; name a "
                             "folder.") from None
    if isinstance(store, EmbeddedStore):
        return store.root / UPLOADS_DIR
    local = _local_path(store) if isinstance(store, str | Path) else None
    if local is not None and local[0] == "folder":
        return local[1].resolve() / UPLOADS_DIR  # (as EmbeddedStore.root)
    return None


def store_for(location: str | Path, settings, *, create: bool = False) -> VectorStore:
    """:func:`open_store` with what ``settings`` (``vitrine.config.Settings``) say of stores:
    the Milvus token and the embedded store's index settings. Every command and the server
    open their stores so."""
    return open_store(location, create=create, token=settings.milvus_token,
                      index_config=IndexConfig.from_settings(settings))


def open_store(location: str | Path, *, create: bool = False, token: str = "",
               index_config: IndexConfig | None = None) -> VectorStore:
    """Open a store by location.

    * a folder path: the embedded default (SQLite + FAISS);
    * ``milvus-lite:///ABS/PATH.db``: embedded Milvus Lite in one file;
    * ``milvus://HOST:PORT[/COLLECTION]``: a Milvus server or cluster (``token`` is
      ``user:password`` or an API key, from the ``VITRINE_MILVUS_TOKEN`` setting).

    ``index_config`` (from the index settings) shapes the embedded store's FAISS index.
    """
    text = str(location)
    if not text.strip():  # (`--store ""`, an unset variable: the folder the command ran in)
        raise StoreError("no store named (an empty store location); name its folder or "
                         "address.")
    if text.startswith("milvus-lite://"):
        from vitrine.store.milvus_store import MilvusStore
        from vitrine.store.milvus_support import require_milvus

        path = text[len("milvus-lite://"):]
        if not path.startswith("/") or not path.endswith(".db"):
            raise StoreError(f"{text}: use milvus-lite:///ABSOLUTE/PATH.db.")
        require_milvus(lite=True)  # (before "no store here; create one with index", which
        # then said the extra was missing: helper-236)
        if not create and not Path(path).exists():
            raise NoStore(f"no Vitrine store at {text}; create one with 'vitrine index "
                          f"CATALOG_DIR --store {text}'.")
        return MilvusStore(path, DEFAULT_COLLECTION, location=text, create=create)
    if text.startswith("milvus://"):
        from vitrine.store.milvus_store import MilvusStore

        uri, collection = milvus_server(text)
        return MilvusStore(uri, collection, location=text, token=token, create=create)
    if text.lower().startswith(("milvus:", "milvus-lite:")):  # (`milvus-lite:/data/x.db`
        # made a folder store named so under the current folder, exit 0)
        raise StoreError(f"{text}: a Milvus store is named milvus-lite:///ABSOLUTE/PATH.db "
                         "or milvus://HOST:PORT (two slashes after the colon); a folder so "
                         f"named is written with its whole path, {os.path.abspath(text)}.")
    return EmbeddedStore(Path(location), create=create, index_config=index_config)


def recorded_model(location: str | Path) -> tuple[ModelManifest | None, str | None]:
    """The model manifest and model folder an embedded store at ``location`` records (None,
    None when there is no such store, or it cannot be read: the command that opens it says
    why); read before a command builds its model (:func:`vitrine.manifest.kind_mismatch`)."""
    local = _local_path(location)
    try:  # (a folder shut to this user: is_file raises, and store_for says it so)
        if local is None or local[0] != "folder" or not (local[1] / DB_NAME).is_file():
            return None, None
        store = open_store(location)
    except (OSError, StoreError):
        return None, None
    try:
        return store.manifest(), store.model_folder()
    finally:
        store.close()


def _local_path(location: str | Path) -> tuple[str, Path] | None:
    """The kind ('folder' or 'milvus-lite') and path of a store kept in this file system;
    None for a Milvus server."""
    text = str(location)
    if text.startswith("milvus://"):
        return None
    lite = text.startswith("milvus-lite://")
    return ("milvus-lite" if lite else "folder",
            Path(os.path.expanduser(text[len("milvus-lite://"):] if lite else text)))


def new_store_path(location: str | Path) -> list[Path]:
    """The folders a store at ``location`` (embedded, or a Milvus Lite file: a folder too)
    would be made as, itself first, then each folder above it that is not there yet; none
    where something is, and for a Milvus server."""
    local = _local_path(location)
    if local is None:
        return []
    made = []
    for folder in (local[1], *local[1].absolute().parents):
        if os.path.lexists(folder):
            break
        made.append(folder)
    return made


def inside_store(location: str | Path, store: str | Path) -> bool:
    """Whether the store at ``location`` would be kept inside the folder (or Milvus Lite
    file) of the store at ``store``, so that removing that store removes it too."""
    inner, outer = _local_path(location), _local_path(store)
    if inner is None or outer is None:
        return False
    inner_path, outer_path = (Path(os.path.realpath(p[1])) for p in (inner, outer))
    return inner_path != outer_path and inner_path.is_relative_to(outer_path)


def store_identity(location: str | Path) -> tuple[str, ...]:
    """What names one store however its location is written, without opening it: a folder's
    or Milvus Lite file's device and inode where it exists (a bind mount of it too), else
    its real path (``//``, ``..``, links); a Milvus server's address (port 19530 when none
    is written, host in any case) and collection."""
    local = _local_path(location)
    if local is None:
        return ("milvus", *milvus_server(str(location)))
    kind, path = local
    found = file_id(path)
    return (kind, *map(str, found)) if found else (kind, os.path.realpath(path))


def milvus_server(text: str) -> tuple[str, str]:
    """The server URI and the collection of a ``milvus://HOST[:PORT][/COLLECTION]``
    address (port 19530 when none is written); StoreError with one sentence otherwise."""
    try:
        parts = urlsplit(text)
        port = parts.port  # raises on a port that is not a number up to 65535
        if port == 0:
            raise ValueError("port 0 is no server's port")
    except ValueError as exc:
        raise StoreError(f"{text} is not a Milvus address ({exc}); use "
                         "milvus://HOST:PORT[/COLLECTION].") from None
    if not parts.hostname:
        raise StoreError(f"{text}: use milvus://HOST:PORT[/COLLECTION].")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    collection = parts.path.strip("/") or DEFAULT_COLLECTION
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,248}", collection):  # Milvus's rule, with
        # room for the "__meta" of the second collection
        raise StoreError(f"{text}: the collection name {collection!r} must start with a letter "
                         "or an underscore and hold only letters, digits and underscores "
                         "(at most 249).")
    return f"http://{host}:{port or 19530}", collection
