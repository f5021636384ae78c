"""`vitrine index` must not lose a catalogue by accident: another folder into the same store, an
unmounted drive or photos moved away are refused before anything is written (`--replace` lets
them through); a product whose photo was deleted leaves the store; messages say what to do."""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
import sqlite3
import sys
from pathlib import Path

import pytest
from conftest import IN_CI, copy_subset

from vitrine.catalog import Product
from vitrine.embed import ModelManifest
from vitrine.errors import CatalogError, StoreError
from vitrine.index_checks import RemovalRefused
from vitrine.index_report import OUTSIDE_FOLDER, OUTSIDE_PHOTO
from vitrine.indexer import index_catalog
from vitrine.manifest import mismatch_error
from vitrine.store import open_store
from vitrine.store.base import Record
from vitrine.store.embedded import EmbeddedStore


@pytest.fixture(scope="module")
def shop_a(demo_catalog, tmp_path_factory) -> Path:
    """16 products (2 per category). Read-only: copy it before changing it."""
    return copy_subset(demo_catalog, tmp_path_factory.mktemp("a") / "shopA", 2)


@pytest.fixture(scope="module")
def novidades(demo_catalog, tmp_path_factory) -> Path:
    """8 other products (ids not in shop_a)."""
    return copy_subset(demo_catalog, tmp_path_factory.mktemp("b") / "novidades", 1, offset=5)


def _index(catalog: Path, store: Path, embedder, **kw):
    db = open_store(store, create=True)
    try:
        return index_catalog(catalog, db, embedder, show_progress=False, **kw)
    finally:
        db.close()


