"""A view near a tie in every way (a symmetric placeholder, a round watch face) is searched
in all 8 turns: its pairs of ways are checked once for each turn between two photos, not
once for each of the 64 pairs of ways."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from test_dedupe_views import calls_of, saved

from vitrine.dedupe import DuplicateRules, perceptual_hash, thumbnail
from vitrine.dedupe_groups import find_duplicates
from vitrine.dedupe_views import TURNS, orientations


def placeholder(side: int = 400) -> Image.Image:
    img = Image.new("RGB", (side, side), "white")
    draw = ImageDraw.Draw(img)
    lo, hi = side * 3 // 10, side * 7 // 10
    draw.rectangle((lo, lo, hi, hi), fill=(180, 180, 180))
    draw.ellipse((side * 2 // 5, side * 2 // 5, side * 3 // 5, side * 3 // 5), fill=(90, 90, 90))
    return img


def checked_ways(images, monkeypatch) -> tuple[list[list[int]], int]:
    rows = calls_of(monkeypatch, "oriented_details")
    groups = find_duplicates(list(range(len(images))), np.eye(len(images), dtype=np.float32),
                             [perceptual_hash(i) for i in images],
                             [thumbnail(i) for i in images], rules=DuplicateRules())
    return groups, sum(rows) // 2


def test_a_symmetric_placeholders_copies_are_checked_once_a_pair(monkeypatch):
    images = [saved(placeholder(), quality=60 + k) for k in range(12)]
    assert all(bin(m).count("1") == TURNS for m in orientations(
        [thumbnail(i) for i in images]).tolist())
    groups, ways = checked_ways(images, monkeypatch)
    assert groups == [list(range(12))]
    # those framed alike (whole thumbnails and pHashes agree) left to the whole photos
    # unchecked, the others once a turn between them (4,224 pairs of ways before: 64 a pair)
    assert ways <= TURNS * len(images) * (len(images) - 1) // 2


def test_symmetric_padded_copies_are_checked_once_a_turn_between_them(monkeypatch):
    base = placeholder()
    images = []
    for k in range(8):
        side = 400 + 40 * k
        canvas = Image.new("RGB", (side, side), "white")
        canvas.paste(base, ((side - 400) // 2, (side - 400) // 2))
        images.append(saved(canvas))
    groups, ways = checked_ways(images, monkeypatch)
    assert groups == [list(range(8))]
    pairs = len(images) * (len(images) - 1) // 2
    assert ways <= TURNS * pairs  # (64 × pairs before)
