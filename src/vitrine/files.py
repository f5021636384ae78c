"""Files written whole: beside their place, on disk, then renamed over it; and a path that
is a stream (a device, a pipe, a descriptor), which is written as it is."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import secrets
import stat
import time
from pathlib import Path

STALE_PART_S = 3600
"""Age past which a part file is a killed run's: one :func:`write_whole` left (a write takes
milliseconds), a store's index file or upload half-saved
(:func:`vitrine.store.writer_lock.part_abandoned`), an ONNX export's."""
DESCRIPTOR = re.compile(r"/(?:dev/fd|proc/(?:self|thread-self|(\d+))(?:/task/\d+)?/fd)/(\d+)")
STANDARD = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}


def write_whole(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` whole or not at all: beside it, on disk, then renamed over
    it with the old file's permissions (a run stopped while writing left a truncated file
    where the last good one was; a power cut after the rename, an empty one; a hard link to
    the file, a product's photo, was written through). Part files of runs killed outright
    are removed."""
    path = Path(path)
    stem = _part_stem(path.name)
    remove_stale(path.parent, f"{glob.escape(stem)}.*.part")
    part = path.with_name(f"{stem}.{os.getpid()}-{secrets.token_hex(4)}.part")
    try:
        with open(part, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileNotFoundError):  # (a file's only: a link replaced, to
            old = os.lstat(path)  # /dev/null say, gave the figure its rw-rw-rw-)
            if stat.S_ISREG(old.st_mode):
                os.chmod(part, stat.S_IMODE(old.st_mode) & 0o777)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)


NAME_MAX = 255
"""The longest file name, in bytes, of the file systems Vitrine writes to."""


def _part_stem(name: str) -> str:
    """What a part file of ``name`` is named from: ``.name``, or, where that name with the
    part's own ~25 bytes would pass :data:`NAME_MAX`, a digest of it (a figure named with
    240 bytes, which the folder takes, failed with "File name too long" after all the
    work: helper-238)."""
    if len(os.fsencode(name)) + 32 <= NAME_MAX:
        return f".{name}"
    return f".vitrine-{hashlib.sha256(os.fsencode(name)).hexdigest()[:16]}"


def remove_stale(folder: Path, pattern: str, age: float | None = None) -> None:
    """Remove the files of ``folder`` matching the glob ``pattern`` that have not changed for
    ``age`` seconds (None: :data:`STALE_PART_S`): part files a process killed outright
    (SIGKILL, the out-of-memory killer) left for good."""
    age = STALE_PART_S if age is None else age
    now = time.time()
    for part in folder.glob(pattern):
        with contextlib.suppress(OSError):
            if now - part.stat().st_mtime > age:
                part.unlink()


def is_stream(path: Path) -> bool:
    """Whether ``path`` is a device or a pipe, written as it is: one of this process's
    descriptors (``/dev/fd/3``, ``/dev/stdout``: whatever the shell redirected it to, a file
    too), a path in ``/dev``, or one that is neither a file nor a folder (a named pipe). Not
    any other ``/proc`` path (``/proc/self/cwd/x.png`` is a file; ``/proc/self/root/dev/fd/3``
    wrote over the store's database) nor a symbolic link, which the figure replaces."""
    where = os.path.abspath(path)
    if descriptor(path) is not None:
        return True
    if os.path.islink(path):
        return False
    if where.startswith("/dev/") and not where.startswith("/dev/shm/"):
        return True  # (/dev/shm: a file system of files)
    return path.exists() and not path.is_file() and not path.is_dir()


def descriptor(path: Path) -> int | None:
    """The descriptor of this process that ``path`` names (``/dev/fd/3``, ``/dev/stdin``,
    ``/proc/self/fd/3``, ``/proc/thread-self/fd/3``, ``/proc/PID/task/TID/fd/3``), else
    None."""
    where = os.path.abspath(path)
    if where in STANDARD:
        return STANDARD[where]
    named = DESCRIPTOR.fullmatch(where)
    if named and (named[1] is None or int(named[1]) == os.getpid()):
        return int(named[2])
    return None
