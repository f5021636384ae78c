"""Rich tables shared by the command-line commands.

Product names, ids, categories and paths are the shop's data: they go into tables as
:class:`~rich.text.Text` (``plain``), never as strings, which rich would read as markup
(``Promo [/promo]`` crashed, ``[red]`` coloured) and emoji codes (``:fire:``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:  # importing the store would load torch before the CLI handles Ctrl+C
    from vitrine.store.base import Match


def plain(value: object, style: str = "") -> Text:
    """``value`` as literal text: no markup, no emoji codes."""
    return Text(str(value), style=style)


def results_table(title: str, matches: list[Match]) -> Table:
    """Ranked matches; ``title`` is shown literally (it names the query)."""
    table = Table(title=plain(title, "table.title"), title_justify="left")
    for col in ("#", "score", "product_id", "category", "name", "price"):
        table.add_column(col, overflow="fold")
    for rank, m in enumerate(matches, 1):
        price = "" if m.product.price is None else f"{m.product.price:.2f}"
        table.add_row(str(rank), f"{m.score:.3f}", plain(m.product.product_id),
                      plain(m.product.category), plain(m.product.name), price)
    return table
