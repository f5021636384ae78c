"""What a new user ran into (helper-390's report, helper-394): a store made among the files of
any folder named (`--store ~`), a web address given to `search` said to be a missing file,
and `--replace`'s help promising to empty a store that a folder without photos cannot."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import copy_subset


@pytest.fixture(scope="module")
def bags(demo_catalog, tmp_path_factory) -> Path:
    """One category's two photos, with its product table. Read-only."""
    return copy_subset(demo_catalog, tmp_path_factory.mktemp("bags") / "shop", 2,
                       categories=("x_bolsa_feminina",))


def _home(tmp_path: Path) -> Path:
    """A folder of the user's own files."""
    home = tmp_path / "home"
    (home / "Fotos").mkdir(parents=True)
    (home / "notas.txt").write_text("minhas notas")
    (home / ".bashrc").write_text("# mine")
    return home


def test_a_new_store_is_not_made_among_a_folders_own_files(bags, cli_here, weights_path,
                                                           tmp_path):
    """`--store ~` (or `/`) wrote vitrine.sqlite, manifest.json, index files and write.lock
    among the user's files, exit 0: refused in one sentence, status 2, nothing written."""
    env = {"VITRINE_WEIGHTS": weights_path}
    home = _home(tmp_path)
    before = sorted(os.listdir(home))
    for store, env_extra in ((home, env), ("~", {**env, "HOME": home})):
        proc = cli_here("index", bags, "--store", store, env_extra=env_extra, check=False)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert proc.stderr.startswith(f"error: --store {store} is a folder of other files "
                                      "(3, such as Fotos) that holds no Vitrine store")
        assert proc.stderr.count("\n") == 1 and "Nothing was written." in proc.stderr
        assert f"such as {os.path.join(str(store), 'vitrine-store')}." in proc.stderr
        assert sorted(os.listdir(home)) == before
    # an empty folder (a desktop's .DS_Store in it), a new one, and a store's own: made or used
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".DS_Store").write_bytes(b"\0")
    for store in (empty, home / "vitrine-store", empty):
        said = json.loads(cli_here("index", bags, "--store", store, "--json",
                                   env_extra=env).stdout)
        assert said["indexed"] + said["unchanged"] == 2
    # migrate's target and the demo's store alike
    proc = cli_here("migrate", empty, home, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith(
        f"error: TARGET_STORE {home} is a folder of other files (4, such as Fotos)")
    assert sorted(os.listdir(home)) == sorted([*before, "vitrine-store"])


def test_the_demo_does_not_make_its_store_among_a_folders_files(bags, settings, tmp_path):
    from rich.console import Console

    from vitrine.demo import run_demo
    from vitrine.errors import VitrineError

    home = _home(tmp_path)
    demo = settings.model_copy(update={"demo_train": False})
    with pytest.raises(VitrineError, match="is a folder of other files"):
        run_demo(bags, home, tmp_path / "out", demo, 2, console=Console(record=True))
    assert sorted(os.listdir(home)) == [".bashrc", "Fotos", "notas.txt"]


def test_a_web_address_is_said_to_be_one_not_a_missing_file(bags, cli_here, weights_path,
                                                            tmp_path):
    env = {"VITRINE_WEIGHTS": weights_path}
    store = tmp_path / "store"
    cli_here("index", bags, "--store", store, env_extra=env)
    photo = next(bags.rglob("*.jpg"))
    url = "https://example.com/bolsa.jpg"
    proc = cli_here("search", "--store", store, url, photo, "--json", env_extra=env,
                    check=False)
    assert proc.returncode == 2
    first, second = (json.loads(line) for line in proc.stdout.splitlines())
    assert first["error"] == (f"{url}: a web address, not a photo file (Vitrine reads photos "
                              "from files and downloads nothing); download it first and "
                              "give its path.")
    assert second["results"]  # the other photo is still searched
    assert proc.stderr == f"error: {first['error']}\n"


def test_replace_says_a_folder_without_photos_cannot_empty_a_store(bags, cli_here,
                                                                   weights_path, tmp_path):
    """The help said --replace removes "all of them"; a folder without photos is refused, on
    purpose (an empty mount point), and the help now says so and how a store is emptied."""
    env = {"VITRINE_WEIGHTS": weights_path}
    store = tmp_path / "store"
    cli_here("index", bags, "--store", store, env_extra=env)
    (tmp_path / "emptied").mkdir()
    proc = cli_here("index", tmp_path / "emptied", "--store", store, "--replace",
                    env_extra=env, check=False)
    assert proc.returncode == 2 and "no product photos found" in proc.stderr
    info = json.loads(cli_here("info", "--store", store, "--json").stdout)
    assert info["products"] == 2  # nothing lost
    shown = " ".join(cli_here("index", "--help", env_extra={"COLUMNS": "300"}).stdout.split())
    assert ("A folder without photos is refused all the same: to empty an embedded store, "
            "delete its folder.") in shown.replace("│", "").replace("  ", " ")


def test_a_folder_of_what_a_killed_store_left_is_not_refused(tmp_path):
    """A first `index` killed while it made the database left ``vitrine.<6 hex>`` (and its
    journal), a killed manifest write ``.manifest.json.<pid>-<hex>.part``: the next run was
    refused as "a folder of other files (such as vitrine.3fa2c1)", which the store itself
    had written there; a folder with one file of the user's beside them still is."""
    from vitrine.errors import VitrineError
    from vitrine.index_checks import refuse_foreign_folder

    left = tmp_path / "store"
    left.mkdir()
    for name in ("vitrine.3fa2c1", "vitrine.3fa2c1-journal", "write.lock",
                 ".manifest.json.4242-0a1b2c3d.part", "manifest.json.tmp", "index.3.faiss"):
        (left / name).write_bytes(b"")
    refuse_foreign_folder(left, tmp_path / "shop")  # (not refused)
    (left / "notas.txt").write_text("minhas notas")
    with pytest.raises(VitrineError, match=r"is a folder of other files \(1, such as "
                                           r"notas\.txt\)"):
        refuse_foreign_folder(left, tmp_path / "shop")
