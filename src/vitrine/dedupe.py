"""Exact and near-duplicate photos: content hash, perceptual hash (pHash), a colour thumbnail
and the CNN embedding.

Measured on the demo catalogue (benchmarks/dedupe_quality.py, 150 copies): a photo downscaled
to 60×80 and re-encoded keeps its pHash (≤ 4 bits apart) and its 16×16 colour thumbnail
(cosine ≥ 0.989), but its CNN embedding drops to cosine 0.52–0.85 with the original, below
many distinct products. So two photos are duplicates when

* their bytes are identical, or
* their thumbnails agree (cosine ≥ ``thumb_cosine``, and a mean colour difference over the
  pixels they do not share as background, or as a band along an edge, ≤
  ``max_colour_diff``: :func:`colour_difference`)
  and so do their pHashes (Hamming distance ≤ ``phash_distance``): resized, recompressed,
  low-resolution copies. The colour check (copies differ by 2.5–9.5 of 255 on white,
  2.8–11.1 on #E4E4E4 grey: ``--background``) tells a photo's copy from the same shoe
  photographed in another colour, which shape-only checks group together; or
* their second views agree so (:mod:`vitrine.dedupe_views`: the product cut out of its
  border, turned one way among the 8 turns and flips of a square, with a 256-bit pHash of
  its own turned with it; a view near a tie between two ways compared in both), where their
  whole thumbnails and pHashes do not both agree: copies padded, squared onto a canvas,
  mirrored, or turned a quarter or half turn (a photo stored sideways); or
* their CNN embeddings are almost identical (cosine ≥ ``embed_cosine``) and their pHashes
  roughly agree (≤ ``2 × phash_distance``): recompressed or lightly edited copies.

Candidate pairs come from FAISS range searches, never from an N×N matrix: exact up to
:data:`EXACT_PAIRS_UP_TO` photos, through an inverted file above; for the products of a store
changed since its last search, those against every product, exactly (``among``,
``vitrine.dedupe_store``).

``embed_cosine`` (0.97) is calibrated for pretrained features. A trained model pulls the photos
of one category together (with the demo's, different products, colour variants and look-alike
T-shirts, come as close as 0.984 with pHashes that agree, 0.980 without the class
probabilities; with pretrained features 0.960), so
``vitrine train`` calibrates the rule on its own vectors (:func:`calibrated_embed_cosine`) and
a store indexed with that model uses it. The rule leaves out the class probabilities at the end
of such a model's vectors (``probs_tail``): they say the category, not the photo.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image

from vitrine.arrays import unique
from vitrine.dedupe_views import (
    BORDER_TOLERANCE,
    NO_VIEW,
    RELATIVE_TURN,
    THUMB_BYTES,
    TURN_RULE,
    TURNS,
    fingerprint,
    orientations,
    oriented,
    oriented_details,
    products,
    view_rules,
    whole,
)

Rows = Callable[[np.ndarray], np.ndarray]
"""The float32, L2-normalised rows compared, for an array of row numbers: rows are made a
chunk at a time, so that a large store is never held twice in memory."""


@dataclass(frozen=True)
class DuplicateRules:
    phash_distance: int = 6
    thumb_cosine: float = 0.985
    max_colour_diff: float = 12.0
    embed_cosine: float = 0.97
    probs_tail: int = 0
    """Trailing dimensions of the vectors that the embedding rule leaves out: a trained
    model's class probabilities, which tell the category, not the photo."""
    max_products: int = 1_000_000
    """``index`` searches its whole store for duplicates up to this many products (0:
    never): exact up to :data:`EXACT_PAIRS_UP_TO`, through an inverted file above
    (benchmarks/dedupe_scaling.py)."""

    @classmethod
    def from_settings(cls, settings, model_cosine: float | None = None,
                      probs_tail: int = 0) -> DuplicateRules:
        """The rules of ``settings``; an unset ``dup_embed_cosine`` is ``model_cosine`` (a
        trained model's calibrated value, ``Embedder.duplicate_rules``), else 0.97."""
        embed = settings.dup_embed_cosine
        if embed is None:
            embed = cls.embed_cosine if model_cosine is None else model_cosine
        return cls(settings.dup_phash_distance, settings.dup_thumb_cosine,
                   settings.dup_max_colour_diff, embed, probs_tail, settings.dup_max_products)

    def embedding_view(self, vectors: np.ndarray) -> np.ndarray:
        """The vectors the embedding rule compares: without the probabilities, L2-normalised
        again."""
        vecs = np.asarray(vectors, dtype=np.float32)
        if self.probs_tail:
            vecs = vecs[:, :-self.probs_tail]
            vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(vecs)

    def embedding_rows(self, vectors: np.ndarray) -> Rows:
        """:meth:`embedding_view` of the rows asked for (``_close_pairs``)."""
        return lambda rows: self.embedding_view(vectors[rows])