def _without_ids(table: Path, to: Path) -> None:
    """Write ``table`` to ``to`` without its product_id column (each photo's id is then its
    path, as without a table)."""
    with open(table, newline="") as fh:
        rows = list(csv.DictReader(fh))
    with open(to, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[k for k in rows[0] if k != "product_id"],
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _state(store: Path) -> tuple[int, str | None, str | None]:
    """(products, recorded catalogue folder, write generation) read from the SQLite file."""
    with sqlite3.connect(store / "vitrine.sqlite") as db:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        return (db.execute("SELECT COUNT(*) FROM products").fetchone()[0], meta.get("catalog"),
                meta.get("generation"))


def test_a_catalogue_behind_a_moved_release_link_is_indexed_again_without_embedding(
        shop_a, embedder, tmp_path):
    """A shop deploys releases and serves the catalogue through a link (current ->
    releases/1). The store names photos by their real paths, so when the link moves to the
    next release the store follows it at the next `index`: every photo's path is updated,
    none embedded again, nothing removed, and the photos are the new release's."""
    (tmp_path / "releases").mkdir()
    shutil.copytree(shop_a, tmp_path / "releases" / "1")
    current = tmp_path / "current"
    current.symlink_to(tmp_path / "releases" / "1")
    store = tmp_path / "store"
    assert _index(current, store, embedder).indexed == 16
    shutil.copytree(tmp_path / "releases" / "1", tmp_path / "releases" / "2")
    current.unlink()
    current.symlink_to(tmp_path / "releases" / "2")
    shutil.rmtree(tmp_path / "releases" / "1")
    report = _index(current, store, embedder)
    assert (report.indexed, report.updated, report.removed) == (0, 16, 0)
    assert report.photos_embedded == 0 and report.skipped == []
    db = open_store(store)
    try:
        assert {Path(path).parent.parent for path in db.images().values()} == {
            tmp_path / "releases" / "2"}
        assert db.catalog_link() == str(current)
    finally:
        db.close()
    # the next release drops a product: the store follows the link still (it was refused
    # as "another folder", the one the link named before, until --replace)
    def release(number: int) -> Path:
        folder = tmp_path / "releases" / str(number)
        shutil.copytree(tmp_path / "releases" / str(number - 1), folder)
        dropped = sorted(folder.rglob("*.jpg"))[0]
        dropped.unlink()
        if (table := folder / "products.csv").exists():
            rows = [line for line in table.read_text().splitlines()
                    if dropped.name not in line]
            table.write_text("\n".join(rows) + "\n")
        return folder

    from contextlib import closing

    from vitrine.migrate import migrate_store

    copy = tmp_path / "copy"  # a copy kept in step with the store by `migrate`
    with closing(open_store(store)) as source, closing(open_store(copy, create=True)) as target:
        migrate_store(source, target, show_progress=False)
    current.unlink()
    current.symlink_to(release(3))
    report = _index(current, store, embedder)
    assert (report.removed, report.photos_embedded) == (1, 0)
    # the copy follows (it was refused as another catalogue's store)
    with closing(open_store(store)) as source, closing(open_store(copy)) as target:
        assert migrate_store(source, target, prune=True, show_progress=False).removed == 1
        assert (target.catalog_folder(), target.catalog_link()) == (
            source.catalog_folder(), str(current))
    # another folder given itself (not through the link) is refused as before
    with pytest.raises(RemovalRefused, match="would remove 1 of them"):
        _index(release(4), store, embedder)
    # nor does a path that reads as the link (`..` taken as text) but names another one
    (tmp_path / "elsewhere" / "x").mkdir(parents=True)
    (tmp_path / "elsewhere" / "current").symlink_to(tmp_path / "releases" / "4")
    (tmp_path / "other").symlink_to(tmp_path / "elsewhere" / "x")
    with pytest.raises(RemovalRefused, match="would remove 1 of them"):
        _index(tmp_path / "other" / ".." / "current", store, embedder)
    # a catalogue in a folder of the release (current/catalogue) follows the link too
    from vitrine.index_checks import catalogue_link

    (tmp_path / "releases" / "4" / "catalogue").mkdir()
    assert catalogue_link(current / "catalogue") == str(tmp_path.resolve() / "current" /
                                                        "catalogue")
    if tmp_path.resolve() == tmp_path:  # (no link above it)
        assert catalogue_link(tmp_path / "releases" / "4") is None
    # a link higher up moved to another folder (work -> projects/clientA, then clientB) is
    # another catalogue, as is a folder beside the link's (`current/../other`)
    (tmp_path / "work").symlink_to(tmp_path / "releases")
    assert catalogue_link(tmp_path / "work" / "4" / "catalogue") is None
    assert catalogue_link(current / "..") is None
    assert catalogue_link(current / ".." / "releases") is None


def test_another_folder_is_refused_before_any_write_and_replace_lets_it(
        shop_a, novidades, weights_path, tmp_path, cli_here):
    def _cli(*args, weights: Path):  # `vitrine ARGS`: the real entry point, in this process
        return cli_here(*args, env_extra={"VITRINE_WEIGHTS": str(weights)}, check=False)

    store = tmp_path / "st"
    first = _cli("index", shop_a, "--store", store, "--json", weights=weights_path)
    assert first.returncode == 0, first.stderr
    before = _state(store)
    assert before[:2] == (16, str(shop_a.resolve()))

    refused = _cli("index", novidades, "--store", store, "--json", weights=weights_path)
    assert refused.returncode == 2 and refused.stdout == ""
    message = refused.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert message.startswith(f"error: the store {store} holds 16 catalogue products indexed "
                              f"from {shop_a.resolve()}; indexing {novidades.resolve()} would "
                              "remove 16 of them. Pass --replace")
    assert _state(store) == before  # nothing written: no product, no record, no generation

    replaced = _cli("index", novidades, "--store", store, "--replace", weights=weights_path)
    assert replaced.returncode == 0, replaced.stderr
    assert "Indexed 8, updated 0, removed 16" in replaced.stdout
    assert _state(store)[:2] == (8, str(novidades.resolve()))


def test_another_folder_holding_part_of_the_catalogue_is_refused(shop_a, demo_catalog,
                                                                 embedder, tmp_path):
    """Another folder that holds half of the store's products (the same ids) would remove the
    other half: refused as well, not only a folder that would remove every product."""
    store = tmp_path / "st"
    _index(shop_a, store, embedder)
    before = _state(store)
    half = copy_subset(demo_catalog, tmp_path / "half", 1)  # the first photo of each category
    with pytest.raises(RemovalRefused, match=f"indexed from {shop_a.resolve()}; indexing "
                                             f"{half.resolve()} would remove 8 of them"):
        _index(half, store, embedder)
    assert _state(store) == before


def test_another_folder_that_removes_nothing_becomes_the_catalogue(shop_a, embedder, tmp_path):
    """A moved catalogue (same ids) or a larger one is not refused; the store records it."""
    store = tmp_path / "st"
    _index(shop_a, store, embedder)
    moved = tmp_path / "moved"
    shutil.copytree(shop_a, moved)
    report = _index(moved, store, embedder)
    assert (report.removed, report.updated, report.indexed) == (0, 16, 0)  # new photo paths
    assert _state(store)[:2] == (16, str(moved.resolve()))


def test_a_store_without_a_recorded_folder_records_it(shop_a, novidades, embedder, tmp_path):
    """Stores written before the folder was recorded: the run records it; another folder
    that would remove more than a tenth of the products, their photos still there, is
    refused (a copy of the catalogue with a product deleted goes ahead)."""
    store = tmp_path / "st"
    _index(shop_a, store, embedder)
    with sqlite3.connect(store / "vitrine.sqlite") as db:
        db.execute("DELETE FROM meta WHERE key='catalog'")
    with pytest.raises(RemovalRefused, match="records no catalogue folder .* 16 of its 16 "
                                             "catalogue products have photos outside"):
        _index(novidades, store, embedder)
    part = tmp_path / "part"
    shutil.copytree(shop_a, part)
    rows = (part / "products.csv").read_text().splitlines()
    (part / "products.csv").write_text("\n".join(rows[:-1]) + "\n")
    (part / rows[-1].split(",")[1]).unlink()
    with sqlite3.connect(store / "vitrine.sqlite") as db:
        db.execute("DELETE FROM meta WHERE key='catalog'")
    assert _index(part, store, embedder).removed == 1
    assert _state(store)[:2] == (15, str(part.resolve()))


def test_every_photo_missing_is_refused_unless_replace(shop_a, embedder, tmp_path):
    """The same folder with its photos gone (moved away, a drive not mounted under a folder
    that still holds products.csv) would empty the store: refused, nothing written."""
    catalog = tmp_path / "shop"
    shutil.copytree(shop_a, catalog)
    store = tmp_path / "st"
    _index(catalog, store, embedder)
    before = _state(store)
    for folder in [p for p in catalog.iterdir() if p.is_dir()]:
        shutil.rmtree(folder)
    with pytest.raises(RemovalRefused, match=r"would remove every one of the 16 catalogue "
                                             r"products .*\(their photo files are missing\); "
                                             "check that the folder is complete"):
        _index(catalog, store, embedder)
    assert _state(store) == before
    report = _index(catalog, store, embedder, replace=True)
    assert report.removed == 16 and _state(store)[0] == 0
    assert {s["reason"] for s in report.skipped} == {"file not found; removed from the store"}


def test_an_empty_folder_is_already_an_error(tmp_path):
    """An empty mount point never reaches the store: read_catalog refuses it."""
    from vitrine.catalog import read_catalog
    from vitrine.errors import CatalogError

    (tmp_path / "mnt").mkdir()
    with pytest.raises(CatalogError, match="no product photos found"):
        read_catalog(tmp_path / "mnt")


def test_a_shard_of_another_folder_checks_the_whole_store(shop_a, novidades, embedder,
                                                          tmp_path):
    store = tmp_path / "st"
    for i in range(2):
        _index(shop_a, store, embedder, shard=(i, 2))
    assert _state(store)[:2] == (16, str(shop_a.resolve()))
    with pytest.raises(RemovalRefused, match=r"holds 16 catalogue products indexed from .*"
                                             r"would remove 16 of them"):
        _index(novidades, store, embedder, shard=(0, 2))
    assert _state(store)[0] == 16


def _csv_rows(catalog: Path) -> list[list[str]]:
    return [r.split(",") for r in (catalog / "products.csv").read_text().splitlines()[1:]]


def _drop(catalog: Path, ids: set[str]) -> None:
    """Remove the products ``ids`` from ``catalog``: their photos and their rows."""
    lines = (catalog / "products.csv").read_text().splitlines()
    for row in _csv_rows(catalog):
        if row[0] in ids:
            (catalog / row[1]).unlink()
    (catalog / "products.csv").write_text("\n".join(
        [lines[0], *(line for line in lines[1:] if line.split(",")[0] not in ids)]) + "\n")


def test_shards_of_another_folder_remove_nothing_in_any_order(shop_a, embedder, tmp_path):
    """helper-147: a shard with nothing of its own to remove recorded the other folder, and
    the next shard then removed its products without --replace (refused unsharded)."""
    from vitrine.indexer import in_shard

    store = tmp_path / "st"
    _index(shop_a, store, embedder)
    moved = tmp_path / "moved"
    shutil.copytree(shop_a, moved)
    _drop(moved, set(sorted(r[0] for r in _csv_rows(moved) if in_shard(r[0], (1, 2)))[:2]))
    for i in (0, 1):
        with pytest.raises(RemovalRefused, match=r"holds 16 catalogue products indexed from "
                                                 r".* would remove 2 of them"):
            _index(moved, store, embedder, shard=(i, 2))
    assert _state(store)[:2] == (16, str(shop_a.resolve()))


def test_a_shard_of_another_folder_keeps_unmarked_uploads_of_every_shard(shop_a, embedder,
                                                                         tmp_path):
    """A product added through the API by a Vitrine from before the mark, held in another
    shard, counted as a catalogue product the new folder would remove (helper-152)."""
    import numpy as np

    from vitrine.indexer import in_shard

    store = tmp_path / "st"
    _index(shop_a, store, embedder)
    pid = next(f"old-upload-{k}" for k in range(100) if in_shard(f"old-upload-{k}", (1, 2)))
    db = open_store(store)
    db.lock_for_writing()
    db.upsert([Record(Product(pid, Path("loja/uploads") / ("ab" * 32 + ".jpg")), "c" * 64,
                      "0" * 16, b"\0" * 768, np.eye(db.manifest().dim, dtype=np.float32)[0])])
    db.close()
    moved = tmp_path / "moved"
    shutil.copytree(shop_a, moved)
    for i in (0, 1):
        _index(moved, store, embedder, shard=(i, 2))
    assert _state(store)[:2] == (17, str(moved.resolve()))


def test_a_shard_whose_share_is_gone_removes_it_while_the_folder_is_there(shop_a, embedder,
                                                                          tmp_path):
    """helper-147: the only product of a shard deleted from the catalogue was refused as
    "every one of the 1 catalogue products in shard …", though the folder's other photos
    were there; an unsharded run removed it."""
    from vitrine.indexer import in_shard

    catalog = tmp_path / "shop"
    shutil.copytree(shop_a, catalog)
    store = tmp_path / "st"
    _index(catalog, store, embedder)
    ids = [r[0] for r in _csv_rows(catalog)]
    n = 64  # shards enough for one to hold a single product
    shard = next((i, n) for i in range(n) if sum(in_shard(p, (i, n)) for p in ids) == 1)
    (alone,) = [p for p in ids if in_shard(p, shard)]
    _drop(catalog, {alone})
    assert _index(catalog, store, embedder, shard=shard).removed == 1
    assert _state(store)[0] == 15
    # every photo of the folder gone (a drive not mounted): still refused
    for row in _csv_rows(catalog):
        (catalog / row[1]).unlink()
    with pytest.raises(RemovalRefused, match="every one of the"):
        _index(catalog, store, embedder, shard=(0, 2))
    assert _state(store)[0] == 15


def test_a_photo_name_that_is_not_utf8_is_skipped_by_its_shard(shop_a, embedder, tmp_path):
    """helper-147: `--shard` hashed the id of a photo whose file name is not UTF-8 and
    stopped with a traceback; unsharded it is skipped with its reason. It is not counted
    among the photos indexed under their file names either."""
    catalog = tmp_path / "shop"
    shutil.copytree(shop_a, catalog)
    first = catalog / _csv_rows(catalog)[0][1]
    latin = os.fsdecode(bytes(first.parent) + b"/caf\xe9.jpg")
    shutil.copyfile(first, latin)
    store = tmp_path / "st"
    reports = [_index(catalog, store, embedder, shard=(i, 2)) for i in (0, 1)]
    reasons = [s["reason"] for r in reports for s in r.skipped]
    assert len(reasons) == 1 and "not UTF-8" in reasons[0], reasons
    assert sum(r.unlisted for r in reports) == 0
    assert _state(store)[0] == 16
    # nor is one that cannot be read as a photo (skipped while embedding): an unlisted
    # photo that is one is
    (first.parent / "broken.jpg").write_bytes(b"garbage")
    shutil.copyfile(catalog / _csv_rows(catalog)[1][1], first.parent / "extra.jpg")
    report = _index(catalog, tmp_path / "st2", embedder)
    assert report.unlisted == 1 and report.indexed == 17


def test_a_deleted_photo_leaves_the_store_an_unreadable_one_does_not(shop_a, embedder,
                                                                     tmp_path):
    catalog = tmp_path / "shop"
    shutil.copytree(shop_a, catalog)
    store = tmp_path / "st"
    _index(catalog, store, embedder)
    rows = [r.split(",") for r in (catalog / "products.csv").read_text().splitlines()[1:]]
    deleted, corrupt = rows[0], rows[1]
    (catalog / deleted[1]).unlink()  # its CSV row kept
    (catalog / corrupt[1]).write_bytes(b"not a photo any more")
    report = _index(catalog, store, embedder)
    assert report.removed == 1 and report.unchanged == 14
    reasons = {s["path"]: s["reason"] for s in report.skipped}
    assert reasons[deleted[1]] == "file not found; removed from the store"
    assert "removed" not in reasons[corrupt[1]]
    db = open_store(store)
    try:
        assert db.get(deleted[0]) is None  # no broken image, no longer recommended
        assert db.get(corrupt[0]) is not None  # keeps what the store held
        assert db.count() == 15
    finally:
        db.close()
    again = _index(catalog, store, embedder)  # still missing: reported, nothing to remove
    assert again.removed == 0
    assert {s["path"]: s["reason"] for s in again.skipped}[deleted[1]] == "file not found"


def test_a_store_made_with_another_normalisation_is_refused(shop_a, embedder, tmp_path):
    """The same weights with other preprocessing make other vectors: refused by index, and
    said as what differs."""
    import dataclasses

    db = open_store(tmp_path / "st", create=True)
    prep = {**embedder.manifest.preprocessing, "mean": [0.5, 0.5, 0.5]}
    db.set_manifest(dataclasses.replace(embedder.manifest, preprocessing=prep))
    try:
        with pytest.raises(StoreError, match=r"different model than this run \(normalisation "
                                             r"mean \[0\.5, 0\.5, 0\.5\], std .* in the store"):
            index_catalog(shop_a, db, embedder, show_progress=False)
        assert db.count() == 0
    finally:
        db.close()


def test_another_model_says_how_to_go_on(shop_a, embedder, tmp_path):
    store = tmp_path / "st"
    db = open_store(store, create=True)
    trained = ModelManifest("mobilenet_v2", "ab" * 32, dict(embedder.manifest.preprocessing),
                            1280, embedding="imagenet+probs")
    db.set_manifest(trained)
    with pytest.raises(StoreError) as refused:
        index_catalog(shop_a, db, embedder, show_progress=False)
    db.close()
    text = str(refused.value)
    assert "different model" in text
    assert (f"(weights abababababab in the store, {embedder.manifest.weights_sha256[:12]} here; "
            "embedding trained (imagenet+probs) in the store, pretrained here)") in text
    assert "; to use this model, index into a new --store with it" in text
    assert text.endswith("or pass the --model (or VITRINE_MODEL) this store was indexed with.")


def test_a_model_that_differs_only_in_normalisation_says_so(embedder):
    """Two models alike but for the normalisation: the refusal names that, not two identical
    descriptions."""
    stored = embedder.manifest
    other = ModelManifest(stored.backbone, stored.weights_sha256,
                          {**stored.preprocessing, "mean": [0.5, 0.5, 0.5]}, stored.dim)
    text = str(mismatch_error("st", other, stored))
    assert (f"(normalisation mean [0.5, 0.5, 0.5], std {stored.preprocessing['std']} in the "
            f"store, mean {stored.preprocessing['mean']}, std {stored.preprocessing['std']} "
            "here)") in text
    assert "weights" not in text.split(";")[0]


def test_a_catalogue_id_in_another_unicode_form_leaves_the_api_product_alone(
        shop_a, embedder, tmp_path):
    """The API added "relógio/1.jpg" (composed); the catalogue then held that photo under a
    Mac's decomposed name: index added it beside the API's product, two products of one id
    as shown (the API reads, edits and deletes either form as one). It is the API's, left
    as it is, in whichever shard either form falls."""
    import unicodedata

    from vitrine.catalog import Product

    composed = "relógio/1.jpg"
    catalog = tmp_path / "cat"
    (catalog / unicodedata.normalize("NFD", "relógio")).mkdir(parents=True)
    photo = next(shop_a.rglob("*.jpg"))
    shutil.copy(photo, catalog / unicodedata.normalize("NFD", composed))
    store = tmp_path / "st"
    db = open_store(store, create=True)
    db.set_manifest(embedder.manifest)
    vector = embedder.embed_image(photo)
    db.upsert([Record(Product(composed, photo, "relógio", name="API", uploaded=True),
                      "0" * 64, "0" * 16, b"\0" * 768, vector)])
    db.close()
    report = _index(catalog, store, embedder)
    assert (report.indexed, report.uploaded) == (0, 1)
    db = open_store(store)
    assert db.count() == 1 and db.get(composed).name == "API"
    db.close()
    for shard in ((0, 3), (1, 3), (2, 3)):  # (the two forms fall in shards 1 and 0 of 3)
        assert _index(catalog, store, embedder, shard=shard).indexed == 0
    assert _state(store)[0] == 1


def test_a_split_catalogue_is_indexed_by_the_folders_under_its_splits(shop_a, embedder,
                                                                      tmp_path):
    """The reference design's layout, train/ and test/ folders of category folders: index
    stored every product under the category "train" or "test". The categories are the
    folders under the splits (as train and evaluate read them); a photo outside the split
    folders is named as skipped, not indexed as a product without a category."""
    catalog = tmp_path / "cat"
    categories = sorted(p.name for p in shop_a.iterdir() if p.is_dir())[:2]
    for category in categories:
        photos = sorted((shop_a / category).glob("*.jpg"))
        for split, photo in zip(("train", "test"), photos, strict=False):
            (catalog / split / category).mkdir(parents=True)
            shutil.copy(photo, catalog / split / category / photo.name)
    shutil.copy(photos[0], catalog / "loose.jpg")
    report = _index(catalog, tmp_path / "st", embedder)
    assert report.indexed == 4
    assert report.skipped == [{"path": "loose.jpg", "reason": "outside the train/val/test "
                               "folders of a split catalogue; move it into one to index it"}]
    db = open_store(tmp_path / "st")
    assert db.categories() == {c: 2 for c in categories}
    assert all(p.product_id.split("/")[0] in ("train", "test") for p in db.list_products())
    db.close()
    # a folder of photos beside the splits: one sentence, the store as it was (read as a
    # plain catalogue it was recategorised, train and test, without a word)
    from vitrine.errors import CatalogError

    shutil.copytree(shop_a / categories[0], catalog / "cars")
    with pytest.raises(CatalogError, match=r"other folders beside them hold photos too "
                                           r"\(cars\)"):
        _index(catalog, tmp_path / "st", embedder)
    db = open_store(tmp_path / "st")
    assert db.categories() == {c: 2 for c in categories}
    db.close()


def test_an_upload_folder_inside_a_split_catalogue_keeps_it_split(shop_a, embedder,
                                                                   tmp_path):
    """A VITRINE_UPLOAD_DIR inside a split catalogue, beside its train/ and test/ folders:
    its photos (the server's, of products added through the API) counted as a folder of
    photos beside the splits, and every index of the catalogue was refused."""
    from vitrine.split import read_catalogue

    catalog = tmp_path / "cat"
    category, other = sorted(p.name for p in shop_a.iterdir() if p.is_dir())[:2]
    photos = sorted((shop_a / category).glob("*.jpg"))
    for split, photo in zip(("train", "test"), photos, strict=False):
        (catalog / split / category).mkdir(parents=True)
        shutil.copy(photo, catalog / split / category / photo.name)
    uploads = catalog / "api-photos"
    uploads.mkdir()
    data = next((shop_a / other).glob("*.jpg")).read_bytes()
    (uploads / (hashlib.sha256(data).hexdigest() + ".jpg")).write_bytes(data)
    products, _, outside = read_catalogue(catalog, uploads)
    assert (len(products), outside) == (2, [])
    report = _index(catalog, tmp_path / "st", embedder, uploads=uploads)
    assert (report.indexed, report.skipped) == (2, [])
    db = open_store(tmp_path / "st")
    assert db.categories() == {category: 2}
    db.close()


def test_a_category_folder_that_cannot_be_read_removes_nothing(shop_a, embedder, tmp_path,
                                                               monkeypatch):
    """A category folder whose permissions changed (cannot be listed): its photos were
    left out without a word and index removed their products, exit 0. It is one sentence
    naming the folder, before anything is written."""
    from test_dedupe import unlistable

    from vitrine.errors import CatalogError

    catalog = tmp_path / "cat"
    shutil.copytree(shop_a, catalog)
    _index(catalog, tmp_path / "st", embedder)
    before = _state(tmp_path / "st")
    category = sorted(p for p in catalog.iterdir() if p.is_dir())[0]
    unlistable(monkeypatch, category)
    with pytest.raises(CatalogError, match=f"^{category}: the folder cannot be read "
                                           r"\(Permission denied\), so its photos"):
        _index(catalog, tmp_path / "st", embedder)
    assert _state(tmp_path / "st") == before


def test_duplicates_name_api_products_by_id(shop_a, embedder, tmp_path):
    """A product added through the API is named by its id, not by its <sha256>.jpg file."""
    from vitrine.catalog import Product

    store = tmp_path / "st"
    _index(shop_a, store, embedder)
    db = open_store(store)
    original = db.list_products(limit=1)[0]
    data = Path(original.image).read_bytes()
    photo = store / "uploads" / (hashlib.sha256(data).hexdigest() + ".jpg")
    photo.parent.mkdir()
    photo.write_bytes(data)
    db.upsert([Record(Product("copia", photo, original.category, uploaded=True),
                      original.content_sha256, original.phash, original.thumb,
                      db.vector(original.product_id))])
    db.close()
    report = _index(shop_a, store, embedder)
    assert report.uploaded == 1
    group = next(g for g in report.duplicates if "product copia (added through the API)" in g)
    assert not any(photo.name in key for key in group)
    assert Path(original.image).relative_to(shop_a.resolve()).as_posix() in group


def test_milvus_records_the_folder_too(shop_a, novidades, embedder, tmp_path):
    """A Milvus store remembers the folder it was indexed from, as the embedded store does,
    and refuses another folder that would remove its products. Without the milvus extra it
    is skipped, except in CI, where it must run (as the other Milvus tests)."""
    try:
        import milvus_lite  # noqa: F401
        import pymilvus  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the extra
        if IN_CI:
            raise
        pytest.skip("the milvus extra is not installed")
    uri = f"milvus-lite://{tmp_path}/m.db"
    db = open_store(uri, create=True)
    try:
        assert db.catalog_folder() is None
        assert index_catalog(novidades, db, embedder, show_progress=False).indexed == 8
        with pytest.raises(RemovalRefused, match=f"indexed from {novidades.resolve()}; "
                                                 f"indexing {shop_a.resolve()} would remove 8"):
            index_catalog(shop_a, db, embedder, show_progress=False)
        assert db.count() == 8
    finally:
        db.close()
    db = open_store(uri)
    try:
        assert db.catalog_folder() == str(novidades.resolve())
    finally:
        db.close()


def test_ids_the_web_cannot_address_are_skipped_with_the_reason(shop_a, embedder, tmp_path):
    """A product table may give ids that would have no page, photo or similar products of
    their own on the web ('x/similar' is the similar products' address of 'x'; browsers rewrite
    '..'; no address holds a line break), or a category too long for the pages and the API
    to take as a filter: index skips them and says why, as the API refuses them."""
    from vitrine.catalog import CATEGORY_MAX

    shop = tmp_path / "shop"
    shutil.copytree(shop_a, shop)
    rows = (shop / "products.csv").read_text().splitlines()
    for n, bad in enumerate(("x/similar", "..", '"x\ny"'), start=1):
        cells = rows[n].split(",")
        cells[0] = bad
        rows[n] = ",".join(cells)
    for n, length in ((4, CATEGORY_MAX + 1), (5, CATEGORY_MAX)):
        cells = rows[n].split(",")
        cells[2] = "é" * length
        rows[n] = ",".join(cells)
    (shop / "products.csv").write_text("\n".join(rows) + "\n")
    report = _index(shop, tmp_path / "st", embedder)
    reasons = [s["reason"] for s in report.skipped]
    assert report.indexed == 12 and len(reasons) == 4
    long_id = rows[4].split(",")[0]
    assert f"product {long_id!r}: its category is 513 characters long, more than Vitrine " \
        "takes (512); shorten it in the product table" in reasons
    assert any("product id 'x/similar': it cannot end with '/similar'" in r for r in reasons)
    assert any("product id '..': it cannot be '.' or '..'" in r for r in reasons)
    assert any("product id 'x\\ny': it cannot hold a control character" in r for r in reasons)


def test_new_ids_for_the_same_photos_are_not_taken_for_a_lost_catalogue(shop_a, embedder,
                                                                         tmp_path):
    """A product table added to a folder indexed without one (every id changes from the
    photo's path to its SKU), or every photo renamed: the photos are there, so the run goes
    ahead; only a folder whose photos cannot be found is refused."""
    shop = tmp_path / "shop"
    shutil.copytree(shop_a, shop)
    table = (shop / "products.csv").read_text()
    (shop / "products.csv").unlink()
    store = tmp_path / "st"
    assert _index(shop, store, embedder).indexed == 16  # ids are the photos' paths
    (shop / "produtos.csv").write_text(table)  # now the shop's own ids
    report = _index(shop, store, embedder)
    assert (report.indexed, report.removed) == (16, 16)
    # the table deleted: the photos, unmoved, would all be products named by their files,
    # every name and price lost (it went ahead, exit 0: helper-179)
    (shop / "produtos.csv").rename(tmp_path / "away.csv")
    before = _state(store)
    refusal = "into products named by their photo files, dropping their names, prices"
    with pytest.raises(RemovalRefused, match=refusal):
        _index(shop, store, embedder)
    assert _state(store) == before
    # nor with a photo the table did not list (it keeps its id), nor from a table without
    # ids (every id stays, the table's fields go): both went ahead (helper-185)
    extra = next(p for p in sorted(shop_a.rglob("*.jpg")))
    (tmp_path / "away.csv").rename(shop / "produtos.csv")
    shutil.copy(extra, shop / extra.parent.name / "unlisted.jpg")
    assert _index(shop, store, embedder).unlisted == 1
    (shop / "produtos.csv").rename(tmp_path / "away.csv")
    with pytest.raises(RemovalRefused, match=refusal):
        _index(shop, store, embedder)
    (shop / extra.parent.name / "unlisted.jpg").unlink()
    without_ids = tmp_path / "no-ids" / "shop"
    shutil.copytree(shop, without_ids)
    _without_ids(tmp_path / "away.csv", without_ids / "products.csv")
    other = tmp_path / "st-no-ids"
    assert _index(without_ids, other, embedder).indexed == 16
    (without_ids / "products.csv").unlink()
    with pytest.raises(RemovalRefused, match=refusal):
        _index(without_ids, other, embedder)
    assert _index(without_ids, other, embedder, replace=True).updated == 16
    # a store whose catalogue never had a table, most of its products priced since without
    # the edit mark (an older Vitrine's PATCH; a PATCH now is kept: test_api_edits.py): the
    # next run gives them their catalogue values back (it was refused as a table deleted:
    # helper-191)
    db = open_store(other)
    try:
        db.lock_for_writing()  # (as VitrineService.edit_product writes a PATCH)
        db.update_metadata([db.get(pid).to_product(uploaded=False, price=99.9)
                            for pid in sorted(db.fingerprints())])
    finally:
        db.close()
    assert _index(without_ids, other, embedder).updated == 16
    renamed = {}  # but every photo renamed (no table either way) goes ahead
    for photo in sorted(shop.rglob("*.jpg")):
        renamed[photo] = photo.with_name("n-" + photo.name)
        photo.rename(renamed[photo])
    report = _index(shop, store, embedder)
    assert (report.indexed, report.removed) == (16, 17)  # (the unlisted photo too)
    for old, new in renamed.items():
        new.rename(old)
    report = _index(shop, store, embedder)
    assert (report.indexed, report.removed) == (16, 16)
    (tmp_path / "away.csv").rename(shop / "produtos.csv")  # the table back: its ids again
    report = _index(shop, store, embedder)
    assert (report.indexed, report.removed, report.photos_embedded) == (16, 16, 0)
    for photo in shop.rglob("*.jpg"):
        photo.unlink()
    with pytest.raises(RemovalRefused, match="their photo files are missing"):
        _index(shop, store, embedder)


def _indexed_copy(shop_a: Path, embedder, tmp_path: Path):
    """A copy of ``shop_a`` indexed into a new store: (shop, store, its table, its rows)."""
    shop = tmp_path / "shop"
    shutil.copytree(shop_a, shop)
    store = tmp_path / "st"
    assert _index(shop, store, embedder).indexed == 16
    table = shop / "products.csv"
    return shop, store, table, list(csv.DictReader(table.open(newline="")))


def test_a_release_link_a_store_did_not_record_is_named_in_the_refusal(shop_a, embedder,
                                                                        tmp_path):
    """A store indexed through a release link by a Vitrine from before 5 Dec 2026 records
    the release folder, not the link: the first release after the upgrade that drops a
    product is refused, and the refusal named neither the link given nor why (helper-248).
    It says both; --replace once records the link, and the next release needs none."""
    releases = tmp_path / "releases"
    shutil.copytree(shop_a, releases / "1")
    current = tmp_path / "current"
    current.symlink_to(releases / "1")
    store = tmp_path / "store"
    assert _index(current, store, embedder).indexed == 16
    db = open_store(store)
    try:
        db.lock_for_writing()
        db.set_catalog_link(None)  # (as the older Vitrine left it)
    finally:
        db.close()
    for number in (2, 3):
        shutil.copytree(releases / str(number - 1), releases / str(number))
        sorted((releases / str(number)).rglob("*.jpg"))[0].unlink()
    current.unlink()
    current.symlink_to(releases / "2")
    with pytest.raises(RemovalRefused, match=f"\\(given as {current}: this store, indexed by "
                       "a Vitrine from before 5 Dec 2026, records no link; .* --replace once"):
        _index(current, store, embedder)
    assert _index(current, store, embedder, replace=True).removed == 1
    current.unlink()
    current.symlink_to(releases / "3")
    assert _index(current, store, embedder).removed == 1


def test_a_table_whose_rows_do_not_find_most_photos_is_refused_as_one_gone(
        shop_a, embedder, tmp_path):
    """The image column rewritten to bare file names (a spreadsheet's export), or every
    photo moved to another folder: no row finds its photo, each photo became a product
    named by its file, every id, name and price gone, exit 0 (helper-244); so with one
    row right, or in a shard's run (helper-247). Refused as a table gone, saying what is
    wrong with the table, the store untouched; with most rows right the run goes ahead."""
    shop, store, table, rows = _indexed_copy(shop_a, embedder, tmp_path)
    before = _state(store)

    def write(image) -> None:
        with table.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({**r, "image": image(i, r["image"])} for i, r in enumerate(rows))

    write(lambda i, image: Path(image).name)
    with pytest.raises(RemovalRefused, match=r"turn 16 of the 16 catalogue products .* the "
                       r"product table's image cells do not name their photos"):
        _index(shop, store, embedder)
    assert _state(store) == before
    write(lambda i, image: image if i == 0 else Path(image).name)  # one row right, 15 wrong
    for shard in (None, (0, 1), (0, 2), (1, 2)):  # (a shard's run too: each of two shards
        # went ahead, every name and price lost, a re-keyed product's two ids in two shards)
        with pytest.raises(RemovalRefused, match=r"into products named by their photo files"):
            _index(shop, store, embedder, shard=shard)
    assert _state(store) == before
    write(lambda i, image: Path(image).name if i < 2 else image)  # two rows wrong: indexed
    report = _index(shop, store, embedder)
    assert (report.indexed, report.removed, len(report.skipped)) == (2, 2, 2)
    # rows dropped, their photos kept: the shop's choice, not rows that miss their photos,
    # and the unlisted products' values edited through the API: both went ahead before the
    # check ran with a table, and were refused by it (helper-251)
    with table.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[14:])
    report = _index(shop, store, embedder)
    assert (report.indexed, report.removed, report.unlisted) == (12, 12, 14)
    db = open_store(store)
    try:
        db.lock_for_writing()
        unlisted = [pid for pid in sorted(db.fingerprints()) if "/" in pid]
        db.update_metadata([db.get(pid).to_product(uploaded=False, price=9.9)
                            for pid in unlisted])
    finally:
        db.close()
    assert _index(shop, store, embedder).updated == 14


