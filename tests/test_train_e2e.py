"""A tiny end-to-end training (4 photos per category, 1–2 epochs) through the CLI, then
indexing, searching and evaluating with the trained model."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import IN_CI, copy_subset, embed_in_fresh_process

CLI = [sys.executable, "-m", "vitrine.cli"]
TINY = {"VITRINE_TRAIN_PHASE1_EPOCHS": "2", "VITRINE_TRAIN_PHASE2_EPOCHS": "1",
        "VITRINE_TRAIN_VIEWS": "2", "VITRINE_TRAIN_VAL_FRACTION": "0.2",
        "VITRINE_TRAIN_TEST_FRACTION": "0.2"}


def run(*args, env: dict) -> str:
    """Run a command in-process (one torch start-up for the module); return its stdout."""
    from typer.testing import CliRunner

    from vitrine.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    if result.exit_code != 0:
        raise AssertionError(f"exit {result.exit_code}\n{result.output}\n{result.exception!r}")
    return result.stdout


def run_subprocess(*args, env: dict) -> subprocess.CompletedProcess:
    """Run the real entry point (errors become one sentence and exit status 2)."""
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=600)


@pytest.fixture
def run_here(cli_here):
    """:func:`run_subprocess` in this process: the real entry point (errors one sentence,
    exit status 2) through ``cli_here``, without an interpreter and torch to start, for the
    commands that need no process of their own (no time limit on a hang, no signal)."""
    return lambda *args, env: cli_here(*args, env_extra=env, check=False)


@pytest.fixture(scope="module")
def env(weights_path) -> dict:
    return {"VITRINE_WEIGHTS": str(weights_path), **TINY}


PAIR = ("relogio_feminino", "x_bolsa_feminina")


def copy_pair(demo: Path, dest: Path, per_category: int = 4) -> Path:
    """The first ``per_category`` photos of the two categories :data:`PAIR` (and their rows
    of products.csv): a catalogue that trains in seconds, for the tests of what a training
    run does with its folders and errors, not of what the model learns."""
    return copy_subset(demo, dest, per_category, categories=PAIR)


@pytest.fixture(scope="module")
def pair(demo_catalog, tmp_path_factory) -> Path:
    """:func:`copy_pair` of the demo catalogue (read-only: the tests train from it)."""
    return copy_pair(demo_catalog, tmp_path_factory.mktemp("pair") / "catalog")


@pytest.fixture(scope="module")
def trained(demo_catalog, tmp_path_factory, env) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("train")
    catalog = copy_subset(demo_catalog, root / "catalog", 4)
    first = sorted((catalog / "x_tenis_masculino").glob("*.jpg"))[0]
    shutil.copyfile(first, first.with_name("copy-of-first.jpg"))  # a duplicate pair
    summary = json.loads(run("train", catalog, "--out", root / "model", "--json", env=env))
    return catalog, root / "model", summary


@pytest.fixture(scope="module")
def evaluated(trained, env) -> str:
    """The JSON `evaluate --model --json` prints for the training catalogue and its model,
    run once for the tests that read it (a string: each parses its own copy)."""
    catalog, model, _ = trained
    return run("evaluate", catalog, "--model", model, "--json", env=env)


def test_train_writes_every_output(trained):
    _, model, summary = trained
    for name in ("model.pt", "model.json", "split.json", "history.json", "history.csv",
                 "history.png", "metrics.json", "confusion_matrix.png", "report.md",
                 "checkpoints/phase1-best.pt", "checkpoints/phase2-best.pt"):
        assert (model / name).is_file(), name
    assert summary["split"]["train"] + summary["split"]["val"] + summary["split"]["test"] == 33
    assert summary["split"]["duplicate_groups"] >= 1 and summary["split"]["crossing_groups"] == []
    split = json.loads((model / "split.json").read_text())
    pair = next(g for g in split["duplicate_groups"] if any("copy-of-first" in p for p in g))
    assert len({split["assignment"][p] for p in pair}) == 1
    assert [p["epochs"] for p in summary["phases"].values()] == [2, 1]
    # one span, one figure: phase 1's seconds (report.md's "Seconds:") are its epochs', as
    # its row says; the head inputs it built first have their own (helper-127: 23.1 vs 7)
    seconds = summary["seconds"]
    assert "head_inputs" in seconds
    assert seconds["phase1"] <= summary["phases"]["transfer_learning"]["seconds"] + 0.2
    test = summary["test"]
    assert 0 <= test["acc_ci95"][0] <= test["acc"] <= test["acc_ci95"][1] <= 1
    assert set(test["per_class"]) == set(summary["classes"])
    history = json.loads((model / "history.json").read_text())
    assert [h["phase"] for h in history] == ["transfer learning"] * 2 + ["fine-tuning"]
    report = (model / "report.md").read_text()
    assert "42.0%" in report and "70.0%" in report and "Wilson" in report
    chosen = summary["test"]["retrieval"]
    assert f"in use: `{chosen['chosen']}`" in report
    assert f"{chosen['weight']:g}·a + {1 - chosen['weight']:g}·b" in report


def test_index_search_and_evaluate_with_the_trained_model(trained, evaluated, env, tmp_path,
                                                          run_here):
    catalog, model, summary = trained
    store = tmp_path / "store"
    first = json.loads(run("index", catalog, "--store", store, "--model", model, "--json",
                           env=env))
    assert first["indexed"] == 33
    info = json.loads(run("info", "--store", store, "--json", env=env))
    assert info["model"]["weights_sha256"] == summary["weights_sha256"]
    assert info["model"]["embedding"].startswith("trained:")
    photo = next((catalog / "relogio_feminino").glob("*.jpg"))
    found = json.loads(run("search", photo, "--store", store, "--model", model, "--json",
                           env=env))
    assert found["results"][0]["score"] > 0.99  # the photo itself is indexed
    # the pretrained backbone's resize set beside a trained model changes nothing: said
    padded = run_here("search", photo, "--store", store, "--model", model, "--json",
                            env={**env, "VITRINE_RESIZE": "pad"})
    assert padded.returncode == 0 and json.loads(padded.stdout)["results"] == found["results"]
    assert " ".join(padded.stderr.split()) == (
        "note: VITRINE_RESIZE applies to the pretrained backbone; the trained model (--model) "
        "embeds with the backbone and resize it was trained with.")
    # the pretrained backbone must not write into (or search) a trained model's store
    mixed = run_here("index", catalog, "--store", store, "--json", env=env)
    assert mixed.returncode == 2 and "different model" in mixed.stderr
    mixed = run_here("search", photo, "--store", store, "--json", env=env)
    assert mixed.returncode == 2 and "different model" in mixed.stderr
    assert mixed.stdout == ""  # no results from vectors of another model
    # which model to pass is said (helper-162: after the demo, "the --model this store was
    # indexed with" did not say which), also of a copy made by migrate
    named = f"or pass --model {model.absolute()} (or VITRINE_MODEL), the model this store was "
    assert named in " ".join(mixed.stderr.split())
    # without local weights too, said before any model is built: it tried to download the
    # pretrained ones, to say it could not (helper-176)
    offline = {**env, "VITRINE_WEIGHTS": "", "TORCH_HOME": str(tmp_path / "no-downloads")}
    for args in (("index", catalog), ("search", photo)):
        refused = run_here(*args, "--store", store, env=offline)
        said = " ".join(refused.stderr.split())
        assert refused.returncode == 2 and named in said and "download" not in said, said
    from vitrine.api import create_app
    from vitrine.config import Settings
    from vitrine.errors import StoreError

    with pytest.raises(StoreError, match="a trained model's vectors in the store, the "
                                         "pretrained backbone here"):
        create_app(Settings(weights=None, cache_dir=tmp_path / "cache"), store)
    run("migrate", store, tmp_path / "copy", "--json", env=env)
    copied = run_here("search", photo, "--store", tmp_path / "copy", env=env)
    assert copied.returncode == 2 and named in " ".join(copied.stderr.split()), copied.stderr
    if IN_CI or importlib.util.find_spec("milvus_lite"):  # a Milvus store's model is read
        # before the model is built too (it was read once the store was open, after it)
        lite = f"milvus-lite://{tmp_path}/copy.db"
        run("migrate", store, lite, "--json", env=env)
        refused = run_here("index", catalog, "--store", lite, env=offline)
        said = " ".join(refused.stderr.split())
        assert refused.returncode == 2 and named in said and "download" not in said, said
    shown = json.loads(run("info", "--store", tmp_path / "copy", "--json", env=env))
    assert shown["model_folder"] == str(model.absolute())
    assert f"embedding, from {model.absolute()}" in run("info", "--store", store, env=env)
    # the store's own model folder, trained again since: not "pass the --model you passed"
    # (helper-164)
    import dataclasses

    from vitrine.embed import Embedder
    from vitrine.index_embed import check_manifest
    from vitrine.store import open_store

    settings = Settings(weights=env["VITRINE_WEIGHTS"], model=model)
    retrained = Embedder.from_settings(settings)
    retrained.manifest = dataclasses.replace(retrained.manifest, weights_sha256="0" * 64)
    db = open_store(store)
    try:
        with pytest.raises(StoreError) as told:
            check_manifest(db, retrained)
    finally:
        db.close()
    said = " ".join(str(told.value).split())
    assert f"was indexed with the model in {model.absolute()} before it was trained again" \
        in said and "index the catalogue into a new --store with it" in said
    # a store whose first write records the model (an API upload) names its folder too
    fresh = open_store(tmp_path / "fresh", create=True)
    try:
        check_manifest(fresh, Embedder.from_settings(settings))
        assert fresh.model_folder() == str(model.absolute())
    finally:
        fresh.close()
    from vitrine.config import Settings
    from vitrine.errors import StoreError
    from vitrine.service import VitrineService

    with pytest.raises(StoreError, match="different model"):  # nor does the server start
        VitrineService(Settings(weights=env["VITRINE_WEIGHTS"]), store)
    report = json.loads(evaluated)  # (`evaluate catalog --model model --json`)
    assert set(report["retrieval"]) == {"pretrained", "trained"}
    assert report["duplicate_groups"] == summary["split"]["duplicate_groups"] >= 1
    # (each duplicate group of the test split once, in both: helper-237)
    assert report["queries"] + report["copies_among_queries"] == summary["split"]["test"]
    assert report["queries"] == report["classification"]["n"] == summary["test"]["n"]
    # the same test photos, so the same mistakes as the training report
    wrong = report["classification"]["misclassified"]
    assert ({r["product_id"] for r in wrong}
            == {r["product_id"] for r in summary["test"]["misclassified"]})
    text = run("evaluate", catalog, "--model", model, env=env)
    if wrong:
        assert f"Misclassified: {len(wrong)} photo" in text and wrong[0]["product_id"] in text
    else:
        assert "Misclassified" not in text


def test_evaluate_names_the_categories_the_model_never_saw(trained, env, tmp_path):
    """Photos of categories the model was not trained on cannot be classified: they are
    counted and named (they were left out silently), and a catalogue with none of the
    model's categories says so instead of printing an accuracy of nan."""
    catalog, model, _ = trained
    mixed, foreign = tmp_path / "mixed", tmp_path / "foreign"
    for target, folders in ((mixed, {"x_tenis_masculino": "x_tenis_masculino",
                                     "x_bolsa_feminina": "novidade"}),
                            (foreign, {"x_tenis_masculino": "novo_a",
                                       "x_bolsa_feminina": "novo_b"})):
        for source, name in folders.items():
            shutil.copytree(catalog / source, target / name)
    from PIL import Image

    # the one photo the model never saw: two bags side by side (a mirrored one was a copy
    # of its source since the duplicate search turns photos to face one way)
    first, second = (Image.open(p).convert("RGB").resize((112, 224))
                     for p in sorted((mixed / "novidade").iterdir())[:2])
    fresh = Image.new("RGB", (224, 224))
    fresh.paste(first, (0, 0))
    fresh.paste(second, (112, 0))
    fresh.save(mixed / "novidade" / "fresh.png")
    split = json.loads((model / "split.json").read_text())
    sides: dict[str, set] = {}
    for pid, sha in split["photo_sha256"].items():
        sides.setdefault(sha, set()).add(split["assignment"].get(pid))

    def side(photo: Path) -> str | None:  # what the model did with this photo's content
        seen = sides.get(hashlib.sha256(photo.read_bytes()).hexdigest(), set())
        return "train" if seen & {"train", "val"} else "test" if "test" in seen else None

    shoes = sum(side(p) == "test" for p in (mixed / "x_tenis_masculino").iterdir())
    bags = sum(side(p) != "train" for p in (mixed / "novidade").iterdir())
    trained_on = sum(side(p) == "train" for p in mixed.rglob("*.*"))
    assert shoes and bags > 1 and trained_on
    # a resized copy of a photo the model trained on: its duplicate, so no query either,
    # nor searched (its report leaves such a copy out)
    seen_shoe = next(p for p in sorted((mixed / "x_tenis_masculino").iterdir())
                     if side(p) == "train")
    with Image.open(seen_shoe) as img:
        img.resize((img.width * 9 // 10, img.height * 9 // 10)).save(
            mixed / "x_tenis_masculino" / "resized-copy.jpg", quality=90)
    report = json.loads(run("evaluate", mixed, "--model", model, "--json", env=env))
    cls = report["classification"]
    assert cls["unknown_categories"] == ["novidade"]
    assert cls["unscored_photos"] == bags and cls["n"] == shoes
    # photos the model trained on are never queries, whatever their ids here (leave-one-out
    # over them all scored it on its own training photos); the new one is a query
    assert report["protocol"] == ("the model's test split and 1 photo(s) it never saw query "
                                  "its train + validation photos (1 copy of photos it trained "
                                  "on left out)")
    assert report["queries"] == shoes + bags and report["index"] == trained_on
    # a model whose split.json has no photo hashes (written before they were kept) tells
    # its photos by id: the training catalogue plus one new photo queries with its test split
    older, grown = tmp_path / "older", tmp_path / "grown"
    shutil.copytree(model, older)
    (older / "split.json").write_text(json.dumps({k: v for k, v in split.items()
                                                  if k != "photo_sha256"}))
    shutil.copytree(catalog, grown)
    fresh.save(grown / "x_bolsa_feminina" / "fresh.png")
    by_id = json.loads(run("evaluate", grown, "--model", older, "--json", env=env))
    assert by_id["protocol"].startswith("the model's test split and 1 photo(s) it never saw")
    assert by_id["queries"] == list(split["assignment"].values()).count("test") + 1
    # a photo it trained on saved again since (other bytes, same id) is still no query (its
    # content unknown to split.json, it was one), also with the model named from ~ (its
    # split was not found there: leave-one-out over every photo)
    resaved, home = tmp_path / "resaved", tmp_path / "home"
    shutil.copytree(catalog, resaved)
    with open(catalog / "products.csv", newline="") as fh:
        row = next(r for r in csv.DictReader(fh)
                   if split["assignment"].get(r["product_id"]) == "train")
    with Image.open(resaved / row["image"]) as img:
        img.convert("RGB").save(resaved / row["image"], "JPEG", quality=70)
    shutil.copytree(model, home / "m")
    again = json.loads(run("evaluate", resaved, "--model", "~/m", "--json",
                           env={**env, "HOME": str(home)}))
    assert again["protocol"] == "the model's test split queries its train + validation photos"
    assert again["queries"] == list(split["assignment"].values()).count("test")
    # without its split.json the photos it trained on cannot be told: said, not hidden
    (home / "m" / "split.json").unlink()
    bare = json.loads(run("evaluate", resaved, "--model", home / "m", "--json", env=env))
    assert "no split.json" in bare["protocol"]  # (each duplicate group queries once)
    assert bare["queries"] + bare["copies_among_queries"] == bare["index"]
    text = run("evaluate", mixed, "--model", model, env=env)
    assert (f"Not classified: {bags} photos of categories the model was not trained on "
            "(novidade)") in " ".join(text.split())
    report = json.loads(run("evaluate", foreign, "--model", model, "--json", env=env))
    assert report["classification"]["n"] == 0 and "pretrained" in report["retrieval"]
    assert report["classification"]["unknown_categories"] == ["novo_a", "novo_b"]
    text = " ".join(run("evaluate", foreign, "--model", model, env=env).split())
    assert "none of the photos is of a category the model was trained on" in text
    assert "nan" not in text


def test_evaluate_with_nothing_to_query_says_so_before_embedding(trained, settings, tmp_path,
                                                                  monkeypatch):
    """Photos the model trained on are no queries, so a catalogue of only those has nothing
    to evaluate; and a split catalogue whose test folder is empty: both said before a photo
    is embedded (it was said after embedding them all)."""
    from vitrine import model_eval
    from vitrine.errors import CatalogError

    catalog, model, _ = trained
    split = json.loads((model / "split.json").read_text())
    with open(catalog / "products.csv", newline="") as fh:
        image = {row["product_id"]: row["image"] for row in csv.DictReader(fh)}
    seen = tmp_path / "seen"
    for pid, side in split["assignment"].items():
        if side != "test":
            target = seen / image.get(pid, pid)  # a photo the table does not list: its path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(catalog / image.get(pid, pid), target)
    assert len(list(seen.rglob("*.jpg"))) == split["counts"]["train"] + split["counts"]["val"]
    presplit = tmp_path / "presplit"
    shutil.copytree(catalog, presplit / "train")
    (presplit / "test").mkdir()  # a photo outside any category folder: no category
    shutil.copyfile(next(seen.rglob("*.jpg")), presplit / "test" / "unsorted.jpg")

    def embed(*args, **kwargs):
        raise AssertionError("photos were embedded")

    monkeypatch.setattr(model_eval, "_embed", embed)
    with pytest.raises(CatalogError, match="the model trained on every one of these photos"):
        model_eval.evaluate_catalog(seen, settings, model_dir=model, show_progress=False)
    with pytest.raises(CatalogError, match="split folders have no test photo with a category"):
        model_eval.evaluate_catalog(presplit, settings, show_progress=False)


def test_evaluate_leaves_out_and_names_the_photos_it_cannot_read(trained, evaluated, tmp_path,
                                                                  env, run_here):
    """One photo it could not read stopped `evaluate` (naming only the first), where `train`
    had left it out: the catalogue just trained on could not be evaluated. Such photos are
    left out and named, with their reasons, with or without a model; a link to a device
    (/dev/zero, once read forever) too, before any photo is embedded."""
    catalog, model, _ = trained
    shutil.copytree(catalog, tmp_path / "c")
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / "c" / "x_bolsa_feminina" / name).write_bytes(b"not a photo")
    os.symlink("/dev/zero", tmp_path / "c" / "x_bolsa_feminina" / "zero.jpg")
    # (the entry point, with its time limit: reading the link to /dev/zero would not end)
    proc = run_subprocess("evaluate", tmp_path / "c", "--model", model, env=env)
    assert proc.returncode == 0, proc.stderr
    said = " ".join(proc.stdout.split())
    assert "3 photo(s) could not be read and were left out of the evaluation:" in said
    assert "x_bolsa_feminina/a.jpg: not a recognised image format" in said
    assert "x_bolsa_feminina/zero.jpg: cannot be read (it is a device, pipe or socket, " \
           "not a photo file)" in said
    for chosen in (("--model", model), ()):  # the trained model, and the pretrained one
        report = json.loads(run("evaluate", tmp_path / "c", *chosen, "--json", env=env))
        assert sorted(p["product_id"] for p in report["unreadable_photos"]) == [
            f"x_bolsa_feminina/{n}.jpg" for n in ("a", "b", "zero")]
        whole = json.loads(evaluated if chosen else run("evaluate", catalog, "--json",
                                                        env=env))
        assert whole["unreadable_photos"] == []
        # the figures are those of the photos it could read: the same as without the others
        assert report["queries"] == whole["queries"] and report["index"] == whole["index"]
        assert report["retrieval"] == whole["retrieval"]
    # unreadable photos emptying the test split: said as such ("the model trained on every
    # one of these photos" was false)
    for split, category in (("train", "a"), ("train", "b"), ("test", "a"), ("test", "b")):
        folder = tmp_path / "split" / split / category
        folder.mkdir(parents=True)
        for photo in sorted(catalog.glob("*/*.jpg"))[:2] if split == "train" else ():
            shutil.copyfile(photo, folder / photo.name)
        if split == "test":
            (folder / "x.jpg").write_bytes(b"not a photo")
    proc = run_here("evaluate", tmp_path / "split", env=env)
    assert proc.returncode == 2 and "error: 2 photo(s) could not be read and were left out " \
        "(the first, " in proc.stderr and "; without them, the catalogue's split folders " \
        "have no test photo" in " ".join(proc.stderr.split()), proc.stderr
    for category in ("a", "b"):  # nothing left to evaluate: one sentence
        (tmp_path / "bad" / category).mkdir(parents=True)
        (tmp_path / "bad" / category / "x.jpg").write_bytes(b"not a photo")
    proc = run_here("evaluate", tmp_path / "bad", env=env)
    assert proc.returncode == 2 and "error: none of the 2 photos could be read (the first, " \
        in proc.stderr and "nothing to evaluate." in proc.stderr, proc.stderr


