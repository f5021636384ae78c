"""Whether the refit (:func:`vitrine.train_fit.refit`: the network trained again on the
training and validation photos) is kept: its figures on those photos against the validated
network's, and the bounds past which it is not."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from vitrine.train_data import FeatureCache

REFIT_MAX_MORE_WRONG = 0.05
"""The refit is not kept when, on its own training photos (train + validation), it gets
wrong more than this fraction of them (and more than :data:`REFIT_MIN_MORE_WRONG` photos)
beyond what the validated network gets wrong. The validated network never trained on the
validation photos and the refit did, so a healthy refit does as well or better there: every
one measured did, with a lower loss (the demo catalogue: 863 of 863 right vs 859; 15 tiny
runs of 15 to 30 photos, augmented, class-weighted, smoothed, a hidden layer), where the
collapsed refits of helper-231 got 7 and 10 more of 22 wrong."""
REFIT_MIN_MORE_WRONG = 2
"""More photos wrong than this as well (beside :data:`REFIT_MAX_MORE_WRONG`): on a catalogue
of 20 photos 5 % is one photo, which a healthy refit may get wrong by chance."""
REFIT_MAX_LOSS_RISE = 0.5
"""The refit is not kept either when its loss (plain cross-entropy, nats) on those photos is
higher than the validated network's by more than this and more than doubled: as often right,
but far more confidently wrong (the probabilities are part of the embedding)."""


def refit_check_metrics(outputs: dict, caches: dict[str, FeatureCache]) -> dict:
    """Plain cross-entropy and accuracy of the clean views of the training and validation
    photos together: the photos the refit trains on, on which it is compared with the
    validated network (so that nothing of the test split chooses the model saved). A loss
    that is not a number is None (JSON has none)."""
    logits = torch.cat([outputs[k]["logits"] for k in ("train", "val")]).float()
    labels = torch.cat([caches[k].labels for k in ("train", "val")])
    loss = float(nn.functional.cross_entropy(logits, labels))
    correct = int((logits.argmax(1) == labels).sum())
    return {"loss": round(loss, 4) if np.isfinite(loss) else None,
            "acc": round(correct / max(len(labels), 1), 4), "correct": correct,
            "n": len(labels)}


def refit_worse(validated: dict, refitted: dict, record: Sequence[dict] = ()) -> str | None:
    """Why the refit network is not to replace the validated one (figures of
    :func:`refit_check_metrics`, ``record`` the refit's epochs), in words; None when it is
    kept. The validated network is kept only where it is itself usable (a finite loss)."""
    if validated["loss"] is None:
        return None  # nothing better to keep (check_converged refuses a run neither can save)
    bad = next((e for e in record if not np.isfinite(e["loss"])), None)
    if bad is not None or refitted["loss"] is None:
        return ("a loss that stopped being a number" + (
            f" ({bad['phase']} epoch {bad['epoch']})" if bad is not None else ""))
    more_wrong = validated["correct"] - refitted["correct"]
    if more_wrong > max(REFIT_MIN_MORE_WRONG, REFIT_MAX_MORE_WRONG * refitted["n"]):
        return f"{more_wrong} more photos wrong"
    if refitted["loss"] > max(2 * validated["loss"], validated["loss"] + REFIT_MAX_LOSS_RISE):
        return "a loss more than doubled"
    return None
