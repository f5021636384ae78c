"""Command line: a thin Typer shell over the library. Errors a user can cause print one
sentence on stderr and exit with status 2."""

from __future__ import annotations

import contextlib
import re
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from vitrine.cli_support import (
    CategoryOpt,
    HostOpt,
    JsonOpt,
    KOpt,
    ModelOpt,
    PlotOpt,
    PortOpt,
    StoreOpt,
    WeightsOpt,
    api_key_note,
    check_category,
    check_plot_targets,
    command_settings,
    err,
    open_recommender,
    out,
    path_of,
    plot_path,
    plot_targets,
    print_json,
    read_settings,
    run_app,
    save_plot,
    utf8_mode,
)
from vitrine.config import cpu_only_note, env_value
from vitrine.display import (
    counted,
    index_lines,
    info_lines,
    migrate_lines,
    one_line,
    results_table,
)
from vitrine.errors import VitrineError
from vitrine.files import is_stream

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                  help="Vitrine: visually similar products from product photos.")


SHOWN_TYPES = {"<Path>": "<path>", "<list[Path]>": "<path>...", "<list[str]>": "<str>..."}
"""Types as the help shows them: a path parsed by cli_support.path_of (typer names its
annotation's class), and lists as several values rather than Python's names (helper-187)."""


def _flags_shown_without_a_value() -> None:
    """Typer's help shows a flag's type (``--json <bool>``) as it shows an option's value
    (``--k <integer>``): `--json true` looked right and was refused (helper-162). A flag
    shows none; types are shown as SHOWN_TYPES says."""
    import typer.core

    for kind in ("TyperOption", "TyperArgument"):
        param = getattr(typer.core, kind, None)
        shown = getattr(param, "display_type_rich", None)
        if shown is None or getattr(shown, "vitrine", False):
            continue

        def display_type_rich(self, ctx, shown=shown):
            if getattr(self, "is_flag", False):
                return None
            label = shown(self, ctx)
            return SHOWN_TYPES.get(label, label)

        display_type_rich.vitrine = True  # type: ignore[attr-defined]
        param.display_type_rich = display_type_rich


_flags_shown_without_a_value()


def _print_version(value: bool) -> None:
    if value:
        from vitrine import __version__

        out.print(f"vitrine {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print Vitrine's version and exit.")] = False) -> None:
    """Vitrine: visually similar products from product photos."""


@app.command()
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
        "products indexed from another folder, or all of them (refused without it).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Index (or re-index) a catalogue folder into a store."""
    from vitrine.catalog import catalogue_state
    from vitrine.embed import Embedder
    from vitrine.errors import NoStore
    from vitrine.indexer import index_catalog, parse_shard, refuse_undecodable
    from vitrine.manifest import kind_mismatch
    from vitrine.split import links_refused, read_catalogue
    from vitrine.store import recorded_model, store_for, upload_folder

    settings = command_settings(weights, model)
    shard_spec = parse_shard(shard)
    uploads = upload_folder(store, settings.upload_dir)
    refused = links_refused(settings)
    state = catalogue_state(catalog_dir, follow_outside=refused is None)  # (read again
    # under the writer lock if it changes while the model loads or another writer writes)
    catalogue = read_catalogue(catalog_dir, uploads,  # a bad folder: before the model
                               refused_links=refused)
    refuse_undecodable(catalog_dir, settings.model)  # (and before the store is made)
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
                               rehash=settings.rehash_photos, catalogue=catalogue,
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


def _forget_figure(target: Path | None, plot: Path | None) -> None:
    """Remove the numbered figure (``fig-1.png`` of ``--plot fig.png``) an earlier run left
    where a photo that failed now had its own: it read as this photo's (helper-238). The
    file ``--plot`` named itself, a device or a folder is left alone."""
    if target is None or target == plot or is_stream(target) or target.is_dir():
        return
    with contextlib.suppress(OSError):
        target.unlink()


