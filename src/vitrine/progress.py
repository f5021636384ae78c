"""Progress bars (rich, on stderr) for every long loop; silent when disabled."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

Advance = Callable[[int], None]
LOG_WIDTH = 160
"""Width of a bar's last frame when stderr is a log or a pipe, not a terminal (rich would cut
it at 80 columns: "transfer learning 11/… loss 0.704 acc 0.9…")."""


def bar_console() -> Console:
    """The console progress bars draw on: stderr, wider when it is not a terminal."""
    console = Console(stderr=True)
    return console if console.is_terminal else Console(stderr=True, width=LOG_WIDTH)


class _RateColumn(ProgressColumn):
    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        # finished: the whole run's rate (rich's estimate leaves out its first step, so a bar
        # moved in pages, `related`'s 1,000 products, showed the last page's rate, or none)
        speed = (task.completed / task.finished_time if task.finished and task.finished_time
                 else task.speed)
        return Text(f"{speed:6.1f} {self.unit}/s" if speed else "")


@contextlib.contextmanager
def progress_bar(description: str, total: int, *, enabled: bool = True,
                 unit: str = "images") -> Iterator[Advance]:
    """Yield ``advance(n)``; shows a bar with count, rate and ETA on stderr when enabled."""
    if not enabled or total <= 0:
        yield lambda n: None
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               _RateColumn(unit), TimeRemainingColumn())
    with Progress(*columns, console=bar_console()) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