def test_a_table_gone_is_told_by_its_rows_photos_not_by_file_names_alone(shop_a, embedder,
                                                                          tmp_path):
    """Photos moved into another folder, the table as it was: every name and price went,
    exit 0, the moved photos' paths matching none stored (helper-252). And a folder per
    product, each photo main.jpg: one row that missed its photo made every unlisted
    main.jpg count as its, and a table whose rows the shop dropped was refused."""
    shop, store, table, rows = _indexed_copy(shop_a, embedder, tmp_path)
    before = _state(store)
    for row in rows:
        photo = shop / row["image"]
        (photo.parent / "2024").mkdir(exist_ok=True)
        photo.rename(photo.parent / "2024" / photo.name)
    with pytest.raises(RemovalRefused, match="turn 16 of the 16 catalogue products"):
        _index(shop, store, embedder)
    assert _state(store) == before
    per_product = tmp_path / "per-product"
    for row in rows:
        target = per_product / row["category"] / row["product_id"] / "main.jpg"
        target.parent.mkdir(parents=True)
        shutil.copy(shop_a / row["image"], target)
        row["image"] = target.relative_to(per_product).as_posix()

    def write(listed: list[dict]) -> None:
        with (per_product / "products.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(listed)

    write(rows)
    assert _index(per_product, tmp_path / "st2", embedder).indexed == 16
    write(rows[12:])  # rows dropped, their photos kept: products named by their files
    (per_product / rows[12]["image"]).unlink()  # and one row left whose photo is gone
    report = _index(per_product, tmp_path / "st2", embedder)
    assert (report.indexed, report.removed, len(report.skipped)) == (12, 13, 1)


def test_a_table_that_named_a_few_products_is_guarded_when_it_goes(shop_a, embedder,
                                                                     tmp_path):
    """A table that names 5 of the 16 photos (the others unlisted, products of their
    folder), deleted: all 5 would lose their names and prices. README: refused where most
    products it had named would become products named by their files; it went ahead, exit 0,
    the rule counting half of the whole catalogue."""
    shop = tmp_path / "shop"
    shutil.copytree(shop_a, shop)
    lines = (shop / "products.csv").read_text().splitlines()
    (shop / "products.csv").write_text("\n".join(lines[:6]) + "\n")
    store = tmp_path / "st"
    report = _index(shop, store, embedder)
    assert (report.indexed, report.unlisted) == (16, 11)
    (shop / "products.csv").rename(tmp_path / "away.csv")
    before = _state(store)
    with pytest.raises(RemovalRefused, match="turn 5 of the 16 catalogue products"):
        _index(shop, store, embedder)
    assert _state(store) == before
    assert _index(shop, store, embedder, replace=True).removed == 5


def test_a_product_table_in_a_category_folder_is_said_not_to_be_read(shop_a, embedder,
                                                                    tmp_path):
    """Only a table in the catalogue folder itself is read: one put in a category folder
    was passed over in silence, every product named after its photo, without a price
    (helper-244). It is skipped with its reason (--strict exits 1); not where the
    catalogue folder has its own table."""
    from vitrine.index_report import TABLE_BELOW

    shop = tmp_path / "shop"
    shutil.copytree(shop_a, shop)
    folder = next(p for p in sorted(shop.iterdir()) if p.is_dir())
    (shop / "products.csv").rename(folder / "Produtos.CSV")
    report = _index(shop, tmp_path / "st", embedder)
    assert report.indexed == 16 and report.skipped == [
        {"path": f"{folder.name}/Produtos.CSV", "reason": TABLE_BELOW}]
    shutil.copy(shop_a / "products.csv", shop / "products.csv")
    report = _index(shop, tmp_path / "st", embedder)
    assert report.skipped == [] and report.updated + report.indexed == 16


def test_a_product_table_saved_as_a_workbook_is_said_not_to_be_read(shop_a, embedder,
                                                                   tmp_path):
    """A shop's table saved by its spreadsheet as produtos.xlsx (or .ods, .txt) beside the
    photos was passed over in silence, every product named after its photo, without a
    price. It is skipped with its reason (--strict exits 1); not beside a CSV table."""
    from vitrine.index_report import TABLE_NOT_CSV

    shop = tmp_path / "shop"
    shutil.copytree(shop_a, shop)
    (shop / "products.csv").rename(shop / "Produtos.xlsx")
    (shop / "produtos.csv.bak").write_text("id\n")  # (a copy kept aside: not a table)
    report = _index(shop, tmp_path / "st", embedder)
    assert report.indexed == 16 and report.skipped == [
        {"path": "Produtos.xlsx", "reason": TABLE_NOT_CSV}]
    shutil.copy(shop_a / "products.csv", shop / "products.csv")
    report = _index(shop, tmp_path / "st", embedder, replace=True)
    assert report.skipped == [] and report.updated + report.indexed == 16


def test_products_gone_from_the_catalogue_leave_the_store_before_new_photos_are_embedded(
        shop_a, novidades, embedder, tmp_path):
    """Products removed from the catalogue were deleted only after every new photo was
    embedded (hours for a large import): meanwhile the server listed and found them, their
    photos 404s, and a run cut off each time never removed them (helper-245). They go
    first; a product whose id changed keeps the old one until then, lending its vector."""
    shop, store, table, rows = _indexed_copy(shop_a, embedder, tmp_path)
    gone, rekeyed = rows[:2], rows[2]
    for row in gone:
        (shop / row["image"]).unlink()
    new = list(csv.DictReader((novidades / "products.csv").open(newline="")))[:3]
    for row in new:
        shutil.copy(novidades / row["image"], shop / row["image"])
    with table.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([*rows[3:], {**rekeyed, "product_id": "novo-id"}, *new])
    seen: list[set[str]] = []

    class Watching:  # (the store as another process sees it when embedding starts)
        def __getattr__(self, name):
            return getattr(embedder, name)

        def embed_paths(self, *args, **kwargs):
            reader = open_store(store)
            try:
                seen.append(set(reader.fingerprints()))
            finally:
                reader.close()
            return embedder.embed_paths(*args, **kwargs)

    report = _index(shop, store, Watching())
    ids = {r["product_id"] for r in rows} - {r["product_id"] for r in gone}
    # (the re-keyed product under its new id already, its vector lent, the old id gone)
    assert seen and seen[0] == ids - {rekeyed["product_id"]} | {"novo-id"}, seen
    assert (report.indexed, report.removed, report.photos_embedded) == (4, 3, 3)
    reader = open_store(store)
    try:
        assert set(reader.fingerprints()) == (ids - {rekeyed["product_id"]} | {"novo-id"}
                                              | {r["product_id"] for r in new})
    finally:
        reader.close()


def test_a_search_index_that_cannot_be_saved_is_said(shop_a, embedder, tmp_path,
                                                     monkeypatch):
    """A disk too full for the search index's file: index exited 0 in silence, and every
    later process built the whole index in its first search, the server's pages waiting
    (helper-245). The report says why (`index_unsaved`) and the terminal says what it
    costs; the next run that saves it says nothing."""
    import errno

    from vitrine.ann import VectorIndex
    from vitrine.display import index_lines

    def full(self, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(VectorIndex, "save", full)
    report = _index(shop_a, tmp_path / "st", embedder)
    assert report.indexed == 16 and report.index_unsaved == os.strerror(errno.ENOSPC)
    assert report.as_dict()["index_unsaved"] == report.index_unsaved
    assert not list((tmp_path / "st").glob("index.*"))
    assert (f"Note: the search index could not be saved ({os.strerror(errno.ENOSPC)}): each "
            "search command") in "\n".join(index_lines(report, 10_000, "st"))
    monkeypatch.undo()
    report = _index(shop_a, tmp_path / "st", embedder)
    assert report.index_unsaved is None and list((tmp_path / "st").glob("index.*"))
    assert not any("search index" in line for line in index_lines(report, 10_000, "st"))


def test_a_full_disk_under_the_search_index_is_said_in_the_systems_words(shop_a, embedder,
                                                                          tmp_path,
                                                                          monkeypatch):
    """FAISS raises a full disk as its C++ assertion ("Error in void faiss::write_index(...)
    at .../index_write.cpp:499: Error: 'ret == (size * 4)' failed: write error in
    ....tmp: 1265582 != 5201920 (No space left on device)"): that whole line was the
    report's `index_unsaved` and the terminal's note. The system's words, as for an
    OSError."""
    import errno

    import faiss

    from vitrine.ann import VectorIndex

    def full(self, path):  # (the file FAISS writes is on a disk with no room left)
        faiss.write_index(self.index, "/dev/full")

    monkeypatch.setattr(VectorIndex, "save", full)
    report = _index(shop_a, tmp_path / "st", embedder)
    assert report.indexed == 16 and report.index_unsaved == os.strerror(errno.ENOSPC)


def test_index_names_products_whose_table_category_overrides_the_folder(shop_a, embedder,
                                                                        tmp_path):
    catalog = shutil.copytree(shop_a, tmp_path / "shop")
    table = catalog / "products.csv"
    with table.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    first = rows[0]
    folder, first["category"] = first["image"].split("/")[0], "promocao"
    with table.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(first))
        writer.writeheader()
        writer.writerows(rows)
    report = _index(catalog, tmp_path / "store", embedder).as_dict()
    assert report["category_from_table"] == [
        {"product_id": first["product_id"], "category": "promocao", "folder": folder}]
    assert report["category_twins"] == []
    # a category written in another case, or with spaces for underscores, is said: the pages
    # showed two categories of one name, and a filter by one left the other's out
    # (helper-179)
    first["category"], rows[2]["category"] = folder.upper(), rows[2]["category"].replace(
        "_", " ")
    with table.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(first))
        writer.writeheader()
        writer.writerows(rows)
    report = _index(catalog, tmp_path / "store", embedder)
    spaced = rows[2]["category"]
    assert sorted(report.category_twins, key=str) == sorted([
        [{"category": folder.upper(), "products": 1}, {"category": folder, "products": 1}],
        [{"category": spaced, "products": 1},
         {"category": spaced.replace(" ", "_"), "products": 1}]], key=str)
    from vitrine.display import index_lines

    said = index_lines(report, 10_000, "store")
    assert f"ones: {folder.upper()!r} (1) and {folder!r} (1)" in " ".join(said)
    # a product added through the API keeps its category's old spelling when the catalogue
    # renames it ("Relógio" for "relogio"): the pages list both, so index says so too
    row = next(r for r in rows if r["category"].casefold().replace(" ", "_") not in (
        folder.casefold(), spaced.replace(" ", "_")))
    renamed = row["category"].capitalize()  # (the API's product keeps the old spelling)
    db = open_store(tmp_path / "store")
    photo = catalog / row["image"]
    db.upsert([Record(Product("api-1", photo, renamed, name="API", uploaded=True),
                      "0" * 64, "0" * 16, b"\0" * 768, embedder.embed_image(photo))])
    db.close()
    report = _index(catalog, tmp_path / "store", embedder)
    assert report.uploaded == 1
    assert [{"category": renamed, "products": 1},
            {"category": row["category"],
             "products": sum(r["category"] == row["category"] for r in rows)}
            ] in report.category_twins
    assert len(report.category_twins) == 3  # (the catalogue's two still said)


