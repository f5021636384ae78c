"""Starting without torch (vitrine.warm): a run of the ONNX engine whose model files a run
before it loaded finds their cached export from a start record, without importing torch
(which, with loading the weights, took 1.3 s of a 2.2 s one-photo search). Whatever it
embeds must be what the usual start embeds, and any change to the files, or doubt about the
record, must mean the usual start."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import embed_in_fresh_process

from vitrine import warm
from vitrine.backbones import get_spec
from vitrine.config import Settings
from vitrine.embed import Embedder
from vitrine.engines import onnx_path


def records(cache: Path) -> list[Path]:
    return sorted((cache / "onnx").glob(warm.RECORD_GLOB))


@pytest.fixture
def photo(demo_catalog, tmp_path) -> Path:
    """A demo photo made twice as wide as high (so its resizes differ)."""
    from PIL import Image

    with Image.open(sorted((demo_catalog / "x_tenis_masculino").glob("*.jpg"))[0]) as img:
        wide = img.convert("RGB").resize((2 * img.height, img.height))
    wide.save(tmp_path / "wide.jpg")
    return tmp_path / "wide.jpg"


def test_a_second_run_starts_without_torch_and_embeds_the_same(embedder, photo, tmp_path,
                                                               monkeypatch):
    cache = tmp_path / "cache"
    export = onnx_path(embedder.settings.cache_dir, embedder.manifest)
    assert embedder.engine.name == "onnx"
    (cache / "onnx").mkdir(parents=True)  # (this cache holds the export: not made again)
    for made in (export, export.with_name(export.name + ".sha256")):
        if made.is_file():  # (else a read-only home: the first run below exports it)
            shutil.copyfile(made, cache / "onnx" / made.name)
    weights = embedder.settings.weights
    env = {"VITRINE_WEIGHTS": str(weights), "VITRINE_CACHE_DIR": str(cache), "VITRINE_MODEL": ""}
    first, second = embed_in_fresh_process(env, photo), embed_in_fresh_process(env, photo)
    assert first["torch"] and not second["torch"]
    assert second["manifest"] == first["manifest"] == embedder.manifest.as_dict()
    assert second["vector"] == first["vector"]
    assert np.allclose(first["vector"], embedder.embed_image(photo), atol=1e-6)
    assert len(records(cache)) == 1

    settings = Settings(weights=weights, cache_dir=cache)
    started = Embedder._warm(settings)
    assert started is not None and started.net is None
    assert started.manifest == embedder.manifest and started.prep == embedder.prep
    # another resize is another model (with the same export): the usual start
    padded = settings.model_copy(update={"resize": "pad"})
    assert Embedder._warm(padded) is None and Embedder.from_settings(padded).net is not None
    assert Embedder._warm(padded).prep.resize == "pad"
    # other bytes of the same tensors: the usual start (nothing says they are the same)
    copy = tmp_path / "copy.pth"
    torch.save(torch.load(weights, map_location="cpu", weights_only=True), copy)
    assert copy.read_bytes() != weights.read_bytes()
    assert Embedder._warm(settings.model_copy(update={"weights": copy})) is None
    # neither the torch engine nor a GPU start so (a GPU's session is the usual start's)
    for other in ({"engine": "torch"}, {"device": "cuda"}):
        assert Embedder._warm(settings.model_copy(update=other)) is None
    assert len(records(cache)) == 2

    # a record in use has its time renewed (records unused for a month are pruned)
    record = warm.record_path(cache, warm.start_key(
        "pretrained", "mobilenet_v2", "crop", warm.file_digest(weights)[0]))
    assert record in records(cache)
    long_ago = time.time() - 3 * 24 * 3600
    os.utime(record, (long_ago, long_ago))
    assert Embedder._warm(settings) is not None and time.time() - record.stat().st_mtime < 600
    # Vitrine's code changed (an installed version's number does not): the usual start
    monkeypatch.setattr(warm, "code_digest", lambda: "other code")
    assert Embedder._warm(settings) is None
    monkeypatch.undo()
    monkeypatch.setattr(warm, "__version__", "0.0.0")  # (a zip's code is not hashed)
    assert Embedder._warm(settings) is None
    monkeypatch.undo()
    # a record under another record's name, or another user's: not read
    squash = settings.model_copy(update={"resize": "squash"})
    borrowed = warm.record_path(cache, warm.start_key(
        "pretrained", "mobilenet_v2", "squash", warm.file_digest(weights)[0]))
    shutil.copyfile(record, borrowed)
    assert Embedder._warm(squash) is None
    borrowed.unlink()
    if os.geteuid() == 0:
        os.chown(record, 12345, -1)
    else:
        monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + 1)
    assert Embedder._warm(settings) is None
    monkeypatch.undo()
    # a damaged record (the usual start mends it), or one whose export is gone
    record.unlink()
    record.write_text("{")
    assert Embedder._warm(settings) is None
    Embedder.from_settings(settings)
    assert Embedder._warm(settings) is not None
    (cache / "onnx" / export.name).unlink()
    assert Embedder._warm(settings) is None


def test_downloaded_weights_start_without_torch_too(embedder, monkeypatch, tmp_path):
    """Without a weights file set, the record names the file torch.hub downloaded."""
    from dataclasses import replace

    from vitrine import backbones

    hub = tmp_path / "torch" / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth"
    hub.parent.mkdir(parents=True)
    shutil.copyfile(embedder.settings.weights, hub)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    spec = replace(get_spec("mobilenet_v2"),  # (the download: what torch.hub keeps)
                   download=lambda: torch.load(hub, map_location="cpu", weights_only=True))
    monkeypatch.setitem(backbones.BACKBONES, "mobilenet_v2", spec)
    settings = Settings(weights=None, cache_dir=tmp_path / "cache")
    assert Embedder._warm(settings) is None
    usual = Embedder.from_settings(settings)
    assert usual.manifest == embedder.manifest
    _ = usual.engine  # (exported)
    started = Embedder._warm(settings)
    assert started is not None and started.manifest == embedder.manifest
    hub.write_bytes(hub.read_bytes() + b"\0")  # another download: the usual start
    assert Embedder._warm(settings) is None


def test_the_download_is_found_where_torch_hub_keeps_it(monkeypatch, tmp_path):
    """The start record of downloaded weights names the file torch.hub saved them in: found
    as torch.hub finds its folder, and named as torchvision names the download."""
    from urllib.parse import urlparse

    from torchvision.models import MobileNet_V2_Weights

    spec = get_spec("mobilenet_v2")
    url = MobileNet_V2_Weights.IMAGENET1K_V1.url
    assert spec.hub_file == Path(urlparse(url).path).name
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    for env in ({"TORCH_HOME": str(tmp_path / "t")}, {"XDG_CACHE_HOME": str(tmp_path / "x")},
                {"HOME": str(tmp_path / "home")}):
        for name in ("TORCH_HOME", "XDG_CACHE_HOME"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        expected = Path(torch.hub.get_dir()) / "checkpoints" / spec.hub_file
        assert warm.hub_weights(spec) == expected
        assert warm.weights_source(spec, None) is None  # (not downloaded)
        expected.parent.mkdir(parents=True)
        expected.write_bytes(b"weights")
        assert warm.weights_source(spec, None) == expected
    assert warm.hub_weights(get_spec("efficientnet_lite0")) is None
