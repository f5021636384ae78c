"""The catalogue as index, train and evaluate read it (:func:`read_catalogue`): a catalogue
already split into ``train|treino``, ``val|validacao`` and ``test|teste`` folders found and
read split by split, the server's uploads and links out of the catalogue left out, and the
photos without a category named.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from vitrine.catalog import (
    UPLOAD_NAME,
    Product,
    category_form,
    read_catalog,
    scan_images,
)
from vitrine.config import Settings
from vitrine.errors import CatalogError

FOLDER_NAMES = {
    "train": ("train", "treino", "training"),
    "val": ("val", "validacao", "validação", "validation", "valid"),
    "test": ("test", "teste"),
}


def find_split_folders(root: Path) -> dict[str, Path] | None:
    """:func:`_split_layout`'s folders."""
    return _split_layout(root)[0]


def _split_layout(root: Path, uploads: Path | None = None,
                  refused_links: list[Path] | None = None,
                  ) -> tuple[dict[str, Path] | None, list[Path]]:
    """The ``train``/``val``/``test`` sub-folders (Portuguese names too) of a catalogue that is
    already split, or None. A split catalogue needs a train folder and a val or test one
    (``train`` and ``val`` alone must not become two categories named so), and no other
    folder of photos beside them. Split folders with other folders of photos beside them are
    a CatalogError: read as a plain catalogue, "train" and "test" became two categories and
    the other folders' photos joined neither split, without a word (a store's products were
    then recategorised); a folder without photos, hidden, or a Vitrine store or model
    changes nothing. Folder names are compared in one Unicode form (a Mac writes
    "validação" decomposed). With them, the photos at the top, in none of them. Photos in
    ``uploads`` (a VITRINE_UPLOAD_DIR inside the catalogue: the server's photos of products
    added through the API) are neither."""
    root = Path(root)
    if not root.is_dir():
        return None, []
    children = {category_form(p.name).lower(): p  # (one Unicode form)
                for p in root.iterdir() if p.is_dir()}
    found = {}
    for split, names in FOLDER_NAMES.items():
        for name in names:
            if name in children:
                found[split] = children[name]
                break
    if "train" not in found or len(found) < 2:
        return None, []
    beside = scan_images(root, skip={f.name for f in found.values()},  # (photos at the top:
                         refused_links=refused_links)
    # no folder; those of a store's uploads or a hidden folder are not listed)
    if uploads is not None and beside:  # (resolved by the caller)
        beside = [p for p in beside if not (UPLOAD_NAME.fullmatch(p.name) and Path(
            os.path.realpath(p)).is_relative_to(uploads))]
    others = sorted({p.relative_to(root).parts[0] for p in beside
                     if len(p.relative_to(root).parts) > 1})
    if others:
        names = ", ".join(f.name for f in found.values())
        raise CatalogError(
            f"{root} is split in folders ({names}) but other folders beside them hold photos "
            f"too ({', '.join(others[:3])}{' …' if len(others) > 3 else ''}): move those "
            "photos into the split folders, or, if these folders are all categories, rename "
            f"the ones named like splits ({names}).")
    return found, beside


def _read_split(root: Path, folders: dict[str, Path] | None,
                refused_links: list[Path] | None = None,
                ) -> tuple[list[Product], dict[str, str] | None]:
    """Products of the catalogue ``root`` and, when it is split in ``folders`` (None: not
    split), each product's split.

    In a split catalogue every split folder is read as a catalogue of its own (category
    sub-folders, optional ``products.csv``); product ids get the split's name as a prefix.
    A product table at its top instead (what `vitrine index` of the folder reads) is the
    whole catalogue's: photo paths from the top, categories the folders under each split's;
    photos outside the split folders are in no split and left out, as they are otherwise.
    """
    if folders is None:
        return read_catalog(root, refused_links=refused_links), None
    from vitrine.catalog_csv import find_csv

    products, given = [], {}
    if top := find_csv(root):  # (it was not read: its categories lost, while index used them)
        if inner := [t for f in folders.values() if (t := find_csv(f, root))]:
            raise CatalogError(f"{top} and {inner[0]} both describe photos of {root}; keep "
                               "one table at the top or one in each split folder.")
        split_of = {f.name: split for split, f in folders.items()}  # (a link: its own name)
        top_folder = Path(root).resolve()
        for product in read_catalog(root, depth=1, refused_links=refused_links):
            rel = product.image.relative_to(top_folder) if product.image.is_relative_to(
                top_folder) else Path(product.image.name)
            if len(rel.parts) > 1 and rel.parts[0] in split_of:
                products.append(product)
                given[product.product_id] = split_of[rel.parts[0]]
    else:
        for split, folder in folders.items():
            if refused_links is not None and not folder.resolve().is_relative_to(
                    Path(root).resolve()):  # (a split folder linked from elsewhere: not read)
                refused_links.append(folder)
                continue
            for product in read_catalog(folder, empty_ok=True,  # (an empty one: as missing)
                                        catalogue=root, refused_links=refused_links):
                product.product_id = _prefixed(folder.name, product.product_id)
                products.append(product)
                given[product.product_id] = split
    if not products:
        raise CatalogError(f"no product photos found in the split folders of {root} "
                           f"({', '.join(f.name for f in folders.values())}).")
    return products, given


