"""An approximate store index is not rebuilt for every write: the products written since the
saved index are searched from an exact layer, and the index is rebuilt past a limit."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from vitrine.ann import IndexConfig, LayeredIndex, VectorIndex
from vitrine.bench import ClusterModel
from vitrine.catalog import Product
from vitrine.embed import ModelManifest
from vitrine.store import index_files
from vitrine.store.base import Record
from vitrine.store.embedded import EmbeddedStore

DIM = 32
HNSW = IndexConfig.defaults(kind="hnsw")


def records(ids, vecs, category: str = "c") -> list[Record]:
    return [Record(Product(pid, Path(f"/photos/{pid}.jpg"), category=category), f"sha-{pid}",
                   "0" * 16, b"\0" * 768, vec) for pid, vec in zip(ids, vecs, strict=True)]


@pytest.fixture
def folder(tmp_path):
    vecs, _ = ClusterModel.create(DIM, 4, seed=0, rank=16).sample(600, seed=1)
    seeded(tmp_path / "store", HNSW, vecs, 500)
    return tmp_path / "store", vecs


def seeded(root: Path, config: IndexConfig, vecs: np.ndarray, n: int, *,
           flush: bool = True) -> None:
    """Write a store at ``root`` of the first ``n`` of ``vecs`` (ids p000, p001…) and close
    it; ``flush`` saves its index too."""
    store = EmbeddedStore(root, create=True, index_config=config)
    store.set_manifest(ModelManifest("test", "0" * 64, {"size": 8, "resize": "crop"}, DIM))
    store.lock_for_writing()
    store.upsert(records([f"p{i:03d}" for i in range(n)], vecs[:n]))
    if flush:
        store.flush()
    store.close()


def saved(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob("index.*.faiss"))


def brute_force(store, query: np.ndarray, k: int) -> list[str]:
    ids, vecs = store.all_vectors()
    return [ids[i] for i in np.argsort(-(vecs @ query), kind="stable")[:k]]


def test_writes_are_searched_from_a_layer_until_the_index_is_rebuilt(folder, monkeypatch):
    root, vecs = folder
    before = saved(root)
    writer = EmbeddedStore(root, index_config=HNSW)
    writer.lock_for_writing()
    writer.upsert(records([f"new{i}" for i in range(5)], vecs[500:505], category="novo"))
    writer.upsert(records(["p001", "p002", "p003"], vecs[505:508]))  # replaced photos
    writer.delete(["p010", "p011", "p012", "p013"])
    writer.flush()
    assert saved(root) == before  # nothing rebuilt
    reader = EmbeddedStore(root, index_config=HNSW)
    index = reader._current_index()
    assert isinstance(index, LayeredIndex) and index.ntotal == reader.count() == 501
    for i in range(5):  # the new products, found by their own vectors, and by category
        assert reader.search(vecs[500 + i], 1)[0].product.product_id == f"new{i}"
        assert {m.product.product_id for m in reader.search(vecs[500 + i], 10,
                                                            category="novo")} == {
            f"new{j}" for j in range(5)}
    for pid, new, old in (("p001", 505, 1), ("p002", 506, 2), ("p003", 507, 3)):
        top = reader.search(vecs[new], 1)[0]
        assert top.product.product_id == pid and top.score == pytest.approx(1.0, abs=1e-5)
        hits = {m.product.product_id: m.score for m in reader.search(vecs[old], 600)}
        assert hits[pid] == pytest.approx(float(vecs[old] @ vecs[new]), abs=1e-3)  # the new
    gone = {"p010", "p011", "p012", "p013"}  # vector, not the old one
    recall = []
    for q in range(0, 500, 10):
        got = [m.product.product_id for m in reader.search(vecs[q], 10)]
        assert not gone & set(got) and len(got) == len(set(got)) == 10
        recall.append(len(set(got) & set(brute_force(reader, vecs[q], 10))) / 10)
    assert np.mean(recall) >= 0.95
    assert len(reader.search(vecs[0], 600)) == 501  # every product, once

    # past the limit the writer rebuilds and saves the index, and forgets the changes it
    # covers; a reader layers up to twice the limit, then takes the saved index
    monkeypatch.setattr(index_files, "RECENT_MAX", 10)
    writer.upsert(records([f"more{i}" for i in range(5)], vecs[595:600]))
    assert isinstance(reader._current_index(), LayeredIndex)  # 17 changed: 2 × 10 for it
    writer.flush()
    assert saved(root) != before and len(saved(root)) == 1
    assert writer.db.execute("SELECT COUNT(*) FROM changes").fetchone()[0] == 0
    writer.upsert(records(["last"], vecs[594:595]))
    index = reader._current_index()  # on the new saved index, not the old one it holds
    assert isinstance(index, LayeredIndex) and index.base.ntotal == 506
    assert index.ntotal == reader.count() == 507
    assert reader.search(vecs[597], 1)[0].product.product_id == "more2"
    assert reader.search(vecs[594], 1)[0].product.product_id == "last"
    reader.close()
    writer.close()


def no_builds(monkeypatch):
    """Make a build of the index fail the test (a search that would wait minutes for it)."""
    def build(self, n, batch=20_000):
        raise AssertionError("the index was built inside a search")
    monkeypatch.setattr(index_files.IndexFiles, "_build", build)


def layered_without_build(store, monkeypatch) -> LayeredIndex:
    """``store``'s index for a search, layered, the test failing if it was built instead."""
    with monkeypatch.context() as patch:
        no_builds(patch)
        index = store._current_index()
    assert isinstance(index, LayeredIndex)
    return index


