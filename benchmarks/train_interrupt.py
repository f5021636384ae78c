"""How fast Ctrl+C stops ``vitrine train``: SIGINT at given moments of a run on a catalogue
(by default during reading, augmentation and fine-tuning on the demo catalogue on a 2-core
machine), reporting the exit status, the seconds from signal to exit and what was left in
the output folder and beside it (where the model is staged until complete).

    python benchmarks/train_interrupt.py --catalog ../shared/data/demo-catalog \\
        --weights ../shared/models/mobilenet_v2_imagenet.pth --after 12,45,75
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", type=Path, required=True)
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--after", default="12,45,75", help="Seconds after start to send SIGINT.")
    args = ap.parse_args()
    runs = []
    for after in [float(s) for s in args.after.split(",")]:
        out = Path(tempfile.mkdtemp(prefix="vitrine-interrupt-")) / "model"
        proc = subprocess.Popen([sys.executable, "-m", "vitrine.cli", "train", str(args.catalog),
                                 "--out", str(out), "--weights", str(args.weights)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(after)
        sent = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        text, _ = proc.communicate(timeout=600)
        lines = [line for line in text.replace("\r", "\n").splitlines() if line.strip()]
        busy = [line for line in lines if line.strip() != "interrupted."][-1:]
        last = lines[-1:]
        runs.append({"after_seconds": after, "exit_status": proc.returncode,
                     "seconds_to_exit": round(time.perf_counter() - sent, 2),
                     "left_in_out": sorted(p.name for p in out.iterdir()) if out.exists() else [],
                     "left_beside_out": sorted(p.name for p in out.parent.iterdir()
                                               if p != out),  # the hidden stage folder
                     "last_line": last[0].strip() if last else "",
                     "working_on": busy[0].strip() if busy else ""})  # what the signal hit
        shutil.rmtree(out.parent, ignore_errors=True)
    print(json.dumps({"catalog": str(args.catalog), "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
