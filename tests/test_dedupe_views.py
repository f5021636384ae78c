"""The thumbnail rule's second views: a photo padded, squared onto a canvas or mirrored is a
copy of the photo it was made from."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from vitrine.dedupe import DuplicateRules, perceptual_hash, thumb_vectors, thumbnail
from vitrine.dedupe_colour import colour_difference
from vitrine.dedupe_groups import find_duplicates
from vitrine.dedupe_views import (
    DETAIL_BYTES,
    THUMB_BYTES,
    VIEW_RULE,
    VIEWED_BYTES,
    facing_left,
    orientations,
    oriented,
    trimmed,
)


def product(colour=(120, 60, 30), toe=(200, 170)) -> Image.Image:
    """A shoe-like product photo: a shape facing right, a stripe and laces, on white."""
    img = Image.new("RGB", (224, 224), "white")
    draw = ImageDraw.Draw(img)
    draw.polygon([(20, 150), (30, 80), (90, 70), (150, 110), toe, (200, 185), (20, 185)],
                 fill=colour)
    draw.rectangle((40, 160, 190, 170), fill=(230, 230, 40))
    for x in range(70, 130, 12):
        draw.line((x, 85, x + 10, 110), fill=(250, 250, 250), width=3)
    return img


def saved(img: Image.Image, quality: int = 90) -> Image.Image:
    """``img`` as a JPEG a shop uploads, decoded again."""
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def on_canvas(img: Image.Image, size: tuple[int, int], at: tuple[int, int]) -> Image.Image:
    canvas = Image.new("RGB", size, "white")
    canvas.paste(img, at)
    return canvas


def groups_of(images: list[Image.Image]) -> list[list[int]]:
    """Duplicate groups of the photos by the thumbnail rules alone (embeddings that never
    agree)."""
    vecs = np.eye(len(images), dtype=np.float32)
    return find_duplicates(list(range(len(images))), vecs,
                           [perceptual_hash(i) for i in images], [thumbnail(i) for i in images])


def test_a_photo_padded_or_squared_onto_a_white_canvas_is_a_copy():
    original = saved(product())
    squared = saved(on_canvas(original, (300, 300), (38, 38)))  # a shop's square listing
    margin = saved(on_canvas(original, (336, 280), (56, 28)))  # white added around it
    listing = saved(on_canvas(original.resize((600, 600), Image.Resampling.LANCZOS),
                              (800, 800), (100, 100)))
    other = saved(product(colour=(30, 30, 30), toe=(215, 130)))  # another shoe, padded too
    other_padded = saved(on_canvas(other, (300, 300), (38, 38)))
    assert groups_of([original, squared, margin, listing, other, other_padded]) == [
        [0, 1, 2, 3], [4, 5]]


def test_a_mirrored_copy_is_a_copy():
    original = saved(product())
    mirrored = saved(original.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    mirrored_padded = saved(on_canvas(mirrored, (300, 300), (38, 38)))
    other = saved(product(colour=(30, 30, 30), toe=(215, 130)))
    assert groups_of([original, mirrored, mirrored_padded, other]) == [[0, 1, 2]]


def test_the_thumbnail_keeps_the_whole_photos_first_and_its_products_view_after():
    """A photo's ``thumb`` begins with its whole thumbnail as before (a store's older ones are
    compared with new ones), then the product's thumbnail and pHash."""
    photo = saved(product())
    thumb = thumbnail(photo)
    assert len(thumb) == VIEWED_BYTES
    assert thumb[:THUMB_BYTES] == photo.resize((16, 16), Image.Resampling.BOX).tobytes()
    cut = trimmed(photo)
    assert cut is not None and 170 <= cut.width <= 185 and 110 <= cut.height <= 120
    assert thumb[THUMB_BYTES:2 * THUMB_BYTES] == cut.resize((16, 16),
                                                             Image.Resampling.BOX).tobytes()
    # a photo filling its frame, and a blank one, have no product to cut out: the view is
    # the whole photo
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8))
    assert trimmed(noise) is None and trimmed(Image.new("RGB", (64, 64), "white")) is None
    assert thumbnail(noise)[:THUMB_BYTES] == thumbnail(noise)[THUMB_BYTES:2 * THUMB_BYTES]
    # the whole thumbnails are what the other checks compare
    assert np.array_equal(thumb_vectors([thumb]), thumb_vectors([thumb[:THUMB_BYTES]]))
    assert colour_difference(thumb, thumbnail(saved(product(colour=(30, 30, 30))))) == \
        colour_difference(thumb[:THUMB_BYTES],
                          thumbnail(saved(product(colour=(30, 30, 30))))[:THUMB_BYTES])


