"""JSON as Vitrine writes it: UTF-8, with the shop's text as it is, except a file name that
is not UTF-8 (its undecodable bytes kept as surrogates by Python), which only ``\\u`` escapes
keep valid: written raw, it crashed `train` and `demo` after their work, leaving an empty
``demo.json`` where the last good one was."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import stat
import time
from pathlib import Path


def json_text(data: object, **options: object) -> str:
    """``data`` as JSON text that encodes to UTF-8 (``options`` as :func:`json.dumps`'s)."""
    text = json.dumps(data, ensure_ascii=False, **options)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a file name that is not UTF-8: \u escapes keep it valid JSON
        text = json.dumps(data, **options)
    return text


STALE_PART_S = 3600
"""Age past which a part file :func:`write_json` left is a killed run's (a write takes
milliseconds)."""


def write_json(path: Path, data: object, indent: int = 1) -> None:
    """Write ``data`` to ``path`` whole or not at all: beside it, on disk, then renamed over
    it with the old file's permissions (a run stopped while writing left a truncated file
    where the last good one was; a power cut after the rename, an empty one). Part files of
    runs killed outright are removed."""
    path = Path(path)
    text = json_text(data, indent=indent)
    _remove_stale_parts(path)
    part = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.part")
    try:
        with open(part, "x", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(part, stat.S_IMODE(path.stat().st_mode))
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)


def _remove_stale_parts(path: Path) -> None:
    now = time.time()
    for part in path.parent.glob(f".{glob.escape(path.name)}.*.part"):
        with contextlib.suppress(OSError):
            if now - part.stat().st_mtime > STALE_PART_S:
                part.unlink()


def shown(text: str) -> str:
    """``text`` for people to read (a report, a figure): a file name's undecodable bytes as
    "�" (they cannot be written as UTF-8 text)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
