"""A figure's text fitted in points: names cleaned of what no font draws, measured as
matplotlib lays them out, wrapped into lines and cut with "…" where Chinese, Japanese and
Korean text, emoji and accents allow (:func:`_lines`); category names shortened so that
different ones always read differently (:func:`_short_names`)."""

from __future__ import annotations

import functools
import re
import unicodedata

from matplotlib import font_manager

from vitrine.jsonfile import shown
from vitrine.plots_fonts import font_families

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _readable(text: str) -> str:
    """``text`` as a figure draws it: a file name's undecodable bytes as "�", a control
    character (a tab, an escape code) as a space (no font draws one: each was a box, and
    the missing-font note was said for them)."""
    return _CONTROL.sub(" ", shown(str(text)))


DPI = 110
"""The figures' resolution: a tile of 2.4 inches is 264 pixels."""
TILE_TEXT = 150.0
"""How wide, in points, a line of a recommendation tile's title may be (the tile is 2.4
inches, 173 points: the rest keeps it off its neighbour's title)."""


@functools.cache
def _measurer():
    from matplotlib.backends.backend_agg import RendererAgg

    return RendererAgg(1, 1, DPI)


@functools.lru_cache(maxsize=1 << 16)
def _measured(text: str, size: float, families: tuple[str, ...]) -> float:
    prop = font_manager.FontProperties(family=list(families), size=size)
    width, _, _ = _measurer().get_text_width_height_descent(text, prop, ismath=False)
    return width * 72 / DPI


def _width(text: str, size: float = 8) -> float:
    """How wide, in points, ``text`` is drawn at ``size`` points with the figures' fonts:
    measured, as matplotlib lays it out (a Japanese or Chinese character or an emoji is
    about twice a Latin letter, which counting characters missed: helper-238; Arabic is
    shaped), not counted."""
    return _measured(text, size, font_families())


_JOINERS = re.compile(  # joiners, variation selectors, skin tones, tag characters
    "[\u200c\u200d\ufe00-\ufe0f\U0001f3fb-\U0001f3ff\U000e0020-\U000e007f]")
_NO_LINE_START = frozenset("、。，．・：；！？）」』】〕〉》ー"
                           "ゝゞヽヾぁぃぅぇぉっゃゅょァィゥェォッャュョ")
"""What a Japanese or Chinese line does not start with (closing marks, small kana)."""


def _cuttable(text: str, i: int) -> bool:
    """Whether ``text`` may be cut before its ``i``-th character: never off the letter an
    accent, a variation selector or a skin tone belongs to, nor inside an emoji sequence."""
    return 0 < i < len(text) and not unicodedata.combining(text[i]) \
        and unicodedata.category(text[i]) not in ("Mn", "Mc", "Me") \
        and not _JOINERS.match(text[i]) and text[i - 1] != "\u200d"


