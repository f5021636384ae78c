"""`vitrine related` on a large store: every product's top ``--k`` written to a CSV file.

Synthetic clustered vectors of the pretrained model's width, ``--items`` products in a store
with the index its size gets (``--kind auto``: flat below 100,000 products, HNSW from there;
or ``flat``/``hnsw``); then the whole export, timed (``seconds``, ``products_per_second``),
and the file's rows counted. The baseline, in the same run: the first ``--sample`` products
searched one at a time as `vitrine similar` does (``one_at_a_time_products_per_second``),
which is how the export searched before ``search_many``. ``load_average`` is the 1-minute
load before the baseline and after the export (other work on the machine slows both).

    python benchmarks/related_export.py --items 100000 > benchmarks/results/related_export.json

``--same-category``: each product's list from its own category only (8 categories);
``--changed N``: the first N products written again after the index was saved (new vectors,
as a catalogue's re-shot photos), so the export searches the saved index with those hidden
plus an exact layer of them, as between two rebuilds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from vitrine.ann import IndexConfig
from vitrine.bench import ClusterModel, clusters_for, machine
from vitrine.related import write_related
from vitrine.store.embedded import EmbeddedStore

sys.path.insert(0, str(Path(__file__).parent))
from store_writes import records, synthetic_store  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--kind", default="auto", choices=("auto", "flat", "hnsw"))
    ap.add_argument("--sample", type=int, default=2000)
    ap.add_argument("--same-category", action="store_true")
    ap.add_argument("--changed", type=int, default=0)
    args = ap.parse_args()
    n = args.items
    config = IndexConfig.defaults(kind=args.kind)
    vecs, _ = ClusterModel.create(args.dim, clusters_for(n), seed=0).sample(n, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        build_s = synthetic_store(root, vecs, n, config)
        if args.changed:  # written again since the index was saved: layered
            again, _ = ClusterModel.create(args.dim, clusters_for(n), seed=0).sample(
                args.changed, seed=2)
            writer = EmbeddedStore(root, index_config=config)
            writer.lock_for_writing()
            writer.upsert(records(range(args.changed), again, tag="-again"))
            writer.flush()
            writer.close()
        reader = EmbeddedStore(root, index_config=config)
        index = reader._current_index()  # noqa: SLF001 - what is measured
        layered = hasattr(index, "base")
        kind = (index.base if layered else index).kind
        sample = [f"p{i}" for i in range(min(args.sample, n))]
        reader.search(vecs[0], args.k)  # the index loaded
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        for i, pid in enumerate(sample):
            reader.search(vecs[i], args.k, exclude=pid)
        one_s = time.perf_counter() - started
        out = Path(tmp) / "related.csv"
        report = write_related(reader, out, args.k, same_category=args.same_category,
                               show_progress=False)
        load_after = os.getloadavg()[0]
        with open(out) as fh:
            rows = sum(1 for _ in fh) - 1
        reader.close()
    print(json.dumps({"command": " ".join(sys.argv), "machine": machine(), "items": n,
                      "dim": args.dim, "k": args.k, "index": kind,
                      "same_category": args.same_category, "changed": args.changed,
                      "layered": layered,
                      "index_build_s": round(build_s, 1), "rows": rows,
                      **{key: value for key, value in report.as_dict().items()
                         if key in ("products", "pairs", "seconds", "products_per_second")},
                      "one_at_a_time_sample": len(sample),
                      "one_at_a_time_products_per_second": round(len(sample) / one_s, 1),
                      "load_average": [round(load_before, 2), round(load_after, 2)]},
                     indent=2))


if __name__ == "__main__":
    main()
