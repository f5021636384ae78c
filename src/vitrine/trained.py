"""A trained model folder: ``model.pt`` (the whole network's state_dict) and ``model.json``
(what it is: backbone, where it was cut, classes, head, embedding layer, preprocessing).

Loading needs neither the pretrained weights nor the training data.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from vitrine.catalog import (
    MODEL_CONFIG,
    MODEL_FORMAT,
    MODEL_WEIGHTS,
    is_model_config,
    not_a_model,
)
from vitrine.config import EMBEDDING_LAYERS
from vitrine.errors import VitrineError, WeightsError
from vitrine.images import Preprocessing
from vitrine.jsonfile import write_json
from vitrine.models import BackboneSpec, get_spec, state_hash
from vitrine.split import FINGERPRINTS
from vitrine.trained_net import TrainedEmbeddingNet, TrainedNet, build_trained_net, layer_dim
from vitrine.warm import file_digest, trained_key, unchanged

MODEL_FILE = MODEL_WEIGHTS
CONFIG_FILE = MODEL_CONFIG
FORMAT = MODEL_FORMAT + "1"
STAGE_MARK = ".vitrine-stage"
"""The file that marks a hidden folder inside --out as a training run's stage."""
ASIDE = ".previous"
"""The folder in a stage that the earlier model's files are moved into as the new ones go
in; made only once the new model is whole."""
STAGE_SCRATCH = ".scratch"
"""A folder in the stage for a run's own temporary files (the training cache): never moved
into the model folder, and removed with the stage a killed run left (beside it, no later
run knew it)."""
MODEL_OUTPUTS = frozenset({
    MODEL_FILE, CONFIG_FILE, "split.json", FINGERPRINTS, "summary.json", "metrics.json",
    "history.json", "history.csv", "history.png", "confusion_matrix.png", "misclassified.png",
    "report.md", "checkpoints"})
"""Everything `vitrine train` writes in a model folder: what a new model replaces there (any
other file in the folder is the user's and stays)."""


UNCALIBRATED_DUPLICATE_COSINE = 0.99
"""The duplicate rule's embedding cosine for a model folder without a calibrated one (written
before 2026-12-02): no two different products of the demo catalogue reach it with the demo's
trained model (the closest pair with agreeing pHashes: 0.980 without the probabilities)."""


@dataclass
class TrainedModel:
    """A loaded trained model; ``config`` is the content of ``model.json``."""

    spec: BackboneSpec
    net: TrainedNet
    config: dict
    prep: Preprocessing
    weights_sha256: str
    start_key: str = ""
    """Names the model's start record, made of the bytes of the two files it was loaded
    from (:mod:`vitrine.warm`); empty when they changed while it loaded."""

    @property
    def classes(self) -> list[str]:
        return list(self.config["classes"])

    @property
    def layer(self) -> str:
        return self.config["embedding"]["layer"]

    @property
    def layer_weight(self) -> float:
        return float(self.config["embedding"]["weight"])

    @property
    def duplicate_cosine(self) -> float:
        """The duplicate rule's embedding cosine for this model's vectors: calibrated by
        ``vitrine train`` (``duplicates`` in model.json); for a folder written before that,
        :data:`UNCALIBRATED_DUPLICATE_COSINE`."""
        calibrated = (self.config.get("duplicates") or {}).get("embed_cosine")
        return UNCALIBRATED_DUPLICATE_COSINE if calibrated is None else float(calibrated)

    def embedding_net(self, layer: str | None = None,
                      weight: float | None = None) -> TrainedEmbeddingNet:
        return TrainedEmbeddingNet(self.net, layer or self.layer,
                                   self.layer_weight if weight is None else weight)

    @property
    def manifest(self):
        from vitrine.manifest import ModelManifest

        layer, weight = self.layer, self.layer_weight
        name = f"{layer}@{weight:g}" if "+" in layer else layer
        backbone = "+".join(filter(None, (self.spec.name, self.config.get("companion"))))
        return ModelManifest(backbone, self.weights_sha256, self.prep.as_dict(),
                             layer_dim(layer, self.net), embedding=f"trained:{name}")


