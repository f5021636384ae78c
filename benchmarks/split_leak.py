"""Copies of catalogue photos that a seeded split puts in two splits, and the photos the
look-alike groups move.

Writes ``--per-kind`` copies of distinct catalogue photos for each of 20 kinds into a
temporary folder (17 the duplicate rules promise to catch: an exact copy, JPEG quality 30 and
10, PNG, WebP, half, a quarter and twice the size, mirrored (also at quality 30), 90 degrees
turned, or stored turned with an EXIF orientation, 2.5 % cropped a side, 8 % brighter and 12 %
more saturated, a white border of a tenth of the width, squared onto a white canvas, a
watermark's text; 3 they do not: 7.5 % cropped a side, turned 5 degrees, greyscale), embeds
the catalogue and the copies with the pretrained backbone as ``vitrine train``'s split does,
finds the duplicate groups (:func:`vitrine.dedupe_groups.find_duplicates`) and the look-alike
groups (:func:`vitrine.split.alike_groups`), and splits them (:func:`vitrine.split.make_split`,
default fractions) with ``--seeds`` seeds three ways:

- ``head``: the duplicate groups alone (the split before look-alikes);
- ``joined``: the look-alike groups joined with the duplicate groups before the split
  (helper-355's first version; it changes the split's draws);
- ``moved``: ``make_split(..., alike=...)``: the split of ``head`` with only the look-alike
  groups that span splits moved into one of them.

Per version: the copy/photo pairs in two splits per seed (the promised kinds, the others,
those in train and test), and on the catalogue alone (its own duplicate and look-alike
groups) how many photos are in another split than ``head`` puts them, per seed.

A catalogue split into ``train``/``val``/``test`` folders keeps them, and so does
``--as-folders`` of a plain one (a ``test`` folder of about 15 % of each category, drawn by
``--seed``, and a ``train`` folder): each copy goes into its photo's folder, the missing
split is carved out of ``train`` by each seed, and the versions are ``head`` (the carving
without the look-alikes, as before helper-366) and ``moved`` (with them); the look-alike
groups the folders themselves put in two splits (kept there, reported) are counted too.

    python benchmarks/split_leak.py --catalog ../shared/data/demo-catalog \\
        --weights ../shared/models/mobilenet_v2_imagenet.pth > benchmarks/results/split_leak.json
    python benchmarks/split_leak.py --catalog ../shared/data/demo-catalog --as-folders \\
        --weights ../shared/models/mobilenet_v2_imagenet.pth \\
        > benchmarks/results/split_leak_folders.json
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from vitrine.catalog import Product
from vitrine.config import Settings
from vitrine.dedupe import DuplicateRules
from vitrine.dedupe_groups import find_duplicates
from vitrine.embed import Embedder
from vitrine.split import (
    SPLIT_ALIKE_COSINE,
    alike_groups,
    group_split,
    joined,
    make_split,
    read_catalogue,
)

PROMISED = ("exact", "q30", "q10", "png", "webp", "half", "quarter", "upscale2", "mirror",
            "mirror_q30", "rot90", "exif", "crop95", "bright", "border", "square", "watermark")
OTHERS = ("crop85", "rot5", "grey")


def _crop(img: Image.Image, keep: float) -> Image.Image:
    w, h = img.size
    cw, ch = int(w * keep), int(h * keep)
    return img.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))


def _scaled(img: Image.Image, factor: float, how: Image.Resampling) -> Image.Image:
    return img.resize((round(img.width * factor), round(img.height * factor)), how)


def _squared(img: Image.Image) -> Image.Image:
    side = max(img.size) + 40
    canvas = Image.new("RGB", (side, side), "white")
    canvas.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
    return canvas


def _watermarked(img: Image.Image) -> Image.Image:
    img = img.copy()
    draw = ImageDraw.Draw(img)
    draw.text((img.width * 0.1, img.height * 0.85), "SHOP.COM SALE -30%", fill=(120, 120, 120))
    draw.text((img.width * 0.3, img.height * 0.05), "sample", fill=(160, 160, 160))
    return img


def _brighter(img: Image.Image) -> Image.Image:
    return ImageEnhance.Color(ImageEnhance.Brightness(img).enhance(1.08)).enhance(1.12)


LANCZOS, BICUBIC = Image.Resampling.LANCZOS, Image.Resampling.BICUBIC
EDITS = {  # kind: (the copy, its file's suffix, what it is saved with)
    "exact": (None, None, {}),
    "q30": (lambda im: im, ".jpg", {"quality": 30}),
    "q10": (lambda im: im, ".jpg", {"quality": 10}),
    "png": (lambda im: im, ".png", {}),
    "webp": (lambda im: im, ".webp", {"quality": 80}),
    "half": (lambda im: _scaled(im, 0.5, LANCZOS), ".jpg", {"quality": 90}),
    "quarter": (lambda im: _scaled(im, 0.25, LANCZOS), ".jpg", {"quality": 90}),
    "upscale2": (lambda im: _scaled(im, 2, BICUBIC), ".jpg", {"quality": 90}),
    "mirror": (ImageOps.mirror, ".jpg", {"quality": 95}),
    "mirror_q30": (ImageOps.mirror, ".jpg", {"quality": 30}),
    "rot90": (lambda im: im.transpose(Image.Transpose.ROTATE_90), ".jpg", {"quality": 95}),
    "exif": (lambda im: im.transpose(Image.Transpose.ROTATE_90), ".jpg", {"quality": 95}),
    "crop95": (lambda im: _crop(im, 0.95), ".jpg", {"quality": 95}),
    "bright": (_brighter, ".jpg", {"quality": 95}),
    "border": (lambda im: ImageOps.expand(im, border=max(8, im.width // 10), fill="white"),
               ".jpg", {"quality": 95}),
    "square": (_squared, ".jpg", {"quality": 95}),
    "watermark": (_watermarked, ".jpg", {"quality": 95}),
    "crop85": (lambda im: _crop(im, 0.85), ".jpg", {"quality": 95}),
    "rot5": (lambda im: im.rotate(5, resample=BICUBIC, fillcolor="white"), ".jpg",
             {"quality": 95}),
    "grey": (lambda im: ImageOps.grayscale(im).convert("RGB"), ".jpg", {"quality": 95}),
}


def write_copy(source: Path, kind: str, target: Path) -> Path:
    """A copy of ``source`` of ``kind`` at ``target`` (its suffix the kind's)."""
    edit, suffix, options = EDITS[kind]
    if edit is None:
        target = target.with_suffix(source.suffix)
        target.write_bytes(source.read_bytes())
        return target
    target = target.with_suffix(suffix)
    if kind == "exif":  # (stored turned, shown upright: orientation 6 turns it back)
        exif = Image.Exif()
        exif[0x0112] = 6
        options = {**options, "exif": exif.tobytes()}
    edit(Image.open(source).convert("RGB")).save(target, **options)
    return target


def embedded(products: list[Product], settings: Settings
             ) -> tuple[list[Product], np.ndarray, list[str], list[bytes], list[str]]:
    """The products whose photos could be read, their pretrained vectors, pHashes,
    thumbnails and sha256."""
    embedder = Embedder.from_settings(settings)
    results = list(embedder.embed_paths([p.image for p in products]))
    ok = [r for r in results if r.error is None]
    return ([products[r.index] for r in ok], np.stack([r.vector for r in ok]),
            [r.phash for r in ok], [r.thumb for r in ok], [r.sha256 for r in ok])


def groups_of(products: list[Product], vectors: np.ndarray, phashes: list[str],
              thumbs: list[bytes], shas: list[str], rules: DuplicateRules
              ) -> tuple[list[list[str]], list[list[str]]]:
    """The duplicate and the look-alike groups of ``products``, as ``vitrine train`` finds
    them."""
    ids = [p.product_id for p in products]
    groups = [list(map(str, g)) for g in find_duplicates(ids, vectors, phashes, thumbs, shas,
                                                         rules)]
    return groups, alike_groups(ids, vectors, phashes, rules)


def splits(products: list[Product], groups: list[list[str]], alike: list[list[str]],
           seed: int, given: dict[str, str] | None = None) -> dict[str, dict[str, str]]:
    """The versions' assignments (see the module docstring); of a split in folders
    (``given``), head's and moved's, and the look-alike groups across its folders."""
    settings = Settings(train_seed=seed)
    if given is not None:
        moved = make_split(products, groups, settings, given, alike)
        return {"head": make_split(products, groups, settings, given).assignment,
                "moved": moved.assignment, "across": moved.alike_across_folders}
    return {"head": make_split(products, groups, settings).assignment,
            "joined": make_split(products, joined(groups + alike), settings).assignment,
            "moved": make_split(products, groups, settings, alike=alike).assignment}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", type=Path, required=True)
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--per-kind", type=int, default=25, help="Copies of each kind.")
    ap.add_argument("--seeds", type=int, default=20, help="Split seeds 0 … N-1.")
    ap.add_argument("--seed", type=int, default=0, help="Which photos are copied.")
    ap.add_argument("--as-folders", action="store_true",
                    help="Split the catalogue into train and test folders (drawn by --seed).")
    args = ap.parse_args()

    settings = Settings(weights=args.weights)
    rules = DuplicateRules.from_settings(settings)
    catalogue, given, _ = read_catalogue(args.catalog)
    if args.as_folders and given is None:
        given = {p.product_id: name for p, name in zip(catalogue, group_split(
            [p.category for p in catalogue], [], 0.0, 0.15, args.seed), strict=True)}
    kinds = (*PROMISED, *OTHERS)
    sources = random.Random(args.seed).sample(catalogue, args.per_kind * len(kinds))
    with tempfile.TemporaryDirectory() as tmp:
        copies, pairs = [], []
        for n, source in enumerate(sources):
            kind = kinds[n // args.per_kind]
            copy_id = f"copy{n:04d}_{kind}"
            path = write_copy(source.image, kind, Path(tmp) / copy_id)
            copies.append(Product(copy_id, path, source.category))
            pairs.append((source.product_id, copy_id, kind))
            if given is not None:  # (in its photo's folder)
                given[copy_id] = given[source.product_id]
        products, vectors, phashes, thumbs, shas = embedded([*catalogue, *copies], settings)
    read = {p.product_id for p in products}
    pairs = [pair for pair in pairs if pair[0] in read and pair[1] in read]
    groups, alike = groups_of(products, vectors, phashes, thumbs, shas, rules)
    group_of = {pid: k for k, g in enumerate(groups) for pid in g}
    alike_of = {pid: k for k, g in enumerate(alike) for pid in g}
    grouped = Counter(kind for a, b, kind in pairs if a in group_of
                      and group_of[a] == group_of.get(b))
    kept = Counter(kind for a, b, kind in pairs if a in group_of
                   and group_of[a] == group_of.get(b) or a in alike_of
                   and alike_of[a] == alike_of.get(b))

    leaks: dict[str, dict[str, list[int]]] = {}
    by_kind: dict[str, Counter] = {}
    across: list[int] = []
    for seed in range(args.seeds):
        versions = splits(products, groups, alike, seed, given)
        if given is not None:
            across.append(len(versions.pop("across")))
        for version, side in versions.items():  # (a copy left out of a split: not apart)
            apart = [(a, b, kind) for a, b, kind in pairs
                     if a in side and b in side and side[a] != side[b]]
            counts = leaks.setdefault(version, {"promised": [], "others": [],
                                                "train_and_test": []})
            counts["promised"].append(sum(kind in PROMISED for *_, kind in apart))
            counts["others"].append(sum(kind in OTHERS for *_, kind in apart))
            counts["train_and_test"].append(sum({side[a], side[b]} == {"train", "test"}
                                                for a, b, _ in apart))
            by_kind.setdefault(version, Counter()).update(kind for *_, kind in apart)

    # the catalogue alone: its own groups, and the photos each version moves from head's
    row = {p.product_id: i for i, p in enumerate(products)}
    own = [row[p.product_id] for p in catalogue if p.product_id in row]
    cat_products = [products[i] for i in own]
    cat_groups, cat_alike = groups_of(cat_products, vectors[own], [phashes[i] for i in own],
                                      [thumbs[i] for i in own], [shas[i] for i in own], rules)
    moved: dict[str, list[int]] = {"moved": []} if given is not None else {
        "joined": [], "moved": []}
    cat_across: list[int] = []
    for seed in range(args.seeds):
        side = splits(cat_products, cat_groups, cat_alike, seed, given)
        if given is not None:
            cat_across.append(len(side.pop("across")))
        for version in moved:
            moved[version].append(sum(side[version].get(pid) != s
                                      for pid, s in side["head"].items()))
    category = {p.product_id: p.category for p in cat_products}
    print(json.dumps({
        "catalog": str(args.catalog), "per_kind": args.per_kind, "seeds": args.seeds,
        "seed": args.seed, "alike_cosine": SPLIT_ALIKE_COSINE,
        **({"folders": dict(sorted(Counter(given[p.product_id] for p in catalogue).items())),
            "alike_across_folders_each_seed": across} if given is not None else {}),
        "phash_distance": 2 * rules.phash_distance,
        "copies": {"promised": sum(kind in PROMISED for *_, kind in pairs),
                   "others": sum(kind in OTHERS for *_, kind in pairs)},
        "grouped_by_the_rules": {k: grouped[k] for k in kinds},
        "grouped_or_alike": {k: kept[k] for k in kinds},
        "apart_per_seed": {version: {what: round(float(np.mean(v)), 2)
                                     for what, v in counts.items()}
                           for version, counts in leaks.items()},
        "apart_by_kind_per_seed": {version: {k: round(c[k] / args.seeds, 2) for k in kinds
                                             if c[k]} for version, c in by_kind.items()},
        "apart_each_seed": leaks,
        "catalogue": {"photos": len(cat_products), "duplicate_groups": cat_groups,
                      "alike_groups": [[f"{pid} ({category[pid]})" for pid in g]
                                       for g in cat_alike],
                      "moved_from_head_each_seed": moved,
                      **({"alike_across_folders_each_seed": cat_across}
                         if given is not None else {}),
                      "moved_from_head_first_5_seeds": {v: m[:5] for v, m in moved.items()}},
    }, indent=2))


if __name__ == "__main__":
    main()
