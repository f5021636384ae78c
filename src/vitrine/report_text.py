"""The report's and the terminal's text: fractions and scores as they are written (one under 1
never reading as 1), shop text as Markdown that shows as written, the per-class table and
the sentences on untested classes, copies counted once and unscored queries."""

from __future__ import annotations

import re


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


def copies_once(n: int | None) -> str:
    """", k copies counted once" after a count of test photos, when its duplicate groups
    held copies (:func:`vitrine.model_eval.one_per_group`)."""
    return f", {n} {'copy' if n == 1 else 'copies'} of them counted once" if n else ""


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


def unscored_note(count: int) -> str:
    """The sentence on the retrieval queries left out of the means."""
    return (f"Not scored ('—'): {count} " + ("query with nothing of its" if count == 1 else
                                              "queries with nothing of their")
            + " category among the photos searched.")