def test_train_leaves_out_what_is_not_a_photo_file(demo_catalog, tmp_path, env):
    """A link to a named pipe in the catalogue hung training (opening it waits for a
    writer), and hashing a photo training could not read was a traceback."""
    catalog = copy_pair(demo_catalog, tmp_path / "c")
    os.mkfifo(tmp_path / "pipe")
    os.symlink(tmp_path / "pipe", catalog / "relogio_feminino" / "pipe.jpg")
    proc = subprocess.run([*CLI, "train", str(catalog), "--out", str(tmp_path / "m"),
                           "--json"], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)  # (a hang: a failure)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["unreadable_photos"] == [{
        "product_id": "relogio_feminino/pipe.jpg",
        "reason": "cannot be read (it is a device, pipe or socket, not a photo file)."}]
    assert sum(summary["split"][s] for s in ("train", "val", "test")) == 8


def test_a_damaged_model_file_is_one_sentence(trained, tmp_path, env, run_here):
    """torch's own message suggested loading with weights_only=False (running whatever the
    file holds); the user is told the file is not a model `vitrine train` wrote."""
    catalog, model, _ = trained
    damaged = tmp_path / "m"
    shutil.copytree(model, damaged)
    (damaged / "model.pt").write_bytes(bytes(range(256)) * 4)
    proc = run_here("evaluate", catalog, "--model", damaged, env=env)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "is not a model file written by `vitrine train`" in proc.stderr
    assert "weights_only" not in proc.stderr


