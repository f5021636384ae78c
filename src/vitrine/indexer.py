"""Indexing a catalogue folder into a store: add new photos, re-embed changed ones, remove
deleted ones, report skipped files and duplicate groups."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import numpy as np

from vitrine.catalog import (
    UPLOAD_NAME,
    UPLOADED,
    Product,
    catalogue_state,
    category_form,
    category_problem,
    category_twins,
    counted_twins,
    id_problem,
    recategorised,
)
from vitrine.catalog_csv import tables_below, tables_not_csv
from vitrine.dedupe import DuplicateRules
from vitrine.dedupe_groups import duplicate_groups
from vitrine.dedupe_store import store_checksums, store_pairs, vector_checksums
from vitrine.dedupe_views import current
from vitrine.embed import Embedder
from vitrine.errors import StoreError, VitrineError
from vitrine.manifest import ModelManifest, mismatch_error
from vitrine.photo_hashes import PhotoHashes, unreadable_reason
from vitrine.progress import progress_bar
from vitrine.split import Catalogue, read_catalogue
from vitrine.store import UPLOAD_TMP, cleanable_uploads, unmarked_upload
from vitrine.store.base import PhotoFacts, Record, StoredProduct, VectorStore
from vitrine.store.writer_lock import part_abandoned
from vitrine.thumb_upgrade import upgrade_thumbnails

COMMIT_EVERY = 64


@dataclass
class IndexReport:
    indexed: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    uploaded: int = 0
    orphan_photos: int = 0
    unlisted: int = 0
    """Photos the product table does not list, indexed as products named after their file."""
    category_from_table: list[dict] = field(default_factory=list)
    """Products whose table category differs from their photo's folder (the table's wins)."""
    category_twins: list[list[dict]] = field(default_factory=list)
    """Categories that differ only in case, accents or spaces (``catalog.category_twins``)."""
    skipped: list[dict] = field(default_factory=list)
    duplicates: list[list[str]] = field(default_factory=list)
    duplicates_searched: bool = True
    """False when the store holds more products than ``DuplicateRules.max_products``."""
    photos_embedded: int = 0
    """Distinct photos decoded and embedded (products sharing a photo share its vector)."""
    photos_read: int = 0
    """Photos read to hash them: the others' size, times and inode had not changed
    (``vitrine.photo_hashes``)."""
    index_unsaved: str | None = None
    """Why the search index could not be saved at the run's end (a full disk): each later
    process builds the whole index in its first search (minutes for a large HNSW store,
    every page waiting in the server), where the run said nothing and exited 0."""
    duplicates_compared: int = 0
    """Products compared with the whole store to find duplicates: those changed since the
    last search when its pairs could be reused (``vitrine.dedupe_store``), else all."""
    duplicates_without_views: int = 0
    """Products whose thumbnail an older Vitrine made (768 bytes, no second view; 1,568, a
    view that was only mirrored: ``vitrine.dedupe_views``) and that could not be made again
    (their photo missing, unreadable or changed): padded, squared, mirrored or turned
    copies of them are not found (those of a mirrored view's, only beside another such
    view's)."""
    thumbnails_upgraded: int = 0
    """Products whose thumbnail an older Vitrine made, made again from their photo before
    the duplicate search (``vitrine.thumb_upgrade``; the vectors kept)."""
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"indexed": self.indexed, "updated": self.updated, "removed": self.removed,
                "unchanged": self.unchanged, "uploaded": self.uploaded,
                "orphan_photos": self.orphan_photos, "unlisted": self.unlisted,
                "category_from_table": self.category_from_table,
                "category_twins": self.category_twins,
                "skipped": self.skipped,
                "duplicates": self.duplicates,
                "duplicates_searched": self.duplicates_searched,
                "duplicates_compared": self.duplicates_compared,
                "duplicates_without_views": self.duplicates_without_views,
                "thumbnails_upgraded": self.thumbnails_upgraded,
                "photos_embedded": self.photos_embedded, "photos_read": self.photos_read,
                "index_unsaved": self.index_unsaved,
                "seconds": round(self.seconds, 3)}


class RemovalRefused(VitrineError):
    """An index run that would remove catalogue products it should not without --replace:
    those indexed from another folder, or every one of them."""


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