@contextlib.contextmanager
def staged_model_dir(out_dir: Path) -> Iterator[Path]:
    """A new hidden folder inside ``out_dir`` to write a model into (beside it, on a volume
    or share mounted at ``out_dir``, or a bind mount, the final renames could not cross and
    failed after the whole run; a folder above that cannot be written failed likewise).
    When the block ends normally its files replace the earlier model's in ``out_dir`` (only
    the files a model writes, :data:`MODEL_OUTPUTS`: anything else the user keeps there
    stays); on an error or Ctrl+C it is removed and ``out_dir`` stays as it was (the folders
    this run created are removed). ``out_dir`` must be new, empty or a model folder: any
    other folder is refused. ``out_dir`` is locked for the whole run, so a second `vitrine
    train` to it is refused. Checked before any work."""
    out_dir = Path(out_dir).expanduser().resolve()  # '--out .' has a name and a parent
    own = re.compile(rf"\.{re.escape(out_dir.name)}\.[a-z0-9_]{{8}}\.partial")

    def stale(folder: Path) -> list[Path]:
        """The stages a run to ``out_dir`` killed outright (SIGKILL, out of memory) left in
        ``folder`` (mkdtemp's names: 8 of [a-z0-9_]; removed only with their mark)."""
        with contextlib.suppress(OSError):
            return [p for p in folder.iterdir()
                    if own.fullmatch(p.name) and (p / STAGE_MARK).is_file()]
        return []

    first_made = out_dir  # the outermost folder this run makes (removed if it fails)
    while not first_made.parent.exists() and first_made.parent != first_made:
        first_made = first_made.parent
    created = not out_dir.exists()
    if not created:
        if not out_dir.is_dir():
            raise VitrineError(f"--out {out_dir} is a file; name a folder for the model.")
        left = set(stale(out_dir))
        # (a swap a killed run left half-done: some of a model's files, finished below)
        if any(p not in left for p in out_dir.iterdir()) and not is_model_config(
                out_dir / CONFIG_FILE) and not any((p / ASIDE).is_dir() for p in left):
            raise VitrineError(f"--out {out_dir} holds other files; name a new or empty "
                               "folder, or a model folder to replace.")
        if not os.access(out_dir, os.W_OK | os.X_OK):
            raise VitrineError(f"cannot write to the model folder {out_dir} (permission "
                               "denied).")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        lock = _lock_model_dir(out_dir)
    except OSError as exc:
        raise VitrineError(f"cannot create the model folder {out_dir} "
                           f"({exc.strerror or exc}).") from None
    stage = None
    try:
        for folder in (out_dir.parent, out_dir):  # the lock says no such run is alive (a
            for leftover in stale(folder):  # Vitrine before 5 Dec 2026 staged beside it)
                if folder == out_dir and (leftover / ASIDE).is_dir():
                    _finish_swap(leftover, out_dir)  # (killed mid-swap: its model is whole)
                shutil.rmtree(leftover, ignore_errors=True)
        try:
            stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial",
                                          dir=out_dir))
        except OSError as exc:
            raise VitrineError(f"cannot create the model folder {out_dir} "
                               f"({exc.strerror or exc}).") from None
        umask = os.umask(0)
        os.umask(umask)
        stage.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide the model from other users
        (stage / STAGE_MARK).touch()  # a later run removes it only with this mark
        yield stage
        try:  # into the folder itself (it may be the shell's current one)
            _swap_contents(stage, out_dir)
        except OSError as exc:
            raise VitrineError(f"cannot replace the model in {out_dir} "
                               f"({exc.strerror or exc}); it is left as it was.") from None
        shutil.rmtree(stage, ignore_errors=True)
    except BaseException:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
        if created:  # each folder made, only if still empty
            for folder in (out_dir, *out_dir.parents):
                with contextlib.suppress(OSError):
                    folder.rmdir()
                if folder == first_made:
                    break
        raise
    finally:
        os.close(lock)