def test_a_model_file_this_user_may_not_read_is_not_called_damaged(trained, monkeypatch):
    """A service account whose model.pt is another user's (mode 0600) was told the file is
    "damaged or replaced; train again": the sentence says it cannot be read, and why."""
    import errno

    from vitrine import trained as trained_module
    from vitrine.errors import WeightsError

    _, model, _ = trained

    def denied(path, *args, **kwargs):  # (CI runs as root, which chmod does not stop)
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(trained_module, "file_digest", denied)
    with pytest.raises(WeightsError) as raised:
        trained_module.load_model(model)
    assert str(raised.value) == (f"cannot read {model / 'model.pt'} (Permission denied); "
                                 "give this user access to it, or run as its owner.")


def test_a_model_folder_edited_or_mismatched_is_one_sentence(trained, tmp_path):
    """A hand-edited embedding weight (null: a traceback; 5: a complex number, or the square
    root of a negative one in evaluate), weights that hold NaN (with model.json's hash
    updated: every search came back empty), and weights of another network (the message was
    torch's header line alone) are each one sentence."""
    import torch

    from vitrine.errors import WeightsError
    from vitrine.trained import load_model, state_hash

    _, model, _ = trained
    edited = tmp_path / "m"
    shutil.copytree(model, edited)
    config = json.loads((model / "model.json").read_text())
    for weight in (None, "x", 5, 0, 1):
        (edited / "model.json").write_text(json.dumps(
            {**config, "embedding": {**config["embedding"], "weight": weight}}))
        with pytest.raises(WeightsError, match="not a valid model description"):
            load_model(edited)
    state = torch.load(model / "model.pt", weights_only=True)
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name].clone()
    state[name].view(-1)[0] = float("nan")
    torch.save(state, edited / "model.pt")
    (edited / "model.json").write_text(json.dumps({**config,
                                                   "weights_sha256": state_hash(state)}))
    with pytest.raises(WeightsError, match="holds NaN or infinite weights"):
        load_model(edited)
    (edited / "model.json").write_text(json.dumps({**config, "classes": [*config["classes"],
                                                                         "extra"]}))
    shutil.copy(model / "model.pt", edited / "model.pt")
    with pytest.raises(WeightsError, match=r"does not fit the network .*model.json describes "
                                           r"\(\d+ of another shape tensor\(s\)\)"):
        load_model(edited)


def test_train_refuses_a_bad_folder(tmp_path, env, demo_catalog, run_here):
    proc = run_here("train", tmp_path / "missing", "--out", tmp_path / "m", env=env)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    # photos at the root only: "no photo could be decoded" said the photos were broken
    loose = tmp_path / "loose"
    loose.mkdir()
    for photo in sorted(demo_catalog.glob("*/*.jpg"))[:3]:
        shutil.copyfile(photo, loose / photo.name)
    proc = run_here("train", loose, "--out", tmp_path / "m", env=env)
    assert proc.returncode == 2 and "no photo of" in proc.stderr
    assert "has a category: put each category's photos in a sub-folder" in proc.stderr
    # every photo broken: how many, and the first reason (one file was named, no reason);
    # three a category, which a split can validate (two are refused before any is read)
    for category in ("a", "b"):
        (tmp_path / "bad" / category).mkdir(parents=True)
        for name in ("1.jpg", "2.jpg", "3.jpg"):
            (tmp_path / "bad" / category / name).write_text("junk")
    proc = run_here("train", tmp_path / "bad", "--out", tmp_path / "m", env=env)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        "error: 6 photo(s): none of them could be decoded (the first: not a recognised "
        "image format).")


def test_a_failed_training_leaves_the_model_folder_as_it_was(trained, tmp_path, env, run_here):
    """--out is checked before any photo is read; a run that fails (here: one category)
    changes nothing in an existing model folder and leaves no partial folder behind."""
    catalog, model, _ = trained
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "notes.txt").write_text("mine")
    # a catalogue kept inside the model folder: replacing the model deleted its photos
    holder = tmp_path / "holder"
    shutil.copytree(model, holder)
    shutil.copytree(catalog, holder / "photos")
    for source, out, says in ((catalog, afile, "is a file"),
                              (catalog, afile / "sub", "cannot create"),
                              (catalog, outside, "holds other files"),
                              (catalog, catalog / "model", "inside the catalogue"),
                              (holder / "photos", holder, "is inside --out")):
        proc = run_here("train", source, "--out", out, env=env)
        assert proc.returncode == 2 and says in proc.stderr and "Reading" not in proc.stderr
        assert proc.stderr.count("\n") == 1

    copy = tmp_path / "models" / "m"
    shutil.copytree(model, copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()}
    one = tmp_path / "one"
    shutil.copytree(catalog / "x_tenis_masculino", one / "x_tenis_masculino")
    proc = run_here("train", one, "--out", copy, env=env)
    assert proc.returncode == 2 and "Reading" not in proc.stderr  # said before any photo
    assert proc.stderr == (f"error: the photos of {one} are all of one category "
                           "('x_tenis_masculino'); training learns to tell categories apart, "
                           "so it needs photos of at least two categories, each category's "
                           "in a sub-folder named after it.\n")
    assert {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()} == before
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["m"]


