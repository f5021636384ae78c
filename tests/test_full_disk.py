"""A full disk (ENOSPC) under the embedded store: SQLite cannot make its WAL files there, so
a store at rest is read as it is (it was refused: `vitrine similar`, `info` and a server
started then all failed until space was freed), a write is refused in one sentence with
nothing lost, and once there is room again writes go through (the server's without a
restart). The disk is simulated: SQLite's opening fails as it does there ("disk I/O
error") and the file system reports no free bytes."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from vitrine.catalog import Product
from vitrine.embed import ModelManifest
from vitrine.errors import StoreError
from vitrine.store import open_store
from vitrine.store.base import Record

DIM = 8
MANIFEST = ModelManifest("test", "0" * 64, {"size": 8, "resize": "crop"}, DIM)
NO_ROOM = os.statvfs_result((4096, 4096, 10**6, 0, 0, 10**6, 10**5, 10**5, 0, 255))
"""A file system with no free block (and free files: the bytes are what is short)."""
READ_ONLY_NOW = "is full: it was opened to be read only, and nothing was changed"
KEY = "s3cret-key-of-the-full-disk"


class Disk:
    """The disk under the stores of a test: ``full`` or not. Full, SQLite's opening of a
    database in WAL mode fails as on a real full disk ("disk I/O error" making the -shm
    file); a read-only ``immutable`` opening, which makes no file, still works."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.full = False
        connect, statvfs = sqlite3.connect, os.statvfs

        def full_connect(database, *args, uri: bool = False, **kwargs):
            if self.full and not uri:
                raise sqlite3.OperationalError("disk I/O error")
            return connect(database, *args, uri=uri, **kwargs)

        monkeypatch.setattr(sqlite3, "connect", full_connect)
        monkeypatch.setattr(os, "statvfs", lambda path: NO_ROOM if self.full else
                            statvfs(path))


def unit(*values) -> np.ndarray:
    v = np.zeros(DIM, np.float32)
    v[: len(values)] = values
    return v / np.linalg.norm(v)


def record(pid: str, vec: np.ndarray, **kw) -> Record:
    product = Product(product_id=pid, image=Path(f"/photos/{pid}.jpg"), category="c",
                      name=pid.upper(), **kw)
    return Record(product, "sha-" + pid, "0" * 16, b"\0" * 768, vec)


def _stored(root: Path) -> None:
    store = open_store(root, create=True)
    store.set_manifest(MANIFEST)
    store.upsert([record("a", unit(1, 0)), record("b", unit(1, 0.2)),
                  record("c", unit(0, 1), price=9.5)])
    store.close()  # (its WAL folded into the database: a store at rest)


def test_a_store_at_rest_on_a_full_disk_is_read_and_refuses_writes(tmp_path, monkeypatch):
    root = tmp_path / "store"
    _stored(root)
    disk = Disk(monkeypatch)
    disk.full = True
    reader = open_store(root)  # (was: "cannot open the store ...: the disk holding it is
    # full", for every command that only reads)
    assert reader.count() == 3 and reader.get("c").price == 9.5
    assert [m.product.product_id for m in reader.search(unit(1, 0), 2)] == ["a", "b"]
    assert reader.manifest() == MANIFEST
    with pytest.raises(StoreError, match=f"the disk holding the store {root} {READ_ONLY_NOW} "
                                         r"\(free some space and try again\)"):
        reader.lock_for_writing()
    assert not reader.replaced()  # (a server goes on reading it)
    # opened to be written into (index, migrate): refused as before
    with pytest.raises(StoreError, match=f"cannot open the store {root}: the disk holding it "
                                         "is full"):
        open_store(root, create=True)
    disk.full = False  # space freed: the reader says to open it anew, which writes
    assert reader.replaced()
    reader.close()
    writer = open_store(root)
    writer.lock_for_writing()
    writer.upsert([record("d", unit(1, 0.1))])
    assert writer.count() == 4 and writer.get("c").price == 9.5
    assert [m.product.product_id for m in writer.search(unit(1, 0), 2)] == ["a", "d"]
    writer.close()


def test_writes_only_in_the_wal_are_not_read_past_on_a_full_disk(tmp_path, monkeypatch):
    """The database file alone would miss the writes its WAL holds (a deleted product
    found): such a store is refused on a full disk, as before, not read as it is."""
    root = tmp_path / "store"
    _stored(root)
    writer = open_store(root)
    writer.lock_for_writing()
    writer.delete(["a"])  # (in the WAL while the writer has it open)
    assert (root / "vitrine.sqlite-wal").stat().st_size > 0
    disk = Disk(monkeypatch)
    disk.full = True
    with pytest.raises(StoreError, match=f"cannot open the store {root}: the disk holding it "
                                         r"is full \(disk I/O error; .*the store itself is as "
                                         "it was"):
        open_store(root)
    disk.full = False
    writer.close()
    again = open_store(root)
    assert again.count() == 2 and again.get("a") is None
    again.close()


