"""Embedder: photos → L2-normalised float32 vectors, decoding in a worker pool while the
model runs on the previous batch."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from vitrine import warm
from vitrine.backbones import BackboneSpec, get_spec
from vitrine.config import Settings
from vitrine.dedupe import DuplicateRules, perceptual_hash, thumbnail
from vitrine.display import percent, shown_percent
from vitrine.engines import Engine, cached_engine, checked_device, make_engine
from vitrine.errors import ImageError, VitrineError, WeightsMismatch
from vitrine.images import Preprocessing, open_image, query_arrays, read_photo, to_array
from vitrine.manifest import ModelManifest

if TYPE_CHECKING:
    import torch


@dataclass
class EmbedResult:
    """Outcome for one input: a vector, or the reason it could not be embedded."""

    index: int
    vector: np.ndarray | None = None
    phash: str = ""
    thumb: bytes = b""
    error: str | None = None
    sha256: str = ""
    """Of the bytes decoded (:func:`decode_file`)."""


def decode(source: Path | bytes, prep: Preprocessing,
           max_pixels: int) -> tuple[np.ndarray, str, bytes]:
    """Open a photo → (backbone input, perceptual hash, thumbnail). Runs in the decode pool."""
    return _inputs(open_image(source, max_pixels=max_pixels, draft_size=prep.draft_size), prep)


def decode_query(source: Path | bytes, prep: Preprocessing, max_pixels: int) -> np.ndarray:
    """A photo searched for as the backbone's input batch (:func:`query_arrays`: the photo,
    and the product cut out of a wide frame around it when it has one)."""
    name = str(source) if isinstance(source, Path) else "uploaded image"
    return query_arrays(open_image(source, max_pixels=max_pixels, draft_size=prep.draft_size,
                                   name=name), prep, name)


def decode_file(path: Path, prep: Preprocessing,
                max_pixels: int) -> tuple[np.ndarray, str, bytes, str]:
    """:func:`decode` of the photo file at ``path``, and the sha256 of the very bytes decoded:
    a file replaced after the indexer hashed it gave its new picture's vector to the old
    bytes' hash, and to every product of the old bytes, for good."""
    img, sha = _open_file(path, prep, max_pixels)
    return (*_inputs(img, prep), sha)


def _open_file(path: Path, prep: Preprocessing, max_pixels: int) -> tuple[Image.Image, str]:
    """The photo file at ``path`` decoded, and the sha256 of the very bytes decoded."""
    data = read_photo(path)
    return (open_image(data, max_pixels=max_pixels, draft_size=prep.draft_size, name=str(path)),
            hashlib.sha256(data).hexdigest())


def _inputs(img: Image.Image, prep: Preprocessing) -> tuple[np.ndarray, str, bytes]:
    return to_array(img, prep), perceptual_hash(img), thumbnail(img)


def decode_thumbnail(path: Path, prep: Preprocessing, max_pixels: int) -> tuple[bytes, str]:
    """The thumbnail :func:`decode_file` makes of the photo at ``path`` (decoded the same way,
    without the backbone's input), and the sha256 of the very bytes decoded."""
    img, sha = _open_file(path, prep, max_pixels)
    return thumbnail(img), sha


def model_folder(path: Path | str) -> Path:
    """``path`` absolute, as a store records it: without ``..`` where that names the same
    folder (``link/..`` is the parent of where the link leads, not the link's own: then
    kept as written); links kept."""
    tidy = os.path.abspath(path)
    try:
        return Path(tidy) if os.path.samefile(tidy, path) else Path(path).absolute()
    except OSError:
        return Path(path).absolute()


