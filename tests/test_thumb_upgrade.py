"""`vitrine index` makes the thumbnails an older Vitrine stored (768 bytes, no second view)
again from their photos, not embedding them again, so that padded, squared and mirrored
copies of those photos are found (``vitrine.thumb_upgrade``)."""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_subset, require_module
from PIL import Image

from vitrine import embed
from vitrine.catalog import Product
from vitrine.dedupe_views import THUMB_BYTES, VIEWED_BYTES
from vitrine.display import index_lines
from vitrine.errors import ImageError
from vitrine.index_duplicates import store_duplicates
from vitrine.indexer import index_catalog
from vitrine.store import open_store
from vitrine.store.base import Record


@pytest.fixture(scope="module")
def shop(demo_catalog, tmp_path_factory) -> Path:
    """16 products (2 per category), and a 17th sharing the first one's photo. Read-only:
    copy it before changing it."""
    shop = copy_subset(demo_catalog, tmp_path_factory.mktemp("shop") / "shop", 2)
    table = shop / "products.csv"
    rows = list(csv.DictReader(table.open(newline="")))
    with table.open("a", newline="") as fh:
        csv.DictWriter(fh, fieldnames=list(rows[0])).writerow(
            {**rows[0], "product_id": rows[0]["product_id"] + "-b", "name": "Another size"})
    return shop


def photos(catalog: Path) -> list[Path]:
    return sorted(catalog.rglob("*.jpg"))


