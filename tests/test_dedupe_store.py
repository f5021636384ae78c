"""The store keeps the duplicate pairs of its last search; the next search compares only the
products changed since with the whole store, and finds what a full search finds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vitrine import dedupe_store
from vitrine.bench import ClusterModel, at_cosine
from vitrine.catalog import Product
from vitrine.dedupe import DuplicateRules
from vitrine.dedupe_pairs import rule_pairs
from vitrine.embed import ModelManifest
from vitrine.store import open_store
from vitrine.store.base import Record

DIM = 32


def fingerprints(n: int, seed: int) -> tuple[np.ndarray, list[str], list[bytes]]:
    """Clustered unit vectors, pHashes and thumbnails of ``n`` distinct photos, with copies
    planted: rows 10–14 are embedding copies of rows 50–54 (cosine 0.975–0.999, same pHash,
    another thumbnail), rows 20–24 thumbnail copies of rows 60–64 (another vector)."""
    rng = np.random.default_rng(seed)
    vecs, _ = ClusterModel.create(DIM, 6, seed=0, rank=16).sample(n, seed=seed)
    phashes = [f"{x:016x}" for x in rng.integers(0, 2**63, n)]
    thumbs = [t.tobytes() for t in rng.integers(0, 256, (n, 768), dtype=np.uint8)]
    for k, cosine in enumerate((0.975, 0.98, 0.99, 0.995, 0.999)):
        vecs[10 + k] = at_cosine(vecs[50 + k], cosine, rng)
        phashes[10 + k] = phashes[50 + k]
        thumbs[20 + k], phashes[20 + k] = thumbs[60 + k], phashes[60 + k]
    return vecs, phashes, thumbs


def as_set(pairs: np.ndarray) -> set[tuple[int, int]]:
    return set(map(tuple, pairs.tolist()))


def test_the_pairs_of_some_rows_are_those_of_the_full_search_that_touch_them():
    vecs, phashes, thumbs = fingerprints(3000, seed=1)
    # close pairs by chance too at 0.95, with the pHash check as loose as it goes
    rules = DuplicateRules(embed_cosine=0.95, phash_distance=32)
    full = as_set(rule_pairs(vecs, phashes, thumbs, rules))
    assert {(10 + k, 50 + k) for k in range(5)} | {(20 + k, 60 + k) for k in range(5)} <= full
    among = np.array([10, 20, 60, 5, 116, 2999, 10])  # listed twice: searched once
    touching = {p for p in full if set(p) & set(among.tolist())}
    assert len(touching) >= 6 and len(full) > 2 * len(touching)
    assert as_set(rule_pairs(vecs, phashes, thumbs, rules, among=among)) == touching
    assert rule_pairs(vecs, phashes, thumbs, rules, among=np.array([], np.int64)).size == 0
    # a copy of the row itself is a pair; a row is never paired with itself
    vecs[999], phashes[999], thumbs[999] = vecs[998], phashes[998], thumbs[998]
    assert as_set(rule_pairs(vecs, phashes, thumbs, rules, among=np.array([999]))) == {
        (998, 999)}


def records(ids, vecs, phashes, thumbs, sha: str = "") -> list[Record]:
    return [Record(Product(pid, Path(f"/photos/{pid}.jpg")), f"sha-{pid}{sha}", phashes[i],
                   thumbs[i], vecs[i]) for i, pid in enumerate(ids)]


@pytest.fixture
def store(tmp_path):
    s = open_store(tmp_path / "store", create=True)
    s.set_manifest(ModelManifest("test", "0" * 64, {"size": 8, "resize": "crop"}, DIM))
    yield s
    s.close()


def search(store, rules) -> tuple[set[tuple[str, str]], int, set]:
    """The pairs (as product ids) the store's search returns, how many products it compared
    with the store, and the pairs of a full search that leaves the store's cache alone."""
    ids, vecs = store.all_vectors()
    rows = {p.product_id: p for p in store.list_products(limit=10_000)}
    phashes, thumbs = [rows[i].phash for i in ids], [rows[i].thumb for i in ids]
    found, compared = dedupe_store.store_pairs(
        store, ids, [rows[i].content_sha256 for i in ids], vecs, phashes, thumbs, rules)
    full = rule_pairs(vecs, phashes, thumbs, rules)

    def named(pairs):
        return {tuple(sorted((ids[i], ids[j]))) for i, j in pairs.tolist()}

    return named(found), compared, named(full)


