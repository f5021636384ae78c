"""JSON as Vitrine writes it: UTF-8, with the shop's text as it is, except a file name that
is not UTF-8 (its undecodable bytes kept as surrogates by Python), which only ``\\u`` escapes
keep valid: written raw, it crashed `train` and `demo` after their work, leaving an empty
``demo.json`` where the last good one was."""

from __future__ import annotations

import json
import math
from pathlib import Path

from vitrine.files import write_whole


def finite(value):
    """``value`` with NaN and infinities as None (JSON has no NaN: metrics of an empty set, a
    loss that stopped being a number)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def json_text(data: object, **options: object) -> str:
    """``data`` as JSON text that encodes to UTF-8 (``options`` as :func:`json.dumps`'s)."""
    text = json.dumps(data, ensure_ascii=False, **options)
    # a file name that is not UTF-8: its undecodable bytes (lone surrogates, only ever inside
    # strings, where JSON writes a backslash of the text itself as two) as the \u escapes
    # that read back as them; the rest stays as it is (the whole document was escaped,
    # "Rel\u00f3gio" for every name beside one such file: helper-220)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def write_json(path: Path, data: object, indent: int = 1) -> None:
    """Write ``data`` to ``path`` whole or not at all (:func:`vitrine.files.write_whole`)."""
    write_whole(path, json_text(data, indent=indent).encode("utf-8"))


def shown(text: str) -> str:
    """``text`` for people to read (a report, a figure): a file name's undecodable bytes as
    "�" (they cannot be written as UTF-8 text)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
