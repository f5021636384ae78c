"""Rich tables shared by the command-line commands.

Product names, ids, categories and paths are the shop's data: they go into tables as
:class:`~rich.text.Text` (``plain``), never as strings, which rich would read as markup
(``Promo [/promo]`` crashed, ``[red]`` coloured) and emoji codes (``:fire:``)."""

from __future__ import annotations

import math
import re
import sys
import unicodedata
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:  # importing the store would load torch before the CLI handles Ctrl+C
    from vitrine.index_report import IndexReport
    from vitrine.manifest import ModelManifest
    from vitrine.migrate import Migrated
    from vitrine.store.base import Match


def _near_certain(p: float) -> bool:
    """Whether ``p`` is under 1 but would read "100%" in whole percent."""
    return math.isfinite(p) and round(p * 100) >= 100 and p < 1


def shown_percent(p: float) -> float:
    """A probability in percent as :func:`percent` shows it: whole, but one decimal and at
    most 99.9 where it would read 100 without being 1."""
    if not math.isfinite(p):
        return p * 100
    return min(round(p * 100, 1), 99.9) if _near_certain(p) else round(p * 100)


def cents(value: float) -> Decimal:
    """A price to the cent, half up as it is written ("0.125" is 0.13; the float's own
    rounding gave 0.12), from the shortest decimal that is the float (+ 0.0: a -0.0 stored
    before the product kept no sign is 0.00). The web pages and the terminal both say it."""
    return Decimal(repr(value + 0.0)).quantize(Decimal("0.01"), ROUND_HALF_UP)


