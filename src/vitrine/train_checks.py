"""What training refuses: settings that cannot work, checked before any photo is read (a
learning-rate floor at or above a phase's rate, no validation photos to carve), a catalogue of
fewer than two categories, and a run whose loss stopped being a number."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vitrine.catalog import Product, category_form
from vitrine.config import Settings
from vitrine.errors import CatalogError, TrainingError
from vitrine.model_eval import without_unreadable
from vitrine.split import held_out_targets
from vitrine.split_folders import FOLDER_NAMES


def check_converged(history: Sequence[dict], out_dir: Path, refit: dict | None = None) -> None:
    """Raise TrainingError at the first epoch whose training or validation loss is not a
    number: a model that predicts nothing must not replace a working one in ``out_dir``.
    After a refit (``refit``: ``Fit.refit``), the network saved is checked on the training
    and validation photos as well: a refit whose loss stopped being a number is not saved
    (the validated network is, :func:`vitrine.train_fit.refit_worse`), so this refuses only a
    run where neither network is usable (helper-231)."""
    for e in history:
        if not np.isfinite(e["loss"]) or not np.isfinite(e.get("val_loss", 0.0)):
            raise TrainingError(
                f"training diverged (the loss is not a number from the {e['phase']} epoch "
                f"{e['epoch']}); lower the learning rates (VITRINE_TRAIN_PHASE1_LR, "
                f"VITRINE_TRAIN_PHASE2_LR). {out_dir} is left as it was.")
    if refit and refit["check"]["refit" if refit["kept"] else "validated"]["loss"] is None:
        raise TrainingError(
            "training diverged (the loss of the refit on train + validation, and of the "
            "validated model before it, is not a number); lower the learning rates "
            f"(VITRINE_TRAIN_PHASE1_LR, VITRINE_TRAIN_PHASE2_LR). {out_dir} is left as it was.")

def floor_below_rates(settings: Settings) -> None:
    """Refuse, before any photo is read, a learning-rate floor (VITRINE_TRAIN_MIN_LR) at or
    above a phase's rate (a phase of 0 epochs aside): ReduceLROnPlateau never lowers a rate
    to a floor above it. Checked by training alone: as a check of the settings it stopped
    every command, a server or `vitrine index` that never trains among them, whose
    environment an older Vitrine had served with (VITRINE_TRAIN_PHASE2_LR=1e-6 beside the
    default floor)."""
    for phase in (1, 2):
        lr = getattr(settings, f"train_phase{phase}_lr")
        if getattr(settings, f"train_phase{phase}_epochs") and settings.train_min_lr >= lr:
            raise TrainingError(f"settings VITRINE_TRAIN_MIN_LR={settings.train_min_lr:g} and "
                                f"VITRINE_TRAIN_PHASE{phase}_LR={lr:g} put the floor of the "
                                f"learning-rate reductions at or above phase {phase}'s rate, "
                                "which would never be reduced; set VITRINE_TRAIN_MIN_LR "
                                "below it.")


def no_validation(settings: Settings, given: dict[str, str] | None) -> None:
    """Refuse, before any photo is read, a VITRINE_TRAIN_VAL_FRACTION of 0 where the
    validation photos are to be carved by it (no val folder): no fraction of 0 gives any,
    and the run read every photo first, then said to add photos."""
    if settings.train_val_fraction == 0 and "val" not in set((given or {}).values()):
        raise TrainingError("setting VITRINE_TRAIN_VAL_FRACTION=0 leaves no photo to "
                            "validate on (early stopping, the learning rate and refit are "
                            "chosen on them); set it above 0 (0.15 by default), or give the "
                            "catalogue a val folder.")


def photos_to_validate(settings: Settings) -> int:
    """The fewest different photos (copies of one photo count as one) a category needs for
    the seeded split to hold one out for validation (:func:`vitrine.split.held_out_targets`):
    3 at the default fractions, where two photos get no validation photo (round(2 × 0.15)
    is 0). 0 when no number of photos up to 10,000 gets one."""
    val, test = settings.train_val_fraction, settings.train_test_fraction
    return next((n for n in range(1, 10_001) if held_out_targets(n, val, test)["val"]), 0)


def no_category_to_validate(catalog_dir: Path, products: Sequence[Product],
                            settings: Settings, given: dict[str, str] | None) -> None:
    """Refuse, before any photo is read, a catalogue split by seed (no split folders) none
    of whose categories has photos enough to hold one out for validation: no photo read
    could give it one (unreadable photos and copies only lower the counts), and every photo
    went through the frozen layers first (33 s for 200 categories of one photo each on two
    cores), then the run said so, naming two photos a category as enough."""
    if given is not None or not products:
        return
    largest = max(Counter(p.category for p in products).values())
    val, test = settings.train_val_fraction, settings.train_test_fraction
    if any(held_out_targets(n, val, test)["val"] for n in range(1, largest + 1)):
        return
    need = photos_to_validate(settings)
    raise CatalogError(
        f"no category of {catalog_dir} has photos enough to hold one out for validation "
        f"(the largest has {largest} photo{'s' if largest > 1 else ''}); "
        + validation_remedy(need, settings) + ".")


def validation_remedy(need: int, settings: Settings) -> str:
    """What to add where no category gets a validation photo, for ``need`` from
    :func:`photos_to_validate`."""
    if not need:
        return "raise VITRINE_TRAIN_VAL_FRACTION"
    tested = held_out_targets(need, settings.train_val_fraction,
                              settings.train_test_fraction)["test"]
    return (f"add photos: a category needs {need} different ones (copies of one photo count "
            "as one), one to train on and one to validate" +
            (f", {'one' if tested == 1 else tested} to test" if tested else ""))


def too_few_categories(catalog_dir: Path, products: Sequence[Product],
                       unreadable: Sequence[dict] = ()) -> None:
    """A CatalogError unless ``products`` are of two categories or more: training learns to
    tell categories apart (it was said after every photo was read, of "the training split"),
    so this is checked before the photos are read, then of those that could be read. A lone
    ``train`` folder is not a split catalogue: its photos were one category named "train".
    The ``unreadable`` photos left out, when there were, are named."""
    categories = {p.category for p in products}
    if len(categories) > 1:
        return
    if categories:
        (only,) = categories
        lone = category_form(only).lower() in FOLDER_NAMES["train"]
        why = (f"the photos of {catalog_dir} are all of one category ({only!r}); training "
               "learns to tell categories apart, so it needs photos of at least two "
               "categories, each category's in a sub-folder named after it" + (
                   f". A {only} folder alone is not a split catalogue: put a val or test "
                   "folder beside it, with the same category folders." if lone else "."))
    else:
        why = f"no photo of {catalog_dir} is left to train on."
    raise CatalogError(without_unreadable(why, unreadable))
