"""What ``vitrine train`` writes next to the model: metrics, history (JSON and CSV), figures and
a Markdown report with the reference design's table next to ours."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np

from vitrine.display import counted
from vitrine.jsonfile import shown, write_json
from vitrine.report_metrics import (  # noqa: F401 - known here as before the split
    RETRIEVAL_LAYERS,
    classification_report,
    misclassified,
    retrieval_from_cache,
    split_metrics,
)
from vitrine.report_notes import (
    UNAUGMENTED,
    conflict_lines,
    duplicate_rule_lines,
    groups_text,
    kept_split_lines,
    left_out_lines,
    recategorised_lines,
    unreadable_lines,
    untrained_lines,
)
from vitrine.report_phases import (  # noqa: F401 - known here as before the split
    best_epoch_text,
    dropped_fine_tuning_line,
    phase_dropped,
    phase_metrics,
    phase_note,
    refit_dropped_line,
    refit_kept,
)
from vitrine.report_text import (  # noqa: F401 - known here as before the split
    LIST_START,
    MARKDOWN,
    _cell,
    _md,
    _md_line,
    _pct,
    copies_once,
    fraction_text,
    prf_cells,
    prf_table,
    score_text,
    unscored_note,
    untested_line,
)

REFERENCE = {
    "source": "reference design (MobileNetV2, Keras; 4 categories, duplicates leaked between "
              "train and test)",
    "transfer_learning": {"test_acc": 0.42},
    "fine_tuning": {"test_acc": 0.70},
}
MISCLASSIFIED_FIGURE = "misclassified.png"
MISCLASSIFIED_SHOWN = 20


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


def markdown_report(summary: dict) -> str:
    """The training report: the reference's table next to ours, figures and test details."""
    phases, test = summary["phases"], summary.get("test") or {}
    lines = [*_split_lines(summary), *_comparison_lines(summary, phases),
             *_refit_lines(summary, test), *_test_lines(summary, test),
             *_history_lines(summary, phases)]
    return "\n".join(lines)


def _split_lines(summary: dict) -> list[str]:
    """The report's title, classes and split, and the photos or groups to look at."""
    split = summary["split"]
    return [
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
    ]


def _comparison_lines(summary: dict, phases: dict) -> list[str]:
    """The table of the reference design's figures next to each phase's (and the refit's)."""
    lines = [
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
    return lines + ["", "Train metrics are on the un-augmented training photos in evaluation "
                    "mode; losses are plain cross-entropy. The reference only reported test "
                    "accuracy.", ""]


def _refit_lines(summary: dict, test: dict) -> list[str]:
    """What the refit on train + validation was, and whether the model saved is its."""
    refit = summary.get("refit")
    if refit and not refit_kept(refit):
        return [f"The model was trained again from the start on the {refit['photos']} "
                "training and validation photos, replaying each phase up to its best epoch "
                f"({refit['epochs'][0]} + {refit['epochs'][1]} epochs) with the learning "
                f"rates it had. {refit_dropped_line(summary)}"
                + (" The test figures below are the validated model's." if test else ""), ""]
    if refit:
        return [f"The saved model was trained again from the start on the {refit['photos']} "
                "training and validation photos, replaying each phase up to its best epoch "
                f"({refit['epochs'][0]} + {refit['epochs'][1]} epochs) with the learning "
                "rates it had" + ("; the test photos stayed unseen. The test figures below "
                                  "are that model's." if test else "."), ""]
    return []


def _test_lines(summary: dict, test: dict) -> list[str]:
    """The test figures (accuracy, per class, confusion matrix, mistakes, retrieval), or
    why there are none."""
    if not test:
        return ["No test figures: the test split holds no photo of a trained category "
                + ("(the test folder's were copies of photos in train or val, left out)."
                   if summary["split"].get("left_out_of_test")
                   else "(or VITRINE_TRAIN_TEST_FRACTION is 0)."), ""]
    low, high = test["acc_ci95"]
    lines = [f"**Test accuracy {_pct(test['acc'])}** ({test['correct']}/{test['n']}"
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
    return lines + _retrieval_lines(test.get("retrieval"))


def _history_lines(summary: dict, phases: dict) -> list[str]:
    """The history figure, each phase's epochs and time, and the run's seconds and cache."""
    lines = ["## History", "", "![history](history.png)", ""]
    for key in ("transfer_learning", "fine_tuning"):
        p = phases[key]
        lines.append(f"- {key.replace('_', ' ')}: {counted(p['epochs'], 'epoch')}, best epoch "
                     f"{best_epoch_text(p)}{', stopped early' if p['stopped_early'] else ''}, "
                     f"{p['seconds']:.0f} s.")
    if dropped := dropped_fine_tuning_line(summary):
        lines += ["", dropped]
    seconds = summary["seconds"]
    return lines + ["", "## Time and cache", "",
                    "Seconds: " + ", ".join(f"{k} {v}" for k, v in seconds.items()) + ".", "",
                    summary["cached"], ""]


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
