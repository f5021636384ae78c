"""An HNSW graph of one node per distinct vector (:mod:`vitrine.ann_distinct`): products that
share one photo are one node, and each search gives a node's copies, in id order, with its
score: k results, no id twice, hidden and category ids honoured, saved and loaded with the
index (benchmarks/copies_search.py measures it at 20,000 and 100,000 products)."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from test_ann_copies import store_with_copies

from vitrine.ann import IdSet, IndexConfig, LayeredIndex, VectorIndex, build_index, ranked
from vitrine.ann_distinct import Copies

K = 10


def hnsw(vecs: np.ndarray) -> VectorIndex:
    return build_index(IndexConfig.defaults(kind="hnsw"), vecs.shape[1], len(vecs),
                       [(np.arange(len(vecs), dtype=np.int64), vecs)])


def small(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random unit vectors; rows 10, 40, 41, ..., 79 one vector (41 products of one
    photo), rows 5 and 200 another."""
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    group = np.concatenate([[10], np.arange(40, 80)])
    vecs[group] = vecs[10]
    vecs[200] = vecs[5]
    return vecs, group


@pytest.mark.parametrize("seed", [0, 1])
def test_products_near_large_groups_of_one_photo_find_their_nearest(seed):
    """Six photos each shared by 501 of 6,000 products. In a graph of every product, their
    copies were one another's nearest (distance 0) and filled one another's links, and the
    products near them that are no copies found 0.845 of their 10 nearest, 28 of 300 fewer
    than half (seed 0). One node per photo: all but a rare one of the 10 nearest."""
    vecs, groups = store_with_copies(6000, 500, 6, seed, same=1.0)
    n = len(vecs)
    index = hnsw(vecs)
    assert index.nodes == n - 6 * 500 and index.ntotal == n
    planted = np.zeros(n, bool)
    planted[np.concatenate(groups)] = True
    others = np.flatnonzero(~planted)
    near = others[np.argsort(-(vecs[others] @ vecs[[g[0] for g in groups]].T).max(1))[:300]]
    recalls = []
    for row in near:
        exact = vecs @ vecs[row]
        exact[row] = -np.inf
        kth = np.sort(exact)[-K]
        _, ids = index.search(vecs[row], K + 1)
        assert len(ids) == K + 1 and len(set(ids.tolist())) == K + 1
        ids = ids[ids != row][:K]
        recalls.append(int((exact[ids] >= kth - 1e-6).sum()) / K)
    assert np.mean(recalls) >= 0.98 and min(recalls) >= 0.5, sorted(recalls)[:30]


def test_a_photo_s_products_come_in_id_order_with_its_score_k_of_them_once_each():
    vecs, group = small()
    index = hnsw(vecs)
    assert index.nodes == 300 - 40 - 1 and index.ntotal == 300
    for k in (1, 5, 41, 45):
        scores, ids = index.search(vecs[40], k)
        assert len(ids) == k and len(set(ids.tolist())) == k
        assert ids[:min(k, 41)].tolist() == group[:min(k, 41)].tolist()
        assert np.allclose(scores[:min(k, 41)], 1.0, atol=1e-3)
        assert np.all(np.diff(scores) <= 0)
    _, ids = index.search(vecs[5], 2)
    assert ids.tolist() == [5, 200]
    # as the flat index (exact) ranks them: the photo's 41 products first, by id (then the
    # same scores, to fp16's rounding)
    flat = build_index(IndexConfig.defaults(kind="flat"), 16, 300,
                       [(np.arange(300, dtype=np.int64), vecs)])
    for q in (vecs[10], vecs[5], vecs[123]):
        (scores, ids), (exact, _) = index.search(q, 45), flat.search(q, 45)
        assert len(set(ids.tolist())) == 45 and np.allclose(scores, exact, atol=2e-3)
    assert index.search(vecs[10], 41)[1].tolist() == flat.search(vecs[10], 41)[1].tolist()


