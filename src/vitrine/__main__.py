"""``python -m vitrine``: the ``vitrine`` command (for an environment whose scripts folder is
not on PATH)."""

from vitrine.cli import main

if __name__ == "__main__":
    main()