def _lock_model_dir(out_dir: Path) -> int:
    """Lock ``out_dir`` itself (an flock on the folder, released when the run ends): a second
    `vitrine train` to the same folder is refused instead of both reporting success and the
    first model being lost."""
    fd = os.open(out_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise VitrineError(f"another `vitrine train` is writing the model folder {out_dir}; "
                           "wait for it to end or name another --out.") from None
    return fd


def _swap_contents(stage: Path, out_dir: Path) -> None:
    """Put ``stage``'s files in ``out_dir`` in place of the earlier model's (the entries of
    :data:`MODEL_OUTPUTS`), which end up in ``stage``; the folder's other files stay.
    Renames only, undone if one fails or a stop signal (Ctrl+C) comes between two: by where
    each file is, not by a log of the renames, which a signal could cut between a rename and
    its entry (the earlier model, moved aside, then went with the stage)."""
    aside = stage / ASIDE
    old = [p.name for p in out_dir.iterdir() if p.name in MODEL_OUTPUTS]
    new = [p.name for p in stage.iterdir() if p.name not in (STAGE_MARK, STAGE_SCRATCH)]
    # the new model's names, then the folder that says the swap began: a run killed
    # outright (SIGKILL, a power cut) between two renames is finished by the next
    # (_finish_swap), where its stage, the earlier model aside in it, was deleted and the
    # folder left without a model (or refused as holding other files)
    (stage / STAGE_MARK).write_text(json.dumps(sorted(new)))
    aside.mkdir()
    try:
        for name in old:
            os.replace(out_dir / name, aside / name)
        for name in new:
            os.replace(stage / name, out_dir / name)
    except BaseException:  # (a second signal meanwhile is ignored: cli_run)
        for name in new:  # the new files moved in go back to the stage
            if not os.path.lexists(stage / name) and os.path.lexists(out_dir / name):
                os.replace(out_dir / name, stage / name)
        for name in os.listdir(aside):  # and the earlier ones come back
            os.replace(aside / name, out_dir / name)
        aside.rmdir()  # (undone: nothing for a later run to finish)
        raise


def _finish_swap(stage: Path, out_dir: Path) -> None:
    """Finish the swap of a run killed between two of its renames (``stage`` holds the
    :data:`ASIDE` folder, made once its model was whole): the earlier model's files still in
    ``out_dir`` go aside, the new ones still in ``stage`` go in."""
    aside = stage / ASIDE
    try:
        names = set(json.loads((stage / STAGE_MARK).read_text()))
    except (OSError, ValueError, TypeError):
        names = None
    new = [p.name for p in stage.iterdir() if p.name not in (STAGE_MARK, STAGE_SCRATCH, ASIDE)]
    for name in os.listdir(out_dir):  # the earlier model's, not moved aside yet
        if name in MODEL_OUTPUTS and (name in new or names is not None and name not in names):
            os.replace(out_dir / name, aside / name)
    for name in new:
        os.replace(stage / name, out_dir / name)


def write_model(out_dir: Path, net: TrainedNet, config: dict) -> str:
    """Save the network and its description; returns the weights' sha256."""
    from vitrine.train_loop import save_state  # (not imported where models are only read)

    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    digest = state_hash(state)
    save_state(state, out_dir / MODEL_FILE)
    config = {"format": FORMAT, **config, "weights_sha256": digest}
    write_json(out_dir / CONFIG_FILE, config, indent=2)
    return digest


def _check_cosine(value: object) -> None:
    """A ValueError unless ``value`` (the calibrated duplicate cosine) is None or what the
    ``VITRINE_DUP_EMBED_COSINE`` setting accepts (NaN would make no photo a duplicate, -inf
    every photo)."""
    from pydantic import TypeAdapter, ValidationError

    from vitrine.config import Cosine

    if value is None:
        return
    try:
        TypeAdapter(Cosine).validate_python(value)
    except ValidationError:
        raise ValueError(f"duplicates.embed_cosine {value!r} is not a finite number from -1 "
                         "to 2") from None


def load_model(model_dir: Path) -> TrainedModel:
    """Load a folder written by ``vitrine train``; raises WeightsError with one sentence."""
    model_dir = Path(model_dir).expanduser()
    config_path, weights_path = model_dir / CONFIG_FILE, model_dir / MODEL_FILE
    if why := not_a_model(model_dir):
        raise WeightsError(why)
    try:
        config_bytes = config_path.read_bytes()
        config = json.loads(config_bytes.decode("utf-8"))
        if config.get("format") != FORMAT:
            kind = config.get("format")
            if isinstance(kind, str) and kind.startswith(MODEL_FORMAT):  # (another version:
                # "not a valid model description (ValueError: unknown format)" said neither)
                raise WeightsError(f"{config_path} is a model of format {kind}, which this "
                                   f"Vitrine does not read (it reads {FORMAT}): another "
                                   "version of Vitrine trained it; use that version, or "
                                   "train the model again with this one.")
            raise ValueError("unknown format")
        spec = get_spec(config["backbone"])
        prep_cfg = config["preprocessing"]
        prep = Preprocessing(size=int(prep_cfg["size"]), resize=prep_cfg["resize"],
                             mean=tuple(prep_cfg["mean"]), std=tuple(prep_cfg["std"]))
        net = build_trained_net(spec, None, int(config["cut"]), len(config["classes"]),
                                int(config["head_units"]), float(config["dropout"]),
                                config.get("companion") or "", prep,
                                [int(t) for t in config.get("taps") or []])
        layer = config["embedding"]["layer"]
        weight = float(config["embedding"]["weight"])
        if not 0.0 < weight < 1.0:  # (as the setting; a square root is taken of 1 − weight)
            raise ValueError(f"embedding weight {weight} is not between 0 and 1")
        _check_cosine((config.get("duplicates") or {}).get("embed_cosine"))
    except WeightsError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # e.g. a JSON list
        raise WeightsError(f"{config_path} is not a valid model description "
                           f"({type(exc).__name__}: {exc}).") from None
    if layer not in EMBEDDING_LAYERS:
        raise WeightsError(f"{config_path} names an unknown embedding layer {layer!r}.")
    try:
        weights_digest, identity = file_digest(weights_path)
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except OSError as exc:  # (not damaged: "train again" sent a service account that may not
        # read the file to train, as root, a model it still could not read)
        raise WeightsError(f"cannot read {weights_path} ({exc.strerror or exc})" + (
            "; give this user access to it, or run as its owner." if isinstance(
                exc, PermissionError) else ".")) from None
    except Exception:  # noqa: BLE001 - torch's own text suggests weights_only=False: unsafe
        raise WeightsError(f"{weights_path} is not a model file written by `vitrine train` "
                           "(damaged or replaced); train again.") from None
    try:
        net.load_state_dict(state, strict=True)
    except Exception:  # noqa: BLE001 - missing keys or shape errors alike
        raise WeightsError(f"{weights_path} does not fit the network {config_path} describes "
                           f"({_misfit(net, state)}); keep the two files of one "
                           "training together.") from None
    if not all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point()):
        raise WeightsError(f"{weights_path} holds NaN or infinite weights (a training that "
                           "diverged, or a damaged file); train again.")
    digest = state_hash(state)
    if config.get("weights_sha256") not in (None, digest):
        raise WeightsError(f"{weights_path} does not match {config_path} (weights changed "
                           "after training); train again.")
    key = trained_key(config_bytes, weights_digest) if unchanged(weights_path, identity) else ""
    return TrainedModel(spec, net.eval(), config, prep, digest, key)