def test_hidden_ids_and_categories_are_honoured_for_a_photo_s_products():
    vecs, group = small()
    index = hnsw(vecs)
    # the node's own id hidden (a product left out of its own page): its copies still come
    _, ids = index.search(vecs[10], 5, hidden=IdSet([10]))
    assert ids.tolist() == [40, 41, 42, 43, 44]
    # some of the copies hidden
    _, ids = index.search(vecs[10], 3, hidden=IdSet([10, 40, 42]))
    assert ids.tolist() == [41, 43, 44]
    # all of them hidden: none of them, k others
    hidden = IdSet(group)
    scores, ids = index.search(vecs[10], K, hidden=hidden)
    assert len(ids) == K and not hidden.contains(ids).any()
    exact = vecs @ vecs[10]
    exact[group] = -np.inf
    assert np.allclose(scores, np.sort(exact)[::-1][:K], atol=1e-3)
    # a category holding copies but not the node: those copies, in id order
    subset = IdSet(np.concatenate([[45, 47, 200], np.arange(100, 180)]))
    for among in (subset, subset.ids):
        _, ids = index.search(vecs[10], 3, subset=among)
        assert ids[:2].tolist() == [45, 47] and ids[2] not in group
    _, ids = index.search(vecs[5], 1, subset=IdSet([200, 201]))
    assert ids.tolist() == [200]
    found = index.search_many(vecs[[10, 5]], 4, hidden=IdSet([10, 5, 41]))
    assert found[0][1].tolist() == [40, 42, 43, 44] and found[1][1][0] == 200


def test_equal_scores_by_id_when_a_node_s_own_id_is_hidden_or_out_of_the_category():
    """Two photos scoring the same against the query (0.8), each of two products: nodes 1
    and 2, their copies 5 and 4. With the nodes' own ids hidden (or out of the category),
    the top 2 was cut as nodes before their copies were given, so node 1 came before node
    2 and gave 5: [0, 5], where the top 3 is [0, 4, 5] (equal scores by id, as
    :func:`~vitrine.ann_layers.ranked` promises: a top 2 is the start of the top 3)."""
    vecs = np.zeros((7, 4), np.float32)
    vecs[0, 0] = 1
    vecs[[1, 5]] = [0.8, 0.6, 0, 0]
    vecs[[2, 4]] = [0.8, -0.6, 0, 0]
    vecs[3, 2] = vecs[6, 3] = 1
    index = build_index(IndexConfig.defaults(kind="hnsw", fp16=False), 4, 7,
                        [(np.arange(7, dtype=np.int64), vecs)])
    assert index.nodes == 5 and index.copies.ids.tolist() == [5, 4]
    for given in ({"hidden": IdSet([1, 2])}, {"subset": IdSet([0, 4, 5])}):
        three = index.search(vecs[0], 3, **given)[1].tolist()
        assert three == [0, 4, 5]
        for k in (1, 2):
            assert index.search(vecs[0], k, **given)[1].tolist() == three[:k], (given, k)


def test_a_saved_index_keeps_its_copies_and_an_older_file_is_read_as_before(tmp_path):
    vecs, group = small()
    index = hnsw(vecs)
    path = tmp_path / "index.faiss"
    index.save(path)
    again = VectorIndex.load(path, index.config)
    assert again.ntotal == 300 and again.nodes == index.nodes
    assert again.search(vecs[10], 45)[1].tolist() == index.search(vecs[10], 45)[1].tolist()
    # a file written before (one node per product, nothing after the index)
    older = tmp_path / "older.faiss"
    VectorIndex(index.index, index.config).save(older)
    read = VectorIndex.load(older, index.config)
    assert read.copies is None and read.ntotal == read.nodes == index.nodes
    # a damaged end is an error (the store rebuilds), not copies made up
    assert len(index.copies) == 41
    data = path.read_bytes()
    path.write_bytes(data[:-24] + np.int64(10 ** 9).tobytes() + data[-16:])
    with pytest.raises(RuntimeError, match="damaged"):
        VectorIndex.load(path, index.config)


def test_a_layered_index_over_a_graph_with_copies():
    vecs, group = small()
    base = hnsw(vecs)
    recent = build_index(IndexConfig.defaults(kind="flat"), 16, 1,
                         [(np.array([300], np.int64), vecs[5:6])])
    layered = LayeredIndex(base, recent, IdSet([41, 300]), 300)  # 41 deleted, 300 added
    _, ids = layered.search(vecs[10], 5)
    assert ids.tolist() == [10, 40, 42, 43, 44]
    _, ids = layered.search(vecs[10], 45)
    assert 41 not in ids.tolist() and len(set(ids.tolist())) == 45
    assert set(ids[:40].tolist()) == set(group.tolist()) - {41}
    _, ids = layered.search(vecs[5], 3)
    assert set(ids.tolist()) == {5, 200, 300}
    found = layered.search_many(vecs[[10]], 3, hidden=IdSet([10, 40]))
    assert found[0][1].tolist() == [42, 43, 44]


