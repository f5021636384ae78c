"""Bounded load test of the web API: concurrent clients against a real ``vitrine serve``.

Starts ``vitrine serve`` (a separate process, uvicorn, as in production) on 127.0.0.1 with a
free port over ``--store``; without ``--store``, first indexes ``--catalog`` into a temporary
store with ``vitrine index``. Then ``--clients`` threads, each with its own HTTP connection,
share a budget of ``--requests`` requests and stop at whichever comes first, that budget or
``--duration`` seconds: ``GET /api/products/{id}/similar`` for random stored ids and
``POST /api/search`` with real catalogue photos (fetched once through ``GET /images/{id}``
before the timed run), in the ratio ``--search-share``. Any answer other than 200 with
results, or a failed connection, is an error; the command exits 1 if there was any.

Prints (and with ``--out`` writes) JSON: clients, requests, errors (count and the first
few), duration, throughput, p50/p99 latency overall and per endpoint, and the machine (CPU
count, load average before and after).

    python benchmarks/load.py --catalog ../shared/data/demo-catalog \\
        --weights ../shared/models/mobilenet_v2_imagenet.pth --out benchmarks/results/load.json
    python benchmarks/load.py --catalog ../shared/data/demo-catalog --model demo-output/model
    python benchmarks/load.py --store demo-output/store --requests 1000 --duration 120
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

import httpx2
import numpy as np

from vitrine.config import Settings

CLI = [sys.executable, "-m", "vitrine.cli"]
READY = re.compile(r"serving at (http://\S+?) ")
PHOTOS_MAX = 64


def index_catalog(catalog: Path, store: Path, env: dict) -> None:
    """``vitrine index CATALOG --store STORE``; raises with its error sentence on failure."""
    proc = subprocess.run([*CLI, "index", str(catalog), "--store", str(store), "--json"],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"vitrine index failed: {proc.stderr.strip()[-500:]}")


def start_server(store: Path, env: dict, log, timeout: float = 120.0):
    """``vitrine serve`` on a free port; returns (process, base URL) once it listens."""
    proc = subprocess.Popen([*CLI, "serve", "--store", str(store), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    found: list[str] = []

    def read_ready() -> None:
        for line in proc.stdout:
            if match := READY.search(line):
                found.append(match.group(1))
                return

    reader = threading.Thread(target=read_ready, daemon=True)
    reader.start()
    reader.join(timeout)
    if not found:
        stop_server(proc)
        log.seek(0)
        raise SystemExit(f"vitrine serve did not start: {log.read()[-1000:]}")
    return proc, found[0]


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()  # uvicorn shuts down gracefully on SIGTERM
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fetch_inputs(base: str) -> tuple[list[str], list[bytes], dict]:
    """Every stored product id, up to PHOTOS_MAX of their photos, and /healthz."""
    ids: list[str] = []
    with httpx2.Client(base_url=base, timeout=60) as http:
        health = http.get("/healthz").raise_for_status().json()
        while True:
            page = http.get("/api/products", params={"limit": 200, "offset": len(ids)})
            body = page.raise_for_status().json()
            ids += [p["product_id"] for p in body["products"]]
            if not body["has_more"]:
                break
        step = max(1, len(ids) // PHOTOS_MAX)
        photos = [http.get("/images/" + quote(pid, safe="")).raise_for_status().content
                  for pid in ids[::step][:PHOTOS_MAX]]
    if not ids:
        raise SystemExit("the store is empty: nothing to ask for.")
    return ids, photos, health


class Budget:
    """Hands out request numbers until ``total`` or the deadline, whichever comes first."""

    def __init__(self, total: int, seconds: float):
        self.total, self.seconds = total, seconds
        self.issued = 0
        self.stopped_by = "requests"
        self._lock = threading.Lock()
        self.deadline = time.monotonic() + seconds

    def take(self) -> int | None:
        with self._lock:
            if self.issued >= self.total:
                return None
            if time.monotonic() >= self.deadline:
                self.stopped_by = "duration"
                return None
            self.issued += 1
            return self.issued - 1


def client_loop(base: str, budget: Budget, ids: list[str], photos: list[bytes],
                search_share: float, seed: int, samples: list, errors: list) -> None:
    """One client: its own connection, requests until the budget runs out."""
    rng = random.Random(seed)
    with httpx2.Client(base_url=base, timeout=60) as http:
        while (n := budget.take()) is not None:
            search = rng.random() < search_share
            endpoint = "search" if search else "similar"
            start = time.perf_counter()
            try:
                if search:
                    r = http.post("/api/search", params={"k": 5}, files={
                        "image": ("photo.jpg", rng.choice(photos), "image/jpeg")})
                else:
                    pid = quote(rng.choice(ids), safe="")
                    r = http.get(f"/api/products/{pid}/similar", params={"k": 5})
                ms = (time.perf_counter() - start) * 1e3
                ok = r.status_code == 200 and isinstance(r.json().get("results"), list)
                problem = None if ok else f"{r.status_code} {r.text[:200]}"
            except (httpx2.HTTPError, ValueError) as exc:
                ms, problem = (time.perf_counter() - start) * 1e3, repr(exc)
            samples.append((endpoint, ms))
            if problem is not None:
                errors.append(f"request {n} ({endpoint}): {problem}")


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"requests": 0, "p50_ms": None, "p99_ms": None}
    arr = np.asarray(values)
    return {"requests": len(values), "p50_ms": round(float(np.percentile(arr, 50)), 2),
            "p99_ms": round(float(np.percentile(arr, 99)), 2)}


def run_load(base: str, *, clients: int, requests: int, duration: float,
             search_share: float, seed: int) -> dict:
    """The timed run against a started server; the report without the machine fields."""
    ids, photos, health = fetch_inputs(base)
    budget = Budget(requests, duration)
    samples: list[tuple[str, float]] = []
    errors: list[str] = []
    threads = [threading.Thread(target=client_loop, args=(
        base, budget, ids, photos, search_share, seed + i, samples, errors))
        for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    overall = percentiles([ms for _, ms in samples])
    return {
        "server": {"products": health["products"], "model": health["model"]},
        "clients": clients, "requests": len(samples), "max_requests": requests,
        "max_duration_s": duration, "stopped_by": budget.stopped_by,
        "search_share": search_share, "seed": seed,
        "errors": {"count": len(errors), "first": errors[:5]},
        "duration_s": round(elapsed, 3),
        "throughput_rps": round(len(samples) / elapsed, 2),
        "p50_ms": overall["p50_ms"], "p99_ms": overall["p99_ms"],
        "endpoints": {name: percentiles([ms for e, ms in samples if e == name])
                      for name in ("similar", "search")},
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, help="Store to serve (default: index --catalog "
                    "into a temporary one).")
    ap.add_argument("--catalog", type=Path, help="Catalogue to index when no --store.")
    ap.add_argument("--weights", type=Path, help="Backbone weights (default: VITRINE_WEIGHTS).")
    ap.add_argument("--model", type=Path, help="Trained model folder to index and serve with, "
                    "as the demo does (default: VITRINE_MODEL, else the pretrained backbone).")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=400, help="Total requests, all clients.")
    ap.add_argument("--duration", type=float, default=60.0, help="At most this many seconds.")
    ap.add_argument("--search-share", type=float, default=0.5,
                    help="Share of requests that are photo uploads (the rest: similar).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="Also write the JSON report here.")
    args = ap.parse_args(argv)
    if args.store is None and args.catalog is None:
        ap.error("give --store, or --catalog to index into a temporary store.")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = dict(os.environ)
    if args.weights is not None:
        env["VITRINE_WEIGHTS"] = str(args.weights.resolve())
    if args.model is not None:
        env["VITRINE_MODEL"] = str(args.model.resolve())
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="vitrine-load-") as tmp, \
            open(Path(tmp) / "server.log", "w+") as log:
        store = args.store
        if store is None:
            store = Path(tmp) / "store"
            index_catalog(args.catalog, store, env)
        proc, base = start_server(store, env, log)
        try:
            report = run_load(base, clients=args.clients, requests=args.requests,
                              duration=args.duration, search_share=args.search_share,
                              seed=args.seed)
        finally:
            stop_server(proc)
    shown = sys.argv[1:] if argv is None else argv
    report = {
        "command": " ".join(["python benchmarks/load.py", *shown]),
        "store": str(args.store) if args.store else f"temporary, indexed from {args.catalog}",
        "settings": Settings(**({"model": args.model} if args.model else {})).model_dump(
            mode="json", include={"model", "engine", "threads", "index"}),
        **report,
        "machine": {"cpus": os.cpu_count(), "load_average_before": load_before,
                    "load_average_after": [round(x, 2) for x in os.getloadavg()]},
    }
    text = json.dumps(report, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 1 if report["errors"]["count"] else 0


if __name__ == "__main__":
    sys.exit(main())
