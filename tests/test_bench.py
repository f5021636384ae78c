"""`vitrine bench`: the JSON contract, the synthetic vectors, the user error."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import faiss
import numpy as np
import pytest

from vitrine.bench import (
    ClusterModel,
    TopK,
    bench_images,
    bench_lines,
    machine,
    recall_at_k,
    run_bench,
    synthetic_chunks,
)
from vitrine.config import Settings
from vitrine.errors import VitrineError

CLI = [sys.executable, "-m", "vitrine.cli"]
KEYS = {"p50_ms", "p99_ms", "recall_at_10", "build_seconds", "index_bytes", "rss_mb"}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "VITRINE_INDEX": "auto"})


def test_bench_items_json_keys():
    proc = run("bench", "--items", "2000", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert set(report) >= KEYS | {"machine", "search"}
    assert report["recall_at_10"] == 1.0  # 2,000 items stay below ann_min_items: exact
    assert report["search"]["index"] == "flat-fp32" and report["index_bytes"] >= 2000 * 1280 * 4
    assert report["p99_ms"] >= report["p50_ms"] > 0


def test_bench_items_with_a_forced_approximate_index():
    report = run_bench(Settings(index="hnsw", index_fp16=True), items=3000)
    assert report["search"]["index"] == "hnsw32x64-fp16"
    assert report["recall_at_10"] >= 0.95
    assert report["index_bytes"] < 3000 * 1280 * 4


def test_bench_without_a_target_is_one_sentence(monkeypatch, capsys):
    from vitrine.cli import main

    monkeypatch.setattr(sys, "argv", ["vitrine", "bench"])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: ")
    assert len(err.strip().splitlines()) == 1


def test_synthetic_vectors_look_like_product_embeddings():
    """At the demo catalogue's size the neighbour statistics match its real embeddings
    (nearest 0.83, 10th 0.77, random pairs 0.46)."""
    vecs, labels = ClusterModel.create(1280, 8, seed=0).sample(1016, seed=1)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    scores, _ = faiss.knn(vecs, vecs, 11, metric=faiss.METRIC_INNER_PRODUCT)
    assert 0.78 <= scores[:, 1].mean() <= 0.88 and 0.72 <= scores[:, 10].mean() <= 0.82
    random_pairs = (vecs[:500] * vecs[500:1000]).sum(axis=1).mean()
    assert 0.38 <= random_pairs <= 0.52 and len(set(labels)) == 8


def test_the_chunk_patched_in_the_module_is_the_default(monkeypatch):
    """``synthetic_chunks(chunk=CHUNK)`` took the constant as the module was imported:
    patching ``vitrine.bench.CHUNK`` (a small machine's memory) changed nothing."""
    import vitrine.bench

    monkeypatch.setattr(vitrine.bench, "CHUNK", 1000)
    model = ClusterModel.create(64, 4, seed=0)
    assert [len(ids) for ids, _, _ in synthetic_chunks(model, 2500, seed=1)] == [1000, 1000, 500]


def test_chunks_are_reproducible_and_streamed_top_k_is_exact():
    model = ClusterModel.create(64, 4, seed=0)
    a = list(synthetic_chunks(model, 2500, seed=1, chunk=1000))
    b = list(synthetic_chunks(model, 2500, seed=1, chunk=1000))
    assert [len(ids) for ids, _, _ in a] == [1000, 1000, 500]
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True))
    queries, _ = model.sample(20, seed=9)
    top = TopK(queries, 10)
    for ids, vecs, _ in a:
        top.add(ids, vecs)
    _, want = faiss.knn(queries, np.concatenate([v for _, v, _ in a]), 10,
                        metric=faiss.METRIC_INNER_PRODUCT)
    assert recall_at_k(top.ids, want, 10) == 1.0
    # fewer items than k: FAISS pads with -1, which is neither a hit nor a miss
    padded = np.array([[3, 1, -1, -1], [2, 0, -1, -1]])
    assert recall_at_k(padded, np.array([[1, 3, -1, -1], [2, 1, -1, -1]]), 4) == 0.75