def test_more_products_asked_than_the_graph_has_nodes():
    """k above the graph's nodes (50 products of one photo and two others: three nodes):
    every product, once each, the photo's 50 first in id order."""
    rng = np.random.default_rng(5)
    vecs = rng.standard_normal((52, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    vecs[:50] = vecs[0]
    index = hnsw(vecs)
    assert index.nodes == 3 and index.ntotal == 52
    _, ids = index.search(vecs[7], 60)
    assert ids[:50].tolist() == list(range(50)) and sorted(ids[50:].tolist()) == [50, 51]
    _, ids = index.search(vecs[7], 60, hidden=IdSet(np.arange(0, 50, 2)))
    assert ids[:25].tolist() == list(range(1, 50, 2)) and len(ids) == 27


def test_a_store_saves_and_reopens_its_graph_of_one_node_per_photo(tmp_path):
    """An HNSW store whose 30 products share a placeholder photo: its saved index file holds
    the graph's 21 nodes and the photo's other 29 products after it; reopened (the file
    read, no rebuild) and with a product written since (the layer), a search gives every
    product once, the photo's in id order, a category's and a product's copies left out."""
    from pathlib import Path

    from vitrine.catalog import Product
    from vitrine.manifest import ModelManifest
    from vitrine.store.base import Record
    from vitrine.store.embedded import EmbeddedStore

    rng = np.random.default_rng(2)
    vecs = rng.standard_normal((50, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    vecs[:30] = vecs[0]
    shas = ["a" * 64 if i < 30 else f"{i:064x}" for i in range(50)]
    config = IndexConfig.defaults(kind="hnsw")

    def record(i: int, vec: np.ndarray, sha: str) -> Record:
        return Record(Product(f"p{i:03d}", Path(f"/photos/p{i}.jpg"),
                              category="even" if i % 2 == 0 else "odd"),
                      sha, "0" * 16, b"\0" * 768, vec)

    store = EmbeddedStore(tmp_path / "store", create=True, index_config=config)
    try:
        store.set_manifest(ModelManifest("test", "0" * 64, {}, 16))
        store.lock_for_writing()
        store.upsert([record(i, vecs[i], shas[i]) for i in range(50)])
        store.flush()
        assert [m.product.product_id for m in store.search(vecs[0], 30)] == \
            [f"p{i:03d}" for i in range(30)]
    finally:
        store.close()
    [saved] = (tmp_path / "store").glob("index.*.hnsw32x64-fp16.faiss")
    index = VectorIndex.load(saved, config)
    assert index.nodes == 21 and index.ntotal == 50
    store = EmbeddedStore(tmp_path / "store", index_config=config)
    try:
        found = [m.product.product_id for m in store.search(vecs[0], 35)]
        assert found[:30] == [f"p{i:03d}" for i in range(30)] and len(set(found)) == 35
        assert [m.product.product_id for m in store.search(vecs[0], 3, category="odd")] == \
            ["p001", "p003", "p005"]
        store.lock_for_writing()
        store.upsert([record(50, vecs[0], "a" * 64)])  # (one more of the photo, layered)
        found = [m.product.product_id for m in
                 store.search_many(vecs[[0]], 31, exclude=["p000"])[0]]
        assert len(set(found)) == 31 and "p050" in found[:30]  # (the layer's: fp32, 1.0)
        assert [pid for pid in found if pid != "p050"][:29] == \
            [f"p{i:03d}" for i in range(1, 30)]
        past = store.search_many(vecs[[0]], 5, exclude_photos=frozenset({"a" * 64}))[0]
        assert len(past) == 5 and all(m.product.content_sha256 != "a" * 64 for m in past)
    finally:
        store.close()


def one_photo_share(n: int = 2000, copies: int = 1500, dim: int = 16,
                    seed: int = 3) -> np.ndarray:
    """``n`` random unit vectors, the first ``copies`` + 1 of them one vector."""
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    vecs[:copies + 1] = vecs[0]
    return vecs


def room_is_full(index: VectorIndex) -> bool:
    """Whether the graph's storage has no room left: one vector more moves its array (a
    vector grown past its room is made anew elsewhere)."""
    storage = faiss.downcast_index(index.inner.storage)
    where = int(storage.codes.data())
    index.index.add_with_ids(np.ones((1, index.inner.d), np.float32) / index.inner.d ** 0.5,
                             np.array([10 ** 6], np.int64))
    return int(storage.codes.data()) != where


def test_an_hnsw_graph_s_storage_is_made_for_its_nodes_not_for_every_product(monkeypatch):
    """Its storage was made for every product, of which only the distinct vectors are
    added: 50,000 products of one photo (1,280-d fp16) kept 128 MB for an index of 1.2 MB
    (FAISS cannot shrink it). Batches that can be read twice (a function, a list) have
    their distinct vectors counted first: room for the nodes alone, the same graph, the
    batches read twice."""
    vecs = one_photo_share()
    config = IndexConfig.defaults(kind="hnsw")
    reads = []

    def batches():
        reads.append(1)
        for start in range(0, 2000, 700):
            yield np.arange(start, min(2000, start + 700), dtype=np.int64), \
                vecs[start:start + 700]

    assert room_is_full(build_index(config, 16, 2000, list(batches())))
    made = {"function": build_index(config, 16, 2000, batches),
            "list": build_index(config, 16, 2000, list(batches())),
            "one reading": build_index(config, 16, 2000, batches())}
    assert len(reads) == 1 + 2 + 1 + 1
    for how, index in made.items():
        assert index.nodes == 500 and index.ntotal == 2000, how
        assert np.array_equal(index.copies.ids, np.arange(1, 1501)), how
        assert index.search(vecs[1700], 20)[1].tolist() == \
            made["one reading"].search(vecs[1700], 20)[1].tolist()
        assert index.search(vecs[0], 5)[1].tolist() == [0, 1, 2, 3, 4]
    assert room_is_full(made["function"])
    # (the flat index is made for every product, as before: all of them are added)
    flat = build_index(IndexConfig.defaults(kind="flat"), 16, 2000, batches)
    assert flat.nodes == 2000 and len(reads) == 6


def test_a_store_counts_its_graph_s_nodes_first_where_many_products_share_a_photo(
        tmp_path, monkeypatch):
    """The embedded store's build reads its vectors twice, counted first, where more than
    one product in 32 shares another's photo file (SHARED_PHOTOS); else once, its storage
    made for every product (the first reading costs time: 0.77 s of an 11.7 s build of
    20,000 1,280-d products)."""
    from pathlib import Path

    from vitrine import ann
    from vitrine.catalog import Product
    from vitrine.manifest import ModelManifest
    from vitrine.store import index_files
    from vitrine.store.base import Record
    from vitrine.store.embedded import EmbeddedStore

    twice = []  # (whether each build was given batches it can read again)
    build = index_files.build_index
    monkeypatch.setattr(index_files, "build_index", lambda config, dim, n, batches, *rest:
                        twice.append(callable(batches)) or build(config, dim, n, batches, *rest))
    reserved = []
    reserve = ann._reserve
    monkeypatch.setattr(ann, "_reserve", lambda index, n: reserved.append(n) or
                        reserve(index, n))
    for shared, nodes in ((1500, 500), (40, 1960)):
        vecs = one_photo_share(copies=shared)
        store = EmbeddedStore(tmp_path / f"store{shared}", create=True,
                              index_config=IndexConfig.defaults(kind="hnsw"))
        try:
            store.set_manifest(ModelManifest("test", "0" * 64, {}, 16))
            store.lock_for_writing()
            store.upsert([Record(Product(f"p{i:04d}", Path(f"/photos/p{i}.jpg"), "c"),
                                 "a" * 64 if i <= shared else f"{i:064x}", "0" * 16,
                                 b"\0" * 768, vecs[i]) for i in range(2000)])
            twice.clear()
            reserved.clear()
            with store.snapshot():
                index = store._files._build(2000)
            assert index.nodes == nodes and index.ntotal == 2000
            if shared == 1500:
                assert twice == [True] and reserved == [500] and room_is_full(index)
            else:  # (40 of 2,000 share a photo: read once)
                assert twice == [False] and reserved == [2000]
        finally:
            store.close()


def expanded(copies: Copies, found: tuple[np.ndarray, np.ndarray], k: int,
             subset: IdSet | None, hidden: IdSet | None) -> list[tuple[float, int]]:
    """What :meth:`Copies.expand` gives, by brute force: every node found and every copy of
    it, with its score, those in ``subset`` and not ``hidden``, best first, then by id."""
    rows = []
    for score, node in zip(*found, strict=True):
        rows += [(float(score), int(node))] + [
            (float(score), int(c)) for c in copies.ids[copies.nodes == node]]
    rows = [(s, i) for s, i in rows
            if (subset is None or subset.contains([i])[0])
            and (hidden is None or not hidden.contains([i])[0])]
    return sorted(rows, key=lambda r: (-r[0], r[1]))[:k]


def test_a_node_s_copies_are_given_as_every_one_of_them_ranked_would_be():
    """:meth:`Copies.expand` reads a node's first k copies kept (in id order, one score),
    not all of them: the same results as ranking every copy of every node found."""
    rng = np.random.default_rng(11)
    for trial in range(300):
        n = int(rng.integers(20, 3000))
        nodes = np.sort(rng.choice(n, int(rng.integers(1, 15)), replace=False))
        others = np.setdiff1d(np.arange(n), nodes)
        share = rng.choice(others, int(rng.integers(1, len(others))), replace=False)
        sizes = rng.dirichlet(np.full(len(nodes), 0.3))  # (some groups much larger)
        copies = Copies(share.astype(np.int64),
                        nodes[rng.choice(len(nodes), len(share), p=sizes)].astype(np.int64))
        alone = np.setdiff1d(others, share)[:10]  # (nodes without copies)
        subset = hidden = None
        if trial % 3 == 1:
            subset = IdSet(rng.choice(n, int(rng.integers(1, n)), replace=False))
        elif trial % 3 == 2:
            hidden = IdSet(rng.choice(n, int(rng.integers(1, n)), replace=False))
        # the nodes a search finds: those searched among (a node with a copy in the
        # subset), or not past (a hidden node with a copy not hidden is shown)
        searched = np.union1d(nodes, alone)
        if subset is not None:
            searched = searched[copies.among(subset).contains(searched)]
        elif hidden is not None:
            searched = searched[~copies.past(hidden, 0)[0].contains(searched)]
        pick = rng.choice(searched, int(rng.integers(0, len(searched) + 1)), replace=False)
        scores = rng.choice([0.9, 0.8, 0.5, 0.25], len(pick)).astype(np.float32)
        found = ranked(scores, pick.astype(np.int64))
        k = int(rng.integers(0, 60))
        got = copies.expand(found, k, subset, hidden)
        want = expanded(copies, found, k, subset, hidden)
        assert got[1].tolist() == [i for _, i in want], trial
        assert np.allclose(got[0], [s for s, _ in want]), trial


def test_a_node_of_many_copies_gives_its_first_k_without_reading_them_all(monkeypatch):
    """A placeholder photo's 20,000 products: a query of that photo read, filtered and
    sorted every one of them (0.7 ms a query); the first k kept are read now."""
    copies = Copies(np.arange(1, 20_001, dtype=np.int64), np.zeros(20_000, np.int64))
    found = (np.array([1.0, 0.5], np.float32), np.array([0, 20_050], np.int64))
    read, sorted_ = [], []
    contains, lexsort = IdSet.contains, np.lexsort
    monkeypatch.setattr(IdSet, "contains", lambda self, ids: read.append(len(ids)) or
                        contains(self, ids))
    monkeypatch.setattr(np, "lexsort", lambda keys: sorted_.append(len(keys[0])) or
                        lexsort(keys))
    assert copies.expand(found, K, None, None)[1].tolist() == list(range(K))
    hidden = IdSet([0, 3, 5])
    assert copies.expand(found, K, None, hidden)[1].tolist() == [1, 2, 4, 6, 7, 8, 9, 10,
                                                                 11, 12]
    odd = IdSet(np.arange(1, 30_000, 2))
    assert copies.expand(found, K, odd, None)[1].tolist() == list(range(1, 2 * K, 2))
    assert sum(read) < 200 and max(sorted_) < 100, (read, sorted_)