CALIBRATION_MARGIN = 0.01
"""How far above the closest pair of different products the calibrated embedding rule sits
(pretrained features on the demo catalogue: closest such pair 0.960, rule 0.97)."""


def calibrated_embed_cosine(vectors: np.ndarray, phashes: Sequence[str],
                            groups: Sequence[Sequence[int]], rules: DuplicateRules
                            ) -> tuple[float, float | None]:
    """The embedding rule's cosine for a model's own vectors (rows of one catalogue; ``groups``
    lists the rows of its known duplicates) and the highest cosine between two photos that are
    not known duplicates but whose pHashes agree as the rule asks (None if no pair comes within
    the margin of ``rules.embed_cosine``), compared as the rule compares them
    (:meth:`DuplicateRules.embedding_view`). The rule is that cosine plus
    :data:`CALIBRATION_MARGIN` and at least ``rules.embed_cosine``; above 1 (different products
    as close as 0.99: a model whose vectors tell its categories and little else, such as the
    'probs' layer) the embedding rule never holds and only the other rules find duplicates.
    Above :data:`EXACT_PAIRS_UP_TO` photos the pairs come from the inverted file, which could
    miss the closest one (and so calibrate the rule too low)."""
    group_of = {row: g for g, rows in enumerate(groups) for row in rows}
    rows, ids, scores = _close_pairs(len(vectors), rules.embedding_rows(vectors),
                                     rules.embed_cosine - CALIBRATION_MARGIN)
    closest = None
    for k in np.argsort(-scores, kind="stable"):  # closest pair first
        i, j = int(rows[k]), int(ids[k])
        known = i in group_of and group_of[i] == group_of.get(j)
        if not known and hamming(phashes[i], phashes[j]) <= 2 * rules.phash_distance:
            closest = float(scores[k])
            break
    if closest is None:
        return rules.embed_cosine, None
    cosine = max(rules.embed_cosine, closest + CALIBRATION_MARGIN)
    return round(cosine, 4), round(closest, 4)


def perceptual_hash(img: Image.Image) -> str:
    """64-bit DCT perceptual hash as 16 hex digits."""
    return str(imagehash.phash(img))


def thumbnail(img: Image.Image) -> bytes:
    """16×16 RGB thumbnail (box filter), 768 bytes, followed by the thumbnail rule's second
    view of the photo (its product cut out of its border, the product's pHash and the view's
    rule, turned one way when compared: :func:`vitrine.dedupe_views.fingerprint`), 1,569
    bytes in all."""
    return fingerprint(img)


def thumb_vectors(thumbs: Sequence[bytes]) -> np.ndarray:
    """Centred, L2-normalised float32 rows from raw thumbnails (the whole photos')."""
    raw = np.frombuffer(b"".join(whole(t) for t in thumbs), dtype=np.uint8).reshape(
        len(thumbs), -1)
    return _unit_rows(raw)


def _unit_rows(raw: np.ndarray) -> np.ndarray:
    """Rows of 8-bit thumbnails centred and L2-normalised, float32."""
    x = raw.astype(np.float32)
    x -= x.mean(axis=1, keepdims=True)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)
    return x


