"""benchmarks/gpu_embedding.py, the script prepared for a GPU machine, runs its passes end to
end (on the CPU with --allow-cpu) so that device time is not lost to a broken script."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
from conftest import ROOT, copy_subset

SCRIPT = ROOT / "benchmarks" / "gpu_embedding.py"


def test_gpu_benchmark_script_runs_on_cpu_when_allowed(demo_catalog, weights_path, settings,
                                                       tmp_path):
    # one photo of each category, read twice (--repeat 2): the script's passes all run, on
    # half the photos of two. The ONNX export is the suite's own (the embedder fixture's
    # cache, made by the first test that needs it): exporting again was a third of its time.
    catalog = copy_subset(demo_catalog, tmp_path / "catalog", per_category=1)
    out = tmp_path / "out" / "gpu_embedding.json"
    base = [sys.executable, str(SCRIPT), "--weights", str(weights_path), "--catalog",
            str(catalog), "--out", str(out), "--cache-dir", str(settings.cache_dir),
            "--repeat", "2", "--batches", "4", "--workers", "1", "--model-seconds", "0.2"]
    if not torch.cuda.is_available():
        refused = subprocess.run(base, capture_output=True, text=True, timeout=120, cwd=ROOT,
                                 env=dict(os.environ))
        assert refused.returncode != 0 and "--allow-cpu" in refused.stderr
        assert not out.exists()
    proc = subprocess.run(base + ["--allow-cpu"], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["photos"] == 1 * 8 * 2
    assert report["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    for engine in ("torch", "onnx"):
        result = report["engines"][engine]
        assert result["model_only_images_per_second"]["4"] > 0
        assert set(result["pipeline_images_per_second"]) == {"batch64-workers1",
                                                               "batch128-workers1"}
        assert all(rate > 0 for rate in result["pipeline_images_per_second"].values())
        assert result["min_cosine_vs_cpu_fp32"] >= 0.999
