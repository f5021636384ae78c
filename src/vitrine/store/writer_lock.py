"""The embedded store's writer lock: one writing process at a time (a lock file), waited for
a while; whoever takes it removes what writers killed mid-write left in the store folder.
And the rebuild lock: one process at a time rebuilds the index beside its requests."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from vitrine import files
from vitrine.errors import StoreBusy, StoreError
from vitrine.store.index_files import INDEX_TMP
from vitrine.store.sqlite_db import MANIFEST_NAME

WRITE_WAIT = 5.0
"""Seconds a writer waits for another process's write before it gives up (the API waits
less: :data:`vitrine.service_writes.API_WRITE_WAIT`)."""
LOCK_POLL = 0.05
"""Seconds between tries of the writer lock while waiting."""


def take_writer_lock(root: Path, wait: float | None = None) -> TextIO:
    """The lock file of the store folder ``root``, locked (it stays locked while it is open),
    waiting up to ``wait`` seconds (None: :data:`WRITE_WAIT`) for another process's write (a
    server's upload takes milliseconds, `vitrine index` minutes); a StoreError when it is not
    free by then or the folder cannot be written. Files left by a writer killed mid-write are
    removed."""
    wait = WRITE_WAIT if wait is None else wait
    try:
        fh = open(root / "write.lock", "a")  # noqa: SIM115 - held for the store's life
    except OSError as exc:
        raise StoreError(f"cannot write to the store {root} ({exc.strerror or exc}); "
                         "it is read-only here.") from None
    started = time.monotonic()
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            waited = time.monotonic() - started
            if waited >= wait:
                fh.close()
                # the time waited here (a server's request, which had only what was left of
                # its own wait, says its whole wait: vitrine.service_writes)
                raise busy(root, waited) from None
            time.sleep(LOCK_POLL)
    if not _still_there(fh, root / "write.lock"):  # the folder removed while this one
        # waited (a `migrate` that made it, then was refused): its writes would go nowhere,
        # with success; or the lock file alone deleted or replaced, which locks nothing now
        fh.close()
        raise StoreError(f"the store {root} was removed while this process waited to write "
                         "to it." if not root.is_dir() else f"the lock file of the store "
                         f"{root} was deleted or replaced while this process waited to write "
                         "to it; run the command again.")
    # only the store's own part files: an index file is saved without the lock (a reader,
    # the server's rebuild thread), so only one whose process is gone or that has not
    # changed for an hour (part_abandoned: a process number is given again); never another
    # file that ends in .tmp (a `vitrine related --out` into the folder lost its part file);
    # the half-saved photos of STORE/uploads, a folder of thousands, go at `vitrine index`
    for leftover in root.glob("*.tmp"):
        if ((m := INDEX_TMP.fullmatch(leftover.name)) and part_abandoned(leftover, int(m[1]))
                or leftover.name == MANIFEST_NAME + ".tmp"):
            leftover.unlink(missing_ok=True)
    return fh


def busy(root: Path | str, waited: float) -> StoreBusy:
    """The refusal of a write that waited ``waited`` seconds for another process's (a time
    under 0.1 s is not said: "waited 0.0 s")."""
    return StoreBusy(f"another process is writing to the store {root}"
                     + (f" (waited {waited:.1f} s)." if waited >= 0.1 else "."))


def _still_there(fh: TextIO, path: Path) -> bool:
    """Whether the open file ``fh`` is still the file at ``path`` (not deleted, with its
    folder, or replaced); by its device and inode, which NFS keeps for a deleted open file
    renamed .nfsXXXX, where its link count says nothing."""
    try:
        there = os.stat(path)
    except OSError:
        return False
    mine = os.fstat(fh.fileno())
    return (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino)


def writer_running(root: Path) -> bool:
    """Whether another process holds the writer lock of the store folder ``root`` now (a
    `vitrine index` run: minutes to hours). False where the lock file cannot be opened."""
    try:
        with open(root / "write.lock", "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)  # (let go as it closes)
            except BlockingIOError:
                return True
            return False
    except OSError:
        return False


@contextlib.contextmanager
def rebuild_lock(root: Path) -> Iterator[bool]:
    """Whether this process may rebuild the index of the store folder ``root`` (True: held
    until the block ends): not while another process rebuilds it (two servers on one store
    each built the same index, minutes of both machines' cores). Where the lock file cannot
    be made (a read-only folder), True: nothing else writes there."""
    try:
        fh = open(root / "rebuild.lock", "a")  # noqa: SIM115 - closed below
    except OSError:
        yield True
        return
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def part_abandoned(part: Path, pid: int) -> bool:
    """Whether the part file ``part``, named by the process numbered ``pid`` that writes it,
    was left by a killed one: that process is gone, or the file has not changed for
    :data:`~vitrine.files.STALE_PART_S` (a save writes it in seconds). Its number alone says
    nothing in a container, where the server restarted after a kill is process 1 again, as
    the killed one was: its part files stayed for good."""
    if not process_alive(pid):
        return True
    try:
        return time.time() - part.stat().st_mtime > files.STALE_PART_S
    except OSError:
        return False


def process_alive(pid: int) -> bool:
    """Whether the process numbered ``pid`` runs on this machine."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # none by that number (or none can be)
        return False
    except PermissionError:  # another user's
        return True
    return True
