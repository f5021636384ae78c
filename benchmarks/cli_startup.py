"""Whole-process time of the commands that only read a store (`vitrine info`, `similar`),
against the same commands with torch imported first, as the store modules did until
2026-12-02; and of the commands that embed (`vitrine search` of one photo, `vitrine index`
of a catalogue that has not changed), against the same commands without their model's start
record (vitrine.warm), as they ran until 2026-12-06: torch imported and the weights loaded
to find the cached ONNX export.

Indexes 16 photos of the catalogue into a temporary store (and a temporary model cache),
then runs each command ``--runs`` times in a fresh process and reports the median seconds,
and whether torch was imported.

    python benchmarks/cli_startup.py --catalog ../shared/data/demo-catalog \\
        --weights ../shared/models/mobilenet_v2_imagenet.pth
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import copy_subset  # noqa: E402

# Runs the CLI in this process and says on stderr whether torch was imported.
RUN = """import sys
{preload}from vitrine.cli import main
sys.argv = ["vitrine", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
sys.stderr.write("torch imported: %s\\n" % ("torch" in sys.modules))
"""


def timed(args: list[str], preload: bool, env: dict,
          forget: Path | None = None) -> tuple[float, bool]:
    """One run of ``args``; with ``preload``, torch imported first; with ``forget``, the
    start records of that model cache removed first."""
    for record in (forget / "onnx").glob("start-*.json") if forget else ():
        record.unlink()
    code = RUN.format(preload="import torch\n" if preload else "")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, check=True)
    return time.perf_counter() - started, "torch imported: True" in proc.stderr


def hashing(args: argparse.Namespace) -> dict:
    """What finding a start record costs a run: hashing the weights file, and Vitrine's own
    code (median of the runs, each in this process; the code's once a process)."""
    from vitrine import warm

    def ms(work) -> float:
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            work()
            times.append(time.perf_counter() - started)
        return round(1000 * statistics.median(times), 1)

    return {"weights_file": ms(lambda: warm.file_digest(args.weights)),
            "code": ms(warm.code_digest.__wrapped__)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", type=Path, required=True)
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vitrine-startup-"))
    env = {**os.environ, "VITRINE_WEIGHTS": str(args.weights.resolve()),
           "VITRINE_CACHE_DIR": str(work / "cache")}
    try:
        catalog = copy_subset(args.catalog, work / "catalog", 2)
        store = work / "store"
        subprocess.run([sys.executable, "-m", "vitrine.cli", "index", str(catalog), "--store",
                        str(store), "--json"], env=env, check=True, capture_output=True)
        with open(catalog / "products.csv", newline="") as fh:
            first = next(csv.DictReader(fh))
        pid, product = first["product_id"], catalog / first["image"]
        commands = {"info": ["info", "--store", str(store), "--json"],
                    "similar": ["similar", "--store", str(store), "--json", pid],
                    "search": ["search", "--store", str(store), "--json", str(product)],
                    "index_unchanged": ["index", str(catalog), "--store", str(store),
                                        "--json"]}
        rows = {}
        for name, command in commands.items():
            row = {}
            baseline = (("torch_imported_first", True, None) if name in ("info", "similar")
                        else ("without_start_record", False, work / "cache"))
            for label, preload, forget in (("now", False, None), baseline):
                runs = [timed(command, preload, env, forget) for _ in range(args.runs)]
                row[f"{label}_seconds"] = round(statistics.median(t for t, _ in runs), 2)
                row[f"{label}_imports_torch"] = runs[0][1]
            rows[name] = row
        print(json.dumps({"runs": args.runs, "load_average": os.getloadavg()[0],
                          "commands": rows, "start_record_hashing_ms": hashing(args)},
                         indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
