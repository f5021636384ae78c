"""The README's architecture table and cited result files agree with the repository."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _module_table() -> str:
    start = README.index("| module | job |")
    return README[start:README.index("\n\n", start)]


def test_every_module_is_named_in_the_architecture_table():
    """Each module under src/vitrine (store/ and web/ by their file names) has a row that
    names it: thumb_upgrade.py and __main__.py had none."""
    table = _module_table()
    package = ROOT / "src" / "vitrine"
    missing = [str(path.relative_to(package)) for path in sorted(package.rglob("*.py"))
               if path.name != "__init__.py" and f"`{path.name}`" not in table
               and f"`{path.relative_to(package).as_posix()}`" not in table]
    assert not missing, f"modules without a row in the README's table: {missing}"


def test_every_module_the_table_names_exists():
    package = ROOT / "src" / "vitrine"
    names = {path.name for path in package.rglob("*.py")}
    gone = sorted(set(re.findall(r"`([a-z_]+\.py)`", _module_table())) - names)
    assert not gone, f"the README's table names modules that are gone: {gone}"


def test_every_result_file_the_readme_cites_exists():
    results = ROOT / "benchmarks" / "results"
    cited = set(re.findall(r"\b([a-z][a-z0-9_.]*\.json)\b", README))
    written_elsewhere = {"model.json", "summary.json", "split.json", "demo.json",
                         "manifest.json", "openapi.json", "history.json", "metrics.json"}
    missing = sorted(name for name in cited - written_elsewhere
                     if not (results / name).exists()
                     and not (results / "train_tuning" / name).exists())
    assert not missing, f"the README cites result files that are not there: {missing}"
