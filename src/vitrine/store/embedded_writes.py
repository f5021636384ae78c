"""The embedded store's writes of products (:class:`EmbeddedWrites`, a part of
:class:`vitrine.store.embedded.EmbeddedStore`): products with their vectors inserted or
replaced, their fields and thumbnails changed, products deleted; each in one transaction."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import numpy as np

from vitrine.catalog import Product
from vitrine.store.base import Record
from vitrine.store.search_key import search_key


class EmbeddedWrites:
    """The product writes of an :class:`~vitrine.store.embedded.EmbeddedStore`."""

    # ---- writes ---------------------------------------------------------------------------
    def upsert(self, records: Sequence[Record]) -> None:
        """Insert or replace products with their vectors, in one transaction."""
        if not records:
            return
        with self._transaction() as gen:
            for rec in records:
                p = rec.product
                vec = np.ascontiguousarray(rec.vector, dtype=np.float32)
                self.db.execute(
                    "INSERT INTO products(product_id, image, category, name, price, "
                    "description, attributes, content_sha256, metadata_hash, phash, thumb, vector, "
                    "search_key) "
                    "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(product_id) DO UPDATE SET "
                    "image=excluded.image, category=excluded.category, name=excluded.name, "
                    "price=excluded.price, description=excluded.description, "
                    "attributes=excluded.attributes, content_sha256=excluded.content_sha256, "
                    "metadata_hash=excluded.metadata_hash, phash=excluded.phash, "
                    "thumb=excluded.thumb, vector=excluded.vector, "
                    "search_key=excluded.search_key",
                    (p.product_id, str(p.image), p.category, p.name, p.price, p.description,
                     json.dumps(p.attributes, sort_keys=True), rec.content_sha256,
                     p.metadata_hash(), rec.phash, rec.thumb, vec.tobytes(),
                     search_key(p.name, p.product_id)))
                self._changed(gen, p.product_id)

    def update_metadata(self, products: Sequence[Product]) -> None:
        """Change names, prices, categories… of stored products without touching vectors: the
        FAISS index stays (no new generation); readers drop their category filters."""
        if not products:
            return
        with self._transaction(new_generation=False):
            self._bump("categories")
            for p in products:
                self.db.execute(
                    "UPDATE products SET image=?, category=?, name=?, price=?, description=?, "
                    "attributes=?, metadata_hash=?, search_key=? WHERE product_id=?",
                    (str(p.image), p.category, p.name, p.price, p.description,
                     json.dumps(p.attributes, sort_keys=True), p.metadata_hash(),
                     search_key(p.name, p.product_id), p.product_id))

    def set_thumbs(self, thumbs: dict[str, tuple[str, bytes]]) -> list[str]:
        """New thumbnails in one transaction; the vectors and the FAISS index stay (no new
        generation)."""
        if not thumbs:
            return []
        written = []
        with self._transaction(new_generation=False):
            for pid, (sha, thumb) in thumbs.items():
                if self.db.execute("UPDATE products SET thumb=? WHERE product_id=? AND "
                                   "content_sha256=?", (thumb, pid, sha)).rowcount:
                    written.append(pid)
        return written

    def delete(self, product_ids: Iterable[str]) -> int:
        ids = list(product_ids)
        if not ids:
            return 0
        removed = 0
        with self._transaction() as gen:
            for pid in ids:
                self._changed(gen, pid)
                removed += self.db.execute("DELETE FROM products WHERE product_id=?",
                                           (pid,)).rowcount
        return removed
