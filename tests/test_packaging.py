"""The wheel a user installs holds what the installed package reads at run time."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_every_module_page_file_and_the_typed_marker(tmp_path):
    """Built from a copy of the sources (not the checkout, whose build folder stays clean):
    every module, every template and static file the pages read, and py.typed (without it
    a type checker skipped Vitrine's annotations: helper-236) are in the wheel; its version
    is the package's own."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
                            str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    wheel, = (tmp_path / "dist").glob("vitrine-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    package = ROOT / "src" / "vitrine"
    wanted = {f"vitrine/{p.relative_to(package).as_posix()}" for p in package.rglob("*")
              if p.is_file() and "__pycache__" not in p.parts}
    assert "vitrine/py.typed" in wanted and {f"vitrine/web/static/{name}.js" for name in
                                             ("app", "filters", "carry")} <= wanted
    assert wanted - names == set()
    from vitrine import __version__

    assert wheel.name.startswith(f"vitrine-{__version__}-py3-none-any")
