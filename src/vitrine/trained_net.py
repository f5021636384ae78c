"""The networks `vitrine train` fits and embeds with: the backbone's trunk cut into frozen and
trained blocks, a new classifier head, an optional companion backbone, and the embedding
layers read from them (``hidden``, ``probs``, tapped blocks, their fusions)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import nn

from vitrine.config import EMBEDDING_LAYERS
from vitrine.errors import WeightsError
from vitrine.images import Preprocessing
from vitrine.models import BackboneSpec, EmbeddingNet, get_spec, load_into, load_state_dict

# LAYER_PARTS and EMBEDDING_LAYERS (vitrine.config, which checks the setting) name the layers


class BlockError(WeightsError):
    """A fine-tuning start or a tapped block the backbone does not have; ``setting`` names
    the training setting that gives it (a model.json gives it when a model is loaded)."""

    def __init__(self, sentence: str, setting: str):
        super().__init__(sentence)
        self.setting = setting


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
            raise BlockError(f"fine-tuning must start at a block between 1 and "
                             f"{len(trunk) - 1}, not {cut}.", "VITRINE_TRAIN_FINE_TUNE_FROM")
        taps = sorted(set(taps))
        if any(not 0 < t < len(trunk) - 1 for t in taps):
            raise BlockError(f"tapped blocks must lie between 1 and {len(trunk) - 2} (the "
                             f"last block is always used), not {taps}.", "VITRINE_TRAIN_TAPS")
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
        load_into(model, state, spec.name)
    extra, extra_dim = None, 0
    if companion:
        other = get_spec(companion)
        body = other.build()
        if state is not None:
            load_into(body, load_state_dict(other, None), other.name)
        extra = Companion(EmbeddingNet(other.features(body)), prep or spec.preprocessing,
                          other.preprocessing)
        extra_dim = other.embed_dim
    return TrainedNet(spec.features(model), cut, spec.embed_dim, n_classes, units, dropout,
                      extra, extra_dim, taps)


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
