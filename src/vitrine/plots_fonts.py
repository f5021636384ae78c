"""The figures' fonts: DejaVu Sans, then the fallback fonts this machine has for what it lacks
(Chinese, Japanese, Korean, symbols, emoji), and the one note when a glyph none of them has
shows as a box (:func:`_fonts`, the decorator every figure is drawn under)."""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import warnings
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import matplotlib
from matplotlib import font_manager

P = ParamSpec("P")
R = TypeVar("R")


FALLBACK_FONTS = (
    # Chinese, Japanese, Korean
    "Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK TC", "Noto Sans CJK KR",
    "Source Han Sans", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei", "Droid Sans Fallback",
    "Microsoft YaHei", "Yu Gothic", "Meiryo", "Malgun Gothic", "PingFang SC", "Hiragino Sans",
    "Apple SD Gothic Neo",
    # symbols and emoji, in one colour (matplotlib draws no colour emoji)
    "Symbola", "Noto Emoji", "Noto Sans Symbols 2", "Segoe UI Symbol", "Segoe UI Emoji",
)
"""Fonts a title falls back to, glyph by glyph, for what DejaVu Sans lacks, among those this
machine has (e.g. Debian's fonts-wqy-microhei and fonts-symbola, 3 MB)."""
MISSING_NOTE = ("note: some characters of the figures' names have no font on this machine "
                "and show as boxes; a font with them (e.g. Debian's fonts-noto-cjk, "
                "fonts-wqy-microhei, fonts-symbola) fixes that.")
log = logging.getLogger("vitrine.plots")  # (its name before the split: log settings)


@functools.cache
def font_families() -> tuple[str, ...]:
    """DejaVu Sans, then the fallback fonts this machine has; fonts installed after
    matplotlib made its font cache are read too (a scan of the font folders, once)."""
    manager = font_manager.fontManager
    known = {f.fname for f in manager.ttflist}
    for path in font_manager.findSystemFonts():
        if path not in known:
            with contextlib.suppress(Exception):  # a font FreeType cannot read
                manager.addfont(path)
    names = {f.name for f in manager.ttflist}
    return ("DejaVu Sans", *(name for name in FALLBACK_FONTS if name in names))


def _fonts(draw: Callable[P, R]) -> Callable[P, R]:
    """Draw with the fallback fonts; a glyph none has shows as a box, said once a process
    (matplotlib warned on the terminal for each one)."""
    @functools.wraps(draw)
    def drawn(*args: P.args, **kwargs: P.kwargs) -> R:
        with warnings.catch_warnings(record=True) as caught, \
                matplotlib.rc_context({"font.family": list(font_families())}):
            warnings.filterwarnings("always", "Glyph .* missing")
            result = draw(*args, **kwargs)
        missing = [w for w in caught  # ("… from font(s) X."; matplotlib 3.8: "… from
                   # current font.")
                   if re.match(r"Glyph .* missing from", str(w.message))]
        for other in caught:
            if other not in missing:
                warnings.warn_explicit(other.message, other.category, other.filename,
                                       other.lineno)
        if missing:
            _note_missing()
        return result
    return drawn


@functools.cache
def _note_missing() -> None:
    log.warning(MISSING_NOTE)
