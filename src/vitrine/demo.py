"""``vitrine demo``: index the demo catalogue and show recommendations for each category.

What it prints names products, categories and paths: printed as :func:`~vitrine.display.plain`
text, so ``[brackets]`` in them are not rich markup."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import socket
from pathlib import Path

from rich.console import Console

from vitrine.cli_support import program
from vitrine.config import Settings, cpu_only_note
from vitrine.display import counted, plain, results_table
from vitrine.embed import Embedder
from vitrine.errors import StoreError, VitrineError
from vitrine.index_report import IndexReport
from vitrine.indexer import index_catalog
from vitrine.jsonfile import write_json
from vitrine.manifest import ModelManifest
from vitrine.plots import plot_recommendations
from vitrine.recommend import Recommender
from vitrine.store import UPLOADS_DIR, VectorStore, open_store, store_for, upload_folder
from vitrine.store.embedded import DB_NAME
from vitrine.store.sqlite_db import MANIFEST_NAME


def run_demo(catalog: Path, store_dir: Path, out_dir: Path, settings: Settings, k: int,
             *, console: Console, serve: socket.socket | None = None) -> dict:
    """Index ``catalog`` into ``store_dir``; print and plot top-``k`` for one product per
    category into ``out_dir``; then, given a ``serve`` socket (``server.bind``), serve the web
    app on the store until interrupted. Returns a summary (also written as ``demo.json``)."""
    _check_paths(catalog, store_dir, out_dir, settings, serve)
    own = _own(store_dir, out_dir)
    if settings.model is None and settings.demo_train:
        if not own:
            _refuse_stranding(store_dir, catalog, out_dir, settings)
        else:  # (a model trained anew makes the store rebuilt: said before the training)
            _refuse_dropping_uploads(store_dir, catalog, out_dir, settings)
        settings = _trained(catalog, out_dir, settings, console)
    embedder = Embedder.from_settings(settings)
    # after training a store folder that is the model's (--store OUT/model) is not the
    # demo's; --out itself, which now holds the model too, still is
    own = _own(store_dir, out_dir) or own and not store_dir.resolve().is_relative_to(
        (out_dir / "model").resolve())
    _prepare_store(store_dir, catalog, settings, embedder, own, console)
    report, examples = _index_and_show(catalog, store_dir, out_dir, settings, embedder, own,
                                       k, console)
    summary = _write_summary(store_dir, out_dir, settings, report, examples, console)
    if serve is not None:
        _serve(store_dir, settings, embedder, serve, console)
    return summary


def _check_paths(catalog: Path, store_dir: Path, out_dir: Path, settings: Settings,
                 serve: socket.socket | None) -> None:
    """Refuse, before any work, a catalogue that cannot be read, an upload folder the server
    would refuse, or an ``out_dir`` that cannot hold the demo's figures."""
    from vitrine.catalog import refuse_out_inside
    from vitrine.index_checks import refuse_foreign_folder, refuse_store_among_photos
    from vitrine.split import links_refused, read_catalogue

    products = read_catalogue(catalog, settings.upload_dir,  # a bad folder: before training
                              refused_links=links_refused(settings))[0]
    refuse_store_among_photos(store_dir, catalog, (p.image for p in products))
    refuse_foreign_folder(store_dir, catalog)
    a_file = store_dir.exists() and not store_dir.is_dir()  # (said as such, below)
    if serve is not None and settings.api_key and not a_file:  # (the server said it after
        # all the work)
        from vitrine.service_uploads import check_upload_folder

        check_upload_folder(upload_folder(store_dir, settings.upload_dir), settings,
                            store_dir)
    refuse_out_inside(catalog, out_dir)
    if out_dir.exists() and not out_dir.is_dir():  # (said at the first figure, after the
        # whole catalogue was indexed)
        raise VitrineError(f"--out {out_dir} is a file; name a folder for the demo's figures "
                           "and model.")


def _prepare_store(store_dir: Path, catalog: Path, settings: Settings, embedder: Embedder,
                   own: bool, console: Console) -> None:
    """Rebuild the demo's own store made with another model; refuse a store of someone
    else's made with another model than the demo's."""
    if own:
        _drop_stale_store(store_dir, catalog, settings, embedder, console)
    elif (store_dir / DB_NAME).is_file() and (
            stored := _manifest(store_dir)) not in (None, embedder.manifest):
        # (said for the demo: index's sentence told to unset VITRINE_MODEL, which was unset)
        raise StoreError(
            f"the store {store_dir} was built with a different model than the demo's "
            f"({stored.differences(embedder.manifest)}) and is not the demo's to rebuild (it "
            f"has no {DEMO_MARK} mark); pass --store another folder"
            + (", or --no-train to search it with the pretrained backbone"
               if stored.embedding == "pooled" and embedder.manifest.embedding != "pooled"
               else "") + ". Nothing was changed.")


