"""Command line: a thin Typer shell over the library. Errors a user can cause print one
sentence on stderr and exit with status 2.

The commands are defined by what they do (:mod:`vitrine.cli_store`, :mod:`vitrine.cli_search`,
:mod:`vitrine.cli_model`, :mod:`vitrine.cli_serve`) and registered on :data:`app` here, in
the order ``vitrine --help`` lists them."""

from __future__ import annotations

from typing import Annotated

import typer

from vitrine.cli_model import bench, evaluate, train
from vitrine.cli_run import run_app, utf8_mode
from vitrine.cli_search import dedupe, search, similar
from vitrine.cli_serve import demo, serve
from vitrine.cli_store import index, info, migrate, related
from vitrine.cli_support import out

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                  help="Vitrine: visually similar products from product photos.")


SHOWN_TYPES = {"<Path>": "<path>", "<list[Path]>": "<path>...", "<list[str]>": "<str>..."}
"""Types as the help shows them: a path parsed by cli_support.path_of (typer names its
annotation's class), and lists as several values rather than Python's names (helper-187)."""


def _flags_shown_without_a_value() -> None:
    """Typer's help shows a flag's type (``--json <bool>``) as it shows an option's value
    (``--k <integer>``): `--json true` looked right and was refused (helper-162). A flag
    shows none; types are shown as SHOWN_TYPES says."""
    import typer.core

    for kind in ("TyperOption", "TyperArgument"):
        param = getattr(typer.core, kind, None)
        shown = getattr(param, "display_type_rich", None)
        if shown is None or getattr(shown, "vitrine", False):
            continue

        def display_type_rich(self, ctx, shown=shown):
            if getattr(self, "is_flag", False):
                return None
            label = shown(self, ctx)
            return SHOWN_TYPES.get(label, label)

        display_type_rich.vitrine = True  # type: ignore[attr-defined]
        param.display_type_rich = display_type_rich


_flags_shown_without_a_value()


def _print_version(value: bool) -> None:
    if value:
        from vitrine import __version__

        out.print(f"vitrine {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print Vitrine's version and exit.")] = False) -> None:
    """Vitrine: visually similar products from product photos."""


# the commands, in the order the help lists them
app.command()(index)
app.command()(search)
app.command()(similar)
app.command()(related)
app.command()(dedupe)
app.command()(migrate)
app.command()(info)
app.command()(train)
app.command()(evaluate)
app.command()(demo)
app.command()(serve)
app.command()(bench)


def main() -> None:
    """Entry point: run the app (in Python's UTF-8 mode), turning user errors into one
    sentence and exit status 2."""
    utf8_mode()
    run_app(app)

if __name__ == "__main__":
    main()
