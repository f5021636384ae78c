"""What ``vitrine train`` writes next to the model: metrics, history (JSON and CSV), figures and
a Markdown report with the reference design's table next to ours."""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vitrine.catalog import category_twins_note, recategorised_note
from vitrine.config import Settings
from vitrine.display import counted
from vitrine.evaluate import (
    accuracy,
    confusion_matrix,
    macro_f1,
    per_class_prf,
    wilson_interval,
)
from vitrine.jsonfile import shown, write_json

REFERENCE = {
    "source": "reference design (MobileNetV2, Keras; 4 categories, duplicates leaked between "
              "train and test)",
    "transfer_learning": {"test_acc": 0.42},
    "fine_tuning": {"test_acc": 0.70},
}
MISCLASSIFIED_FIGURE = "misclassified.png"
MISCLASSIFIED_SHOWN = 20
RETRIEVAL_LAYERS = ("imagenet", "pooled", "hidden", "imagenet+hidden", "pooled+hidden",
                    "imagenet+probs", "pooled+probs", "hidden+probs")


def split_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """Cross-entropy loss and accuracy of a split."""
    loss = torch.nn.functional.cross_entropy(logits.float(), labels)
    return {"loss": round(float(loss), 4),
            "acc": round(float((logits.argmax(1) == labels).float().mean()), 4),
            "n": len(labels)}


def classification_report(y_true: Sequence[str], y_pred: Sequence[str],
                          classes: Sequence[str]) -> dict:
    """Accuracy with its 95 % Wilson interval, per-class precision/recall/F1, confusion."""
    matrix = confusion_matrix(y_true, y_pred, classes)
    correct = int(np.trace(matrix))
    prf = per_class_prf(matrix, classes)
    low, high = wilson_interval(correct, len(y_true))
    return {"n": len(y_true), "correct": correct, "acc": accuracy(y_true, y_pred),
            "acc_ci95": [low, high], "macro_f1": macro_f1(prf), "per_class": prf,
            "classes": list(classes), "confusion": matrix.tolist()}


def prf_cells(v: dict) -> list[str]:
    """Precision, recall, F1 and support of one class as table cells; a class with no test
    photo has no recall or F1, one no photo was predicted as no precision ("—", not a score
    of 0)."""
    untested = v["support"] == 0
    return ["—" if v.get("predicted") == 0 else fraction_text(v["precision"]),
            "—" if untested else fraction_text(v["recall"]),
            "—" if untested else fraction_text(v["f1"]), str(v["support"])]


def prf_table(per_class: dict) -> list[str]:
    """The per-class table of the report; its classes numbered as the confusion matrix numbers
    them when there are too many to name there (:func:`vitrine.plots.numbers_classes`)."""
    from vitrine.plots import numbers_classes

    number = numbers_classes(len(per_class))
    lines = ["| # " * number + "| class | precision | recall | F1 | support |",
             "|---" * number + "|---|---|---|---|---|"]
    for i, (name, v) in enumerate(per_class.items(), start=1):
        lines.append(f"| {i} " * number + f"| {_cell(name)} | " + " | ".join(prf_cells(v))
                     + " |")
    return lines


def untested_line(per_class: dict,
                  why: str = "no test photo; too few different photos to spare one, or only "
                             "copies of other categories' photos, which train") -> str | None:
    """A sentence naming the classes without a test photo (``why``), or None."""
    names = [name for name, v in per_class.items() if v["support"] == 0]
    if not names:
        return None
    return f"Not tested ({why}): {', '.join(names)}; macro F1 leaves them out."


def misclassified(products: Sequence, labels: Sequence[int], probs: np.ndarray,
                  classes: Sequence[str]) -> list[dict]:
    """The photos the model puts in another category than their label, most confident
    first: a wrong label or an ambiguous photo, worth a look either way."""
    rows = []
    for product, label, row in zip(products, labels, probs, strict=True):
        guess = int(row.argmax())
        if guess != label:
            rows.append({"product_id": product.product_id, "name": product.name,
                         "image": str(product.image), "labelled": classes[label],
                         "predicted": classes[guess], "probability": _below_one(row[guess]),
                         "probability_of_label": _below_one(row[label])})
    return sorted(rows, key=lambda r: (-r["probability"], r["product_id"]))


def _below_one(p: float) -> float:
    """A probability to four decimals that stays under 1 when it is (0.99996 was 1.0: a
    mistake every table and figure then showed as certain)."""
    return _under_one(p, 4)


