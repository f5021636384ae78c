"""Wall time of ``vitrine train`` on a catalogue, per stage, with the machine's load.

The machine may be shared: the report gives the wall time, the process CPU time, CPU time /
cores (what the wall time would be on an idle machine with perfect scaling) and the load
average before and after, so a slow run can be told from a busy machine.

    python benchmarks/train_time.py --catalog ../shared/data/demo-catalog \\
        --weights ../shared/models/mobilenet_v2_imagenet.pth --out /tmp/vitrine-model
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from collections import Counter
from pathlib import Path

from vitrine.config import Settings
from vitrine.report import phase_metrics
from vitrine.train import train_catalog


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", type=Path, required=True)
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--progress", action="store_true", help="Show the progress bars.")
    args = ap.parse_args()
    settings = Settings(weights=args.weights)
    load_before = os.getloadavg()
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    summary = train_catalog(args.catalog, args.out, settings, show_progress=args.progress)
    wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
    cores = os.cpu_count() or 1
    test = summary.get("test") or {}
    # (a phase that did not run, or fine-tuning dropped, has no figures of its own: its
    # metrics are transfer learning's)
    phases = {**{k: phase_metrics(v) for k, v in summary["phases"].items()},
              **({"refit": summary["refit"]["metrics"]} if summary.get("refit") else {})}
    print(json.dumps({
        "catalog": str(args.catalog), "cores": cores, "torch_threads": _threads(),
        "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
        "cpu_seconds_per_core": round(cpu / cores, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "stages": summary["seconds"], "split": {k: summary["split"][k]
                                                for k in ("train", "val", "test")},
        "epochs": {k: v["epochs"] for k, v in summary["phases"].items()},
        "test_accuracy": test.get("acc"), "test_accuracy_ci95": test.get("acc_ci95"),
        "test_correct": test.get("correct"), "test_macro_f1": test.get("macro_f1"),
        # the report's table: test accuracy after each phase, and of the refit model
        "phase_test_accuracy": {k: m["test"]["acc"] for k, m in phases.items()
                                if "test" in m},
        "misclassified": Counter(f"{m['labelled']} -> {m['predicted']}"
                                 for m in test.get("misclassified", [])).most_common(),
        "test_retrieval_p_at_5": {k: v["precision"] for k, v in
                                  (test.get("retrieval") or {}).get("layers", {}).items()},
    }, indent=1))


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
