"""The backbone registry, known without torch: a name, its weights source, preprocessing and
embedding size in one record. What builds and loads the networks is in
:mod:`vitrine.models`, imported when a backbone is built or downloaded (importing torch
took a second of every command that embeds, most of a search; :mod:`vitrine.warm`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from vitrine.errors import WeightsError, extra_hint
from vitrine.images import Preprocessing

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class BackboneSpec:
    """Everything needed to build one backbone and describe its embeddings."""

    name: str
    embed_dim: int
    build: Callable[[], nn.Module]
    """Builds the full classifier (torchvision's layout) with random weights."""
    download: Callable[[], dict]
    """Returns the pretrained state_dict from the library's normal download path."""
    features: Callable[[nn.Module], nn.Module]
    """Selects the convolutional trunk (feature map before pooling) of a built model."""
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    taps: tuple[int, ...] = ()
    """Blocks whose pooled outputs join the last block's as a trained head's input when
    ``train_taps`` is not set (:class:`TrainedNet`)."""
    hub_file: str = ""
    """The name torch.hub saves the downloaded weights under (its ``checkpoints`` folder),
    known without torch: a run that finds them there may start without it
    (:mod:`vitrine.warm`)."""


def taps_for(spec: BackboneSpec, setting: Sequence[int] | None) -> list[int]:
    """The tapped blocks of a training: the ``train_taps`` setting, or the backbone's."""
    return list(spec.taps if setting is None else setting)


DOWNLOAD_STALL_S = 60
"""Seconds a weights download may wait for the network's next bytes (torch.hub waits for
ever: a stalled connection or proxy hung `index` and `serve` with no word)."""


def _mobilenet_v2() -> nn.Module:
    from vitrine.mobilenet import MobileNetV2

    return MobileNetV2()


def _mobilenet_v2_download() -> dict:
    from vitrine.models import mobilenet_v2_download

    return mobilenet_v2_download()


def _efficientnet_lite0() -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise WeightsError("the efficientnet_lite0 backbone needs Vitrine's efficientnet extra "
                           f"({extra_hint('efficientnet')}).") from None
    return EfficientNet.from_name("efficientnet-lite0")


def _efficientnet_lite0_download() -> dict:
    from vitrine.models import efficientnet_lite0_download

    return efficientnet_lite0_download()


def _efficientnet_lite_trunk(model: nn.Module) -> nn.Module:
    from vitrine.models import efficientnet_lite_trunk

    return efficientnet_lite_trunk(model)


BACKBONES: dict[str, BackboneSpec] = {
    "mobilenet_v2": BackboneSpec(
        name="mobilenet_v2",
        embed_dim=1280,
        build=_mobilenet_v2,
        download=_mobilenet_v2_download,
        features=lambda model: model.features,
        # the outputs of blocks 10-17 (64-320 channels, 14×14 and 7×7) beside the last
        # block's: benchmarks/train_quality.py, results/train_quality.json
        taps=tuple(range(10, 18)),
        hub_file="mobilenet_v2-b0353104.pth",
    ),
    # TensorFlow Lite origin: pixels scaled to [-1, 1]
    "efficientnet_lite0": BackboneSpec(
        name="efficientnet_lite0",
        embed_dim=1280,
        build=_efficientnet_lite0,
        download=_efficientnet_lite0_download,
        features=_efficientnet_lite_trunk,
        preprocessing=Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    ),
}


def get_spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        known = ", ".join(sorted(BACKBONES))
        raise WeightsError(f"unknown backbone {name!r}; known backbones: {known}.") from None


WEIGHTS_HINT = ("pass a local torchvision state_dict with --weights FILE or the "
                "VITRINE_WEIGHTS setting")


def weights_file(weights: Path) -> Path:
    """``weights`` if it names a file; WeightsError with one sentence otherwise."""
    path = Path(weights).expanduser()
    if path.is_dir():
        raise WeightsError(f"weights file {path} is a folder; {WEIGHTS_HINT} (a trained model "
                           "folder goes to --model).")
    if not path.is_file():
        raise WeightsError(f"weights file {path} " + ("is not a regular file" if path.exists()
                                                       else "does not exist")
                           + f"; {WEIGHTS_HINT}.")
    return path
