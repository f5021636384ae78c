"""The server's memory after many large uploads at once: ``vitrine serve`` (a separate process,
as in production) over ``--store`` (or a temporary store of ``--catalog``'s first photos),
sent ``--rounds`` rounds of ``--clients`` concurrent ``POST /api/search`` of one PNG of
``--megapixels`` (40: the default pixel limit; a flat colour, so about 130 kB), each round
waiting for the last answer. Its resident memory (VmRSS) is read before, every 50 ms while
the requests run (the peak), and after each round once idle for a second.

Each upload decodes to hundreds of MB. The decodes run a few at a time (one per core) in
threads of the service's own, which give what they freed back to the system; when they ran
in the request threads (up to commit 0e1b425), glibc kept what each of the 40 request
threads had freed, for that thread: 20 uploads left the idle server at about 4 GB.

    python benchmarks/upload_memory.py --catalog ../shared/data/demo-catalog \\
        --weights ../shared/models/mobilenet_v2_imagenet.pth \\
        > benchmarks/results/upload_memory.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx2
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import index_catalog, start_server, stop_server  # noqa: E402


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def large_png(megapixels: float) -> bytes:
    side = int((megapixels * 1e6) ** 0.5)
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (200, 10, 10)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def small_catalogue(catalog: Path, into: Path, per_category: int = 3) -> Path:
    for folder in sorted(p for p in catalog.iterdir() if p.is_dir()):
        target = into / folder.name
        target.mkdir(parents=True)
        for photo in sorted(folder.iterdir())[:per_category]:
            shutil.copyfile(photo, target / photo.name)
    return into


def one_round(base: str, pid: int, photo: bytes, clients: int) -> dict:
    """``clients`` searches with ``photo`` at once; the answers, the seconds they took, the
    server's peak resident memory meanwhile and once idle for a second after them."""
    statuses: list[int] = []
    peak, done = [rss_mb(pid)], threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], rss_mb(pid))

    def search() -> None:
        with httpx2.Client(base_url=base, timeout=300) as http:
            statuses.append(http.post("/api/search", files={
                "image": ("big.png", photo, "image/png")}).status_code)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    workers = [threading.Thread(target=search) for _ in range(clients)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    time.sleep(1.0)
    return {"answers": sorted(set(statuses)), "seconds": round(seconds, 1),
            "peak_rss_mb": round(peak[0]), "idle_rss_mb": round(rss_mb(pid))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path)
    parser.add_argument("--catalog", type=Path)
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--megapixels", type=float, default=40.0)
    args = parser.parse_args(argv)
    if args.store is None and args.catalog is None:
        parser.error("give --store, or --catalog to index a few of its photos")
    env = dict(os.environ)
    if args.weights is not None:
        env["VITRINE_WEIGHTS"] = str(args.weights)
    photo = large_png(args.megapixels)
    with tempfile.TemporaryDirectory() as scratch, tempfile.TemporaryFile("w+") as log:
        store = args.store
        if store is None:
            store = Path(scratch) / "store"
            index_catalog(small_catalogue(args.catalog, Path(scratch) / "catalog"), store, env)
        proc, base = start_server(store, env, log)
        try:
            time.sleep(1.0)
            before = rss_mb(proc.pid)
            rounds = [one_round(base, proc.pid, photo, args.clients)
                      for _ in range(args.rounds)]
        finally:
            stop_server(proc)
    print(json.dumps({"clients": args.clients, "megapixels": args.megapixels,
                      "upload_bytes": len(photo), "rss_before_mb": round(before),
                      "rounds": rounds, "cpus": os.cpu_count(),
                      "load_average": os.getloadavg()}, indent=1))
    return 0 if all(r["answers"] == [200] for r in rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
