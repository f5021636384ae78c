"""The duplicate rules applied to a set of photos: the pairs that the thumbnail rule (with the
colour check and the second views, turned) or the embedding rule joins (:func:`rule_pairs`),
found through :mod:`vitrine.dedupe_search` and checked as arrays, with the progress bar of a
whole store's search; and the photos that copy a model's training photos
(:func:`copies_of_known`). The rules and their thresholds are :mod:`vitrine.dedupe`'s; the
pairs are joined into groups by :mod:`vitrine.dedupe_groups`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from vitrine import dedupe_search
from vitrine.arrays import unique
from vitrine.dedupe import DuplicateRules, _PhashCodes, _unit_rows, thumb_vectors
from vitrine.dedupe_colour import _colour_differences
from vitrine.dedupe_search import CHUNK, PIXEL_CHUNK, _chunks, _close_pairs, _radius
from vitrine.dedupe_views import (
    NO_VIEW,
    RELATIVE_TURN,
    THUMB_BYTES,
    TURN_RULE,
    TURNS,
    orientations,
    oriented,
    oriented_details,
    products,
    view_rules,
    whole,
)
from vitrine.heap import release_freed

SEARCH_STEPS = 6
"""Progress steps of a row in :func:`rule_pairs`: two in each of its three searches (the
thumbnails, the embeddings, the second views)."""
PROGRESS_FROM = 5_000
"""Rows from which a search of the whole store shows its bar (a second or more: the exact
search of 20,000 took 15 to 20 s with nothing on the screen, helper-165); one of the
products changed since the last, from as many pairs."""


def search_progress(n: int, show: bool):
    """The "Duplicates" progress bar of a search of ``n`` rows (:func:`rule_pairs`), shown
    with ``show`` (one that takes a while: :func:`vitrine.dedupe_store.store_pairs`)."""
    from vitrine.progress import progress_bar

    return progress_bar("Duplicates", SEARCH_STEPS * n, unit="rows", enabled=show)


def rule_pairs(vectors: np.ndarray | Callable[[], np.ndarray], phashes: Sequence[str],
               thumbs: Sequence[bytes],
               rules: DuplicateRules, advance: Callable[[int], None] | None = None,
               among: np.ndarray | None = None) -> np.ndarray:
    """Rows ``(i, j)``, i < j, of the pairs that the thumbnail or the embedding rule joins
    (``vectors`` L2-normalised; rows aligned with ``phashes`` and ``thumbs``); with ``among``
    only the pairs with a row among those (the products changed since a previous search).
    The thumbnail rule also joins two photos whose second views agree as it asks
    (:func:`_view_pairs`: a copy padded, squared onto a canvas, mirrored or turned).
    ``advance`` is told of the rows done, :data:`SEARCH_STEPS` ``× rows`` in all.
    ``vectors`` may be a function that reads them, into an array of this search's own
    (:func:`vitrine.dedupe_search._close_pairs` may reorder its rows for a while): called
    once the thumbnail search is done, so that a store's vectors (5 kB a product) are not
    held through it."""
    n = len(phashes)
    codes = _PhashCodes(phashes)
    rows, ids, _ = _close_pairs(n, lambda rows: thumb_vectors([thumbs[i] for i in rows]),
                                rules.thumb_cosine, advance, among)
    # checked as arrays: a placeholder photo that g products share, each file with its own
    # bytes, gives g²/2 pairs (2,400 of them: 115 s and 1.8 GB checked pair by pair)
    near = codes.hamming(rows, ids) <= rules.phash_distance
    thumb_pairs = rows[near] * n + ids[near]
    del rows, ids, near
    own = None
    if callable(vectors):  # (read now: the thumbnail search's inverted file, sample and
        release_freed()  # chunks were beside every vector, benchmarks/index_memory.py;
        vectors = vectors()  # what they freed handed back first)
        own = rules.embedding_array(vectors)  # (read for this search alone)
    rows, ids, _ = _close_pairs(n, rules.embedding_rows(vectors), rules.embed_cosine, advance,
                                among, own=own)
    own = None
    del vectors  # (not read again: a store's, passed here alone, are let go before the
    # second views and their colour check, 5 kB a product; benchmarks/index_memory.py)
    near = codes.hamming(rows, ids) <= 2 * rules.phash_distance
    embedded = unique(rows[near] * n + ids[near])
    # the colour check only for the pairs the embedding rule does not join already (most of
    # a placeholder's copies: it was most of their time)
    at = np.minimum(np.searchsorted(embedded, thumb_pairs), max(len(embedded) - 1, 0))
    if len(embedded):
        thumb_pairs = thumb_pairs[embedded[at] != thumb_pairs]
    rows, ids = thumb_pairs // max(n, 1), thumb_pairs % max(n, 1)
    alike = _colour_differences(thumbs, rows, ids) <= rules.max_colour_diff
    viewed = _view_pairs(thumbs, codes, rules, advance, among)
    pairs = unique(np.concatenate([embedded, thumb_pairs[alike], viewed]).astype(np.int64))
    return np.stack([pairs // n, pairs % n], axis=1) if n else np.empty((0, 2), np.int64)


def _view_pairs(thumbs: Sequence[bytes], codes: _PhashCodes, rules: DuplicateRules,
                advance: Callable[[int], None] | None, among: np.ndarray | None
                ) -> np.ndarray:
    """The pairs (as ``i × n + j``) whose second views (:mod:`vitrine.dedupe_views`: the
    product cut out of its border, turned one way) agree as the thumbnail rule asks:
    thumbnail cosine, pHash (the products' 256-bit ones within 4 × ``phash_distance``, and
    :data:`DETAIL_FLIPS` more by signs) and colour. Each view is searched in each way it turns
    to (:func:`vitrine.dedupe_views.orientations`: one, or more near a tie, all 8 for a view
    alike every way), each turn between two photos' ways checked once. Left to the whole
    photos: a thumbnail made before the views (none), two views that are the whole photos
    turned alike (the thumbnail rule compared them already), and two photos whose
    thumbnails and pHashes agree (framed alike: where their colours differ they are colour
    variants, whatever their products' views say). A view of the older rule
    (:data:`vitrine.dedupe_views.MIRROR_RULE`) is compared only with another of that rule
    (their pHashes were made otherwise)."""
    n = len(thumbs)
    tell = advance or (lambda done: None)
    rule = view_rules(thumbs)
    has = rule != NO_VIEW
    if not has.any() or (among is not None and not has[among].any()):
        tell(2 * n)  # (a store's thumbnails made before views)
        return np.empty(0, np.int64)
    # only the rows with a view are searched: the others' (a store's thumbnails made before)
    # were zero rows, which the inverted file put in one cell that every one of them
    # scanned whole (25,000 of them beside 100 views: 45 s against 3.5 s)
    viewed = np.flatnonzero(has)
    tell(2 * (n - len(viewed)))
    masks = np.concatenate([orientations([thumbs[i] for i in viewed[k:k + CHUNK].tolist()])
                            for k in range(0, len(viewed), CHUNK)])
    at, turn = np.nonzero(np.unpackbits(masks[:, None], axis=1, bitorder="little"))
    photo = viewed[at]  # (each way a view is searched in: its photo, in row order, and turn)

    def turned(ways: np.ndarray) -> np.ndarray:  # (the views of those ways, turned)
        return oriented([thumbs[i] for i in photo[ways].tolist()], turn[ways])

    rows, ids, _ = _close_pairs(
        len(photo), lambda ways: _unit_rows(turned(ways)), rules.thumb_cosine,
        _per_row(advance, len(photo), len(viewed)),
        None if among is None else np.flatnonzero(np.isin(photo, among)),
        exact=len(viewed) <= dedupe_search.EXACT_PAIRS_UP_TO)  # (products, not their views' ways)
    a, b = photo[rows], photo[ids]  # (a <= b: the ways are in row order)
    cut = np.zeros(n, bool)  # (of the pairs' rows alone: not a pass over the whole store)
    used = unique(np.concatenate([a, b]))
    for k in range(0, len(used), PIXEL_CHUNK):
        part = used[k:k + PIXEL_CHUNK]
        cut[part] = products([thumbs[i] for i in part.tolist()])[1]
    new = (a != b) & (rule[a] == rule[b]) & (cut[a] | cut[b] | (turn[rows] != turn[ids]))
    rows, ids, a, b = rows[new], ids[new], a[new], b[new]
    # one pair of ways for each pair of photos and turn between them: the checks below give
    # the same for each (a symmetric placeholder's 8 ways gave 64 pairs of ways a pair)
    _, first = np.unique((a * n + b) * TURNS + RELATIVE_TURN[turn[rows], turn[ids]],
                         return_index=True)
    first.sort()
    rows, ids, a, b = rows[first], ids[first], a[first], b[first]
    # photos framed alike, checked once a pair of photos (not once a pair of their ways)
    photo_pairs, back = np.unique(a * n + b, return_inverse=True)
    framed_alike = np.zeros(len(photo_pairs), bool)
    for k in range(0, len(photo_pairs), PIXEL_CHUNK):
        pa, pb = photo_pairs[k:k + PIXEL_CHUNK] // n, photo_pairs[k:k + PIXEL_CHUNK] % n
        framed_alike[k:k + PIXEL_CHUNK] = (
            np.einsum("ij,ij->i", thumb_vectors([thumbs[j] for j in pa.tolist()]),
                      thumb_vectors([thumbs[j] for j in pb.tolist()])) >= rules.thumb_cosine
        ) & (codes.hamming(pa, pb) <= rules.phash_distance)
    keep = ~framed_alike[back.reshape(-1)]
    rows, ids, a, b = rows[keep], ids[keep], a[keep], b[keep]
    near = np.zeros(len(rows), bool)
    for k in range(0, len(rows), PIXEL_CHUNK):  # (the pairs' rows made a chunk at a time)
        r, i, pa, pb = (x[k:k + PIXEL_CHUNK] for x in (rows, ids, a, b))
        apart = np.unpackbits(
            oriented_details([thumbs[j] for j in pa.tolist()], turn[r])
            ^ oriented_details([thumbs[j] for j in pb.tolist()], turn[i]), axis=1).sum(
            axis=1, dtype=np.int64)
        near[k:k + PIXEL_CHUNK] = apart <= DETAIL_DISTANCE * rules.phash_distance + np.where(
            rule[pa] == TURN_RULE, DETAIL_FLIPS, 0)  # (signs; the older rule's: medians)
    rows, ids, a, b = rows[near], ids[near], a[near], b[near]
    alike = _colour_differences(_Views(turned, len(photo), np.concatenate([rows, ids])),
                                rows, ids) <= rules.max_colour_diff
    return unique(a[alike] * n + b[alike])


def _per_row(advance: Callable[[int], None] | None, ways: int, rows: int
             ) -> Callable[[int], None] | None:
    """``advance`` told of ``rows`` where a search of ``ways`` (a view's turns) is done: the
    progress bar counts each row, however many ways it is searched in."""
    if advance is None or not ways:
        return advance
    done = [0, 0]  # (ways done, rows told)

    def tell(k: int) -> None:
        done[0] += k
        now = done[0] * rows // ways
        advance(now - done[1])
        done[1] = now

    return tell


DETAIL_DISTANCE = 4
"""The products' pHashes (256 bits) may lie this many times ``phash_distance`` apart (the
photos' own, 64 bits, ``phash_distance``); those of the sign rule
(:data:`vitrine.dedupe_views.TURN_RULE`) :data:`DETAIL_FLIPS` more."""
DETAIL_FLIPS = 2
"""Bits more that the products' pHashes (signs) may differ by: signs of frequencies near zero,
which a copy's JPEG noise or a cut a pixel off turns. Of the copies of the 1,016 demo photos
whose views agree with their originals' as the rule asks (turned, mirrored, padded, as
``benchmarks/dedupe_turn_margin.py`` makes them: ``benchmarks/dedupe_sign_distances.py``,
``benchmarks/results/dedupe_sign_distances.json``) all lay within 22, 21 and 23 bits of their
originals but one turned, one mirrored and two padded copies at 25–26 (and two padded ones
at 30 and 32); of the 415 pairs of different products whose views agree to a cosine of 0.95,
the two Rockport shoes, the one pair whose views agree as the rule asks, lay 34 bits apart
(each one's copies 32–37 from the other), the others 23 or more, the two within 26 (23 and
26) told apart by their colours."""


class _Views(Sequence):
    """The turned second views (``turned``: rows of :data:`THUMB_BYTES` for an array of
    ways, :func:`_view_pairs`) of ``n`` ways at ``rows``, made once, a chunk at a time, as
    the colour check reads thumbnails (three times a row: made at each read, they took a
    fifth of a search with many copies)."""

    def __init__(self, turned: Callable[[np.ndarray], np.ndarray], n: int, rows: np.ndarray):
        self.n = n
        self.rows = unique(np.asarray(rows, np.int64))
        self.made = np.empty((len(self.rows), THUMB_BYTES), np.uint8)
        for k in range(0, len(self.rows), PIXEL_CHUNK):
            self.made[k:k + PIXEL_CHUNK] = turned(self.rows[k:k + PIXEL_CHUNK])

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        return self.made[np.searchsorted(self.rows, i)].tobytes()


def copies_of_known(phashes: Sequence[str], thumbs: Sequence[bytes],
                    known_phashes: Sequence[str], known_thumbs: Sequence[bytes],
                    rules: DuplicateRules,
                    advance: Callable[[int], None] | None = None) -> np.ndarray:
    """Which of the photos (``phashes``, ``thumbs``) the thumbnail rule joins to one of the
    ``known`` photos (those a model trained on, :data:`vitrine.split.FINGERPRINTS`): their
    resized, recompressed, renamed copies. Exact: each chunk of the known photos' thumbnails
    in a flat index, each photo searched against it, a pair's pHashes and colours checked as
    :func:`rule_pairs` checks them. The embedding rule is not applied: it needs the known
    photos' vectors (5 kB each), and the copies it alone joins are edited ones, whose
    thumbnails differ; nor the second views (:func:`_view_pairs`): the known photos' thumbnails
    are the whole photos' alone. ``advance`` is told each chunk of known photos done (minutes at
    100,000 of each: helper-237)."""
    n, m = len(phashes), len(known_phashes)
    found = np.zeros(n, bool)
    if not n or not m or rules.thumb_cosine > 1 + 1e-5:  # (a rule switched off)
        return found
    import faiss

    codes = _PhashCodes([*phashes, *known_phashes])  # known rows after the photos' (n + k)
    every = [*thumbs, *known_thumbs]
    for known in _chunks(m):
        index = faiss.IndexFlatIP(len(whole(known_thumbs[0])))
        index.add(thumb_vectors([known_thumbs[k] for k in known.tolist()]))
        for rows in _chunks(n):
            rows = rows[~found[rows]]  # (one known photo it copies is enough)
            if not len(rows):
                continue
            lims, _, hits = index.range_search(thumb_vectors([thumbs[i] for i in rows.tolist()]),
                                               _radius(rules.thumb_cosine))
            rows = np.repeat(rows, np.diff(lims).astype(np.int64))
            ids = n + known[hits]
            near = codes.hamming(rows, ids) <= rules.phash_distance
            rows, ids = rows[near], ids[near]
            found[rows[_colour_differences(every, rows, ids) <= rules.max_colour_diff]] = True
        if advance is not None:
            advance(len(known))
    return found
