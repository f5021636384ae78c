"""Every product's most similar products, written to one file a shop imports into its own
site (the lists a product page shows, without running a server): CSV with one row per pair,
or JSON Lines with one line per product. The file appears whole or not at all."""

from __future__ import annotations

import contextlib
import csv
import os
import re
import secrets
import stat
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitrine.catalog import category_form
from vitrine.catalog_csv import CSV_NAMES, find_csv
from vitrine.cli_support import json_line
from vitrine.copies import Copies, hiding_search, saved_copies, similar_without_copies
from vitrine.errors import VitrineError
from vitrine.placeholders import PLACEHOLDER_MIN, placeholders
from vitrine.progress import progress_bar
from vitrine.recommend import similar_category
from vitrine.split import FOLDER_NAMES, find_split_folders
from vitrine.store.base import Match, StoredProduct, VectorStore
from vitrine.store.writer_lock import process_alive

FORMATS = (".csv", ".jsonl")
CSV_COLUMNS = ("product_id", "rank", "similar_id", "score")
BATCH = 1000
"""Products read from the store at once (their vectors: 5 MB at 1,280 dimensions)."""
PART_PREFIX = ".vitrine-related-"
"""The file being written is ``.vitrine-related-PID-RANDOM.tmp`` beside ``--out``."""
PART_NAME = re.compile(rf"{re.escape(PART_PREFIX)}(\d{{1,10}})-[0-9a-f]{{8}}\.tmp")
STALE_PART_S = 600
"""A part file of a process that is gone, unchanged this long, is a killed run's."""


def related_path(out: Path) -> Path:
    """The file ``--out`` names, checked before any work: a folder, a missing folder or a
    format other than CSV or JSON Lines is an error."""
    if out.is_dir():
        raise VitrineError(f"--out {out} is a folder; name a file such as {out}/related.csv.")
    if out.suffix.lower() not in FORMATS:
        raise VitrineError(f"--out {out}: use a file ending in .csv (one row per pair) or "
                           ".jsonl (one line per product).")
    if not out.parent.is_dir():
        raise VitrineError(f"--out {out}: the folder {out.parent} does not exist.")
    try:
        mode = out.stat().st_mode  # (through a link: the file that gets the list)
    except OSError:  # none yet, or a loop of links (said when it is written)
        mode = None
    if mode is not None and not stat.S_ISREG(mode):  # the list, written beside it, took
        # its name: a named pipe, or /dev/full through a link, became a plain file
        raise VitrineError(f"--out {out} is not a regular file (a pipe, device or socket); "
                           "name a file.")
    return out


def _written_file(out: Path) -> Path:
    """The file to write: ``out``, or the file it links to (a link to the published file,
    releases/…/related.csv, gets the new list and stays a link)."""
    if not out.is_symlink():
        return out
    try:
        target = out.resolve(strict=False)
    except (OSError, RuntimeError):  # a loop of links (RuntimeError on Python 3.11 and 3.12)
        raise VitrineError(f"--out {out} is a link that leads to no file (a loop of "
                           "links); name a file.") from None
    if not target.parent.is_dir():  # (a link to a folder is one, refused before)
        raise VitrineError(f"--out {out} links to {target}, whose folder does not exist.")
    if target.suffix.lower() != out.suffix.lower():  # a link to the store's database, a
        # product's photo, a model's weights: the list took its place (the store was lost)
        raise VitrineError(f"--out {out} links to {target}, which is not a "
                           f"{out.suffix.lower()} file; name the file to write.")
    return target


