"""Upload-search latency and category precision@k of the web API on held-out demo photos.

Indexes the catalogue (incrementally, into ``--work``), copies that store without a seeded
20 % per category (``stratified_split``), serves the app with uvicorn on 127.0.0.1, and posts
each held-out photo to ``POST /api/search`` one request at a time. Reports client-side latency
(median, p90, p99), the server's breakdown from its ``Server-Timing`` header (decode, model,
search; overhead = the rest: HTTP, multipart, JSON, loopback), and precision@k of category.
With ``--model`` (the demo store's trained model) most held-out photos were training photos of
that model, so precision is also given over the queries in the model's own test split.

    python benchmarks/search_latency.py --catalog ../shared/data/demo-catalog \
        --weights ../shared/models/mobilenet_v2_imagenet.pth [--model demo-output/model]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

import httpx2
import numpy as np
import torch

from vitrine.api import create_app
from vitrine.catalog import read_catalog, stratified_split
from vitrine.config import Settings
from vitrine.embed import Embedder
from vitrine.evaluate import per_label, precision_at_k
from vitrine.indexer import index_catalog
from vitrine.server import running
from vitrine.store import store_for

TIMING = re.compile(r"(\w+);dur=([\d.]+)")


def build_store(catalog: Path, work: Path, held_ids: set[str], embedder: Embedder,
                settings: Settings) -> Path:
    """The whole catalogue indexed in ``work/full`` (kept between runs), copied to
    ``work/bench`` without the held-out products; its index that of ``settings``, as the
    server's (another kind's had the server rebuild it beside the measured searches)."""
    full = work / "full"
    store = store_for(full, settings, create=True)
    try:
        index_catalog(catalog, store, embedder, rules=embedder.duplicate_rules(),
                      show_progress=sys.stderr.isatty())
    finally:
        store.close()
    bench = work / "bench"
    shutil.rmtree(bench, ignore_errors=True)
    shutil.copytree(full, bench, ignore=shutil.ignore_patterns("write.lock"))
    store = store_for(bench, settings)
    try:
        store.delete(held_ids)
        store.flush()
    finally:
        store.close()
    return bench


def percentiles(values: list[float]) -> dict:
    arr = np.asarray(values)
    return {"median": round(float(np.median(arr)), 2),
            "p90": round(float(np.percentile(arr, 90)), 2),
            "p99": round(float(np.percentile(arr, 99)), 2),
            "mean": round(float(arr.mean()), 2), "min": round(float(arr.min()), 2)}


def measure(base: str, queries: list, k: int, warmup: int) -> tuple[list, list, list]:
    """Post each query photo; returns per-query latency (ms), timings and retrieved labels."""
    latencies, breakdowns, retrieved = [], [], []
    with httpx2.Client(base_url=base, timeout=60) as client:
        for i, product in enumerate([*queries[:warmup], *queries]):
            data = product.image.read_bytes()
            start = time.perf_counter()
            r = client.post("/api/search", params={"k": k},
                            files={"image": (product.image.name, data, "image/jpeg")})
            elapsed = (time.perf_counter() - start) * 1e3
            r.raise_for_status()
            if i < warmup:
                continue
            parts = {name: float(ms) for name, ms in TIMING.findall(r.headers["server-timing"])}
            parts["overhead"] = elapsed - sum(parts.values())
            latencies.append(elapsed)
            breakdowns.append(parts)
            retrieved.append([x["category"] for x in r.json()["results"]])
    return latencies, breakdowns, retrieved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", type=Path, required=True)
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--model", type=Path, help="A trained model folder to embed with (as the "
                    "demo store does; default: the pretrained backbone).")
    ap.add_argument("--work", type=Path, help="Folder for the indexed stores, reused between "
                    "runs (default: demo-output/bench-search, -MODEL with --model).")
    ap.add_argument("--queries", type=int, default=1000,
                    help="At most this many held-out photos are posted.")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/search_latency.json"))
    args = ap.parse_args()

    settings = Settings(weights=args.weights, model=args.model)
    work = args.work or Path("demo-output") / "-".join(
        ["bench-search", *([args.model.resolve().name] if args.model else [])])
    embedder = Embedder.from_settings(settings)
    products = read_catalog(args.catalog)
    _, held = stratified_split(products, 0.2, seed=args.seed)
    store = build_store(args.catalog, work, {p.product_id for p in held}, embedder,
                        settings)
    step = max(1, -(-len(held) // args.queries))  # a bounded count keeps every category
    queries = held[::step][:args.queries]

    app = create_app(settings, store, embedder=embedder)
    load_before = [round(x, 2) for x in os.getloadavg()]
    with running(app) as base:
        latencies, breakdowns, retrieved = measure(base, queries, args.k, args.warmup)
    labels = [p.category for p in queries]
    parts = ("decode", "model", "search", "overhead")
    report = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "load_average_before": load_before,
                    "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "settings": settings.model_dump(mode="json", include={
            "backbone", "model", "resize", "engine", "threads", "index"}),
        "embedding": embedder.manifest.embedding, "dim": embedder.dim,
        "indexed_products": len(products) - len(held), "queries": len(queries), "k": args.k,
        "seed": args.seed,
        "latency_ms": percentiles(latencies),
        "breakdown_ms_median": {p: round(statistics.median(b[p] for b in breakdowns), 2)
                                for p in parts},
        f"precision_at_{args.k}": round(precision_at_k(labels, retrieved, args.k), 4),
        f"per_category_precision_at_{args.k}": {
            c: round(v, 4) for c, v in per_label(precision_at_k, labels, retrieved,
                                                 args.k).items()},
    }
    if args.model is not None:  # the model may have learned from some query photos
        split = json.loads((args.model / "split.json").read_text())["assignment"]
        unseen = [i for i, p in enumerate(queries) if split.get(p.product_id) == "test"]
        report["model_test_split_queries"] = len(unseen)
        report[f"precision_at_{args.k}_model_test_split"] = round(precision_at_k(
            [labels[i] for i in unseen], [retrieved[i] for i in unseen], args.k), 4)
    report["acceptance"] = {
        "precision_at_5_min": 0.85, "median_latency_ms_max": 60.0,
        "passed": report[f"precision_at_{args.k}"] >= 0.85
        and report["latency_ms"]["median"] <= 60.0}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