def retrieval_from_cache(outputs: dict, caches: dict, classes: list[str],
                         settings: Settings, queries: torch.Tensor, k: int = 5,
                         zeros=torch.zeros) -> dict:
    """Category retrieval of test photos (the rows ``queries`` of them) against
    train + validation photos, per layer; the vectors of train + validation in one tensor
    from ``zeros`` (the training cache's storage)."""
    from vitrine.model_eval import retrieval_metrics
    from vitrine.trained_net import combine_rows, layer_parts

    index_labels = [classes[i] for i in
                    torch.cat([caches["train"].labels, caches["val"].labels]).tolist()]
    query_labels = [classes[i] for i in caches["test"].labels[queries].tolist()]
    out = {}
    w = settings.train_embedding_weight
    for layer in RETRIEVAL_LAYERS:
        parts, weights = layer_parts(layer, w)
        index = combine_rows([outputs["train"], outputs["val"]], parts, weights, zeros=zeros)
        asked = combine_rows([outputs["test"]], parts, weights)[queries]
        out[layer] = retrieval_metrics(index.numpy(), index_labels, asked.numpy(),
                                       query_labels, k)
        del index
    return {"k": k, "protocol": "test photos query train+validation photos",
            "chosen": settings.train_embedding, "weight": w, "layers": out}