def _refuse_product_table(target: Path, store: VectorStore) -> None:
    """Refuse a file that is, or would become, a product table of the store's catalogue
    (``products.csv`` at its top or in a split folder, ``train/``…, any case; a file such a
    table links to), through the folder it was indexed from or the link it was indexed
    through (``current``, now another release's): replaced, its names, prices and
    descriptions were lost and the next `vitrine index` refused the catalogue (a split
    folder's table: helper-159, helper-161)."""
    roots = [Path(p) for p in (store.catalog_folder(), store.catalog_link()) if p]
    places = [(place, root) for root in roots for place in _table_folders(root)]
    table = target.name.casefold() in CSV_NAMES and \
        target.resolve().parent in {place.resolve() for place, _ in places}
    for place, root in places:  # (a table may link to a file of another name)
        with contextlib.suppress(OSError, VitrineError):
            found = find_csv(place, root)
            table = table or bool(found and target.exists() and target.samefile(found))
    if table:
        raise VitrineError(f"--out {target} is a product table of the store's catalogue "
                           f"({roots[0]}); name another file.")


def _table_folders(root: Path) -> list[Path]:
    """The folders of the catalogue at ``root`` a product table is read in: its own, and its
    split folders; those named as split folders also while it is not split as it stands (a
    folder of photos put beside them, a split being made again: the table is read again
    once it is)."""
    try:
        return [root, *(find_split_folders(root) or {}).values()]
    except (OSError, VitrineError):
        named = {name for names in FOLDER_NAMES.values() for name in names}
        with contextlib.suppress(OSError):
            return [root, *(p for p in root.iterdir()
                            if p.is_dir() and category_form(p.name).lower() in named)]
        return [root]


@dataclass
class RelatedReport:
    out: str
    products: int
    pairs: int
    k: int
    same_category: bool
    seconds: float

    def as_dict(self) -> dict:
        return {"out": self.out, "products": self.products, "pairs": self.pairs, "k": self.k,
                "same_category": self.same_category, "seconds": round(self.seconds, 2),
                "products_per_second": round(self.products / self.seconds, 1)
                if self.seconds > 0 else None}


def write_related(store: VectorStore, out: Path, k: int, *, same_category: bool = False,
                  show_progress: bool = True, placeholder_min: int = PLACEHOLDER_MIN
                  ) -> RelatedReport:
    """Write each product's ``k`` most similar (itself excluded; with ``same_category``
    only of its own category, for a product without one of every category, as the product
    page's: :func:`vitrine.recommend.similar_category`; the products of placeholder photos,
    shared by ``placeholder_min``, left out: :mod:`vitrine.placeholders`; one product a photo:
    :func:`vitrine.copies.one_a_photo`) to ``out``, in the format its suffix names. The
    store is read ``BATCH`` products at a time, each searched as `vitrine similar` does, a
    page of them in one index call (``VectorStore.search_many``: a matrix product on a flat
    index, every core on HNSW); the file is written beside ``out`` (beside the file a link
    names) and takes its place when complete."""
    out = related_path(out)
    jsonl = out.suffix.lower() == ".jsonl"
    target = _written_file(out)
    _refuse_product_table(target, store)
    started = time.perf_counter()
    products = pairs = 0
    # beside the file, under a short name of its own: `.{name}.tmp` went over the 255 bytes
    # a file name has for a long --out
    tmp = target.with_name(f"{PART_PREFIX}{os.getpid()}-{secrets.token_hex(4)}.tmp")
    _remove_stale_parts(target.parent)
    copies = saved_copies(store)  # (each product's copies left out, as `similar` does)
    hidden = placeholders(copies, placeholder_min).photos
    try:
        # (an id from a file name that is not UTF-8 is written as the bytes it names)
        with open(tmp, "x", newline="", encoding="utf-8", errors="surrogateescape") as fh, \
                progress_bar("related products", store.count(), enabled=show_progress,
                             unit="products") as advance:
            rows = None if jsonl else csv.writer(fh)
            if rows is not None:
                rows.writerow(CSV_COLUMNS)
            for page in store.iter_products(BATCH, vectors=True):
                for (product, _), matches in zip(
                        page, _similar(store, page, k, same_category, copies, hidden),
                        strict=True):
                    if rows is None:
                        fh.write(json_line({"product_id": product.product_id, "similar": [
                            {"product_id": m.product.product_id, "score": round(m.score, 4)}
                            for m in matches]}))
                    else:
                        rows.writerows((product.product_id, rank, m.product.product_id,
                                        f"{m.score:.4f}")
                                       for rank, m in enumerate(matches, start=1))
                    products += 1
                    pairs += len(matches)
                advance(len(page))
            fh.flush()
            os.fsync(fh.fileno())  # on disk before it takes the name: a power cut then
            # leaves the old file or the new one, not an empty one
        with contextlib.suppress(FileNotFoundError):  # the published file's permissions
            os.chmod(tmp, stat.S_IMODE(target.stat().st_mode))
        os.replace(tmp, target)
    except OSError as exc:
        raise VitrineError(f"could not write {out}: {exc.strerror or exc}.") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return RelatedReport(str(out), products, pairs, k, same_category,
                         time.perf_counter() - started)


