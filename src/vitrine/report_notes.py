"""The training report's sentences on its photos: the split's groups, a split kept from an
earlier model, photos left out (copies across splits, unreadable, uncategorised, unsplit,
untrained), duplicates labelled differently, recategorised products and the duplicate rule
calibrated for the model."""

from __future__ import annotations

from vitrine.catalog import category_twins_note, recategorised_note
from vitrine.display import counted


def groups_text(split: dict) -> str:
    """A split's groups kept together, as its line says them: the duplicate groups, the
    product table's groups (item_group_id…) when it had any, the groups across splits."""
    table = split.get("product_groups") or 0
    return (f"{counted(split['duplicate_groups'], 'duplicate group')}, "
            + (f"{counted(table, 'product group')} of the product table, " if table else "")
            + f"{len(split['crossing_groups'])} crossing splits")


def kept_split_lines(split: dict, bullet: str) -> list[str]:
    """Whether the split kept the earlier model's (:mod:`vitrine.split_kept`), in one line;
    none for a first training."""
    if kept := split.get("kept_from_earlier"):
        return [f"{bullet}Split kept from the earlier model in this folder: "
                f"{counted(kept['kept'], 'photo')} where they were, {kept['placed']} new, "
                f"changed or recategorised placed anew, {kept['moved']} moved to a more "
                "held-out split with their copies (VITRINE_TRAIN_NEW_SPLIT=true splits "
                "afresh)."]
    if why := split.get("fresh_because"):
        return [f"{bullet}Split made afresh, not kept from the earlier model: {why}."]
    return []


def left_out_lines(split: dict, bullet: str, named: int = 5) -> list[str]:
    """Test photos a copy of which is in the train or val folder, and val photos a copy of
    which is in the train folder, kept out of every split; look-alikes that the folders put
    in two splits, kept."""
    lines = []
    for key, folder, earlier in (("left_out_of_test", "test", "train or val"),
                                 ("left_out_of_val", "val", "train")):
        if left_out := split.get(key):
            names = ", ".join(left_out[:named]) + (
                f" and {len(left_out) - named} more" if len(left_out) > named else "")
            lines.append(f"{bullet}{len(left_out)} photo(s) of the {folder} folder left out "
                         f"(a copy of each is in the {earlier} folder, so the model saw it): "
                         f"{names}.")
    if alike := split.get("alike_across_folders"):
        names = "; ".join(" ≈ ".join(g) for g in alike[:named]) + (
            f" and {len(alike) - named} more" if len(alike) > named else "")
        lines.append(f"{bullet}{len(alike)} group(s) of look-alike photos (not duplicates) "
                     "are in two split folders, kept there (the model may have seen one "
                     f"like a photo it is tested or validated on): {names}.")
    return lines


def conflict_lines(groups: list[list[str]], bullet: str) -> list[str]:
    """A warning on duplicate photos labelled with different categories, and the groups."""
    if not groups:
        return []
    return [f"{len(groups)} group(s) of duplicate photos carry different categories (check "
            "the catalogue; a seeded split trains them, never tests them):",
            *(bullet + "  ≈  ".join(g) for g in groups), ""]


UNAUGMENTED = {"why": "could not be read again for their augmented views",
               "of": "augmentation (each trained on its first reading in their place)"}
"""How :func:`unreadable_lines` words the training photos ``split_caches`` could not
augment."""


def unreadable_lines(bad: list[dict], bullet: str, shown: int = 10,
                     why: str = "could not be read", of: str = "training",
                     listed: str = "summary.json") -> list[str]:
    """A sentence on the photos training (or ``of``) left out (by default: could not read
    them), and the first of them with their reasons (all of them in ``listed``)."""
    if not bad:
        return []
    lines = [f"{len(bad)} photo(s) {why} and were left out of {of}:"]
    lines += [f"{bullet}{b['product_id']}: {b['reason']}" for b in bad[:shown]]
    if len(bad) > shown:
        lines.append(f"{bullet}… and {len(bad) - shown} more ({listed})")
    return [*lines, ""]


def untrained_lines(summary: dict) -> list[str]:
    """The sentence on categories with photos only in validation or test (a pre-split
    catalogue's folders): no class was trained for them, so they are in no figure."""
    untrained = summary.get("untrained_categories") or {}
    if not untrained:
        return []
    named = ", ".join(f"{name} ({n})" for name, n in untrained.items())
    return [f"{sum(untrained.values())} photo(s) of {len(untrained)} categor"
            f"{'y' if len(untrained) == 1 else 'ies'} with no photo in the training split were "
            f"left out of training and of the test figures: {named}.", ""]


def recategorised_lines(summary: dict) -> list[str]:
    """The sentences on products whose table category overrides their folder and on
    categories that differ only in case, accents or spaces (each trained as a class of its
    own), each with a blank after it."""
    notes = (recategorised_note(summary.get("category_from_table") or []),
             category_twins_note(summary.get("category_twins") or []))
    return [line for note in notes if note for line in (note, "")]


def duplicate_rule_lines(calibration: dict | None) -> list[str]:
    """The duplicate rule calibrated for this model's vectors (vitrine.train)."""
    if not calibration:
        return []
    closest = calibration["closest_different_products"]
    why = ("no two photos of different products came near it" if closest is None else
           f"the closest two photos of different products whose perceptual hashes agree: "
           f"{closest:.3f}")
    view = " without the class probabilities" if calibration.get("without_probabilities") else ""
    rule = (f"embedding cosine{view} ≥ {calibration['embed_cosine']:.3f}"
            if calibration["embed_cosine"] <= 1 else
            "identical bytes or thumbnails only, the embedding rule is off")
    return [f"Duplicates among photos indexed with this model: {rule} ({why}; over "
            f"{calibration['photos']} photos).", ""]
