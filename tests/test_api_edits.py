"""An edit made through the API (PATCH) is stored data: `vitrine index` keeps it on a product
no row of a product table names (a folder-only catalogue's), on either store and through
`vitrine migrate`, while a table's row still sets the product it names (helper-394)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import IN_CI, copy_subset
from fastapi.testclient import TestClient

from vitrine.indexer import index_catalog
from vitrine.store import open_store

KEY = "s3cret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _folder_only(demo_catalog: Path, dest: Path) -> Path:
    """8 photos (one a category), no products.csv: each product named by its file."""
    catalog = copy_subset(demo_catalog, dest, 1)
    (catalog / "products.csv").unlink()
    return catalog


def _index(catalog: Path, store: str | Path, embedder):
    db = open_store(store, create=True)
    try:
        return index_catalog(catalog, db, embedder, show_progress=False)
    finally:
        db.close()


def _get(store: str | Path, pid: str):
    db = open_store(store)
    try:
        return db.get(pid)
    finally:
        db.close()


def _patch(settings, store: str | Path, embedder, pid: str, changes: dict) -> dict:
    from vitrine.api import create_app

    app = create_app(settings.model_copy(update={"api_key": KEY}), store, embedder=embedder)
    with TestClient(app) as client:
        edited = client.patch(f"/api/products/{pid}", headers=AUTH, json=changes)
    assert edited.status_code == 200, edited.text
    return edited.json()


def test_an_edit_of_a_folder_only_product_is_kept_by_index(demo_catalog, settings, embedder,
                                                            tmp_path):
    """The shop owner's name and price outlive later runs (they were set back to the file's
    stem and no price, exit 0, nothing said), a changed photo too; a row naming the photo
    then sets it, as the table is where a listed product's fields come from."""
    catalog = _folder_only(demo_catalog, tmp_path / "shop")
    store = tmp_path / "store"
    assert _index(catalog, store, embedder).indexed == 8
    photo = sorted(catalog.rglob("*.jpg"))[0]
    pid = photo.relative_to(catalog).as_posix()
    other = sorted(catalog.rglob("*.jpg"))[1].relative_to(catalog).as_posix()
    body = _patch(settings, store, embedder, pid, {"price": "10,50", "name": "Minha bolsa",
                                                   "description": "Couro"})
    assert (body["name"], body["price"]) == ("Minha bolsa", 10.5)

    report = _index(catalog, store, embedder)
    kept = _get(store, pid)
    assert (kept.name, kept.price, kept.description) == ("Minha bolsa", 10.5, "Couro")
    assert (report.updated, report.unchanged, report.edits_kept) == (0, 8, 1)
    assert _get(store, other).name == Path(other).stem  # the others: their files' names
    # the photo itself changed: embedded again, its edit still kept
    db = open_store(store)
    vector = db.vector(pid)
    db.close()
    shutil.copyfile(sorted(demo_catalog.rglob("*.jpg"))[-1], photo)
    report = _index(catalog, store, embedder)
    assert (report.photos_embedded, report.edits_kept) == (1, 1)
    kept = _get(store, pid)
    assert (kept.name, kept.price, kept.category) == ("Minha bolsa", 10.5, Path(pid).parts[0])
    db = open_store(store)
    assert not (db.vector(pid) == vector).all()
    db.close()
    # a product table naming the photo: its row's values, not the edit's
    (catalog / "products.csv").write_text(f"image,name,price\n{pid},Da tabela,20\n")
    report = _index(catalog, store, embedder)
    assert (report.updated, report.edits_kept) == (1, 0)
    listed = _get(store, pid)
    assert (listed.name, listed.price, listed.description, listed.edited) == (
        "Da tabela", 20.0, "", False)


def test_an_edit_kept_survives_migrate_and_is_kept_on_milvus(demo_catalog, settings, embedder,
                                                             tmp_path):
    """The mark goes with the product into a Milvus store, whose index runs keep it too."""
    if not IN_CI:  # (the milvus extra: required in CI)
        pytest.importorskip("milvus_lite")
    from vitrine.migrate import migrate_store

    catalog = _folder_only(demo_catalog, tmp_path / "shop")
    store = tmp_path / "store"
    _index(catalog, store, embedder)
    pid = sorted(catalog.rglob("*.jpg"))[2].relative_to(catalog).as_posix()
    _patch(settings, store, embedder, pid, {"price": 7, "name": "Editado"})
    lite = f"milvus-lite://{tmp_path}/m.db"
    source, target = open_store(store), open_store(lite, create=True)
    try:
        migrate_store(source, target, photos_to=None, photos_from=None, show_progress=False)
    finally:
        source.close()
        target.close()
    report = _index(catalog, lite, embedder)
    kept = _get(lite, pid)
    assert (kept.name, kept.price) == ("Editado", 7.0)
    assert kept.edited  # (the mark, for the runs after)
    assert (report.updated, report.edits_kept) == (0, 1)
    # a PATCH through a server on the Milvus store itself
    _patch(settings, lite, embedder, pid, {"description": "Outra"})
    report = _index(catalog, lite, embedder)
    kept = _get(lite, pid)
    assert (kept.name, kept.price, kept.description) == ("Editado", 7.0, "Outra")


def test_edits_kept_do_not_let_a_deleted_table_take_the_others_fields(demo_catalog, settings,
                                                                     embedder, tmp_path):
    """Products edited through the API since the last run (a price sync), then products.csv
    moved away: the edited ones keep their fields, but were counted among the products
    still named by a table, so the others' going looked like a few rows dropped: with half
    the products edited, the other half lost their names and prices, exit 0 (refused before
    the edit mark). Refused, nothing written; the table back, every row's values."""
    import csv

    from vitrine.index_checks import RemovalRefused

    catalog = copy_subset(demo_catalog, tmp_path / "shop", 2)  # 16 photos
    with open(catalog / "products.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    with open(catalog / "products.csv", "w", newline="") as fh:  # (ids: the photos' paths)
        writer = csv.writer(fh)
        writer.writerow(["image", "name", "price"])
        writer.writerows([r["image"], r["name"], f"{10 + i},00"] for i, r in enumerate(rows))
    store = tmp_path / "store"
    assert _index(catalog, store, embedder).indexed == 16
    ids = [r["image"] for r in rows]
    for pid in ids[:9]:
        _patch(settings, store, embedder, pid, {"price": 99})
    (catalog / "products.csv").rename(tmp_path / "products.csv")
    with pytest.raises(RemovalRefused, match=r"would turn 7 of the 16 catalogue products .*"
                                             r"no product table lists their photos any more"):
        _index(catalog, store, embedder)
    db = open_store(store)
    try:
        assert [(db.get(pid).name, db.get(pid).price) for pid in ids[9:]] == [
            (r["name"], 10.0 + i) for i, r in enumerate(rows) if i >= 9]
        assert all(db.get(pid).price == 99 for pid in ids[:9])
    finally:
        db.close()
    (tmp_path / "products.csv").rename(catalog / "products.csv")
    report = _index(catalog, store, embedder)
    assert (report.updated, report.edits_kept) == (9, 0)  # (a row's values win)
    assert _get(store, ids[0]).price == 10.0


def test_index_says_how_many_edits_it_kept():
    from vitrine.display import index_lines
    from vitrine.index_report import IndexReport

    report = IndexReport(unchanged=8, edits_kept=1)
    assert index_lines(report, 100, "st")[1] == (
        "Kept: the fields of 1 product edited through the API (no row of a product table "
        "names it; a row would set its fields).")
    assert report.as_dict()["edits_kept"] == 1
