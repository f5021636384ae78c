"""Indexing a catalogue folder into a store: add new photos, re-embed changed ones, remove
deleted ones, report skipped files and duplicate groups."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from vitrine.catalog import (
    UPLOAD_NAME,
    UPLOADED,
    Product,
    catalogue_state,
    category_form,
    category_twins,
    counted_twins,
    recategorised,
)
from vitrine.catalog_csv import tables_below, tables_not_csv
from vitrine.dedupe import DuplicateRules
from vitrine.dedupe_views import current
from vitrine.embed import Embedder
from vitrine.errors import VitrineError
from vitrine.index_checks import (
    _check_other_folder,
    _check_removals,
    _check_table_gone,
    _refused,
    _same_folder,
    catalogue_link,
    refuse_undecodable,
)
from vitrine.index_duplicates import store_duplicates
from vitrine.index_embed import _embed_and_store, _model_folder, _save_hashes, check_manifest
from vitrine.index_report import (
    OUTSIDE_FOLDER,
    OUTSIDE_PHOTO,
    TABLE_BELOW,
    TABLE_NOT_CSV,
    IndexReport,
    _display_path,
)
from vitrine.photo_hashes import PhotoHashes, unreadable_reason
from vitrine.progress import progress_bar
from vitrine.split import Catalogue, read_catalogue
from vitrine.store import UPLOAD_TMP, cleanable_uploads, unmarked_upload
from vitrine.store.base import VectorStore
from vitrine.store.writer_lock import part_abandoned
from vitrine.thumb_upgrade import upgrade_thumbnails

COMMIT_EVERY = 64

log = logging.getLogger(__name__)


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
        facts = None  # (memory: 1.6 kB of thumbnail a product, not held through the build)
    store.flush()
    report.index_unsaved = store.index_unsaved()
    report.seconds = time.perf_counter() - started
    return report


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
    refused: list[OSError] = []
    for path in entries:
        if (m := UPLOAD_TMP.fullmatch(path.name)) and part_abandoned(path, int(m[1])):
            _removed(path, refused)
    files = [p for p in entries if p.is_file() and UPLOAD_NAME.fullmatch(p.name)]
    named = {Path(image).name for image in store.images().values()} if files else set()
    removed = sum(_removed(p, refused) for p in files if p.name not in named)
    if refused:  # (the run's work was stored; its end, duplicates and index, still runs)
        log.warning("note: %d file(s) no product uses in %s could not be deleted (%s); "
                    "delete them as their owner, or give this user access there.",
                    len(refused), uploads, refused[0].strerror or refused[0])
    return removed


def _removed(path: Path, refused: list[OSError]) -> bool:
    """Delete ``path``; one this user may not delete (another user's folder: a server once
    run as root made STORE/uploads) is added to ``refused``: it stopped every later `index`
    with status 2, after its products were stored, before the duplicates and the index."""
    try:
        path.unlink(missing_ok=True)
        return True
    except OSError as exc:
        refused.append(exc)
        return False
