"""Vector stores: products + their vectors. The rest of Vitrine only sees :class:`VectorStore`."""

from __future__ import annotations

from pathlib import Path

from vitrine.store.base import Match, StoredProduct, VectorStore
from vitrine.store.embedded import EmbeddedStore

__all__ = ["EmbeddedStore", "Match", "StoredProduct", "VectorStore", "open_store"]


def open_store(location: str | Path, *, create: bool = False) -> VectorStore:
    """Open the store at ``location`` (a folder path for the embedded default)."""
    return EmbeddedStore(Path(location), create=create)
