"""Train / validation / test splits that keep every duplicate group inside one split.

A seeded split is stratified by category: each duplicate group (from
:mod:`vitrine.dedupe_groups`) is one unit, so a photo and its resized or recompressed copy
never land on both sides. A catalogue already split into ``train|treino``, ``val|validacao``
and ``test|teste`` folders keeps its split, and the duplicates that cross it are reported.
"""

from __future__ import annotations

import json
import os
import random
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vitrine.catalog import (
    UPLOAD_NAME,
    Product,
    category_form,
    category_key,
    read_catalog,
    scan_images,
)
from vitrine.config import Settings
from vitrine.errors import CatalogError
from vitrine.jsonfile import write_json

FINGERPRINTS = "split_fingerprints.npz"
"""Beside ``split.json``: the perceptual hash and colour thumbnail of each photo the model
trained on (its train and validation photos, and the copies of them training left out), so
that `vitrine evaluate` finds the copies of them that the duplicate rules find, renamed and
saved again (other bytes), without the photos: such copies were queries, as photos the model
never saw (helper-231). About 360 bytes a photo, compressed (36 MB at 100,000)."""

SPLITS = ("train", "val", "test")
FOLDER_NAMES = {
    "train": ("train", "treino", "training"),
    "val": ("val", "validacao", "validação", "validation", "valid"),
    "test": ("test", "teste"),
}


