"""A tiny end-to-end training (5 photos per category, 1–2 epochs) through the CLI, then
indexing, searching and evaluating with the trained model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import copy_subset

CLI = [sys.executable, "-m", "vitrine.cli"]
TINY = {"VITRINE_TRAIN_PHASE1_EPOCHS": "2", "VITRINE_TRAIN_PHASE2_EPOCHS": "1",
        "VITRINE_TRAIN_VIEWS": "2", "VITRINE_TRAIN_VAL_FRACTION": "0.2",
        "VITRINE_TRAIN_TEST_FRACTION": "0.2"}


def run(*args, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def env(weights_path) -> dict:
    return {"VITRINE_WEIGHTS": str(weights_path), **TINY}


@pytest.fixture(scope="module")
def trained(demo_catalog, tmp_path_factory, env) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("train")
    catalog = copy_subset(demo_catalog, root / "catalog", 5)
    summary = json.loads(run("train", catalog, "--out", root / "model", "--json",
                             env=env).stdout)
    return catalog, root / "model", summary


def test_train_writes_every_output(trained):
    _, model, summary = trained
    for name in ("model.pt", "model.json", "split.json", "history.json", "history.csv",
                 "history.png", "metrics.json", "confusion_matrix.png", "report.md",
                 "checkpoints/phase1-best.pt", "checkpoints/phase2-best.pt"):
        assert (model / name).is_file(), name
    assert summary["split"]["train"] + summary["split"]["val"] + summary["split"]["test"] == 40
    assert summary["split"]["crossing_groups"] == []
    assert [p["epochs"] for p in summary["phases"].values()] == [2, 1]
    test = summary["test"]
    assert 0 <= test["acc_ci95"][0] <= test["acc"] <= test["acc_ci95"][1] <= 1
    assert set(test["per_class"]) == set(summary["classes"])
    history = json.loads((model / "history.json").read_text())
    assert [h["phase"] for h in history] == ["transfer learning"] * 2 + ["fine-tuning"]
    report = (model / "report.md").read_text()
    assert "42.0%" in report and "70.0%" in report and "Wilson" in report


def test_index_search_and_evaluate_with_the_trained_model(trained, env, tmp_path):
    catalog, model, summary = trained
    store = tmp_path / "store"
    first = json.loads(run("index", catalog, "--store", store, "--model", model, "--json",
                           env=env).stdout)
    assert first["indexed"] == 40
    info = json.loads(run("info", "--store", store, "--json", env=env).stdout)
    assert info["model"]["weights_sha256"] == summary["weights_sha256"]
    assert info["model"]["embedding"].startswith("trained:")
    photo = next((catalog / "relogio_feminino").glob("*.jpg"))
    found = json.loads(run("search", photo, "--store", store, "--model", model, "--json",
                           env=env).stdout)
    assert found["results"][0]["score"] > 0.99  # the photo itself is indexed
    # the pretrained backbone must not write into (or search) a trained model's store
    mixed = run("index", catalog, "--store", store, "--json", env=env, check=False)
    assert mixed.returncode == 2 and "different model" in mixed.stderr
    report = json.loads(run("evaluate", catalog, "--model", model, "--json", env=env).stdout)
    assert set(report["retrieval"]) == {"pretrained", "trained"}
    assert report["queries"] == summary["split"]["test"]
    assert report["classification"]["n"] == summary["split"]["test"]


def test_train_refuses_a_bad_folder(tmp_path, env):
    proc = run("train", tmp_path / "missing", "--out", tmp_path / "m", env=env, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
