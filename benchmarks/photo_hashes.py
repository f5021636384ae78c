"""What `vitrine index` spends to find the changed photos of a catalogue: reading and hashing
every photo (sha256, what every run did) against checking each file's size, times and inode
against the store's (``vitrine.photo_hashes``, a re-run with nothing changed).

Files of random bytes (``--files`` of ``--kb`` kB; the hash does not care whether they are
JPEGs) in a temporary folder; each pass timed with the page cache warm and, with ``--cold``,
cold too, as after a reboot or for a catalogue larger than memory. ``--cold`` drops the whole
machine's page cache (root on Linux: every other program reads its files from disk again), so
it is asked for, never done unasked; where it cannot be dropped the run says so and fails.

    python benchmarks/photo_hashes.py --files 4000 --kb 150 --cold \
        > benchmarks/results/photo_hashes.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vitrine.bench import machine
from vitrine.photo_hashes import PhotoHashes


def drop_page_cache() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def timed(files: list[Path], known: dict) -> tuple[float, PhotoHashes]:
    hashes = PhotoHashes(known)
    started = time.perf_counter()
    for path in files:
        hashes.sha256(path)
    return time.perf_counter() - started, hashes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=4000)
    ap.add_argument("--kb", type=int, default=150)
    ap.add_argument("--cold", action="store_true",
                    help="time a cold page cache too: drops the whole machine's (root, Linux)")
    args = ap.parse_args()
    if args.cold and not drop_page_cache():
        sys.exit("error: --cold needs to drop the page cache (root on Linux: "
                 "/proc/sys/vm/drop_caches); run without it for the warm figures.")
    rng = np.random.default_rng(0)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i in range(args.files):
            path = Path(tmp) / f"{i:06d}.jpg"
            path.write_bytes(rng.bytes(args.kb * 1024))
            files.append(path)
        old = time.time() - 3600  # older than the racy window: remembered
        for path in files:
            os.utime(path, (old, old))
        time.sleep(2.5)  # (their change time, set by utime, too)
        for cache in ("warm", "cold") if args.cold else ("warm",):
            if cache == "cold":
                drop_page_cache()
            read_all, first = timed(files, {})
            assert len(first.fresh) == len(files)
            if cache == "cold":
                drop_page_cache()
            check, second = timed(files, first.fresh)
            assert second.read == 0
            runs[cache] = {"hash_every_photo_s": round(read_all, 3),
                           "check_file_times_s": round(check, 3),
                           "ratio": round(read_all / check, 1)}
            print(json.dumps({cache: runs[cache]}), file=sys.stderr)
    print(json.dumps({"command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
                      "machine": machine(), "files": args.files, "kb": args.kb,
                      "gigabytes": round(args.files * args.kb / 2**20, 2), **runs}, indent=2))


if __name__ == "__main__":
    main()
