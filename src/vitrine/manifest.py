"""The identity of the model that made a store's vectors (light: the stores need it, and a
command that only reads a store should not have to load torch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelManifest:
    """Identity of the model that made a store's vectors; two stores agree only if equal."""

    backbone: str
    weights_sha256: str
    preprocessing: dict
    dim: int
    embedding: str = "pooled"
    """The layer that embeds: 'pooled' for a pretrained backbone; a trained model's layer
    (see vitrine.models.EMBEDDING_LAYERS) with its weighting, e.g. 'imagenet+hidden@0.5'."""

    def as_dict(self) -> dict:
        return {"backbone": self.backbone, "weights_sha256": self.weights_sha256,
                "preprocessing": self.preprocessing, "dim": self.dim,
                "embedding": self.embedding}

    @classmethod
    def from_dict(cls, data: dict) -> ModelManifest:
        return cls(backbone=data["backbone"], weights_sha256=data["weights_sha256"],
                   preprocessing=data["preprocessing"], dim=int(data["dim"]),
                   embedding=data.get("embedding", "pooled"))
