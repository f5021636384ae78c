"""Training data: augmentation that looks like shop photos, and the frozen-layer cache.

The layers before the fine-tuned blocks never change during training, so each photo goes
through them once per *view*, and the training loops read the cached feature maps:

* view 0 is the photo as the embedder sees it (preprocessing of the model manifest);
* views 1…V−1 of a training photo are random augmentations (horizontal flip, crop/zoom, zoom
  out on white, colour jitter, and a down-scale with JPEG re-encoding or a blur, so that small
  or low-resolution photos still work), drawn once from a generator seeded by
  (seed, photo, view).

So the cache is exact, and what it changes is this: an epoch draws one of V fixed views per
photo instead of a fresh augmentation. Validation and test photos only have view 0.

The cache is held in memory up to a budget (:class:`MapStorage`); past it, its tensors are
files mapped into memory, so that the kernel pages them in and out and a catalogue larger than
the memory can still be trained on.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from vitrine.dedupe import perceptual_hash, thumbnail
from vitrine.errors import ImageError, VitrineError
from vitrine.image_colour import WHITE
from vitrine.images import Preprocessing, open_image, to_array

Zeros = Callable[[Sequence[int]], torch.Tensor]
"""Makes a zero float32 tensor of a shape: ``torch.zeros``, or :meth:`MapStorage.zeros`."""


def augment(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One random shop-photo-like variation of an RGB photo (same size or smaller)."""
    w, h = img.size
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    if rng.random() < 0.7:  # crop: 55–100 % of the area, aspect 3:4 to 4:3
        area = rng.uniform(0.55, 1.0) * w * h
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw = int(min(w, round((area * aspect) ** 0.5)))
        ch = int(min(h, round((area / aspect) ** 0.5)))
        x0 = int(rng.integers(0, w - cw + 1))
        y0 = int(rng.integers(0, h - ch + 1))
        img = img.crop((x0, y0, x0 + cw, y0 + ch))
    elif rng.random() < 0.5:  # zoom out: the product smaller, on a white canvas
        scale = rng.uniform(1.1, 1.5)
        canvas = Image.new("RGB", (round(img.width * scale), round(img.height * scale)), WHITE)
        canvas.paste(img, ((canvas.width - img.width) // 2, (canvas.height - img.height) // 2))
        img = canvas
    for enhancer, spread in ((ImageEnhance.Brightness, 0.25), (ImageEnhance.Contrast, 0.25),
                             (ImageEnhance.Color, 0.3)):
        img = enhancer(img).enhance(rng.uniform(1 - spread, 1 + spread))
    if rng.random() < 0.35:  # a small photo: down-scale and re-encode as JPEG
        short = rng.uniform(40, 112)
        factor = short / min(img.size)
        small = img.resize((max(8, round(img.width * factor)), max(8, round(img.height * factor))),
                           Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        small.save(buf, format="JPEG", quality=int(rng.integers(50, 95)))
        img = Image.open(buf).convert("RGB")
    elif rng.random() < 0.2:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    return img


class MapStorage:
    """Allocates the cache's float32 tensors: in memory while their sizes add up to at most
    ``budget`` bytes, then as files in ``folder`` mapped into memory (created when first
    needed; the caller removes it), each file unlinked once mapped. ``in_memory`` and
    ``on_disk`` add up every allocation of the run (a tensor let go keeps its share: the
    budget errs on the side of files). On Linux a file's blocks are reserved when it is
    made (``posix_fallocate``), so that a full disk is one error then rather than a crash
    while writing into the map; elsewhere the file is sparse."""

    def __init__(self, folder: Path, budget: int):
        self.folder, self.budget = Path(folder), budget
        self.in_memory = 0
        self.on_disk = 0

    def zeros(self, shape: Sequence[int]) -> torch.Tensor:
        nbytes = 4 * math.prod(shape)
        if nbytes == 0 or self.in_memory + nbytes <= self.budget:
            self.in_memory += nbytes
            return torch.zeros(tuple(shape))
        path = self.folder / f"maps-{self.on_disk}-{nbytes}.f32"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)  # (a name too long: one sentence)
            with open(path, "wb") as fh:
                if hasattr(os, "posix_fallocate"):
                    os.posix_fallocate(fh.fileno(), 0, nbytes)
                else:  # macOS: a sparse file
                    fh.truncate(nbytes)
        except OSError as exc:
            with contextlib.suppress(OSError):  # (no folder to hold it either)
                path.unlink(missing_ok=True)
            raise VitrineError(
                f"cannot write the training cache ({nbytes / 2**30:.1f} GiB) in "
                f"{self.folder} ({exc.strerror or exc}); free disk space there or raise "
                "VITRINE_TRAIN_CACHE_MEMORY_MB.") from None
        self.on_disk += nbytes
        array = np.memmap(path, dtype=np.float32, mode="r+", shape=tuple(shape))
        with contextlib.suppress(OSError):  # the map stays; its blocks are freed when it goes,
            path.unlink()                   # however the run ends (even killed)
        return torch.from_numpy(array)


CGROUP_FILES = {  # limit, usage, and the page-cache entry of memory.stat it may reclaim
    "v2": ("memory.max", "memory.current", "inactive_file"),
    "v1": ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
}


def cache_budget(megabytes: int | None) -> int:
    """Bytes the cache may hold in memory: ``megabytes`` MiB, or (None) half the memory
    available now: the least of the system's (MemAvailable) and the headroom of the control
    groups this process is in (:func:`cgroup_headroom`). Without /proc (macOS): half the
    physical memory."""
    if megabytes is not None:
        return megabytes * 2**20
    room = cgroup_headroom()
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo") as fh:
        room += [int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:")]
    if not room:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            room.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return max(0, min(room)) // 2 if room else 2**62


def cgroup_headroom(root: Path = Path("/")) -> list[int]:
    """What each memory control group limiting this process can still take, in bytes: its
    limit less its usage, the reclaimable page cache (``inactive_file``) not counted. The
    groups are the process's own and, on cgroup v2, those above it (a v1 group's
    ``hierarchical_memory_limit`` covers its parents); a group that /proc/self/cgroup names
    but the mount does not show (a container's own group) is read at the mount's root.
    ``root`` is the file system root (tests); unreadable groups are left out."""
    room = []
    for folder, files in _cgroup_folders(root):
        headroom = _headroom(folder, *files)
        if headroom is not None:
            room.append(headroom)
    return room


def _cgroup_folders(root: Path) -> list[tuple[Path, tuple[str, str, str]]]:
    try:
        lines = (root / "proc/self/cgroup").read_text(errors="replace").splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[1] == "":
            version, mount = "v2", root / "sys/fs/cgroup"
        elif "memory" in parts[1].split(","):
            version, mount = "v1", root / "sys/fs/cgroup/memory"
        else:
            continue
        folder = mount / parts[2].strip("/")
        if ".." in Path(parts[2]).parts or not folder.is_dir():
            folder = mount
        chain = [folder]
        while version == "v2" and chain[-1] != mount:
            chain.append(chain[-1].parent)
        found += [(f, CGROUP_FILES[version]) for f in chain]
    return found


def _headroom(folder: Path, limit: str, usage: str, inactive: str) -> int | None:
    try:
        stat = {}
        for line in (folder / "memory.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if value.strip().isdigit():
                stat[key] = int(value)
        used = int((folder / usage).read_text()) - stat.get(inactive, 0)
        limits = [stat["hierarchical_memory_limit"]] if "hierarchical_memory_limit" in stat \
            else []
        text = (folder / limit).read_text().strip()
        if text != "max":
            limits.append(int(text))
    except (OSError, ValueError):
        return None
    return min(limits) - used if limits else None


def permute_rows_(tensor: torch.Tensor, order: Sequence[int]) -> None:
    """Reorder ``tensor`` along its first dimension in place, ``tensor[i]`` becoming the old
    ``tensor[order[i]]`` (``order`` a permutation), holding one row more in memory at most."""
    done = np.zeros(len(order), dtype=bool)
    for start in range(len(order)):
        if done[start] or order[start] == start:
            continue
        first = tensor[start].clone()
        i = start
        while order[i] != start:
            tensor[i] = tensor[order[i]]
            done[i] = True
            i = order[i]
        tensor[i] = first
        done[i] = True


@dataclass
class Decoded:
    """One photo's views as backbone inputs, its perceptual hash and thumbnail (for
    duplicates), or why it cannot be used."""

    arrays: np.ndarray | None = None
    phash: str = ""
    thumb: bytes = b""
    error: str | None = None


def views_of(path: Path, views: Sequence[int], prep: Preprocessing, seed: Sequence[int],
             max_pixels: int, with_hash: bool = False) -> Decoded:
    """Decode a photo into ``views``: view 0 is the photo as the embedder sees it, view v > 0
    an augmentation drawn from a generator seeded by ``seed + [v]``."""
    try:
        img = open_image(path, max_pixels=max_pixels, draft_size=prep.draft_size)
    except ImageError as exc:
        return Decoded(error=exc.reason)
    arrays = np.stack([to_array(img, prep) if v == 0 else
                       to_array(augment(img, np.random.default_rng([*seed, v])), prep)
                       for v in views])
    if not with_hash:
        return Decoded(arrays)
    return Decoded(arrays, perceptual_hash(img), thumbnail(img))


@dataclass
class FeatureCache:
    """Frozen-base outputs: ``maps[i, v]`` is view ``v`` of photo ``i`` (view 0 = clean);
    ``products`` (when known) are the photos' products, in the same order."""

    maps: torch.Tensor
    labels: torch.Tensor
    products: Sequence = ()
    side: torch.Tensor | None = None
    """The companion backbone's pooled features of the same views, (n, views, D), if any."""

    def __len__(self) -> int:
        return len(self.labels)

    def inputs(self) -> tuple[torch.Tensor, ...]:
        """What the trained layers read per view: the maps, and the companion's features."""
        return (self.maps,) if self.side is None else (self.maps, self.side)


@dataclass
class FrozenPass:
    """Frozen-base maps of some views of many photos, (n, views, C, H, W); the rows of photos
    that could not be decoded are zeros and have an ``errors`` entry."""

    maps: torch.Tensor
    phashes: list[str]
    thumbs: list[bytes]
    errors: list[str | None]
    side: torch.Tensor | None = None
    """The ``companion``'s pooled features of the same views, (n, views, D), if one ran."""


@torch.no_grad()
def frozen_pass(base: torch.nn.Module, paths: Sequence[Path], views: Sequence[int],
                prep: Preprocessing, *, seed: int, keys: Sequence[int] | None = None,
                batch_size: int = 32, workers: int = 2, max_pixels: int = 40_000_000,
                with_hash: bool = False, companion: torch.nn.Module | None = None,
                advance: Callable[[int], None] | None = None,
                out: torch.Tensor | None = None,
                zeros: Zeros = torch.zeros, none_ok: bool = False) -> FrozenPass:
    """Run ``base`` (eval mode), and ``companion`` if given, once on ``views`` of every photo,
    decoding in threads at most two batches ahead of the model. ``keys`` (default:
    positions) seed the augmentations. Each batch's maps go straight into one tensor of
    them all, ``out`` when given (``(len(paths), len(views), C, H, W)``, a view into a larger
    cache, say), else one that ``zeros`` allocates, so the maps are never held twice. No
    photo decoded is an ImageError, unless ``none_ok`` (then ``maps`` is empty)."""
    base = base.eval()
    if companion is not None:
        companion.eval()
    keys = list(range(len(paths))) if keys is None else list(keys)
    side_chunks: list[torch.Tensor] = []
    result = FrozenPass(torch.empty(0) if out is None else out, [], [], [])
    decoded_rows: list[int] = []
    per_batch = max(1, batch_size // len(views))
    starts = list(range(0, len(paths), per_batch))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        def submit(start: int) -> list[Future]:
            return [pool.submit(views_of, paths[i], views, prep, [seed, keys[i]], max_pixels,
                                with_hash) for i in range(start, min(start + per_batch,
                                                                     len(paths)))]

        pending = [submit(s) for s in starts[:2]]
        for b, start in enumerate(starts):
            futures = pending.pop(0)
            if b + 2 < len(starts):
                pending.append(submit(starts[b + 2]))
            decoded = [f.result() for f in futures]
            good = [d.arrays for d in decoded if d.arrays is not None]
            rows = [start + k for k, d in enumerate(decoded) if d.arrays is not None]
            if good:
                x = torch.from_numpy(np.concatenate(good)).contiguous(
                    memory_format=torch.channels_last)
                maps = base(x)
                maps = maps.reshape(-1, len(views), *maps.shape[1:])
                if not decoded_rows and out is None:  # the first photo decoded: allocate
                    result.maps = zeros((len(paths), *maps.shape[1:]))  # failed rows: 0
                result.maps[rows] = maps
                decoded_rows += rows
                if companion is not None:
                    side = companion(x)
                    side_chunks.append(side.reshape(-1, len(views), side.shape[1]))
            for d in decoded:
                result.phashes.append(d.phash)
                result.thumbs.append(d.thumb)
                result.errors.append(d.error)
            if advance:
                advance(len(futures))
    if not decoded_rows and none_ok:
        return result
    if not decoded_rows:
        first = next((e for e in result.errors if e), "")
        more = f" (the first: {str(first).rstrip('.')})" if first else ""
        raise ImageError(f"{len(paths)} photo(s)" if paths else "catalogue",
                         f"none of them could be decoded{more}.")
    if out is not None:  # rows of photos that could not be decoded are zeros
        failed = sorted(set(range(len(paths))) - set(decoded_rows))
        if failed:
            out[failed] = 0
    if companion is not None:
        good_side = torch.cat(side_chunks)
        result.side = torch.zeros(len(paths), *good_side.shape[1:])
        result.side[decoded_rows] = good_side
    return result
