"""Milvus store: the same :class:`VectorStore` behaviour on Milvus Lite (an embedded file),
a standalone Milvus server or a distributed cluster, through one client (pymilvus).

One collection holds the products: product id (primary key), the vector, and the metadata
(category, name, price, description, attributes as JSON, image, hashes) next to it, so category
filters run inside the vector query. A second small collection holds the model manifest.
Installed by Vitrine's ``milvus`` extra.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext

import numpy as np

from vitrine.catalog import Product
from vitrine.dedupe_views import THUMB_BYTES
from vitrine.errors import NoStore, StoreError
from vitrine.store.base import CatalogRecord, Match, PhotoFacts, Record, StoredProduct
from vitrine.store.filters import ProductFilter
from vitrine.store.milvus_collections import FIELDS, READS, MilvusCollections, _to_product
from vitrine.store.milvus_orders import RENEW_JOIN_S, MilvusOrders, OrderKey, _Order
from vitrine.store.milvus_support import (
    _LITE_LOCK,
    _LITE_OPEN,
    _lite_release,
    _open_failure,
    escaped_cursor,
    lite_open_failures,
    quiet_client_logs,
    quiet_lite_logs,
    quote,
    require_milvus,
    too_large,
)

PAGE = 1000
SCAN_PAGE = 16_000
"""Rows a scan of a few text fields reads per request (the most Milvus returns at once):
each request of the iterator costs about as much as a whole page, 3.1 s for 20,000 rows in
pages of 1,000 against 1.5 s in pages of 16,000 on Milvus Lite."""
TOPK_MAX = 16_384
"""The most results Milvus gives one query."""
TIE = 1e-6
"""Scores this close are equal (the products of one photo file share its vector)."""
SEARCH_HITS = 10_000
"""Hits one search request asks for at most (queries × k): each comes back with every field
of its product, so `vitrine related --k 100` in pages of 1,000 queries asked for 101,000
full products at once (measured on a 3,000-product Milvus Lite store: a peak of 1.7 GiB in
the client, 0.75 GiB in requests of this size)."""
WRITE_PAGE = 256
"""Products written back in one request by update_metadata (their vectors go with them)."""
LITE_FLUSH_ROWS = 5000
"""Rows written to a Milvus Lite file between flushes: its growing segments held a copy of
every row until the one flush at the end (writing 20,000 products peaked at 1.39 GB, 0.75 GB
flushed every 5,000 rows: ``benchmarks/milvus_lite_writes.py``; helper-194)."""


class MilvusStore(MilvusCollections, MilvusOrders, CatalogRecord):
    """A Vitrine store in one Milvus collection (``location`` is shown in messages)."""

    exclusive_writer = False
    hides_photos = True
    """:meth:`search_many` takes ``exclude_photos`` (:mod:`vitrine.copies`), left out by the
    vector query's filter: a product's copies were dropped after searches four times as
    deep each time, up to Milvus' 16,384 results, so a product of a placeholder photo that
    3,000 products share was asked 10,240 deep (363 ms a list, 31 ms now), and one that
    17,000 share got fewer than k (``benchmarks/milvus_parity.py --copies``)."""
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
        self._orders: dict[OrderKey, _Order] = {}
        """A catalogue's order per category filter (None: the whole catalogue's, which
        serves every category's too): see milvus_orders.ORDER_TTL_S."""
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

    # ---- writes ---------------------------------------------------------------------------
    def lock_for_writing(self, wait: float | None = None) -> None:
        """Milvus serialises writes itself; several writers (shards) may run at once."""

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

    def _batches(self, expr: str, fields: list[str], size: int | None = None
                 ) -> Iterator[list[dict]]:
        """The rows matching ``expr``, ``size`` (``PAGE``, read at each call) at a time."""
        if not self._has_products():
            return
        size = PAGE if size is None else size
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

    def count_photo(self, sha: str) -> int:
        return len(self._rows(f"content_sha256 == {quote(sha)}", ["product_id"]))

    def shared_photo_counts(self) -> dict[str, int]:
        """Photo sha256 → its products, where more than one (every product's sha256 read
        a page at a time: Milvus groups no query)."""
        counts: Counter[str] = Counter()
        for batch in self._batches('content_sha256 != ""', ["content_sha256"]):
            counts.update(r["content_sha256"] for r in batch)
        return {sha: n for sha, n in counts.items() if n > 1}

    def count(self) -> int:
        if not self._has_products():
            return 0
        rows = self.client.query(self.collection, filter="", output_fields=["count(*)"],
                                 **READS)
        return int(rows[0]["count(*)"])

    def all_vectors(self) -> tuple[list[str], np.ndarray]:
        """Every product id and vector, written page by page into one array of the count's
        rows (pages joined at the end held every vector twice: 641 MiB for 244 MiB at
        50,000 products); rows added since the count grow it."""
        ids: list[str] = []
        out: np.ndarray | None = None
        for batch in self._batches('product_id != ""', ["product_id", "vector"]):
            rows = np.asarray([r["vector"] for r in batch], dtype=np.float32)
            if out is None:
                out = np.empty((max(self.count(), len(rows)), rows.shape[1]), np.float32)
            elif len(ids) + len(rows) > len(out):  # (added since the count: doubled)
                out.resize((max(2 * len(out), len(ids) + len(rows)), out.shape[1]),
                           refcheck=False)  # (in place: no other reference to it)
            out[len(ids):len(ids) + len(rows)] = rows
            ids += [r["product_id"] for r in batch]
        if out is None:
            manifest = self.manifest()
            return [], np.zeros((0, manifest.dim if manifest else 0), np.float32)
        return ids, out[:len(ids)]

    def iter_products(self, batch: int | None = None, vectors: bool = True
                      ) -> Iterator[list[tuple[StoredProduct, np.ndarray | None]]]:
        for rows in self._batches('product_id != ""', FIELDS + ["vector"] * vectors, batch):
            yield [(_to_product(r), np.asarray(r["vector"], np.float32) if vectors else None)
                   for r in rows]

    def search(self, vector: np.ndarray, k: int, *, category: str | None = None,
               exclude: str | None = None, where: ProductFilter | None = None
               ) -> list[Match]:
        """Top-``k`` by inner product; the category, price, attribute and exclusion filters
        run inside the vector query."""
        if k <= 0 or not self._has_products():
            return []
        expr = _filter_terms(category, where)
        if exclude is not None:
            expr.append(f"product_id != {quote(exclude)}")
        return self._search([vector], k, " and ".join(expr))[0]

    def search_many(self, vectors: np.ndarray, k: int, *, category: str | None = None,
                    exclude: Sequence[str] | None = None,
                    where: ProductFilter | None = None,
                    exclude_photos: frozenset[str] | None = None) -> list[list[Match]]:
        """:meth:`search` for each row, in requests of at most ``SEARCH_HITS`` hits; each
        query's own product is left out after (one more asked for): a filter is the whole
        request's. One whose answer is over gRPC's limit (256 MB: 10,000 hits of 25,000-
        character descriptions) is asked again in halves, and so are the rest.
        ``exclude_photos``: photo sha256s whose products the filter leaves out of every
        row's results (:attr:`hides_photos`)."""
        if k <= 0 or not len(vectors) or not self._has_products():
            return [[] for _ in range(len(vectors))]
        terms = _filter_terms(category, where)
        if exclude_photos:  # (sorted: the same photos, the same filter)
            terms.append(f"content_sha256 not in {quote(sorted(exclude_photos))}")
        expr = " and ".join(terms)
        limit = k + (exclude is not None)
        per_request = max(1, SEARCH_HITS // (limit + 1))  # (one more: ties at the last)
        found: list[list[Match]] = []
        start = 0
        while start < len(vectors):
            batch = vectors[start:start + per_request]
            try:
                found += self._search(batch, limit, expr)
            except Exception as exc:  # noqa: BLE001 - gRPC's or pymilvus's error, by message
                if len(batch) == 1 or not too_large(exc):
                    raise
                per_request = len(batch) // 2
                continue
            start += len(batch)
        if exclude is None:
            return found
        return [[m for m in matches if m.product.product_id != skip][:k]
                for matches, skip in zip(found, exclude, strict=True)]

    def _search(self, vectors, k: int, expr: str) -> list[list[Match]]:
        """The top ``k`` of each of ``vectors``, equal scores by product id: Milvus gives
        them in an order of its own, and keeps any of those tied at its last place (of the
        three products of one photo, it gave 10240-copy2 where the embedded store, which
        orders them by row, gave 10240: two stores, two products shown;
        :func:`vitrine.copies.one_a_photo`), so one more is asked and, where the k-th
        ties with it, the query again twice as deep, its ids alone (as
        :meth:`VectorIndex.search`; not 256 deep as there: a placeholder product's own search
        ties at every place, and 256 hits cost Milvus Lite 50-100 ms; a photo that 20
        products share is a placeholder, left out, and `similar` asks k deeper
        than its list where photos are shared)."""
        rows = [np.asarray(v, dtype=np.float32).tolist() for v in vectors]
        found = [[Match(_to_product(h["entity"]), _score(h)) for h in hits]
                 for hits in self._hits(rows, k + (k < TOPK_MAX), expr, FIELDS)]
        tied = [i for i, matches in enumerate(found)
                if 0 < k < len(matches) and matches[k - 1].score - matches[k].score <= TIE]
        if tied and (deeper := min(TOPK_MAX, 2 * (k + 1))) > k + 1:
            again = [sorted((-_score(h), h["entity"]["product_id"]) for h in hits)[:k]
                     for hits in self._hits([rows[i] for i in tied], deeper, expr,
                                            ["product_id"])]
            known = {m.product.product_id: m.product for i in tied for m in found[i]}
            known.update((r["product_id"], _to_product(r)) for r in self._lookup(
                sorted({pid for top in again for _, pid in top} - set(known)), FIELDS))
            for i, top in zip(tied, again, strict=True):
                found[i] = [Match(known[pid], -score) for score, pid in top if pid in known]
        return [sorted(matches, key=lambda m: (-m.score, m.product.product_id))[:k]
                for matches in found]

    def _hits(self, rows: list, k: int, expr: str, fields: list[str]) -> list[list[dict]]:
        return self.client.search(
            self.collection, rows, limit=k, filter=expr, output_fields=fields,
            search_params={"metric_type": "IP"}, **READS)

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


def _filter_terms(category: str | None, where: ProductFilter | None) -> list[str]:
    """The terms of a search's filter expression for ``category`` and ``where``."""
    terms = [] if category is None else [f"category == {quote(category)}"]
    return terms + (where.milvus() if where else [])


def _score(hit: dict) -> float:
    """A hit's cosine: float32 sums give 1.0000002 for a photo against itself."""
    return min(1.0, max(-1.0, float(hit["distance"])))