def test_too_few_categories_are_said_for_what_they_are(trained, tmp_path, env, run_here):
    """A lone train folder (val and test not made yet) was one category named "train", and
    a second category whose photos cannot be read left one: both were refused, after every
    photo was read, as a training split of one category, without naming the photos."""
    catalog, _, _ = trained
    categories = sorted(p for p in catalog.iterdir() if p.is_dir() and p.name != "model")
    lone = tmp_path / "lone"
    for category in categories[:2]:
        shutil.copytree(category, lone / "train" / category.name)
    proc = run_here("train", lone, "--out", tmp_path / "m1", env=env)
    assert proc.returncode == 2 and "Reading" not in proc.stderr
    assert proc.stderr.endswith("('train'); training learns to tell categories apart, so it "
                                "needs photos of at least two categories, each category's in "
                                "a sub-folder named after it. A train folder alone is not a "
                                "split catalogue: put a val or test folder beside it, with the "
                                "same category folders.\n")
    broken = tmp_path / "broken"
    shutil.copytree(categories[0], broken / categories[0].name)
    (broken / "b").mkdir()
    for i in range(3):
        (broken / "b" / f"{i}.png").write_bytes(b"not a photo")
    proc = run_here("train", broken, "--out", tmp_path / "m2", env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    error = proc.stderr.split("\n")[-2]  # (after the progress bar of the photos read)
    assert error.startswith("error: 3 photo(s) could not be read and were left out (the "
                            "first, b/0.png: ")
    assert error.endswith(f"); without them, the photos of {broken} are all of one category "
                          f"({categories[0].name!r}); training learns to tell categories "
                          "apart, so it needs photos of at least two categories, each "
                          "category's in a sub-folder named after it.")


@pytest.mark.parametrize(("name", "value", "says"), [
    ("VITRINE_TRAIN_FINE_TUNE_FROM", "99", "fine-tuning must start at a block between 1 and "
                                           "18, not 99."),
    ("VITRINE_TRAIN_TAPS", "18", "tapped blocks must lie between 1 and 17 (the last block is "
                                 "always used), not [18].")])
def test_blocks_the_backbone_lacks_are_said_with_their_setting(trained, tmp_path, env, name,
                                                               value, says, run_here):
    catalog, _, _ = trained
    proc = run_here("train", catalog, "--out", tmp_path / "m", env={**env, name: value})
    assert proc.returncode == 2 and "Reading" not in proc.stderr
    assert proc.stderr == f"error: setting {name}: {says}\n"


def test_train_into_the_current_folder_and_over_a_model(pair, tmp_path, env, monkeypatch):
    """'--out .' in an empty folder, then again over the model it wrote: the folder itself
    stays (a shell may be in it), its contents are the new model, nothing is left beside it."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)  # (the folder the command runs in)
    for run_number in range(2):
        json.loads(run("train", pair, "--out", ".", "--json", env=env))
        assert (here / "model.json").is_file() and (here / "report.md").is_file()
        assert [p.name for p in tmp_path.iterdir()] == ["here"]
        assert not any(p.name.startswith(".") for p in here.iterdir())
        if run_number == 0:  # the user's own notes in the model folder: kept, not deleted
            (here / "NOTES.txt").write_text("mine")
    assert (here / "NOTES.txt").read_text() == "mine"


def test_training_again_into_the_model_folder_keeps_its_split(demo_catalog, env, tmp_path):
    """A photo added to each category: the photos trained, validated and tested before stay
    where they were (a fresh split moved them, so the two models' test figures came from
    other photos), said in the summary, the terminal and report.md; VITRINE_TRAIN_NEW_SPLIT
    makes the split a first training makes, and a first training's split is today's."""
    from vitrine.config import Settings
    from vitrine.split import make_split, read_catalogue
    from vitrine.train_display import training_lines

    def fresh(catalog: Path, groups: list[list[str]]) -> dict[str, str]:
        """What make_split (unchanged by a kept split) gives ``catalog``."""
        settings = Settings(train_val_fraction=0.2, train_test_fraction=0.2)
        return make_split(read_catalogue(catalog)[0], groups, settings).assignment

    before = copy_pair(demo_catalog, tmp_path / "c6", 6)
    after = copy_pair(demo_catalog, tmp_path / "c7", 7)  # the same products, and one more each
    model = tmp_path / "m"
    first = json.loads(run("train", before, "--out", model, "--json", env=env))
    assert not {"kept_from_earlier", "fresh_because"} & set(first["split"])
    earlier = json.loads((model / "split.json").read_text())
    assert earlier["assignment"] == fresh(before, earlier["duplicate_groups"])
    again = json.loads(run("train", after, "--out", model, "--json", env=env))
    assert again["split"]["kept_from_earlier"] == {"kept": 12, "placed": 2, "moved": 0}
    kept = json.loads((model / "split.json").read_text())
    assert {pid: kept["assignment"][pid] for pid in earlier["assignment"]} == \
        earlier["assignment"]
    assert "Split kept from the earlier model in this folder: 12 photos" in \
        (model / "report.md").read_text()
    assert any("Split kept from the earlier model" in str(line)
               for line in training_lines(again))
    new = json.loads(run("train", after, "--out", model, "--json",
                         env={**env, "VITRINE_TRAIN_NEW_SPLIT": "true"}))
    assert new["split"]["fresh_because"] == "VITRINE_TRAIN_NEW_SPLIT is set"
    assert "kept_from_earlier" not in new["split"]
    split = json.loads((model / "split.json").read_text())
    assert split["assignment"] == fresh(after, split["duplicate_groups"])
    assert "Split made afresh" in (model / "report.md").read_text()


def test_sigterm_during_training_leaves_nothing_behind(trained, tmp_path, env):
    """SIGTERM (`timeout`, a container stopping) killed a training outright: its hidden stage
    folder and the new --out stayed behind. It now cleans up as after a Ctrl+C."""
    import signal
    import time

    catalog, _, _ = trained
    proc = subprocess.Popen([*CLI, "train", str(catalog), "--out", str(tmp_path / "m")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env})
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("m/.m.*.partial")) and time.monotonic() < deadline \
            and proc.poll() is None:
        time.sleep(0.05)
    assert list(tmp_path.glob("m/.m.*.partial")), "the run never started its stage"
    time.sleep(0.5)  # into the run
    proc.send_signal(signal.SIGTERM)
    stderr = proc.communicate(timeout=120)[1]
    assert proc.returncode == -signal.SIGTERM, stderr
    assert stderr.rstrip().endswith("terminated.") and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []  # no stage, no half-made model folder


def test_one_training_at_a_time_per_model_folder(tmp_path):
    """A second run to the same --out is refused while the first holds the folder (both used
    to report success and the first model was lost); a folder the run created is removed
    when it fails."""
    from vitrine.errors import VitrineError
    from vitrine.trained import staged_model_dir

    out = tmp_path / "m"
    with staged_model_dir(out) as stage:
        (stage / "model.json").write_text('{"format": "vitrine-trained-model/1"}')
        with pytest.raises(VitrineError, match="another `vitrine train` is writing"), \
                staged_model_dir(out):
            pass
    assert (out / "model.json").is_file()
    with staged_model_dir(out):  # released at the end of the run
        pass
    with pytest.raises(RuntimeError), staged_model_dir(tmp_path / "new"):
        raise RuntimeError("failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_a_model_folder_whose_parent_cannot_take_the_stage_is_written_all_the_same(
        tmp_path):
    """--out on a mounted volume (another file system than the folder above it, a bind
    mount, or under a folder that cannot be written): the stage was made beside it, and the
    run trained in full and then failed ("Invalid cross-device link"), its model lost. The
    stage goes inside the folder; a stage a killed run left there is removed, not taken for
    the user's files. The folders a failed run made are removed, the ones above --out too."""
    from vitrine.trained import STAGE_MARK, staged_model_dir

    out = tmp_path / "volume"
    out.mkdir()
    killed = out / ".volume.k3x_9a0z.partial"  # a run killed outright, inside
    killed.mkdir()
    (killed / STAGE_MARK).touch()
    with staged_model_dir(out) as stage:
        assert stage.parent == out and not killed.exists()
        (stage / "model.json").write_text('{"format": "vitrine-trained-model/1"}')
    assert sorted(p.name for p in out.iterdir()) == ["model.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["volume"]
    with pytest.raises(RuntimeError), staged_model_dir(out) as stage:
        (stage / "model.json").write_text("new")
        raise RuntimeError("failed")
    assert [(p.name, p.read_text()) for p in out.iterdir()] == [
        ("model.json", '{"format": "vitrine-trained-model/1"}')]
    with pytest.raises(RuntimeError), staged_model_dir(tmp_path / "a" / "b" / "m"):
        raise RuntimeError("failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["volume"]


def test_a_stop_signal_during_the_swap_keeps_the_earlier_model_whole(tmp_path, monkeypatch):
    """Ctrl+C (or SIGTERM, SIGHUP) between two of the final renames: the renames were undone
    only on an OSError, and the stage, holding the earlier model's files moved aside, was
    deleted: the folder was left empty. Whichever rename the signal follows, even one not
    yet noted, the earlier model stays whole and no stage is left."""
    import os

    from vitrine.trained import staged_model_dir

    out = tmp_path / "m"
    old = {"model.json": '{"format": "vitrine-trained-model/1"}', "model.pt": "old weights",
           "metrics.json": "{}", "notes.txt": "the user's"}
    with staged_model_dir(out) as stage:
        for name, text in old.items():
            if name != "notes.txt":
                (stage / name).write_text(text)
    (out / "notes.txt").write_text(old["notes.txt"])
    real, calls = os.replace, []

    def interrupted(src, dst):
        calls.append(src)
        real(src, dst)
        if len(calls) == stop:  # the signal's KeyboardInterrupt, right after a rename
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    for stop in range(1, 7):  # 3 moved aside, 3 moved in
        calls.clear()
        with pytest.raises(KeyboardInterrupt), staged_model_dir(out) as stage:
            for name in ("model.json", "model.pt", "history.png"):
                (stage / name).write_text("new")
        assert {p.name: p.read_text() for p in out.iterdir()} == old, stop
        assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


KILLED = '{"format": "vitrine-trained-model/1", "run": "killed"}'


def killed_mid_swap(out: Path, stop: int) -> int:
    """A run writing its model into ``out``, killed outright at its ``stop``-th rename
    (os._exit: as SIGKILL or a power cut, no clean-up runs), in a process forked from this
    one (a fresh interpreter imported torch again for each of the 6 stops: 2-3 s each);
    its exit status (9 when killed)."""
    import time
    import traceback

    from vitrine.trained import staged_model_dir

    pid = os.fork()
    if pid == 0:  # the run: it ends here, never back in pytest
        try:
            real, calls = os.replace, []

            def killed(src, dst):
                calls.append(src)
                if len(calls) == stop:  # SIGKILL, a power cut: no clean-up runs
                    os._exit(9)
                real(src, dst)

            os.replace = killed
            with staged_model_dir(out) as stage:
                for name in ("model.json", "model.pt", "history.png"):
                    (stage / name).write_text(KILLED)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError(f"the run to stop at rename {stop} hung")


def test_a_run_killed_outright_during_the_swap_is_finished_by_the_next(tmp_path):
    """SIGKILL (or a power cut) between two of the final renames: the earlier model's files
    were moved aside into the stage, which the next run deleted as a stale stage, and the
    folder held part of a model: `--model` refused it, and the next `vitrine train` too
    ("holds other files"), for good. The next run finishes the swap (the killed run's model
    was whole), so the folder holds one whole model even when that run fails, and a run
    that succeeds leaves its own."""
    from vitrine.trained import staged_model_dir

    out, earlier_run = tmp_path / "m", '{"format": "vitrine-trained-model/1", "run": 1}'
    killed_run = KILLED
    with staged_model_dir(out) as stage:
        for name in ("model.json", "model.pt", "metrics.json"):
            (stage / name).write_text(earlier_run)
    (out / "notes.txt").write_text("the user's")
    earlier = {p.name: p.read_text() for p in out.iterdir()}
    for stop in range(1, 7):  # 3 moved aside, 3 moved in
        assert killed_mid_swap(out, stop) == 9
        with pytest.raises(RuntimeError), staged_model_dir(out) as stage:
            raise RuntimeError("the next run fails")
        assert {p.name: p.read_text() for p in out.iterdir()} in (earlier, {
            "model.json": killed_run, "model.pt": killed_run, "history.png": killed_run,
            "notes.txt": "the user's"}), stop  # one whole model, either run's
        with staged_model_dir(out) as stage:
            for name in ("model.json", "model.pt", "metrics.json"):
                (stage / name).write_text(earlier_run)
        assert {p.name: p.read_text() for p in out.iterdir()} == earlier, stop


def test_another_tools_model_json_is_not_a_model_folder_and_stale_stages_go(tmp_path):
    """A TensorFlow.js folder (its own model.json) was replaced as if it were a model; the
    hidden stage a killed run (SIGKILL) left beside --out (as Vitrine staged before 5 Dec
    2026) is removed by the next run to that
    folder, and only that folder's."""
    from vitrine.errors import VitrineError
    from vitrine.trained import STAGE_SCRATCH, staged_model_dir

    tfjs = tmp_path / "tfjs"
    tfjs.mkdir()
    (tfjs / "model.json").write_text('{"format": "layers-model", "modelTopology": {}}')
    with pytest.raises(VitrineError, match="holds other files"), staged_model_dir(tfjs):
        pass
    assert (tfjs / "model.json").read_text().startswith('{"format": "layers-model"')

    out = tmp_path / "m"
    stale = tmp_path / ".m.k3x_9a0z.partial"  # mkdtemp's kind of name
    others = [tmp_path / ".m.x.k3x_9a0z.partial",  # another folder's (--out m.x) stage
              tmp_path / ".mm.k3x_9a0z.partial"]
    for folder in (stale, *others):
        folder.mkdir()
        (folder / "checkpoint.pt").write_bytes(b"x" * 10)
        (folder / ".vitrine-stage").touch()
    users = tmp_path / ".m.backup01.partial"  # the user's own, named alike: no mark
    users.mkdir()
    (users / "checkpoint.pt").write_bytes(b"mine")
    others.append(users)
    with staged_model_dir(out) as stage:
        (stage / "model.json").write_text('{"format": "vitrine-trained-model/1"}')
        (stage / STAGE_SCRATCH).mkdir()  # the training cache's folder, left by a failure
        (stage / STAGE_SCRATCH / "maps-0-160.f32").write_bytes(b"x")
        assert not stale.exists() and all(p.is_dir() for p in others)
    assert all((p / "checkpoint.pt").is_file() for p in others)
    assert sorted(p.name for p in out.iterdir()) == ["model.json"]  # no mark, no cache


def test_imagenet_layer_is_the_pretrained_embedder(trained, embedder):
    """The trained model's 'imagenet' layer reproduces the pretrained embedder exactly, and
    the model folder loads without the pretrained weights or the training data."""
    import numpy as np
    import torch

    from vitrine.embed import decode
    from vitrine.trained import load_model

    catalog, model_dir, _ = trained
    model = load_model(model_dir)
    photo = next((catalog / "x_tenis_masculino").glob("*.jpg"))
    array, _, _ = decode(photo, model.prep, 40_000_000)
    with torch.no_grad():
        ours = model.embedding_net("imagenet")(torch.from_numpy(array[None]))[0].numpy()
    theirs = embedder.embed_image(photo)
    assert float(np.dot(ours, theirs)) > 0.9999


def test_index_and_dedupe_use_the_models_calibrated_duplicate_rule(trained, env, tmp_path,
                                                                   settings):
    """`vitrine train` calibrates the embedding half of the duplicate rule on its own vectors
    (a trained model pulls a category's photos together, so pretrained features' 0.97 would
    call look-alike products duplicates); index and dedupe with the model apply it, and the
    setting still wins over it."""
    from vitrine.embed import Embedder

    catalog, model, summary = trained
    config = json.loads((model / "model.json").read_text())
    calibration = config["duplicates"]
    assert summary["duplicates"] == calibration and calibration["photos"] == 33
    assert calibration["without_probabilities"]  # the default hidden+probs
    # the same calibration from the vectors that index makes with the model: train calibrated
    # on what the rule will compare
    from vitrine.catalog import read_catalog
    from vitrine.dedupe import DuplicateRules, calibrated_embed_cosine

    embedder = Embedder.from_model_dir(model, settings)
    products = read_catalog(catalog)
    found = list(embedder.embed_paths([p.image for p in products]))
    row = {p.product_id: i for i, p in enumerate(products)}
    split = json.loads((model / "split.json").read_text())
    known = [[row[pid] for pid in group] for group in split["duplicate_groups"]]
    cosine, closest = calibrated_embed_cosine(
        np.stack([r.vector for r in found]), [r.phash for r in found], known,
        DuplicateRules(probs_tail=embedder.duplicate_rules().probs_tail))
    assert cosine == pytest.approx(calibration["embed_cosine"], abs=2e-3)
    assert closest == pytest.approx(calibration["closest_different_products"], abs=2e-3)
    assert (f"embedding cosine without the class probabilities ≥ "
            f"{calibration['embed_cosine']:.3f}") in (model / "report.md").read_text()
    rules = Embedder.from_model_dir(model, settings).duplicate_rules()
    assert (rules.embed_cosine, rules.probs_tail) == (calibration["embed_cosine"], 8)
    loose = tmp_path / "loose"  # the same model, told that any two photos are duplicates
    shutil.copytree(model, loose)
    (loose / "model.json").write_text(json.dumps(
        {**config, "duplicates": {**calibration, "embed_cosine": -1.0}}))

    def grouped(model_dir: Path, **extra) -> tuple[int, int]:
        store = tmp_path / f"store-{len(list(tmp_path.iterdir()))}"
        found = json.loads(run("index", catalog, "--store", store, "--model", model_dir,
                               "--json", env={**env, **extra}))["duplicates"]
        folders = json.loads(run("dedupe", catalog, "--json",
                                 env={**env, "VITRINE_MODEL": str(model_dir), **extra}))
        return (sum(map(len, found)), sum(map(len, folders["groups"])))

    calibrated = grouped(model)
    assert calibrated[0] == calibrated[1] >= 2  # the copied photo and its original
    assert min(grouped(loose)) > max(calibrated)
    setting = {"VITRINE_DUP_EMBED_COSINE": str(calibration["embed_cosine"])}
    assert grouped(loose, **setting) == calibrated
    # a model folder written before the calibration gets a conservative rule
    del config["duplicates"]
    (loose / "model.json").write_text(json.dumps(config))
    assert Embedder.from_model_dir(loose, settings).duplicate_cosine == 0.99


def test_bench_measures_vectors_of_the_trained_models_dimension(trained, env, settings):
    """`vitrine bench --items N --model M` sizes its synthetic vectors like M's embeddings
    (the trained ones are wider than the backbone's), so its memory and latency are M's."""
    from vitrine.embed import Embedder

    catalog, model, _ = trained
    photo = next((catalog / "salto_feminino").glob("*.jpg"))
    width = len(Embedder.from_model_dir(model, settings).embed_image(photo))
    report = json.loads(run("bench", "--items", "600", "--model", model, "--json", env=env))
    assert report["search"]["dim"] == width != 1280
    assert report["index_bytes"] >= 600 * width * 4 and report["recall_at_10"] == 1.0
    plain = json.loads(run("bench", "--items", "600", "--json", env=env))
    assert plain["search"]["dim"] == 1280


def test_a_model_trained_from_the_same_data_is_reused(trained, weights_path):
    from vitrine.config import Settings
    from vitrine.split import read_catalogue
    from vitrine.trained import ensure_model, training_fingerprint

    catalog, model_dir, _ = trained
    overrides = {k.removeprefix("VITRINE_").lower(): v for k, v in TINY.items()}
    settings = Settings(weights=weights_path, **overrides)
    products = read_catalogue(catalog)[0]
    recorded = json.loads((model_dir / "model.json").read_text())["training_fingerprint"]
    assert training_fingerprint(products, settings) == recorded
    other = settings.model_copy(update={"train_seed": 1})
    assert training_fingerprint(products, other) != recorded
    # the duplicate rules shape the split and the calibrated rule; the index-time bound not
    looser = settings.model_copy(update={"dup_phash_distance": 8})
    assert training_fingerprint(products, looser) != recorded
    bound = settings.model_copy(update={"dup_max_products": 10})
    assert training_fingerprint(products, bound) == recorded
    spelled_out = settings.model_copy(update={"dup_embed_cosine": 0.97})  # the default's value
    assert training_fingerprint(products, spelled_out) == recorded
    assert ensure_model(catalog, model_dir, settings) == (model_dir, True)


def test_search_tells_the_likely_category_from_the_trained_embedding(trained, env, tmp_path,
                                                                     weights_path):
    """The class probabilities are read back from the end of the embedding exactly: they
    equal the trained classifier's softmax, in the CLI's JSON, the API and the web page."""
    import numpy as np
    import torch
    from fastapi.testclient import TestClient

    from vitrine.api import create_app
    from vitrine.config import Settings
    from vitrine.embed import Embedder
    from vitrine.images import open_image, to_array
    from vitrine.trained import load_model

    catalog, model_dir, summary = trained
    store = tmp_path / "store"
    run("index", catalog, "--store", store, "--model", model_dir, "--json", env=env)
    photos = [next((catalog / c).glob("*.jpg")) for c in ("relogio_feminino", "x_bolsa_feminina")]
    model = load_model(model_dir)
    assert model.layer.endswith("+probs")  # the default embedding
    for photo in photos:
        found = json.loads(run("search", photo, "--store", store, "--model", model_dir,
                               "--json", env=env))
        with torch.inference_mode():
            x = torch.from_numpy(to_array(open_image(photo, draft_size=model.prep.draft_size),
                                          model.prep)[None])
            probs = model.net.layers(x, {"probs"})["probs"][0].numpy()
        guess = found["predicted_category"]
        assert guess["category"] == summary["classes"][int(np.argmax(probs))]
        assert guess["probability"] == pytest.approx(float(probs.max()), abs=2e-3)

    settings = Settings(weights=weights_path, model=model_dir, api_key="k",
                        guess_min_probability=0.0)
    embedder = Embedder.from_settings(settings)
    client = TestClient(create_app(settings, store, embedder=embedder))
    data = photos[1].read_bytes()
    api = client.post("/api/search", files={"image": ("p.jpg", data, "image/jpeg")}).json()
    guess = api["predicted_category"]
    assert guess["category"] in summary["classes"] and 0 < guess["probability"] <= 1
    assert guess["sure"] is True
    runner_up = guess["runner_up"]
    assert runner_up["category"] in set(summary["classes"]) - {guess["category"]}
    assert 0 <= runner_up["probability"] <= guess["probability"]
    page = client.post("/search?fragment=1&lang=en",
                       files={"image": ("p.jpg", data, "image/jpeg")}).text
    from vitrine.display import percent

    pct = percent(guess["probability"])  # (as the terminal says it: never "100%" under 1)
    assert "Looks like the category" in page and f"({pct} probability)" in page
    # below VITRINE_GUESS_MIN_PROBABILITY: not sure, the runner-up beside it
    unsure = settings.model_copy(update={"guess_min_probability": 0.9999})
    with TestClient(create_app(unsure, store, embedder=Embedder.from_settings(unsure))) as other:
        doubt = other.post("/api/search", files={"image": ("p.jpg", data, "image/jpeg")}).json()
        assert doubt["predicted_category"] == {**guess, "sure": False}
        page = other.post("/search?fragment=1&lang=en",
                          files={"image": ("p.jpg", data, "image/jpeg")}).text
    label = runner_up["category"].replace("_", " ")
    assert "Not sure: the category" in page and f"({pct} probability)" in page
    assert (f"or <bdi>{label[:1].upper() + label[1:]}</bdi> "  # (isolated: a right-to-left
            f"({percent(runner_up['probability'])})") in page  # name keeps to itself)
    cli = run("search", photos[1], "--store", store, "--model", model_dir, env={
        **env, "VITRINE_GUESS_MIN_PROBABILITY": "0.9999"})
    assert f"Not sure: {guess['category']} ({pct}) or {runner_up['category']}" in cli
    assert f'<a href="/?category={guess["category"]}' in page  # a link, not escaped markup
    # once the store holds no product of that category, the name is shown without a link
    listed = client.get("/api/products", params={"category": guess["category"]}).json()
    for product in listed["products"]:
        gone = client.delete(f"/api/products/{product['product_id']}",
                             headers={"Authorization": "Bearer k"})
        assert gone.status_code == 204
    page = client.post("/search?fragment=1&lang=en",
                       files={"image": ("p.jpg", data, "image/jpeg")}).text
    assert f"({pct} probability)" in page and "/?category=" not in page

    # a pretrained store has no classes: no guess
    plain = tmp_path / "plain"
    run("index", catalog, "--store", plain, "--json", env=env)
    found = json.loads(run("search", photos[0], "--store", plain, "--json", env=env))
    assert found["predicted_category"] is None


def test_guess_category_reads_probabilities_back_exactly():
    import numpy as np

    from vitrine.embed import guess_category

    probs = np.array([0.1, 0.7, 0.2])
    head = np.array([0.3, -0.4, 0.5, 0.1])
    head, tail = head / np.linalg.norm(head), probs / np.linalg.norm(probs)
    vector = np.concatenate([head * 0.9 ** 0.5, tail * 0.1 ** 0.5]) * 3.0  # any scale
    guess = guess_category(vector, ["a", "b", "c"])
    assert guess.category == "b" and guess.probability == pytest.approx(0.7)
    assert guess.runner_up == "c" and guess.runner_up_probability == pytest.approx(0.2)
    assert guess.sure and guess.sentence() == "Looks like: b (70%)"
    doubt = guess_category(vector, ["a", "b", "c"], min_probability=0.75)
    assert not doubt.sure and doubt.sentence() == "Not sure: b (70%) or c (20%)"
    assert doubt.as_dict() == {"category": "b", "probability": 0.7, "sure": False,
                               "runner_up": {"category": "c", "probability": 0.2}}
    one = guess_category(np.array([1.0]), ["only"], min_probability=0.5)
    assert one.runner_up is None and one.sure
    # compared as shown, in whole percent: 69.6 % reads "70%", so it is sure at 0.7
    near = guess_category(np.array([0.696, 0.304]), ["a", "b"], min_probability=0.7)
    assert near.sure and near.sentence() == "Looks like: a (70%)"
    assert not guess_category(np.array([0.694, 0.306]), ["a", "b"], min_probability=0.7).sure
    assert not guess_category(np.array([0.99, 0.01]), ["a", "b"], min_probability=1.0).sure
    # a guess that is not certain never reads "100%" (helper-127: 0.9959 did, in the terminal
    # and on misclassified.png, where report.md said 0.9959)
    assert guess_category(np.array([0.9959, 0.0041]), ["a", "b"]).sentence() == \
        "Looks like: a (99.6%)"
    from vitrine.display import percent

    assert [percent(p) for p in (0.99951, 1.0, 0.85, 0.0, float("nan"))] == [
        "99.9%", "100%", "85%", "0%", "nan%"]
    # sure as shown: "99.5%" is under a threshold of 1 (helper-130: it said sure)
    assert not guess_category(np.array([0.995, 0.005]), ["a", "b"], min_probability=1.0).sure
    assert guess_category(np.array([0.997, 0.003]), ["a", "b"], min_probability=0.995).sure
    assert not guess_category(np.array([0.702, 0.298]), ["a", "b"], min_probability=0.705).sure
    from vitrine.web.text import format_chance

    assert (format_chance(0.9959, "pt"), format_chance(0.9959, "en")) == ("99,6", "99.6")
    assert guess_category(vector, []) is None  # a model without class probabilities
    assert guess_category(np.concatenate([head, np.zeros(3)]), ["a", "b", "c"]) is None


def test_report_lists_the_misclassified_test_photos(trained):
    """Every wrong test prediction is listed once, with the photo it belongs to (checked by
    running the saved model on that photo), consistent with the confusion matrix."""
    from collections import Counter

    import torch

    from vitrine.images import open_image, to_array
    from vitrine.trained import load_model

    _, model_dir, summary = trained
    test = summary["test"]
    wrong = test["misclassified"]
    assert len(wrong) == test["n"] - test["correct"]
    pairs = Counter((r["labelled"], r["predicted"]) for r in wrong)
    classes = test["classes"]
    for i, label in enumerate(classes):
        for j, guess in enumerate(classes):
            if i != j:
                assert test["confusion"][i][j] == pairs[label, guess]
    assert [r["probability"] for r in wrong] == sorted((r["probability"] for r in wrong),
                                                       reverse=True)
    model = load_model(model_dir)
    for r in wrong:
        assert r["labelled"] != r["predicted"] and r["probability"] >= r["probability_of_label"]
        assert Path(r["image"]).parent.name == r["labelled"]  # the catalogue's category folder
        with torch.inference_mode():
            x = torch.from_numpy(to_array(open_image(Path(r["image"]),
                                                     draft_size=model.prep.draft_size),
                                          model.prep)[None])
            probs = model.net.layers(x, {"probs"})["probs"][0]
        assert classes[int(probs.argmax())] == r["predicted"]
        assert float(probs.max()) == pytest.approx(r["probability"], abs=2e-3)
    report = (model_dir / "report.md").read_text()
    if wrong:
        assert (model_dir / "misclassified.png").is_file()
        assert all(f"| {r['product_id']} |" in report for r in wrong[:20])
    else:
        assert not (model_dir / "misclassified.png").exists()
        assert "Every test photo was classified in its labelled category." in report


def test_misclassified_rows_and_report_section(tmp_path, demo_catalog):
    """Hand-made probabilities: only the wrong rows, most confident first; the report shows
    at most 20 of them and the figure is drawn from the photos."""
    import numpy as np

    from vitrine.catalog import Product
    from vitrine.plots import plot_misclassified
    from vitrine.report import _misclassified_lines, misclassified

    photo = next((demo_catalog / "x_tenis_masculino").glob("*.jpg"))
    products = [Product(product_id=f"p{i}", image=photo, category="", name=f"N|\n{i}")
                for i in range(4)]
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.05, 0.95]])
    rows = misclassified(products, [0, 0, 1, 0], probs, ["a", "b"])
    assert [(r["product_id"], r["labelled"], r["predicted"]) for r in rows] == [
        ("p3", "a", "b"), ("p1", "a", "b"), ("p2", "b", "a")]
    assert rows[0]["probability"] == 0.95 and rows[0]["probability_of_label"] == 0.05
    lines = "\n".join(_misclassified_lines(rows * 8))
    assert "24 test photos" in lines and "the 20 most confident shown" in lines
    assert lines.count("| p3 | N\\| 3 | a | b | 95.0% | 5.0% |") == 7  # rows 0, 3, … 18
    assert _misclassified_lines([]) == ["Every test photo was classified in its labelled "
                                        "category.", ""]
    out = plot_misclassified(rows, tmp_path / "m.png")
    assert out.stat().st_size > 5_000


