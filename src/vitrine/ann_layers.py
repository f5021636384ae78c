"""The id sets the store's FAISS index is searched among (a category) or past (rows hidden),
its results' order (equal scores by id), and :class:`LayeredIndex`, a saved index searched with
the rows written since. :mod:`vitrine.ann` builds and searches the index itself; every name here
is importable from there too."""

from __future__ import annotations

from typing import TYPE_CHECKING

import faiss
import numpy as np

from vitrine.arrays import unique

if TYPE_CHECKING:
    from vitrine.ann import VectorIndex


class IdSet:
    """A set of non-negative ids (a category's products) with a membership bitmap, built
    once and reused by every search of that category."""

    def __init__(self, ids: np.ndarray):
        self.ids = unique(np.asarray(ids, np.int64))  # (a sort: NumPy's own, ten times slower)
        flags = np.zeros(int(self.ids[-1]) + 1 if len(self.ids) else 1, bool)
        flags[self.ids] = True
        self.bitmap = np.packbits(flags, bitorder="little")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        return self.ids.nbytes + self.bitmap.nbytes

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Membership of each of ``ids`` (negative ids are never members)."""
        ids = np.asarray(ids, np.int64)
        inside = (ids >= 0) & ((ids >> 3) < len(self.bitmap))
        safe = np.where(inside, ids, 0)
        return inside & ((self.bitmap[safe >> 3] >> (safe & 7)) & 1).astype(bool)

    def selector(self) -> faiss.IDSelector:
        """A FAISS selector over this set (valid while this object lives)."""
        return faiss.IDSelectorBitmap(len(self.bitmap), faiss.swig_ptr(self.bitmap))


def as_id_set(ids: IdSet | np.ndarray | None) -> IdSet | None:
    return ids if ids is None or isinstance(ids, IdSet) else IdSet(ids)


Result = tuple[np.ndarray, np.ndarray]
EMPTY: Result = (np.zeros(0, np.float32), np.zeros(0, np.int64))


def ranked(scores: np.ndarray, ids: np.ndarray) -> Result:
    """Best first, equal scores (products with the same photo) by id: FAISS lists equal
    scores last id first after keeping the first ids it met, so a top 2 was not the start of
    the top 4 of the same query, and a layered index (the saved one and the rows written
    since) put them in another order than the same store's rebuilt index."""
    order = np.lexsort((ids, -scores))
    return scores[order], ids[order]


class LayeredIndex:
    """A saved index (``base``) and the products written since it was built: their vectors
    in an exact flat index (``recent``), and every id written or deleted since hidden in
    ``base`` (``hidden``). A search takes the top of both, so a large store does not rebuild
    its HNSW graph for each product added through the API (``EmbeddedStore``)."""

    def __init__(self, base: VectorIndex, recent: VectorIndex, hidden: IdSet, ntotal: int):
        self.base, self.recent, self.hidden = base, recent, hidden
        self.ntotal = ntotal
        """The products searched: ``base``'s that are not hidden, and ``recent``'s."""

    def search(self, query: np.ndarray, k: int,
               subset: IdSet | np.ndarray | None = None) -> Result:
        """:meth:`VectorIndex.search` over both layers, the hidden ids left out of ``base``."""
        query = np.ascontiguousarray(query, np.float32).reshape(1, -1)
        return self.search_many(query, k, subset, threads=1)[0]

    def search_many(self, queries: np.ndarray, k: int,
                    subset: IdSet | np.ndarray | None = None, hidden: IdSet | None = None,
                    *, threads: int | None = None) -> list[Result]:
        """:meth:`VectorIndex.search_many` over both layers (``hidden``: ids left out of
        both, besides those written since ``base`` was built)."""
        if subset is not None and hidden is not None:
            raise ValueError("search takes a subset or hidden ids, not both")
        subset = as_id_set(subset)
        k = min(k, self.ntotal)
        if k <= 0:
            return [EMPTY] * len(queries)
        if subset is None:
            past = self.hidden if hidden is None else IdSet(
                np.concatenate([self.hidden.ids, hidden.ids]))
            base = self.base.search_many(queries, k, hidden=past, threads=threads,
                                         near=0 if hidden is None else len(hidden))
        else:
            base = self._base_among(queries, k, subset, threads)
        recent = self.recent.search_many(queries, k, subset, hidden, threads=threads)
        found = []
        for (b_scores, b_ids), (r_scores, r_ids) in zip(base, recent, strict=True):
            scores = np.concatenate([b_scores, r_scores])
            ids = np.concatenate([b_ids, r_ids])
            top = np.lexsort((ids, -scores))[:k]  # (equal scores by id, as ranked())
            found.append((scores[top], ids[top]))
        return found

    def _base_among(self, queries: np.ndarray, k: int, subset: IdSet,
                    threads: int | None) -> list[Result]:
        """``base``'s top ``k`` of ``subset`` that are not hidden, for each query: all of them
        in one search (one at a time, `related --same-category` of a layered store took
        twice as long as of one just rebuilt: benchmarks/related_export.py), then a query
        whose hidden ids took places in its top asked for more, until ``k`` are left or the
        index has no more."""
        fetch = k + min(len(self.hidden), k)
        found = self.base.search_many(queries, fetch, subset, threads=threads)
        results = []
        for query, (scores, ids) in zip(queries, found, strict=True):
            wanted = fetch
            while True:
                shown = ~self.hidden.contains(ids)
                if shown.sum() >= k or len(ids) < min(wanted, self.base.ntotal) \
                        or wanted >= self.base.ntotal:
                    results.append((scores[shown][:k], ids[shown][:k]))
                    break
                wanted *= 4
                scores, ids = self.base.search(query, wanted, subset)
        return results