def test_a_reader_layers_past_the_writers_limit_instead_of_building_in_its_search(
        folder, monkeypatch):
    """Writes came faster than the server's rebuild: a search layers on the saved index (a
    larger exact layer) rather than build the whole index itself; past half the store it
    builds."""
    root, vecs = folder
    before = saved(root)
    monkeypatch.setattr(index_files, "RECENT_MAX", 2)  # a writer rebuilds past 2 changes
    writer = EmbeddedStore(root, index_config=HNSW)
    writer.lock_for_writing()
    writer.upsert(records([f"n{i}" for i in range(30)], vecs[500:530]))
    writer.flush(rebuild=False)  # an API write: nothing built
    assert writer.index_due() and saved(root) == before
    reader = EmbeddedStore(root, index_config=HNSW)
    with monkeypatch.context() as patch:
        no_builds(patch)
        index = reader._current_index()
        assert isinstance(index, LayeredIndex) and index.ntotal == 530
        for i in range(30):
            assert reader.search(vecs[500 + i], 1)[0].product.product_id == f"n{i}"
    assert saved(root) == before
    writer.delete([f"p{i:03d}" for i in range(250)])  # 280 changed of 280 left
    assert isinstance(reader._current_index(), VectorIndex)
    assert reader.search(vecs[520], 1)[0].product.product_id == "n20"
    assert not {m.product.product_id for m in reader.search(vecs[0], 20)} & {"p000", "p001"}
    reader.close()
    writer.close()


def test_a_store_crossing_the_approximate_index_size_is_searched_before_its_rebuild(tmp_path,
                                                                                    monkeypatch):
    """Past ``ann_min_items`` the store's index is of another kind (flat → HNSW); until the
    server's rebuild saves one, searches layer on the flat index instead of each building
    the HNSW graph in the request; then they take the rebuilt one. And back."""
    vecs, _ = ClusterModel.create(DIM, 4, seed=0, rank=16).sample(600, seed=1)
    auto = IndexConfig.defaults(kind="auto", ann_min_items=505)
    store = EmbeddedStore(tmp_path / "store", create=True, index_config=auto)
    store.set_manifest(ModelManifest("test", "0" * 64, {"size": 8, "resize": "crop"}, DIM))
    store.lock_for_writing()
    store.upsert(records([f"p{i:03d}" for i in range(500)], vecs[:500]))
    store.flush()
    root = tmp_path / "store"
    assert [name.split(".")[2] for name in saved(root)] == [auto.tag(500)] == ["flat-fp32"]
    store.upsert(records([f"n{i}" for i in range(10)], vecs[500:510]))
    store.flush(rebuild=False)
    assert store.index_due() and [name.split(".")[2] for name in saved(root)] == ["flat-fp32"]
    reader = EmbeddedStore(root, index_config=auto)
    with monkeypatch.context() as patch:
        no_builds(patch)
        index = reader._current_index()
        assert isinstance(index, LayeredIndex) and index.base.kind == "flat"
        assert index.ntotal == 510
        for q in (3, 505):
            got = [m.product.product_id for m in reader.search(vecs[q], 10)]
            assert got == brute_force(reader, vecs[q], 10)  # flat + exact layer: exact
    store.rebuild_index()  # the server's rebuild
    store.close()
    assert [name.split(".")[2] for name in saved(root)] == [auto.tag(510)]
    index = reader._current_index()  # taken at the next search, without another write
    assert isinstance(index, VectorIndex) and index.kind == "hnsw"
    assert reader._files._layer is None  # the flat index and its layer are let go
    assert reader.search(vecs[505], 1)[0].product.product_id == "n5"
    writer = EmbeddedStore(root, index_config=auto)  # each API write opens its own
    writer.lock_for_writing()
    writer.upsert(records(["last"], vecs[510:511]))
    index = reader._current_index()
    assert isinstance(index, LayeredIndex) and index.base.kind == "hnsw"
    assert reader.search(vecs[510], 1)[0].product.product_id == "last"
    writer.delete([f"n{i}" for i in range(10)])  # 501 products: flat again
    writer.flush(rebuild=False)
    with monkeypatch.context() as patch:
        no_builds(patch)
        index = reader._current_index()
        assert isinstance(index, LayeredIndex) and index.base.kind == "hnsw"
        assert index.ntotal == 501
        assert reader.search(vecs[505], 1)[0].product.product_id != "n5"
    writer.close()
    reader.close()


