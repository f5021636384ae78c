"""How many bits apart the products' sign pHashes of the thumbnail rule's second views lie
(the rule's limit: ``dedupe_pairs.DETAIL_DISTANCE × phash_distance +
dedupe_pairs.DETAIL_FLIPS``, 26 of 256), for copies and for different products of the
catalogue.

Each view is turned each way the duplicate search turns it (``dedupe_views.orientations``,
its pHash with it: ``oriented_details``), and two photos are compared in each pair of their
ways, as ``dedupe_pairs._view_pairs`` compares them: view cosine, colour difference (of the turned
views) and distance, the bits their products' pHashes differ in.

``copies``: a turned, a mirrored and a padded copy of each catalogue photo, made as
``dedupe_turn_margin.py`` makes them (its ``copies``). Of each kind, ``alike``: the copies
whose views and their originals' agree as the rule asks in some way (cosine and colour),
their distance the least over those ways (``histogram``); ``framed_alike``: of those, how
many the whole photos' thumbnails and pHashes agree for (``_view_pairs`` leaves them to the
whole photos); ``within_99_percent``: the distance 99 % of them lie within; ``above_22``:
those further apart; ``within_24`` / ``within_26``: how many the old limit (4 × 6) and the
new one keep.

``different``: ``pairs``, the pairs of catalogue photos (but ``excluded``, the catalogue's
own duplicate) whose views agree to a cosine of ``--cosine`` in some way; ``rule_pairs``,
those whose views agree in some way as the rule asks (cosine and colour), which their
pHashes alone keep apart. Listed, those at most ``--near`` bits apart (the least over the
ways whose views agree to ``--cosine``) and the rule's pairs: names, distance, the view
cosine and colour difference of that way, ``rule``, ``framed_alike``, and for the rule's
pairs ``rule_distance`` (the least over the ways that agree as the rule asks) and
``copies_rule_distance`` (of each kind, the copy of the first from the second and the copy
of the second from the first, so; None: in no way).

    python benchmarks/dedupe_sign_distances.py --catalog ../shared/data/demo-catalog \\
        > benchmarks/results/dedupe_sign_distances.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dedupe_turn_margin import copies  # noqa: E402

from vitrine.catalog import scan_images  # noqa: E402
from vitrine.dedupe import (  # noqa: E402
    DuplicateRules,
    _unit_rows,
    hamming,
    perceptual_hash,
    thumb_vectors,
    thumbnail,
)
from vitrine.dedupe_views import orientations, oriented, oriented_details  # noqa: E402

try:
    from vitrine.dedupe_colour import _colour_differences
    from vitrine.dedupe_pairs import DETAIL_DISTANCE, DETAIL_FLIPS
except ImportError:  # (code from before dedupe.py was split, run with PYTHONPATH)
    from vitrine.dedupe import DETAIL_DISTANCE, DETAIL_FLIPS, _colour_differences

EXCLUDED = (("salto_feminino/13026.jpg", "salto_feminino/22277.jpg"),)
"""The catalogue's own duplicate (``dedupe_quality.py``'s ``wrong_pairs``): not two products."""


class Ways:
    """Each photo's views turned each way ``dedupe_pairs._view_pairs`` searches them in."""

    def __init__(self, thumbs: list[bytes], phashes: list[str], rules: DuplicateRules):
        self.thumbs, self.phashes, self.rules = thumbs, phashes, rules
        masks = orientations(thumbs)
        self.photo, self.turn = np.nonzero(np.unpackbits(masks[:, None], axis=1,
                                                         bitorder="little"))
        of = [thumbs[i] for i in self.photo.tolist()]
        views = oriented(of, self.turn)
        self.unit = _unit_rows(views)
        self.views = [row.tobytes() for row in views]
        self.bits = np.unpackbits(oriented_details(of, self.turn), axis=1)
        self.of_photo = [np.flatnonzero(self.photo == i) for i in range(len(thumbs))]

    def compared(self, wa: np.ndarray, wb: np.ndarray) -> dict[str, np.ndarray]:
        """Of way pairs (``wa[k]``, ``wb[k]``): their photos, view cosine, colour difference
        and distance (the bits their products' pHashes differ in)."""
        return {"a": self.photo[wa], "b": self.photo[wb],
                "cosine": np.einsum("ij,ij->i", self.unit[wa], self.unit[wb]),
                "colour": _colour_differences(self.views, wa, wb),
                "distance": (self.bits[wa] ^ self.bits[wb]).sum(axis=1)}

    def between(self, photo_pairs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        """The way pairs of those pairs of photos: each way of one with each of the other."""
        wa, wb = [], []
        for a, b in photo_pairs:
            mine, theirs = self.of_photo[a], self.of_photo[b]
            wa += np.repeat(mine, len(theirs)).tolist()
            wb += np.tile(theirs, len(mine)).tolist()
        return np.array(wa, np.int64), np.array(wb, np.int64)

    def framed_alike(self, a: int, b: int) -> bool:
        """Whether two photos' whole thumbnails and pHashes agree (``_view_pairs`` leaves
        them to the whole photos)."""
        whole = thumb_vectors([self.thumbs[a], self.thumbs[b]])
        return bool(whole[0] @ whole[1] >= self.rules.thumb_cosine
                    and hamming(self.phashes[a], self.phashes[b]) <= self.rules.phash_distance)

    def alike(self, pairs: dict[str, np.ndarray]) -> np.ndarray:
        return ((pairs["cosine"] >= self.rules.thumb_cosine)
                & (pairs["colour"] <= self.rules.max_colour_diff))


def least(pairs: dict[str, np.ndarray], where: np.ndarray, n: int
          ) -> dict[int, dict[str, float]]:
    """Of each pair of photos (``a × n + b``), the way pair the least distance apart of those
    ``where``."""
    out: dict[int, dict[str, float]] = {}
    for k in np.flatnonzero(where)[np.argsort(pairs["distance"][where], kind="stable")]:
        key = int(pairs["a"][k]) * n + int(pairs["b"][k])
        if key not in out:
            out[key] = {"distance": int(pairs["distance"][k]),
                        "cosine": round(float(pairs["cosine"][k]), 4),
                        "colour": round(float(pairs["colour"][k]), 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cosine", type=float, default=0.95,
                    help="different products whose views agree to this cosine")
    ap.add_argument("--near", type=int, default=34,
                    help="different products listed up to this many bits apart")
    args = ap.parse_args()
    rules = DuplicateRules()
    limit = DETAIL_DISTANCE * rules.phash_distance
    photos = scan_images(args.catalog)
    names = [path.relative_to(args.catalog).as_posix() for path in photos]
    n = len(photos)
    thumbs, phashes, made_of = [], [], {}
    for img, made in copies(photos, args.seed):
        thumbs.append(thumbnail(img))
        phashes.append(perceptual_hash(img))
        for name, kind, copy in made:
            made_of.setdefault(name, []).append((thumbnail(copy), perceptual_hash(copy), kind))
    for name in made_of:  # (the photos' rows first, then each kind's copies in photo order)
        thumbs += [t for t, _, _ in made_of[name]]
        phashes += [p for _, p, _ in made_of[name]]
    ways = Ways(thumbs, phashes, rules)

    result_copies = {}
    for k, name in enumerate(made_of):
        pairs = ways.compared(*ways.between([(i, (k + 1) * n + i) for i in range(n)]))
        found = least(pairs, ways.alike(pairs), len(thumbs))
        found = {key % len(thumbs) - (k + 1) * n: way for key, way in found.items()}
        distances = np.sort(np.array([way["distance"] for way in found.values()], np.int64))
        result_copies[name] = {
            "alike": len(found),
            "framed_alike": sum(ways.framed_alike(i, (k + 1) * n + i) for i in found),
            "within_99_percent": int(distances[math.ceil(0.99 * len(distances)) - 1]),
            "above_22": [{"photo": names[i], "copy": made_of[name][i][2], **way}
                         for i, way in sorted(found.items(), key=lambda x: x[1]["distance"])
                         if way["distance"] > 22],
            f"within_{limit}": int((distances <= limit).sum()),
            f"within_{limit + DETAIL_FLIPS}": int((distances <= limit + DETAIL_FLIPS).sum()),
            "histogram": {str(d): int(c) for d, c in enumerate(np.bincount(distances)) if c}}

    mine = np.concatenate(ways.of_photo[:n])
    unit = ways.unit[mine]
    close = np.argwhere(unit @ unit.T >= args.cosine)
    wa, wb = mine[close[:, 0]], mine[close[:, 1]]
    keep = ways.photo[wa] < ways.photo[wb]
    excluded = {(names.index(x), names.index(y)) for x, y in EXCLUDED
                if x in names and y in names}
    keep &= np.array([(a, b) not in excluded for a, b in
                      zip(ways.photo[wa].tolist(), ways.photo[wb].tolist(), strict=True)], bool)
    pairs = ways.compared(wa[keep], wb[keep])
    near = least(pairs, pairs["cosine"] >= args.cosine, n)
    rule = least(pairs, ways.alike(pairs), n)

    def with_copies(a: int, b: int) -> dict[str, list[int | None]]:
        """Of each kind, how far each one's copy lies from the other in the ways their views
        agree as the rule asks (None: in none)."""
        out = {}
        for k, name in enumerate(made_of):
            out[name] = []
            for x, y in (((k + 1) * n + a, b), ((k + 1) * n + b, a)):
                pairs = ways.compared(*ways.between([(x, y)]))
                alike = ways.alike(pairs)
                out[name].append(int(pairs["distance"][alike].min()) if alike.any() else None)
        return out

    listed = [{"photos": [names[key // n], names[key % n]], **way, "rule": key in rule,
               "framed_alike": ways.framed_alike(key // n, key % n),
               **({"rule_distance": rule[key]["distance"],
                   "copies_rule_distance": with_copies(key // n, key % n)}
                  if key in rule else {})}
              for key, way in sorted(near.items(), key=lambda x: (x[1]["distance"], x[0]))
              if way["distance"] <= args.near or key in rule]
    print(json.dumps({
        "command": " ".join(["benchmarks/dedupe_sign_distances.py", *sys.argv[1:]]),
        "photos": n, "seed": args.seed, "limit": limit + DETAIL_FLIPS,
        "rule": {"thumb_cosine": rules.thumb_cosine, "max_colour_diff": rules.max_colour_diff},
        "copies": result_copies,
        "different": {"cosine": args.cosine, "excluded": [list(p) for p in EXCLUDED],
                      "pairs": len(near), "rule_pairs": len(rule),
                      f"within_{args.near}": listed}}, indent=2))


if __name__ == "__main__":
    main()
