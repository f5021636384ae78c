"""Product records and reading a catalogue folder (one sub-folder per category, optional CSV)."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from vitrine.errors import CatalogError
from vitrine.images import is_image_path

CSV_NAME = "products.csv"
CORE_COLUMNS = ("product_id", "image", "category", "name", "price", "description")
UPLOADED = "u:"
"""Prefix of the metadata hash of a product added or replaced through the API (the hash then
keeps 62 hex digits: 64 characters, as the stores' column allows): `vitrine index` leaves
such products alone; the mark survives `vitrine migrate`."""


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

    def metadata(self) -> dict:
        """Everything except the image path, as plain JSON-able values."""
        return {"product_id": self.product_id, "category": self.category, "name": self.name,
                "price": self.price, "description": self.description,
                "attributes": dict(self.attributes)}

    def metadata_hash(self) -> str:
        """Changes when any stored field other than the photo's content changes."""
        blob = json.dumps({**self.metadata(), "image": str(self.image)}, sort_keys=True)
        digest = hashlib.sha256(blob.encode()).hexdigest()
        return UPLOADED + digest[:64 - len(UPLOADED)] if self.uploaded else digest


_CURRENCY = re.compile(r"^(?:R\$|US\$|\$|BRL|USD)?\s*", re.IGNORECASE)
_GROUPED = re.compile(r"^[1-9]\d{0,2}(?P<sep>[.,])\d{3}(?:(?P=sep)\d{3})*(?:(?P<dec>[.,])\d+)?$")
_PLAIN = re.compile(r"^\d+(?:[.,]\d+)?$")


def parse_price(text: str | None) -> float | None:
    """Read a price such as '129.90', '129,90', 'R$ 1.299,90', '1,299.90' or 'R$ 1.299'
    (a dot or comma before exactly three digits groups thousands); blank means unknown.
    Anything else (letters, signs, exponents, mixed-up separators) is refused."""
    if text is None or not str(text).strip():
        return None
    number = _CURRENCY.sub("", str(text).strip().replace("\u00a0", " "))
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
    if not math.isfinite(value):
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


def _category_of(rel: Path) -> str:
    return rel.parts[0] if len(rel.parts) > 1 else ""


def scan_images(root: Path) -> list[Path]:
    """All photo files below ``root`` (any extension case), sorted, hidden files skipped."""
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_file() and is_image_path(path):
            found.append(path)
    return sorted(found)


def read_catalog(root: Path) -> list[Product]:
    """Read a catalogue folder into products.

    Without ``products.csv`` every photo is a product whose id is its relative path and whose
    category is its first folder. With the CSV, its rows define the products; extra columns
    become attributes, and photos not listed in it are added as products of their folder.
    """
    root = Path(root)
    if not root.exists():
        raise CatalogError(f"catalogue folder {root} does not exist.")
    if not root.is_dir():
        raise CatalogError(f"{root} is not a folder; give the catalogue folder.")
    root = root.resolve()
    products: dict[str, Product] = {}
    listed: set[Path] = set()
    csv_path = root / CSV_NAME
    if csv_path.is_file():
        for product in _read_csv(csv_path, root):
            products[product.product_id] = product
            listed.add(product.image)
    for path in scan_images(root):
        if path in listed:
            continue
        rel = path.relative_to(root)
        pid = rel.as_posix()
        if pid not in products:
            products[pid] = Product(product_id=pid, image=path, category=_category_of(rel),
                                    name=path.stem)
    if not products:
        raise CatalogError(f"no product photos found in {root} (jpg, jpeg, png, webp, gif, bmp).")
    return sorted(products.values(), key=lambda p: p.product_id)


def _read_csv(csv_path: Path, root: Path) -> list[Product]:
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            if "image" not in columns:
                raise CatalogError(f"{csv_path} has no 'image' column.")
            rows = []
            for row in reader:
                if None in row:  # DictReader's key for the fields past the header's columns
                    raise CatalogError(f"{csv_path} line {reader.line_num}: more fields than "
                                       "the header has columns (quote a value that holds a "
                                       "comma).")
                rows.append({k.strip(): (v or "").strip() for k, v in row.items()})
    except UnicodeDecodeError:
        raise CatalogError(f"{csv_path} is not UTF-8 text.") from None
    except csv.Error as exc:
        raise CatalogError(f"{csv_path} is not valid CSV ({exc}).") from None
    products = []
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        image_rel = row.get("image", "")
        if not image_rel:
            raise CatalogError(f"{csv_path} line {line}: the 'image' column is empty.")
        image = (root / image_rel).resolve()
        if not image.is_relative_to(root):
            raise CatalogError(f"{csv_path} line {line}: image {image_rel!r} is outside "
                               "the catalogue folder.")
        pid = row.get("product_id") or Path(image_rel).as_posix()
        if pid in seen:
            raise CatalogError(f"{csv_path} line {line}: product_id {pid!r} appears twice.")
        seen.add(pid)
        try:
            price = parse_price(row.get("price"))
        except CatalogError as exc:
            raise CatalogError(f"{csv_path} line {line}: {exc}") from None
        rel = Path(image_rel)
        products.append(Product(
            product_id=pid,
            image=image,
            category=row.get("category") or _category_of(rel),
            name=row.get("name") or rel.stem,
            price=price,
            description=row.get("description", ""),
            attributes={k: v for k, v in row.items() if k and k not in CORE_COLUMNS and v},
        ))
    return products
