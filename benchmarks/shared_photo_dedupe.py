"""Time of the duplicate search (``vitrine.dedupe_groups.find_duplicates``, what `vitrine
dedupe` runs and, through ``vitrine.dedupe_store``, every `vitrine index`) over products that
share one photo file, as a shop lists a placeholder photo or every size of a shirt: searched
as one photo (the products' sha256 given, what Vitrine does) against every product searched
and paired with every other (no sha256 given: the search before 2026-12-05, and what files of
one look with bytes of their own still get), in one run.

    python benchmarks/shared_photo_dedupe.py --products 2000 \
        > benchmarks/results/shared_photo_dedupe.json

``--jitter``: each product's file of its own look (the placeholder with a SKU written on it):
thumbnails within ±3 of one another, vectors at cosine ~0.997, so every pair is a pair of two
thumbnails that the colour check would compare (the pairwise search only).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import numpy as np

from vitrine.dedupe import DuplicateRules

try:
    from vitrine.dedupe_groups import find_duplicates
except ImportError:  # (code from before dedupe.py was split, run with PYTHONPATH)
    from vitrine.dedupe import find_duplicates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--products", type=int, default=2000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--jitter", action="store_true",
                    help="each product's thumbnail and vector a little apart")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    vector = rng.standard_normal(args.dim).astype(np.float32)
    vector /= np.linalg.norm(vector)
    n = args.products
    vectors = np.tile(vector, (n, 1))
    thumb = bytes(rng.integers(0, 200, 768, dtype=np.uint8))
    phashes, thumbs, shas = ["f0f0f0f0f0f0f0f0"] * n, [thumb] * n, ["sha-of-the-photo"] * n
    if args.jitter:
        base = np.frombuffer(thumb, np.uint8).astype(np.int16)
        thumbs = [np.clip(base + rng.integers(-3, 4, base.size), 0, 255).astype(np.uint8)
                  .tobytes() for _ in range(n)]
        vectors = vectors + 0.08 / np.sqrt(args.dim) * rng.standard_normal(
            vectors.shape).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    out = {"products": n, "dim": args.dim, "jitter": args.jitter,
           "machine": platform.processor() or platform.machine()}
    for name, content in (("as_one_photo", shas), ("pairwise", None)):
        start = time.perf_counter()
        groups = find_duplicates(list(range(n)), vectors, phashes, thumbs, content,
                                 DuplicateRules())
        out[f"{name}_seconds"] = round(time.perf_counter() - start, 3)
        out[f"{name}_groups"] = [len(g) for g in groups]
        # (ru_maxrss only grows: the one-photo search runs first, so its peak is its own)
        out[f"{name}_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    out["speedup"] = round(out["pairwise_seconds"] / max(out["as_one_photo_seconds"], 1e-3), 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
