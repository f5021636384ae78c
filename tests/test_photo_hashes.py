"""`vitrine index` reads a catalogue photo again only when its size, times or inode changed."""

from __future__ import annotations

import csv
import os
import shutil
import time

import pytest
from conftest import copy_subset

from vitrine import photo_hashes
from vitrine.indexer import index_catalog
from vitrine.photo_hashes import PhotoHashes, file_sha256
from vitrine.store import open_store


def test_a_photo_keeps_its_hash_until_its_file_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(photo_hashes, "RACY_NS", 0)
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"first photo")
    first = PhotoHashes({})
    assert first.sha256(photo) == file_sha256(photo) and first.read == 1
    again = PhotoHashes(first.fresh)
    assert again.sha256(photo) == file_sha256(photo) and again.read == 0
    # same size, other bytes, modification time put back (as `cp -p` or `touch -r` do): the
    # change time tells it
    st = os.stat(photo)
    time.sleep(0.05)  # past a coarse clock's tick (kernels before 6.13 stamp ctime so)
    photo.write_bytes(b"other photo")
    os.utime(photo, ns=(st.st_atime_ns, st.st_mtime_ns))
    later = PhotoHashes(first.fresh)
    assert later.sha256(photo) == file_sha256(photo) != next(iter(first.fresh.values()))[1]
    assert later.read == 1
    # a file changed in the last moments is not remembered (a coarse clock's same tick)
    monkeypatch.setattr(photo_hashes, "RACY_NS", 10**12)
    racy = PhotoHashes({})
    assert racy.sha256(photo) == file_sha256(photo) and racy.fresh == {}


def test_index_reads_only_the_photos_that_changed(demo_catalog, embedder, tmp_path,
                                                  monkeypatch):
    monkeypatch.setattr(photo_hashes, "RACY_NS", 0)
    catalog = copy_subset(demo_catalog, tmp_path / "catalog", 2)
    rows = list(csv.DictReader(open(catalog / "products.csv", newline="")))  # noqa: SIM115
    store = open_store(tmp_path / "store", create=True)

    def index():
        return index_catalog(catalog, store, embedder, show_progress=False)

    first = index()
    assert (first.indexed, first.photos_read) == (16, 16)
    assert set(store.photo_hashes()) == {str((catalog / r["image"]).resolve()) for r in rows}
    second = index()
    assert (second.unchanged, second.photos_read) == (16, 0)
    assert index_catalog(catalog, store, embedder, show_progress=False,
                         rehash=True).photos_read == 16  # VITRINE_REHASH_PHOTOS
    # another photo's bytes over one photo: read again and re-embedded; the rest are not read
    shutil.copyfile(catalog / rows[5]["image"], catalog / rows[0]["image"])
    third = index()
    assert (third.updated, third.unchanged, third.photos_read) == (1, 15, 1)
    assert store.get(rows[0]["product_id"]).content_sha256 == file_sha256(
        catalog / rows[5]["image"])
    # a photo gone from the catalogue is forgotten with its product
    (catalog / rows[1]["image"]).unlink()
    fourth = index()
    assert fourth.removed == 1 and fourth.photos_read == 0
    assert str((catalog / rows[1]["image"]).resolve()) not in store.photo_hashes()
    # a price, then a name, edited in the product table: that product's fields change, and
    # no photo is read again
    rows.pop(1)
    edited = rows[2]["product_id"]
    for field, value in (("price", "129,90"), ("name", "Renamed in the table")):
        rows[2][field] = value
        with open(catalog / "products.csv", "w", newline="") as fh:
            table = csv.DictWriter(fh, fieldnames=[*rows[0], "price"])
            table.writeheader()
            table.writerows(rows)
        report = index()
        assert (report.updated, report.unchanged, report.photos_read) == (1, 14, 0), field
    assert (store.get(edited).price, store.get(edited).name) == (129.9, "Renamed in the table")
    store.close()


