"""The thumbnail rule's second look at a photo: its product cut out of the border around it,
turned one way.

A shop squares a photo onto a white canvas for its listings, or pads it with white: the
product shrinks in the frame, and the photo's 16×16 thumbnail and pHash no longer agree with
the original's (thumbnail cosine 0.16–0.98 on the demo catalogue, pHash 2–38 bits apart). A
mirrored copy's thumbnail is the original's turned round; a copy stored sideways (a phone's
photo whose EXIF orientation was stripped) or upside down, the original's turned a quarter
or half turn. So a photo's ``thumb`` (:func:`fingerprint`) holds, after its whole thumbnail,
a second view: the thumbnail of its product trimmed out of its border of one colour
(:func:`trimmed`; the whole photo's where it has none), and a 256-bit pHash of that product
(the signs of its DCT's lowest frequencies), which tells apart products that 16×16 pixels do
not (two black Rockport shoes of the demo catalogue, a slip-on and a wingtip, whose views
agree to a cosine of 0.991 and a colour difference of 10.6). Both are stored as the photo
has them; the duplicate search turns each view one way among the 8 turns and flips of a
square (:func:`orientations`: its brightness weighing more on the left than on the right,
on the top than at the bottom, and from left to right more than from top to bottom), and
its pHash with it (:func:`oriented_details`: a sign of a DCT frequency turns with the
photo, so the pHash of a turned product is its own pHash's bits moved and flipped). A view
near a tie between two ways is compared in both (:data:`TIE_MARGIN`). The thumbnail rule
compares those views too (:func:`vitrine.dedupe_pairs.rule_pairs`).

A ``thumb`` of :data:`MIRRORED_BYTES` is one an older Vitrine made, whose view only faced
one way (mirrored or not, its pHash stored so): views of that rule are compared with each
other as they were, until :mod:`vitrine.thumb_upgrade` makes them again.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

THUMB_SIZE = 16
THUMB_BYTES = 3 * THUMB_SIZE ** 2
"""A 16×16 RGB thumbnail's bytes."""
DETAIL_SIZE = 16
"""The product's pHash is of the DCT's DETAIL_SIZE × DETAIL_SIZE lowest frequencies of its
grey, 64 × 64 (Lanczos), each positive or not: 256 bits (the photo's own pHash, imagehash's,
has 8 × 8 of a 32 × 32 grey, each above their median; a box filter's told two different
shoes less well apart, 30 bits for 32). A sign turns with the photo, where a median does
not: the pHash of a turned view is made from the stored one (:func:`oriented_details`).
Above their median, the views' pHashes were no better: of the rotated, mirrored and padded
copies of the 1,016 demo photos, 99 % lay within 14, 14 and 18 bits of their originals
(signs: 14, 14 and 19), and two of the 10 pairs of different photos whose views agree came
within 24 bits either way; the two Rockport shoes lie 34 bits apart (32)."""
DETAIL_BYTES = DETAIL_SIZE ** 2 // 8
VIEW_RULE = 2
"""The last byte of a ``thumb`` with its second view: the rule its view was made under (2:
stored as the photo has it, turned at each search)."""
VIEWED_BYTES = 2 * THUMB_BYTES + DETAIL_BYTES + 1
"""A ``thumb`` with its second view: the whole photo's thumbnail, its product's, the
product's pHash and :data:`VIEW_RULE` (1,569 bytes); a store's thumbnails made before the
views are the first alone (768 bytes), those made before views were turned are
:data:`MIRRORED_BYTES`."""
MIRRORED_BYTES = 2 * THUMB_BYTES + DETAIL_BYTES
"""A ``thumb`` an older Vitrine made (1,568 bytes, no rule byte): its view stored as the
photo has it, its product's pHash above its median and mirrored where the view faces left
(:func:`facing_left`); only mirrored copies were looked for."""
NO_VIEW, MIRROR_RULE, TURN_RULE = 0, 1, 2
"""What :func:`view_rules` says of a ``thumb``: no view (768 bytes, or bytes of no known
layout), a view of the older mirror rule, a view of this one."""
TIE_MARGIN = 0.01
"""A view is compared in each way it turns to (:func:`orientations`) whose brightness weighs
at most this much more (as a correlation with the first horizontal or vertical frequency of
the DCT, at most 1) on the right than on the left, at the bottom than on top, and from top
to bottom than from left to right: a copy's JPEG noise and its product's cut move those
weights by up to 0.02 (rotated, mirrored and padded copies of the 1,016 demo photos: 99 %
within 0.024, the most 0.06), and a view near a tie tips the other way. Of the 1,016 demo
photos, 15 % are compared in two ways or more (1.16 ways a photo; 0.005: 8 %, 1.08; 0.02:
28 %, 1.33). A copy of each found by the thumbnail rules, one way each against 0.01 (and the
mirror rule before): turned 90, 180 or 270 degrees 986 against 1,010 (0), mirrored 991
against 1,010 (1,002), padded 975 against 1,001 (993); 0.005 found 1,007, 1,006 and 998,
0.02 one mirrored and one padded copy more than 0.01 (the pHashes within 24 bits then; with
``dedupe_pairs.DETAIL_FLIPS``, 1,011, 1,011 and 1,003 against 987, 992 and 977)."""
BORDER_TOLERANCE = 16
"""How far (largest channel difference) at least half a photo's edge must lie from its
median colour for that colour to be a border to trim (``dedupe_colour.BACKGROUND_TOLERANCE``)."""
TRIM_TOLERANCE = 48
"""A pixel further than this from the border's colour is the product's: nearer, JPEG noise,
its ringing about sharp edges and soft shadows moved the cut of a copy by a few pixels (150
padded demo photos saved at JPEG quality 70: views of 94 % of them agreed with their
originals' at 32, 96 % at 48; at quality 50, 87 % and 94 %)."""
TRIM_ROUNDS = 3
"""Borders trimmed in turn: a photo on grey squared onto a white canvas has two."""
TRIM_SIDE = 512
"""The border is looked for in a copy reduced (by a whole factor) to about this many pixels
on its longer side."""
MIN_SIDE = 4
"""A product narrower or lower than this many pixels is not cut out (a speck on a blank
photo)."""

