"""Product records and reading a catalogue folder (one sub-folder per category, optional CSV).

:mod:`vitrine.catalog_scan` finds the folder's photos (and the Vitrine folders passed over);
:mod:`vitrine.catalog_categories` compares category names as a reader does.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from vitrine.catalog_categories import (  # noqa: F401 - known here as before
    CATEGORY_NAMES_KEPT,
    categories_by_key,
    category_key,
    category_twins_note,
    counted_twins,
    named_alike,
    reader_order,
    recategorised_note,
    stored_key,
)
from vitrine.catalog_csv import (
    CONTROL,
    find_csv,
    image_path,
    is_no_price,
    no_rows,
    path_key,
    read_rows,
)
from vitrine.catalog_csv import report as csv_report
from vitrine.catalog_scan import (  # noqa: F401 - known here as before
    MODEL_CONFIG,
    MODEL_FORMAT,
    MODEL_WEIGHTS,
    STORE_FILE,
    SYSTEM_FOLDERS,
    UPLOAD_NAME,
    UPLOADS,
    catalogue_state,
    holds_vitrine,
    is_model_config,
    model_config,
    not_a_model,
    scan_images,
    vitrine_folder,
)
from vitrine.errors import CatalogError
from vitrine.images import IMAGE_EXTENSIONS

UPLOADED = "u:"
"""Prefix of the metadata hash of a product added or replaced through the API (the hash then
keeps 62 hex digits: 64 characters, as the stores' column allows): `vitrine index` leaves
such products alone; the mark survives `vitrine migrate`."""

EDITED = "e:"
"""Prefix of the metadata hash of a catalogue product whose fields were edited through the
API (``PATCH``): `vitrine index` keeps them while no row of a product table names the
product (a photo of a folder-only catalogue, or one the table does not list: no table says
otherwise); a row's values win, and the mark goes with the edit. It survives `vitrine
migrate`."""


def category_form(category: str) -> str:
    """A category in one Unicode form (NFC): a folder copied from a Mac spells "Relógio" as
    "o" and a combining accent, a table saved by Excel as "ó"; both are one category."""
    return unicodedata.normalize("NFC", category)


def one_form(category: str) -> bool:
    """Whether ``category`` is spelled alike in both Unicode forms (no accent to compose or
    decompose): then it needs no look-up among the stored ones."""
    return unicodedata.is_normalized("NFC", category) and unicodedata.is_normalized(
        "NFD", category)


def stored_category(category: str, known: Iterable[str],
                    forms: dict[str, str] | None = None) -> str:
    """``category`` as the store spells it: a filter typed in the other Unicode form (a Mac
    terminal's decomposed "Relógio") finds the stored one, and a store indexed before
    categories were kept in one form (decomposed) is found by either. ``forms``:
    :func:`first_of_each_form` of ``known``, when kept (the server keeps it with its
    counts)."""
    known = known if isinstance(known, dict | set) else list(known)
    if category in known:
        return category
    if forms is None:
        forms = first_of_each_form(known)
    return forms.get(category_form(category), category)


def first_of_each_form(known: Iterable[str]) -> dict[str, str]:
    """Each category's one Unicode form (NFC), to the first of ``known`` spelled so."""
    forms: dict[str, str] = {}
    for category in known:
        forms.setdefault(category_form(category), category)
    return forms


@dataclass
class Product:
    """One catalogue entry. ``image`` is the photo's absolute path."""

    product_id: str
    image: Path
    category: str = ""
    name: str = ""
    price: float | None = None
    description: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    uploaded: bool = False
    """Added or replaced through the API, not by a catalogue."""
    edited: bool = False
    """A catalogue product whose fields were edited through the API (:data:`EDITED`)."""
    unlisted: bool = False
    """A photo the catalogue's product table does not list (a product named after its file);
    False when there is no table."""
    listed: bool = False
    """A row of the catalogue's product table (not a photo found in its folders)."""
    folder_category: str = ""
    """The photo's folder, when the product table gives the product another category (the
    table's wins); empty otherwise."""

    def __post_init__(self) -> None:
        self.category = category_form(self.category)
        self.folder_category = category_form(self.folder_category)
        if self.price == 0:  # -0.0 too (a PATCH may send it): a Milvus store kept the sign
            self.price = 0.0

    def metadata(self) -> dict:
        """Everything except the image path, as plain JSON-able values."""
        return {"product_id": self.product_id, "category": self.category, "name": self.name,
                "price": self.price, "description": self.description,
                "attributes": dict(self.attributes)}

    def metadata_hash(self) -> str:
        """Changes when any stored field other than the photo's content changes."""
        blob = json.dumps({**self.metadata(), "image": str(self.image)}, sort_keys=True)
        digest = hashlib.sha256(blob.encode()).hexdigest()
        mark = UPLOADED if self.uploaded else EDITED if self.edited else ""
        return mark + digest[:64 - len(mark)]


SIMILAR_SUFFIX = "/similar"


CATEGORY_MAX = 512
"""The longest category, in characters: what a Milvus store's collection holds, and what the
web page and the API take as a filter (a longer one could be stored but never chosen)."""


def category_problem(category: str) -> str | None:
    """Why ``category`` cannot be a product's (too long to be chosen), or None."""
    if len(category) > CATEGORY_MAX:
        return (f"its category is {len(category):,} characters long, more than Vitrine "
                f"takes ({CATEGORY_MAX})")
    return None


def id_problem(product_id: str) -> str | None:
    """Why a product id cannot have a web address of its own (the web page and the API give
    every product one), or None."""
    if product_id.endswith(SIMILAR_SUFFIX):
        return f"it cannot end with '{SIMILAR_SUFFIX}' (that is the similar products' address)"
    if product_id.strip() in (".", ".."):
        return "it cannot be '.' or '..' (browsers rewrite such an address)"
    if CONTROL.search(product_id):
        return "it cannot hold a control character such as a line break or a tab"
    return None


_CURRENCY = re.compile(r"^(?:R\$|BRL)?\s*", re.IGNORECASE)
_CODES = "USD|EUR|GBP|JPY|CNY|CHF|CAD|AUD|ARS|CLP|MXN|COP|PEN|UYU|PYG|BOB|INR"
_OTHER_CURRENCY = re.compile(
    rf"^(?:[A-Z]{{0,3}}\$|(?:{_CODES})(?![A-Z])|[€£¥₹])"  # before the number, or after it
    rf"|(?:(?<![R])\$|(?<![A-Z])(?:{_CODES})|[€£¥₹])\s*$", re.IGNORECASE)
"""A price marked in another currency than the pages show (reais): 'US$ 5', 'USD 5', '$5',
'EUR 5', '€ 5', '5 USD', '5€' (not 'R$', the only one a price may be marked with)."""
_GROUPED = re.compile(r"^[1-9]\d{0,2}(?P<sep>[.,' \u2019\u202f])\d{3}(?:(?P=sep)\d{3})*"
                      r"(?:(?P<dec>[.,])\d+)?$")
"""A number with its thousands grouped by a dot or comma (Brazil, the US), a space, a
non-breaking or narrow no-break space (France, Portugal; Excel and LibreOffice there), or an
apostrophe (Switzerland)."""
_PLAIN = re.compile(r"^\d+(?:[.,]\d+)?$")
_SPACES = re.compile(r"[\u00a0\u2000-\u200a\u202f\u205f\u3000]")
"""Spaces of other widths than the plain one (no-break, thin, figure, narrow no-break…):
read as one (a thin space between thousands, the SI's and typesetters', was refused)."""


MAX_PRICE = 1e12
"""No price is above this: a larger number is a mistake (a code pasted into the price)."""


def parse_price(text: str | None) -> float | None:
    """Read a price such as '129.90', '129,90', 'R$ 1.299,90', '1,299.90', 'R$ 1.299',
    '1 299,90' or "1'299.90" (a dot or comma before exactly three digits groups thousands, as
    does a space of any width or an apostrophe); blank, or a text that says
    the price is not published ('sob consulta'), means unknown. Anything else (another
    currency, letters, signs, exponents, mixed-up separators) is refused."""
    if text is None or not str(text).strip() or is_no_price(str(text)):
        return None
    number = _CURRENCY.sub("", _SPACES.sub(" ", str(text)).strip())
    if _OTHER_CURRENCY.search(number):  # (it was shown as so many reais)
        raise CatalogError(f"price {text!r} is not in reais, which the pages show every "
                           "price in; give it in reais, such as 129.90 or R$ 1.299,90.")
    grouped = _GROUPED.match(number)
    if grouped and grouped["dec"] != grouped["sep"]:
        whole, _, decimals = number.partition(grouped["dec"]) if grouped["dec"] else (
            number, "", "")
        number = whole.replace(grouped["sep"], "") + ("." + decimals if decimals else "")
    elif _PLAIN.match(number):
        number = number.replace(",", ".")
    else:
        raise CatalogError(f"price {text!r} is not a number such as 129.90 or R$ 1.299,90.")
    value = float(number)
    if not math.isfinite(value) or value > MAX_PRICE:
        raise CatalogError(f"price {text!r} is not a valid price.")
    return value


def stratified_split(products: list[Product], test_fraction: float,
                     seed: int = 0) -> tuple[list[Product], list[Product]]:
    """Split products per category, seeded; each category keeps at least one product on the
    larger side."""
    import random

    rng = random.Random(seed)
    by_category: dict[str, list[Product]] = {}
    for p in products:
        by_category.setdefault(p.category, []).append(p)
    keep, held = [], []
    for category in sorted(by_category):
        items = sorted(by_category[category], key=lambda p: p.product_id)
        rng.shuffle(items)
        n_test = min(len(items) - 1, round(len(items) * test_fraction))
        held += items[:n_test]
        keep += items[n_test:]
    return keep, held


def _category_of(rel: Path, depth: int = 0) -> str:
    """The category of the photo at ``rel``: its folder ``depth`` levels down (0: the first;
    1 in a split catalogue, under train/val/test), none for a photo above it."""
    return category_form(rel.parts[depth]) if len(rel.parts) > depth + 1 else ""


def refuse_out_inside(catalog: Path, out: Path) -> None:
    """A CatalogError when ``out`` (``--out``, where figures go) is inside ``catalog``: its
    figures would be read as photos of a category next time."""
    if Path(out).expanduser().resolve().is_relative_to(Path(catalog).resolve()):
        raise CatalogError(f"--out {out} is inside the catalogue {catalog}; its figures would "
                           "be read as photos of a category next time. Put it outside.")


def read_catalog(root: Path, *, depth: int = 0, empty_ok: bool = False,
                 catalogue: Path | None = None,
                 refused_links: list[Path] | None = None) -> list[Product]:
    """Read a catalogue folder into products.

    Without a product table every photo is a product whose id is its relative path and whose
    category is its first folder (with ``depth`` 1, its second: a catalogue split in
    train/val/test folders). With ``products.csv`` (or ``produtos.csv``; see
    :mod:`vitrine.catalog_csv` for what it accepts) its rows define the products; extra
    columns become attributes, and photos not listed in it are added as products of their
    folder. A folder without photos is an error, unless ``empty_ok`` (an empty split folder).
    ``refused_links``: see :func:`scan_images` (outside ``catalogue``, which holds ``root``).
    """
    root = Path(root)
    if not root.exists():
        raise CatalogError(f"catalogue folder {root} does not exist.")
    if not root.is_dir():
        raise CatalogError(f"{root} is not a folder; give the catalogue folder.")
    root = root.resolve()
    photos = scan_images(root, refused_links=refused_links, within=catalogue)
    products: dict[str, Product] = {}
    listed: set[Path] = set()
    csv_path = find_csv(root, catalogue)  # (a split folder's: within the whole catalogue)
    if csv_path is not None:
        for product in _read_csv(csv_path, root, photos, depth):
            products[product.product_id] = product
            listed.add(product.image)
        if not products and (photos or not empty_ok):  # (a split folder of photos whose
            # table was emptied lost their names and prices as a catalogue's: helper-191; an
            # empty one is as missing)
            raise no_rows(csv_path)
    for path in photos:
        if path in listed:
            continue
        rel = path.relative_to(root)
        pid = rel.as_posix()
        if pid in products:  # a row took this photo's path as another photo's id
            raise CatalogError(
                f"{csv_path} gives product_id {pid!r} to photo "
                f"{products[pid].image.relative_to(root).as_posix()}, but {pid} is another "
                "photo the table does not list (its id would be that path); list that photo "
                "in the table or choose another id.")
        products[pid] = Product(product_id=pid, image=path, category=_category_of(rel, depth),
                                name=path.stem, unlisted=csv_path is not None)
    if not products and not empty_ok:
        kinds = ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
        links = len(set(refused_links or ()))  # (a split catalogue's top is scanned twice)
        raise CatalogError(f"no product photos found in {root} ({kinds})" + (
            f"; {links} linked folder{'s' if links > 1 else ''} outside it "
            f"{'were' if links > 1 else 'was'} not read, which "
            "VITRINE_FOLLOW_OUTSIDE_LINKS=false refuses." if links else "."))
    return sorted(products.values(), key=lambda p: p.product_id)


def recategorised(products: list[Product]) -> list[dict]:
    """The products whose table category overrides their photo's folder, for reports."""
    return [{"product_id": p.product_id, "category": p.category, "folder": p.folder_category}
            for p in products if p.folder_category]


def category_twins(products: list[Product]) -> list[list[dict]]:
    """The catalogue's categories that differ only in case, accents or spaces against
    underscores ("Relogio_Feminino" beside the folder "relogio_feminino": a table's category
    is kept as written), each group with its products counted: the pages showed two
    categories of one name, and a filter by one left out the other's products
    (helper-179)."""
    counts: dict[str, int] = {}
    for product in products:
        counts[product.category] = counts.get(product.category, 0) + 1
    return counted_twins(counts)


def _read_csv(csv_path: Path, root: Path, photos: list[Path], depth: int = 0
              ) -> list[Product]:
    """The products the table lists; every problem in it is reported in one error."""
    folded: dict[str, list[Path]] = {}  # two files may differ only in case
    for path in photos:
        folded.setdefault(path_key(path.relative_to(root).as_posix()), []).append(path)
    products, problems = [], []
    seen: set[str] = set()
    looked_at: dict[Path, bool] = {}
    for row in read_rows(csv_path):
        f = row.fields
        try:
            if not f["image"]:
                raise ValueError("the image column is empty")
            image = image_path(root, f["image"], folded.get)
            inside = vitrine_folder(root, image, looked_at)
            if inside is not None:
                raise ValueError(f"image {f['image']!r} is inside a Vitrine store or model "
                                 f"folder ({inside.relative_to(root).as_posix()}), whose "
                                 "photos are not catalogue photos; keep it outside")
            pid = f["product_id"] or image.relative_to(root).as_posix()
            if pid in seen:
                raise ValueError(f"product_id {pid!r} appears twice")
            seen.add(pid)
            price = parse_price(f["price"])
        except (ValueError, CatalogError) as exc:
            problems.append(f"line {row.line}: {str(exc).rstrip('.')}")
            continue
        rel = image.relative_to(root)
        folder = _category_of(rel, depth)
        products.append(Product(
            product_id=pid, image=image, category=f["category"] or folder,
            name=f["name"] or rel.stem, price=price, description=f["description"],
            attributes=row.extra, listed=True,
            folder_category=folder if category_form(f["category"]) not in ("", folder)
            else ""))
    if problems:
        raise csv_report(csv_path, problems)
    return products
