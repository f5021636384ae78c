"""Time of the duplicate search that `vitrine index` runs over the whole store after every
run (``vitrine.dedupe.find_duplicates``: exact FAISS range searches over the embeddings and the
16×16 thumbnails), against the number of stored products. Synthetic clustered vectors
(``vitrine.bench.ClusterModel``) of the pretrained (1,280) and the demo's trained (2,440, the
last 8 being class probabilities) width, random pHashes and thumbnails.

    python benchmarks/dedupe_scaling.py --sizes 10000,20000,40000 \\
        > benchmarks/results/dedupe_scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from vitrine.bench import ClusterModel, machine
from vitrine.dedupe import DuplicateRules, find_duplicates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,20000,40000")
    ap.add_argument("--dims", default="1280,2440")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    runs = []
    for dim in map(int, args.dims.split(",")):
        rules = DuplicateRules(probs_tail=8 if dim == 2440 else 0)
        for n in map(int, args.sizes.split(",")):
            vecs, _ = ClusterModel.create(dim, 100, seed=0).sample(n, seed=1)
            phashes = [f"{x:016x}" for x in rng.integers(0, 2**63, n)]
            thumbs = [rng.integers(0, 255, 768, dtype=np.uint8).tobytes() for _ in range(n)]
            started = time.perf_counter()
            groups = find_duplicates(list(range(n)), vecs, phashes, thumbs, rules=rules)
            runs.append({"products": n, "dim": dim, "groups": len(groups),
                         "seconds": round(time.perf_counter() - started, 2),
                         "load_average": [round(x, 2) for x in os.getloadavg()]})
            print(json.dumps(runs[-1]), file=sys.stderr)
    print(json.dumps({"command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
                      "machine": machine(), "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
