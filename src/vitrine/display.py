"""Rich tables shared by the command-line commands."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:  # importing the store would load torch before the CLI handles Ctrl+C
    from vitrine.store.base import Match


def results_table(title: str, matches: list[Match]) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("#", "score", "product_id", "category", "name", "price"):
        table.add_column(col, overflow="fold")
    for rank, m in enumerate(matches, 1):
        price = "" if m.product.price is None else f"{m.product.price:.2f}"
        table.add_row(str(rank), f"{m.score:.3f}", m.product.product_id, m.product.category,
                      m.product.name, price)
    return table