def test_skipped_products_are_not_said_to_take_a_category_or_make_a_twin(shop_a, embedder,
                                                                          tmp_path):
    """A photo deleted (its row kept) or unreadable is skipped, not indexed: its row's
    category is neither a category taken from the table nor a twin the pages would show
    (the report named both, read from the row, for products the store did not hold)."""
    catalog = shutil.copytree(shop_a, tmp_path / "shop")
    store = tmp_path / "store"
    _index(catalog, store, embedder)
    table = catalog / "products.csv"
    with table.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    deleted, twin, corrupt, moved = rows[0], rows[2], rows[4], rows[6]
    deleted["category"] = "promocao"
    twin["category"] = twin["category"].upper()  # (its folder's name in capitals)
    corrupt["category"] = "outra"
    moved["category"] = "destaque"  # (its photo kept: said, as before)
    (catalog / deleted["image"]).unlink()
    (catalog / twin["image"]).unlink()
    (catalog / corrupt["image"]).write_bytes(b"not a photo any more")
    with table.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    report = _index(catalog, store, embedder)
    assert {s["path"] for s in report.skipped} == {
        deleted["image"], twin["image"], corrupt["image"]}
    assert report.category_from_table == [{"product_id": moved["product_id"],
                                           "category": "destaque",
                                           "folder": moved["image"].split("/")[0]}]
    assert report.category_twins == []
    db = open_store(store)
    try:  # (what the pages show: no category in capitals, no 'promocao')
        assert twin["category"] not in db.categories() and "promocao" not in db.categories()
    finally:
        db.close()