def test_a_run_stopped_while_embedding_keeps_the_hashes_it_read(demo_catalog, embedder,
                                                                 tmp_path, monkeypatch):
    from vitrine import indexer

    monkeypatch.setattr(photo_hashes, "RACY_NS", 0)
    catalog = copy_subset(demo_catalog, tmp_path / "catalog", 1)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(indexer, "_embed_and_store", interrupted)
    store = open_store(tmp_path / "store", create=True)
    with pytest.raises(KeyboardInterrupt):
        index_catalog(catalog, store, embedder, show_progress=False)
    assert len(store.photo_hashes()) == 8 and store.count() == 0
    store.close()


def test_products_sharing_a_photo_embed_it_once(demo_catalog, embedder, tmp_path,
                                                monkeypatch):
    """Every size of a shirt listed with one photo, and a photo copied under another name: the
    photo is decoded and embedded once, and each product stores its vector."""
    catalog = copy_subset(demo_catalog, tmp_path / "catalog", 1)
    rows = list(csv.DictReader(open(catalog / "products.csv", newline="")))  # noqa: SIM115
    shirt = rows[0]
    sizes = [{**shirt, "product_id": f"{shirt['product_id']}-{size}"} for size in "PMG"]
    copy = catalog / shirt["image"].replace(".jpg", "-copy.jpg")
    shutil.copyfile(catalog / shirt["image"], copy)
    copied = {**rows[1], "product_id": "copy", "image": str(copy.relative_to(catalog))}
    with open(catalog / "products.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(shirt))
        writer.writeheader()
        writer.writerows(rows + sizes + [copied])
    embedded: list = []
    real = embedder.embed_paths

    def counting(paths, **kw):
        embedded.extend(paths)
        return real(paths, **kw)

    monkeypatch.setattr(embedder, "embed_paths", counting)
    store = open_store(tmp_path / "store", create=True)
    report = index_catalog(catalog, store, embedder, show_progress=False)
    assert (report.indexed, report.photos_embedded, report.skipped) == (12, 8, [])
    assert report.photos_read == 9  # the shirt's file once; its copy is another file
    assert len(embedded) == len(set(embedded)) == 8
    same = [store.vector(pid) for pid in
            [shirt["product_id"], "copy"] + [s["product_id"] for s in sizes]]
    assert all((v == same[0]).all() for v in same)
    assert store.get("copy").category == rows[1]["category"]
    # a new size listed later with the shirt's photo: given the vector the store holds
    with open(catalog / "products.csv", "a", newline="") as fh:
        csv.DictWriter(fh, fieldnames=list(shirt)).writerow(
            {**shirt, "product_id": f"{shirt['product_id']}-GG"})
    embedded.clear()
    later = index_catalog(catalog, store, embedder, show_progress=False)
    assert (later.indexed, later.photos_embedded, embedded) == (1, 0, [])
    assert (store.vector(f"{shirt['product_id']}-GG") == same[0]).all()
    assert store.get(f"{shirt['product_id']}-GG").phash == store.get(shirt["product_id"]).phash
    store.close()


def test_a_file_that_hides_its_size_is_not_read_through(tmp_path):
    """A catalogue photo linked to /proc/self/pagemap (size 0, about 275 GB to read) held
    `index` for minutes (helper-153): a file that says it holds 0 bytes but has more is
    refused after one byte, and one that grows past the limit while read is cut there. An
    empty file is still read as empty."""
    import errno

    from vitrine.errors import ImageError
    from vitrine.images import read_photo
    from vitrine.photo_hashes import read_whole

    system = tmp_path / "status.jpg"
    system.symlink_to("/proc/self/status")
    assert os.stat(system).st_size == 0 and system.read_bytes()
    with pytest.raises(OSError) as refused:
        file_sha256(system)
    assert refused.value.errno == errno.EINVAL and "0 bytes but it has more" in str(
        refused.value)
    with pytest.raises(ImageError, match="0 bytes but it has more"):
        read_photo(system)
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert read_photo(tmp_path / "empty.jpg") == b""
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (3 << 20))
    understated = os.stat_result((*os.stat(big)[:6], 1, *os.stat(big)[7:]))  # (st_size 1)
    with open(big, "rb") as fh, pytest.raises(OSError) as cut:
        read_whole(fh, understated, 2 << 20)  # (grown since its stat)
    assert cut.value.errno == errno.EFBIG
    with open(big, "rb") as fh:
        assert read_whole(fh, understated, 4 << 20) == big.read_bytes()
    with open(big, "rb") as fh:
        assert read_whole(fh, os.stat(big), 4 << 20) == big.read_bytes()