def saved_generation(root: Path, kind: str) -> int:
    """The generation of the one saved index file of ``kind``."""
    gens = [int(name.split(".")[1]) for name in saved(root) if name.split(".")[2].startswith(kind)]
    assert len(gens) == 1, saved(root)
    return gens[0]


@pytest.mark.parametrize("case", ["crossing", "flat-past-limit", "another-process"])
def test_an_index_rebuilt_while_writes_came_is_searched_without_another_write(
        tmp_path, monkeypatch, case):
    """The server's rebuild saves its index under the generation of its snapshot: with writes
    during the build, that file was never the current generation's, and the server's
    searches kept the old base and a growing exact layer (a flat base at 50,000 products:
    16-24 ms a search instead of 1 ms) until the next write; a PATCH did not help
    (helper-210). The next search takes the rebuilt index, with the writes since layered on
    it; a rebuild saved by another process (a second server on the store) too."""
    vecs, _ = ClusterModel.create(DIM, 4, seed=0, rank=16).sample(620, seed=1)
    config = IndexConfig.defaults(kind="auto", ann_min_items=505 if case == "crossing"
                                  else 100_000)
    if case != "crossing":
        monkeypatch.setattr(index_files, "RECENT_MAX", 5)  # a writer's limit: 5 changes
    root = tmp_path / "store"
    seeded(root, config, vecs, 500)
    reader = EmbeddedStore(root, index_config=config)  # the server's

    def write(pid, row):  # as the server: a writer per write
        writer = EmbeddedStore(root, index_config=config)
        writer.lock_for_writing()
        writer.upsert(records([pid], vecs[row:row + 1]))
        writer.flush(rebuild=False)
        due = writer.index_due()
        writer.close()
        assert reader.search(vecs[row], 1)[0].product.product_id == pid
        return due

    assert [write(f"n{i}", 500 + i) for i in range(6)][-1]  # due: the rebuild starts
    rebuilder = EmbeddedStore(root, index_config=config)
    real_build = index_files.IndexFiles._build

    def build(self, n, batch=20_000):  # two writes land during the rebuild
        if self is rebuilder._files:
            write("during0", 600)
            write("during1", 601)
        return real_build(self, n, batch)

    monkeypatch.setattr(index_files.IndexFiles, "_build", build)
    before = dict(index_files._saves)  # this process's saves so far
    assert rebuilder.rebuild_index()
    rebuilder.close()
    if case == "another-process":  # its save not counted as this process's
        monkeypatch.setattr(index_files, "_saves", before)
    rebuilt = saved_generation(root, "hnsw" if case == "crossing" else "flat")
    assert rebuilt == reader.generation() - 2  # the file is not the current generation's
    with monkeypatch.context() as patch:
        no_builds(patch)
        index = reader._current_index()  # no write since the rebuild
        assert isinstance(index, LayeredIndex)
        assert reader._files._base[1] == rebuilt and index.base is reader._files._base[0]
        assert index.base.kind == ("hnsw" if case == "crossing" else "flat")
        assert index.base.ntotal == 506 and index.recent.ntotal == 2 and index.ntotal == 508
        for pid, row in (("during0", 600), ("during1", 601), ("n3", 503)):
            assert reader.search(vecs[row], 1)[0].product.product_id == pid
    reader.close()


def test_a_layered_index_is_looked_at_again_only_when_the_folder_changed(folder, monkeypatch):
    """Each search holding a layered index checks one stat of the folder (and this process's
    count of saved files): no listing of the folder and no new layer while nothing was saved
    there; after a change of the folder that saved no newer index, the same layer."""
    root, vecs = folder
    monkeypatch.setattr(index_files, "FOLDER_TICK_NS", 0)  # (the folder's time trusted)
    writer = EmbeddedStore(root, index_config=HNSW)
    writer.lock_for_writing()
    writer.upsert(records(["a", "b"], vecs[500:502]))
    writer.close()
    reader = EmbeddedStore(root, index_config=HNSW)
    index = reader._current_index()
    assert isinstance(index, LayeredIndex)
    looked = []
    real = index_files.IndexFiles.current
    monkeypatch.setattr(index_files.IndexFiles, "current",
                        lambda self, *a, **k: looked.append(1) or real(self, *a, **k))
    for _ in range(3):
        assert reader._current_index() is index and not looked
    (root / "unrelated.txt").write_text("x")  # the folder changed: looked at, same layer
    os.utime(root, ns=(time.time_ns(), time.time_ns() - 10**9))
    assert reader._current_index() is index and len(looked) == 1
    assert reader._current_index() is index and len(looked) == 1
    reader.close()