def test_a_skipped_product_the_store_keeps_still_makes_its_twin(shop_a, embedder, tmp_path):
    """A product whose photo cannot be read keeps what the store holds, its category among
    them: the pages still list its twin category, and index still says so."""
    catalog = shutil.copytree(shop_a, tmp_path / "shop")
    store = tmp_path / "store"
    table = catalog / "products.csv"
    with table.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    twin = rows[2]
    twin["category"] = twin["category"].upper()  # (its folder's name in capitals)
    with table.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert len(_index(catalog, store, embedder).category_twins) == 1
    (catalog / twin["image"]).write_bytes(b"not a photo any more")  # (its row unchanged)
    report = _index(catalog, store, embedder)
    assert [s["path"] for s in report.skipped] == [twin["image"]]
    db = open_store(store)
    try:  # (what the pages show: both spellings)
        shown = db.categories()
    finally:
        db.close()
    assert twin["category"] in shown and twin["category"].lower() in shown
    assert [[t["category"] for t in group] for group in report.category_twins] == [
        [twin["category"], twin["category"].lower()]]


def test_catalogue_photos_named_like_uploads_stay_the_catalogues(demo_catalog, settings,
                                                                   embedder, tmp_path):
    """Photos a catalogue names by their sha256, like the server names uploads (some in a
    category called `uploads`), are never taken for products added through the API before the
    mark: not on a second run, not when the catalogue moved and is indexed in shards, not
    when the same photo is also added through the API; a deleted one leaves the store."""
    from vitrine.service import VitrineService
    from vitrine.service_writes import NewProduct

    catalog = tmp_path / "catalog"
    sources = [*sorted((demo_catalog / "relogio_feminino").glob("*.jpg"))[:4],
               *sorted((demo_catalog / "salto_feminino").glob("*.jpg"))[:2]]
    for i, source in enumerate(sources):
        data = source.read_bytes()
        photo = catalog / ("uploads" if i < 2 else "relogios") / (
            hashlib.sha256(data).hexdigest() + ".jpg")
        photo.parent.mkdir(parents=True, exist_ok=True)
        photo.write_bytes(data)
    store = tmp_path / "store"

    def index(root: Path, **kw) -> dict:
        return _index(root, store, embedder, uploads=store / "uploads", **kw).as_dict()

    assert index(catalog)["indexed"] == 6
    service = VitrineService(settings, store, embedder)
    service.add_product(NewProduct("pela-api", name="the same photo"), sources[2].read_bytes())
    service.close()
    assert index(catalog)["uploaded"] == 1  # only the product added through the API
    moved = shutil.move(catalog, tmp_path / "moved")
    first, second = index(moved, shard=(0, 2)), index(moved, shard=(1, 2))
    assert first["updated"] + second["updated"] == 6  # the new paths, nothing re-embedded
    assert first["uploaded"] + second["uploaded"] == 1
    for photo in sorted((Path(moved) / "uploads").iterdir())[:1] + sorted(
            (Path(moved) / "relogios").iterdir())[:1]:
        photo.unlink()
    report = index(Path(moved))
    assert (report["removed"], report["uploaded"], report["unchanged"]) == (2, 1, 4)


