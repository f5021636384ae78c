"""The duplicate search an index run ends with, over the whole store
(:func:`store_duplicates`): the pairs of the last search reused, only the products changed
since compared, the groups named for the report by their photos' paths."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vitrine.dedupe import DuplicateRules
from vitrine.dedupe_groups import duplicate_groups
from vitrine.dedupe_store import store_checksums, store_pairs, vector_checksums
from vitrine.dedupe_views import current
from vitrine.errors import VitrineError
from vitrine.index_report import _display_path
from vitrine.store.base import PhotoFacts, VectorStore

STORE_CHANGED = "the store changed while looking for duplicates; run again."
"""Said when another writer (a Milvus shard, the server) changed the store during the search."""


def store_duplicates(store: VectorStore, root: Path, rules: DuplicateRules | None = None,
                     uploaded: set[str] | None = None, show_progress: bool = False,
                     facts: dict[str, PhotoFacts] | None = None,
                     mine: Callable[[str], bool] = lambda pid: True
                     ) -> tuple[list[list[str]], int, int]:
    """Duplicate groups among all stored products, as image paths (with the product id when
    products share one photo); a product of ``uploaded`` (added through the API, its photo
    named by its sha256) as ``product ID (added through the API)``. The pairs of the last
    search are kept and only the products changed since are compared with the store
    (:func:`vitrine.dedupe_store.store_pairs`); also returns how many were, and how many
    products' thumbnails have no second view of this Vitrine's rule (an older Vitrine made
    them). ``facts``: the
    store's :meth:`VectorStore.photo_facts` when the caller read them (read again here when
    they lack a product). ``mine``: the products counted without views (a shard's own)."""
    ids, checksums = store_checksums(store)  # (a page at a time: every vector is read into
    # memory only for a search, not to find that no product changed since the last one)
    if len(ids) < 2:
        return [], 0, 0
    records = [(facts or {}).get(pid) for pid in ids]
    if any(r is None for r in records):  # (read here, or again: products another writer, a
        # Milvus shard, stored while the caller's were made again)
        facts = store.photo_facts()
        records = [facts.get(pid) for pid in ids]
    if any(r is None for r in records):
        raise VitrineError(STORE_CHANGED)
    shas = [r.content_sha256 for r in records]
    n = len(ids)

    def vectors() -> np.ndarray:
        """The vectors of ``ids``, those the checksums were made from (else the store changed
        meanwhile: another writer, a Milvus shard)."""
        again, read = store.all_vectors()
        if again != ids:  # (the same products in another order, or the store changed)
            at = dict(zip(again, range(len(again)), strict=True))
            if len(at) != len(ids) or not at.keys() >= set(ids):
                raise VitrineError(STORE_CHANGED)
            read = read[[at[pid] for pid in ids]]
        if not np.array_equal(vector_checksums(read), checksums):
            raise VitrineError(STORE_CHANGED)
        return read

    pairs, compared = store_pairs(store, ids, shas, vectors, [r.phash for r in records],
                                  [r.thumb for r in records], rules or DuplicateRules(),
                                  show_progress, checksums=checksums)
    groups = duplicate_groups(n, pairs, shas)
    # named for the report: only the products in a group (display paths cost a Path each)
    photos = Counter(r.image for r in records)
    uploaded = uploaded or set()

    def key(i: int) -> str:
        pid, image = ids[i], records[i].image
        if pid in uploaded:
            return f"product {pid} (added through the API)"
        path = _display_path(Path(image), root)
        return f"{path} (product {pid})" if photos[image] > 1 else path  # one photo, two

    # by product id, within and across groups: the rows come in each backend's own order
    # (the embedded store's as added, Milvus's by id), and a report diffed between runs or
    # backends differed without a change
    ordered = sorted((sorted(g, key=ids.__getitem__) for g in groups),
                     key=lambda g: ids[g[0]])
    unviewed = sum(not current(r.thumb) and mine(pid)
                   for pid, r in zip(ids, records, strict=True))
    return [[key(i) for i in group] for group in ordered], compared, unviewed