WHITE_FROM = 240
"""A thumbnail pixel whose every channel is at least this is white: left out of the colour
check when white in both photos, as it always was."""
BACKGROUND_TOLERANCE = BORDER_TOLERANCE  # (the views' border rule is the colour check's)
"""How far (largest channel difference) a pixel may lie from its photo's background colour
and still be background; how far at least half its border must lie from it for the photo
to have one; how far two photos' background colours may lie apart to be one background; and,
for a band along an edge (:func:`_band_lines`), how far half a line's pixels may lie from
its colour (two photos' pixels there: :data:`BAND_TOLERANCE`). On
white (255) a pixel is background from 239 on, as white was from 240."""
UNCHANGED = 2
"""A counted thumbnail pixel whose largest channel differs by at most this is one the two
photos share unchanged (:func:`_pair_differences`)."""
CHANGED_WEIGHT = 6 / 7
"""The colour difference is the larger of the mean over the counted pixels and this share of
the mean over those of them that changed (more than :data:`UNCHANGED`): a banner, logo or
page template that two different photos share counts at a difference of nothing and pulled
them below the rule (a 12 % banner on every demo photo: 14 false groups), as a shared grey
background did. With ``max_colour_diff`` 12: the changed pixels' mean at most 14. Only where
at least :data:`CHANGED_SHARE` of the counted pixels changed. (A band shared along an edge,
a banner, is left out as background: :func:`_shared_bands`; different shoes of the demo 12.5-22
apart without one came 9.5-12 apart weighed so under a 25 % banner: 26 wrong pairs.)"""
CHANGED_SHARE = 0.25
"""The share of the counted thumbnail pixels that must have changed for the changed ones to
be weighed (:data:`CHANGED_WEIGHT`): a copy with a watermark or a shop's address stamped on
it changes a few pixels strongly, which weighed alone made it another product (a corner
stamp on 300 demo photos: 265 copies found before, 36 weighed so: helper-251)."""
BAND_TOLERANCE = 8
"""How far (largest channel difference) two photos' pixels of a band they share along an edge
may lie apart to be left out (:func:`_shared_bands`): one banner under two photos lies a few
apart; a product filling the frame from side to side in two colours 9-16 apart (a shirt
cropped at the waist) is no shared band."""
CONTRAST_CAP = 1.15
"""The most the colour difference of two photos on one background is scaled by for the
contrast that background leaves (:func:`colour_difference`): a dark product (50) stands 178
from #E4E4E4 and 205 from white, 1.15 × as far. A copy's own differences (JPEG, resampling)
do not shrink with the contrast, so a darker background is scaled by no more."""


def _border(pixels: int) -> np.ndarray:
    """Positions of the outermost ring of a square thumbnail of ``pixels`` pixels (none
    when it is not square)."""
    side = int(round(pixels ** 0.5))
    if side * side != pixels or side < 3:
        return np.empty(0, np.int64)
    grid = np.arange(pixels).reshape(side, side)
    return np.concatenate([grid[0], grid[-1], grid[1:-1, 0], grid[1:-1, -1]])


