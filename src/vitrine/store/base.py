"""The store protocol and the records it returns."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np

from vitrine.catalog import Product
from vitrine.manifest import ModelManifest
from vitrine.photo_hashes import Signature
from vitrine.store.filters import ProductFilter


def attribute_tally(attributes: Iterable[dict[str, str]], most: int
                    ) -> dict[str, dict[str, int]]:
    """:meth:`VectorStore.attribute_values` of the products' ``attributes`` (text values
    only, as a filter matches them), counted here (a store that cannot count them itself)."""
    tally: dict[str, Counter[str]] = {}
    for held in attributes:
        for key, value in (held or {}).items():
            if isinstance(value, str):
                tally.setdefault(key, Counter())[value] += 1
    return {key: dict(sorted(values.items())) for key, values in sorted(tally.items())
            if len(values) <= most}


def kept_until(started: float, ttl: float) -> float:
    """Until when (``time.monotonic``) a value read since ``started`` is reused: ``ttl``
    seconds after the read ended, or twice as long as it took when that is longer, up to six
    times ``ttl`` (a read of 25 s, stamped when it began, was stale when stored: every page
    of a 100,000-product Milvus Lite catalogue read them all again). A ``ttl`` of 0 or less
    keeps nothing."""
    now = time.monotonic()
    return now + min(max(ttl, 2 * (now - started)), 6 * ttl) if ttl > 0 else now


class PhotoFacts(NamedTuple):
    """What the duplicate search reads of each product: its photo and the photo's hashes."""

    image: str
    content_sha256: str
    phash: str
    thumb: bytes


@dataclass
class StoredProduct:
    """A product as the store holds it."""

    product_id: str
    image: str
    category: str = ""
    name: str = ""
    price: float | None = None
    description: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    content_sha256: str = ""
    phash: str = ""
    thumb: bytes = b""
    uploaded: bool = False
    """Added or replaced through the API (``vitrine index`` leaves it as it is)."""
    edited: bool = False
    """A catalogue product edited through the API (``vitrine index`` keeps its fields while
    no product table's row names it: :data:`vitrine.catalog.EDITED`)."""

    def to_product(self, **changes: object) -> Product:
        """The product record to write back, with ``changes`` (fields of :class:`Product`)."""
        fields = {"image": Path(self.image), "category": self.category, "name": self.name,
                  "price": self.price, "description": self.description,
                  "attributes": dict(self.attributes), "uploaded": self.uploaded,
                  "edited": self.edited, **changes}
        return Product(product_id=self.product_id, **fields)

    def as_dict(self) -> dict:
        return {"product_id": self.product_id, "name": self.name, "category": self.category,
                "price": self.price, "description": self.description, "image": self.image,
                "attributes": dict(self.attributes)}


@dataclass
class Match:
    product: StoredProduct
    score: float

    def as_dict(self) -> dict:
        return {**self.product.as_dict(), "score": round(float(self.score), 6)}


@dataclass
class Record:
    """What the indexer writes for one product."""

    product: Product
    content_sha256: str
    phash: str
    thumb: bytes
    vector: np.ndarray