def test_bench_images_whole_pipeline(small_catalog, settings):
    report = bench_images(small_catalog, settings.model_copy(update={"engine": "torch"}))
    assert report["embedded"] == report["products"] == 48 and report["skipped"] == 0
    assert report["images_per_second"] > 0 and report["index_seconds"] > 0
    # the terminal says photos skipped too (only the JSON did)
    for skipped, says in ((0, "48 products in "), (3, "48 products (3 skipped) in ")):
        lines = bench_lines({"machine": machine(),
                             "embedding": {**report, "skipped": skipped}})
        assert lines[1].startswith(f"embedded 48 photos for {says}")


def test_bench_images_of_photos_none_can_read_is_an_error(settings, tmp_path):
    """It reported 0.0 images/s and exited 0."""
    (tmp_path / "cat").mkdir()
    for name in ("a.jpg", "b.png"):
        (tmp_path / "cat" / name).write_bytes(b"not a photo")
    with pytest.raises(VitrineError, match=r"none of the photos of the 2 products in .* "
                                           r"could be embedded \(.*a\.jpg: .*\); nothing"):
        bench_images(tmp_path / "cat", settings)


def test_a_bad_images_folder_or_model_is_said_before_the_search_is_measured(tmp_path,
                                                                            monkeypatch):
    """`--items N --images BAD` measured the search (16 minutes at a million) and then said
    the folder did not exist, or the weights could not be loaded, the figures lost."""
    from PIL import Image

    from vitrine import bench
    from vitrine.errors import CatalogError, WeightsError

    def measured(*args, **kwargs):
        raise AssertionError("the search was measured first")

    monkeypatch.setattr(bench, "bench_items", measured)
    with pytest.raises(CatalogError, match="does not exist"):
        run_bench(Settings(), items=1000, images=tmp_path / "missing")
    (tmp_path / "cat").mkdir()  # nor a model that cannot be loaded
    Image.new("RGB", (8, 8)).save(tmp_path / "cat" / "a.jpg")
    with pytest.raises(WeightsError):
        run_bench(Settings(weights=tmp_path / "missing.pth"), items=1000,
                  images=tmp_path / "cat")
    # nor photos none of which can be embedded (the folder alone was checked)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "c1.jpg").write_bytes(b"not a photo")
    with pytest.raises(VitrineError, match=r"could be embedded \(.*c1\.jpg: not a recognised "
                                           r"image format\); nothing to measure\.$"):
        run_bench(Settings(), items=1000, images=tmp_path / "bad")


def test_bench_items_refuses_what_cannot_be_measured_before_building(tmp_path, monkeypatch):
    """A weights file that does not exist was measured without a word (the vectors need only
    the backbone's size); an index larger than the machine's memory grew until the system
    stopped it; memory refused later advised the embedding settings, which bench --items
    does not use."""
    from vitrine import bench
    from vitrine.errors import WeightsError

    with pytest.raises(WeightsError, match="missing.pth does not exist"):
        run_bench(Settings(weights=tmp_path / "missing.pth", model=None), items=10)
    memory = bench.machine()["memory_gb"]
    n = int(memory * 2**30 / (1280 * 4)) + 1  # the flat fp32 vectors alone are too many
    monkeypatch.setattr(bench, "_bench_items", lambda *a: pytest.fail("built"))
    with pytest.raises(VitrineError, match=rf"--items {n:,} needs about .* GiB for its "
                                           r"flat-fp32 index alone, .* or set "
                                           r"VITRINE_INDEX_FP16=true\.$"):
        run_bench(Settings(index="flat", index_fp16=False, model=None), items=n)
    # with --images too: refused before the photos are embedded (minutes), not after
    monkeypatch.setattr(bench, "bench_images", lambda *a, **k: pytest.fail("embedded"))
    with pytest.raises(VitrineError, match=rf"--items {n:,} needs about"):
        run_bench(Settings(index="flat", index_fp16=False, model=None), items=n,
                  images=tmp_path)
    assert bench.index_size(bench.IndexConfig.defaults(kind="flat"), n, 1280) > memory * 2**30

    def refused(*args):
        raise MemoryError("Unable to allocate 244. MiB")

    monkeypatch.setattr(bench, "_bench_items", refused)
    with pytest.raises(VitrineError, match=r"refused memory for --items 1,000 .* lower --items"):
        run_bench(Settings(), items=1000)


