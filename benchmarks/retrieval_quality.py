"""Category precision@k of photos of products that are not in the index.

Splits the catalogue 80/20 per category (one split per seed), indexes the 80 %, queries with
the 20 %, and reports precision@k, recall@k and mAP@k, overall and per category, for each
resize policy and seed, plus the mean over seeds.
``--lowres`` also queries with the held-out photos downscaled to 60×80 and re-encoded.

    python benchmarks/retrieval_quality.py --catalog ../shared/data/demo-catalog \
        --weights ../shared/models/mobilenet_v2_imagenet.pth \
        --policies pad,crop,squash --seeds 0,1,2 --lowres
"""

from __future__ import annotations

import argparse
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from vitrine.catalog import read_catalog, stratified_split
from vitrine.config import Settings
from vitrine.embed import Embedder
from vitrine.evaluate import average_precision_at_k, per_label, precision_at_k, recall_at_k


def embed_all(embedder: Embedder, sources: list) -> np.ndarray:
    return np.stack([r.vector for r in embedder.embed_paths(sources)])


def lowres_bytes(path: Path) -> bytes:
    img = Image.open(path).convert("RGB").resize((60, 80), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=75)
    return buf.getvalue()


def evaluate(train_vecs, train_labels, query_vecs, query_labels, k: int) -> dict:
    import faiss

    index = faiss.IndexFlatIP(train_vecs.shape[1])
    index.add(train_vecs)
    _, ids = index.search(query_vecs, k)
    retrieved = [[train_labels[i] for i in row] for row in ids]
    counts = Counter(train_labels)
    rel = [counts[q] for q in query_labels]
    return {
        f"precision_at_{k}": precision_at_k(query_labels, retrieved, k),
        f"recall_at_{k}": recall_at_k(query_labels, retrieved, k, rel),
        f"map_at_{k}": average_precision_at_k(query_labels, retrieved, k, rel),
        "top1_accuracy": precision_at_k(query_labels, retrieved, 1),
        f"per_category_precision_at_{k}": per_label(precision_at_k, query_labels, retrieved, k),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", type=Path, required=True)
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--policies", default="pad")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--lowres", action="store_true")
    args = ap.parse_args()

    products = read_catalog(args.catalog)
    seeds = [int(x) for x in args.seeds.split(",")]
    report = {"catalog": str(args.catalog), "products": len(products), "k": args.k,
              "seeds": seeds, "policies": {}}
    position = {p.product_id: i for i, p in enumerate(products)}
    labels = np.asarray([p.category for p in products], dtype=object)
    key = f"precision_at_{args.k}"
    for policy in args.policies.split(","):
        embedder = Embedder.from_settings(Settings(weights=args.weights, resize=policy))
        vecs = embed_all(embedder, [p.image for p in products])
        low = (np.stack([embedder.embed_image(lowres_bytes(p.image)) for p in products])
               if args.lowres else None)
        runs = {}
        for seed in seeds:
            train, test = stratified_split(products, 0.2, seed=seed)
            a = [position[p.product_id] for p in train]
            b = [position[p.product_id] for p in test]
            run = {"full_size": evaluate(vecs[a], list(labels[a]), vecs[b], list(labels[b]),
                                         args.k)}
            if low is not None:
                run["lowres_60x80"] = evaluate(vecs[a], list(labels[a]), low[b],
                                               list(labels[b]), args.k)
            runs[str(seed)] = run
        mean = {kind: round(float(np.mean([r[kind][key] for r in runs.values()])), 4)
                for kind in runs[str(seeds[0])]}
        report["policies"][policy] = {"mean_" + key: mean, "runs": runs}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
