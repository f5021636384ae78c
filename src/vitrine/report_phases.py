"""The training phases and the refit in the report: a phase's figures and row title, its best
epoch, fine-tuning dropped, the refit kept or not and why."""

from __future__ import annotations

from vitrine.report_text import _pct


def phase_metrics(phase: dict) -> dict:
    """A phase's figures for the tables; none for a phase that ran no epoch (fine-tuning with
    VITRINE_TRAIN_PHASE2_EPOCHS=0 carries transfer learning's, which its row repeated), nor
    for fine-tuning dropped (:func:`phase_dropped`: its figures are transfer learning's
    weights', which its row showed as fine-tuning's)."""
    return phase["metrics"] if phase["epochs"] and not phase_dropped(phase) else {}


def phase_dropped(phase: dict) -> bool:
    """Whether a phase ran but its weights were dropped (fine-tuning none of whose epochs
    beat transfer learning's validation loss: best epoch 0)."""
    return bool(phase["epochs"]) and phase["best_epoch"] == 0


def phase_note(phase: dict) -> str:
    """What a phase's row title adds when the row has no figures of its own."""
    return (" (not run: 0 epochs)" if not phase["epochs"] else
            " (dropped: transfer learning's weights kept)" if phase_dropped(phase) else "")


def best_epoch_text(phase: dict) -> str:
    """A phase's best epoch in words: "—" when it ran none, "none" when none was kept."""
    return "—" if not phase["epochs"] else str(phase["best_epoch"]) if phase["best_epoch"] > 0 \
        else "none"


def dropped_fine_tuning_line(summary: dict) -> str | None:
    """A sentence when fine-tuning's weights were dropped: none of its epochs beat transfer
    learning's validation loss."""
    phase = summary["phases"]["fine_tuning"]
    if not phase["epochs"] or phase["best_epoch"] != 0:
        return None
    least = {name: min(e["val_loss"] for e in summary["history"] if e["phase"] == name)
             for name in ("transfer learning", "fine-tuning")}
    return (f"Fine-tuning never lowered the validation loss below transfer learning's "
            f"({least['fine-tuning']:.3f} at best vs {least['transfer learning']:.3f}): its "
            "weights were dropped and transfer learning's kept (a lower "
            "VITRINE_TRAIN_PHASE2_LR may let it help).")


def refit_kept(refit: dict) -> bool:
    """Whether the refit network is the one saved (a summary written before the refit was
    checked has no ``kept``: it was)."""
    return refit.get("kept", True)


def refit_dropped_line(summary: dict) -> str | None:
    """A sentence when the refit came out worse than the validated network on its own
    training photos and the validated network was saved in its place (helper-231), with both
    networks' figures on those photos."""
    refit = summary.get("refit")
    if not refit or refit_kept(refit):
        return None
    ours, theirs = refit["check"]["refit"], refit["check"]["validated"]

    def loss(m: dict) -> str:
        return "not a number" if m["loss"] is None else f"{m['loss']:.3f}"

    return (f"The refit on train + validation was not kept: on its {ours['n']} training and "
            f"validation photos it did worse than the validated model ({refit['why_not_kept']}"
            f"; accuracy {_pct(ours['acc'])} vs {_pct(theirs['acc'])}, loss {loss(ours)} vs "
            f"{loss(theirs)}); the validated model, trained on the training photos alone, was "
            "saved in its place (lower learning rates, VITRINE_TRAIN_PHASE1_LR and "
            "VITRINE_TRAIN_PHASE2_LR, may let the refit help).")
