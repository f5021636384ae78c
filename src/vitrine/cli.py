"""Command line: a thin Typer shell over the library. Errors a user can cause print one
sentence on stderr and exit with status 2."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from vitrine.config import Settings, load_settings
from vitrine.display import results_table
from vitrine.errors import VitrineError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                  help="Vitrine: visually similar products from product photos.")
out = Console()
err = Console(stderr=True)

StoreOpt = Annotated[str, typer.Option(
    "--store", "-s", help="Store: a folder (embedded default), milvus-lite:///ABS/PATH.db, "
    "or milvus://HOST:PORT\\[/COLLECTION].")]
WeightsOpt = Annotated[Path | None, typer.Option(
    "--weights", help="Local backbone weights (torchvision state_dict); default: "
    "VITRINE_WEIGHTS, else torchvision's download.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
KOpt = Annotated[int, typer.Option("--k", "-k", min=1, max=100, help="Number of results.")]
CategoryOpt = Annotated[str | None, typer.Option("--category", "-c",
                                                 help="Only products of this category.")]
PlotOpt = Annotated[Path | None, typer.Option("--plot", help="Save a figure (PNG).")]
ModelOpt = Annotated[Path | None, typer.Option(
    "--model", help="Trained model folder (vitrine train --out) to embed with; default: "
    "VITRINE_MODEL, else the pretrained backbone.")]
HostOpt = Annotated[str, typer.Option("--host", help="Address to listen on.")]
PortOpt = Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")]


def _settings(weights: Path | None = None, model: Path | None = None) -> Settings:
    settings = load_settings()
    if weights is not None:
        settings = settings.model_copy(update={"weights": weights})
    if model is not None:
        settings = settings.model_copy(update={"model": model})
    return settings


def _finite(value):
    """``value`` with NaN and infinities as None (JSON has no NaN: metrics of an empty set)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _print_json(data: dict) -> None:
    data = _finite(data)
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a file name that is not UTF-8: \u escapes keep it valid JSON
        text = json.dumps(data)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