class VectorStore(Protocol):
    """What every store implements (embedded SQLite + FAISS, Milvus)."""

    location: str
    """Where the store lives, as the user named it (for messages)."""
    exclusive_writer: bool
    """True when :meth:`lock_for_writing` keeps every other writer out (the embedded store's
    lock file); Milvus lets several writers in at once."""
    concurrent_reads: bool
    """True when several threads may read through the store at once without a lock of the
    caller's (Milvus: its client is thread-safe); the embedded store's SQLite connection and
    FAISS index are shared, so the server reads it under one lock."""
    hides_photos: bool
    """True when :meth:`search_many` also takes ``exclude_photos`` (photo sha256s whose
    products it leaves out inside its search: a product's copies, :mod:`vitrine.copies`,
    whose :func:`~vitrine.copies.hiding_search` alone reads it): both stores do (Milvus in
    its filter); a store that does not is searched deeper instead."""

    def lock_for_writing(self, wait: float | None = ...) -> None:
        """Keep other writers out from now until the store closes, waiting up to ``wait``
        seconds for one at work (None: the store's own wait); a StoreError when it does not
        end in time."""
        ...
    def too_long(self, product: Product | StoredProduct) -> str | None:
        """Why the store cannot hold ``product`` (a field longer than it keeps), or None."""
        ...
    def flush(self, rebuild: bool = True) -> None:
        """Make the writes searchable by other processes; without ``rebuild`` (a write
        through the API) nothing long (an index rebuild) is done now."""
        ...
    def index_unsaved(self) -> str | None:
        """Why the search index this process built last could not be saved for other
        processes (a full disk), None when it was or the store keeps none of its own."""
        ...
    def manifest(self) -> ModelManifest | None: ...
    def set_manifest(self, manifest: ModelManifest) -> None: ...
    def catalog_folder(self) -> str | None:
        """The catalogue folder `vitrine index` last indexed into the store (absolute path);
        None before the first run, or for a store written before it was recorded."""
    def set_catalog_folder(self, folder: str | None) -> None:
        """Record ``folder``; None forgets the one recorded."""
    def catalog_link(self) -> str | None:
        """The path `vitrine index` was last given when it was a link to the catalogue
        folder (absolute, the link not followed: ``…/current``), else None."""
    def set_catalog_link(self, link: str | None) -> None: ...
    def catalog_listed(self) -> bool | None:
        """Whether the catalogue `vitrine index` last read had a product table listing its
        products; None for a store written before it was recorded."""
    def set_catalog_listed(self, listed: bool) -> None: ...
    def model_folder(self) -> str | None:
        """The trained model's folder `vitrine index` last indexed with (absolute path), else
        None (the pretrained backbone, or a store written before it was recorded)."""
    def set_model_folder(self, folder: str | None) -> None: ...
    def duplicate_cache(self) -> bytes | None:
        """What :meth:`set_duplicate_cache` saved last (the duplicate pairs of the last search,
        ``vitrine.dedupe_store``), or None."""
    def set_duplicate_cache(self, data: bytes) -> None: ...
    def photo_hashes(self) -> dict[str, tuple[Signature, str]]:
        """Catalogue photo path → ((size, mtime_ns, ctime_ns, inode), sha256) kept by the
        last ``vitrine index`` (``vitrine.photo_hashes``); empty where none are kept."""
    def set_photo_hashes(self, fresh: dict[str, tuple[Signature, str]],
                         keep: set[str] | None = None) -> None: ...
    def upsert(self, records: Sequence[Record]) -> None: ...
    def update_metadata(self, products: Sequence[Product]) -> None: ...
    def set_thumbs(self, thumbs: dict[str, tuple[str, bytes]]) -> list[str]:
        """Give stored products new thumbnails (product_id → (the photo sha256 it must still
        hold, the thumbnail)), nothing else of them changed (the vector, hashes, fields, the
        listing order); the ids written (not one deleted or given another photo since)."""
        ...
    def delete(self, product_ids: Iterable[str]) -> int: ...
    def get(self, product_id: str) -> StoredProduct | None: ...
    def vector(self, product_id: str) -> np.ndarray | None: ...
    def fingerprints(self) -> dict[str, tuple[str, str]]: ...
    def images(self) -> dict[str, str]: ...
    def photo_facts(self) -> dict[str, PhotoFacts]:
        """product_id → its photo (as :meth:`images` gives it) and the photo's hashes."""
        ...
    def names_photo(self, photo: str) -> bool:
        """Whether any product's photo is ``photo`` (a path as :meth:`images` gives them)."""
        ...
    def count_photo(self, sha: str) -> int:
        """How many products' photos are the file of sha256 ``sha`` (its bytes, by any
        path): :func:`vitrine.dedupe_store.recount_shared`."""
        ...
    def shared_photo_counts(self) -> dict[str, int]:
        """Photo sha256 → how many products' photos are that file, where more than one are
        (:func:`vitrine.dedupe_store.recount_every_shared`), counted inside the store."""
        ...
    def search(self, vector: np.ndarray, k: int, *, category: str | None = None,
               exclude: str | None = None, where: ProductFilter | None = None
               ) -> list[Match]:
        """The ``k`` products most similar to ``vector``, of ``category`` only, without
        ``exclude``, of ``where``'s prices and attributes only (inside the vector query)."""
        ...
    def search_many(self, vectors: np.ndarray, k: int, *, category: str | None = None,
                    exclude: Sequence[str] | None = None,
                    where: ProductFilter | None = None) -> list[list[Match]]:
        """:meth:`search` for each row of ``vectors`` at once, ``exclude[i]`` left out of the
        i-th's results."""
        ...
    def list_products(self, *, category: str | None = None, query: str | None = None,
                      limit: int = 50, offset: int = 0,
                      after: tuple[str, str, str, str] | None = None,
                      where: ProductFilter | None = None) -> list[StoredProduct]:
        """A page of products in the catalogue's order (``LISTING_ORDER``), filtered by
        ``category`` (``""``: the products without one; None: every product), by a part
        of the name or id and by ``where``'s prices and attributes, from ``offset`` on, or
        from the place after ``after`` (:func:`vitrine.store.search_key.listing_order`, a
        cursor)."""
        ...
    def count(self) -> int: ...
    def count_products(self, *, category: str | None = None,
                       where: ProductFilter | None = None) -> int:
        """The products of ``category`` (None: all) and ``where`` (a filtered listing's
        count, which :meth:`categories` cannot tell)."""
        ...
    def categories(self) -> dict[str, int]: ...
    def attribute_values(self, most: int) -> dict[str, dict[str, int]]:
        """Attribute key → {value: products holding it} over every product, for each key of
        at most ``most`` distinct values (a key of more, a code or a free text, is left out:
        the pages offer a list of each key's values)."""
        ...
    def has_category(self, category: str) -> bool:
        """Whether a product is of ``category`` (one row read, not a count of them all)."""
        ...
    def all_vectors(self) -> tuple[list[str], np.ndarray]: ...
    def iter_products(self, batch: int, vectors: bool = True
                      ) -> Iterator[list[tuple[StoredProduct, np.ndarray | None]]]:
        """Every product with its vector (None without ``vectors``), ``batch`` at a time
        (a copy of any size in bounded memory), in the store's order."""
        ...
    def replaced(self) -> bool:
        """True when the store's files are now others than those opened (open it again)."""
        ...
    def write_mark(self) -> object | None:
        """Something that changes with every write of products, or of the duplicate cache
        (:meth:`set_duplicate_cache`), by any process (None where the store keeps no such
        record)."""
        ...
    def present(self) -> bool:
        """False when the store's files are gone (its folder deleted or moved away)."""
        ...
    def snapshot(self) -> contextlib.AbstractContextManager:
        """Reads inside see one committed state (the embedded store); a no-op on Milvus."""
        ...
    def close(self) -> None: ...


