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
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import matplotlib

matplotlib.use("Agg")
# shop text is literal: "R$ 99 por R$ 79" is no formula between two '$' (it raised)
matplotlib.rcParams["text.parse_math"] = False
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import font_manager  # noqa: E402

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


def _lines(text: str, width: int, most: int) -> list[str]:
    """``text`` wrapped at ``width`` characters into at most ``most`` lines, the last ending
    in "…" when some was left out; a word longer than a line is cut (:func:`_readable`)."""
    lines = textwrap.wrap(_readable(text), width) or [""]
    if len(lines) > most:
        lines = lines[:most]
        lines[-1] = lines[-1][:width - 1].rstrip() + "…"
    return lines


def _show(ax, image_path: str | Path, title: list[str], colour: str = "black",
          max_pixels: int = 40_000_000) -> None:
    try:
        ax.imshow(thumbnail(Path(image_path), TILE_SIDE, max_pixels))
    except ImageError:  # (a file there that is no photo any more is not "missing")
        said = "(photo unreadable)" if Path(image_path).exists() else "(photo missing)"
        ax.text(0.5, 0.5, said, ha="center", va="center")
    ax.set_title("\n".join(title), fontsize=8, color=colour)
    ax.axis("off")


@_fonts
def plot_recommendations(query_image: str | Path, query_title: str, matches: list[Match],
                         out: Path, max_pixels: int = 40_000_000) -> Path:
    """Draw the query and its matches in one row and save a PNG to ``out`` (``max_pixels``:
    the VITRINE_MAX_IMAGE_PIXELS setting, as for search)."""
    cols = 1 + max(1, len(matches))
    fig, axes = plt.subplots(1, cols, figsize=(2.4 * cols, 3.2))
    _show(axes[0], query_image, _lines("Query: " + query_title, 28, 3), "tab:blue", max_pixels)
    if not matches:
        axes[1].text(0.5, 0.5, "(no similar products)", ha="center", va="center")
    for ax, match in zip(axes[1:], matches, strict=False):
        label = match.product.name or match.product.product_id
        lines = (_lines(label, 26, 2) + _lines(match.product.category, 26, 1)
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
        fig.savefig(figure, format=kind if kind in FORMATS else "png", dpi=110,
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
    for ax, key, title in ((axes[0], "loss", "Loss"), (axes[1], "acc", "Accuracy")):
        label = train_loss if key == "loss" else "train"
        ax.plot(x, [h[key] for h in history], "o-", ms=3, label=label)
        ax.plot(x, [h[f"val_{key}"] for h in history], "o-", ms=3, label="validation")
        phases = [h["phase"] for h in history]
        for i in range(1, len(phases)):
            if phases[i] != phases[i - 1]:
                ax.axvline(i + 0.5, color="grey", ls="--")
                ax.text(i + 0.6, ax.get_ylim()[1], phases[i], va="top", fontsize=8)
        if phases:
            ax.text(1, ax.get_ylim()[1], phases[0], va="top", fontsize=8)
        kept = {h["phase"]: i + 1 for i, h in enumerate(history) if h.get("best")}
        ax.plot(list(kept.values()), [history[i - 1][f"val_{key}"] for i in kept.values()],
                "k*", ms=10, label=star)
        if len(x) <= 12:  # one tick per epoch (one epoch had ticks 0.96 … 1.04)
            ax.set_xticks(x)
        else:
            ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_title(title)
        ax.set_xlabel("epoch (both phases)")
        # below the axes: inside, it hid the phase names written along the top
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8)
    fig.tight_layout()
    return _save(fig, out)


CONFUSION_SIDE_MAX = 24.0
"""The confusion matrix's side, in inches, however many classes: it grew by 0.75 in a class,
so 200 classes drew 40,000 counts on a 255-megapixel figure (4 minutes, 11 GB)."""
COUNTS_ALL, COUNTS_MISTAKES = 40, 150
"""Up to how many classes the confusion matrix writes every count, then only its mistakes."""


TICK_NAME = 28
"""The longest category name the confusion matrix shows whole; longer ones end in "…"."""


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
        names = [c if len(c) <= TICK_NAME else c[:TICK_NAME - 1] + "…"
                 for c in map(_readable, classes)]
        ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=min(8, 0.9 * cell))
        ax.set_yticks(range(n), names, fontsize=min(8, 0.9 * cell))
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


TILE_CATEGORY = 25
"""The characters of a category a misclassified photo's title shows (the demo's longest,
x_sapato_social_masculino; with "model: " and " (49%)" the line still fits the tile)."""


@_fonts
def plot_misclassified(rows: list[dict], out: Path, limit: int = 20) -> Path:
    """The misclassified photos (``vitrine.report.misclassified`` rows, the first ``limit``),
    each titled with its label and the model's guess."""
    rows = rows[:limit]
    cols = min(5, max(1, len(rows)))
    n_rows = max(1, -(-len(rows) // cols))
    fig, axes = plt.subplots(n_rows, cols, figsize=(2.6 * cols, 3.0 * n_rows), squeeze=False)
    for ax, row in zip(axes.flat, rows, strict=False):
        # the name shortened, not the line: "label: " and a name of 24 characters wrapped as
        # one text left "label:…" (the demo's mocassim_masculino was "model:…")
        title = (_lines(row["name"] or row["product_id"], 26, 1)
                 + ["label: " + _lines(row["labelled"], TILE_CATEGORY, 1)[0]]
                 + ["model: " + _lines(row["predicted"], TILE_CATEGORY, 1)[0]
                    + f" ({percent(row['probability'])})"])
        _show(ax, row["image"], title, "tab:red")
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, out)
