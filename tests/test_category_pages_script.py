"""benchmarks/category_pages.py: past ``CATEGORY_SELECT_MAX`` categories its ``listed`` pages
(the limit lifted) list every category, so they are larger than its ``typed`` ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "category_pages.py"


def test_listed_pages_list_every_category(demo_catalog, weights_path):
    env = {**os.environ, "VITRINE_WEIGHTS": str(weights_path)}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--categories", "150", "--catalog",
                           str(demo_catalog)], capture_output=True, text=True, timeout=300,
                          env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    for page in ("catalogue", "search"):
        assert report[f"{page}_listed"]["bytes"] > report[f"{page}_typed"]["bytes"], report