class CatalogRecord:
    """The catalogue folder and link a store records (:meth:`VectorStore.catalog_folder`,
    :meth:`VectorStore.catalog_link`), in its meta rows: ``_meta(key)`` reads one and
    ``_set_or_forget(key, value)`` writes or (None) deletes it."""

    def catalog_folder(self) -> str | None:
        return self._meta("catalog")

    def set_catalog_folder(self, folder: str | None) -> None:
        self._set_or_forget("catalog", folder)

    def catalog_link(self) -> str | None:
        return self._meta("catalog_link")

    def set_catalog_link(self, link: str | None) -> None:
        self._set_or_forget("catalog_link", link)

    def catalog_listed(self) -> bool | None:
        value = self._meta("catalog_listed")
        return None if value is None else value == "1"

    def set_catalog_listed(self, listed: bool) -> None:
        self._set_or_forget("catalog_listed", "1" if listed else "0")

    def model_folder(self) -> str | None:
        return self._meta("model_folder")

    def set_model_folder(self, folder: str | None) -> None:
        self._set_or_forget("model_folder", folder)

    def copying_from(self) -> str | None:
        """The store a `vitrine migrate` into this one copies from, until the copy is done
        (an interrupted copy looked complete to `info`, `serve` and `related`)."""
        return self._meta("copying_from")

    def set_copying_from(self, source: str | None) -> None:
        self._set_or_forget("copying_from", source)