def test_another_settings_search_layers_on_the_index_of_the_current_generation(tmp_path,
                                                                              monkeypatch):
    """An index setting changed (VITRINE_INDEX=hnsw, a lower ANN_MIN_ITEMS, HNSW_M, ...) on a
    store not written since its index was saved: the first search built the HNSW graph in
    the request or command, holding the store (7 s in `vitrine similar`, 11 s in the server
    at 50,000 products), since only an older file of the other kind was a base to layer on
    (helper-210). It layers on the saved index with an empty layer; the next writer builds
    the graph (`vitrine index`; the server beside its requests)."""
    vecs, _ = ClusterModel.create(DIM, 4, seed=0, rank=16).sample(600, seed=1)
    auto = IndexConfig.defaults(kind="auto")
    root = tmp_path / "store"
    seeded(root, auto, vecs, 500, flush=False)
    reader = EmbeddedStore(root, index_config=auto)  # `vitrine similar`: builds the flat
    assert isinstance(reader._current_index(), VectorIndex)  # index and saves it
    reader.close()
    flat = saved(root)
    assert [name.split(".")[2] for name in flat] == ["flat-fp32"]
    for config in (HNSW, IndexConfig.defaults(kind="auto", ann_min_items=100),
                   IndexConfig.defaults(kind="hnsw", hnsw_m=8, hnsw_ef_construction=40)):
        reader = EmbeddedStore(root, index_config=config)
        index = layered_without_build(reader, monkeypatch)
        assert index.base.kind == "flat" and index.ntotal == 500 and index.recent.ntotal == 0
        got = [m.product.product_id for m in reader.search(vecs[7], 10)]
        assert got == brute_force(reader, vecs[7], 10)  # an exact base: exact
        reader.close()
        assert saved(root) == flat
    reader = EmbeddedStore(root, index_config=HNSW)  # the server's reader
    layered_without_build(reader, monkeypatch)
    writer = EmbeddedStore(root, index_config=HNSW)  # its next write: due, rebuilt beside
    writer.lock_for_writing()
    writer.upsert(records(["new"], vecs[500:501]))
    writer.flush(rebuild=False)
    assert writer.index_due()
    writer.rebuild_index()
    writer.close()
    index = reader._current_index()
    assert isinstance(index, VectorIndex) and index.kind == "hnsw" and index.ntotal == 501
    reader.close()
    reader = EmbeddedStore(root, index_config=auto)  # flat by its size: it stays exact
    index = reader._current_index()  # (its build takes seconds: not layered on the graph)
    assert isinstance(index, VectorIndex) and index.kind == "flat" and index.ntotal == 501
    reader.close()
    store = EmbeddedStore(root, index_config=IndexConfig.defaults(kind="hnsw", hnsw_m=8))
    store.lock_for_writing()  # `vitrine index` with other settings builds its own
    store.flush()
    assert isinstance(store._current_index(), VectorIndex)
    assert any(name.split(".")[2].startswith("hnsw8x") for name in saved(root))
    store.close()


def test_a_reader_told_another_kind_does_not_layer_on_the_saved_one(folder, monkeypatch):
    """VITRINE_INDEX=flat over a store whose saved index is an HNSW graph, written since: the
    search layered on the graph (approximate, for as long as the server wrote and no flat
    index was saved: helper-148); it is exact. Told `hnsw` with other parameters, a reader
    still layers on the saved graph rather than build one in its search."""
    root, vecs = folder
    writer = EmbeddedStore(root, index_config=HNSW)
    writer.lock_for_writing()
    writer.upsert(records([f"n{i}" for i in range(10)], vecs[500:510]))
    writer.flush(rebuild=False)  # an API write: nothing built
    writer.close()
    other = IndexConfig.defaults(kind="hnsw", hnsw_m=8)
    assert other.tag(510) != HNSW.tag(510)
    reader = EmbeddedStore(root, index_config=other)
    assert layered_without_build(reader, monkeypatch).base.kind == "hnsw"
    reader.close()
    flat = IndexConfig.defaults(kind="flat")
    graph = saved(root)
    reader = EmbeddedStore(root, index_config=flat)
    index = reader._current_index()
    assert isinstance(index, VectorIndex) and index.kind == "flat" and index.ntotal == 510
    for q in (3, 77, 505):
        got = [m.product.product_id for m in reader.search(vecs[q], 20)]
        assert got == brute_force(reader, vecs[q], 20)
    reader.close()
    # its build is saved beside the store's graph, not over it (helper-150: the next
    # writer then rebuilt the graph, minutes on a large store, instead of layering)
    assert set(graph) < set(saved(root)) and len(saved(root)) == 2
    writer = EmbeddedStore(root, index_config=HNSW)
    writer.lock_for_writing()
    with monkeypatch.context() as patch:
        no_builds(patch)
        writer.upsert(records(["w"], vecs[510:511]))
        writer.flush()
        assert isinstance(writer._current_index(), LayeredIndex)
    writer.close()
    # a reader told an approximate kind layers on an exact index (helper-150: it built the
    # graph in its search where it used to layer)
    exact = EmbeddedStore(root, index_config=flat)
    exact.lock_for_writing()
    exact.upsert(records(["v"], vecs[511:512]))
    exact.flush()  # a flat index of this generation, the graph's older
    exact.upsert(records(["u"], vecs[512:513]))
    exact.flush(rebuild=False)
    exact.close()
    for files in saved(root):
        if "hnsw" in files:
            (root / files).unlink()
    reader = EmbeddedStore(root, index_config=HNSW)
    assert layered_without_build(reader, monkeypatch).base.kind == "flat"
    assert reader.search(vecs[512], 1)[0].product.product_id == "u"
    reader.close()


