"""Settings as an operator sets them: each said with the setting the command reads, refused
before the work it would spoil, and read alike by every command."""

from __future__ import annotations

import hashlib
import shutil
import threading

import pytest

from vitrine.config import Settings, load_settings
from vitrine.errors import TrainingError, VitrineError


def test_train_memory_refused_names_the_batch_setting_train_reads(tmp_path, monkeypatch):
    """Under `ulimit -v` train said to lower VITRINE_BATCH_SIZE, which it does not read: its
    frozen pass reads VITRINE_TRAIN_BATCH_SIZE photos at once (1e6: all of them)."""
    import vitrine.train as train

    def refused(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to "
                           "allocate 525041664 bytes.")

    monkeypatch.setattr(train, "_train", refused)
    (tmp_path / "cat").mkdir()
    with pytest.raises(TrainingError, match=r"lower VITRINE_TRAIN_BATCH_SIZE or "
                                            r"VITRINE_DECODE_WORKERS") as said:
        train.train_catalog(tmp_path / "cat", tmp_path / "model", Settings(),
                            show_progress=False)
    assert "VITRINE_BATCH_SIZE" not in str(said.value)
    assert not (tmp_path / "model").exists()


def test_the_general_memory_sentence_still_names_the_embedding_batch():
    from vitrine.errors import refused_sentence

    said = refused_sentence(MemoryError())
    assert said is not None and "lower VITRINE_BATCH_SIZE or VITRINE_DECODE_WORKERS" in said
    assert refused_sentence(ValueError("out of memory")) is None


def _unreadable_catalogue(folder, monkeypatch) -> None:
    """Two categories of three files in ``folder``, and training's photo reading and
    weights loading made to fail the test if they run."""
    import vitrine.train as train

    def no_reading(*args, **kwargs):
        raise AssertionError("the photos were read")

    monkeypatch.setattr(train, "frozen_pass", no_reading)
    monkeypatch.setattr(train, "load_state_dict", no_reading)
    for category in ("a", "b"):
        (folder / category).mkdir(parents=True)
        for i in range(3):
            (folder / category / f"{i}.jpg").write_bytes(b"not read")


def test_a_validation_fraction_of_0_is_refused_before_any_photo_is_read(tmp_path,
                                                                        monkeypatch):
    """Every photo went through the frozen layers, then: 'the validation split has no photo
    of a category the training split has; add photos or raise VITRINE_TRAIN_VAL_FRACTION'
    (no photo added could help)."""
    import vitrine.train as train

    _unreadable_catalogue(tmp_path / "cat", monkeypatch)
    with pytest.raises(TrainingError, match=r"^setting VITRINE_TRAIN_VAL_FRACTION=0 leaves "
                                            r"no photo to validate on"):
        train.train_catalog(tmp_path / "cat", tmp_path / "model",
                            Settings(train_val_fraction=0.0), show_progress=False)
    # a catalogue with its own val folder needs no fraction; one without it does
    train.no_validation(Settings(train_val_fraction=0.0), {"x": "train", "y": "val"})
    with pytest.raises(TrainingError):
        train.no_validation(Settings(train_val_fraction=0.0), {"x": "train", "y": "test"})
    train.no_validation(Settings(), None)


@pytest.mark.parametrize("photos", [1, 2])
def test_categories_too_small_to_validate_are_refused_before_any_photo_is_read(
        tmp_path, monkeypatch, photos):
    """Every category of one or two photos (each product its own category, say): no seeded
    split holds one out for validation at the default fractions (round(2 x 0.15) is 0), yet
    every photo went through the frozen layers first (33 s for 200 such categories), and the
    sentence then said two photos a category were enough."""
    import vitrine.train as train
    from vitrine.errors import CatalogError

    _unreadable_catalogue(tmp_path / "cat", monkeypatch)
    for category in ("a", "b"):
        for extra in sorted((tmp_path / "cat" / category).glob("*.jpg"))[photos:]:
            extra.unlink()
    with pytest.raises(CatalogError, match=r"no category of .* has photos enough to hold "
                                           r"one out for validation") as said:
        train.train_catalog(tmp_path / "cat", tmp_path / "model", Settings(),
                            show_progress=False)
    assert "a category needs 3 different ones" in str(said.value)
    assert not (tmp_path / "model").exists()
    # a fraction that holds one of two photos out goes on to read them
    if photos == 2:
        with pytest.raises(AssertionError, match="the photos were read"):
            train.train_catalog(tmp_path / "cat", tmp_path / "model",
                                Settings(train_val_fraction=0.3), show_progress=False)


@pytest.mark.parametrize("env, refused", [
    ({"VITRINE_TRAIN_MIN_LR": "0.01"}, "VITRINE_TRAIN_PHASE1_LR=0.001"),
    ({"VITRINE_TRAIN_MIN_LR": "0.001"}, "VITRINE_TRAIN_PHASE1_LR=0.001"),
    ({"VITRINE_TRAIN_MIN_LR": "0.0005"}, "VITRINE_TRAIN_PHASE2_LR=0.0002"),
    ({"VITRINE_TRAIN_PHASE2_LR": "1e-6"}, "VITRINE_TRAIN_PHASE2_LR=1e-06"),
    ({"VITRINE_TRAIN_MIN_LR": "0.0005", "VITRINE_TRAIN_PHASE2_EPOCHS": "0"}, None),
    ({"VITRINE_TRAIN_MIN_LR": "0"}, None)])
