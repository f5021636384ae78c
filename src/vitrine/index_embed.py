"""Embedding and storing an index run's new and changed photos (:func:`_embed_and_store`):
each photo decoded and embedded once for every product that shares it, vectors the store
already holds reused, commits every few products; with the model check that keeps two models'
vectors out of one store (:func:`check_manifest`) and the photo hashes a run remembers."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from vitrine.catalog import Product
from vitrine.embed import Embedder
from vitrine.errors import StoreError
from vitrine.index_report import CHANGED_WHILE_INDEXED, IndexReport, _display_path
from vitrine.manifest import ModelManifest, mismatch_error
from vitrine.progress import progress_bar
from vitrine.store.base import Record, VectorStore

UNKNOWN = (-1, -1, -1, -1)
"""A photo's file signature that no file has (``vitrine.photo_hashes.signature``)."""


def check_manifest(store: VectorStore, embedder: Embedder, *, record: bool = True,
                   refused: Callable[[VectorStore, ModelManifest], Exception] | None = None
                   ) -> bool:
    """Refuse to mix vectors of two models in one store (``refused`` makes the error, from
    the store and its model; else :func:`mismatch_error`); record the model in a new store
    (with ``record``). True when the store had no model recorded."""
    stored = store.manifest()
    if stored is None:
        if record:
            store.set_manifest(embedder.manifest)
            store.set_model_folder(_model_folder(embedder))
        return True
    if stored != embedder.manifest:
        if refused is not None:
            raise refused(store, stored)
        raise mismatch_error(store.location, stored, embedder.manifest, store.model_folder(),
                             embedder.model_dir)
    return False


def _model_folder(embedder: Embedder) -> str | None:
    """The trained model's folder a store records (None for the pretrained backbone)."""
    return None if embedder.model_dir is None else str(embedder.model_dir)


def _save_hashes(store: VectorStore, fresh: dict, keep: set[str] | None = None) -> None:
    """Remember the photos' hashes; they only spare the next run reading, so a store that
    cannot take them now (a full disk) has its photos read again next time."""
    with contextlib.suppress(StoreError):
        store.set_photo_hashes(fresh, keep)


def _embed_and_store(to_embed: list[tuple[Product, str]], stored: dict, store: VectorStore,
                     embedder: Embedder, report: IndexReport, root: Path,
                     show_progress: bool, commit_every: int,
                     lent: Callable[[], None] = lambda: None,
                     skipped_ids: set[str] | None = None) -> None:
    """Embed and store ``to_embed``, every ``commit_every`` products; the ids of the products
    skipped (their photo unreadable, or changed as it was read) are added to ``skipped_ids``."""
    skipped_ids = set() if skipped_ids is None else skipped_ids
    pending: list[Record] = []

    def commit() -> None:
        if pending:  # (a writer beside this one, a Milvus shard, with another model)
            check_manifest(store, embedder, record=False)
        store.upsert(pending)
        for rec in pending:
            if rec.product.product_id in stored:
                report.updated += 1
            else:
                report.indexed += 1
        pending.clear()

    # products sharing a photo (one picture for every size of a shirt), or photos with the
    # same bytes, are decoded and embedded once
    by_sha: dict[str, list[Product]] = {}
    for product, sha in to_embed:
        by_sha.setdefault(sha, []).append(product)
    for sha, phash, thumb, vector in _held_vectors(store, stored, by_sha):
        pending.extend(Record(product, sha, phash, thumb, vector) for product in by_sha.pop(sha))
        if len(pending) >= commit_every:
            commit()
    commit()  # (the products of photos already held, before hours of embedding)
    lent()
    shas = list(by_sha)
    changed: list[Path] = []
    with progress_bar("Embedding", len(shas), enabled=show_progress) as adv:
        while shas:
            again = []  # groups whose photo read changed, to try with another of their paths
            for result in embedder.embed_paths([by_sha[sha][0].image for sha in shas],
                                               on_progress=None if changed else adv):
                sha = shas[result.index]
                if result.error is None and result.sha256 != sha:
                    # replaced since it was hashed: its products are skipped and it is read
                    # again next time; the group's other paths may still hold those bytes
                    photo = by_sha[sha][0].image
                    changed.append(photo)
                    report.skipped.extend(
                        {"path": _display_path(p.image, root), "reason": CHANGED_WHILE_INDEXED}
                        for p in by_sha[sha] if p.image == photo)
                    report.unlisted -= sum(p.unlisted for p in by_sha[sha] if p.image == photo)
                    skipped_ids.update(p.product_id for p in by_sha[sha] if p.image == photo)
                    if rest := [p for p in by_sha[sha] if p.image != photo]:
                        by_sha[sha] = rest
                        again.append(sha)
                    continue
                if result.error is not None:
                    report.skipped.extend({"path": _display_path(product.image, root),
                                           "reason": result.error} for product in by_sha[sha])
                    report.unlisted -= sum(p.unlisted for p in by_sha[sha])  # (not indexed)
                    skipped_ids.update(p.product_id for p in by_sha[sha])
                    continue
                report.photos_embedded += 1
                pending.extend(Record(product, sha, result.phash, result.thumb, result.vector)
                               for product in by_sha[sha])
                if len(pending) >= commit_every:
                    commit()
            shas = again
    commit()
    if changed:  # (a signature no file has: the next run reads them, whatever was kept)
        _save_hashes(store, {str(p): (UNKNOWN, "") for p in changed})


def _held_vectors(store: VectorStore, stored: dict, by_sha: dict[str, list[Product]]
                  ) -> Iterator[tuple[str, str, bytes, np.ndarray]]:
    """(sha256, phash, thumbnail, vector) the store already holds for photos of ``by_sha``
    (sha256 → products), one at a time: a new product listed with another product's photo (a
    new size of a shirt) gets them, read instead of embedded again. The vector is read
    before the row that vouches for it (a Milvus store may be written meanwhile)."""
    owner = {fp[0]: pid for pid, fp in stored.items() if fp[0] in by_sha}
    for sha, pid in owner.items():
        vector = store.vector(pid)
        product = store.get(pid) if vector is not None else None
        if product is not None and product.content_sha256 == sha:
            yield sha, product.phash, product.thumb, vector