def test_a_long_running_reader_layers_on_the_other_kind_when_its_own_is_stale(tmp_path,
                                                                            monkeypatch):
    """A server's reader holding an HNSW index the store's writes have since left behind (the
    store shrank below the approximate index's size and grew back, the changes the old index
    needed forgotten) built the HNSW graph in its search, though the flat index rebuilt
    meanwhile was there to layer on (helper-65). A flat store's reader past twice the
    writer's limit still rebuilds its flat index itself: seconds, and the layer is not read
    again at every write."""
    vecs, _ = ClusterModel.create(DIM, 4, seed=0, rank=16).sample(700, seed=1)
    auto = IndexConfig.defaults(kind="auto", ann_min_items=300)
    root = tmp_path / "store"
    seeded(root, auto, vecs, 310)
    reader = EmbeddedStore(root, index_config=auto)
    assert reader._current_index().kind == "hnsw"

    def write(change):  # as the server: a writer per write, its rebuild beside
        writer = EmbeddedStore(root, index_config=auto)
        writer.lock_for_writing()
        change(writer)
        writer.flush(rebuild=False)
        if writer.index_due():
            writer.rebuild_index()
        writer.close()

    write(lambda w: w.delete([f"p{i:03d}" for i in range(20)]))  # 290: flat, rebuilt
    write(lambda w: w.upsert(records(["x0"], vecs[400:401])))  # prunes the changes
    write(lambda w: w.delete(["x0"]))
    grown = [f"q{i}" for i in range(20)]
    store = EmbeddedStore(root, index_config=auto)
    store.lock_for_writing()
    store.upsert(records(grown, vecs[500:520]))  # 310 again: no HNSW index saved yet
    store.close()
    assert layered_without_build(reader, monkeypatch).base.kind == "flat"
    assert reader.search(vecs[505], 1)[0].product.product_id == "q5"
    reader.close()

    flat = IndexConfig.defaults(kind="flat")
    monkeypatch.setattr(index_files, "RECENT_MAX", 2)
    store = EmbeddedStore(root, index_config=flat)
    store.lock_for_writing()
    store.flush()
    store.upsert(records([f"r{i}" for i in range(20)], vecs[600:620]))  # 20 > 2 × 2
    store.close()
    reader = EmbeddedStore(root, index_config=flat)
    index = reader._current_index()
    assert isinstance(index, VectorIndex) and index.kind == "flat" and index.ntotal == 330
    reader.close()


def test_the_changes_an_index_rebuilt_beside_the_server_covers_are_forgotten(folder,
                                                                             monkeypatch):
    """The server's rebuild saves its index without the writer lock, so it kept every
    change: the table grew by a row for each product ever written (soak: 3,659 rows for
    2,230 products). The next write's flush forgets what the saved index covers, and the
    searches stay right."""
    root, vecs = folder
    monkeypatch.setattr(index_files, "RECENT_MAX", 5)
    rebuilds = 0
    for i in range(60):  # what the server does: a new writer per write, the rebuild beside
        writer = EmbeddedStore(root, index_config=HNSW)
        writer.lock_for_writing()
        writer.upsert(records([f"n{i}"], vecs[500 + i:501 + i]))
        writer.delete([f"p{i:03d}"])
        writer.flush(rebuild=False)
        if writer.index_due():
            rebuilder = EmbeddedStore(root, index_config=HNSW)
            rebuilder.rebuild_index()
            rebuilder.close()
            rebuilds += 1
        writer.close()
    store = EmbeddedStore(root, index_config=HNSW)
    kept = store.db.execute("SELECT COUNT(*) FROM changes").fetchone()[0]
    assert rebuilds >= 10 and kept <= 2 * 6, kept  # (120 rows before)
    for i in (0, 31, 59):
        assert store.search(vecs[500 + i], 1)[0].product.product_id == f"n{i}"
    assert not {m.product.product_id for m in store.search(vecs[0], 50)} & {"p000", "p030"}
    store.close()


