"""The refit (both phases again on train + validation, replayed without validation) is checked
against the validated network on its own training photos: one that comes out worse is not
saved, the validated network is, and the run says so (helper-231)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

TINY = {"VITRINE_TRAIN_PHASE1_EPOCHS": "2", "VITRINE_TRAIN_PHASE2_EPOCHS": "1",
        "VITRINE_TRAIN_VAL_FRACTION": "0.2", "VITRINE_TRAIN_TEST_FRACTION": "0.2"}
CATEGORIES = ("relogio_feminino", "x_bolsa_feminina", "x_tenis_masculino")


@pytest.fixture(scope="module")
def catalog(demo_catalog, tmp_path_factory) -> Path:
    """6 photos of each of 3 demo categories, in category folders."""
    root = tmp_path_factory.mktemp("refit") / "catalog"
    for category in CATEGORIES:
        (root / category).mkdir(parents=True)
        for photo in sorted((demo_catalog / category).glob("*.jpg"))[:6]:
            shutil.copyfile(photo, root / category / photo.name)
    return root


def train(catalog: Path, out: Path, env: dict):
    """``vitrine train --json`` in-process; (the summary, what it said on stderr)."""
    from typer.testing import CliRunner

    from vitrine.cli import app

    result = CliRunner().invoke(app, ["train", str(catalog), "--out", str(out), "--json"],
                                env=env)
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return json.loads(result.stdout), result.stderr


def test_a_collapsed_refit_is_not_saved_and_the_run_says_so(catalog, weights_path, tmp_path,
                                                             monkeypatch):
    """A refit that collapsed (its head scrambled after the replay, as a too-high learning
    rate left it: 5.9 % of its training photos right where the validated model had 76.5 %)
    replaced the validated model, and the one in --out, exit 0 without a word. It is now
    dropped: the model saved is the validated one, bit for bit (fine-tuning's best
    checkpoint), with its test figures; stderr, report.md, model.json and the terminal say so
    with both figures. An ordinary refit is still the one saved."""
    from rich.console import Console

    from vitrine import train_fit
    from vitrine.train_display import training_lines

    env = {"VITRINE_WEIGHTS": str(weights_path), **TINY}
    real = train_fit.refit

    def collapsed(net, *args, **kwargs):
        epochs = real(net, *args, **kwargs)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in net.head.parameters():
                p.copy_(10 * torch.randn(p.shape, generator=gen))
        return epochs

    monkeypatch.setattr(train_fit, "refit", collapsed)
    out = tmp_path / "collapsed"
    summary, said = train(catalog, out, env)
    # the weights saved are the validated network's: fine-tuning's best checkpoint, and the
    # test figures are those fine-tuning had
    fine_tuning = summary["phases"]["fine_tuning"]
    assert fine_tuning["best_epoch"] == 1  # (kept: its checkpoint is the validated network)
    best = torch.load(out / "checkpoints" / "phase2-best.pt", weights_only=True)
    saved = torch.load(out / "model.pt", weights_only=True)
    assert best and all(torch.equal(saved[k], v) for k, v in best.items())
    assert summary["test"]["acc"] == pytest.approx(fine_tuning["metrics"]["test"]["acc"],
                                                   abs=1e-4)
    assert summary["test"]["loss"] == pytest.approx(fine_tuning["metrics"]["test"]["loss"],
                                                    abs=1e-4)
    refit = summary["refit"]
    assert not refit["kept"] and "more photos wrong" in refit["why_not_kept"]
    ours, theirs = refit["check"]["refit"], refit["check"]["validated"]
    assert ours["n"] == theirs["n"] == refit["photos"]  # train + validation, no test photo
    assert ours["acc"] < theirs["acc"] - 0.2
    warning = " ".join(said.split())
    assert warning.startswith("warning: The refit on train + validation was not kept")
    figures = f"accuracy {100 * ours['acc']:.1f}% vs {100 * theirs['acc']:.1f}%"
    assert figures in warning
    report = " ".join((out / "report.md").read_text().split())
    assert "was not kept" in report and figures in report
    assert "both again on train + validation (not kept)" in report
    assert "The test figures below are the validated model's." in report
    console = Console(record=True, width=200)
    for line in training_lines(json.loads((out / "summary.json").read_text())):
        console.print(line)
    assert ("not kept: it did worse on those photos than the validated model, saved in its "
            "place") in console.export_text()
    config = json.loads((out / "model.json").read_text())
    assert config["refit"]["kept"] is False and config["refit"]["check"] == refit["check"]
    from vitrine.trained import load_model

    load_model(out)  # (a model folder like any other)

    monkeypatch.undo()  # an ordinary refit: kept, and saved
    ordinary, said = train(catalog, tmp_path / "ordinary", env)
    assert ordinary["refit"]["kept"] and ordinary["refit"]["why_not_kept"] is None
    best = torch.load(tmp_path / "ordinary" / "checkpoints" / "phase2-best.pt",
                      weights_only=True)
    saved = torch.load(tmp_path / "ordinary" / "model.pt", weights_only=True)
    assert not all(torch.equal(saved[k], v) for k, v in best.items())  # the refit's weights
    assert ordinary["refit"]["check"]["validated"] == theirs  # (the same validated network)
    assert ordinary["test"]["acc"] == ordinary["refit"]["metrics"]["test"]["acc"]
    assert "warning" not in said
    assert "not kept" not in (tmp_path / "ordinary" / "report.md").read_text()


def test_the_refit_rule_drops_only_a_clearly_worse_or_broken_refit(tmp_path):
    """Within a photo or two (tiny catalogues: one photo is 5 %) or a loss up by less than
    0.5, the refit is kept; more photos wrong, a loss more than doubled, or one that stopped
    being a number, the validated network is; and a run neither of whose networks has a
    finite loss is refused, leaving --out as it was."""
    from vitrine.errors import TrainingError
    from vitrine.train import check_converged
    from vitrine.train_fit import refit_worse

    def m(correct: int, loss: float | None, n: int = 22) -> dict:
        return {"loss": loss, "acc": round(correct / n, 4), "correct": correct, "n": n}

    validated = m(20, 0.30)
    assert refit_worse(validated, m(22, 0.10)) is None
    assert refit_worse(validated, m(18, 0.35)) is None  # 2 photos of 22: kept
    assert refit_worse(validated, m(17, 0.35)) == "3 more photos wrong"
    assert refit_worse(m(900, 0.2, 1000), m(860, 0.3, 1000)) is None  # 4 %
    assert refit_worse(m(900, 0.2, 1000), m(849, 0.3, 1000)) == "51 more photos wrong"
    assert refit_worse(m(20, 0.05), m(20, 0.50)) is None  # (10 times, but only 0.45 higher)
    assert refit_worse(validated, m(20, 0.81)) == "a loss more than doubled"
    assert refit_worse(m(20, 1.2), m(20, 2.3)) is None  # (1.1 higher, not doubled)
    assert refit_worse(validated, m(20, None)).startswith("a loss that stopped being a number")
    epochs = [{"phase": "refit: fine-tuning", "epoch": 2, "loss": float("nan")}]
    assert refit_worse(validated, m(20, 0.3), epochs) == ("a loss that stopped being a number "
                                                         "(refit: fine-tuning epoch 2)")
    assert refit_worse(m(20, None), m(20, 0.3)) is None  # nothing better to keep

    def record(kept: bool, refit: dict) -> dict:
        return {"kept": kept, "check": {"validated": validated, "refit": refit}}

    check_converged([], tmp_path, record(False, m(0, None)))  # the validated one is saved
    check_converged([], tmp_path, record(True, m(20, 0.3)))
    with pytest.raises(TrainingError, match="is not a number.*left as it was"):
        check_converged([], tmp_path, {"kept": True, "check": {"validated": m(0, None),
                                                               "refit": m(0, None)}})


def test_the_demo_says_a_refit_not_kept(tmp_path, monkeypatch):
    """`vitrine demo` trains through ensure_model, which keeps no summary: a refit not kept
    was said by `vitrine train` alone (helper-237); the demo reads it from model.json."""
    import json

    from rich.console import Console

    from vitrine import demo, trained
    from vitrine.config import Settings

    model = tmp_path / "out" / "model"
    model.mkdir(parents=True)
    check = {"validated": {"loss": 0.3, "acc": 0.9, "correct": 18, "n": 20},
             "refit": {"loss": 2.1, "acc": 0.5, "correct": 10, "n": 20}}
    (model / "model.json").write_text(json.dumps({"refit": {
        "kept": False, "why_not_kept": "8 more photos wrong", "check": check}}))
    monkeypatch.setattr(trained, "ensure_model", lambda *a, **k: (model, True))
    console = Console(record=True, width=400)
    demo._trained(tmp_path, tmp_path / "out", Settings(), console)
    said = console.export_text()
    assert "note: The refit on train + validation was not kept" in said
    assert "8 more photos wrong; accuracy 50.0% vs 90.0%" in said
    (model / "model.json").write_text(json.dumps({"refit": {"kept": True}}))
    console = Console(record=True, width=400)
    demo._trained(tmp_path, tmp_path / "out", Settings(), console)
    assert "not kept" not in console.export_text()