def _wide(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")


_BREAKS = re.compile(r"[^\S\u00a0\u2007\u202f]+")
"""The spaces a line may break at: any but the no-break ones."""


def _pieces(text: str) -> list[tuple[str, str]]:
    """``text``'s words, each with the space before it; Chinese, Japanese and Korean
    characters and emoji are each a piece of their own (a line may break between them: a
    Japanese name has no spaces)."""
    pieces = []
    for word in _BREAKS.split(text):  # (not at a no-break space: "R$\u00a0199,90" stays
        if not word:                  # one, as textwrap kept it: helper-241)
            continue
        start = 0
        for i in range(1, len(word)):
            if _cuttable(word, i) and (_wide(word[i]) or _wide(word[i - 1])) \
                    and word[i] not in _NO_LINE_START:
                pieces.append((" " if start == 0 else "", word[start:i]))
                start = i
        pieces.append((" " if start == 0 else "", word[start:]))
    return pieces


def _fit(text: str, width: float, end: str = "", size: float = 8) -> int:
    """How many characters of ``text``'s start fit in ``width`` points with ``end`` after
    them (cut where :func:`_cuttable` allows; at least one piece, so a line is never
    empty)."""
    text = text[:_most_chars(width, size)]
    cuts = [i for i in range(1, len(text)) if _cuttable(text, i)] + [len(text)]
    if _width(text[:cuts[0]].rstrip() + end, size) > width:  # (no cut allowed fits: a
        cuts = list(range(1, len(text) + 1))  # sequence of joined emoji ran two tiles wide)
    low, high = 0, len(cuts) - 1  # the last cut that fits, by bisection
    while low < high:
        middle = (low + high + 1) // 2
        if _width(text[:cuts[middle]].rstrip() + end, size) <= width:
            low = middle
        else:
            high = middle - 1
    return cuts[low]


def _most_chars(width: float, size: float = 8) -> int:
    """More characters than ``width`` points hold at ``size`` points (a Latin "i" is about
    a quarter of the size): a text is cut to it before it is measured (measuring a name of
    100,000 characters took seconds)."""
    return int(2 * width * 8 / size) + 2


def _ellipsis(text: str, width: float, size: float = 8) -> str:
    """``text`` ending in "…", cut to fit ``width`` points."""
    return text[:_fit(text, width, "…", size)].rstrip() + "…"


def _lines(text: str, width: float, most: int) -> list[str]:
    """``text`` wrapped into lines of at most ``width`` points (8-point text), at most
    ``most`` of them, the last ending in "…" when some was left out; a word longer than a
    line is cut (:func:`_readable`). Widths are measured, not counted in characters
    (helper-238: 28 Japanese characters were two tiles wide, over the neighbour's title)."""
    lines: list[str] = []
    line = ""
    text = _readable(text)
    more = len(text) > (most_chars := most * _most_chars(width))
    for space, piece in _pieces(text[:most_chars]):
        if len(lines) > most:
            break
        joined = line + space + piece if line else piece
        if _width(joined) <= width:
            line = joined
            continue
        if line and _width(piece) <= width:
            lines.append(line)
            line = piece
            continue
        while _width(joined) > width and len(lines) <= most:  # a word longer than a line,
            cut = _fit(joined, width)  # the line filled first
            lines.append(joined[:cut].rstrip())
            joined = joined[cut:].lstrip()
        line = joined
    lines.append(line)
    if len(lines) > most or more:
        lines = lines[:most]
        lines[-1] = (lines[-1] + "…" if _width(lines[-1] + "…") <= width
                     else _ellipsis(lines[-1], width))
    return lines


def _short_names(names, width: float, size: float = 8) -> dict[str, str]:
    """Each of ``names`` (the categories of one figure) as drawn in ``width`` points: whole
    where it fits, else its start and its end either side of "…", and different names
    always differently (helper-238: cut at the end, acessorios_masculinos_relogios_de_pulso
    and acessorios_masculinos_relogios_de_bolso both read "acessorios_masculinos_re…")."""
    full = {name: _readable(name).strip() for name in dict.fromkeys(names)}
    short = {name: text if len(text) <= _most_chars(width, size) and _width(text, size) <= width
             else _middle(text, width, size)
             for name, text in full.items()}
    for group in _collisions(short):  # they differ only in the middle: show where
        for name in group:
            text = full[name]
            differs = max(_common_start(text, full[other]) for other in group if other != name)
            short[name] = _around(text, differs, width, size)
    number = 0  # (still alike: numbered, in the figure's order, one count over every
    # group: numbered 1, 2 within each group, "Relógio Masculino —… (2)" stood for two
    # categories, on one tile as its label and the model's guess: helper-268)
    for group in _collisions(short):
        for name in group:
            number += 1
            differs = max(_common_start(full[name], full[other]) for other in group
                          if other != name)
            short[name] = _around(full[name], differs, width - _width(f" ({number})", size),
                                  size) + f" ({number})"
    return short


def _collisions(short: dict[str, str]) -> list[list[str]]:
    alike: dict[str, list[str]] = {}
    for name, text in short.items():
        alike.setdefault(text, []).append(name)
    return [group for group in alike.values() if len(group) > 1]


def _common_start(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                min(len(a), len(b)))


def _middle(text: str, width: float, size: float) -> str:
    """``text``'s start, "…" and its end, in ``width`` points (the end gets the larger
    share: categories differ there more often, "_masculino", "_feminino")."""
    head = text[:_fit(text, 0.4 * (width - _width("…", size)), size=size)]
    if (word := _SEPARATOR.search(head[::-1])) and word.start() < len(head) / 2:
        head = head[:len(head) - word.start()]  # "acessorios_…", not "acessorios_ma…"
    head = head.rstrip()  # (the end alone measured: 10,000 zero-width characters, each a
    # cut of no width, took minutes: helper-241)
    rest = text[len(head):][-_most_chars(width, size):]
    return head + "…" + _tail(rest, width - _width(head + "…", size), size)


_SEPARATOR = re.compile(r"[\s_\-/.,;:]")


def _tail(text: str, width: float, size: float) -> str:
    """The longest end of ``text`` that fits ``width`` points (at least one character),
    from a word's start if that leaves out little ("relogios_de_pulso", not
    "elogios_de_pulso")."""
    cuts = [i for i in range(len(text) - 1, 0, -1) if _cuttable(text, i)]
    kept = text[cuts[0]:] if cuts else text
    for i in cuts:
        if _width(text[i:].lstrip(), size) > width:
            break
        kept = text[i:].lstrip()
    if (word := _SEPARATOR.search(kept)) and word.end() < len(kept) / 3:
        kept = kept[word.end():]
    return kept


def _around(text: str, differs: int, width: float, size: float) -> str:
    """``text``'s start, then from a little before its ``differs``-th character (where it
    first differs from a name it was cut alike to) as much as fits, each cut with "…"."""
    head = text[:_fit(text, 0.25 * width, size=size)].rstrip()
    start = max(len(head), differs - 4)
    while start > len(head) and not _cuttable(text, start):
        start -= 1
    rest = text[start:]
    room = width - _width(head + "…", size)
    fits = len(rest) <= _most_chars(room, size) and _width(rest, size) <= room
    return head + "…" + (rest if fits else _ellipsis(rest, room, size))
