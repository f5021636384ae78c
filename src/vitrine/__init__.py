"""Vitrine: visually similar product recommendations from product photos."""

from vitrine.errors import VitrineError

__all__ = ["VitrineError", "__version__"]
__version__ = "0.1.0"
