"""Giving the memory a stage of ``vitrine index`` freed back to the system before the next.

The C allocator (glibc's malloc) keeps what Python objects and arrays smaller than its
mmap threshold free in its heap for later use rather than returning it: after the duplicate
search of 65,024 products the process held ~300 MB more than before it, nearly all of it
freed, and the index build's array (333 MB, mapped anew) came on top of that
(benchmarks/index_memory.py). :func:`release_freed` hands whole free pages back
(``malloc_trim``); nothing else changes. Elsewhere (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim  # (glibc; the process's own C library)
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_freed() -> bool:
    """Return the free pages of the C heap to the system (glibc); whether it could."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