def _backgrounds(planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Of thumbnails as 16-bit planes (photos × 3 channels × pixels): each photo's background
    colour (the per-channel median of its border pixels, the upper one of an even count), and
    whether it has one (at least half the border within :data:`BACKGROUND_TOLERANCE` of that
    colour: a product filling the frame has none). Pixels within the tolerance of it are
    its background (:func:`_pair_differences`)."""
    border = planes[:, :, _border(planes.shape[2])]
    if not border.shape[2]:
        return np.zeros((len(planes), 3), np.int16), np.zeros(len(planes), bool)
    colour = np.sort(border, axis=2)[:, :, border.shape[2] // 2]
    near = np.abs(border - colour[:, :, None]).max(axis=1) <= BACKGROUND_TOLERANCE
    return colour, 2 * near.sum(axis=1) >= border.shape[2]


def _shared_background(colour_a: np.ndarray, has_a: np.ndarray, colour_b: np.ndarray,
                       has_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For pairs of photos (their background colours, photos × 3, and whether they have
    one): whether they stand on one background (both have one, within
    :data:`BACKGROUND_TOLERANCE` of each other), and the factor their colour difference is
    scaled by: 255 over the farthest any colour can lie from that background (255 on white
    or black, 228 on #E4E4E4, 128 on mid grey), at most :data:`CONTRAST_CAP`; 1 without."""
    shared = has_a & has_b & (np.abs(colour_a - colour_b).max(axis=1) <= BACKGROUND_TOLERANCE)
    room = np.maximum(np.maximum(colour_a, 255 - colour_a).max(axis=1),
                      np.maximum(colour_b, 255 - colour_b).max(axis=1))
    scale = np.where(shared, np.minimum(255.0 / np.maximum(room, 1), CONTRAST_CAP), 1.0)
    return shared, scale


def _frames(planes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Of thumbnails as 16-bit planes (photos × 3 channels × pixels), what the colour check
    reads of each photo alone: its background colour and whether it has one
    (:func:`_backgrounds`), and which of its lines are a band's (:func:`_band_lines`)."""
    colour, has = _backgrounds(planes)
    return colour, has, _band_lines(planes, colour, has)


def _band_lines(planes: np.ndarray, colour: np.ndarray, has: np.ndarray) -> np.ndarray:
    """Of square thumbnails as planes (photos × 3 × side²) with their backgrounds
    (:func:`_backgrounds`), which rows and which columns (photos × 2 × side) are a band's: at
    least half their pixels within :data:`BACKGROUND_TOLERANCE` of their colour (the
    per-channel upper median of their pixels), which is neither white nor the photo's
    background (a supplier's banner, a strip of a page's template), and that does not end in
    white or the photo's background on either side (a product reaching the edge: a bag cut by
    the bottom of the frame, the product of every cut-out view). None of a thumbnail that is
    not square."""
    photos, pixels = planes.shape[0], planes.shape[2]
    side = int(round(pixels ** 0.5))
    if side * side != pixels or side < 3:
        return np.zeros((photos, 2, 0), bool)
    grid = planes.reshape(photos, 3, side, side)
    lines = np.stack([grid, grid.transpose(0, 1, 3, 2)], axis=1)  # (photos, 2, 3, line, pixel)
    colours = np.sort(lines, axis=4)[..., side // 2]
    near = np.abs(lines - colours[..., None]).max(axis=2) <= BACKGROUND_TOLERANCE

    def plain(values: np.ndarray) -> np.ndarray:  # (photos × 2 × 3 × lines: white, or the
        return (values.min(axis=2) >= WHITE_FROM) | has[:, None, None] & (  # background)
            np.abs(values - colour[:, None, :, None]).max(axis=2) <= BACKGROUND_TOLERANCE)

    # (a product's lines end in the background: taken for a band, its pixels were left out
    # and a copy compared on its outline alone, 9.2 -> 22.3 for a bag cut by the frame)
    ends = plain(lines[..., 0]) | plain(lines[..., -1])
    return (2 * near.sum(axis=3) >= side) & ~ends & ~plain(colours)


def _shared_bands(band_x: np.ndarray, band_y: np.ndarray, differences: np.ndarray
                  ) -> np.ndarray:
    """Of pairs of square thumbnails, which of their lines are a band's
    (:func:`_band_lines`) and their pixels' differences (pairs × pixels), the pixels of a
    band the two share along an edge: on the rows (or columns) from an edge inwards that are
    a band's in both, those where the two photos lie within :data:`BAND_TOLERANCE` of each
    other (a shop's name in the band is shared; a product reaching into it is not)."""
    pairs, pixels = differences.shape
    line = band_x & band_y
    if not line.shape[2] or not line.any():
        return np.zeros((pairs, pixels), bool)
    edge = np.logical_and.accumulate(line, axis=2) | np.logical_and.accumulate(
        line[:, :, ::-1], axis=2)[:, :, ::-1]  # (from either edge, unbroken)
    found = edge[:, 0, :, None] | edge[:, 1, None, :]  # (rows or columns: pairs × side²)
    return found.reshape(pairs, pixels) & (differences <= BAND_TOLERANCE)


def _planes(thumbs: Sequence[bytes]) -> np.ndarray:
    """Thumbnails as 16-bit planes: photos × channels × pixels, each row contiguous."""
    pixels = np.frombuffer(b"".join(whole(t) for t in thumbs), np.uint8)
    return np.ascontiguousarray(pixels.reshape(len(thumbs), -1, 3).transpose(0, 2, 1),
                                dtype=np.int16)


def _pair_differences(x: np.ndarray, y: np.ndarray, frame_x: Sequence[np.ndarray],
                      frame_y: Sequence[np.ndarray]) -> np.ndarray:
    """:func:`colour_difference` of pairs of thumbnails as planes (``x[k]``, ``y[k]``: pairs
    × 3 × pixels) with what is read of their photos alone (:func:`_frames`)."""
    colour_x, has_x, band_x = frame_x
    colour_y, has_y, band_y = frame_y
    step = np.abs(x - y)
    differences = np.maximum(np.maximum(step[:, 0], step[:, 1]), step[:, 2])
    white = (x.min(axis=1) >= WHITE_FROM) & (y.min(axis=1) >= WHITE_FROM)
    shared, scale = _shared_background(colour_x, has_x, colour_y, has_y)
    background = (np.abs(x - colour_x[:, :, None]).max(axis=1) <= BACKGROUND_TOLERANCE) & (
        np.abs(y - colour_y[:, :, None]).max(axis=1) <= BACKGROUND_TOLERANCE) & shared[:, None]
    # (a band both share along an edge, as their background: helper-290)
    background |= _shared_bands(band_x, band_y, differences)
    counted = ~(white | background)
    changed = counted & (differences > UNCHANGED)
    # (the changed pixels weighed only where at least CHANGED_SHARE of the counted ones
    # changed: two products under one banner; a watermark stamped on a copy changes fewer)
    mostly = changed.sum(axis=1) >= CHANGED_SHARE * counted.sum(axis=1)
    everywhere = _mean_where(differences, counted)
    mean = np.where(mostly, np.maximum(everywhere, CHANGED_WEIGHT * _mean_where(
        differences, changed)), everywhere) * scale
    # nothing left but what both take for their background (a product filling both frames,
    # its own colour taken for one: two colours of it 12-14 apart were copies): every pixel
    # not white in both, unscaled, as before backgrounds were told apart
    return np.where((white | background).all(axis=1), _mean_where(differences, ~white), mean)


def _mean_where(values: np.ndarray, counted: np.ndarray) -> np.ndarray:
    """Each row's mean of ``values`` where ``counted`` (0 where none is)."""
    n = counted.sum(axis=1)
    return np.where(n > 0, np.where(counted, values, 0).sum(axis=1) / np.maximum(n, 1), 0.0)


def colour_difference(a: bytes, b: bytes) -> float:
    """Mean largest channel difference (0–255) of the two thumbnails over their pixels but
    those they share as background: white in both (every channel from :data:`WHITE_FROM`),
    or background in both when the two photos stand on one background (each photo's own,
    from its border: :func:`_backgrounds`), or of a band both share along an edge
    (:func:`_shared_bands`: a supplier's banner), scaled then for the contrast that background
    leaves (:func:`_shared_background`). On a grey or coloured background its pixels count
    otherwise, at a difference of nothing, and pull different products below the rule; and
    a product stands out less from grey than from white, so its outline differs less. Where
    nothing is left (a product filling both frames), every pixel not white in both."""
    x, y = _planes([a]), _planes([b])
    return float(_pair_differences(x, y, _frames(x), _frames(y))[0])


def hamming(a: str, b: str) -> int:
    if not a or not b:
        return 64
    return (int(a, 16) ^ int(b, 16)).bit_count()


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


def _close_pairs(n: int, rows_of: Rows, threshold: float,
                 advance: Callable[[int], None] | None = None,
                 among: np.ndarray | None = None, exact: bool | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows ``i``, ``j`` (i < j) of ``n`` and inner products of the pairs whose inner product
    is at least ``threshold``: all of them up to :data:`EXACT_PAIRS_UP_TO` rows (or where
    ``exact`` says so: the second views' search, whose photos have more rows than one),
    above that those the inverted file finds (a pair whose rows lie in cells far apart can
    be missed). With ``among`` (row numbers), only the pairs with a row among them, all of
    them (:func:`_pairs_with`). ``advance`` is told of the rows done, ``2 × n`` in all."""
    advance = advance or (lambda done: None)
    if threshold > 1 + 1e-5 or n == 0:  # rows are unit vectors: a rule switched off
        advance(2 * n)
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)

    def floats(rows: np.ndarray) -> np.ndarray:  # what FAISS takes
        return np.ascontiguousarray(rows_of(rows), dtype=np.float32)

    if among is not None:
        return _pairs_with(n, floats, threshold, advance, among)
    if not (n <= EXACT_PAIRS_UP_TO if exact is None else exact):
        return _close_pairs_ivf(n, floats, threshold, advance)
    import faiss  # here, not at the top: embedding photos needs the hashes, not FAISS

    vecs = floats(np.arange(n))
    index = faiss.IndexFlatIP(vecs.shape[1])
    index.add(vecs)
    found = []
    for start in range(0, n, EXACT_ROWS):  # (a chunk at a time: the bar moves; at 20,000
        # rows one call was 15 to 20 s without a word, helper-165)
        lims, scores, ids = index.range_search(vecs[start:start + EXACT_ROWS],
                                               _radius(threshold))
        rows = start + np.repeat(np.arange(len(lims) - 1), np.diff(lims).astype(np.int64))
        keep = rows < ids  # each pair once, not a photo with itself
        found.append((rows[keep], ids[keep], scores[keep]))
        advance(2 * (len(lims) - 1))
    rows, ids, scores = (np.concatenate(parts) for parts in zip(*found, strict=True))
    return rows, ids, scores


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


def _chunks(n: int) -> Iterator[np.ndarray]:
    """Row numbers ``0 … n-1``, :data:`CHUNK` at a time."""
    for start in range(0, n, CHUNK):
        yield np.arange(start, min(n, start + CHUNK))


def _close_pairs_ivf(n: int, rows_of: Rows, threshold: float, advance: Callable[[int], None]
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_close_pairs` through an inverted file of 8-bit codes (a quarter of the float
    rows' memory): about sqrt(4 × rows × probes) cells, placed by two rounds of k-means on a
    sample; each row is compared with the rows of its :data:`PAIR_PROBES` nearest cells
    (found once, for adding and for searching), and the pairs found are scored again on the
    float rows."""
    import faiss
    from faiss.contrib.ivf_tools import add_preassigned

    wanted = int(np.sqrt(4 * n * PAIR_PROBES))
    cells = max(1, min(wanted, n // 40))  # at least 40 rows a cell
    rng = np.random.default_rng(0)
    sample = rows_of(np.sort(rng.choice(n, min(n, 16 * wanted), replace=False)))
    dim = sample.shape[1]
    index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(dim), dim, cells,
                                          faiss.ScalarQuantizer.QT_8bit,
                                          faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = 2  # cells only need to keep close rows together, not be optimal
    index.cp.min_points_per_centroid = 16  # (no warning below FAISS's 39 per cell)
    index.train(sample)
    del sample
    index.nprobe = probes = min(PAIR_PROBES, cells)
    nearest_scores = np.empty((n, probes), np.float32)
    nearest_cells = np.empty((n, probes), np.int64)
    for rows in _chunks(n):
        vecs = rows_of(rows)
        nearest_scores[rows], nearest_cells[rows] = index.quantizer.search(vecs, probes)
        add_preassigned(index, vecs, np.ascontiguousarray(nearest_cells[rows, 0]))
        advance(len(rows))
    found = []
    for rows in _chunks(n):
        lims, _, ids = index.range_search_preassigned(
            rows_of(rows), threshold - PAIR_MARGIN, nearest_cells[rows], nearest_scores[rows])
        advance(len(rows))
        found.append(_pair_codes(np.repeat(rows, np.diff(lims).astype(np.int64)), ids, n)[0])
    del index, nearest_scores, nearest_cells
    pairs = unique(np.concatenate(found))
    rows, ids = pairs // n, pairs % n
    scores = np.concatenate([np.einsum("ij,ij->i", rows_of(rows[k:k + CHUNK]),
                                       rows_of(ids[k:k + CHUNK]))
                             for k in range(0, len(pairs), CHUNK)] or [np.empty(0, np.float32)])
    keep = scores >= threshold
    return rows[keep], ids[keep], scores[keep]


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


def rule_pairs(vectors: np.ndarray, phashes: Sequence[str], thumbs: Sequence[bytes],
               rules: DuplicateRules, advance: Callable[[int], None] | None = None,
               among: np.ndarray | None = None) -> np.ndarray:
    """Rows ``(i, j)``, i < j, of the pairs that the thumbnail or the embedding rule joins
    (``vectors`` L2-normalised; rows aligned with ``phashes`` and ``thumbs``); with ``among``
    only the pairs with a row among those (the products changed since a previous search).
    The thumbnail rule also joins two photos whose second views agree as it asks
    (:func:`_view_pairs`: a copy padded, squared onto a canvas, mirrored or turned).
    ``advance`` is told of the rows done, :data:`SEARCH_STEPS` ``× rows`` in all."""
    n = len(phashes)
    codes = _PhashCodes(phashes)
    rows, ids, _ = _close_pairs(n, lambda rows: thumb_vectors([thumbs[i] for i in rows]),
                                rules.thumb_cosine, advance, among)
    # checked as arrays: a placeholder photo that g products share, each file with its own
    # bytes, gives g²/2 pairs (2,400 of them: 115 s and 1.8 GB checked pair by pair)
    near = codes.hamming(rows, ids) <= rules.phash_distance
    thumb_pairs = rows[near] * n + ids[near]
    rows, ids, _ = _close_pairs(n, rules.embedding_rows(vectors), rules.embed_cosine, advance,
                                among)
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
        exact=len(viewed) <= EXACT_PAIRS_UP_TO)  # (products, not their views' ways)
    a, b = photo[rows], photo[ids]  # (a <= b: the ways are in row order)
    cut = np.zeros(n, bool)  # (of the pairs' rows alone: not a pass over the whole store)
    used = unique(np.concatenate([a, b]))
    for k in range(0, len(used), CHUNK):
        part = used[k:k + CHUNK]
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
    for k in range(0, len(photo_pairs), CHUNK):
        pa, pb = photo_pairs[k:k + CHUNK] // n, photo_pairs[k:k + CHUNK] % n
        framed_alike[k:k + CHUNK] = (
            np.einsum("ij,ij->i", thumb_vectors([thumbs[j] for j in pa.tolist()]),
                      thumb_vectors([thumbs[j] for j in pb.tolist()])) >= rules.thumb_cosine
        ) & (codes.hamming(pa, pb) <= rules.phash_distance)
    keep = ~framed_alike[back.reshape(-1)]
    rows, ids, a, b = rows[keep], ids[keep], a[keep], b[keep]
    near = np.zeros(len(rows), bool)
    for k in range(0, len(rows), CHUNK):  # (the pairs' rows made a chunk at a time)
        r, i, pa, pb = (x[k:k + CHUNK] for x in (rows, ids, a, b))
        apart = np.unpackbits(
            oriented_details([thumbs[j] for j in pa.tolist()], turn[r])
            ^ oriented_details([thumbs[j] for j in pb.tolist()], turn[i]), axis=1).sum(
            axis=1, dtype=np.int64)
        near[k:k + CHUNK] = apart <= DETAIL_DISTANCE * rules.phash_distance + np.where(
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
        for k in range(0, len(self.rows), CHUNK):
            self.made[k:k + CHUNK] = turned(self.rows[k:k + CHUNK])

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


_POPCOUNT = np.array([bin(b).count("1") for b in range(256)], np.uint8)


class _PhashCodes:
    """The perceptual hashes as 64-bit numbers, to compare many pairs at once; a row
    without one, and a row whose text is no 64-bit hex number (a store written by hand),
    as :func:`hamming` takes them."""

    def __init__(self, phashes: Sequence[str]):
        self.phashes = phashes
        self.values = np.zeros(len(phashes), np.uint64)
        self.missing = np.zeros(len(phashes), bool)
        self.odd = np.zeros(len(phashes), bool)
        for i, h in enumerate(phashes):
            if not h:
                self.missing[i] = True
                continue
            try:  # (as hamming reads it: "0x…", capitals, spaces around)
                value = int(h, 16)
            except ValueError:
                value = -1
            if 0 <= value < 2**64:
                self.values[i] = value
            else:
                self.odd[i] = True

    def hamming(self, rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """:func:`hamming` of the pairs (``rows[k]``, ``ids[k]``)."""
        bits = (self.values[rows] ^ self.values[ids]).view(np.uint8).reshape(-1, 8)
        distance = _POPCOUNT[bits].sum(axis=1, dtype=np.int64)
        distance[self.missing[rows] | self.missing[ids]] = 64
        for k in np.flatnonzero(self.odd[rows] | self.odd[ids]).tolist():
            distance[k] = hamming(self.phashes[rows[k]], self.phashes[ids[k]])
        return distance


PLANES_KEPT_BYTES = 256 * 2**20
"""Up to this size the colour check keeps the compared photos' thumbnails as 16-bit planes
(1.5 kB a photo) for all their pairs; above it, it makes them a chunk of pairs at a time."""


def _colour_differences(thumbs: Sequence[bytes], rows: np.ndarray,
                        ids: np.ndarray) -> np.ndarray:
    """:func:`colour_difference` of the pairs (``rows[k]``, ``ids[k]``), a chunk at a time;
    a pair of one thumbnail (a placeholder's copies) differs by nothing, without a look."""
    out = np.zeros(len(rows), np.float64)
    if not len(rows):
        return out
    used = unique(np.concatenate([rows, ids]))
    kinds: dict[bytes, int] = {}  # (the thumbnails themselves as keys: no copy of them)
    at = np.zeros(len(thumbs), np.int64)
    at[used] = [kinds.setdefault(thumbs[i], len(kinds)) for i in used.tolist()]
    del kinds
    differ = np.flatnonzero(at[rows] != at[ids])
    if not len(differ):
        return out
    if len(differ) < len(rows):  # the photos looked at
        used = unique(np.concatenate([rows[differ], ids[differ]]))
    at[used] = np.arange(len(used))

    def planes(of: np.ndarray) -> np.ndarray:  # (channels apart, each row contiguous)
        return _planes([thumbs[i] for i in of.tolist()])

    # once a photo, a chunk at a time: its background colour, whether it has one and which
    # of its lines are a band's (_frames: 39 bytes; its pixels' masks are made for each
    # chunk of pairs: kept for every photo, they took 2.6 times the memory at a million
    # photos, helper-226; its lines looked at for each pair, 3.4 times the time)
    frames = [_frames(planes(used[k:k + CHUNK])) for k in range(0, len(used), CHUNK)]
    frames = [np.concatenate(parts) for parts in zip(*frames, strict=True)]
    pixels = len(whole(thumbs[int(used[0])])) // 3
    kept = planes(used) if len(used) * pixels * 6 <= PLANES_KEPT_BYTES else None
    for k in range(0, len(differ), CHUNK):
        part = differ[k:k + CHUNK]
        a, b = at[rows[part]], at[ids[part]]
        x, y = (kept[a], kept[b]) if kept is not None else (planes(rows[part]),
                                                               planes(ids[part]))
        out[part] = _pair_differences(x, y, [f[a] for f in frames], [f[b] for f in frames])
    return out


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
    :data:`PROGRESS_FROM` items).

    Returns groups of two or more keys, each in input order, ordered by first member.
    """
    n = len(keys)
    pairs = np.empty((0, 2), np.int64)
    # one row per photo file (distinct_rows); rows of one file are joined by their content
    rows = np.arange(n) if content is None else distinct_rows(content)[0]
    if len(rows) > 1:
        with search_progress(len(rows), show_progress and len(rows) >= PROGRESS_FROM
                             ) as advance:
            pairs = rows[rule_pairs(*only_rows(rows, vectors, phashes, thumbs),
                                    rules or DuplicateRules(), advance)]
    return [[keys[i] for i in group] for group in duplicate_groups(n, pairs, content)]