def test_the_demo_never_replaces_or_deletes_a_store_it_did_not_make(shop_a, novidades, settings,
                                                                     embedder, tmp_path,
                                                                     monkeypatch,
                                                                     sketched_demo_figures):
    """A user's store kept inside --out was the demo's to re-point at the demo catalogue (it
    removed the user's products) or to delete for another model; an empty store folder was
    refused; --out inside the catalogue made the figures products of the next run."""
    from rich.console import Console

    from vitrine.demo import DEMO_MARK, run_demo
    from vitrine.errors import CatalogError, VitrineError

    out = tmp_path / "out"
    demo = settings.model_copy(update={"demo_train": False})
    console = Console(record=True, width=200)
    _index(novidades, out / "shop", embedder)
    with pytest.raises(VitrineError, match="would remove 8 of them"):
        run_demo(shop_a, out / "shop", out, demo, 2, console=console)
    other = open_store(out / "other", create=True)  # made by another model
    other.set_manifest(ModelManifest("x", "1" * 64, {}, 8))
    other.close()
    with pytest.raises(StoreError, match="different model"):
        run_demo(shop_a, out / "other", out, demo, 2, console=console)
    assert _state(out / "shop")[:2] == (8, str(novidades.resolve()))
    assert (out / "other" / "vitrine.sqlite").exists()
    assert not (out / "shop" / DEMO_MARK).exists()

    # a store of the demo catalogue at the demo's place, but not made by the demo (or made
    # before its mark): not deleted for another model either
    legacy = tmp_path / "out2" / "store"
    _index(shop_a, legacy, embedder)
    with pytest.raises(StoreError, match=re.escape(
            "different model than the demo's (resize crop in the store, pad here) and is not "
            "the demo's to rebuild (it has no .vitrine-demo mark); pass --store another "
            "folder. Nothing was changed.")):  # (not index's "VITRINE_MODEL unset")
        run_demo(shop_a, legacy, legacy.parent, demo.model_copy(update={"resize": "pad"}), 2,
                 console=console)
    assert _state(legacy)[0] == 16 and not (legacy / DEMO_MARK).exists()
    # nor, when the demo trains, stranded: it trained its model anew, then refused the
    # store (made with the model just replaced); now refused before anything is trained
    from vitrine import trained

    class Trained(Exception):
        pass

    def train(*args, **kwargs):
        raise Trained

    monkeypatch.setattr(trained, "trained_already", lambda *args: False)
    monkeypatch.setattr(trained, "ensure_model", train)
    training = settings.model_copy(update={"demo_train": True})
    with pytest.raises(VitrineError, match=re.escape(
            "was indexed with the pretrained backbone, not by this demo (it has no "
            ".vitrine-demo mark), and the demo would index it with the model it trains; pass "
            "--no-train to search it with the pretrained backbone, or --store another folder. "
            "Nothing was changed.")):  # (its model is not "gone": it is the pretrained one)
        run_demo(shop_a, legacy, legacy.parent, training, 2, console=console)
    with pytest.raises(Trained):  # an empty folder, or none: the demo's to make
        run_demo(shop_a, tmp_path / "out3" / "store", tmp_path / "out3", training, 2,
                 console=console)
    # --store the --out folder itself, which the first run trains its model into: the
    # demo's own store (left unmarked, every later run refused it), rebuilt for another
    # model without the model or anything else in the folder (once deleted, model and all)
    from vitrine import demo as demo_module

    runs: list[int] = []

    def trained_here(catalog, out_dir, settings, console):  # what training leaves there
        if not runs:
            (out_dir / "model").mkdir(parents=True, exist_ok=True)
            (out_dir / "model" / "model.pt").write_bytes(b"an hour of training")
        runs.append(1)
        return settings

    with monkeypatch.context() as patch:
        patch.setattr(demo_module, "_trained", trained_here)
        both = tmp_path / "out4"
        run_demo(shop_a, both, both, training, 2, console=console)
        assert (both / DEMO_MARK).exists() and _state(both)[0] == 16
        run_demo(shop_a, both, both, training.model_copy(update={"resize": "pad"}), 2,
                 console=console)
        assert "rebuilding it" in console.export_text() and _state(both)[0] == 16
        assert (both / "model" / "model.pt").read_bytes() == b"an hour of training"

    (out / "store").mkdir()  # an empty folder: the demo's to fill
    summary = run_demo(shop_a, out / "store", out, demo, 2, console=console)
    assert summary["index"]["indexed"] == 16 and (out / "store" / DEMO_MARK).exists()
    # its own store follows the demo catalogue
    again = run_demo(novidades, out / "store", out, demo, 2, console=console)
    assert again["index"]["indexed"] == 8 and again["index"]["removed"] == 16
    with pytest.raises(Trained):  # its own store: the model is trained for it
        run_demo(novidades, out / "store", out, training, 2, console=console)

    inside = tmp_path / "cat"
    shutil.copytree(shop_a, inside)
    with pytest.raises(CatalogError, match="is inside the catalogue"):
        run_demo(inside, out / "store", inside / "relogio_feminino", demo, 2, console=console)


def test_the_demo_removes_only_its_own_stale_figures(shop_a, settings, tmp_path,
                                                     sketched_demo_figures):
    """Each run removed every similar-*.png of --out it did not write: a user's file named
    so went too. Only the figures the last run's demo.json lists go. Photos without a
    category and a folder named "uncategorised" wrote one figure between them."""
    from rich.console import Console

    from vitrine.demo import run_demo

    catalog, out = tmp_path / "cat", tmp_path / "out"
    shutil.copytree(shop_a, catalog)
    demo = settings.model_copy(update={"demo_train": False})
    console = Console(record=True, width=200)
    first = run_demo(catalog, out / "store", out, demo, 1, console=console)
    gone = sorted(p for p in catalog.iterdir() if p.is_dir())[0]
    figure = next(Path(e["figure"]) for e in first["examples"] if e["category"] == gone.name)
    assert figure.is_file()
    (out / "similar-mine.png").write_bytes(b"the user's")
    photos = sorted(gone.glob("*.jpg"))
    (catalog / "uncategorised").mkdir()
    shutil.copy(photos[0], catalog / "uncategorised" / "a.jpg")
    shutil.copy(photos[1], catalog / "loose.jpg")  # no folder: no category
    shutil.rmtree(gone)
    if (catalog / "products.csv").exists():
        (catalog / "products.csv").unlink()
    again = run_demo(catalog, out / "store", out, demo, 1, console=console)
    figures = {e["category"]: Path(e["figure"]) for e in again["examples"]}
    assert figures[""] != figures["uncategorised"]
    assert all(f.is_file() for f in figures.values())
    assert not figure.exists() and (out / "similar-mine.png").read_bytes() == b"the user's"


def _demo_text(catalog: Path, out: Path, settings) -> tuple[dict, list[str]]:
    """The demo run on ``catalog`` into ``out`` (no training, no server): its summary and the
    lines it printed."""
    from rich.console import Console

    from vitrine.demo import run_demo

    console = Console(record=True, width=200)
    summary = run_demo(catalog, out / "store", out,
                       settings.model_copy(update={"demo_train": False}), 1, console=console)
    return summary, [line.rstrip() for line in console.export_text().splitlines()]


def test_the_demo_names_the_products_without_a_category(shop_a, settings, tmp_path):
    """The demo's table of a product without a category was headed ": similar to …" (an
    empty category before the colon); it says "(uncategorised)", as the figure's name does."""
    catalog = tmp_path / "cat"
    (catalog / "tenis").mkdir(parents=True)
    photos = sorted(shop_a.glob("*/*.jpg"))
    shutil.copy(photos[0], catalog / "loose.jpg")  # no folder: no category
    shutil.copy(photos[-1], catalog / "tenis" / "a.jpg")
    _, lines = _demo_text(catalog, tmp_path / "out", settings)
    assert "(uncategorised): similar to loose.jpg — loose" in lines
    assert "tenis: similar to tenis/a.jpg — a" in lines
    assert not [line for line in lines if line.startswith(":")]


def test_the_demo_says_the_figures_it_drew_or_why_none(shop_a, settings, tmp_path):
    """The demo said "Figures and demo.json written" where no figure was drawn (every photo
    skipped: the store holds no product); it names the figures written, or says why none."""
    catalog, out = tmp_path / "cat", tmp_path / "out"
    (catalog / "tenis").mkdir(parents=True)
    shutil.copy(sorted(shop_a.glob("*/*.jpg"))[0], catalog / "tenis" / "a.jpg")
    _, lines = _demo_text(catalog, out, settings)
    assert lines[-1] == f"Written to {out}/: demo.json and 1 figure (similar-tenis.png)."
    broken, none = tmp_path / "broken", tmp_path / "none"
    (broken / "tenis").mkdir(parents=True)
    (broken / "tenis" / "a.jpg").write_bytes(b"not a photo")
    summary, lines = _demo_text(broken, none, settings)
    assert summary["examples"] == [] and not list(none.glob("*.png"))
    assert lines[-1] == (f"Written to {none}/: demo.json; no figure, the store holds no "
                         "product to show.")
    assert not [line for line in lines if "Figure" in line]


def test_the_demo_names_eight_figures_at_most():
    from vitrine.demo import _written_line

    assert _written_line(Path("o"), [f"similar-{i}.png" for i in range(10)]) == (
        "Written to o/: demo.json and 10 figures (similar-0.png, similar-1.png, "
        "similar-2.png, similar-3.png, similar-4.png, similar-5.png, similar-6.png, "
        "similar-7.png and 2 more).")


def test_a_shard_number_must_be_below_the_shard_count():
    """`--shard I/N` numbers the shards 0 … N-1: '2/2' (a third shard of two) and '-1/2' are
    refused in one sentence, '1/2' is the second of two."""
    from vitrine.errors import VitrineError
    from vitrine.indexer import parse_shard

    assert parse_shard("1/2") == (1, 2) and parse_shard("0/1") == (0, 1)
    assert parse_shard(None) is None
    for empty in ("", "  "):  # (an unset variable: every machine indexed everything)
        with pytest.raises(VitrineError, match="--shard is empty"):
            parse_shard(empty)
    for bad in ("2/2", "-1/2", "0/0", "3/2"):
        with pytest.raises(VitrineError, match="I must be between 0 and N-1"):
            parse_shard(bad)
    with pytest.raises(VitrineError, match="use I/N"):
        parse_shard("half")


def _cli_in_process(catalog: Path, store: Path, monkeypatch, capsys) -> dict:
    """`vitrine index CATALOG --store STORE --json` run in this process (its functions can be
    replaced); its report."""
    import json
    import signal

    from vitrine.cli import main

    monkeypatch.setattr(sys, "argv", ["vitrine", "index", str(catalog), "--store", str(store),
                                      "--json"])
    before = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as exit_:
            main()
    finally:
        signal.signal(signal.SIGINT, before)  # (a finished command ignores Ctrl+C)
    assert exit_.value.code == 0
    return json.loads(capsys.readouterr().out)


def test_vitrine_index_reads_the_catalogue_once(small_catalog, weights_path, tmp_path,
                                                monkeypatch, capsys):
    """`vitrine index` checked the folder before loading the model, then read all of it again
    in the indexer (0.8 s of an unchanged re-run of 8,000 photos). The store's own uploads
    folder, worked out before the store is opened, is the one the indexer leaves out."""

    import vitrine.indexer
    import vitrine.split
    from vitrine.store import upload_folder

    store = tmp_path / "store"
    reads = []
    real = vitrine.split.read_catalogue

    def counted(root, uploads=None, **kwargs):
        reads.append(uploads)
        return real(root, uploads, **kwargs)

    monkeypatch.setattr(vitrine.split, "read_catalogue", counted)
    monkeypatch.setattr(vitrine.indexer, "read_catalogue", counted)
    monkeypatch.setenv("VITRINE_WEIGHTS", str(weights_path))
    monkeypatch.delenv("VITRINE_UPLOAD_DIR", raising=False)
    assert _cli_in_process(small_catalog, store, monkeypatch, capsys)["indexed"] == 48
    db = open_store(store)
    try:
        assert reads == [upload_folder(db, None)] == [store.resolve() / "uploads"]
    finally:
        db.close()