def write_outputs(out_dir: Path, summary: dict, started: float | None = None) -> None:
    """history.json/.csv, history.png, metrics.json, confusion_matrix.png,
    misclassified.png (when the model got test photos wrong), report.md, summary.json; the
    run's ``seconds`` get their ``total`` since ``started`` (``time.perf_counter``) once the
    figures are drawn, which the report and summary then say."""
    from vitrine.plots import plot_confusion_matrix, plot_history, plot_misclassified

    history = summary["history"]
    write_json(out_dir / "history.json", history)
    if history:
        with open(out_dir / "history.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)
    config = summary.get("settings", {})
    shaped = [name for name, on in (("class-weighted", config.get("class_weight_power")),
                                    ("label-smoothed", config.get("label_smoothing"))) if on]
    plot_history(history, out_dir / "history.png",
                 train_loss=f"train ({', '.join(shaped)})" if shaped else "train",
                 refit=bool(summary.get("refit")) and refit_kept(summary["refit"]))
    test = summary.get("test") or {}
    metrics = {"phases": {k: v["metrics"] for k, v in summary["phases"].items()},
               "test": test}
    write_json(out_dir / "metrics.json", metrics)
    if test:
        plot_confusion_matrix(np.asarray(test["confusion"]), test["classes"],
                              out_dir / "confusion_matrix.png")
    figure = out_dir / MISCLASSIFIED_FIGURE
    figure.unlink(missing_ok=True)  # an earlier run's mistakes must not stay behind
    if test.get("misclassified"):
        plot_misclassified(test["misclassified"], figure, MISCLASSIFIED_SHOWN)
    if started is not None:
        summary["seconds"]["total"] = round(time.perf_counter() - started, 1)
    (out_dir / "report.md").write_text(shown(markdown_report(summary)), encoding="utf-8")
    write_json(out_dir / "summary.json", summary)


def _pct(x: float | None) -> str:
    """A fraction in percent with one decimal; one under 1 never reads "100.0%" (at most
    99.9 %, as :func:`vitrine.display.percent` shows it: a wrong guess of 0.9996 read as
    certain in report.md while misclassified.png said 99.9 %)."""
    return "—" if x is None else f"{100 * _under_one(x, 3):.1f}%"


def _under_one(p: float, digits: int) -> float:
    """``p`` rounded to ``digits`` decimals, but under 1 where it is."""
    shown = round(float(p), digits)
    return min(shown, 1 - 10 ** -digits) if p < 1 else shown


def score_text(x: float | None) -> str:
    """A score to three decimals; "—" for one there is none of."""
    return "—" if x is None else f"{x:.3f}"


def fraction_text(x: float | None) -> str:
    """A fraction (accuracy, its interval, precision, recall, F1, P@k…) to three decimals, one
    under 1 never reading "1.000" (2999 of 3000 right read 1.000 in the terminal and the
    tables, 99.9 % in report.md's accuracy line); "—" for one there is none of."""
    return "—" if x is None else f"{_under_one(x, 3):.3f}"


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
    which is in the train folder, kept out of every split."""
    lines = []
    for key, folder, earlier in (("left_out_of_test", "test", "train or val"),
                                 ("left_out_of_val", "val", "train")):
        if left_out := split.get(key):
            names = ", ".join(left_out[:named]) + (
                f" and {len(left_out) - named} more" if len(left_out) > named else "")
            lines.append(f"{bullet}{len(left_out)} photo(s) of the {folder} folder left out "
                         f"(a copy of each is in the {earlier} folder, so the model saw it): "
                         f"{names}.")
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


def markdown_report(summary: dict) -> str:
    """The training report: the reference's table next to ours, figures and test details."""
    phases, test = summary["phases"], summary.get("test") or {}
    split = summary["split"]
    lines = [
        "# Training report", "",
        f"Classes: {', '.join(map(_md, summary['classes']))}.  ",
        f"Split ({split['source']}): train {split['train']}, validation {split['val']}, "
        f"test {split['test']} photos; {groups_text(split)}.", "",
        *duplicate_rule_lines(summary.get("duplicates")),
        *map(_md_line, [  # (the shop's names and paths in them)
            *kept_split_lines(split, "- "),
            *[f"- duplicates across splits: {'  ≈  '.join(group)}"
              for group in split["crossing_groups"]],
            *left_out_lines(split, "- "),
            *([""] if split["crossing_groups"] else []),
            *conflict_lines(split.get("conflicting_groups") or [], "- "),
            *unreadable_lines(summary.get("unreadable_photos") or [], "- "),
            *unreadable_lines(summary.get("unaugmented_photos") or [], "- ", **UNAUGMENTED),
            *unreadable_lines(summary.get("uncategorised_photos") or [], "- ",
                              why="have no category"),
            *unreadable_lines(summary.get("unsplit_photos") or [], "- ",
                              why="are in no split folder"),
            *untrained_lines(summary),
            *recategorised_lines(summary)]),
        "## Reference design vs Vitrine", "",
        "| model | phase | train acc | train loss | test acc | test loss |",
        "|---|---|---|---|---|---|",
    ]
    for key, title in (("transfer_learning", "transfer learning"),
                       ("fine_tuning", "fine-tuning")):
        ref = REFERENCE[key]
        lines.append(f"| reference (4 categories) | {title} | — | — | "
                     f"{_pct(ref['test_acc'])} | — |")
    rows = [(phase_metrics(phases[key]), title + phase_note(phases[key]))
            for key, title in (("transfer_learning", "transfer learning"),
                               ("fine_tuning", "fine-tuning"))]
    refit = summary.get("refit")
    if refit:
        rows.append((refit["metrics"], "both again on train + validation"
                     + ("" if refit_kept(refit) else " (not kept)")))
    for m, title in rows:
        tr, te = m.get("train", {}), m.get("test", {})
        lines.append(f"| Vitrine ({len(summary['classes'])} categories) | {title} | "
                     f"{_pct(tr.get('acc'))} | {score_text(tr.get('loss'))} | "
                     f"{_pct(te.get('acc'))} | {score_text(te.get('loss'))} |")
    lines += ["", "Train metrics are on the un-augmented training photos in evaluation mode; "
              "losses are plain cross-entropy. The reference only reported test accuracy.", ""]
    if refit and not refit_kept(refit):
        lines += [f"The model was trained again from the start on the {refit['photos']} "
                  "training and validation photos, replaying each phase up to its best epoch "
                  f"({refit['epochs'][0]} + {refit['epochs'][1]} epochs) with the learning "
                  f"rates it had. {refit_dropped_line(summary)}"
                  + (" The test figures below are the validated model's." if test else ""), ""]
    elif refit:
        lines += [f"The saved model was trained again from the start on the {refit['photos']} "
                  "training and validation photos, replaying each phase up to its best epoch "
                  f"({refit['epochs'][0]} + {refit['epochs'][1]} epochs) with the learning "
                  "rates it had" + ("; the test photos stayed unseen. The test figures below "
                                    "are that model's." if test else "."), ""]
    if not test:
        lines += ["No test figures: the test split holds no photo of a trained category "
                  + ("(the test folder's were copies of photos in train or val, left out)."
                     if summary["split"].get("left_out_of_test")
                     else "(or VITRINE_TRAIN_TEST_FRACTION is 0)."), ""]
    if test:
        low, high = test["acc_ci95"]
        lines += [f"**Test accuracy {_pct(test['acc'])}** ({test['correct']}/{test['n']}"
                  f"{copies_once(test.get('copies_counted_once'))}; 95 % "
                  f"Wilson interval {_pct(low)}–{_pct(high)}), macro F1 "
                  f"{fraction_text(test['macro_f1'])}, loss {test['loss']:.3f}.", "",
                  *prf_table(test["per_class"])]
        split = summary.get("split", {})
        untested = untested_line(test["per_class"], *(
            ["the test folder holds none of their photos" + (
                ", or only copies of photos in train or val (left out)" if split.get(
                    "left_out_of_test") else "")]
            if split.get("source") == "folders" else []))
        lines += ["", *([_md_line(untested), ""] if untested else []),
                  "![confusion matrix](confusion_matrix.png)", ""]
        lines += _misclassified_lines(test.get("misclassified"))
        lines += _retrieval_lines(test.get("retrieval"))
    lines += ["## History", "", "![history](history.png)", ""]
    for key in ("transfer_learning", "fine_tuning"):
        p = phases[key]
        lines.append(f"- {key.replace('_', ' ')}: {counted(p['epochs'], 'epoch')}, best epoch "
                     f"{best_epoch_text(p)}{', stopped early' if p['stopped_early'] else ''}, "
                     f"{p['seconds']:.0f} s.")
    if dropped := dropped_fine_tuning_line(summary):
        lines += ["", dropped]
    seconds = summary["seconds"]
    lines += ["", "## Time and cache", "",
              "Seconds: " + ", ".join(f"{k} {v}" for k, v in seconds.items()) + ".", "",
              summary["cached"], ""]
    return "\n".join(lines)


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


def copies_once(n: int | None) -> str:
    """", k copies counted once" after a count of test photos, when its duplicate groups
    held copies (:func:`vitrine.model_eval.one_per_group`)."""
    return f", {n} {'copy' if n == 1 else 'copies'} of them counted once" if n else ""


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


MARKDOWN = re.compile(r"([\\`*\[\]<>#~&]|(?<!\w)_|_(?!\w))")
"""What would make shop text Markdown (a link, an image fetched from another site, HTML,
code, emphasis, strike-through, an entity, a heading) rather than show as written; an
underscore inside a word (x_tenis_masculino) is text already."""
LIST_START = re.compile(r"^(\d+)([.)])|^([+])")
"""A line's start that would make it a list item (``1. a.jpg`` lost its ``1.``)."""


def _md(text: str) -> str:
    """Shop text (a category, a path) as Markdown that shows as written, on its line: a
    supplier's category could open a section or fetch an image from elsewhere."""
    return MARKDOWN.sub(r"\\\1", " ".join(str(text).splitlines()))


def _md_line(line: str) -> str:
    """A line of shop text (``_md``), its list bullet and indent kept."""
    bullet = re.match(r"[ -]*", line).group()
    return bullet + LIST_START.sub(lambda m: f"{m[1]}\\{m[2]}" if m[1] else f"\\{m[3]}",
                                   _md(line[len(bullet):]), count=1)


def _cell(text: str) -> str:
    """Shop text as one Markdown table cell (no line breaks, no column separators)."""
    return " ".join(_md(text).split()).replace("|", "\\|")  # (escaped: the name kept)


def _misclassified_lines(rows: list[dict] | None) -> list[str]:
    if rows is None:
        return []
    if not rows:
        return ["Every test photo was classified in its labelled category.", ""]
    shown = rows[:MISCLASSIFIED_SHOWN]
    more = f", the {len(shown)} most confident shown" if len(rows) > len(shown) else ""
    lines = ["### Misclassified test photos", "",
             f"{len(rows)} test photo{'s' if len(rows) != 1 else ''} put in another category "
             f"than their label{more}. A confident mistake is often a wrong label or an "
             "ambiguous photo: check these first.", "",
             "| product | name | label | model says | probability | of the label |",
             "|---|---|---|---|---|---|"]
    for r in shown:
        cells = [_cell(r[k]) for k in ("product_id", "name", "labelled", "predicted")]
        lines.append("| " + " | ".join(cells) + f" | {_pct(r['probability'])} | "
                     f"{_pct(r['probability_of_label'])} |")
    return lines + ["", f"![misclassified test photos]({MISCLASSIFIED_FIGURE})", ""]


def _retrieval_lines(retrieval: dict | None) -> list[str]:
    if not retrieval:
        return []
    k, w = retrieval["k"], retrieval["weight"]
    lines = [f"### Retrieval on the test split ({retrieval['protocol']})", "",
             f"Embedding layer in use: `{retrieval['chosen']}`. Combined layers `a+b` weigh "
             f"cosine as {w:g}·a + {1 - w:g}·b.", "",
             f"| layer | P@{k} | R@{k} | mAP@{k} |", "|---|---|---|---|"]
    for layer, m in retrieval["layers"].items():
        lines.append(f"| {layer}{' (pretrained)' if layer == 'imagenet' else ''} | "
                     f"{fraction_text(m['precision'])} | {fraction_text(m['recall'])} | "
                     f"{fraction_text(m['map'])} |")
    unscored = next(iter(retrieval["layers"].values()), {}).get("without_relevant")
    if unscored:
        lines += ["", unscored_note(unscored)]
    return lines + [""]


def unscored_note(count: int) -> str:
    """The sentence on the retrieval queries left out of the means."""
    return (f"Not scored ('—'): {count} queries with nothing of their category among the "
            "photos searched.")
