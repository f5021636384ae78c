"""The ``vitrine`` command (``python -m vitrine`` too, for an environment whose scripts
folder is not on PATH)."""

import sys


def main() -> None:
    """Run the command line. Its import takes half a second (Typer, Rich, the settings),
    before it handles Ctrl+C: pressed then, it printed a traceback (helper-158). On
    Windows, one sentence: Vitrine needs POSIX file locks (fcntl), and its import there was
    a traceback (helper-236)."""
    if sys.platform == "win32":
        sys.stderr.write("error: Vitrine runs on Linux and macOS (it needs POSIX file locks); "
                         "on Windows, run it under WSL or in a Linux container.\n")
        raise SystemExit(2)
    try:
        from vitrine.cli import main as run
    except KeyboardInterrupt:
        sys.stderr.write("interrupted.\n")
        raise SystemExit(130) from None
    run()


if __name__ == "__main__":
    main()
