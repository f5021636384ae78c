"""Figures: a query photo next to its recommendations, with names and similarity scores."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import io
import logging
import os
import re
import stat
import unicodedata
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import matplotlib

matplotlib.use("Agg")
# shop text is literal: "R$ 99 por R$ 79" is no formula between two '$' (it raised)
matplotlib.rcParams["text.parse_math"] = False
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import font_manager, transforms  # noqa: E402

from vitrine.display import percent  # noqa: E402
from vitrine.errors import ImageError, VitrineError  # noqa: E402
from vitrine.files import descriptor, is_stream, write_whole  # noqa: E402
from vitrine.images import thumbnail  # noqa: E402
from vitrine.jsonfile import shown  # noqa: E402
from vitrine.store.base import Match  # noqa: E402

P = ParamSpec("P")
R = TypeVar("R")
TILE_SIDE = 448
"""Longest side, in pixels, a photo is shown at (a tile is about 2.4 inches at 110 dpi): a
large JPEG decodes at reduced scale, as for the model (a 6000×4000 query took 2 GB)."""


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
log = logging.getLogger(__name__)


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


def _show(ax, image_path: str | Path, title: list[str], colour: str = "black",
          max_pixels: int = 40_000_000) -> None:
    try:
        ax.imshow(thumbnail(Path(image_path), TILE_SIDE, max_pixels))
    except ImageError:  # (a file there that is no photo any more is not "missing")
        said = "(photo unreadable)" if Path(image_path).exists() else "(photo missing)"
        ax.text(0.5, 0.5, said, ha="center", va="center")
    ax.set_title("\n".join(title), fontsize=8, color=colour)
    ax.axis("off")


ROW_TILES = 6
"""The most tiles a recommendation figure puts in a row: past it the tiles wrap into a grid
(helper-238: --k 100 drew one row 26,653 pixels wide)."""


@_fonts
def plot_recommendations(query_image: str | Path, query_title: str, matches: list[Match],
                         out: Path, max_pixels: int = 40_000_000) -> Path:
    """Draw the query and its matches, in one row up to ``ROW_TILES`` tiles, else in rows of
    that many, the query first, and save a PNG to ``out`` (``max_pixels``: the
    VITRINE_MAX_IMAGE_PIXELS setting, as for search)."""
    tiles = 1 + max(1, len(matches))
    cols = min(tiles, ROW_TILES)
    rows = -(-tiles // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 3.2 * rows), squeeze=False)
    axes = list(axes.flat)
    _show(axes[0], query_image, _lines("Query: " + query_title, TILE_TEXT, 3), "tab:blue",
          max_pixels)
    if not matches:
        axes[1].text(0.5, 0.5, "(no similar products)", ha="center", va="center")
    categories = _short_names((m.product.category for m in matches), TILE_TEXT)
    for ax, match in zip(axes[1:], matches, strict=False):
        label = match.product.name or match.product.product_id
        lines = (_lines(label, TILE_TEXT, 2) + [categories[match.product.category]]
                 + [f"similarity {match.score:.3f}"])
        _show(ax, match.product.image, lines, max_pixels=max_pixels)
    for ax in axes[1 + len(matches):]:
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, out)


FORMATS = ("png", "jpg", "jpeg", "pdf", "svg")
"""The figure formats a file's suffix may name (``--plot``)."""


def _save(fig, out: Path) -> Path:
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        figure = io.BytesIO()  # then written at once: a pipe (/dev/stdout) cannot seek
        # the bounding box grows to hold every title: a 4-line one reached the edge
        # (the format said: matplotlib adds ".png" to a name without a suffix, /dev/null,
        # and knows no ".pipe")
        kind = out.suffix[1:].lower()
        fig.savefig(figure, format=kind if kind in FORMATS else "png", dpi=DPI,
                    bbox_inches="tight", pad_inches=0.1)
        if (fd := descriptor(out)) is not None:  # 3> fig.png, 3>> figs.log, a pipe: the
            with os.fdopen(os.dup(fd), "wb") as stream:  # descriptor as the shell opened it
                stream.write(figure.getbuffer())
                stream.flush()
                if stat.S_ISREG(os.fstat(fd).st_mode) \
                        and not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND:
                    os.ftruncate(fd, stream.tell())  # (3<> old.png: no old bytes after it)
        elif is_stream(out):  # /dev/null, a named pipe
            out.write_bytes(figure.getbuffer())
        else:  # whole, never through a hard link (a product's photo) nor a symbolic one (a
            write_whole(out, figure.getbuffer())  # link to the store's database): replaced
    except OSError as exc:
        why = "a file is in the way of its folder" if isinstance(
            exc, FileExistsError | NotADirectoryError) else exc.strerror or exc
        raise VitrineError(f"cannot write the figure {out} ({why}).") from None
    finally:
        plt.close(fig)
    return out


