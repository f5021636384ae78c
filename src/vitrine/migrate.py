"""Copying a store into another (embedded ↔ Milvus) without re-embedding."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from vitrine.catalog import UPLOADED
from vitrine.errors import StoreError
from vitrine.manifest import ModelManifest
from vitrine.progress import progress_bar
from vitrine.store import save_photo, unmarked_upload, upload_folder
from vitrine.store.base import Record, VectorStore

BATCH = 256


@dataclass
class Migrated:
    copied: int
    """Products copied (all of the source's)."""
    not_in_source: list[str]
    """Products of the target that the source does not hold (deleted there since an earlier
    copy, or added to the target itself): kept, unless ``prune``."""
    removed: int
    """Those of them removed (``prune``)."""
    changed_meanwhile: list[str] = field(default_factory=list)
    """Products of the source left out because their photo (added through the API) went
    from its folder during the copy: the source's server deleted the product or gave it
    another photo meanwhile. Running migrate again copies what the source holds then."""


def migrate_store(source: VectorStore, target: VectorStore, *, photos_to: Path | None = None,
                  photos_from: Path | None = None, prune: bool = False,
                  show_progress: bool = True) -> Migrated:
    """Copy all products, vectors and the model manifest into ``target``, new or a copy of
    the same catalogue (an earlier or interrupted copy); with ``prune``, the target's products
    that the source does not hold are removed, so that it equals the source.

    With ``photos_to`` (the target's upload folder), the photos of products added through
    the API are copied there too and the copies named, so the source store can go; catalogue
    photos stay where they are (the catalogue keeps them). ``photos_from``, the source's
    upload folder, tells the products a Vitrine from before the mark added through the API.

    The source is read in one snapshot: a server writing to it meanwhile (a product added or
    deleted between two reads failed the copy half-way) is seen as one committed state."""
    with source.snapshot():
        return _migrate(source, target, photos_to, photos_from, prune, show_progress)


@dataclass
class _Recorded:
    """What the two stores record of their catalogues (folders, the source's release link
    and whether the target has it too) and the target's products (their fingerprints), as
    read before the copy."""

    theirs: str | None
    ours: str | None
    link: str | None
    same_link: bool
    held: dict[str, tuple[str, str]]


def _migrate(source: VectorStore, target: VectorStore, photos_to: Path | None,
             photos_from: Path | None, prune: bool, show_progress: bool) -> Migrated:
    """Check, then copy ``source`` into ``target`` (read in the source's snapshot): the
    model and catalogue it records, the products, and what spares the next index its work."""
    # the uploaded photos before the snapshot's first read (its read transaction starts
    # there), in every folder they may be in (the source's own STORE/uploads, the upload
    # folders named): one that goes later went with a change the source's server made
    listed = {folder: _listing(folder) for folder in
              (photos_from, upload_folder(source, None), photos_to) if folder is not None}
    manifest = _source_manifest(source)
    # the target is read under its lock: another writer that held it (a second migrate into
    # the same new store) has finished, and its products and model are seen
    target.lock_for_writing()
    existing = _check_model(source, target, manifest)
    recorded = _read_catalogues(source, target)
    marks = source.fingerprints()
    _check_same_catalogue(source, target, recorded, marks)
    catalogues = (recorded.ours,)
    _check_fits(source, target, photos_to, photos_from, marks, catalogues)
    _record_target(source, target, manifest, existing, recorded)
    seen, copied, changed = _copy_products(source, target, marks, listed, photos_to,
                                           photos_from, catalogues, show_progress)
    extra = sorted(set(recorded.held) - seen)
    removed = target.delete(extra) if prune and extra else 0
    _copy_caches(source, target)
    target.flush()
    target.set_copying_from(None)
    return Migrated(copied, extra, removed, changed)


def _source_manifest(source: VectorStore) -> ModelManifest:
    """The source's model manifest; refuses an empty source or an unfinished copy."""
    manifest = source.manifest()
    if manifest is None:
        raise StoreError(f"the store {source.location} is empty.")
    if (unfinished := source.copying_from()) is not None:  # (its copy looked complete)
        raise StoreError(f"the store {source.location} is an unfinished copy of "
                         f"{unfinished}; finish that copy first (run `vitrine migrate` from "
                         "it again). Nothing was copied.")
    return manifest


def _check_model(source: VectorStore, target: VectorStore,
                 manifest: ModelManifest) -> ModelManifest | None:
    """The target's model manifest (None: a new store); refuses one of another model."""
    existing = target.manifest()
    if existing is not None and existing != manifest:
        differ = existing.differences(manifest, "in it", "in the source")
        raise StoreError(f"the store {target.location} was built with a different model than "
                         f"{source.location} ({differ}); copy into a new store.")
    return existing


def _read_catalogues(source: VectorStore, target: VectorStore) -> _Recorded:
    """The catalogue folders and release links the two stores record, and the target's
    products."""
    theirs, ours = target.catalog_folder(), source.catalog_folder()
    link = source.catalog_link()  # (one release link: one catalogue, whichever release)
    same_link = link is not None and target.catalog_link() == link
    held = target.fingerprints() if target.count() else {}
    return _Recorded(theirs, ours, link, same_link, held)


def _check_same_catalogue(source: VectorStore, target: VectorStore, recorded: _Recorded,
                          marks: dict[str, tuple[str, str]]) -> None:
    """Refuse a target holding products of another catalogue than the source's."""
    held, theirs, ours = recorded.held, recorded.theirs, recorded.ours
    if held and (theirs is None or ours is None):
        # a folder not recorded (an older store, or one filled through the API) tells
        # nothing: the photos do. An earlier or interrupted copy holds the source's products,
        # photo and all, but for those changed or deleted there since: most of its own (ids
        # alone, photo-file names, are shared by many catalogues; counted over the ids both
        # hold, a few shared photos let a store of another catalogue in, to be removed by
        # the next index of the source's)
        same = sum(marks.get(pid, ("",))[0] == sha for pid, (sha, _) in held.items())
        if same * 2 <= len(held):
            why = (f"{len(held) - same} of its {len(held)} products are not the source's, "
                   "photo and all")
            raise StoreError(
                f"the store {target.location} does not look like a copy of "
                f"{source.location} ({_folders(theirs, ours)}; {why}); "
                "mixed in one store, the next index of either catalogue would remove the "
                "other's products. Copy into a new store.")
    elif held and theirs != ours and not recorded.same_link:
        raise StoreError(f"the store {target.location} holds products (catalogue folder "
                         f"{theirs}) and {source.location} another catalogue's (folder "
                         f"{ours}); mixed in one store, the next index of either catalogue "
                         "would remove the other's products. Copy into a new store.")


def _record_target(source: VectorStore, target: VectorStore, manifest: ModelManifest,
                   existing: ModelManifest | None, recorded: _Recorded) -> None:
    """Mark the target as a copy in progress, then record in it the source's model, model
    folder and catalogue (folder, release link, product table)."""
    theirs, ours, link = recorded.theirs, recorded.ours, recorded.link
    # (before the target's first write: a copy killed outright while its model and folders
    # were recorded left a store that said nothing, empty, as if complete)
    target.set_copying_from(str(source.location))  # (until the copy is done)
    if existing is None:
        target.set_manifest(manifest)
    if source.model_folder() and target.model_folder() != source.model_folder():
        target.set_model_folder(source.model_folder())  # (the same model's: checked above)
    if theirs != ours and (theirs is None or not recorded.held or recorded.same_link):
        # index keeps guarding its removals (an emptied store that recorded another
        # catalogue kept it: that catalogue's next index removed every product copied; a
        # source that records none leaves none)
        target.set_catalog_folder(ours)
    if target.catalog_folder() == ours and target.catalog_link() != link:
        target.set_catalog_link(link)  # (the release link the source was given)
    table_read = source.catalog_listed()  # (index's guard of a deleted product table: the
    # copy's index turned every product file-named, exit 0, where the source's refused)
    if target.catalog_folder() == ours and table_read is not None \
            and target.catalog_listed() != table_read:
        target.set_catalog_listed(table_read)


def _copy_products(source: VectorStore, target: VectorStore,
                   marks: dict[str, tuple[str, str]], listed: dict[Path, set[str]],
                   photos_to: Path | None, photos_from: Path | None, catalogues: tuple,
                   show_progress: bool) -> tuple[set[str], int, list[str]]:
    """Copy the source's products page by page (the photos of those added through the API
    into ``photos_to``); returns the ids seen, how many were copied, and those left out as
    changed meanwhile."""
    seen: set[str] = set()
    copied = 0
    changed: list[str] = []
    # page by page (the whole source in memory: the vectors alone 1.5 GB at 300,000)
    with progress_bar("Copying", source.count(), enabled=show_progress,
                      unit="products") as adv:
        for page in source.iter_products(BATCH):
            batch: list[Record] = []
            for stored, vector in page:
                pid = stored.product_id
                seen.add(pid)
                if pid not in marks:  # added after the marks were read (Milvus)
                    continue
                uploaded = _added_through_api(pid, stored.image, marks, photos_from,
                                              catalogues)
                image = Path(stored.image)
                if uploaded and photos_to is not None:
                    copy = _copy_photo(image, photos_to)
                    # a photo already missing keeps its path (the product is still copied)
                    if copy is None and _was_there(image, listed):
                        changed.append(pid)
                        continue
                    image = copy or image
                product = stored.to_product(image=image, uploaded=uploaded)
                batch.append(Record(product, stored.content_sha256, stored.phash, stored.thumb,
                                    vector))
            target.upsert(batch)
            copied += len(batch)
            adv(len(page))
    return seen, copied, changed


def _copy_caches(source: VectorStore, target: VectorStore) -> None:
    """Copy what spares the next ``index`` its work: the photos' hashes and the last
    duplicate search's pairs."""
    # the photos' hashes (each checked against its file's times before use) and the last
    # duplicate search's pairs (named by product digests, under the rules' and model's
    # fingerprint); without them it read every photo and searched the whole store again
    target.set_photo_hashes(source.photo_hashes())
    if (pairs := source.duplicate_cache()) is not None:
        target.set_duplicate_cache(pairs)


def _folders(theirs: str | None, ours: str | None) -> str:
    """The two stores' catalogue folders, in words."""
    return f"its catalogue folder {theirs or 'not recorded'}, the source's {ours or 'not recorded'}"


def _check_fits(source: VectorStore, target: VectorStore, photos_to: Path | None,
                photos_from: Path | None, marks: dict[str, tuple[str, str]],
                catalogues: tuple) -> None:
    """Refuse, before anything is written, a copy the target cannot hold whole: products
    with a field longer than it keeps (a Milvus store's limits), or photos of products added
    through the API kept in the source store's own folder while the target has no folder to
    copy them to (they would go with the source store), or a folder to copy them to inside
    the source store (they would go with it all the same)."""
    root = getattr(source, "root", None)  # an embedded store's folder
    inside = photos_to is not None and root is not None and photos_to.resolve(
        ).is_relative_to(root)
    long: list[tuple[str, str]] = []
    kept = stranded = 0
    for page in source.iter_products(BATCH * 4, vectors=False):
        for p, _ in page:
            if problem := target.too_long(p):
                long.append((p.product_id, problem))
            if photos_to is None and photos_from is not None:
                kept += Path(p.image).is_relative_to(photos_from)
            if inside:  # a product the API added: its photo would be copied in there
                stranded += _added_through_api(p.product_id, p.image, marks, photos_from,
                                               catalogues)
    if stranded:
        raise StoreError(f"the upload folder {photos_to} is inside {source.location}, and "
                         f"the photos of {stranded} product(s) added through the API would "
                         "go with that store: set VITRINE_UPLOAD_DIR to a folder of the "
                         "target's own. Nothing was copied.")
    if long:
        named = "; ".join(f"{pid!r}: {problem}" for pid, problem in long[:3])
        raise StoreError(f"{len(long)} product(s) of {source.location} do not fit "
                         f"{target.location} ({named}{' …' if len(long) > 3 else ''}); "
                         "shorten them in the source first. Nothing was copied.")
    if kept:
        raise StoreError(f"{kept} product(s) added through the API have their photos in "
                         f"{photos_from}, which goes with {source.location}, and "
                         f"{target.location} has no folder of its own: set "
                         "VITRINE_UPLOAD_DIR to the folder the photos should be copied to "
                         "(the one its server will use). Nothing was copied.")


def _added_through_api(pid: str, image: str | Path, marks: dict[str, tuple[str, str]],
                       photos_from: Path | None, catalogues: tuple) -> bool:
    """Whether the API added product ``pid``: its mark, or (a Vitrine from before the mark)
    its photo's name and place."""
    return marks.get(pid, ("", ""))[1].startswith(UPLOADED) or unmarked_upload(
        image, photos_from, catalogues)


def _listing(folder: Path) -> set[str]:
    """The names of the files in ``folder`` now."""
    try:
        return set(os.listdir(folder))
    except OSError:
        return set()


def _was_there(photo: Path, listed: dict[Path, set[str]]) -> bool:
    """Whether ``photo`` was there when the copy started (as far as ``listed``, the names
    in each upload folder then, tells; a photo elsewhere: whether it is there now)."""
    names = listed.get(photo.parent)
    return photo.name in names if names is not None else photo.is_file()


def _copy_photo(photo: Path, folder: Path) -> Path | None:
    """``photo`` copied into ``folder`` under its own (content-hash) name, once; None when
    it is gone."""
    target = folder / photo.name
    if target.resolve() == photo.resolve():
        return target if photo.is_file() else None
    try:
        data = photo.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None
    save_photo(folder, target, data)
    return target
