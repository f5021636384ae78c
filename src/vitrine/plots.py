"""Figures: a query photo next to its recommendations, with names and similarity scores."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vitrine.errors import ImageError, VitrineError  # noqa: E402
from vitrine.images import open_image  # noqa: E402
from vitrine.store.base import Match  # noqa: E402


def _show(ax, image_path: str | Path, title: str, colour: str = "black") -> None:
    try:
        ax.imshow(open_image(Path(image_path)))
    except ImageError:
        ax.text(0.5, 0.5, "(photo missing)", ha="center", va="center")
    ax.set_title(title, fontsize=8, color=colour)
    ax.axis("off")


def plot_recommendations(query_image: str | Path, query_title: str, matches: list[Match],
                         out: Path) -> Path:
    """Draw the query and its matches in one row and save a PNG to ``out``."""
    cols = 1 + max(1, len(matches))
    fig, axes = plt.subplots(1, cols, figsize=(2.4 * cols, 3.2))
    _show(axes[0], query_image, "\n".join(textwrap.wrap("Query: " + query_title, 28)[:3]),
          "tab:blue")
    for ax, match in zip(axes[1:], matches, strict=False):
        label = match.product.name or match.product.product_id
        lines = textwrap.wrap(label, 26)[:2] + [f"{match.product.category}",
                                               f"similarity {match.score:.3f}"]
        _show(ax, match.product.image, "\n".join(lines))
    for ax in axes[1 + len(matches):]:
        ax.axis("off")
    fig.tight_layout()
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)
    except OSError as exc:
        raise VitrineError(f"cannot write the figure {out} ({exc.strerror}).") from None
    finally:
        plt.close(fig)
    return out
