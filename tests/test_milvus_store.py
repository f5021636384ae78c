"""The Milvus store on Milvus Lite: CRUD, filters, parity with the embedded store, manifest
guard, and the command line with a milvus-lite:// URI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import IN_CI
from test_store import (
    DIM,
    MANIFEST,
    READER_NAMES,
    check_an_empty_category_lists_the_products_without_one,
    check_name_search_ignores_case_and_accents,
    check_pages_list_names_as_a_reader_sorts_them,
    check_shared_photo_counts_are_those_of_every_products_sha256,
    record,
    unit,
)

from vitrine.catalog import Product
from vitrine.embed import ModelManifest
from vitrine.errors import StoreError
from vitrine.migrate import migrate_store
from vitrine.store import DEFAULT_COLLECTION, milvus_server, open_store
from vitrine.store.base import Record

try:
    import milvus_lite  # noqa: F401
    import pymilvus  # noqa: F401
except ImportError:  # pragma: no cover - depends on the extra
    if IN_CI:
        raise
    pytest.skip("the milvus extra is not installed", allow_module_level=True)


@pytest.fixture
def mstore(tmp_path):
    store = open_store(f"milvus-lite://{tmp_path}/m.db", create=True)
    store.set_manifest(MANIFEST)
    store.upsert([record("a", unit(1, 0)), record("b", unit(1, 0.2)),
                  record("c", unit(0, 1), category="d", price=9.5, attributes={"cor": "azul"}),
                  record("e", unit(1, 1), category="d")])
    yield store
    store.close()


def test_crud_and_filters(mstore):
    assert mstore.count() == 4 and mstore.categories() == {"c": 2, "d": 2}
    hits = mstore.search(unit(1, 0), 4)
    assert [m.product.product_id for m in hits] == ["a", "b", "e", "c"]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [m.product.product_id for m in mstore.search(unit(1, 0), 5, category="d")] == [
        "e", "c"]
    assert [m.product.product_id for m in mstore.search(unit(1, 0), 2, exclude="a")] == [
        "b", "e"]
    c = mstore.get("c")
    assert (c.price, c.attributes, c.category, c.name) == (9.5, {"cor": "azul"}, "d", "C")
    assert mstore.get("a").price is None and mstore.get("zzz") is None
    assert np.allclose(mstore.vector("c"), unit(0, 1))
    mstore.upsert([record("a", unit(0, 1), category="d")])
    assert mstore.count() == 4
    assert {m.product.product_id for m in mstore.search(unit(0, 1), 2)} == {"a", "c"}
    mstore.update_metadata([Product("b", mstore.get("b").image, category="new", name="Novo")])
    assert mstore.get("b").category == "new" and np.allclose(mstore.vector("b"), unit(1, 0.2))
    assert mstore.delete(["a", "nope"]) == 1 and mstore.get("a") is None
    assert [p.product_id for p in mstore.list_products(query="C")] == ["c"]
    assert [p.product_id for p in mstore.list_products(query="ov")] == ["b"]  # inside "Novo"
    assert [p.product_id for p in mstore.list_products(category="d")] == ["c", "e"]
    assert [p.product_id for p in mstore.list_products(limit=1, offset=1)] == ["e"]
    assert mstore.list_products(limit=1) == [mstore.get("c")]  # whole rows for the page
    assert mstore.names_photo("/photos/c.jpg") and not mstore.names_photo("/photos/a.jpg")
    assert mstore.has_category("d") and mstore.has_category("new")
    assert not mstore.has_category("c") and not mstore.has_category('d" or category != "')
    assert mstore.photo_facts()["c"] == ("/photos/c.jpg", "sha-c", "0" * 16, b"\0" * 768)
    assert set(mstore.photo_facts()) == {"b", "c", "e"}
    mstore.upsert([Record(record("f", unit(0, 1)).product, "sha-c", "0" * 16, b"\0" * 768,
                          unit(0, 1))])  # (c's photo file under another name)
    assert (mstore.count_photo("sha-c"), mstore.count_photo("sha-a")) == (2, 0)


def test_manifest_guard_and_missing_store(mstore, tmp_path):
    with pytest.raises(StoreError, match="no Vitrine store"):
        open_store(f"milvus-lite://{tmp_path}/none.db")
    with pytest.raises(StoreError, match="ABSOLUTE"):
        open_store("milvus-lite://relative.db", create=True)
    for address in ("milvus://host:abc", "milvus://host:99999", "milvus://[::1",
                    "milvus://host:0"):
        with pytest.raises(StoreError, match="is not a Milvus address .*; use milvus://HOST"):
            open_store(address)  # a ValueError traceback before; port 0 became 19530
    assert milvus_server("milvus://[::1]:19531/shop") == ("http://[::1]:19531", "shop")
    assert milvus_server("milvus://Milvus.local") == ("http://milvus.local:19530",
                                                      DEFAULT_COLLECTION)
    other = open_store(f"milvus-lite://{tmp_path}/other.db", create=True)
    other.set_manifest(ModelManifest("x", "1" * 64, {}, 8))
    with pytest.raises(StoreError, match="different model"):
        migrate_store(mstore, other, show_progress=False)
    other.close()


def test_the_duplicate_cache_spans_rows_and_a_torn_one_is_no_cache(mstore):
    """Milvus keeps the duplicate pairs' bytes in meta rows of 64 KiB: a cache of several rows
    reads back whole, a shorter one leaves no stale row, and one whose rows another writer
    changed meanwhile (their sha256 no longer agrees) reads as none."""
    assert mstore.duplicate_cache() is None
    big = np.random.default_rng(0).bytes(200_000)  # 267 kB of base64: 5 rows
    mstore.set_duplicate_cache(big)
    assert mstore.duplicate_cache() == big
    rows = mstore.client.query(mstore.meta_collection, filter='key like "duplicates%"',
                               output_fields=["key"])
    assert len(rows) == 6
    mstore.set_duplicate_cache(b"small")
    assert mstore.duplicate_cache() == b"small"
    rows = mstore.client.query(mstore.meta_collection, filter='key like "duplicates%"',
                               output_fields=["key"])
    assert sorted(r["key"] for r in rows) == ["duplicates", "duplicates/0"]
    mstore._set_meta("duplicates/0", "b3RoZXI=")  # "other": another writer's row
    assert mstore.duplicate_cache() is None
    for head in ("not json", "{}", "[1]"):  # a damaged header: no cache, and writable again
        mstore._set_meta("duplicates", head)
        assert mstore.duplicate_cache() is None
        mstore.set_duplicate_cache(b"again")
        assert mstore.duplicate_cache() == b"again"


def test_parity_with_embedded_store(small_store, embedder, tmp_path, demo_catalog,
                                    monkeypatch):
    from vitrine.store import milvus_store

    embedded = open_store(small_store)
    milvus = open_store(f"milvus-lite://{tmp_path}/copy.db", create=True)
    assert migrate_store(embedded, milvus, show_progress=False).copied == embedded.count()
    assert milvus.manifest() == embedded.manifest()
    queries = sorted(demo_catalog.glob("relogio_feminino/*.jpg"))[-3:] + sorted(
        demo_catalog.glob("x_tenis_masculino/*.jpg"))[-3:]
    for path in queries:
        vec = embedder.embed_image(path)
        a = embedded.search(vec, 5)
        b = milvus.search(vec, 5)
        assert [m.product.product_id for m in a] == [m.product.product_id for m in b]
        assert np.allclose([m.score for m in a], [m.score for m in b], atol=1e-4)
        fa = embedded.search(vec, 3, category="relogio_masculino")
        fb = milvus.search(vec, 3, category="relogio_masculino")
        assert [m.product.product_id for m in fa] == [m.product.product_id for m in fb]
    # `vitrine related`: a batch of searches, each without its own product, in a category
    ids, vectors = embedded.all_vectors()
    for category in (None, "relogio_masculino"):
        a = embedded.search_many(vectors[:20], 4, category=category, exclude=ids[:20])
        b = milvus.search_many(vectors[:20], 4, category=category, exclude=ids[:20])
        assert [[m.product.product_id for m in r] for r in a] == \
            [[m.product.product_id for m in r] for r in b]
        assert all(len(r) == 4 and pid not in {m.product.product_id for m in r}
                   for pid, r in zip(ids, b, strict=False))
        # asked in requests of a few queries each (bounded hits, each a whole product)
        requests: list[int] = []
        with monkeypatch.context() as m:
            m.setattr(milvus_store, "SEARCH_HITS", 12)
            real_search = milvus.client.search
            m.setattr(milvus.client, "search", lambda collection, data, asked=requests,
                      real=real_search, **k: (asked.append(len(data)),
                                              real(collection, data, **k))[1])
            c = milvus.search_many(vectors[:20], 4, category=category, exclude=ids[:20])
        assert requests == [2] * 10  # (12 hits: 2 queries of 4 + 1 each)
        assert [[m.product.product_id for m in r] for r in c] == \
            [[m.product.product_id for m in r] for r in b]
    back = open_store(tmp_path / "back", create=True)  # and back, read page by page
    assert migrate_store(milvus, back, show_progress=False).copied == embedded.count()
    order = dict(zip(*back.all_vectors(), strict=True))
    assert np.array_equal(np.stack([order[pid] for pid in ids]), vectors)
    assert back.list_products(limit=2000) == embedded.list_products(limit=2000)
    back.close()
    embedded.close()
    milvus.close()


def test_cli_index_and_search_on_milvus_lite(small_catalog, weights_path, tmp_path):
    uri = f"milvus-lite://{tmp_path}/cli.db"
    env = {**os.environ, "VITRINE_WEIGHTS": str(weights_path)}

    def cli(*args):
        proc = subprocess.run([sys.executable, "-m", "vitrine.cli", *map(str, args)],
                              capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr
        # each paged read warned that Milvus Lite keeps no server timestamp
        assert "WARNING" not in proc.stderr, proc.stderr
        return proc.stdout

    runs = [json.loads(cli("index", small_catalog, "--store", uri, "--shard", shard, "--json"))
            for shard in ("0/2", "1/2")]  # two writers, each its own share of the catalogue
    total = len((small_catalog / "products.csv").read_text().splitlines()) - 1
    info = json.loads(cli("info", "--store", uri, "--json"))
    assert info["products"] == total
    # Milvus searches with its own exact index, whatever the embedded store's settings say
    assert info["index"] == {"kind": "flat", "exact": True, "storage": "fp32", "by": "milvus"}
    again = json.loads(cli("index", small_catalog, "--store", uri, "--json"))
    assert again["indexed"] == 0 and again["unchanged"] == total
    # the duplicate search: each shard's products compared with the store once, then none
    assert [r["duplicates_compared"] for r in runs] == [r["indexed"] for r in runs]
    assert again["duplicates_compared"] == 0 and again["duplicates"] == runs[1]["duplicates"]
    query = sorted((small_catalog / "x_bolsa_feminina").glob("*.jpg"))[0]
    result = json.loads(cli("search", "--store", uri, "--k", "3", "--json", query))
    assert result["results"][0]["image"].endswith(query.name)


def test_scores_never_exceed_one(tmp_path):
    """float32 sums give a photo 1.0000002 against itself on Milvus; a cosine is at most 1."""
    store = open_store(f"milvus-lite://{tmp_path}/s.db", create=True)
    store.set_manifest(MANIFEST)
    vectors = np.random.default_rng(0).standard_normal((100, MANIFEST.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store.upsert([record(f"p{i}", v) for i, v in enumerate(vectors)])
    top = [store.search(v, 1)[0] for v in vectors]
    store.close()
    assert [m.product.product_id for m in top] == [f"p{i}" for i in range(100)]
    assert max(m.score for m in top) == 1.0 and min(m.score for m in top) > 0.9999


def test_name_search_ignores_case_and_accents(mstore):
    """As on the embedded store: Milvus' like can fold neither, so the store folds."""
    check_name_search_ignores_case_and_accents(mstore)