def test_a_store_compares_only_the_products_changed_since_its_last_search(store):
    vecs, phashes, thumbs = fingerprints(400, seed=2)
    ids = [f"p{i:03d}" for i in range(400)]
    store.upsert(records(ids, vecs, phashes, thumbs))
    rules = DuplicateRules()

    def check(expect_compared: int) -> set[tuple[str, str]]:
        pairs, compared, full = search(store, rules)
        assert compared == expect_compared
        assert pairs == full
        return pairs

    first = check(400)
    planted = {("p010", "p050"), ("p024", "p064")}
    assert planted <= first
    cache = store.duplicate_cache()
    assert check(0) == first  # nothing changed: every pair kept, nothing compared or saved
    assert store.duplicate_cache() == cache
    # a new copy of p100 and a metadata edit (same photo: not compared again)
    store.upsert(records(["zcopy"], vecs[[100]], [phashes[100]], [thumbs[100]]))
    store.update_metadata([Product("p200", Path("/photos/p200.jpg"), name="Renamed")])
    assert check(1) == first | {("p100", "zcopy")}
    # p050 replaced by another photo: its pair goes; p010 deleted: nothing to compare
    store.upsert(records(["p050"], vecs[[301]], [phashes[301]],
                         [thumbs[301]], sha="-new"))
    assert ("p010", "p050") not in check(1)
    store.delete(["p024"])
    assert ("p024", "p064") not in check(0)
    # other rules, a damaged cache, or too many changes: the whole store again
    assert search(store, DuplicateRules(embed_cosine=0.99))[1] == store.count()
    store.set_duplicate_cache(b"not a cache")
    check(store.count())
    # p011 embedded again from the same photo (another engine): its pairs are searched again
    assert ("p011", "p051") in check(0)
    moved = at_cosine(vecs[51], 0.5, np.random.default_rng(0))
    store.upsert(records(["p011"], moved[None], [phashes[11]], [thumbs[11]]))
    assert ("p011", "p051") not in check(1)
    many = [f"p{i:03d}" for i in range(100, 302)]  # more than half of the store
    store.upsert(records(many, vecs[100:302], phashes[100:302], thumbs[100:302], sha="-2"))
    check(store.count())


def test_products_sharing_a_photo_are_searched_as_one(store):
    """Products sharing one photo file (a placeholder, every size of a shirt) were each
    searched and paired with each other: g²/2 pairs checked in Python and saved in the
    store (2,000 products of one photo: a minute and 0.8 GB, benchmarks/shared_photo_dedupe.py).
    One of them stands for
    the photo; the groups are those of the full search, also after it is deleted."""
    from vitrine.dedupe_groups import duplicate_groups

    vecs, phashes, thumbs = fingerprints(400, seed=3)
    ids = [f"p{i:03d}" for i in range(400)]
    shared = [f"shirt{k:03d}" for k in range(300)]  # one photo, p100's copy as well
    store.upsert(records(ids, vecs, phashes, thumbs)
                 + [Record(Product(pid, Path("/photos/shirt.jpg")), "sha-shirt", phashes[7],
                           thumbs[7], vecs[7]) for pid in shared])
    rules = DuplicateRules()

    def groups() -> tuple[set[frozenset[str]], int]:
        all_ids, all_vecs = store.all_vectors()
        rows = {p.product_id: p for p in store.list_products(limit=10_000)}
        shas = [rows[i].content_sha256 for i in all_ids]
        phash, thumb = [rows[i].phash for i in all_ids], [rows[i].thumb for i in all_ids]
        found, compared = dedupe_store.store_pairs(store, all_ids, shas, all_vecs, phash,
                                                   thumb, rules)
        full = rule_pairs(all_vecs, phash, thumb, rules)
        named = [{frozenset(all_ids[i] for i in g) for g in duplicate_groups(
            len(all_ids), pairs, shas)} for pairs in (found, full)]
        assert named[0] == named[1]
        return named[0], compared

    first, compared = groups()
    assert compared == 700 and frozenset(["p007", *shared]) in first
    saved = dedupe_store.decode(store.duplicate_cache(), dedupe_store.fingerprint(
        rules, store.manifest().as_dict()))
    assert len(saved[1]) < 20  # the ten planted pairs and p007's, not 300²/2
    store.delete(["p007", shared[0]])  # the photo's first product, and the copy it matched
    again, compared = groups()
    assert frozenset(shared[1:]) in again and compared == 299