_GREY = np.array([0.299, 0.587, 0.114], np.float32)
_DETAIL_DCT = np.cos(np.pi * np.arange(DETAIL_SIZE)[:, None]
                     * (2 * np.arange(4 * DETAIL_SIZE)[None, :] + 1) / (8 * DETAIL_SIZE)
                     ).astype(np.float32)
"""The DETAIL_SIZE lowest frequencies of a DCT-II over 4 × DETAIL_SIZE points, as rows."""
_FIRST_HORIZONTAL = np.cos(np.pi * (2 * np.arange(THUMB_SIZE) + 1) / (2 * THUMB_SIZE)
                           ).astype(np.float32)
"""The first horizontal frequency of a 16-point DCT: positive on the left, negative on the
right (and, down a column, the first vertical one: positive on top)."""
_FIRST_NORM = float(np.sqrt(THUMB_SIZE * (_FIRST_HORIZONTAL ** 2).sum()))
"""The norm of that frequency over a whole 16×16 thumbnail: a weight divided by it and by
the thumbnail's own contrast is a correlation."""

TURNS = 8
"""The turns and flips of a square, numbered ``left_right + 2 × top_bottom + 4 ×
transposed``: flipped left to right, then top to bottom, then its rows made its columns
(0: as it is; 1: mirrored; 3: a half turn; 5 and 6: quarter turns)."""


