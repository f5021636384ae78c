"""Train / validation / test splits that keep every duplicate group inside one split.

A seeded split is stratified by category: each duplicate group (from
:mod:`vitrine.dedupe_groups`) is one unit, so a photo and its resized or recompressed copy
never land on both sides. A catalogue already split into ``train|treino``, ``val|validacao``
and ``test|teste`` folders keeps its split, and the duplicates that cross it are reported.

:mod:`vitrine.split_record` holds the :class:`Split` record and the fingerprints written
beside it; :mod:`vitrine.split_folders` reads the catalogue and its split folders.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

from vitrine.catalog import Product, category_key
from vitrine.config import Settings
from vitrine.errors import CatalogError
from vitrine.split_folders import (  # noqa: F401 - known here as before
    FOLDER_NAMES,
    Catalogue,
    find_split_folders,
    links_refused,
    read_catalogue,
    uncategorised_photos,
)
from vitrine.split_record import (  # noqa: F401 - known here as before
    FINGERPRINTS,
    SPLITS,
    Split,
    load_fingerprints,
    save_fingerprints,
)


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
    units = _units(len(labels), groups)
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


def _units(n: int, groups: list[list[int]]) -> dict[int, list[int]]:
    """The ``n`` items as units: each group of ``groups`` (disjoint) one unit, each other
    item its own, by their first item."""
    owner = list(range(n))
    for group in groups:
        for i in group:
            owner[i] = min(group)
    units: dict[int, list[int]] = {}
    for i, root in enumerate(owner):
        units.setdefault(root, []).append(i)
    return units


SPLIT_ALIKE_COSINE = 0.95
"""Pretrained-embedding cosine from which two photos whose pHashes roughly agree (within
twice the duplicate rules' distance) stay in one split of a seeded split, though the
duplicate rules (0.97, and the thumbnail rule's colour check) do not call them copies: some
copies of demo photos of kinds the rules promise (cropped 2.5 % a side, 8 % brighter, a
quarter the size, padded, ...) are not grouped: 4.35 of 425 such copies a seed landed in
another split than their photo, 2.75 with this (20 seeds, ``benchmarks/split_leak.py``). It
joins 3 pairs of the 1,016 demo photos (one shoe in two colours in one shot each). Not
duplicates: not reported, nor counted once."""

SPLIT_RULES = 2
"""Which rules a seeded split follows (2: look-alikes kept in one split, 2be3f05). A model's
training fingerprint carries it with :data:`SPLIT_ALIKE_COSINE`, so that `vitrine demo` trains
again instead of reusing a model whose split the rules of an earlier Vitrine made (the demo
model of 2026-12-06 was reused: two look-alike pairs across train and test, 145/153). Raise it
whenever a seeded split of the same photos and settings changes."""

FOLDER_SPLIT_RULES = 1
"""Which rules a catalogue's split into folders follows, where val or test is carved out of
the train folder (1: look-alikes kept in one split of those carved, where a photo and its copy
cropped 2.5 % a side or turned 5 degrees were validated and trained on: of the demo catalogue
given as train and test folders, 2.75 copies of promised kinds a seed were carved apart from
their photo, 1.65 with them, ``benchmarks/split_leak.py --as-folders``, helper-366). Only a
folder split's fingerprint carries it, so a seeded split's model is not trained again for it.
Raise it whenever a folder split of the same photos and settings changes."""


def alike_groups(ids: Sequence[str], vectors, phashes: Sequence[str], rules,
                 cosine: float = SPLIT_ALIKE_COSINE) -> list[list[str]]:
    """Groups of ``ids`` joined by pretrained-embedding cosine >= ``cosine`` (``vectors``
    L2-normalised) with pHashes within twice ``rules.phash_distance``: one range search on
    the vectors the duplicate search already has."""
    import numpy as np

    from vitrine.dedupe import _PhashCodes
    from vitrine.dedupe_groups import duplicate_groups
    from vitrine.dedupe_search import _close_pairs

    rows, others, _ = _close_pairs(len(ids), rules.embedding_rows(vectors), cosine)
    near = _PhashCodes(phashes).hamming(rows, others) <= 2 * rules.phash_distance
    pairs = np.stack([rows[near], others[near]], axis=1)
    return [[ids[i] for i in group] for group in duplicate_groups(len(ids), pairs)]


def _alike_together(assignment: dict[str, str], category: dict[str, str],
                    groups: list[list[str]], alike: list[list[str]], seed: int
                    ) -> dict[str, str]:
    """``assignment`` with each ``alike`` group that it puts in two splits or more (joined
    with the ``groups`` it keeps whole that share a photo with it) moved whole into one of
    them, every other photo left where it was: adding the groups to :func:`group_split`'s
    units changed its draws, and moved 34 to 114 of the 1,016 demo photos (seeds 0-4). The
    split taken is the one that leaves the category's split sizes nearest ``assignment``'s
    (the fewest photos moved), drawn by ``seed`` between equals, never one that leaves the
    category without training photos or empties a split it has; a unit of several
    categories trains, as :func:`group_split` trains it."""
    out = dict(assignment)
    present = [[pid for pid in g if pid in out] for g in groups]  # (carved: train folder's)
    whole = [g for g in present if len({out[pid] for pid in g}) == 1]
    count = Counter((category[pid], side) for pid, side in out.items())
    before = Counter(count)
    rng = random.Random(seed)

    def cost(unit: list[str], label: str, side: str) -> tuple[bool, int, int]:
        after = {s: count[label, s] for s in SPLITS}
        for pid in unit:
            after[out[pid]] -= 1
        after[side] += len(unit)
        return (after["train"] == 0, sum(count[label, s] > 0 and not after[s] for s in SPLITS),
                sum(abs(after[s] - before[label, s]) for s in SPLITS))

    def move(unit: list[str], target: str) -> None:
        for pid in unit:
            count[category[pid], out[pid]] -= 1
            count[category[pid], target] += 1
            out[pid] = target

    units = joined([[pid for pid in g if pid in out] for g in alike] + whole)
    for unit in units:
        sides = sorted({out[pid] for pid in unit}, key=SPLITS.index)
        if len(sides) < 2:
            continue
        label = category[unit[0]]
        move(unit, "train" if any(category[pid] != label for pid in unit) else
             min(sides, key=lambda s: (*cost(unit, label, s), rng.random())))
    # a held-out split that a move emptied (a pair of validation and test joined, a test
    # photo gone to train with its look-alike of another category) takes the smallest of
    # the category's units left in training, as group_split fills it, while training
    # keeps a photo: it had none of the category in 20 seeds of 20
    in_unit = {pid for unit in units for pid in unit}
    spare = [u for u in units if len({category[pid] for pid in u}) == 1] + \
        [[pid] for pid in out if pid not in in_unit]
    for label, side in sorted({(category[pid], s) for pid in out for s in ("test", "val")}):
        if before[label, side] and not count[label, side]:
            fits = [u for u in spare if category[u[0]] == label and out[u[0]] == "train"
                    and len(u) < count[label, "train"]]
            if fits:
                move(min(fits, key=lambda u: (len(u), rng.random())), side)
    return out


def _split_with_products(labels: list[str], dup_groups: list[list[int]],
                         all_groups: list[list[int]], fractions: tuple[float, float],
                         seed: int) -> tuple[list[str], set[str]]:
    """:func:`group_split` keeping the product table's groups (``all_groups``: joined with
    the duplicate groups, ``dup_groups``), but for a category they leave without a split it
    gets without them (two kinds of product in one column, each half of the category: one
    tested, the other trained, none validated: helper-251): that category is split with each
    of its units as one photo where that gives it every split (three products of three
    shots: one each), else with its duplicate groups alone. Returns the names and the
    categories split without their table groups."""
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
    # each unit of those categories counted as one photo: three products of three shots
    # each got one tested product and no validated one (training would keep 3 of 9), and
    # split without its groups the category put every product's shots in train and test
    whole = _unit_split(labels, all_groups, dropped, fractions, seed)
    sides: dict[str, set[str]] = {}
    for i, name in whole.items():
        sides.setdefault(labels[i], set()).add(name)
    units_kept = {label for label in dropped if alone[label] <= sides.get(label, set())}
    return [whole.get(i, name) if label in units_kept else other if label in dropped else name
            for i, (label, name, other) in enumerate(zip(labels, names, plain, strict=True))
            ], dropped - units_kept


def _unit_split(labels: list[str], groups: list[list[int]], only: set[str],
                fractions: tuple[float, float], seed: int) -> dict[int, str]:
    """The items of the labels ``only`` split by :func:`group_split` with each unit (a group
    of ``groups``, else an item) counted as one item; a unit of several labels is left out
    (it trains, as :func:`group_split` trains it)."""
    if not only:
        return {}
    units = _units(len(labels), groups)
    roots = [root for root in sorted(units) if labels[root] in only
             and len({labels[i] for i in units[root]}) == 1]
    names = group_split([labels[root] for root in roots], [], *fractions, seed)
    return {i: name for root, name in zip(roots, names, strict=True) for i in units[root]}


def make_split(products: Sequence[Product], groups: list[list[str]], settings: Settings,
               given: dict[str, str] | None = None,
               alike: list[list[str]] | None = None) -> Split:
    """Split ``products``: keep the ``given`` folder split (carving validation or test out of
    training when that folder is missing), else make a seeded stratified split. Only
    ``products`` are assigned: a photo of ``given`` left out of them (one that could not be
    read) is in no split, though its folder still counts as present. ``groups`` (the
    duplicate groups) and the product table's groups (:func:`product_groups`) each stay in
    one split where it is made (:func:`_split_with_products`), and so do the ``alike``
    groups (:func:`alike_groups`) among the photos it splits (:func:`_alike_together`): all
    of a seeded split, the train folder's of a carved one. A given folder's photos stay
    where they are: duplicates across them are reported and left out, look-alikes across
    them reported (``alike_across_folders``) and kept."""
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
        if alike:
            assignment = _alike_together(assignment, {p.product_id: p.category for p in products},
                                         groups + table, alike, settings.train_seed)
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
        carved_out = {products[i].product_id: name for i, name in zip(train, names, strict=True)}
        if alike:  # (a look-alike carved into val, its photo left to train: helper-366)
            category = {pid: labels[index[pid]] for pid in carved_out}
            carved_out = _alike_together(carved_out, category, groups + table, alike,
                                         settings.train_seed)
        assignment.update(carved_out)
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
    across = []  # (look-alikes the user put in two folders: kept there, and reported)
    for group in alike or ():
        kept = [pid for pid in group if pid in assignment]
        if len({assignment[pid] for pid in kept}) > 1:
            across.append(kept)
    return Split(assignment, "folders", settings.train_seed, {}, groups,
                 left_out=sorted(left_out["test"]), left_out_val=sorted(left_out["val"]),
                 product_groups=used(dropped) if carved else 0, alike_across_folders=across)
