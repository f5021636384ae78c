"""An `error:` line is one line of text: a file name holding an ESC sequence or a line
break (a supplier's zip, a glob over an uploads folder) is said escaped, as the tables and
`index`'s skipped lines say it, not sent to the terminal to clear or retitle it."""

from __future__ import annotations

import json

from conftest import copy_subset

EVIL = "x\x1b]0;PWNED\x07\x1b[2J\nline.jpg"


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_search_says_a_bad_photo_named_with_control_characters_on_one_line(
        demo_catalog, weights_path, tmp_path, cli_here):
    run = cli_here  # (the real entry point, in this process: its stderr as a shell's)
    env = {"VITRINE_WEIGHTS": str(weights_path)}
    catalog = copy_subset(demo_catalog, tmp_path / "catalog", 1)
    store = tmp_path / "store"
    run("index", catalog, "--store", store, env_extra=env)
    bad = tmp_path / EVIL
    bad.write_bytes(b"not a photo")
    good = next(catalog.rglob("*.jpg"))
    proc = run("search", "--store", store, "--k", "1", bad, good, env_extra=env, check=False)
    assert proc.returncode == 2
    assert "\x1b" not in proc.stderr and "\x07" not in proc.stderr
    assert _error_lines(proc.stderr) == [
        f"error: {tmp_path}/x\\x1b]0;PWNED\\x07\\x1b[2J\\nline.jpg: not a recognised image "
        "format."]
    # the JSON keeps the name as written (a script matches it to its own paths)
    proc = run("search", "--store", store, "--k", "1", "--json", bad, env_extra=env,
               check=False)
    assert json.loads(proc.stdout)["query"] == str(bad)
    assert "\x1b" not in proc.stderr


def test_a_command_error_naming_a_file_is_one_escaped_line(weights_path, tmp_path, cli_here):
    run = cli_here
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / EVIL).write_bytes(b"not a photo")
    proc = run("dedupe", folder, env_extra={"VITRINE_WEIGHTS": str(weights_path)},
               check=False)
    assert proc.returncode == 2
    assert "\x1b" not in proc.stderr and "\x07" not in proc.stderr
    (line,) = _error_lines(proc.stderr)
    assert "x\\x1b]0;PWNED\\x07\\x1b[2J\\nline.jpg: not a recognised image format" in line