def _prefixed(folder: str, product_id: str) -> str:
    """``product_id`` after its split folder's name. An id that would mix Unicode forms (a
    Mac's decomposed "validação" before a table's composed "relógio-1"), which neither form
    typed found (a product id is looked up in either form), takes the form of
    ``product_id``; any other is as it was (ids of existing stores stay)."""
    joined = f"{folder}/{product_id}"
    if any(unicodedata.is_normalized(form, joined) for form in ("NFC", "NFD")):
        return joined
    form = "NFC" if unicodedata.is_normalized("NFC", product_id) else "NFD"
    return f"{unicodedata.normalize(form, folder)}/{product_id}"


def links_refused(settings: Settings) -> list[Path] | None:
    """What :func:`read_catalogue` takes as ``refused_links`` under ``settings``: a list to
    fill when VITRINE_FOLLOW_OUTSIDE_LINKS is false (links out of the catalogue not
    followed), else None."""
    return None if settings.follow_outside_links else []


Catalogue = tuple[list[Product], dict[str, str] | None, list[Path]]
"""What :func:`read_catalogue` reads: products, their splits, photos outside the splits."""


def read_catalogue(root: Path, uploads: Path | None = None, *,
                   refused_links: list[Path] | None = None) -> Catalogue:
    """What index, train and evaluate read of ``root``: its products, each product's split
    (None: not split, see :func:`_read_split`), and the photos at the top of a split
    catalogue, in none of its split folders (named by each command, not lost silently).

    The photos in ``uploads``, a VITRINE_UPLOAD_DIR inside the catalogue, named as the
    server names them (``<sha256>.<ext>``), are the server's, of products added through the
    API: not catalogue products unless a product table lists them (each became a second
    one; a catalogue without a table kept them all), nor a folder of photos beside the
    splits (every command refused the catalogue), nor outside them.

    With ``refused_links`` (a list: VITRINE_FOLLOW_OUTSIDE_LINKS=false) links to folders
    outside ``root`` are not entered; each is added to it, once."""
    root = Path(root).resolve() if Path(root).exists() else Path(root)  # (outside: below it)
    folder = None if uploads is None else Path(uploads).expanduser().resolve()
    folders, outside = _split_layout(root, folder, refused_links)  # (one scan of the top)
    products, given = _read_split(root, folders, refused_links)
    if refused_links:  # (a split catalogue's top is scanned twice with a table there)
        refused_links[:] = sorted(set(refused_links))
    if folder is not None and folder.is_relative_to(root):  # (a row of a product table
        # naming one of its photos is the shop's: kept; so is a photo not named as the
        # server names its uploads: a VITRINE_UPLOAD_DIR set to a category's folder removed
        # that category from the store, exit 0: helper-230)
        products = [p for p in products if p.listed or not (
            UPLOAD_NAME.fullmatch(p.image.name) and p.image.is_relative_to(folder))]
    return products, given, outside


def uncategorised_photos(products: Sequence[Product]) -> list[dict]:
    """The products of ``products`` without a category, each with why: train and evaluate
    leave them out and name them (``uncategorised_photos``)."""
    return [{"product_id": p.product_id, "reason": "not in a category folder, and the "
             "product table gives it no category"} for p in products if not p.category]
