"""Candidate pairs for the duplicate rules: FAISS range searches over L2-normalised rows,
never an N×N matrix. Up to :data:`EXACT_PAIRS_UP_TO` rows every row is searched against every
row in a flat index, a chunk at a time (:func:`_close_pairs`); above it an inverted file of
8-bit codes finds the pairs (:func:`_close_pairs_ivf`), each scored again on the float rows;
and the rows of a store changed since its last search are searched against every row,
exactly (``among``: :func:`_pairs_with`). The rules themselves are :mod:`vitrine.dedupe`'s.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np

from vitrine.arrays import unique
from vitrine.heap import release_freed

Rows = Callable[[np.ndarray], np.ndarray]
"""The float32, L2-normalised rows compared, for an array of row numbers: rows are made a
chunk at a time, so that a large store is never held twice in memory."""


EXACT_ROWS = 2_048
"""Rows of the exact search searched at a time (each a step of the progress bar)."""
EXACT_PAIRS_UP_TO = 20_000
"""Up to this many rows the close pairs come from an exact search (every row against every
row); above it from an inverted file (:func:`_close_pairs_ivf`), whose cost grows far slower
than the square of the rows (benchmarks/dedupe_scaling.py)."""
PAIR_PROBES = 8
"""Cells of the inverted file each row is compared with."""
PAIR_MARGIN = 0.01
"""The inverted file stores 8-bit codes, so its scores are approximate: it collects pairs
down to the threshold minus this margin, and each is checked on the float vectors."""
CHUNK = 16_384
"""Rows made, searched or scored at a time on the inverted-file path."""
SEARCH_CHUNK = 4_096
"""Rows searched at a time in the inverted file (:func:`_close_pairs_ivf`): each row's
pairs are its own, whatever the chunk; :data:`CHUNK` rows' results and pair codes were
25 MB more beside the inverted file and every vector at 65,024 products."""
SCORE_CHUNK = 4_096
"""Pairs scored again on the float rows at a time on the inverted-file path (each pair's two
rows made: 40 MB at 1,280-d; each pair's score its own, whatever the chunk)."""
PIXEL_CHUNK = 4_096
"""Photos, or pairs of them, whose thumbnails' pixels are worked on at a time (the colour
check, the second views' checks): each row on its own, so the chunk changes no result,
only the temporaries held at once (at :data:`CHUNK` rows, 25 MB an array of 16-bit
planes, several at once: the peak of ``vitrine index`` at 16,256 photos,
benchmarks/index_memory.py)."""


def _close_pairs(n: int, rows_of: Rows, threshold: float,
                 advance: Callable[[int], None] | None = None,
                 among: np.ndarray | None = None, exact: bool | None = None,
                 own: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows ``i``, ``j`` (i < j) of ``n`` and inner products of the pairs whose inner product
    is at least ``threshold``: all of them up to :data:`EXACT_PAIRS_UP_TO` rows (or where
    ``exact`` says so: the second views' search, whose photos have more rows than one),
    above that those the inverted file finds (a pair whose rows lie in cells far apart can
    be missed). With ``among`` (row numbers), only the pairs with a row among them, all of
    them (:func:`_pairs_with`). ``advance`` is told of the rows done, ``2 × n`` in all.
    ``own``: the float32 array whose rows ``rows_of`` gives as they are, held by the search
    alone, which the inverted file's training may reorder for a while (:func:`_in_front`)."""
    advance = advance or (lambda done: None)
    if threshold > 1 + 1e-5 or n == 0:  # rows are unit vectors: a rule switched off
        advance(2 * n)
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)

    def floats(rows: np.ndarray) -> np.ndarray:  # what FAISS takes
        return np.ascontiguousarray(rows_of(rows), dtype=np.float32)

    if among is not None:
        return _pairs_with(n, floats, threshold, advance, among)
    if not (n <= EXACT_PAIRS_UP_TO if exact is None else exact):
        return _close_pairs_ivf(n, floats, threshold, advance, own)
    vecs = floats(np.arange(n))  # (the store's own vectors where they are all the rows)
    found = []
    for start in range(0, n, EXACT_ROWS):  # (a chunk at a time: the bar moves; at 20,000
        # rows one call was 15 to 20 s without a word, helper-165)
        lims, scores, ids = _flat_range_search(vecs, vecs[start:start + EXACT_ROWS],
                                               _radius(threshold))
        rows = start + np.repeat(np.arange(len(lims) - 1), np.diff(lims).astype(np.int64))
        keep = rows < ids  # each pair once, not a photo with itself
        found.append((rows[keep], ids[keep], scores[keep]))
        advance(2 * (len(lims) - 1))
    rows, ids, scores = (np.concatenate(parts) for parts in zip(*found, strict=True))
    return rows, ids, scores


def _flat_range_search(base: np.ndarray, queries: np.ndarray, radius: float
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``IndexFlatIP.range_search`` of ``queries`` over the rows of ``base`` (C-contiguous
    float32), without the copy of ``base`` an index holds: FAISS's function that the flat
    index calls, on ``base`` where it is (at 16,256 rows of 1,280-d, 83 MB less at the
    peak of ``vitrine index``, benchmarks/index_memory.py)."""
    import faiss  # here, not at the top: embedding photos needs the hashes, not FAISS

    # (FAISS reads raw memory: rows of another type or layout would be read as garbage; a
    # no-op for the rows it is given here)
    base = np.ascontiguousarray(base, np.float32)
    queries = np.ascontiguousarray(queries, np.float32)
    result = faiss.RangeSearchResult(len(queries))
    faiss.range_search_inner_product(faiss.swig_ptr(queries), faiss.swig_ptr(base),
                                     base.shape[1], len(queries), len(base), radius, result)
    lims = faiss.rev_swig_ptr(result.lims, len(queries) + 1).copy()
    found = int(lims[-1])
    return (lims, faiss.rev_swig_ptr(result.distances, found).copy(),
            faiss.rev_swig_ptr(result.labels, found).copy())


def _radius(threshold: float) -> float:
    """FAISS keeps scores above its radius; the rules say "at least"."""
    return float(np.nextafter(np.float32(threshold), np.float32(-2)))


def _pairs_with(n: int, rows_of: Rows, threshold: float, advance: Callable[[int], None],
                among: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_close_pairs` of the rows ``among`` with every row, exactly: the rows of
    ``among`` in a flat index, every row searched against it a chunk at a time (a search
    that costs ``len(among) × n``, for the few products of a store that changed)."""
    import faiss

    among = unique(np.asarray(among, dtype=np.int64))
    if not len(among):
        advance(2 * n)
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    vecs = rows_of(among)
    index = faiss.IndexFlatIP(vecs.shape[1])
    index.add(vecs)
    del vecs
    found, found_scores = [], []
    for rows in _chunks(n):
        lims, scores, hits = index.range_search(rows_of(rows), _radius(threshold))
        advance(2 * len(rows))
        codes, keep = _pair_codes(np.repeat(rows, np.diff(lims).astype(np.int64)),
                                  among[hits], n)
        found.append(codes)
        found_scores.append(scores[keep])
    pairs, first = np.unique(np.concatenate(found), return_index=True)  # a pair within
    return pairs // n, pairs % n, np.concatenate(found_scores)[first]  # among comes twice


def _pair_codes(rows: np.ndarray, hits: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """One number per pair of two different rows of ``n`` (``rows[k]`` found ``hits[k]``),
    ``min × n + max``: the same whichever row found it, so that ``np.unique`` counts each
    pair once; and which of the hits were such pairs."""
    keep = rows != hits
    return np.minimum(rows, hits)[keep] * n + np.maximum(rows, hits)[keep], keep


def _chunks(n: int, size: int = CHUNK) -> Iterator[np.ndarray]:
    """Row numbers ``0 … n-1``, ``size`` (:data:`CHUNK`) at a time."""
    for start in range(0, n, size):
        yield np.arange(start, min(n, start + size))


def _close_pairs_ivf(n: int, rows_of: Rows, threshold: float, advance: Callable[[int], None],
                     own: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_close_pairs` through an inverted file of 8-bit codes (a quarter of the float
    rows' memory): about sqrt(4 × rows × probes) cells, placed by two rounds of k-means on a
    sample; each row is compared with the rows of its :data:`PAIR_PROBES` nearest cells
    (found once, for adding and for searching), and the pairs found are scored again on the
    float rows. The training sample of ``own``'s rows is not a copy of them (:func:`_in_front`:
    at 65,024 products 118 MB beside the store's vectors, the peak of ``vitrine index``)."""
    import faiss
    from faiss.contrib.ivf_tools import add_preassigned

    wanted = int(np.sqrt(4 * n * PAIR_PROBES))
    cells = max(1, min(wanted, n // 40))  # at least 40 rows a cell
    rng = np.random.default_rng(0)
    picked = np.sort(rng.choice(n, min(n, 16 * wanted), replace=False))
    with _in_front(own, picked) if own is not None else \
            contextlib.nullcontext(rows_of(picked)) as sample:
        dim = sample.shape[1]
        index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(dim), dim, cells,
                                              faiss.ScalarQuantizer.QT_8bit,
                                              faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = 2  # cells only need to keep close rows together, not be optimal
        index.cp.min_points_per_centroid = 16  # (no warning below FAISS's 39 per cell)
        index.train(sample)
        del sample
    release_freed()  # (what the training's k-means and residuals freed: ~40 MB at 65,024)
    index.nprobe = probes = min(PAIR_PROBES, cells)
    nearest_scores = np.empty((n, probes), np.float32)
    nearest_cells = np.empty((n, probes), np.int64)
    for rows in _chunks(n):
        vecs = rows_of(rows)
        nearest_scores[rows], nearest_cells[rows] = index.quantizer.search(vecs, probes)
        add_preassigned(index, vecs, np.ascontiguousarray(nearest_cells[rows, 0]))
        advance(len(rows))
    found = []
    for rows in _chunks(n, SEARCH_CHUNK):
        lims, _, ids = index.range_search_preassigned(
            rows_of(rows), threshold - PAIR_MARGIN, nearest_cells[rows], nearest_scores[rows])
        advance(len(rows))
        # (a pair of two rows of the chunk is found from both: held once)
        found.append(unique(_pair_codes(np.repeat(rows, np.diff(lims).astype(np.int64)),
                                        ids, n)[0]))
    del index, nearest_scores, nearest_cells
    pairs = unique(np.concatenate(found))
    del found
    release_freed()  # (the inverted file's lists, thousands of small arrays, freed)
    # scored a chunk at a time, only the pairs kept held (every candidate's rows, ids and
    # score at once were 28 bytes a candidate: 2 million at 65,024 products)
    kept = [(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32))]
    for k in range(0, len(pairs), SCORE_CHUNK):
        rows, ids = pairs[k:k + SCORE_CHUNK] // n, pairs[k:k + SCORE_CHUNK] % n
        scores = np.einsum("ij,ij->i", rows_of(rows), rows_of(ids))
        keep = scores >= threshold
        kept.append((rows[keep], ids[keep], scores[keep]))
    rows, ids, scores = (np.concatenate(part) for part in zip(*kept, strict=True))
    return rows, ids, scores


@contextlib.contextmanager
def _in_front(array: np.ndarray, rows: np.ndarray) -> Iterator[np.ndarray]:
    """``array[rows]`` (``rows`` ascending, distinct) without a copy: those rows swapped in
    order to the front of ``array`` (C-contiguous), given as ``array[:len(rows)]``, and
    swapped back after (row ``rows[k]`` never moves before its turn: ``rows[k] >= k``)."""
    done: list[tuple[int, int]] = []
    spare = np.empty_like(array[0])
    try:
        for k, row in enumerate(rows.tolist()):
            if row != k:
                spare[:] = array[k]
                array[k] = array[row]
                array[row] = spare
                done.append((k, row))
        yield array[:len(rows)]
    finally:
        for k, row in reversed(done):
            spare[:] = array[k]
            array[k] = array[row]
            array[row] = spare
