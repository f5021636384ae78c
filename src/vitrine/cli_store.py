"""The commands that write and read a store: ``index`` (a catalogue folder into a store),
``related`` (every product's similar products to one file), ``migrate`` (a store copied to
another) and ``info`` (what a store holds)."""

from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from vitrine.cli_support import (
    JsonOpt,
    KOpt,
    ModelOpt,
    StoreOpt,
    WeightsOpt,
    command_settings,
    out,
    path_of,
    print_json,
    read_settings,
)
from vitrine.display import counted, index_lines, info_lines, migrate_lines, one_line
from vitrine.errors import VitrineError


def index(
    catalog_dir: Annotated[Path, typer.Argument(help="Catalogue folder (sub-folder per "
                                                "category, optional products.csv).",
                                                metavar="CATALOG_DIR",
                                                parser=path_of("CATALOG_DIR"))],
    store: StoreOpt,
    weights: WeightsOpt = None,
    model: ModelOpt = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit non-zero if any file is "
                                         "skipped.")] = False,
    shard: Annotated[str | None, typer.Option(
        "--shard", help="I/N, I from 0 to N-1: index only shard I of N (parallel writers "
        "into one Milvus store; an embedded store takes one writer at a time).")
    ] = None,
    replace: Annotated[bool, typer.Option(
        "--replace", help="Make CATALOG_DIR the store's catalogue even when that removes "
        "products indexed from another folder, or all of them for its own photos (refused "
        "without it). A folder without photos is refused all the same: to empty an embedded "
        "store, delete its folder.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Index (or re-index) a catalogue folder into a store."""
    from vitrine.catalog import catalogue_state
    from vitrine.embed import Embedder
    from vitrine.errors import NoStore
    from vitrine.index_checks import (
        refuse_foreign_folder,
        refuse_store_among_photos,
        refuse_undecodable,
    )
    from vitrine.indexer import index_catalog, parse_shard
    from vitrine.manifest import kind_mismatch
    from vitrine.split import links_refused, read_catalogue
    from vitrine.store import recorded_model, store_for, upload_folder

    settings = command_settings(weights, model)
    shard_spec = parse_shard(shard)
    uploads = upload_folder(store, settings.upload_dir)
    refused = links_refused(settings)
    state = catalogue_state(catalog_dir, follow_outside=refused is None)  # (read again
    # under the writer lock if it changes while the model loads or another writer writes)
    catalogue = [read_catalogue(catalog_dir, uploads,  # a bad folder: before the model
                                refused_links=refused)]  # (handed over below: its products
    # are let go before the duplicate search, not held here through it)
    refuse_undecodable(catalog_dir, settings.model)  # (and before the store is made)
    refuse_store_among_photos(store, catalog_dir, (p.image for p in catalogue[0][0]))
    refuse_foreign_folder(store, catalog_dir)  # (`--store ~`: among the user's own files)
    # also before the model (a trained model's store indexed without one tried to download
    # the pretrained weights: helper-176)
    recorded, db = recorded_model(store), None
    if recorded == (None, None) and str(store).startswith(("milvus://", "milvus-lite://")):
        try:  # a Milvus store is read once open (opening Milvus Lite twice costs seconds):
            db = store_for(store, settings)  # opened now, or made once the model is built
        except NoStore:
            pass
        else:
            recorded = db.manifest(), db.model_folder()
    try:
        if refused_model := kind_mismatch(store, *recorded, settings.model,
                                          settings.backbone):
            raise refused_model
        embedder = Embedder.from_settings(settings)
        if db is None:
            db = store_for(store, settings, create=True)
        report = index_catalog(catalog_dir, db, embedder,
                               rules=embedder.duplicate_rules(),
                               show_progress=not as_json, shard=shard_spec,
                               uploads=uploads, replace=replace,
                               rehash=settings.rehash_photos, catalogue=catalogue.pop(),
                               state=state, refused_links=refused)
    finally:
        if db is not None:
            db.close()
    if as_json:
        print_json(report.as_dict())
    else:
        for line in index_lines(report, settings.dup_max_products, store):
            out.print(line)
    if strict and report.skipped:
        sys.stderr.write(f"error: {len(report.skipped)} file(s) skipped and --strict is set.\n")
        raise typer.Exit(1)


def related(
    store: StoreOpt,
    out_file: Annotated[Path, typer.Option("--out", "-o", help="File to write: .csv (one row "
                                           "per pair: product_id, rank, similar_id, score) "
                                           "or .jsonl (one line per product).",
                                           parser=path_of("--out"))],
    k: KOpt = 5,
    same_category: Annotated[bool, typer.Option(
        "--same-category", help="Only products of each product's own category.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write every product's most similar products to one file (itself and its copies
    excluded), for a shop to import into its own site."""
    from vitrine.related import related_path, write_related
    from vitrine.store import store_for

    out_file = related_path(out_file)  # before the store is opened
    settings = read_settings()
    db = store_for(store, settings)
    try:
        report = write_related(db, out_file, k, same_category=same_category,
                               show_progress=not as_json,
                               placeholder_min=settings.placeholder_min)
    finally:
        db.close()
    if as_json:
        print_json(report.as_dict())
        return
    out.print(f"{counted(report.products, 'product')}, {counted(report.pairs, 'similar pair')} "
              "written to "
              f"{report.out} in {report.seconds:.1f} s.", markup=False, highlight=False)


def migrate(
    source: Annotated[str, typer.Argument(help="Store to copy from.", metavar="SOURCE_STORE")],
    target: Annotated[str, typer.Argument(help="Store to copy into (created if needed).",
                                            metavar="TARGET_STORE")],
    prune: Annotated[bool, typer.Option(
        "--prune", help="Remove from the target the products the source does not hold "
        "(deleted there since an earlier copy), so that it equals the source.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Copy every product and vector from one store to another, without re-embedding.

    For example from the embedded store to Milvus; refuses a target made by another model.
    Photos of products added through the API go to the target's upload folder (STORE/uploads,
    or VITRINE_UPLOAD_DIR)."""
    from vitrine.index_checks import refuse_foreign_folder, refuse_target_among_photos
    from vitrine.migrate import migrate_store
    from vitrine.store import (
        EmbeddedStore,
        inside_store,
        new_store_path,
        store_for,
        store_identity,
        upload_folder,
    )

    # before opening either (it copied every product onto itself, for nothing; a Milvus Lite
    # file named twice was "open in another process")
    if store_identity(source) == store_identity(target):
        raise VitrineError(f"{one_line(str(source))} and {one_line(str(target))} are the same "
                           "store; name another target.")
    if inside_store(target, source):  # (the copy is made so that the source can go)
        raise VitrineError(f"{one_line(str(target))} is inside the store "
                           f"{one_line(str(source))}, and would go with it; name a target "
                           "outside it.")
    settings = read_settings()
    src = store_for(source, settings)
    new = new_store_path(target)  # (none: there already, or a Milvus server)
    try:
        refuse_target_among_photos(target, src.catalog_folder())
        refuse_foreign_folder(target, src.catalog_folder(), named="TARGET_STORE")
        dst = store_for(target, settings, create=True)
    except BaseException:
        src.close()
        raise
    done = None
    try:
        # the setting names the target's folder; an embedded source's photos are in its own
        theirs = None if isinstance(src, EmbeddedStore) else settings.upload_dir
        done = migrate_store(src, dst, photos_to=upload_folder(dst, settings.upload_dir),
                             photos_from=upload_folder(src, theirs), prune=prune,
                             show_progress=not as_json)
    finally:
        src.close()
        # a copy refused or failed before any product was written leaves no empty store
        # behind, nor the folders made for it (removed under its writer lock: not while
        # another `migrate` fills it)
        if done is None and new and _unwritten(dst):
            shutil.rmtree(new[0], ignore_errors=True)
            for folder in new[1:]:
                with contextlib.suppress(OSError):  # (another process's files there now)
                    folder.rmdir()
        elif done is None:  # (stopped or failed half-way: said before the error itself)
            with contextlib.suppress(Exception):
                if dst.copying_from() is not None:
                    sys.stderr.write(f"the copy is unfinished: {one_line(str(target))} holds "
                                     f"{dst.count()} products so far; run the same migrate "
                                     "again to finish it.\n")
        dst.close()
    if as_json:
        print_json({"copied": done.copied, "not_in_source": len(done.not_in_source),
                    "removed": done.removed, "changed_meanwhile": done.changed_meanwhile,
                    "source": source, "target": target})
        return
    for line in migrate_lines(done, source, target):
        out.print(line)


def _unwritten(store) -> bool:
    """Whether nothing is in ``store`` and no other process is writing to it: an embedded
    store holds no product (its model may be recorded: a copy that failed at its first
    page), its writer lock taken (kept until it is closed); a Milvus Lite one has no model
    recorded (its server writes that back after the folder is removed)."""
    from vitrine.store import EmbeddedStore

    try:
        if isinstance(store, EmbeddedStore):
            store.lock_for_writing(wait=0)
            return store.count() == 0
        return store.manifest() is None
    except Exception:  # noqa: BLE001 (unreadable: left as it is)
        return False


def info(store: StoreOpt, as_json: JsonOpt = False) -> None:
    """Show what a store holds, which model made its vectors and which index searches them."""
    from vitrine.catalog import reader_order
    from vitrine.copies import last_search
    from vitrine.display import index_about
    from vitrine.store import store_for

    db = store_for(store, read_settings())
    try:
        with db.snapshot():  # (one state: a server or index may be writing meanwhile)
            manifest = db.manifest()
            data = {"products": db.count(), "categories": reader_order(db.categories()),
                    "catalog_folder": db.catalog_folder(),
                    "model_folder": db.model_folder(),
                    "unfinished_copy_of": db.copying_from(),
                    "model": manifest.as_dict() if manifest else None,
                    "duplicate_search": last_search(db.duplicate_cache())}
    finally:
        db.close()
    data["index"] = index_about(db, data["products"])
    if as_json:
        print_json(data)
        return
    for line in info_lines(data, manifest, store):
        out.print(line)
