"""One product a photo in other products' lists (vitrine.copies.one_a_photo): a product listed
once a size (S to XXL, shoe sizes 36 to 45) is 5 to 12 products of one real photo, too few to
be a placeholder (VITRINE_PLACEHOLDER_MIN, 20); its sizes took most places of a list near
it. Each list shows one of them, the best scored, and is filled to k from deeper results,
on both stores, in `similar`, photo searches and `related`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import IN_CI

from vitrine.catalog import Product
from vitrine.config import Settings
from vitrine.copies import Copies, one_a_photo, similar_without_copies
from vitrine.dedupe_store import encode
from vitrine.manifest import ModelManifest
from vitrine.recommend import Recommender, merge_matches
from vitrine.related import write_related
from vitrine.store.base import Match, Record, StoredProduct

DIM = 16
ORDINARY, SIZES, STAMPED = 60, 15, 3
"""Ordinary products, products of one real photo (one a size), and products of a photo's
copies (other bytes `index` grouped), the sizes near p000 and the copies near p001."""


def _catalogue():
    rng = np.random.default_rng(7)
    n = ORDINARY + SIZES + STAMPED
    vecs = rng.normal(size=(n, DIM)).astype(np.float32)
    vecs[ORDINARY:ORDINARY + SIZES] = vecs[0] + 0.3 * rng.normal(size=DIM)  # (one photo)
    vecs[ORDINARY + SIZES:] = vecs[1] + 0.3 * rng.normal(size=DIM) \
        + 0.02 * rng.normal(size=(STAMPED, DIM))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    shas = [f"{i:064x}" if i < ORDINARY or i >= ORDINARY + SIZES else "5" * 64
            for i in range(n)]
    cats = ["a" if i % 2 else "b" for i in range(n)]  # (sizes of both: the filter still holds)
    return vecs, shas, cats


def _photo(i: int) -> str:
    """The photo group of product ``i``, as the expected lists name it."""
    return "SIZES" if ORDINARY <= i < ORDINARY + SIZES else \
        "STAMPED" if i >= ORDINARY + SIZES else f"p{i:03d}"


def _expected(vecs, cats, query: np.ndarray, k: int, skip: int | None = None,
              category: str | None = None) -> list[str]:
    """The ``k`` best photos, each once, by brute force."""
    scores = vecs @ query
    shown, own = [], None if skip is None else _photo(skip)
    for i in np.argsort(-scores, kind="stable"):
        photo = _photo(int(i))
        if photo == own or photo in shown or (category and cats[i] != category):
            continue
        shown.append(photo)
    return shown[:k]


def _shown(matches: list[Match]) -> list[str]:
    return [_photo(int(m.product.product_id[1:])) for m in matches]


def _fill(store, vecs, shas, cats) -> None:
    store.set_manifest(ModelManifest("test", "0" * 64, {}, DIM))
    store.upsert([Record(Product(f"p{i:03d}", Path(f"/photos/p{i}.jpg"), category=cats[i],
                                 name=f"Produto {i}"), shas[i], "0" * 16, b"\0" * 768, vecs[i])
                  for i in range(len(vecs))])
    grouped = shas[ORDINARY + SIZES:]  # (as `index` saves them: the copies, the counts)
    store.set_duplicate_cache(encode(
        "key", np.arange(len(grouped), dtype=np.uint64),
        np.array([[0, j] for j in range(1, len(grouped))]), grouped,
        (np.array([b"5" * 64], dtype="S64"), np.array([SIZES]))))


def _stores(tmp_path):
    from vitrine.ann import IndexConfig
    from vitrine.store import open_store
    from vitrine.store.embedded import EmbeddedStore

    stores = {}
    for kind in ("flat", "hnsw"):
        store = stores[kind] = EmbeddedStore(tmp_path / kind, create=True,
                                             index_config=IndexConfig.defaults(kind=kind))
        store.lock_for_writing()
    try:
        import milvus_lite  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the extra
        if IN_CI:
            raise
    else:
        stores["milvus"] = open_store(f"milvus-lite://{tmp_path}/m.db", create=True)
    return stores


def test_a_list_shows_one_product_of_a_photo_its_sizes_share_on_every_store(tmp_path):
    """15 products of one real photo (sizes) sit nearest p000: its similar products, a photo
    search of it and `related` held up to k of them. Now one, the rest of the list the exact
    best of the other photos; the category filter still holds; a size's own list has none
    of its sizes; the copies' group (other bytes) is shown once too; the sizes are no
    placeholder under the default (20) and are recommended."""
    vecs, shas, cats = _catalogue()
    stores = _stores(tmp_path)
    try:
        for name, store in stores.items():
            _fill(store, vecs, shas, cats)
            if hasattr(store, "flush"):
                store.flush()
            rec = Recommender(store, Settings())
            assert rec.placeholders().products == 0  # (15 < 20: shown, once)
            for k in (3, 10, 30):
                for i in (0, 1, 7, ORDINARY, ORDINARY + 4, ORDINARY + SIZES):
                    pid = f"p{i:03d}"
                    shown = _shown(rec.similar(pid, k)[1])
                    assert shown == _expected(vecs, cats, vecs[i], k, i), (name, pid, k)
                    shown = _shown(rec.similar(pid, k, "a")[1])
                    assert shown == _expected(vecs, cats, vecs[i], k, i, "a"), (name, pid, k)
                assert _shown(rec.search_vector(vecs[0], k)) == \
                    _expected(vecs, cats, vecs[0], k)
                both, _ = rec.search_vectors(vecs[[0, 1]], k)  # (a photo, whole and cut out)
                assert len(set(_shown(both))) == len(both) == k, name
            first = rec.similar("p000", 10)[1]
            assert _shown(first)[:1] == ["SIZES"] and sum(
                ORDINARY <= int(m.product.product_id[1:]) < ORDINARY + SIZES
                for m in first) == 1
            out = tmp_path / f"related-{name}.jsonl"
            write_related(store, out, 10, show_progress=False)
            rows = {r["product_id"]: [int(s["product_id"][1:]) for s in r["similar"]]
                    for r in map(json.loads, out.read_text().splitlines())}
            for pid, similar in rows.items():
                photos = [_photo(i) for i in similar]
                assert photos == _expected(vecs, cats, vecs[int(pid[1:])], 10,
                                           int(pid[1:])), (name, pid)
    finally:
        for store in stores.values():
            store.close()


def _product(pid: str, sha: str) -> StoredProduct:
    return StoredProduct(product_id=pid, name=pid, category="c", image=f"{pid}.jpg",
                         content_sha256=sha)


def test_a_store_where_no_photo_is_shared_is_searched_k_deep_once():
    """The collapse costs nothing where no two products share a photo: one search, k deep."""
    shelf = [_product(f"p{i:03}", f"{i:064x}") for i in range(50)]
    asked = []

    def search(rows: list[int], n: int) -> list[list[Match]]:
        asked.append((len(rows), n))
        return [[Match(p, 1.0 - i / 1000) for i, p in enumerate(
            q for q in shelf if q is not shelf[r])][:n] for r in rows]

    found = similar_without_copies(search, shelf[:3], 5, Copies())
    assert asked == [(3, 5)]
    assert [m.product.product_id for m in found[0]] == ["p001", "p002", "p003", "p004", "p005"]


def test_a_photo_of_many_sizes_is_shown_once_when_the_store_cannot_hide_photos():
    """A store that cannot leave photos out inside its search is asked deeper instead: the
    list is still one product a photo, filled to k."""
    sizes = [_product(f"size{i:02}", "5" * 64) for i in range(12)]
    others = [_product(f"p{i:03}", f"{i:064x}") for i in range(20)]
    shelf = sizes + others

    def search(rows: list[int], n: int) -> list[list[Match]]:
        return [[Match(p, 1.0 - i / 1000) for i, p in enumerate(
            q for q in shelf if q is not queried[r])][:n] for r in rows]

    queried = [others[0], sizes[3]]
    found = similar_without_copies(search, queried, 4, Copies(shared={"5" * 64: 12}))
    assert [m.product.product_id for m in found[0]] == ["size00", "p001", "p002", "p003"]
    assert [m.product.product_id for m in found[1]] == ["p000", "p001", "p002", "p003"]


def test_merged_views_of_a_photo_search_show_one_product_a_photo():
    """A photo searched whole and cut out of its frame: each view's best of a photo, merged,
    the best one of the two kept."""
    a, b, c, d = (_product(pid, sha) for pid, sha in
                  (("a", "1" * 64), ("b", "1" * 64), ("c", "2" * 64), ("d", "3" * 64)))
    merged, _ = merge_matches([[Match(a, 0.9), Match(c, 0.5), Match(d, 0.4)],
                               [Match(b, 0.95), Match(d, 0.6), Match(c, 0.3)]], 3, Copies())
    assert [(m.product.product_id, m.score) for m in merged] == [
        ("b", 0.95), ("d", 0.6), ("c", 0.5)]


def test_the_default_placeholder_count_spares_a_product_s_sizes():
    """12 products of one photo (shoe sizes 34 to 45) are no placeholder under the default:
    one of them is recommended; 20 are one."""
    from vitrine.placeholders import PLACEHOLDER_MIN, placeholders

    assert Settings().placeholder_min == PLACEHOLDER_MIN == 20
    assert placeholders(Copies(shared={"5" * 64: 12}), PLACEHOLDER_MIN).products == 0
    assert placeholders(Copies(shared={"5" * 64: 20}), PLACEHOLDER_MIN).products == 20
    sizes = [_product(f"size{i:02}", "5" * 64) for i in range(12)]
    found = similar_without_copies(
        lambda rows, n: [[Match(p, 1 - i / 100) for i, p in enumerate(sizes)][:n]
                         for _ in rows], [_product("x", "9" * 64)], 5,
        Copies(shared={"5" * 64: 12}),
        hidden=placeholders(Copies(shared={"5" * 64: 12}), PLACEHOLDER_MIN).photos)
    assert [m.product.product_id for m in found[0]] == ["size00"]


def test_a_list_near_products_stored_without_a_photo_sha256_is_filled_to_k(tmp_path):
    """A product stored without its photo's sha256 (``Copies.photo_of``: one of its own) is
    hidden by no photo in the search again of a short list: it came back first and took the
    places asked for, the list ended short (2 of k = 3) though the store held more photos."""
    from vitrine.store.embedded import EmbeddedStore

    def vector(x: float) -> np.ndarray:
        v = np.zeros(DIM, np.float32)
        v[0], v[1] = 1.0, x
        return v / np.linalg.norm(v)

    store = EmbeddedStore(tmp_path / "s", create=True)
    store.lock_for_writing()
    try:
        store.set_manifest(ModelManifest("test", "0" * 64, {}, DIM))
        shelf = [(f"size{i}", "a" * 64, vector(0.0)) for i in range(5)]  # (one photo)
        shelf += [(f"bare{i}", "", vector(0.1 + 0.01 * i)) for i in range(2)]
        shelf += [(f"other{i}", f"{i + 1:064x}", vector(0.5 + 0.1 * i)) for i in range(5)]
        store.upsert([Record(Product(pid, Path(f"/photos/{pid}.jpg")), sha, "0" * 16,
                             b"\0" * 768, vec) for pid, sha, vec in shelf])
        store.set_duplicate_cache(encode(
            "key", np.arange(1, dtype=np.uint64), np.zeros((0, 2), np.int64), ["a" * 64],
            (np.array([b"a" * 64], dtype="S64"), np.array([5]))))
        _, found = Recommender(store, Settings()).similar("size0", 3)
        assert [m.product.product_id for m in found] == ["bare0", "bare1", "other0"]
    finally:
        store.close()


def test_of_tied_products_of_one_photo_the_first_by_id_is_shown_whatever_their_order():
    """The products of one photo file tie (one vector): the one shown was the first the
    store gave, by row on the embedded store, in an order of its own on Milvus, so the two
    showed different products of it (10240 and 10240-copy2, `milvus_parity.py --copies
    3000`). The first by id now, in any order; a better-scored one of the group still wins."""
    a, b, c = (_product(pid, "7" * 64) for pid in ("a", "b", "c"))
    other = _product("o", "8" * 64)
    for order in ((c, a, b), (b, c, a), (a, b, c)):
        found = one_a_photo([Match(p, 0.8) for p in order] + [Match(other, 0.5)], Copies())
        assert [m.product.product_id for m in found] == ["a", "o"], order
    found = one_a_photo([Match(c, 0.9), Match(a, 0.8), Match(other, 0.5)], Copies())
    assert [m.product.product_id for m in found] == ["c", "o"]


def test_both_stores_show_the_same_product_of_a_photo_its_copies_share(tmp_path):
    """Three products of one photo file, written z, a, m (not in id order) near the query:
    `similar`, a photo search and `related` show the same one of them, ``a``, on the
    embedded store (flat, HNSW) and Milvus."""
    rng = np.random.default_rng(3)
    vecs = rng.normal(size=(14, DIM)).astype(np.float32)
    vecs[1:4] = vecs[0] + 0.2 * rng.normal(size=DIM)  # (one photo: one vector)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = ["q", "z-copy", "a-copy", "m-copy"] + [f"o{i:02d}" for i in range(10)]
    shas = [f"{i:064x}" if i == 0 or i > 3 else "7" * 64 for i in range(14)]
    stores = _stores(tmp_path)
    try:
        for name, store in stores.items():
            store.set_manifest(ModelManifest("test", "0" * 64, {}, DIM))
            store.upsert([Record(Product(pid, Path(f"/photos/{pid}.jpg"), category="c",
                                         name=pid), shas[i], "0" * 16, b"\0" * 768, vecs[i])
                          for i, pid in enumerate(ids)])
            store.set_duplicate_cache(encode(
                "key", np.zeros(0, np.uint64), np.zeros((0, 2), np.int64), [],
                (np.array([b"7" * 64], dtype="S64"), np.array([3]))))
            if hasattr(store, "flush"):
                store.flush()
            rec = Recommender(store, Settings())
            for k in (1, 3, 5):
                shown = [m.product.product_id for m in rec.similar("q", k)[1]]
                assert shown[0] == "a-copy" and not {"z-copy", "m-copy"} & set(shown), \
                    (name, k, shown)
                shown = [m.product.product_id for m in rec.search_vector(vecs[0], k + 1)]
                assert shown[:2] == ["q", "a-copy"] and not {"z-copy", "m-copy"} & set(shown), \
                    (name, k, shown)
            out = tmp_path / f"related-{name}.jsonl"
            write_related(store, out, 3, show_progress=False)
            rows = {r["product_id"]: [s["product_id"] for s in r["similar"]]
                    for r in map(json.loads, out.read_text().splitlines())}
            assert rows["q"][0] == "a-copy", (name, rows["q"])
    finally:
        for store in stores.values():
            store.close()


def test_products_of_one_photo_tied_at_a_search_s_last_place_are_the_same_on_both_stores(
        tmp_path):
    """7 products of one photo file (sizes) tie; a search whose last places they take keeps
    the first of them by id on every store (Milvus kept any of them: a list filled from
    such a search showed another product of the photo than the embedded store's, 21 of
    18,600 lists of `milvus_parity.py --copies 50`), tie order by id."""
    rng = np.random.default_rng(5)
    vecs = rng.normal(size=(27, DIM)).astype(np.float32)
    vecs[20:] = vecs[0] + 0.5 * rng.normal(size=DIM)  # (one photo: one vector)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = [f"o{i:02d}" for i in range(20)] + [f"s{i:02d}" for i in range(7)]
    shas = [f"{i:064x}" if i < 20 else "7" * 64 for i in range(27)]
    stores = _stores(tmp_path)
    try:
        got = {}
        for name, store in stores.items():
            store.set_manifest(ModelManifest("test", "0" * 64, {}, DIM))
            store.upsert([Record(Product(pid, Path(f"/photos/{pid}.jpg"), category="c",
                                         name=pid), shas[i], "0" * 16, b"\0" * 768, vecs[i])
                          for i, pid in enumerate(ids)])
            if hasattr(store, "flush"):
                store.flush()
            got[name] = [[m.product.product_id for m in found] for k in (2, 3, 5, 7)
                         for found in store.search_many(vecs[[20, 0]], k)]
        for name, lists in got.items():
            for found in lists:
                tied = [pid for pid in found if pid.startswith("s")]
                assert tied == [f"s{i:02d}" for i in range(len(tied))], (name, found)
            assert lists == got["flat"], name
    finally:
        for store in stores.values():
            store.close()


def test_products_of_one_photo_written_out_of_id_order_tied_at_the_last_place_agree(
        tmp_path):
    """As above, the photo's 7 products written s06 to s00 (rows against ids): the embedded
    store took those tied at its last place by row (s06, s05: FAISS's ids), Milvus by id
    (s00, s01), so `similar` showed s03 of the photo on one and s00 on the other. Both take
    them by id now; a list below the tie is as it was."""
    rng = np.random.default_rng(5)
    vecs = rng.normal(size=(27, DIM)).astype(np.float32)
    vecs[20:] = vecs[0] + 0.5 * rng.normal(size=DIM)  # (one photo: one vector)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = [f"o{i:02d}" for i in range(20)] + [f"s{i:02d}" for i in reversed(range(7))]
    shas = [f"{i:064x}" if i < 20 else "7" * 64 for i in range(27)]
    stores = _stores(tmp_path)
    try:
        got = {}
        for name, store in stores.items():
            store.set_manifest(ModelManifest("test", "0" * 64, {}, DIM))
            store.upsert([Record(Product(pid, Path(f"/photos/{pid}.jpg"), category="c",
                                         name=pid), shas[i], "0" * 16, b"\0" * 768, vecs[i])
                          for i, pid in enumerate(ids)])
            store.set_duplicate_cache(encode(
                "key", np.zeros(0, np.uint64), np.zeros((0, 2), np.int64), [],
                (np.array([b"7" * 64], dtype="S64"), np.array([7]))))
            if hasattr(store, "flush"):
                store.flush()
            got[name] = [[m.product.product_id for m in found] for k in (1, 2, 3, 5)
                         for found in store.search_many(vecs[[20, 0, 5]], k)]
            rec = Recommender(store, Settings())
            for k in (1, 2, 3):
                shown = [m.product.product_id for m in rec.similar("o00", k)[1]]
                assert shown[0] == "s00" and len(shown) == k, (name, k, shown)
        for name, lists in got.items():
            for found in lists:
                tied = [pid for pid in found if pid.startswith("s")]
                assert tied == [f"s{i:02d}" for i in range(len(tied))], (name, found)
            assert lists == got["flat"], name
    finally:
        for store in stores.values():
            store.close()
