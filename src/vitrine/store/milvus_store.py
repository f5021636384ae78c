"""Milvus store: the same :class:`VectorStore` behaviour on Milvus Lite (an embedded file),
a standalone Milvus server or a distributed cluster, through one client (pymilvus).

One collection holds the products: product id (primary key), the vector, and the metadata
(category, name, price, description, attributes as JSON, image, hashes) next to it, so category
filters run inside the vector query. A second small collection holds the model manifest.
Installed by Vitrine's ``milvus`` extra.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext

import numpy as np

from vitrine.catalog import CATEGORY_MAX, UPLOADED, Product
from vitrine.dedupe_views import THUMB_BYTES
from vitrine.errors import NoStore, StoreError, extra_hint
from vitrine.fold import searchable
from vitrine.manifest import ModelManifest
from vitrine.store.base import (
    CatalogRecord,
    Match,
    PhotoFacts,
    Record,
    StoredProduct,
    kept_until,
)
from vitrine.store.milvus_support import (
    escaped_cursor,
    lite_open_failures,
    quiet_client_logs,
    quiet_lite_logs,
    quote,
)
from vitrine.store.search_key import listing_order

log = logging.getLogger(__name__)

FIELDS = ["product_id", "image", "category", "name", "price", "description", "attributes",
          "content_sha256", "metadata_hash", "phash", "thumb"]
PAGE = 1000
SCAN_PAGE = 16_000
"""Rows a scan of a few text fields reads per request (the most Milvus returns at once):
each request of the iterator costs about as much as a whole page, 3.1 s for 20,000 rows in
pages of 1,000 against 1.5 s in pages of 16,000 on Milvus Lite."""
SEARCH_HITS = 10_000
"""Hits one search request asks for at most (queries × k): each comes back with every field
of its product, so `vitrine related --k 100` in pages of 1,000 queries asked for 101,000
full products at once (measured on a 3,000-product Milvus Lite store: a peak of 1.7 GiB in
the client, 0.75 GiB in requests of this size)."""
ORDER_TTL_S = 10.0
"""How long a catalogue's order is kept for its next pages (reading it reads three fields of
every product: 0.15 s a page at 3,000 products on Milvus Lite, growing with the store). This
store's own writes drop it at once; another process's show within this time, as the
categories' counts do (vitrine.service_categories.CATEGORIES_TTL_S), or, for an order read
again beside the requests (ORDER_STALE_S), once that read is done."""
ORDER_STALE_S = 60.0
"""How long past its time an order is still served while one read beside the requests
renews it (at 20,000 products on Milvus Lite the page that read it took 2.5 s; 10.8 s at
50,000): a page of a catalogue not looked at for longer reads it afresh."""
RENEW_JOIN_S = 30.0
"""How long closing the store waits for an order being read beside the requests."""
ORDERS_KEPT = 64
"""Category filters whose order is kept at once (category, name and id of each product)."""
WRITE_PAGE = 256
"""Products written back in one request by update_metadata (their vectors go with them)."""
READS = {"consistency_level": "Session"}
"""Every read sees this client's own writes before it (a server's default, Bounded, may read
a view some seconds old: the product an upload just stored not found, a count without
it). Another process's writes show as that level allows; every request says it, since a
collection made by an older Vitrine keeps Bounded as its own default."""
LIMITS = {"product_id": 1024, "category": CATEGORY_MAX, "name": 4096, "description": 65535,
          "image": 65535}
"""The longest text each field of the products' collection holds: UTF-8 bytes on a Milvus
server, characters on Milvus Lite (each counts its own way)."""
ATTRIBUTES_LIMIT = 65536
"""The longest JSON of a product's attributes, in bytes (a Milvus server's JSON limit)."""
LITE_FLUSH_ROWS = 5000
"""Rows written to a Milvus Lite file between flushes: its growing segments held a copy of
every row until the one flush at the end (writing 20,000 products peaked at 1.39 GB, 0.75 GB
flushed every 5,000 rows: ``benchmarks/milvus_lite_writes.py``; helper-194)."""


class _Order:
    """A catalogue's order as read: the (category, search key, name, id) of each product of
    it, sorted as the embedded store lists them (``LISTING_ORDER``: names as a reader sorts
    them, case and accents aside, by their folded name and id,
    :func:`vitrine.store.search_key.search_key`, which name search looks in too), and until
    when it is kept."""

    __slots__ = ("keys", "rows", "until")

    def __init__(self, until: float, rows: list[tuple[str, str, str, str]]):
        self.until = until
        self.rows = rows
        self.keys = [r[1] for r in rows]

    def span(self, category: str | None) -> tuple[int, int]:
        """Where the products of ``category`` (None: all) lie in the order: sorted by
        category first, one category of the whole catalogue's order is one run of it."""
        if category is None:
            return 0, len(self.rows)
        lo = bisect.bisect_left(self.rows, category, key=_category)
        return lo, bisect.bisect_right(self.rows, category, lo=lo, key=_category)


