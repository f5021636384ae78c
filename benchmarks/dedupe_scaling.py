"""Time and recall of the duplicate search that `vitrine index` runs over the whole store
after every run (``vitrine.dedupe_groups.find_duplicates``: FAISS range searches over the embeddings
and the 16×16 thumbnails), against the number of stored products, for both ways of finding
close pairs: the exact search (every row against every row, what the search uses up to
``dedupe_search.EXACT_PAIRS_UP_TO`` products) and the inverted file (above).

Synthetic clustered vectors (``vitrine.bench.ClusterModel``) of the pretrained (1,280) and the
demo's trained (2,440, the last 8 being class probabilities) width, random pHashes and
thumbnails (with their second views: :data:`THUMB_WIDTH`), and 1 % of planted duplicates,
each a copy of another product that only one rule can find:

* half are "thumbnail copies" (a resized photo): thumbnail within ±3 of the original, pHash 0–3
  bits apart, embedding at cosine 0.85 (too far for the embedding rule);
* half are "embedding copies" (a lightly edited photo): embedding at cosine 0.975–0.999,
  pHash 0–10 bits apart, a different thumbnail.

``planted_recall`` is the share of those pairs that end up in one group; ``same_as_exact``
whether the groups equal the exact search's (run where the products are at most
``--exact-up-to``); ``extra_memory_mb`` the most resident memory the search held beyond its
inputs (``vectors_mb`` for the vectors).

With ``--changed K,…`` it also times the search that a re-run makes when K products changed
since the store's last search (``vitrine.dedupe_store``: only those K compared with every
product, exactly), K random products of which half are planted copies; ``planted_recall`` is
then the share of those copies' pairs found.

    python benchmarks/dedupe_scaling.py > benchmarks/results/dedupe_scaling.json
    python benchmarks/dedupe_scaling.py --sizes 40000,200000 --dims 1280 \
        --changed 10,1000,2000,10000 --exact-up-to 0 > benchmarks/results/dedupe_changed.json
    python benchmarks/dedupe_scaling.py --sizes 1000000 --dims 1280 --changed 10,1000,10000 \
        --changed-only > benchmarks/results/dedupe_changed_1m.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

from vitrine.bench import ClusterModel, at_cosine, clusters_for, machine, rss_mb
from vitrine.dedupe import DuplicateRules
from vitrine.dedupe_views import VIEW_RULE, VIEWED_BYTES

try:
    from vitrine import dedupe_search
    from vitrine.dedupe_groups import find_duplicates
    from vitrine.dedupe_pairs import rule_pairs
except ImportError:  # (code from before dedupe.py was split, run with PYTHONPATH)
    from vitrine import dedupe as dedupe_search
    from vitrine.dedupe import find_duplicates, rule_pairs

THUMB_WIDTH = VIEWED_BYTES
"""Each synthetic ``thumb`` holds a second view (``dedupe_views``; random bytes, as the whole
thumbnail's, a thumbnail copy's its original's within ±3 each, and the rule's last byte), so
that the views' search is timed as in a store indexed now (results before 2026-12-06: 768
bytes, no views; before views were turned, 1,568 bytes without the rule's byte). Random
views lie near a tie between two ways more often than photos do (1.49 ways a view against
1.16 for the demo catalogue's: ``dedupe_views.TIE_MARGIN``), so their search is timed on the
slow side."""


def _flip(phash: int, bits: int, rng: np.random.Generator) -> int:
    for b in rng.choice(64, bits, replace=False):
        phash ^= 1 << int(b)
    return phash


def catalogue(n: int, dim: int, seed: int = 1):
    """Vectors, pHashes and thumbnails of ``n`` products, 1 % of them planted copies, and the
    planted (original, copy) row pairs."""
    rng = np.random.default_rng(seed)
    vecs, _ = ClusterModel.create(dim, clusters_for(n), seed=0).sample(n, seed=seed)
    hashes = rng.integers(0, 2 ** 63, n).tolist()
    thumbs = rng.integers(0, 256, (n, THUMB_WIDTH), dtype=np.uint8)
    copies = n // 100
    originals = rng.choice(n - copies, copies, replace=False)
    planted = []
    for k, orig in enumerate(originals.tolist()):
        row = n - copies + k
        if k % 2 == 0:  # thumbnail copy
            noise = rng.integers(-3, 4, THUMB_WIDTH)
            thumbs[row] = np.clip(thumbs[orig].astype(np.int16) + noise, 0, 255)
            hashes[row] = _flip(hashes[orig], int(rng.integers(0, 4)), rng)
            vecs[row] = at_cosine(vecs[orig], 0.85, rng)
        else:  # embedding copy
            hashes[row] = _flip(hashes[orig], int(rng.integers(0, 11)), rng)
            vecs[row] = at_cosine(vecs[orig], float(rng.uniform(0.975, 0.999)), rng)
        planted.append((orig, row))
    thumbs[:, -1] = VIEW_RULE
    return (vecs, [f"{h:016x}" for h in hashes], [t.tobytes() for t in thumbs], planted)


def search(vecs, phashes, thumbs, rules: DuplicateRules, exact: bool, among=None):
    """Groups (the pairs found among ``among``), seconds, and the most memory (MiB) the
    search held beyond its inputs (resident memory sampled every 50 ms)."""
    saved = dedupe_search.EXACT_PAIRS_UP_TO
    dedupe_search.EXACT_PAIRS_UP_TO = len(vecs) if exact else 0  # (the views' search too)
    before, peak, done = rss_mb(), [0.0], threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        started = time.perf_counter()
        if among is None:
            groups = find_duplicates(list(range(len(vecs))), vecs, phashes, thumbs,
                                     rules=rules)
        else:
            groups = rule_pairs(vecs, phashes, thumbs, rules, among=among).tolist()
        return groups, time.perf_counter() - started, max(0.0, peak[0] - before)
    finally:
        done.set()
        sampler.join()
        dedupe_search.EXACT_PAIRS_UP_TO = saved


def changed_run(vecs, phashes, thumbs, planted, rules: DuplicateRules, k: int) -> dict:
    """The search of ``k`` changed products against all: half of them planted copies."""
    rng = np.random.default_rng(k)
    copies = [row for _, row in planted]
    among = np.concatenate([rng.choice(copies, min(len(copies), k // 2), replace=False),
                            rng.choice(len(vecs) - len(copies), k - min(len(copies), k // 2),
                                       replace=False)])
    pairs, seconds, extra_mb = search(vecs, phashes, thumbs, rules, False, among)
    touched = [pair for pair in planted if pair[1] in set(among.tolist())]
    return {"products": len(vecs), "dim": vecs.shape[1], "search": f"{k} changed",
            "seconds": round(seconds, 2), "extra_memory_mb": round(extra_mb),
            "vectors_mb": round(vecs.nbytes / 2**20), "pairs": len(pairs),
            "planted_pairs": len(touched),
            "planted_recall": round(len(set(touched) & set(map(tuple, pairs)))
                                    / max(1, len(touched)), 4),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,20000,40000,100000,200000")
    ap.add_argument("--dims", default="1280,2440")
    ap.add_argument("--exact-up-to", type=int, default=40_000,
                    help="run the exact search too up to this many products")
    ap.add_argument("--changed", default="",
                    help="time the search of only this many changed products, K1,K2,…")
    ap.add_argument("--changed-only", action="store_true",
                    help="with --changed: not the search of every product")
    args = ap.parse_args()
    runs = []
    for dim in map(int, args.dims.split(",")):
        rules = DuplicateRules(probs_tail=8 if dim == 2440 else 0)
        for n in map(int, args.sizes.split(",")):
            vecs, phashes, thumbs, planted = catalogue(n, dim)
            exact_groups = None
            searches = [True, False] if n <= args.exact_up_to else [False]
            for exact in searches if not (args.changed and args.changed_only) else []:
                groups, seconds, extra_mb = search(vecs, phashes, thumbs, rules, exact)
                group_of = {row: g for g, rows in enumerate(groups) for row in rows}
                found = sum(1 for a, b in planted
                            if a in group_of and group_of[a] == group_of.get(b))
                run = {"products": n, "dim": dim,
                       "search": "exact" if exact else "inverted file",
                       "seconds": round(seconds, 2), "extra_memory_mb": round(extra_mb),
                       "vectors_mb": round(vecs.nbytes / 2**20), "groups": len(groups),
                       "planted_pairs": len(planted),
                       "planted_recall": round(found / len(planted), 4),
                       "load_average": [round(x, 2) for x in os.getloadavg()]}
                if exact:
                    exact_groups = groups
                elif exact_groups is not None:
                    run["same_as_exact"] = groups == exact_groups
                runs.append(run)
                print(json.dumps(run), file=sys.stderr)
            for k in [int(k) for k in args.changed.split(",") if k]:
                runs.append(changed_run(vecs, phashes, thumbs, planted, rules, k))
                print(json.dumps(runs[-1]), file=sys.stderr)
            del vecs, thumbs
    print(json.dumps({"command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
                      "machine": machine(), "pair_probes": dedupe_search.PAIR_PROBES,
                      "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
