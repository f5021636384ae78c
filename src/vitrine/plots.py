"""Figures: a query photo next to its recommendations, with names and similarity scores."""

from __future__ import annotations

import fcntl
import io
import os
import stat
from pathlib import Path

from vitrine.config_env import matplotlib_folder

matplotlib_folder()  # (a home that cannot be written: before matplotlib reads its folder)
import matplotlib  # noqa: E402

matplotlib.use("Agg")
# shop text is literal: "R$ 99 por R$ 79" is no formula between two '$' (it raised)
matplotlib.rcParams["text.parse_math"] = False
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import transforms  # noqa: E402

from vitrine.display import percent  # noqa: E402
from vitrine.errors import ImageError, VitrineError  # noqa: E402
from vitrine.files import descriptor, is_stream, write_whole  # noqa: E402
from vitrine.images import thumbnail  # noqa: E402
from vitrine.plots_fonts import (  # noqa: E402, F401 - known here as before the split
    FALLBACK_FONTS,
    MISSING_NOTE,
    P,
    R,
    _fonts,
    _note_missing,
    font_families,
    log,
)
from vitrine.plots_text import (  # noqa: E402, F401 - known here as before the split
    DPI,
    TILE_TEXT,
    _lines,
    _short_names,
    _width,
)
from vitrine.store.base import Match  # noqa: E402

TILE_SIDE = 448
"""Longest side, in pixels, a photo is shown at (a tile is about 2.4 inches at 110 dpi): a
large JPEG decodes at reduced scale, as for the model (a 6000×4000 query took 2 GB)."""


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
