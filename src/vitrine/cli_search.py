"""The commands that find similar photos and products: ``search`` (by photo), ``similar``
(by a product of the store) and ``dedupe`` (duplicate photos within or across folders)."""

from __future__ import annotations

import contextlib
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vitrine.cli_plot import check_plot_targets, plot_path, plot_targets, save_plot
from vitrine.cli_support import (
    AttrOpt,
    CategoryOpt,
    JsonOpt,
    KOpt,
    MaxPriceOpt,
    MinPriceOpt,
    ModelOpt,
    PlotOpt,
    StoreOpt,
    WeightsOpt,
    check_category,
    command_settings,
    open_recommender,
    out,
    path_of,
    print_json,
    product_filter,
)
from vitrine.display import counted, one_line, results_table
from vitrine.errors import ImageError, VitrineError
from vitrine.files import is_stream

if TYPE_CHECKING:
    from vitrine.recommend import Recommender
    from vitrine.store.base import Match


def _forget_figure(target: Path | None, plot: Path | None) -> None:
    """Remove the numbered figure (``fig-1.png`` of ``--plot fig.png``) an earlier run left
    where a photo that failed now had its own: it read as this photo's (helper-238). The
    file ``--plot`` named itself, a device or a folder is left alone."""
    if target is None or target == plot or is_stream(target) or target.is_dir():
        return
    with contextlib.suppress(OSError):
        target.unlink()


def results_json(matches: list[Match], rec: Recommender) -> list[dict]:
    """The results of ``--json``, each saying how many other products share its photo (a
    list shows one of them: :func:`vitrine.copies.one_a_photo`)."""
    copies = rec.copies()
    return [{**m.as_dict(), "same_photo": copies.same_photo(m.product)} for m in matches]


def _query_path(text: str) -> Path:
    """A query photo's path: ``~`` is the home folder where no file bears the name as typed
    (a quoted "~/x.jpg" was "no such file" while the other path parameters expand it); an
    unknown user's ``~name`` stays as typed, so that its error names the photo."""
    path = Path(text)
    if text.startswith("~") and not path.exists():
        with contextlib.suppress(RuntimeError):  # (no HOME, or no such user)
            return path.expanduser()
    return path


_WEB_ADDRESS = re.compile(r"(?:https?|ftp|s3|gs)://", re.IGNORECASE)
"""A query typed as a web address (Vitrine downloads nothing: it said "file not found")."""


def _not_a_web_address(query: str, image: Path) -> None:
    """An ImageError when the query ``query`` is a web address no file here bears."""
    if _WEB_ADDRESS.match(query) and not image.exists():
        raise ImageError(str(image), "a web address, not a photo file (Vitrine reads photos "
                         "from files and downloads nothing); download it first and give "
                         "its path.")


def search(
    images: Annotated[list[str], typer.Argument(help="Query photos.", metavar="IMAGE")],
    store: StoreOpt,
    k: KOpt = 5,
    category: CategoryOpt = None,
    min_price: MinPriceOpt = None,
    max_price: MaxPriceOpt = None,
    attrs: AttrOpt = None,
    weights: WeightsOpt = None,
    model: ModelOpt = None,
    plot: PlotOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find the products most similar to one or more photos.

    With several photos, --plot FIG.png writes one figure per photo: FIG-0.png, FIG-1.png
    and so on."""
    if "" in images:  # (Path("") is ".": "'.' is a folder", a name never typed)
        raise VitrineError("an IMAGE argument is empty (an unset shell variable?); name a "
                           "photo.")
    where = product_filter(min_price, max_price, attrs)
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
            _not_a_web_address(query, image)
            matches, guess = rec.search_image_guess(image, k, category, where=where)
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
            out.print(results_table(f"Similar to {query}", matches, itself_excluded=False,
                                    filtered=bool(where)))
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
            print_json({"query": query, "results": results_json(matches, rec),
                         "predicted_category": guess and guess.as_dict(),
                         "placeholders_left_out": rec.placeholders().left_out(),
                         **({"error": problem} if problem else {}),
                         **({"figure": str(target)} if target and not problem else {})})
    if failed:
        raise typer.Exit(2)


def similar(
    product_id: Annotated[str, typer.Argument(help="Id of a product in the store.",
                                                    metavar="PRODUCT_ID")],
    store: StoreOpt,
    k: KOpt = 5,
    category: CategoryOpt = None,
    same_category: Annotated[bool, typer.Option(
        "--same-category", help="Only products of the product's own category.")] = False,
    min_price: MinPriceOpt = None,
    max_price: MaxPriceOpt = None,
    attrs: AttrOpt = None,
    plot: PlotOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find the products most similar to a product of the store (itself and its copies
    excluded)."""
    if not product_id:  # (as every other empty argument; "product '' is not in the store"
        # sent one looking for an id: helper-244)
        raise VitrineError("PRODUCT_ID is empty (an unset shell variable?); name it.")
    if same_category and category is not None:
        raise VitrineError("--category and --same-category each choose the category of the "
                           "results; pass one of them.")
    where = product_filter(min_price, max_price, attrs)
    plot = plot_path(plot)
    rec = open_recommender(store, None, embeds=False)  # (stored vectors: nothing embedded)
    category = check_category(rec, category)
    if plot is not None:  # before the search, as search's
        check_plot_targets([plot], [Path(rec.product(product_id).image)], rec)
    product, matches = rec.similar(product_id, k, category, same_category=same_category,
                                  where=where)
    held = rec.placeholders()
    if not as_json:
        out.print(results_table(f"Similar to {product_id} ({product.name})", matches,
                                filtered=bool(where)))
        if held.sharing(product):
            out.print(f"Its photo is the one of {held.sharing(product)} products (a "
                      "placeholder): these look like the photo, not like the product.",
                      markup=False, highlight=False)
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
                    "results": results_json(matches, rec),
                    "placeholder": held.sharing(product) > 0,
                    "placeholders_left_out": held.left_out(product),
                    **({"error": problem} if problem else {}),
                    **({"figure": str(plot)} if plot and not problem else {})})
    if problem:
        raise typer.Exit(2)


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