def fine_tuning_as(summary: dict, **changes) -> dict:
    """``summary`` with its fine-tuning phase changed by ``changes`` and carrying transfer
    learning's metrics, as a phase that did not run or was dropped does."""
    phases = summary["phases"]
    return {**summary, "phases": {**phases, "fine_tuning": {
        **phases["fine_tuning"], **changes, "metrics": phases["transfer_learning"]["metrics"]}}}


def fine_tuning_cells(summary: dict) -> list[str]:
    """The fine-tuning row of the terminal's training table (:func:`training_lines`), cell by
    cell."""
    from rich.console import Console

    from vitrine.train_display import training_lines

    console = Console(record=True, width=160)
    for line in training_lines(summary):
        console.print(line)
    row = next(line for line in console.export_text().splitlines() if "fine-tuning" in line
               or "fine tuning" in line)
    return [c.strip() for c in row.split("│")[1:-1]]


def test_fine_tuning_that_did_not_run_shows_no_figures(trained):
    """VITRINE_TRAIN_PHASE2_EPOCHS=0: the fine-tuning rows repeated transfer learning's
    figures (its model is transfer learning's), as if it had run and changed nothing."""
    from vitrine.report import markdown_report

    _, _, summary = trained
    phases = summary["phases"]
    skipped = fine_tuning_as(summary, epochs=0, best_epoch=0, stopped_early=False)
    classes = len(summary["classes"])
    report = markdown_report(skipped).splitlines()
    assert (f"| Vitrine ({classes} categories) | fine-tuning (not run: 0 epochs) | — | — | — "
            "| — |") in report
    assert sum(line.startswith(f"| Vitrine ({classes} categories) | transfer learning | ")
               and "—" not in line for line in report) == 1
    assert fine_tuning_cells(skipped) == [
        "fine tuning", "0", "—", "—", "—", "—", "—", f"{phases['fine_tuning']['seconds']:.0f}"]


