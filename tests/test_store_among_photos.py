"""A store folder named among the catalogue's photos (`--store catalogue/bolsas`, a category's
folder) hid that category for good: a folder holding a store's database is not read as
photos, so that run indexed the other categories alone (exit 0; with a product table, it was
refused, but only after the database was made there), and every later run, into any store,
left the category out and removed its products. Refused now before anything is written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import copy_subset

from vitrine.store import open_store

CATEGORIES = ("relogio_feminino", "x_bolsa_feminina")


@pytest.fixture
def shop(demo_catalog, tmp_path) -> Path:
    """2 photos of 2 categories, with the demo's product table."""
    return copy_subset(demo_catalog, tmp_path / "shop", 2, categories=CATEGORIES)


def _count(store: Path) -> int:
    db = open_store(store)
    try:
        return db.count()
    finally:
        db.close()


def _store_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix != ".jpg")


@pytest.mark.parametrize("table", [True, False])
def test_a_store_in_a_category_folder_is_refused_before_anything_is_written(
        shop, cli_here, weights_path, tmp_path, table):
    if table:  # (a second product of one of its photos: the photos are counted)
        rows = (shop / "products.csv").read_text().splitlines()
        bag = next(row for row in rows if "x_bolsa_feminina/" in row)
        rows.append("copy-1," + bag.split(",", 1)[1])
        (shop / "products.csv").write_text("\n".join(rows) + "\n")
    else:
        (shop / "products.csv").unlink()
    env = {"VITRINE_WEIGHTS": weights_path}
    bags = shop / "x_bolsa_feminina"
    proc = cli_here("index", shop, "--store", bags, env_extra=env, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith(f"error: --store {bags} is a folder of the catalogue's "
                                  "photos (2, such as ")
    assert proc.stderr.count("\n") == 1 and "Nothing was written." in proc.stderr
    assert _store_files(bags) == []  # (the database was made there: the category was gone)
    # the catalogue is whole for the store the user meant
    cli_here("index", shop, "--store", tmp_path / "store", env_extra=env)
    assert _count(tmp_path / "store") == 4 + table


def test_a_linked_category_folder_is_refused_by_either_path(shop, cli_here, weights_path,
                                                            tmp_path):
    elsewhere = tmp_path / "elsewhere" / "bolsas"
    shutil.move(shop / "x_bolsa_feminina", elsewhere)
    (shop / "x_bolsa_feminina").symlink_to(elsewhere, target_is_directory=True)
    env = {"VITRINE_WEIGHTS": weights_path}
    for store in (shop / "x_bolsa_feminina", elsewhere):
        proc = cli_here("index", shop, "--store", store, env_extra=env, check=False)
        assert proc.returncode == 2 and "is a folder of the catalogue's photos" in proc.stderr
        assert _store_files(elsewhere) == []


def test_the_catalogue_folder_or_a_new_folder_inside_it_may_hold_the_store(
        shop, cli_here, weights_path):
    env = {"VITRINE_WEIGHTS": weights_path}
    for store in (shop, shop / "loja", shop / "x_bolsa_feminina" / "loja"):
        cli_here("index", shop, "--store", store, env_extra=env)
        assert _count(store) == 4


def test_the_demo_refuses_a_store_in_a_category_folder(shop, settings):
    from rich.console import Console

    from vitrine.demo import run_demo
    from vitrine.errors import VitrineError

    bags = shop / "x_bolsa_feminina"
    demo = settings.model_copy(update={"demo_train": False})
    with pytest.raises(VitrineError, match="is a folder of the catalogue's photos"):
        run_demo(shop, bags, shop.parent / "out", demo, 2,
                 console=Console(record=True, width=200))
    assert _store_files(bags) == []


def test_migrate_refuses_a_target_among_the_source_catalogues_photos(shop, cli_here,
                                                                      weights_path, tmp_path):
    """The copy made a store in the category's folder: the next index of the catalogue was
    refused (its table's rows were then in a store's folder), or without a table left the
    category out."""
    cli_here("index", shop, "--store", tmp_path / "store",
             env_extra={"VITRINE_WEIGHTS": weights_path})
    bags = shop / "x_bolsa_feminina"
    proc = cli_here("migrate", tmp_path / "store", bags, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith(
        f"error: TARGET_STORE {bags} is a folder of the catalogue's photos (2, such as ")
    assert _store_files(bags) == []
    cli_here("migrate", tmp_path / "store", shop / "loja")  # a new folder in it: a copy
    assert _count(shop / "loja") == 4