def _query_path(text: str) -> Path:
    """A query photo's path: ``~`` is the home folder where no file bears the name as typed
    (a quoted "~/x.jpg" was "no such file" while the other path parameters expand it); an
    unknown user's ``~name`` stays as typed, so that its error names the photo."""
    path = Path(text)
    if text.startswith("~") and not path.exists():
        with contextlib.suppress(RuntimeError):  # (no HOME, or no such user)
            return path.expanduser()
    return path


@app.command()
def search(
    images: Annotated[list[str], typer.Argument(help="Query photos.", metavar="IMAGE")],
    store: StoreOpt,
    k: KOpt = 5,
    category: CategoryOpt = None,
    weights: WeightsOpt = None,
    model: ModelOpt = None,
    plot: PlotOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find the products most similar to one or more photos.

    With several photos, --plot FIG.png writes one figure per photo: FIG-0.png, FIG-1.png
    and so on."""
    from vitrine.errors import ImageError

    if "" in images:  # (Path("") is ".": "'.' is a folder", a name never typed)
        raise VitrineError("an IMAGE argument is empty (an unset shell variable?); name a "
                           "photo.")
    typed, images = images, [_query_path(image) for image in images]  # (a query said as
    # typed: Path drops "./" and "//", so a script looking its own paths up missed each:
    # helper-220)
    plot = plot_path(plot)
    targets = plot_targets(plot, len(images))  # (before the model and the store load)
    rec = open_recommender(store, weights, model)
    category = check_category(rec, category)
    check_plot_targets([t for t in targets if t is not None], images, rec)
    failed = 0
    for query, image, target in zip(typed, images, targets, strict=True):
        try:
            matches, guess = rec.search_image_guess(image, k, category)
        except ImageError as exc:  # the other photos are still searched
            said = f"{query}: {exc.reason}" if exc.source == str(image) else str(exc)
            sys.stderr.write(f"error: {one_line(said)}\n")  # (a file name's ESC or line
            # break reached the terminal as it was; the JSON keeps it as written)
            _forget_figure(target, plot)
            if as_json:  # one object per query, so a script sees which photo failed
                print_json({"query": query, "results": [], "predicted_category": None,
                            "error": said})
            failed += 1
            continue
        if not as_json:
            out.print(results_table(f"Similar to {query}", matches, itself_excluded=False))
            if guess is not None:
                out.print(guess.sentence(), markup=False)
        problem = None
        if target is not None:
            try:
                save_plot(image, image.name, matches, target, as_json,
                          rec.settings.max_image_pixels)
            except VitrineError as exc:  # its results stand; the other photos still come
                sys.stderr.write(f"error: {one_line(str(exc))}\n")
                problem, failed = str(exc), failed + 1
                _forget_figure(target, plot)
        if as_json:  # after the figure: a script sees which photo's figure failed
            print_json({"query": query, "results": [m.as_dict() for m in matches],
                         "predicted_category": guess and guess.as_dict(),
                         **({"error": problem} if problem else {}),
                         **({"figure": str(target)} if target and not problem else {})})
    if failed:
        raise typer.Exit(2)


@app.command()
def similar(
    product_id: Annotated[str, typer.Argument(help="Id of a product in the store.",
                                                    metavar="PRODUCT_ID")],
    store: StoreOpt,
    k: KOpt = 5,
    category: CategoryOpt = None,
    same_category: Annotated[bool, typer.Option(
        "--same-category", help="Only products of the product's own category.")] = False,
    plot: PlotOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find the products most similar to a product of the store (itself excluded)."""
    if not product_id:  # (as every other empty argument; "product '' is not in the store"
        # sent one looking for an id: helper-244)
        raise VitrineError("PRODUCT_ID is empty (an unset shell variable?); name it.")
    if same_category and category is not None:
        raise VitrineError("--category and --same-category each choose the category of the "
                           "results; pass one of them.")
    plot = plot_path(plot)
    rec = open_recommender(store, None, embeds=False)  # (stored vectors: nothing embedded)
    category = check_category(rec, category)
    if plot is not None:  # before the search, as search's
        check_plot_targets([plot], [Path(rec.product(product_id).image)], rec)
    product, matches = rec.similar(product_id, k, category, same_category=same_category)
    if not as_json:
        out.print(results_table(f"Similar to {product_id} ({product.name})", matches))
    problem = None
    if plot is not None:  # before the JSON, as search: a script sees the figure failed
        try:
            save_plot(product.image, product.name or product_id, matches, plot, as_json,
                      rec.settings.max_image_pixels)
        except VitrineError as exc:
            if not as_json:
                raise
            sys.stderr.write(f"error: {one_line(str(exc))}\n")
            problem = str(exc)
    if as_json:
        print_json({"query": product_id, "product": product.as_dict(),
                    "results": [m.as_dict() for m in matches],
                    **({"error": problem} if problem else {}),
                    **({"figure": str(plot)} if plot and not problem else {})})
    if problem:
        raise typer.Exit(2)


@app.command()
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
    """Write every product's most similar products to one file (itself excluded), for a
    shop to import into its own site."""
    from vitrine.related import related_path, write_related
    from vitrine.store import store_for

    out_file = related_path(out_file)  # before the store is opened
    db = store_for(store, read_settings())
    try:
        report = write_related(db, out_file, k, same_category=same_category,
                               show_progress=not as_json)
    finally:
        db.close()
    if as_json:
        print_json(report.as_dict())
        return
    out.print(f"{counted(report.products, 'product')}, {counted(report.pairs, 'similar pair')} "
              "written to "
              f"{report.out} in {report.seconds:.1f} s.", markup=False, highlight=False)


@app.command()
def dedupe(
    dirs: Annotated[list[Path], typer.Argument(help="Folders of photos to compare.",
                                               metavar="DIR", parser=path_of("DIR"))],
    weights: WeightsOpt = None,
    model: ModelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find exact and near-duplicate photos within or across folders."""
    from vitrine.dedupe_files import dedupe_folders

    settings = command_settings(weights, model)
    groups, skipped = dedupe_folders(dirs, settings, show_progress=not as_json)
    if as_json:
        print_json({"groups": groups, "skipped": skipped})
        return
    for skip in skipped:
        out.print(f"skipped {one_line(skip['path'])}: {skip['reason']}")
    out.print(counted(len(groups), "duplicate group"))
    for group in groups:
        out.print("  " + "  ≈  ".join(map(one_line, group)))


@app.command()
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


@app.command()
def info(store: StoreOpt, as_json: JsonOpt = False) -> None:
    """Show what a store holds, which model made its vectors and which index searches them."""
    from vitrine.catalog import reader_order
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
                    "model": manifest.as_dict() if manifest else None}
    finally:
        db.close()
    data["index"] = index_about(db, data["products"])
    if as_json:
        print_json(data)
        return
    for line in info_lines(data, manifest, store):
        out.print(line)


@app.command()
def train(
    catalog_dir: Annotated[Path, typer.Argument(help="Catalogue folder (sub-folder per "
                                                "category), or one split into train|treino, "
                                                "val|validacao, test|teste folders.",
                                                metavar="CATALOG_DIR",
                                                parser=path_of("CATALOG_DIR"))],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Model folder to write.",
                                          parser=path_of("--out"))],
    weights: WeightsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train on the catalogue's categories: transfer learning, then fine-tuning.

    Writes the model, its history, test metrics, figures and report.md to --out."""
    from vitrine.train import train_catalog

    settings = command_settings(weights, embeds=False)
    if note := cpu_only_note(settings, "training"):
        sys.stderr.write(note + "\n")
    summary = train_catalog(catalog_dir, out_dir, settings, show_progress=not as_json)
    from vitrine.report import refit_dropped_line

    if as_json:
        print_json({k: v for k, v in summary.items() if k != "history"})
    else:
        from vitrine.train_display import training_lines

        for line in training_lines(summary):
            out.print(line)
    if dropped := refit_dropped_line(summary):  # (a collapsed refit was saved, exit 0, and
        sys.stderr.write(f"warning: {dropped}\n")  # nothing said it: helper-231)


@app.command()
def evaluate(
    catalog_dir: Annotated[Path, typer.Argument(help="Labelled catalogue folder.",
                                                   metavar="CATALOG_DIR",
                                                   parser=path_of("CATALOG_DIR"))],
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    k: Annotated[int, typer.Option("--k", "-k", min=1, max=100, help="The k of P@k, R@k "
                                   "and mAP@k: results each query is scored on.")] = 5,
    as_json: JsonOpt = False,
) -> None:
    """Classification and retrieval metrics (P@k, R@k, mAP@k per category).

    Of a trained model (--model) next to the pretrained backbone, or of the pretrained backbone
    alone (--weights)."""
    from vitrine.model_eval import evaluate_catalog

    settings = command_settings(weights, model)
    if settings.model and (note := cpu_only_note(settings, "a trained model's evaluation")):
        sys.stderr.write(note + "\n")
    report = evaluate_catalog(catalog_dir, settings, model_dir=settings.model, k=k,
                              show_progress=not as_json)
    if as_json:
        print_json(report)
        return
    from vitrine.train_display import evaluation_tables

    for table in evaluation_tables(report):
        out.print(table)


@app.command()
def demo(
    catalog: Annotated[Path | None, typer.Option(help="Catalogue folder (default: the "
                                                 "VITRINE_DEMO_CATALOG setting).",
                                                 parser=path_of("--catalog"))] = None,
    store: Annotated[str | None, typer.Option(help="Store folder (default: OUT/store, or "
                                              "the VITRINE_DEMO_STORE setting).",
                                              metavar="PATH")] = None,
    out_dir: Annotated[str | None, typer.Option("--out", help="Folder of the model, the "
                                                "figures and demo.json (default: the "
                                                "VITRINE_DEMO_OUT setting, else demo-output).",
                                                metavar="PATH")] = None,
    weights: WeightsOpt = None,
    k: KOpt = 5,
    model: ModelOpt = None,
    train_model: Annotated[bool | None, typer.Option(
        "--train/--no-train", help="Train on the catalogue (or reuse the model trained from "
        "the same photos and settings) and index with it; default: VITRINE_DEMO_TRAIN "
        "(true).")] = None,
    serve_app: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve the web app on "
                                            "the demo store at the end.")] = True,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
) -> None:
    """The main job on the demo catalogue: train, index, recommend, serve.

    Trains on the demo catalogue (or reuses the model trained from the same photos and
    settings), indexes it with the trained model, shows recommendations for one product of each
    category (tables and figures), then serves the web app on it."""
    from vitrine.server import bind, exposure_note

    if train_model and model is not None:  # (before --model's own check: the two conflict)
        raise VitrineError("--train trains a model, and --model names one to use; pass one "
                           "of them.")
    for name, given in (("--store", store), ("--out", out_dir)):  # (as Path options, "" was
        if given is not None and not given.strip():  # the folder the demo ran in)
            raise VitrineError(f"{name} is empty; name a folder, or leave {name} out for its "
                               "default.")
    # the options over the settings, whose values of them are not read (a bad
    # VITRINE_DEMO_OUT refused `--out DIR`: helper-230); --train trains, whatever model
    # VITRINE_MODEL names (it indexed with that model, untrained)
    options = {"demo_train": ("--train" if train_model else "--no-train", train_model),
               "demo_catalog": ("--catalog", catalog), "demo_store": ("--store", store),
               "demo_out": ("--out", out_dir)}
    over = {field: said for field, said in options.items() if said[1] is not None}
    if train_model:
        over["model"] = ("--train", None)
    settings = command_settings(weights, model, given=over)
    if catalog is None:
        catalog = settings.demo_catalog
        if catalog is None:
            raise VitrineError("no demo catalogue given; pass --catalog DIR or set "
                               "VITRINE_DEMO_CATALOG.")
        if not catalog.is_dir():  # (said as the setting's: the user did not type it here)
            raise VitrineError(f"setting VITRINE_DEMO_CATALOG={str(catalog)!r}: no folder "
                               "there; set it to the demo catalogue's folder, or pass "
                               "--catalog DIR.")
    setting = env_value("VITRINE_DEMO_STORE", str(settings.demo_store))
    for said, given in ((f"--store {store}", store),
                        (f"setting VITRINE_DEMO_STORE={setting!r}", settings.demo_store)):
        if given is not None and re.match(r"milvus(-lite)?:/", str(given)):
            # (a Milvus address: Path made it a folder named "milvus-lite:")
            raise VitrineError(f"{said}: the demo keeps its store in a folder; to use a "
                               "Milvus store, index it with `vitrine index CATALOG --store "
                               "ADDRESS` and serve it with `vitrine serve`.")
    sock = bind(host, port) if serve_app else None  # a busy port fails before indexing
    for note in (exposure_note(host, settings.api_key, sock.getsockname()[0]),
                 api_key_note(settings)) if sock else ():
        if note:
            err.print(note, markup=False, soft_wrap=True)
    from vitrine.demo import run_demo

    # (`--out=~/x`: a shell leaves ~ as it is after '=')
    out_path = (Path(out_dir) if out_dir else settings.demo_out).expanduser()
    if out_dir is None and out_path.exists() and not out_path.is_dir():  # (said as the
        # setting's: run_demo said "--out FILE", an option the user did not pass)
        raise VitrineError(f"setting VITRINE_DEMO_OUT="
                           f"{env_value('VITRINE_DEMO_OUT', str(out_path))!r} is a file; set "
                           "it to a folder for the demo's figures and model, or pass --out "
                           "DIR.")
    # inside --out, where the demo knows its own store, unless set apart
    store_path = (Path(store) if store else settings.demo_store or out_path / "store"
                  ).expanduser()
    run_demo(catalog.expanduser(), store_path, out_path, settings, k, console=out, serve=sock)


