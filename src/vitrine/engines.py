"""Inference engines: run the embedding network on a preprocessed NCHW float32 batch.

Two engines give the same vectors (cosine ≥ 0.999 per image, checked at export and in the
tests), so the engine is not part of a store's model manifest:

* ``torch``: the eager network, channels-last, under ``inference_mode``; fp16 on CUDA.
* ``onnx``: ONNX Runtime over the same network exported once (dynamic batch axis) and cached
  under ``cache_dir/onnx`` by the model manifest; CUDAExecutionProvider on CUDA.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import glob
import hashlib
import json
import logging
import os
import re
import secrets
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from vitrine import files
from vitrine.config import Settings
from vitrine.errors import VitrineError
from vitrine.files import remove_stale
from vitrine.warm import RECORD_GLOB

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import torch

    from vitrine.manifest import ModelManifest

ENGINES = ("torch", "onnx")
OPSET = 17
EXPORT_FORMAT = "vitrine-onnx/1"
"""Changes whenever the export itself changes, so older cached files are not reused."""
PARITY_MIN_COSINE = 0.999


class EngineError(VitrineError):
    """An inference engine that cannot be built on this machine."""


class ExportUnloadable(EngineError):
    """An exported model ONNX Runtime cannot load (damaged, or another version's)."""

    def __init__(self, what: object, why: str):
        super().__init__(f"ONNX Runtime cannot load {what} ({why}); delete it to export the "
                         "model again.")
        self.afresh = EngineError(f"ONNX Runtime cannot load {what} ({why}), exported afresh; "
                                  "set VITRINE_ENGINE=torch.")
        """What to say of an export made afresh (deleting it changes nothing)."""


class Engine(Protocol):
    """Runs the embedding network; returns un-normalised float32 (N, dim) vectors."""

    name: str

    def run(self, batch: np.ndarray) -> np.ndarray: ...


def cpu_threads(settings: Settings) -> int:
    """Intra-op threads: the ``threads`` setting, else one per available core."""
    if settings.threads > 0:
        return settings.threads
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class TorchEngine:
    """The eager torch network: channels-last, inference mode; fp16 weights on CUDA."""

    name = "torch"

    def __init__(self, net: torch.nn.Module, device: torch.device):
        import torch

        self.device = device
        self.half = device.type == "cuda"
        net = net.to(device).eval()
        if self.half:
            net = net.half()
        self.net = net.to(memory_format=torch.channels_last)

    def run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
            x = x.to(self.device, non_blocking=True)
            if self.half:
                x = x.half()
            x = x.contiguous(memory_format=torch.channels_last)
            return self.net(x).float().cpu().numpy()


class CacheUnwritable(EngineError):
    """The model cache folder cannot be created or written."""


def _threads_available(n: int) -> None:
    """Start ``n`` threads and end them, before ONNX Runtime starts its pools: when the
    system refused it one (`ulimit -v`, a container's pids limit), its session waited for
    good, deaf to Ctrl+C and SIGTERM (VITRINE_THREADS=512 under `ulimit -v 3000000`)."""
    release = threading.Event()
    started: list[threading.Thread] = []
    try:
        for _ in range(n):
            thread = threading.Thread(target=release.wait, daemon=True)
            thread.start()
            started.append(thread)
    except RuntimeError as exc:  # ("can't start new thread")
        raise EngineError(f"the system refused a thread to the inference engine ({exc}, "
                          f"{len(started)} of {n} started); lower VITRINE_THREADS (0: one "
                          "per core) or VITRINE_INTEROP_THREADS, or give the process more "
                          "(ulimit -v, ulimit -u, the container's limits).") from None
    finally:
        release.set()
        for thread in started:
            thread.join()


def _session_threads(intra_threads: int, inter_threads: int) -> int:
    """The threads an ONNX Runtime session of these settings starts (sequential execution
    makes no inter-op pool)."""
    return intra_threads + (inter_threads if inter_threads > 1 else 0)


class OnnxEngine:
    """An ONNX Runtime session with explicit thread settings over an exported network."""

    name = "onnx"

    def __init__(self, path: Path | bytes, *, device: torch.device | str, intra_threads: int,
                 inter_threads: int = 1, spinning: bool = False, where: Path | None = None):
        """``path``: the exported file, or its bytes (those checked: a file may be replaced
        between the check and the load) read from ``where``."""
        ort = _import_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_threads
        options.inter_op_num_threads = max(1, inter_threads)
        # (sequential execution makes no inter-op pool: more than 1 thread did nothing)
        options.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if inter_threads > 1
                                  else ort.ExecutionMode.ORT_SEQUENTIAL)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning",
                                         "1" if spinning else "0")
        self.providers = onnx_providers(device, ort.get_available_providers())
        _threads_available(_session_threads(intra_threads, inter_threads))
        try:
            self.session = ort.InferenceSession(
                path if isinstance(path, bytes) else str(path), options, providers=self.providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            _memory_refused(exc)
            what = path if not isinstance(path, bytes) else where or "the exported model"
            raise ExportUnloadable(what, type(exc).__name__) from None
        self.input_name = self.session.get_inputs()[0].name

    def run(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        try:
            out = self.session.run(None, {self.input_name: x})[0]
        except Exception as exc:
            _memory_refused(exc)
            raise
        return np.asarray(out, dtype=np.float32)


ONNX_MEMORY = re.compile(r"Failed to allocate memory|bad_alloc", re.IGNORECASE)
"""What ONNX Runtime says (in its own exception type, a plain Exception) when the system
refuses memory: a batch too large under `ulimit -v` or a container's limit."""


def _memory_refused(exc: Exception) -> None:
    """Raise ONNX Runtime's refusal of memory as a MemoryError: one sentence that says to
    lower VITRINE_BATCH_SIZE (a 503 from the API), as torch's is; it was a traceback, and
    the API's 500 (helper-160)."""
    if ONNX_MEMORY.search(str(exc)):
        said = " ".join(str(exc).split())
        raise MemoryError(f"ONNX Runtime: {said[:300]}") from exc


def onnx_providers(device: torch.device | str, available: list[str]) -> list[str]:
    """CUDA then CPU for a CUDA device (refused if ONNX Runtime lacks CUDA), else CPU
    (``device``: a torch device, or "cpu", a run that has not imported torch)."""
    if getattr(device, "type", device) != "cuda":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        raise EngineError("the onnx engine on CUDA needs onnxruntime-gpu (no "
                          "CUDAExecutionProvider here); install it or set VITRINE_ENGINE=torch.")
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def _import_onnxruntime():
    # ONNX Runtime's Linux builds (1.29 on) queue usage events for Microsoft unless told
    # not to; a shop's model names and hashes are not theirs to send. Set before the import:
    # the library reads it as it starts (ORT_DISABLE_TELEMETRY=0 in the environment wins).
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    try:
        import onnxruntime
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == "onnxruntime":
            raise EngineError("the onnx engine needs the onnxruntime package; install it or "
                              "set VITRINE_ENGINE=torch.") from None
        # installed but its library does not load (too little memory under `ulimit -v`, a
        # broken install): saying "not installed" sent users to install it again
        # (a release built for NumPy 1 under NumPy 2 says nothing: "()" was all it showed)
        said = str(exc).strip() or type(exc).__name__
        raise EngineError(f"ONNX Runtime is installed but does not load ({said}): too little "
                          "memory for it (see `ulimit -v`), a release built for another "
                          "NumPy than this one, or a broken install; raise the limit, "
                          "reinstall it, or set VITRINE_ENGINE=torch.") from None
    return onnxruntime


def onnx_path(cache_dir: Path, manifest: ModelManifest) -> Path:
    """Where the export of the model described by ``manifest`` is cached: not by how photos
    are resized, which is done before the network (each resize setting exported the model
    again, 9 MB more: helper-160); by the rest of the preprocessing, which a companion
    backbone's input conversion holds (:class:`vitrine.trained_net.Companion`)."""
    described = manifest.as_dict()
    described["preprocessing"] = {k: v for k, v in manifest.preprocessing.items()
                                  if k != "resize"}
    key = json.dumps({"manifest": described, "format": EXPORT_FORMAT, "opset": OPSET},
                     sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return Path(cache_dir).expanduser() / "onnx" / f"{manifest.backbone}-{digest}.onnx"


def probe_batch(size: int, n: int = 2, seed: int = 0) -> np.ndarray:
    """Deterministic, image-like (smooth, blocky) normalised inputs for the export check."""
    rng = np.random.default_rng(seed)
    blocks = -(-size // 16)  # (a size not a multiple of 16: the export's fixed sides were
    # the probe's, 192 for 200, and every batch of the model's 200 failed)
    coarse = rng.normal(size=(n, 3, blocks, blocks)).astype(np.float32)
    fine = coarse.repeat(16, axis=2).repeat(16, axis=3)[:, :, :size, :size]
    return np.ascontiguousarray(fine)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, d) arrays."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a * b).sum(axis=1)


def export_onnx(net: torch.nn.Module, path: Path, size: int) -> Path:
    """Export ``net`` (on CPU, fp32) with a dynamic batch axis, check it against torch on
    probe inputs, and write it atomically to ``path``."""
    _remove_stale_parts(path)
    _export(net, path, size)
    return path


def _export(net: torch.nn.Module, path: Path, size: int) -> bytes:
    """:func:`export_onnx`, returning the bytes checked and written (the part files killed
    exports left are the caller's to sweep: make_engine sweeps them each time)."""
    import torch

    model = copy.deepcopy(net).to("cpu", torch.float32).eval()
    model = model.to(memory_format=torch.contiguous_format)
    probe = probe_batch(size)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheUnwritable(f"cannot create the model cache folder {path.parent} "
                              f"({exc.strerror or exc}); set VITRINE_CACHE_DIR to a writable "
                              "folder.") from None
    tmp = None
    try:
        tmp = _part_file(path)
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.from_numpy(probe),), str(tmp),
                              input_names=["input"], output_names=["embedding"],
                              dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}},
                              opset_version=OPSET, dynamo=False)
        with torch.inference_mode():
            expected = model(torch.from_numpy(probe)).float().numpy()
        data = tmp.read_bytes()
        got = OnnxEngine(data, device="cpu", intra_threads=1).run(probe)
        worst = float(cosines(expected, got).min())
        if worst < PARITY_MIN_COSINE:
            raise EngineError(f"the ONNX export disagrees with torch (cosine {worst:.4f}); "
                              "set VITRINE_ENGINE=torch.")
        _write_digest(path, hashlib.sha256(data).hexdigest())  # (before the model: one seen
        os.replace(tmp, path)  # with another export's digest is exported again)
    except OSError as exc:
        raise CacheUnwritable(f"cannot write the ONNX model to {path.parent} ({exc.strerror}); "
                              "set VITRINE_CACHE_DIR to a writable folder.") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
    return data