def test_the_photo_size_limit_patched_in_the_module_is_the_default(tmp_path, monkeypatch):
    """``regular_file`` and ``file_sha256`` took ``limit=PHOTO_MAX_BYTES`` as the module was
    imported: patching ``vitrine.photo_hashes.PHOTO_MAX_BYTES`` (a test of the limit without
    writing 512 MB) changed nothing. ``math.inf`` reads any size (the weights' hash)."""
    import hashlib
    import math

    from vitrine.errors import ImageError
    from vitrine.images import open_image

    photo = tmp_path / "big.jpg"
    photo.write_bytes(b"\xff" * (3 << 20))
    monkeypatch.setattr(photo_hashes, "PHOTO_MAX_BYTES", 2 << 20)
    with pytest.raises(OSError, match="larger than the 2 MB a photo file may be"):
        file_sha256(photo)
    with pytest.raises(ImageError, match="larger than the 2 MB a photo file may be"):
        open_image(photo)
    assert file_sha256(photo, limit=math.inf) == hashlib.sha256(photo.read_bytes()).hexdigest()


def test_no_limit_given_reads_up_to_the_photo_limit_as_regular_file_does(tmp_path,
                                                                         monkeypatch):
    """``read_limited`` and ``read_whole`` read ``limit=None`` as no limit where
    ``regular_file`` and ``file_sha256`` read it as ``PHOTO_MAX_BYTES``: the same None meant
    two things. Now it is the photo limit (read as it is called) for all four, and
    ``math.inf`` any size."""
    import errno
    import math

    from vitrine.photo_hashes import read_limited, read_whole

    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (3 << 20))
    monkeypatch.setattr(photo_hashes, "PHOTO_MAX_BYTES", 2 << 20)
    for read in (read_whole, lambda fh, st, *limit: b"".join(read_limited(fh, st, *limit))):
        for no_limit in ((None,), ()):
            with open(big, "rb") as fh, pytest.raises(OSError) as cut:
                read(fh, os.stat(big), *no_limit)
            assert cut.value.errno == errno.EFBIG
        with open(big, "rb") as fh:
            assert read(fh, os.stat(big), math.inf) == big.read_bytes()


def test_a_photo_read_is_cut_at_the_limit_patched_in_photo_hashes(tmp_path, monkeypatch):
    """``images`` imported ``PHOTO_MAX_BYTES`` by name: a photo grown past the limit patched
    in ``vitrine.photo_hashes`` since its stat was read whole (up to the 512 MB imported)."""
    from vitrine import images
    from vitrine.errors import ImageError

    photo = tmp_path / "growing.jpg"
    photo.write_bytes(b"\xff" * (1 << 20))
    before = os.stat(photo)
    photo.write_bytes(b"\xff" * (3 << 20))  # (grown since its stat)
    monkeypatch.setattr(images, "regular_file", lambda path: before)
    monkeypatch.setattr(photo_hashes, "PHOTO_MAX_BYTES", 2 << 20)
    with pytest.raises(ImageError, match="larger than the 2 MB a photo file may be"):
        images.read_photo(photo)
