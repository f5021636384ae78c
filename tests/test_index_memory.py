"""What `vitrine index` holds at once after the embedding (benchmarks/index_memory.py): the
duplicate search's exact path without a second copy of its rows, its pixel work a smaller
chunk at a time, the index build without the rows' bytes twice or its array grown step by
step, the photo facts let go before the build. Each with the results it gave before."""

from __future__ import annotations

import gc
import tracemalloc
import weakref
from dataclasses import replace
from pathlib import Path

import faiss
import numpy as np
import pytest
from conftest import copy_subset

from vitrine import ann, dedupe_colour
from vitrine.ann import IndexConfig, build_index
from vitrine.dedupe import DuplicateRules, _unit_rows
from vitrine.dedupe_colour import _colour_differences, colour_difference
from vitrine.dedupe_search import PIXEL_CHUNK, _close_pairs, _radius
from vitrine.indexer import index_catalog
from vitrine.store import open_store
from vitrine.store.base import Record


def unit(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x[n // 2:] = x[:n - n // 2] + 0.05 * rng.standard_normal((n - n // 2, dim)).astype(
        np.float32)  # (close pairs)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_the_exact_search_finds_what_a_flat_index_found_without_one(monkeypatch):
    vectors = unit(3000, 64)
    index = faiss.IndexFlatIP(64)
    index.add(vectors)
    lims, scores, ids = index.range_search(vectors, _radius(0.97))
    rows = np.repeat(np.arange(len(vectors)), np.diff(lims).astype(np.int64))
    keep = rows < ids
    # (no flat index of the rows: a copy of every vector beside the store's)
    monkeypatch.setattr(faiss, "IndexFlatIP", None)
    found = _close_pairs(len(vectors), DuplicateRules().embedding_rows(vectors), 0.97)
    assert np.array_equal(found[0], rows[keep]) and np.array_equal(found[1], ids[keep])
    # (the same pairs; their scores summed in another order by another kernel on some
    # hosts: 0.9983156 against 0.9983157, so equal to float32's last bits, not bit for bit)
    assert np.allclose(found[2], scores[keep], rtol=0, atol=1e-6)


def test_the_embedding_rows_of_a_run_are_the_vectors_themselves():
    vectors = unit(100, 8)
    rows_of = DuplicateRules().embedding_rows(vectors)
    assert np.shares_memory(rows_of(np.arange(100)), vectors)
    assert np.shares_memory(rows_of(np.arange(10, 20)), vectors)
    for rows in (np.array([3, 1, 2]), np.array([5, 5, 6]), np.array([], np.int64), [4, 5]):
        assert np.array_equal(rows_of(rows), vectors[rows])
    assert np.array_equal(DuplicateRules(probs_tail=2).embedding_rows(vectors)(np.arange(5)),
                          DuplicateRules(probs_tail=2).embedding_view(vectors[:5]))


def test_unit_rows_hold_one_array_of_floats_at_a_time():
    raw = np.random.default_rng(1).integers(0, 256, (3 * PIXEL_CHUNK, 768), dtype=np.uint8)
    raw[7] = 9  # (one colour: no norm)
    x = raw.astype(np.float32)
    x -= x.mean(axis=1, keepdims=True)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)
    tracemalloc.start()
    try:
        got = _unit_rows(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(got, x)
    assert peak < 1.5 * x.nbytes  # (the norm's squares of every row were a second copy)


def test_the_colour_check_works_on_a_chunk_of_pairs_at_a_time(monkeypatch):
    rng = np.random.default_rng(2)
    thumbs = [rng.integers(0, 256, 768, dtype=np.uint8).tobytes() for _ in range(60)]
    thumbs += [bytes([255]) * 300 + t[300:] for t in thumbs[:20]]  # (white in parts)
    pairs = rng.integers(0, len(thumbs), (2 * PIXEL_CHUNK + 5, 2))
    rows, ids = pairs[:, 0], pairs[:, 1]
    largest = []
    for name in ("_planes", "_pair_differences"):
        real = getattr(dedupe_colour, name)
        monkeypatch.setattr(dedupe_colour, name, lambda first, *rest, real=real: largest.append(
            len(first)) or real(first, *rest))
    got = _colour_differences(thumbs, rows, ids)
    assert max(largest) <= PIXEL_CHUNK
    for k in range(0, len(rows), 97):
        assert got[k] == pytest.approx(colour_difference(thumbs[rows[k]], thumbs[ids[k]]),
                                       abs=1e-9) or rows[k] == ids[k]


def test_a_flat_index_is_built_into_one_array_made_once(monkeypatch):
    vectors = unit(5000, 32)
    made = []
    new_index = ann.new_index
    monkeypatch.setattr(ann, "new_index", lambda *a: made.append(new_index(*a)) or made[0])
    where = []

    def batches():
        for start in range(0, 5000, 1000):
            yield np.arange(start, start + 1000), vectors[start:start + 1000]
            where.append(int(faiss.downcast_index(made[0].index).codes.data()))

    built = build_index(IndexConfig.defaults(kind="flat"), 32, 5000, batches())
    assert len(where) == 5 and len(set(where)) == 1  # (grown batch after batch, it moved:
    # two arrays at once)
    scores, ids = built.index.search(vectors[:3], 1)
    assert ids[:, 0].tolist() == [0, 1, 2]


def test_the_index_build_reads_a_few_rows_at_a_time(tmp_path, demo_catalog, embedder):
    catalog = copy_subset(demo_catalog, tmp_path / "shop", 1)
    db = open_store(tmp_path / "store", create=True)
    try:
        index_catalog(catalog, db, embedder, show_progress=False)
        first = db.get(db.all_vectors()[0][0]).to_product()
        more = unit(400, 1280, seed=3)
        db.upsert([Record(replace(first, product_id=f"more-{k}"), f"{k:064x}", "", b"",
                          more[k]) for k in range(len(more))])
        ids, vectors = db.all_vectors()
        tracemalloc.start()
        try:
            built = db._files._build(len(ids), read=4)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < vectors.nbytes / 2  # (a batch's bytes and their copy: twice the rows)
        inner = faiss.downcast_index(built.index.index)
        assert np.array_equal(inner.reconstruct_n(0, len(ids)), vectors)
        row_ids = faiss.vector_to_array(built.index.id_map)
        assert row_ids.tolist() == [r for (r,) in db.db.execute(
            "SELECT id FROM products ORDER BY id")]
    finally:
        db.close()


def test_the_photo_facts_are_let_go_before_the_index_build(tmp_path, demo_catalog, embedder,
                                                           monkeypatch):
    catalog = copy_subset(demo_catalog, tmp_path / "shop", 2)
    db = open_store(tmp_path / "store", create=True)

    class Facts(dict):
        pass

    read = db.photo_facts
    made = []
    monkeypatch.setattr(db, "photo_facts", lambda: made.append(Facts(read())) or made.pop())
    refs = []
    real = Facts.__init__

    def init(self, *args):
        real(self, *args)
        refs.append(weakref.ref(self))

    monkeypatch.setattr(Facts, "__init__", init)
    flush = db.flush
    alive = []

    def flushed(*args, **kwargs):
        gc.collect()
        alive.append([r() is not None for r in refs])
        return flush(*args, **kwargs)

    monkeypatch.setattr(db, "flush", flushed)
    try:
        report = index_catalog(catalog, db, embedder, show_progress=False)
    finally:
        db.close()
    assert report.duplicates_searched and refs
    assert alive == [[False] * len(refs)]


def test_the_vectors_are_let_go_before_the_second_views(monkeypatch):
    from vitrine import dedupe_pairs

    rng = np.random.default_rng(4)
    thumbs = [rng.integers(0, 256, 768, dtype=np.uint8).tobytes() for _ in range(50)]
    phashes = [f"{int(h):016x}" for h in rng.integers(0, 2**62, 50)]
    expected = dedupe_pairs.rule_pairs(unit(50, 16), phashes, thumbs, DuplicateRules())
    made, held = [], []
    views = dedupe_pairs._view_pairs

    def view_pairs(*args, **kwargs):
        gc.collect()
        held.append(made[0]() is not None)
        return views(*args, **kwargs)

    def fresh() -> np.ndarray:  # (held by rule_pairs alone, as the store's are)
        vectors = unit(50, 16)
        made.append(weakref.ref(vectors))
        return vectors

    monkeypatch.setattr(dedupe_pairs, "_view_pairs", view_pairs)
    got = dedupe_pairs.rule_pairs(fresh(), phashes, thumbs, DuplicateRules())
    assert np.array_equal(got, expected)
    assert held == [False]


def test_the_catalogue_is_let_go_before_the_duplicate_search(tmp_path, demo_catalog,
                                                             weights_path, cli_here,
                                                             monkeypatch):
    from vitrine import indexer
    from vitrine.catalog import Product

    catalog = copy_subset(demo_catalog, tmp_path / "shop", 2)
    search = indexer.store_duplicates
    alive = []

    def counted(*args, **kwargs):
        gc.collect()
        alive.append(sum(isinstance(o, Product) and catalog in Path(o.image).parents
                         for o in gc.get_objects()))
        return search(*args, **kwargs)

    monkeypatch.setattr(indexer, "store_duplicates", counted)
    cli_here("index", catalog, "--store", tmp_path / "store", "--json",
             env_extra={"VITRINE_WEIGHTS": weights_path})
    # (the command's and the run's products, the catalogue read: 60 MB at 65,024 photos
    # beside the search's thumbnails and vectors, benchmarks/index_memory.py)
    assert alive == [0]


def test_the_vectors_are_read_after_the_thumbnail_search(tmp_path, demo_catalog, embedder,
                                                         monkeypatch):
    from vitrine import dedupe_pairs
    from vitrine.index_duplicates import store_duplicates

    catalog = copy_subset(demo_catalog, tmp_path / "shop", 2)
    db = open_store(tmp_path / "store", create=True)
    try:
        index_catalog(catalog, db, embedder, show_progress=False)
        expected = store_duplicates(db, catalog)[0]
        db.set_duplicate_cache(b"")  # (searched again, whole)
        said = []
        thumbs, read = dedupe_pairs.thumb_vectors, db.all_vectors
        monkeypatch.setattr(dedupe_pairs, "thumb_vectors",
                            lambda *a: said.append("thumbnails") or thumbs(*a))
        monkeypatch.setattr(db, "all_vectors", lambda: said.append("vectors") or read())
        assert store_duplicates(db, catalog)[:2] == (expected, 16)
    finally:
        db.close()
    # (not every vector held through the thumbnail search's inverted file and chunks)
    assert said[0] == "thumbnails" and said.count("vectors") == 1


def test_the_inverted_file_trains_on_the_rows_where_they_are(monkeypatch):
    vectors = unit(12_000, 32, seed=5)
    expected = _close_pairs(len(vectors), DuplicateRules().embedding_rows(vectors), 0.97,
                            exact=False)
    kept = vectors.copy()
    trained = []
    train = faiss.IndexIVFScalarQuantizer.train

    def seen(self, x):
        trained.append((np.shares_memory(x, vectors), len(x), x.copy()))
        return train(self, x)

    monkeypatch.setattr(faiss.IndexIVFScalarQuantizer, "train", seen)
    rules = DuplicateRules()
    got = _close_pairs(len(vectors), rules.embedding_rows(vectors), 0.97, exact=False,
                       own=rules.embedding_array(vectors))
    (shared, m, sample), = trained
    # (a copy of the sampled rows, 118 MB beside the store's vectors at 65,024 products)
    assert shared and m < len(vectors)
    picked = np.sort(np.random.default_rng(0).choice(len(vectors), m, replace=False))
    assert np.array_equal(sample, kept[picked])
    assert np.array_equal(vectors, kept)  # (the rows put back)
    for a, b in zip(got, expected, strict=True):
        assert np.array_equal(a, b)


def test_the_colour_check_keeps_its_planes_without_every_thumbnail_joined():
    from vitrine.dedupe_pairs import _Views

    n = 48_000
    made = np.random.default_rng(6).integers(0, 256, (n, 768), dtype=np.uint8)
    views = _Views(lambda ways: made[ways], n, np.arange(n))  # (bytes made at each read)
    rows = np.arange(0, n, 2)
    tracemalloc.start()
    try:
        got = _colour_differences(views, rows, rows + 1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    planes = n * 768 * 2  # (the 16-bit planes kept for every photo)
    # (their bytes read, joined and made planes at once: 2.1 times their size)
    assert peak < 1.75 * planes
    for k in range(0, len(rows), 997):
        assert got[k] == pytest.approx(colour_difference(made[rows[k]].tobytes(),
                                                         made[rows[k] + 1].tobytes()),
                                       abs=1e-9)