def counted(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is one: "1 duplicate group", "2 groups"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def percent(p: float) -> str:
    """A probability as a whole percent ("85%"), but one under 1 that would round to "100%"
    with one decimal, at most 99.9 % (a guess of 0.9959 read as certain)."""
    return f"{shown_percent(p):.1f}%" if _near_certain(p) else f"{p:.0%}"


def one_line(text: str) -> str:
    """``text`` with its control characters escaped (a file name holding a line break read as
    two lines, the second a path that does not exist); accents and emoji stay as they are."""
    return "".join(repr(c)[1:-1] if unicodedata.category(c) == "Cc" else c for c in text)


_BREAKS = re.compile(r"[\t\n\r]+")


def plain(value: object, style: str = "") -> Text:
    """``value`` as literal text: no markup, no emoji codes, line breaks and tabs as a space
    (as the web pages show a name a spreadsheet wrote over two lines), other control
    characters escaped (:func:`one_line`: a supplier's product table wrote ESC sequences to
    the terminal that cleared it, retitled it or planted links: helper-181); what the
    terminal's encoding cannot show escaped here (``\\xe9``), not as it is written, so that
    a table is sized to it (its borders were pushed out of line: helper-158)."""
    text = one_line(_BREAKS.sub(" ", str(value)))
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        text = text.encode(encoding, "backslashreplace").decode(encoding)
    except LookupError:  # (an encoding Python does not know)
        pass
    return Text(text, style=style)


def results_table(title: str, matches: list[Match], *, itself_excluded: bool = True,
                  filtered: bool = False) -> Table:
    """Ranked matches; ``title`` is shown literally (it names the query). No matches are
    said under the table: of a product (``itself_excluded``), the store holds no other one;
    of a photo, none; with a price or attribute filter (``filtered``), none passes it (the
    store holding none was said of a filter that left every product out)."""
    table = Table(title=plain(one_line(title), "table.title"), title_justify="left")
    # (the rank, score and id keep their width in a narrow terminal: at 20 columns they
    # were squeezed to nothing, and only the name was shown, a letter a line)
    for col, least in (("#", 2), ("score", 5), ("product_id", 6), ("category", None),
                       ("name", None), ("price", None)):
        table.add_column(col, overflow="fold", min_width=least)
    for rank, m in enumerate(matches, 1):
        price = "" if m.product.price is None else f"{cents(m.product.price):f}"
        table.add_row(str(rank), f"{m.score:.3f}", plain(m.product.product_id),
                      plain(m.product.category), plain(m.product.name), price)
    if not matches and filtered:
        table.caption = (f"No product to show: none of the store's "
                         f"{'other ' if itself_excluded else ''}products (of the category "
                         "asked for) passes the price and attribute filter.")
    elif not matches:  # (an empty table alone read as a failure to show them)
        table.caption = (f"No product to show: the store holds "
                         f"{'no other one' if itself_excluded else 'none'} (of the category "
                         "asked for).")
        table.caption_justify = "left"
    return table


GROUP_SHOWN = 10
"""Members of a duplicate group `index` names in the terminal (a placeholder photo that
thousands of products share made a line of hundreds of kilobytes)."""


def index_lines(report: IndexReport, dup_max_products: int, store: str) -> list[str]:
    """What ``vitrine index`` says in the terminal about its run (``--json`` prints the
    report itself)."""
    from vitrine.catalog import category_twins_note, recategorised_note

    lines = [f"Indexed {report.indexed}, updated {report.updated}, removed {report.removed}, "
             f"unchanged {report.unchanged} in {report.seconds:.1f} s → {one_line(store)}"]
    if report.unlisted:
        one = report.unlisted == 1
        lines.append(f"{counted(report.unlisted, 'photo')} {'is' if one else 'are'} not "
                     "listed in the catalogue's product table: indexed as products named after "
                     f"{'its file' if one else 'their files'}, without price (add "
                     f"{'a row for it' if one else 'rows for them'}, or move "
                     f"{'it' if one else 'them'} out of the catalogue folder).")
    if report.edits_kept:
        lines.append(f"Kept: the fields of {counted(report.edits_kept, 'product')} edited "
                     "through the API (no row of a product table names "
                     f"{'it' if report.edits_kept == 1 else 'them'}; a row would set "
                     f"{'its' if report.edits_kept == 1 else 'their'} fields).")
    if report.category_from_table:
        lines.append(recategorised_note(report.category_from_table))
    if report.category_twins:
        lines.append(category_twins_note(report.category_twins))
    if report.uploaded:
        lines.append(f"Left as they are: {counted(report.uploaded, 'product')} added or "
                     "replaced through the API (delete them there to hand their ids back to "
                     "the catalogue).")
    lines += [f"  skipped {one_line(skip['path'])}: {skip['reason']}" for skip in report.skipped]
    if report.index_unsaved:
        lines.append(f"Note: the search index could not be saved ({report.index_unsaved}): "
                     "each search command, and the server at its first search, builds it "
                     "again until an index run saves it; free some room and run index "
                     "again.")
    if not report.duplicates_searched:
        lines.append("Duplicates not searched: " + (
            "VITRINE_DUP_MAX_PRODUCTS is 0." if not dup_max_products else
            f"the store holds more than VITRINE_DUP_MAX_PRODUCTS ({dup_max_products:,}) "
            "products (raise it to search a store this size).") + " " + copies_as_of(
                report.duplicates_as_of, in_index=True))
    if n := report.thumbnails_upgraded:
        lines.append(
            f"Thumbnails of {counted(n, 'product')} made again from "
            f"{'its photo' if n == 1 else 'their photos'} (an older Vitrine made "
            f"{'it' if n == 1 else 'them'} without the duplicate search's second views, or "
            "with views that were only mirrored; not embedded again): padded, squared, "
            "mirrored or turned copies are found now.")
    if n := report.duplicates_without_views:
        lines.append(
            f"Note: {counted(n, 'product')} of the store kept "
            f"{'a thumbnail' if n == 1 else 'thumbnails'} an older Vitrine made, "
            f"{'its photo' if n == 1 else 'their photos'} missing, unreadable or changed "
            "since, so padded, squared, mirrored or turned copies of "
            f"{'it' if n == 1 else 'them'} are not found as duplicates; put "
            f"{'its photo' if n == 1 else 'their photos'} back (or add "
            f"{'that product' if n == 1 else 'those products'} again) to find them.")
    if report.duplicates:
        lines.append(f"{counted(len(report.duplicates), 'duplicate group')}:")
        lines += ["  " + "  ≈  ".join(map(one_line, group[:GROUP_SHOWN])) + (
            f"  ≈  … and {len(group) - GROUP_SHOWN:,} more (--json lists them)"
            if len(group) > GROUP_SHOWN else "") for group in report.duplicates]
    return lines


def migrate_lines(done: Migrated, source: str, target: str) -> list[str]:
    """What ``vitrine migrate`` says in the terminal about its copy."""
    lines = [f"Copied {counted(done.copied, 'product')} from {one_line(str(source))} to "
             f"{one_line(str(target))}."]
    if done.changed_meanwhile:
        lines.append(f"Left out {len(done.changed_meanwhile)} product(s) deleted or given "
                     "another photo in the source during the copy; run migrate again to copy "
                     "what the source holds now.")
    if done.removed:
        lines.append(f"Removed {done.removed} product(s) of the target that the source does "
                     "not hold.")
    elif done.not_in_source:
        lines.append(f"The target also holds {len(done.not_in_source)} product(s) the source "
                     "does not (deleted there since an earlier copy, or added to the target); "
                     "--prune removes them.")
    return lines


def info_lines(data: dict, manifest: ModelManifest | None, store: str) -> list[str]:
    """What ``vitrine info`` says in the terminal about a store (``data``: its JSON)."""
    lines = [f"{counted(data['products'], 'product')} in {one_line(str(store))}" + (
        f", indexed from {one_line(data['catalog_folder'])}" if data["catalog_folder"] else "")]
    # (a table's category may hold a line break: one category, one line)
    lines += [f"  {one_line(name) or '(none)'}: {n}" for name, n in data["categories"].items()]
    if data.get("unfinished_copy_of"):
        source = one_line(data["unfinished_copy_of"])
        lines.append(f"an unfinished copy of {source}: `vitrine migrate` stopped before "
                     "its end; run it again to finish it")
    if manifest:
        resize = manifest.preprocessing.get("resize", "?")
        lines.append(f"model: {manifest.backbone}, {manifest.dim}-d, weights "
                     f"{manifest.weights_sha256[:12]}, resize {resize}, "
                     f"{manifest.embedding_kind()} embedding"
                     + (f", from {one_line(data['model_folder'])}"
                        if data.get("model_folder") else ""))
    if data.get("index"):
        lines.append(index_line(data["index"]))
    if "duplicate_search" in data:
        lines.append(copies_as_of(data["duplicate_search"]))
    return lines


def copies_as_of(search: dict | None, in_index: bool = False) -> str:
    """Which copies `similar` leaves out, and of when (``search``:
    :func:`vitrine.copies.last_search`): for ``vitrine info``, or ``in_index`` for an
    ``index`` run that searched none."""
    if search is None:
        return ("No duplicate search has run on this store: similar products leave out only "
                "copies of the same bytes." if in_index else "copies left out of similar "
                "products: only those of the same bytes (no duplicate search has run)")
    at = search["at"]
    when = (f"the duplicate search of {at.replace('T', ' ')[:16]} UTC" if at else
            "an earlier duplicate search")
    found = f"{counted(search['groups'], 'group')} among {counted(search['photos'], 'photo')}"
    if in_index:
        return (f"Similar products leave out the copies {when} found ({found}); a product "
                "added or replaced since has only copies of the same bytes left out.")
    return f"copies left out of similar products: {found}, from {when}"


def index_about(db, n: int) -> dict:
    """What searches the store ``db`` of ``n`` products, for ``vitrine info``: the embedded
    store's FAISS index under this process's index settings (:func:`vitrine.ann.describe`),
    or Milvus's own (FLAT: exact, whatever those settings say)."""
    config = getattr(db, "index_config", None)
    if config is None:
        return {"kind": "flat", "exact": True, "storage": "fp32", "by": "milvus"}
    from vitrine.ann import describe

    return describe(config, n)


def index_line(about: dict) -> str:
    """:func:`index_about` in words: "search index, under these settings: exact (flat,
    fp32); approximate (HNSW) once the store holds 100,000 products"."""
    kind = about["kind"]
    if kind == "flat":
        text = f"exact (flat, {about['storage']}"
        text += ", Milvus's own)" if about.get("by") == "milvus" else ")"
    elif kind == "hnsw":
        text = (f"approximate (HNSW, {about['storage']}, M {about['m']}, efConstruction "
                f"{about['ef_construction']}, efSearch {about['ef_search']})")
    else:
        text = (f"approximate (IVF, {about['storage']}, {about['lists']:,} lists, nprobe "
                f"{about['nprobe']})")
    if "approximate_from" in about:
        from vitrine.ann import AUTO_ANN  # (the kind `auto` picks: imported with describe)

        text += (f"; approximate ({AUTO_ANN.upper()}) once the store holds "
                 f"{about['approximate_from']:,} products")
    if about.get("note"):
        text += f"; {about['note']}"
    return f"search index, under these settings: {text}"
