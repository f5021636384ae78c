"""Duplicate detection quality: full-size photos vs copies downscaled to 60×80 and re-encoded,
or (``--copies edits``) lightly edited, (``--copies pad``) padded (``--copies mirror``)
mirrored or (``--copies rotate``) rotated copies.

Picks ``--pairs`` random photos of the catalogue, writes a 60×80 JPEG copy of each into a
temporary folder (with ``--copies edits``, in turn: a "SALE -20%" badge in a corner, 15 %
brighter, 4 % cropped from each side, recompressed at JPEG quality 50; with ``--copies
pad``, in turn: squared onto a white canvas 10 % larger than its longer side, a white margin
of a quarter of its width and height on each side, scaled to 600 pixels on its longer side
in the middle of an 800×800 white listing; with ``--copies mirror``, flipped left to right;
with ``--copies rotate``, turned by 90, 180 or 270 degrees, chosen at random per copy with the
seed; those at JPEG quality 90; recall per kind), runs
``vitrine dedupe``'s library function over the catalogue and that folder,
and reports recall (source and copy in one group) and pair precision (fraction of grouped pairs
that are a photo and its own copy; real duplicates already in the catalogue count as wrong;
``wrong_pairs``: the first 20 of the others, a copy named by its source),
plus the range of each signal (pHash distance, thumbnail cosine, colour difference, embedding
cosine) between a photo and its copy, and ``calibration``: the closest two catalogue photos of
different products whose pHashes agree and the embedding rule derived from them as ``vitrine
train`` does (``vitrine.dedupe.calibrated_embed_cosine``; the duplicates set aside are those
of the thumbnail rule, where train also sets aside those its pretrained embedding rule finds).

``--background GREY`` repaints every catalogue photo's near-white pixels to that grey first;
``--banner FRACTION`` adds under every one a dark-blue band of that share of its height with
a shop's name and address in it (a supplier's banner, which different products then share),
and the copies are made of those photos.

    python benchmarks/dedupe_quality.py --catalog ../shared/data/demo-catalog \
        --weights ../shared/models/mobilenet_v2_imagenet.pth --pairs 150 [--model DIR] \
        [--copies edits|pad|mirror|rotate] [--background GREY | --banner FRACTION]
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

from vitrine.catalog import scan_images
from vitrine.config import Settings
from vitrine.dedupe import DuplicateRules, calibrated_embed_cosine, hamming, thumb_vectors
from vitrine.dedupe_files import dedupe_folders
from vitrine.embed import Embedder

try:
    from vitrine.dedupe_colour import colour_difference
    from vitrine.dedupe_groups import find_duplicates
except ImportError:  # (code from before dedupe.py was split, run with PYTHONPATH)
    from vitrine.dedupe import colour_difference, find_duplicates

RESAMPLERS = [Image.Resampling.LANCZOS, Image.Resampling.BILINEAR, Image.Resampling.BICUBIC]
EDITS = ("badge", "brighter", "crop", "recompressed")
PADS = ("square", "margin", "listing")
TURNS = ("rotate_90", "rotate_180", "rotate_270")
KINDS = {"edits": EDITS, "pad": PADS, "mirror": ("mirror",), "rotate": TURNS}
ROTATIONS = {"rotate_90": Image.Transpose.ROTATE_90, "rotate_180": Image.Transpose.ROTATE_180,
             "rotate_270": Image.Transpose.ROTATE_270}


def edited(img: Image.Image, kind: str) -> Image.Image:
    """A lightly edited copy, as a shop re-uploads a photo (see the module docstring)."""
    w, h = img.size
    if kind == "badge":
        img = img.copy()
        draw = ImageDraw.Draw(img)
        draw.rectangle((w * 0.6, h * 0.88, w * 0.98, h * 0.98), fill=(200, 30, 30))
        draw.text((w * 0.62, h * 0.9), "SALE -20%", fill=(255, 255, 255))
        return img
    if kind == "brighter":
        return ImageEnhance.Brightness(img).enhance(1.15)
    if kind == "crop":
        return img.crop((round(w * 0.04), round(h * 0.04), round(w * 0.96), round(h * 0.96)))
    if kind == "mirror":
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if kind in ROTATIONS:  # (counter-clockwise: a photo stored sideways or upside down)
        return img.transpose(ROTATIONS[kind])
    if kind in PADS:
        return padded(img, kind)
    return img  # recompressed: saved at a low quality


def padded(img: Image.Image, kind: str) -> Image.Image:
    """The photo on a white canvas, as shops list it (see the module docstring)."""
    w, h = img.size
    if kind == "square":
        side = round(max(w, h) * 1.1)
        size, at = (side, side), ((side - w) // 2, (side - h) // 2)
    elif kind == "margin":
        size, at = (round(w * 1.5), round(h * 1.5)), (round(w * 0.25), round(h * 0.25))
    else:  # listing
        scale = 600 / max(w, h)
        img = img.resize((round(w * scale), round(h * scale)), Image.Resampling.LANCZOS)
        size, at = (800, 800), ((800 - img.width) // 2, (800 - img.height) // 2)
    canvas = Image.new("RGB", size, "white")
    canvas.paste(img, at)
    return canvas


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", type=Path, required=True)
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--model", type=Path, help="A trained model folder (its calibrated "
                    "duplicate rule; default: the pretrained backbone).")
    ap.add_argument("--pairs", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--copies", choices=("downscale", *KINDS), default="downscale")
    ap.add_argument("--background", type=int, metavar="GREY", help="Repaint the near-white "
                    "pixels (every channel from 240) of every photo to this grey (0-255) "
                    "before the run (default: the photos as they are).")
    ap.add_argument("--banner", type=float, metavar="FRACTION", help="Add a dark-blue band "
                    "with a shop's name under every photo, this share of its height "
                    "(0.12: an eighth), before the run.")
    args = ap.parse_args()
    if args.background is not None and args.banner is not None:
        ap.error("--background and --banner each remake the catalogue; pass one of them.")

    settings = Settings(weights=args.weights, model=args.model)
    with tempfile.TemporaryDirectory() as tmp:
        if args.background is not None:
            args.catalog = repainted(args.catalog, Path(tmp) / "catalog", args.background)
        if args.banner is not None:
            args.catalog = bannered(args.catalog, Path(tmp) / "catalog", args.banner)
        photos = scan_images(args.catalog)
        rng = random.Random(args.seed)
        chosen = rng.sample(photos, args.pairs)
        copies = Path(tmp) / "copies"
        copies.mkdir()
        source_of: dict[str, str] = {}
        kind_of: dict[str, str] = {}
        for i, path in enumerate(chosen):
            img = Image.open(path).convert("RGB")
            target = copies / f"copy{i:04d}.jpg"
            if args.copies == "downscale":
                img.resize((60, 80), RESAMPLERS[i % 3]).save(
                    target, quality=rng.choice([60, 75, 90]))
            else:
                kinds = KINDS[args.copies]
                kind = rng.choice(kinds) if args.copies == "rotate" else kinds[i % len(kinds)]
                kind_of[str(target)] = kind
                edited(img, kind).save(target, quality=50 if kind == "recompressed" else 90)
            source_of[str(target)] = str(args.catalog / path.relative_to(args.catalog))
        embedder = Embedder.from_settings(settings)
        rules = embedder.duplicate_rules()
        groups, _ = dedupe_folders([args.catalog, copies], settings, embedder=embedder,
                                   rules=rules)
        signals = pair_signals(embedder, list(source_of.items()))
        calibration = catalogue_calibration(embedder, photos, settings)
    group_of = {member: gi for gi, group in enumerate(groups) for member in group}
    hits = {copy: copy in group_of and group_of.get(src) == group_of[copy]
            for copy, src in source_of.items()}
    found = sum(hits.values())
    by_kind = {kind: round(float(np.mean([hits[c] for c, k in kind_of.items() if k == kind])),
                           3) for kind in KINDS.get(args.copies, ()) if kind in kind_of.values()}

    def origin(p: str) -> str:
        return source_of.get(p, p)

    def name(p: str) -> str:  # (a catalogue photo by its relative path, a copy as its source's)
        return str(Path(origin(p)).relative_to(args.catalog)) + (" (copy)" if p in source_of
                                                                  else "")

    pairs = [(a, b) for g in groups for a, b in itertools.combinations(g, 2)]
    correct = sum(origin(a) == origin(b) for a, b in pairs)
    wrong = sorted(sorted((name(a), name(b))) for a, b in pairs if origin(a) != origin(b))
    print(json.dumps({
        "copies": args.copies, "pairs": args.pairs,
        **({"background": args.background} if args.background is not None else {}),
        **({"banner": args.banner} if args.banner is not None else {}),
        "recall": found / args.pairs,
        **({"recall_by_kind": by_kind} if by_kind else {}),
        "grouped_pairs": len(pairs), "pair_precision": correct / len(pairs) if pairs else 1.0,
        "groups": len(groups), "wrong_pairs": wrong[:20],
        "embedding": embedder.manifest.embedding,
        "rules": rules.__dict__,
        "copy_vs_source": signals, "calibration": calibration,
    }, indent=2))


def repainted(catalog: Path, dest: Path, grey: int) -> Path:
    """``dest``: each photo of ``catalog`` at its own relative path, its near-white pixels
    (every channel from 240) set to ``grey``, as JPEG quality 95."""
    for path in scan_images(catalog):
        pixels = np.array(Image.open(path).convert("RGB"))
        pixels[pixels.min(axis=2) >= 240] = grey
        target = dest / path.relative_to(catalog)
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(target, "JPEG", quality=95)
    return dest


def bannered(catalog: Path, dest: Path, fraction: float) -> Path:
    """``dest``: each photo of ``catalog`` at its own relative path with a band ``fraction``
    of its height added under it, dark blue with "ACME SHOES  www.acme.com" in white, as
    JPEG quality 90."""
    font = ImageFont.load_default(size=16)
    for path in scan_images(catalog):
        img = Image.open(path).convert("RGB")
        w, h = img.size
        band = round(h * fraction)
        page = Image.new("RGB", (w, h + band), (20, 40, 110))
        page.paste(img, (0, 0))
        ImageDraw.Draw(page).text((10, h + band // 2 - 9), "ACME SHOES  www.acme.com",
                                  font=font, fill="white")
        target = dest / path.relative_to(catalog)
        target.parent.mkdir(parents=True, exist_ok=True)
        page.save(target, "JPEG", quality=90)
    return dest


def catalogue_calibration(embedder: Embedder, photos: list[Path], settings: Settings) -> dict:
    """The embedding rule calibrated on the catalogue's own vectors, the duplicates that the
    thumbnail rule finds aside (the embedding rule is what is being calibrated)."""
    results = [r for r in embedder.embed_paths(photos) if r.error is None]
    vectors = np.stack([r.vector for r in results])
    phashes = [r.phash for r in results]
    rules = DuplicateRules.from_settings(settings,
                                         probs_tail=embedder.duplicate_rules().probs_tail)
    groups = find_duplicates(list(range(len(results))), vectors, phashes,
                             [r.thumb for r in results], rules=replace(rules, embed_cosine=2.0))
    cosine, closest = calibrated_embed_cosine(vectors, phashes, groups, rules)
    return {"photos": len(results), "closest_different_products": closest,
            "embed_cosine": cosine}


def pair_signals(embedder: Embedder, pairs: list[tuple[str, str]]) -> dict:
    """Min / median / max of each duplicate signal between copies and their sources."""
    flat = [Path(p) for pair in pairs for p in pair]
    res = list(embedder.embed_paths(flat))
    copy, src = res[0::2], res[1::2]
    tc, ts = thumb_vectors([r.thumb for r in copy]), thumb_vectors([r.thumb for r in src])
    values = {
        "phash_distance": [hamming(a.phash, b.phash) for a, b in zip(copy, src, strict=True)],
        "thumb_cosine": list((tc * ts).sum(axis=1)),
        "colour_difference": [colour_difference(a.thumb, b.thumb)
                              for a, b in zip(copy, src, strict=True)],
        "embedding_cosine": [float(a.vector @ b.vector) for a, b in zip(copy, src, strict=True)],
    }
    return {name: {"min": round(float(np.min(v)), 4), "median": round(float(np.median(v)), 4),
                   "max": round(float(np.max(v)), 4)} for name, v in values.items()}


if __name__ == "__main__":
    main()
