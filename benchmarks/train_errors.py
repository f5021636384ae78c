"""Which photos does a trained model get wrong, and how sure is it? Cross-validated, so every
photo of the catalogue is classified once by a model that never saw it.

The catalogue is cut into ``--folds`` parts per category (seeded); for each part a model is
trained on the others with ``vitrine.train_fit.fit_cached`` (the code ``vitrine train`` runs,
refit included; its own 85/15 train/validation split inside) and classifies the part's clean
photos. Reported: accuracy with its Wilson 95 % interval, recall per category, the confusions
(true → predicted, counts) and every mistake with the product's name and the model's
probabilities, most confident first. It shows where the category precision of photos outside
the index is lost (``train_quality.py``), and which labels look doubtful.

    python benchmarks/train_errors.py --catalog ../shared/data/demo-catalog \\
        --weights ../shared/models/mobilenet_v2_imagenet.pth \\
        > benchmarks/results/train_errors.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
from train_quality import clean_side, embed, frozen_cache, train_on

from vitrine.catalog import read_catalog
from vitrine.config import Settings
from vitrine.evaluate import wilson_interval


def folds_of(labels: list[str], folds: int, seed: int) -> np.ndarray:
    """Fold of each photo: each category's photos, shuffled with ``seed``, dealt round-robin."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=int)
    for category in sorted(set(labels)):
        rows = rng.permutation([i for i, c in enumerate(labels) if c == category])
        fold[rows] = np.arange(len(rows)) % folds
    return fold


CONFIDENCE_EDGES = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.01)


def by_confidence(labels: list[str], predicted: list[str],
                  probs: list[dict[str, float]]) -> list[dict]:
    """How often the guess is right, per band of the probability the model gives it: what the
    threshold of a "not sure" category guess (VITRINE_GUESS_MIN_PROBABILITY) is chosen by."""
    p = np.array([probs[i][predicted[i]] for i in range(len(labels))])
    right = np.array([t == q for t, q in zip(labels, predicted, strict=True)])
    rows = []
    for low, high in zip(CONFIDENCE_EDGES, CONFIDENCE_EDGES[1:], strict=False):
        inside = (p >= low) & (p < high)
        rows.append({"p_from": low, "p_below": min(high, 1.0), "photos": int(inside.sum()),
                     "right": int(right[inside].sum()),
                     "accuracy": round(float(right[inside].mean()), 4) if inside.any() else None})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", type=Path, required=True)
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0, help="Seed of the folds.")
    ap.add_argument("--cache", type=Path, help="Frozen-layer outputs (train_quality.py's file).")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="Override a training setting, e.g. --set train_refit=false.")
    args = ap.parse_args()
    settings = Settings(weights=args.weights, **dict(s.split("=", 1) for s in args.set))
    products = read_catalog(args.catalog)
    labels = [p.category for p in products]
    started = time.perf_counter()
    data = frozen_cache(products, settings, args.cache)
    fold = folds_of(labels, args.folds, args.seed)
    predicted: list[str] = [""] * len(products)
    probs: list[dict[str, float]] = [{} for _ in products]
    for f in range(args.folds):
        train, held = np.where(fold != f)[0], np.where(fold == f)[0]
        net, _ = train_on(data, train, labels, settings)
        classes = sorted({labels[i] for i in train})
        p = embed(net, data["maps"][held, 0], clean_side(data, held))["probs"].numpy()
        for row, i in zip(p, held, strict=True):
            predicted[i] = classes[int(row.argmax())]
            probs[i] = {c: round(float(v), 3) for c, v in zip(classes, row, strict=True)}
    right = sum(t == p for t, p in zip(labels, predicted, strict=True))
    low, high = wilson_interval(right, len(labels))
    mistakes = sorted(
        ({"product_id": products[i].product_id, "name": products[i].name, "true": labels[i],
          "predicted": predicted[i], "p_predicted": probs[i][predicted[i]],
          "p_true": probs[i].get(labels[i], 0.0)}
         for i in range(len(products)) if predicted[i] != labels[i]),
        key=lambda m: -m["p_predicted"])
    report = {
        "catalog": str(args.catalog), "photos": len(products), "folds": args.folds,
        "seed": args.seed, "settings": {k: v for k, v in settings.model_dump().items()
                                        if k.startswith("train_")},
        "seconds": round(time.perf_counter() - started, 1),
        "accuracy": round(right / len(labels), 4),
        "accuracy_95": [round(low, 4), round(high, 4)],
        "recall": {c: round(float(np.mean([p == c for t, p in zip(labels, predicted,
                                                                  strict=True) if t == c])), 4)
                   for c in sorted(set(labels))},
        "confusions": [{"true": t, "predicted": p, "photos": n} for (t, p), n in Counter(
            (m["true"], m["predicted"]) for m in mistakes).most_common()],
        "confident_mistakes": sum(m["p_predicted"] >= 0.8 for m in mistakes),
        "by_confidence": by_confidence(labels, predicted, probs),
        "mistakes": mistakes}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