@_fonts
def plot_history(history: list[dict], out: Path, *, train_loss: str = "train",
                 refit: bool = False) -> Path:
    """Loss and accuracy per epoch, train and validation, over both training phases (a
    dashed line marks where fine-tuning starts). ``train_loss`` names the training loss
    (weighted or smoothed, it is not validation's); with ``refit`` the stars mark the epochs
    the refit trains up to, not weights kept."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    x = list(range(1, len(history) + 1))
    star = ("best validation loss (refit trains up to it)" if refit
            else "restored (best validation loss)")
    named: dict = {ax: [] for ax in axes}
    for ax, key, title in ((axes[0], "loss", "Loss"), (axes[1], "acc", "Accuracy")):
        label = train_loss if key == "loss" else "train"
        ax.plot(x, [h[key] for h in history], "o-", ms=3, label=label)
        ax.plot(x, [h[f"val_{key}"] for h in history], "o-", ms=3, label="validation")
        phases = [h["phase"] for h in history]
        # above the axes (helper-238: drawn inside along the top, the first epoch's loss and
        # an accuracy of 1.0 ran through them), placed once the axes are laid out
        above = transforms.offset_copy(ax.get_xaxis_transform(), fig, y=2, units="points")
        for i in range(len(phases)):
            if i and phases[i] != phases[i - 1]:
                ax.axvline(i + 0.5, color="grey", ls="--")
            if not i or phases[i] != phases[i - 1]:
                named[ax].append(ax.text(i + 0.6 if i else 1, 1, phases[i], va="bottom",
                                         fontsize=8, transform=above, in_layout=False))
        kept = {h["phase"]: i + 1 for i, h in enumerate(history) if h.get("best")}
        ax.plot(list(kept.values()), [history[i - 1][f"val_{key}"] for i in kept.values()],
                "k*", ms=10, label=star)
        if len(x) <= 12:  # one tick per epoch (one epoch had ticks 0.96 … 1.04)
            ax.set_xticks(x)
        else:
            ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_title(title, pad=PHASE_ROW)  # over the phase names
        ax.set_xlabel("epoch (both phases)")
        # below the axes: inside, it hid the phase names written along the top
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8)
    fig.tight_layout()
    for ax, names in named.items():
        _place_phases(ax, names)
    return _save(fig, out)


PHASE_ROW = 16
"""How far above the axes, in points, a history figure's title is: the phase names are
written between them."""


def _place_phases(ax, names: list) -> None:
    """Move the phase names written over ``ax`` (its texts ``names``, in order) where each
    is whole and apart: each from where its phase starts, but none past the axes' right end
    (helper-238: 40 epochs then 1 of fine-tuning cut "fine-tuning" at the frame) nor over
    the name before it."""
    renderer = ax.figure.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    lefts = [ax.transData.transform((t.get_position()[0], 0))[0] for t in names]
    widths = [t.get_window_extent(renderer).width for t in names]
    gap = 6 * ax.figure.dpi / 72
    for i in range(len(names)):  # apart, left to right, then inside, right to left
        lefts[i] = max(lefts[i], box.x0, lefts[i - 1] + widths[i - 1] + gap if i else box.x0)
    for i in reversed(range(len(names))):
        end = lefts[i + 1] - gap if i + 1 < len(names) else box.x1
        lefts[i] = max(box.x0, min(lefts[i], end - widths[i]))
    for name, left in zip(names, lefts, strict=True):
        name.set_x(ax.transData.inverted().transform((left, 0))[0])


CONFUSION_SIDE_MAX = 24.0
"""The confusion matrix's side, in inches, however many classes: it grew by 0.75 in a class,
so 200 classes drew 40,000 counts on a 255-megapixel figure (4 minutes, 11 GB)."""
COUNTS_ALL, COUNTS_MISTAKES = 40, 150
"""Up to how many classes the confusion matrix writes every count, then only its mistakes."""


TICK_NAME = 120.0
"""How wide, in points of 8-point text, a category name the confusion matrix shows may be
(about 28 Latin letters); a longer one keeps its start and end around "…"."""
TICKS_SLANTED = 14.0
"""The narrowest cell, in points, whose column names are slanted at 45 degrees (0.7 of a
cell apart); in narrower cells they stand upright, a cell apart (helper-238: 8-point names
in cells of 10 points ran into each other)."""


def _confusion_cells(n: int) -> tuple[float, float]:
    """The confusion matrix's side (inches) and a cell's side (points) for ``n`` classes."""
    size = min(1.2 + 0.75 * n, CONFUSION_SIDE_MAX)
    return size, 72 * (size - 1.2) / max(n, 1)


def numbers_classes(n: int) -> bool:
    """Whether the confusion matrix of ``n`` classes numbers them (in the order of the
    report's table, which then numbers them too): their names no longer fit a cell."""
    return _confusion_cells(n)[1] < 6


@_fonts
def plot_confusion_matrix(matrix, classes: list[str], out: Path) -> Path:
    """Counts with row-normalised shading (row = true class, column = predicted class). The
    figure's side is bounded: past ``COUNTS_ALL`` classes only the mistakes' counts are
    written, past ``COUNTS_MISTAKES`` none; where the names no longer fit, the classes are
    numbered in the order of the report's table."""
    import numpy as np

    matrix = np.asarray(matrix)
    n = len(classes)
    rows = matrix.sum(axis=1, keepdims=True)
    share = matrix / np.maximum(rows, 1)
    size, cell = _confusion_cells(n)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    cells = (np.ndindex(n, n) if n <= COUNTS_ALL else
             zip(*np.nonzero(matrix * ~np.eye(n, dtype=bool)), strict=True)
             if n <= COUNTS_MISTAKES else ())
    for i, j in cells:
        ax.text(j, i, str(matrix[i, j]), ha="center", va="center",
                fontsize=min(8, 0.5 * cell), color="white" if share[i, j] > 0.5 else "black")
    if not numbers_classes(n):
        # (a long name, as a product table's category may be, squeezed the matrix to a
        # corner of the figure)
        # (helper-238: cut at the end, two names sharing their start read the same)
        short = _short_names(classes, TICK_NAME)
        names = [short[c] for c in classes]
        slanted = cell >= TICKS_SLANTED
        ax.set_xticks(range(n), names, rotation=45 if slanted else 90,
                      ha="right" if slanted else "center", fontsize=min(8, 0.8 * cell))
        ax.set_yticks(range(n), names, fontsize=min(8, 0.8 * cell))
        ax.set_xlabel("predicted")
    else:
        step = max(1, -(-n // 40))
        ticks = range(0, n, step)
        ax.set_xticks(ticks, [str(i + 1) for i in ticks], fontsize=7)
        ax.set_yticks(ticks, [str(i + 1) for i in ticks], fontsize=7)
        ax.set_xlabel("predicted (classes numbered in the order of report.md's table)")
    ax.set_ylabel("true")
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    return _save(fig, out)


MISCLASSIFIED_TEXT = 172.0
"""How wide, in points, a line of a misclassified photo's title may be (the tile is 2.6
inches, 187 points)."""


@_fonts
def plot_misclassified(rows: list[dict], out: Path, limit: int = 20) -> Path:
    """The misclassified photos (``vitrine.report.misclassified`` rows, the first ``limit``),
    each titled with its label and the model's guess."""
    rows = rows[:limit]
    cols = min(5, max(1, len(rows)))
    n_rows = max(1, -(-len(rows) // cols))
    fig, axes = plt.subplots(n_rows, cols, figsize=(2.6 * cols, 3.0 * n_rows), squeeze=False)
    # a category reads the same on both lines and every tile, and two never alike
    # (helper-238: "label: acessorios_masculinos_re…", "model: acessorios_masculinos_re…");
    # the demo's longest, x_sapato_social_masculino, stays whole
    room = MISCLASSIFIED_TEXT - max(_width("label: "), _width("model: ") + _width(" (99.9%)"))
    categories = _short_names((row[key] for row in rows for key in ("labelled", "predicted")),
                              room)
    for ax, row in zip(axes.flat, rows, strict=False):
        # the name shortened, not the line: "label: " and a name of 24 characters wrapped as
        # one text left "label:…" (the demo's mocassim_masculino was "model:…")
        title = (_lines(row["name"] or row["product_id"], MISCLASSIFIED_TEXT, 1)
                 + ["label: " + categories[row["labelled"]]]
                 + ["model: " + categories[row["predicted"]]
                    + f" ({percent(row['probability'])})"])
        _show(ax, row["image"], title, "tab:red")
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, out)
