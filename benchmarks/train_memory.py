"""Peak memory of ``vitrine train`` as the catalogue grows.

Each size is a photo set made from the catalogue (the photos, then mirrored, down-scaled and
cropped copies, as ``embed_throughput.py`` makes them; category folders, no table) and trained
in its own process (``vitrine train --json``), whose peak resident memory is read from the
kernel when it ends. The difference between two sizes, per photo, is what each more photo
costs; most of it is the frozen-layer cache (``vitrine.train_data``).

    python benchmarks/train_memory.py --catalog ../shared/data/demo-catalog \\
        --weights ../shared/models/mobilenet_v2_imagenet.pth --sizes 1016,2032 \\
        > benchmarks/results/train_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from embed_throughput import build_photo_set


def train_peak(photos: Path, out: Path, weights: Path | None) -> dict:
    """Train on ``photos`` in a child process; its peak RSS (MB), wall time and test accuracy."""
    env = {**os.environ, **({"VITRINE_WEIGHTS": str(weights)} if weights else {})}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "vitrine.cli", "train", str(photos),
                             "--out", str(out), "--json"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"vitrine train failed on {photos} (status {proc.returncode})")
    summary = json.loads(stdout)
    return {"photos": sum(summary["split"][k] for k in ("train", "val", "test")),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux reports KB
            "wall_seconds": round(time.perf_counter() - started, 1),
            "test_accuracy": round(summary["test"]["acc"], 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", type=Path, required=True)
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--sizes", default="1016,2032", help="Photo counts, comma-separated.")
    ap.add_argument("--work", type=Path, help="Folder for the photo sets (default: a "
                                                "temporary one, removed at the end).")
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        runs = []
        for size in sizes:
            photos = work / f"photos_{size}"
            build_photo_set(args.catalog, photos, size)
            runs.append(train_peak(photos, Path(tmp) / f"model_{size}", args.weights))
    slopes = [round((b["peak_rss_mb"] - a["peak_rss_mb"]) * 1024 / (b["photos"] - a["photos"]),
                    1) for a, b in zip(runs, runs[1:], strict=False) if b["photos"] > a["photos"]]
    print(json.dumps({"catalog": str(args.catalog), "runs": runs,
                      "kb_per_more_photo": slopes,
                      "load_average": [round(x, 2) for x in os.getloadavg()]}, indent=1))


if __name__ == "__main__":
    main()
