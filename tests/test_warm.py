"""Starting without torch (vitrine.warm): a run of the ONNX engine whose model files a run
before it loaded finds their cached export from a start record, without importing torch
(which, with loading the weights, took 1.3 s of a 2.2 s one-photo search). Whatever it
embeds must be what the usual start embeds, and any change to the files, or doubt about the
record, must mean the usual start."""

from __future__ import annotations

import shutil
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


def test_a_second_run_starts_without_torch_and_embeds_the_same(embedder, photo, tmp_path):
    cache = tmp_path / "cache"
    export = onnx_path(embedder.settings.cache_dir, embedder.manifest)
    assert embedder.engine.name == "onnx" and export.is_file()
    (cache / "onnx").mkdir(parents=True)  # (this cache holds the export: not made again)
    for made in (export, export.with_name(export.name + ".sha256")):
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

    # a damaged record (the usual start mends it), or one whose export is gone
    record = warm.record_path(cache, warm.start_key(
        "pretrained", "mobilenet_v2", "crop", weights.read_bytes()))
    assert record in records(cache)
    record.write_text("{")
    assert Embedder._warm(settings) is None
    Embedder.from_settings(settings)
    assert Embedder._warm(settings) is not None
    (cache / "onnx" / export.name).unlink()
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