def test_photos_linked_from_outside_the_catalogue_can_be_refused(shop_a, embedder, tmp_path,
                                                                 monkeypatch, capsys):
    """A supplier's zip can hold links to files or folders of the shop's machine, whose photos
    the server would then serve: VITRINE_FOLLOW_OUTSIDE_LINKS=false skips them (and removes
    what an earlier run stored), a linked folder outside is not even walked (a link to /),
    while links within the catalogue still count."""
    catalog = tmp_path / "cat"
    shutil.copytree(shop_a, catalog)
    first, second = sorted(p for p in catalog.iterdir() if p.is_dir())[:2]
    elsewhere = tmp_path / "private"
    (elsewhere / "pics").mkdir(parents=True)
    own = sorted(first.glob("*.jpg"))[0]
    shutil.copy(own, elsewhere / "private.jpg")
    shutil.copy(next(second.glob("*.jpg")), elsewhere / "pics" / "holiday.jpg")
    (first / "linked.jpg").symlink_to(elsewhere / "private.jpg")
    (catalog / "linked-folder").symlink_to(elsewhere / "pics", target_is_directory=True)
    (second / "alias.jpg").symlink_to(own)  # within the catalogue
    with open(catalog / "products.csv", "a", newline="") as table:  # a row through the link
        csv.writer(table).writerow(["via-link", "linked-folder/holiday.jpg", first.name])
    store = tmp_path / "st"
    followed = _index(catalog, store, embedder)
    assert (followed.indexed, followed.skipped) == (19, [])

    monkeypatch.setenv("VITRINE_FOLLOW_OUTSIDE_LINKS", "false")
    report = _cli_in_process(catalog, store, monkeypatch, capsys)
    assert (report["removed"], report["unchanged"]) == (2, 17)
    removed = OUTSIDE_PHOTO + "; removed from the store"
    assert sorted(report["skipped"], key=lambda s: s["path"]) == sorted([
        {"path": f"{first.name}/linked.jpg", "reason": removed},
        {"path": "linked-folder", "reason": OUTSIDE_FOLDER},
        {"path": "linked-folder/holiday.jpg", "reason": removed}], key=lambda s: s["path"])
    db = open_store(store)
    try:
        images = db.images()
    finally:
        db.close()
    assert len(images) == 17 and "via-link" not in images
    assert all(Path(image).is_relative_to(catalog.resolve()) for image in images.values())

    # a catalogue made of links outside: refused in words that name the setting
    links = tmp_path / "links"
    links.mkdir()
    (links / "bolsas").symlink_to(elsewhere / "pics", target_is_directory=True)
    (links / "one.jpg").symlink_to(elsewhere / "private.jpg")
    _index(links, tmp_path / "st2", embedder)
    db = open_store(tmp_path / "st2")
    try:
        with pytest.raises(RemovalRefused, match=re.escape(
                "(1 product no longer listed, 1 photo outside the catalogue folder, 1 linked "
                "folder outside it not read, which VITRINE_FOLLOW_OUTSIDE_LINKS=false "
                "refuses)")):
            index_catalog(links, db, embedder, show_progress=False, refused_links=[])
        assert db.count() == 2
    finally:
        db.close()
    (links / "one.jpg").unlink()
    with pytest.raises(CatalogError, match=r"no product photos found in .*; 1 linked folder "
                                           "outside it was not read, which "
                                           "VITRINE_FOLLOW_OUTSIDE_LINKS=false refuses.$"):
        _index(links, tmp_path / "st2", embedder, refused_links=[])

    # a split catalogue: a split folder linked from outside is not walked either, nor a
    # link beside the splits; each is named once
    split = tmp_path / "split"
    category = sorted(p for p in shop_a.iterdir() if p.is_dir())[0]
    shutil.copytree(category, split / "val" / category.name)
    (split / "train").symlink_to(elsewhere, target_is_directory=True)
    (split / "extra").symlink_to(elsewhere / "pics", target_is_directory=True)
    refused: list[Path] = []
    report = _index(split, tmp_path / "st3", embedder, refused_links=refused)
    assert report.indexed == 2 and refused == [split.resolve() / "extra",
                                              split.resolve() / "train"]
    assert sorted(s["path"] for s in report.skipped) == ["extra", "train"]
    shutil.rmtree(split / "val" / category.name)  # with a table at the top and no photo
    (split / "products.csv").write_text("product_id,image,category\n")
    with pytest.raises(CatalogError, match=r"products.csv lists no products"):  # (refused
        # first now: helper-179)
        _index(split, tmp_path / "st4", embedder, refused_links=[])
    (split / "products.csv").unlink()
    with pytest.raises(CatalogError, match=r"no product photos found in the split folders"):
        _index(split, tmp_path / "st4", embedder, refused_links=[])


def test_the_demo_keeps_to_the_outside_links_setting(shop_a, settings, tmp_path,
                                                     sketched_demo_figures):
    """`vitrine demo` indexed without VITRINE_FOLLOW_OUTSIDE_LINKS (nor
    VITRINE_REHASH_PHOTOS), then served the photos it refuses."""
    from rich.console import Console

    from vitrine.demo import run_demo

    catalog = tmp_path / "cat"
    shutil.copytree(shop_a, catalog)
    (tmp_path / "private").mkdir()
    shutil.copy(next(p for p in sorted(catalog.rglob("*.jpg"))), tmp_path / "private" / "x.jpg")
    (catalog / "outside").symlink_to(tmp_path / "private", target_is_directory=True)
    demo = settings.model_copy(update={"demo_train": False, "follow_outside_links": False})
    summary = run_demo(catalog, tmp_path / "out" / "store", tmp_path / "out", demo, 2,
                       console=Console(record=True, width=200))
    assert summary["index"]["skipped"] == [{"path": "outside", "reason": OUTSIDE_FOLDER}]
    db = open_store(tmp_path / "out" / "store")
    try:
        assert db.count() == 16
    finally:
        db.close()
    # a --store folder not made yet, outside --out: the demo makes it (refused once, "no
    # Vitrine store", by the check of a user's store made with another model)
    summary = run_demo(catalog, tmp_path / "elsewhere" / "store", tmp_path / "out", demo, 2,
                       console=Console(record=True, width=200))
    assert summary["index"]["indexed"] == 16


def test_a_photo_replaced_while_it_is_indexed_lends_no_vector(shop_a, embedder, tmp_path,
                                                              monkeypatch):
    """A photo swapped (as rsync does: written beside, renamed over) between the check that
    hashed it and its decoding: its new picture's vector was stored under the old bytes'
    hash, for it and for another product of the same bytes, which every later run then
    called unchanged (a shoe answered with watches at 1.000). The photo's products are
    skipped, said, and read again by the next run; the other file of those bytes is read
    in its place. A hash kept for a file whose bytes are not those (a coarse clock, a
    restored store) is forgotten, not met again at every run."""
    import numpy as np

    from vitrine.index_report import CHANGED_WHILE_INDEXED

    shop = tmp_path / "shop"
    shutil.copytree(shop_a, shop)
    shoes = sorted((shop / "x_tenis_masculino").glob("*.jpg"))
    watch = next((shop / "relogio_feminino").glob("*.jpg"))
    twin = shoes[0].with_name("same-bytes.jpg")
    shutil.copyfile(shoes[0], twin)
    real = embedder.embed_paths

    def swapping(paths, on_progress=None):
        beside = shoes[0].with_name(".swap")
        shutil.copyfile(watch, beside)
        beside.replace(shoes[0])
        return real(paths, on_progress)

    monkeypatch.setattr(embedder, "embed_paths", swapping)
    report = _index(shop, tmp_path / "st", embedder)
    assert [(s["path"], s["reason"]) for s in report.skipped] == [
        (f"x_tenis_masculino/{shoes[0].name}", CHANGED_WHILE_INDEXED)]
    monkeypatch.setattr(embedder, "embed_paths", real)
    again = _index(shop, tmp_path / "st", embedder)
    assert (again.indexed, again.skipped) == (1, [])

    def check_vectors():
        store = open_store(tmp_path / "st")
        try:
            for photo in (shoes[0], twin):
                pid = next(p.product_id for p in store.list_products(limit=100)
                           if Path(p.image).name == photo.name)
                assert np.allclose(store.vector(pid), embedder.embed_image(photo), atol=1e-5)
        finally:
            store.close()

    check_vectors()
    from vitrine.photo_hashes import signature

    with sqlite3.connect(tmp_path / "st" / "vitrine.sqlite") as db:  # a hash kept wrongly
        db.execute("INSERT OR REPLACE INTO photo_hashes(path, size, mtime_ns, ctime_ns, ino, "
                   "sha) VALUES(?,?,?,?,?,?)",
                   (str(shoes[1]), *signature(shoes[1].stat()), "0" * 64))
    wrong = _index(shop, tmp_path / "st", embedder)
    assert [s["reason"] for s in wrong.skipped] == [CHANGED_WHILE_INDEXED]
    mended = _index(shop, tmp_path / "st", embedder)
    assert mended.skipped == [] and mended.unchanged == again.unchanged + 1
    check_vectors()


def test_the_first_index_after_a_migrate_reads_no_photo_and_searches_only_what_changed(
        shop_a, embedder, tmp_path, monkeypatch):
    """`migrate` copied products and vectors but not the photos' hashes nor the last
    duplicate search's pairs: the next `index` into the copy read every photo again and
    searched the whole store for duplicates (1,015 photos read, 1,019 products compared
    on the demo catalogue, where the source's re-run read none and compared 2)."""
    from vitrine import photo_hashes
    from vitrine.migrate import migrate_store

    monkeypatch.setattr(photo_hashes, "RACY_NS", 0)  # (photos copied just now: kept)
    shop = tmp_path / "shop"
    shutil.copytree(shop_a, shop)
    (shop / "products.csv").unlink(missing_ok=True)  # (ids: the photos' paths)
    source, target = tmp_path / "source", tmp_path / "target"
    assert _index(shop, source, embedder).indexed == 16
    before, into = open_store(source), open_store(target, create=True)
    try:
        migrate_store(before, into, show_progress=False)
        assert into.photo_hashes() == before.photo_hashes() != {}
        assert into.duplicate_cache() == before.duplicate_cache() is not None
    finally:
        before.close()
        into.close()
    photo = sorted(shop.rglob("*.jpg"))[0]
    shutil.copy(photo, photo.with_name("novo.jpg"))  # one product more since the copy
    on_copy = _index(shop, target, embedder)
    on_source = _index(shop, source, embedder)
    assert (on_copy.indexed, on_copy.photos_read) == (on_source.indexed,
                                                       on_source.photos_read) == (1, 1)
    assert on_copy.duplicates_compared == on_source.duplicates_compared < 16
    assert on_copy.duplicates == on_source.duplicates != []  # (novo.jpg ≈ its original)


