"""Terminal output of ``vitrine train`` and ``vitrine evaluate`` (rich tables)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from vitrine.display import percent, plain
from vitrine.report import (
    UNAUGMENTED,
    best_epoch_text,
    conflict_lines,
    copies_once,
    dropped_fine_tuning_line,
    fraction_text,
    groups_text,
    kept_split_lines,
    left_out_lines,
    phase_metrics,
    prf_cells,
    recategorised_lines,
    refit_kept,
    unreadable_lines,
    unscored_note,
    untested_line,
    untrained_lines,
)

MISCLASSIFIED_LISTED = 10


def training_lines(summary: dict) -> list:
    """What ``vitrine train`` prints: split, per-phase metrics, test accuracy, outputs. Lines
    are :class:`Text` (literal: product ids, categories and paths may hold ``[brackets]``)."""
    split, test = summary["split"], summary.get("test") or {}
    lines: list = [
        f"Split ({split['source']}): train {split['train']}, validation {split['val']}, test "
        f"{split['test']}; {groups_text(split)}.", *kept_split_lines(split, "  ")]
    for group in split["crossing_groups"]:
        lines.append("  duplicates across splits: " + "  ≈  ".join(group))
    lines += left_out_lines(split, "  ")
    lines += [line for line in
              [*conflict_lines(split.get("conflicting_groups") or [], "  "),
               *unreadable_lines(summary.get("unreadable_photos") or [], "  "),
               *unreadable_lines(summary.get("unaugmented_photos") or [], "  ", **UNAUGMENTED),
               *unreadable_lines(summary.get("uncategorised_photos") or [], "  ",
                                 why="have no category"),
               *unreadable_lines(summary.get("unsplit_photos") or [], "  ",
                                 why="are in no split folder"),
               *untrained_lines(summary), *recategorised_lines(summary)] if line]
    table = Table(title="Training", title_justify="left")
    for col in ("phase", "epochs", "best", "train acc", "val acc", "test acc", "test loss",
                "seconds"):
        table.add_column(col)
    for name, phase in summary["phases"].items():
        m = phase_metrics(phase)
        table.add_row(name.replace("_", " "), str(phase["epochs"]), best_epoch_text(phase),
                      *(_figure(m.get(s, {}).get("acc"), fraction=True)
                        for s in ("train", "val", "test")),
                      _figure(m.get("test", {}).get("loss")),
                      f"{phase['seconds']:.0f}")
    lines.append(table)
    if dropped := dropped_fine_tuning_line(summary):
        lines.append(dropped)
    refit = summary.get("refit")
    if refit:
        lines.append(f"Trained again on train + validation ({refit['photos']} photos, "
                     f"{refit['epochs'][0]} + {refit['epochs'][1]} epochs, "
                     f"{refit['seconds']:.0f} s)"
                     + (("; the test figures are that model's." if test else ".")
                        if refit_kept(refit) else
                        ", not kept: it did worse on those photos than the validated model, "
                        "saved in its place (the warning on stderr and report.md give both "
                        "figures)" + ("; the test figures are the validated model's."
                                     if test else ".")))
    if test:
        low, high = test["acc_ci95"]
        lines.append(f"Test accuracy {fraction_text(test['acc'])} (95 % CI "
                     f"{fraction_text(low)}–{fraction_text(high)}, "
                     f"n={test['n']}{copies_once(test.get('copies_counted_once'))}), macro F1 "
                     f"{fraction_text(test['macro_f1'])}.")
        wrong = test.get("misclassified") or []
        if wrong:
            top = wrong[0]
            lines.append(f"{len(wrong)} test photo{'s' if len(wrong) != 1 else ''} "
                         f"misclassified (report.md lists them); the most confident: "
                         f"{top['product_id']} labelled {top['labelled']}, model says "
                         f"{top['predicted']} ({percent(top['probability'])}).")
    if summary["cache_mib"]["files"]:
        lines.append(f"The frozen-layer cache went to files ({summary['cache_mib']['files']:,.0f} "
                     "MiB, removed at the end): it was larger than VITRINE_TRAIN_CACHE_MEMORY_MB "
                     "(default: half the available memory) allows in memory.")
    lines.append(f"Model, history, figures and report.md written to {summary['model_dir']} "
                 f"in {summary['seconds']['total']:.0f} s.")
    return [line if isinstance(line, Table) else plain(line) for line in lines]


def evaluation_tables(report: dict) -> list:
    """What ``vitrine evaluate`` prints: retrieval per category (pretrained vs trained side by
    side) and, for a trained model, classification metrics."""
    k = report["k"]
    models = list(report["retrieval"])
    groups = report.get("duplicate_groups")
    merged = report.get("copies_among_queries")
    copies = (f" {groups} duplicate group{'' if groups == 1 else 's'}: a query's own copies "
              "are neither results nor relevant" + (
                  f"; each group queries once ({merged} "
                  + ("copy does" if merged == 1 else "copies do") + " not query)"
                  if merged else "") + ".") if groups else ""
    unsplit = report.get("unsplit_photos") or []
    left = (f" {len(unsplit)} photo(s) in none of the split folders left out: "
            + ", ".join(unsplit[:3]) + (" …" if len(unsplit) > 3 else "") + ".") if unsplit else ""
    queries = report["queries"]
    out: list = [plain(f"{report['protocol']} ({queries} "
                       f"{'query' if queries == 1 else 'queries'}, "
                       f"{report['index']} indexed).{copies}{left}")]
    out += [plain(line) for line in unreadable_lines(
        report.get("unreadable_photos") or [], "  ", of="the evaluation", listed="--json")
        if line]
    out += [plain(line) for line in unreadable_lines(
        report.get("uncategorised_photos") or [], "  ", why="have no category",
        of="the evaluation", listed="--json") if line]
    table = Table(title=f"Retrieval (category P@{k} / R@{k} / mAP@{k})", title_justify="left")
    table.add_column("category")
    for name in models:
        table.add_column(name)
    categories = sorted(report["retrieval"][models[0]]["per_category"])
    for cat in [None, *categories]:
        cells = []
        for name in models:
            m = report["retrieval"][name]
            v = m if cat is None else m["per_category"][cat]
            cells.append(" / ".join(fraction_text(v[key])
                                    for key in ("precision", "recall", "map")))
        table.add_row(plain(cat) if cat is not None else Text("all", style="bold"), *cells)
    out.append(table)
    unscored = report["retrieval"][models[0]].get("without_relevant")
    if unscored:
        out.append(plain(unscored_note(unscored)))
    cls = report.get("classification")
    if cls and cls.get("unknown_categories"):
        out.append(plain(f"Not classified: {cls['unscored_photos']} photos of categories the "
                         "model was not trained on (" + ", ".join(cls["unknown_categories"])
                         + ")."))
    if cls and cls.get("note"):
        out.append(plain(f"Classification: {cls['note']}."))
    elif cls:
        low, high = cls["acc_ci95"]
        out.append(f"Classification accuracy {fraction_text(cls['acc'])} (95 % CI "
                   f"{fraction_text(low)}–{fraction_text(high)}, "
                   f"n={cls['n']}{copies_once(merged)}), macro F1 "
                   f"{fraction_text(cls['macro_f1'])}.")
        prf = Table(title="Per class", title_justify="left")
        for col in ("class", "precision", "recall", "F1", "support"):
            prf.add_column(col)
        for name, v in cls["per_class"].items():
            prf.add_row(plain(name), *prf_cells(v))
        out.append(prf)
        untested = untested_line(cls["per_class"], "no photo of theirs among those evaluated")
        if untested:
            out.append(plain(untested))
        wrong = cls.get("misclassified") or []
        if wrong:
            shown = wrong[:MISCLASSIFIED_LISTED]
            more = f", the {len(shown)} most confident" if len(wrong) > len(shown) else ""
            plural = "s" if len(wrong) != 1 else ""
            table = Table(title=f"Misclassified: {len(wrong)} photo{plural}{more} (--json "
                                "lists all)", title_justify="left")
            table.add_column("product", ratio=1)  # wraps; the categories only when longer
            for col, key in (("label", "labelled"), ("model says", "predicted")):  # than
                longest = max(len(col), *(len(r[key]) for r in shown))  # NAME_WIDTH: kept
                whole = longest <= NAME_WIDTH  # whole, names of 60 squeezed the product and
                table.add_column(col, no_wrap=whole, min_width=longest if whole else None,
                                 overflow="fold")  # its probability to nothing at 80 columns
            table.add_column("prob.", justify="right", no_wrap=True)
            for r in shown:
                table.add_row(plain(f"{r['product_id']} {r['name']}".strip()),
                              plain(r["labelled"]), plain(r["predicted"]),
                              percent(r["probability"]))
            out.append(table)
    return out


NAME_WIDTH = 25
"""The width a category keeps whole in the misclassified table (the demo's longest, at 80
columns: 12 for the product, 5 for the probability, 13 for the borders)."""


def _figure(value: float | None, fraction: bool = False) -> str:
    """A table cell: three decimals, or "—" for a figure there is none of (no test split),
    as report.md writes it (it printed "nan"); a ``fraction`` under 1 never reads 1.000."""
    if value is None or value != value:
        return "—"
    return fraction_text(value) if fraction else f"{value:.3f}"
