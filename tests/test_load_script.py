"""benchmarks/load.py: a short run against the small store answers every request, and its
budget and error accounting work."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

from conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "load.py"


def _module():
    spec = importlib.util.spec_from_file_location("vitrine_load_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_short_load_run_against_the_small_store(small_store, weights_path, tmp_path):
    out = tmp_path / "load.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--store", str(small_store), "--weights",
         str(weights_path), "--requests", "40", "--duration", "600", "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=dict(os.environ), cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert json.loads(out.read_text()) == report
    assert {"clients", "requests", "errors", "duration_s", "throughput_rps", "p50_ms",
            "p99_ms", "endpoints", "machine", "server"} <= set(report)
    assert report["errors"] == {"count": 0, "first": []}
    assert report["clients"] == 8 and report["requests"] == 40
    assert report["stopped_by"] == "requests" and report["server"]["products"] == 48
    endpoints = report["endpoints"]
    assert set(endpoints) == {"similar", "search"}
    assert sum(e["requests"] for e in endpoints.values()) == 40
    for e in endpoints.values():
        assert e["requests"] > 0 and 0 < e["p50_ms"] <= e["p99_ms"]
    assert report["machine"]["cpus"] == os.cpu_count()
    assert len(report["machine"]["load_average_before"]) == 3


def test_budget_stops_at_the_count_or_the_deadline():
    load = _module()
    counted = load.Budget(3, 600)
    assert [counted.take() for _ in range(5)] == [0, 1, 2, None, None]
    assert counted.stopped_by == "requests"
    expired = load.Budget(3, 0)
    assert expired.take() is None and expired.stopped_by == "duration"


def test_failed_requests_are_counted_as_errors():
    """Nothing listens on port 1: every request is an error with its reason."""
    load = _module()
    samples, errors = [], []
    load.client_loop("http://127.0.0.1:1", load.Budget(4, 600), ["a"], [b"x"], 0.5, 0,
                     samples, errors)
    assert len(samples) == 4 and len(errors) == 4
    assert all("ConnectError" in e for e in errors)