def _index_and_show(catalog: Path, store_dir: Path, out_dir: Path, settings: Settings,
                    embedder: Embedder, own: bool, k: int,
                    console: Console) -> tuple[IndexReport, list[dict]]:
    """Index the catalogue into the store, then print and plot the top ``k`` for one
    product of each category; returns the index's report and the examples shown."""
    from vitrine.split import links_refused

    store = store_for(store_dir, settings, create=True)
    try:
        if own:
            (store_dir / DEMO_MARK).touch()
        report = index_catalog(catalog, store, embedder,
                               rules=embedder.duplicate_rules(),
                               uploads=upload_folder(store, settings.upload_dir),
                               replace=own,  # the demo's store follows its catalogue
                               rehash=settings.rehash_photos,
                               refused_links=links_refused(settings))
        console.print(plain(f"Indexed {report.indexed}, updated {report.updated}, removed "
                            f"{report.removed}, unchanged {report.unchanged} in "
                            f"{report.seconds:.1f} s; {len(report.skipped)} skipped, "
                            + (f"{counted(len(report.duplicates), 'duplicate group')}."
                               if report.duplicates_searched else "duplicates not searched.")))
        rec = Recommender(store, settings, embedder)
        examples = [_show_category(store, rec, category, out_dir, settings, k, console)
                    for category in store.categories()]
    finally:
        store.close()
    return report, examples


def _show_category(store: VectorStore, rec: Recommender, category: str, out_dir: Path,
                   settings: Settings, k: int, console: Console) -> dict:
    """Print and plot the top ``k`` for the category's first product; returns the example."""
    first = store.list_products(category=category, limit=1)[0]
    product, matches = rec.similar(first.product_id, k)
    # (no category's name is "(uncategorised)": _file_name writes no parenthesis; the
    # heading of products without a category said ": similar to …")
    console.print(results_table(
        f"{category or UNCATEGORISED}: similar to {product.product_id} — {product.name}",
        matches))
    name = _file_name(category) if category else UNCATEGORISED
    figure = out_dir / f"similar-{name}.png"
    plot_recommendations(product.image, product.name or product.product_id, matches,
                         figure, settings.max_image_pixels)
    same = sum(m.product.category == category for m in matches)
    return {"product_id": product.product_id, "category": category,
            "same_category": same, "figure": str(figure),
            "results": [m.as_dict() for m in matches]}


def _write_summary(store_dir: Path, out_dir: Path, settings: Settings, report: IndexReport,
                   examples: list[dict], console: Console) -> dict:
    """Remove the last run's figures of categories gone since, and write (and say)
    ``demo.json``; returns the summary."""
    written = {Path(e["figure"]).name for e in examples}
    for stale in _figures_of_last_run(out_dir) - written:  # its categories, gone since
        (out_dir / stale).unlink(missing_ok=True)
    summary = {"store": str(store_dir), "index": report.as_dict(), "examples": examples}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "demo.json", summary, indent=2)
    console.print(plain(_written_line(out_dir, [Path(e["figure"]).name for e in examples])))
    if settings.model is not None:  # (without it, search and serve refuse the store)
        console.print(plain(f"Search and serve this store with its model: {program()} search "
                            f"--store {shlex.quote(str(store_dir))} --model "
                            f"{shlex.quote(str(settings.model))} PHOTO"))
    return summary


UNCATEGORISED = "(uncategorised)"
"""How the demo names the products without a category: its figure's name, its table's
heading."""
FIGURES_NAMED = 8
"""Most figures the demo's last line names (the demo catalogue's categories)."""


def _written_line(out_dir: Path, figures: list[str]) -> str:
    """What the demo says it wrote in ``out_dir``: the figures by name, or why there is none
    (a store without products; "Figures … written" was said of none)."""
    if not figures:
        return f"Written to {out_dir}/: demo.json; no figure, the store holds no product to show."
    named = ", ".join(figures[:FIGURES_NAMED]) + (
        f" and {len(figures) - FIGURES_NAMED} more" if len(figures) > FIGURES_NAMED else "")
    return f"Written to {out_dir}/: demo.json and {counted(len(figures), 'figure')} ({named})."


def _serve(store_dir: Path, settings: Settings, embedder: Embedder, serve: socket.socket,
           console: Console) -> None:
    """Serve the web app on the store at the ``serve`` socket until interrupted."""
    from vitrine.api import create_app
    from vitrine.server import ready_message
    from vitrine.server import serve as run_server

    # served at its own address, no proxy before it: no path prefix (VITRINE_ROOT_PATH
    # made every link of the demo's pages a 404: helper-229)
    app = create_app(settings.model_copy(update={"root_path": ""}), store_dir,
                     embedder=embedder)
    run_server(app, serve, on_ready=lambda address: console.print(ready_message(address),
                                                                 soft_wrap=True))


