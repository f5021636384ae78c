"""Messy catalogues and killed index runs."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from conftest import copy_subset
from PIL import Image

CLI = [sys.executable, "-m", "vitrine.cli"]


def _cli(*args, env):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=600)


def make_messy_folder(root: Path, demo: Path) -> tuple[set[str], set[str]]:
    """12 good photos, 9 awkward but valid files and 4 broken ones."""
    good = sorted(demo.glob("*/*.jpg"))[::80][:12]
    valid, broken = set(), set()
    for i, src in enumerate(good):
        target = root / src.parent.name / f"good{i}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(src.read_bytes())
        valid.add(target.relative_to(root).as_posix())
    base = Image.open(good[0]).convert("RGB")
    odd = root / "odd"
    odd.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 8
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(base.size))
    frames = [base, base.rotate(90)]
    palette = base.convert("P", palette=Image.Palette.ADAPTIVE)
    deep = (np.asarray(base.convert("L"), dtype=np.uint16) * 257)
    awkward = {
        "cmyk.jpg": lambda p: base.convert("CMYK").save(p),
        "gray.png": lambda p: base.convert("L").save(p),
        "alpha.png": lambda p: rgba.save(p),
        "deep16.png": lambda p: Image.fromarray(deep).save(p),
        "palette.png": lambda p: palette.save(p, transparency=0),
        "rotated.jpg": lambda p: base.save(p, exif=exif),
        "anim.gif": lambda p: frames[0].save(p, save_all=True, append_images=frames[1:]),
        "photo.webp": lambda p: base.save(p, "WEBP"),
        "UPPER.JPEG": lambda p: base.save(p, "JPEG"),
    }
    for name, write in awkward.items():
        write(odd / name)
        valid.add(f"odd/{name}")
    bad = root / "bad"
    bad.mkdir()
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "text.png").write_text("definitely not a PNG")
    buf = io.BytesIO()
    base.save(buf, "JPEG")
    (bad / "truncated.jpg").write_bytes(buf.getvalue()[:2000])
    Image.new("1", (20_000, 20_000)).save(bad / "bomb.png")
    broken = {f"bad/{n}" for n in ("empty.jpg", "text.png", "truncated.jpg", "bomb.png")}
    return valid, broken


def test_messy_folder_indexes_valid_files_and_reports_broken(demo_catalog, weights_path,
                                                             tmp_path):
    root = tmp_path / "messy"
    valid, broken = make_messy_folder(root, demo_catalog)
    env = {"VITRINE_WEIGHTS": str(weights_path)}
    proc = _cli("index", root, "--store", tmp_path / "store", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["indexed"] == 21
    assert {s["path"] for s in report["skipped"]} == broken
    assert all(s["reason"] for s in report["skipped"])
    reasons = {s["path"]: s["reason"] for s in report["skipped"]}
    assert "empty" in reasons["bad/empty.jpg"]
    assert "decompression bomb" in reasons["bad/bomb.png"]
    assert "truncated" in reasons["bad/truncated.jpg"]
    strict = _cli("index", root, "--store", tmp_path / "store2", "--strict", "--json", env=env)
    assert strict.returncode == 1 and "--strict" in strict.stderr
    info = json.loads(_cli("info", "--store", tmp_path / "store", "--json", env=env).stdout)
    assert info["products"] == 21


def _count(store: Path) -> int:
    try:
        with sqlite3.connect(store / "vitrine.sqlite", timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM products").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_sigkill_during_index_keeps_work_and_rerun_completes(demo_catalog, weights_path,
                                                             tmp_path):
    catalog = copy_subset(demo_catalog, tmp_path / "catalog", 25)
    total = len((catalog / "products.csv").read_text().splitlines()) - 1  # 188 photos
    store = tmp_path / "store"
    env = {**os.environ, "VITRINE_WEIGHTS": str(weights_path)}
    proc = subprocess.Popen([*CLI, "index", catalog, "--store", store, "--json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 300
    while _count(store) == 0 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = _count(store)
    assert 0 < kept < total  # committed work survived the kill, and the run was cut short
    rerun = _cli("index", catalog, "--store", store, "--json", env=env)
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout)
    assert report["indexed"] == total - kept and report["unchanged"] == kept, (kept, report)
    again = json.loads(_cli("index", catalog, "--store", store, "--json", env=env).stdout)
    assert again["indexed"] == 0 and again["unchanged"] == total
    info = json.loads(_cli("info", "--store", store, "--json", env=env).stdout)
    assert info["products"] == total