def _category(row: tuple[str, str, str, str]) -> str:
    return row[0]


def _to_product(row: dict) -> StoredProduct:
    return StoredProduct(product_id=row["product_id"], image=row["image"],
                         category=row["category"], name=row["name"], price=row.get("price"),
                         description=row["description"],
                         attributes=dict(sorted((row["attributes"] or {}).items())),  # as the
                         # embedded store keeps them, whatever order the table had
                         content_sha256=row["content_sha256"], phash=row["phash"],
                         thumb=bytes.fromhex(row["thumb"]),
                         uploaded=row["metadata_hash"].startswith(UPLOADED))


def _open_failure(location: str, uri: str, exc: Exception, failures: list[BaseException]
                  ) -> str:
    """One sentence for a store that cannot be opened, from what Milvus Lite logged."""
    cause = failures[0] if failures else None
    if type(cause).__name__ == "DataDirLockedError":
        return (f"the Milvus Lite file {uri} is open in another process (a running 'vitrine "
                "serve' or 'vitrine index'?); Milvus Lite lets one process open it at a time: "
                "stop that process, or use a Milvus server (milvus://HOST:PORT) for several "
                "processes.")
    if isinstance(cause, FileExistsError) and os.path.isfile(uri):
        return f"{uri} is a file, not a Milvus Lite store; choose another path for the store."
    if isinstance(cause, OSError):
        return f"cannot open the Milvus store {location} ({cause.strerror or cause})."
    if cause is not None:  # what Milvus Lite logged, which pymilvus's own error leaves out
        return f"cannot open the Milvus store {location} ({type(cause).__name__}: {cause})."
    return f"cannot open the Milvus store {location} ({exc})."


_LITE_OPEN: dict[str, int] = {}
"""How many stores of this process have each Milvus Lite file open (its server is one per
file and process): the last to close it stops that server, letting other processes open the
file (it stayed held until this process ended)."""
_LITE_LOCK = threading.Lock()


def _lite_release(path: str) -> None:
    """One store of this process closes the Milvus Lite file ``path``; the last stops its
    server."""
    with _LITE_LOCK:
        _LITE_OPEN[path] -= 1
        if _LITE_OPEN[path]:
            return
        del _LITE_OPEN[path]
        try:
            from milvus_lite.server_manager import server_manager_instance
        except ImportError:  # (an older Milvus Lite: its server process ends with this one)
            return
        server_manager_instance.release_server(path)


def require_milvus(lite: bool) -> None:
    """A StoreError naming Vitrine's milvus extra when its packages are missing: pymilvus,
    and for a Milvus Lite file (``lite``) milvus-lite, which pymilvus 3 leaves out (its
    error's repr named pymilvus's own extra, and a folder was made)."""
    try:
        import pymilvus  # noqa: F401
    except ImportError:
        raise StoreError("Milvus stores need Vitrine's milvus extra "
                         f"({extra_hint('milvus')}).") from None
    if lite and importlib.util.find_spec("milvus_lite") is None:
        raise StoreError("Milvus Lite stores need Vitrine's milvus extra, which brings "
                         f"milvus-lite ({extra_hint('milvus')}).")


