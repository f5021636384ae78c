"""Duplicate grouping rules, on synthetic fingerprints and on real photos."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image
from pytest import approx

from vitrine.config import Settings
from vitrine.dedupe import DuplicateRules, hamming, perceptual_hash, thumbnail
from vitrine.dedupe_colour import CHANGED_WEIGHT
from vitrine.dedupe_groups import find_duplicates


def test_hamming():
    assert hamming("0000000000000000", "000000000000000f") == 4
    assert hamming("", "00") == 64


def thumb_of(level: int) -> bytes:
    arr = np.zeros((16, 16, 3), np.uint8)
    arr[:, : level] = 255
    return arr.tobytes()


def test_rules_combine_hashes():
    vecs = np.eye(4, dtype=np.float32)
    ph = ["0" * 16, "0" * 15 + "1", "f" * 16, "0" * 16]
    thumbs = [thumb_of(8), thumb_of(8), thumb_of(8), thumb_of(3)]
    # 0 and 1: same thumbnail, pHash 1 bit apart → duplicates
    # 2: same thumbnail but pHash far → not; 3: same pHash but other thumbnail → not
    assert find_duplicates(["a", "b", "c", "d"], vecs, ph, thumbs) == [["a", "b"]]
    # identical bytes group whatever the rest says
    assert find_duplicates(["a", "b", "c", "d"], vecs, ph, thumbs,
                           content=["x", "y", "z", "z"]) == [["a", "b"], ["c", "d"]]
    # near-identical embeddings with a roughly agreeing pHash
    close = np.stack([np.eye(4)[0], np.eye(4)[0] * 0.99 + np.eye(4)[1] * 0.1,
                      np.eye(4)[2], np.eye(4)[3]]).astype(np.float32)
    close /= np.linalg.norm(close, axis=1, keepdims=True)
    ph2 = ["0" * 16, "0" * 14 + "ff", "f" * 16, "0" * 16]
    thumbs2 = [thumb_of(1), thumb_of(5), thumb_of(9), thumb_of(13)]
    assert find_duplicates([1, 2, 3, 4], close, ph2, thumbs2, rules=DuplicateRules()) == [[1, 2]]
    # the same embeddings with pHashes that disagree (more than 2 × phash_distance bits
    # apart): two photos of one model in different colours, say → not duplicates
    assert find_duplicates([1, 2, 3, 4], close, ["0" * 16, "f" * 16, "f" * 16, "0" * 16],
                           thumbs2, rules=DuplicateRules()) == []


def test_downscaled_copy_of_a_real_photo(demo_catalog, embedder):
    photos = sorted((demo_catalog / "x_bolsa_feminina").glob("*.jpg"))[:12]
    originals = [Image.open(p).convert("RGB") for p in photos]
    small = []
    for img in originals[:4]:
        buf = io.BytesIO()
        img.resize((60, 80)).save(buf, "JPEG", quality=70)
        small.append(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    images = originals + small
    vecs = np.stack([embedder.embed_image(_png(i)) for i in images])
    groups = find_duplicates(list(range(len(images))), vecs,
                             [perceptual_hash(i) for i in images], [thumbnail(i) for i in images])
    assert sorted(groups) == [[0, 12], [1, 13], [2, 14], [3, 15]]


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_colour_difference_tells_colour_variants_apart():
    from vitrine.dedupe_colour import colour_difference

    white = np.full((16, 16, 3), 255, np.uint8)
    brown, black, nearly = white.copy(), white.copy(), white.copy()
    brown[4:12, 2:14] = (120, 70, 40)
    black[4:12, 2:14] = (30, 30, 30)
    nearly[4:12, 2:14] = (124, 66, 43)
    assert colour_difference(brown.tobytes(), nearly.tobytes()) == 4.0
    assert colour_difference(brown.tobytes(), black.tobytes()) == 90.0
    assert colour_difference(white.tobytes(), white.tobytes()) == 0.0


GREY_SHOES = ("16150", "16178", "16181", "16183")
"""Four different demo shoes (x_sapato_social_masculino) whose thumbnails and pHashes agree:
on white their colour differences are 12.55 and more; repainted onto grey, the shared
background pulled them to 3 to 4 and the rule grouped all four."""


def on_grey(img: Image.Image, grey: int) -> Image.Image:
    """``img`` with its near-white pixels (every channel from 240) set to ``grey``, as JPEG
    quality 95: a studio-grey background."""
    pixels = np.array(img.convert("RGB"))
    pixels[pixels.min(axis=2) >= 240] = grey
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=95)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def test_different_products_on_a_grey_background_are_not_duplicates(demo_catalog, embedder):
    """The colour check left out only white pixels: on a light-grey background (#E4E4E4,
    #EEEEEE) the background counted, at a difference of nothing, and four different shoes
    came out as one group. Each is grouped with its own 60×80 re-encoded copy only."""
    folder = demo_catalog / "x_sapato_social_masculino"
    for grey in (228, 238):
        originals = [on_grey(Image.open(folder / f"{name}.jpg"), grey) for name in GREY_SHOES]
        copies = []
        for k, img in enumerate(originals):
            buf = io.BytesIO()
            img.resize((60, 80), Image.Resampling.LANCZOS).save(buf, "JPEG",
                                                                 quality=(60, 75, 90)[k % 3])
            copies.append(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        images = originals + copies
        vecs = np.stack([embedder.embed_image(_png(i)) for i in images])
        groups = find_duplicates(list(range(len(images))), vecs,
                                 [perceptual_hash(i) for i in images],
                                 [thumbnail(i) for i in images])
        assert sorted(groups) == [[0, 4], [1, 5], [2, 6], [3, 7]], grey


def test_colour_difference_leaves_out_a_shared_grey_background():
    """On one grey background the colour check compares what the two photos do not share
    as background, as on white, scaled for the contrast grey leaves (255 / 228)."""
    from vitrine.dedupe_colour import colour_difference

    for background, scale in ((255, 1.0), (228, 255 / 228), (238, 255 / 238)):
        brown = np.full((16, 16, 3), background, np.uint8)
        black, nearly = brown.copy(), brown.copy()
        brown[4:12, 2:14] = (120, 70, 40)
        black[4:12, 2:14] = (30, 30, 30)
        nearly[4:12, 2:14] = (124, 66, 43)
        assert colour_difference(brown.tobytes(), nearly.tobytes()) == \
            approx(4.0 * scale, rel=1e-12)
        assert colour_difference(brown.tobytes(), black.tobytes()) == \
            approx(90.0 * scale, rel=1e-12)
    # a grey and a white background are not one: the background counts (27 apart)
    grey, white = np.full((16, 16, 3), 228, np.uint8), np.full((16, 16, 3), 255, np.uint8)
    grey[4:12, 2:14] = white[4:12, 2:14] = (120, 70, 40)
    # (27 over the 160 pixels that changed, CHANGED_WEIGHT of it above the mean over all 256)
    assert colour_difference(grey.tobytes(), white.tobytes()) == approx(27.0 * CHANGED_WEIGHT)


def test_product_filled_frames_of_different_colours_are_not_duplicates():
    """A product filling the frame has its own colour all around the border: two such
    frames of different colours (the same fabric, 30 apart) are not one background, and
    their colour difference counts every pixel, so they are no duplicates; frames of one
    colour still are."""
    from vitrine.dedupe_colour import colour_difference

    rng = np.random.default_rng(3)
    weave = rng.integers(-6, 7, (16, 16, 1))
    red = np.clip(np.array([190, 40, 40]) + weave, 0, 255).astype(np.uint8)
    darker = np.clip(np.array([160, 40, 40]) + weave, 0, 255).astype(np.uint8)
    again = np.clip(np.array([191, 40, 41]) + weave, 0, 255).astype(np.uint8)
    assert colour_difference(red.tobytes(), darker.tobytes()) == 30.0
    vecs = np.eye(3, dtype=np.float32)
    thumbs = [red.tobytes(), darker.tobytes(), again.tobytes()]
    assert find_duplicates(["red", "darker", "again"], vecs, ["0" * 16] * 3,
                           thumbs) == [["red", "again"]]
    # 13 and 14 apart, within the background tolerance: each frame's own colour was taken
    # for one background both share, nothing was left to compare, and they differed by 0
    # (helper-226); every pixel counts then, as before backgrounds were told apart
    for apart in (13, 14):
        other = np.clip(np.array([190 - apart, 40, 40]) + weave, 0, 255).astype(np.uint8)
        assert colour_difference(red.tobytes(), other.tobytes()) == float(apart)
        assert find_duplicates(["red", "other"], vecs[:2], ["0" * 16] * 2,
                               [red.tobytes(), other.tobytes()]) == []


def test_products_sharing_one_photo_are_told_apart(demo_catalog, embedder, tmp_path):
    """Two products of a CSV naming the same photo: the store's duplicate report names both
    products, not the same path twice."""
    import shutil

    from vitrine.indexer import index_catalog
    from vitrine.store import open_store

    photos = sorted((demo_catalog / "relogio_feminino").glob("*.jpg"))[:2]
    folder = tmp_path / "catalog" / "relogio_feminino"
    folder.mkdir(parents=True)
    for photo in photos:
        shutil.copyfile(photo, folder / photo.name)
    (tmp_path / "catalog" / "products.csv").write_text(
        "product_id,image\n"
        f"RED,relogio_feminino/{photos[0].name}\nBLUE,relogio_feminino/{photos[0].name}\n"
        f"OTHER,relogio_feminino/{photos[1].name}\n")
    store = open_store(tmp_path / "store", create=True)
    report = index_catalog(tmp_path / "catalog", store, embedder, show_progress=False)
    store.close()
    path = f"relogio_feminino/{photos[0].name}"
    assert report.duplicates == [[f"{path} (product BLUE)", f"{path} (product RED)"]]


def unit_pairs(cosines: list[float]) -> np.ndarray:
    """Rows 2k and 2k+1 have the given cosine; rows of different pairs are orthogonal."""
    rows = []
    for k, c in enumerate(cosines):
        a, b = np.zeros(2 * len(cosines)), np.zeros(2 * len(cosines))
        a[2 * k] = 1.0
        b[2 * k], b[2 * k + 1] = c, np.sqrt(1 - c * c)
        rows += [a, b]
    return np.asarray(rows, np.float32)


def test_the_embedding_rule_is_calibrated_above_the_closest_different_products():
    """A trained model's vectors put different products closer than pretrained ones: the rule
    goes above the closest pair that is not a known duplicate and whose pHashes agree."""
    from vitrine.dedupe import calibrated_embed_cosine

    rules = DuplicateRules()
    vecs = unit_pairs([0.998, 0.985, 0.99, 0.5])
    far = "f" * 16
    # pair 0 is a known duplicate; pair 2's pHashes disagree: neither sets the rule
    ph = ["0" * 16, "0" * 16, "0" * 16, "0" * 15 + "3", "0" * 16, far, "0" * 16, "0" * 16]
    cosine, closest = calibrated_embed_cosine(vecs, ph, [[0, 1]], rules)
    assert closest == 0.985 and cosine == 0.995
    assert find_duplicates(list(range(8)), vecs, ph, [thumb_of(i) for i in range(8)],
                           rules=DuplicateRules(embed_cosine=cosine)) == [[0, 1]]
    # nothing near the default: the default; different products at 0.998: above 1, the
    # embedding rule can never hold (only bytes and thumbnails find duplicates then)
    assert calibrated_embed_cosine(unit_pairs([0.9, 0.5]), ["0" * 16] * 4, [], rules) == (
        0.97, None)
    assert calibrated_embed_cosine(vecs, ph, [], rules) == (1.008, 0.998)
    assert find_duplicates(list(range(8)), vecs, ph, [thumb_of(i) for i in range(8)],
                           rules=DuplicateRules(embed_cosine=1.008)) == []
    # the default when nothing else says otherwise; a setting wins over the model's value
    assert DuplicateRules.from_settings(Settings()).embed_cosine == 0.97
    assert DuplicateRules.from_settings(Settings(), 0.993).embed_cosine == 0.993
    assert DuplicateRules.from_settings(Settings(dup_embed_cosine=0.96), 0.993).embed_cosine \
        == 0.96
    assert DuplicateRules.from_settings(Settings(dup_embed_cosine=" "), 0.993).embed_cosine \
        == 0.993  # VITRINE_DUP_EMBED_COSINE= (empty) leaves the model's value


def test_the_embedding_rule_leaves_out_a_trained_models_class_probabilities():
    """Two photos of one category share their probabilities: only the rest of the vector
    tells whether they are the same photo."""
    from vitrine.dedupe import calibrated_embed_cosine

    same_photo = np.array([[1.0, 0.0, 0.0, 1.0, 0.0], [1.0, 0.02, 0.0, 0.0, 1.0]])
    same_class = np.array([[0.0, 0.0, 0.15, 1.0, 0.0], [0.0, 0.15, 0.0, 1.0, 0.0]])
    vecs = np.concatenate([same_photo, same_class]).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ph, thumbs = ["0" * 16] * 4, [thumb_of(i) for i in (1, 5, 9, 13)]
    with_probs, without = DuplicateRules(), DuplicateRules(probs_tail=2)
    assert find_duplicates(list("abcd"), vecs, ph, thumbs, rules=with_probs) == [["c", "d"]]
    assert find_duplicates(list("abcd"), vecs, ph, thumbs, rules=without) == [["a", "b"]]
    assert np.allclose(np.linalg.norm(without.embedding_view(vecs), axis=1), 1.0)
    # calibrated on the same view: the same-class pair does not count as close
    assert calibrated_embed_cosine(vecs, ph, [[0, 1]], without) == (0.97, None)
    assert calibrated_embed_cosine(vecs, ph, [[0, 1]], with_probs)[1] > 0.97


def test_large_stores_find_the_same_close_pairs_through_the_inverted_file(monkeypatch):
    """Above EXACT_PAIRS_UP_TO rows the close pairs come from an inverted file of 8-bit codes:
    on clustered vectors with planted pairs on both sides of the threshold it finds exactly the
    pairs, and the float scores, of the exact search."""
    from vitrine import dedupe_search
    from vitrine.bench import ClusterModel, at_cosine

    rng = np.random.default_rng(3)
    vecs, _ = ClusterModel.create(256, 8, seed=0).sample(6000, seed=1)
    cosines = [0.965, 0.969, 0.972, 0.98, 0.99, 0.999] * 10
    for k, c in enumerate(cosines):  # row 100 + k at cosine c to row 3000 + k
        vecs[100 + k] = at_cosine(vecs[3000 + k], c, rng)
    calls = []
    real_ivf = dedupe_search._close_pairs_ivf
    monkeypatch.setattr(dedupe_search, "_close_pairs_ivf",
                        lambda *a, **kw: calls.append(1) or real_ivf(*a, **kw))
    exact = dedupe_search._close_pairs(len(vecs), vecs.__getitem__, 0.97)
    assert not calls  # 6,000 rows: the exact search
    monkeypatch.setattr(dedupe_search, "EXACT_PAIRS_UP_TO", 1000)
    approx = dedupe_search._close_pairs(len(vecs), vecs.__getitem__, 0.97)
    assert calls
    planted = {(100 + k, 3000 + k) for k, c in enumerate(cosines) if c >= 0.97}
    assert planted <= set(zip(exact[0].tolist(), exact[1].tolist(), strict=True))
    order = np.lexsort(exact[:2][::-1])
    assert np.array_equal(exact[0][order], approx[0]) and np.array_equal(exact[1][order],
                                                                         approx[1])
    assert np.allclose(exact[2][order], approx[2], atol=1e-5)
    assert approx[2].min() >= 0.97
    same = np.eye(2, dtype=np.float32)[[0, 0]]  # a tie with the threshold counts, both ways
    for exact_up_to in (0, 10):
        monkeypatch.setattr(dedupe_search, "EXACT_PAIRS_UP_TO", exact_up_to)
        assert dedupe_search._close_pairs(2, same.__getitem__, 1.0)[0].tolist() == [0]
    # and so the groups
    monkeypatch.setattr(dedupe_search, "EXACT_PAIRS_UP_TO", 1000)
    phashes = ["0" * 16] * len(vecs)
    thumbs = [t.tobytes() for t in rng.integers(0, 256, (len(vecs), 768), dtype=np.uint8)]
    thumbs[200:205] = thumbs[4000:4005]  # found by the thumbnail rule
    calls.clear()
    groups = find_duplicates(list(range(len(vecs))), vecs, phashes, thumbs)
    assert [200, 4000] in groups and [103, 3003] in groups and calls
    monkeypatch.setattr(dedupe_search, "EXACT_PAIRS_UP_TO", 100_000)
    calls.clear()
    assert groups == find_duplicates(list(range(len(vecs))), vecs, phashes, thumbs)
    assert not calls


def test_index_searches_a_large_store_through_the_inverted_file(small_catalog, embedder,
                                                                tmp_path, monkeypatch, capsys):
    """``index`` above EXACT_PAIRS_UP_TO products: the same duplicate groups as the exact
    search (downscaled copies of three photos), with a progress bar."""
    import shutil

    from vitrine import dedupe_pairs, dedupe_search
    from vitrine.dedupe_store import changed_limit
    from vitrine.index_duplicates import store_duplicates
    from vitrine.indexer import index_catalog
    from vitrine.store import open_store

    catalog = shutil.copytree(small_catalog, tmp_path / "catalog")
    folder = catalog / "relogio_feminino"
    originals = sorted(folder.glob("*.jpg"))[:3]
    for k, photo in enumerate(originals):  # not in the table: products named after the file
        Image.open(photo).convert("RGB").resize((60, 80)).save(folder / f"copy{k}.jpg",
                                                                "JPEG", quality=70)
    monkeypatch.setattr(dedupe_search, "EXACT_PAIRS_UP_TO", 10)
    monkeypatch.setattr(dedupe_pairs, "PROGRESS_FROM", 10)
    assert changed_limit(400) == 10  # (a fortieth of a store above it, not half)
    exact: list[bool | None] = []  # (the views' search: told exact or not by its caller)
    real_close = dedupe_pairs._close_pairs
    monkeypatch.setattr(dedupe_pairs, "_close_pairs", lambda *a, **k: (
        exact.append(k.get("exact")), real_close(*a, **k))[1])
    store = open_store(tmp_path / "store", create=True)
    report = index_catalog(catalog, store, embedder, show_progress=True)
    assert "Duplicates" in capsys.readouterr().err
    assert False in exact and True not in exact  # the views' too: through the inverted file
    # a re-run that changed nothing searches nothing: no bar (helper-167)
    index_catalog(catalog, store, embedder, show_progress=True)
    assert "Duplicates" not in capsys.readouterr().err
    assert sorted(report.duplicates) == sorted(
        [f"relogio_feminino/{p.name}", f"relogio_feminino/copy{k}.jpg"]
        for k, p in enumerate(originals))
    monkeypatch.setattr(dedupe_search, "EXACT_PAIRS_UP_TO", 100_000)
    store.set_duplicate_cache(b"")  # no saved pairs: the whole store searched again
    assert store_duplicates(store, catalog) == (report.duplicates, store.count(), 0)
    store.close()


def test_a_photo_gone_while_dedupe_runs_is_skipped(demo_catalog, embedder, settings, tmp_path):
    """`vitrine dedupe STORE/uploads` under a live server: a photo deleted after the folder
    was listed is skipped with its reason, not a traceback; the others are still compared.
    (One deleted after it was read is compared as it was read: its sha256 is that of the
    bytes embedded, not read a second time.)"""
    import shutil

    from vitrine.dedupe_files import dedupe_folders

    photos = sorted((demo_catalog / "relogio_feminino").glob("*.jpg"))[:2]
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, photo in (("a.jpg", photos[0]), ("b.jpg", photos[1]), ("c.jpg", photos[1])):
        shutil.copyfile(photo, folder / name)

    class DeletesTheFirst:
        def __getattr__(self, name):
            return getattr(embedder, name)

        def embed_paths(self, paths, **kwargs):
            (folder / "a.jpg").unlink()  # between the listing and the reading
            yield from embedder.embed_paths(paths, **kwargs)

    groups, skipped = dedupe_folders([folder], settings, embedder=DeletesTheFirst(),
                                     show_progress=False)
    assert skipped == [{"path": str(folder / "a.jpg"), "reason": "file not found."}]
    assert groups == [[str(folder / "b.jpg"), str(folder / "c.jpg")]]


def test_a_link_to_a_photo_is_a_photo_of_its_own_as_index_makes_it(demo_catalog, embedder,
                                                                     settings, tmp_path):
    """`dedupe` dropped a link to a photo in the folder (one real file: "0 duplicate
    groups"), where `index` of the same folder makes it a product and reports the pair
    (helper-219); a photo reached through two of the folders given still counts once."""
    from vitrine.dedupe_files import dedupe_folders
    from vitrine.indexer import index_catalog
    from vitrine.store import open_store

    photo = sorted((demo_catalog / "relogio_feminino").glob("*.jpg"))[0]
    folder = tmp_path / "photos"
    (folder / "shirts").mkdir(parents=True)
    (folder / "shirts" / "a.jpg").write_bytes(photo.read_bytes())
    (folder / "shirts" / "b_link.jpg").symlink_to("a.jpg")
    expected = [[str(folder / "shirts" / "a.jpg"), str(folder / "shirts" / "b_link.jpg")]]
    for dirs in ([folder], [folder, folder / "shirts"], [folder, folder]):
        groups, skipped = dedupe_folders(dirs, settings, embedder=embedder,
                                         show_progress=False)
        assert (groups, skipped) == (expected, []), dirs
    store = open_store(tmp_path / "store", create=True)
    report = index_catalog(folder, store, embedder, show_progress=False)
    store.close()
    assert report.duplicates == [["shirts/a.jpg", "shirts/b_link.jpg"]]


def unlistable(monkeypatch, folder: Path) -> None:
    """Make ``folder`` one that cannot be listed, as without permission (the tests may run as
    root, whom permissions do not stop)."""
    import os

    scandir = os.scandir

    def refusing(path="."):
        if Path(path) == folder:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)


def test_a_folder_dedupe_cannot_read_and_a_link_loop_are_skipped(demo_catalog, embedder,
                                                                 settings, tmp_path,
                                                                 monkeypatch):
    """A sub-folder that cannot be listed was passed over without a word (its copies never
    compared), and a symbolic link loop named like a photo was a traceback: both are
    skipped with their reasons; the other photos are still compared."""
    import shutil

    from vitrine.dedupe_files import dedupe_folders

    photo = sorted((demo_catalog / "relogio_feminino").glob("*.jpg"))[0]
    folder = tmp_path / "photos"
    (folder / "locked").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg", "locked/c.jpg"):
        shutil.copyfile(photo, folder / name)
    (folder / "x.jpg").symlink_to("y.jpg")
    (folder / "y.jpg").symlink_to("x.jpg")
    unlistable(monkeypatch, folder / "locked")
    groups, skipped = dedupe_folders([folder], settings, embedder=embedder,
                                     show_progress=False)
    assert groups == [[str(folder / "a.jpg"), str(folder / "b.jpg")]]
    assert skipped[0] == {"path": str(folder / "locked"),
                          "reason": "the folder cannot be read (Permission denied)"}
    assert [s["path"] for s in skipped[1:]] == [str(folder / "x.jpg"), str(folder / "y.jpg")]
    assert all("symbolic links" in s["reason"] for s in skipped[1:])


def test_a_folder_dedupe_does_not_enter_a_link_outside_when_told_not_to(demo_catalog,
                                                                       embedder, settings,
                                                                       tmp_path):
    """VITRINE_FOLLOW_OUTSIDE_LINKS=false: "no command enters a linked folder outside" the
    folder; `dedupe` did, without a word (helper-148). The link is skipped with its reason;
    a link inside the folder, and any link with the setting on, is followed."""
    import shutil

    from vitrine.dedupe_files import dedupe_folders

    photo = sorted((demo_catalog / "relogio_feminino").glob("*.jpg"))[0]
    folder, outside = tmp_path / "photos", tmp_path / "outside"
    (folder / "a").mkdir(parents=True)
    outside.mkdir()
    shutil.copyfile(photo, folder / "a" / "p.jpg")
    shutil.copyfile(photo, outside / "dup.jpg")
    (folder / "b").symlink_to(outside)
    (folder / "c").symlink_to(folder / "a")  # (inside: the same photo, counted once)
    closed = settings.model_copy(update={"follow_outside_links": False})
    groups, skipped = dedupe_folders([folder], closed, embedder=embedder, show_progress=False)
    assert groups == []
    assert skipped == [{"path": str(folder / "b"), "reason": f"a link to a folder outside "
                        f"{folder}, which VITRINE_FOLLOW_OUTSIDE_LINKS=false refuses: not read"}]
    # the folder it leads to given too: its photos are read there, and nothing is skipped
    groups, skipped = dedupe_folders([folder, outside], closed, embedder=embedder,
                                     show_progress=False)
    assert groups == [[str(folder / "a" / "p.jpg"), str(outside / "dup.jpg")]]
    assert skipped == []
    groups, skipped = dedupe_folders([folder], settings, embedder=embedder, show_progress=False)
    assert groups == [[str(folder / "a" / "p.jpg"), str(folder / "b" / "dup.jpg")]]
    assert skipped == []


def test_colour_difference_counts_a_product_on_only_one_side():
    """A pixel is compared when either thumbnail has the product there: a brown bag against
    an empty white photo differs by 255 - 40 on its pixels, not 0 (nothing in common)."""
    from vitrine.dedupe_colour import colour_difference

    white = np.full((16, 16, 3), 255, np.uint8)
    brown = white.copy()
    brown[4:12, 2:14] = (120, 70, 40)
    assert colour_difference(white.tobytes(), brown.tobytes()) == 215.0
    assert colour_difference(brown.tobytes(), white.tobytes()) == 215.0


def test_the_thumbnail_rule_needs_phashes_within_the_plain_distance():
    """Identical thumbnails whose pHashes are 8 bits apart (above the rule's 6, within the
    embedding rule's looser 12) are not duplicates when the embeddings disagree."""
    ph = ["0" * 16, "0" * 14 + "ff"]
    assert hamming(*ph) == 8
    vecs = np.eye(2, dtype=np.float32)
    assert find_duplicates(["a", "b"], vecs, ph, [thumb_of(8)] * 2) == []
    assert find_duplicates(["a", "b"], vecs, ["0" * 16, "0" * 15 + "f"],
                           [thumb_of(8)] * 2) == [["a", "b"]]  # 4 bits: duplicates


def test_thumbnails_are_compared_after_removing_their_brightness():
    """Two nearly white photos with different faint textures (no pixel dark enough to be a
    product) are not duplicates: thumbnails are centred before the cosine, so the shared
    white does not make every pale pair look alike."""
    from vitrine.dedupe import thumb_vectors

    assert abs(float(thumb_vectors([thumb_of(8)]).mean())) < 1e-6
    rng = np.random.default_rng(0)
    pale = [(250 + 5 * rng.integers(0, 2, (16, 16, 3))).astype(np.uint8).tobytes()
            for _ in range(2)]
    vecs = np.eye(2, dtype=np.float32)
    assert find_duplicates(["a", "b"], vecs, ["0" * 16] * 2, pale) == []
    assert find_duplicates(["a", "b"], vecs, ["0" * 16] * 2, [pale[0]] * 2) == [["a", "b"]]


def test_groups_joined_by_identical_bytes_are_ordered_by_their_first_member():
    """'a' and 'd' share their bytes, so do 'b' and 'c': the groups come in input order of
    their first member, [a, d] before [b, c]."""
    ph = ["0" * 16, "f" * 16, "0" * 8 + "f" * 8, "f" * 8 + "0" * 8]
    thumbs = [thumb_of(i) for i in (1, 5, 9, 13)]
    assert find_duplicates(list("abcd"), np.eye(4, dtype=np.float32), ph, thumbs,
                           content=["x", "y", "y", "x"]) == [["a", "d"], ["b", "c"]]


def test_groups_are_those_a_union_find_makes_of_the_pairs_and_contents(monkeypatch):
    """The groups are made of the pairs as arrays (a union-find in Python over the g²/2
    pairs of a placeholder's copies with bytes of their own took most of their search, and
    gigabytes: helper-219): the groups a union-find pair by pair makes, on random graphs
    with and without contents shared, in the same order."""
    from vitrine.dedupe_groups import duplicate_groups

    def by_hand(n, pairs, content):
        parent = list(range(n))

        def find(i):
            while parent[i] != i:
                i = parent[i]
            return i

        joins = list(pairs)
        if content is not None:
            first = {}
            joins += [(first.setdefault(c, i), i) for i, c in enumerate(content)]
        for i, j in joins:
            a, b = sorted((find(i), find(j)))
            parent[b] = a
        groups = {}
        for i in range(n):
            groups.setdefault(find(i), []).append(i)
        return [g for _, g in sorted(groups.items()) if len(g) > 1]

    rng = np.random.default_rng(3)
    for case in range(400):
        n = int(rng.integers(1, 70))
        pairs = np.sort(rng.integers(0, n, (int(rng.integers(0, 90)), 2)), axis=1)
        pairs = pairs[pairs[:, 0] < pairs[:, 1]]
        content = None if case % 2 else [str(c) for c in rng.integers(0, n, n)]
        assert duplicate_groups(n, pairs, content) == by_hand(n, pairs.tolist(), content)
    # a long chain of look-alikes, its rows in any order: a round a row took 56 s for
    # 100,000 of them shuffled (helper-225); each round halves the groups at least
    from vitrine import dedupe_groups

    rounds = []

    class Minimum:  # numpy's minimum, its hooks (one call a round) counted
        def __call__(self, *args, **kwargs):
            return np.minimum(*args, **kwargs)

        def at(self, *args):
            rounds.append(1)
            return np.minimum.at(*args)

    class Numpy:
        minimum = Minimum()

        def __getattr__(self, name):
            return getattr(np, name)

    monkeypatch.setattr(dedupe_groups, "np", Numpy())
    for order in (np.arange(20_000), np.arange(20_000)[::-1], rng.permutation(20_000)):
        chain = np.stack([order[:-1], order[1:]], axis=1)
        before = len(rounds)
        assert duplicate_groups(20_000, chain) == [list(range(20_000))]
        # (halving the groups each round: at most log2 of them, and the round that finds
        # nothing left to join)
        assert 1 <= len(rounds) - before <= math.ceil(math.log2(20_000)) + 1, len(rounds)
    assert duplicate_groups(0, np.empty((0, 2), np.int64)) == []


def test_the_stores_duplicate_groups_come_in_product_id_order(demo_catalog, embedder,
                                                               tmp_path):
    """Groups came in the store's row order: a copy added later (an id that sorts first)
    came second on the embedded store and first on Milvus, so a report diffed between runs
    or backends changed without a change."""
    import shutil

    from vitrine.indexer import index_catalog
    from vitrine.store import open_store

    photos = sorted((demo_catalog / "relogio_feminino").glob("*.jpg"))[:2]
    for photo in photos:
        (tmp_path / "catalog" / "c").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photo, tmp_path / "catalog" / "c" / photo.name)
    store = open_store(tmp_path / "store", create=True)
    assert index_catalog(tmp_path / "catalog", store, embedder,
                         show_progress=False).duplicates == []
    (tmp_path / "catalog" / "a").mkdir()
    shutil.copyfile(photos[1], tmp_path / "catalog" / "a" / "00dup.jpg")
    report = index_catalog(tmp_path / "catalog", store, embedder, show_progress=False)
    store.close()
    assert report.duplicates == [["a/00dup.jpg", f"c/{photos[1].name}"]]


def test_the_pair_checks_on_arrays_agree_with_the_rules_pair_by_pair():
    """rule_pairs checks the pairs FAISS finds as arrays (a placeholder photo saved with
    2,400 products' own EXIF gave 2.9 million pairs, checked one by one in Python: 115 s
    and 1.8 GB): the same pairs as :func:`hamming` and :func:`colour_difference` give, on
    clusters of look-alikes whose hashes and colours fall on both sides of the rules (and
    rows without a pHash)."""
    from vitrine.dedupe_colour import colour_difference
    from vitrine.dedupe_pairs import rule_pairs

    rng = np.random.default_rng(7)
    base_thumbs = rng.integers(0, 256, (12, 16, 16, 3)).astype(np.int16)
    base_thumbs[:, :5] = rng.integers(236, 256, (12, 5, 16, 3))  # margins about white: the
    # colour rule leaves out what is white (every channel from 240) in both
    thumbs, phashes, vectors = [], [], []
    for _ in range(360):
        c = int(rng.integers(12))
        t = np.clip(base_thumbs[c] + rng.integers(-14, 15, (16, 16, 3)) *
                    (rng.random() < 0.5), 0, 255).astype(np.uint8)
        thumbs.append(t.tobytes())
        flips = rng.choice(64, rng.integers(0, 14), replace=False)
        phashes.append("" if rng.random() < 0.03 else
                       f"{(c * 0x9E3779B97F4A7C15 ^ sum(1 << int(b) for b in flips)) % 2**64:016x}")
        v = np.eye(12)[c] + rng.normal(0, 0.12, 12)
        vectors.append(v / np.linalg.norm(v))
    vectors = np.array(vectors, np.float32)
    rules = DuplicateRules(thumb_cosine=0.9, embed_cosine=0.97)
    got = {tuple(p) for p in rule_pairs(vectors, phashes, thumbs, rules).tolist()}
    t = np.stack([np.frombuffer(x, np.uint8) for x in thumbs]).astype(np.float32)
    t -= t.mean(axis=1, keepdims=True)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    thumb_cos, embed_cos = t @ t.T, vectors @ vectors.T
    want = set()
    for i in range(len(thumbs)):
        for j in range(i + 1, len(thumbs)):
            distance = hamming(phashes[i], phashes[j])
            if (thumb_cos[i, j] >= rules.thumb_cosine + 1e-5 and distance <= rules.phash_distance
                    and colour_difference(thumbs[i], thumbs[j]) <= rules.max_colour_diff) or (
                    embed_cos[i, j] >= rules.embed_cosine + 1e-5
                    and distance <= 2 * rules.phash_distance):
                want.add((i, j))
    near_edge = {(i, j) for i in range(len(thumbs)) for j in range(i + 1, len(thumbs))
                 if abs(thumb_cos[i, j] - rules.thumb_cosine) <= 1e-5
                 or abs(embed_cos[i, j] - rules.embed_cosine) <= 1e-5}
    assert len(want) > 500 and want - near_edge <= got and got - want <= near_edge
    # each check as the rule's own function gives it, to the last bit
    # (and a hash that is not 16 hex digits, as a store written by hand may hold, as
    # :func:`hamming` reads it: no OverflowError)
    from vitrine import dedupe_colour
    from vitrine.dedupe import _PhashCodes
    from vitrine.dedupe_colour import _colour_differences

    i, j = rng.integers(0, len(thumbs), (2, 3000))
    each = [colour_difference(thumbs[a], thumbs[b]) for a, b in zip(i, j, strict=True)]
    assert _colour_differences(thumbs, i, j).tolist() == each
    # (a chunk at a time)
    budget, dedupe_colour.PLANES_KEPT_BYTES = dedupe_colour.PLANES_KEPT_BYTES, 0
    try:
        assert _colour_differences(thumbs, i, j).tolist() == each
    finally:
        dedupe_colour.PLANES_KEPT_BYTES = budget
    odd = [*phashes[:-3], "f" * 17, "0x" + "0" * 14, " ABCDEF0123456789 "]
    assert _PhashCodes(odd).hamming(i, j).tolist() == [
        hamming(odd[a], odd[b]) for a, b in zip(i, j, strict=True)]
    kept = {tuple(p) for p in rule_pairs(vectors, odd, thumbs, rules).tolist()}
    changed = {len(thumbs) - 3, len(thumbs) - 2, len(thumbs) - 1}
    assert {p for p in got if not changed & set(p)} == {p for p in kept if not changed & set(p)}
    # every rule said no somewhere (the cases are not all one way)
    rejected = {(i, j) for i, j in zip(*np.nonzero(np.triu(thumb_cos >= 0.9, 1)), strict=True)
                } - got
    assert any(hamming(phashes[i], phashes[j]) > rules.phash_distance for i, j in rejected)
    assert any(colour_difference(thumbs[i], thumbs[j]) > rules.max_colour_diff
               for i, j in rejected if hamming(phashes[i], phashes[j]) <= 6)


def test_the_colour_check_on_arrays_agrees_with_colour_difference_on_any_background():
    """:func:`_colour_differences` gives :func:`colour_difference` to the last bit, a chunk
    at a time or not, on thumbnails of products on white, grey and coloured backgrounds,
    with noise about the background, products touching the border or filling the frame."""
    from vitrine import dedupe_colour
    from vitrine.dedupe_colour import _colour_differences, colour_difference

    rng = np.random.default_rng(11)
    thumbs = []
    for k in range(240):
        background = [(255, 255, 255), (228, 228, 228), (238, 238, 238), (200, 180, 150),
                      (20, 20, 20), (128, 128, 128)][k % 6]
        t = np.empty((16, 16, 3), np.int16)
        t[:] = background
        t += rng.integers(-(k % 4) * 3, (k % 4) * 3 + 1, t.shape)  # noise, up to ±9
        top, left = rng.integers(0, 8, 2)
        bottom, right = rng.integers(9, 17, 2)  # to the border, at times
        spread = 20
        if k % 7 == 0:  # a product filling the frame, mostly patterned (no background)
            top, left, bottom, right, spread = 0, 0, 16, 16, 20 + 40 * (k % 2)
        t[top:bottom, left:right] = rng.integers(0, 256, 3) + rng.integers(
            -spread, spread + 1, (bottom - top, right - left, 3))
        thumbs.append(np.clip(t, 0, 255).astype(np.uint8).tobytes())
    i, j = rng.integers(0, len(thumbs), (2, 4000))
    each = [colour_difference(thumbs[a], thumbs[b]) for a, b in zip(i, j, strict=True)]
    assert _colour_differences(thumbs, i, j).tolist() == each
    # (a chunk at a time)
    budget, dedupe_colour.PLANES_KEPT_BYTES = dedupe_colour.PLANES_KEPT_BYTES, 0
    chunk, dedupe_colour.CHUNK = dedupe_colour.CHUNK, 97
    try:
        assert _colour_differences(thumbs, i, j).tolist() == each
    finally:
        dedupe_colour.PLANES_KEPT_BYTES, dedupe_colour.CHUNK = budget, chunk
    # pairs of every kind came up: on one grey background (scaled), on one white or black
    # one, on none
    planes = dedupe_colour._planes(thumbs)
    colour, has = dedupe_colour._backgrounds(planes)
    shared, scale = dedupe_colour._shared_background(colour[i], has[i], colour[j], has[j])
    assert (scale > 1).sum() > 100 and (shared & (scale == 1)).sum() > 50
    assert (~shared).sum() > 1000 and (~has).sum() > 20


def test_the_exact_pair_search_goes_a_chunk_at_a_time(monkeypatch):
    """helper-165: the exact search (up to 20,000 products) was one call of 15 to 20 s with
    no bar. It runs a chunk of rows at a time, telling the bar of each, and finds the same
    pairs."""
    from vitrine import dedupe_search

    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(300, 16)).astype(np.float32)
    vecs[150:] = vecs[:150] + rng.normal(scale=0.05, size=(150, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)

    def pairs(rows_at_a_time: int) -> tuple[set, list[int]]:
        monkeypatch.setattr(dedupe_search, "EXACT_ROWS", rows_at_a_time)
        told: list[int] = []
        rows, ids, scores = dedupe_search._close_pairs(len(vecs), lambda r: vecs[r], 0.95,
                                                       told.append)
        assert np.allclose(scores, np.einsum("ij,ij->i", vecs[rows], vecs[ids]), atol=1e-5)
        return set(zip(rows.tolist(), ids.tolist(), strict=True)), told

    whole, once = pairs(10_000)
    chunked, steps = pairs(64)
    assert len(whole) >= 150 and chunked == whole and all(i < j for i, j in whole)
    assert once == [600] and steps == [128] * 4 + [88]  # (2 × rows, as before)
    none = dedupe_search._close_pairs(0, lambda r: vecs[r], 0.95)  # (no rows: no chunk at all)
    assert [len(part) for part in none] == [0, 0, 0]


def test_the_exact_search_of_a_store_shows_its_bar_from_progress_from(small_catalog, embedder,
                                                                        tmp_path, monkeypatch,
                                                                        capsys):
    """helper-165: the exact search (up to 20,000 products) showed no bar, 15 to 20 s of
    nothing on the screen; it shows one from PROGRESS_FROM products."""
    import shutil

    from vitrine import dedupe_pairs
    from vitrine.indexer import index_catalog
    from vitrine.store import open_store

    catalog = shutil.copytree(small_catalog, tmp_path / "catalog")
    store = open_store(tmp_path / "store", create=True)
    try:
        monkeypatch.setattr(dedupe_pairs, "PROGRESS_FROM", 10_000)  # (48 products: below)
        index_catalog(catalog, store, embedder, show_progress=True)
        assert "Duplicates" not in capsys.readouterr().err
        monkeypatch.setattr(dedupe_pairs, "PROGRESS_FROM", 40)  # (still searched exactly)
        store.set_duplicate_cache(b"")  # (the whole store searched again)
        index_catalog(catalog, store, embedder, show_progress=True)
        assert "Duplicates" in capsys.readouterr().err
    finally:
        store.close()


def test_find_duplicates_reads_progress_from_where_the_store_search_does(monkeypatch, capsys):
    """``vitrine dedupe``'s search and ``index``'s read one PROGRESS_FROM (dedupe_pairs'),
    at each call: split from dedupe.py, find_duplicates kept its own copy of it."""
    from vitrine import dedupe_pairs

    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(3, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    thumbs = [rng.integers(0, 256, 768, np.uint8).tobytes() for _ in range(3)]
    monkeypatch.setattr(dedupe_pairs, "PROGRESS_FROM", 2)
    find_duplicates(["a", "b", "c"], vecs, ["0" * 16] * 3, thumbs, show_progress=True)
    assert "Duplicates" in capsys.readouterr().err


def test_a_logo_that_different_photos_share_does_not_make_them_duplicates():
    """Unchanged pixels the two photos share but not as background (a supplier's logo, a
    page's template) counted at a difference of nothing: a brown and a black shoe under one
    banner covering half the frame came out 5.5 apart, below the rule's 12. (A band along an
    edge is left out as their background: tests/test_dedupe_bands.py; a logo in a corner,
    no whole line of the frame, is weighed so.)"""
    from vitrine.dedupe_colour import colour_difference

    brown = np.full((16, 16, 3), 255, np.uint8)
    brown[0:8, 0:8] = (20, 40, 110)  # the logo
    black, nearly = brown.copy(), brown.copy()
    brown[10:14, 2:14] = (120, 70, 40)
    black[10:14, 2:14] = (100, 84, 46)  # 20 apart on 48 of the 112 pixels counted
    nearly[10:14, 2:14] = (124, 66, 43)
    assert colour_difference(brown.tobytes(), black.tobytes()) == approx(20.0 * CHANGED_WEIGHT)
    assert colour_difference(brown.tobytes(), nearly.tobytes()) == approx(4.0 * CHANGED_WEIGHT)


def test_a_stamp_on_a_copy_leaves_it_a_duplicate():
    """A copy with a shop's address or a watermark stamped on it changes a few pixels
    strongly: weighed alone (as for two products under one banner) they made it another
    product (a corner stamp on 300 demo photos: 265 copies found, then 36: helper-251). Under
    a quarter of the counted pixels changed, the mean over all of them is the difference."""
    from vitrine.dedupe_colour import colour_difference

    photo = np.full((16, 16, 3), 255, np.uint8)
    photo[4:12, 2:14] = (120, 70, 40)  # 96 pixels counted
    stamped = photo.copy()
    stamped[10, 2:8] = (200, 200, 200)  # 6 of them, 160 apart
    assert colour_difference(photo.tobytes(), stamped.tobytes()) == approx(6 * 160 / 96)
    assert DuplicateRules().max_colour_diff >= 6 * 160 / 96  # (within the rule: a copy)