def _figures_of_last_run(out_dir: Path) -> set[str]:
    """The names of the figures the demo's last run wrote in ``out_dir`` (its demo.json
    lists them): only those are removed, not a file of the user's named alike."""
    try:
        summary = json.loads((out_dir / "demo.json").read_text(encoding="utf-8"))
        names = {Path(e["figure"]).name for e in summary["examples"]}
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    return {n for n in names if n.startswith("similar-") and n.endswith(".png")}


FILE_NAME_BYTES = 120
"""The most bytes of a category's name in a figure's file name (80 characters of a CJK name
were 240 bytes: "File name too long", the demo stopped: helper-238)."""


def _file_name(text: str) -> str:
    """``text`` as part of a file name: what a file name cannot hold (a '/', a NUL) as '_',
    at most :data:`FILE_NAME_BYTES` bytes; a name changed so (which another text could
    share: "a b" and "a_b") ends with a digest of ``text``."""
    name = re.sub(r"[^\w.-]", "_", text)
    if name == text and len(os.fsencode(name)) <= FILE_NAME_BYTES:
        return name
    while len(os.fsencode(name)) > FILE_NAME_BYTES:  # (whole characters)
        name = name[:-1]
    return f"{name}-{hashlib.sha256(text.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"


def _trained(catalog: Path, out_dir: Path, settings: Settings,
             console: Console) -> Settings:
    """Train on the demo catalogue, or reuse the model trained from the same photos and
    settings."""
    from vitrine.report import refit_dropped_line
    from vitrine.trained import ensure_model

    if note := cpu_only_note(settings, "training"):
        console.print(note)
    model_dir, reused = ensure_model(catalog, out_dir / "model", settings)
    console.print(plain(f"{'Reusing' if reused else 'Trained'} the model in {model_dir} "
                        f"(report: {model_dir / 'report.md'})."))
    if dropped := refit_dropped_line({"refit": _model_config(model_dir).get("refit")}):
        console.print(plain(f"note: {dropped}"))  # (said by `train` alone: helper-237)
    return settings.model_copy(update={"model": model_dir})


