"""Product records and reading a catalogue folder (one sub-folder per category, optional CSV)."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from vitrine.catalog_csv import (
    CONTROL,
    CSV_NAMES,
    find_csv,
    image_path,
    is_no_price,
    no_rows,
    path_key,
    read_rows,
)
from vitrine.catalog_csv import report as csv_report
from vitrine.errors import CatalogError
from vitrine.fold import fold
from vitrine.images import IMAGE_EXTENSIONS, is_image_path

UPLOADED = "u:"
"""Prefix of the metadata hash of a product added or replaced through the API (the hash then
keeps 62 hex digits: 64 characters, as the stores' column allows): `vitrine index` leaves
such products alone; the mark survives `vitrine migrate`."""


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
        return UPLOADED + digest[:64 - len(UPLOADED)] if self.uploaded else digest


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


STORE_FILE = "vitrine.sqlite"
"""The database a Vitrine store folder holds (vitrine.store.sqlite_db.DB_NAME)."""
MODEL_CONFIG, MODEL_WEIGHTS = "model.json", "model.pt"
"""The files of a Vitrine model folder (vitrine.trained)."""
MODEL_FORMAT = "vitrine-trained-model/"
"""How a model's ``model.json`` starts its ``format`` (then its version)."""


def not_a_model(model_dir: Path) -> str | None:
    """The sentence saying that ``model_dir`` lacks a trained model's files; None when it
    has them (here, not in vitrine.trained, which imports torch: the command line checks
    VITRINE_MODEL with it before a start record may spare torch, vitrine.warm)."""
    folder = Path(model_dir).expanduser()  # (--model '~/m': the load expands it too)
    if (folder / MODEL_CONFIG).is_file() and (folder / MODEL_WEIGHTS).is_file():
        return None
    return (f"{model_dir} is not a trained model folder (it needs {MODEL_CONFIG} and "
            f"{MODEL_WEIGHTS}); make one with vitrine train.")


def model_config(path: Path) -> dict:
    """The JSON object of the ``model.json`` at ``path``; empty where it cannot be read or
    is not an object."""
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def is_model_config(path: Path) -> bool:
    """Whether ``path`` is a Vitrine model's ``model.json`` (another tool's, TensorFlow.js's
    or a product's specification, is not one)."""
    return str(model_config(path).get("format", "")).startswith(MODEL_FORMAT)


def holds_vitrine(folder: Path, names) -> bool:
    """Whether ``folder``, holding the files ``names``, is a Vitrine store or model: never
    catalogue photos (a store kept inside the catalogue would otherwise index its own
    uploads, a model its figures). A ``model.json`` of another tool's is not a model's: its
    folder's photos are the catalogue's (they were left out without a word)."""
    return STORE_FILE in names or MODEL_CONFIG in names and (
        MODEL_WEIGHTS in names or is_model_config(folder / MODEL_CONFIG))


UPLOADS = "uploads"
"""The folder of a store that holds photos added through the API (vitrine.store.UPLOADS_DIR)."""
UPLOAD_NAME = re.compile(r"[0-9a-f]{64}\.[a-z]{2,4}")
"""How the server names an uploaded photo: its sha256 and the format's extension."""


def vitrine_folder(root: Path, photo: Path, known: dict[Path, bool]) -> Path | None:
    """The Vitrine store or model folder below ``root`` that holds ``photo`` (what
    :func:`scan_images` skips; the root's own ``uploads`` when the root is a store), or None.
    ``known`` remembers the folders already looked at."""
    if photo.parent == root / UPLOADS and (root / STORE_FILE).exists():
        return photo.parent
    folder = photo.parent
    while folder != root and folder.is_relative_to(root):
        if folder not in known:
            known[folder] = holds_vitrine(folder, {
                m for m in (STORE_FILE, MODEL_CONFIG, MODEL_WEIGHTS) if (folder / m).exists()})
        if known[folder]:
            return folder
        folder = folder.parent
    return None


SYSTEM_FOLDERS = frozenset({"lost+found", "#recycle", "@eaDir", "$RECYCLE.BIN",
                            "System Volume Information"})
"""Folders a file system or a NAS keeps in a drive or share (its recycle bin, its thumbnails),
often unreadable to the user: never catalogue photos."""


def scan_images(root: Path, skip: Iterable[str] = (),
                unreadable: list[dict] | None = None, *,
                refused_links: list[Path] | None = None,
                within: Path | None = None) -> list[Path]:
    """All photo files below ``root`` (any extension case), sorted; hidden files and folders,
    Vitrine store and model folders, and the folders of ``root`` named in ``skip``, skipped.
    Symbolic links to folders are followed (each real folder once); a link to a photo that
    is gone is listed, so that reading it reports it.

    A folder that cannot be listed (no permission) is a CatalogError: its photos were left
    out without a word, and index removed their products from the store. With
    ``unreadable`` (a list), each is added to it as ``{"path", "reason"}`` instead. A
    system's folder (SYSTEM_FOLDERS, read or not: a Synology's @eaDir holds a thumbnail of
    every photo), and one removed while it was read, are passed over.

    With ``refused_links`` (a list: VITRINE_FOLLOW_OUTSIDE_LINKS=false) a link to a folder
    outside ``within`` (the catalogue folder; ``root`` by default) is not entered but added
    to it: a supplier's link to a folder of this machine (``/``) had every file of it
    walked."""
    skip = set(skip)
    found = []
    seen: set[tuple[int, int]] = set()
    real_root = Path(root).resolve()
    confine = Path(within or root).resolve()

    def outside(link: str) -> bool:
        if refused_links is None or not os.path.islink(link) or Path(link).resolve(
                ).is_relative_to(confine):
            return False
        refused_links.append(Path(link))
        return True

    def cannot_list(exc: OSError) -> None:
        folder = Path(exc.filename) if exc.filename else Path(root)
        if folder.name in SYSTEM_FOLDERS or (isinstance(exc, FileNotFoundError)
                                             and not os.path.lexists(folder)):
            return  # (removed while the scan ran: a share that says so of a folder still
            # listed is not believed, or its products would be removed)
        reason = f"the folder cannot be read ({exc.strerror or exc})"
        if unreadable is None:
            raise CatalogError(f"{folder}: {reason}, so its photos would be left out (and "
                               "their products removed from a store). Make it readable, or "
                               "move it out of the catalogue.")
        unreadable.append({"path": str(folder), "reason": reason})

    for folder, dirs, files in os.walk(root, onerror=cannot_list, followlinks=True):
        try:
            info = os.stat(folder)
        except OSError as exc:  # (gone, or unreadable, since it was listed)
            cannot_list(exc)
            dirs[:] = []
            continue
        if (info.st_dev, info.st_ino) in seen or (
                folder != str(root) and holds_vitrine(Path(folder), files)):
            dirs[:] = []
            continue
        seen.add((info.st_dev, info.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SYSTEM_FOLDERS
                         and not (
            # a link to a folder of the catalogue itself would read its photos twice, under
            # another category; the root holding a store: its uploads are not catalogue photos
            os.path.islink(os.path.join(folder, d))
            and Path(folder, d).resolve().is_relative_to(real_root))
            and not (folder == str(root) and (d in skip or d == UPLOADS
                                              and STORE_FILE in files))
            and not outside(os.path.join(folder, d)))
        for name in files:
            path = Path(folder, name)
            if not name.startswith(".") and is_image_path(path) and (
                    path.is_file() or path.is_symlink()):  # a broken link: reported, not lost
                found.append(path)
    return sorted(found)


def catalogue_state(root: Path, *, follow_outside: bool = True) -> tuple:
    """What tells whether the catalogue folder ``root`` changed: the identity (inode, times)
    of every folder below it and of every product table there, each taken before the folder
    is listed. Equal later, no photo was added, removed or renamed and no table rewritten
    in between (a photo's bytes are checked by their sha256 when it is read). Folders are
    passed over as :func:`scan_images` passes them (hidden, a system's, a Vitrine store's or
    model's: a store inside the catalogue is written meanwhile); links to folders are
    followed once, those leading outside ``root`` only with ``follow_outside``; a folder
    that cannot be read is noted as such."""
    confine = Path(os.path.realpath(root))  # (a link loop: as it is, for the reading to
    # say; Path.resolve raised)
    state: list[tuple] = []
    seen: set[tuple[int, int]] = set()
    pending = [str(confine)]
    while pending:
        folder = pending.pop()
        try:
            info = os.stat(folder)
            if (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
            with os.scandir(folder) as listing:
                entries = [e for e in listing if not e.name.startswith(".")]
            names = [e.name for e in entries]
            top = folder == str(confine)
            if not top and holds_vitrine(Path(folder), names):
                continue
            state.append((folder, info.st_ino, info.st_mtime_ns, info.st_ctime_ns))
            for entry in entries:
                if entry.is_dir():
                    if entry.name not in SYSTEM_FOLDERS and not (
                            top and entry.name == UPLOADS and STORE_FILE in names) and (
                            follow_outside or not entry.is_symlink()
                            or Path(entry.path).resolve().is_relative_to(confine)):
                        pending.append(entry.path)
                elif entry.name.casefold() in CSV_NAMES:
                    try:  # (a link to a table that is not there: noted, the folder read on)
                        got = entry.stat()
                    except OSError as exc:
                        state.append((entry.path, exc.errno))
                    else:
                        state.append((entry.path, got.st_ino, got.st_size, got.st_mtime_ns,
                                      got.st_ctime_ns))
        except OSError as exc:
            state.append((folder, exc.errno))
    return tuple(sorted(state, key=lambda item: item[0]))


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


CATEGORY_NAMES_KEPT = 1 << 17
"""Category names whose folded forms are kept (:func:`stored_key`,
``vitrine.web.categories``): a store's are folded again after each write, 1.3 s of the
interpreter at 60,000 categories, where only the new ones need it."""


def category_key(category: str) -> str:
    """What two spellings of one category share: no case, no accents, underscores as
    spaces, spaces trimmed and single ("Relógio_Feminino", " relogio feminino")."""
    return " ".join(fold(category.replace("_", " ")).split())


@functools.lru_cache(maxsize=CATEGORY_NAMES_KEPT)
def stored_key(category: str) -> str:
    """:func:`category_key` of a stored category's name, kept; never of a typed one (a
    page's filter: every filter a client sent was kept, 801 MB for 131,072 of 512
    characters)."""
    return category_key(category)


def reader_order(counts: dict[str, int]) -> dict[str, int]:
    """Categories' counts in the order a reader expects them, case, accents and underscores
    aside, as the pages' category field lists them ("Óculos" came after "x_tenis": the
    store's code-point order, helper-230)."""
    return {c: counts[c] for c in sorted(counts, key=lambda c: (stored_key(c), c))}


def categories_by_key(known: Iterable[str]) -> dict[str, list[str]]:
    """``known`` categories by :func:`category_key`: those a filter written in another case,
    without accents or with spaces for underscores may mean."""
    keyed: dict[str, list[str]] = {}
    for category in known:
        keyed.setdefault(stored_key(category), []).append(category)
    return keyed


def named_alike(category: str, keyed: dict[str, list[str]]) -> list[str]:
    """The categories of ``keyed`` (:func:`categories_by_key`) that ``category`` names in
    another case, without accents or with spaces for underscores; none for one that is only
    underscores or spaces ("_" is no other spelling of "no category")."""
    key = category_key(category)
    return keyed.get(key, []) if key else []


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


def counted_twins(counts: dict[str, int]) -> list[list[dict]]:
    """:func:`category_twins` of categories counted already (a store's)."""
    groups: dict[str, dict[str, int]] = {}
    for category, count in counts.items():
        groups.setdefault(stored_key(category), {})[category] = count
    return sorted(([{"category": c, "products": n} for c, n in sorted(group.items())]
                   for group in groups.values() if len(group) > 1),
                  key=lambda twins: twins[0]["category"])


def category_twins_note(groups: list[list[dict]], shown: int = 3) -> str:
    """One sentence on :func:`category_twins`'s groups, naming the first few; empty if
    none."""
    if not groups:
        return ""
    named = "; ".join(" and ".join(f"{t['category']!r} ({t['products']})" for t in group)
                      for group in groups[:shown])
    more = f"; and {len(groups) - shown} more" if len(groups) > shown else ""
    return (f"Categories that differ only in case, accents or spaces are shown as separate "
            f"ones: {named}{more}. Write each alike in the product table (or name its folder "
            "so).")


def recategorised_note(items: list[dict], shown: int = 3) -> str:
    """One sentence on :func:`recategorised`'s products, naming the first few; empty if none."""
    if not items:
        return ""
    named = ", ".join(f"{i['product_id']} ({i['category']!r}, folder {i['folder']!r})"
                      for i in items[:shown])
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return (f"{len(items)} product(s) take their category from the product table, not from "
            f"their photo's folder: {named}{more}.")


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