def test_build_seconds_are_the_index_s_alone(monkeypatch):
    """`build_seconds` counted making the synthetic vectors and their exact answers, which
    the generator did inside the timed build: 17.4 s for a flat index built in 0.33 s.
    Making the vectors moves the bench's clock on by ``pause`` seconds here (a sleep of 0.4
    s was not far enough above a build of 1,000 on a busy machine: ./scripts/floors beside
    other work)."""
    import time
    import types

    from vitrine import bench

    pause, skew = 1000.0, [0.0]
    monkeypatch.setattr(bench, "time", types.SimpleNamespace(
        perf_counter=lambda: time.perf_counter() + skew[0]))
    made = bench.synthetic_chunks

    def slow(*args, **kwargs):
        for chunk in made(*args, **kwargs):
            skew[0] += pause
            yield chunk

    monkeypatch.setattr(bench, "synthetic_chunks", slow)
    sampled = bench.ClusterModel.sample

    def slow_sample(self, m, seed):  # IVF trains on a sample made apart
        if seed == 20_011:  # (bench_items' training sample; seed 0)
            skew[0] += pause
        return sampled(self, m, seed=seed)

    monkeypatch.setattr(bench.ClusterModel, "sample", slow_sample)
    for kind, making in (("flat", pause), ("ivf", 2 * pause)):
        report = bench.bench_items(1000, Settings(index=kind), queries=20)
        assert report["vectors_seconds"] >= making and pause > report["build_seconds"] >= 0, \
            report
        assert report["query_threads"] == 1 and report["build_threads"] >= 1
        line = next(x for x in bench_lines({"machine": machine(), "search": report})
                    if "built in" in x)
        assert f"made in {report['vectors_seconds']:.1f} s more" in line


def test_the_sweep_names_the_breadth_each_row_ran_with():
    """A search runs with efSearch at least k and nprobe at most the lists: rows labelled
    efSearch 2 and 4 ran at 10, and said the same recall as the headline, which did not
    name its own breadth."""
    from vitrine.bench import bench_items

    hnsw = bench_items(500, Settings(index="hnsw", hnsw_ef_search=8))
    assert hnsw["efSearch"] == 10
    assert [row["efSearch"] for row in hnsw["sweep"]] == [16, 32]
    ivf = bench_items(500, Settings(index="ivf", ivf_nprobe=16))
    lists = int(ivf["index"].removeprefix("ivf").split("-")[0])
    assert ivf["nprobe"] == min(16, lists)
    values = [row["nprobe"] for row in ivf["sweep"]]
    assert len(set(values)) == len(values) and max(values) <= lists
    assert ivf["nprobe"] not in values


def test_the_index_size_estimate_agrees_with_the_measured_indexes():
    """`bench --items` refuses a count whose index cannot fit the machine from
    :func:`bench.index_size`: within 0.5% of what the README's runs measured (HNSW, IVF and
    flat, 1,280-d and 2,440-d), and 2.8 KB / 5.1 KB per 1,280-d vector as the README says."""
    from pathlib import Path

    from vitrine import bench

    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    for name in ("bench_items_1m.json", "bench_items_1m_trained.json",
                 "bench_items_1m_ivf.json", "bench_items_100k_flat.json",
                 "bench_items_100k_hnsw.json"):
        run = json.loads((results / name).read_text())
        measured = run.get("search", run)  # (the IVF run's figures sit at the top level)
        kind = measured["index"].split("-")[0].rstrip("0123456789x")
        config = bench.IndexConfig.defaults(kind=kind, fp16=measured["index"].endswith("fp16"))
        assert config.tag(measured["items"]) == measured["index"], name
        estimate = bench.index_size(config, measured["items"], measured["dim"])
        assert abs(estimate / measured["index_bytes"] - 1) < 0.005, name
    per = {kind: bench.index_size(bench.IndexConfig.defaults(kind=kind, fp16=fp16), 1, 1280)
           for kind, fp16 in (("hnsw", True), ("flat", False))}
    assert (round(per["hnsw"] / 1000, 1), round(per["flat"] / 1000, 1)) == (2.8, 5.1)
