"""Duplicate detection quality: full-size photos vs copies downscaled to 60×80 and re-encoded.

Picks ``--pairs`` random photos of the catalogue, writes a 60×80 JPEG copy of each into a
temporary folder, runs ``vitrine dedupe``'s library function over the catalogue and that folder,
and reports recall (source and copy in one group) and pair precision (fraction of grouped pairs
that are a photo and its own copy; real duplicates already in the catalogue count as wrong),
plus the range of each signal (pHash distance, thumbnail cosine, colour difference, embedding
cosine) between a photo and its copy.

    python benchmarks/dedupe_quality.py --catalog ../shared/data/demo-catalog \
        --weights ../shared/models/mobilenet_v2_imagenet.pth --pairs 150
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from vitrine.catalog import scan_images
from vitrine.config import Settings
from vitrine.dedupe import DuplicateRules, colour_difference, hamming, thumb_vectors
from vitrine.dedupe_files import dedupe_folders
from vitrine.embed import Embedder

RESAMPLERS = [Image.Resampling.LANCZOS, Image.Resampling.BILINEAR, Image.Resampling.BICUBIC]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", type=Path, required=True)
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--pairs", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    settings = Settings(weights=args.weights)
    photos = scan_images(args.catalog)
    rng = random.Random(args.seed)
    chosen = rng.sample(photos, args.pairs)
    with tempfile.TemporaryDirectory() as tmp:
        copies = Path(tmp)
        source_of: dict[str, str] = {}
        for i, path in enumerate(chosen):
            img = Image.open(path).convert("RGB").resize((60, 80), RESAMPLERS[i % 3])
            target = copies / f"copy{i:04d}.jpg"
            img.save(target, quality=rng.choice([60, 75, 90]))
            source_of[str(target)] = str(args.catalog / path.relative_to(args.catalog))
        embedder = Embedder.from_settings(settings)
        groups, _ = dedupe_folders([args.catalog, copies], settings, embedder=embedder,
                                   rules=DuplicateRules.from_settings(settings))
        signals = pair_signals(embedder, list(source_of.items()))
    group_of = {member: gi for gi, group in enumerate(groups) for member in group}
    found = sum(1 for copy, src in source_of.items()
                if copy in group_of and group_of.get(src) == group_of[copy])

    def origin(p: str) -> str:
        return source_of.get(p, p)

    pairs = [(a, b) for g in groups for a, b in itertools.combinations(g, 2)]
    correct = sum(origin(a) == origin(b) for a, b in pairs)
    print(json.dumps({
        "pairs": args.pairs, "recall": found / args.pairs,
        "grouped_pairs": len(pairs), "pair_precision": correct / len(pairs) if pairs else 1.0,
        "groups": len(groups), "rules": DuplicateRules.from_settings(settings).__dict__,
        "copy_vs_source": signals,
    }, indent=2))


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
