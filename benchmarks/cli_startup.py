"""Whole-process time of the commands that only read a store (`vitrine info`, `similar`),
against the same commands with `vitrine.embed` (torch, torchvision) imported first, as the
store modules did until 2026-12-02. `vitrine search` (which embeds a photo, so needs the
model) is timed as a reference.

Indexes 16 photos of the catalogue into a temporary store, then runs each command
``--runs`` times in a fresh process and reports the median seconds, and whether torch was
imported.

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


def timed(args: list[str], preload: bool, env: dict) -> tuple[float, bool]:
    code = RUN.format(preload="import vitrine.embed\n" if preload else "")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, check=True)
    return time.perf_counter() - started, "torch imported: True" in proc.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", type=Path, required=True)
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    env = {**os.environ, "VITRINE_WEIGHTS": str(args.weights.resolve())}
    work = Path(tempfile.mkdtemp(prefix="vitrine-startup-"))
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
                    "search": ["search", "--store", str(store), "--json", str(product)]}
        rows = {}
        for name, command in commands.items():
            row = {}
            for label, preload in (("now", False), ("embed_imported_first", True)):
                if name == "search" and preload:
                    continue  # it needs torch either way
                runs = [timed(command, preload, env) for _ in range(args.runs)]
                row[f"{label}_seconds"] = round(statistics.median(t for t, _ in runs), 2)
                row[f"{label}_imports_torch"] = runs[0][1]
            rows[name] = row
        print(json.dumps({"runs": args.runs, "load_average": os.getloadavg()[0],
                          "commands": rows}, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