def test_shared_photo_counts_are_those_of_every_products_sha256(mstore, monkeypatch):
    """As on the embedded store (a GROUP BY there), read a page at a time."""
    from vitrine.store import milvus_store

    monkeypatch.setattr(milvus_store, "PAGE", 3)  # (pages of 3 of the 11 products)
    check_shared_photo_counts_are_those_of_every_products_sha256(mstore)


def test_pages_list_names_as_a_reader_sorts_them(mstore, tmp_path):
    """As on the embedded store (its ORDER BY search_key): the order Milvus Lite's pages are
    sorted in here, from the order read and from the order kept, and the same as the
    embedded store's for the same products."""
    check_pages_list_names_as_a_reader_sorts_them(mstore)
    embedded = _embedded_as_mstore(tmp_path)
    try:
        odd = {"t1": "Tab\tname", "t0": "Tab", "s1": "Straße", "s0": "strasse", "n0": "",
               "o2": "o\u0301culos", "o3": "ÓCULOS", "d9": "Bolsa 10", "d2": "Bolsa 9"}
        made = [record(pid, unit(1, 0.5), category="acessórios", name=name)
                for pid, name in {**READER_NAMES, **odd}.items()]
        for store in (embedded, mstore):
            store.upsert(made)
        _same_pages(embedded, mstore, ({}, {"category": "acessórios"}, {"query": "o"}),
                    ((100, 0), (2, 2), (3, 10)))
    finally:
        embedded.close()


def test_an_empty_category_lists_the_products_without_one(mstore):
    """As on the embedded store: "" is the products without a category, not every one."""
    check_an_empty_category_lists_the_products_without_one(mstore)


def test_an_id_in_a_mix_of_unicode_forms_is_found_by_either_form(mstore):
    """As on the embedded store: an id stored part composed, part decomposed is found by
    both whole forms; a third spelling of two stored ids is refused, not guessed."""
    import unicodedata

    from vitrine.recommend import ProductNotFound, stored_product

    mixed = "Café S" + "a\u0303o"
    composed, decomposed = (unicodedata.normalize(f, mixed) for f in ("NFC", "NFD"))
    mstore.upsert([record(mixed, unit(1, 0.5))])
    for typed in (composed, decomposed):
        assert stored_product(mstore, typed).product_id == mixed
    mstore.upsert([record(composed, unit(1, 0.6))])
    assert stored_product(mstore, composed).product_id == composed
    with pytest.raises(ProductNotFound, match="2 stored ids differ"):
        stored_product(mstore, decomposed)

def _embedded_as_mstore(tmp_path):
    """An embedded store holding what the ``mstore`` fixture holds."""
    embedded = open_store(tmp_path / "e", create=True)
    embedded.set_manifest(MANIFEST)
    embedded.upsert([record("a", unit(1, 0)), record("b", unit(1, 0.2)),
                     record("c", unit(0, 1), category="d"), record("e", unit(1, 1), category="d")])
    return embedded


def _same_pages(embedded, mstore, asks, pages) -> None:
    """Each of ``asks`` (list_products filters) at each (limit, offset) of ``pages`` lists
    the same products in the same order on both stores."""
    from vitrine.store.search_key import listing_order

    for ask in asks:
        for limit, offset in pages:
            want = [p.product_id for p in embedded.list_products(
                limit=limit, offset=offset, **ask)]
            got = [p.product_id for p in mstore.list_products(limit=limit, offset=offset, **ask)]
            assert got == want, (ask, limit, offset)
        # and after any product's place (an API cursor: the last product of the page
        # before, of the filter's category or, for a cursor sent with another filter, not)
        every = embedded.list_products(limit=10_000, **ask)
        for before in embedded.list_products(limit=10_000)[::7]:  # (a sample of places)
            after = listing_order(before.category, before.name, before.product_id)
            want = [p.product_id for p in every
                    if listing_order(p.category, p.name, p.product_id) > after][:3]
            for store in (embedded, mstore):
                got = [p.product_id for p in store.list_products(limit=3, after=after, **ask)]
                assert got == want, (store, ask, before)


ODD_IDS = ['a"b', "a\\b", "it's", "ç/ã", 'a\\"b', '"', "calçados/sandália 1.jpg"]


