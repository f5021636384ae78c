"""The thumbnail rule's second look at a photo: its product cut out of the border around it,
turned to face one way.

A shop squares a photo onto a white canvas for its listings, or pads it with white: the
product shrinks in the frame, and the photo's 16×16 thumbnail and pHash no longer agree with
the original's (thumbnail cosine 0.16–0.98 on the demo catalogue, pHash 2–38 bits apart). A
mirrored copy's thumbnail is the original's turned round. So a photo's ``thumb``
(:func:`fingerprint`) holds, after its whole thumbnail, a second view: the thumbnail of its
product trimmed out of its border of one colour (:func:`trimmed`; the whole photo's where it
has none), and a 256-bit pHash of that product turned to face one way (:func:`facing_left`),
which tells apart products that 16×16 pixels do not (two black Rockport shoes of the demo
catalogue, a slip-on and a wingtip, whose views agree to a cosine of 0.991 and a colour
difference of 10.6: 32 bits apart; 99 % of 150 padded copies saved at JPEG quality 90 within
13 bits of their originals, at quality 50 within 18). The thumbnail rule compares those views
too (:func:`vitrine.dedupe.rule_pairs`).
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
grey, 64 × 64 (Lanczos), each above their median or not: 256 bits (the photo's own pHash,
imagehash's, has 8 × 8 of a 32 × 32 grey; a box filter's told two different shoes less well
apart, 30 bits for 32)."""
DETAIL_BYTES = DETAIL_SIZE ** 2 // 8
VIEWED_BYTES = 2 * THUMB_BYTES + DETAIL_BYTES
"""A ``thumb`` with its second view: the whole photo's thumbnail, its product's, and the
product's pHash (1,568 bytes); a store's thumbnails made before it are the first alone."""
BORDER_TOLERANCE = 16
"""How far (largest channel difference) at least half a photo's edge must lie from its
median colour for that colour to be a border to trim (``dedupe.BACKGROUND_TOLERANCE``)."""
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
right."""


def fingerprint(img: Image.Image) -> bytes:
    """The photo's ``thumb`` (:data:`VIEWED_BYTES`): its 16×16 RGB thumbnail (box filter),
    that of its product (:func:`trimmed`; the whole photo's again where it has no border)
    and the pHash of the product (:data:`DETAIL_SIZE`), mirrored where its thumbnail faces
    left."""
    img = img if img.mode == "RGB" else img.convert("RGB")
    product = trimmed(img) or img
    view = _thumb(product)
    grey = np.asarray(product.resize((4 * DETAIL_SIZE, 4 * DETAIL_SIZE),
                                     Image.Resampling.LANCZOS, reducing_gap=3.0).convert("L"),
                      np.float32)
    if facing_left(np.frombuffer(view, np.uint8)[None])[0]:
        grey = grey[:, ::-1]
    coefficients = _DETAIL_DCT @ grey @ _DETAIL_DCT.T
    bits = coefficients > np.median(coefficients)
    return _thumb(img) + view + np.packbits(bits.reshape(-1)).tobytes()


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
    they face the other way, as every view does."""
    grey = rows.reshape(len(rows), THUMB_SIZE, THUMB_SIZE, 3).astype(np.float32) @ _GREY
    return (grey @ _FIRST_HORIZONTAL).sum(axis=1) < 0


def whole(thumb: bytes) -> bytes:
    """The whole photo's thumbnail of a ``thumb``."""
    return thumb[:THUMB_BYTES] if len(thumb) > THUMB_BYTES else thumb


def details(thumbs: Sequence[bytes]) -> np.ndarray:
    """The products' pHashes of thumbnails with a view (rows of :data:`DETAIL_BYTES`), as
    stored: made facing one way already."""
    return np.frombuffer(b"".join(t[2 * THUMB_BYTES:] for t in thumbs), np.uint8).reshape(
        len(thumbs), DETAIL_BYTES)


def views(thumbs: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each photo's second view: its product's thumbnail facing one way (rows of
    :data:`THUMB_BYTES` bytes; zeros for a thumbnail made before the views), whether its
    product was cut out (the view is not its whole thumbnail), and whether the view was
    mirrored. (The product's pHash is read as stored: :func:`details`.)"""
    has = np.fromiter((len(t) == VIEWED_BYTES for t in thumbs), bool, len(thumbs))
    blank = bytes(VIEWED_BYTES)
    raw = np.frombuffer(b"".join(t if ok else blank for t, ok in zip(thumbs, has.tolist(),
                                                                     strict=True)),
                        np.uint8).reshape(len(thumbs), VIEWED_BYTES)
    photo, view = raw[:, :THUMB_BYTES], raw[:, THUMB_BYTES:2 * THUMB_BYTES]
    cut = (photo != view).any(axis=1)
    turned = has & facing_left(view)
    view = np.where(turned[:, None], view.reshape(-1, THUMB_SIZE, THUMB_SIZE, 3)[:, :, ::-1]
                    .reshape(-1, THUMB_BYTES), view)
    return view, cut, turned
