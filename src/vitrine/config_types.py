"""The value types of :class:`vitrine.config.Settings`' fields (their ranges: a value out of
one is refused in one sentence) and the names some of them are chosen from, known without
torch."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from pydantic_settings import NoDecode

ResizePolicy = Literal["pad", "crop", "squash"]
Positive = Annotated[int, Field(ge=1)]
Count = Annotated[int, Field(ge=0)]
Threads = Annotated[int, Field(ge=0, le=1024)]
"""Threads or workers (0: the default); 100,000 made torch crash the process."""
Breadth = Annotated[int, Field(ge=1, le=1_000_000)]
"""A FAISS search or build breadth: FAISS takes a 32-bit int (1e11 was a traceback)."""
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
"""A share of the photos, a dropout or a smoothing: at least 0, below 1."""
Rate = Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)]
"""A learning rate: above 0, at most 1 (larger ones only make the loss diverge)."""
NonNegative = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Cosine = Annotated[float, Field(ge=-1.0, le=2.0, allow_inf_nan=False)]
"""A cosine-similarity threshold, finite (NaN would let no pair pass): from -1 (no pair fails
it) to 2 (above 1 no pair passes: a calibration may say 1.008)."""
LAYER_PARTS = ("imagenet", "pooled", "hidden", "probs")
"""Outputs a trained model can embed with: 'imagenet' is the frozen pretrained pooled
features, 'pooled' the fine-tuned pooled features, 'hidden' the head's dense layer (with a
linear head, ``train_head_units`` 0, its input: the last and the tapped blocks' pooled
features), 'probs' the class probabilities (softmax)."""
EMBEDDING_LAYERS = (*LAYER_PARTS, "imagenet+hidden", "pooled+hidden", "imagenet+probs",
                    "pooled+probs", "hidden+probs")
"""Embedding layers: one part, or 'a+b', both L2-normalised and weighted so that
cosine = w·cos_a + (1 − w)·cos_b."""
StrList = Annotated[list[str], NoDecode]
"""A list setting: a JSON list (``["a", "b"]``) or comma-separated (``a,b``) in the
environment (NoDecode: pydantic-settings would otherwise demand JSON and fail with a
traceback on ``a``)."""


BACKBONE_NAMES = ("mobilenet_v2", "efficientnet_lite0")
"""The backbones of ``vitrine.models.BACKBONES``, known here without torch."""