def _pixels_moved(side: int) -> np.ndarray:
    """For each turn (:data:`TURNS`), where each position of a ``side`` × ``side`` square
    (row by row) takes its pixel from, as rows of turns."""
    grid = np.arange(side * side).reshape(side, side)
    moved = []
    for turn in range(TURNS):
        at = grid[:, ::-1] if turn & 1 else grid
        at = at[::-1, :] if turn & 2 else at
        moved.append((at.T if turn & 4 else at).reshape(-1))
    return np.array(moved)


def _frequencies_moved(side: int) -> tuple[np.ndarray, np.ndarray]:
    """For each turn (:data:`TURNS`), the DCT of a ``side`` × ``side`` square turned so,
    from the square's own: which of its frequencies change sign (those of odd order along a
    flipped axis: a flip leaves each frequency where it is), and where each takes its value
    from (transposed: the frequency across from it), as rows of turns."""
    odd = np.arange(side) % 2 == 1
    grid = np.arange(side * side).reshape(side, side)
    flipped, moved = [], []
    for turn in range(TURNS):
        flip = np.zeros((side, side), bool)
        flip ^= odd[None, :] if turn & 1 else False
        flip ^= odd[:, None] if turn & 2 else False
        flipped.append(flip.reshape(-1))
        moved.append((grid.T if turn & 4 else grid).reshape(-1))
    return np.array(flipped), np.array(moved)


_PIXELS_MOVED = _pixels_moved(THUMB_SIZE)
RELATIVE_TURN = np.array([[next(r for r in range(TURNS)
                                if (_PIXELS_MOVED[r][_PIXELS_MOVED[s]] == _PIXELS_MOVED[t]).all())
                           for t in range(TURNS)] for s in range(TURNS)], np.int64)
"""``RELATIVE_TURN[s, t]``: the turn ``r`` that a view turned by ``t`` is of one turned by
``s`` (turned by ``s`` after ``r``, a view is the view turned by ``t``): two views turned
by ``s`` and ``t`` agree as the first, unturned, and the second turned by ``r`` do."""
_BITS_FLIPPED, _BITS_MOVED = _frequencies_moved(DETAIL_SIZE)


def fingerprint(img: Image.Image) -> bytes:
    """The photo's ``thumb`` (:data:`VIEWED_BYTES`): its 16×16 RGB thumbnail (box filter),
    that of its product (:func:`trimmed`; the whole photo's again where it has no border),
    the pHash of the product (:data:`DETAIL_SIZE`) and :data:`VIEW_RULE`, all as the photo
    has them (turned one way when compared: :func:`orientations`)."""
    img = img if img.mode == "RGB" else img.convert("RGB")
    product = trimmed(img) or img
    grey = np.asarray(product.resize((4 * DETAIL_SIZE, 4 * DETAIL_SIZE),
                                     Image.Resampling.LANCZOS, reducing_gap=3.0).convert("L"),
                      np.float32)
    bits = (_DETAIL_DCT @ grey @ _DETAIL_DCT.T) > 0
    return (_thumb(img) + _thumb(product) + np.packbits(bits.reshape(-1)).tobytes()
            + bytes([VIEW_RULE]))


def _thumb(img: Image.Image) -> bytes:
    return img.resize((THUMB_SIZE, THUMB_SIZE), Image.Resampling.BOX).tobytes()


