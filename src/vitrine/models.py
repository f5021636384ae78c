"""Backbone registry: a name, its weights source, preprocessing and embedding size in one record.

Like timm, each backbone splits ``forward_features`` (feature map) from pooling, so the
embedding is the global-average-pooled feature map, L2-normalised by the embedder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from vitrine.errors import WeightsError
from vitrine.images import Preprocessing


@dataclass(frozen=True)
class BackboneSpec:
    """Everything needed to build one backbone and describe its embeddings."""

    name: str
    embed_dim: int
    build: Callable[[], nn.Module]
    """Builds the full torchvision classifier with random weights."""
    download: Callable[[], dict]
    """Returns the pretrained state_dict from the library's normal download path."""
    features: Callable[[nn.Module], nn.Module]
    """Selects the convolutional trunk (feature map before pooling) of a built model."""
    preprocessing: Preprocessing = field(default_factory=Preprocessing)


def _mobilenet_v2() -> nn.Module:
    from torchvision.models import mobilenet_v2

    return mobilenet_v2(weights=None)


def _mobilenet_v2_download() -> dict:
    from torchvision.models import MobileNet_V2_Weights

    return MobileNet_V2_Weights.IMAGENET1K_V1.get_state_dict(progress=True)


BACKBONES: dict[str, BackboneSpec] = {
    "mobilenet_v2": BackboneSpec(
        name="mobilenet_v2",
        embed_dim=1280,
        build=_mobilenet_v2,
        download=_mobilenet_v2_download,
        features=lambda model: model.features,
    ),
}


def get_spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        known = ", ".join(sorted(BACKBONES))
        raise WeightsError(f"unknown backbone {name!r}; known backbones: {known}.") from None


def load_state_dict(spec: BackboneSpec, weights: Path | None) -> dict:
    """Read a local state_dict file, or download the pretrained one when ``weights`` is None."""
    hint = ("pass a local torchvision state_dict with --weights FILE or the VITRINE_WEIGHTS "
            "setting")
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"weights file {path} does not exist; {hint}.")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
            raise WeightsError(f"weights file {path} cannot be loaded ({type(exc).__name__}); "
                               f"{hint}.") from None
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise WeightsError(f"weights file {path} holds no state_dict; {hint}.")
        return state
    try:
        return spec.download()
    except Exception as exc:  # noqa: BLE001 - network, SSL, disk errors alike
        raise WeightsError(
            f"could not download the pretrained {spec.name} weights ({type(exc).__name__}); "
            f"{hint}."
        ) from None


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
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise WeightsError(f"the weights do not fit {spec.name} ({first}).") from None
    return EmbeddingNet(spec.features(model)).eval()
