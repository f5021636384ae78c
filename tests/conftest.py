"""Shared fixtures. Tests that need the shared weights or demo catalogue skip when those are
missing, except under CI (CI=true), where a missing shared file is a failure."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VITRINE_SHARED", ROOT.parent / "shared"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# OpenMP's threads (torch's, faiss') spin while they wait for work unless told otherwise: on
# a machine whose cores another job is using, the spinning takes the cores the working
# threads need (a small training ran 3× slower with one of 2 cores busy).
# They sleep instead: set before torch is imported, here and in the commands tests start.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def require(path: Path, what: str) -> Path:
    """Return ``path`` if it exists; else fail under CI, skip elsewhere."""
    if path.exists():
        return path
    message = f"{what} not found at {path}"
    if IN_CI:
        pytest.fail(message + " (required in CI)")
    pytest.skip(message)


def require_module(name: str, what: str):
    """Import module ``name``; if it is not installed, fail under CI, skip elsewhere."""
    try:
        return importlib.import_module(name)
    except ImportError:
        if IN_CI:
            pytest.fail(f"{what} is not installed (required in CI)")
        pytest.skip(f"{what} is not installed")


@pytest.fixture(scope="session")
def weights_path() -> Path:
    env = os.environ.get("VITRINE_WEIGHTS")
    path = Path(env) if env else SHARED / "models" / "mobilenet_v2_imagenet.pth"
    return require(path, "MobileNetV2 weights")


@pytest.fixture(scope="session")
def demo_catalog() -> Path:
    env = os.environ.get("VITRINE_DEMO_CATALOG")
    path = Path(env) if env else SHARED / "data" / "demo-catalog"
    return require(path / "products.csv", "demo catalogue").parent


@pytest.fixture(scope="session")
def settings(weights_path):
    from vitrine.config import Settings

    return Settings(weights=weights_path)


@pytest.fixture(scope="session")
def embedder(settings):
    from vitrine.embed import Embedder

    return Embedder.from_settings(settings)


# The warning filters of a fresh `python -m vitrine.cli` (CPython's defaults, no -W): what
# :func:`cli_here` runs a command under, so that a warning the command lets out lands on its
# stderr as it would in a shell (pytest's own filters and warning capture set aside).
FRESH_WARNING_FILTERS = [("default", None, DeprecationWarning, "__main__", 0),
                         ("ignore", None, DeprecationWarning, None, 0),
                         ("ignore", None, PendingDeprecationWarning, None, 0),
                         ("ignore", None, ImportWarning, None, 0),
                         ("ignore", None, ResourceWarning, None, 0)]


@pytest.fixture
def cli_here(monkeypatch, capsys):
    """``cli_here(*args, env_extra=None, check=True, cwd=None)``: run ``vitrine ARGS`` in this
    process through the real entry point (:func:`vitrine.cli.main`: errors as one sentence,
    exit status 2) and return a :class:`subprocess.CompletedProcess` of its exit status,
    stdout and stderr, as ``subprocess.run([*CLI, ...], capture_output=True)`` would, with
    no interpreter, torch and weights to start. For the commands whose check does not depend
    on a fresh process (signals, descriptors, limits, closed stdio, the UTF-8 re-exec,
    start-up without torch, state read at import): those stay subprocesses. ``env_extra``
    is set in the environment for the command alone (a value None unsets); a warning or a
    log record the command lets out is written to its stderr, as a fresh process would."""
    import logging
    import warnings

    def run(*args, env_extra: dict | None = None, check: bool = True, cwd=None):
        from vitrine.cli import main

        capsys.readouterr()  # (what the test printed before is not the command's)
        with monkeypatch.context() as patch, warnings.catch_warnings():
            for name, value in (env_extra or {}).items():  # (None: unset)
                if value is None:
                    patch.delenv(name, raising=False)
                else:
                    patch.setenv(name, str(value))
            patch.setattr(sys, "argv", ["vitrine", *map(str, args)])
            patch.setattr(signal, "signal", lambda *a: None)  # pytest keeps its own

            def no_exec(*a, **k):  # (the UTF-8 re-exec would replace the test process)
                raise AssertionError("the command started itself again: run it in a "
                                     "subprocess")

            patch.setattr(os, "execve", no_exec)
            patch.setattr(logging.root, "handlers", [])  # (Python's last resort: stderr)
            if cwd is not None:
                patch.chdir(cwd)
            warnings.filters[:] = FRESH_WARNING_FILTERS
            warnings.showwarning = lambda message, category, filename, lineno, file=None, \
                line=None: sys.stderr.write(warnings.formatwarning(message, category,
                                                                   filename, lineno, line))
            with pytest.raises(SystemExit) as stopped:
                main()
        said = capsys.readouterr()
        code = stopped.value.code
        code = 0 if code is None else code if isinstance(code, int) else 1
        proc = subprocess.CompletedProcess(["vitrine", *map(str, args)], code, said.out,
                                           said.err)
        if check and proc.returncode != 0:
            raise AssertionError(f"exit {proc.returncode}\nstdout:{proc.stdout}\n"
                                 f"stderr:{proc.stderr}")
        return proc

    return run


def copy_subset(demo: Path, dest: Path, per_category: int, offset: int = 0,
                categories: tuple[str, ...] = ()) -> Path:
    """Copy ``per_category`` photos of each category (of ``categories`` alone where given)
    and matching CSV rows into ``dest``."""
    import csv

    with open(demo / "products.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_cat: dict[str, list[dict]] = {}
    for row in rows:
        by_cat.setdefault(row["category"], []).append(row)
    chosen = [r for cat in sorted(categories or by_cat)
              for r in by_cat[cat][offset:offset + per_category]]
    for row in chosen:
        target = dest / row["image"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(demo / row["image"], target)
    with open(dest / "products.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(chosen)
    return dest


@pytest.fixture(scope="session")
def small_catalog(demo_catalog, tmp_path_factory) -> Path:
    """6 photos of each demo category (48 products). Shared: copy it before changing it."""
    return copy_subset(demo_catalog, tmp_path_factory.mktemp("catalog"), 6)


@pytest.fixture(scope="session")
def small_store(small_catalog, embedder, tmp_path_factory) -> Path:
    """A store indexed from ``small_catalog`` (read-only for tests)."""
    from vitrine.indexer import index_catalog
    from vitrine.store import open_store

    path = tmp_path_factory.mktemp("store") / "store"
    store = open_store(path, create=True)
    index_catalog(small_catalog, store, embedder, show_progress=False)
    store.close()
    return path


@pytest.fixture
def sketched_demo_figures(monkeypatch) -> list[Path]:
    """The demo's figures (one matplotlib figure per category, most of a demo run's time:
    32 of them in one test) written as a few bytes where each would go, for the tests of
    what the demo does with its stores and folders, not of what it draws (test_plots draws
    the figures; the demo runs of test_cli_contract and test_web_pages draw the demo's).
    The paths written, in order."""
    from vitrine import demo

    written: list[Path] = []

    def sketch(query_image, query_title, matches, out, *args, **kwargs) -> Path:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(b"\x89PNG\r\n\x1a\n(the figure, not drawn)")
        written.append(out)
        return out

    monkeypatch.setattr(demo, "plot_recommendations", sketch)
    return written


def loafer(catalog: Path) -> Path:
    """The photo of loafer 10308, whose screenshots the whole page's search placed after
    heels and trainers."""
    import csv

    with open(catalog / "products.csv", newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r["product_id"] == "10308")
    return catalog / row["image"]


def phone_screenshot(photo, colour: tuple, fmt: str, app: str | None = None,
                     width: int = 500) -> bytes:
    """A shopper's screenshot of a product page: the photo ``width`` px wide (500: 43 %) in
    the middle of a 1170 x 2532 page of the app's background colour; with ``app`` ("light"
    or "dark"), the app's bars, text and button around it (:func:`app_chrome`)."""
    import io

    from PIL import Image

    page = Image.new("RGB", (1170, 2532), colour)
    page.paste(Image.open(photo).convert("RGB").resize((width, width)),
               ((1170 - width) // 2, 900 if app is None else 400))
    if app:
        app_chrome(page, app == "dark", below=400 + width)
    buf = io.BytesIO()
    page.save(buf, fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return buf.getvalue()


def app_chrome(page, dark: bool, below: int, accent: tuple = (233, 30, 99)) -> None:
    """Draw a shopping app's page around a product photo on ``page`` (1170 px wide, as tall
    as a phone's): a status bar (clock, signal, battery) and an app bar (back arrow, title,
    icons) in the ``accent`` colour (a black status bar when ``dark``), from ``below`` (the
    photo's bottom) the product's name and its price in large type and an "Add to cart"
    button, and a bottom navigation bar of five icons."""
    from PIL import ImageDraw, ImageFont

    draw = ImageDraw.Draw(page)
    ink = (240, 240, 240) if dark else (33, 33, 33)
    width, height = page.size
    draw.rectangle((0, 0, width, 140), fill=(0, 0, 0) if dark else accent)
    draw.text((70, 40), "9:41", fill=(255, 255, 255), font=ImageFont.load_default(size=52))
    draw.rectangle((980, 50, 1060, 90), outline=(255, 255, 255), width=4)
    draw.rectangle((986, 56, 1040, 84), fill=(255, 255, 255))
    for i, h in enumerate((14, 22, 30, 38)):
        draw.rectangle((850 + 18 * i, 88 - h, 862 + 18 * i, 88), fill=(255, 255, 255))
    draw.rectangle((0, 140, width, 300), fill=accent)
    draw.line((60, 220, 100, 180), fill=(255, 255, 255), width=8)
    draw.line((60, 220, 100, 260), fill=(255, 255, 255), width=8)
    draw.text((150, 190), "Details", fill=(255, 255, 255), font=ImageFont.load_default(size=64))
    draw.ellipse((930, 190, 990, 250), outline=(255, 255, 255), width=6)
    y = below + 50
    for line in ("Rockport Men Slip On", "Brown Casual Shoes"):
        draw.text((60, y), line, fill=ink, font=ImageFont.load_default(size=60))
        y += 80
    draw.text((60, y + 20), "R$ 349,90", fill=ink, font=ImageFont.load_default(size=110))
    y += 250
    draw.rounded_rectangle((60, y, width - 60, y + 150), radius=30, fill=accent)
    draw.text((width // 2 - 220, y + 40), "Add to cart", fill=(255, 255, 255),
              font=ImageFont.load_default(size=70))
    nav = (40, 40, 44) if dark else (238, 238, 242)
    draw.rectangle((0, height - 220, width, height), fill=nav)
    for i in range(5):
        x = 117 + 234 * i
        draw.rounded_rectangle((x - 35, height - 190, x + 35, height - 120), radius=12,
                               outline=accent if i == 0 else (117, 117, 117), width=6)


# Builds the configured embedder in a fresh process and says what it is, what it made of a
# photo, and whether torch was imported.
FRESH_EMBED = """import json, sys
from pathlib import Path
from vitrine.config import Settings
from vitrine.embed import Embedder
e = Embedder.from_settings(Settings())
v = e.embed_image(Path(sys.argv[1]))
print(json.dumps({"torch": "torch" in sys.modules, "manifest": e.manifest.as_dict(),
                  "vector": v.tolist(), "classes": list(e.classes), "tail": e.probs_tail,
                  "cosine": e.duplicate_cosine, "model_dir": str(e.model_dir),
                  "size": e.prep.size, "resize": e.prep.resize}))
"""


def embed_in_fresh_process(env: dict, photo: Path,
                           check: bool = True) -> dict | subprocess.CompletedProcess:
    """Build the embedder the environment ``env`` configures in a new process (the settings
    from the environment, as the CLI's) and embed ``photo``: what it is, the vector, and
    whether torch was imported (:mod:`vitrine.warm`); with ``check`` False, the process."""
    proc = subprocess.run([sys.executable, "-c", FRESH_EMBED, str(photo)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **env})
    if not check:
        return proc
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)
