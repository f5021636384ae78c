"""Indexing a catalogue folder into a store: add new photos, re-embed changed ones, remove
deleted ones, report skipped files and duplicate groups."""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable
from pathlib import Path

from vitrine.catalog import (
    UPLOADED,
    Product,
    catalogue_state,
    category_form,
    category_twins,
    counted_twins,
    recategorised,
)
from vitrine.catalog_csv import tables_below, tables_not_csv
from vitrine.copies import last_search
from vitrine.dedupe import DuplicateRules
from vitrine.dedupe_store import recount_every_shared
from vitrine.dedupe_views import current
from vitrine.embed import Embedder
from vitrine.errors import VitrineError
from vitrine.heap import release_freed
from vitrine.index_checks import catalogue_link, refuse_undecodable
from vitrine.index_duplicates import store_duplicates
from vitrine.index_embed import _embed_and_store, _model_folder, _save_hashes, check_manifest
from vitrine.index_plan import _Found, _Held, _refuse_losses, _what_to_embed
from vitrine.index_report import (
    OUTSIDE_FOLDER,
    TABLE_BELOW,
    TABLE_NOT_CSV,
    IndexReport,
    _display_path,
)
from vitrine.index_uploads import _prune_orphan_photos, unmarked_uploads
from vitrine.photo_hashes import PhotoHashes
from vitrine.split import Catalogue, read_catalogue
from vitrine.store.base import VectorStore
from vitrine.thumb_upgrade import upgrade_thumbnails