def test_thumbnails_made_before_the_views_are_compared_whole():
    """A store's thumbnails made before (768 bytes) beside new ones: the whole photos'
    rules as before, no view for them."""
    original = saved(product())
    again = saved(original, quality=70)
    squared = saved(on_canvas(original, (300, 300), (38, 38)))
    images = [original, again, squared]
    thumbs = [thumbnail(i) for i in images]
    thumbs[0] = thumbs[0][:THUMB_BYTES]
    vecs = np.eye(3, dtype=np.float32)
    ph = [perceptual_hash(i) for i in images]
    assert find_duplicates([0, 1, 2], vecs, ph, thumbs) == [[0, 1, 2]]  # (2 through 1)
    assert find_duplicates([0, 2], vecs[:2], [ph[0], ph[2]], [thumbs[0], thumbs[2]]) == []


def test_a_grey_backdrop_squared_onto_white_is_trimmed_twice():
    shoe = product().crop((10, 60, 214, 195))  # (on #E4E4E4, 27 from white, one round
    grey = Image.new("RGB", (224, 224), (200, 200, 200))  # cut through grey and border)
    grey.paste(shoe, (10, 60), mask=Image.eval(shoe.convert("L"), lambda v: 255 if v < 245
                                               else 0))
    original = saved(grey)
    squared = saved(on_canvas(original, (300, 300), (38, 38)))
    assert trimmed(squared).size == trimmed(original).size
    assert groups_of([original, squared]) == [[0, 1]]


def viewed(photo: bytes, view: np.ndarray, detail: bytes = bytes(DETAIL_BYTES)) -> bytes:
    """A ``thumb`` of a whole thumbnail, a product's view and its pHash."""
    return photo + view.astype(np.uint8).tobytes() + detail + bytes([VIEW_RULE])


def test_second_views_must_agree_in_colour_and_in_their_products_phash():
    rng = np.random.default_rng(3)
    pattern = rng.integers(40, 200, (16, 16, 3))
    far = [rng.integers(0, 256, THUMB_BYTES, np.uint8).tobytes() for _ in range(2)]
    vecs = np.eye(2, dtype=np.float32)
    ph = ["0" * 16, "f" * 16]  # (the whole photos' pHashes disagree too)

    def found(shift: int = 0, bits: int = 0, rules: DuplicateRules | None = None) -> bool:
        detail = np.zeros(DETAIL_BYTES * 8, np.uint8)
        detail[:bits] = 1
        thumbs = [viewed(far[0], pattern),
                  viewed(far[1], pattern + shift, np.packbits(detail).tobytes())]
        return find_duplicates([0, 1], vecs, ph, thumbs, rules=rules) == [[0, 1]]

    assert found(11) and not found(13)  # colours: the rule's 12
    assert found(13, rules=DuplicateRules(max_colour_diff=14))
    assert found(bits=26) and not found(bits=27)  # the products' pHashes: 4 × 6 + 2 of 256
    assert found(bits=30, rules=DuplicateRules(phash_distance=7))


def test_photos_framed_alike_are_left_to_their_whole_thumbnails():
    """Two photos whose whole thumbnails and pHashes agree but whose colours differ are colour
    variants, whatever their products' views say; the views decide photos framed apart."""
    rng = np.random.default_rng(5)
    photo = rng.integers(40, 200, (16, 16, 3))
    view = rng.integers(40, 200, (16, 16, 3))
    thumbs = [viewed(photo.astype(np.uint8).tobytes(), view),
              viewed((photo + 20).astype(np.uint8).tobytes(), view)]
    vecs = np.eye(2, dtype=np.float32)
    assert find_duplicates([0, 1], vecs, ["0" * 16] * 2, thumbs) == []  # framed alike
    assert find_duplicates([0, 1], vecs, ["0" * 16, "f" * 16], thumbs) == [[0, 1]]


