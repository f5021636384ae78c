"""What an index run makes of the catalogue before anything is written: each product's photo
checked (to embed, its fields alone changed, unchanged, or skipped with its reason:
:func:`_what_to_embed`) against what the store holds (:class:`_Held`), and the removals that
would follow refused without --replace (:func:`_refuse_losses`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from vitrine.catalog import EDITED, Product
from vitrine.index_checks import (
    _check_other_folder,
    _check_removals,
    _check_table_gone,
    _refused,
    _same_folder,
)
from vitrine.index_report import OUTSIDE_PHOTO, IndexReport, _display_path
from vitrine.index_uploads import unmarked_uploads
from vitrine.photo_hashes import PhotoHashes, unreadable_reason
from vitrine.progress import progress_bar
from vitrine.store.base import VectorStore


class _Held(NamedTuple):
    """What the store holds that a run's checks compare the catalogue with."""

    fingerprints: dict[str, tuple[str, str]]  # every stored product's (sha256, metadata hash)
    stored: dict[str, tuple[str, str]]  # those of this shard's products
    images: Callable[[], dict[str, str]]  # store.images cached: read once by the checks
    unmarked: list[str]  # the API's products stored before the mark (marked by the run)
    all_uploaded: set[str]  # the API's products, of any shard
    uploaded: set[str]  # those of this shard


class _Found(NamedTuple):
    """What the checks of the catalogue's photos found."""

    to_embed: list[tuple[Product, str]]  # new or changed photos, with their sha256
    meta_only: list[Product]  # products whose fields alone changed
    skipped_ids: set[str]  # products this run skips: not said to be as indexed
    gone: set[str]  # stored catalogue products whose photo file no longer exists
    linked: int  # of them, those refused for their real path (VITRINE_FOLLOW_OUTSIDE_LINKS)
    unlisted_skipped: int  # (the line says they were indexed)
    edits_kept: set[str]  # products whose fields edited through the API are kept


def _what_to_embed(products: list[Product], store: VectorStore, root: Path, stored: dict,
                   hashes: PhotoHashes, report: IndexReport, *, follow_outside: bool,
                   show_progress: bool) -> _Found:
    """Check each product's photo: to embed (new or changed), its fields alone changed,
    unchanged, or skipped with its reason (removed from the store when its file is gone)."""
    unlisted_skipped = 0  # (the line says they were indexed)
    skipped_ids: set[str] = set()  # products this run skips: not said to be as indexed
    gone: set[str] = set()  # stored catalogue products whose photo file no longer exists
    linked = 0  # of them, those refused for their real path (VITRINE_FOLLOW_OUTSIDE_LINKS)
    edits_kept: set[str] = set()

    to_embed: list[tuple[Product, str]] = []
    meta_only: list[Product] = []
    with progress_bar("Checking", len(products), enabled=show_progress, unit="files") as adv:
        for product in products:
            refused = _refused(product, store, root, follow_outside)
            if refused is None:
                try:
                    sha = hashes.sha256(product.image)
                except OSError as exc:
                    refused = unreadable_reason(exc), isinstance(exc, FileNotFoundError)
            if refused is not None:
                reason, drop = refused
                unlisted_skipped += product.unlisted
                skipped_ids.add(product.product_id)
                if drop and product.product_id in stored:
                    gone.add(product.product_id)
                    linked += reason == OUTSIDE_PHOTO
                    reason += "; removed from the store"
                report.skipped.append({"path": _display_path(product.image, root),
                                       "reason": reason})
                adv(1)
                continue
            previous = stored.get(product.product_id)
            if previous is not None and previous[1].startswith(EDITED) and not product.listed:
                product = _as_edited(product, store)  # (no table's row names it: the
                report.edits_kept += 1  # fields a PATCH gave it stay; helper-394)
                edits_kept.add(product.product_id)
            if previous is None or previous[0] != sha:
                to_embed.append((product, sha))
            elif previous[1] != product.metadata_hash():
                meta_only.append(product)
            else:
                report.unchanged += 1
            adv(1)
    return _Found(to_embed, meta_only, skipped_ids, gone, linked, unlisted_skipped,
                  edits_kept)


def _as_edited(product: Product, store: VectorStore) -> Product:
    """``product`` (a catalogue photo no table's row names) with the fields an edit through
    the API gave it, as the store holds them, and the mark that keeps them."""
    held = store.get(product.product_id)
    if held is None:  # (removed meanwhile by another writer: the catalogue's)
        return product
    return held.to_product(image=product.image, uploaded=False, edited=True,
                           unlisted=product.unlisted)


def _refuse_losses(store: VectorStore, root: Path, link: str | None,
                   shard: tuple[int, int] | None, uploads: Path | None,
                   refused_links: list[Path] | None, everything: list[Product], listed: bool,
                   held: _Held, found: _Found, report: IndexReport, keep: set[str],
                   remove: list[str]) -> None:
    """Refuse, before anything is written, a run that would remove catalogue products
    indexed from another folder, or every one the store (or shard) holds."""
    stored, images, uploaded = held.stored, held.images, held.uploaded
    readable = len(found.to_embed) + len(found.meta_only) + report.unchanged
    if shard is not None:  # (another shard's photos are the folder's too)
        readable = readable or any(os.path.exists(p.image) for p in everything)
        if not _same_folder(store, root, link):  # (uploads before the mark: of any shard)
            _check_other_folder(store, root, link, everything, held.fingerprints,
                                held.all_uploaded | set(unmarked_uploads(
                                    store, images, uploads, held.fingerprints, root,
                                    {p.product_id: p.image.name for p in everything})))
    catalogue_ids = [pid for pid in stored if pid not in uploaded]
    # (first: the more telling reason, also where the removals alone are refused: a
    # store of an older Vitrine was told to check the folder was complete and pass
    # --replace: helper-223). With a table, the products its rows do not find (bare file
    # names in its image column, most rows or all of them; in a shard too)
    _check_table_gone(store, images, root, catalogue_ids, remove,
                      [p for p in found.meta_only if not p.edited],  # (theirs kept)
                      everything if shard else [p for p, _ in found.to_embed], everything,
                      listed, edits_kept=found.edits_kept)
    _check_removals(store, root, link, catalogue_ids, remove, len(found.gone) - found.linked,
                    shard, readable=readable,
                    linked=(found.linked, len(refused_links or ())),
                    listed=keep | found.gone, images=images)
