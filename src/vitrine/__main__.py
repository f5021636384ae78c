"""The ``vitrine`` command (``python -m vitrine`` too, for an environment whose scripts
folder is not on PATH)."""

import sys


def main() -> None:
    """Run the command line. Its import takes half a second (Typer, Rich, the settings),
    before it handles Ctrl+C: pressed then, it printed a traceback (helper-158)."""
    try:
        from vitrine.cli import main as run
    except KeyboardInterrupt:
        sys.stderr.write("interrupted.\n")
        raise SystemExit(130) from None
    run()


if __name__ == "__main__":
    main()
