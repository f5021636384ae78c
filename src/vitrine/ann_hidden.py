"""The store's FAISS index searched past hidden ids (:class:`HiddenSearch`, a part of
:class:`vitrine.ann.VectorIndex`): a product's copies (:mod:`vitrine.copies`) and the rows a
:class:`~vitrine.ann_layers.LayeredIndex` wrote since its base was saved. A flat batch fetches
k + hidden and drops them; an HNSW walk is widened past them, or past more than M hidden
nodes scans the vectors not hidden; an IVF search probes the lists holding them besides."""

from __future__ import annotations

import faiss
import numpy as np

from vitrine.ann_layers import IdSet, Result

PAST_HIDDEN_RESULTS = 5_000_000
"""Most results (12 bytes each) one FAISS call of a search past hidden ids returns."""


class HiddenSearch:
    """:class:`vitrine.ann.VectorIndex`'s searches past hidden ids (mixed into it: they use
    its FAISS index, ``nodes``, ``_params``, ``_top``, ``_ids_by_position`` and
    ``_exact_positions``)."""

    index: faiss.Index
    inner: faiss.Index
    kind: str
    _lists: np.ndarray | None

    def _found_past(self, queries: np.ndarray, k: int, hidden: IdSet,
                    near: int) -> list[Result]:
        """The top ``k`` of each query among the ids not ``hidden``, ``near`` of which may be
        its nearest (:meth:`vitrine.ann.VectorIndex.search_many`), in FAISS's order."""
        if self._past_hidden(len(queries), len(hidden)):
            return self._search_past(queries, k, hidden)
        if self.kind == "hnsw" and near > self._links() // 2:
            return self._exact_past(queries, k, hidden)  # (past many nodes: _links)
        # an HNSW walk keeps hidden ids among its efSearch candidates: past a product's
        # copies (its query's nearest, vitrine.copies) a breadth of k stopped among them
        # with k far poorer products (best 0.48 where 0.77 was not a copy). IVF: a photo
        # many products share has k-means centres of its own, and its copies filled most
        # of the lists probed, which held few others: 5 of the 10 nearest (2,000 copies
        # in 16,000, tests/test_ann_copies.py); the lists holding them are probed besides
        params = self._params(k + near if self.kind == "hnsw" else k)
        if self.kind == "ivf" and near:
            params.nprobe = min(self.inner.nlist,
                                params.nprobe + self._lists_holding(hidden, near))
        shown = hidden.selector()
        params.sel = faiss.IDSelectorNot(shown)
        found = self._top(queries, min(k, self.nodes), params)
        if self.kind == "hnsw":
            found = self._unhidden_hnsw(queries, k, hidden, found)
        return found

    def _links(self) -> int:
        """An HNSW node's links at the graph's level 0 (2·M). A search past more than half
        as many hidden nodes (the query's nearest: other photo files of its product, each a
        node of its own, :mod:`vitrine.ann_distinct`) scans the vectors not hidden instead
        of walking: near-copies link to one another before anything else, so a walk that
        reaches them may find no way out, or one to far poorer products. Past 400 of cosine
        0.99999 and more, in 6,000 128-d products and a graph of M = 4, the walk (efSearch
        k + 400) found 0.87 of the 10 nearest others, 7 of 10 for some, where the scan finds
        them all (tests/test_ann_copies.py); at M = 32, past 100 of cosine 0.97-0.995, both
        found them all. A photo's copies are one node, not counted here (walked past: 2 ms
        past 20,000, where in a graph of every product the walk took 243 ms and the scan
        57 ms; benchmarks/copies_search.py)."""
        return self.inner.hnsw.nb_neighbors(0)

    def _lists_holding(self, hidden: IdSet, most: int) -> int:
        """How many of an IVF index's lists hold ``hidden`` ids (at most ``most``); each id's
        list is read once (4 bytes an id, up to the largest)."""
        if self._lists is None:
            inv = self.inner.invlists
            sizes = [inv.list_size(i) for i in range(self.inner.nlist)]
            ids = np.concatenate([np.zeros(0, np.int64)] + [
                faiss.rev_swig_ptr(inv.get_ids(i), size) for i, size in enumerate(sizes)
                if size])
            self._lists = np.full(int(ids.max()) + 1 if len(ids) else 0, -1, np.int32)
            self._lists[ids] = np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
        held = self._lists[hidden.ids[hidden.ids < len(self._lists)]]
        lists = np.zeros(self.inner.nlist, bool)
        lists[held[held >= 0]] = True
        return min(most, int(lists.sum()))

    def _past_hidden(self, queries: int, hidden: int) -> bool:
        """Whether a batch of ``queries`` is searched past ``hidden`` ids (the top k + hidden,
        those dropped) rather than with a FAISS selector excluding them: with a selector, a
        float32 flat index leaves its matrix product (which it uses from 20 queries) for a
        scan per query (`related` 4–15× slower, benchmarks/hidden_search.py). Not with a
        quarter of the rows hidden or more, nor for fp16 storage, which scans anyway."""
        return (queries >= 20 and type(self.inner) is faiss.IndexFlatIP
                and 4 * hidden <= self.nodes)

    def _search_past(self, queries: np.ndarray, k: int, hidden: IdSet) -> list[Result]:
        """:meth:`_past_hidden`'s search, a share of the queries at a time: the results of
        1,000 queries past 10,000 hidden ids took 120 MB; at most 60 MB a call now."""
        fetch = min(k + len(hidden), self.nodes)
        step = max(1, PAST_HIDDEN_RESULTS // fetch)
        return [(scores[keep][:k], ids[keep][:k])
                for start in range(0, len(queries), step)
                for scores, ids in self._top(queries[start:start + step], fetch,
                                             self._params(fetch))
                for keep in [~hidden.contains(ids)]]

    def _unhidden_hnsw(self, queries: np.ndarray, k: int, hidden: IdSet,
                       found: list[Result]) -> list[Result]:
        """``found`` with each query that got fewer than ``k`` searched exactly past the
        ``hidden`` ids: the graph's walk near a query whose neighbours are hidden (a category
        deleted since the graph was saved) stopped with what its ``efSearch`` candidates held
        besides them, 42 of 100 on a store of 18,266 products."""
        short = [i for i, (_, ids) in enumerate(found) if len(ids) < min(k, self.nodes)]
        if not short:
            return found
        for i, exact in zip(short, self._exact_past(queries[short], k, hidden), strict=True):
            found[i] = exact
        return found

    def _exact_past(self, queries: np.ndarray, k: int, hidden: IdSet) -> list[Result]:
        """Exact search over the HNSW's stored vectors that are not ``hidden``, once for each
        distinct query (a `related` page's products of one photo are one vector)."""
        id_map = self._ids_by_position()[0]
        rows = np.ascontiguousarray(queries).view(np.dtype((np.void, queries.shape[1] * 4)))
        _, first, which = np.unique(rows.ravel(), return_index=True, return_inverse=True)
        found = self._exact_positions(queries[first], k,
                                      np.flatnonzero(~hidden.contains(id_map)))
        return [found[i] for i in which.ravel()]