def test_a_server_started_on_a_full_disk_reads_and_writes_once_there_is_room(
        settings, small_store, small_catalog, embedder, tmp_path, monkeypatch):
    """It did not start at all ("cannot open the store"). It now serves its pages and
    searches, answers a write with a 409 and one sentence (nothing written, no photo
    left), and takes writes once space is freed, without a restart."""
    from vitrine.api import create_app

    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    disk = Disk(monkeypatch)
    disk.full = True
    client = TestClient(create_app(settings.model_copy(update={"api_key": KEY}), store,
                                   embedder=embedder))
    auth = {"Authorization": f"Bearer {KEY}"}
    assert client.get("/healthz").json()["products"] == 48
    listed = client.get("/api/products", params={"limit": 200}).json()["products"]
    first = listed[0]["product_id"]
    similar = client.get(f"/api/products/{first}/similar", params={"k": 3})
    assert similar.status_code == 200 and len(similar.json()["results"]) == 3
    photo = sorted(small_catalog.rglob("*.jpg"))[0]
    data = photo.read_bytes()
    assert client.post("/api/search", files={"image": ("p.jpg", data, "image/jpeg")}
                       ).status_code == 200
    flipped = tmp_path / "flipped.jpg"  # (a photo no product has)
    Image.open(photo).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(flipped)
    upload = {"image": ("new.jpg", flipped.read_bytes(), "image/jpeg")}
    fields = {"product_id": "new-on-full-disk", "name": "Novo", "category": "salto_feminino"}
    added = client.post("/api/products", headers=auth, files=upload, data=fields)
    assert added.status_code == 409 and READ_ONLY_NOW in added.json()["detail"], added.text
    deleted = client.delete(f"/api/products/{first}", headers=auth)
    assert deleted.status_code == 409 and READ_ONLY_NOW in deleted.json()["detail"]
    assert not list((store / "uploads").glob("*"))  # (the photo went with the write)
    assert client.get(f"/api/products/{first}").status_code == 200
    assert client.get("/api/products/new-on-full-disk").status_code == 404
    disk.full = False  # space freed: the next request opens the store anew
    added = client.post("/api/products", headers=auth, files=upload, data=fields)
    assert added.status_code == 201, added.text
    assert client.delete(f"/api/products/{first}", headers=auth).status_code == 204
    assert client.get("/api/products/new-on-full-disk").status_code == 200
    assert client.get(f"/api/products/{first}").status_code == 404
    assert client.get("/healthz").json()["products"] == 48


