"""Whole-process indexing throughput: the reference design's one-photo-at-a-time eager loop
against `vitrine index`, run back to back in one command on ~3,500 product photos.

The demo catalogue has 1,016 photos, so the benchmark set (written once under ``--work``)
repeats it with small variations: the original, a horizontal flip re-encoded at JPEG quality
90, a 90 % downscale at quality 88, and a 2 %-border crop at quality 80, taken in that order
up to ``--count`` photos. Every file has distinct bytes, so nothing is skipped by content hash.

Each measurement is a separate process timed from start to exit (interpreter, imports, model
load, decoding, embedding and, for Vitrine, hashing, SQLite writes, duplicate search and the
FAISS index). The baseline (`--baseline DIR`) opens each photo with PIL, squashes it to
224×224, normalises it and calls the eager torch MobileNetV2 (trunk + average pooling) on a
batch of one, as the reference design's Keras loop did. Runs alternate baseline / configs for
``--repeats`` rounds; the report gives each run, the medians, the ratio of medians and the load
average around each run (the machine is shared, so compare only runs of one command).

    python benchmarks/embed_throughput.py --catalog ../shared/data/demo-catalog \\
        --weights ../shared/models/mobilenet_v2_imagenet.pth --repeats 3 \\
        --configs engine=onnx,engine=torch
    python benchmarks/embed_throughput.py --weights ../shared/models/mobilenet_v2_imagenet.pth \
        --engines --out benchmarks/results/engines.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageOps

VARIANTS = ("original", "flip", "downscale", "crop")


def write_variant(src: Path, dest: Path, variant: str) -> None:
    if variant == "original":
        shutil.copyfile(src, dest)
        return
    img = Image.open(src).convert("RGB")
    if variant == "flip":
        ImageOps.mirror(img).save(dest, "JPEG", quality=90)
    elif variant == "downscale":
        size = (max(1, int(img.width * 0.9)), max(1, int(img.height * 0.9)))
        img.resize(size, Image.Resampling.BILINEAR).save(dest, "JPEG", quality=88)
    else:  # "crop": 2 % off each side; "cropN" (more photos than four per original): N %
        margin = int(variant.removeprefix("crop") or 2)
        dx, dy = max(1, img.width * margin // 100), max(1, img.height * margin // 100)
        img.crop((dx, dy, img.width - dx, img.height - dy)).save(dest, "JPEG", quality=80)


def build_photo_set(catalog: Path, dest: Path, count: int) -> int:
    """Write ``count`` photos (category folders) derived from the catalogue into ``dest``."""
    photos = sorted(p for p in catalog.glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg"))
    marker = dest / ".complete"
    if marker.exists() and marker.read_text() == str(count):
        return count
    shutil.rmtree(dest, ignore_errors=True)
    written = 0
    for variant in VARIANTS + tuple(f"crop{margin}" for margin in range(3, 40)):
        for src in photos:
            if written == count:
                break
            target = dest / src.parent.name / f"{src.stem}_{variant}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            write_variant(src, target, variant)
            written += 1
    marker.write_text(str(written))
    return written


def baseline(folder: Path, weights: Path, threads: int = 0) -> None:
    """The reference design's loop: one photo at a time, eager model call, no batching
    (``threads``: torch intra-op threads; 0 keeps torch's default, one per core)."""
    import numpy as np
    import torch
    from torchvision.models import mobilenet_v2

    if threads > 0:
        torch.set_num_threads(threads)

    model = mobilenet_v2(weights=None)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    trunk = model.features.eval()
    mean = np.asarray([0.485, 0.456, 0.406], np.float32)
    std = np.asarray([0.229, 0.224, 0.225], np.float32)
    features = []
    for path in sorted(folder.glob("*/*.jpg")):
        img = Image.open(path).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
        x = (np.asarray(img, np.float32) / 255.0 - mean) / std
        x = torch.from_numpy(x.transpose(2, 0, 1).copy())[None]
        with torch.no_grad():
            features.append(trunk(x).mean(dim=(2, 3))[0].numpy())
    vectors = np.stack(features)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    print(json.dumps({"photos": len(vectors)}))


def engine_sweep(weights: Path, batches: list[int], rounds: int = 2) -> list[dict]:
    """Images per second of each engine alone (no decoding) by batch size, in this process,
    engines interleaved so that both see the same machine load."""
    import numpy as np

    from vitrine.config import Settings
    from vitrine.embed import Embedder

    embedders = {engine: Embedder.from_settings(Settings(weights=weights, engine=engine))
                 for engine in ("torch", "onnx")}
    rows = []
    for round_ in range(rounds):
        for batch in batches:
            x = np.random.default_rng(0).normal(size=(batch, 3, 224, 224)).astype(np.float32)
            row: dict = {"round": round_, "batch": batch}
            for engine, embedder in embedders.items():
                embedder.embed_arrays(x)
                count, start = 0, time.perf_counter()
                while count < 96:
                    embedder.embed_arrays(x)
                    count += batch
                row[engine] = round(count / (time.perf_counter() - start), 1)
            row["load_average"] = list(os.getloadavg())
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    return rows


def timed(cmd: list[str], env: dict) -> tuple[float, str, list[float]]:
    """Wall-clock seconds of one process from start to exit, its stdout, the load average."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return seconds, proc.stdout, list(os.getloadavg())


def parse_config(text: str) -> dict[str, str]:
    """'engine=onnx+batch_size=8' → {'VITRINE_ENGINE': 'onnx', 'VITRINE_BATCH_SIZE': '8'}."""
    pairs = (part.split("=", 1) for part in text.split("+") if part)
    return {f"VITRINE_{key.upper()}": value for key, value in pairs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", type=Path)
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--baseline", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--baseline-threads", default="0",
                    help="Comma-separated torch thread counts for the baseline runs (0: torch's "
                    "default); on a busy machine 1 thread is the baseline's best case.")
    ap.add_argument("--count", type=int, default=3500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--configs", default="engine=onnx",
                    help="Comma-separated Vitrine settings sets, e.g. "
                    "engine=onnx,engine=torch+batch_size=4 (each run every round).")
    ap.add_argument("--engines", action="store_true",
                    help="Only compare the engines alone (no decoding) by batch size.")
    ap.add_argument("--batches", default="1,4,8,16,32",
                    help="With --engines: the batch sizes compared (comma-separated).")
    ap.add_argument("--engine-rounds", type=int, default=2,
                    help="With --engines: rounds over the batch sizes.")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "vitrine-bench")
    ap.add_argument("--out", type=Path,
                    default=Path("benchmarks/results/embed_throughput.json"))
    args = ap.parse_args()
    if args.baseline is not None:
        baseline(args.baseline, args.weights, int(args.baseline_threads))
        return
    if args.engines:
        rows = engine_sweep(args.weights, [int(b) for b in args.batches.split(",")],
                            args.engine_rounds)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"cpus": len(os.sched_getaffinity(0)),
                                        "images_per_second": rows}, indent=2) + "\n")
        return
    photos = args.work / f"photos-{args.count}"
    n = build_photo_set(args.catalog, photos, args.count)
    env = {**os.environ, "VITRINE_WEIGHTS": str(args.weights)}
    configs = args.configs.split(",")
    vitrine = [sys.executable, "-m", "vitrine.cli", "index", str(photos), "--json", "--store"]
    # warm-up, untimed, on 16 photos: exports the ONNX model into the cache once (as the
    # first `vitrine index` on a machine does, in about 5 s)
    warm = args.work / "photos-16"
    build_photo_set(args.catalog, warm, 16)
    timed([*vitrine[:4], str(warm), "--json", "--store", str(args.work / "warm")], env)
    shutil.rmtree(args.work / "warm")
    runs: list[dict] = []
    baselines = [f"baseline-threads={t}" for t in args.baseline_threads.split(",")]
    for round_ in range(args.repeats):
        for what in baselines:
            seconds, out, load = timed([sys.executable, __file__, "--baseline", str(photos),
                                        "--weights", str(args.weights), "--baseline-threads",
                                        what.split("=")[1]], env)
            assert json.loads(out)["photos"] == n
            runs.append({"round": round_, "what": what, "seconds": round(seconds, 2),
                         "images_per_second": round(n / seconds, 1), "load_average": load})
        for config in configs:
            store = args.work / "store"
            shutil.rmtree(store, ignore_errors=True)
            seconds, out, load = timed([*vitrine, str(store)], {**env, **parse_config(config)})
            report = json.loads(out)
            assert report["indexed"] == n, report
            runs.append({"round": round_, "what": config, "seconds": round(seconds, 2),
                         "images_per_second": round(n / seconds, 1), "load_average": load,
                         "index_seconds": report["seconds"]})
            shutil.rmtree(store)
        print(json.dumps(runs[-len(baselines) - len(configs):]), file=sys.stderr)
    medians = {what: statistics.median(r["images_per_second"] for r in runs
                                       if r["what"] == what) for what in [*baselines, *configs]}
    best = max(baselines, key=medians.get)
    result = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "photos": n, "photo_set": f"demo catalogue × {', '.join(VARIANTS)} (first {n})",
        "cpus": len(os.sched_getaffinity(0)), "runs": runs,
        "median_images_per_second": medians,
        "fastest_baseline": best,
        "speedup_vs_fastest_baseline": {c: round(medians[c] / medians[best], 2)
                                        for c in configs},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