def _remove_stale_parts(path: Path) -> None:
    """Remove the part files of exports of ``path`` that a killed process left (SIGKILL, the
    out-of-memory killer): each stayed in the cache, megabytes, for good."""
    remove_stale(path.parent, f"{glob.escape(path.name)}.*.tmp")  # (an export takes seconds)


EXPORT_KEEP_S = 30 * 24 * 3600
"""How long an export no run has used stays in the cache: each weights file, setting of the
input and training run adds one, 9 MB for MobileNetV2, which stayed for good (helper-160)."""


def _prune_exports(path: Path) -> None:
    """Mark the export at ``path`` used now (its time renewed, once a day at most), and remove
    the cache's exports no run has used for :data:`EXPORT_KEEP_S` (a run that needs one
    again exports it again), with their digests, and the start records no run has used as
    long (:mod:`vitrine.warm`)."""
    with contextlib.suppress(OSError):  # (another user's cache: left as it is)
        if time.time() - path.stat().st_mtime > 24 * 3600:
            os.utime(path)
    remove_stale(path.parent, "*.onnx", EXPORT_KEEP_S)
    remove_stale(path.parent, RECORD_GLOB, EXPORT_KEEP_S)  # (and the records naming them)
    remove_stale(path.parent, "*.onnx.*.tmp")  # (a killed export's, of a model not used since)
    now = time.time()
    for digest in path.parent.glob("*.onnx.sha256"):
        # (an export writes its digest before its model: one without a model for an hour)
        with contextlib.suppress(OSError):
            if not digest.with_suffix("").exists() and \
                    now - digest.stat().st_mtime > files.STALE_PART_S:
                digest.unlink()