def test_a_readers_layer_takes_only_the_rows_written_since_its_last(folder):
    """At each write a reader read every row changed since the saved index again (0.5 s a
    write at 19,000 rows; seconds for half a large store): it now adds the rows written since
    its last layer, and the layer is the one a new reader reads whole: the same ids, vectors
    and hidden rows, through adds, replaced photos, deletes and an id added again."""
    root, vecs = folder
    reader = EmbeddedStore(root, index_config=HNSW)
    reader.search(vecs[0], 1)
    writer = EmbeddedStore(root, index_config=HNSW)
    writer.lock_for_writing()
    rng = np.random.default_rng(3)
    statements = []
    reader.db.set_trace_callback(statements.append)
    for step in range(25):
        kind = step % 4
        if kind == 0:
            writer.upsert(records([f"n{step}"], vecs[500 + step:501 + step]))
        elif kind == 1:  # a replaced photo, of a product of the saved index or a new one
            pid = f"p{rng.integers(500):03d}" if step % 8 == 1 else f"n{step - 1}"
            writer.upsert(records([pid], vecs[550 + step:551 + step]))
        elif kind == 2:
            writer.delete([f"p{rng.integers(500):03d}", f"n{step - 2}"])
        else:  # deleted, then added again
            writer.upsert(records([f"n{step - 3}"], vecs[575 + step // 4:576 + step // 4]))
        statements.clear()
        layered = reader._current_index()
        since = [q for q in statements if "FROM changes c" in q]
        assert len(since) == 1 and f"c.gen > {writer.generation() - 1}" in since[0]
        fresh = EmbeddedStore(root, index_config=HNSW)
        whole = fresh._current_index()
        assert isinstance(layered, LayeredIndex) and isinstance(whole, LayeredIndex)
        assert np.array_equal(layered.hidden.ids, whole.hidden.ids)
        mine, theirs = (index_files._layer_rows(x.recent) for x in (layered, whole))
        assert sorted(mine[0]) == sorted(theirs[0])  # each row once
        theirs_by_id = dict(zip(*theirs, strict=True))
        assert all(np.array_equal(v, theirs_by_id[i]) for i, v in zip(*mine, strict=True))
        assert layered.ntotal == whole.ntotal == fresh.count()
        fresh.close()
    reader.db.set_trace_callback(None)
    assert reader.search(vecs[575 + 23 // 4], 1)[0].product.product_id == "n20"
    reader.close()
    writer.close()


def test_one_process_at_a_time_rebuilds_the_index(folder, monkeypatch):
    """Two servers on one store each rebuilt the same index beside their requests (minutes
    of every core at 300,000 products): while one rebuilds, the other's rebuild does
    nothing and says so; after it, the next one rebuilds."""
    from vitrine.store.writer_lock import rebuild_lock

    root, vecs = folder
    monkeypatch.setattr(index_files, "RECENT_MAX", 1)
    writer = EmbeddedStore(root, index_config=HNSW)
    writer.lock_for_writing()
    writer.upsert(records(["a", "b"], vecs[500:502]))
    writer.flush(rebuild=False)
    assert writer.index_due()
    before = saved(root)
    other = EmbeddedStore(root, index_config=HNSW)
    with rebuild_lock(root) as mine:  # another server's rebuild thread, say
        assert mine
        assert other.rebuild_index() is False and saved(root) == before
    assert other.rebuild_index() is True and saved(root) != before
    assert not writer.index_due()
    other.close()
    writer.close()


def test_a_write_that_did_not_record_its_rows_means_a_rebuild(folder):
    """A Vitrine from before the ``changes`` table writes a vector and bumps the generation:
    the saved index cannot be brought up to date from the changes, so it is rebuilt."""
    root, vecs = folder
    store = EmbeddedStore(root, index_config=HNSW)
    with store.db:  # what an older Vitrine's upsert did
        store.db.execute("UPDATE products SET vector=? WHERE product_id='p004'",
                         (vecs[599].tobytes(),))
        store.db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 "
                         "WHERE key='generation'")
    assert isinstance(store._current_index(), VectorIndex)
    assert store.search(vecs[599], 1)[0].product.product_id == "p004"
    store.close()
    store = EmbeddedStore(root, index_config=HNSW)  # and the next write starts afresh
    store.lock_for_writing()
    store.upsert(records(["p005"], vecs[598:599]))
    assert store.db.execute("SELECT value FROM meta WHERE key='changes_from'").fetchone()[0] \
        == str(store.generation())
    assert store.search(vecs[598], 1)[0].product.product_id == "p005"
    store.close()


def test_a_reader_never_layers_on_an_index_older_than_the_changes_kept(folder, monkeypatch):
    """A writer that rebuilds forgets the changes its index covers: a reader still holding an
    older index rebuilds rather than miss them; and a writer whose files were removed (by a
    process with another index configuration) saves the index it holds when it flushes."""
    root, vecs = folder
    monkeypatch.setattr(index_files, "RECENT_MAX", 2)
    reader = EmbeddedStore(root, index_config=HNSW)
    reader.search(vecs[0], 1)  # holds the saved index
    writer = EmbeddedStore(root, index_config=HNSW)
    writer.lock_for_writing()
    writer.upsert(records(["a1", "a2", "a3"], vecs[500:503]))
    writer.flush()  # 3 changed, more than 2: rebuilt, its changes forgotten

    def remove_files():
        for path in root.glob("index.*.faiss"):
            path.unlink()

    remove_files()
    writer.upsert(records(["a4"], vecs[503:504]))
    assert isinstance(reader._current_index(), VectorIndex)  # not its old index + 1 change
    for i, pid in enumerate(["a1", "a2", "a3", "a4"]):
        assert reader.search(vecs[500 + i], 1)[0].product.product_id == pid
    writer.upsert(records(["a5"], vecs[504:505]))
    remove_files()
    writer.flush()
    assert len(saved(root)) == 1  # the index the writer rebuilt, saved again
    fresh = EmbeddedStore(root, index_config=HNSW)
    assert isinstance(fresh._current_index(), LayeredIndex)
    assert [fresh.search(vecs[500 + i], 1)[0].product.product_id for i in range(5)] == [
        "a1", "a2", "a3", "a4", "a5"]
    for store in (reader, writer, fresh):
        store.close()


def test_a_large_category_reused_ids_and_exclude_through_the_layer(folder):
    """A category above ``filter_exact_max`` goes through the approximate index's wide
    search, filtered; a row id SQLite hands out again after a delete is the new product's."""
    root, vecs = folder
    config = IndexConfig.defaults(kind="hnsw", filter_exact_max=10)
    writer = EmbeddedStore(root, index_config=config)
    writer.lock_for_writing()
    last = writer.db.execute("SELECT MAX(id) FROM products").fetchone()[0]
    writer.delete(["p499"])
    writer.upsert(records(["reused"], vecs[500:501]))
    assert writer.db.execute("SELECT id FROM products WHERE product_id='reused'"
                             ).fetchone()[0] == last
    writer.upsert(records([f"p{i:03d}" for i in range(20, 40)], vecs[520:540]))  # replaced
    reader = EmbeddedStore(root, index_config=config)
    assert isinstance(reader._current_index(), LayeredIndex)
    assert reader.search(vecs[499], 1, category="c")[0].product.product_id != "p499"
    assert reader.search(vecs[500], 1, category="c")[0].product.product_id == "reused"
    recall = []
    for q in (*range(20, 40), *range(100, 400, 15)):
        vec = vecs[500 + q] if q < 40 else vecs[q]
        pid = f"p{q:03d}"
        got = [m.product.product_id for m in reader.search(vec, 10, category="c", exclude=pid)]
        assert pid not in got and "p499" not in got and len(set(got)) == 10
        want = [p for p in brute_force(reader, vec, 11) if p != pid][:10]
        recall.append(len(set(got) & set(want)) / 10)
    assert np.mean(recall) >= 0.95
    reader.close()
    writer.close()


@pytest.mark.parametrize("older", [False, True], ids=["backup", "backup-before-changes"])
def test_a_restored_database_neither_reads_nor_layers_on_the_abandoned_copys_files(folder,
                                                                                  older):
    """The approximate index's files left by the copy of the database that a backup replaced
    are neither this database's current index nor a base to layer its writes on (``older``:
    a backup written by a Vitrine from before writes recorded their rows)."""
    import shutil
    import sqlite3

    root, vecs = folder
    shutil.copyfile(root / "vitrine.sqlite", root.parent / "backup.sqlite")
    if older:
        db = sqlite3.connect(root.parent / "backup.sqlite")
        with db:
            db.execute("DELETE FROM meta WHERE key IN ('tracked', 'changes_from', "
                       "'changes_pruned')")
            db.execute("DELETE FROM changes")
        db.close()  # its write-ahead log into the file, which alone is copied back
    store = EmbeddedStore(root, index_config=HNSW)
    store.lock_for_writing()
    store.upsert(records([f"p{i:03d}" for i in range(500, 540)], vecs[500:540]))
    for path in root.glob("index.*.faiss"):
        path.unlink()
    store.flush()  # the abandoned copy's own index file, of its second write
    store.close()
    assert len(saved(root)) == 1
    for leftover in root.glob("vitrine.sqlite*"):
        leftover.unlink()
    shutil.copyfile(root.parent / "backup.sqlite", root / "vitrine.sqlite")
    store = EmbeddedStore(root, index_config=HNSW)
    store.lock_for_writing()
    store.upsert(records([f"q{i:03d}" for i in range(20)], vecs[540:560]))
    for query in (*vecs[520:540], *vecs[540:545]):  # rows only the abandoned copy has, new
        got = [m.product.product_id for m in store.search(query, 5)]
        assert got == brute_force(store, query, 5)
    store.close()


def test_a_category_search_looks_past_the_replaced_photos_in_the_saved_index(folder):
    """The 12 nearest products to a query get photos that point the other way: the saved
    index still ranks their old vectors first, so a category search must ask it for more
    than its first few rows, and still return the true top 5 (not the query and 4 of the
    moved products)."""
    root, vecs = folder
    query = vecs[0]
    near = np.argsort(-(vecs[:500] @ query))[1:13]
    writer = EmbeddedStore(root, index_config=HNSW)
    writer.lock_for_writing()
    writer.upsert(records([f"p{i:03d}" for i in near], -vecs[near]))
    reader = EmbeddedStore(root, index_config=HNSW)
    assert isinstance(reader._current_index(), LayeredIndex)
    got = [m.product.product_id for m in reader.search(query, 5, category="c")]
    assert got == brute_force(reader, query, 5)
    assert not {f"p{i:03d}" for i in near} & set(got)
    reader.close()
    writer.close()


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_a_batch_of_searches_finds_what_each_search_finds(folder, kind):
    """``search_many`` (one index call for many queries: `vitrine related`) answers each
    query as ``search`` does: on a saved index of each kind, on a layered one (writes since
    it), in every category, in a large one (HNSW: approximate, then exact when short), in a
    small one (exact) and in one the store lacks, each query without its own product."""
    root, vecs = folder
    config = IndexConfig.defaults(kind=kind, filter_exact_max=50)
    store = EmbeddedStore(root, index_config=config)
    store.lock_for_writing()
    store.rebuild_index()
    queries = vecs[::7][:60]
    own = [f"p{i * 7:03d}" for i in range(60)]
    for layered in (False, True):
        if layered:  # written since the saved index: searched from its layer
            store.upsert(records([f"new{i}" for i in range(20)], vecs[500:520], category="novo"))
            store.delete(["p007", "p014"])
            store.flush(rebuild=False)
            if kind != "ivf":  # (IVF lists follow the store size: this write rebuilds it)
                assert isinstance(store._current_index(), LayeredIndex)
        for category in (None, "c", "novo", "nada"):
            many = store.search_many(queries, 10, category=category, exclude=own)
            one = [store.search(q, 10, category=category, exclude=pid)
                   for q, pid in zip(queries, own, strict=True)]
            assert [[m.product.product_id for m in r] for r in many] == \
                [[m.product.product_id for m in r] for r in one], (layered, category)
            assert np.allclose([m.score for r in many for m in r],
                               [m.score for r in one for m in r], atol=1e-5)
            assert all(pid not in {m.product.product_id for m in r}
                       for pid, r in zip(own, many, strict=True))
            lacks = category == "nada" or category == "novo" and not layered
            assert {len(r) for r in many} == {0 if lacks else 10}, (layered, category)
    assert store.search_many(queries[:0], 10) == []
    store.close()


def test_a_layer_still_right_is_kept_when_another_kind_is_saved_beside_it(tmp_path,
                                                                          monkeypatch):
    """A reader flat by size, holding a layer on the flat index, looked again after another
    process (`VITRINE_INDEX=hnsw vitrine index`, nothing new to index) saved its HNSW graph
    and removed the flat file: it built its whole flat index inside the search, where its
    layer was still right for the generation (helper-186). It keeps that layer now."""
    vecs, _ = ClusterModel.create(DIM, 4, seed=0, rank=16).sample(600, seed=1)
    root = tmp_path / "store"
    auto = IndexConfig.defaults(kind="auto")
    seeded(root, auto, vecs, 500)
    writer = EmbeddedStore(root, index_config=auto)
    writer.lock_for_writing()
    writer.upsert(records(["n1"], vecs[500:501]))
    writer.flush(rebuild=False)
    writer.close()
    reader = EmbeddedStore(root, index_config=auto)  # the server: flat by size
    assert isinstance(reader._current_index(), LayeredIndex)
    monkeypatch.setattr(index_files, "FOLDER_TICK_NS", 0)  # (the folder's change seen now)
    hnsw = EmbeddedStore(root, index_config=IndexConfig.defaults(kind="hnsw"))
    hnsw.lock_for_writing()
    hnsw.flush()
    hnsw.close()
    assert not any("flat" in name for name in saved(root))
    no_builds(monkeypatch)
    looked = []
    real = index_files.IndexFiles.current
    monkeypatch.setattr(index_files.IndexFiles, "current",
                        lambda self, *a, **k: looked.append(1) or real(self, *a, **k))
    assert reader.search(vecs[500], 3)[0].product.product_id == "n1"
    assert isinstance(reader._index, LayeredIndex) and len(looked) == 1
    assert reader.search(vecs[500], 3)[0].product.product_id == "n1"
    assert len(looked) == 1  # (the folder's time trusted at once: not looked at again)
    reader.close()