def test_dropped_fine_tuning_shows_no_figures_as_its_own(trained):
    """Fine-tuning none of whose epochs beat transfer learning's validation loss is dropped
    and transfer learning's weights are kept: its row showed those weights' figures (the
    same accuracy and loss as transfer learning's, to the digit) as fine-tuning's."""
    from vitrine.report import markdown_report

    _, model, _ = trained
    summary = json.loads((model / "summary.json").read_text())  # (its history too)
    phases = summary["phases"]
    dropped = fine_tuning_as(summary, best_epoch=0)
    classes = len(summary["classes"])
    report = markdown_report(dropped).splitlines()
    assert (f"| Vitrine ({classes} categories) | fine-tuning (dropped: transfer learning's "
            "weights kept) | — | — | — | — |") in report
    assert any(line.startswith("Fine-tuning never lowered the validation loss")
               for line in report)
    assert fine_tuning_cells(dropped) == [
        "fine tuning", str(phases["fine_tuning"]["epochs"]), "none", "—", "—", "—", "—",
        f"{phases['fine_tuning']['seconds']:.0f}"]


def test_unreadable_photos_are_named_in_the_terminal_and_the_report(trained):
    """Photos training could not read were only in summary.json; the terminal and report.md
    now say how many and which (a name with [brackets] stays text, not rich markup)."""
    from rich.console import Console

    from vitrine.report import markdown_report
    from vitrine.train_display import training_lines

    _, _, summary = trained
    bad = [{"product_id": f"x/[{i}].jpg", "reason": "not a recognised image format."}
           for i in range(12)]
    summary = {**summary, "history": [], "unreadable_photos": bad}
    report = markdown_report(summary)
    assert "12 photo(s) could not be read and were left out of training:" in report
    assert r"- x/\[0\].jpg: not a recognised image format." in report  # (shown as x/[0].jpg)
    assert "… and 2 more (summary.json)" in report
    console = Console(record=True, width=120)
    for line in training_lines(summary):
        console.print(line)
    text = console.export_text()
    assert "12 photo(s) could not be read" in text and "x/[3].jpg" in text
    assert not any("could not be read" in line for line in markdown_report(
        {**summary, "unreadable_photos": []}).splitlines())
    # duplicates across given splits: named in the report too, not only counted
    crossing = {**summary, "split": {**summary["split"],
                                     "crossing_groups": [["treino/a.jpg", "teste/a.jpg"]],
                                     "left_out_of_test": ["teste/a.jpg"]}}
    assert "- duplicates across splits: treino/a.jpg  ≈  teste/a.jpg" in markdown_report(crossing)
    validated = {**summary, "split": {**summary["split"], "left_out_of_val": ["val/a.jpg"]}}
    one = {**summary, "split": {**summary["split"], "duplicate_groups": 1}}
    assert "; 1 duplicate group, " in markdown_report(one)  # (not "1 duplicate groups")
    assert "; 1 duplicate group, " in str(training_lines(one)[0])
    # the product table's groups said when it had some (item_group_id: helper-268)
    grouped = {**summary, "split": {**summary["split"], "product_groups": 3}}
    for text in (markdown_report(grouped), str(training_lines(grouped)[0])):
        assert ", 3 product groups of the product table, 0 crossing splits." in text, text
    assert "product group" not in markdown_report(summary)
    for changed, said in (
            (crossing, "1 photo(s) of the test folder left out (a copy of each is in the train "
                       "or val folder, so the model saw it): teste/a.jpg."),
            (validated, "1 photo(s) of the val folder left out (a copy of each is in the train "
                        "folder, so the model saw it): val/a.jpg.")):
        assert f"- {said}" in markdown_report(changed)
        console = Console(record=True, width=200)
        for line in training_lines(changed):
            console.print(line)
        assert said in console.export_text()
    # a category named with '|' split its row of the per-class table into more columns
    first = next(iter(summary["test"]["per_class"].values()))
    piped = {**summary, "test": {**summary["test"], "per_class": {"tênis | masc": first}}}
    row = next(line for line in markdown_report(piped).splitlines() if "tênis" in line)
    assert row.startswith("| tênis \\| masc |") and row.count("|") - row.count("\\|") == 6
    # photos at the catalogue's root (no category) were dropped without a word
    assert trained[2]["uncategorised_photos"] == []
    loose = {**summary, "unreadable_photos": [],
             "uncategorised_photos": [{"product_id": "solta.jpg", "reason": "no folder"}]}
    assert "1 photo(s) have no category and were left out of training:" in markdown_report(loose)
    console = Console(record=True, width=120)
    for line in training_lines(loose):
        console.print(line)
    assert "solta.jpg: no folder" in console.export_text()
    # no test split: the table says "—" for its figures, as report.md does, not "nan"
    untested = {**loose, "phases": {name: {**phase, "metrics": {
        s: m for s, m in phase["metrics"].items() if s != "test"}}
        for name, phase in summary["phases"].items()}, "test": None}
    console = Console(record=True, width=120)
    for line in training_lines(untested):
        console.print(line)
    text = console.export_text()
    assert "nan" not in text and "—" in text
    # a table category that overrides the photo's folder: trained under it, and said
    assert trained[2]["category_from_table"] == []
    moved = {**summary, "category_from_table": [{"product_id": "p[1]", "category": "botas",
                                                 "folder": "tenis"}]}
    assert r"p\[1\] ('botas', folder 'tenis')" in markdown_report(moved)
    console = Console(record=True, width=120)
    for line in training_lines(moved):
        console.print(line)
    assert "take their category from the product table" in console.export_text()
    # a photo that could not be read again for its augmented views: named (helper-190)
    again = {**summary, "unaugmented_photos": [{"product_id": "p9", "reason": "gone"}]}
    console = Console(record=True, width=200)
    for line in training_lines(again):
        console.print(line)
    said = " ".join(console.export_text().split())
    assert "1 photo(s) could not be read again for their augmented views" in said
    assert "p9: gone" in said and "p9: gone" in markdown_report(again)
    assert trained[2]["unaugmented_photos"] == []
    # categories that differ only in case: two classes, said too (helper-179)
    assert trained[2]["category_twins"] == []
    twins = {**summary, "category_twins": [[{"category": "Botas", "products": 1},
                                            {"category": "botas", "products": 4}]]}
    assert "'Botas' (1) and 'botas' (4)" in markdown_report(twins)
    console = Console(record=True, width=200)
    for line in training_lines(twins):
        console.print(line)
    assert "'Botas' (1) and 'botas' (4)" in console.export_text()
    # no test photo of a trained category: the report does not promise test figures
    untested = markdown_report({**summary, "test": {}, "refit": {
        "photos": 25, "epochs": [2, 1], "metrics": {}, "seconds": 1.0}})
    assert "No test figures" in untested and "The test figures below" not in untested
    assert "rates it had." in untested and "stayed unseen" not in untested
    every_copy = markdown_report({**summary, "test": {}, "split": {
        **summary["split"], "left_out_of_test": ["test/a/1.jpg"]}})  # (helper-130)
    assert "copies of photos in train or val, left out" in every_copy
    assert "VITRINE_TRAIN_TEST_FRACTION" not in every_copy
    assert "The test figures below" in report