def test_views_are_turned_one_way():
    """A view mirrored, turned a quarter or half turn, or both, is turned back to one way."""
    rng = np.random.default_rng(1)
    view = rng.integers(0, 256, (16, 16, 3), np.uint8)
    view[:, 8:] //= 4  # darker on the right
    view[12:] //= 2  # and at the bottom
    ways = [view, view[:, ::-1], view[::-1], view[::-1, ::-1], view.transpose(1, 0, 2),
            np.rot90(view), np.rot90(view, 3), view[::-1, ::-1].transpose(1, 0, 2)]
    thumbs = [viewed(w.tobytes(), w) for w in ways]
    masks = orientations(thumbs)
    assert all(bin(m).count("1") == 1 for m in masks.tolist())  # (no tie: one way each)
    turns = np.array([m.bit_length() - 1 for m in masks.tolist()])
    turned = oriented(thumbs, turns)
    assert all(np.array_equal(t, turned[0]) for t in turned)
    assert len(set(turns.tolist())) == 8
    assert facing_left(view[:, ::-1].reshape(1, -1)).tolist() == [True]


def test_a_split_of_photos_with_and_without_views_saves_its_fingerprints(tmp_path):
    """``vitrine train`` saves the whole thumbnails of the photos it trained on, whatever
    else their ``thumb`` holds (a store's older thumbnails are 768 bytes)."""
    from vitrine.split import Split, load_fingerprints, save_fingerprints

    split = Split({"a": "train", "b": "val", "c": "test"})
    photo = thumbnail(saved(product()))
    thumb_of = {"a": photo, "b": photo[:THUMB_BYTES], "c": photo}
    save_fingerprints(tmp_path, split, {"a": "0" * 16, "b": "f" * 16, "c": "0" * 16},
                      thumb_of)
    assert load_fingerprints(tmp_path, split) == (["0" * 16, "f" * 16],
                                                  [photo[:THUMB_BYTES]] * 2)


def test_a_store_search_of_the_changed_products_finds_their_views_pairs():
    """The search of the products changed since a store's last (``among``) finds the pairs
    of their views that a full search finds."""
    from vitrine.dedupe_pairs import rule_pairs

    original = saved(product())
    images = [original, saved(product(colour=(30, 30, 30), toe=(215, 130))),
              saved(on_canvas(original, (300, 300), (38, 38))),
              saved(original.transpose(Image.Transpose.FLIP_LEFT_RIGHT))]
    vecs = np.eye(4, dtype=np.float32)
    ph, thumbs = [perceptual_hash(i) for i in images], [thumbnail(i) for i in images]
    full = {tuple(p) for p in rule_pairs(vecs, ph, thumbs, DuplicateRules()).tolist()}
    assert full == {(0, 2), (0, 3), (2, 3)}
    for changed in ([2], [3], [1]):
        assert {tuple(p) for p in rule_pairs(vecs, ph, thumbs, DuplicateRules(),
                                             among=np.array(changed)).tolist()} == {
            p for p in full if set(p) & set(changed)}


