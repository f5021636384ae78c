"""The sha256 of catalogue photos, read again only when a file changed.

``vitrine index`` compares each photo's sha256 with the store's to find what changed, which
reads every byte of the catalogue on every run (150 GB for a million photos of 150 kB). The
embedded store keeps each photo's size, modification and change times (nanoseconds) and inode
with its sha256 (:meth:`EmbeddedStore.photo_hashes`); a file whose four still agree keeps its
sha256 without being read, as git and rsync trust them. Writing a file changes its
modification time, and replacing or restoring one (``cp -p``, ``touch -r``) its change time or
inode. A file changed within :data:`RACY_NS` of being hashed is not remembered: a second change
in the same tick of a coarse clock would leave its times as they were.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

Signature = tuple[int, int, int, int]
"""size, mtime_ns, ctime_ns, inode."""
RACY_NS = 2_000_000_000


PHOTO_MAX_BYTES = 512 * 2**20
"""The largest photo file read: 40 megapixels (VITRINE_MAX_IMAGE_PIXELS' default) of 16-bit
RGBA, uncompressed, take 320 MB. A 12 GB file named .jpg in a catalogue was read whole,
hashed then loaded, and ended the whole `index` in a MemoryError (or the kernel's OOM
killer)."""


def regular_file(path: Path | str, limit: float | None = None) -> os.stat_result:
    """``os.stat(path)``; OSError for what is not a regular file (a link to /dev/zero would be
    read forever, opening a named pipe waits for a writer), or is larger than ``limit`` bytes
    (None: :data:`PHOTO_MAX_BYTES`, read as it is called; ``math.inf``: any size)."""
    limit = PHOTO_MAX_BYTES if limit is None else limit
    st = os.stat(path)
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "it is a device, pipe or socket, not a photo file",
                      str(path))
    if st.st_size > limit:
        raise OSError(errno.EFBIG, f"{st.st_size / 2**20:,.0f} MB, larger than the "
                      f"{limit // 2**20} MB a photo file may be", str(path))
    return st


def unreadable_reason(exc: OSError) -> str:
    """Why a photo file could not be read, in words for a skip list or an error."""
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    return f"cannot be read ({exc.strerror or exc})"


def read_limited(fh: BinaryIO, st: os.stat_result, limit: float | None = None,
                 first: int = 1 << 20) -> Iterator[bytes]:
    """The bytes of the open file ``fh`` (``st`` its stat), in chunks (the first of up to
    ``first`` bytes, then 1 MiB each); OSError past ``limit`` bytes (as :func:`regular_file`
    reads it: None, :data:`PHOTO_MAX_BYTES`; ``math.inf``, any size), or when a file that says
    it is empty has bytes: a system file such as those of /proc (/proc/self/pagemap reads out
    about 275 GB; `index` hashed it for minutes), or one caught as it is being written."""
    limit = PHOTO_MAX_BYTES if limit is None else limit
    if st.st_size == 0:
        if fh.read(1):
            raise OSError(errno.EINVAL, "its size says 0 bytes but it has more (a system "
                          "file such as those of /proc, or one being written)", fh.name)
        return
    total, size = 0, first
    while chunk := fh.read(size):
        total += len(chunk)
        if total > limit:
            raise OSError(errno.EFBIG, f"larger than the {limit // 2**20} MB a photo file "
                          "may be", fh.name)
        yield chunk
        size = 1 << 20


def read_whole(fh: BinaryIO, st: os.stat_result, limit: float | None = None) -> bytes:
    """The bytes of the open file ``fh`` (``st`` its stat) as :func:`read_limited` reads them
    (``limit`` as its), in one read of its size where it has not grown since (a read per MiB,
    then joined, took a 7 MB photo from 0.7 to 5 ms)."""
    chunks = list(read_limited(fh, st, limit, first=st.st_size + 1))
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def file_sha256(path: Path, limit: float | None = None) -> str:
    """The sha256 of a photo file (``limit`` as :func:`regular_file`'s; of any file, with
    ``math.inf``)."""
    limit = PHOTO_MAX_BYTES if limit is None else limit
    st = regular_file(path, limit)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in read_limited(fh, st, limit):
            digest.update(chunk)
    return digest.hexdigest()


def signature(st: os.stat_result) -> Signature:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino & (2**63 - 1)  # an SQLite int


class PhotoHashes:
    """sha256 of photos, from ``known`` (path → (signature, sha256), a store's) when a file's
    signature agrees; the hashes to remember afterwards are in :attr:`fresh`."""

    def __init__(self, known: dict[str, tuple[Signature, str]]):
        self.known = known
        self.fresh: dict[str, tuple[Signature, str]] = {}
        self.seen: set[str] = set()
        self._racy: dict[str, tuple[Signature, str]] = {}
        """Files this run read that :attr:`fresh` leaves out (changed moments ago): with it,
        a photo several products share is read once."""
        self.read = 0
        """Files read and hashed (the others kept their sha256)."""

    def sha256(self, path: Path) -> str:
        """The file's sha256; OSError as :func:`open` raises it."""
        key = str(path)
        before = signature(regular_file(path))
        self.seen.add(key)  # (a photo that is gone is forgotten)
        for entry in (self.known.get(key), self.fresh.get(key), self._racy.get(key)):
            if entry is not None and entry[0] == before:
                return entry[1]
        sha = file_sha256(path)
        self.read += 1
        after = os.stat(path)
        if signature(after) == before:
            newest = max(after.st_mtime_ns, after.st_ctime_ns)
            settled = self.fresh if newest < time.time_ns() - RACY_NS else self._racy
            settled[key] = (before, sha)
        return sha
