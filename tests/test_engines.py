"""Inference engines: the ONNX export agrees with torch on real photos, is cached by the model
manifest, and the engine is chosen by the settings without changing the manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vitrine.embed import Embedder
from vitrine.engines import (
    EngineError,
    OnnxEngine,
    TorchEngine,
    cached_export,
    cosines,
    export_onnx,
    make_engine,
    onnx_path,
    onnx_providers,
)

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def onnx_embedder(settings, tmp_path_factory) -> Embedder:
    cache = tmp_path_factory.mktemp("onnx-cache")
    return Embedder.from_settings(settings.model_copy(update={"engine": "onnx",
                                                              "cache_dir": cache}))


@pytest.fixture(scope="module")
def torch_embedder(settings) -> Embedder:
    return Embedder.from_settings(settings.model_copy(update={"engine": "torch"}))


def photos(demo_catalog: Path, n: int = 8) -> list[Path]:
    return sorted(demo_catalog.glob("*/*.jpg"))[::97][:n]


def test_onnx_export_matches_torch_on_real_photos(onnx_embedder, torch_embedder, demo_catalog):
    paths = photos(demo_catalog)
    by_torch = np.stack([r.vector for r in torch_embedder.embed_paths(paths)])
    by_onnx = np.stack([r.vector for r in onnx_embedder.embed_paths(paths)])
    assert isinstance(onnx_embedder.engine, OnnxEngine)
    assert isinstance(torch_embedder.engine, TorchEngine)
    assert cosines(by_torch, by_onnx).min() >= 0.999
    # a single photo (batch of 1) through the dynamic batch axis
    single = onnx_embedder.embed_image(paths[0])
    assert float(single @ by_torch[0]) >= 0.999


def test_engine_does_not_change_the_manifest(onnx_embedder, torch_embedder):
    assert onnx_embedder.manifest == torch_embedder.manifest


def test_export_is_cached_by_manifest(onnx_embedder, torch_embedder):
    assert onnx_embedder.engine.name == "onnx"  # exported on first use (also when run alone)
    path = onnx_path(onnx_embedder.settings.cache_dir, onnx_embedder.manifest)
    assert path.is_file() and not list(path.parent.glob("*.tmp"))
    stamp = path.stat().st_mtime_ns
    again = Embedder(onnx_embedder.spec, {}, onnx_embedder.prep,
                     settings=onnx_embedder.settings, net=torch_embedder.net,
                     manifest=onnx_embedder.manifest)
    assert isinstance(again.engine, OnnxEngine) and path.stat().st_mtime_ns == stamp
    from dataclasses import replace

    other = replace(onnx_embedder.manifest, weights_sha256="0" * 64)
    assert onnx_path(onnx_embedder.settings.cache_dir, other) != path
    # photos are resized before the network: one export serves every resize (each exported
    # the model again); the input's size and normalisation are the network's
    prep = onnx_embedder.manifest.preprocessing
    for change, same in (({"resize": "pad"}, True), ({"size": 256}, False),
                         ({"mean": [0.5, 0.5, 0.5]}, False)):
        other = replace(onnx_embedder.manifest, preprocessing={**prep, **change})
        assert (onnx_path(onnx_embedder.settings.cache_dir, other) == path) is same, change


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


def test_failed_parity_check_leaves_no_file(tmp_path, monkeypatch):
    import vitrine.engines as engines

    monkeypatch.setattr(engines, "PARITY_MIN_COSINE", 1.5)
    with pytest.raises(EngineError, match="disagrees with torch"):
        export_onnx(Tiny(), tmp_path / "tiny.onnx", 32)
    assert list(tmp_path.iterdir()) == []


def test_tiny_export_runs_any_batch(tmp_path):
    path = export_onnx(Tiny(), tmp_path / "tiny.onnx", 32)
    engine = OnnxEngine(path, device=CPU, intra_threads=1)
    x = np.random.default_rng(0).normal(size=(5, 3, 32, 32)).astype(np.float32)
    with torch.inference_mode():
        want = Tiny()(torch.from_numpy(x)).numpy()
    assert engine.run(x).shape == (5, 8)
    assert cosines(want, engine.run(x)).min() >= 0.9999


def test_inter_op_threads_take_effect(tmp_path):
    """VITRINE_INTEROP_THREADS above 1 runs ONNX Runtime in parallel mode with that pool (in
    sequential mode, which it kept, ONNX Runtime makes no inter-op pool: helper-148 saw the
    same threads at 1 and 8); the same answers either way."""
    import onnxruntime as ort

    path = export_onnx(Tiny(), tmp_path / "tiny.onnx", 32)
    x = np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)
    runs = {}
    for inter in (1, 3):
        engine = OnnxEngine(path, device=CPU, intra_threads=1, inter_threads=inter)
        options = engine.session.get_session_options()
        assert options.inter_op_num_threads == inter
        assert options.execution_mode == (ort.ExecutionMode.ORT_PARALLEL if inter > 1
                                          else ort.ExecutionMode.ORT_SEQUENTIAL)
        runs[inter] = engine.run(x)
    assert cosines(runs[1], runs[3]).min() >= 0.9999


def test_onnx_runtime_sends_no_usage_events(tmp_path):
    """ONNX Runtime 1.29+ on Linux queues usage events (model names, hashes) for Microsoft
    under ~/.cache/Microsoft unless ORT_DISABLE_TELEMETRY is set (or CI, which a test run
    has): a shop's server must not, so the engine sets it before loading the library."""
    import os
    import subprocess
    import sys

    path = export_onnx(Tiny(), tmp_path / "tiny.onnx", 32)
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items()
           if k not in ("CI", "ORT_DISABLE_TELEMETRY", "ORT_RUNNING_UNIT_TESTS")}
    code = ("import sys, numpy as np, torch\n"
            "from vitrine.engines import OnnxEngine\n"
            "e = OnnxEngine(sys.argv[1], device=torch.device('cpu'), intra_threads=1)\n"
            "assert e.run(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 8)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, timeout=120, env={**env, "HOME": str(home)})
    assert proc.returncode == 0, proc.stderr
    assert not (home / ".cache" / "Microsoft").exists()


def test_onnx_runtime_missing_or_unloadable_are_told_apart(monkeypatch):
    """"Install it" is the answer only when the package is missing; a library that fails to
    load (too little memory under ``ulimit -v``) says so with the loader's reason."""
    import builtins

    import vitrine.engines as engines

    real_import = builtins.__import__

    def failing(reason: ImportError):
        def fake_import(name, *args, **kwargs):
            if name == "onnxruntime":
                raise reason
            return real_import(name, *args, **kwargs)
        return fake_import

    monkeypatch.setattr(builtins, "__import__",
                        failing(ModuleNotFoundError("No module", name="onnxruntime")))
    with pytest.raises(EngineError, match="needs the onnxruntime package"):
        engines._import_onnxruntime()
    monkeypatch.setattr(builtins, "__import__", failing(ImportError(
        "libonnxruntime.so: failed to map segment from shared object")))
    with pytest.raises(EngineError, match="installed but does not load.*failed to map"):
        engines._import_onnxruntime()
    # (an import that fails without a word, as 1.18.0 under NumPy 2 did: "()" was said)
    monkeypatch.setattr(builtins, "__import__", failing(ImportError("")))
    with pytest.raises(EngineError, match=r"does not load \(ImportError\).*another NumPy"):
        engines._import_onnxruntime()


def test_an_unwritable_model_cache_exports_for_the_run(settings, tmp_path, caplog,
                                                       monkeypatch):
    """A read-only home (a service's ProtectHome) stopped every embedding with "cannot create
    the model cache folder": the model is now exported to a temporary file for the run, with
    a warning, and that file is gone once the session holds the model."""
    import tempfile

    manifest = Embedder.from_settings(settings.model_copy(update={"engine": "torch"})).manifest
    (tmp_path / "afile").write_text("x")
    before = set(Path(tempfile.gettempdir()).glob("vitrine-onnx-*"))
    unwritable = settings.model_copy(update={"engine": "onnx",
                                              "cache_dir": tmp_path / "afile" / "cache"})
    with caplog.at_level("WARNING", logger="vitrine.engines"):
        engine = make_engine(unwritable, Tiny(), manifest, 32)
    assert engine.name == "onnx"
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    with torch.inference_mode():
        assert cosines(Tiny()(torch.from_numpy(x)).numpy(), engine.run(x)).min() >= 0.9999
    assert "cannot create the model cache folder" in caplog.text
    assert "for this run only" in caplog.text
    assert set(Path(tempfile.gettempdir()).glob("vitrine-onnx-*")) == before
    # and where no temporary folder can hold it either (ProtectSystem=strict): one sentence
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "afile"))
    with pytest.raises(EngineError, match="cannot create the model cache folder .* The "
                                          "temporary folder .*afile cannot hold it either"):
        make_engine(unwritable, Tiny(), manifest, 32)