def test_duplicates_with_different_categories_are_reported(trained):
    """The same photo given two categories (a CSV mistake) is trained under both labels: the
    summary, terminal and report say so."""
    from pathlib import Path

    from rich.console import Console

    from vitrine.catalog import Product
    from vitrine.report import markdown_report
    from vitrine.train import conflicting_labels
    from vitrine.train_display import training_lines

    photo = Path("/x/1.jpg")
    products = [Product("P1", photo, "relogio_feminino"), Product("P2", photo, "x_bolsa"),
                Product("P3", photo, "x_bolsa"), Product("P4", photo, "x_bolsa")]
    groups = [["P1", "P2"], ["P3", "P4"]]
    assert conflicting_labels(groups, products) == [["P1 (relogio_feminino)", "P2 (x_bolsa)"]]
    _, _, summary = trained
    assert summary["split"]["conflicting_groups"] == []  # the fixture's pair agrees
    conflicts = conflicting_labels(groups, products)
    summary = {**summary, "history": [],
               "split": {**summary["split"], "conflicting_groups": conflicts}}
    assert "P1 (relogio_feminino)  ≈  P2 (x_bolsa)" in markdown_report(summary)
    console = Console(record=True, width=160)
    for line in training_lines(summary):
        console.print(line)
    assert "1 group(s) of duplicate photos carry different categories" in console.export_text()


def test_demo_without_training_after_a_trained_demo_rebuilds_its_store(trained, pair,
                                                                       weights_path, tmp_path,
                                                                       sketched_demo_figures):
    """The demo's own store follows the model of the run: trained, then --no-train (it said
    'the store was built with a different model' and stopped)."""
    from rich.console import Console

    from vitrine.config import Settings
    from vitrine.demo import run_demo
    from vitrine.store import open_store

    catalog, model_dir, _ = trained
    out = tmp_path / "demo-output"
    shutil.copytree(model_dir, out / "model")  # the same data and settings: reused, not trained
    overrides = {k.removeprefix("VITRINE_").lower(): v for k, v in TINY.items()}
    settings = Settings(weights=weights_path, **overrides)
    console = Console(record=True, width=200)
    for train in (True, False):
        summary = run_demo(catalog, out / "store", out, settings.model_copy(
            update={"demo_train": train}), 3, console=console)
        assert summary["index"]["indexed"] == len(list(catalog.rglob("*.jpg")))  # anew
        store = open_store(out / "store")
        assert store.manifest().embedding != "pooled" if train else \
            store.manifest().embedding == "pooled"
        store.close()
        (out / "store" / "NOTES.txt").write_text("mine")
    text = console.export_text()
    assert "Reusing the model" in text and "rebuilding it" in text
    assert (out / "store" / "NOTES.txt").read_text() == "mine"  # only the store's files went
    # a store that is --out itself: its rebuild took the model just trained, the figures
    # and the user's files in --out with it
    # (its first run trains the model into --out: the store was then taken for a user's,
    # never marked, and every later run refused it)
    alone = tmp_path / "alone"
    from vitrine.demo import DEMO_MARK

    run_demo(pair, alone, alone, settings.model_copy(update={"demo_train": True}), 3,
             console=console)
    assert (alone / DEMO_MARK).is_file() and (alone / "model" / "model.json").is_file()
    (alone / "NOTES.txt").write_text("mine")
    run_demo(pair, alone, alone, settings.model_copy(update={"demo_train": False}), 3,
             console=console)
    assert console.export_text().count("rebuilding") == 1  # (exported above: cleared)
    assert (alone / "model" / "model.json").is_file() and (alone / "demo.json").is_file()
    assert list(alone.glob("similar-*.png")) and (alone / "NOTES.txt").read_text() == "mine"


def test_a_validation_folder_without_a_trained_category_is_one_sentence(trained, tmp_path,
                                                                         env, run_here):
    catalog, _, _ = trained
    for split, category in (("train", "relogio_feminino"), ("train", "x_bolsa_feminina"),
                            ("val", "salto_feminino"), ("test", "relogio_feminino")):
        shutil.copytree(catalog / category, tmp_path / "c" / split / category)
    proc = run_here("train", tmp_path / "c", "--out", tmp_path / "m", env=env)
    assert proc.returncode == 2, proc.stderr  # a KeyError traceback before
    assert "validation split has no photo of a category the training split has" in proc.stderr
    assert "add photos of them to the val folder" in proc.stderr  # no fraction to raise here
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in proc.stderr and not (tmp_path / "m").exists()
    # one photo a category (no split folders): no fraction gives validation a photo (the
    # sentence said to raise VITRINE_TRAIN_VAL_FRACTION)
    for category in ("relogio_feminino", "x_bolsa_feminina"):
        (tmp_path / "one" / category).mkdir(parents=True)
        shutil.copy(sorted((catalog / category).glob("*.jpg"))[0], tmp_path / "one" / category)
    proc = run_here("train", tmp_path / "one", "--out", tmp_path / "m1", env=env)
    assert proc.returncode == 2 and "a category needs 3 different ones (copies of one " \
        "photo count as one), one to train on and one to validate" in " ".join(
            proc.stderr.split()), proc.stderr
    assert "VITRINE_TRAIN_VAL_FRACTION" not in proc.stderr
    # a copy of each (a duplicate group stays in one split): still one photo a category
    for photo in list((tmp_path / "one").rglob("*.jpg")):
        shutil.copy(photo, photo.with_name("copia-" + photo.name))
    proc = run_here("train", tmp_path / "one", "--out", tmp_path / "m1", env=env)
    assert proc.returncode == 2 and "copies of one photo count as one" in " ".join(
        proc.stderr.split()), proc.stderr
    # a val folder of copies of training photos: left out, and the sentence says so
    shutil.rmtree(tmp_path / "c" / "val" / "salto_feminino")
    shutil.copytree(catalog / "relogio_feminino", tmp_path / "c" / "val" / "relogio_feminino")
    proc = run_here("train", tmp_path / "c", "--out", tmp_path / "m", env=env)
    assert proc.returncode == 2, proc.stderr
    assert ("add photos of them to the val folder (its copies of training photos were left "
            "out)") in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr and not (tmp_path / "m").exists()


def test_a_cache_kept_in_files_trains_the_same_model(demo_catalog, env, tmp_path):
    """With no memory allowed for it, the frozen-layer cache is kept in files mapped into
    memory: the model comes out bit for bit the same, and the files are gone afterwards."""
    catalog = copy_pair(demo_catalog, tmp_path / "c")
    first = sorted((catalog / "x_bolsa_feminina").glob("*.jpg"))[0]
    shutil.copyfile(first, first.with_name("copy-of-first.jpg"))  # a duplicate pair
    model = tmp_path / "memory" / "model"  # the cache in memory, as by default
    summary = json.loads(run("train", catalog, "--out", model, "--json", env=env))
    assert summary["cache_mib"]["files"] == 0 and summary["cache_mib"]["memory"] > 0
    assert summary["split"]["duplicate_groups"] == 1  # (its duplicate calibration has one)
    out = tmp_path / "files" / "model"
    on_disk = json.loads(run("train", catalog, "--out", out, "--json",
                             env={**env, "VITRINE_TRAIN_CACHE_MEMORY_MB": "0"}))
    assert on_disk["cache_mib"]["memory"] == 0 and on_disk["cache_mib"]["files"] > 0
    assert "MiB in files mapped into memory" in on_disk["cached"]
    assert on_disk["weights_sha256"] == summary["weights_sha256"]
    for key in ("duplicates", "test", "refit", "phases"):  # made from the outputs in files
        assert without_seconds(on_disk[key]) == without_seconds(summary[key]), key
    assert sorted(p.name for p in out.parent.iterdir()) == ["model"]  # no cache left beside
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in model.iterdir())


def test_a_photo_that_cannot_be_read_is_in_no_given_split(trained, tmp_path, env):
    """With the catalogue split in folders, an unreadable photo was still trained on (as a
    map of zeros) and its missing hash then failed the duplicate calibration."""
    catalog, _, _ = trained
    for split, take in (("train", slice(0, 2)), ("val", slice(2, 3)), ("test", slice(3, 4))):
        for category in ("relogio_feminino", "x_bolsa_feminina"):
            folder = tmp_path / "c" / split / category
            folder.mkdir(parents=True)
            for photo in sorted((catalog / category).glob("*.jpg"))[take]:
                shutil.copyfile(photo, folder / photo.name)
    (tmp_path / "c" / "train" / "relogio_feminino" / "broken.jpg").write_bytes(b"not a photo")
    # a category with photos in val and test only: no class, left out without a word before
    for split, photo in zip(("val", "test"), sorted((catalog / "salto_feminino").glob("*.jpg")),
                            strict=False):
        (tmp_path / "c" / split / "salto_feminino").mkdir()
        shutil.copyfile(photo, tmp_path / "c" / split / "salto_feminino" / photo.name)
    # a photo at the top, in no split: left out, and now said (it was left out silently)
    shutil.copyfile(sorted((catalog / "relogio_feminino").glob("*.jpg"))[-1],
                    tmp_path / "c" / "solta.jpg")
    summary = json.loads(run("train", tmp_path / "c", "--out", tmp_path / "m", "--json",
                             env=env))
    assert summary["unsplit_photos"] == [{"product_id": "solta.jpg", "reason": "at the top, "
                                          "in none of the split folders"}]
    assert "1 photo(s) are in no split folder and were left out of training:" in (
        tmp_path / "m" / "report.md").read_text()
    assert summary["untrained_categories"] == {"salto_feminino": 2}
    assert "salto_feminino" not in summary["classes"] and summary["test"]["n"] == 2
    assert ("2 photo(s) of 1 category with no photo in the training split were left out of "
            "training and of the test figures: salto_feminino (2).") in (
                tmp_path / "m" / "report.md").read_text()
    assert [p["product_id"] for p in summary["unreadable_photos"]] == [
        "train/relogio_feminino/broken.jpg"]
    assignment = json.loads((tmp_path / "m" / "split.json").read_text())["assignment"]
    assert "train/relogio_feminino/broken.jpg" not in assignment
    assert summary["split"]["train"] == 4 and summary["class_counts"]["train"] == {
        "relogio_feminino": 2, "x_bolsa_feminina": 2}
    # evaluate names the photo in no split too (it was dropped without a word)
    (tmp_path / "c" / "train" / "relogio_feminino" / "broken.jpg").unlink()
    report = json.loads(run("evaluate", tmp_path / "c", "--model", tmp_path / "m", "--json",
                            env=env))
    assert report["unsplit_photos"] == ["solta.jpg"]
    text = " ".join(run("evaluate", tmp_path / "c", "--model", tmp_path / "m", env=env).split())
    assert "1 photo(s) in none of the split folders left out: solta.jpg." in text