@dataclass(frozen=True)
class CategoryGuess:
    """The trained classifier's most likely category for a photo and its probability; the
    next most likely one; and whether the first is probable enough to be shown alone
    (``sure``: at least ``VITRINE_GUESS_MIN_PROBABILITY``)."""

    category: str
    probability: float
    runner_up: str | None = None
    runner_up_probability: float = 0.0
    sure: bool = True

    def as_dict(self) -> dict:
        return {"category": self.category, "probability": round(self.probability, 4),
                "sure": self.sure,
                "runner_up": None if self.runner_up is None else {
                    "category": self.runner_up,
                    "probability": round(self.runner_up_probability, 4)}}

    def sentence(self) -> str:
        """``Looks like: X (85%)``, or ``Not sure: X (48%) or Y (41%)``."""
        if self.sure or self.runner_up is None:
            return f"Looks like: {self.category} ({percent(self.probability)})"
        return (f"Not sure: {self.category} ({percent(self.probability)}) or "
                f"{self.runner_up} ({percent(self.runner_up_probability)})")


def guess_category(vector: np.ndarray, classes: Sequence[str],
                   min_probability: float = 0.0) -> CategoryGuess | None:
    """Read the class probabilities back from the end of a trained embedding whose layer ends
    with ``probs``: that part is the probability vector scaled to a length (L2 normalisation,
    then the layer weight), so dividing it by its sum gives the probabilities exactly."""
    if not classes:
        return None
    tail = np.clip(np.asarray(vector, dtype=np.float64)[-len(classes):], 0.0, None)
    total = float(tail.sum())
    if not np.isfinite(total) or total <= 0:
        return None
    order = np.argsort(-tail, kind="stable")
    best, probability = int(order[0]), float(tail[order[0]] / total)
    second = int(order[1]) if len(classes) > 1 else None
    # compared as shown: 69.6 % ("70%") is not "not sure" at 0.7, 99.5 % ("99.5%") is at 1
    shown = shown_percent(probability)
    return CategoryGuess(classes[best], probability,
                         None if second is None else classes[second],
                         0.0 if second is None else float(tail[second] / total),
                         sure=shown >= round(min_probability * 100, 1))


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