def test_engine_selection_and_cuda_refusals(settings, tmp_path):
    from vitrine.config import Settings

    manifest = Embedder.from_settings(settings.model_copy(update={"engine": "torch"})).manifest
    chosen = make_engine(settings.model_copy(update={"engine": "torch"}), Tiny(), manifest, 32)
    assert chosen.name == "torch"
    with pytest.raises(ValueError):
        Settings(engine="tensorrt")
    assert onnx_providers(CPU, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    cuda = torch.device("cuda")
    assert onnx_providers(cuda, ["CUDAExecutionProvider", "CPUExecutionProvider"])[0] == \
        "CUDAExecutionProvider"
    with pytest.raises(EngineError, match="onnxruntime-gpu"):
        onnx_providers(cuda, ["CPUExecutionProvider"])
    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="no CUDA GPU"):
            make_engine(settings.model_copy(update={"device": "cuda", "cache_dir": tmp_path}),
                        Tiny(), manifest, 32)


def test_trained_embedding_net_exports_too(settings, demo_catalog, tmp_path):
    """A trained network (cut trunk, frozen reference top, head; combined layer) exports."""
    from vitrine.images import Preprocessing, open_image, to_array
    from vitrine.models import get_spec, load_state_dict
    from vitrine.trained_net import TrainedEmbeddingNet, build_trained_net

    spec = get_spec("mobilenet_v2")
    net = build_trained_net(spec, load_state_dict(spec, settings.weights), cut=15,
                            n_classes=3, units=16, dropout=0.1)
    torch.nn.init.normal_(net.head.hidden[1].weight, std=0.05)
    embedding = TrainedEmbeddingNet(net, "imagenet+hidden", 0.5).eval()
    prep = Preprocessing()
    batch = np.stack([to_array(open_image(p), prep) for p in photos(demo_catalog, 3)])
    with torch.inference_mode():
        want = embedding(torch.from_numpy(batch)).numpy()
    engine = OnnxEngine(export_onnx(embedding, tmp_path / "trained.onnx", 224), device=CPU,
                        intra_threads=2)
    got = engine.run(batch)
    assert got.shape == (3, 1280 + 16) and cosines(want, got).min() >= 0.999


