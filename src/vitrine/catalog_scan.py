"""Which files below a catalogue folder are its photos (:func:`scan_images`): hidden,
system (a NAS's recycle bin and thumbnails) and Vitrine store and model folders passed over
(a model folder known by its ``model.json``), links to folders followed once or refused; and
what tells whether the folder changed since it was read (:func:`catalogue_state`)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

from vitrine.catalog_csv import CSV_NAMES
from vitrine.errors import CatalogError
from vitrine.images import is_image_path

STORE_FILE = "vitrine.sqlite"
"""The database a Vitrine store folder holds (vitrine.store.sqlite_db.DB_NAME)."""
MODEL_CONFIG, MODEL_WEIGHTS = "model.json", "model.pt"
"""The files of a Vitrine model folder (vitrine.trained)."""
MODEL_FORMAT = "vitrine-trained-model/"
"""How a model's ``model.json`` starts its ``format`` (then its version)."""


def not_a_model(model_dir: Path) -> str | None:
    """The sentence saying that ``model_dir`` lacks a trained model's files; None when it
    has them (here, not in vitrine.trained, which imports torch: the command line checks
    VITRINE_MODEL with it before a start record may spare torch, vitrine.warm)."""
    folder = Path(model_dir).expanduser()  # (--model '~/m': the load expands it too)
    if (folder / MODEL_CONFIG).is_file() and (folder / MODEL_WEIGHTS).is_file():
        return None
    return (f"{model_dir} is not a trained model folder (it needs {MODEL_CONFIG} and "
            f"{MODEL_WEIGHTS}); make one with vitrine train.")


def model_config(path: Path) -> dict:
    """The JSON object of the ``model.json`` at ``path``; empty where it cannot be read or
    is not an object."""
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def is_model_config(path: Path) -> bool:
    """Whether ``path`` is a Vitrine model's ``model.json`` (another tool's, TensorFlow.js's
    or a product's specification, is not one)."""
    return str(model_config(path).get("format", "")).startswith(MODEL_FORMAT)


def holds_vitrine(folder: Path, names) -> bool:
    """Whether ``folder``, holding the files ``names``, is a Vitrine store or model: never
    catalogue photos (a store kept inside the catalogue would otherwise index its own
    uploads, a model its figures). A ``model.json`` of another tool's is not a model's: its
    folder's photos are the catalogue's (they were left out without a word)."""
    return STORE_FILE in names or MODEL_CONFIG in names and (
        MODEL_WEIGHTS in names or is_model_config(folder / MODEL_CONFIG))


UPLOADS = "uploads"
"""The folder of a store that holds photos added through the API (vitrine.store.UPLOADS_DIR)."""
UPLOAD_NAME = re.compile(r"[0-9a-f]{64}\.[a-z]{2,4}")
"""How the server names an uploaded photo: its sha256 and the format's extension."""


def vitrine_folder(root: Path, photo: Path, known: dict[Path, bool]) -> Path | None:
    """The Vitrine store or model folder below ``root`` that holds ``photo`` (what
    :func:`scan_images` skips; the root's own ``uploads`` when the root is a store), or None.
    ``known`` remembers the folders already looked at."""
    if photo.parent == root / UPLOADS and (root / STORE_FILE).exists():
        return photo.parent
    folder = photo.parent
    while folder != root and folder.is_relative_to(root):
        if folder not in known:
            known[folder] = holds_vitrine(folder, {
                m for m in (STORE_FILE, MODEL_CONFIG, MODEL_WEIGHTS) if (folder / m).exists()})
        if known[folder]:
            return folder
        folder = folder.parent
    return None


SYSTEM_FOLDERS = frozenset({"lost+found", "#recycle", "@eaDir", "$RECYCLE.BIN",
                            "System Volume Information"})
"""Folders a file system or a NAS keeps in a drive or share (its recycle bin, its thumbnails),
often unreadable to the user: never catalogue photos."""