def _model_config(model_dir: Path) -> dict:
    """The model folder's ``model.json`` (empty where it cannot be read)."""
    from vitrine.trained import CONFIG_FILE

    try:
        config = json.loads((model_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


DEMO_MARK = ".vitrine-demo"
"""The file the demo leaves in the store it made: only such a store is the demo's to rebuild
for another model or to point at another catalogue."""


def _own(store_dir: Path, out_dir: Path) -> bool:
    """True for the demo's own store: inside ``out_dir`` and either made by the demo (its
    mark) or not there yet (no folder, or an empty one). A user's store, or any folder of
    theirs, is never the demo's, even inside ``out_dir``."""
    if not store_dir.resolve().is_relative_to(out_dir.resolve()):
        return False
    return (store_dir / DEMO_MARK).exists() or not store_dir.exists() or (
        store_dir.is_dir() and not any(store_dir.iterdir()))


def _refuse_stranding(store_dir: Path, catalog: Path, out_dir: Path,
                      settings: Settings) -> None:
    """Refuse, before its model is trained anew, a demo whose store is not its own (no
    mark: a user's, or one a demo before 3 Dec 2026 made) and holds vectors: the new model
    would replace the one it was made with, and the store could be searched with neither
    (the demo trained, then refused the store)."""
    from vitrine.trained import trained_already

    if not (store_dir / DB_NAME).is_file() or trained_already(catalog, out_dir / "model",
                                                              settings):
        return
    stored = _manifest(store_dir)
    if stored is not None and stored.embedding == "pooled":  # (no model of the demo's made it)
        raise VitrineError(
            f"the store {store_dir} was indexed with the pretrained backbone, not by this "
            f"demo (it has no {DEMO_MARK} mark), and the demo would index it with the model "
            "it trains; pass --no-train to search it with the pretrained backbone, or "
            "--store another folder. Nothing was changed.")
    if stored is not None:
        raise VitrineError(
            f"the store {store_dir} was not made by this demo (it has no {DEMO_MARK} mark: "
            "made by a demo before 3 Dec 2026, or not by the demo) and the demo would now "
            f"train its model in {out_dir / 'model'} anew, leaving that store made with a "
            "model that is gone. Delete the store if an older demo made it (the demo makes "
            "it again), or pass --store another folder. Nothing was changed.")


STORE_FILE = re.compile(rf"{re.escape(DB_NAME)}(-wal|-shm|-journal)?|{re.escape(MANIFEST_NAME)}"
                        rf"(\.tmp)?|\.{re.escape(MANIFEST_NAME)}\..+\.part|write\.lock|"
                        r"rebuild\.lock|index\..+\.faiss(\..+\.tmp)?|"
                        rf"{re.escape(UPLOADS_DIR)}")
"""The entries of an embedded store's folder that the store itself writes."""


def _drop_stale_store(store_dir: Path, catalog: Path, settings: Settings, embedder: Embedder,
                      console: Console) -> None:
    """The demo's own store made with another model than this run's (trained or not) is
    rebuilt: the store's own files go, anything else in the folder stays."""
    import shutil

    if (store_dir / DB_NAME).exists() and _manifest(store_dir) not in (None, embedder.manifest):
        _refuse_losing_uploads(store_dir, catalog, settings)
        console.print(plain(f"The demo store {store_dir} was made with another model; "
                            "rebuilding it."))
        for entry in store_dir.iterdir():
            if STORE_FILE.fullmatch(entry.name):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()


def _refuse_dropping_uploads(store_dir: Path, catalog: Path, out_dir: Path,
                             settings: Settings) -> None:
    """Refuse, before its model is trained anew, a demo whose own store holds products added
    through the API, or edits made through it that index keeps: the store is rebuilt for
    the new model and they would go."""
    from vitrine.trained import trained_already

    # (the store read first: whether trained already hashes every photo)
    if (store_dir / DB_NAME).is_file() and (
            _uploads(store_dir, catalog, settings.upload_dir)
            or _edits_kept(store_dir, catalog, settings)) \
            and not trained_already(catalog, out_dir / "model", settings):
        _refuse_losing_uploads(store_dir, catalog, settings)


def _refuse_losing_uploads(store_dir: Path, catalog: Path, settings: Settings) -> None:
    """Refuse to rebuild the demo's store for another model while it holds products added
    through the API: the catalogue does not hold them, so the rebuilt store would not either,
    and their photos (its uploads folder) went with it, after "rebuilding it". So too for
    edits made through the API that `vitrine index` keeps (:data:`vitrine.catalog.EDITED`,
    a product no row of the catalogue's table names): the rebuilt store read the photo's
    file name again, the shop's name, price and description gone, exit 0."""
    if added := _uploads(store_dir, catalog, settings.upload_dir):
        raise StoreError(
            f"the demo store {store_dir} holds {counted(added, 'product')} added through the "
            "API, and the demo would rebuild it for another model without those products (the "
            "catalogue does not hold them); pass --store another folder, or delete the store "
            "to rebuild it without them. Nothing was changed.")
    if edited := _edits_kept(store_dir, catalog, settings):
        raise StoreError(
            f"the demo store {store_dir} holds {counted(edited, 'product')} edited through "
            "the API that no row of the catalogue's product table names, and the demo would "
            "rebuild it for another model without those edits (their names, prices and "
            "descriptions would be the photo files' again); pass --store another folder, or "
            "delete the store to rebuild it without them. Nothing was changed.")


def _uploads(store_dir: Path, catalog: Path, upload_dir: Path | None) -> int:
    """How many products of the embedded store at ``store_dir`` were added through the API:
    marked so, or (a Vitrine from before the mark) known as `vitrine index` knows them."""
    from vitrine.catalog import UPLOADED
    from vitrine.indexer import unmarked_uploads

    store = open_store(store_dir)
    try:
        stored = store.fingerprints()
        return sum(meta.startswith(UPLOADED) for _, meta in stored.values()) + len(
            unmarked_uploads(store, store.images, upload_folder(store, upload_dir), stored,
                             catalog.resolve(), {}))
    finally:
        store.close()


def _edits_kept(store_dir: Path, catalog: Path, settings: Settings) -> int:
    """How many products of the embedded store at ``store_dir`` hold an edit made through
    the API that `vitrine index` of ``catalog`` keeps: marked edited, and a photo of the
    catalogue no row of its table names (a row's values win at any run: nothing lost)."""
    from vitrine.catalog import EDITED
    from vitrine.split import links_refused, read_catalogue

    store = open_store(store_dir)
    try:
        edited = {pid for pid, (_, meta) in store.fingerprints().items()
                  if meta.startswith(EDITED)}
    finally:
        store.close()
    if not edited:  # (the catalogue not read again)
        return 0
    products = read_catalogue(catalog, settings.upload_dir,
                              refused_links=links_refused(settings))[0]
    return sum(p.product_id in edited and not p.listed for p in products)


def _manifest(store_dir: Path) -> ModelManifest | None:
    """The model manifest of the embedded store at ``store_dir`` (None: nothing indexed)."""
    store = open_store(store_dir)
    try:
        return store.manifest()
    finally:
        store.close()