def test_own_mobilenet_v2_matches_torchvision(weights_path):
    """vitrine.mobilenet (no torchvision import at run time) has torchvision's layout and,
    with the shared ImageNet weights, its outputs; Vitrine's embedder does not import
    torchvision."""
    import subprocess
    import sys

    from torchvision.models import mobilenet_v2

    from vitrine.mobilenet import MobileNetV2

    state = torch.load(weights_path, map_location="cpu")
    reference, ours = mobilenet_v2(weights=None).eval(), MobileNetV2().eval()
    reference.load_state_dict(state)
    ours.load_state_dict(state, strict=True)
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in reference.state_dict().items()}
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(ours.features(x), reference.features(x))
        assert torch.equal(ours(x), reference(x))
    code = ("import sys; from vitrine.config import Settings; from vitrine.embed import Embedder;"
            f"Embedder.from_settings(Settings(weights={str(weights_path)!r}));"
            "print('torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_damaged_cached_export_is_exported_again(settings, tmp_path, monkeypatch):
    """A cached export whose bytes were damaged but still loaded gave other vectors (cosine
    0.95 to torch) without a word; one without its digest (or another export's) is not
    trusted either. Each is exported again, and then used as it is."""
    manifest = Embedder.from_settings(settings.model_copy(update={"engine": "torch"})).manifest
    chosen = settings.model_copy(update={"engine": "onnx", "cache_dir": tmp_path})
    path = onnx_path(tmp_path, manifest)
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    with torch.inference_mode():
        want = Tiny()(torch.from_numpy(x)).numpy()
    make_engine(chosen, Tiny(), manifest, 32)
    whole = path.read_bytes()
    digest = path.with_name(path.name + ".sha256")
    assert digest.read_text().split() == [__import__("hashlib").sha256(whole).hexdigest()]
    weights = whole.rindex(b"conv.weight")  # (the raw weights follow their name)
    damaged = bytearray(whole)
    damaged[weights + 40: weights + 200] = bytes(160)
    path.write_bytes(bytes(damaged))
    assert cosines(want, OnnxEngine(path, device=CPU, intra_threads=1).run(x)).min() < 0.999
    engine = make_engine(chosen, Tiny(), manifest, 32)
    assert path.read_bytes() == whole
    assert cosines(want, engine.run(x)).min() >= 0.9999
    digest.unlink()
    make_engine(chosen, Tiny(), manifest, 32)
    assert digest.is_file()
    stamp = path.stat().st_mtime_ns
    make_engine(chosen, Tiny(), manifest, 32)  # whole, with its digest: used as it is
    assert path.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, digest.name]
    # readable by the cache's other users as its other files are (the umask's mode)
    import os

    umask = os.umask(0)
    os.umask(umask)
    assert {p.stat().st_mode & 0o777 for p in (path, digest)} == {0o666 & ~umask}
    # one another user wrote (a cache in the temporary folder, where anyone may put one
    # first, with its digest) is not used
    if os.geteuid() == 0:
        os.chown(path, 23456, 23456)
    else:  # pragma: no cover - as root in CI
        import vitrine.engines as engines

        theirs = path.stat().st_uid + 1
        monkeypatch.setattr(engines.os, "geteuid", lambda: theirs)
    assert not cached_export(path)


