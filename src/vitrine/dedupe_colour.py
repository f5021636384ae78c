"""The thumbnail rule's colour check: the mean colour difference of two 16×16 thumbnails over
the pixels they do not share as background (white in both, each photo's own background where
the two stand on one, or a band both share along an edge, a supplier's banner), scaled for the
contrast that background leaves (:func:`colour_difference`), and the same for many pairs at
once, as arrays, a chunk at a time (:func:`_colour_differences`). It tells a photo's copy from
the same product photographed in another colour (:mod:`vitrine.dedupe`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vitrine.arrays import unique
from vitrine.dedupe_search import PIXEL_CHUNK as CHUNK  # (thumbnails' pixels at a time)
from vitrine.dedupe_views import BORDER_TOLERANCE, whole

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
    kept = None
    if len(used) * pixels * 6 <= PLANES_KEPT_BYTES:  # (filled a chunk at a time: made at
        # once, the thumbnails' bytes, their join and the planes were 2.6 times the planes'
        # size, the peak of `vitrine index` at 65,024 photos, benchmarks/index_memory.py)
        kept = np.empty((len(used), 3, pixels), np.int16)
        for k in range(0, len(used), CHUNK):
            kept[k:k + CHUNK] = planes(used[k:k + CHUNK])
    for k in range(0, len(differ), CHUNK):
        part = differ[k:k + CHUNK]
        a, b = at[rows[part]], at[ids[part]]
        x, y = (kept[a], kept[b]) if kept is not None else (planes(rows[part]),
                                                               planes(ids[part]))
        out[part] = _pair_differences(x, y, [f[a] for f in frames], [f[b] for f in frames])
    return out
