"""Peak memory of ``vitrine train`` as the catalogue grows.

Each size is a photo set made from the catalogue (the photos, then mirrored, down-scaled and
cropped copies, as ``embed_throughput.py`` makes them; category folders, no table) and trained
in its own process (``vitrine train --json``), whose peak resident memory is read from the
kernel when it ends. The difference between two sizes, per photo, is what each more photo
costs; most of it is the frozen-layer cache (``vitrine.train_data``).

``--cache-mib`` trains each size once per value of ``VITRINE_TRAIN_CACHE_MEMORY_MB`` (``auto``:
unset); with ``0`` the cache is kept in files mapped into memory. Their pages count in the
peak RSS the kernel reports but can be dropped and read again whenever memory runs short, so
each run also reports the peak of its anonymous memory (``RssAnon``, sampled every 20 ms),
which cannot.

Sizes above four times the catalogue add crops with growing margins. What grows with the
catalogue does not depend on the number of epochs, so ``VITRINE_TRAIN_*`` settings in front of
the command (recorded in the output) can shorten the runs:

    VITRINE_TRAIN_PHASE1_EPOCHS=2 VITRINE_TRAIN_PHASE2_EPOCHS=1 \\
    python benchmarks/train_memory.py --catalog ../shared/data/demo-catalog \\
        --weights ../shared/models/mobilenet_v2_imagenet.pth --sizes 1016,16256 \\
        --cache-mib auto,0 > benchmarks/results/train_memory_files.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from embed_throughput import build_photo_set


def anon_kb(pid: int) -> int:
    """The process's anonymous resident memory (KB), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next((int(line.split()[1]) for line in fh if line.startswith("RssAnon:")), 0)
    except OSError:
        return 0


def train_peak(photos: Path, out: Path, weights: Path | None, cache_mib: str) -> dict:
    """Train on ``photos`` in a child process; its peak RSS and anonymous memory (MB), wall
    time, test accuracy and where its cache was kept."""
    env = {**os.environ, **({"VITRINE_WEIGHTS": str(weights)} if weights else {}),
           "VITRINE_TRAIN_CACHE_MEMORY_MB": "" if cache_mib == "auto" else cache_mib}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "vitrine.cli", "train", str(photos),
                             "--out", str(out), "--json"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    peak_anon = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak_anon[0] = max(peak_anon[0], anon_kb(proc.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"vitrine train failed on {photos} (status {proc.returncode})")
    summary = json.loads(stdout)
    return {"photos": sum(summary["split"][k] for k in ("train", "val", "test")),
            "cache_memory_mb_setting": cache_mib, "cache_mib": summary["cache_mib"],
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux reports KB
            "peak_anon_mb": round(peak_anon[0] / 1024, 1),
            "wall_seconds": round(time.perf_counter() - started, 1),
            "test_accuracy": round(summary["test"]["acc"], 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", type=Path, required=True)
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--sizes", default="1016,2032", help="Photo counts, comma-separated.")
    ap.add_argument("--cache-mib", default="auto", help="VITRINE_TRAIN_CACHE_MEMORY_MB "
                                                         "values, comma-separated (auto: unset).")
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
            runs += [train_peak(photos, Path(tmp) / f"model_{size}_{mib}", args.weights, mib)
                     for mib in args.cache_mib.split(",")]
    slopes = {}
    for mib in args.cache_mib.split(","):
        mine = [r for r in runs if r["cache_memory_mb_setting"] == mib]
        slopes[mib] = {key: [round((b[key] - a[key]) * 1024 / (b["photos"] - a["photos"]), 1)
                             for a, b in zip(mine, mine[1:], strict=False)
                             if b["photos"] > a["photos"]]
                       for key in ("peak_rss_mb", "peak_anon_mb")}
    print(json.dumps({"catalog": str(args.catalog), "runs": runs,
                      "settings": {k: v for k, v in os.environ.items()
                                   if k.startswith("VITRINE_TRAIN_")},
                      "kb_per_more_photo": slopes,
                      "load_average": [round(x, 2) for x in os.getloadavg()]}, indent=1))


if __name__ == "__main__":
    main()