def test_export_part_files_are_each_process_own_and_a_killed_ones_go(tmp_path):
    """The part file was named by process id: containers sharing a cache volume all run as
    process 1, and loaded or removed each other's ("cannot load ….onnx.1.tmp"). A killed
    export's part file stayed for good; one older than an hour is now removed."""
    import os
    import time

    import vitrine.engines as engines
    from vitrine.files import STALE_PART_S

    path = tmp_path / "tiny.onnx"
    path.write_bytes(b"")
    old = tmp_path / f"tiny.onnx.{os.getpid()}.tmp"  # as an export killed long ago left it
    recent = tmp_path / "tiny.onnx.abc123.tmp"  # another process's, exporting now
    for part in (old, recent):
        part.write_bytes(b"part")
    past = time.time() - STALE_PART_S - 60
    os.utime(old, (past, past))
    names = []
    real_export = torch.onnx.export

    def spy(model, args, f, **kwargs):
        names.append(Path(f).name)
        return real_export(model, args, f, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.onnx, "export", spy)
        export_onnx(Tiny(), path, 32)
        export_onnx(Tiny(), path, 32)  # (as another process of the same id would)
    assert all(n.startswith("tiny.onnx.") and n.endswith(".tmp") for n in names)
    assert len(set(names)) == 2
    assert not old.exists() and recent.exists()
    # also where the cached export is used and nothing is exported (a killed export's
    # process restarted at once, whose next export then never came)
    from vitrine.config import Settings
    from vitrine.embed import ModelManifest

    manifest = ModelManifest("tiny", "0" * 64, {"size": 32}, 8)
    cached = engines.onnx_path(tmp_path / "cache", manifest)
    cached.parent.mkdir(parents=True)
    engines.export_onnx(Tiny(), cached, 32)
    left = cached.with_name(cached.name + ".1.tmp")
    left.write_bytes(b"part")
    os.utime(left, (past, past))
    stamp = cached.stat().st_mtime_ns
    settings = Settings(engine="onnx", cache_dir=tmp_path / "cache")
    assert engines.make_engine(settings, Tiny(), manifest, 32).name == "onnx"
    assert cached.stat().st_mtime_ns == stamp and not left.exists()


def test_a_model_size_not_a_multiple_of_16_exports(tmp_path):
    """A model of input size 200: the export's fixed sides were the probe's (192), and the
    onnx engine failed on every batch of the model's size with a traceback."""
    path = export_onnx(Tiny(), tmp_path / "tiny.onnx", 200)
    x = np.random.default_rng(0).normal(size=(3, 3, 200, 200)).astype(np.float32)
    with torch.inference_mode():
        want = Tiny()(torch.from_numpy(x)).numpy()
    assert cosines(want, OnnxEngine(path, device=CPU, intra_threads=1).run(x)).min() >= 0.9999


def test_a_whole_export_this_onnx_runtime_cannot_load_is_exported_again(settings, tmp_path):
    """helper-160: an export whole by its digest but not loadable here (written by another
    ONNX Runtime or torch sharing the cache) failed every later run with "delete it", not
    saying where it is. It is exported again, over it."""
    import hashlib

    manifest = Embedder.from_settings(settings.model_copy(update={"engine": "torch"})).manifest
    chosen = settings.model_copy(update={"engine": "onnx", "cache_dir": tmp_path})
    path = onnx_path(tmp_path, manifest)
    make_engine(chosen, Tiny(), manifest, 32)
    whole = path.read_bytes()
    path.write_bytes(b"not a model this runtime loads")
    path.with_name(path.name + ".sha256").write_text(
        hashlib.sha256(path.read_bytes()).hexdigest() + "\n")
    assert cached_export(path) is not None  # (whole, by its digest)
    engine = make_engine(chosen, Tiny(), manifest, 32)
    assert path.read_bytes() == whole and engine.run(np.zeros((1, 3, 32, 32), np.float32)).size
    with pytest.raises(EngineError, match=f"cannot load {path} "):
        OnnxEngine(b"junk", device=CPU, intra_threads=1, where=path)


