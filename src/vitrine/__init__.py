"""Vitrine: visually similar product recommendations from product photos."""

from importlib import metadata

from vitrine.errors import VitrineError

__all__ = ["VitrineError", "__version__"]
try:
    __version__ = metadata.version("vitrine")  # pyproject.toml's, as installed
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