class QuotaDisk:
    """A disk whose file system shows room while its user's quota has none: SQLite's opening
    to write says "database or disk is full" (a read-only ``immutable`` opening still
    works), and a file is given no bytes (EDQUOT). ``tries`` counts the files given room
    (how often a store looked whether it has room again)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.full, self.tries = False, 0
        connect, fallocate = sqlite3.connect, os.posix_fallocate

        def full_connect(database, *args, uri: bool = False, **kwargs):
            if self.full and not uri:
                raise sqlite3.OperationalError("database or disk is full")
            return connect(database, *args, uri=uri, **kwargs)

        def quota(fd: int, offset: int, length: int) -> None:
            self.tries += 1
            if self.full:
                raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
            fallocate(fd, offset, length)

        monkeypatch.setattr(sqlite3, "connect", full_connect)
        monkeypatch.setattr(os, "posix_fallocate", quota)


def test_a_store_read_as_it_is_under_a_full_quota_is_opened_anew_once_it_has_room(
        tmp_path, monkeypatch):
    """SQLite said "database or disk is full" where the file system showed room (a quota):
    the store was read as it is, but only a disk short of room as the file system counts it
    was watched, so a running server answered every write "free some space" until it was
    restarted. Its room is tried every FULL_RETRY_SECONDS now (a file given the room SQLite
    needs), and once there is room it is opened anew, for writing."""
    from vitrine.store import embedded

    root = tmp_path / "store"
    _stored(root)
    disk = QuotaDisk(monkeypatch)
    disk.full = True
    reader = open_store(root)
    assert reader.count() == 3 and reader.get("c").price == 9.5
    with pytest.raises(StoreError, match=f"the disk holding the store {root} {READ_ONLY_NOW}"):
        reader.lock_for_writing()
    monkeypatch.setattr(embedded, "FULL_RETRY_SECONDS", 0.0)
    assert not reader.replaced() and disk.tries == 1  # (tried: no room yet)
    disk.full = False
    monkeypatch.setattr(embedded, "FULL_RETRY_SECONDS", 3600.0)
    assert not reader.replaced() and disk.tries == 1  # (not tried again before its time)
    monkeypatch.setattr(embedded, "FULL_RETRY_SECONDS", 0.0)
    assert reader.replaced() and disk.tries == 2
    assert reader.replaced() and disk.tries == 2  # (room seen: said until it is opened anew)
    reader.close()
    writer = open_store(root)
    writer.lock_for_writing()
    writer.upsert([record("d", unit(1, 0.1))])
    assert writer.count() == 4 and writer.get("c").price == 9.5
    writer.close()


def test_a_server_on_a_full_quota_reads_what_others_write_once_it_has_room(
        settings, small_store, small_catalog, embedder, tmp_path, monkeypatch):
    """A server started on a full quota reads its store as a file that does not change.
    Once the quota had room, what another process wrote (`vitrine index`, a script) was
    not read while it stayed in that process's WAL (the database file unchanged): its
    products were 404s until the writer closed. The server opens the store anew once it
    has room now, in WAL mode, and reads them."""
    from vitrine.api import create_app
    from vitrine.store import embedded

    monkeypatch.setattr(embedded, "FULL_RETRY_SECONDS", 0.0)  # (tried at each request)
    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    disk = QuotaDisk(monkeypatch)
    disk.full = True
    client = TestClient(create_app(settings.model_copy(update={"api_key": KEY}), store,
                                   embedder=embedder))
    auth = {"Authorization": f"Bearer {KEY}"}
    listed = client.get("/api/products", params={"limit": 200}).json()["products"]
    first = listed[0]["product_id"]
    deleted = client.delete(f"/api/products/{first}", headers=auth)
    assert deleted.status_code == 409 and READ_ONLY_NOW in deleted.json()["detail"]
    disk.full = False  # the quota raised; another process deletes a product, still open
    other = open_store(store)
    try:
        other.lock_for_writing()
        other.delete([first])
        assert (store / "vitrine.sqlite-wal").stat().st_size > 0  # (in its WAL only)
        assert client.get(f"/api/products/{first}").status_code == 404
        assert client.get("/healthz").json()["products"] == 47
    finally:
        other.close()
    second = listed[1]["product_id"]
    assert client.delete(f"/api/products/{second}", headers=auth).status_code == 204


class FillingDisk:
    """A disk with room for a file's name and none for its bytes: SQLite makes the database
    file as it opens it, empty, and its first write fails ("database or disk is full"), as
    on a real full disk (below: a tmpfs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.full = True
        disk, connect, statvfs = self, sqlite3.connect, os.statvfs

        class Filled(sqlite3.Connection):
            def execute(self, sql, *args):
                if disk.full and not sql.lstrip().upper().startswith("SELECT"):
                    raise sqlite3.OperationalError("database or disk is full")
                return super().execute(sql, *args)

            def executescript(self, script):
                if disk.full:
                    raise sqlite3.OperationalError("database or disk is full")
                return super().executescript(script)

        monkeypatch.setattr(sqlite3, "connect",
                            lambda *a, **kw: connect(*a, factory=Filled, **kw))
        monkeypatch.setattr(os, "statvfs", lambda path: NO_ROOM if self.full else
                            statvfs(path))


def test_a_first_index_on_a_full_disk_leaves_no_half_made_store(tmp_path, monkeypatch):
    """A first `vitrine index` on a full disk left an empty vitrine.sqlite, which every later
    command refused as "empty: no Vitrine store was written there (a copy that failed?)"
    (or, made a little further, as a store "written by an older Vitrine"). It leaves nothing
    now, says so, and the next run makes the store."""
    from vitrine.errors import NoStore

    root = tmp_path / "shop" / "store"
    disk = FillingDisk(monkeypatch)
    with pytest.raises(StoreError, match=f"^cannot make the store {root}: the disk holding it "
                                         r"is full \(database or disk is full\)\. Free some "
                                         "space there and run the command again; no store "
                                         "was left there.$"):
        open_store(root, create=True)
    assert not root.exists()  # (its folder, made for it, gone too)
    with pytest.raises(NoStore, match=f"^no Vitrine store at {root}; create one with"):
        open_store(root)
    disk.full = False
    _stored(root)
    again = open_store(root)
    assert again.count() == 3 and again.manifest() == MANIFEST
    again.close()


@contextlib.contextmanager
def small_disk(at: Path, size: str):
    """A tmpfs of ``size`` mounted at ``at``; skips the test where mounts need root."""
    import subprocess

    at.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(at)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounts are not available here (they need root)")
    try:
        yield at
    finally:
        subprocess.run(["umount", "--lazy", str(at)], capture_output=True)


@pytest.mark.parametrize("size", ["4k", "16k", "64k", "256k"])
def test_a_store_made_on_a_real_full_disk_is_whole_or_not_there(tmp_path, size):
    """Each size fills up at another step of making a store (4k: an empty vitrine.sqlite was
    left, "is empty"; 16k: its header alone, "written by an older Vitrine"; 64k: its tables
    in the WAL; 256k: its products). Whatever step failed, a reader finds no store, or one
    that opens and holds what was stored."""
    from vitrine.errors import NoStore

    with small_disk(tmp_path / "disk", size) as disk:
        root = disk / "store"
        said = ""
        try:
            _stored(root)
        except StoreError as exc:
            said = str(exc)
            assert "the disk holding" in said and "full" in said, said
        try:
            reader = open_store(root)
        except NoStore:
            assert not root.exists() and said.endswith("no store was left there."), said
        else:
            assert reader.count() in (0, 3)
            reader.close()
