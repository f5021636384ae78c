"""`vitrine bench`: index build and search figures on synthetic clustered vectors, and
whole-pipeline embedding throughput on real photos.

The synthetic vectors imitate product embeddings rather than uniform noise (on which nearest
neighbours are meaningless): a few clusters ("categories") around a shared mean direction,
each spread over a low-dimensional subspace plus isotropic noise, L2-normalised. With the
defaults, 1,016 of them have the neighbour statistics of the demo catalogue's MobileNetV2
embeddings (mean cosine to the nearest neighbour 0.82 vs 0.83, to the 10th 0.77 vs 0.77, between
random pairs 0.45 ± 0.13 vs 0.47 ± 0.14). The vectors have the configured model's dimension
(:func:`model_dim`): at 2,440-d, the demo's trained model, the same parameters give 0.84 / 0.79
/ 0.48 ± 0.15, where that model's embeddings of the demo photos are tighter (0.91 / 0.87 /
0.45 ± 0.17): neighbours stand out more from random pairs in the real vectors. Both
comparisons: benchmarks/neighbour_stats.py.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import faiss
import numpy as np

from vitrine.ann import IndexConfig, VectorIndex, build_index
from vitrine.config import Settings
from vitrine.errors import VitrineError, resources_refused

CHUNK = 50_000


@dataclass(frozen=True)
class ClusterModel:
    """Parameters of the synthetic clustered vectors (see the module docstring)."""

    centres: np.ndarray
    basis: np.ndarray
    scales: np.ndarray
    weights: np.ndarray
    spread: float = 0.7
    noise: float = 0.35

    @classmethod
    def create(cls, dim: int, clusters: int, seed: int = 0, rank: int = 64,
               mean_weight: float = 1.3) -> ClusterModel:
        rng = np.random.default_rng(seed)
        mean = rng.normal(size=dim)
        mean /= np.linalg.norm(mean)
        centres = mean * mean_weight + rng.normal(size=(clusters, dim)) / np.sqrt(dim)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        basis, _ = np.linalg.qr(rng.normal(size=(dim, rank)))
        scales = rng.lognormal(0.0, 1.0, size=(clusters, rank))
        scales /= np.linalg.norm(scales, axis=1, keepdims=True)
        weights = rng.lognormal(0.0, 0.7, size=clusters)
        return cls(centres.astype(np.float32), np.ascontiguousarray(basis.T, np.float32),
                   scales.astype(np.float32), weights / weights.sum())

    def sample(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` unit vectors and their cluster labels, reproducible from ``seed``."""
        rng = np.random.default_rng(seed)
        labels = rng.choice(len(self.weights), size=n, p=self.weights)
        z = rng.standard_normal((n, self.basis.shape[0]), dtype=np.float32) * self.scales[labels]
        dim = self.centres.shape[1]
        x = self.centres[labels] + self.spread * (z @ self.basis)
        x += (self.noise / np.sqrt(dim)) * rng.standard_normal((n, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x.astype(np.float32, copy=False), labels


def at_cosine(v: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector at ``cosine`` to the unit vector ``v`` (a planted near-duplicate)."""
    u = rng.standard_normal(len(v)).astype(np.float32)
    u -= (u @ v) * v
    u /= np.linalg.norm(u)
    return cosine * v + np.sqrt(1 - cosine ** 2) * u


def clusters_for(n: int) -> int:
    """About 1,000 vectors per cluster, at least 8 (the demo catalogue's categories)."""
    return int(min(4096, max(8, n // 1000)))


def synthetic_chunks(model: ClusterModel, n: int, seed: int, chunk: int | None = None
                     ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(ids, vectors, labels) in chunks of ``chunk`` (None: :data:`CHUNK`); chunk ``i`` is
    reproducible from ``(seed, i)``."""
    chunk = CHUNK if chunk is None else chunk
    for i, start in enumerate(range(0, n, chunk)):
        m = min(chunk, n - start)
        vecs, labels = model.sample(m, seed=seed * 1_000_003 + i + 1)
        yield np.arange(start, start + m, dtype=np.int64), vecs, labels


class TopK:
    """Running exact top-``k`` inner products of fixed queries over streamed chunks."""

    def __init__(self, queries: np.ndarray, k: int):
        self.queries, self.k = queries, k
        self.scores = np.full((len(queries), k), -np.inf, np.float32)
        self.ids = np.full((len(queries), k), -1, np.int64)

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        scores, pos = faiss.knn(self.queries, vecs, min(self.k, len(vecs)),
                                metric=faiss.METRIC_INNER_PRODUCT)
        all_scores = np.concatenate([self.scores, scores], axis=1)
        all_ids = np.concatenate([self.ids, ids[pos]], axis=1)
        best = np.argsort(-all_scores, axis=1, kind="stable")[:, :self.k]
        self.scores = np.take_along_axis(all_scores, best, axis=1)
        self.ids = np.take_along_axis(all_ids, best, axis=1)


def rss_mb() -> float:
    """Resident memory of this process now, in MiB."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean share of the true top-``k`` ids among the found top-``k``, per query. Ids below 0
    (FAISS's padding when the index holds fewer than ``k`` items) are not results."""
    hits = []
    for f, t in zip(found, truth, strict=True):
        want = {i for i in t[:k].tolist() if i >= 0}
        got = {i for i in f[:k].tolist() if i >= 0}
        hits.append(len(got & want) / len(want) if want else 1.0)
    return float(np.mean(hits))


def percentile_ms(seconds: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(seconds) * 1e3, q)), 3)


def bench_items(n: int, settings: Settings, *, dim: int = 1280, queries: int = 200,
                k: int = 10, seed: int = 0) -> dict:
    """Build the configured index over ``n`` synthetic vectors; time single queries.
    Refused at once when the index alone would not fit in the machine's memory (it grew
    until the system stopped it), and said so when the system refuses memory later."""
    config = check_fits(n, settings, dim)
    try:
        return _bench_items(n, config, dim, queries, k, seed)
    except (MemoryError, RuntimeError) as exc:
        if not resources_refused(exc):
            raise
        raise VitrineError(f"the system refused memory for --items {n:,} ({exc}); lower "
                           "--items or give the process more (ulimit -v, the container's "
                           "memory limit).") from None


def check_fits(n: int, settings: Settings, dim: int) -> IndexConfig:
    """The configured index; refused when the index of ``n`` vectors alone would not fit in
    the machine's memory."""
    config = IndexConfig.from_settings(settings)
    need, total = index_size(config, n, dim), machine()["memory_gb"] * 2**30
    if need > total:
        half = "" if config.half(config.resolve(n)) else " or set VITRINE_INDEX_FP16=true"
        raise VitrineError(f"--items {n:,} needs about {need / 2**30:,.1f} GiB for its "
                           f"{config.tag(n)} index alone, and this machine has "
                           f"{total / 2**30:,.1f} GiB; lower --items{half}.")
    return config


def index_size(config: IndexConfig, n: int, dim: int) -> int:
    """About the bytes the index of ``n`` vectors of ``dim`` holds: the vectors, their ids,
    an HNSW graph's links (2·M per vector at its base level)."""
    kind = config.resolve(n)
    per = dim * (2 if config.half(kind) else 4) + 8
    if kind == "hnsw":
        per += config.hnsw_m * 2 * 4 + 8
    return n * per


def _bench_items(n: int, config: IndexConfig, dim: int, queries: int, k: int,
                 seed: int) -> dict:
    model = ClusterModel.create(dim, clusters_for(n), seed=seed)
    query_vecs, _ = model.sample(queries, seed=seed + 10_007)
    truth = TopK(query_vecs, k)
    rss_before = rss_mb()

    making = [0.0]  # seconds making the vectors and their exact answers, not the index's

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        chunks = synthetic_chunks(model, n, seed)
        while True:
            t0 = time.perf_counter()
            if (chunk := next(chunks, None)) is None:
                return
            ids, vecs, _ = chunk
            truth.add(ids, vecs)
            making[0] += time.perf_counter() - t0
            yield ids, vecs

    def sample(m: int) -> np.ndarray:
        t0 = time.perf_counter()
        vecs = model.sample(min(m, n), seed=seed + 20_011)[0]
        making[0] += time.perf_counter() - t0
        return vecs

    started = time.perf_counter()
    index = build_index(config, dim, n, batches(), sample)
    build_seconds = time.perf_counter() - started - making[0]
    latencies, found = time_queries(index, query_vecs, k)
    sweep, breadth = [], {}
    if index.kind != "flat":  # the recall/latency curve of the search-time parameter
        hnsw = index.kind == "hnsw"
        name, field = ("efSearch", "hnsw_ef_search") if hnsw else ("nprobe", "ivf_nprobe")
        base = config.hnsw_ef_search if hnsw else config.ivf_nprobe

        def effective(value: int) -> int:  # what a search runs with
            return VectorIndex(index.index, replace(config, **{field: value})
                               ).search_breadth(k)

        breadth = {name: index.search_breadth(k)}  # the headline figures'
        tried = {max(1, base // 4), max(1, base // 2), base * 2, base * 4}
        for value in sorted({effective(v) for v in tried} - {breadth[name]}):
            other = VectorIndex(index.index, replace(config, **{field: value}), index.copies)
            times, ids = time_queries(other, query_vecs, k)
            sweep.append({name: value, "p50_ms": percentile_ms(times, 50),
                          "p99_ms": percentile_ms(times, 99),
                          "recall_at_10": round(recall_at_k(ids, truth.ids, k), 4)})
    return {
        "items": n, "dim": dim, "clusters": clusters_for(n), "queries": queries, "k": k,
        "index": config.tag(n), **breadth, "p50_ms": percentile_ms(latencies, 50),
        "p99_ms": percentile_ms(latencies, 99),
        "mean_ms": round(float(np.mean(latencies)) * 1e3, 3),
        "recall_at_10": round(recall_at_k(found, truth.ids, k), 4),
        "build_seconds": round(build_seconds, 2), "vectors_seconds": round(making[0], 2),
        "index_bytes": index.nbytes(),
        "rss_mb": round(rss_mb(), 1), "rss_before_build_mb": round(rss_before, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1), "float32_vectors_bytes": n * dim * 4,
        # (the build's threads; each timed query runs on one, as a server's do)
        "build_threads": faiss.omp_get_max_threads(), "query_threads": 1,
        "load_average": load_average(),
        "sweep": sweep,
    }


def time_queries(index: VectorIndex, queries: np.ndarray,
                 k: int) -> tuple[list[float], np.ndarray]:
    """Seconds per single query (after 10 warm-up queries) and the ids found."""
    for q in queries[:10]:
        index.search(q, k)
    latencies, found = [], np.full((len(queries), k), -1, np.int64)
    for i, q in enumerate(queries):
        t0 = time.perf_counter()
        _, ids = index.search(q, k)
        latencies.append(time.perf_counter() - t0)
        found[i, :len(ids)] = ids
    return latencies, found


def load_embedder(settings: Settings):
    """The configured model, ready to embed, and the seconds that took."""
    from vitrine.embed import Embedder

    started = time.perf_counter()
    embedder = Embedder.from_settings(settings)
    _ = embedder.engine
    return embedder, time.perf_counter() - started


def bench_images(images: Path, settings: Settings, *, show_progress: bool = False) -> dict:
    """Index the photos of ``images`` into a temporary store, the whole pipeline timed."""
    from vitrine.indexer import index_catalog
    from vitrine.split import links_refused, read_catalogue
    from vitrine.store import store_for

    # (the API's photos in a VITRINE_UPLOAD_DIR inside it are left out, as index, train and
    # evaluate leave them: a split catalogue holding it was refused here alone)
    catalogue = read_catalogue(images, settings.upload_dir,
                               refused_links=links_refused(settings))
    products = len(catalogue[0])
    embedder, load_seconds = load_embedder(settings)
    tmp = Path(tempfile.mkdtemp(prefix="vitrine-bench-"))
    try:
        store = store_for(tmp / "store", settings, create=True)
        try:
            report = index_catalog(images, store, embedder, show_progress=show_progress,
                                   catalogue=catalogue)
        finally:
            store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    embedded = report.photos_embedded  # products sharing a photo share its embedding
    if not embedded:
        first = report.skipped[0] if report.skipped else {"path": images, "reason": "none"}
        reason = str(first["reason"]).rstrip(".")
        raise VitrineError(f"none of the photos of the {products} products in {images} could "
                           f"be embedded ({first['path']}: {reason}); nothing to measure.")
    return {
        "products": products, "embedded": embedded, "skipped": len(report.skipped),
        "engine": settings.engine, "batch_size": settings.batch_size,
        "decode_workers": settings.decode_workers, "model_load_seconds": round(load_seconds, 2),
        "index_seconds": round(report.seconds, 2),
        "images_per_second": round(embedded / report.seconds, 1) if report.seconds else 0.0,
        "rss_mb": round(rss_mb(), 1), "load_average": load_average(),
    }


def model_dim(settings: Settings) -> int:
    """Dimension of the configured model's vectors: the trained model of ``settings.model``
    (2,440 for the demo's), else the backbone's pooled features (1,280 for MobileNetV2).
    A weights file named is checked although not read (a typo was measured without a word)."""
    from vitrine.warm import settings_record

    with contextlib.suppress(KeyError, TypeError, ValueError):  # (a run that loaded the model
        # recorded its dimension: torch's start and the load spared)
        if (record := settings_record(settings)) is not None:
            return int(record["manifest"]["dim"])
    if settings.model is not None:
        from vitrine.trained import load_model

        return load_model(settings.model).manifest.dim
    from vitrine.models import get_spec, weights_file

    if settings.weights is not None:
        weights_file(settings.weights)
    return get_spec(settings.backbone).embed_dim


def run_bench(settings: Settings, *, items: int | None = None, images: Path | None = None,
              show_progress: bool = False) -> dict:
    """The ``vitrine bench`` report: ``search`` for ``items``, ``embedding`` for ``images``,
    their headline figures also at the top level."""
    if items is None and images is None:
        raise VitrineError("nothing to measure; pass --items N, --images DIR or both.")
    report: dict = {"machine": machine()}
    dim = None
    if items is not None:  # a count that cannot fit: refused at once, before the photos
        check_fits(items, settings, dim := model_dim(settings))
    if images is not None:  # first: a bad folder or model, or photos none of which can be
        # embedded, are said before the search's minutes (16 at a million), not after them
        report["embedding"] = bench_images(images, settings, show_progress=show_progress)
        report["images_per_second"] = report["embedding"]["images_per_second"]
        report["rss_mb"] = report["embedding"]["rss_mb"]
    if items is not None:
        report["search"] = bench_items(items, settings, dim=dim)
        report.update({key: report["search"][key] for key in (
            "p50_ms", "p99_ms", "recall_at_10", "build_seconds", "index_bytes", "rss_mb")})
    return report


def load_average() -> list[float]:
    """The system's load averages over 1, 5 and 15 minutes."""
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict:
    """Where the figures were measured."""
    import platform

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        cpu = names[0] if names else cpu
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    with open("/proc/meminfo") as fh:
        mem_kb = int(fh.readline().split()[1])
    return {"cpu": cpu, "cores": cores, "memory_gb": round(mem_kb / 2**20, 1),
            "faiss": faiss.__version__}


def bench_lines(report: dict) -> list[str]:
    """Human-readable lines for a ``run_bench`` report."""
    m = report["machine"]
    lines = [f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GiB"]
    if "search" in report:
        s = report["search"]
        lines += [
            f"index {s['index']} over {s['items']:,} synthetic {s['dim']}-d vectors "
            f"({s['clusters']} clusters): built in {s['build_seconds']:.1f} s (the vectors "
            f"and their exact answers made in {s['vectors_seconds']:.1f} s more), "
            f"{s['index_bytes'] / 2**20:,.0f} MiB (float32 vectors alone "
            f"{s['float32_vectors_bytes'] / 2**20:,.0f} MiB), process RSS {s['rss_mb']:,.0f} MiB",
            f"single query top-{s['k']}: p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms, "
            f"recall@10 vs exact {s['recall_at_10']:.3f} ({s['queries']} queries)",
        ]
    if "embedding" in report:
        e = report["embedding"]
        lines.append(
            f"embedded {e['embedded']} photos for {e['products']} products"
            + (f" ({e['skipped']} skipped)" if e.get("skipped") else "")
            + f" in {e['index_seconds']:.1f} s "
            f"({e['images_per_second']:.1f} images/s, engine {e['engine']}, batch "
            f"{e['batch_size']}, {e['decode_workers']} decode workers; model load "
            f"{e['model_load_seconds']:.1f} s)")
    load = report.get("search", report.get("embedding"))["load_average"]
    lines.append(f"load average {', '.join(map(str, load))}")
    return lines