@app.command()
def serve(
    store: StoreOpt,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    weights: WeightsOpt = None,
    model: ModelOpt = None,
    root_path: Annotated[str | None, typer.Option(
        "--root-path", help="The path prefix a reverse proxy serves Vitrine under, such as "
        "/vitrine, stripping it before passing requests on: the pages' links start with it; "
        "default: VITRINE_ROOT_PATH (none).", metavar="<path>")] = None,
) -> None:
    """Serve the web page and the REST API (OpenAPI at /docs) over a store.

    With the model that indexed it: --weights, or --model for a trained one."""
    from vitrine.server import bind, exposure_note, ready_message
    from vitrine.server import serve as run_server

    settings = command_settings(weights, model, given=None if root_path is None else {
        "root_path": ("--root-path", root_path)})  # (checked as the setting is, named so)
    sock = bind(host, port)  # a busy port fails before the model loads
    for note in (exposure_note(host, settings.api_key, sock.getsockname()[0]),
                 api_key_note(settings)):
        if note:
            err.print(note, markup=False, soft_wrap=True)
    from vitrine.api import create_app

    app_ = create_app(settings, store)
    run_server(app_, sock, on_ready=lambda address: out.print(
        ready_message(address, settings.root_path), soft_wrap=True))


@app.command()
def bench(
    items: Annotated[int | None, typer.Option(
        "--items", min=1, help="Index N synthetic clustered vectors (index settings apply); "
        "report latency, recall@10, build time and memory.")] = None,
    images: Annotated[Path | None, typer.Option(
        "--images", help="Catalogue folder: whole-pipeline indexing throughput.",
        parser=path_of("--images"))] = None,
    weights: WeightsOpt = None,
    model: ModelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure search on synthetic vectors and embedding throughput on real photos.

    The synthetic vectors have the dimension of the model in use (--model or
    VITRINE_MODEL: a trained model's; else the backbone's)."""
    from vitrine.bench import bench_lines, run_bench

    report = run_bench(command_settings(weights, model), items=items, images=images,
                       show_progress=not as_json)
    if as_json:
        print_json(report)
        return
    for line in bench_lines(report):
        out.print(line)


def main() -> None:
    """Entry point: run the app (in Python's UTF-8 mode), turning user errors into one
    sentence and exit status 2."""
    utf8_mode()
    run_app(app)

if __name__ == "__main__":
    main()
