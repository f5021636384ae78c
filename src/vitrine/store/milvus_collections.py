"""The Milvus store's collections (:class:`MilvusCollections`, a part of
:class:`vitrine.store.milvus_store.MilvusStore`): the products' schema, the longest text each
of its fields holds, a product written as a row and read back from one, and the small
collection of meta rows beside it (the model manifest, the catalogue recorded, the duplicate
groups' cache), each made once, by whichever writer gets there first."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable

import numpy as np

from vitrine.catalog import CATEGORY_MAX, EDITED, UPLOADED, Product
from vitrine.errors import StoreError
from vitrine.manifest import ModelManifest
from vitrine.store.base import StoredProduct
from vitrine.store.milvus_support import quote

FIELDS = ["product_id", "image", "category", "name", "price", "description", "attributes",
          "content_sha256", "metadata_hash", "phash", "thumb"]
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


def _to_product(row: dict) -> StoredProduct:
    return StoredProduct(product_id=row["product_id"], image=row["image"],
                         category=row["category"], name=row["name"], price=row.get("price"),
                         description=row["description"],
                         attributes=dict(sorted((row["attributes"] or {}).items())),  # as the
                         # embedded store keeps them, whatever order the table had
                         content_sha256=row["content_sha256"], phash=row["phash"],
                         thumb=bytes.fromhex(row["thumb"]),
                         uploaded=row["metadata_hash"].startswith(UPLOADED),
                         edited=row["metadata_hash"].startswith(EDITED))


class MilvusCollections:
    """The collections of :class:`vitrine.store.milvus_store.MilvusStore` (its client,
    their names and ``_lite`` are the store's)."""

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

    # ---- rows -----------------------------------------------------------------------------
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

    @staticmethod
    def _row(p: Product | StoredProduct, sha: str, phash: str, thumb: bytes,
             vector: np.ndarray) -> dict:
        meta_hash = p.metadata_hash() if isinstance(p, Product) else ""
        return {"product_id": p.product_id, "image": str(p.image), "category": p.category,
                "name": p.name, "price": p.price, "description": p.description,
                "attributes": dict(p.attributes), "content_sha256": sha,
                "metadata_hash": meta_hash, "phash": phash, "thumb": thumb.hex(),
                "vector": np.asarray(vector, dtype=np.float32).tolist()}