def test_a_copy_guards_its_product_table_as_its_source_and_says_when_unfinished(
        shop_a, embedder, tmp_path, monkeypatch):
    """`migrate` left out that the source's last run read a product table: after the table
    was deleted, `index` of the source refused to turn every product file-named, and of the
    copy (embedded or Milvus Lite) dropped every name, price and attribute, exit 0
    (helper-220). And a copy stopped half-way looked complete: it says it is unfinished
    until a migrate finishes it."""
    from vitrine.display import info_lines
    from vitrine.migrate import migrate_store

    shop = tmp_path / "shop"
    shutil.copytree(shop_a, shop)
    _without_ids(shop / "products.csv", shop / "products.csv")  # ids: the photos' paths
    source = tmp_path / "source"
    assert _index(shop, source, embedder).indexed == 16
    targets = [tmp_path / "copy"]
    try:
        import milvus_lite  # noqa: F401
        import pymilvus  # noqa: F401
        targets.append(f"milvus-lite://{tmp_path}/copy.db")
    except ImportError:  # pragma: no cover - depends on the extra
        if IN_CI:
            raise
    import vitrine.migrate as migrate_module

    monkeypatch.setattr(migrate_module, "BATCH", 4)
    for target in targets:
        src, dst = open_store(source), open_store(target, create=True)
        real, pages = dst.upsert, []

        def stopped(records, real=real, pages=pages):  # Ctrl+C at the third page
            if len(pages) == 2:
                raise KeyboardInterrupt
            pages.append(1)
            real(records)

        monkeypatch.setattr(dst, "upsert", stopped)
        with pytest.raises(KeyboardInterrupt):
            migrate_store(src, dst, show_progress=False)
        monkeypatch.undo()
        monkeypatch.setattr(migrate_module, "BATCH", 4)
        data = {"products": dst.count(), "categories": {}, "catalog_folder": None,
                "unfinished_copy_of": dst.copying_from()}
        assert data["products"] == 8 and data["unfinished_copy_of"] == str(source)
        assert "an unfinished copy of " + str(source) in " ".join(info_lines(data, None, "x"))
        third = open_store(tmp_path / "third", create=True)  # a copy of it looked complete
        with pytest.raises(StoreError, match=f"is an unfinished copy of {source}; finish"):
            migrate_store(dst, third, show_progress=False)
        assert third.count() == 0 and third.copying_from() is None
        third.close()
        shutil.rmtree(tmp_path / "third")
        assert migrate_store(src, dst, show_progress=False).copied == 16
        assert dst.copying_from() is None and dst.catalog_listed() is True
        src.close()
        dst.close()
    (shop / "products.csv").rename(tmp_path / "away.csv")
    for store in (source, *targets):
        db = open_store(store)
        try:
            with pytest.raises(RemovalRefused, match="dropping their names, prices"):
                index_catalog(shop, db, embedder, show_progress=False)
        finally:
            db.close()


def test_a_store_of_an_older_vitrine_is_guarded_at_its_first_index(shop_a, embedder,
                                                                    tmp_path, monkeypatch):
    """A store indexed before catalogue folders were recorded (2026-12-01): the first
    `index` after the upgrade, of a wrong folder, removed 30 of its 40 products, exit 0; and
    its product table deleted was said as a folder to check and --replace to pass, which
    drops every name and price (helper-223)."""
    shop = tmp_path / "shop"
    shutil.copytree(shop_a, shop)
    store = tmp_path / "store"
    assert _index(shop, store, embedder).indexed == 16

    def as_an_older_vitrine_left_it():
        db = open_store(store)
        try:
            db.set_catalog_folder(None)
        finally:
            db.close()

    part = tmp_path / "part"  # one category of the shop, its rows: another folder
    category = sorted(p for p in shop.iterdir() if p.is_dir())[0]
    shutil.copytree(category, part / category.name)
    with open(shop / "products.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    with open(part / "products.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if r["image"].startswith(category.name + "/"))
    as_an_older_vitrine_left_it()
    before = _state(store)
    elsewhere = 16 - len(list(category.iterdir()))  # (the other categories' products)
    with pytest.raises(RemovalRefused, match=f"records no catalogue folder .* {elsewhere} of "
                                             "its 16 "
                                             f"catalogue products have photos outside "
                                             f"{part.resolve()} that are still there"):
        _index(part, store, embedder)
    assert _state(store) == before
    (tmp_path / "current").symlink_to(part)  # a release link moved on: said as such too
    with pytest.raises(RemovalRefused, match=f"if {tmp_path / 'current'}, which leads to "
                                             f"{part.resolve()}, is the catalogue's next "
                                             "release, pass --replace"):
        _index(tmp_path / "current", store, embedder)
    photo = sorted(shop.rglob("*.jpg"))[0]  # its own folder, a photo deleted: goes ahead
    photo.rename(tmp_path / "away.jpg")
    assert _index(shop, store, embedder).removed == 1
    (tmp_path / "away.jpg").rename(photo)
    assert _index(shop, store, embedder).indexed == 1
    as_an_older_vitrine_left_it()
    (shop / "products.csv").rename(tmp_path / "away.csv")
    reads = []  # (the checks read the store's photo paths once between them: a million rows)
    monkeypatch.setattr(EmbeddedStore, "images", lambda self, read=EmbeddedStore.images: (
        reads.append(1), read(self))[1])
    with pytest.raises(RemovalRefused, match="dropping their names, prices and descriptions"):
        _index(shop, store, embedder)
    assert len(reads) == 1
    assert _index(part, store, embedder, replace=True).removed == elsewhere


def test_a_model_trained_again_is_told_so_however_its_folder_is_written(embedder, tmp_path):
    """helper-164, helper-166: a store's own model folder, trained again since, was told to
    pass the --model just passed; and only when the folder was written as recorded (not
    `../m`, nor through a link)."""
    import dataclasses

    from vitrine.manifest import mismatch_error

    (tmp_path / "m").mkdir()
    (tmp_path / "sub").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "m")
    stored = dataclasses.replace(embedder.manifest, embedding="trained:hidden")
    again = dataclasses.replace(stored, weights_sha256="b" * 64)
    recorded = str(tmp_path / "m")
    for here in (tmp_path / "m", tmp_path / "sub" / ".." / "m", tmp_path / "link"):
        said = str(mismatch_error("st", stored, again, recorded, here))
        assert f"indexed with the model in {recorded} before it was trained again" in said
        assert "products added through the API are not in the catalogue, and go with" in said
    other = str(mismatch_error("st", stored, again, recorded, tmp_path / "sub"))
    assert other.endswith(f"or pass --model {recorded} (or VITRINE_MODEL), the model this "
                          "store was indexed with.")


def test_a_run_without_the_model_is_not_told_to_pass_a_model_trained_again(embedder,
                                                                           tmp_path):
    """A store indexed with the model in m, trained again since: a command run without
    --model was told to pass --model m, "the model this store was indexed with", which then
    refused it as trained again."""
    import dataclasses
    import json

    from vitrine.manifest import mismatch_error

    stored = dataclasses.replace(embedder.manifest, embedding="trained:hidden")
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.json").write_text(json.dumps({"weights_sha256": stored.weights_sha256}))
    said = str(mismatch_error("st", stored, None, str(folder)))
    assert said.endswith(f"or pass --model {folder} (or VITRINE_MODEL), the model this store "
                         "was indexed with.")
    (folder / "model.json").write_text(json.dumps({"weights_sha256": "b" * 64}))
    said = str(mismatch_error("st", stored, None, str(folder)))
    assert f"indexed with the model in {folder} before it was trained again" in said
    assert "pass --model" not in said


def test_a_model_folder_is_recorded_as_the_folder_it_is(tmp_path, monkeypatch):
    """helper-167: `link/../m` was recorded as the folder beside the link (removing `..` as
    text), not where the system finds it (beside where the link leads)."""
    from vitrine.embed import model_folder

    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "real" / "m").mkdir()
    (tmp_path / "m").mkdir()  # (a folder of that name beside the link: not the model's)
    (tmp_path / "link").symlink_to(tmp_path / "real" / "sub")
    monkeypatch.chdir(tmp_path)
    through = model_folder("link/../m")
    assert through.samefile(tmp_path / "real" / "m")
    assert model_folder("real/sub/../m") == tmp_path / "real" / "m"  # (tidied)
    assert model_folder("link") == tmp_path / "link"  # (a link kept as written)


def test_a_catalogue_changed_while_the_run_waited_is_read_again(shop_a, embedder, tmp_path,
                                                                 monkeypatch):
    """`vitrine index` reads the catalogue before it builds its model and takes the writer
    lock: a run that waited (a model loading, another writer holding the lock) then wrote the
    table it had read over the newer one a later run had written, both exiting 0
    (helper-179). The folder changed since it was read, it is read again under the lock."""
    from vitrine import indexer
    from vitrine.catalog import catalogue_state
    from vitrine.split import read_catalogue

    shop = shutil.copytree(shop_a, tmp_path / "shop")
    store = tmp_path / "st"
    _index(shop, store, embedder)
    state, early = catalogue_state(shop), read_catalogue(shop)
    with open(shop / "products.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    rows[1][3] = "Renamed meanwhile"  # (the name column) written by another run, say
    with open(shop / "products.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    report = _index(shop, store, embedder, catalogue=early, state=state)
    assert (report.updated, report.indexed) == (1, 0)
    state, early = catalogue_state(shop), read_catalogue(shop)  # a photo added, this time
    extra = shop / "relogio_feminino" / "added-meanwhile.jpg"
    shutil.copy(next((shop_a / "salto_feminino").glob("*.jpg")), extra)
    stale = [shop / "a-link-gone-since"]  # (links the first reading refused: read anew)
    report = _index(shop, store, embedder, catalogue=early, state=state, refused_links=stale)
    assert (report.updated, report.indexed, report.skipped) == (0, 1, [])
    db = open_store(store)
    try:
        assert db.get(rows[1][0]).name == "Renamed meanwhile"
        assert db.get("relogio_feminino/added-meanwhile.jpg") is not None
    finally:
        db.close()
    # a folder as it was read is not read again (its reading is the caller's)
    state, early = catalogue_state(shop), read_catalogue(shop)

    def not_again(*args, **kwargs):
        raise AssertionError("read again")

    monkeypatch.setattr(indexer, "read_catalogue", not_again)
    assert _index(shop, store, embedder, catalogue=early, state=state).unchanged == 17


def test_products_uploaded_before_the_mark_are_marked_in_the_runs_commits(shop_a, embedder,
                                                                           tmp_path):
    """`_mark_uploaded` committed in batches of the module's COMMIT_EVERY (64), not of the
    run's ``commit_every``: a run told to commit every product wrote them all in one."""
    import numpy as np

    store = tmp_path / "st"
    _index(shop_a, store, embedder)
    db = open_store(store)
    db.lock_for_writing()
    vector = np.eye(db.manifest().dim, dtype=np.float32)[0]
    db.upsert([Record(Product(f"old-upload-{k}", Path("loja/uploads") / (f"{k}" * 64 + ".jpg")),
                      "c" * 64, "0" * 16, b"\0" * 768, vector) for k in range(3)])
    batches = []
    update = db.update_metadata

    def counted(products):
        if products and all(p.uploaded for p in products):
            batches.append(len(products))
        return update(products)

    db.update_metadata = counted
    try:
        index_catalog(shop_a, db, embedder, show_progress=False, commit_every=1)
    finally:
        db.close()
    assert batches == [1, 1, 1]
    assert _state(store)[0] == 19


def test_the_commit_size_patched_in_the_module_is_the_default(shop_a, embedder, tmp_path,
                                                               monkeypatch):
    """``index_catalog(commit_every=COMMIT_EVERY)`` took the constant as the module was
    imported: a test or a setting patching ``vitrine.indexer.COMMIT_EVERY`` changed
    nothing."""
    import vitrine.indexer

    monkeypatch.setattr(vitrine.indexer, "COMMIT_EVERY", 4)
    db = open_store(tmp_path / "st", create=True)
    sizes = []
    upsert = db.upsert

    def counted(records):
        if records:
            sizes.append(len(records))
        return upsert(records)

    db.upsert = counted
    try:
        index_catalog(shop_a, db, embedder, show_progress=False)
    finally:
        db.close()
    assert sizes == [4, 4, 4, 4]