class MilvusStore(CatalogRecord):
    """A Vitrine store in one Milvus collection (``location`` is shown in messages)."""

    exclusive_writer = False
    concurrent_reads = True
    """pymilvus's client may be called from several threads at once, and the orders kept
    are this store's to guard (``_orders_lock``): the server lists products without its
    store-wide lock, so a page that reads a whole catalogue's order holds up no other
    request."""

    def __init__(self, uri: str, collection: str, *, location: str, token: str = "",
                 create: bool = False):
        require_milvus(lite=uri.endswith(".db"))
        from pymilvus import MilvusClient

        self.location = location
        self.collection = collection
        self.meta_collection = f"{collection}__meta"
        self._products_made = False  # (known to exist: upsert asks once)
        self._orders: dict[str | None, _Order] = {}
        """A catalogue's order per category filter (None: the whole catalogue's, which
        serves every category's too): see ORDER_TTL_S."""
        self._orders_lock = threading.Lock()  # the orders and _written, between threads
        self._written = 0  # this store's writes so far: an order read across one is not kept
        self._reading = threading.Lock()  # one order read at a time (others wait for it)
        self._renewing: threading.Thread | None = None  # an order read beside the requests
        self._closed = False
        self._lite = uri.endswith(".db")  # a Milvus Lite file (store_for's milvus-lite://)
        self._unflushed = 0  # (rows written to a Milvus Lite file since its last flush)
        quiet_client_logs()
        if self._lite:
            quiet_lite_logs()
            folder = os.path.dirname(uri)
            if create and not os.path.lexists(folder):  # (without it, Milvus Lite's error
                # was an exception's repr; a missing file to read is refused before here)
                try:  # made, as an embedded store's folder is
                    os.makedirs(folder, exist_ok=True)
                except OSError as exc:
                    raise StoreError(f"cannot make the folder of the Milvus Lite file {uri} "
                                     f"({exc.strerror or exc}).") from None
            elif create and not os.path.isdir(folder):  # a file, or a link to nothing
                raise StoreError(f"the folder of the Milvus Lite file {uri} is not a folder "
                                 f"({folder}); choose another path for the store.")
        try:
            with lite_open_failures(uri) as failures:
                self.client = MilvusClient(uri=uri, token=token) if token else MilvusClient(uri)
        except Exception as exc:  # noqa: BLE001 - connection errors of every kind
            raise StoreError(_open_failure(location, uri, exc, failures)) from None
        self._lite_path = None
        if self._lite:
            self._lite_path = os.path.abspath(uri)
            with _LITE_LOCK:
                _LITE_OPEN[self._lite_path] = _LITE_OPEN.get(self._lite_path, 0) + 1
        try:
            if not self.client.has_collection(self.meta_collection):
                if not create:
                    raise NoStore(f"no Vitrine store at {location}; create one with "
                                  f"'vitrine index CATALOG_DIR --store {location}'.")
                if self.client.has_collection(self.collection):  # (another program's of
                    self._refuse_foreign()  # this name: refused before the meta collection
                    # that marks a Vitrine store is made beside it)
                self._create_meta()
            for name in (self.meta_collection, self.collection):
                if self.client.has_collection(name):
                    self.client.load_collection(name)  # a reopened collection starts released
                    self._products_made |= name == self.collection  # (upsert need not ask)
        except BaseException:
            self.close()  # (a Milvus Lite file: let go)
            raise

    # ---- schema ---------------------------------------------------------------------------
    def _create_meta(self) -> None:
        from pymilvus import DataType

        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("value", DataType.VARCHAR, max_length=65535)
        schema.add_field("dummy", DataType.FLOAT_VECTOR, dim=2)
        index = self.client.prepare_index_params()
        index.add_index("dummy", index_type="FLAT", metric_type="IP")
        self._create(self.meta_collection, schema, index)

    def _create_products(self, dim: int) -> None:
        from pymilvus import DataType

        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("product_id", DataType.VARCHAR, is_primary=True,
                         max_length=LIMITS["product_id"])
        for name in ("image", "description", "category", "name"):
            schema.add_field(name, DataType.VARCHAR, max_length=LIMITS[name])
        schema.add_field("price", DataType.DOUBLE, nullable=True)
        schema.add_field("attributes", DataType.JSON)
        for name in ("content_sha256", "metadata_hash"):
            schema.add_field(name, DataType.VARCHAR, max_length=64)
        schema.add_field("phash", DataType.VARCHAR, max_length=64)
        schema.add_field("thumb", DataType.VARCHAR, max_length=4096)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        index = self.client.prepare_index_params()
        index.add_index("vector", index_type="FLAT", metric_type="IP")
        index.add_index("category", index_type="INVERTED")
        self._create(self.collection, schema, index)
        self._check_products(dim)

    def _check_products(self, dim: int) -> None:
        """Refuse a products collection this store cannot write: one made meanwhile by
        another model's writer (vectors of another size), or another program's collection of
        the same name (not Vitrine's fields), before anything is recorded in it."""
        held = self._refuse_foreign()["vector"].get("params", {}).get("dim")
        if held is not None and int(held) != dim:  # made meanwhile by another model's writer
            raise StoreError(f"the Milvus store {self.location} holds vectors of {held} "
                             f"numbers and this model makes {dim}; index into another "
                             "collection.")

    def _refuse_foreign(self) -> dict[str, dict]:
        """The products collection's fields by name; a StoreError where they are not a
        Vitrine store's (another program's collection of the same name)."""
        made = {f["name"]: f for f in self.client.describe_collection(self.collection)["fields"]}
        key = made.get("product_id")
        if "vector" not in made or key is None or not key.get("is_primary") \
                or not {"content_sha256", "metadata_hash", "thumb"} <= made.keys():
            raise StoreError(f"the collection {self.collection!r} of {self.location} is not a "
                             "Vitrine store's (its fields are "
                             f"{', '.join(sorted(made)) or 'none'}); index into another "
                             "collection.")
        return made

    def _create(self, name: str, schema, index) -> None:
        """Create a collection, unless another writer (a shard started at the same time)
        has just made it: then use that one (the caller checks it is of its kind)."""
        try:
            self.client.create_collection(name, schema=schema, index_params=index, **READS)
        except Exception as exc:
            if "exist" not in str(exc).lower() or not self.client.has_collection(name):
                raise
        self.client.load_collection(name)

    def _has_products(self) -> bool:
        return self.client.has_collection(self.collection)

    # ---- manifest -------------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        rows = self.client.query(self.meta_collection, filter=f"key == {quote(key)}",
                                 output_fields=["value"], **READS)
        return rows[0]["value"] if rows else None

    def _set_meta(self, key: str, value: str) -> None:
        self._set_metas({key: value})

    def _set_metas(self, values: dict[str, str]) -> None:
        """Several meta rows in one upsert."""
        self.client.upsert(self.meta_collection, [{"key": key, "value": value,
                                                   "dummy": [0.0, 1.0]}
                                                  for key, value in values.items()])

    def manifest(self) -> ModelManifest | None:
        value = self._meta("manifest")
        return ModelManifest.read(value, self.location) if value else None

    def set_manifest(self, manifest: ModelManifest) -> None:
        if not self._has_products():  # (first: a copy killed between the two, the manifest
            self._create_products(manifest.dim)  # written, never made it and never could)
        else:  # (one already there: of this model's size and Vitrine's, or refused unrecorded)
            self._check_products(manifest.dim)
        self._products_made = True
        self._set_meta("manifest", json.dumps(manifest.as_dict(), sort_keys=True))

    def _set_or_forget(self, key: str, value: str | None) -> None:
        if value is None:
            self.client.delete(self.meta_collection, filter=f"key == {quote(key)}")
        else:
            self._set_meta(key, value)

    def duplicate_cache(self) -> bytes | None:
        """The saved bytes, from meta rows of at most 64 KiB of base64 each; None when a part
        is missing or another writer changed them meanwhile (their sha256 no longer agrees)."""
        try:
            parts, sha = json.loads(self._meta("duplicates") or "[0, null]")
            rows = {r["key"]: r["value"] for r in self.client.query(
                self.meta_collection, filter='key like "duplicates/%"',
                output_fields=["key", "value"], **READS)}  # one query for all the rows
            data = b"".join(base64.b64decode(rows.get(f"duplicates/{i}", ""))
                            for i in range(int(parts)))
        except (ValueError, TypeError):  # damaged rows: no cache
            return None
        return data if parts and hashlib.sha256(data).hexdigest() == sha else None

    def set_duplicate_cache(self, data: bytes) -> None:
        text = base64.b64encode(data).decode()
        parts = [text[i:i + 65_532] for i in range(0, len(text), 65_532)]  # 4-char groups
        head = self._meta("duplicates")
        if parts:
            self._set_metas({f"duplicates/{i}": part for i, part in enumerate(parts)})
        self._set_meta("duplicates", json.dumps([len(parts), hashlib.sha256(data).hexdigest()]))
        try:
            before = int(json.loads(head)[0]) if head else 0
        except (ValueError, TypeError, IndexError, KeyError):
            before = 0
        stale = [f"duplicates/{i}" for i in range(len(parts), before)]
        if stale:
            self.client.delete(self.meta_collection, filter=f"key in {quote(stale)}")

    def photo_hashes(self) -> dict:
        """Nothing: a Milvus store is written from several machines, whose files' times
        and inodes say nothing to each other; every run reads its photos."""
        return {}

    def set_photo_hashes(self, fresh: dict, keep: set[str] | None = None) -> None:
        """Nothing kept (:meth:`photo_hashes`)."""

    # ---- writes ---------------------------------------------------------------------------
    def lock_for_writing(self, wait: float = 0.0) -> None:
        """Milvus serialises writes itself; several writers (shards) may run at once."""

    def too_long(self, product: Product | StoredProduct) -> str | None:
        """Why a field of ``product`` does not fit the collection's (:data:`LIMITS`)."""
        unit = "characters" if self._lite else "bytes"
        for field, limit in LIMITS.items():
            text = str(getattr(product, field))
            size = len(text) if self._lite else len(text.encode())
            if size > limit:
                return (f"its {field.replace('_', ' ')} is {size:,} {unit} long, more than a "
                        f"Milvus store holds ({limit:,})")
        size = len(json.dumps(dict(product.attributes), ensure_ascii=False,
                              separators=(",", ":")).encode())  # as pymilvus sends it
        if size > ATTRIBUTES_LIMIT:
            return (f"its other columns (attributes) take {size:,} bytes, more than a Milvus "
                    f"store holds ({ATTRIBUTES_LIMIT:,})")
        return None

    def _check_lengths(self, products: Iterable[Product | StoredProduct]) -> None:
        for p in products:
            problem = self.too_long(p)
            if problem:
                raise StoreError(f"product {p.product_id!r}: {problem}.")

    def upsert(self, records: Sequence[Record]) -> None:
        self._check_lengths(r.product for r in records)
        with self._changing():
            if records and not self._products_made:
                if not self._has_products():  # (a store an older Vitrine left so: its
                    # manifest written, no collection)
                    self._create_products(len(records[0].vector))
                self._products_made = True
            if records:
                self.client.upsert(self.collection, [self._row(r.product, r.content_sha256,
                                                               r.phash, r.thumb, r.vector)
                                                     for r in records])
                self._wrote(len(records))

    def _wrote(self, rows: int) -> None:
        """Flush a Milvus Lite file every ``LITE_FLUSH_ROWS`` rows written (a Milvus server's
        memory is its own, and it seals its segments itself)."""
        if self._lite:
            self._unflushed += rows
            if self._unflushed >= LITE_FLUSH_ROWS:
                self.client.flush(self.collection)
                self._unflushed = 0

    @contextmanager
    def _changing(self) -> Iterator[None]:
        """A write of products: the orders kept are dropped before and after it, so that an
        order read meanwhile (another thread's page: the server lists without its lock) is
        not kept without it."""
        self._forget_orders()
        try:
            yield
        finally:
            self._forget_orders()

    def _forget_orders(self) -> None:
        with self._orders_lock:
            self._orders.clear()
            self._written += 1

    @staticmethod
    def _row(p: Product | StoredProduct, sha: str, phash: str, thumb: bytes,
             vector: np.ndarray) -> dict:
        meta_hash = p.metadata_hash() if isinstance(p, Product) else ""
        return {"product_id": p.product_id, "image": str(p.image), "category": p.category,
                "name": p.name, "price": p.price, "description": p.description,
                "attributes": dict(p.attributes), "content_sha256": sha,
                "metadata_hash": meta_hash, "phash": phash, "thumb": thumb.hex(),
                "vector": np.asarray(vector, dtype=np.float32).tolist()}

    def update_metadata(self, products: Sequence[Product]) -> None:
        """New metadata for stored products, their photo, hashes and vector kept: a page of
        them read and written back at a time (one product at a time took 10 s for 1,215)."""
        self._check_lengths(products)
        with self._changing():
            for i in range(0, len(products), WRITE_PAGE):
                page = products[i:i + WRITE_PAGE]
                held = {r["product_id"]: r for r in self._lookup(
                    [p.product_id for p in page],
                    ["product_id", "content_sha256", "phash", "thumb", "vector"])}
                rows = [self._row(p, row["content_sha256"], row["phash"],
                                  bytes.fromhex(row["thumb"]),
                                  np.asarray(row["vector"], dtype=np.float32))
                        for p in page if (row := held.get(p.product_id)) is not None]
                if rows:
                    self.client.upsert(self.collection, rows)
                    self._wrote(len(rows))

    def set_thumbs(self, thumbs: dict[str, tuple[str, bytes]]) -> list[str]:
        """New thumbnails, the thumbnail field alone written (a partial upsert): a whole row
        read and written back undid what another client, the server, wrote to it in between
        (a name edited, a photo replaced). A row whose photo was replaced meanwhile keeps
        the thumbnail's first part alone (768 bytes, as an older Vitrine's), which the next
        run makes again from its new photo. Where the server cannot write a field
        alone (Milvus before 2.6), the rows are read whole and written back as before."""
        from pymilvus.exceptions import MilvusException

        ids, written = list(thumbs), []
        with self._changing():
            for i in range(0, len(ids), WRITE_PAGE):
                page = ids[i:i + WRITE_PAGE]
                held = {r["product_id"]: r["content_sha256"]
                        for r in self._lookup(page, ["product_id", "content_sha256"])}
                rows = [{"product_id": pid, "thumb": thumbs[pid][1].hex()}
                        for pid in page if held.get(pid) == thumbs[pid][0]]
                if not rows:
                    continue
                try:
                    self.client.upsert(self.collection, rows, partial_update=True)
                except MilvusException:  # (a row deleted meanwhile, or an older Milvus)
                    written += self._set_whole_thumbs(page, thumbs)
                    continue
                self._wrote(len(rows))
                done = [row["product_id"] for row in rows]
                now = {r["product_id"]: r["content_sha256"]
                       for r in self._lookup(done, ["product_id", "content_sha256"])}
                if moved := [{"product_id": pid,
                              "thumb": thumbs[pid][1][:THUMB_BYTES].hex()} for pid in done
                             if pid in now and now[pid] != thumbs[pid][0]]:
                    with contextlib.suppress(MilvusException):
                        self.client.upsert(self.collection, moved, partial_update=True)
                written += [pid for pid in done if now.get(pid) == thumbs[pid][0]]
        return written

    def _set_whole_thumbs(self, ids: list[str], thumbs: dict[str, tuple[str, bytes]]
                          ) -> list[str]:
        rows = [{**{f: row[f] for f in FIELDS}, "thumb": thumbs[row["product_id"]][1].hex(),
                 "vector": np.asarray(row["vector"], dtype=np.float32).tolist()}
                for row in self._lookup(ids, FIELDS + ["vector"])
                if row["content_sha256"] == thumbs[row["product_id"]][0]]
        if rows:
            self.client.upsert(self.collection, rows)
            self._wrote(len(rows))
        return [row["product_id"] for row in rows]

    def delete(self, product_ids: Iterable[str]) -> int:
        ids = list(product_ids)
        with self._changing():
            if not ids or not self._has_products():
                return 0
            present = [r["product_id"] for r in self._lookup(ids, ["product_id"])]
            for i in range(0, len(present), PAGE):  # by filter: delete(ids=) does not
                # escape them
                self.client.delete(self.collection,
                                   filter=f"product_id in {quote(present[i:i + PAGE])}")
            return len(present)

    def index_unsaved(self) -> str | None:
        return None  # (Milvus keeps its own index)

    def flush(self, rebuild: bool = True) -> None:
        """Milvus keeps its own index; ``rebuild`` changes nothing here."""
        if self._has_products():
            self.client.flush(self.collection)
            self._unflushed = 0

    # ---- reads ----------------------------------------------------------------------------
    def _lookup(self, ids: list[str], fields: list[str]) -> list[dict]:
        """The rows of these ids (a plain query per page of ids, no iterator)."""
        if not ids or not self._has_products():
            return []
        out: list[dict] = []
        for i in range(0, len(ids), PAGE):
            page = ids[i:i + PAGE]
            out += self.client.query(self.collection, filter=f"product_id in {quote(page)}",
                                     output_fields=fields, limit=len(page), **READS)
        return out

    def _rows(self, expr: str, fields: list[str]) -> list[dict]:
        """The rows matching ``expr`` (fields without the vector)."""
        return [row for batch in self._batches(expr, fields, SCAN_PAGE) for row in batch]

    def _batches(self, expr: str, fields: list[str], size: int = PAGE
                 ) -> Iterator[list[dict]]:
        """The rows matching ``expr``, ``size`` at a time."""
        if not self._has_products():
            return
        iterator = self.client.query_iterator(self.collection, batch_size=size, filter=expr,
                                              output_fields=fields, **READS)
        escaped_cursor(iterator)
        try:
            while batch := iterator.next():
                yield batch
        finally:
            iterator.close()

    def get(self, product_id: str) -> StoredProduct | None:
        rows = self._lookup([product_id], FIELDS)
        return _to_product(rows[0]) if rows else None

    def vector(self, product_id: str) -> np.ndarray | None:
        rows = self._lookup([product_id], ["vector"])
        return np.asarray(rows[0]["vector"], dtype=np.float32) if rows else None

    def fingerprints(self) -> dict[str, tuple[str, str]]:
        rows = self._rows('product_id != ""', ["product_id", "content_sha256", "metadata_hash"])
        return {r["product_id"]: (r["content_sha256"], r["metadata_hash"]) for r in rows}

    def images(self) -> dict[str, str]:
        return {r["product_id"]: r["image"]
                for r in self._rows('product_id != ""', ["product_id", "image"])}

    def photo_facts(self) -> dict[str, PhotoFacts]:
        rows = self._rows('product_id != ""',
                          ["product_id", "image", "content_sha256", "phash", "thumb"])
        return {r["product_id"]: PhotoFacts(r["image"], r["content_sha256"], r["phash"],
                                            bytes.fromhex(r["thumb"])) for r in rows}

    def names_photo(self, photo: str) -> bool:
        return bool(self._rows(f"image == {quote(photo)}", ["product_id"]))

    def count(self) -> int:
        if not self._has_products():
            return 0
        rows = self.client.query(self.collection, filter="", output_fields=["count(*)"],
                                 **READS)
        return int(rows[0]["count(*)"])

    def categories(self) -> dict[str, int]:
        """Counted from the whole catalogue's order (:meth:`_ordered`), kept or read now and
        kept: reading it costs what reading the category of every product alone did (2 s at
        20,000 products on Milvus Lite), and the catalogue page that counts them lists it
        next."""
        order = self._kept(None) or self._read_order(None)
        return dict(sorted(Counter(row[0] for row in order.rows).items()))

    def has_category(self, category: str) -> bool:
        """From the order kept for the catalogue pages, where there is one (the page lists
        from it next; a query filtered by category scans the collection: 30-120 ms at
        20,000 products on Milvus Lite, most of a category page's time)."""
        order = self._kept(category)
        if order is not None:
            lo, hi = order.span(category)
            return hi > lo
        return self._has_products() and bool(self.client.query(
            self.collection, filter=f"category == {quote(category)}",
            output_fields=["product_id"], limit=1, **READS))

    def list_products(self, *, category: str | None = None, query: str | None = None,
                      limit: int = 50, offset: int = 0,
                      after: tuple[str, str, str, str] | None = None) -> list[StoredProduct]:
        page, stale = self._page(category or None, query, limit, offset, after)
        if stale:  # another process renamed or moved a product of the page since the order
            # kept was read: a cursor made from its row (its place now) bisected the old
            # order there, and skipped every product in between; read the order again
            self._forget_orders()
            page, _ = self._page(category or None, query, limit, offset, after)
        return page

    def _page(self, category: str | None, query: str | None, limit: int, offset: int,
              after: tuple[str, str, str, str] | None) -> tuple[list[StoredProduct], bool]:
        """A page of the order kept (or read), and whether any of its rows no longer sits
        where that order put it."""
        ordered = self._ordered(category, query, after)
        page: list[StoredProduct] = []
        stale, start = False, offset
        while len(page) < limit and start < len(ordered):  # past products deleted since
            places = ordered[start:start + limit - len(page)]
            rows = {r["product_id"]: r for r in self._lookup([p[3] for p in places], FIELDS)}
            for place in places:
                if (row := rows.get(place[3])) is not None:
                    page.append(_to_product(row))
                    stale = stale or listing_order(
                        row["category"], row["name"], row["product_id"]) != place
            start += len(places)
        return page, stale

    def _ordered(self, category: str | None, query: str | None,
                 after: tuple[str, str, str, str] | None = None
                 ) -> list[tuple[str, str, str, str]]:
        """The places (:func:`listing_order`) of the products a catalogue page lists, in its
        order. Milvus sorts no
        query, so the order's fields of every row are read (then only the page's whole rows:
        photo thumbnails and descriptions of the rest are never read, where 20,000 of them
        took 6 s a page), and the order kept for the next pages (:func:`kept_until`
        ``ORDER_TTL_S``; past that, served ``ORDER_STALE_S`` more while it is read again
        beside the requests). The whole catalogue's order serves each category's too, and
        a name search filters the order kept (no read: 1.3 s a search at 20,000 products on
        Milvus Lite), ignoring case and accents as the embedded store: Milvus' like can do
        neither, so the name filter runs here. ``after``: only those after that place
        (:func:`listing_order`)."""
        order = self._kept(category)
        if order is None:
            order = self._read_order(category)
        lo, hi = order.span(category)
        if after is not None:
            lo = max(lo, bisect.bisect_right(order.rows, after, lo, hi))
        if not query:
            return order.rows[lo:hi]
        needle = searchable(query)  # in the name or id (search_key), as the embedded store
        keys, rows = order.keys, order.rows
        return [rows[i] for i in range(lo, hi) if needle in keys[i]]

    def _kept(self, category: str | None) -> _Order | None:
        """The order kept that lists ``category`` (its own, else the whole catalogue's), or
        None; one past its time but within ``ORDER_STALE_S`` of it is served while a read
        beside the requests renews it."""
        now = time.monotonic()
        with self._orders_lock:
            for old in [c for c, o in self._orders.items() if now >= o.until + ORDER_STALE_S]:
                del self._orders[old]  # (not held for the server's life)
            order = self._orders.get(category)
            if order is None and category is not None:
                order = self._orders.get(None)
            if order is None or now < order.until:
                return order
            if not self._closed and (self._renewing is None
                                     or not self._renewing.is_alive()):  # (else being read)
                served = category if self._orders.get(category) is order else None
                self._renewing = threading.Thread(target=self._renew, args=(served,),
                                                  name="vitrine-milvus-order", daemon=True)
                self._renewing.start()
            return order

    def _renew(self, category: str | None) -> None:
        """Read the order of ``category`` again beside the requests, its search keys made
        with it (a name search then folds nothing); an error leaves the old order to
        expire."""
        try:
            self._read_order(category, renew=True)
        except Exception:  # noqa: BLE001 - (the store closed meanwhile; Milvus gone): the
            # next page past ORDER_STALE_S reads it itself and says why
            log.debug("reading the order of %s again failed", self.location, exc_info=True)

    def _read_order(self, category: str | None, renew: bool = False) -> _Order:
        """Read the order of ``category`` (None: every product) and keep it unless this
        store wrote meanwhile; one read at a time, a page waiting for another's takes it."""
        with self._reading:
            if not renew:
                kept = self._kept(category)
                if kept is not None:  # (read by the page this one waited for)
                    return kept
            with self._orders_lock:
                written = self._written
            started = time.monotonic()
            expr = ['product_id != ""']
            if category:
                expr.append(f"category == {quote(category)}")
            rows = sorted(listing_order(r["category"], r["name"], r["product_id"])
                          for r in self._rows(" and ".join(expr),
                                              ["product_id", "category", "name"]))
            order = _Order(kept_until(started, ORDER_TTL_S), rows)
            with self._orders_lock:
                if not rows and self._written == written:  # (a category no product has
                    # takes no place; one emptied by another writer is no longer served
                    # stale, walking its deleted ids, until ORDER_STALE_S: helper-186)
                    self._orders.pop(category, None)
                elif rows and self._written == written and ORDER_TTL_S > 0:
                    if category not in self._orders and len(self._orders) >= ORDERS_KEPT:
                        # the one kept for the shortest time goes
                        del self._orders[min(self._orders, key=lambda c: self._orders[c].until)]
                    self._orders[category] = order
            return order

    def all_vectors(self) -> tuple[list[str], np.ndarray]:
        """Every product id and vector; the vectors are read into arrays page by page (not
        kept as lists of Python floats: 28 bytes a number)."""
        ids: list[str] = []
        parts = []
        for batch in self._batches('product_id != ""', ["product_id", "vector"]):
            ids += [r["product_id"] for r in batch]
            parts.append(np.asarray([r["vector"] for r in batch], dtype=np.float32))
        if not parts:
            manifest = self.manifest()
            return [], np.zeros((0, manifest.dim if manifest else 0), np.float32)
        return ids, np.concatenate(parts)

    def iter_products(self, batch: int = PAGE, vectors: bool = True
                      ) -> Iterator[list[tuple[StoredProduct, np.ndarray | None]]]:
        for rows in self._batches('product_id != ""', FIELDS + ["vector"] * vectors, batch):
            yield [(_to_product(r), np.asarray(r["vector"], np.float32) if vectors else None)
                   for r in rows]

    def search(self, vector: np.ndarray, k: int, *, category: str | None = None,
               exclude: str | None = None) -> list[Match]:
        """Top-``k`` by inner product; the category and exclusion filters run inside the
        vector query."""
        if k <= 0 or not self._has_products():
            return []
        expr = []
        if category is not None:
            expr.append(f"category == {quote(category)}")
        if exclude is not None:
            expr.append(f"product_id != {quote(exclude)}")
        return self._search([vector], k, " and ".join(expr))[0]

    def search_many(self, vectors: np.ndarray, k: int, *, category: str | None = None,
                    exclude: Sequence[str] | None = None) -> list[list[Match]]:
        """:meth:`search` for each row, in requests of at most ``SEARCH_HITS`` hits; each
        query's own product is left out after (one more asked for): a filter is the whole
        request's."""
        if k <= 0 or not len(vectors) or not self._has_products():
            return [[] for _ in range(len(vectors))]
        expr = "" if category is None else f"category == {quote(category)}"
        limit = k + (exclude is not None)
        per_request = max(1, SEARCH_HITS // limit)
        found = [matches for start in range(0, len(vectors), per_request)
                 for matches in self._search(vectors[start:start + per_request], limit, expr)]
        if exclude is None:
            return found
        return [[m for m in matches if m.product.product_id != skip][:k]
                for matches, skip in zip(found, exclude, strict=True)]

    def _search(self, vectors, k: int, expr: str) -> list[list[Match]]:
        hits = self.client.search(
            self.collection, [np.asarray(v, dtype=np.float32).tolist() for v in vectors],
            limit=k, filter=expr, output_fields=FIELDS, search_params={"metric_type": "IP"},
            **READS)
        # float32 sums give 1.0000002 for a photo against itself: a cosine is within ±1
        return [[Match(_to_product(h["entity"]), min(1.0, max(-1.0, float(h["distance"]))))
                 for h in found] for found in hits]

    def replaced(self) -> bool:
        return False  # a server's collection is not swapped under a client

    def write_mark(self) -> None:
        return None  # (no record of writes: what a count keeps expires instead)

    def present(self) -> bool:
        return True  # (a collection dropped: its reads fail)

    def snapshot(self):
        """No snapshot on Milvus: reads that must agree check for rows gone between them."""
        return nullcontext()

    def close(self) -> None:
        with self._orders_lock:
            self._closed, renewing = True, self._renewing  # (no read begun after this)
        if renewing is not None:  # a read beside the requests: done before the client goes
            # (it logged pymilvus's reconnection traceback: helper-186)
            renewing.join(RENEW_JOIN_S)
        self.client.close()
        if self._lite_path is not None:
            path, self._lite_path = self._lite_path, None  # (closed twice: released once)
            _lite_release(path)
