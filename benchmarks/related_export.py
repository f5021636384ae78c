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

``--placeholders N``: the last N products share one photo file (one sha256, one vector), as
a catalogue's products without a photo of their own share a placeholder; each one's copies
(the N) are left out of its list, and with the photo's count saved as `vitrine index` saves
it, the N are left out of every other list (:mod:`vitrine.placeholders`; not with
``--placeholder-min 0``, as ``VITRINE_PLACEHOLDER_MIN=0``). ``cpu_seconds``: the export's
processor time (the machine is shared: wall seconds vary more); ``file_sha256``: the file
written, the same lists, byte for byte, where two runs give the same (the code before and
after a change); ``lists_sha256``: the same with the placeholder's products named as one
where they are listed (they tie: which of them fills a list's last places, past the 256
that ties are searched again for, is FAISS's order, which another batch of queries
changes).

    python benchmarks/related_export.py --items 17114 --placeholders 17000 --kind flat \
        --k 5 --sample 0 > benchmarks/results/related_export_placeholders_17000.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vitrine.ann import IndexConfig
from vitrine.bench import ClusterModel, clusters_for, machine
from vitrine.dedupe_store import encode
from vitrine.placeholders import PLACEHOLDER_MIN
from vitrine.related import write_related
from vitrine.store.embedded import EmbeddedStore

sys.path.insert(0, str(Path(__file__).parent))
from store_writes import records, synthetic_store  # noqa: E402


def lists_digest(data: bytes, shared_from: int | None) -> str:
    """The sha256 of the CSV ``data`` with each similar product from ``shared_from`` on (the
    placeholder's) named ``placeholder``."""
    rows = []
    for line in data.decode().splitlines()[1:]:
        pid, rank, similar, score = line.split(",")
        if shared_from is not None and int(similar[1:]) >= shared_from:
            similar = "placeholder"
        rows.append(f"{pid},{rank},{similar},{score}\n")
    return hashlib.sha256("".join(rows).encode()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--kind", default="auto", choices=("auto", "flat", "hnsw"))
    ap.add_argument("--sample", type=int, default=2000)
    ap.add_argument("--same-category", action="store_true")
    ap.add_argument("--changed", type=int, default=0)
    ap.add_argument("--placeholders", type=int, default=0)
    ap.add_argument("--placeholder-min", type=int, default=PLACEHOLDER_MIN)
    args = ap.parse_args()
    n = args.items
    config = IndexConfig.defaults(kind=args.kind)
    vecs, _ = ClusterModel.create(args.dim, clusters_for(n), seed=0).sample(n, seed=1)
    shared_from = n - args.placeholders if args.placeholders else None
    if shared_from is not None:
        vecs[shared_from:] = vecs[shared_from]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        build_s = synthetic_store(root, vecs, n, config, shared_from)
        if shared_from is not None:  # the photo's products counted, as `index` counts them
            writer = EmbeddedStore(root, index_config=config)
            writer.lock_for_writing()
            writer.set_duplicate_cache(encode(
                "synthetic", np.zeros(0, np.uint64), np.zeros((0, 2), np.int64), [],
                (np.array([b"sha-placeholder"], "S64"), np.array([args.placeholders]))))
            writer.close()
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
        cpu = time.process_time()
        report = write_related(reader, out, args.k, same_category=args.same_category,
                               show_progress=False, placeholder_min=args.placeholder_min)
        cpu_s = time.process_time() - cpu
        load_after = os.getloadavg()[0]
        with open(out, "rb") as fh:
            data = fh.read()
        rows = data.count(b"\n") - 1
        reader.close()
    print(json.dumps({"command": " ".join(sys.argv), "machine": machine(), "items": n,
                      "dim": args.dim, "k": args.k, "index": kind,
                      "same_category": args.same_category, "changed": args.changed,
                      "placeholders": args.placeholders,
                      "placeholder_min": args.placeholder_min,
                      "layered": layered,
                      "index_build_s": round(build_s, 1), "rows": rows,
                      **{key: value for key, value in report.as_dict().items()
                         if key in ("products", "pairs", "seconds", "products_per_second")},
                      "cpu_seconds": round(cpu_s, 1),
                      "file_sha256": hashlib.sha256(data).hexdigest(),
                      "lists_sha256": lists_digest(data, shared_from),
                      "one_at_a_time_sample": len(sample),
                      "one_at_a_time_products_per_second": round(len(sample) / one_s, 1)
                      if sample else None,
                      "load_average": [round(load_before, 2), round(load_after, 2)]},
                     indent=2))


if __name__ == "__main__":
    main()