def trimmed(img: Image.Image) -> Image.Image | None:
    """The photo cut to its product: the border of one colour around it removed (at least
    half the photo's edge within :data:`BORDER_TOLERANCE` of its median colour; the product
    is what lies further than :data:`TRIM_TOLERANCE` from it), then a border of another
    colour inside it, up to :data:`TRIM_ROUNDS` in all; None where there is no border to
    remove (a product filling the frame). Looked for in a copy reduced by a whole factor to
    about :data:`TRIM_SIDE` pixels."""
    img = img if img.mode == "RGB" else img.convert("RGB")
    factor = max(1, max(img.size) // TRIM_SIDE)
    pixels = np.asarray(img.reduce(factor) if factor > 1 else img)
    box, colour = (0, 0, pixels.shape[1], pixels.shape[0]), None
    for _ in range(TRIM_ROUNDS):
        left, top, right, bottom = box
        found = _product_box(pixels[top:bottom, left:right], colour)
        if found is None:
            break
        (x0, y0, x1, y1), colour = found
        box = (left + x0, top + y0, left + x1, top + y1)
    if colour is None:
        return None
    left, top, right, bottom = box
    return img.crop((left * factor, top * factor, min(img.width, right * factor),
                     min(img.height, bottom * factor)))


def _product_box(pixels: np.ndarray, last: np.ndarray | None
                 ) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """The box (left, top, right, bottom) of what lies off the border's colour in ``pixels``
    (H × W × 3, 8 bits), and that colour; None when it has no border of one colour, or of
    the colour ``last`` trimmed already, or the box is all of it or a speck."""
    height, width = pixels.shape[:2]
    if min(height, width) < 3:
        return None
    border = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]]
                            ).astype(np.int16)
    colour = np.sort(border, axis=0)[len(border) // 2]
    if 2 * (np.abs(border - colour).max(axis=1) <= BORDER_TOLERANCE).sum() < len(border) or (
            last is not None and np.abs(colour - last).max() <= BORDER_TOLERANCE):
        return None
    product = np.zeros((height, width), bool)
    for channel in range(3):  # (in 8 bits: int16 copies of a photo took ten times as long)
        values, level = pixels[..., channel], np.uint8(colour[channel])
        product |= (np.maximum(values, level) - np.minimum(values, level)) > TRIM_TOLERANCE
    rows, cols = np.flatnonzero(product.any(axis=1)), np.flatnonzero(product.any(axis=0))
    if not len(rows):
        return None
    box = int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
    if box == (0, 0, width, height) or min(box[2] - box[0], box[3] - box[1]) < MIN_SIDE:
        return None
    return box, colour


def facing_left(rows: np.ndarray) -> np.ndarray:
    """Of 16×16 RGB thumbnails (rows of :data:`THUMB_BYTES` bytes), those whose brightness
    weighs more on the right (the DCT's first horizontal frequency is negative): mirrored,
    they face the other way (the older rule's views: :data:`MIRRORED_BYTES`)."""
    grey = rows.reshape(len(rows), THUMB_SIZE, THUMB_SIZE, 3).astype(np.float32) @ _GREY
    return (grey @ _FIRST_HORIZONTAL).sum(axis=1) < 0


def whole(thumb: bytes) -> bytes:
    """The whole photo's thumbnail of a ``thumb``."""
    return thumb[:THUMB_BYTES] if len(thumb) > THUMB_BYTES else thumb


def view_rules(thumbs: Sequence[bytes]) -> np.ndarray:
    """Of each ``thumb``, the rule its view was made under: :data:`TURN_RULE`,
    :data:`MIRROR_RULE` (an older Vitrine's) or :data:`NO_VIEW` (int8)."""
    return np.fromiter(
        (TURN_RULE if current(t) else MIRROR_RULE if len(t) == MIRRORED_BYTES else NO_VIEW
         for t in thumbs), np.int8, len(thumbs))


def current(thumb: bytes) -> bool:
    """Whether ``thumb`` has a view of this rule (one of another is made again:
    :mod:`vitrine.thumb_upgrade`)."""
    return len(thumb) == VIEWED_BYTES and thumb[-1] == VIEW_RULE


def products(thumbs: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Each photo's product view as stored (rows of :data:`THUMB_BYTES`; zeros for a
    ``thumb`` without one), and whether its product was cut out (the view is not its whole
    thumbnail)."""
    rules = view_rules(thumbs)
    blank = bytes(2 * THUMB_BYTES)
    raw = np.frombuffer(b"".join(t[:2 * THUMB_BYTES] if r else blank
                                 for t, r in zip(thumbs, rules.tolist(), strict=True)),
                        np.uint8).reshape(len(thumbs), 2 * THUMB_BYTES)
    photo, view = raw[:, :THUMB_BYTES], raw[:, THUMB_BYTES:]
    return view, (photo != view).any(axis=1)


def orientations(thumbs: Sequence[bytes]) -> np.ndarray:
    """The turns (:data:`TURNS`) each photo's view is compared in, as a bit mask each
    (uint8; 0 for a ``thumb`` without a view): those that leave its brightness weighing at
    least as much on the left as on the right, on top as at the bottom, and from left to
    right as from top to bottom (the DCT's first horizontal frequency positive, the first
    vertical one positive and no larger), each within :data:`TIE_MARGIN`; one for a view
    of one colour. A view of the older rule (:data:`MIRROR_RULE`) faces one way:
    mirrored where it faces left (:func:`facing_left`), as it was compared."""
    rules = view_rules(thumbs)
    view, _ = products(thumbs)
    grey = view.reshape(len(view), THUMB_SIZE, THUMB_SIZE, 3).astype(np.float32) @ _GREY
    grey -= grey.mean(axis=(1, 2), keepdims=True)
    contrast = np.linalg.norm(grey.reshape(len(grey), -1), axis=1) * _FIRST_NORM
    flat = contrast < 1e-3
    scale = np.where(flat, 1.0, contrast)
    across = (grey @ _FIRST_HORIZONTAL).sum(axis=1) / scale  # (left minus right)
    down = np.einsum("y,nyx->n", _FIRST_HORIZONTAL, grey) / scale  # (top minus bottom)
    mask = np.zeros(len(thumbs), np.uint8)
    for turn in range(TURNS):
        h = np.where(turn & 1, -across, across)
        v = np.where(turn & 2, -down, down)
        if turn & 4:
            h, v = v, h
        near = (h >= -TIE_MARGIN) & (v >= -TIE_MARGIN) & (h - v >= -TIE_MARGIN)
        mask |= near.astype(np.uint8) << turn
    mask[flat] = 1
    mirrored = rules == MIRROR_RULE
    mask[mirrored] = np.where(across[mirrored] < 0, 2, 1)  # (turn 1: mirrored)
    mask[rules == NO_VIEW] = 0
    return mask


def oriented(thumbs: Sequence[bytes], turns: np.ndarray) -> np.ndarray:
    """Each photo's product view (:func:`products`) turned by ``turns[k]`` (rows of
    :data:`THUMB_BYTES` bytes)."""
    view, _ = products(thumbs)
    pixels = view.reshape(len(view), THUMB_SIZE * THUMB_SIZE, 3)
    moved = pixels[np.arange(len(view))[:, None], _PIXELS_MOVED[np.asarray(turns, np.int64)]]
    return moved.reshape(len(view), THUMB_BYTES)


def details(thumbs: Sequence[bytes]) -> np.ndarray:
    """The products' pHashes of thumbnails with a view (rows of :data:`DETAIL_BYTES`), as
    stored."""
    return np.frombuffer(b"".join(t[2 * THUMB_BYTES:2 * THUMB_BYTES + DETAIL_BYTES]
                                  for t in thumbs), np.uint8).reshape(len(thumbs), DETAIL_BYTES)


def oriented_details(thumbs: Sequence[bytes], turns: np.ndarray) -> np.ndarray:
    """The products' pHashes (:func:`details`) of their views turned by ``turns[k]``: the
    sign of a DCT frequency of odd order along a flipped axis changes, and a transposed
    view's frequencies are transposed, so its bits are flipped there and moved. Those of
    the older rule as stored (made facing one way already)."""
    turns = np.asarray(turns, np.int64)
    stored = details(thumbs)
    bits = np.unpackbits(stored, axis=1)
    bits = np.take_along_axis(bits ^ _BITS_FLIPPED[turns], _BITS_MOVED[turns], axis=1)
    older = view_rules(thumbs) == MIRROR_RULE
    return np.where(older[:, None], stored, np.packbits(bits, axis=1))
