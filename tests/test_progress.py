"""The progress bars' rate column."""

from __future__ import annotations

import io
import re
import time

from rich.console import Console
from rich.progress import Progress

from vitrine.progress import _RateColumn


def _rate(advances: list[int], pause: float = 0.05) -> tuple[float | None, float]:
    bar = Progress(_RateColumn("products"), console=Console(file=io.StringIO()))
    task_id = bar.add_task("related products", total=sum(advances))
    for n in advances:
        time.sleep(pause)
        bar.advance(task_id, n)
    task = bar.tasks[0]
    shown = re.search(r"([\d.]+) products/s", str(_RateColumn("products").render(task)))
    return (float(shown.group(1)) if shown else None), task.completed / task.finished_time


def test_a_finished_bar_shows_its_whole_rate_also_when_it_moved_in_large_steps():
    """`vitrine related` advances by pages of 1,000 products: rich's own estimate skips the
    first step, so 1,016 products in 0.2 s were shown as "718.7 products/s" (the last 16
    alone) beside "in 0.2 s" (5,000 a second); a bar moved once showed no rate at all."""
    for advances in ([1000, 16], [1016]):
        shown, whole = _rate(advances)
        assert shown is not None, advances
        assert 0.5 * whole <= shown <= 2 * whole, (advances, shown, whole)