def _misfit(net: TrainedNet, state: object) -> str:
    """How a state dict differs from ``net``'s tensors: counts of missing, unexpected and
    mis-shaped ones."""
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not named tensors"
    ours = net.state_dict()
    missing = sum(k not in state for k in ours)
    extra = sum(k not in ours for k in state)
    shapes = sum(k in ours and getattr(v, "shape", None) != ours[k].shape
                 for k, v in state.items())
    parts = [f"{n} {what}" for n, what in ((missing, "missing"), (extra, "unexpected"),
                                           (shapes, "of another shape")) if n]
    return (", ".join(parts) + " tensor(s)") if parts else "tensors of another kind"


def training_fingerprint(products, settings, contents: dict[str, str] | None = None, *,
                         folders: bool = False) -> str:
    """sha256 of what a training run depends on: every photo's content and category, the
    training settings, the duplicate rules in effect (the split and the model's calibrated rule
    depend on them; not the index-time bound), the split's own rules (``split.SPLIT_RULES``),
    and with ``folders`` (a catalogue split into folders) those of a folder split
    (``split.FOLDER_SPLIT_RULES``), the backbone, the preprocessing and the pretrained weights
    file. ``contents`` holds photos' sha256 already read, by product id."""
    import hashlib

    from vitrine import split
    from vitrine.dedupe import DuplicateRules
    from vitrine.photo_hashes import file_sha256, unreadable_reason

    contents = contents or {}

    def content(product) -> str:
        if product.product_id in contents:
            return contents[product.product_id]
        try:
            return file_sha256(product.image)
        except OSError as exc:  # training left it out, and says why
            return f"unreadable: {unreadable_reason(exc)}"

    blob = {
        "photos": sorted((p.product_id, p.category, content(p)) for p in products),
        "settings": settings.training_choices(mode="json"),
        "duplicates": {k: v for k, v in vars(DuplicateRules.from_settings(settings)).items()
                       if k not in ("probs_tail", "max_products")},
        "backbone": settings.backbone, "resize": settings.resize,
        # (the split's own rules: a model an earlier split made is trained again)
        "split_rules": [split.SPLIT_RULES, split.SPLIT_ALIKE_COSINE],
        **({"folder_split_rules": split.FOLDER_SPLIT_RULES} if folders else {}),
        "weights": file_sha256(Path(settings.weights), limit=math.inf) if settings.weights
        else "download",
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def ensure_model(catalog_dir: Path, model_dir: Path, settings, *,
                 show_progress: bool = True) -> tuple[Path, bool]:
    """Reuse ``model_dir`` when it was trained from the same photos and settings, else
    train it; returns (the folder, whether it was reused)."""
    from vitrine.train import train_catalog

    if trained_already(catalog_dir, model_dir, settings):
        return Path(model_dir), True
    train_catalog(catalog_dir, Path(model_dir), settings, show_progress=show_progress)
    return Path(model_dir), False


def trained_already(catalog_dir: Path, model_dir: Path, settings) -> bool:
    """Whether ``model_dir`` holds a model trained from the same photos and settings (what
    :func:`ensure_model` reuses)."""
    from vitrine.split import links_refused, read_catalogue

    products, given, _ = read_catalogue(catalog_dir, settings.upload_dir,  # (train reads it)
                                        refused_links=links_refused(settings))
    wanted = training_fingerprint([p for p in products if p.category], settings,
                                  folders=given is not None)
    config_path = Path(model_dir) / CONFIG_FILE
    if config_path.is_file() and (Path(model_dir) / MODEL_FILE).is_file():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            return config.get("training_fingerprint") == wanted
        except ValueError:
            pass
    return False