COMMIT_EVERY = 64


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
                  commit_every: int | None = None,
                  shard: tuple[int, int] | None = None,
                  uploads: Path | None = None, replace: bool = False,
                  rehash: bool = False, catalogue: Catalogue | None = None,
                  state: tuple | None = None,
                  refused_links: list[Path] | None = None) -> IndexReport:
    """Bring ``store`` in line with the catalogue folder. Commits every ``commit_every``
    products (None: :data:`COMMIT_EVERY`), so an interrupted run keeps its work and a rerun
    continues from there.

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
    commit_every = COMMIT_EVERY if commit_every is None else commit_every
    # read: the catalogue, under the writer lock, and what the store holds of it
    root = Path(catalog_dir).resolve() if Path(catalog_dir).exists() else Path(catalog_dir)
    link = catalogue_link(catalog_dir)
    refuse_undecodable(catalog_dir, embedder.model_dir)  # (before anything is written)
    store.lock_for_writing()  # (the catalogue is read, or known unchanged, under the lock)
    catalogue = _unless_changed(catalogue, root, state, refused_links)
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
    _say_left_out(report, root, outside, refused_links, tables=given is None and not listed)
    held = _held_by_store(store, uploads, root, products, shard)
    report.uploaded = len(held.uploaded)
    products = _without_uploaded(products, held.all_uploaded)

    # check: what to embed, and what would be removed (refused before anything is written)
    hashes = PhotoHashes({} if rehash else store.photo_hashes())
    found = _what_to_embed(products, store, root, held.stored, hashes, report,
                           follow_outside=refused_links is None, show_progress=show_progress)
    report.unlisted = sum(p.unlisted for p in products) - found.unlisted_skipped
    keep = ({p.product_id for p in products} - found.gone) | held.uploaded
    remove = [pid for pid in held.stored if pid not in keep]
    if not replace:  # nothing is written before this check
        _refuse_losses(store, root, link, shard, uploads, refused_links, everything, listed,
                       held, found, report, keep, remove)
    hashes.known = {}  # (memory: a million paths)
    held.images.cache_clear()  # (the same: ~200 MB at a million products, helper-235)
    # kept even if the run stops while embedding; photos gone from the catalogue forgotten
    _save_hashes(store, hashes.fresh, keep=hashes.seen if shard is None else None)
    _record_run(store, embedder, root, link, listed, held.unmarked, new_store=new_store,
                commit_every=commit_every)

    # write: fields, removals, new and changed photos embedded and stored
    store.update_metadata(found.meta_only)
    report.updated += len(found.meta_only)
    lent = _remove_gone(store, report, held.stored, remove, found.to_embed)
    _embed_and_store(found.to_embed, held.stored, store, embedder, report, root, show_progress,
                     commit_every, lent, found.skipped_ids)

    # after: the categories said, orphan photos pruned, duplicates, the index
    _name_categories(report, store, products, everything, held, found, shard)
    report.photos_read = hashes.read
    if shard is None and store.exclusive_writer:
        report.orphan_photos = _prune_orphan_photos(store, uploads)  # own uploads/ only
    uploaded_ids = held.all_uploaded
    # (memory: the catalogue's products, the store's fingerprints, the photos' hashes are not
    # read again; let go before the duplicate search and the index build, 25 MB of objects
    # at 16,256 products: the caller hands ``catalogue`` over, cli_store.index)
    del products, everything, catalogue, found, held, hashes, keep, remove, lent
    _search_duplicates(report, store, embedder, root, rules, uploaded_ids, shard,
                       commit_every=commit_every, show_progress=show_progress)
    release_freed()  # (the search's freed memory, ~250 MB at 65,024 products, not kept
    # under the index build's array: vitrine.heap)
    _save_index(store, report)
    report.seconds = time.perf_counter() - started
    return report


def _unless_changed(catalogue: Catalogue | None, root: Path, state: tuple | None,
                    refused_links: list[Path] | None) -> Catalogue | None:
    """``catalogue``, or None when the folder changed since ``state`` was taken before it was
    read (the links that reading refused are forgotten: read anew)."""
    if state is not None and catalogue_state(
            root, follow_outside=refused_links is None) != state:
        catalogue = None
        if refused_links:  # (the links refused by the first reading: read anew)
            refused_links.clear()
    return catalogue


def _say_left_out(report: IndexReport, root: Path, outside: list[Path],
                  refused_links: list[Path] | None, *, tables: bool) -> None:
    """Report the files the catalogue's reading left out: photos outside a split catalogue's
    folders, links to folders refused, and (with ``tables``) product tables not read."""
    report.skipped += [{"path": _display_path(p, root),
                        "reason": "outside the train/val/test folders of a split catalogue; "
                                  "move it into one to index it"} for p in outside]
    report.skipped += [{"path": _display_path(p, root), "reason": OUTSIDE_FOLDER}
                       for p in refused_links or ()]
    if tables:
        report.skipped += [{"path": _display_path(t, root), "reason": TABLE_BELOW}
                           for t in tables_below(root)]
        report.skipped += [{"path": _display_path(t, root), "reason": TABLE_NOT_CSV}
                           for t in tables_not_csv(root)]


def _held_by_store(store: VectorStore, uploads: Path | None, root: Path,
                   products: list[Product], shard: tuple[int, int] | None) -> _Held:
    """Read what the store holds: its products' fingerprints and photos, and which of them the
    API added (marked so, or stored before the mark)."""
    fingerprints = store.fingerprints()
    stored = {pid: fp for pid, fp in fingerprints.items() if in_shard(pid, shard)}
    images = functools.cache(store.images)  # (read once by the checks: nothing written yet)
    unmarked = unmarked_uploads(store, images, uploads, stored, root,
                                 {p.product_id: p.image.name for p in products})
    all_uploaded = {pid for pid, (_, meta) in fingerprints.items()
                    if meta.startswith(UPLOADED)} | set(unmarked)
    uploaded = all_uploaded & stored.keys()
    return _Held(fingerprints, stored, images, unmarked, all_uploaded, uploaded)


def _without_uploaded(products: list[Product], all_uploaded: set[str]) -> list[Product]:
    """The catalogue's products less those whose id the API's products have."""
    # the API's id in either Unicode form (a Mac's file names are decomposed; the API reads,
    # edits and deletes it by either): not a second product of the same id beside it
    taken = {category_form(pid) for pid in all_uploaded}  # (NFC, as categories are kept)
    return [p for p in products
            if category_form(p.product_id) not in taken]


def _record_run(store: VectorStore, embedder: Embedder, root: Path, link: str | None,
                listed: bool, unmarked: list[str], *, new_store: bool,
                commit_every: int) -> None:
    """Record in the store its model (a new store's), the catalogue folder and link it is
    indexed from, whether a table listed it, the model's folder; mark the API's products
    stored before the mark."""
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
    _mark_uploaded(store, unmarked, commit_every)


def _remove_gone(store: VectorStore, report: IndexReport, stored: dict, remove: list[str],
                 to_embed: list[tuple[Product, str]]) -> Callable[[], None]:
    """Remove the products gone from the catalogue, but for those whose photo a product to
    embed has; returns what removes those once their vectors are stored under it."""
    # products gone from the catalogue go before the embedding (minutes to hours): the
    # server listed and found them, their photos 404s, until its end (helper-245); those
    # whose photo a product to embed has (an id changed) stay until their vector is stored
    # under it, which is also before the embedding (``lent``: helper-247)
    needed = {sha for _, sha in to_embed}
    report.removed = store.delete([pid for pid in remove if stored[pid][0] not in needed])

    def lent() -> None:  # (their vectors copied and stored: the old ids go now, not hours on)
        report.removed += store.delete([pid for pid in remove if stored[pid][0] in needed])

    return lent


def _name_categories(report: IndexReport, store: VectorStore, products: list[Product],
                     everything: list[Product], held: _Held, found: _Found,
                     shard: tuple[int, int] | None) -> None:
    """Report the categories a table moved products to, and the twin categories."""
    skipped_ids = found.skipped_ids
    # the categories of the products indexed, not of those skipped (a photo deleted with its
    # row kept, whose table category and folder, read from the row, were said as moved, or
    # made a twin category the pages never showed)
    report.category_from_table = recategorised(
        [p for p in products if p.product_id not in skipped_ids])
    # a skipped product the store still holds (its photo unreadable, or not a photo any
    # more: the store keeps what it had) is still on the pages, under its stored category
    kept = skipped_ids & (held.stored.keys() - found.gone)
    if shard is not None or not (held.uploaded or kept):  # (else the store's, once written)
        report.category_twins = category_twins(
            [p for p in everything if p.product_id not in skipped_ids - kept])
    else:  # the store's twins, the API's products in them (a folder renamed "Relógio"
        # while products sent as "relogio" keep theirs: the pages listed both, and index
        # said nothing), and the skipped products it keeps
        report.category_twins = counted_twins(store.categories())


def _search_duplicates(report: IndexReport, store: VectorStore, embedder: Embedder,
                       root: Path, rules: DuplicateRules | None, all_uploaded: set[str],
                       shard: tuple[int, int] | None, *, commit_every: int,
                       show_progress: bool) -> None:
    """Search the store for duplicates (up to the rules' ``max_products``), old thumbnails
    made again first; the photo facts are let go before the index is built."""
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
    else:  # (`similar` keeps leaving out the last search's groups: said of when; the
        # products of one photo file, which need no search, counted again)
        recount_every_shared(store)
        report.duplicates_as_of = last_search(store.duplicate_cache())


def _save_index(store: VectorStore, report: IndexReport) -> None:
    """Save the search index (rebuilt when past its layer's limit); report why it could not
    be."""
    store.flush()
    report.index_unsaved = store.index_unsaved()


def _mark_uploaded(store: VectorStore, ids: list[str], commit_every: int) -> None:
    """Mark ``ids`` as added through the API, so that `vitrine migrate` and later runs know
    them by the mark alone; ``commit_every`` products a commit."""
    for start in range(0, len(ids), commit_every):
        found = (store.get(pid) for pid in ids[start:start + commit_every])
        store.update_metadata([p.to_product(uploaded=True) for p in found if p is not None])
