"""The commands that train and measure: ``train`` (transfer learning, then fine-tuning),
``evaluate`` (classification and retrieval metrics) and ``bench`` (search and embedding
speed)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from vitrine.cli_support import (
    JsonOpt,
    ModelOpt,
    WeightsOpt,
    command_settings,
    out,
    path_of,
    print_json,
)
from vitrine.config import cpu_only_note


def train(
    catalog_dir: Annotated[Path, typer.Argument(help="Catalogue folder (sub-folder per "
                                                "category), or one split into train|treino, "
                                                "val|validacao, test|teste folders.",
                                                metavar="CATALOG_DIR",
                                                parser=path_of("CATALOG_DIR"))],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Model folder to write.",
                                          parser=path_of("--out"))],
    weights: WeightsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train on the catalogue's categories: transfer learning, then fine-tuning.

    Writes the model, its history, test metrics, figures and report.md to --out."""
    from vitrine.train import train_catalog

    settings = command_settings(weights, embeds=False)
    tempfile.gettempdir()  # torch's compile cache and matplotlib (the report's figures) need
    # one: none writable is said here (run_app), not after the photos were read and embedded
    if note := cpu_only_note(settings, "training"):
        sys.stderr.write(note + "\n")
    summary = train_catalog(catalog_dir, out_dir, settings, show_progress=not as_json)
    from vitrine.report import refit_dropped_line

    if as_json:
        print_json({k: v for k, v in summary.items() if k != "history"})
    else:
        from vitrine.train_display import training_lines

        for line in training_lines(summary):
            out.print(line)
    if dropped := refit_dropped_line(summary):  # (a collapsed refit was saved, exit 0, and
        sys.stderr.write(f"warning: {dropped}\n")  # nothing said it: helper-231)


def evaluate(
    catalog_dir: Annotated[Path, typer.Argument(help="Labelled catalogue folder.",
                                                   metavar="CATALOG_DIR",
                                                   parser=path_of("CATALOG_DIR"))],
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    k: Annotated[int, typer.Option("--k", "-k", min=1, max=100, help="The k of P@k, R@k "
                                   "and mAP@k: results each query is scored on.")] = 5,
    as_json: JsonOpt = False,
) -> None:
    """Classification and retrieval metrics (P@k, R@k, mAP@k per category).

    Of a trained model (--model) next to the pretrained backbone, or of the pretrained backbone
    alone (--weights)."""
    from vitrine.model_eval import evaluate_catalog

    settings = command_settings(weights, model)
    if settings.model and (note := cpu_only_note(settings, "a trained model's evaluation")):
        sys.stderr.write(note + "\n")
    report = evaluate_catalog(catalog_dir, settings, model_dir=settings.model, k=k,
                              show_progress=not as_json)
    if as_json:
        print_json(report)
        return
    from vitrine.train_display import evaluation_tables

    for table in evaluation_tables(report):
        out.print(table)


def bench(
    items: Annotated[int | None, typer.Option(
        "--items", min=1, help="Index N synthetic clustered vectors (index settings apply); "
        "report latency, recall@10, build time and memory.")] = None,
    images: Annotated[Path | None, typer.Option(
        "--images", help="Catalogue folder: whole-pipeline indexing throughput.",
        parser=path_of("--images"))] = None,
    weights: WeightsOpt = None,
    model: ModelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure search on synthetic vectors and embedding throughput on real photos.

    The synthetic vectors have the dimension of the model in use (--model or
    VITRINE_MODEL: a trained model's; else the backbone's)."""
    from vitrine.bench import bench_lines, run_bench

    report = run_bench(command_settings(weights, model), items=items, images=images,
                       show_progress=not as_json)
    if as_json:
        print_json(report)
        return
    for line in bench_lines(report):
        out.print(line)