def test_only_the_photos_with_a_view_are_searched_by_their_views(monkeypatch):
    """A store's thumbnails made before the views (768 bytes) have none, and are left out of
    the views' search: searched as zero rows, the inverted file put them all in one cell that
    each of them scanned whole (25,000 of them beside 100 views: 45 s, 50,000: 205 s)."""
    from vitrine import dedupe_pairs
    from vitrine.dedupe_pairs import rule_pairs

    original = saved(product())
    images = [original, saved(on_canvas(original, (300, 300), (38, 38))),
              saved(original.transpose(Image.Transpose.FLIP_LEFT_RIGHT))]
    rng = np.random.default_rng(0)
    thumbs = [thumbnail(i) for i in images] + [
        t.tobytes() for t in rng.integers(0, 256, (40, THUMB_BYTES), np.uint8)]
    ph = [perceptual_hash(i) for i in images] + [f"{x:016x}" for x in rng.integers(0, 2**63, 40)]
    vecs = np.eye(len(thumbs), dtype=np.float32)
    searched = []
    close_pairs = dedupe_pairs._close_pairs

    def spy(n, *args, **kwargs):
        searched.append(n)
        return close_pairs(n, *args, **kwargs)

    monkeypatch.setattr(dedupe_pairs, "_close_pairs", spy)
    steps = []
    pairs = rule_pairs(vecs, ph, thumbs, DuplicateRules(), steps.append)
    assert {tuple(p) for p in pairs.tolist()} == {(0, 1), (0, 2), (1, 2)}
    assert searched[-1] == 3 and sum(steps) == dedupe_pairs.SEARCH_STEPS * len(thumbs)
    for among in ([1], [1, 7], [7]):
        pairs = rule_pairs(vecs, ph, thumbs, DuplicateRules(), among=np.array(among))
        assert {tuple(p) for p in pairs.tolist()} == {
            p for p in {(0, 1), (0, 2), (1, 2)} if set(p) & set(among)}


def calls_of(monkeypatch, name: str) -> list[int]:
    """How many thumbnails each call of ``vitrine.dedupe_pairs``'s ``name`` (a function of
    thumbnails and turns) is given from now on."""
    from vitrine import dedupe_pairs

    sizes, real = [], getattr(dedupe_pairs, name)

    def spy(thumbs, turns):
        sizes.append(len(thumbs))
        return real(thumbs, turns)

    monkeypatch.setattr(dedupe_pairs, name, spy)
    return sizes


def test_the_colour_check_makes_the_views_a_chunk_at_a_time(monkeypatch):
    """The views' colour check made each photo's view again at each of its three reads, one
    photo at a time (a fifth of a search of 4,000 demo photos with three padded copies
    each): the views are made a chunk of photos at a time."""
    original = saved(product())
    images = [original] + [saved(on_canvas(original, (224 + 2 * m, 224 + 2 * m), (m, m)))
                           for m in (12, 20, 30, 38, 48, 56, 80)]
    made = calls_of(monkeypatch, "oriented")
    assert groups_of(images) == [list(range(len(images)))]
    assert len(made) < len(images)


def test_index_makes_the_stores_thumbnails_without_views_again(small_catalog, embedder,
                                                               tmp_path):
    """A store an older Vitrine indexed kept its 768-byte thumbnails (``index`` does not
    read an unchanged photo again): padded and mirrored copies of those photos were never
    found, and the run said nothing of it (helper-285). ``index`` makes them again from the
    photos (``vitrine.thumb_upgrade``, tests/test_thumb_upgrade.py) and says so."""
    import shutil
    import sqlite3

    from vitrine.display import index_lines
    from vitrine.indexer import index_catalog
    from vitrine.store import open_store

    catalog = shutil.copytree(small_catalog, tmp_path / "catalog")
    store = open_store(tmp_path / "store", create=True)
    report = index_catalog(catalog, store, embedder)
    store.close()
    assert report.duplicates_without_views == report.thumbnails_upgraded == 0
    assert not any("older Vitrine" in line for line in index_lines(report, 10_000, "s"))
    with sqlite3.connect(tmp_path / "store" / "vitrine.sqlite") as db:  # (as it wrote them)
        db.execute(f"UPDATE products SET thumb = substr(thumb, 1, {THUMB_BYTES})")
    store = open_store(tmp_path / "store")
    report = index_catalog(catalog, store, embedder)
    store.close()
    assert report.unchanged == 48 and report.duplicates_without_views == 0
    assert report.as_dict()["thumbnails_upgraded"] == 48
    said = " ".join(index_lines(report, 10_000, "s"))
    assert "Thumbnails of 48 products made again from their photos" in said
    assert "kept thumbnails an older Vitrine made" not in said
