"""A seeded split that stays put when the shop trains again into the same model folder.

A fresh split (:func:`vitrine.split.make_split`) shuffles each category in turn with one
seeded generator, so one photo added to a category moved 8 of its 25 photos across splits,
and up to 82 photos of the categories after it: the retrained model's test figures came from
other photos and could not be compared with the last ones. :func:`kept_split` keeps the
earlier split of every photo still there and places only the others.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from vitrine.catalog import MODEL_CONFIG, Product, is_model_config
from vitrine.config import Settings
from vitrine.errors import CatalogError
from vitrine.split import (
    SPLITS,
    Split,
    held_out_targets,
    joined,
    make_split,
    product_groups,
)

HELD_OUT = {"train": 0, "val": 1, "test": 2}
"""How far each split is held out: a group joining photos of two splits goes to the further
one, so that no test photo is ever trained on."""


def earlier_split(out_dir: Path, settings: Settings) -> tuple[Split | None, str | None]:
    """The split of the model in ``out_dir`` that :func:`kept_split` keeps, else None and why
    the split is made afresh (no reason when ``out_dir`` holds no model: a first training).
    Read before the training replaces the folder; a damaged or foreign split.json is a
    reason, never an error (the model is trained again, the split made afresh)."""
    out = Path(out_dir).expanduser()
    if not is_model_config(out / MODEL_CONFIG):
        return None, None
    if settings.train_new_split:
        return None, "VITRINE_TRAIN_NEW_SPLIT is set"
    try:
        earlier = Split.load(out / "split.json")
    except CatalogError:
        return None, "the earlier model's split.json is missing or could not be read"
    why = why_not_kept(earlier, settings)
    return (None, why) if why else (earlier, None)


def why_not_kept(earlier: Split, settings: Settings) -> str | None:
    """Why the ``earlier`` split cannot be kept under ``settings``, or None."""
    if earlier.source != "seeded":
        return "the earlier split was given by the catalogue's folders"
    if not set(earlier.assignment.values()) <= set(SPLITS):
        return "the earlier model's split.json names other splits"
    if earlier.seed != settings.train_seed:
        return f"VITRINE_TRAIN_SEED is {settings.train_seed}, the earlier split's {earlier.seed}"
    fractions = {"val": settings.train_val_fraction, "test": settings.train_test_fraction}
    if earlier.fractions != fractions:
        return (f"the validation and test fractions ({fractions['val']:g}, "
                f"{fractions['test']:g}) are not the earlier split's")
    if not earlier.categories or not earlier.contents:
        return "the earlier model's split.json names no categories (written before they were)"
    return None


def kept_split(products: Sequence[Product], groups: list[list[str]], settings: Settings,
               earlier: Split, contents: dict[str, str],
               alike: list[list[str]] | None = None) -> Split:
    """A seeded split of ``products`` keeping the ``earlier`` one (:func:`earlier_split`).

    A photo with the same product id, bytes (``contents``, sha256 by product id) and category
    as before keeps its split; the others (new, changed, recategorised) are placed, unit by
    unit (a duplicate or product-table group is one), in a seeded order, into test then
    validation while they are short of their share of the category's new size (as
    :func:`vitrine.split.group_split` fills them), the rest trains. A unit holding kept photos
    goes where they are; kept photos of different splits all go to the most held-out one
    (test before validation before training: moved). A category with no kept photo (new) gets
    what a fresh split of the catalogue gives it. With a reason not to keep ``earlier``
    (:func:`why_not_kept`) this is the fresh split."""
    fresh = make_split(products, groups, settings, alike=alike)
    fresh.contents, fresh.categories = dict(contents), {p.product_id: p.category
                                                       for p in products}
    if why_not_kept(earlier, settings):
        return fresh
    category = fresh.categories
    kept = {pid: side for pid, side in earlier.assignment.items() if pid in category
            and contents.get(pid) is not None and earlier.contents.get(pid) == contents[pid]
            and earlier.categories.get(pid) == category[pid]}
    table = product_groups(products)
    dropped = {category[g[0]] for g in table  # (a category whose table groups the fresh
               if len({fresh.assignment[pid] for pid in g}) > 1}  # split does not keep)
    table = [g for g in table if category[g[0]] not in dropped]
    grouped = [[pid for pid in g if pid in category]  # (look-alikes too: make_split's)
               for g in joined(groups + table + (alike or []))]
    in_group = {pid for g in grouped for pid in g}
    units = [g for g in grouped if g] + [[pid] for pid in sorted(category) if pid not in in_group]
    with_kept = {category[pid] for pid in kept}
    assignment: dict[str, str] = {}
    open_units: dict[str, list[list[str]]] = {}
    for unit in units:
        held = [kept[pid] for pid in unit if pid in kept]
        cats = {category[pid] for pid in unit}
        if held:
            side = max(held, key=HELD_OUT.__getitem__)
        elif len(cats) > 1:  # (copies under two categories train, as in a fresh split)
            side = "train"
        elif not cats & with_kept:  # a new category: as a fresh split makes it
            assignment.update((pid, fresh.assignment[pid]) for pid in unit)
            continue
        else:
            open_units.setdefault(category[unit[0]], []).append(unit)
            continue
        assignment.update((pid, side) for pid in unit)
    size = Counter(category.values())
    filled = Counter((category[pid], side) for pid, side in assignment.items())
    rng = random.Random(settings.train_seed)
    for name in sorted(open_units):
        placing = open_units[name]
        rng.shuffle(placing)
        targets = held_out_targets(size[name], settings.train_val_fraction,
                                   settings.train_test_fraction)
        for unit in placing:
            side = next((s for s in ("test", "val") if filled[name, s] < targets[s] and
                         filled[name, s] + len(unit) <= targets[s] + 1), "train")
            filled[name, side] += len(unit)
            assignment.update((pid, side) for pid in unit)
    trained = {category[pid] for pid, side in assignment.items() if side == "train"}
    for name in sorted(set(category.values()) - trained):  # (the category keeps a training
        # photo: the smallest placed unit, else the smallest kept one, validated before
        # tested, its own before one with copies under other categories, never another
        # category's test photos; a category whose training photos were removed, or moved
        # with their copies, left the classes, or left training with one class)
        own = [u for u in [*open_units.get(name, []), *units]
               if any(category[pid] == name for pid in u) and not (
                   assignment[u[0]] == "test" and any(category[pid] != name for pid in u))]
        if own:
            for pid in min(own, key=lambda u: (any(pid in kept for pid in u),
                                               HELD_OUT[assignment[u[0]]],
                                               len({category[pid] for pid in u}) > 1,
                                               len(u))):
                assignment[pid] = "train"
    stayed = sum(assignment[pid] == side for pid, side in kept.items())
    return Split(assignment, "seeded", settings.train_seed, dict(fresh.fractions), groups,
                 dict(contents), product_groups=sum(
                     len({assignment[pid] for pid in g}) == 1 for g in table),
                 categories=category,
                 kept_from_earlier={"kept": stayed, "placed": len(category) - len(kept),
                                    "moved": len(kept) - stayed})