class Embedder:
    """Backbone + preprocessing; embeds photos in batches."""

    def __init__(self, spec: BackboneSpec, state: dict, prep: Preprocessing, *,
                 settings: Settings, net: torch.nn.Module | None = None,
                 manifest: ModelManifest | None = None, engine: Engine | None = None):
        """``engine``: the ONNX session over a cached export, found without torch
        (:meth:`_warm`); the network is then neither built nor needed."""
        self.spec = spec
        self.prep = prep
        self.settings = settings
        self.net: torch.nn.Module | None = None
        if engine is None:
            import torch

            from vitrine.models import build_embedding_net, state_hash

            device = checked_device(settings.device)
            if settings.threads > 0:
                torch.set_num_threads(settings.threads)
            self.net = (net if net is not None else build_embedding_net(spec, state)).to(device)
            self.net = self.net.to(memory_format=torch.channels_last)
            manifest = manifest or ModelManifest(spec.name, state_hash(state), prep.as_dict(),
                                                 spec.embed_dim)
        self.manifest = manifest
        self._engine = engine
        self.duplicate_cosine: float | None = None
        """A trained model's calibrated cosine for the duplicate rule (None: the setting's
        default, calibrated for pretrained features; :meth:`duplicate_rules`)."""
        self.probs_tail = 0
        """How many class probabilities end a trained model's vectors after other outputs
        (vitrine.trained_net.probs_tail); the duplicate rule leaves them out."""
        self.model_dir: Path | None = None
        """The folder of the trained model embedding with (``settings.model``), else None."""
        self.classes: tuple[str, ...] = ()
        """A trained model's classes when its embedding ends with their probabilities (the
        embedding then tells the photo's likely category: :meth:`guess_category`)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Embedder:
        """Build the configured backbone with local or downloaded weights, or the trained
        model of ``settings.model``; without torch when a start record finds its cached
        export (:meth:`_warm`)."""
        if (started := cls._warm(settings)) is not None:
            return started
        if settings.model is not None:
            return cls.from_model_dir(settings.model, settings)
        from vitrine.models import read_state_dict

        spec = get_spec(settings.backbone)
        state, digest = read_state_dict(spec, settings.weights)
        prep = replace(spec.preprocessing, resize=settings.resize)
        try:
            embedder = cls(spec, state, prep, settings=settings)
        except WeightsMismatch as exc:  # (the file named: it said only "the weights do not
            if settings.weights is None:  # fit efficientnet_lite0 (…)", helper-230)
                raise
            raise exc.of_file(settings.weights) from None
        if settings.weights is None and (hub := warm.hub_weights(spec)) is not None:
            with contextlib.suppress(OSError):  # (the download's file, read after it loaded)
                digest = warm.file_digest(hub)[0]
        if digest is not None:
            embedder._remember(warm.pretrained_key(spec.name, settings.resize, digest))
        return embedder

    @classmethod
    def from_model_dir(cls, path: Path, settings: Settings) -> Embedder:
        """Embed with a model trained by ``vitrine train`` (its embedding layer and
        preprocessing); the manifest records the trained weights."""
        from vitrine.trained import load_model
        from vitrine.trained_net import probs_tail

        model = load_model(path)
        embedder = cls(model.spec, {}, model.prep, settings=settings,
                       net=model.embedding_net(), manifest=model.manifest)
        if model.layer.split("+")[-1] == "probs":
            embedder.classes = tuple(model.classes)
        embedder.duplicate_cosine = model.duplicate_cosine
        embedder.model_dir = model_folder(path)
        embedder.probs_tail = probs_tail(model.layer, len(model.classes))
        embedder._remember(model.start_key)
        return embedder

    def _remember(self, key: str) -> None:
        """Write the start record of this model (:mod:`vitrine.warm`): the next run of the
        ONNX engine on the CPU of the same files starts without torch, once the model is
        exported (the record describes the model, whatever engine or device this run has)."""
        if key:
            warm.write_record(self.settings.cache_dir, key, {
                "backbone": self.spec.name, "manifest": self.manifest.as_dict(),
                "classes": list(self.classes),
                "duplicate_cosine": self.duplicate_cosine, "probs_tail": self.probs_tail})

    @classmethod
    def _warm(cls, settings: Settings) -> Embedder | None:
        """The embedder the start record of the settings' model files describes, over their
        cached ONNX export, without importing torch (:mod:`vitrine.warm`); None when there
        is no such record or export, or any doubt: the usual start then says what is wrong,
        as it did."""
        if settings.engine != "onnx" or settings.device != "cpu":
            return None
        try:
            if (record := warm.settings_record(settings)) is None:
                return None
            manifest = ModelManifest.from_dict(record["manifest"])
            prep = Preprocessing(**{k: tuple(v) if isinstance(v, list) else v
                                    for k, v in manifest.preprocessing.items()})
            spec = get_spec(record["backbone"])
            classes = tuple(str(c) for c in record["classes"])
            cosine = record["duplicate_cosine"]
            tail = int(record["probs_tail"])
            if (engine := cached_engine(settings, manifest, "cpu")) is None:
                return None
        except (OSError, ValueError, KeyError, TypeError, VitrineError):
            return None
        embedder = cls(spec, {}, prep, settings=settings, manifest=manifest, engine=engine)
        embedder.classes, embedder.probs_tail = classes, tail
        embedder.duplicate_cosine = None if cosine is None else float(cosine)
        if settings.model is not None:
            embedder.model_dir = model_folder(settings.model)
        return embedder

    def duplicate_rules(self) -> DuplicateRules:
        """The settings' duplicate rules for this embedder's vectors: a trained model's
        calibrated embedding cosine (unless VITRINE_DUP_EMBED_COSINE is set), compared without
        the class probabilities its vectors end with."""
        return DuplicateRules.from_settings(self.settings, self.duplicate_cosine,
                                            self.probs_tail)

    def guess_category(self, vector: np.ndarray) -> CategoryGuess | None:
        """The likely category of the photo that ``vector`` embeds (a trained model whose
        embedding carries class probabilities), else None."""
        return guess_category(vector, self.classes, self.settings.guess_min_probability)

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def engine(self) -> Engine:
        """The inference engine of ``settings.engine``, built on first use."""
        if self._engine is None:
            self._engine = make_engine(self.settings, self.net, self.manifest, self.prep.size)
        return self._engine

    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        """Embed a preprocessed NCHW float32 batch."""
        return l2_normalize(self.engine.run(batch))

    def embed_image(self, source: Path | bytes) -> np.ndarray:
        """Embed one photo (path or uploaded bytes); raises ImageError if it cannot be used."""
        arr, _, _ = decode(source, self.prep, self.settings.max_image_pixels)
        return self.embed_arrays(arr[None])[0]

    def embed_query(self, source: Path | bytes) -> np.ndarray:
        """The vectors a photo is searched with (:func:`decode_query`), in one batch: one row,
        or two for a photo in a wide frame; raises ImageError if it cannot be used."""
        return self.embed_arrays(decode_query(source, self.prep, self.settings.max_image_pixels))

    def embed_paths(self, paths: Sequence[Path],
                    on_progress: Callable[[int], None] | None = None) -> Iterator[EmbedResult]:
        """Yield one :class:`EmbedResult` per path, in order, decoding ahead in threads.

        Memory stays bounded: at most two batches are decoded ahead of the model.
        """
        offset = 0
        for futures in self._decoding(paths, decode_file):
            yield from self._embed_batch(futures, offset)
            if on_progress:
                on_progress(len(futures))
            offset += len(futures)

    def thumbnail_paths(self, paths: Sequence[Path],
                        on_progress: Callable[[int], None] | None = None
                        ) -> Iterator[EmbedResult]:
        """Yield one :class:`EmbedResult` per path, in order, with its thumbnail and sha256
        (:func:`decode_thumbnail`) and no vector, or its error: decoded in the decode pool's
        threads, at most two batches ahead of the caller."""
        offset = 0
        for futures in self._decoding(paths, decode_thumbnail):
            for i, future in enumerate(futures, offset):
                try:
                    thumb, sha = future.result()
                    yield EmbedResult(i, thumb=thumb, sha256=sha)
                except ImageError as exc:
                    yield EmbedResult(i, error=exc.reason)
            if on_progress:
                on_progress(len(futures))
            offset += len(futures)

    def _decoding(self, paths: Sequence[Path], decode_one: Callable) -> Iterator[list[Future]]:
        """Batches (``batch_size``) of futures of ``decode_one`` (path, preprocessing, pixel
        limit) over ``paths``, in order, run in the decode pool's threads at most two batches
        ahead of the caller (memory stays bounded)."""
        bs = max(1, self.settings.batch_size)
        workers = max(1, self.settings.decode_workers)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
            def submit(start: int) -> list[Future]:
                return [pool.submit(decode_one, p, self.prep, self.settings.max_image_pixels)
                        for p in paths[start:start + bs]]

            pending = [submit(s) for s in range(0, min(len(paths), 2 * bs), bs)]
            next_start = 2 * bs
            while pending:
                futures = pending.pop(0)
                if next_start < len(paths):
                    pending.append(submit(next_start))
                    next_start += bs
                yield futures

    def _embed_batch(self, futures: list[Future], offset: int) -> Iterator[EmbedResult]:
        arrays, results = [], []
        for i, fut in enumerate(futures):
            try:
                array, phash, thumb, sha = fut.result()
                arrays.append(array)
                results.append(EmbedResult(offset + i, phash=phash, thumb=thumb, sha256=sha))
            except ImageError as exc:
                results.append(EmbedResult(offset + i, error=exc.reason))
        if arrays:
            vectors = iter(self.embed_arrays(np.stack(arrays)))
            for res in results:
                if res.error is None:
                    res.vector = next(vectors)
        yield from results
