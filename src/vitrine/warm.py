"""Starting without torch: a model's cached ONNX export, found from the bytes of its files.

Importing torch and loading the weights took 1.3 s of the 2.2 s of a one-photo
`vitrine search`, and most of an unchanged `vitrine index` re-run (2.4 s, of which the index
took 0.2 s). A run that embeds with ONNX Runtime needs neither once the model is exported,
but the export is cached under the model's description (:class:`ModelManifest`, which holds
the sha256 of its tensors), and reading the tensors needs torch. So a run that loaded the
model records beside the exports what its files made: a *start record*, named by the sha256
of the files' bytes and of the settings that shape the model. A later run on the same bytes
reads it and loads the export, without torch (:meth:`vitrine.embed.Embedder.from_settings`).
Any doubt (no record, a damaged one, another user's, no export) means the usual start,
which writes the record again. So does any change to Vitrine's own code: what a record holds
was computed by it, and an installed version's number stays the same through a checkout's
changes.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from vitrine import __version__
from vitrine.backbones import BackboneSpec, get_spec, weights_file
from vitrine.catalog import MODEL_CONFIG, MODEL_WEIGHTS
from vitrine.files import write_whole

if TYPE_CHECKING:
    from vitrine.config import Settings

RECORD_FORMAT = "vitrine-start/1"
"""Changes whenever what a record holds or how its name is made changes."""
RENEW_S = 24 * 3600
"""A record in use has its time renewed once a day at most, as an export has (records no run
has used for a month are pruned with the exports: :func:`vitrine.engines._prune_exports`)."""
RECORD_GLOB = "start-*.json"


@functools.cache
def code_digest() -> str:
    """sha256 of Vitrine's own Python files (a few milliseconds, once a process)."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        with contextlib.suppress(OSError):
            digest.update(path.relative_to(package).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def start_key(kind: str, *parts: str) -> str:
    """The sha256 naming the record of a model made of ``parts`` (the sha256 of its files,
    settings), for this version and code of Vitrine (another may read the files otherwise,
    or describe the model otherwise; the version parts installs whose code cannot be read as
    files, a zip: helper-175)."""
    digest = hashlib.sha256(RECORD_FORMAT.encode())
    for part in (__version__, code_digest(), kind, *parts):
        data = part.encode()
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def pretrained_key(backbone: str, resize: str, weights_digest: str) -> str:
    """The record name of a pretrained backbone: its weights file's sha256 and the resize
    setting (the usual start and :meth:`vitrine.embed.Embedder._warm` name it alike)."""
    return start_key("pretrained", backbone, resize, weights_digest)


def trained_key(config: bytes, weights_digest: str) -> str:
    """The record name of a trained model: its ``model.json`` bytes and ``model.pt``'s
    sha256 (:func:`vitrine.trained.load_model` and the warm start name it alike)."""
    return start_key("trained", hashlib.sha256(config).hexdigest(), weights_digest)


def file_digest(path: Path) -> tuple[str, tuple[int, ...]]:
    """sha256 of the file at ``path``, read in pieces (a weights file of gigabytes was held
    whole), and what identifies the file as read: :func:`unchanged` tells whether a load
    that followed read the same file."""
    with open(path, "rb") as fh:
        identity = _identity(os.fstat(fh.fileno()))
        return hashlib.file_digest(fh, "sha256").hexdigest(), identity


def unchanged(path: Path, identity: tuple[int, ...]) -> bool:
    """Whether ``path`` is still the file :func:`file_digest` read (same device, inode, size
    and times): a file replaced or written between the digest and the load is not recorded."""
    try:
        return _identity(os.stat(path)) == identity
    except OSError:
        return False


def _identity(info: os.stat_result) -> tuple[int, ...]:
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns


def hub_weights(spec: BackboneSpec) -> Path | None:
    """Where torch.hub keeps ``spec``'s downloaded weights, found as ``torch.hub.get_dir``
    finds its folder ($TORCH_HOME, else $XDG_CACHE_HOME/torch, else ~/.cache/torch); None
    for a backbone whose weights come another way."""
    if not spec.hub_file:
        return None
    home = os.getenv("TORCH_HOME",
                     os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(os.path.expanduser(home)) / "hub" / "checkpoints" / spec.hub_file


def weights_source(spec: BackboneSpec, weights: Path | None) -> Path | None:
    """The file the pretrained weights are read from: the local one, else the download's
    when it is there (None when it is not, or the backbone's come another way)."""
    if weights is not None:
        return weights_file(weights)
    hub = hub_weights(spec)
    return hub if hub is not None and hub.is_file() else None


def record_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir).expanduser() / "onnx" / f"start-{key[:40]}.json"


def read_record(cache_dir: Path, key: str) -> dict | None:
    """The record named by ``key`` when this user (or root) wrote it and it is whole, else
    None (a cache in the temporary folder, where anyone may put one first, as
    :func:`vitrine.engines.cached_export` says of exports)."""
    path = record_path(cache_dir, key)
    try:
        if not path.is_file():  # (a pipe named so would hold the open)
            return None
        with open(path, "rb") as fh:
            info = os.fstat(fh.fileno())
            if info.st_uid not in (os.geteuid(), 0):
                return None
            record = json.loads(fh.read())
        if time.time() - info.st_mtime > RENEW_S:
            with contextlib.suppress(OSError):
                os.utime(path)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT \
            or record.get("key") != key:
        return None
    return record


def settings_record(settings: Settings) -> dict | None:
    """The start record of the model ``settings`` configure (a trained model's folder, else
    the pretrained backbone's weights), found without torch; None when there is none or the
    files are not there (the usual start says what is wrong)."""
    if settings.model is not None:
        folder = Path(settings.model).expanduser()
        config, weights = folder / MODEL_CONFIG, folder / MODEL_WEIGHTS
        if not (config.is_file() and weights.is_file()):  # (a pipe would hold reads)
            return None
        key = trained_key(config.read_bytes(), file_digest(weights)[0])
    else:
        spec = get_spec(settings.backbone)
        if (source := weights_source(spec, settings.weights)) is None:
            return None
        key = pretrained_key(spec.name, settings.resize, file_digest(source)[0])
    return read_record(settings.cache_dir, key)


def write_record(cache_dir: Path, key: str, record: dict) -> None:
    """Write the record named by ``key``, whole or not at all; a cache that cannot be written
    only means that the next run starts as this one did."""
    path = record_path(cache_dir, key)
    data = json.dumps({**record, "format": RECORD_FORMAT, "key": key}, sort_keys=True)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_whole(path, data.encode())