def test_ids_with_quotes_backslashes_and_accents(mstore, monkeypatch):
    """Ids the API and catalogues accept work on Milvus too: looked up, listed page by page
    (one row per page here, so every odd id becomes the paging cursor), excluded from their
    own results and deleted. Each of them used to fail, or hang Milvus Lite's parser."""
    from vitrine.store import milvus_store

    monkeypatch.setattr(milvus_store, "PAGE", 1)
    mstore.upsert([record(pid, unit(1, 0.1 * i), name=f"Sandália {i}")
                   for i, pid in enumerate(ODD_IDS)])
    for pid in ODD_IDS:
        assert mstore.get(pid).product_id == pid
        assert mstore.vector(pid) is not None
    assert set(mstore.fingerprints()) == {"a", "b", "c", "e", *ODD_IDS}
    pages, real_iterator = [], mstore.client.query_iterator
    monkeypatch.setattr(mstore.client, "query_iterator", lambda *a, **k: (
        pages.append(k["batch_size"]), real_iterator(*a, **k))[1])
    ids, vectors = mstore.all_vectors()  # read a row at a time: each id the next's cursor
    assert sorted(ids) == sorted(["a", "b", "c", "e", *ODD_IDS]) and len(vectors) == 11
    assert pages == [1]
    hits = mstore.search(unit(1, 0), 20, exclude='a\\"b')
    assert len(hits) == 10 and 'a\\"b' not in {m.product.product_id for m in hits}
    named = [p.product_id for p in mstore.list_products(query="SANDÁLIA", limit=100)]
    assert sorted(named) == sorted(ODD_IDS)  # any case, as the embedded store
    mstore.update_metadata([Product("it's", mstore.get("it's").image, category="x")])
    assert mstore.get("it's").category == "x"
    asked, deleted = [], []
    real_query, real_delete = mstore.client.query, mstore.client.delete
    monkeypatch.setattr(mstore.client, "query", lambda *a, **k: (
        asked.append(k.get("filter")), real_query(*a, **k))[1])
    monkeypatch.setattr(mstore.client, "delete", lambda *a, **k: (
        deleted.append(k.get("filter")), real_delete(*a, **k))[1])
    assert mstore.delete(ODD_IDS) == len(ODD_IDS) and mstore.count() == 4
    looked_up = [f for f in asked if f and f.startswith("product_id in")]
    assert len(looked_up) == len(deleted) == len(ODD_IDS)  # a page of one id each
    assert mstore.get('a"b') is None and mstore.get("nope\\\"") is None


HOLDER = """
import sys
import threading
from vitrine.store import DEFAULT_COLLECTION, milvus_server, open_store
from vitrine.store.base import Record
store = open_store(sys.argv[1], create=True)
store.set_catalog_folder("/catalogue")
print("ready", flush=True)
sys.stdin.read()  # holds the file until the test closes this pipe
store.close()
"""