def padded(photo: Path, to: Path, square: bool = False) -> Path:
    """A copy of ``photo`` on white, as shops list it (benchmarks/dedupe_quality.py ``pad``):
    squared onto a canvas 10 % larger than its longer side, or a margin of a quarter of its
    size on each side; saved at JPEG quality 90."""
    img = Image.open(photo).convert("RGB")
    w, h = img.size
    side = round(max(w, h) * 1.1)
    size, at = (((side, side), ((side - w) // 2, (side - h) // 2)) if square else
                ((round(w * 1.5), round(h * 1.5)), (round(w * 0.25), round(h * 0.25))))
    canvas = Image.new("RGB", size, "white")
    canvas.paste(img, at)
    canvas.save(to, quality=90)
    return to


def as_an_older_vitrine_left_it(store: Path) -> None:
    """The store's thumbnails as a Vitrine before the second views wrote them."""
    with sqlite3.connect(store / "vitrine.sqlite") as db:
        db.execute(f"UPDATE products SET thumb = substr(thumb, 1, {THUMB_BYTES})")


def rows(store: Path) -> dict[str, tuple]:
    """Every stored column of every product, by product id, and their listing order."""
    with sqlite3.connect(store / "vitrine.sqlite") as db:
        return {r[1]: r for r in db.execute("SELECT * FROM products ORDER BY id")}


def grouped(report, *paths: str) -> bool:
    """Whether one duplicate group names all of ``paths`` (a path shared by two products is
    named with the product id)."""
    return any(all(any(key.split(" (product ")[0] == p for key in group) for p in paths)
               for group in report.duplicates)


def rel(photo: Path, catalog: Path) -> str:
    return photo.relative_to(catalog.resolve()).as_posix()


def test_index_makes_an_old_stores_thumbnails_again(shop, embedder, tmp_path, monkeypatch):
    """A store indexed before the views: its padded copies, one indexed with it and one added
    since, are found by the next run, each photo decoded once (two products share one), the
    thumbnails those a new store gets, nothing else of the rows changed; the duplicate pairs
    saved by the last search (made without the views) are searched again for them."""
    catalog = shutil.copytree(shop, tmp_path / "catalog").resolve()
    first, other = photos(catalog)[0], photos(catalog)[5]
    pad_a = padded(first, first.parent / "pad_a.jpg")
    store = tmp_path / "store"
    db = open_store(store, create=True)
    report = index_catalog(catalog, db, embedder, show_progress=False)
    fresh = {pid: f.thumb for pid, f in db.photo_facts().items()}
    db.close()
    assert report.indexed == 18 and grouped(report, rel(first, catalog), rel(pad_a, catalog))
    as_an_older_vitrine_left_it(store)
    before = rows(store)
    db = open_store(store)  # (the pairs an older Vitrine's search found: without the views)
    groups, compared, unviewed = store_duplicates(db, catalog)
    db.close()
    assert (compared, unviewed) == (18, 18)
    assert not any(rel(pad_a, catalog) in g for g in groups)

    pad_b = padded(other, other.parent / "pad_b.jpg", square=True)
    decoded = []
    real = embed.decode_thumbnail

    def spy(path, *args):
        decoded.append(path)
        return real(path, *args)

    monkeypatch.setattr(embed, "decode_thumbnail", spy)
    db = open_store(store)
    report = index_catalog(catalog, db, embedder, show_progress=False, commit_every=4)
    db.close()
    assert (report.indexed, report.unchanged, report.photos_embedded) == (1, 18, 1)
    assert grouped(report, rel(first, catalog), rel(pad_a, catalog))
    assert grouped(report, rel(other, catalog), rel(pad_b, catalog))
    assert report.duplicates_compared == 19  # (the 18 made again, and the new copy)
    assert report.duplicates_without_views == 0
    assert report.thumbnails_upgraded == 18 == report.as_dict()["thumbnails_upgraded"]
    assert sorted(decoded) == sorted(set(photos(catalog)) - {pad_b})  # once each
    said = " ".join(index_lines(report, 10_000, "s"))
    assert "Thumbnails of 18 products made again from their photos" in said
    assert "older Vitrine made, their photos" not in said
    after = rows(store)
    assert list(after)[:18] == list(before)  # (the listing order: as added)
    thumb = 11  # (the thumb column)
    assert {pid: r[thumb] for pid, r in after.items() if pid in before} == fresh
    assert {pid: r[:thumb] + r[thumb + 1:] for pid, r in after.items() if pid in before} == {
        pid: r[:thumb] + r[thumb + 1:] for pid, r in before.items()}  # vectors and all
    db = open_store(store)
    again = index_catalog(catalog, db, embedder, show_progress=False)
    db.close()
    assert (again.thumbnails_upgraded, again.duplicates_compared) == (0, 0)
    assert grouped(again, rel(first, catalog), rel(pad_a, catalog))


def test_an_interrupted_upgrade_keeps_what_it_wrote(shop, embedder, tmp_path, monkeypatch):
    """Thumbnails are written every ``commit_every`` products: a run stopped while making
    them keeps those written, and the next run makes the rest."""
    catalog = shutil.copytree(shop, tmp_path / "catalog").resolve()
    store = tmp_path / "store"
    db = open_store(store, create=True)
    index_catalog(catalog, db, embedder, show_progress=False)
    db.close()
    as_an_older_vitrine_left_it(store)
    real = embed.decode_thumbnail
    calls = []

    def stopped(path, *args):
        calls.append(path)
        if len(calls) > 9:
            raise KeyboardInterrupt
        return real(path, *args)

    monkeypatch.setattr(embed, "decode_thumbnail", stopped)
    db = open_store(store)
    with pytest.raises(KeyboardInterrupt):
        index_catalog(catalog, db, embedder, show_progress=False, commit_every=4)
    db.close()
    made = sum(len(r[11]) == VIEWED_BYTES for r in rows(store).values())
    assert 8 <= made < 17
    monkeypatch.setattr(embed, "decode_thumbnail", real)
    db = open_store(store)
    report = index_catalog(catalog, db, embedder, show_progress=False)
    db.close()
    assert report.thumbnails_upgraded == 17 - made
    assert all(len(r[11]) == VIEWED_BYTES for r in rows(store).values())


def test_index_makes_views_of_the_older_mirror_rule_again(shop, embedder, tmp_path):
    """A store indexed when views were only mirrored (1,568 bytes): before the next run its
    search still finds a mirrored copy among those views, not a copy turned a quarter turn;
    the run makes every view again from its photo, finds both, and searches the store's
    pairs again (``dedupe_store.FORMAT`` 7). A product added through the API whose photo is
    gone keeps its older view, counted in ``duplicates_without_views``."""
    from test_dedupe_turns import mirror_rule_thumb

    from vitrine.dedupe_views import MIRRORED_BYTES, VIEW_RULE

    catalog = shutil.copytree(shop, tmp_path / "catalog").resolve()
    first, other = photos(catalog)[0], photos(catalog)[5]
    turned = first.parent / "turned.jpg"
    Image.open(first).convert("RGB").transpose(Image.Transpose.ROTATE_90).save(turned,
                                                                                quality=90)
    mirrored = other.parent / "mirrored.jpg"
    Image.open(other).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
        mirrored, quality=90)
    store = tmp_path / "store"
    db = open_store(store, create=True)
    report = index_catalog(catalog, db, embedder, show_progress=False)
    uploads = store / "uploads"
    uploads.mkdir()
    gone = sent_through_api("api-gone", photos(catalog)[9], uploads, embedder)
    db.upsert([gone])
    db.close()
    assert grouped(report, rel(first, catalog), rel(turned, catalog))
    assert grouped(report, rel(other, catalog), rel(mirrored, catalog))
    with sqlite3.connect(store / "vitrine.sqlite") as sql:  # (as a Vitrine before wrote them)
        for pid, image in sql.execute("SELECT product_id, image FROM products").fetchall():
            sql.execute("UPDATE products SET thumb=? WHERE product_id=?",
                        (mirror_rule_thumb(Image.open(image).convert("RGB")), pid))
    gone.product.image.unlink()
    before = rows(store)
    assert all(len(r[11]) == MIRRORED_BYTES for r in before.values())
    db = open_store(store)
    groups, compared, unviewed = store_duplicates(db, catalog, uploaded={"api-gone"})
    db.close()
    assert (compared, unviewed) == (20, 20)
    assert any(rel(other, catalog) in g and rel(mirrored, catalog) in g for g in groups)
    assert not any(rel(turned, catalog) in g for g in groups)

    db = open_store(store)
    report = index_catalog(catalog, db, embedder, show_progress=False, uploads=uploads)
    db.close()
    assert (report.thumbnails_upgraded, report.duplicates_without_views) == (19, 1)
    assert report.duplicates_compared == 20
    assert grouped(report, rel(first, catalog), rel(turned, catalog))
    assert grouped(report, rel(other, catalog), rel(mirrored, catalog))
    after = rows(store)
    assert after["api-gone"] == before["api-gone"]  # (its photo gone: kept as it was)
    assert all(len(r[11]) == VIEWED_BYTES and r[11][-1] == VIEW_RULE
               for pid, r in after.items() if pid != "api-gone")
    said = " ".join(index_lines(report, 10_000, "s"))
    assert "Thumbnails of 19 products made again from their photos" in said
    assert "mirrored or turned copies of it are not found" in said


def sent_through_api(pid: str, source: Path, uploads: Path, embedder, *, name: str = "",
                     category: str = "x", old: bool = False) -> Record:
    """Product ``pid`` as the API stores it: ``source`` mirrored (JPEG quality 90), saved in
    ``uploads`` named by its sha256; with ``old``, its thumbnail as an older Vitrine made it."""
    buf = io.BytesIO()
    Image.open(source).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    photo = uploads / f"{sha}.jpg"
    photo.write_bytes(data)
    _, phash, thumb = embed.decode(data, embedder.prep, embedder.settings.max_image_pixels)
    return Record(Product(pid, photo, category, name=name, uploaded=True), sha, phash,
                  thumb[:THUMB_BYTES] if old else thumb, embedder.embed_image(data))


def _indexed_with_uploads(shop, embedder, tmp_path):
    """A copy of ``shop`` indexed into an embedded store with an empty uploads folder:
    (catalogue, store folder, the store open, its uploads folder)."""
    catalog = shutil.copytree(shop, tmp_path / "catalog").resolve()
    store = tmp_path / "store"
    db = open_store(store, create=True)
    index_catalog(catalog, db, embedder, show_progress=False)
    uploads = store / "uploads"
    uploads.mkdir()
    return catalog, store, db, uploads


def test_a_photo_that_cannot_be_read_keeps_its_old_thumbnail(shop, embedder, tmp_path,
                                                             monkeypatch):
    """A product added through the API gets its thumbnail again from its stored photo; one
    whose stored photo is gone or was changed, and a catalogue photo that cannot be read,
    keep their rows as they were and are counted in ``duplicates_without_views``."""
    catalog, store, db, uploads = _indexed_with_uploads(shop, embedder, tmp_path)
    sources = photos(catalog)
    sent = {}
    for pid, source in (("api-ok", sources[2]), ("api-gone", sources[3]),
                        ("api-changed", sources[4])):
        record = sent_through_api(pid, source, uploads, embedder, category=source.parent.name)
        db.upsert([record])
        sent[pid] = (record.product.image, record.thumb, source)
    db.close()
    as_an_older_vitrine_left_it(store)
    sent["api-gone"][0].unlink()
    sent["api-changed"][0].write_bytes(sources[6].read_bytes())
    unreadable = sources[7]
    read_photo = embed.read_photo

    def refused(path):
        if Path(path) == unreadable:
            raise ImageError(str(path), "cannot be read (Permission denied).")
        return read_photo(path)

    monkeypatch.setattr(embed, "read_photo", refused)
    before = rows(store)
    db = open_store(store)
    report = index_catalog(catalog, db, embedder, show_progress=False, uploads=uploads)
    db.close()
    assert report.uploaded == 3 and report.unchanged == 17
    assert report.duplicates_without_views == 3
    assert report.thumbnails_upgraded == 17  # (16 of the catalogue's 17 products, api-ok)
    after = rows(store)
    kept = {pid for pid, r in before.items() if r[2] == str(unreadable)} | {
        "api-gone", "api-changed"}
    assert len(kept) == 3
    assert {pid: after[pid] for pid in kept} == {pid: before[pid] for pid in kept}
    assert after["api-ok"][11] == sent["api-ok"][1]  # (as the API made it)
    assert grouped(report, rel(sent["api-ok"][2], catalog)) and any(
        "product api-ok (added through the API)" in g for g in report.duplicates
        if any(k.startswith(rel(sent["api-ok"][2], catalog)) for k in g))
    said = " ".join(index_lines(report, 10_000, "s"))
    assert "3 products of the store kept thumbnails an older Vitrine made" in said


def _needs_milvus() -> None:
    """Skip where the milvus extra is not installed (in CI it must be: fail)."""
    for module in ("milvus_lite", "pymilvus"):
        require_module(module, "the milvus extra")


def test_milvus_stores_get_their_thumbnails_made_again(shop, embedder, tmp_path):
    """The Milvus store: the thumbnail field alone written (a partial upsert), every other
    field, the vector and the order as they were. Without the milvus extra it is skipped,
    except in CI."""
    _needs_milvus()
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    first = sorted(shop.rglob("*.jpg"))[0]
    for photo in sorted(shop.rglob("*.jpg"))[::2]:  # (one a category)
        (catalog / photo.parent.name).mkdir(exist_ok=True)
        shutil.copy(photo, catalog / photo.parent.name / photo.name)
    catalog = catalog.resolve()
    pad = padded(first, catalog / first.parent.name / "pad.jpg")
    db = open_store(f"milvus-lite://{tmp_path}/m.db", create=True)
    try:
        index_catalog(catalog, db, embedder, show_progress=False)
        held = [(p, v) for batch in db.iter_products(100) for p, v in batch]
        fresh = {p.product_id: p.thumb for p, _ in held}
        fingerprints = db.fingerprints()
        # as an older Vitrine wrote them (through the store's own writes)
        db.upsert([Record(p.to_product(), p.content_sha256, p.phash, p.thumb[:THUMB_BYTES], v)
                   for p, v in held])
        assert db.fingerprints() == fingerprints
        report = index_catalog(catalog, db, embedder, show_progress=False, commit_every=3)
        assert grouped(report, rel(catalog / first.parent.name / first.name, catalog),
                       rel(pad, catalog))
        assert report.unchanged == 9 and report.duplicates_without_views == 0
        assert report.thumbnails_upgraded == 9
        now = [(p, v) for batch in db.iter_products(100) for p, v in batch]
        assert {p.product_id: p.thumb for p, _ in now} == fresh
        assert {p.product_id: (p.as_dict(), p.content_sha256, p.phash, p.uploaded, v.tolist())
                for p, v in now} == {
            p.product_id: (p.as_dict(), p.content_sha256, p.phash, p.uploaded, v.tolist())
            for p, v in held}
        assert db.fingerprints() == fingerprints
        assert np.array_equal(db.all_vectors()[1], np.stack([v for _, v in held]))
    finally:
        db.close()


def test_the_duplicate_search_reads_the_facts_again_for_products_stored_meanwhile(
        shop, embedder, tmp_path):
    """The store's photo facts are read before the thumbnails are made again (hours on a
    large old store), and a Milvus shard beside may store products meanwhile: the search
    reads them again rather than stopping with "the store changed"."""
    catalog = shutil.copytree(shop, tmp_path / "catalog").resolve()
    db = open_store(tmp_path / "store", create=True)
    try:
        index_catalog(catalog, db, embedder, show_progress=False)
        facts = db.photo_facts()
        expected = store_duplicates(db, catalog)
        later = sorted(facts)[3]
        del facts[later]
        assert store_duplicates(db, catalog, facts=facts)[::2] == expected[::2]
    finally:
        db.close()


def test_shards_count_and_search_the_thumbnails_other_shards_made(shop, embedder, tmp_path,
                                                                   monkeypatch):
    """`index --shard` makes its own products' thumbnails again: another shard's products,
    not made yet, are not "missing, unreadable or changed"; and those another shard made
    while this one made its own are searched with their new thumbnails (the facts read
    before the upgrade were stale: a padded copy of them was not found)."""
    _needs_milvus()
    from vitrine import indexer
    from vitrine.indexer import in_shard
    from vitrine.split import read_catalogue

    catalog = shutil.copytree(shop, tmp_path / "catalog").resolve()
    products = read_catalogue(catalog, None)[0]
    first = next(p.image for p in products if in_shard(p.product_id, (1, 2)))
    for k in range(64):  # (a padded copy of a shard-1 photo that shard 0 indexes)
        pad = padded(first, first.parent / f"pad{k}.jpg")
        ids = {p.image.name: p.product_id for p in read_catalogue(catalog, None)[0]}
        if in_shard(ids[pad.name], (0, 2)):
            break
        pad.unlink()
    pad = pad.rename(tmp_path / pad.name)  # (added after the older Vitrine's run)
    db = open_store(f"milvus-lite://{tmp_path}/m.db", create=True)
    try:
        index_catalog(catalog, db, embedder, show_progress=False)
        held = [(p, v) for batch in db.iter_products(100) for p, v in batch]
        db.upsert([Record(p.to_product(), p.content_sha256, p.phash, p.thumb[:THUMB_BYTES], v)
                   for p, v in held])
        report = index_catalog(catalog, db, embedder, show_progress=False, shard=(0, 2))
        assert report.thumbnails_upgraded > 0 and report.duplicates_without_views == 0
        assert "missing, unreadable or changed" not in " ".join(index_lines(report, 10_000,
                                                                             "s"))
        db.upsert([Record(p.to_product(), p.content_sha256, p.phash, p.thumb[:THUMB_BYTES], v)
                   for p, v in held])
        shutil.move(pad, first.parent / pad.name)
        real = indexer.upgrade_thumbnails

        def beside(store, facts, embedder, **kw):  # (shard 1 on another machine, meanwhile)
            made = real(store, facts, embedder, **kw)
            real(store, store.photo_facts(), embedder, commit_every=64,
                 mine=lambda pid: in_shard(pid, (1, 2)))
            return made

        monkeypatch.setattr(indexer, "upgrade_thumbnails", beside)
        report = index_catalog(catalog, db, embedder, show_progress=False, shard=(0, 2))
        assert report.duplicates_without_views == 0
        assert grouped(report, rel(first, catalog), rel(first.parent / pad.name, catalog))
    finally:
        db.close()


def test_a_photo_gone_takes_the_thumbnail_of_its_bytes_another_product_holds(
        shop, embedder, tmp_path):
    """A product an older server added (its thumbnail without views) whose photo file is gone,
    while a catalogue product holds the same bytes with its views: it gets that thumbnail,
    rather than staying without views for good ("put its photo back")."""
    catalog, store, db, uploads = _indexed_with_uploads(shop, embedder, tmp_path)
    data = photos(catalog)[0].read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    photo = uploads / f"{sha}.jpg"
    photo.write_bytes(data)
    _, phash, thumb = embed.decode(data, embedder.prep, embedder.settings.max_image_pixels)
    db.upsert([Record(Product("api-old", photo, "x", uploaded=True), sha, phash,
                      thumb[:THUMB_BYTES], embedder.embed_image(data))])
    db.close()
    photo.unlink()
    db = open_store(store)
    try:
        report = index_catalog(catalog, db, embedder, show_progress=False, uploads=uploads)
        assert (report.thumbnails_upgraded, report.duplicates_without_views) == (1, 0)
        assert db.photo_facts()["api-old"].thumb == thumb
    finally:
        db.close()


def test_milvus_thumbnails_keep_what_the_server_wrote_meanwhile(shop, embedder, tmp_path):
    """A Milvus store is written by the server while `index` runs: a product added through
    the API renamed, another given a new photo between the read of their rows and the write
    of their thumbnails kept those edits (the whole rows, read before, were written back)."""
    _needs_milvus()
    catalog = shutil.copytree(shop, tmp_path / "catalog").resolve()
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    sources = photos(catalog)

    def sent(pid, source, name, old=False):
        return sent_through_api(pid, source, uploads, embedder, name=name, old=old)

    db = open_store(f"milvus-lite://{tmp_path}/m.db", create=True)
    try:
        index_catalog(catalog, db, embedder, show_progress=False, uploads=uploads)
        db.upsert([sent("api-1", sources[2], "first", old=True),
                   sent("api-2", sources[3], "shoe", old=True)])
        replaced = sent("api-2", sources[6], "shoe, new photo")
        read, wrote = db._lookup, []

        def lookup(ids, fields):  # (the server's writes, between the read and the write)
            rows = read(ids, fields)
            if not wrote and "api-1" in ids:
                wrote.append(1)
                db.update_metadata([db.get("api-1").to_product(name="renamed")])
                db.upsert([replaced])
            return rows

        db._lookup = lookup
        index_catalog(catalog, db, embedder, show_progress=False, uploads=uploads)
        assert wrote and db.get("api-1").name == "renamed"
        now = db.get("api-2")
        assert (now.name, now.content_sha256) == ("shoe, new photo", replaced.content_sha256)
        assert now.thumb == replaced.thumb or len(now.thumb) == THUMB_BYTES  # (made again
        # by the next run: not the old photo's with its views, kept for good)
    finally:
        db.close()
