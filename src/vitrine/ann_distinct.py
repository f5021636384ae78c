"""One HNSW node per distinct vector: products that share one photo file (a placeholder
photo) have the same vector, and in a graph of every product they were one another's
nearest (distance 0), filled one another's links and left the products near them few ways
in: at 20,000 256-d vectors with 9,226 copies planted (all of each group one vector),
recall@10 of the products that are no copies fell to 0.688 (99 of 400 below 0.5), 0.985
with one node per vector (benchmarks/copies_search.py). The graph holds the smallest id of
each vector; :class:`Copies` holds the others, and a search (:mod:`vitrine.ann`) runs over
the nodes and gives each node found its copies, in id order, with the same score. Near copies
(other bytes of a photo, grouped by ``index``'s duplicate search) are nodes of their own: one
node per copies group gained recall only near groups of thousands of near copies
(benchmarks/near_copies_nodes.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from vitrine.ann_layers import IdSet, Result, ranked

MAGIC = b"vitrine-copies-1"
"""Ends an index file followed by its copies (ids, then their nodes' ids, int64, then their
count): FAISS reads the index before them and stops; a file without is an index of one
node per product, read as before."""


def _digests(vecs: np.ndarray) -> Iterator[bytes]:
    """A 128-bit digest of each row's bytes (float32 rows)."""
    return (hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in vecs)