def _display_path(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def in_shard(product_id: str, shard: tuple[int, int] | None) -> bool:
    """Stable assignment of products to shard ``i`` of ``n`` (by a hash of the id)."""
    if shard is None:
        return True
    i, n = shard
    # (the id of a photo whose file name is not UTF-8 holds its bytes as surrogates: it is
    # skipped with its reason, not a traceback here)
    return int(hashlib.sha1(product_id.encode("utf-8", "surrogateescape")).hexdigest()[:8],
               16) % n == i


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'I/N' → (I, N), 0 ≤ I < N; None when not given (an empty text is refused: every
    machine of a cluster indexed the whole catalogue)."""
    if text is None:
        return None
    if not text.strip():
        raise VitrineError("--shard is empty (an unset shell variable?); use I/N, for "
                           "example 0/4.")
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise VitrineError(f"--shard {text!r}: use I/N, for example 0/4.") from None
    if not (n >= 1 and 0 <= i < n):
        raise VitrineError(f"--shard {text!r}: I must be between 0 and N-1.")
    return i, n


def index_catalog(catalog_dir: Path, store: VectorStore, embedder: Embedder, *,
                  rules: DuplicateRules | None = None, show_progress: bool = True,
                  commit_every: int = COMMIT_EVERY,
                  shard: tuple[int, int] | None = None,
                  uploads: Path | None = None, replace: bool = False,
                  rehash: bool = False, catalogue: Catalogue | None = None,
                  state: tuple | None = None,
                  refused_links: list[Path] | None = None) -> IndexReport:
    """Bring ``store`` in line with the catalogue folder. Commits every ``commit_every``
    products, so an interrupted run keeps its work and a rerun continues from there.

    Products added or replaced through the API (marked so; or stored before the mark, see
    ``vitrine.store.unmarked_upload``, and marked now) are left as they are, even when the
    catalogue lacks or lists their id; ``report.uploaded`` counts them.

    With ``shard=(i, n)`` only the products of shard ``i`` are added, updated or removed, so
    ``n`` processes (or machines) can index one catalogue into one Milvus store together.

    A photo is read only when its file changed since the store last saw it, unless ``rehash``
    (:class:`vitrine.photo_hashes.PhotoHashes`).

    ``catalogue`` is the folder as :func:`vitrine.split.read_catalogue` read it with
    ``uploads`` (a caller that checked it first); read here when None, or when the folder's
    :func:`vitrine.catalog.catalogue_state` is no longer ``state``, taken before it was read:
    a run that waited for its model or for another writer applied the table it read before
    that wait over a later run's newer one (helper-179).

    With ``refused_links`` (a list: VITRINE_FOLLOW_OUTSIDE_LINKS=false, for a supplier's
    catalogue that is not trusted) a photo whose real path is outside the catalogue folder
    (a link to it, a row of the table through a linked folder) is skipped and removed from
    the store, and a link to a folder outside it is not entered, but named: the server would
    serve any photo of this machine that a link names. The list holds the folders
    ``catalogue``'s reading refused (filled here when the catalogue is read here).

    A catalogue product whose photo file no longer exists is removed from the store (a photo
    that cannot be read keeps what the store holds). The store records the folder it was
    indexed from; unless ``replace``, a run that would remove catalogue products indexed from
    another folder, or every catalogue product the store (or shard) holds, is refused before
    anything is written (:class:`RemovalRefused`)."""
    started = time.perf_counter()
    root = Path(catalog_dir).resolve() if Path(catalog_dir).exists() else Path(catalog_dir)
    link = catalogue_link(catalog_dir)
    refuse_undecodable(catalog_dir, embedder.model_dir)  # (before anything is written)
    store.lock_for_writing()  # (the catalogue is read, or known unchanged, under the lock)
    if state is not None and catalogue_state(
            root, follow_outside=refused_links is None) != state:
        catalogue = None
        if refused_links:  # (the links refused by the first reading: read anew)
            refused_links.clear()
    # (a catalogue split in train/val/test folders: its categories are the folders under
    # them, not "train" and "test"; a photo outside them is said, not silently left out)
    products, given, outside = catalogue or read_catalogue(  # (not the API's photos in it)
        root, uploads, refused_links=refused_links)
    everything = products  # (a shard's checks of removals look at the whole catalogue)
    listed = any(p.listed for p in everything)  # (a product table read)
    products = [p for p in products if in_shard(p.product_id, shard)]
    outside = [p for p in outside if in_shard(_display_path(p, root), shard)]
    new_store = check_manifest(store, embedder, record=False)
    report = IndexReport()
    report.skipped += [{"path": _display_path(p, root),
                        "reason": "outside the train/val/test folders of a split catalogue; "
                                  "move it into one to index it"} for p in outside]
    report.skipped += [{"path": _display_path(p, root), "reason": OUTSIDE_FOLDER}
                       for p in refused_links or ()]
    if given is None and not listed:
        report.skipped += [{"path": _display_path(t, root), "reason": TABLE_BELOW}
                           for t in tables_below(root)]
        report.skipped += [{"path": _display_path(t, root), "reason": TABLE_NOT_CSV}
                           for t in tables_not_csv(root)]
    fingerprints = store.fingerprints()
    stored = {pid: fp for pid, fp in fingerprints.items() if in_shard(pid, shard)}
    images = functools.cache(store.images)  # (read once by the checks: nothing written yet)
    unmarked = unmarked_uploads(store, images, uploads, stored, root,
                                 {p.product_id: p.image.name for p in products})
    all_uploaded = {pid for pid, (_, meta) in fingerprints.items()
                    if meta.startswith(UPLOADED)} | set(unmarked)
    uploaded = all_uploaded & stored.keys()
    report.uploaded = len(uploaded)
    # the API's id in either Unicode form (a Mac's file names are decomposed; the API reads,
    # edits and deletes it by either): not a second product of the same id beside it
    taken = {category_form(pid) for pid in all_uploaded}  # (NFC, as categories are kept)
    products = [p for p in products
                if category_form(p.product_id) not in taken]
    unlisted_skipped = 0  # (the line says they were indexed)
    skipped_ids: set[str] = set()  # products this run skips: not said to be as indexed
    gone: set[str] = set()  # stored catalogue products whose photo file no longer exists
    linked = 0  # of them, those refused for their real path (VITRINE_FOLLOW_OUTSIDE_LINKS)

    to_embed: list[tuple[Product, str]] = []
    meta_only: list[Product] = []
    hashes = PhotoHashes({} if rehash else store.photo_hashes())
    with progress_bar("Checking", len(products), enabled=show_progress, unit="files") as adv:
        for product in products:
            refused = _refused(product, store, root, refused_links is None)
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
            if previous is None or previous[0] != sha:
                to_embed.append((product, sha))
            elif previous[1] != product.metadata_hash():
                meta_only.append(product)
            else:
                report.unchanged += 1
            adv(1)

    report.unlisted = sum(p.unlisted for p in products) - unlisted_skipped
    keep = ({p.product_id for p in products} - gone) | uploaded
    remove = [pid for pid in stored if pid not in keep]
    if not replace:  # nothing is written before this check
        readable = len(to_embed) + len(meta_only) + report.unchanged
        if shard is not None:  # (another shard's photos are the folder's too)
            readable = readable or any(os.path.exists(p.image) for p in everything)
            if not _same_folder(store, root, link):  # (uploads before the mark: of any shard)
                _check_other_folder(store, root, link, everything, fingerprints,
                                    all_uploaded | set(unmarked_uploads(
                                        store, images, uploads, fingerprints, root,
                                        {p.product_id: p.image.name for p in everything})))
        catalogue_ids = [pid for pid in stored if pid not in uploaded]
        # (first: the more telling reason, also where the removals alone are refused: a
        # store of an older Vitrine was told to check the folder was complete and pass
        # --replace: helper-223). With a table, the products its rows do not find (bare file
        # names in its image column, most rows or all of them; in a shard too)
        _check_table_gone(store, images, root, catalogue_ids, remove, meta_only,
                          everything if shard else [p for p, _ in to_embed], everything,
                          listed)
        _check_removals(store, root, link, catalogue_ids, remove, len(gone) - linked, shard,
                        readable=readable, linked=(linked, len(refused_links or ())),
                        listed=keep | gone, images=images)
    hashes.known = {}  # (memory: a million paths)
    images.cache_clear()  # (the same: ~200 MB at a million products, helper-235)
    # kept even if the run stops while embedding; photos gone from the catalogue forgotten
    _save_hashes(store, hashes.fresh, keep=hashes.seen if shard is None else None)
    if new_store:  # (checked again: a writer beside this one, a Milvus shard, may have
        check_manifest(store, embedder)  # recorded its model since: it was overwritten)
    if store.catalog_folder() != str(root):
        store.set_catalog_folder(str(root))
    if store.catalog_link() != link:
        store.set_catalog_link(link)
    # (what _check_table_gone asks next time)
    if store.catalog_listed() != listed:
        store.set_catalog_listed(listed)
    if store.model_folder() != _model_folder(embedder):  # (named when the store is searched
        store.set_model_folder(_model_folder(embedder))  # without it)
    _mark_uploaded(store, unmarked)

    store.update_metadata(meta_only)
    report.updated += len(meta_only)
    # products gone from the catalogue go before the embedding (minutes to hours): the
    # server listed and found them, their photos 404s, until its end (helper-245); those
    # whose photo a product to embed has (an id changed) stay until their vector is stored
    # under it, which is also before the embedding (``lent``: helper-247)
    needed = {sha for _, sha in to_embed}
    report.removed = store.delete([pid for pid in remove if stored[pid][0] not in needed])

    def lent() -> None:  # (their vectors copied and stored: the old ids go now, not hours on)
        report.removed += store.delete([pid for pid in remove if stored[pid][0] in needed])

    _embed_and_store(to_embed, stored, store, embedder, report, root, show_progress,
                     commit_every, lent, skipped_ids)
    # the categories of the products indexed, not of those skipped (a photo deleted with its
    # row kept, whose table category and folder, read from the row, were said as moved, or
    # made a twin category the pages never showed)
    report.category_from_table = recategorised(
        [p for p in products if p.product_id not in skipped_ids])
    # a skipped product the store still holds (its photo unreadable, or not a photo any
    # more: the store keeps what it had) is still on the pages, under its stored category
    kept = skipped_ids & (stored.keys() - gone)
    if shard is not None or not (uploaded or kept):  # (else the store's, once written)
        report.category_twins = category_twins(
            [p for p in everything if p.product_id not in skipped_ids - kept])
    else:  # the store's twins, the API's products in them (a folder renamed "Relógio"
        # while products sent as "relogio" keep theirs: the pages listed both, and index
        # said nothing), and the skipped products it keeps
        report.category_twins = counted_twins(store.categories())
    report.photos_read = hashes.read
    if shard is None and store.exclusive_writer:
        report.orphan_photos = _prune_orphan_photos(store, uploads)  # own uploads/ only
    rules = rules or embedder.duplicate_rules()
    report.duplicates_searched = store.count() <= rules.max_products
    if report.duplicates_searched:  # (the thumbnails' one reader: made again only for it)
        facts = store.photo_facts()
        mine = functools.partial(in_shard, shard=shard)
        aged = any(not current(f.thumb) for f in facts.values())
        report.thumbnails_upgraded = upgrade_thumbnails(
            store, facts, embedder, commit_every=commit_every, show_progress=show_progress,
            mine=mine)
        if aged and not store.exclusive_writer:  # (read again: another writer, a Milvus
            facts = None  # shard, made its thumbnails again or embedded meanwhile)
        report.duplicates, report.duplicates_compared, report.duplicates_without_views = \
            store_duplicates(store, root, rules, uploaded=all_uploaded,
                             show_progress=show_progress, facts=facts, mine=mine)
    store.flush()
    report.index_unsaved = store.index_unsaved()
    report.seconds = time.perf_counter() - started
    return report


CHANGED_WHILE_INDEXED = ("the photo changed while it was being indexed (its products are "
                         "left as they were); the next run reads it again")
UNKNOWN = (-1, -1, -1, -1)
"""A photo's file signature that no file has (``vitrine.photo_hashes.signature``)."""
OUTSIDE_PHOTO = ("its real path is outside the catalogue folder (through a symbolic link), "
                 "which VITRINE_FOLLOW_OUTSIDE_LINKS=false refuses")
TABLE_BELOW = ("a product table in a category folder is not read (only one in the catalogue "
               "folder itself is, its image column giving each photo's path from there); "
               "move it there")
TABLE_NOT_CSV = ("a product table is read only as CSV, named products.csv or produtos.csv; "
                 "save it as CSV from the spreadsheet (Excel: Save As, CSV) beside it")
OUTSIDE_FOLDER = ("a link to a folder outside the catalogue folder, which "
                  "VITRINE_FOLLOW_OUTSIDE_LINKS=false refuses: not read")


def _refused(product: Product, store: VectorStore, root: Path,
             outside_links: bool) -> tuple[str, bool] | None:
    """Why ``product`` cannot be indexed, known before its photo is read, and whether the
    store's product of its id goes too (else it keeps what it holds); None when it can be."""
    if not _utf8(str(product.image)):  # the store keeps names as UTF-8 text
        return "its file name is not UTF-8; rename it", False
    if problem := id_problem(product.product_id):  # it would have no page, photo or similar
        # products of its own
        return (f"product id {product.product_id!r}: {problem}; give it another id in the "
                "product table"), False
    if not outside_links and not Path(os.path.realpath(product.image)).is_relative_to(root):
        return OUTSIDE_PHOTO, True
    if problem := category_problem(product.category) or store.too_long(product):
        # (one the pages could not choose; a Milvus store's field limits)
        return (f"product {product.product_id!r}: {problem}; shorten it in the product "
                "table"), False
    return None


def _save_hashes(store: VectorStore, fresh: dict, keep: set[str] | None = None) -> None:
    """Remember the photos' hashes; they only spare the next run reading, so a store that
    cannot take them now (a full disk) has its photos read again next time."""
    with contextlib.suppress(StoreError):
        store.set_photo_hashes(fresh, keep)


def catalogue_link(catalog_dir: Path | str) -> str | None:
    """The catalogue folder's path when it was given as a link, or a folder of one
    (`current -> releases/…`, `current/catalogue`: whose next release is the same
    catalogue): that link in its folder with every link there resolved, then the folder
    under it as given; one spelling whatever the working folder or `..` (taken as text,
    `other/../current` named another folder's `current`). None otherwise: a link higher up
    (`work -> projects/clientA`, a mount's alias) moved to another folder is another
    catalogue, as is `current/..`."""
    given = Path(catalog_dir).absolute()
    parts = given.parts
    for n in (len(parts), len(parts) - 1):
        link = Path(*parts[:n])
        if n > 1 and link.is_symlink():
            rest = parts[n:]
            return None if ".." in rest else str(Path(link.parent.resolve(), link.name, *rest))
    return None


def _check_other_folder(store: VectorStore, root: Path, link: str | None,
                        everything: list[Product], fingerprints: dict, uploaded: set[str]
                        ) -> None:
    """For a shard: refuse another folder than the recorded one that would remove catalogue
    products of any shard, by their ids and whether their photo files are there (a shard
    with nothing of its own to remove recorded the new folder, and the next shard then
    removed its products without --replace). One stat a product: only when the folder
    changed."""
    there = {p.product_id for p in everything if os.path.exists(p.image)}
    catalogue = [pid for pid in fingerprints if pid not in uploaded]
    remove = [pid for pid in catalogue if pid not in there]
    _check_removals(store, root, link, catalogue, remove, 0, None, readable=len(there))


def _same_folder(store: VectorStore, root: Path, link: str | None) -> bool:
    """Whether ``root`` (given through ``link``) is the catalogue folder the store records,
    or none is recorded yet."""
    recorded = store.catalog_folder()
    return recorded is None or recorded == str(root) or (
        link is not None and store.catalog_link() == link)


def _check_removals(store: VectorStore, root: Path, link: str | None, catalogue: list[str],
                    remove: list[str], missing: int, shard: tuple[int, int] | None, *,
                    readable: int, linked: tuple[int, int] = (0, 0),
                    listed: set[str] = frozenset(),
                    images: Callable[[], dict[str, str]] | None = None) -> None:
    """Refuse a run that would remove catalogue products indexed from another folder than
    ``root`` (as the store recorded it; but for a catalogue given through the link it was
    given through last time, ``link``: a release link moved to the next release), or every
    catalogue product the store holds (of this shard) while no photo of the folder can be
    read (an unmounted drive, photos moved away), or while the store records no folder. Ids
    that all changed in the recorded folder while its photos are there (a new product
    table, renamed files) pass: ``readable`` counts the photos this run found. ``linked``:
    the photos and folders VITRINE_FOLLOW_OUTSIDE_LINKS=false refused (not missing, nor
    unlisted); ``listed``: the ids this run's folder lists (their photos this folder's,
    whether read or not)."""
    if not remove:
        return
    recorded = store.catalog_folder()
    held = f"{len(catalogue)} catalogue products" + (
        f" in shard {shard[0]}/{shard[1]}" if shard else "")
    if not _same_folder(store, root, link):
        unlinked = (f" (given as {link}: this store, indexed by a Vitrine from before 5 Dec "
                    "2026, records no link; if that link pointed at the old folder, --replace "
                    "once and later releases through it need none)"
                    if link is not None and store.catalog_link() is None else "")
        raise RemovalRefused(
            f"the store {store.location} holds {held} indexed from {recorded}; indexing "
            f"{root}{unlinked} would remove {len(remove)} of them. Pass --replace to "
            f"`vitrine index` to make {root} its catalogue, or use another store.")
    if recorded is None:
        _check_photos_elsewhere(store, images or store.images, root, link, held, catalogue,
                                [pid for pid in remove if pid not in listed])
    if len(remove) == len(catalogue) and (not readable or recorded is None):
        # with photos found in the folder it records, every id changed (a new product table,
        # renamed files); a store that records no folder yet cannot tell that from another
        # folder
        photos, folders = linked
        unlisted = len(remove) - missing - photos
        kinds = [(n, what) for n, what in (
            (missing, "photo file{s} missing"), (unlisted, "product{s} no longer listed"),
            (photos, "photo{s} outside the catalogue folder"),
            (folders, "linked folder{s} outside it not read")) if n]
        only = kinds[0][1] if len(kinds) == 1 else None
        why = ("their photo files are missing" if only == "photo file{s} missing" else
               "the folder lists none of them" if only == "product{s} no longer listed"
               else ", ".join(f"{n} " + what.format(s="s" if n > 1 else "")
                              for n, what in kinds))
        if photos or folders:
            why += ", which VITRINE_FOLLOW_OUTSIDE_LINKS=false refuses"
        raise RemovalRefused(
            f"indexing {root} would remove every one of the {held} of the store "
            f"{store.location} ({why}); check that the folder is complete (a network drive "
            "not mounted, photos moved away) or pass --replace to `vitrine index` to index "
            "it as it is.")


def _check_photos_elsewhere(store: VectorStore, images: Callable[[], dict[str, str]],
                            root: Path, link: str | None, held: str, catalogue: list[str],
                            remove: list[str]) -> None:
    """For a store that records no catalogue folder (indexed by a Vitrine from before
    2026-12-01): refuse a run that would remove more than a tenth of its catalogue products
    whose photos are still there, outside ``root`` (another folder's products: the first run
    after an upgrade, of a wrong folder, removed 30 of 40 products, exit 0; helper-223). A
    catalogue copied elsewhere, a few products deleted in the copy, goes ahead. Given
    through a link (the next release of a catalogue: the store recorded no link either),
    the sentence says so."""
    if 10 * len(remove) <= len(catalogue):
        return
    images = images()
    elsewhere = [images[pid] for pid in remove if pid in images
                 and not Path(images[pid]).is_relative_to(root) and os.path.exists(images[pid])]
    if 10 * len(elsewhere) <= len(catalogue):
        return
    folder = os.path.commonpath([os.path.dirname(image) for image in elsewhere[:10_000]])
    given = (f"; if {link}, which leads to {root}, is the catalogue's next release, pass "
             "--replace to `vitrine index` (the store records no release link either)"
             if link is not None else "")
    raise RemovalRefused(
        f"the store {store.location} records no catalogue folder (an older Vitrine indexed "
        f"it), and {len(elsewhere)} of its {held} have photos outside {root} that are still "
        f"there (under {folder}): indexing {root} would remove them{given}. Index the folder "
        f"they come from, pass --replace to `vitrine index` to make {root} its catalogue, or "
        "use another store.")


TABLE_GONE_SAMPLE = 200
"""Products :func:`_check_table_gone` reads back from the store to tell whether a product
table had named them."""


def _check_table_gone(store: VectorStore, images: Callable[[], dict[str, str]], root: Path,
                      catalogue: list[str], remove: list[str], meta_only: list[Product],
                      new: list[Product], everything: list[Product], table: bool) -> None:
    """Refuse a run that reads no product table (or one whose rows do not find their photos)
    in which most of the store's catalogue products that a table had named (a name other
    than the file's, a price, a description or other columns), their photos unmoved, would
    become products named by their files: the table deleted or moved, every name,
    price and description would go, exit 0 (helper-179), whether their ids came from it
    (re-keyed: a new id, the photo's path) or not (the same id, the table's fields gone:
    helper-185). A few products kept or unlisted before do not hide it; photos renamed, or a
    store whose last run read no table (its products edited through the API get their catalogue
    values back), go ahead."""
    if not catalogue or not (remove or meta_only):
        return
    # only the products this run names by their files: every one without a table; with one,
    # a photo named as a file a row names and does not find (not a photo it never listed,
    # whose values the API may have edited, nor one whose row the shop dropped: helper-251);
    # ids a table changes are its own to change. ``new``: the products that may take a
    # removed one's photo (a shard's: the whole catalogue's, a re-keyed product's new id
    # in another shard than its old one); ``table``: a product table was read
    # (with a table: each row that does not find its photo accounts for one photo of that
    # file name at most; many photos share a name, main.jpg in a folder per product, and
    # one stale row counted every one of them)
    unfound = Counter(p.image.name for p in everything
                      if p.listed and not os.path.lexists(p.image)) if table else Counter()

    def by_file(p: Product) -> bool:
        return not p.listed and (not table or p.image.name in unfound)

    def take(path: str) -> bool:  # (without a table every photo is named by its file)
        name = PurePath(path).name
        if not table:
            return True
        if unfound[name] <= 0:
            return False
        unfound[name] -= 1
        return True

    photos = {str(p.image) for p in new if by_file(p)}
    names = {p.image.name for p in new if by_file(p)} if table else set()
    images = images() if remove and photos else {}
    # (a row's photo moved to another folder, the row not changed: matched by file name)
    changed = [pid for pid in remove if pid in images and (
        images[pid] in photos or PurePath(images[pid]).name in names) and take(images[pid])]
    if store.catalog_listed():  # (the last run read a table: its fields going counts too;
        # a store from before that record was kept: only ids going, since products edited
        # through the API get their catalogue values back in a run without a table:
        # helper-191)
        changed += [p.product_id for p in meta_only if by_file(p) and take(str(p.image))]
    if not changed:
        return
    sample = changed[:TABLE_GONE_SAMPLE]
    named = sum(_named_by_a_table(store.get(pid)) for pid in sample)
    if 2 * named <= len(sample):
        return
    if 2 * len(changed) <= len(catalogue):  # (a minority of the store: refused where it is
        # most of the products a table named, those of a table that named a few, the other
        # photos unlisted; the whole store's half let such a table go, exit 0)
        going = set(changed)
        kept = [pid for pid in catalogue if pid not in going]
        probe = kept[::max(1, len(kept) // TABLE_GONE_SAMPLE)][:TABLE_GONE_SAMPLE]
        still = sum(_named_by_a_table(store.get(pid)) for pid in probe)
        if probe and len(changed) * named * len(probe) <= len(kept) * still * len(sample):
            return
    raise RemovalRefused(
        f"indexing {root} would turn {len(changed)} of the {len(catalogue)} catalogue products "
        f"of the store {store.location} into products named by their photo files, dropping "
        "their names, prices and descriptions: " + (
            "the product table's image cells do not name their photos (each cell gives "
            "the photo's path from the catalogue folder, such as category/photo.jpg); "
            "correct them" if table else "no product table lists their photos any more "
            "(products.csv deleted or moved?); put the table back") + ", or pass --replace to "
        "`vitrine index` to index the photos as they are.")


def _named_by_a_table(product: StoredProduct | None) -> bool:
    """Whether a stored product holds what only a product table gives."""
    return product is not None and (
        product.price is not None or bool(product.description) or bool(product.attributes)
        or product.name != Path(product.image).stem)


def refuse_undecodable(catalog_dir: Path, model_dir: Path | None) -> None:
    """A VitrineError naming the catalogue folder, the link it was given through or the
    trained model's folder when its path is not UTF-8 (a folder a zip made on Windows named,
    or an old drive): the store records each as UTF-8 text, and the run ended in a
    UnicodeEncodeError traceback after its work (status 1, and again at every later run
    with that model), its photos all skipped as "not UTF-8"."""
    root = Path(catalog_dir).resolve() if Path(catalog_dir).exists() else Path(catalog_dir)
    for what, path in (("catalogue folder", root), ("catalogue link",
                                                     catalogue_link(catalog_dir)),
                       ("model folder", model_dir)):
        if path is not None and not _utf8(str(path)):
            raise VitrineError(f"the {what} {path} has a path that is not UTF-8 (named by "
                               "another system, such as a zip made on Windows); rename it "
                               "(the store keeps it as UTF-8 text).")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def unmarked_uploads(store: VectorStore, images: Callable[[], dict[str, str]],
                     uploads: Path | None, stored: dict, root: Path,
                     listed: dict[str, str]) -> list[str]:
    """Ids among ``stored`` that a Vitrine from before the mark added or replaced through the
    API (:func:`unmarked_upload`); never one the catalogue lists with that very photo name
    (``listed``: id → file name), which is the catalogue's own. (The demo counts them too
    before it rebuilds its store for another model.)"""
    catalogues = (root, store.catalog_folder())
    return sorted(pid for pid, image in images().items()
                  if pid in stored and not stored[pid][1].startswith(UPLOADED)
                  and listed.get(pid) != Path(image).name
                  and unmarked_upload(image, uploads, catalogues))


def _mark_uploaded(store: VectorStore, ids: list[str]) -> None:
    """Mark ``ids`` as added through the API, so that `vitrine migrate` and later runs know
    them by the mark alone."""
    for start in range(0, len(ids), COMMIT_EVERY):
        found = (store.get(pid) for pid in ids[start:start + COMMIT_EVERY])
        store.update_metadata([p.to_product(uploaded=True) for p in found if p is not None])


def _prune_orphan_photos(store: VectorStore, uploads: Path | None) -> int:
    """Delete photos in the store's own ``uploads`` folder that no product names: left by a
    server killed between saving a photo and storing its product. Safe only while this
    process holds the store's exclusive writer lock, which the server takes before it saves
    a photo. A folder set by VITRINE_UPLOAD_DIR may serve other stores too: never pruned.
    Only files named as the server names them (``<sha256>.<ext>``) are touched, and a file
    is kept when any product names a photo of that name anywhere (a moved or copied store
    still names the old folder: its photos are not orphans). Photos half-saved by a server
    killed mid-upload (``<sha256>.<ext>.<pid>.<thread>.tmp``) go too, unless their process
    still runs and wrote them within the hour (a process number is given again: a container's
    server restarted after a kill is process 1 again)."""
    if not cleanable_uploads(store, uploads) or not uploads.is_dir():
        return 0
    entries = list(uploads.iterdir())
    for path in entries:
        if (m := UPLOAD_TMP.fullmatch(path.name)) and part_abandoned(path, int(m[1])):
            path.unlink(missing_ok=True)
    files = [p for p in entries if p.is_file() and UPLOAD_NAME.fullmatch(p.name)]
    if not files:
        return 0
    named = {Path(image).name for image in store.images().values()}
    orphans = [p for p in files if p.name not in named]
    for path in orphans:
        path.unlink(missing_ok=True)
    return len(orphans)


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


def store_duplicates(store: VectorStore, root: Path, rules: DuplicateRules | None = None,
                     uploaded: set[str] | None = None, show_progress: bool = False,
                     facts: dict[str, PhotoFacts] | None = None,
                     mine: Callable[[str], bool] = lambda pid: True
                     ) -> tuple[list[list[str]], int, int]:
    """Duplicate groups among all stored products, as image paths (with the product id when
    products share one photo); a product of ``uploaded`` (added through the API, its photo
    named by its sha256) as ``product ID (added through the API)``. The pairs of the last
    search are kept and only the products changed since are compared with the store
    (:func:`vitrine.dedupe_store.store_pairs`); also returns how many were, and how many
    products' thumbnails have no second view of this Vitrine's rule (an older Vitrine made
    them). ``facts``: the
    store's :meth:`VectorStore.photo_facts` when the caller read them (read again here when
    they lack a product). ``mine``: the products counted without views (a shard's own)."""
    ids, checksums = store_checksums(store)  # (a page at a time: every vector is read into
    # memory only for a search, not to find that no product changed since the last one)
    if len(ids) < 2:
        return [], 0, 0
    records = [(facts or {}).get(pid) for pid in ids]
    if any(r is None for r in records):  # (read here, or again: products another writer, a
        # Milvus shard, stored while the caller's were made again)
        facts = store.photo_facts()
        records = [facts.get(pid) for pid in ids]
    if any(r is None for r in records):
        raise VitrineError("the store changed while looking for duplicates; run again.")
    shas = [r.content_sha256 for r in records]
    n = len(ids)

    def vectors() -> np.ndarray:
        """The vectors of ``ids``, those the checksums were made from (else the store changed
        meanwhile: another writer, a Milvus shard)."""
        again, read = store.all_vectors()
        if again != ids:
            at = dict(zip(again, range(len(again)), strict=True))
            if len(at) != len(ids) or any(pid not in at for pid in ids):
                raise VitrineError("the store changed while looking for duplicates; run again.")
            read = read[[at[pid] for pid in ids]]
        if not np.array_equal(vector_checksums(read), checksums):
            raise VitrineError("the store changed while looking for duplicates; run again.")
        return read

    pairs, compared = store_pairs(store, ids, shas, vectors, [r.phash for r in records],
                                  [r.thumb for r in records], rules or DuplicateRules(),
                                  show_progress, checksums=checksums)
    groups = duplicate_groups(n, pairs, shas)
    # named for the report: only the products in a group (display paths cost a Path each)
    photos = Counter(r.image for r in records)
    uploaded = uploaded or set()

    def key(i: int) -> str:
        pid, image = ids[i], records[i].image
        if pid in uploaded:
            return f"product {pid} (added through the API)"
        path = _display_path(Path(image), root)
        return f"{path} (product {pid})" if photos[image] > 1 else path  # one photo, two

    # by product id, within and across groups: the rows come in each backend's own order
    # (the embedded store's as added, Milvus's by id), and a report diffed between runs or
    # backends differed without a change
    ordered = sorted((sorted(g, key=ids.__getitem__) for g in groups),
                     key=lambda g: ids[g[0]])
    unviewed = sum(not current(r.thumb) and mine(pid)
                   for pid, r in zip(ids, records, strict=True))
    return [[key(i) for i in group] for group in ordered], compared, unviewed