def _remove_stale_parts(folder: Path) -> None:
    """Remove the part files of runs killed outright (SIGKILL, out of memory) in ``folder``:
    their process is gone, and they have not grown for ``STALE_PART_S`` (a run on another
    machine sharing the folder writes its part file all along)."""
    now = time.time()
    for part in folder.glob(f"{PART_PREFIX}*.tmp"):
        name = PART_NAME.fullmatch(part.name)
        with contextlib.suppress(OSError):
            if name is None or now - part.stat().st_mtime < STALE_PART_S \
                    or process_alive(int(name[1])):
                continue
            part.unlink()


def _similar(store: VectorStore, page: list[tuple[StoredProduct, np.ndarray | None]], k: int,
             same_category: bool, copies: Copies | None = None,
             hidden: frozenset[str] = frozenset()) -> list[list[Match]]:
    """Each product's ``k`` most similar, its copies and the products of ``hidden`` photos
    left out, one product a photo (``vitrine.copies``), one ``search_many`` a category (or
    one in all; those whose copies or repeats took places, again). The products of one
    photo file with the same vector are searched once (:func:`_one_photo`)."""
    groups: dict[str | None, list[int]] = defaultdict(list)
    for i, (product, _) in enumerate(page):
        groups[similar_category(product, same_category)].append(i)
    found: list[list[Match]] = [[] for _ in page]
    for category, members in groups.items():
        searched, same = _one_photo(page, members)
        vectors = np.stack([page[i][1] for i in searched])
        ids = [page[i][0].product_id for i in searched]

        def search(rows: list[int], n: int, vectors=vectors, ids=ids, category=category):
            return store.search_many(vectors[rows], n, category=category,
                                     exclude=[ids[r] for r in rows])

        for i, matches in zip(searched, similar_without_copies(
                search, [page[i][0] for i in searched], k, copies or Copies(),
                hiding_search(store, vectors, ids, category), hidden), strict=True):
            found[i] = matches
        for i, first in same.items():
            found[i] = found[first]
    return found


def _one_photo(page: list[tuple[StoredProduct, np.ndarray | None]], members: list[int]
               ) -> tuple[list[int], dict[int, int]]:
    """Of ``members`` (rows of ``page``), those to search, and each other one's row of the same
    photo file (sha256) and the same vector searched for it: their lists are the same, the
    photo's products being copies of one another, left out of each one's list, itself
    among them (and the placeholders left out, ``hidden``, are every one's). One search
    where there were as many as the products of a placeholder photo (17,000 of one photo,
    each a scan of every product: `related` took 73 s of a flat store of 17,114,
    ``benchmarks/related_export.py --placeholders``)."""
    first: dict[tuple[str, bytes], int] = {}
    searched: list[int] = []
    same: dict[int, int] = {}
    for i in members:
        product, vector = page[i]
        if not product.content_sha256 or vector is None:  # (no photo: itself is no copy)
            searched.append(i)
            continue
        key = (product.content_sha256, np.ascontiguousarray(vector).tobytes())
        if key in first:
            same[i] = first[key]
        else:
            first[key] = i
            searched.append(i)
    return searched, same
