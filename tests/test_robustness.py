"""Messy catalogues, killed index runs, and the server reading a store while it is indexed."""

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
import pytest
from conftest import copy_subset
from PIL import Image

CLI = [sys.executable, "-m", "vitrine.cli"]


def _cli(*args, env):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=600)


def make_messy_folder(root: Path, demo: Path) -> tuple[set[str], set[str]]:
    """12 good photos, 9 awkward but valid files and 5 broken ones."""
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
    os.symlink("/dev/zero", bad / "zero.jpg")  # was read forever
    broken = {f"bad/{n}" for n in ("empty.jpg", "text.png", "truncated.jpg", "bomb.png",
                                   "zero.jpg")}
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
    assert "device, pipe or socket" in reasons["bad/zero.jpg"]
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


def test_sigterm_during_index_stops_cleanly_then_ends_by_the_signal(demo_catalog, weights_path,
                                                                   tmp_path):
    """`timeout`, `kill` or a container stopping send SIGTERM: the index stops as after a
    Ctrl+C (one line, no traceback), keeping its work, and then ends by the signal (a shell
    sees 143; a service manager a clean stop)."""
    catalog = copy_subset(demo_catalog, tmp_path / "catalog", 25)
    store = tmp_path / "store"
    env = {**os.environ, "VITRINE_WEIGHTS": str(weights_path)}
    proc = subprocess.Popen([*CLI, "index", catalog, "--store", store, "--json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env)
    deadline = time.monotonic() + 300
    while _count(store) == 0 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stderr = proc.communicate(timeout=120)[1]
    assert proc.returncode == -signal.SIGTERM, stderr
    assert stderr.rstrip().endswith("terminated.") and "Traceback" not in stderr
    kept = _count(store)
    rerun = _cli("index", catalog, "--store", store, "--json", env=env)
    assert rerun.returncode == 0 and json.loads(rerun.stdout)["unchanged"] == kept > 0


def _check_round(client, photo: bytes, valid_counts: set[int], ids_to_check: int | None,
                 offset: int) -> int:
    """One round of reads through the API; returns the product count it saw. Every listed
    product can be fetched and has a vector (its similar products come back, as many as the
    store can give), and every result id is a stored product."""
    from urllib.parse import quote

    count = client.get("/healthz").json()["products"]
    assert count in valid_counts  # whole batches only: each commit is one transaction
    listed = [p["product_id"] for p in
              client.get("/api/products", params={"limit": 200}).json()["products"]]
    assert len(listed) in valid_counts and len(listed) >= count  # the store only grows
    chosen = listed if ids_to_check is None else \
        [listed[(offset + i) % len(listed)] for i in range(min(ids_to_check, len(listed)))]
    answers = []
    for pid in chosen:
        r = client.get(f"/api/products/{quote(pid, safe='')}/similar", params={"k": 5})
        assert r.status_code == 200, (pid, r.text)
        assert r.json()["product"]["product_id"] == pid
        answers.append((len(listed) - 1, r.json()["results"]))
    r = client.post("/api/search", params={"k": 5},
                    files={"image": ("photo.jpg", photo, "image/jpeg")})
    assert r.status_code == 200, r.text
    answers.append((len(listed), r.json()["results"]))
    for available, results in answers:
        assert len(results) >= min(5, available)  # the index agrees with the database
        for item in results:
            found = client.get(f"/api/products/{quote(item['product_id'], safe='')}")
            assert found.status_code == 200, (item, found.text)
    return count


def test_server_reads_stay_consistent_while_index_writes(demo_catalog, weights_path, settings,
                                                        embedder, tmp_path):
    """`vitrine index` writes ~150 photos into a store while the app reads the same store:
    counts never go back, only whole committed batches are seen, and every listed product
    and every result can be fetched, with similar products; at the end all are there."""
    from fastapi.testclient import TestClient

    from vitrine.api import create_app
    from vitrine.indexer import COMMIT_EVERY

    catalog = copy_subset(demo_catalog, tmp_path / "catalog", 19)
    photos = sorted(catalog.glob("*/*.jpg"))
    total = len(photos)  # 146 (some categories have fewer than 19)
    valid_counts = set(range(0, total, COMMIT_EVERY)) | {total}
    store = tmp_path / "store"
    env = {**os.environ, "VITRINE_WEIGHTS": str(weights_path)}
    proc = subprocess.Popen([*CLI, "index", catalog, "--store", store, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 300
    try:
        # the app needs the store, with the model recorded, before it opens
        while not (store / "manifest.json").exists() and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()[1]
        seen, rounds_while_writing = [], 0
        with TestClient(create_app(settings, store, embedder=embedder)) as client:
            while proc.poll() is None and time.monotonic() < deadline:
                seen.append(_check_round(client, photos[len(seen) % total].read_bytes(),
                                         valid_counts, 8, 8 * len(seen)))
                rounds_while_writing += 1
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert proc.returncode == 0, err
            final = _check_round(client, photos[0].read_bytes(), valid_counts, None, 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rounds_while_writing > 0
    assert seen == sorted(seen)  # the count never decreased
    assert json.loads(out)["indexed"] == total and final == total


def test_a_damaged_store_database_or_manifest_is_one_sentence(small_store, small_catalog,
                                                              weights_path, tmp_path,
                                                              cli_here):
    """A damaged page met after the store was opened (`similar`, `index`), or a model
    description another version wrote, gave a traceback (sqlite3.DatabaseError, KeyError)."""
    import csv
    import shutil

    env = {"VITRINE_WEIGHTS": str(weights_path)}
    with open(small_catalog / "products.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    described = tmp_path / "described"
    shutil.copytree(small_store, described)
    with sqlite3.connect(described / "vitrine.sqlite") as db:
        manifest = json.loads(db.execute("SELECT value FROM meta WHERE key='manifest'")
                              .fetchone()[0])
        db.execute("UPDATE meta SET value=? WHERE key='manifest'",
                   (json.dumps({"model": manifest}),))  # nested, as a newer layout might
    for args in (["info"], ["index", small_catalog]):
        proc = cli_here(*args, "--store", described, env_extra=env, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.strip().splitlines()[-1] == (
            f"error: the model description of the store {described} cannot be read (it has "
            "no 'backbone'); it was damaged or written by another version of Vitrine.")

    damaged = tmp_path / "damaged"
    shutil.copytree(small_store, damaged)
    with sqlite3.connect(damaged / "vitrine.sqlite") as db:  # every page into the file
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray((damaged / "vitrine.sqlite").read_bytes())
    data[4096:] = b"\xff" * (len(data) - 4096)  # every page but the first (the schema)
    (damaged / "vitrine.sqlite").write_bytes(bytes(data))
    for args in (["similar", row["product_id"], "--category", row["category"]],
                 ["index", small_catalog]):
        proc = cli_here(*args, "--store", damaged, env_extra=env, check=False)
        last = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert last.startswith("error: ") and "malformed" in last, last


@pytest.mark.parametrize("field, value", [
    ("embedding", None), ("preprocessing", [224]), ("weights_sha256", 7), ("dim", "1280"),
    ("dim", True), ("dim", 0), ("backbone", "")])
def test_a_model_description_of_the_wrong_shape_is_one_sentence(field, value):
    """A field of the wrong kind (another tool's, or damaged) failed later as an
    AttributeError or TypeError traceback in `search` and `info`."""
    from vitrine.errors import StoreError
    from vitrine.manifest import ModelManifest

    good = {"backbone": "mobilenet_v2", "weights_sha256": "ab" * 32, "dim": 1280,
            "preprocessing": {"size": 224, "resize": "crop"}, "embedding": "pooled"}
    assert ModelManifest.read(json.dumps(good), "s") == ModelManifest(**good)
    with pytest.raises(StoreError, match=r"^the model description of the store s cannot be "
                                         r"read \(a field has the wrong kind of value\)"):
        ModelManifest.read(json.dumps({**good, field: value}), "s")


def test_a_name_too_long_or_not_utf8_on_the_command_line_is_one_sentence(small_store,
                                                                         tmp_path):
    """`related --out` with a file name of 300 bytes (train --out, index --store alike)
    and `similar` with an id in bytes that are not UTF-8 ended in tracebacks
    (OSError ENAMETOOLONG, UnicodeEncodeError)."""
    long = _cli("related", "--store", small_store, "--out", tmp_path / ("x" * 300 + ".csv"),
                env={})
    assert long.returncode == 2 and "Traceback" not in long.stderr
    assert long.stderr.startswith("error: ") and "File name too long" in long.stderr
    assert "at most 255 bytes" in long.stderr
    latin = b"\xffx".decode("utf-8", "surrogateescape")
    odd = _cli("similar", "--store", small_store, latin, env={})
    assert odd.returncode == 2 and "Traceback" not in odd.stderr
    assert odd.stderr == "error: product '\\udcffx' is not in the store.\n"


def test_a_long_file_name_the_folder_takes_is_written_whole(tmp_path):
    """A figure named with 240 bytes, which the folder takes, failed with "File name too
    long" after all the work (its part file's name added ~22 bytes); the demo's figure of a
    category of 80 CJK characters (240 bytes) stopped the demo (helper-238)."""
    from vitrine.demo import FILE_NAME_BYTES, _file_name
    from vitrine.files import write_whole

    target = tmp_path / ("f" * 236 + ".png")
    write_whole(target, b"figure")
    write_whole(target, b"again")  # (over the old one, through a part file of its own)
    assert target.read_bytes() == b"again" and [p.name for p in tmp_path.iterdir()] == [
        target.name]
    category = "腕時計" * 27
    name = _file_name(category)
    assert len(name.encode()) <= FILE_NAME_BYTES + 9 and name != _file_name(category + "x")
    write_whole(tmp_path / f"similar-{name}.png", b"figure")


def test_the_part_file_age_patched_in_the_module_is_the_default(tmp_path, monkeypatch):
    """``remove_stale(age=STALE_PART_S)`` took the constant as the module was imported:
    patching ``vitrine.files.STALE_PART_S`` left a killed run's part file in place."""
    import vitrine.files
    from vitrine.files import write_whole

    killed = tmp_path / ".x.png.4242-0badc0de.part"
    killed.write_bytes(b"half")
    old = time.time() - 120
    os.utime(killed, (old, old))
    monkeypatch.setattr(vitrine.files, "STALE_PART_S", 60)
    write_whole(tmp_path / "x.png", b"figure")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]


def test_the_part_file_age_patched_in_files_holds_for_locks_and_exports(tmp_path,
                                                                        monkeypatch):
    """``writer_lock`` and ``engines`` imported ``STALE_PART_S`` by name: patching
    ``vitrine.files.STALE_PART_S`` left an index part file of a live process and an export's
    digest without its model as if they were fresh."""
    import vitrine.files
    from vitrine import engines
    from vitrine.store.writer_lock import part_abandoned

    part = tmp_path / "index.part"
    digest = tmp_path / "gone.onnx.sha256"
    (tmp_path / "m.onnx").write_bytes(b"model")
    for stale in (part, digest):
        stale.write_bytes(b"x")
        old = time.time() - 120
        os.utime(stale, (old, old))
    assert not part_abandoned(part, os.getpid())  # (an hour by default)
    monkeypatch.setattr(vitrine.files, "STALE_PART_S", 60)
    assert part_abandoned(part, os.getpid())
    engines._prune_exports(tmp_path / "m.onnx")
    assert not digest.exists() and (tmp_path / "m.onnx").exists()