@app.command()
def index(
    catalog_dir: Annotated[Path, typer.Argument(help="Catalogue folder (sub-folder per "
                                                "category, optional products.csv).")],
    store: StoreOpt,
    weights: WeightsOpt = None,
    model: ModelOpt = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit non-zero if any file is "
                                         "skipped.")] = False,
    shard: Annotated[str | None, typer.Option(
        "--shard", help="I/N: index only shard I of N (parallel writers into one Milvus "
        "store).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Index (or re-index) a catalogue folder into a store."""
    from vitrine.catalog import read_catalog
    from vitrine.embed import Embedder
    from vitrine.indexer import index_catalog, parse_shard
    from vitrine.store import open_store, upload_folder

    settings = _settings(weights, model)
    shard_spec = parse_shard(shard)
    read_catalog(catalog_dir)  # fail on a bad folder before loading the model
    embedder = Embedder.from_settings(settings)
    db = open_store(store, create=True, token=settings.milvus_token,
                    index_config=_index_config(settings))
    try:
        report = index_catalog(catalog_dir, db, embedder, rules=_rules(settings),
                               show_progress=not as_json, shard=shard_spec,
                               uploads=upload_folder(db, settings.upload_dir))
    finally:
        db.close()
    if as_json:
        _print_json(report.as_dict())
    else:
        out.print(f"Indexed {report.indexed}, updated {report.updated}, removed "
                  f"{report.removed}, unchanged {report.unchanged} in {report.seconds:.1f} s "
                  f"→ {store}")
        if report.uploaded:
            out.print(f"Left as they are: {report.uploaded} products added or replaced through "
                      "the API (delete them there to hand their ids back to the catalogue).")
        for skip in report.skipped:
            out.print(f"  skipped {skip['path']}: {skip['reason']}")
        if report.duplicates:
            out.print(f"{len(report.duplicates)} duplicate groups:")
            for group in report.duplicates:
                out.print("  " + "  ≈  ".join(group))
    if strict and report.skipped:
        sys.stderr.write(f"error: {len(report.skipped)} file(s) skipped and --strict is set.\n")
        raise typer.Exit(1)


def _rules(settings: Settings):
    from vitrine.dedupe import DuplicateRules

    return DuplicateRules.from_settings(settings)


def _recommender(store: Path, weights: Path | None, model: Path | None = None):
    from vitrine.recommend import Recommender
    from vitrine.store import open_store

    settings = _settings(weights, model)
    return Recommender(open_store(store, token=settings.milvus_token,
                                  index_config=_index_config(settings)), settings)


def _index_config(settings: Settings):
    from vitrine.ann import IndexConfig

    return IndexConfig.from_settings(settings)


@app.command()
def search(
    images: Annotated[list[Path], typer.Argument(help="Query photos.")],
    store: StoreOpt,
    k: KOpt = 5,
    category: CategoryOpt = None,
    weights: WeightsOpt = None,
    model: ModelOpt = None,
    plot: PlotOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find the products most similar to one or more photos."""
    from vitrine.errors import ImageError

    plot = _plot_path(plot)
    rec = _recommender(store, weights, model)
    _check_category(rec, category)
    failed = 0
    for i, image in enumerate(images):
        try:
            matches, guess = rec.search_image_guess(image, k, category)
        except ImageError as exc:  # the other photos are still searched
            sys.stderr.write(f"error: {exc}\n")
            failed += 1
            continue
        if as_json:
            _print_json({"query": str(image), "results": [m.as_dict() for m in matches],
                         "predicted_category": guess and guess.as_dict()})
        else:
            out.print(results_table(f"Similar to {image}", matches))
            if guess is not None:
                out.print(f"Looks like: {guess.category} ({guess.probability:.0%})", markup=False)
        if plot is not None:
            target = plot if len(images) == 1 else plot.with_name(f"{plot.stem}-{i}{plot.suffix}")
            _plot(image, image.name, matches, target, as_json)
    if failed:
        raise typer.Exit(2)


PLOT_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")


def _plot_path(plot: Path | None) -> Path | None:
    """The figure file ``--plot`` names (``.png`` added to a name without a suffix); a
    folder or an unknown format is an error before any work."""
    if plot is None:
        return None
    if plot.is_dir():
        raise VitrineError(f"--plot {plot} is a folder; name a file such as {plot}/fig.png.")
    if not plot.suffix:
        return plot.with_name(plot.name + ".png")
    if plot.suffix.lower() not in PLOT_SUFFIXES:
        raise VitrineError(f"--plot {plot}: use a file ending in {', '.join(PLOT_SUFFIXES)}.")
    return plot


def _check_category(rec, category: str | None) -> None:
    """An unknown ``--category`` is an error naming the store's categories (a typo would
    otherwise look like 'no similar products')."""
    if category is None:
        return
    known = rec.store.categories()
    if category not in known:
        raise VitrineError(f"the store has no products of category {category!r}; it has "
                           f"{', '.join(repr(c) for c in known) or 'none'}.")


def _plot(image, title, matches, target: Path, quiet: bool) -> None:
    from vitrine.plots import plot_recommendations

    plot_recommendations(image, title, matches, target)
    if not quiet:
        out.print(f"Figure saved to {target}")


@app.command()
def similar(
    product_id: Annotated[str, typer.Argument(help="Id of a product in the store.")],
    store: StoreOpt,
    k: KOpt = 5,
    category: CategoryOpt = None,
    plot: PlotOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find the products most similar to a product of the store (itself excluded)."""
    plot = _plot_path(plot)
    rec = _recommender(store, None)
    _check_category(rec, category)
    product, matches = rec.similar(product_id, k, category)
    if as_json:
        _print_json({"query": product_id, "product": product.as_dict(),
                     "results": [m.as_dict() for m in matches]})
    else:
        out.print(results_table(f"Similar to {product_id} ({product.name})", matches))
    if plot is not None:
        _plot(product.image, product.name or product_id, matches, plot, as_json)


@app.command()
def dedupe(
    dirs: Annotated[list[Path], typer.Argument(help="Folders of photos to compare.")],
    weights: WeightsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find exact and near-duplicate photos within or across folders."""
    from vitrine.dedupe_files import dedupe_folders

    settings = _settings(weights)
    groups, skipped = dedupe_folders(dirs, settings, rules=_rules(settings),
                                     show_progress=not as_json)
    if as_json:
        _print_json({"groups": groups, "skipped": skipped})
        return
    for skip in skipped:
        out.print(f"skipped {skip['path']}: {skip['reason']}")
    out.print(f"{len(groups)} duplicate groups")
    for group in groups:
        out.print("  " + "  ≈  ".join(group))


@app.command()
def migrate(
    source: Annotated[str, typer.Argument(help="Store to copy from.")],
    target: Annotated[str, typer.Argument(help="Store to copy into (created if needed).")],
    as_json: JsonOpt = False,
) -> None:
    """Copy every product and vector from one store to another, without re-embedding.

    For example from the embedded store to Milvus; refuses a target made by another model.
    Photos of products added through the API go to the target's upload folder (STORE/uploads,
    or VITRINE_UPLOAD_DIR)."""
    from vitrine.migrate import migrate_store
    from vitrine.store import open_store, upload_folder

    settings = load_settings()
    token = settings.milvus_token
    src, dst = open_store(source, token=token), open_store(target, create=True, token=token)
    try:
        copied = migrate_store(src, dst, photos_to=upload_folder(dst, settings.upload_dir),
                               show_progress=not as_json)
    finally:
        src.close()
        dst.close()
    if as_json:
        _print_json({"copied": copied, "source": source, "target": target})
    else:
        out.print(f"Copied {copied} products from {source} to {target}.")


@app.command()
def info(store: StoreOpt, as_json: JsonOpt = False) -> None:
    """Show what a store holds and which model made its vectors."""
    from vitrine.store import open_store

    db = open_store(store, token=load_settings().milvus_token)
    manifest = db.manifest()
    data = {"products": db.count(), "categories": db.categories(),
            "model": manifest.as_dict() if manifest else None}
    db.close()
    if as_json:
        _print_json(data)
        return
    out.print(f"{data['products']} products in {store}")
    for name, n in data["categories"].items():
        out.print(f"  {name or '(none)'}: {n}")
    if manifest:
        out.print(f"model: {manifest.backbone}, {manifest.dim}-d, weights "
                  f"{manifest.weights_sha256[:12]}, resize {manifest.preprocessing['resize']}")


@app.command()
def train(
    catalog_dir: Annotated[Path, typer.Argument(help="Catalogue folder (sub-folder per "
                                                "category), or one split into train|treino, "
                                                "val|validacao, test|teste folders.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Model folder to write.")],
    weights: WeightsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train on the catalogue's categories: transfer learning, then fine-tuning.

    Writes the model, its history, test metrics, figures and report.md to --out."""
    from vitrine.train import train_catalog

    summary = train_catalog(catalog_dir, out_dir, _settings(weights),
                            show_progress=not as_json)
    if as_json:
        _print_json({k: v for k, v in summary.items() if k != "history"})
        return
    from vitrine.train_display import training_lines

    for line in training_lines(summary):
        out.print(line)


@app.command()
def evaluate(
    catalog_dir: Annotated[Path, typer.Argument(help="Labelled catalogue folder.")],
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    k: KOpt = 5,
    as_json: JsonOpt = False,
) -> None:
    """Classification and retrieval metrics (P@k, R@k, mAP@k per category).

    Of a trained model (--model) next to the pretrained backbone, or of the pretrained backbone
    alone (--weights)."""
    from vitrine.model_eval import evaluate_catalog

    settings = _settings(weights)
    report = evaluate_catalog(catalog_dir, settings, model_dir=model or settings.model, k=k,
                              show_progress=not as_json)
    if as_json:
        _print_json(report)
        return
    from vitrine.train_display import evaluation_tables

    for table in evaluation_tables(report):
        out.print(table)


@app.command()
def demo(
    catalog: Annotated[Path | None, typer.Option(help="Catalogue folder (default: the "
                                                 "VITRINE_DEMO_CATALOG setting).")] = None,
    store: Annotated[Path | None, typer.Option(help="Store folder.")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Figures folder.")] = None,
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
    from vitrine.server import bind

    settings = _settings(weights, model)
    if train_model is not None:
        settings = settings.model_copy(update={"demo_train": train_model})
    catalog = catalog or settings.demo_catalog
    if catalog is None:
        raise VitrineError("no demo catalogue given; pass --catalog DIR or set "
                           "VITRINE_DEMO_CATALOG.")
    sock = bind(host, port) if serve_app else None  # a busy port fails before indexing
    from vitrine.demo import run_demo

    run_demo(catalog, store or settings.demo_store, out_dir or settings.demo_out, settings,
             k, console=out, serve=sock)


@app.command()
def serve(
    store: StoreOpt,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    weights: WeightsOpt = None,
    model: ModelOpt = None,
) -> None:
    """Serve the web page and the REST API (OpenAPI at /docs) over a store.

    With the model that indexed it: --weights, or --model for a trained one."""
    from vitrine.server import bind, ready_message
    from vitrine.server import serve as run_server

    sock = bind(host, port)  # a busy port fails before the model loads
    from vitrine.api import create_app

    app_ = create_app(_settings(weights, model), store)
    run_server(app_, sock, on_ready=lambda address: out.print(ready_message(address),
                                                              soft_wrap=True))


@app.command()
def bench(
    items: Annotated[int | None, typer.Option(
        "--items", min=1, help="Index N synthetic clustered vectors (index settings apply); "
        "report latency, recall@10, build time and memory.")] = None,
    images: Annotated[Path | None, typer.Option(
        "--images", help="Catalogue folder: whole-pipeline indexing throughput.")] = None,
    weights: WeightsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure search on synthetic vectors and embedding throughput on real photos."""
    from vitrine.bench import bench_lines, run_bench

    report = run_bench(_settings(weights), items=items, images=images,
                       show_progress=not as_json)
    if as_json:
        _print_json(report)
        return
    for line in bench_lines(report):
        out.print(line)


def main() -> None:
    """Entry point: run the app, turning user errors into one sentence and exit status 2."""
    try:
        status = app(standalone_mode=False)
        if status == 130:  # Typer turned Ctrl+C into this status itself
            err.print("interrupted.")
        sys.exit(status if isinstance(status, int) else 0)
    except VitrineError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("aborted.")
        sys.exit(130)
    except KeyboardInterrupt:
        err.print("interrupted.")
        sys.exit(130)
    except Exception as exc:
        # usage errors: click's ClickException, or the copy of it that newer Typer bundles
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            sys.exit(code)
        raise


if __name__ == "__main__":
    main()
