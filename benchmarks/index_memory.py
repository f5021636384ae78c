"""Peak memory and time of ``vitrine index`` as the catalogue grows (issue #7: bounded memory
on catalogues of any size).

Each size is a catalogue made from ``--catalog``: its photos, then variants of them (mirrored
or not, cropped by a growing margin, rescaled, re-encoded at a JPEG quality of their own), so
that no two files share bytes and nothing is skipped or shared by content hash; the category
folders are kept, and a ``products.csv`` lists every photo with an id, category, name and
price (the source table's other columns kept). Each size is indexed into a new store by the
real command (``vitrine index CATALOG --store STORE --json``, default settings; this
checkout's ``src``) in a process of its own, whose ``RssAnon`` (anonymous memory: the heap,
arrays, what cannot be dropped) and ``VmRSS`` (with the mapped libraries and files) are read
from ``/proc`` every 20 ms; the peak RSS the kernel keeps (``ru_maxrss``) is reported too.
The largest catalogue is then indexed a second time, unchanged: what a nightly re-index
costs.

The growth per photo between two sizes, (peak(b) − peak(a)) / (b − a), is what each more
photo costs. What the store's duplicate search must hold of each photo is about 7 KB: its
1,280-d float32 vector (5 KB), its thumbnails (1,569 bytes), its id and hashes; the rest is
the process's own bookkeeping and the search's and index build's working memory.

    python benchmarks/index_memory.py --catalog ../shared/data/demo-catalog \\
        --weights ../shared/models/mobilenet_v2_imagenet.pth \\
        --sizes 1016,4064,16256,32512,65024 > benchmarks/results/index_memory.json

(``results/index_memory_before.json``: the same command on commit 1120f47's code, before
the duplicate search read the vectors' checksums a page at a time; ``index_memory_previous``:
the same command before a7de627's memory changes; ``index_memory_ab_82620fe*`` and
``index_memory_ab_a7de627*``: some sizes run alternately on the code before and after them,
with ``--work`` keeping the catalogues and ``--no-rerun``.) The catalogues made
from the demo's 1,016 photos hold N / 1,016 near-copies of each, which the duplicate search
groups: its pairs grow with the square of that, so its share of the peak is larger than a
catalogue of distinct products would give.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from vitrine.bench import machine  # noqa: E402

SOURCE_EXT = (".jpg", ".jpeg", ".png")


def variant_bytes(img: Image.Image, v: int) -> bytes:
    """Variant ``v`` (≥ 1) of a photo: mirrored on odd ``v``, a border of 1–12 % cropped,
    rescaled to 100–79 %, re-encoded at a quality from 92 down."""
    if v % 2:
        img = ImageOps.mirror(img)
    margin = 1 + (v // 2) % 12
    dx, dy = max(1, img.width * margin // 100), max(1, img.height * margin // 100)
    img = img.crop((dx, dy, img.width - dx, img.height - dy))
    scale = 1.0 - 0.03 * ((v // 24) % 8)
    if scale < 1.0:
        img = img.resize((max(8, int(img.width * scale)), max(8, int(img.height * scale))),
                         Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=92 - (v // 192) % 40)
    return buffer.getvalue()


def source_rows(catalog: Path) -> tuple[list[tuple[Path, dict]], list[str]]:
    """The catalogue's photos with their table rows (a photo the table lacks: its folder),
    and the table's other columns."""
    photos = sorted(p for p in catalog.glob("*/*") if p.suffix.lower() in SOURCE_EXT)
    rows: dict[str, dict] = {}
    extra: list[str] = []
    table = catalog / "products.csv"
    if table.is_file():
        with open(table, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            extra = [c for c in reader.fieldnames or ()
                     if c not in ("product_id", "image", "category", "name", "price")]
            rows = {r["image"]: r for r in reader}
    out = []
    for photo in photos:
        rel = f"{photo.parent.name}/{photo.name}"
        out.append((photo, rows.get(rel, {"product_id": photo.stem, "name": photo.stem,
                                            "category": photo.parent.name})))
    return out, extra


def build_catalogue(catalog: Path, dest: Path, count: int) -> int:
    """Write ``count`` photos of distinct bytes (category folders) and a products.csv listing
    them into ``dest`` (kept and reused when ``dest`` already holds that many)."""
    marker = dest / ".complete"
    if marker.exists() and marker.read_text() == str(count):
        return count
    shutil.rmtree(dest, ignore_errors=True)
    sources, extra = source_rows(catalog)
    seen: set[str] = set()
    table: list[dict] = []
    v = 0
    while len(table) < count:
        for photo, row in sources:
            if len(table) == count:
                break
            folder = dest / photo.parent.name
            folder.mkdir(parents=True, exist_ok=True)
            if v == 0:
                data = photo.read_bytes()
            else:
                with Image.open(photo) as img:
                    data = variant_bytes(img.convert("RGB"), v)
            digest = hashlib.sha256(data).hexdigest()
            if digest in seen:  # (never seen so far; would share a vector if it happened)
                continue
            seen.add(digest)
            name = f"{photo.stem}_v{v}.jpg" if v else photo.name
            (folder / name).write_bytes(data)
            pid = row.get("product_id") or photo.stem
            table.append({"product_id": pid if v == 0 else f"{pid}-v{v}",
                          "image": f"{photo.parent.name}/{name}",
                          "category": row.get("category") or photo.parent.name,
                          "name": (row.get("name") or photo.stem) + (f" (v{v})" if v else ""),
                          "price": f"{49 + (len(table) * 37) % 950},90",
                          **{c: row.get(c, "") for c in extra}})
        v += 1
    with open(dest / "products.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    marker.write_text(str(count))
    return count


def proc_kb(pid: int) -> tuple[int, int]:
    """(RssAnon, VmRSS) of the process in KB; (0, 0) once it is gone."""
    anon = rss = 0
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    anon = int(line.split()[1])
                elif line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
    except OSError:
        pass
    return anon, rss


def index_run(catalog: Path, store: Path, env: dict, every: float = 0.02) -> dict:
    """``vitrine index`` of ``catalog`` into ``store`` as a process of its own: wall time,
    peak anonymous and resident memory (MB), a timeline of them (a point a second, thinned to
    about 60: seconds, RssAnon, VmRSS) and its report's counts."""
    load_before = [round(x, 2) for x in os.getloadavg()]
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "vitrine", "index", str(catalog),
                             "--store", str(store), "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    peak = [0, 0]
    timeline: list[list[float]] = []

    def sample() -> None:
        last = -1.0
        while proc.poll() is None:
            anon, rss = proc_kb(proc.pid)
            peak[0], peak[1] = max(peak[0], anon), max(peak[1], rss)
            now = time.perf_counter() - started
            if now - last >= 1.0 and rss:
                timeline.append([round(now, 1), round(anon / 1024), round(rss / 1024)])
                last = now
            time.sleep(every)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    sampler.join()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"vitrine index failed on {catalog} (status {code})")
    report = json.loads(stdout)
    report = report.get("report", report)
    counts = {k: report.get(k) for k in ("indexed", "updated", "unchanged", "removed",
                                        "photos_embedded", "photos_read",
                                        "duplicates_compared")}
    counts["skipped"] = len(report.get("skipped", ()))
    counts["duplicate_groups"] = len(report.get("duplicates", ()))
    return {"seconds": round(seconds, 1), "peak_anon_mb": round(peak[0] / 1024, 1),
            "peak_rss_mb": round(peak[1] / 1024, 1),
            "max_rss_mb": round(usage.ru_maxrss / 1024, 1),  # (Linux: KB)
            "store_mb": round(sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
                              / 2**20, 1),
            "load_average_before": load_before,
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "report": counts, "timeline_s_anon_rss_mb": thinned(timeline)}


def thinned(timeline: list[list[float]], most: int = 60) -> list[list[float]]:
    """At most about ``most`` points of ``timeline``, evenly spaced, and its highest."""
    step = -(-len(timeline) // most) or 1
    top = max(range(len(timeline)), key=lambda k: timeline[k][1], default=0)
    return [p for k, p in enumerate(timeline) if k % step == 0 or k == top]


def commit() -> str | None:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                              text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", type=Path, required=True)
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--sizes", default="1016,4064,16256", help="Photo counts, comma-separated.")
    ap.add_argument("--work", type=Path, help="Folder for the catalogues (kept, and reused by "
                                                "a later run; default: a temporary one).")
    ap.add_argument("--no-rerun", action="store_true",
                    help="Skip the unchanged re-run of the largest catalogue.")
    ap.add_argument("--commit", help="The commit measured, where this checkout is not the "
                                     "project's history (default: git describe).")
    args = ap.parse_args()
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    env = {**os.environ, **({"VITRINE_WEIGHTS": str(args.weights)} if args.weights else {})}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    when = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        runs = []
        for size in sizes:
            folder = work / f"catalog_{size}"
            build_catalogue(args.catalog, folder, size)
            store = Path(tmp) / f"store_{size}"
            row = {"photos": size, **index_run(folder, store, env)}
            row["photos_per_s"] = round(size / row["seconds"], 1)
            runs.append(row)
            print(f"{size}: {row['seconds']} s, anon {row['peak_anon_mb']} MB, "
                  f"rss {row['peak_rss_mb']} MB", file=sys.stderr)
        rerun = None
        if not args.no_rerun:
            rerun = {"photos": sizes[-1], **index_run(work / f"catalog_{sizes[-1]}",
                                                      Path(tmp) / f"store_{sizes[-1]}", env)}
            print(f"re-run {sizes[-1]}: {rerun['seconds']} s, anon {rerun['peak_anon_mb']} MB",
                  file=sys.stderr)
    growth = [{"from": a["photos"], "to": b["photos"],
               **{f"{key.removesuffix('_mb')}_kb_per_photo":
                  round((b[key] - a[key]) * 1024 / (b["photos"] - a["photos"]), 2)
                  for key in ("peak_anon_mb", "peak_rss_mb")}}
              for a, b in zip(runs, runs[1:], strict=False)]
    print(json.dumps({"date": when, "commit": args.commit or commit(), "machine": machine(),
                      "catalog": str(args.catalog), "python": sys.version.split()[0],
                      "settings": {k: v for k, v in os.environ.items()
                                   if k.startswith("VITRINE_") and k not in (
                                       "VITRINE_WEIGHTS", "VITRINE_DEMO_CATALOG")},
                      "runs": runs, "growth": growth, "unchanged_rerun": rerun,
                      "load_average": [round(x, 2) for x in os.getloadavg()]}, indent=1))


if __name__ == "__main__":
    main()