def _part_file(path: Path) -> Path:
    """A new, empty part file beside ``path`` that no other process has: a process id is
    not one (containers sharing a cache volume each run as process 1, and removed or loaded
    each other's). Its mode is the umask's, as the cache's other files (mkstemp's 0600 made
    an export the other users of a shared cache could not read)."""
    while True:
        part = path.with_name(f"{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            os.close(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return part
        except FileExistsError:  # pragma: no cover - 64 random bits
            continue


def _digest_path(path: Path) -> Path:
    """The file beside a cached export holding its sha256, written with it."""
    return path.with_name(f"{path.name}.sha256")


def _write_digest(path: Path, digest: str) -> None:
    """Write ``digest`` beside the export ``path``, whole or not at all."""
    part = _part_file(path)
    try:
        part.write_text(digest + "\n")
        os.replace(part, _digest_path(path))
    except BaseException:
        with contextlib.suppress(OSError):
            part.unlink()
        raise


def cached_export(path: Path) -> bytes | None:
    """The bytes of the export at ``path`` when this cache wrote it and it is whole (they
    hash to the digest written with it: a damaged file that still loaded gave other vectors,
    cosine 0.95 to torch, without a word), else None: also one that cannot be read, or that
    another user wrote (a cache in the temporary folder, where anyone may put one first;
    root's aside). The bytes read are those loaded: the file may be replaced meanwhile."""
    try:
        if not path.is_file():  # (a pipe named so would hold the open)
            return None
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_uid not in (os.geteuid(), 0):
                return None
            data = fh.read()
        digest = _digest_path(path).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return data if hashlib.sha256(data).hexdigest() == digest else None


def checked_device(name: str) -> torch.device:
    """The torch device ``name`` (VITRINE_DEVICE), refused in one sentence when this machine
    has none (before any model is moved to it)."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):  # mps, xla, meta: untested here
        raise EngineError(f"VITRINE_DEVICE={name!r} is not a device Vitrine runs on; use cpu "
                          "or cuda (cuda:N for one GPU of several).")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EngineError("device cuda was requested but torch sees no CUDA GPU; set "
                          "VITRINE_DEVICE=cpu.")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise EngineError(f"VITRINE_DEVICE={name!r}: torch sees {torch.cuda.device_count()} "
                          "CUDA GPU(s), numbered from 0.")
    return device


def _onnx_engine(settings: Settings, device: torch.device | str,
                 path: Path) -> Callable[[bytes], OnnxEngine]:
    """Builds an ONNX Runtime session of the settings' threads over an export's bytes."""
    return functools.partial(OnnxEngine, device=device, intra_threads=cpu_threads(settings),
                             inter_threads=settings.interop_threads,
                             spinning=settings.onnx_spinning, where=path)


def cached_engine(settings: Settings, manifest: ModelManifest,
                  device: torch.device | str) -> OnnxEngine | None:
    """An ONNX Runtime session over the cached export of the model ``manifest`` describes,
    when the cache holds it whole and this runtime loads it, else None: the model is then
    exported again (a cached export that is whole but that this runtime cannot load is
    another version's, in a shared cache, and is written over)."""
    path = onnx_path(settings.cache_dir, manifest)
    _remove_stale_parts(path)  # (also when no export runs: a killed one's, restarted at once)
    if (cached := cached_export(path)) is not None:
        with contextlib.suppress(ExportUnloadable):
            made = _onnx_engine(settings, device, path)(cached)
            _prune_exports(path)
            return made
    return None


def make_engine(settings: Settings, net: torch.nn.Module, manifest: ModelManifest,
                size: int) -> Engine:
    """The engine named by ``settings.engine`` for ``net`` (exporting it once for onnx)."""
    device = checked_device(settings.device)
    if settings.engine == "torch":
        return TorchEngine(net, device)
    if settings.engine != "onnx":
        raise EngineError(f"unknown engine {settings.engine!r}; use torch or onnx.")
    if (made := cached_engine(settings, manifest, device)) is not None:
        return made
    path = onnx_path(settings.cache_dir, manifest)
    engine = _onnx_engine(settings, device, path)
    # threads the system refuses are said before the export's seconds, not after them
    _threads_available(_session_threads(cpu_threads(settings), settings.interop_threads))
    try:
        made = engine(_export(net, path, size))  # (a damaged one is written over)
        _prune_exports(path)
        return made
    except ExportUnloadable as exc:  # (exported afresh: deleting it changes nothing)
        raise exc.afresh from None
    except CacheUnwritable as exc:
        # a read-only home (a service's ProtectHome, a container) must not stop embedding:
        # the session holds the model once loaded, so a temporary export serves this run
        log.warning("%s Exporting the model for this run only.", exc)
        try:
            with tempfile.TemporaryDirectory(prefix="vitrine-onnx-") as tmp:
                return engine(_export(net, Path(tmp) / path.name, size))
        except ExportUnloadable as unloadable:
            raise unloadable.afresh from None
        except (OSError, CacheUnwritable):
            try:
                where = f"The temporary folder {tempfile.gettempdir()} cannot hold it either"
            except OSError:  # (none writable: gettempdir raised here, a traceback)
                where = "No temporary folder can hold it either (TMPDIR, /tmp, /var/tmp)"
            raise EngineError(f"{exc} {where}; set VITRINE_CACHE_DIR or TMPDIR to a writable "
                              "folder, or VITRINE_ENGINE=torch.") from None