class Distinct:
    """Sorts the rows of a build, added in id order, into nodes (a vector's first id) and
    copies (its later ids), by a 128-bit digest of each vector's bytes."""

    def __init__(self) -> None:
        self._first: dict[bytes, int] = {}
        self._ids: list[np.ndarray] = []
        self._nodes: list[np.ndarray] = []

    def nodes(self, ids: np.ndarray, vecs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ids and vectors of this batch that are new vectors; the others are kept."""
        vecs = np.ascontiguousarray(vecs, np.float32)
        new = np.ones(len(ids), bool)
        node = np.zeros(len(ids), np.int64)
        for i, (pid, key) in enumerate(zip(ids.tolist(), _digests(vecs), strict=True)):
            first = self._first.setdefault(key, pid)
            if first != pid:
                new[i], node[i] = False, first
        if not new.all():
            self._ids.append(np.asarray(ids)[~new].astype(np.int64))
            self._nodes.append(node[~new])
        return ids[new], vecs[new]

    @staticmethod
    def count(batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> int:
        """How many nodes :meth:`nodes` makes of ``batches``: their distinct vectors."""
        seen: set[bytes] = set()
        for _, vecs in batches:
            seen.update(_digests(np.ascontiguousarray(vecs, np.float32)))
        return len(seen)

    def copies(self) -> Copies | None:
        if not self._ids:
            return None
        return Copies(np.concatenate(self._ids), np.concatenate(self._nodes))


class Copies:
    """The ids whose vector is a node's (``nodes[i]`` for ``ids[i]``), grouped by node."""

    def __init__(self, ids: np.ndarray, nodes: np.ndarray):
        order = np.lexsort((ids, nodes))
        self.ids, self.nodes = ids[order].astype(np.int64), nodes[order].astype(np.int64)
        self.groups, self.starts = np.unique(self.nodes, return_index=True)
        self.ends = np.append(self.starts[1:], len(self.ids))
        self.members = IdSet(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        return 2 * self.ids.nbytes + 3 * self.groups.nbytes + self.members.nbytes

    def among(self, subset: IdSet | None) -> IdSet | None:
        """``subset`` as nodes: the node of each of its copies added."""
        if subset is None:
            return None
        inside = subset.contains(self.ids)
        nodes = self.nodes[inside]
        missing = nodes[~subset.contains(nodes)]
        return IdSet(np.concatenate([subset.ids, missing])) if len(missing) else subset

    def past(self, hidden: IdSet | None, near: int) -> tuple[IdSet | None, int]:
        """``hidden`` as nodes (a node whose vector has an id not hidden is shown), and how
        many of them may be the query's nearest: at most ``near``, copies not counted (one
        node for a whole placeholder photo's products). Reads the hidden ids and the copies
        of the hidden nodes, not every copy (0.3 ms a search at 13,600 copies)."""
        if hidden is None:
            return None, near
        at = np.minimum(np.searchsorted(self.groups, hidden.ids), len(self.groups) - 1)
        held = at[self.groups[at] == hidden.ids]  # (hidden nodes with copies)
        partly = self.groups[:0]
        if len(held):
            sizes = self.ends[held] - self.starts[held]
            firsts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
            rows = np.repeat(self.starts[held] - firsts, sizes) + np.arange(sizes.sum())
            shown = np.logical_or.reduceat(~hidden.contains(self.ids[rows]), firsts)
            partly = self.groups[held[shown]]
        nodes = IdSet(np.setdiff1d(hidden.ids, partly, assume_unique=True)) \
            if len(partly) else hidden
        copies = int(np.count_nonzero(self.members.contains(hidden.ids)))
        return nodes, min(near, len(hidden) - copies - len(partly))

    def expand(self, found: Result, k: int, subset: IdSet | None,
               hidden: IdSet | None) -> Result:
        """The top ``k`` ids of the nodes ``found``: each node and its copies, with its score,
        those in ``subset`` or not ``hidden``; equal scores by id. A node's copies are in id
        order with one score, so only its first ``k`` kept are read (all of them were: 0.7 ms
        a query at a node of 20,000)."""
        scores, ids = found
        at = np.minimum(np.searchsorted(self.groups, ids), len(self.groups) - 1)
        has = np.flatnonzero(self.groups[at] == ids)
        if not len(has) or k <= 0:  # (nodes without copies: in subset, not hidden, as searched)
            return scores[:k], ids[:k]
        keep = np.ones(len(ids), bool)
        if subset is not None:
            keep &= subset.contains(ids)
        if hidden is not None:
            keep &= ~hidden.contains(ids)
        parts = [self._first(at[j], k, subset, hidden) for j in has]
        scores = np.concatenate([scores[keep]] + [np.full(len(p), scores[j], scores.dtype)
                                                  for j, p in zip(has, parts, strict=True)])
        ids = np.concatenate([ids[keep]] + parts)
        scores, ids = ranked(scores, ids)
        return scores[:k], ids[:k]

    def _first(self, group: int, k: int, subset: IdSet | None,
               hidden: IdSet | None) -> np.ndarray:
        """The first ``k`` copies of node ``group`` (by id) in ``subset`` or not ``hidden``:
        read ``k`` at a time, then twice as many each time."""
        start, end = int(self.starts[group]), int(self.ends[group])
        kept: list[np.ndarray] = []
        step, got = k, 0
        while start < end and got < k:
            part = self.ids[start:min(end, start + step)]
            start, step = start + len(part), 2 * step
            if subset is not None:
                part = part[subset.contains(part)]
            if hidden is not None:
                part = part[~hidden.contains(part)]
            kept.append(part)
            got += len(part)
        return np.concatenate(kept)[:k] if kept else self.ids[:0]

    def append_to(self, path: Path) -> None:
        """Write the copies after the index in ``path`` (:data:`MAGIC`)."""
        with open(path, "ab") as fh:
            fh.write(self.ids.tobytes() + self.nodes.tobytes())
            fh.write(np.int64(len(self.ids)).tobytes() + MAGIC)

    @classmethod
    def read_from(cls, path: Path) -> Copies | None:
        """The copies written after the index in ``path``; None if it has none."""
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            tail = len(MAGIC) + 8
            if size < tail:
                return None
            fh.seek(size - tail)
            end = fh.read(tail)
            if end[8:] != MAGIC:
                return None
            count = int(np.frombuffer(end[:8], np.int64)[0])
            if count <= 0 or 16 * count > size - tail:
                raise RuntimeError(f"{path.name}: its copies are damaged")
            fh.seek(size - tail - 16 * count)
            data = np.frombuffer(fh.read(16 * count), np.int64)
        return cls(data[:count].copy(), data[count:].copy())