def without_seconds(value):
    """``value`` with every "seconds" entry left out (they differ from run to run)."""
    if isinstance(value, dict):
        return {k: without_seconds(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [without_seconds(v) for v in value]
    return value


@pytest.mark.parametrize("where", ["checkpoint", "report"])
def test_a_disk_that_fills_up_while_training_is_one_sentence(trained, pair, tmp_path, env,
                                                             monkeypatch, where):
    """A full disk while writing a checkpoint (torch says so with a RuntimeError of its own)
    or the report was a traceback; now one sentence, and the earlier model stays."""
    import errno
    import shutil as shutil_module

    import torch

    import vitrine.report

    _, model, _ = trained
    shutil.copytree(model, tmp_path / "m")
    before = {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir() if p.is_file()}
    if where == "checkpoint":
        def full_save(obj, path, *args, **kwargs):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")

        monkeypatch.setattr(torch, "save", full_save)
        usage = shutil_module.disk_usage(tmp_path)
        monkeypatch.setattr(shutil_module, "disk_usage",
                            lambda path: usage._replace(free=4096))
    else:
        def full_write(*args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(vitrine.report, "write_outputs", full_write)
    from typer.testing import CliRunner

    from vitrine.cli import app

    result = CliRunner().invoke(app, ["train", str(pair), "--out", str(tmp_path / "m")],
                                env=env)
    from vitrine.errors import VitrineError

    # in-process the error reaches the runner; the entry point prints it as one sentence
    assert isinstance(result.exception, VitrineError), result.output
    message = str(result.exception)
    assert message.startswith("cannot write the model in")
    assert "No space left on device" in message and "free disk space" in message
    assert {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_evaluate_goes_on_past_a_chunk_none_of_whose_photos_can_be_read(trained, tmp_path,
                                                                       weights_path,
                                                                       monkeypatch):
    """The trained model's photos are embedded 256 at a time, and a chunk of which not one
    photo decoded (the 257th photo of a catalogue, unreadable) still stopped `evaluate --model`
    with "none of them could be decoded"."""
    import torch

    from vitrine import model_eval
    from vitrine.catalog import Product
    from vitrine.config import Settings
    from vitrine.errors import CatalogError
    from vitrine.trained import load_model

    catalog, model_dir, _ = trained
    model = load_model(model_dir)
    good = [Product(p.stem, p, category=p.parent.name)
            for p in sorted(catalog.glob("*/*.jpg"))[:3]]
    bad = []
    for name in ("a", "b"):
        (tmp_path / f"{name}.jpg").write_bytes(b"not a photo")
        bad.append(Product(name, tmp_path / f"{name}.jpg", category="x"))
    settings = Settings(weights=weights_path)
    monkeypatch.setattr(model_eval, "CHUNK", 3)  # the bad photos: a chunk of their own
    from vitrine import train_data

    chunks, real_pass = [], train_data.frozen_pass
    monkeypatch.setattr(train_data, "frozen_pass", lambda net, paths, *a, **k: (
        chunks.append(len(paths)), real_pass(net, paths, *a, **k))[1])
    outputs, failed = model_eval.trained_outputs(model, good + bad, settings,
                                                 show_progress=False)
    assert chunks == [3, 2]  # (the good photos, then the bad ones alone)
    alone, none = model_eval.trained_outputs(model, good, settings, show_progress=False)
    assert [i for i, _ in failed] == [3, 4] and none == []
    assert all(len(v) == 5 and torch.allclose(v[:3], alone[k]) for k, v in outputs.items())
    with pytest.raises(CatalogError, match=r"none of the 2 photos could be read \(the first, "
                                           r".*a\.jpg: not a recognised image format\)"):
        model_eval.trained_outputs(model, bad, settings, show_progress=False)


def test_the_report_says_why_a_class_is_untested_and_the_whole_time(trained, tmp_path):
    """A pre-split catalogue's category with no photo in its test folder was "not tested (no
    test photo; too few photos to spare one)", however many photos it had; and the run's
    total left out the figures (200 classes' confusion matrix: 4 of its 6 minutes)."""
    import time

    from vitrine.report import markdown_report, write_outputs

    _, model, _ = trained
    summary = json.loads((model / "summary.json").read_text())
    name = next(iter(summary["test"]["per_class"]))
    summary["test"]["per_class"][name]["support"] = 0
    assert ("Not tested (no test photo; too few different photos to spare one, or only "
            f"copies of other categories' photos, which train): {name};"
            in markdown_report(summary))
    summary["split"]["source"] = "folders"
    assert (f"Not tested (the test folder holds none of their photos): {name};"
            in markdown_report(summary))
    summary["split"]["left_out_of_test"] = ["test/a/1.jpg"]  # (helper-130: "none" was false)
    assert (f"Not tested (the test folder holds none of their photos, or only copies of "
            f"photos in train or val (left out)): {name};" in markdown_report(summary))
    write_outputs(tmp_path, summary, started=time.perf_counter() - 1000)
    written = json.loads((tmp_path / "summary.json").read_text())
    assert 1000 <= written["seconds"]["total"] < 1100
    assert f"total {written['seconds']['total']}" in (tmp_path / "report.md").read_text()


def test_the_report_shows_shop_text_as_written_not_as_markdown(trained):
    """A supplier's category `shoes\\n\\n## Injected\\n\\n<img src="http://evil.example/t.png">`
    opened a section of report.md and made any viewer fetch an image from another site;
    `![x](http://…)`, backticks and `<script>` passed through too."""
    from vitrine.report import markdown_report

    _, model, _ = trained
    summary = json.loads((model / "summary.json").read_text())
    evil = ('shoes\n\n## Injected\n\n<img src="http://evil.example/t.png"> '
            '![x](http://e.x/p.png) `t`')
    first = next(iter(summary["test"]["per_class"].values()))
    summary["classes"] = [*summary["classes"], evil]
    summary["test"]["per_class"] = {**summary["test"]["per_class"], evil: first}
    summary["unreadable_photos"] = [{"product_id": f"{evil}/a.jpg", "reason": "damaged"},
                                    {"product_id": "1. first/a.jpg", "reason": "damaged"}]
    summary["classes"].append("_promo_ ~~off~~")
    summary["split"]["crossing_groups"] = [[f"{evil}/a.jpg", "b.jpg"]]
    report = markdown_report(summary)
    assert not any(line.lstrip("- ").startswith("#") and "Injected" in line
                   for line in report.splitlines())
    for raw in ("<img", "![x](", "`t`"):
        assert raw not in report.replace("\\<", "").replace("\\[", "").replace("\\`", ""), raw
    assert r"\<img src=" in report and r"!\[x\](http://e.x/p.png)" in report
    assert "shoes ## Injected" not in report  # (a line break is a space, the # escaped)
    assert r"shoes  \#\# Injected  \<img" in report
    # no emphasis, strike-through or list of the shop's own either (a path lost its "1.")
    assert r"\_promo\_ \~\~off\~\~" in report and r"- 1\. first/a.jpg: damaged" in report
    assert "x_tenis_masculino" in report  # (an underscore inside a word is text)


def test_a_trained_model_starts_without_torch_until_its_files_change(trained, tmp_path,
                                                                    monkeypatch):
    """vitrine.warm: a run of a trained model whose files a run before it loaded starts
    without torch (test_warm.py), with all the model is: its classes, duplicate rule and
    folder; until its files change."""
    import torch

    from vitrine.config import Settings
    from vitrine.embed import Embedder
    from vitrine.errors import WeightsError

    catalog, model = trained[0], tmp_path / "model"
    photo = sorted((catalog / "x_tenis_masculino").glob("*.jpg"))[1]
    shutil.copytree(trained[1], model)
    settings = Settings(model=model, cache_dir=tmp_path / "cache")
    usual = Embedder.from_settings(settings)
    vector = usual.embed_image(photo)  # (exported now)
    started = embed_in_fresh_process(
        {"VITRINE_MODEL": str(model), "VITRINE_CACHE_DIR": str(tmp_path / "cache")}, photo)
    assert not started["torch"] and started["vector"] == vector.tolist()
    assert started["manifest"] == usual.manifest.as_dict()
    assert started["manifest"]["embedding"].startswith("trained:") and started["classes"]
    assert (started["classes"], started["tail"], started["cosine"], started["model_dir"]) == \
        (list(usual.classes), usual.probs_tail, usual.duplicate_cosine, str(usual.model_dir))

    # the command line, with the model in the environment (relative to the folder it runs
    # in): no torch either (checking the setting imported it, helper-173)
    store = tmp_path / "store"
    run("index", catalog, "--store", store, "--model", model, "--json", env={})
    code = ("import sys\nfrom vitrine.cli import main\nsys.argv = ['vitrine', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('torch' in sys.modules, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, "search", "--store", str(store),
                           "--json", str(photo)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={**os.environ, "VITRINE_MODEL": "model",
                                             "VITRINE_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0 and proc.stderr.strip() == "False", proc.stderr
    assert json.loads(proc.stdout)["results"][0]["score"] > 0.99
    # `bench --items` takes the model's dimension from the record (it loaded it with torch)
    proc = subprocess.run([sys.executable, "-c", code, "bench", "--items", "300", "--json"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "VITRINE_MODEL": "model",
                               "VITRINE_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0 and proc.stderr.strip() == "False", proc.stderr
    assert json.loads(proc.stdout)["search"]["dim"] == len(vector)

    monkeypatch.chdir(tmp_path)  # (the folder a relative setting names is recorded whole)
    relative = Embedder._warm(settings.model_copy(update={"model": Path("model")}))
    assert relative.model_dir == usual.model_dir == model.resolve()
    monkeypatch.undo()
    # model.json edited (whatever the edit): the usual start, which records it anew
    with open(model / "model.json", "a") as fh:
        fh.write("\n")
    assert Embedder._warm(settings) is None
    Embedder.from_settings(settings)
    assert Embedder._warm(settings) is not None
    # weights changed after training: refused, as the usual start refuses them, not embedded
    # with the export of the old ones
    state = torch.load(model / "model.pt", map_location="cpu", weights_only=True)
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name] + 0.01
    torch.save(state, model / "model.pt")
    assert Embedder._warm(settings) is None
    with pytest.raises(WeightsError, match="weights changed after training"):
        Embedder.from_settings(settings)
