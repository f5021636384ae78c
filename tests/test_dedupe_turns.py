"""A copy of a catalogue photo turned a quarter or half turn (a phone's photo whose EXIF
orientation was stripped, a shop's sideways upload) is a duplicate of it: the second views
are turned one way among the turns and flips of a square (``vitrine.dedupe_views``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from test_dedupe_views import groups_of, on_canvas, saved

TURNS = (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)


def demo(demo_catalog: Path, name: str) -> Image.Image:
    return Image.open(demo_catalog / name).convert("RGB")


def test_a_demo_photo_turned_a_quarter_or_half_turn_is_a_copy(demo_catalog):
    """The first photo of each demo category and its copies turned 90, 180 and 270 degrees
    (saved again as JPEG): one group each, none across products."""
    images = []
    for folder in sorted(p for p in demo_catalog.iterdir() if p.is_dir()):
        original = saved(Image.open(sorted(folder.glob("*.jpg"))[0]).convert("RGB"))
        images += [original, *(saved(original.transpose(turn)) for turn in TURNS)]
    assert groups_of(images) == [list(range(k, k + 4)) for k in range(0, len(images), 4)]


def test_turned_look_alikes_are_not_copies(demo_catalog):
    """Ten black dress shoes of the demo catalogue, each beside a copy of it turned (90, 180
    and 270 degrees in turn), padded onto a white square too for one in three: each is
    grouped with its own copy alone. And the two black Rockport shoes whose 16×16 views
    agree (a slip-on and a wingtip), one turned: apart."""
    photos = sorted((demo_catalog / "x_sapato_social_masculino").glob("*.jpg"))[:10]
    images = []
    for k, photo in enumerate(photos):
        original = saved(Image.open(photo).convert("RGB"))
        copy = original.transpose(TURNS[k % 3])
        if k % 3 == 2:
            side = round(max(copy.size) * 1.1)
            copy = on_canvas(copy, (side, side), ((side - copy.width) // 2,
                                                  (side - copy.height) // 2))
        images += [original, saved(copy)]
    assert groups_of(images) == [[k, k + 1] for k in range(0, len(images), 2)]
    slip_on = saved(demo(demo_catalog, "mocassim_masculino/10151.jpg"))
    wingtip = saved(demo(demo_catalog, "x_sapato_social_masculino/10128.jpg"))
    assert groups_of([slip_on, wingtip, saved(wingtip.transpose(TURNS[0])),
                      saved(slip_on.transpose(TURNS[2]))]) == [[0, 3], [1, 2]]


def test_copies_whose_signs_near_zero_turned_are_copies(demo_catalog):
    """A watch of the demo catalogue mirrored, and a T-shirt squared onto a white canvas 10 %
    larger than its longer side (both saved at JPEG quality 90, as
    ``benchmarks/dedupe_turn_margin.py`` makes them): their products' pHashes lie 26 and 25
    bits from their originals', the signs of frequencies near zero turned by the copy's noise
    (``dedupe_pairs.DETAIL_FLIPS``; 24 at most before, and they were not found). The two black
    Rockport shoes, 32 bits apart and more with their copies, stay apart."""
    watch = demo(demo_catalog, "relogio_masculino/33914.jpg")
    shirt = demo(demo_catalog, "x_camiseta_masculina/19112.jpg")
    side = round(max(shirt.size) * 1.1)
    squared = on_canvas(shirt, (side, side), ((side - shirt.width) // 2,
                                              (side - shirt.height) // 2))
    assert groups_of([watch, saved(watch.transpose(Image.Transpose.FLIP_LEFT_RIGHT))]) == [[0, 1]]
    assert groups_of([shirt, saved(squared)]) == [[0, 1]]
    slip_on = demo(demo_catalog, "mocassim_masculino/10151.jpg")
    wingtip = demo(demo_catalog, "x_sapato_social_masculino/10128.jpg")
    assert groups_of([slip_on, wingtip, saved(wingtip.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
                      saved(slip_on.transpose(Image.Transpose.FLIP_LEFT_RIGHT))]
                     ) == [[0, 3], [1, 2]]


def test_a_view_near_a_tie_between_two_ways_is_compared_in_both(demo_catalog, monkeypatch):
    """A handbag whose view weighs almost as much on the right as on the left (-0.004, as a
    correlation with the DCT's first horizontal frequency): its copies turned a quarter or
    half turn, or mirrored, weigh a little more on the right again (-0.006 to -0.008 once
    turned back), and turned one way each (no ``TIE_MARGIN``) they were not found."""
    from vitrine import dedupe_views

    original = saved(demo(demo_catalog, "x_bolsa_feminina/10245.jpg"))
    copies = [saved(original.transpose(turn)) for turn in (
        Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.FLIP_LEFT_RIGHT)]
    masks = dedupe_views.orientations([dedupe_views.fingerprint(i) for i in [original, *copies]])
    assert all(bin(m).count("1") == 2 for m in masks.tolist())  # (two ways each)
    assert all(groups_of([original, copy]) == [[0, 1]] for copy in copies)
    monkeypatch.setattr(dedupe_views, "TIE_MARGIN", 0.0)
    assert all(groups_of([original, copy]) == [] for copy in copies)


def test_views_of_the_older_mirror_rule_are_compared_with_each_other_alone():
    """A store's views an older Vitrine made (1,568 bytes: mirrored only, the pHash above its
    median, made facing one way) find their mirrored copies among themselves as they did,
    and are not compared with views of this rule (their pHashes were made otherwise)."""
    from test_dedupe_views import product

    from vitrine.dedupe import perceptual_hash, thumbnail
    from vitrine.dedupe_groups import find_duplicates
    from vitrine.dedupe_views import MIRRORED_BYTES

    original = saved(product())
    mirrored = saved(original.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    turned = saved(original.transpose(Image.Transpose.ROTATE_90))
    images = [original, mirrored, turned]
    ph = [perceptual_hash(i) for i in images]
    vecs = np.eye(3, dtype=np.float32)
    older = [mirror_rule_thumb(i) for i in images]
    assert all(len(t) == MIRRORED_BYTES for t in older)
    assert find_duplicates([0, 1, 2], vecs, ph, older) == [[0, 1]]
    assert find_duplicates([0, 1, 2], vecs, ph, [thumbnail(i) for i in images]) == [[0, 1, 2]]
    assert find_duplicates([0, 1], vecs[:2], ph[:2], [older[0], thumbnail(mirrored)]) == []


def mirror_rule_thumb(img: Image.Image) -> bytes:
    """The ``thumb`` a Vitrine before turned views made of ``img`` (1,568 bytes): the whole
    thumbnail, the product's view as the photo has it, and the product's 256-bit pHash (each
    DCT frequency above their median) mirrored where the view faces left."""
    from vitrine.dedupe_views import _DETAIL_DCT, DETAIL_SIZE, THUMB_SIZE, facing_left, trimmed

    product = trimmed(img) or img
    view = product.resize((THUMB_SIZE, THUMB_SIZE), Image.Resampling.BOX).tobytes()
    grey = np.asarray(product.resize((4 * DETAIL_SIZE, 4 * DETAIL_SIZE),
                                     Image.Resampling.LANCZOS, reducing_gap=3.0).convert("L"),
                      np.float32)
    if facing_left(np.frombuffer(view, np.uint8)[None])[0]:
        grey = grey[:, ::-1]
    coefficients = _DETAIL_DCT @ grey @ _DETAIL_DCT.T
    bits = coefficients > np.median(coefficients)
    return (img.resize((THUMB_SIZE, THUMB_SIZE), Image.Resampling.BOX).tobytes() + view
            + np.packbits(bits.reshape(-1)).tobytes())
