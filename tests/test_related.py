"""`vitrine related`: every product's most similar products in one file (CSV or JSON Lines)
that a shop imports, the same lists `vitrine similar` and the product pages give."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from vitrine.errors import VitrineError

CLI = [sys.executable, "-m", "vitrine.cli"]


def related(*args, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CLI, "related", *map(str, args)], capture_output=True, text=True,
                          timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def read_csv(path) -> dict[str, list[tuple[str, float]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    lists: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for row in rows:
        found = lists[row["product_id"]]
        assert int(row["rank"]) == len(found) + 1  # ranks 1..k in order
        found.append((row["similar_id"], float(row["score"])))
    return lists


def test_every_products_similar_list_is_written_as_similar_finds_it(small_store, tmp_path):
    from vitrine.store import open_store

    out = tmp_path / "related.csv"
    done = json.loads(related("--store", small_store, "--out", out, "--k", 4, "--json").stdout)
    store = open_store(small_store)
    n = store.count()
    assert done["products"] == n and done["pairs"] == 4 * n and done["k"] == 4
    assert out.read_text(encoding="utf-8").splitlines()[0] == \
        "product_id,rank,similar_id,score"
    lists = read_csv(out)
    assert len(lists) == n
    for pid, found in lists.items():
        expected = store.search(store.vector(pid), 4, exclude=pid)
        assert [s for s, _ in found] == [m.product.product_id for m in expected], pid
        assert [score for _, score in found] == pytest.approx(
            [m.score for m in expected], abs=1e-4)
        assert pid not in {s for s, _ in found}
    assert not list(tmp_path.glob(".*.tmp"))  # the part written is gone

    same = tmp_path / "same.jsonl"
    related("--store", small_store, "--out", same, "--same-category", "-k", 3)
    category = {p.product_id: p.category for p in store.list_products(limit=1000)}
    lines = [json.loads(line) for line in same.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == n
    for line in lines:
        pid = line["product_id"]
        ids = [s["product_id"] for s in line["similar"]]
        assert len(ids) == 3 and {category[s] for s in ids} == {category[pid]}
        expected = store.search(store.vector(pid), 3, category=category[pid], exclude=pid)
        assert ids == [m.product.product_id for m in expected]
    store.close()


def test_bad_output_files_are_refused_before_any_work_and_a_failed_run_keeps_the_old(
        small_store, small_catalog, tmp_path, monkeypatch, cli_here):
    def related_here(*args):  # (through the real entry point, in this process: no
        # interpreter to start for each refusal; the pipe's stays a process, which a hang
        # there fails by its time limit)
        return cli_here("related", *args, check=False)

    out = tmp_path / "related.csv"
    out.write_text("the file of last night\n")
    for target, says in ((tmp_path, "is a folder"), (tmp_path / "r.txt", "use a file ending"),
                         (tmp_path / "no" / "r.csv", "does not exist")):
        proc = related_here("--store", small_store, "--out", target)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith("error: ") and says in proc.stderr
    proc = related_here("--store", tmp_path / "nostore", "--out", out)
    assert proc.returncode == 2 and "no Vitrine store" in proc.stderr
    # a named pipe, or a device through a link: the list took its name (as root, a link to
    # /dev/full replaced the device with a plain file), and the run said it was written
    pipes = tmp_path.parent / f"{tmp_path.name}-pipes"
    pipes.mkdir()
    os.mkfifo(pipes / "fifo.csv")
    (pipes / "null.jsonl").symlink_to(os.devnull)
    for target in (pipes / "fifo.csv", pipes / "null.jsonl"):
        proc = related("--store", small_store, "--out", target, check=False)
        assert proc.returncode == 2 and "is not a regular file" in proc.stderr, proc.stderr
    assert (pipes / "fifo.csv").is_fifo() and Path(os.devnull).is_char_device()
    assert sorted(p.name for p in pipes.iterdir()) == ["fifo.csv", "null.jsonl"]
    # the catalogue's own product table (any case): replaced, the shop's names and prices
    # were lost and the next index refused the catalogue
    table = small_catalog / "products.csv"
    before = table.read_bytes()
    for target in (table, small_catalog / "PRODUCTS.csv", small_catalog / "produtos.csv"):
        proc = related_here("--store", small_store, "--out", target)
        assert proc.returncode == 2 and "is a product table of the store's catalogue" in \
            proc.stderr, proc.stderr
    assert table.read_bytes() == before and not (small_catalog / "produtos.csv").exists()
    assert out.read_text() == "the file of last night\n"

    from vitrine import related as module
    from vitrine.store import open_store

    store = open_store(small_store)
    real = store.search_many
    calls = []

    def failing(*args, **kw):  # the second page fails: the disk, a store gone...
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(*args, **kw)

    monkeypatch.setattr(module, "BATCH", 10)
    monkeypatch.setattr(store, "search_many", failing)
    with pytest.raises(VitrineError, match="could not write .*No space left on device"):
        module.write_related(store, out, 5, show_progress=False)
    store.close()
    assert out.read_text() == "the file of last night\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["related.csv"]


def test_a_long_name_a_link_and_products_without_a_category(small_catalog, embedder,
                                                            settings, tmp_path):
    """A long --out name (the part file's `.NAME.PID.tmp` went over the 255 bytes a name has:
    a traceback); --out a link to the published file (the link was replaced by a file and
    the published one kept the old list); and a product without a category, which with
    --same-category gets them from every category, as its product page and `similar
    --same-category` do (it got only the few others without one)."""
    import shutil

    from vitrine.indexer import index_catalog
    from vitrine.store import open_store

    catalog = tmp_path / "catalog"
    for folder in ("relogio_feminino", "x_bolsa_feminina"):
        shutil.copytree(small_catalog / folder, catalog / folder)
    for photo in sorted((small_catalog / "x_tenis_masculino").glob("*.jpg"))[:3]:
        shutil.copyfile(photo, catalog / f"solta-{photo.name}")  # no category folder
    store = open_store(tmp_path / "store", create=True)
    index_catalog(catalog, store, embedder, show_progress=False)
    store.close()

    long_out = tmp_path / ("r" * 250 + ".csv")
    related("--store", tmp_path / "store", "--out", long_out)
    assert len(read_csv(long_out)) == 15

    (tmp_path / "site").mkdir()
    published = tmp_path / "site" / "related.jsonl"
    published.write_text("last night's list\n")
    link = tmp_path / "related.jsonl"
    link.symlink_to(published)
    published.chmod(0o640)  # as the shop published it
    related("--store", tmp_path / "store", "--out", link, "--same-category", "-k", 5)
    assert link.is_symlink() and link.resolve() == published
    assert published.stat().st_mode & 0o777 == 0o640
    lines = {json.loads(x)["product_id"]: [s["product_id"] for s in json.loads(x)["similar"]]
             for x in published.read_text(encoding="utf-8").splitlines()}
    loose = {pid for pid in lines if pid.startswith("solta-")}
    assert len(loose) == 3
    from vitrine.recommend import Recommender

    db = open_store(tmp_path / "store")
    try:  # five, from the categories too (not only the other two), as `similar` gives them
        rec = Recommender(db, settings)
        for pid in loose:
            similar = [m.product.product_id
                       for m in rec.similar(pid, 5, same_category=True)[1]]
            assert lines[pid] == similar and len(similar) == 5, (lines[pid], similar)
    finally:
        db.close()
    assert all(len(lines[pid]) == 5 and not set(lines[pid]) & loose
               for pid in lines if pid not in loose)
    assert not [p for p in tmp_path.rglob(".vitrine-related-*")]
    loop = tmp_path / "loop.csv"
    loop.symlink_to(tmp_path / "loop2.csv")
    (tmp_path / "loop2.csv").symlink_to(loop)
    proc = related("--store", tmp_path / "store", "--out", loop, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --out ")
    assert "loop of links" in proc.stderr and proc.stderr.count("\n") == 1


def test_a_killed_runs_part_file_is_removed_by_the_next_run(small_store, tmp_path):
    """SIGKILL (or the out-of-memory killer) leaves the hidden part file; the next run beside
    it removes it once its process is gone and it has not grown for a while, and never the
    part file of a run still going (its process alive, or written to lately)."""
    import os
    import time

    from vitrine.related import PART_PREFIX, STALE_PART_S

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(gone.stdout)
    old = time.time() - STALE_PART_S - 60
    killed = tmp_path / f"{PART_PREFIX}{dead_pid}-0badc0de.tmp"
    killed.write_text("half a list")
    os.utime(killed, (old, old))
    recent = tmp_path / f"{PART_PREFIX}{dead_pid}-00000001.tmp"  # another machine's, say
    recent.write_text("being written")
    running = tmp_path / f"{PART_PREFIX}{os.getpid()}-00000002.tmp"  # a live process's
    running.write_text("being written")
    os.utime(running, (old, old))
    odd = tmp_path / f"{PART_PREFIX}99999999999999999999-x.tmp"  # not a name it gives
    odd.write_text("someone else's")
    os.utime(odd, (old, old))
    related("--store", small_store, "--out", tmp_path / "related.csv")
    assert not killed.exists() and recent.exists() and running.exists() and odd.exists()


def test_a_split_folders_product_table_is_not_replaced(small_catalog, embedder, tmp_path):
    """helper-159: `related --out train/products.csv` replaced a split catalogue's table of
    its training photos (names and prices lost; the next index refused the catalogue); a
    table that is a link to a file of another name, too."""
    import shutil

    from vitrine.indexer import index_catalog
    from vitrine.related import write_related
    from vitrine.store import open_store

    catalogue = tmp_path / "split"
    photos = sorted(p for p in small_catalog.rglob("*.jpg"))[:12]
    tables = {}
    for i, photo in enumerate(photos):
        part = ("train", "val", "test")[i % 3]
        (catalogue / part / photo.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photo, catalogue / part / photo.parent.name / photo.name)
        tables.setdefault(part, ["image,name"]).append(f"{photo.parent.name}/{photo.name},"
                                                       f"Product {i}")
    for part, lines in tables.items():
        (catalogue / part / "products.csv").write_text("\n".join(lines) + "\n")
    (catalogue / "tables").mkdir()  # (a folder without photos: the catalogue stays split)
    (catalogue / "val" / "products.csv").rename(catalogue / "tables" / "val.csv")
    (catalogue / "val" / "products.csv").symlink_to(catalogue / "tables" / "val.csv")
    before = {p: p.read_bytes() for p in catalogue.rglob("*.csv")}
    store = open_store(tmp_path / "store", create=True)
    try:
        assert index_catalog(catalogue, store, embedder, show_progress=False).indexed == 12
        for target in (catalogue / "train" / "products.csv", catalogue / "test" / "PRODUTOS.csv",
                       catalogue / "tables" / "val.csv", catalogue / "products.csv"):
            with pytest.raises(VitrineError, match="is a product table of the store's"):
                write_related(store, target, 3, show_progress=False)
        assert {p: p.read_bytes() for p in catalogue.rglob("*.csv")} == before
        assert not (catalogue / "test" / "PRODUTOS.csv").exists()
        # beside the tables, under another name: written
        write_related(store, catalogue / "train" / "related.csv", 3, show_progress=False)
        assert len(read_csv(catalogue / "train" / "related.csv")) == 12
        (catalogue / "train" / "related.csv").unlink()
        # a folder of photos put beside the splits (the catalogue is not split as it stands,
        # until it is moved: its tables are read again then), helper-161
        (catalogue / "extra").mkdir()
        shutil.copyfile(photos[0], catalogue / "extra" / photos[0].name)
        with pytest.raises(VitrineError, match="is a product table of the store's"):
            write_related(store, catalogue / "train" / "products.csv", 3, show_progress=False)
        shutil.rmtree(catalogue / "extra")
    finally:
        store.close()
    # indexed through a link to the release (`current`), which now names the next one
    release = tmp_path / "current"
    release.symlink_to(catalogue)
    store = open_store(tmp_path / "linked", create=True)
    try:
        index_catalog(release, store, embedder, show_progress=False)
        shutil.copytree(catalogue, tmp_path / "next", symlinks=True)
        release.unlink()
        release.symlink_to(tmp_path / "next")
        for target in (release / "train" / "products.csv", release / "products.csv"):
            with pytest.raises(VitrineError, match="is a product table of the store's"):
                write_related(store, target, 3, show_progress=False)
    finally:
        store.close()
    assert {p: p.read_bytes() for p in catalogue.rglob("*.csv")} == before


def test_a_link_to_a_file_that_is_no_list_is_refused(small_store, small_catalog, tmp_path,
                                                     cli_here):
    """--out a link to the store's database (or a product's photo): the link was followed
    and the CSV took the database's place (`vitrine info` then: "not a readable Vitrine
    store"), or a photo's. The file a link names must be a list of the format asked for."""
    import shutil

    from vitrine.store import open_store

    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    database = (store / "vitrine.sqlite").read_bytes()
    photo = next(small_catalog.rglob("*.jpg"))
    shot = photo.read_bytes()
    for name, target in (("related.csv", store / "vitrine.sqlite"),
                         ("related.jsonl", photo), ("other.csv", tmp_path / "list.jsonl")):
        link = tmp_path / name
        link.symlink_to(target)
        proc = cli_here("related", "--store", store, "--out", link, check=False)  # (the
        # entry point, in this process)
        assert proc.returncode == 2 and proc.stderr.startswith(f"error: --out {link} links")
    assert (store / "vitrine.sqlite").read_bytes() == database and photo.read_bytes() == shot
    assert not (tmp_path / "list.jsonl").exists()
    db = open_store(store)
    try:
        assert db.count() > 0
    finally:
        db.close()


