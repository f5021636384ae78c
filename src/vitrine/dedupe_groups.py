"""Duplicate groups: the rule pairs (:func:`vitrine.dedupe_pairs.rule_pairs`) and identical
photo files joined into groups of rows, as arrays (:func:`components`), one row searched per
photo file (:func:`distinct_rows`); and :func:`find_duplicates`, the search of a set of photos
from their fingerprints to their groups, which ``vitrine dedupe``, ``train`` and ``evaluate``
run (a store's search, ``vitrine index``, goes through :mod:`vitrine.dedupe_store`).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from vitrine import dedupe_pairs
from vitrine.dedupe import DuplicateRules
from vitrine.dedupe_pairs import rule_pairs, search_progress


def distinct_rows(content: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The first row of each distinct ``content`` (a photo's sha256), in row order, and for
    each row the position of its content among them. Rows of one photo file are searched as
    one: :func:`duplicate_groups` joins them by their content, and the pairs of g rows with
    each other and with every other photo's (g²/2 and more, each checked in Python) took
    minutes and gigabytes for a placeholder photo that thousands of products share."""
    position: dict[str, int] = {}
    first: list[int] = []
    where = np.empty(len(content), np.int64)
    for i, sha in enumerate(content):  # (a pass over the strings: no array of them sorted)
        at = position.get(sha)
        if at is None:
            at = position[sha] = len(first)
            first.append(i)
        where[i] = at
    return np.array(first, np.int64), where


def only_rows(rows: np.ndarray, vectors: np.ndarray, *columns: Sequence
              ) -> tuple[np.ndarray, ...]:
    """``vectors`` and each of ``columns`` at ``rows`` (:func:`distinct_rows`), or as they
    are when those are all of them: no second copy of every vector, gigabytes at a million
    products."""
    if len(rows) == len(vectors):
        return (vectors, *columns)
    return (vectors[rows], *([column[i] for i in rows] for column in columns))


def duplicate_groups(n: int, pairs: np.ndarray, content: Sequence[str] | None = None
                     ) -> list[list[int]]:
    """Groups of two or more of the rows ``0 … n-1`` joined by ``pairs`` or by identical
    ``content`` (sha256 of the bytes), each in row order, ordered by first row."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    if content is not None:  # each row joined to the first row of its content
        pairs = np.concatenate([pairs, np.stack([_first_rows(content), np.arange(n)],
                                                axis=1)])
    labels = components(n, pairs)
    order = np.argsort(labels, kind="stable")  # by group (its first row), rows in order
    starts = np.flatnonzero(np.r_[True, labels[order][1:] != labels[order][:-1]])
    sizes = np.diff(np.r_[starts, n])
    return [order[start:start + size].tolist()
            for start, size in zip(starts.tolist(), sizes.tolist(), strict=True) if size > 1]


def _first_rows(content: Sequence[str]) -> np.ndarray:
    """For each row, the first row of its ``content``."""
    first, where = distinct_rows(content)
    return first[where]


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """For each row of ``n``, the first row of the group ``pairs`` (rows ``(i, j)``) join it
    to, as arrays: in each round, of every pair whose rows are still apart, the group with
    the larger first row is hooked onto the other's (the smallest such for each), and every
    row's label followed to its group's first row; only the pairs still apart go on to the
    next round. A union-find in Python over each pair took minutes and gigabytes for the
    g²/2 pairs of g photos of one placeholder, each file with its own bytes (helper-219:
    8,000 of them, 250 s and 5.5 GB); hooking rows rather than their groups took a round a
    row on a chain of look-alikes in shuffled order (100,000 of them: 56 s; helper-225)."""
    labels = np.arange(n)
    i, j = pairs[:, 0], pairs[:, 1]
    while len(i):
        a, b = labels[i], labels[j]  # (each a group's first row: its own label)
        apart = a != b
        i, j, a, b = i[apart], j[apart], a[apart], b[apart]
        if not len(i):
            break
        np.minimum.at(labels, np.maximum(a, b), np.minimum(a, b))
        while not np.array_equal(jumped := labels[labels], labels):  # (a label's own label)
            labels = jumped
    return labels


def find_duplicates(keys: Sequence[Hashable], vectors: np.ndarray, phashes: Sequence[str],
                    thumbs: Sequence[bytes], content: Sequence[str] | None = None,
                    rules: DuplicateRules | None = None,
                    show_progress: bool = False) -> list[list[Hashable]]:
    """Group duplicate items (rows aligned with ``keys``; ``vectors`` L2-normalised), with a
    progress bar when ``show_progress`` and the search takes a while (from
    :data:`vitrine.dedupe_pairs.PROGRESS_FROM` items, read at each call).

    Returns groups of two or more keys, each in input order, ordered by first member.
    """
    n = len(keys)
    pairs = np.empty((0, 2), np.int64)
    # one row per photo file (distinct_rows); rows of one file are joined by their content
    rows = np.arange(n) if content is None else distinct_rows(content)[0]
    if len(rows) > 1:
        with search_progress(len(rows), show_progress and len(rows) >= dedupe_pairs.PROGRESS_FROM
                             ) as advance:
            pairs = rows[rule_pairs(*only_rows(rows, vectors, phashes, thumbs),
                                    rules or DuplicateRules(), advance)]
    return [[keys[i] for i in group] for group in duplicate_groups(n, pairs, content)]
