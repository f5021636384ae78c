"""The identity of the model that made a store's vectors (light: the stores need it, and a
command that only reads a store should not have to load torch)."""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from vitrine.catalog import MODEL_CONFIG, model_config
from vitrine.display import one_line
from vitrine.errors import StoreError


@dataclass(frozen=True)
class ModelManifest:
    """Identity of the model that made a store's vectors; two stores agree only if equal."""

    backbone: str
    weights_sha256: str
    preprocessing: dict
    dim: int
    embedding: str = "pooled"
    """The layer that embeds: 'pooled' for a pretrained backbone; a trained model's layer
    (see vitrine.config.EMBEDDING_LAYERS) with its weighting, e.g. 'imagenet+hidden@0.5'."""

    def __post_init__(self) -> None:
        """Refuse a description of the wrong shape (a damaged or foreign one): a TypeError
        here, which :meth:`read` says in one sentence."""
        texts = (self.backbone, self.weights_sha256, self.embedding)
        if not all(isinstance(t, str) and t for t in texts) or not isinstance(
                self.preprocessing, dict) or isinstance(self.dim, bool) or not isinstance(
                self.dim, int) or self.dim < 1:
            raise TypeError("a model description field has the wrong kind of value")

    def as_dict(self) -> dict:
        return {"backbone": self.backbone, "weights_sha256": self.weights_sha256,
                "preprocessing": self.preprocessing, "dim": self.dim,
                "embedding": self.embedding}

    @classmethod
    def read(cls, text: str, location: object) -> ModelManifest:
        """The manifest a store keeps as JSON; StoreError with one sentence when it is not
        one this Vitrine can read (damaged, or written by another version)."""
        try:
            data = json.loads(text)
        except ValueError:
            what = "it is not JSON"
        else:
            try:
                return cls.from_dict(data)
            except KeyError as exc:
                what = f"it has no {exc}"
            except (ValueError, TypeError, AttributeError):
                what = "a field has the wrong kind of value"
        raise StoreError(f"the model description of the store {location} cannot be read "
                         f"({what}); it was damaged or written by another version of "
                         "Vitrine.")

    @classmethod
    def from_dict(cls, data: dict) -> ModelManifest:
        return cls(backbone=data["backbone"], weights_sha256=data["weights_sha256"],
                   preprocessing=data["preprocessing"], dim=data["dim"],
                   embedding=data.get("embedding", "pooled"))

    def _described(self) -> dict[str, object]:
        prep = self.preprocessing
        return {"backbone": self.backbone, "weights": self.weights_sha256[:12],
                "input size": prep.get("size"), "resize": prep.get("resize"),
                "normalisation": f"mean {prep.get('mean')}, std {prep.get('std')}",
                "dimension": self.dim,
                "embedding": self.embedding_kind()}

    def embedding_kind(self) -> str:
        """The vectors' kind in words: "pretrained", or "trained (hidden+probs@0.8)"."""
        return ("pretrained" if self.embedding == "pooled" else
                f"trained ({self.embedding.removeprefix('trained:')})")

    def differences(self, other: ModelManifest, mine: str = "in the store",
                    theirs: str = "here") -> str:
        """What differs from ``other`` (this one is the store's), in words: "resize pad
        in the store, crop here" (``mine``, ``theirs``: where each is)."""
        ours, others = self._described(), other._described()
        parts = [f"{k} {ours[k]} {mine}, {others[k]} {theirs}" for k in ours
                 if ours[k] != others[k]]
        return "; ".join(parts) or (f"preprocessing {self.preprocessing} {mine}, "
                                    f"{other.preprocessing} {theirs}")


def kind_mismatch(location: object, stored: ModelManifest | None, model_folder: str | None,
                  model: Path | None, backbone: str) -> StoreError | None:
    """The mismatch of a store made by a trained model used without one (``model`` None), or
    the reverse, or by another pretrained ``backbone`` than this run's (VITRINE_BACKBONE),
    said before this run's model is built: building it took seconds for an answer known
    already, and without local weights it tried to download them, to say it could not (no
    word of the store's model: helper-176; an efficientnet_lite0 store searched with the
    default backbone, helper-236)."""
    if stored is None:
        return None
    if (stored.embedding != "pooled") != (model is not None):
        return mismatch_error(location, stored, None, model_folder)
    if model is None and stored.backbone != backbone:
        return _other_model(location, f"backbone {stored.backbone} in the store, {backbone} "
                            f"here", f"set VITRINE_BACKBONE={stored.backbone} and the "
                            "--weights this store was indexed with.")
    return None


def _other_model(location: object, differs: str, advice: str) -> StoreError:
    """A store built with another model than this run's: what ``differs``, and after how to
    use this model, the ``advice`` for using the store's own."""
    return StoreError(
        f"the store {location} was built with a different model than this run "
        f"({differs}); to use this model, index into a new --store with "
        f"it (and search and serve that store with it), or {advice}")


def _same_folder(here: Path, recorded: str) -> bool:
    """Whether ``here`` is the folder ``recorded`` names, however either is written (``..``,
    a link); by name when one is gone."""
    try:
        return os.path.samefile(here, recorded)
    except OSError:
        return os.path.abspath(here) == os.path.abspath(recorded)


def _trained_since(model_folder: str, stored: ModelManifest) -> bool:
    """Whether the trained model in ``model_folder`` has other weights than the store's (trained
    again since): the store's own folder would not embed as the store does, so it is no advice
    to pass it (its model.json, read without loading the model; unreadable: not known)."""
    sha = model_config(Path(model_folder) / MODEL_CONFIG).get("weights_sha256")
    return isinstance(sha, str) and sha != stored.weights_sha256


def mismatch_error(location: object, stored: ModelManifest, current: ModelManifest | None,
                   model_folder: str | None = None, here: Path | None = None) -> StoreError:
    """The error for a store whose vectors ``stored``'s model made, used with ``current``'s:
    what differs, and how to go on (the trained model's folder, ``model_folder``, where the
    store recorded it: after the demo, `vitrine search --store demo-output/store` was told to
    pass "the --model this store was indexed with", not which: helper-162). ``here``: the
    folder of this run's model; the store's own, trained again since (helper-164).
    ``current`` None: this run's model is not built, only known to be of the other kind
    (:func:`kind_mismatch`)."""
    trained = stored.embedding != "pooled"
    differs = stored.differences(current) if current is not None else (
        "a trained model's vectors in the store, the pretrained backbone here" if trained
        else "the pretrained backbone's vectors in the store, a trained model here")
    if model_folder and (here is not None and _same_folder(here, model_folder) or trained
                         and current is None and _trained_since(model_folder, stored)):
        return StoreError(
            f"the store {location} was indexed with the model in {one_line(model_folder)} "
            f"before it was trained again ({differs}); index the "
            "catalogue into a new --store with it (or delete this store and index it again; "
            "products added through the API are not in the catalogue, and go with it), "
            "or restore the model it was indexed with.")
    model = (f"--model {shlex.quote(one_line(model_folder))} (or VITRINE_MODEL), the model "
             "this store was indexed with" if model_folder else
             "the --model (or VITRINE_MODEL) this store was indexed with")
    return _other_model(location, differs, "pass " + (
        f"{model}." if trained else "the --weights and settings this store was indexed with "
        "(no --model, and VITRINE_MODEL unset)."))