def test_onnx_runtime_refusing_memory_is_the_systems_refusal(tmp_path, monkeypatch):
    """helper-160: ONNX Runtime's own exception for memory it was refused (a batch too
    large under a container's limit) was a traceback, and the API's 500; it is a MemoryError,
    the one sentence that says to lower VITRINE_BATCH_SIZE (a 503 from the API)."""
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument

    from vitrine.errors import resources_refused

    path = tmp_path / "tiny.onnx"
    export_onnx(Tiny(), path, 32)
    engine = OnnxEngine(path, device=CPU, intra_threads=1)

    class Refusing:
        def run(self, *args):
            raise Fail("[ONNXRuntimeError] : 1 : FAIL : BFCArena::AllocateRawInternal "
                               "Failed to allocate memory for requested buffer of size 380534784")

    monkeypatch.setattr(engine, "session", Refusing())
    with pytest.raises(MemoryError, match="Failed to allocate memory") as raised:
        engine.run(np.zeros((1, 3, 32, 32), np.float32))
    assert resources_refused(raised.value)

    class Broken:
        def run(self, *args):
            raise InvalidArgument("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : wrong input")

    monkeypatch.setattr(engine, "session", Broken())
    with pytest.raises(InvalidArgument, match="INVALID_ARGUMENT"):  # (not memory: as it was)
        engine.run(np.zeros((1, 3, 32, 32), np.float32))


def test_an_export_made_afresh_that_does_not_load_says_so(settings, tmp_path, monkeypatch):
    """helper-163: when even a fresh export cannot be loaded, "delete it to export the model
    again" was no advice."""
    import vitrine.engines as engines

    manifest = Embedder.from_settings(settings.model_copy(update={"engine": "torch"})).manifest
    chosen = settings.model_copy(update={"engine": "onnx", "cache_dir": tmp_path})

    def unloadable(*args, **kwargs):
        raise engines.ExportUnloadable("it", "Fail")

    monkeypatch.setattr(engines, "OnnxEngine", unloadable)
    # in the cache, or (a cache that cannot be written, helper-164) for the run only
    for cache in (tmp_path, Path("/proc/vitrine-cache")):
        with pytest.raises(EngineError, match=r"cannot load it \(Fail\), exported afresh; "
                                              "set VITRINE_ENGINE=torch") as raised:
            make_engine(chosen.model_copy(update={"cache_dir": cache}), Tiny(), manifest, 32)
        assert not isinstance(raised.value, engines.ExportUnloadable)


def test_exports_no_run_has_used_for_a_month_leave_the_cache(settings, tmp_path):
    """helper-160: every weights file, input setting and training run left a 9 MB export in
    the cache for good. One no run has used for 30 days goes, with its digest (and so does
    a start record); the one in use stays (its time is renewed), as do recent ones and files
    of other kinds."""
    import os
    import time

    from vitrine.engines import EXPORT_KEEP_S

    manifest = Embedder.from_settings(settings.model_copy(update={"engine": "torch"})).manifest
    chosen = settings.model_copy(update={"engine": "onnx", "cache_dir": tmp_path})
    path = onnx_path(tmp_path, manifest)
    make_engine(chosen, Tiny(), manifest, 32)
    folder = path.parent
    long_ago = time.time() - EXPORT_KEEP_S - 3600
    (folder / "start-old.json").write_text("{}")  # start records (vitrine.warm): as exports
    os.utime(folder / "start-old.json", (long_ago, long_ago))
    (folder / "start-recent.json").write_text("{}")
    for name, age in (("old.onnx", long_ago), ("recent.onnx", time.time() - 3600),
                      ("notes.txt", long_ago)):
        (folder / name).write_bytes(b"x")
        (folder / f"{name}.sha256").write_text("digest\n")
        os.utime(folder / name, (age, age))
        os.utime(folder / f"{name}.sha256", (age, age))
    # a digest written a moment ago, its model not yet in place (an export writes it first)
    (folder / "writing.onnx.sha256").write_text("digest\n")
    # a killed export's part file, of a model no run used since (helper-166)
    (folder / "other.onnx.0123456789abcdef.tmp").write_bytes(b"x")
    os.utime(folder / "other.onnx.0123456789abcdef.tmp", (long_ago, long_ago))
    os.utime(path, (long_ago, long_ago))  # (the one used: last used a month ago)
    make_engine(chosen, Tiny(), manifest, 32)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [path.name, f"{path.name}.sha256", "recent.onnx", "recent.onnx.sha256", "notes.txt",
         "notes.txt.sha256", "writing.onnx.sha256", "start-recent.json"])
    assert time.time() - path.stat().st_mtime < 600