def test_file_open_in_another_process_is_one_clear_error(tmp_path, caplog):
    """Milvus Lite lets one process open a file: a second one (`vitrine info` while
    `vitrine serve` runs) gets one sentence naming the file, not Milvus Lite's traceback."""
    uri = f"milvus-lite://{tmp_path}/held.db"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, uri], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    timer = threading.Timer(30, holder.kill)  # a hung holder ends the readline below
    timer.start()
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreError, match="is open in another process") as caught:
            open_store(uri)
        assert f"{tmp_path}/held.db" in str(caught.value)
        assert not [r for r in caplog.records if r.name.startswith("milvus_lite")]
        proc = subprocess.run([sys.executable, "-m", "vitrine.cli", "info", "--store", uri],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "is open in another process" in lines[0], proc.stderr
    finally:
        holder.stdin.close()
        try:
            holder.wait(timeout=15)
        except subprocess.TimeoutExpired:
            holder.kill()
        timer.cancel()
    assert holder.returncode == 0  # the holder closed its store as usual
    reopened = open_store(uri)  # and the file, free again, is intact
    assert reopened.catalog_folder() == "/catalogue" and reopened.count() == 0
    reopened.set_catalog_folder(None)  # (migrate: a source that records none leaves none)
    assert reopened.catalog_folder() is None
    reopened.close()


def test_a_closed_milvus_lite_file_is_free_for_other_processes(tmp_path):
    """Closing a Milvus Lite store let go of its file only when the process ended: a program
    (or test) that closed it could not hand it to a `vitrine` command. The file is let go
    when the last store of the process that has it open is closed, not before."""
    uri = f"milvus-lite://{tmp_path}/shared.db"
    first = open_store(uri, create=True)
    second = open_store(uri)
    first.set_catalog_folder("/shop")
    first.close()
    assert second.catalog_folder() == "/shop"  # the other store of this process still reads
    second.close()
    second.close()  # (twice: let go once)
    proc = subprocess.run([sys.executable, "-m", "vitrine.cli", "info", "--store", uri,
                           "--json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["catalog_folder"] == "/shop"
    (tmp_path / "empty.db").mkdir()  # Milvus Lite's files, without a store: refused, let go
    with pytest.raises(StoreError, match="no Vitrine store"):
        open_store(f"milvus-lite://{tmp_path}/empty.db")
    from vitrine.store.milvus_support import _LITE_OPEN

    assert _LITE_OPEN == {}


def test_control_characters_in_ids_and_categories_are_filtered_on(mstore, monkeypatch):
    """A filter literal holding U+0001 (a category pasted from a spreadsheet, a probe
    `?category=%01`) was written with JSON's \\u escape, which Milvus's parser refuses: every
    anonymous GET with one was a 500. Each control character now reaches Milvus as itself."""
    from vitrine.store import milvus_store

    monkeypatch.setattr(milvus_store, "WRITE_PAGE", 2)  # several write-back pages below
    written: list[int] = []
    real_upsert = mstore.client.upsert
    odd = {"a\x01b": "Sapato\x01", "tab\tx": "x\ty", "nl\nx": "x\ny", "nul\x00x": "x\x1fy",
           "cr\rx": "x\x0b\x0cy"}
    mstore.upsert([record(pid, unit(0.1 * i, 1), category=cat)
                   for i, (pid, cat) in enumerate(odd.items())])
    for pid, cat in odd.items():
        assert mstore.get(pid).category == cat
        assert [m.product.product_id for m in mstore.search(unit(0, 1), 3, category=cat)] == [
            pid]
        assert [p.product_id for p in mstore.list_products(category=cat)] == [pid]
    assert mstore.search(unit(0, 1), 3, category="\x02") == []
    assert mstore.list_products(category="\x02") == [] and mstore.get("\x02") is None
    with monkeypatch.context() as m:
        m.setattr(mstore.client, "upsert", lambda collection, rows, **k: (
            written.append(len(rows)), real_upsert(collection, rows, **k))[1])
        mstore.update_metadata([Product(pid, mstore.get(pid).image, category="novo",
                                        name=pid) for pid in odd])
    assert written == [2, 2, 1]  # written back two products at a time
    assert sorted(p.product_id for p in mstore.list_products(category="novo")) == sorted(odd)
    assert all(np.allclose(mstore.vector(pid), unit(0.1 * i, 1)) for i, pid in enumerate(odd))
    assert mstore.delete(list(odd)) == len(odd) and mstore.count() == 4


def test_fields_longer_than_milvus_holds_are_refused_in_one_sentence(mstore, tmp_path):
    """A description of 70,000 characters in a product table crashed `vitrine index` with
    MilvusException, losing the batch it was in, on every rerun. The store now says which
    field is too long, counted as the store counts: characters on Milvus Lite, UTF-8 bytes
    on a server; the embedded store (no such limits) holds it."""
    long = Product("long", tmp_path / "x.jpg", category="é" * 513, name="ok")
    assert mstore.too_long(long) == ("its category is 513 characters long, more than a Milvus "
                                     "store holds (512)")
    accented = Product("ok", tmp_path / "x.jpg", category="é" * 300)
    assert mstore.too_long(accented) is None  # 600 bytes, which Milvus Lite holds
    assert "description is 70,000 characters" in mstore.too_long(
        Product("d", tmp_path / "x.jpg", description="d" * 70_000))
    compact = {"x": "a" * (65_536 - len('{"x":""}'))}  # as pymilvus sends it: no spaces
    assert mstore.too_long(Product("a", tmp_path / "x.jpg", attributes=compact)) is None
    compact["x"] += "a"
    assert "attributes" in mstore.too_long(Product("a", tmp_path / "x.jpg", attributes=compact))
    with pytest.raises(StoreError, match="product 'long': its category is 513 characters"):
        mstore.upsert([record("long", unit(1, 0), category="é" * 513)])
    assert mstore.get("long") is None and mstore.count() == 4
    mstore._lite = False  # a server counts bytes
    assert mstore.too_long(accented) == ("its category is 600 bytes long, more than a Milvus "
                                         "store holds (512)")
    embedded = open_store(tmp_path / "e", create=True)
    assert embedded.too_long(long) is None
    embedded.close()


def test_migrate_refuses_what_the_target_cannot_hold_before_copying(tmp_path):
    """Two copies that used to go wrong into Milvus: a product with a field too long for it
    (a MilvusException half-way), and API photos kept in the source store's own folder with
    no VITRINE_UPLOAD_DIR for the target (copied silently without them: deleting the old
    store, as the README allows, lost the photos). Both are refused before a write."""
    source = open_store(tmp_path / "src", create=True)
    source.set_manifest(MANIFEST)
    source.set_catalog_folder(str(tmp_path / "catalogue"))
    source.upsert([record("a", unit(1, 0)), record("long", unit(0, 1), description="d" * 70_000)])
    target = open_store(f"milvus-lite://{tmp_path}/t.db", create=True)
    with pytest.raises(StoreError, match=r"1 product\(s\) .* do not fit .*'long': its "
                                         r"description is 70,000 characters.*Nothing was copied"):
        migrate_store(source, target, show_progress=False)
    assert target.count() == 0 and target.manifest() is None
    source.delete(["long"])
    uploads = tmp_path / "src" / "uploads"
    spare = open_store(f"milvus-lite://{tmp_path}/spare.db", create=True)
    done = migrate_store(source, spare, photos_to=uploads, show_progress=False)
    assert done.copied == 1  # an upload folder inside it strands no photo of the API's yet
    spare.close()
    uploads.mkdir()
    (uploads / "f00d.jpg").write_bytes(b"photo")
    added = Product("added", uploads / "f00d.jpg", category="c", name="Added", uploaded=True)
    source.upsert([record("b", unit(1, 1))])
    source.upsert([type(record("x", unit(1, 0)))(added, "f00d", "0" * 16, b"\0" * 768,
                                                 unit(1, 0.5))])
    with pytest.raises(StoreError, match=r"1 product\(s\) added through the API .*"
                                         r"VITRINE_UPLOAD_DIR"):
        migrate_store(source, target, photos_from=uploads, show_progress=False)
    assert target.count() == 0
    # a folder to copy them to inside the source store would go with it all the same
    with pytest.raises(StoreError, match=r"upload folder .*/src/uploads is inside .* the "
                                         r"photos of 1 product\(s\) .*Nothing was copied"):
        migrate_store(source, target, photos_to=uploads, photos_from=uploads,
                      show_progress=False)
    assert target.count() == 0
    photos = tmp_path / "photos"
    photos.mkdir()
    done = migrate_store(source, target, photos_to=photos, photos_from=uploads,
                         show_progress=False)
    assert done.copied == 3 and target.get("added").image == str(photos / "f00d.jpg")
    source.close()
    target.close()


def test_migrate_into_the_same_milvus_store_however_named_is_refused(tmp_path):
    """`migrate` compared the addresses as written: the same Milvus Lite file named with
    `//`, `..` or through a link was copied onto itself (or said it was open elsewhere),
    and a server's address with and without its default port and collection would be."""
    from vitrine.store import store_identity

    store = open_store(f"milvus-lite://{tmp_path}/s.db", create=True)
    store.set_manifest(MANIFEST)
    store.upsert([record("a", unit(1, 0))])
    store.close()
    (tmp_path / "sub").mkdir()
    (tmp_path / "link").symlink_to(tmp_path)
    source = f"milvus-lite://{tmp_path}/s.db"
    for same in (f"milvus-lite://{tmp_path}//s.db", f"milvus-lite://{tmp_path}/sub/../s.db",
                 f"milvus-lite://{tmp_path}/link/s.db"):
        proc = subprocess.run([sys.executable, "-m", "vitrine.cli", "migrate", source, same],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and "are the same store" in proc.stderr, proc.stderr
    assert open_store(source).count() == 1
    assert store_identity("milvus://Milvus.local") == store_identity(
        "milvus://milvus.local:19530/vitrine")
    assert store_identity("milvus://h/a") != store_identity("milvus://h/b")
    assert store_identity("milvus://h:19531") != store_identity("milvus://h")


def test_a_copy_killed_between_the_manifest_and_the_collection_goes_on(tmp_path):
    """A Milvus store whose manifest was written but whose products collection was never
    made (a copy killed between the two): every rerun failed with a traceback ("collection
    'vitrine' does not exist"). The collection is made first now, and a store left so by
    an older Vitrine is written into all the same."""
    uri = f"milvus-lite://{tmp_path}/m.db"
    left = open_store(uri, create=True)
    left._set_meta("manifest", json.dumps(MANIFEST.as_dict(), sort_keys=True))
    left.close()
    source = open_store(tmp_path / "src", create=True)
    source.set_manifest(MANIFEST)
    source.upsert([record("a", unit(1, 0)), record("b", unit(0, 1))])
    target = open_store(uri)
    try:
        assert target.manifest() == MANIFEST
        assert migrate_store(source, target, show_progress=False).copied == 2
        assert [m.product.product_id for m in target.search(unit(1, 0), 1)] == ["a"]
    finally:
        target.close()
        source.close()
    # the order itself: a copy stopped as its manifest is written has its collection made
    fresh = open_store(f"milvus-lite://{tmp_path}/n.db", create=True)

    def killed(key, value):
        raise KeyboardInterrupt

    fresh._set_meta = killed
    with pytest.raises(KeyboardInterrupt):
        fresh.set_manifest(MANIFEST)
    assert fresh._has_products() and fresh.manifest() is None
    fresh.close()


def test_attributes_come_back_in_the_embedded_stores_order(mstore):
    """The embedded store keeps attributes sorted by name; Milvus kept the table's column
    order, so the product page and the JSON changed order after a migrate."""
    mstore.upsert([record("attrs", unit(1, 0), attributes={"zeta": "1", "alpha": "2",
                                                            "Marca": "3"})])
    assert list(mstore.get("attrs").attributes) == ["Marca", "alpha", "zeta"]
    assert list(mstore.list_products(query="attrs")[0].attributes) == ["Marca", "alpha", "zeta"]


def test_a_milvus_lite_path_that_cannot_be_opened_says_why(tmp_path, caplog):
    """A path that is a plain file, or that cannot be made, printed Milvus Lite's traceback
    and then "Open local milvus failed"; it is one sentence with the reason now."""
    (tmp_path / "file.db").write_text("not a store")
    with pytest.raises(StoreError, match=r"file.db is a file, not a Milvus Lite store"):
        open_store(f"milvus-lite://{tmp_path}/file.db")
    with pytest.raises(StoreError, match=r"cannot open the Milvus store .*/proc/vitrine.db "
                                         r"\(No such file or directory\)"):
        open_store("milvus-lite:///proc/vitrine.db", create=True)
    assert not [r for r in caplog.records if r.name.startswith("milvus_lite")]
    for address in ("milvus://host/a/b", "milvus://host/9lives", "milvus://host/" + "x" * 250):
        with pytest.raises(StoreError, match="the collection name .* must start with a letter"):
            milvus_server(address)
    assert milvus_server("milvus://host/_shop_2") == ("http://host:19530", "_shop_2")


def test_index_skips_a_product_too_long_for_milvus_and_stores_the_rest(demo_catalog, embedder,
                                                                        tmp_path):
    """One product's name of 5,000 characters (over Milvus's 4,096 bytes) made every run of
    `vitrine index` crash on its batch, so nothing after it was ever indexed."""
    import csv

    from conftest import copy_subset

    from vitrine.indexer import index_catalog

    catalog = copy_subset(demo_catalog, tmp_path / "catalog", 1)
    with open(catalog / "products.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows[0]["name"] = "N" * 5000
    with open(catalog / "products.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    store = open_store(f"milvus-lite://{tmp_path}/i.db", create=True)
    report = index_catalog(catalog, store, embedder, show_progress=False)
    assert report.indexed == len(rows) - 1 and store.count() == len(rows) - 1
    assert [s["reason"] for s in report.skipped] == [
        f"product {rows[0]['product_id']!r}: its name is 5,000 characters long, more than a Milvus "
        "store holds (4,096); shorten it in the product table"]
    store.close()


def test_a_collection_made_meanwhile_for_another_model_is_refused(mstore):
    """Two writers starting together may both create the products' collection; the second
    uses the one made, but not one of another vector size (its model's manifest would then
    describe vectors the collection cannot hold)."""
    mstore._create_products(MANIFEST.dim)  # made already, of this size: used as it is
    with pytest.raises(StoreError, match=f"holds vectors of {MANIFEST.dim} numbers and this "
                                         "model makes 7"):
        mstore._create_products(7)
    assert mstore.count() == 4


def test_a_page_stays_full_when_a_product_goes_between_its_two_reads(mstore, monkeypatch):
    """A Milvus page reads the order's fields of every row, then the page's rows: a product
    deleted between the two (another server) is replaced by the next one, so the page stays
    full and the pager does not end early."""
    real, deleted = mstore._lookup, []

    def lookup(ids, fields):
        if not deleted:
            deleted.append(True)
            assert mstore.delete(["c"]) == 1
        return real(ids, fields)

    monkeypatch.setattr(mstore, "_lookup", lookup)
    # in order a, b (category c), c, e (category d): the third page of one is c, now e
    assert [p.product_id for p in mstore.list_products(limit=1, offset=2)] == ["e"]
    assert deleted == [True]


def _kept_an_hour(order) -> bool:
    """Whether ``order`` is kept for the hour the test's ORDER_TTL_S gives it (the default's
    10 s keep one a minute at most): the patched value was used."""
    return order.until - time.monotonic() > 3000


def test_the_catalogues_order_is_read_once_for_its_pages(mstore, monkeypatch):
    """Milvus sorts no query: each catalogue page read three fields of every product (0.15 s
    at 3,000 products on Milvus Lite, seconds at a hundred thousand). The order is kept for
    the next pages a while, per category (the whole catalogue's serving each category's);
    this store's writes drop it at once."""
    import vitrine.store.milvus_orders as module

    monkeypatch.setattr(module, "ORDER_TTL_S", 3600.0)  # (however slow the machine)
    real, scans = mstore._rows, []

    def rows(expr, fields):
        scans.append(expr)
        return real(expr, fields)

    monkeypatch.setattr(mstore, "_rows", rows)
    pages = [[p.product_id for p in mstore.list_products(limit=1, offset=i)] for i in range(4)]
    assert pages == [["a"], ["b"], ["c"], ["e"]] and len(scans) == 1
    assert _kept_an_hour(mstore._orders[None])
    assert [p.product_id for p in mstore.list_products(category="d")] == ["c", "e"]
    assert [p.product_id for p in mstore.list_products(category="d", offset=1)] == ["e"]
    assert mstore.list_products(category="x") == []
    assert len(scans) == 1  # each category a part of the whole catalogue's order
    mstore.upsert([record("aa", unit(1, 0))])  # a write here: the next page sees it
    assert [p.product_id for p in mstore.list_products(limit=2)] == ["a", "aa"]
    mstore.update_metadata([Product("b", mstore.get("b").image, category="d", name="B")])
    assert [p.product_id for p in mstore.list_products(category="d")] == ["b", "c", "e"]
    assert [p.product_id for p in mstore.list_products(category="d", offset=1)] == ["c", "e"]
    assert mstore.delete(["c"]) == 1
    assert [p.product_id for p in mstore.list_products(category="d")] == ["b", "e"]
    assert len(scans) == 4  # (the category's own order read, then kept for its pages)
    # another process's writes: in time (the order kept so far long expired)
    for order in mstore._orders.values():
        order.until = time.monotonic() - module.ORDER_STALE_S - 1
    mstore.list_products(limit=1)
    mstore.list_products(limit=1)
    assert len(scans) == 5
    # a read slower than ORDER_TTL_S (a hundred thousand products) is kept after it ends:
    # stamped when it began, it was stale when stored, and every page read them all again
    monkeypatch.setattr(module, "ORDER_TTL_S", 0.2)  # (kept 1 s after the read)
    mstore._forget_orders()

    def slow_rows(expr, fields):
        threading.Event().wait(0.5)
        return rows(expr, fields)

    monkeypatch.setattr(mstore, "_rows", slow_rows)
    assert [p.product_id for p in mstore.list_products(limit=1, offset=1)] == ["aa"]
    assert [p.product_id for p in mstore.list_products(limit=1, offset=2)] == ["b"]
    assert len(scans) == 6
    assert mstore._orders[None].until <= time.monotonic() + 6 * 0.2  # (0.2 s's at most)
    # an ORDER_TTL_S of 0 keeps none: each page reads the order
    monkeypatch.setattr(module, "ORDER_TTL_S", 0.0)
    monkeypatch.setattr(mstore, "_rows", rows)
    mstore._forget_orders()
    assert [p.product_id for p in mstore.list_products(limit=1)] == ["a"]
    assert [p.product_id for p in mstore.list_products(limit=1, offset=1)] == ["aa"]
    assert len(scans) == 8 and mstore._orders == {}


def test_whether_a_category_has_products_is_read_from_the_order_kept(mstore, monkeypatch):
    """A category page asked Milvus whether the category had a product (a filtered query
    that scans the collection: 30-120 ms of its time at 20,000 products on Milvus Lite),
    then listed it from the order kept: the order kept answers both; without one, the
    query does; this store's writes are seen at once."""
    import vitrine.store.milvus_orders as module

    monkeypatch.setattr(module, "ORDER_TTL_S", 3600.0)
    queries = []
    real = mstore.client.query
    monkeypatch.setattr(mstore.client, "query", lambda *a, **k: queries.append(
        k.get("filter")) or real(*a, **k))
    assert mstore.has_category("d") and not mstore.has_category("x")
    assert len(queries) == 2  # (no order kept yet)
    mstore.list_products(limit=1)
    assert _kept_an_hour(mstore._orders[None])
    asked = len(queries)
    assert mstore.has_category("c") and mstore.has_category("d")
    assert not mstore.has_category("x") and not mstore.has_category("")
    assert len(queries) == asked
    assert mstore.delete(["c", "e"]) == 2  # the whole of "d": the order is dropped
    assert not mstore.has_category("d") and mstore.has_category("c")


def test_name_search_filters_the_order_kept(mstore, monkeypatch):
    """A name search read every product's category, name and id again each time (1.3 s a
    search at 20,000 products on Milvus Lite, 4 to 10 s at 50,000, while every other request
    waited): it now filters the order kept, in a category or not, by the folded name and id
    as the embedded store's search_key; a search with no order kept reads it once and keeps
    it for the pages and searches after."""
    import vitrine.store.milvus_orders as module

    monkeypatch.setattr(module, "ORDER_TTL_S", 3600.0)
    real, scans = mstore._rows, []
    monkeypatch.setattr(mstore, "_rows", lambda expr, fields: scans.append(expr)
                        or real(expr, fields))
    mstore.upsert([record("r1", unit(1, 0.3), name="Relógio Dourado", category="d"),
                   record("r2", unit(1, 0.4), name="RELOGIO prata"),
                   record("x9", unit(1, 0.5), name="Açaí")])

    def ids(**kw):
        return [p.product_id for p in mstore.list_products(**kw)]

    assert ids(query="relogio") == ["r2", "r1"] and len(scans) == 1  # read once, kept
    assert _kept_an_hour(mstore._orders[None])
    assert ids(query="RELÓGIO") == ["r2", "r1"]
    assert ids(query="acai") == ["x9"] and ids(query="ACAÍ", category="c") == ["x9"]
    assert ids(query="relogio", category="d") == ["r1"]
    assert ids(query="zzzznotthere") == [] and ids(query="R", limit=1, offset=1) == ["r1"]
    assert ids(query="x9") == ["x9"] and ids(query="c") == ["x9", "c"]  # ids too
    assert ids() == ["a", "x9", "b", "r2", "c", "e", "r1"]
    assert mstore.categories() == {"c": 4, "d": 3}  # (the pages' counts, from it too)
    assert len(scans) == 1
    mstore.update_metadata([Product("x9", mstore.get("x9").image, "c", "Café")])
    assert ids(query="acai") == [] and ids(query="CAFE") == ["x9"]  # a write: read anew
    assert len(scans) == 2
    # a category's own order (read with no whole catalogue's kept) serves its searches
    mstore._forget_orders()
    assert ids(category="d") == ["c", "e", "r1"] and ids(query="dourado", category="d") == [
        "r1"]
    assert len(scans) == 3


def test_name_search_on_the_order_kept_matches_the_embedded_store(mstore, tmp_path,
                                                                  monkeypatch):
    """The same pages and name searches as the embedded store (its search_key: name and id
    folded, in SQL), from the first read and from the order kept."""
    import vitrine.store.milvus_orders as module

    monkeypatch.setattr(module, "ORDER_TTL_S", 3600.0)
    embedded = _embedded_as_mstore(tmp_path)
    names = ["Relógio Dourado", "RELOGIO prata", "Açaí", "café\nDE couro", "Straße",
             "Sandália", "sandalia", "ÉCLAIR", "b", "Zebra", "relógio", "A\u0301gua"]
    cats = ["c", "d", "Calçados", "calcados", "d"]
    made = [record(f"p{i:02d}{'/Ç' if i % 7 == 0 else ''}", unit(1, 0.01 * i),
                   name=names[i % len(names)], category=cats[i % len(cats)])
            for i in range(60)]
    for store in (embedded, mstore):
        store.upsert(made)
    real, scans = mstore._rows, []
    monkeypatch.setattr(mstore, "_rows", lambda expr, fields: scans.append(expr)
                        or real(expr, fields))
    asks = [{}, {"query": "relogio"}, {"query": "Ç"}, {"query": "c"}, {"query": "ss"},
            {"query": "de cou"}, {"query": "P0"}, {"query": "zzzznotthere"},
            {"query": "agua"}, {"category": "d"}, {"category": "calcados", "query": "a"},
            {"category": "Calçados", "query": "SANDALIA"}, {"category": "none"}]
    for _ in range(2):  # read, then kept
        _same_pages(embedded, mstore, asks, ((100, 0), (3, 2), (5, 40)))
    assert len(scans) == 1  # the whole catalogue's order, read once
    assert _kept_an_hour(mstore._orders[None])
    embedded.close()


def test_an_expired_order_is_served_while_it_is_read_again(mstore, monkeypatch):
    """Past its time, an order is served a while more (ORDER_STALE_S) while one read beside
    the requests renews it: the first page after it expired read it all, 2.5 s at 20,000
    products, 10.8 s at 50,000. Past that too, a page reads it itself."""
    import vitrine.store.milvus_orders as module

    monkeypatch.setattr(module, "ORDER_TTL_S", 3600.0)
    real, scans = mstore._rows, []
    monkeypatch.setattr(mstore, "_rows", lambda expr, fields: scans.append(expr)
                        or real(expr, fields))
    assert [p.product_id for p in mstore.list_products()] == ["a", "b", "c", "e"]
    assert _kept_an_hour(mstore._orders[None])
    mstore.client.upsert(mstore.collection, [mstore._row(  # another process's write
        Product("aa", "/photos/aa.jpg", category="c", name="AA"), "s", "0" * 16, b"",
        unit(1, 0))])
    mstore._orders[None].until = time.monotonic() - 1  # expired
    assert [p.product_id for p in mstore.list_products()] == ["a", "b", "c", "e"]  # kept
    mstore._renewing.join(60)
    assert len(scans) == 2 and mstore._orders[None].keys is not None  # (folded there too)
    assert [p.product_id for p in mstore.list_products()] == ["a", "aa", "b", "c", "e"]
    assert [p.product_id for p in mstore.list_products(query="aa")] == ["aa"]
    assert len(scans) == 2


def test_an_order_emptied_elsewhere_goes_and_closing_waits_for_a_renewal(mstore, monkeypatch):
    """A renewal that read no rows (another writer emptied the category) left the expired
    order served for ORDER_STALE_S more, each page walking its deleted ids and starting
    another renewal; and closing the store while a renewal read went on logged pymilvus's
    reconnection traceback (helper-186). The empty order goes; close waits for the read, and
    no renewal starts after it."""
    import vitrine.store.milvus_orders as module

    monkeypatch.setattr(module, "ORDER_TTL_S", 3600.0)
    assert [p.product_id for p in mstore.list_products(category="c")] == ["a", "b"]
    assert "c" in mstore._orders and _kept_an_hour(mstore._orders["c"])
    mstore.client.delete(mstore.collection, filter='category == "c"')  # another process's
    mstore._orders["c"].until = time.monotonic() - 1
    mstore.list_products(category="c")  # (the stale order, while it is read again)
    mstore._renewing.join(60)
    assert "c" not in mstore._orders
    assert mstore.list_products(category="c") == []
    started = threading.Event()
    real = mstore._rows

    def slow(expr, fields):
        started.set()
        time.sleep(0.5)
        return real(expr, fields)

    assert mstore.list_products()
    mstore._orders[None].until = time.monotonic() - 1
    monkeypatch.setattr(mstore, "_rows", slow)
    mstore.list_products()
    assert started.wait(30)
    renewing = mstore._renewing
    mstore.close()
    assert not renewing.is_alive()
    mstore._orders[None].until = time.monotonic() - 1
    mstore._kept(None)
    assert mstore._renewing is renewing  # (none begun once closed)


def test_an_order_read_across_a_write_of_this_store_is_not_kept(mstore, monkeypatch):
    """The server lists without its lock: an order another thread read while this store wrote
    (begun before the write) is not kept, so the write shows at once, as before."""
    import vitrine.store.milvus_orders as module

    monkeypatch.setattr(module, "ORDER_TTL_S", 3600.0)
    real, scans = mstore._rows, []

    def rows(expr, fields):
        read = real(expr, fields)
        if not scans:  # the write lands after this page's read, before its order is kept
            mstore.upsert([record("aa", unit(1, 0))])
        scans.append(expr)
        return read

    monkeypatch.setattr(mstore, "_rows", rows)
    assert [p.product_id for p in mstore.list_products()] == ["a", "b", "c", "e"]
    assert [p.product_id for p in mstore.list_products()] == ["a", "aa", "b", "c", "e"]
    assert len(scans) == 2 and _kept_an_hour(mstore._orders[None])


def test_pages_and_searches_from_several_threads_at_once(mstore, monkeypatch):
    """The server lists a Milvus store without its lock: pages, name searches and lookups
    from several threads at once, writes between them, all answer as one at a time."""
    import vitrine.store.milvus_orders as module

    monkeypatch.setattr(module, "ORDER_TTL_S", 0.05)  # (expiring, read again, meanwhile)
    ttls, real_kept_until = [], module.kept_until
    monkeypatch.setattr(module, "kept_until", lambda started, ttl: (
        ttls.append(ttl), real_kept_until(started, ttl))[1])
    mstore.upsert([record(f"t{i:03d}", unit(1, i / 100), name=f"Tênis {i}")
                   for i in range(120)])
    failures: list[BaseException] = []

    def reader(n: int) -> None:
        try:
            for i in range(15):
                if n == 0 and i % 5 == 0:
                    mstore.upsert([record("a", unit(1, 0), name="A")])
                assert [p.product_id for p in mstore.list_products(query="TENIS 11",
                                                                   limit=20)] == [
                    "t011", *[f"t{i}" for i in range(110, 120)]]
                assert len(mstore.list_products(limit=50, offset=i)) == 50
                assert mstore.get("t001").name == "Tênis 1"
        except BaseException as exc:  # noqa: BLE001 - said by the test
            failures.append(exc)

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    if mstore._renewing is not None:  # (a read beside them, done before the store closes)
        mstore._renewing.join(60)
    assert not any(t.is_alive() for t in threads) and failures == []
    assert ttls and set(ttls) == {0.05}  # (each order read kept for the test's time)


def test_every_read_asks_to_see_this_clients_own_writes(mstore, monkeypatch):
    """A Milvus server reads at the collection's level, Bounded unless told: the product an
    upload had just stored was not found (the API's 500), a count left it out. Every read
    asks for Session consistency (read your own writes), a collection made by an older
    Vitrine included."""
    asked = []

    class Recording:
        def __getattr__(self, name):
            call = getattr(real, name)
            if name not in ("query", "search", "query_iterator", "get"):
                return call

            def recorded(*args, **kwargs):
                asked.append((name, kwargs.get("consistency_level")))
                return call(*args, **kwargs)
            return recorded

    real = mstore.client
    monkeypatch.setattr(mstore, "client", Recording())
    mstore.upsert([record("f", unit(1, 0.1), category="d")])
    assert mstore.get("f").category == "d" and mstore.count() == 5
    assert mstore.search(unit(1, 0), 2, category="d")[0].product.product_id == "f"
    assert mstore.categories() == {"c": 2, "d": 3} and mstore.manifest() == MANIFEST
    assert [p.product_id for p in mstore.list_products(category="d")] == ["c", "e", "f"]
    assert {name for name, _ in asked} >= {"query", "search", "query_iterator"}
    assert {level for _, level in asked} == {"Session"}, asked


def test_milvus_lites_traceback_for_a_write_after_the_interpreter_stopped_is_not_shown(
        tmp_path, caplog):
    """A Ctrl+C during `index`'s final flush: after "interrupted.", Milvus Lite's server
    thread logged "Flush failed: cannot schedule new futures after shutdown" with its
    traceback. That record is dropped; any other error it logs goes back to the client too
    (said in Vitrine's sentence) and is kept at DEBUG level."""
    import logging

    caplog.set_level(logging.DEBUG, logger="milvus_lite.adapter.grpc.servicer")
    store = open_store(f"milvus-lite://{tmp_path}/q.db", create=True)
    store.close()
    logger = logging.getLogger("milvus_lite.adapter.grpc.servicer")
    for error in (RuntimeError("cannot schedule new futures after shutdown"),
                  RuntimeError("disk I/O error")):
        try:
            raise error
        except RuntimeError as exc:
            logger.exception("Flush failed: %s", exc)
    assert [(r.getMessage(), r.levelname) for r in caplog.records
            if r.name == logger.name] == [("Flush failed: disk I/O error", "DEBUG")]
    # logging set up for warnings (a handler of every level, the logger at WARNING): the
    # record, let through at ERROR before the filter lowered it, is not shown
    shown: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = shown.append
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        try:
            raise RuntimeError("disk I/O error")
        except RuntimeError as exc:
            logger.exception("Flush failed: %s", exc)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    assert shown == []


def test_a_damaged_milvus_lite_file_is_one_sentence(tmp_path):
    """A data file of the store cut short: `info` printed Milvus Lite's 40-line traceback
    ("DescribeCollection failed: …", from its server thread) before its `error:` line."""
    uri = f"milvus-lite://{tmp_path}/d.db"
    made = ("import sys\nfrom test_store import MANIFEST, record, unit\n"
            "from vitrine.store import open_store\n"
            "store = open_store(sys.argv[1], create=True)\nstore.set_manifest(MANIFEST)\n"
            "store.upsert([record('a', unit(1, 0)), record('b', unit(0, 1))])\n"
            "store.flush()\nstore.close()\n")  # (in a process of its own: Milvus Lite
    # keeps a file locked until the process that opened it ends)
    subprocess.run([sys.executable, "-c", made, uri], check=True, timeout=300,
                   cwd=os.path.dirname(__file__))
    good = subprocess.run([sys.executable, "-m", "vitrine.cli", "info", "--store", uri],
                          capture_output=True, text=True, timeout=300)
    assert good.returncode == 0 and "2 products" in good.stdout, good.stdout + good.stderr
    data = sorted((tmp_path / "d.db").rglob("*.parquet"))
    assert data, list((tmp_path / "d.db").rglob("*"))
    for path in data:
        path.write_bytes(path.read_bytes()[:500])
    proc = subprocess.run([sys.executable, "-m", "vitrine.cli", "info", "--store", uri],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1, proc.stderr


def test_a_milvus_lite_file_in_a_folder_not_made_yet(tmp_path):
    """Milvus Lite said "(<ConnectionConfigException: (code=1, message=Open local milvus
    failed, dir: … not exists)>)": the folder is made for a new store, as an embedded
    store's is, and a store to read there is "no Vitrine store"."""
    with pytest.raises(StoreError, match=r"^no Vitrine store at milvus-lite://.*/x\.db; "
                                         r"create one with"):
        open_store(f"milvus-lite://{tmp_path}/new/x.db")
    assert not (tmp_path / "new").exists()
    store = open_store(f"milvus-lite://{tmp_path}/new/deeper/x.db", create=True)
    store.close()
    assert (tmp_path / "new" / "deeper" / "x.db").exists()
    (tmp_path / "afile").write_text("x")
    (tmp_path / "nothing").symlink_to(tmp_path / "gone")
    for parent in ("afile", "nothing"):  # (an exception's repr too)
        with pytest.raises(StoreError, match=rf"^the folder of the Milvus Lite file .*{parent}"
                                             r"/x\.db is not a folder"):
            open_store(f"milvus-lite://{tmp_path}/{parent}/x.db", create=True)


def test_a_milvus_lite_address_without_milvus_lite_says_the_extra(tmp_path, monkeypatch):
    """pymilvus 3 does not bring milvus-lite: without it a Milvus Lite address was an
    exception's repr naming pymilvus's own extra, and left its folder made (helper-149)."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "milvus_lite" else real(name, *a))
    with pytest.raises(StoreError, match=r"^Milvus Lite stores need Vitrine's milvus extra, "
                                         r"which brings milvus-lite \(.*pip install -e"):
        open_store(f"milvus-lite://{tmp_path}/new/m.db", create=True)
    assert not (tmp_path / "new").exists()


def test_a_milvus_lite_file_is_flushed_as_rows_are_written(mstore, monkeypatch):
    """Milvus Lite's growing segments held every row written until the one flush at the
    end (writing 20,000 products peaked at 1.39 GB, 0.75 GB flushed every 5,000 rows:
    benchmarks/milvus_lite_writes.py): a flush every LITE_FLUSH_ROWS rows, by upserts and
    metadata edits alike; every row readable after."""
    from vitrine.store import milvus_store

    monkeypatch.setattr(milvus_store, "LITE_FLUSH_ROWS", 3)
    flushes = []
    flush = mstore.client.flush
    monkeypatch.setattr(mstore.client, "flush", lambda *a, **k: (flushes.append(1),
                                                                 flush(*a, **k))[1])
    mstore.flush()  # (the fixture's four rows: counted from here)
    flushes.clear()
    mstore.upsert([record(f"n{i}", unit(1, i / 10)) for i in range(2)])
    assert flushes == []
    mstore.upsert([record(f"n{i}", unit(1, i / 10)) for i in range(2, 4)])
    assert flushes == [1]
    mstore.update_metadata([Product(p, mstore.get(p).image, category="novo")
                            for p in ("a", "b", "c")])
    assert flushes == [1, 1]
    assert mstore.count() == 8 and mstore.categories()["novo"] == 3


def test_a_cursor_after_a_product_renamed_elsewhere_skips_nothing(mstore, monkeypatch):
    """Another process (`vitrine index`, a second server) renamed a product while the order
    kept still had its old name: the page listed the product as it is now, its next_cursor
    (made from that row) was bisected into the old order at the new name's place, and every
    product between the two places was never listed. A page whose rows are no longer where
    the order kept put them reads the order again."""
    import vitrine.store.milvus_orders as module
    from vitrine.store.search_key import listing_order

    monkeypatch.setattr(module, "ORDER_TTL_S", 3600.0)
    mstore.upsert([record(f"p{i}", unit(1, 0.1 * i), name=f"P{i}") for i in range(6)])
    every = [p.product_id for p in mstore.list_products(category="c")]
    assert every == ["a", "b", "p0", "p1", "p2", "p3", "p4", "p5"]
    assert _kept_an_hour(mstore._orders["c"])
    renamed = mstore.get("p0")
    mstore.client.upsert(mstore.collection, [mstore._row(  # another process's write
        Product("p0", renamed.image, category="c", name="Zz"), "sha-p0", "0" * 16, b"\0" * 768,
        mstore.vector("p0"))])
    walked, after = [], None
    while page := mstore.list_products(category="c", limit=3, after=after):
        walked += [p.product_id for p in page]
        after = listing_order(page[-1].category, page[-1].name, page[-1].product_id)
    assert sorted(set(walked)) == sorted(every), walked


def test_a_collection_of_another_program_or_size_is_refused_and_left_alone(tmp_path):
    """A collection already named as the store's (another program's on a shared server, or
    Vitrine's of another vector size whose manifest was never written) is refused in one
    sentence, the other program's when the store is opened, before anything is made beside
    it, the other size when the model is recorded: it was taken as the store's, its manifest written
    over it, and the first upsert failed with Milvus's own words (a migrate then called the
    target an unfinished copy of its foreign rows)."""
    from pymilvus import MilvusClient

    path = tmp_path / "other.db"
    client = MilvusClient(str(path))
    client.create_collection(DEFAULT_COLLECTION, dimension=8)
    client.insert(DEFAULT_COLLECTION, [{"id": i, "vector": [0.1] * 8} for i in range(3)])
    client.close()
    with pytest.raises(StoreError, match="is not a Vitrine store's"):
        open_store(f"milvus-lite://{path}", create=True)
    client = MilvusClient(str(path))
    client.load_collection(DEFAULT_COLLECTION)
    assert len(client.query(DEFAULT_COLLECTION, filter="id >= 0")) == 3
    # nothing made beside it (an empty meta collection made it a Vitrine store to `info`)
    assert client.list_collections() == [DEFAULT_COLLECTION]
    client.close()

    sized = tmp_path / "sized.db"  # Vitrine's collection of 7 numbers, no manifest
    store = open_store(f"milvus-lite://{sized}", create=True)
    try:
        store._create_products(7)
        with pytest.raises(StoreError, match=f"holds vectors of 7 numbers and this model "
                                             f"makes {MANIFEST.dim}"):
            store.set_manifest(MANIFEST)
        assert store.manifest() is None
    finally:
        store.close()


def test_search_many_asks_again_in_halves_past_grpc_message_limit(tmp_path, monkeypatch):
    """`vitrine related --k 10` on Milvus Lite failed with a gRPC traceback ("Sent message
    larger than max (284247105 vs. 268435456)") once products held 25,000-character
    descriptions (the store takes 65,535): 909 queries × 11 hits came back whole in one
    answer. Here the server's limit is 1 MiB, and 60 queries × 6 hits of 20,000-character
    descriptions are 7 MiB: the request is asked again in halves, with the same results."""
    from milvus_lite.adapter.grpc import server

    monkeypatch.setattr(server, "_MAX_MESSAGE_SIZE", 1 << 20)  # (read as a server starts)
    store = open_store(f"milvus-lite://{tmp_path}/big.db", create=True)
    try:
        store.set_manifest(MANIFEST)
        rng = np.random.default_rng(0)
        vectors = rng.standard_normal((60, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        ids = [f"p{i}" for i in range(60)]
        for start in range(0, 60, 10):
            store.upsert([record(pid, vectors[i], description="d" * 20_000)
                          for i, pid in enumerate(ids[start:start + 10], start)])
        found = store.search_many(vectors, 5, exclude=ids)
        assert [[m.product.product_id for m in hits] for hits in found] == [
            [m.product.product_id for m in store.search(v, 5, exclude=pid)]
            for v, pid in zip(vectors, ids, strict=True)]
        assert all(len(hits) == 5 for hits in found)
    finally:
        store.close()


def test_all_vectors_holds_the_vectors_once(mstore, monkeypatch):
    """The pages read were kept until they were joined into one array, so every vector was
    held twice at the end (a peak of 641 MiB for 244 MiB of vectors at 50,000 × 1,280 on a
    Milvus server). The pages are written into one array as they come; rows added since the
    count grow it, rows deleted since leave it shorter."""
    import tracemalloc

    dim, pages = 256, 20
    rng = np.random.default_rng(0)
    batches = [[{"product_id": f"p{b:02d}{i:03d}", "vector": rng.random(dim).tolist()}
                for i in range(500)] for b in range(pages)]  # (made before the tracing)
    monkeypatch.setattr(mstore, "_batches", lambda *a, **k: iter(batches))
    result = pages * 500 * dim * 4
    for counted in (pages * 500, 1, pages * 500 + 7):  # (rows added meanwhile; deleted)
        monkeypatch.setattr(mstore, "count", lambda counted=counted: counted)
        tracemalloc.start()
        try:
            ids, vectors = mstore.all_vectors()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert ids == [row["product_id"] for batch in batches for row in batch]
        assert vectors.shape == (pages * 500, dim) and vectors.dtype == np.float32
        assert np.array_equal(vectors[-1], np.asarray(batches[-1][-1]["vector"], np.float32))
        if counted != 1:  # (a count far too low doubles the array as rows come)
            assert peak < 1.3 * result, (counted, peak / result)


def _with_copies(store, vecs: np.ndarray, shas: list[str]) -> None:
    """Products p000… of these vectors and photo sha256s, in categories "c" and "d" by
    turns, and one duplicate group: the photos of p045 and p046 (one saved again)."""
    from vitrine.dedupe_store import encode
    from vitrine.store.base import Record

    store.lock_for_writing()
    store.set_manifest(MANIFEST)
    store.upsert([Record(Product(f"p{i:03d}", Path(f"/photos/p{i}.jpg"), category="cd"[i % 2]),
                         sha, "0" * 16, b"\0" * 768, v)
                  for i, (v, sha) in enumerate(zip(vecs, shas, strict=True))])
    store.flush()
    store.set_duplicate_cache(encode("key", np.arange(2, dtype=np.uint64), np.array([[0, 1]]),
                                     [shas[45], shas[46]]))


def _same(a: list[dict], b: list[dict]) -> bool:
    """Whether two stores' results are the same products, those of the placeholder photo as
    one ("ph": they tie, and either store may give any of them), with the same scores."""
    def ids(matches):
        return ["ph" if int(m["product_id"][1:]) < 40 else m["product_id"] for m in matches]

    return ids(a) == ids(b) and np.allclose([m["score"] for m in a], [m["score"] for m in b],
                                            atol=1e-4)


def test_milvus_leaves_out_more_copies_than_its_deepest_search_as_the_embedded_store(
        tmp_path, monkeypatch):
    """A product's copies were dropped after Milvus searches four times as deep each time,
    up to 16,384 results: a product whose placeholder photo more products share got no
    similar product at all (17,164 products, 17,050 of one photo: `similar` gave [] in
    7.5 s where the embedded store gives 5; `related` of 3,114 products, 3,000 of one photo,
    ran past 10 minutes). Milvus leaves them out in its query's filter, as the embedded
    store does inside FAISS: the same products, never a copy, k of them where k exist."""
    from vitrine import copies
    from vitrine.config import Settings
    from vitrine.recommend import Recommender
    from vitrine.related import write_related
    from vitrine.store.embedded import EmbeddedStore

    monkeypatch.setattr(copies, "DEEPEST", 16)  # (40 copies: more than the deepest search)
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(60, DIM)).astype(np.float32)
    vecs[:40] = vecs[0]  # p000…p039: one placeholder photo
    vecs[46] = vecs[45] + 0.01 * rng.normal(size=DIM)  # p046: p045's photo saved again
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    shas = ["a" * 64 if i < 40 else f"{i:064x}" for i in range(60)]
    embedded = EmbeddedStore(tmp_path / "store", create=True)
    milvus = open_store(f"milvus-lite://{tmp_path}/copies.db", create=True)
    try:
        for store in (embedded, milvus):
            _with_copies(store, vecs, shas)
        asked: list[int] = []
        for name in ("search", "search_many"):  # (how deep Milvus is asked)
            real = getattr(milvus, name)
            monkeypatch.setattr(milvus, name, lambda v, k, real=real, **kw:
                                (asked.append(k), real(v, k, **kw))[1])
        recs = [Recommender(s, Settings()) for s in (embedded, milvus)]
        for pid, own in (("p005", set(range(40))), ("p045", {45, 46}), ("p050", {50})):
            for k in (1, 5, 19, 20, 50):
                for kw, where in (({}, "cd"), ({"same_category": True}, "cd"[int(pid[1:]) % 2]),
                                  ({"category": "d"}, "d")):
                    asked.clear()
                    (_, a), (_, b) = (r.similar(pid, k, **kw) for r in recs)
                    left = [i for i in range(60) if i not in own and "cd"[i % 2] in where]
                    photos = {"ph" if i < 40 else 45 if i == 46 else i for i in left}
                    assert len(b) == min(k, len(photos)), (pid, k, kw)  # (one a photo)
                    assert {int(m.product.product_id[1:]) for m in b} <= set(left)
                    assert _same(*([{"product_id": m.product.product_id, "score": m.score}
                                    for m in found] for found in (a, b))), (pid, k, kw)
                    assert max(asked) <= 2 * k  # (not as deep as the copies)
        for same in (False, True):
            rows = {}
            for name, store in (("embedded", embedded), ("milvus", milvus)):
                out = tmp_path / f"{name}.jsonl"
                write_related(store, out, 5, same_category=same, show_progress=False)
                rows[name] = [json.loads(line) for line in out.read_text().splitlines()]
            assert [len(r["similar"]) for r in rows["milvus"]] == [5] * 60
            for row in rows["milvus"]:
                i = int(row["product_id"][1:])
                own = set(range(40)) if i < 40 else {45, 46} if i in (45, 46) else {i}
                assert not own & {int(m["product_id"][1:]) for m in row["similar"]}
            assert all(_same(a["similar"], b["similar"]) and a["product_id"] == b["product_id"]
                       for a, b in zip(rows["embedded"], rows["milvus"], strict=True))
    finally:
        embedded.close()
        milvus.close()