@pytest.mark.parametrize("counted", [False, True])
def test_the_products_of_one_photo_are_searched_once_and_get_the_lists_similar_gives(
        tmp_path, monkeypatch, counted):
    """`related` searched each of a placeholder photo's products on its own, though their
    lists are one list (the photo's products are copies of one another, each left out of
    every one's list): 17,000 products of one photo, each a scan of every product, took 73 s
    of a flat store of 17,114 (benchmarks/related_export.py --placeholders: 37.6 s before,
    0.69 s after, the same file). The photo is searched once a page and category; each
    product's list is still the one `similar` gives it, and two products of the same pixels
    in two files (not grouped as copies) still list each other. ``counted``: the photo's
    products counted as `index` counts them, a placeholder left out of every other list."""
    import numpy as np

    from vitrine.catalog import Product
    from vitrine.config import Settings
    from vitrine.dedupe_store import encode
    from vitrine.manifest import ModelManifest
    from vitrine.recommend import Recommender
    from vitrine.related import write_related
    from vitrine.store.base import Record
    from vitrine.store.embedded import EmbeddedStore

    placeholders, others, dim = 300, 42, 16
    rng = np.random.default_rng(3)
    vecs = rng.normal(size=(placeholders + others, dim)).astype(np.float32)
    vecs[:placeholders] = vecs[0]  # p000…p299: one photo file
    vecs[-1] = vecs[-2]  # p340, p341: the same pixels saved as two files
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    store = EmbeddedStore(tmp_path / "store", create=True)
    store.set_manifest(ModelManifest("test", "0" * 64, {}, dim))
    store.lock_for_writing()
    store.upsert([Record(Product(f"p{i:03d}", Path(f"/photos/p{i}.jpg"), category="cd"[i % 2]),
                         "a" * 64 if i < placeholders else f"{i:064x}", "0" * 16, b"\0" * 768,
                         v) for i, v in enumerate(vecs)])
    store.flush()
    if counted:
        store.set_duplicate_cache(encode("key", np.zeros(0, np.uint64), np.zeros((0, 2), int),
                                         [], (np.array([b"a" * 64], "S64"),
                                              np.array([placeholders]))))
    searched: list[int] = []
    search_many = store.search_many

    def count_rows(vectors, k, **kw):
        searched.append(len(vectors))
        return search_many(vectors, k, **kw)

    monkeypatch.setattr(store, "search_many", count_rows)
    rec = Recommender(store, Settings())
    try:
        for same in (False, True):
            out = tmp_path / f"related_{same}.jsonl"
            searched.clear()
            write_related(store, out, 5, same_category=same, show_progress=False)
            # each other product at most twice (its search, and again without its copies),
            # the photo at most twice in each of its two categories: not 300 times
            assert sum(searched) <= 2 * others + 2 * 2, (same, sum(searched))
            rows = {r["product_id"]: r["similar"]
                    for r in map(json.loads, out.read_text().splitlines())}
            assert len(rows) == placeholders + others
            for pid, found in rows.items():
                _, expected = rec.similar(pid, 5, same_category=same)
                assert [m["product_id"] for m in found] == \
                    [m.product.product_id for m in expected], (pid, same)
                assert [m["score"] for m in found] == pytest.approx(
                    [m.score for m in expected], abs=1e-4)
                assert len(found) == 5
                if int(pid[1:]) < placeholders or counted:
                    assert all(int(m["product_id"][1:]) >= placeholders for m in found)
            if not same:  # (p340 and p341 are in two categories)
                assert rows["p340"][0]["product_id"] == "p341"
                assert rows["p341"][0]["product_id"] == "p340"
    finally:
        store.close()
