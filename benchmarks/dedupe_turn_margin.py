"""How many copies the thumbnail rules alone find (no embedding), a copy of every catalogue
photo of each kind, and how many ways the second views are searched in
(``vitrine.dedupe_views.TIE_MARGIN``).

For each photo of the catalogue: a copy turned 90, 180 or 270 degrees (chosen at random with
the seed), a mirrored one and a padded one (square / margin / listing in turn, as
``dedupe_quality.py --copies pad`` makes them), each saved at JPEG quality 90; each compared
with its original alone (``find_duplicates`` of the two, their embeddings kept apart).
``found`` counts the copies grouped with their original; ``ways`` how many photos' views are
searched in 1, 2, … ways (``dedupe_views.orientations``) and their mean.

    python benchmarks/dedupe_turn_margin.py --catalog ../shared/data/demo-catalog \\
        [--margin 0.01] > benchmarks/results/dedupe_turn_margin.json

With an older ``src`` on PYTHONPATH (one without turned views) ``--margin`` is ignored and
``ways`` is null: the figures before.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dedupe_quality import PADS, edited  # noqa: E402

from vitrine import dedupe_views  # noqa: E402
from vitrine.catalog import scan_images  # noqa: E402
from vitrine.dedupe import perceptual_hash, thumbnail  # noqa: E402

try:
    from vitrine.dedupe_groups import find_duplicates
except ImportError:  # (code from before dedupe.py was split, run with PYTHONPATH)
    from vitrine.dedupe import find_duplicates

TURNS = ("rotate_90", "rotate_180", "rotate_270")


def jpeg(img: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def copies(photos: list[Path], seed: int
           ) -> Iterator[tuple[Image.Image, list[tuple[str, str, Image.Image]]]]:
    """Each photo (RGB) and its copies as ``(name, kind, copy)``: turned (a kind of
    :data:`TURNS`, chosen at random with the seed), mirrored and padded (``PADS`` in turn),
    each saved at JPEG quality 90."""
    rng = random.Random(seed)
    for i, path in enumerate(photos):
        with Image.open(path) as opened:
            img = opened.convert("RGB")
        kinds = (("turned", rng.choice(TURNS)), ("mirrored", "mirror"),
                 ("padded", PADS[i % len(PADS)]))
        yield img, [(name, kind, jpeg(edited(img, kind))) for name, kind in kinds]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", type=Path, required=True)
    ap.add_argument("--margin", type=float, help="TIE_MARGIN (default: the module's)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    turned_views = hasattr(dedupe_views, "TIE_MARGIN")
    if turned_views and args.margin is not None:
        dedupe_views.TIE_MARGIN = args.margin
    found = {"turned": 0, "mirrored": 0, "padded": 0}
    thumbs = []
    apart = np.eye(2, dtype=np.float32)  # (the embedding rule never joins them)
    photos = scan_images(args.catalog)
    for img, made in copies(photos, args.seed):
        first, phash = thumbnail(img), perceptual_hash(img)
        thumbs.append(first)
        for name, _, copy in made:
            found[name] += bool(find_duplicates([0, 1], apart, [phash, perceptual_hash(copy)],
                                                [first, thumbnail(copy)]))
    ways = None
    if turned_views:
        counts = np.array([bin(m).count("1") for m in dedupe_views.orientations(thumbs).tolist()])
        ways = {"histogram": {str(k): int(n) for k, n in enumerate(np.bincount(counts)) if n},
                "mean": round(float(counts.mean()), 3)}
    print(json.dumps({"command": " ".join(["benchmarks/dedupe_turn_margin.py", *sys.argv[1:]]),
                      "photos": len(photos), "seed": args.seed,
                      "margin": dedupe_views.TIE_MARGIN if turned_views else None,
                      "found": found, "ways": ways}, indent=2))


if __name__ == "__main__":
    main()
