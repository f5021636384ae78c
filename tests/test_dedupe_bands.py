"""Photos under one band along an edge (a supplier's banner with its shop's name): the band
is left out of the colour check as a background both share (helper-290)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pytest import approx

from vitrine.dedupe import DuplicateRules, perceptual_hash, thumbnail
from vitrine.dedupe_colour import CHANGED_WEIGHT, colour_difference
from vitrine.dedupe_groups import find_duplicates

BAND = (20, 40, 110)


def banded(product: tuple[int, int, int]) -> np.ndarray:
    """A 16×16 thumbnail: a product (rows 5-10) on white above a band of 4 rows along the
    bottom edge, a shop's name written across its third row."""
    thumb = np.full((16, 16, 3), 255, np.uint8)
    thumb[5:11, 3:13] = product
    thumb[12:] = BAND
    thumb[14, 1:12:2] = (200, 205, 220)  # (the name, pixels far from the band's colour)
    return thumb


def test_a_band_two_photos_share_along_an_edge_is_left_out_of_the_colour_check():
    """Its pixels counted at a difference of nothing and pulled two colours of one shoe (13
    apart) below the rule's 12: the changed pixels' mean weighed, 11.1. Left out, they are
    13 apart; a copy stays as close as it is."""
    brown, darker = banded((120, 70, 40)), banded((107, 57, 27))
    nearly = banded((124, 66, 43))
    nearly[12:] = np.clip(nearly[12:].astype(int) + 3, 0, 255)  # (its band recompressed)
    assert colour_difference(brown.tobytes(), darker.tobytes()) == approx(13.0)
    assert 13.0 * CHANGED_WEIGHT <= DuplicateRules().max_colour_diff < 13.0
    assert colour_difference(brown.tobytes(), nearly.tobytes()) == approx(4.0)
    # a product reaching into the band still counts there (20 apart on 2 of its pixels)
    reaching, other = brown.copy(), darker.copy()
    reaching[12, 6:8] = other[12, 6:8] = (120, 70, 40)
    other[12, 6:8] -= 20
    assert colour_difference(reaching.tobytes(), other.tobytes()) == approx(
        (60 * 13 + 2 * 20) / 62)


def test_bands_of_two_colours_or_off_the_edge_are_not_left_out():
    """Two shops' bands (of colours further apart than the background tolerance) are no
    shared background: they count, as does a strip across the middle of the frame, whose
    rows are not reached from an edge; those the photos share are weighed out
    (``CHANGED_WEIGHT``) as before."""
    brown, darker = banded((120, 70, 40)), banded((107, 57, 27))
    darker[12:] = (20, 40, 150)  # (another shop's band: 40 apart)
    assert colour_difference(brown.tobytes(), darker.tobytes()) > 13.0
    brown, darker = banded((120, 70, 40)), banded((107, 57, 27))
    for thumb in (brown, darker):
        thumb[11:] = 255
        thumb[1:4] = BAND  # (the band above the product, a white row above it)
        thumb[0] = 255
    assert colour_difference(brown.tobytes(), darker.tobytes()) == approx(
        13.0 * CHANGED_WEIGHT)


def photo(shift: int) -> Image.Image:
    """A shoe-like block (and its sole) over a dark-blue band of a fifth of the photo's height
    with a shop's name in it, each colour of the shoe ``shift`` lighter."""
    img = Image.new("RGB", (256, 320), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle((48, 80, 207, 199), fill=(90 + shift, 60 + shift, 40 + shift))
    draw.rectangle((48, 200, 207, 219), fill=(40 + shift, 30 + shift, 25 + shift))
    draw.rectangle((0, 240, 255, 319), fill=BAND)
    draw.text((10, 270), "ACME SHOES  www.acme.com", font=ImageFont.load_default(size=16),
              fill="white")
    return img


def test_two_colours_of_a_shoe_under_one_band_are_not_duplicates_but_a_copy_is():
    """The shoe in two colours 13 apart under one shop's band, and a copy of the first
    (halved, JPEG quality 95): their thumbnails and pHashes agree, the band pulled the two
    colours within the colour check's 12 (11.1, the copy and the second colour 11.3) and the
    three were one group; only the photo and its copy are."""
    first, second = photo(0), photo(13)
    buf = io.BytesIO()
    first.resize((128, 160), Image.Resampling.BOX).save(buf, "JPEG", quality=95)
    copy = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    images = [first, second, copy]
    thumbs = [thumbnail(img) for img in images]
    groups = find_duplicates(["first", "second", "copy"], np.eye(3, dtype=np.float32),
                             [perceptual_hash(img) for img in images], thumbs)
    assert groups == [["first", "copy"]]
    assert colour_difference(thumbs[0], thumbs[1]) > DuplicateRules().max_colour_diff


def test_a_product_reaching_an_edge_is_no_band():
    """A bag cut by the bottom edge of the photo (its body on the lower rows, white on
    either side of it, as the product of every cut-out view reaches its frame): its rows
    were taken for a band and the body's pixels, which a copy keeps within a few of each
    other, left out; the copy was compared on its thin handle alone (24 apart, 7.3 over the
    whole bag) and missed."""
    bag = np.full((16, 16, 3), 255, np.uint8)
    bag[9:, 3:13] = (40, 36, 32)  # the body, to the bottom edge
    bag[3, 5:11] = bag[3:9, 4] = bag[3:9, 11] = (40, 36, 32)  # the handle
    copy = bag.copy()
    copy[9:, 3:13] += 3  # (recompressed)
    for handle in (copy[3, 5:11], copy[3:9, 4], copy[3:9, 11]):
        handle += 24  # (a thin handle, downscaled)
    assert colour_difference(bag.tobytes(), copy.tobytes()) == approx(
        (70 * 3 + 18 * 24) / 88)
    # a banner whose shop's logo fills one end of it is still a band
    brown, darker = banded((120, 70, 40)), banded((107, 57, 27))
    for thumb in (brown, darker):
        thumb[14, 1:12:2] = BAND
        thumb[12:, 13:] = (200, 30, 30)  # (the logo, at the right end of the band)
    assert colour_difference(brown.tobytes(), darker.tobytes()) == approx(13.0)


def test_a_product_filling_the_frame_from_side_to_side_in_two_colours_is_no_band():
    """A shirt cropped at the waist fills the lower rows from side to side, in two colours
    15 apart, under the same head: its rows are a band's in both, and its pixels (15 apart,
    within the background tolerance) were left out as a shared banner; the two colours,
    compared on the head alone, were 0 apart: one product."""
    navy = np.full((16, 16, 3), 255, np.uint8)
    navy[2:8, 6:10] = (224, 172, 140)  # the head
    navy[8:] = (40, 60, 120)
    lighter = navy.copy()
    lighter[8:] = (55, 75, 135)
    assert colour_difference(navy.tobytes(), lighter.tobytes()) == approx(
        15 * CHANGED_WEIGHT)  # (128 of the 152 pixels counted changed: weighed)
    assert colour_difference(navy.tobytes(), lighter.tobytes()) > DuplicateRules(
        ).max_colour_diff