def scan_images(root: Path, skip: Iterable[str] = (),
                unreadable: list[dict] | None = None, *,
                refused_links: list[Path] | None = None,
                within: Path | None = None) -> list[Path]:
    """All photo files below ``root`` (any extension case), sorted; hidden files and folders,
    Vitrine store and model folders, and the folders of ``root`` named in ``skip``, skipped.
    Symbolic links to folders are followed (each real folder once); a link to a photo that
    is gone is listed, so that reading it reports it.

    A folder that cannot be listed (no permission) is a CatalogError: its photos were left
    out without a word, and index removed their products from the store. With
    ``unreadable`` (a list), each is added to it as ``{"path", "reason"}`` instead. A
    system's folder (SYSTEM_FOLDERS, read or not: a Synology's @eaDir holds a thumbnail of
    every photo), and one removed while it was read, are passed over.

    With ``refused_links`` (a list: VITRINE_FOLLOW_OUTSIDE_LINKS=false) a link to a folder
    outside ``within`` (the catalogue folder; ``root`` by default) is not entered but added
    to it: a supplier's link to a folder of this machine (``/``) had every file of it
    walked."""
    skip = set(skip)
    found = []
    seen: set[tuple[int, int]] = set()
    real_root = Path(root).resolve()
    confine = Path(within or root).resolve()

    def outside(link: str) -> bool:
        if refused_links is None or not os.path.islink(link) or Path(link).resolve(
                ).is_relative_to(confine):
            return False
        refused_links.append(Path(link))
        return True

    def cannot_list(exc: OSError) -> None:
        folder = Path(exc.filename) if exc.filename else Path(root)
        if folder.name in SYSTEM_FOLDERS or (isinstance(exc, FileNotFoundError)
                                             and not os.path.lexists(folder)):
            return  # (removed while the scan ran: a share that says so of a folder still
            # listed is not believed, or its products would be removed)
        reason = f"the folder cannot be read ({exc.strerror or exc})"
        if unreadable is None:
            raise CatalogError(f"{folder}: {reason}, so its photos would be left out (and "
                               "their products removed from a store). Make it readable, or "
                               "move it out of the catalogue.")
        unreadable.append({"path": str(folder), "reason": reason})

    for folder, dirs, files in os.walk(root, onerror=cannot_list, followlinks=True):
        try:
            info = os.stat(folder)
        except OSError as exc:  # (gone, or unreadable, since it was listed)
            cannot_list(exc)
            dirs[:] = []
            continue
        if (info.st_dev, info.st_ino) in seen or (
                folder != str(root) and holds_vitrine(Path(folder), files)):
            dirs[:] = []
            continue
        seen.add((info.st_dev, info.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SYSTEM_FOLDERS
                         and not (
            # a link to a folder of the catalogue itself would read its photos twice, under
            # another category; the root holding a store: its uploads are not catalogue photos
            os.path.islink(os.path.join(folder, d))
            and Path(folder, d).resolve().is_relative_to(real_root))
            and not (folder == str(root) and (d in skip or d == UPLOADS
                                              and STORE_FILE in files))
            and not outside(os.path.join(folder, d)))
        for name in files:
            path = Path(folder, name)
            if not name.startswith(".") and is_image_path(path) and (
                    path.is_file() or path.is_symlink()):  # a broken link: reported, not lost
                found.append(path)
    return sorted(found)


def catalogue_state(root: Path, *, follow_outside: bool = True) -> tuple:
    """What tells whether the catalogue folder ``root`` changed: the identity (inode, times)
    of every folder below it and of every product table there, each taken before the folder
    is listed. Equal later, no photo was added, removed or renamed and no table rewritten
    in between (a photo's bytes are checked by their sha256 when it is read). Folders are
    passed over as :func:`scan_images` passes them (hidden, a system's, a Vitrine store's or
    model's: a store inside the catalogue is written meanwhile); links to folders are
    followed once, those leading outside ``root`` only with ``follow_outside``; a folder
    that cannot be read is noted as such."""
    confine = Path(os.path.realpath(root))  # (a link loop: as it is, for the reading to
    # say; Path.resolve raised)
    state: list[tuple] = []
    seen: set[tuple[int, int]] = set()
    pending = [str(confine)]
    while pending:
        folder = pending.pop()
        try:
            info = os.stat(folder)
            if (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
            with os.scandir(folder) as listing:
                entries = [e for e in listing if not e.name.startswith(".")]
            names = [e.name for e in entries]
            top = folder == str(confine)
            if not top and holds_vitrine(Path(folder), names):
                continue
            state.append((folder, info.st_ino, info.st_mtime_ns, info.st_ctime_ns))
            for entry in entries:
                if entry.is_dir():
                    if entry.name not in SYSTEM_FOLDERS and not (
                            top and entry.name == UPLOADS and STORE_FILE in names) and (
                            follow_outside or not entry.is_symlink()
                            or Path(entry.path).resolve().is_relative_to(confine)):
                        pending.append(entry.path)
                elif entry.name.casefold() in CSV_NAMES:
                    try:  # (a link to a table that is not there: noted, the folder read on)
                        got = entry.stat()
                    except OSError as exc:
                        state.append((entry.path, exc.errno))
                    else:
                        state.append((entry.path, got.st_ino, got.st_size, got.st_mtime_ns,
                                      got.st_ctime_ns))
        except OSError as exc:
            state.append((folder, exc.errno))
    return tuple(sorted(state, key=lambda item: item[0]))
