"""Neighbour statistics of real embeddings of a catalogue against `vitrine bench`'s synthetic
clustered vectors of the same dimension and count: the mean cosine to the nearest neighbour,
to the 10th, and between random pairs (mean ± sd). Tells how far the synthetic vectors behind
`vitrine bench --items N` stand from the model's real ones.

    python benchmarks/neighbour_stats.py --catalog ../shared/data/demo-catalog \\
        --weights ../shared/models/mobilenet_v2_imagenet.pth [--model demo-output/model]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import faiss
import numpy as np

from vitrine.bench import ClusterModel
from vitrine.catalog import read_catalog
from vitrine.config import Settings
from vitrine.embed import Embedder


def neighbour_stats(vecs: np.ndarray, seed: int = 0) -> dict:
    """Mean cosine to the 1st and 10th neighbour (self excluded) and between random pairs."""
    vecs = vecs[np.random.default_rng(seed).permutation(len(vecs))]
    scores, _ = faiss.knn(vecs, vecs, 11, metric=faiss.METRIC_INNER_PRODUCT)
    half = len(vecs) // 2
    pairs = (vecs[:half] * vecs[half:2 * half]).sum(axis=1)
    return {"nearest": round(float(scores[:, 1].mean()), 3),
            "tenth": round(float(scores[:, 10].mean()), 3),
            "random_pairs_mean": round(float(pairs.mean()), 3),
            "random_pairs_sd": round(float(pairs.std()), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", type=Path, required=True)
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--model", type=Path, help="A trained model folder (default: the "
                    "pretrained backbone).")
    args = ap.parse_args()

    embedder = Embedder.from_settings(Settings(weights=args.weights, model=args.model))
    products = read_catalog(args.catalog)
    found = [r.vector for r in embedder.embed_paths([p.image for p in products])
             if r.vector is not None]
    real = np.stack(found).astype(np.float32)
    categories = len({p.category for p in products})
    synthetic, _ = ClusterModel.create(embedder.dim, categories, seed=0).sample(len(real),
                                                                               seed=1)
    report = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "backbone": embedder.manifest.backbone, "embedding": embedder.manifest.embedding,
        "dim": embedder.dim, "photos": len(real), "clusters": categories,
        "real": neighbour_stats(real), "synthetic": neighbour_stats(synthetic),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
