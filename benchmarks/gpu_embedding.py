"""Embedding throughput on a CUDA GPU: the model alone (synthetic batches) and the whole
pipeline (decode workers + model) on real photos, torch fp16 channels-last and, when
onnxruntime-gpu is installed, ONNX Runtime's CUDAExecutionProvider; plus the parity of GPU
vectors with the CPU fp32 ones (cosine per photo).

Prepared for a session with a GPU (none was lent when it was written; nothing in the tests
needs one). The device machine has torch, numpy, Pillow, rich and onnxruntime (CPU) but not
the rest of Vitrine's needs, and the weights and demo catalogue live outside the repository, so
``benchmarks/gpu_prepare.sh`` puts them and the missing wheels into the ignored folder
``.gpu/`` (about 30 MB), and ``benchmarks/gpu_run.sh`` runs this script there. One device
call (``carry: [".gpu"]``, timeout about 400 s; the run time on a GPU is not measured yet,
on the 2-core CPU here the smoke run below takes 80 s):

    bash benchmarks/gpu_prepare.sh          # here
    bash benchmarks/gpu_run.sh              # there: writes $OUT/gpu_embedding.json

``--allow-cpu`` runs the same passes on the CPU, as a smoke test of the script and the
wheels before spending device time (``bash benchmarks/gpu_run.sh --allow-cpu --repeat 1
--batches 8 --workers 2 --model-seconds 1``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from vitrine.config import Settings
from vitrine.embed import Embedder
from vitrine.engines import EngineError, cosines


def model_only(embedder: Embedder, batch: int, seconds: float = 5.0) -> float:
    """Images per second of the engine alone on a random batch (after warm-up)."""
    x = np.random.default_rng(0).normal(size=(batch, 3, 224, 224)).astype(np.float32)
    for _ in range(3):
        embedder.engine.run(x)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        embedder.engine.run(x)
        done += batch
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return done / (time.perf_counter() - start)


def pipeline(embedder: Embedder, paths: list[Path]) -> tuple[float, np.ndarray]:
    """Images per second of decode + embed over ``paths`` (whole Embedder.embed_paths)."""
    start = time.perf_counter()
    vectors = [r.vector for r in embedder.embed_paths(paths)]
    return len(paths) / (time.perf_counter() - start), np.stack(vectors)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--catalog", type=Path, required=True)
    ap.add_argument("--batches", default="32,64,128,256")
    ap.add_argument("--workers", default="8,16")
    ap.add_argument("--repeat", type=int, default=3, help="Passes over the catalogue photos.")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu_embedding.json"))
    ap.add_argument("--cache-dir", type=Path, default=Path("/tmp/vitrine-gpu-cache"),
                    help="Where the ONNX export goes (not under --out: it is 14 MB).")
    ap.add_argument("--model-seconds", type=float, default=5.0,
                    help="Seconds of model-only timing per batch size.")
    ap.add_argument("--allow-cpu", action="store_true",
                    help="Without a GPU, run the same passes on the CPU (a smoke test).")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.allow_cpu:
        raise SystemExit("no CUDA GPU visible to torch; run this on a GPU machine "
                         "(or pass --allow-cpu for a smoke test).")
    paths = sorted(args.catalog.glob("*/*.jpg")) * args.repeat
    if not paths:
        raise SystemExit(f"no photos under {args.catalog}/*/*.jpg")
    base = Settings(weights=args.weights, cache_dir=args.cache_dir)
    cpu = Embedder.from_settings(base.model_copy(update={"engine": "torch"}))
    reference = np.stack([r.vector for r in cpu.embed_paths(paths[:64])])
    report: dict = {"gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
                    "device": device, "torch": torch.__version__,
                    "cpus": os.cpu_count(), "photos": len(paths), "engines": {}}
    for engine in ("torch", "onnx"):
        settings = base.model_copy(update={"engine": engine, "device": device})
        try:
            embedder = Embedder.from_settings(settings)
            _ = embedder.engine
        except EngineError as exc:
            report["engines"][engine] = {"skipped": str(exc)}
            continue
        result: dict = {"model_only_images_per_second": {}, "pipeline_images_per_second": {}}
        for batch in map(int, args.batches.split(",")):
            result["model_only_images_per_second"][batch] = round(
                model_only(embedder, batch, args.model_seconds), 1)
        for workers in map(int, args.workers.split(",")):
            for batch in (64, 128):
                run = Embedder.from_settings(settings.model_copy(update={
                    "batch_size": batch, "decode_workers": workers}))
                rate, vectors = pipeline(run, paths)
                result["pipeline_images_per_second"][f"batch{batch}-workers{workers}"] = \
                    round(rate, 1)
        result["min_cosine_vs_cpu_fp32"] = round(float(cosines(reference, vectors[:64]).min()), 5)
        report["engines"][engine] = result
        print(engine, json.dumps(result), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