def test_a_thumbnail_made_again_with_its_view_is_searched_again(store):
    """A product stored before the second views (a 768-byte thumbnail) and stored again from
    the same photo (the same sha256 and vector: posted again through the API) has a view now:
    its pairs are searched again, as a full search finds them."""
    from test_dedupe_views import on_canvas, product, saved

    from vitrine.dedupe import perceptual_hash, thumbnail
    from vitrine.dedupe_views import THUMB_BYTES

    original = saved(product())
    images = [original, saved(on_canvas(original, (300, 300), (38, 38)))]
    phashes, thumbs = [perceptual_hash(i) for i in images], [thumbnail(i) for i in images]
    vecs = np.eye(2, DIM, dtype=np.float32)
    store.upsert(records(["a", "b"], vecs, phashes, [t[:THUMB_BYTES] for t in thumbs]))
    assert search(store, DuplicateRules())[0] == set()  # (no views: the whole photos differ)
    store.upsert(records(["a", "b"], vecs, phashes, thumbs))  # the same photos, made again
    pairs, _, full = search(store, DuplicateRules())
    assert pairs == full == {("a", "b")}


def test_a_search_that_finds_nothing_changed_reads_no_vectors(store, monkeypatch):
    """An unchanged re-run (a nightly ``vitrine index``) held every vector of the store to
    find that no product changed since the last search: 333 MB of its 754 MB peak at 65,024
    products (benchmarks/index_memory.py). The checksums are read a page at a time; the
    vectors only when there is something to search, and the groups are those found before."""
    from vitrine.index_duplicates import store_duplicates

    vecs, phashes, thumbs = fingerprints(400, seed=4)
    ids = [f"p{i:03d}" for i in range(400)]
    store.upsert(records(ids, vecs, phashes, thumbs))
    first = store_duplicates(store, Path("/photos"))
    assert first[1] == 400 and ["p010.jpg", "p050.jpg"] in first[0]
    read = []
    whole = type(store).all_vectors
    monkeypatch.setattr(type(store), "all_vectors", lambda s: read.append(1) or whole(s))
    assert store_duplicates(store, Path("/photos")) == (first[0], 0, first[2])
    assert read == []  # nothing changed: no vector read
    store.upsert(records(["zcopy"], vecs[[100]], [phashes[100]], [thumbs[100]]))
    groups, compared, _ = store_duplicates(store, Path("/photos"))
    assert read == [1] and compared == 1 and ["p100.jpg", "zcopy.jpg"] in groups


def test_the_checksum_rows_patched_in_the_module_are_the_default(tmp_path, monkeypatch):
    """``store_checksums(batch=CHECKSUM_ROWS)`` took the constant as the module was imported:
    patching ``vitrine.dedupe_store.CHECKSUM_ROWS`` (the vectors a pass holds) changed
    nothing."""
    vecs, phashes, thumbs = fingerprints(70, seed=3)
    store = open_store(tmp_path / "s", create=True)
    store.set_manifest(ModelManifest("test", "0" * 64, {"size": 8, "resize": "crop"}, DIM))
    store.upsert([Record(Product(f"p{i}", Path(f"/photos/p{i}.jpg")), f"sha{i}", phashes[i],
                         thumbs[i], vecs[i]) for i in range(10)])
    monkeypatch.setattr(dedupe_store, "CHECKSUM_ROWS", 4)
    pages, read = [], store.iter_products

    def paged(batch, vectors=True):
        for page in read(batch, vectors):
            pages.append(len(page))
            yield page

    store.iter_products = paged
    ids, checksums = dedupe_store.store_checksums(store)
    assert pages == [4, 4, 2] and len(ids) == len(checksums) == 10
    store.close()


def test_a_callers_array_is_never_reordered_by_the_search(store, monkeypatch):
    """The inverted file's training sample is swapped to the front of the search's own array
    for a while (dedupe_search._in_front); store_pairs handed it the caller's array as its
    own: another thread reading it saw other rows, and an interrupt inside a swap would
    lose a row of it. Only an array read for the search is reordered; the pairs are the
    same."""
    from vitrine import dedupe_search

    monkeypatch.setattr(dedupe_search, "EXACT_PAIRS_UP_TO", 50)  # (the inverted file)
    vecs, phashes, thumbs = fingerprints(400, seed=3)
    ids = [f"p{i:03d}" for i in range(400)]
    shas = [f"sha-{pid}" for pid in ids]
    swapped = []
    real = dedupe_search._in_front

    def spy(array, rows):
        swapped.append(array is vecs)
        return real(array, rows)

    monkeypatch.setattr(dedupe_search, "_in_front", spy)
    lent, _ = dedupe_store.store_pairs(store, ids, shas, vecs, phashes, thumbs,
                                       DuplicateRules())
    assert not any(swapped)
    store.set_duplicate_cache(b"")
    read, _ = dedupe_store.store_pairs(store, ids, shas, lambda: vecs.copy(), phashes,
                                       thumbs, DuplicateRules())
    assert swapped == [False]  # (an array read for the search: its sample, not copied)
    assert as_set(lent) == as_set(read)