def test_a_learning_rate_floor_at_or_above_a_rate_is_refused(tmp_path, monkeypatch, env,
                                                             refused):
    """ReduceLROnPlateau never lowers a rate to a floor above it: the reductions were off
    without a word. Refused by training, before any photo is read; every other command
    reads such settings (a server that an older Vitrine ran with them refused to start
    after the upgrade)."""
    import vitrine.train as train

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()  # (serve, index, search, info: not stopped)
    if refused is None:
        train.floor_below_rates(settings)
        return
    _unreadable_catalogue(tmp_path / "cat", monkeypatch)
    with pytest.raises(TrainingError, match=r"VITRINE_TRAIN_MIN_LR") as said:
        train.train_catalog(tmp_path / "cat", tmp_path / "model", settings,
                            show_progress=False)
    assert refused in str(said.value)
    assert not (tmp_path / "model").exists()


def test_a_learning_rate_floor_of_1_or_more_is_refused_when_read(monkeypatch):
    monkeypatch.setenv("VITRINE_TRAIN_MIN_LR", "1e12")
    with pytest.raises(VitrineError, match=r"VITRINE_TRAIN_MIN_LR.*less than 1"):
        load_settings()


def test_the_floor_below_the_rate_is_what_the_reductions_need():
    """What the rule stands on: with the floor above the rate, no reduction."""
    import torch

    for floor, reduced in ((1e-6, True), (0.01, False)):
        param = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.Adam([param], lr=1e-3)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=0,
                                                             min_lr=floor)
        for _ in range(3):
            plateau.step(1.0)
        assert (optimizer.param_groups[0]["lr"] < 1e-3) is reduced


def test_bench_images_leaves_the_upload_folder_out_as_index_does(tmp_path, demo_catalog,
                                                                 settings):
    """A VITRINE_UPLOAD_DIR inside a split catalogue: index, train and evaluate leave the
    server's photos out; bench --images refused the catalogue (a folder of photos beside
    the splits), and in a plain one measured them as a category."""
    from vitrine.bench import bench_images

    photos = sorted((demo_catalog / "relogio_feminino").glob("*.jpg"))[:3]
    uploads = tmp_path / "cat" / "uploads"
    uploads.mkdir(parents=True)
    data = photos[2].read_bytes()
    (uploads / (hashlib.sha256(data).hexdigest() + ".jpg")).write_bytes(data)
    for split, photo in zip(("train", "test"), photos, strict=False):
        (tmp_path / "cat" / split / "relogio").mkdir(parents=True)
        shutil.copyfile(photo, tmp_path / "cat" / split / "relogio" / photo.name)
    report = bench_images(tmp_path / "cat", settings.model_copy(update={"upload_dir": uploads}))
    assert report["products"] == report["embedded"] == 2


def test_a_demo_out_setting_that_is_a_file_is_said_as_the_setting(tmp_path, cli_here):
    """It said '--out FILE is a file', an option the user had not passed."""
    (tmp_path / "cat").mkdir()
    (tmp_path / "afile").write_text("x")
    proc = cli_here("demo", "--catalog", tmp_path / "cat", "--no-train", "--no-serve",
                    env_extra={"VITRINE_DEMO_OUT": tmp_path / "afile"}, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: setting VITRINE_DEMO_OUT='{tmp_path / 'afile'}' "
                                  "is a file;"), proc.stderr
    # unset, the default folder's name is a file: not said as a setting the user never set
    (tmp_path / "demo-output").write_text("x")
    proc = cli_here("demo", "--catalog", tmp_path / "cat", "--no-train", "--no-serve",
                    env_extra={"VITRINE_DEMO_OUT": None}, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: the demo's default folder 'demo-output' is a "
                                  "file;"), proc.stderr


def test_threads_the_system_refuses_are_one_sentence_not_a_hang(monkeypatch):
    """VITRINE_THREADS=512 under `ulimit -v 3000000`: ONNX Runtime's session waited for a
    thread the system refused, for good, deaf to Ctrl+C and SIGTERM."""
    import vitrine.engines as engines

    real_start = threading.Thread.start
    count = {"n": 0}

    started = []

    def start(self):
        count["n"] += 1
        if count["n"] > 3:
            raise RuntimeError("can't start new thread")
        real_start(self)
        started.append(self)

    monkeypatch.setattr(threading.Thread, "start", start)

    def no_session(*args, **kwargs):
        raise AssertionError("the session was made")

    ort = engines._import_onnxruntime()
    monkeypatch.setattr(ort, "InferenceSession", no_session)
    with pytest.raises(engines.EngineError, match=r"refused a thread to the inference engine "
                                                  r"\(can't start new thread, 3 of 8 "
                                                  r"started\); lower VITRINE_THREADS"):
        engines.OnnxEngine(b"", device="cpu", intra_threads=8)
    assert len(started) == 3 and not any(t.is_alive() for t in started)  # (ended)


def test_threads_the_system_refuses_are_said_before_an_export(settings, tmp_path,
                                                              monkeypatch):
    """The refusal was said only after a model not in the cache yet had been exported (and
    checked against torch): seconds of work, and an export written, for a run that could
    not start."""
    import torch

    import vitrine.engines as engines
    from vitrine.embed import Embedder

    real_start = threading.Thread.start
    count = {"n": 0}

    def start(self):
        count["n"] += 1
        if count["n"] > 2:
            raise RuntimeError("can't start new thread")
        real_start(self)

    def no_export(*args, **kwargs):
        raise AssertionError("the model was exported")

    monkeypatch.setattr(engines, "_export", no_export)
    manifest = Embedder.from_settings(settings.model_copy(update={"engine": "torch"})).manifest
    onnx = settings.model_copy(update={"engine": "onnx", "cache_dir": tmp_path / "cache",
                                       "threads": 4})
    monkeypatch.setattr(threading.Thread, "start", start)
    with pytest.raises(engines.EngineError, match=r"refused a thread to the inference engine "
                                                  r"\(can't start new thread, 2 of 4 "):
        engines.make_engine(onnx, torch.nn.Identity(), manifest, 32)