@dataclass
class Split:
    """Which split each product belongs to, and the duplicate groups found."""

    assignment: dict[str, str]
    source: str = "seeded"
    """'seeded' (made here) or 'folders' (given by the catalogue's folders)."""
    seed: int | None = None
    fractions: dict[str, float] = field(default_factory=dict)
    groups: list[list[str]] = field(default_factory=list)
    """Duplicate groups of product ids."""
    contents: dict[str, str] = field(default_factory=dict)
    """Each product's photo sha256, so that `vitrine evaluate` knows the photos the model
    trained on whatever their ids in the catalogue it is given (empty in older models)."""
    left_out: list[str] = field(default_factory=list)
    """Photos of the catalogue's test folder that a copy of in its train or val folder keeps
    out of every split: tested, they counted a photo the model had seen (its train or val
    copy) as unseen, and `evaluate` left them out."""
    left_out_val: list[str] = field(default_factory=list)
    """Photos of the catalogue's val folder that a copy of in its train folder keeps out of
    every split: validated, they scored a photo the model trained on, inflating the
    validation figures that pick the best epoch and lower the learning rate."""
    product_groups: int = 0
    """Groups of photos the product table's group column (:data:`GROUP_COLUMNS`) kept in
    one split, beside the duplicate groups."""
    categories: dict[str, str] = field(default_factory=dict)
    """Each product's category, so that a later training into the same folder keeps the
    split of the photos whose category did not change (empty in older models)."""
    kept_from_earlier: dict[str, int] | None = None
    """Of a split that kept the earlier model's (:func:`vitrine.split_kept.kept_split`): the
    photos kept in their split, placed anew, and moved to a more held-out one."""

    def ids(self, name: str) -> list[str]:
        return sorted(pid for pid, s in self.assignment.items() if s == name)

    def crossing(self) -> list[list[str]]:
        """Duplicate groups whose members are in more than one split."""
        return [g for g in self.groups if len({self.assignment.get(p) for p in g}) > 1]

    def counts(self) -> dict[str, int]:
        return {name: len(self.ids(name)) for name in SPLITS}

    def as_dict(self) -> dict:
        return {"source": self.source, "seed": self.seed, "fractions": self.fractions,
                "counts": self.counts(), "duplicate_groups": self.groups,
                "product_groups": self.product_groups,
                "crossing_groups": self.crossing(), "left_out_of_test": sorted(self.left_out),
                "left_out_of_val": sorted(self.left_out_val),
                "assignment": dict(sorted(self.assignment.items())),
                "photo_sha256": dict(sorted(self.contents.items())),
                "category": dict(sorted(self.categories.items())),
                **({"kept_from_earlier": self.kept_from_earlier}
                   if self.kept_from_earlier is not None else {})}

    def save(self, path: Path) -> None:
        write_json(path, self.as_dict())

    @classmethod
    def load(cls, path: Path) -> Split:
        """The split written by :meth:`save`; a CatalogError in one sentence for a file that
        is not one (damaged, or edited by hand)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            split = cls(dict(data["assignment"]), data["source"], data.get("seed"),
                        data.get("fractions", {}), data.get("duplicate_groups", []),
                        dict(data.get("photo_sha256") or {}),
                        list(data.get("left_out_of_test") or []),
                        list(data.get("left_out_of_val") or []),
                        int(data.get("product_groups") or 0),
                        dict(data.get("category") or {}))
            if not all(isinstance(v, str) for v in (*split.assignment.values(),
                                                     *split.contents.values(),
                                                     *split.categories.values())):
                raise ValueError("its values are not text")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CatalogError(f"{path} is not a split written by `vitrine train` "
                               f"({type(exc).__name__}: {exc}); train again, or remove it "
                               "to evaluate leave-one-out.") from None
        return split


def save_fingerprints(folder: Path, split: Split, phash_of: dict[str, str],
                      thumb_of: dict[str, bytes]) -> None:
    """Write :data:`FINGERPRINTS` in the model ``folder``: of each photo the model trained on
    (``split``'s train and validation photos and those it left out as their copies), its
    product id, pHash and thumbnail (the whole photo's: :func:`vitrine.dedupe_pairs.copies_of_known`
    compares those alone); a photo without a pHash (none was made) is left out."""
    import io

    import numpy as np

    from vitrine.dedupe_views import whole
    from vitrine.files import write_whole

    trained = {*split.left_out, *split.left_out_val, *split.ids("train"), *split.ids("val")}
    ids = [pid for pid in sorted(trained) if _hash_value(phash_of.get(pid)) is not None]
    buffer = io.BytesIO()  # (ids NUL-separated: a file name holds no NUL, and no array of
    # fixed-width text four bytes a character)
    np.savez_compressed(
        buffer, ids=np.frombuffer("\0".join(ids).encode("utf-8", "surrogateescape"), np.uint8),
        phash=np.array([_hash_value(phash_of[pid]) for pid in ids], np.uint64),
        thumbs=np.frombuffer(b"".join(whole(thumb_of[pid]) for pid in ids), np.uint8).reshape(
            len(ids), len(whole(thumb_of[ids[0]])) if ids else 0))
    write_whole(Path(folder) / FINGERPRINTS, buffer.getvalue())


def load_fingerprints(folder: Path, split: Split | None
                      ) -> tuple[list[str], list[bytes]] | None:
    """The pHashes and thumbnails :func:`save_fingerprints` wrote in ``folder``, of the photos
    ``split`` says the model trained on; None without the file (a model trained before it
    was written); a CatalogError in one sentence for a file that is not one. Without
    ``split``, the file is only checked as far as its ids and pHashes (not its thumbnails,
    77 MB at 100,000), and None returned: a damaged one said before the photos are
    embedded (helper-237)."""
    import zipfile
    import zlib

    import numpy as np

    from vitrine.dedupe_views import THUMB_BYTES, THUMB_SIZE

    path = Path(folder) / FINGERPRINTS
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            raw, values = bytes(data["ids"]), data["phash"]
            if "thumbs" not in data.files:
                raise KeyError("thumbs")
            thumbs = data["thumbs"] if split is not None else None
        ids = raw.decode("utf-8", "surrogateescape").split("\0") if raw else []
        if values.dtype != np.uint64 or len(ids) != len(values):
            raise ValueError("its arrays do not match")
        if thumbs is None:
            return None
        if thumbs.dtype != np.uint8 or thumbs.ndim != 2 or len(thumbs) != len(ids):
            raise ValueError("its arrays do not match")
        if len(ids) and thumbs.shape[1] != THUMB_BYTES:  # (FAISS asserted: helper-237)
            raise ValueError(f"its thumbnails are not {THUMB_SIZE}×{THUMB_SIZE} RGB")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise CatalogError(f"{path} is not a file written by `vitrine train` "
                           f"({type(exc).__name__}: {exc}); train again, or remove it "
                           "(its copies of training photos are then not looked for).") from None
    trained = {*split.left_out, *split.left_out_val,
               *(pid for pid, side in split.assignment.items() if side != "test")}
    rows = [i for i, pid in enumerate(ids) if pid in trained]  # (a file of another split)
    return [f"{int(values[i]):016x}" for i in rows], [thumbs[i].tobytes() for i in rows]


def _hash_value(phash: str | None) -> int | None:
    """A pHash's 16 hex digits as a number; None for no pHash."""
    try:
        value = int(phash, 16) if phash else None
    except ValueError:
        return None
    return value if value is not None and 0 <= value < 2**64 else None


def held_out_targets(n: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    """How many of a label's ``n`` items validation and test take: their fractions rounded,
    at least one each from three items on, and one item left to train."""
    targets = {name: round(n * frac) for name, frac in (("test", test_fraction),
                                                        ("val", val_fraction))}
    for name, frac in (("test", test_fraction), ("val", val_fraction)):
        if n >= 3 and frac > 0:
            targets[name] = max(1, targets[name])
    for name in ("val", "test"):  # leave training at least one item
        targets[name] -= min(targets[name], max(0, sum(targets.values()) - (n - 1)))
    return targets


def group_split(labels: Sequence[str], groups: Sequence[Sequence[int]], val_fraction: float,
                test_fraction: float, seed: int) -> list[str]:
    """Assign each item ('train', 'val' or 'test'), stratified by label and seeded.

    ``groups`` lists items (indices) that must share a split; an item in no group is its own
    unit. A unit whose items carry different labels trains, and counts towards no label's
    share (it counted towards its first member's, whose photos were then held out as if
    the other labels' copies were its own). Each label with at least three items, other
    than such copies, gets at least one item in validation and in test as far as its units
    allow (a unit larger than its target only when that split has none of the label yet,
    training keeps half the label's items and no unit that fits the split is left to train:
    a photo and two groups of 5 had no validation in 8 seeds of 20), and every label keeps at
    least one for training (large fractions no longer drop a small category from the
    classes).
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and
            val_fraction + test_fraction < 1):
        raise CatalogError("the validation and test fractions must be between 0 and 1 and "
                           "sum to less than 1.")
    owner = list(range(len(labels)))
    for group in groups:
        for i in group:
            owner[i] = min(group)
    units: dict[int, list[int]] = {}
    for i, root in enumerate(owner):
        units.setdefault(root, []).append(i)
    by_label: dict[str, list[list[int]]] = {}
    for root in sorted(units):
        if len({labels[i] for i in units[root]}) == 1:  # (copies under two categories:
            # no model could get both right, so tested they were mistakes by construction
            # (helper-190); they train, and the first member's category no longer counts a
            # placeholder photo that 30 products of three categories share as 30 of its
            # own: 16 of its 20 photos were held out)
            by_label.setdefault(labels[root], []).append(units[root])
    rng = random.Random(seed)
    out = ["train"] * len(labels)
    for label in sorted(by_label):
        label_units = by_label[label]
        rng.shuffle(label_units)
        n = sum(len(u) for u in label_units)
        targets = held_out_targets(n, val_fraction, test_fraction)
        filled = {"test": 0, "val": 0}
        for unit in label_units:
            # the first split still short of its target that this unit fits (within one
            # photo; a split of this label still empty takes a larger unit as long as
            # training keeps half the label's photos): a unit that overshot test went to
            # training and the next one tried test again, so validation never got a photo
            # of a category of equal groups (helper-268)
            held = filled["test"] + filled["val"]
            name = next((s for s in ("test", "val") if filled[s] < targets[s] and (
                filled[s] + len(unit) <= targets[s] + 1 or
                filled[s] == 0 and 2 * (n - held - len(unit)) >= n)), "train")
            if name != "train":
                filled[name] += len(unit)
            for i in unit:
                out[i] = name
        for name in ("test", "val"):
            # a split that a larger unit alone took while units that fit it were left to
            # train takes those instead (10 copies of one placeholder photo were a
            # category's whole test or validation share in 1 seed of 4, its 20 other
            # photos never held out there); a category of equal groups keeps its unit
            taken = [u for u in label_units if out[u[0]] == name]
            if len(taken) != 1 or len(taken[0]) <= targets[name] + 1:
                continue
            room, moved = 0, []
            for unit in label_units:
                if out[unit[0]] == "train" and room < targets[name] and \
                        room + len(unit) <= targets[name] + 1:
                    room += len(unit)
                    moved.append(unit)
            if moved:
                for unit in [*moved, *taken]:
                    for i in unit:
                        out[i] = name if unit in moved else "train"
        for name, other in (("val", "test"), ("test", "val")):
            # a split left empty while the other took two units or more (test, still short
            # of its target, took a single photo and then a pair: 7 copies of a placeholder,
            # a pair and a photo were never validated in 15 seeds of 40) gets the other's
            # smallest
            donors = [u for u in label_units if out[u[0]] == other]
            if targets[name] and len(donors) > 1 and \
                    not any(out[u[0]] == name for u in label_units):
                for i in min(donors, key=len):
                    out[i] = name
        if all(out[u[0]] != "train" for u in label_units):
            # small groups filled validation and test (a pair within a target of 1 plus
            # one), or the category's one group did (two copies of its only photo at a
            # fraction of 0.3: the category left the classes): the smallest goes back, so
            # the category still has a training photo
            for i in min(reversed(label_units), key=len):
                out[i] = "train"
    return out


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


GROUP_COLUMNS = ("item_group_id", "product_group", "parent_id")
"""Product-table columns naming the product a photo shows (its front, back and detail
shots, or a supplier's crop of it; ``item_group_id`` as shopping feeds write it): photos
sharing a value stay in one split, as duplicates do. The duplicate rules find copies
resized or recompressed, not cropped by more than about 3 % a side, mirrored or taken
again, which otherwise land in train and test (helper-268). Names that say which product
only: a column "group", "grupo" or "grupo_produto" may hold a department (see
:func:`product_groups`)."""
_GROUP_KEYS = {category_key(name) for name in GROUP_COLUMNS}  # (any case, "Item Group ID")


def product_groups(products: Sequence[Product]) -> list[list[str]]:
    """The groups of two or more product ids that share a :data:`GROUP_COLUMNS` value, of
    one category and at most half of its photos: a value across categories, or holding
    more than half of one, names a department or a kind of product, not one product's
    shots (joined, each category it spans trained and none was validated or tested:
    helper-247)."""
    by_value: dict[str, list[Product]] = {}
    for product in products:
        value = next((v.strip() for k, v in product.attributes.items()
                      if category_key(k) in _GROUP_KEYS and v and v.strip()), None)
        if value is not None:
            by_value.setdefault(value, []).append(product)
    size = Counter(p.category for p in products)
    return [[p.product_id for p in shots] for shots in by_value.values()
            if len(shots) > 1 and len({p.category for p in shots}) == 1
            and 2 * len(shots) <= size[shots[0].category]]


def joined(groups: list[list[str]]) -> list[list[str]]:
    """``groups`` that share an id joined into one (duplicate groups and product groups)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for group in groups:
        for pid in group[1:]:
            a, b = find(group[0]), find(pid)
            if a != b:
                parent[max(a, b)] = min(a, b)
    members: dict[str, list[str]] = {}
    for pid in parent:
        members.setdefault(find(pid), []).append(pid)
    return sorted((sorted(m) for m in members.values() if len(m) > 1), key=lambda g: g[0])


def _split_with_products(labels: list[str], dup_groups: list[list[int]],
                         all_groups: list[list[int]], fractions: tuple[float, float],
                         seed: int) -> tuple[list[str], set[str]]:
    """:func:`group_split` keeping the product table's groups (``all_groups``: joined with
    the duplicate groups, ``dup_groups``), but for a category they leave without a split it
    gets without them (two kinds of product in one column, each half of the category: one
    tested, the other trained, none validated: helper-251): that category is split with its
    duplicate groups alone. Returns the names and those categories."""
    names = group_split(labels, all_groups, *fractions, seed)
    if all_groups is dup_groups:  # (no table groups: make_split passes one list)
        return names, set()
    plain = group_split(labels, dup_groups, *fractions, seed)
    kept: dict[str, set[str]] = {}
    alone: dict[str, set[str]] = {}
    for label, name, other in zip(labels, names, plain, strict=True):
        kept.setdefault(label, set()).add(name)
        alone.setdefault(label, set()).add(other)
    dropped = {label for label in kept if alone[label] - kept[label]}
    return [other if label in dropped else name
            for label, name, other in zip(labels, names, plain, strict=True)], dropped


def make_split(products: Sequence[Product], groups: list[list[str]], settings: Settings,
               given: dict[str, str] | None = None) -> Split:
    """Split ``products``: keep the ``given`` folder split (carving validation or test out of
    training when that folder is missing), else make a seeded stratified split. Only
    ``products`` are assigned: a photo of ``given`` left out of them (one that could not be
    read) is in no split, though its folder still counts as present. ``groups`` (the
    duplicate groups) and the product table's groups (:func:`product_groups`) each stay in
    one split where it is made (:func:`_split_with_products`); a given folder's photos stay
    where they are, and only duplicates across them are reported and left out."""
    index = {p.product_id: i for i, p in enumerate(products)}
    table = product_groups(products)

    def indexed(id_groups: list[list[str]]) -> list[list[int]]:
        return [[index[pid] for pid in g if pid in index] for g in id_groups]

    dup_groups = indexed(groups)
    idx_groups = indexed(joined(groups + table)) if table else dup_groups
    labels = [p.category for p in products]
    val, test = settings.train_val_fraction, settings.train_test_fraction

    def used(dropped: set[str]) -> int:  # (the table's groups kept: in another category)
        return sum(products[index[g[0]]].category not in dropped for g in table)

    if given is None:
        names, dropped = _split_with_products(labels, dup_groups, idx_groups, (val, test),
                                              settings.train_seed)
        assignment = {p.product_id: s for p, s in zip(products, names, strict=True)}
        return Split(assignment, "seeded", settings.train_seed,
                     {"val": val, "test": test}, groups, product_groups=used(dropped))
    assignment = dict(given)
    present = set(given.values())
    carved = "val" not in present or "test" not in present
    if carved:
        train = [i for i, p in enumerate(products) if given[p.product_id] == "train"]
        local = {i: j for j, i in enumerate(train)}
        # (both missing: an empty folder counts as missing, and only train was left)
        fractions = ((val, test) if not present & {"val", "test"} else
                     (val / (1 - test), 0.0) if "val" not in present else (0.0, test / (1 - val)))
        sub_dup = [[local[i] for i in g if i in local] for g in dup_groups]
        sub_all = [[local[i] for i in g if i in local] for g in idx_groups] if table \
            else sub_dup
        names, dropped = _split_with_products([labels[i] for i in train], sub_dup, sub_all,
                                              fractions, settings.train_seed)
        for i, name in zip(train, names, strict=True):
            assignment[products[i].product_id] = name
    assignment = {p.product_id: assignment[p.product_id] for p in products}
    left_out: dict[str, set[str]] = {"val": set(), "test": set()}
    for group in groups:  # (a copy in an earlier split: the model has seen the photo)
        where = {assignment.get(pid) for pid in group}
        for pid in group:
            if (name := assignment.get(pid)) == "test" and where & {"train", "val"} or (
                    name == "val" and "train" in where):
                left_out[name].add(pid)
    for pid in (*left_out["val"], *left_out["test"]):
        del assignment[pid]
    return Split(assignment, "folders", settings.train_seed, {}, groups,
                 left_out=sorted(left_out["test"]), left_out_val=sorted(left_out["val"]),
                 product_groups=used(dropped) if carved else 0)
