"""The command-line contract, end to end with the real weights on part of the demo catalogue."""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import unicodedata
from pathlib import Path

import pytest
from conftest import IN_CI, copy_subset

from vitrine.ann import IndexConfig

CLI = [sys.executable, "-m", "vitrine.cli"]


def run(*args: str, env_extra: dict | None = None, check: bool = True):
    env = {**os.environ, **(env_extra or {})}
    proc = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:{proc.stdout}\nstderr:{proc.stderr}")
    return proc


def index_here(*args, env: dict) -> None:
    """`vitrine index ARGS` run in this process (no interpreter, torch and weights to start):
    the store a test's commands then work on (`index`'s own output is checked through the
    entry point, in test_index_reindex_search_similar_info)."""
    from typer.testing import CliRunner

    from vitrine.cli import app

    result = CliRunner().invoke(app, ["index", *map(str, args)], env=env)
    assert result.exit_code == 0, (result.output, result.exception)


@pytest.fixture(scope="module")
def catalog(demo_catalog, tmp_path_factory) -> Path:
    return copy_subset(demo_catalog, tmp_path_factory.mktemp("cli") / "catalog", 4)


@pytest.fixture(scope="module")
def env(weights_path) -> dict:
    return {"VITRINE_WEIGHTS": str(weights_path)}


@pytest.fixture(scope="module")
def indexed(catalog, env, tmp_path_factory) -> Path:
    """The module's catalogue indexed once (`vitrine index CATALOG --json`, in this
    process): the store the tests that need one copy (:func:`indexed_copy`)."""
    store = tmp_path_factory.mktemp("indexed") / "store"
    index_here(catalog, "--store", store, "--json", env=env)
    return store


def indexed_copy(indexed: Path, tmp_path: Path) -> Path:
    """A copy of the :func:`indexed` store of this test's own (what the test writes, or
    checks is not written, stays its own): what `index_here(catalog, ...)` made each time."""
    return shutil.copytree(indexed, tmp_path / "store")


def test_index_reindex_search_similar_info(catalog, env, tmp_path, cli_here):
    catalog = shutil.copytree(catalog, tmp_path / "catalog")  # (changed below: the module's
    # catalogue stays as the other tests take it, whichever run first)
    store = tmp_path / "store"
    first = json.loads(cli_here("index", catalog, "--store", store, "--json", env_extra=env).stdout)
    assert set(first) >= {"indexed", "updated", "removed", "skipped", "duplicates", "seconds"}
    assert first["indexed"] == 32 and first["updated"] == 0 and first["removed"] == 0
    assert first["skipped"] == [] and first["unlisted"] == 0

    # Change the catalogue: remove one photo, replace one with another photo, add a new one.
    rows = (catalog / "products.csv").read_text().splitlines()
    removed = rows[1].split(",")[1]
    (catalog / removed).unlink()
    changed = rows[2].split(",")[1]
    from PIL import Image

    Image.open(catalog / rows[10].split(",")[1]).save(catalog / changed, quality=80)
    (catalog / "extra").mkdir()
    shutil.copyfile(catalog / rows[20].split(",")[1], catalog / "extra" / "NEW.JPG")
    (catalog / "products.csv").write_text("\n".join([rows[0]] + rows[2:]) + "\n")
    second = json.loads(cli_here("index", catalog, "--store", store, "--json",
                                 env_extra=env).stdout)
    assert (second["indexed"], second["updated"], second["removed"]) == (1, 1, 1)
    assert second["unchanged"] == 30
    assert second["unlisted"] == 1  # extra/NEW.JPG: a photo products.csv does not list
    # the new photo is a byte copy of another product's photo: reported as duplicates
    assert any("extra/NEW.JPG" in group for group in second["duplicates"])
    assert second["duplicates_searched"] is True
    # the duplicate pairs of the first run are kept: only the replaced photo is compared
    # with the store (the new one is a byte copy of a photo it holds: joined by its sha256)
    assert (first["duplicates_compared"], second["duplicates_compared"]) == (32, 1)
    # above VITRINE_DUP_MAX_PRODUCTS the store-wide search is not run, and said so
    capped = {**env, "VITRINE_DUP_MAX_PRODUCTS": "31"}
    third = json.loads(cli_here("index", catalog, "--store", store, "--json",
                                env_extra=capped).stdout)
    assert third["duplicates"] == [] and third["duplicates_searched"] is False
    text = cli_here("index", catalog, "--store", store, env_extra=capped).stdout
    assert "Duplicates not searched" in text and "VITRINE_DUP_MAX_PRODUCTS (31)" in text

    info = json.loads(cli_here("info", "--store", store, "--json").stdout)
    assert info["products"] == 32
    assert info["categories"]["extra"] == 1
    assert info["model"]["backbone"] == "mobilenet_v2" and info["model"]["dim"] == 1280
    assert info["catalog_folder"] == str(catalog.resolve())
    # which index searches the store under these settings, and what of the settings could
    # not be followed for its size (32 products train at most 2 IVF lists: 4096 was cut to 2
    # without a word)
    assert info["index"] == {"kind": "flat", "exact": True, "storage": "fp32",
                             "approximate_from": 100_000}
    ivf = {"VITRINE_INDEX": "ivf", "VITRINE_IVF_NLIST": "4096"}
    about = json.loads(cli_here("info", "--store", store, "--json", env_extra=ivf).stdout)["index"]
    assert (about["kind"], about["lists"], about["nprobe"]) == ("ivf", 2, 2)
    said = " ".join(cli_here("info", "--store", store, env_extra=ivf).stdout.split())
    assert "approximate (IVF, fp16, 2 lists, nprobe 2); VITRINE_IVF_NLIST=4096 asks for more " \
        "lists than 32 products can train (one list per 16 at the most): 2 are used" in said

    query = catalog / rows[5].split(",")[1]
    out = cli_here("search", "--store", store, "--k", "3", "--json", query, query,
                   env_extra=env).stdout.splitlines()
    assert len(out) == 2
    result = json.loads(out[0])
    assert result["query"] == str(query)
    assert len(result["results"]) == 3
    top = result["results"][0]
    assert {"product_id", "name", "category", "score", "image"} <= set(top)
    assert top["product_id"] == rows[5].split(",")[0] and top["score"] > 0.999
    scores = [r["score"] for r in result["results"]]
    assert scores == sorted(scores, reverse=True)

    pid = rows[5].split(",")[0]
    sim = json.loads(cli_here("similar", "--store", store, pid, "--k", "4", "--json").stdout)
    assert len(sim["results"]) == 4
    assert pid not in [r["product_id"] for r in sim["results"]]

    # within its own category: the photo's product first, then every other one of it
    cat = rows[5].split(",")[2]
    in_cat = sum(row.split(",")[2] == cat for row in rows[2:])  # (rows[1] was removed)
    filtered = json.loads(cli_here("search", "--store", store, "--k", "10", "--category", cat,
                                   "--json", query, env_extra=env).stdout)["results"]
    assert [r["category"] for r in filtered] == [cat] * min(10, in_cat) and in_cat >= 3
    assert filtered[0]["product_id"] == pid
    other = next(c for c in info["categories"] if c not in (cat, "extra"))
    elsewhere = json.loads(cli_here("search", "--store", store, "--k", "10", "--category", other,
                                    "--json", query, env_extra=env).stdout)["results"]
    assert {r["category"] for r in elsewhere} == {other} and pid not in {
        r["product_id"] for r in elsewhere}
    # similar products of its own category, as the web page shows them (every other one)
    own = json.loads(cli_here("similar", "--store", store, pid, "--k", "50", "--same-category",
                              "--json").stdout)["results"]
    assert [r["category"] for r in own] == [cat] * (in_cat - 1)
    both = cli_here("similar", "--store", store, pid, "--same-category", "--category", other,
                    check=False)
    assert both.returncode == 2 and "pass one of them" in both.stderr


def test_dedupe_finds_downscaled_copy(catalog, env, tmp_path, cli_here):
    from PIL import Image

    other = tmp_path / "other"
    other.mkdir()
    source = sorted((catalog / "relogio_masculino").glob("*.jpg"))[0]
    Image.open(source).convert("RGB").resize((60, 80)).save(other / "small.jpg", quality=70)
    out = json.loads(cli_here("dedupe", catalog, other, "--json", env_extra=env).stdout)
    assert [str(source), str(other / "small.jpg")] in out["groups"] or any(
        str(other / "small.jpg") in g and str(source) in g for g in out["groups"])
    # a folder inside another one, given too: its photos count once (no photo ≈ itself)
    nested = json.loads(cli_here("dedupe", catalog, catalog / "relogio_masculino", other, "--json",
                                 env_extra=env).stdout)
    assert nested["groups"] == out["groups"]
    # a name holding a line break is one line of the text output, escaped
    (other / "small.jpg").rename(other / "small\ncopy.jpg")
    text = cli_here("dedupe", catalog / "relogio_masculino", other, env_extra=env).stdout
    assert f"{other}/small\\ncopy.jpg" in text and "\ncopy.jpg" not in text
    # photos none of which can be read: an error, not "0 duplicate groups" and status 0
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_text("not a photo")
    (broken / "b.png").write_bytes(b"")
    none = cli_here("dedupe", broken, "--json", check=False, env_extra=env)
    assert none.returncode == 2 and none.stdout == "", none.stderr
    assert none.stderr.startswith(f"error: none of the 2 photos in {broken} could be read (")
    assert ".;" not in none.stderr and "; 1 more)." in none.stderr  # (helper-132)
    missing = cli_here("dedupe", tmp_path / "nowhere", check=False, env_extra=env)
    assert missing.returncode == 2 and "nowhere does not exist." in missing.stderr
    text = cli_here("dedupe", catalog / "relogio_masculino", other, env_extra=env).stdout
    assert "\n1 duplicate group\n" in "\n" + text, text  # not "1 duplicate groups"


def test_plot_writes_figure(catalog, env, tmp_path, cli_here, indexed):
    store = indexed_copy(indexed, tmp_path)
    figure = tmp_path / "fig.png"
    query = sorted((catalog / "x_bolsa_feminina").glob("*.jpg"))[0]
    cli_here("search", "--store", store, "--plot", figure, query, env_extra=env)
    assert figure.stat().st_size > 10_000
    blocked = cli_here("search", "--store", store, "--plot", figure / "sub" / "f.png", query,
                       check=False, env_extra=env)  # a file where its folder would be
    assert blocked.returncode == 2
    assert blocked.stderr.strip().endswith("(a file is in the way of its folder).")


def test_plot_writes_only_where_it_was_told(catalog, env, tmp_path, cli_here, indexed):
    """helper-124: `--plot /dev/fd/3` without `3>` wrote the figure over the store's database
    (opened after the check, it took descriptor 3), `--plot /dev/stdin < products.csv` over
    the table, a hard link to a photo through to the photo, and several photos' figures to
    one descriptor kept the last alone; all with status 0."""
    store = indexed_copy(indexed, tmp_path)
    database = next(store.glob("*.sqlite")).read_bytes()
    pid = catalog.joinpath("products.csv").read_text().splitlines()[1].split(",")[0]
    photos = sorted((catalog / "x_bolsa_feminina").glob("*.jpg"))[:2]
    cli = [*CLI, "similar", "--store", str(store), pid, "-k", "1"]

    def plot(target, stdin=subprocess.DEVNULL, fds=(), command=cli):
        return subprocess.run([*command, "--plot", str(target)], capture_output=True,
                              text=True, stdin=stdin, env={**os.environ, **env},
                              pass_fds=fds, timeout=600)

    def plot_here(target, command=cli[3:]):  # (no descriptor nor standard stream involved:
        # the command run in this process)
        return cli_here(*command, "--plot", target, env_extra=env, check=False)

    for target in ("/dev/fd/3", "/proc/self/fd/3", "/proc/thread-self/fd/3"):  # (helper-128)
        closed = plot(target)
        assert closed.returncode == 2 and "descriptor 3 is not open" in closed.stderr, target
    table = tmp_path / "products.csv"
    shutil.copyfile(catalog / "products.csv", table)
    with open(table) as stdin:
        refused = plot("/dev/stdin", stdin=stdin)
        reading = plot(f"/dev/fd/{stdin.fileno()}", fds=(stdin.fileno(),))  # 3< products.csv
    assert refused.returncode == 2 and "standard input" in refused.stderr
    assert reading.returncode == 2 and "open for reading only" in reading.stderr
    assert table.read_bytes() == (catalog / "products.csv").read_bytes()
    assert next(store.glob("*.sqlite")).read_bytes() == database
    with open(tmp_path / "given.png", "wb") as given:  # what the README says works
        fd = given.fileno()
        sent = plot(f"/dev/fd/{fd}", fds=(fd,))
        several = plot(f"/dev/fd/{fd}", fds=(fd,), command=[
            *CLI, "search", "--store", str(store), "-k", "1", *map(str, photos)])
    assert sent.returncode == 0, sent.stderr
    assert (tmp_path / "given.png").read_bytes().startswith(b"\x89PNG")
    assert several.returncode == 2 and "holds one figure and 2 photos" in several.stderr
    # a hard link to a photo: the figure takes the name, the photo keeps its bytes
    photo = tmp_path / "photo.jpg"
    shutil.copyfile(photos[0], photo)
    os.link(photo, tmp_path / "linked.jpg")
    assert plot_here(tmp_path / "linked.jpg").returncode == 0
    assert photo.read_bytes() == photos[0].read_bytes()
    assert (tmp_path / "linked.jpg").read_bytes() != photo.read_bytes()
    assert [p.name for p in tmp_path.glob(".*.part")] == []
    # a symbolic link is replaced, never written through (helper-130: one to the store's
    # database, or to /dev/fd/3 before the store took descriptor 3, wrote over the database),
    # nor is any other spelling of a descriptor (/proc/self/root/dev/fd/3) or a file
    (tmp_path / "db.png").symlink_to(next(store.glob("*.sqlite")))
    (tmp_path / "fd3.png").symlink_to("/dev/fd/3")
    for link, draw in (("db.png", plot_here), ("fd3.png", plot)):
        assert draw(tmp_path / link).returncode == 0, link
        assert not (tmp_path / link).is_symlink()
        assert (tmp_path / link).read_bytes().startswith(b"\x89PNG")
    (tmp_path / "null.png").symlink_to("/dev/null")  # (helper-131: the figure took its mode)
    assert plot_here(tmp_path / "null.png").returncode == 0
    (tmp_path / "fresh").touch()  # the mode a new file gets here (the umask's)
    assert (tmp_path / "null.png").stat().st_mode & 0o777 == \
        (tmp_path / "fresh").stat().st_mode & 0o777
    # a link inside the catalogue is where the figure would go: refused (it added a photo)
    inside = catalog / "x_bolsa_feminina" / "zz-figure.png"
    inside.symlink_to(tmp_path / "outside.png")
    try:
        refused = plot_here(inside)
    finally:
        inside.unlink()
    assert refused.returncode == 2 and "the store's photos" in refused.stderr
    assert not (tmp_path / "outside.png").exists()
    # /dev/null while the results go there too; a descriptor opened to read and write
    # (3<> old.png) holds the figure alone, none of the old bytes after it
    quiet = subprocess.run([*cli, "--plot", "/dev/null"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, env={**os.environ, **env},
                           timeout=600)
    assert quiet.returncode == 0, quiet.stderr
    old = tmp_path / "old.png"
    old.write_bytes(b"\0" * 3_000_000)
    with open(old, "r+b") as both:
        assert plot(f"/dev/fd/{both.fileno()}", fds=(both.fileno(),)).returncode == 0
    assert old.read_bytes().startswith(b"\x89PNG") and not old.read_bytes().endswith(b"\0" * 16)
    search = [*CLI, "search", "--store", str(store), "-k", "1", str(photos[0])]
    for spelling in ("/proc/self/root/dev/fd/3", "/proc/self/root/proc/self/fd/3"):
        assert plot(spelling, command=search).returncode == 2, spelling
    from vitrine.files import is_stream  # (whether descriptor 3 is the database by then
    # depends on what the command opened: the rule itself)
    assert not any(is_stream(Path(p)) for p in ("/proc/self/root/dev/fd/3",
                                                "/proc/self/cwd/fig.png"))
    assert all(is_stream(Path(p)) for p in ("/dev/null", "/dev/fd/1", "/proc/self/fd/2"))
    assert next(store.glob("*.sqlite")).read_bytes() == database
    # a descriptor opened to append (3>> figures.log) is appended to, as the shell opened it
    log = tmp_path / "figures.log"
    log.write_bytes(b"before\n")
    with open(log, "ab") as appended:
        assert plot(f"/dev/fd/{appended.fileno()}", fds=(appended.fileno(),)).returncode == 0
    assert log.read_bytes().startswith(b"before\n\x89PNG")
    # several photos to a file: one figure each, named in each query's JSON
    numbered = json_lines(plot_here(tmp_path / "fig.png", command=[
        "search", "--store", store, "-k", "1", "--json", *photos]))
    assert [a["figure"] for a in numbered] == [str(tmp_path / f"fig-{i}.png") for i in (0, 1)]
    assert all(Path(a["figure"]).read_bytes().startswith(b"\x89PNG") for a in numbered)
    assert json.loads(plot_here(tmp_path / "one.png", command=[*cli[3:], "--json"]).stdout)[
        "figure"] == str(tmp_path / "one.png")
    empty = cli_here("search", "--store", store, "", check=False)  # (an unset shell variable)
    assert empty.returncode == 2 and "an IMAGE argument is empty" in empty.stderr
    empty = cli_here("similar", "--store", store, "", check=False)
    assert empty.returncode == 2 and empty.stderr == (
        "error: PRODUCT_ID is empty (an unset shell variable?); name it.\n"), empty.stderr


def json_lines(proc) -> list[dict]:
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_an_empty_path_or_a_mistyped_model_is_said_before_any_work(small_store, small_catalog,
                                                                     tmp_path, cli_here):
    """An empty path (an unset shell variable: `vitrine index "$CATALOG"`) was the folder
    the command ran in: a store of every photo under it, exit 0; and a mistyped --model on an
    existing store was said to be "a trained model here", against the store's kind
    (helper-187). Each is one sentence naming the parameter, exit 2, nothing written."""
    photo = next(small_catalog.rglob("*.jpg"))  # (a photo that is there: only the
    # parameter named is wrong)
    for args, said in (
            (("index", "", "--store", tmp_path / "st"), "CATALOG_DIR is empty"),
            (("dedupe", ""), "DIR is empty"),
            (("train", "", "--out", tmp_path / "m"), "CATALOG_DIR is empty"),
            (("train", tmp_path, "--out", ""), "--out is empty"),
            (("evaluate", ""), "CATALOG_DIR is empty"),
            (("bench", "--images", ""), "--images is empty"),
            (("related", "--store", small_store, "--out", ""), "--out is empty"),
            (("search", "--store", small_store, "--weights", "", photo), "--weights is empty"),
            (("search", "--store", small_store, "--plot", "", photo), "--plot is empty"),
            (("demo", "--catalog", "", "--no-train", "--no-serve"), "--catalog is empty"),
            (("search", "--store", small_store, "--model", "modle", photo),
             "--model modle is not a trained model folder"),
            (("index", tmp_path, "--store", small_store, "--model", ""), "--model is empty")):
        proc = cli_here(*args, check=False)
        assert proc.returncode == 2 and said in proc.stderr, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and proc.stdout == "", (args, proc.stderr)
    assert not (tmp_path / "st").exists() and not (tmp_path / "m").exists()


def test_a_path_after_an_equals_sign_starts_at_home_with_a_tilde(small_store, small_catalog,
                                                                  tmp_path, cli_here):
    """`--plot=~/x.png`, which a shell leaves as it is after '=', made a folder named "~"
    where the command ran, and `related --out=~/r.csv` said there was no folder "~"
    (helper-230), and a quoted query photo "~/q.jpg" was no such file: every path parameter
    reads ``~`` as the home folder; an unknown user's is one sentence."""
    home = tmp_path / "home"
    (home / "figs").mkdir(parents=True)
    photo = next(small_catalog.rglob("*.jpg"))
    there = {"HOME": str(home)}
    work = tmp_path / "work"
    work.mkdir()
    (home / "q.jpg").write_bytes(photo.read_bytes())
    for args in (("search", "--store", small_store, "--plot=~/figs/f.png", photo),
                 ("related", "--store", small_store, "--k", "2", "--out=~/r.csv"),
                 ("search", "--store", small_store, "--k", "1", "--json", "~/q.jpg")):
        proc = cli_here(*args, env_extra=there, cwd=work)
    assert (home / "figs" / "f.png").stat().st_size > 0 and (home / "r.csv").is_file()
    found = json.loads(proc.stdout)  # (a quoted query photo "~/q.jpg": the home folder's)
    assert found["query"] == "~/q.jpg" and found["results"][0]["score"] > 0.99
    assert not any(work.iterdir())
    unknown = cli_here("search", "--store", small_store, "--plot=~nouser-vitrine/f.png", photo,
                       check=False)
    assert unknown.returncode == 2 and unknown.stderr == (
        "error: --plot '~nouser-vitrine/f.png' starts with '~', but that home folder is "
        "unknown here; write the full path.\n")


def test_user_errors_are_one_sentence(catalog, env, tmp_path, cli_here, indexed):
    missing = cli_here("index", tmp_path / "nope", "--store", tmp_path / "s", check=False,
                       env_extra=env)
    assert missing.returncode == 2
    assert missing.stderr.strip().startswith("error:") and "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr and len(missing.stderr.strip().splitlines()) == 1

    no_weights = cli_here("index", catalog, "--store", tmp_path / "s", check=False,
                          env_extra={"VITRINE_WEIGHTS": str(tmp_path / "missing.pth")})
    assert no_weights.returncode == 2 and "--weights" in no_weights.stderr
    assert "Traceback" not in no_weights.stderr

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"this is not a photo")
    store = indexed_copy(indexed, tmp_path)
    corrupt = cli_here("search", "--store", store, bad, check=False, env_extra=env)
    assert corrupt.returncode == 2 and "not a recognised image" in corrupt.stderr
    assert len(corrupt.stderr.strip().splitlines()) == 1

    no_store = cli_here("info", "--store", tmp_path / "nostore", "--json", check=False)
    assert no_store.returncode == 2 and "no Vitrine store" in no_store.stderr

    unknown = cli_here("similar", "--store", store, "no-such-id", check=False)
    assert unknown.returncode == 2 and "not in the store" in unknown.stderr

    # usage errors: click's message and status 2, no traceback
    for args in (["search", "--store", store, "--k", "0", bad], ["search", bad],
                 ["no-such-command"]):
        usage = cli_here(*args, check=False)
        assert usage.returncode == 2 and "Traceback" not in usage.stderr, usage.stderr
    setting = cli_here("info", "--store", store, check=False, env_extra={"VITRINE_RESIZE": "bogus"})
    assert setting.returncode == 2 and setting.stderr.startswith("error: setting VITRINE_RESIZE")
    assert len(setting.stderr.strip().splitlines()) == 1

    good = sorted((catalog / "x_bolsa_feminina").glob("*.jpg"))[0]
    typo = cli_here("search", "--store", store, "--category", "bolsa", good, check=False)
    assert typo.returncode == 2 and "no products of category 'bolsa'" in typo.stderr
    assert "'x_bolsa_feminina'" in typo.stderr  # the categories it does have
    # several photos, one bad: the others are still searched, and the run exits 2
    # (each query given back as typed, "./" and "//" kept: a script looks its own up)
    typed = [f"{bad.parent}/./{bad.name}", f"{good.parent}//{good.name}"]
    both = cli_here("search", "--store", store, "--json", *typed, check=False, env_extra=env)
    assert both.returncode == 2 and f"error: {typed[0]}: " in both.stderr
    answers = [json.loads(line) for line in both.stdout.splitlines()]
    assert [a["query"] for a in answers] == typed
    assert answers[0]["error"].startswith(f"{typed[0]}: ")
    assert "not a recognised image" in answers[0]["error"] and answers[0]["results"] == []
    assert len(answers[1]["results"]) == 5 and "error" not in answers[1]
    wrong_plot = cli_here("search", "--store", store, "--plot", tmp_path / "fig.xyz", good,
                          check=False, env_extra=env)
    assert wrong_plot.returncode == 2 and "fig.xyz" in wrong_plot.stderr
    assert wrong_plot.stdout == ""  # refused before searching
    named = cli_here("search", "--store", store, "--plot", tmp_path / "fig", good, env_extra=env)
    saved = f"Figure saved to {tmp_path / 'fig.png'}"
    assert len(saved) > 80 and saved in named.stdout.splitlines()  # piped: not wrapped at 80
    assert (tmp_path / "fig.png").is_file()
    # a figure that cannot be written (a folder in its place) is one error; the next photo is
    # still searched and plotted
    (tmp_path / "figs" / "f-0.png").mkdir(parents=True)
    blocked = cli_here("search", "--store", store, "--json", "--plot", tmp_path / "figs" / "f.png",
                       good, good, check=False, env_extra=env)
    assert blocked.returncode == 2 and "cannot write the figure" in blocked.stderr
    answers = [json.loads(line) for line in blocked.stdout.splitlines()]
    assert [len(a["results"]) for a in answers] == [5, 5] and "error" not in answers[1]
    assert answers[0]["error"].startswith("cannot write the figure")
    assert (tmp_path / "figs" / "f-1.png").is_file()
    # a photo that fails now leaves no earlier run's figure in its numbered place (f-1.png
    # stayed, read as the bad photo's: helper-238); `--plot -` is standard output, refused
    again = cli_here("search", "--store", store, "--plot", tmp_path / "figs" / "f.png", good, bad,
                     check=False, env_extra=env)
    assert again.returncode == 2 and not (tmp_path / "figs" / "f-1.png").exists()
    dash = cli_here("search", "--store", store, "--plot", "-", good, check=False, env_extra=env)
    assert dash.returncode == 2 and dash.stderr.startswith("error: --plot - would be standard")
    assert not (Path.cwd() / "-.png").exists()
    # similar says so in its JSON too (it printed the JSON first, with no "error" key)
    pid = catalog.joinpath("products.csv").read_text().splitlines()[1].split(",")[0]
    (tmp_path / "figs" / "in-the-way").write_text("a file where its folder should be")
    similar = cli_here("similar", "--store", store, "--json", "--plot",
                       tmp_path / "figs" / "in-the-way" / "s.png", pid, check=False, env_extra=env)
    assert similar.returncode == 2 and "cannot write the figure" in similar.stderr
    answer = json.loads(similar.stdout)
    assert len(answer["results"]) == 5 and answer["error"].startswith("cannot write the figure")
    dotted = cli_here("similar", "--store", store, "--plot", tmp_path / "dot.", pid, env_extra=env)
    assert (tmp_path / "dot.png").is_file() and "dot..png" not in dotted.stdout
    # a pipe or a device (/dev/null, /dev/stdout) takes the figures as they are: it became
    # /dev/null.png, a file made in /dev
    pipe, got = tmp_path / "fig.pipe", []  # (a suffix that names no format: PNG)
    os.mkfifo(pipe)
    reader = threading.Thread(target=lambda: got.append(pipe.read_bytes()), daemon=True)
    reader.start()
    piped = cli_here("search", "--store", store, "--plot", pipe, good, env_extra=env, check=False)
    reader.join(60)
    if reader.is_alive():  # nothing was written there: let the reader go
        os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
    assert piped.returncode == 0 and f"Figure saved to {pipe}\n" in piped.stdout, piped.stderr
    assert got[0].startswith(b"\x89PNG") and not list(tmp_path.glob("fig.pipe*"))[1:]
    # its own standard output, where the results go (the figure came after the table, or
    # /dev/stdout.png was made when stdout was a file): refused
    own = run("search", "--store", store, "--plot", "/dev/stdout", good, check=False,
              env_extra=env)  # (a process of its own: its standard output is the pipe)
    assert own.returncode == 2 and "is this command's standard output" in own.stderr
    assert own.stdout == "" and not Path("/dev/stdout.png").exists()
    # a figure over a photo to search (the second query then searched the first's figure),
    # or into the store's catalogue (it replaced a product's photo, embedded by the next
    # index): refused before any work, every photo as it was
    query = tmp_path / "q.jpg"
    shutil.copyfile(good, query)
    before, catalogue_photo = query.read_bytes(), good.read_bytes()
    for args in (["search", "--plot", query, query],
                 ["search", "--plot", tmp_path / "q.jpg", good, tmp_path / "q-1.jpg"],
                 ["search", "--plot", catalog / "x_bolsa_feminina" / "new.png", query],
                 ["similar", "--plot", good, pid]):
        if args[3] == tmp_path / "q-1.jpg":
            shutil.copyfile(good, args[3])
        over = cli_here(*args[:1], "--store", store, *args[1:], check=False, env_extra=env)
        assert over.returncode == 2 and "--plot" in over.stderr and over.stdout == "", args
        assert "name another file" in over.stderr or "the store's photos" in over.stderr
    assert query.read_bytes() == before and good.read_bytes() == catalogue_photo
    assert not (catalog / "x_bolsa_feminina" / "new.png").exists()


def test_plot_is_refused_through_the_catalogues_links_and_over_standard_output(
        catalog, env, tmp_path, cli_here):
    """helper-145: a figure written over a photo the catalogue links to, or into a category
    folder that is a link to a folder elsewhere, replaced a product's photo or added one
    (`vitrine index` follows such links); `--plot fig.png > fig.png` put the figure where
    the results went, which were lost; each with status 0."""
    photos = sorted((catalog / "x_bolsa_feminina").glob("*.jpg"))
    cat, out, linked_folder = tmp_path / "cat", tmp_path / "out", tmp_path / "outdir"
    for folder in (cat / "a", out, linked_folder):
        folder.mkdir(parents=True)
    shutil.copyfile(photos[0], cat / "a" / "own.jpg")
    shutil.copyfile(photos[1], out / "real.jpg")
    shutil.copyfile(photos[2], linked_folder / "x.jpg")
    (cat / "a" / "linked.jpg").symlink_to(out / "real.jpg")
    (cat / "linkedcat").symlink_to(linked_folder)
    (linked_folder / "sub").mkdir()  # (empty: read by the next index all the same)
    bags = tmp_path / "ext" / "bags"  # a linked folder whose photos are in a sub-folder
    (bags / "black").mkdir(parents=True)
    shutil.copyfile(photos[3], bags / "black" / "b.jpg")
    (cat / "bags").symlink_to(bags)
    (tmp_path / "ext" / "empty").mkdir()  # a linked category no product is in yet
    (cat / "a" / "empty").symlink_to(tmp_path / "ext" / "empty")
    store = tmp_path / "store"
    index_here(cat, "--store", store, env=env)
    from vitrine.store import open_store

    handle = open_store(store)
    ids = {Path(image).name: pid for pid, image in handle.images().items()}
    handle.close()
    assert set(ids) == {"own.jpg", "linked.jpg", "x.jpg", "b.jpg"}
    before = {p: p.read_bytes() for p in (out / "real.jpg", linked_folder / "x.jpg")}
    for target in (out / "real.jpg", linked_folder / "fig.png", cat / "linkedcat" / "f.png",
                   linked_folder / "sub" / "f.png", bags / "f.png",
                   tmp_path / "ext" / "empty" / "f.png"):
        refused = cli_here("similar", ids["own.jpg"], "--store", store, "--plot", target,
                           check=False, env_extra=env)
        assert refused.returncode == 2 and refused.stdout == "", (target, refused.stderr)
        assert "a product's photo (the catalogue's link" in refused.stderr or \
            "a folder the store's photos are read from" in refused.stderr, refused.stderr
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in linked_folder.rglob("*")) == ["sub", "x.jpg"]
    assert sorted(p.name for p in bags.rglob("*")) == ["b.jpg", "black"]
    assert cli_here("similar", ids["own.jpg"], "--store", store, "--plot", out / "beside.png",
                    env_extra=env).returncode == 0  # (beside a linked photo: read by no index)
    # the file standard output writes to, named as the figure, alone or numbered
    for args in (["similar", ids["own.jpg"], "--plot", tmp_path / "o.png"],
                 ["search", photos[2], photos[3], "--plot", tmp_path / "o.png"]):
        shown = tmp_path / ("o-1.png" if args[0] == "search" else "o.png")
        with open(shown, "w") as stdout:
            proc = subprocess.run([*CLI, *map(str, args), "--store", str(store)],
                                  stdout=stdout, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, **env}, timeout=600)
        assert proc.returncode == 2 and "standard output" in proc.stderr, proc.stderr
        assert "standard output" not in shown.read_text()  # (one sentence, on stderr)
        assert not (tmp_path / "o-0.png").exists()
    assert cli_here("similar", ids["own.jpg"], "--store", store, "--plot", tmp_path / "ok.png",
                    env_extra=env).returncode == 0 and (tmp_path / "ok.png").is_file()


def test_a_file_name_that_is_not_utf8_is_skipped(catalog, env, tmp_path):
    """A Latin-1 file name (common in zips made on Windows) is skipped with its reason; the
    other photos are stored and the JSON stays valid."""
    copy = tmp_path / "catalog"
    shutil.copytree(catalog, copy)
    (copy / "products.csv").unlink()
    first = sorted((copy / "relogio_feminino").glob("*.jpg"))[0]
    latin = os.fsdecode(bytes(copy / "relogio_feminino") + b"/caf\xe9.jpg")
    shutil.copyfile(first, latin)
    proc = run("index", copy, "--store", tmp_path / "store", "--json", env_extra=env)
    report = json.loads(proc.stdout.encode("utf-8", "surrogateescape"))
    assert report["indexed"] == 32 and len(report["skipped"]) == 1
    assert "not UTF-8" in report["skipped"][0]["reason"]


def test_a_catalogue_store_or_model_folder_not_named_in_utf8_is_one_error(catalog, env,
                                                                          tmp_path):
    """A catalogue unpacked from a zip made on Windows into a Latin-1 folder: every photo was
    skipped as "not UTF-8", then recording the folder ended in a UnicodeEncodeError
    traceback, status 1; a store kept in such a folder took every product, then ended in
    FAISS's TypeError traceback (and so did each search of it). One sentence, status 2,
    before the model loads and before any store is made."""
    latin = Path(os.fsdecode(bytes(tmp_path) + b"/cat\xe1logo"))
    shutil.copytree(catalog, latin)
    proc = run("index", latin, "--store", tmp_path / "store", env_extra=env, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("error: the catalogue folder ")
    assert "not UTF-8" in proc.stderr and not (tmp_path / "store").exists()
    store = Path(os.fsdecode(bytes(tmp_path) + b"/loja\xe9"))
    proc = run("index", catalog, "--store", store, env_extra=env, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("error: the store's folder ")
    assert not (store / "vitrine.sqlite").exists()


NFD_FOLDER = unicodedata.normalize("NFD", "relógio_feminino")  # as a Mac names it
WATCH = "時計⌚"  # a photo's name (and so its product's) no ASCII terminal can show
ASCII_LOCALE = {"LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
"""Python reads file names as ASCII here (helper-68 found the same with pt_BR.ISO-8859-1)."""


@pytest.fixture(scope="module")
def accented(catalog, env, tmp_path_factory) -> tuple[Path, Path, str]:
    """A catalogue whose watches sit in a decomposed (Mac) folder, one named WATCH, indexed
    under UTF-8: (catalogue, store, WATCH's product id typed composed)."""
    copy = tmp_path_factory.mktemp("accented") / "catalog"
    shutil.copytree(catalog, copy)
    (copy / "products.csv").unlink()
    (copy / "relogio_feminino").rename(copy / NFD_FOLDER)
    first = sorted((copy / NFD_FOLDER).glob("*.jpg"))[0]
    first.rename(first.with_name(f"{WATCH}.jpg"))
    store = copy.parent / "store"
    report = json.loads(run("index", copy, "--store", store, "--json", env_extra=env).stdout)
    assert report["indexed"] == 32 and report["skipped"] == []
    return copy, store, unicodedata.normalize("NFC", f"{NFD_FOLDER}/{WATCH}.jpg")


def test_a_non_utf8_locale_reads_the_catalogue_and_ids_as_they_are(accented, env, tmp_path):
    """Under a locale that is not UTF-8, Python read the accented file names as other
    products: `index` removed every watch and added it back under a garbled id (and a
    Chinese name crashed it). The command now starts again in UTF-8 mode."""
    catalog, store, watch = accented
    store = shutil.copytree(store, tmp_path / "store")  # the others' stays as it is
    again = run("index", catalog, "--store", store, "--json", env_extra={**env, **ASCII_LOCALE})
    report = json.loads(again.stdout)
    assert (report["indexed"], report["updated"], report["removed"]) == (0, 0, 0)
    assert report["unchanged"] == 32 and report["skipped"] == []
    # the id typed composed finds the decomposed one the store holds; the JSON is UTF-8
    similar = run("similar", "--store", store, "--json", watch,
                  env_extra={**env, **ASCII_LOCALE})
    answer = json.loads(similar.stdout)  # (read as UTF-8)
    assert answer["product"]["name"] == WATCH
    assert unicodedata.normalize("NFC", answer["product"]["product_id"]) == watch
    assert len(answer["results"]) == 5 and all(
        r["product_id"] != answer["product"]["product_id"] for r in answer["results"])


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_a_terminal_that_cannot_show_a_name_gets_it_escaped(accented, env, encoding):
    """With a stdout that cannot encode "時計⌚" (PYTHONIOENCODING, a Latin-1 console) the
    tables print it escaped and --json prints UTF-8; both crashed with UnicodeEncodeError."""
    _, store, watch = accented
    io_env = {**env, "PYTHONIOENCODING": encoding}
    table = subprocess.run([*CLI, "similar", "--store", str(store), watch], env={
        **os.environ, **io_env}, capture_output=True, timeout=300)
    assert table.returncode == 0, table.stderr.decode(errors="replace")
    assert "\\u6642\\u8a08\\u231a" in table.stdout.decode(encoding)
    # the table is sized to the escapes (helper-158: to the names, its borders out of line)
    lines = [line for line in table.stdout.decode(encoding).splitlines() if line[:1] in "+|"]
    assert len(lines) > 4 and len({len(line) for line in lines}) == 1, lines
    for args in (["similar", "--json", watch], ["info", "--json"]):
        proc = subprocess.run([*CLI, args[0], "--store", str(store), *args[1:]], env={
            **os.environ, **io_env}, capture_output=True, timeout=300)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        assert WATCH in proc.stdout.decode("utf-8") or "relógio" in proc.stdout.decode("utf-8")
        json.loads(proc.stdout.decode("utf-8"))


def test_a_narrow_terminal_still_shows_the_ranks_scores_and_ids(accented, env):
    """helper-158: at 20 columns the rank, score, id, category and price columns were
    squeezed to nothing; only the name was shown, a letter a line."""
    _, store, watch = accented
    table = subprocess.run([*CLI, "similar", "--store", str(store), "--k", "2", watch],
                           env={**os.environ, **env, "COLUMNS": "20"}, capture_output=True,
                           text=True, timeout=300)
    assert table.returncode == 0, table.stderr
    rows = [line for line in table.stdout.splitlines() if re.search(r"\d\.\d{3}", line)]
    assert [re.search(r"\b([12])\b\D*\d\.\d{3}", row) is not None for row in rows] == [True] * 2


def test_ctrl_c_while_the_command_line_loads_is_one_word(monkeypatch, capsys):
    """helper-158: the command line's import takes half a second (Typer, Rich, the
    settings) before it handles Ctrl+C; pressed then, it printed a traceback. The `vitrine`
    command and `python -m vitrine` start through a small module that says "interrupted."."""
    import tomllib
    import types

    import vitrine.__main__ as entry

    class Loading(types.ModuleType):
        def __getattr__(self, name):
            raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "vitrine.cli", Loading("vitrine.cli"))
    with pytest.raises(SystemExit) as stopped:
        entry.main()
    assert stopped.value.code == 130 and capsys.readouterr().err == "interrupted.\n"
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["vitrine"] == "vitrine.__main__:main"


def test_on_windows_the_command_is_one_sentence(monkeypatch, capsys):
    """Vitrine needs POSIX file locks (fcntl): on Windows its import was a traceback
    (helper-236); the command says where it runs, before importing anything of its own,
    and the package's classifiers name Linux and macOS."""
    import tomllib

    import vitrine.__main__ as entry

    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setitem(sys.modules, "vitrine.cli", None)  # (not imported: it would fail)
    with pytest.raises(SystemExit) as stopped:
        entry.main()
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        "error: Vitrine runs on Linux and macOS (it needs POSIX file locks); on Windows, run "
        "it under WSL or in a Linux container.\n")
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert {"Operating System :: POSIX :: Linux", "Operating System :: MacOS"} <= set(
        project["project"]["classifiers"])


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full (Linux has one)")
def test_output_to_a_full_disk_is_one_error(accented, env):
    """`vitrine info > file` on a full disk: one sentence and status 2, not a traceback (and
    not Python's "Exception ignored" at exit)."""
    _, store, watch = accented
    for args in (["info", "--store", str(store)], ["similar", "--store", str(store), "--json",
                                                   watch]):
        with open("/dev/full", "w") as full:
            proc = subprocess.run([*CLI, *args], stdout=full, stderr=subprocess.PIPE,
                                  text=True, env={**os.environ, **env}, timeout=300)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr == "error: cannot write the output: No space left on device.\n"


def test_every_command_help_renders():
    """`vitrine CMD --help` renders for every command (rich markup in a help text once broke it)."""
    from typer.main import get_command
    from typer.testing import CliRunner

    from vitrine.cli import app

    names = sorted(get_command(app).commands)
    assert {"index", "search", "similar", "serve", "train", "evaluate", "bench"} <= set(names)
    runner = CliRunner()
    for name in names:
        result = runner.invoke(app, [name, "--help"], env={"COLUMNS": "80"})  # (rich's width)
        assert result.exit_code == 0, f"{name} --help: {result.output}{result.exception!r}"
        assert "Usage" in result.output
        # at 80 columns no word is cut short ("milvus://HOST[:PORT][/COLLE…" could not be read)
        assert "…" not in result.output, f"{name} --help:\n{result.output}"
        # a flag shows no value (`--json <bool>`: `--json true` was refused, helper-162)
        assert "<bool>" not in result.output, f"{name} --help:\n{result.output}"
    store_help = " ".join(runner.invoke(app, ["index", "--help"], env={"COLUMNS": "200"}
                                        ).output.split())
    assert "milvus://HOST[:PORT] (a Milvus server; /NAME" in store_help
    # the usage lines name the arguments as the README does (not {images}, {dirs})
    for name, argument in (("index", "{CATALOG_DIR}"), ("search", "{IMAGE}..."),
                           ("dedupe", "{DIR}..."), ("similar", "{PRODUCT_ID}")):
        usage = runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"}).output
        assert f" {name} [OPTIONS] {argument}" in usage


def test_a_finished_or_failed_command_ignores_ctrl_c_while_python_shuts_down(
        small_store, monkeypatch, capsys):
    """After the output is printed Python still takes a second or more to exit (torch); a
    Ctrl+C then turned a finished command (a trained model, a full index) into a silent 130."""
    import signal

    from vitrine.cli import main

    monkeypatch.setattr(sys, "argv", ["vitrine", "info", "--store", str(small_store), "--json"])
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as exit_:
            main()
        assert exit_.value.code == 0 and json.loads(capsys.readouterr().out)["products"] > 0
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        # after an error too (helper-126: a Ctrl+C or SIGTERM then printed a traceback from
        # torch's exit handlers, "Exception ignored in atexit callback")
        signal.signal(signal.SIGINT, signal.default_int_handler)
        monkeypatch.setattr(sys, "argv", ["vitrine", "info", "--store",
                                          str(small_store / "none")])
        with pytest.raises(SystemExit) as exit_:
            main()
        assert exit_.value.code == 2 and "no Vitrine store" in capsys.readouterr().err
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])


def test_an_extra_missing_is_named_by_its_packages_too():
    """An optional extra missing was to be installed "in Vitrine's checkout: pip install -e
    '.[milvus]'": no use where a wheel was installed (no checkout), and `pip install
    'vitrine[milvus]'` fetches the other PyPI project of that name (helper-180). Its
    packages are named too, as pyproject.toml lists them."""
    import tomllib

    from vitrine.errors import extra_hint

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    for extra in ("milvus", "efficientnet"):
        hint = extra_hint(extra)
        assert hint.startswith(f"in Vitrine's checkout: pip install -e '.[{extra}]'; "
                               "elsewhere: pip install ")
        named = hint.split("elsewhere: pip install ", 1)[1].split()
        assert named == [f"'{req}'" for req in project["project"]["optional-dependencies"][extra]]


def test_version_prints_the_packages_version_and_loads_no_model():
    """`vitrine --version` answers at once with the installed version (it was "No such
    option")."""
    from importlib.metadata import version

    code = ("import sys\nfrom vitrine.cli import main\nsys.argv = ['vitrine', '--version']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('torch' in sys.modules, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"vitrine {version('vitrine')}\n" and proc.stderr.strip() == "False"
    # and as `python -m vitrine` (it said "No module named vitrine.__main__": helper-149)
    module = subprocess.run([sys.executable, "-m", "vitrine", "--version"],
                            capture_output=True, text=True, timeout=60)
    assert module.returncode == 0 and module.stdout == proc.stdout, module.stderr


def test_reading_a_store_does_not_load_torch(small_store, small_catalog, weights_path,
                                            tmp_path):
    """`info`, `similar` and `related` need no model: importing torch made each take seconds more
    (benchmarks/cli_startup.py). Nor does `search`, once a run has loaded the model (the
    store's indexing did) and exported it (vitrine.warm; test_warm.py)."""
    with open(small_catalog / "products.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    pid, photo = row["product_id"], small_catalog / row["image"]
    code = ("import sys\nfrom vitrine.cli import main\nsys.argv = ['vitrine', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('torch' in sys.modules, file=sys.stderr)")
    for args in (["info", "--store", small_store, "--json"],
                 ["similar", "--store", small_store, "--json", pid],
                 ["related", "--store", small_store, "--out", tmp_path / "r.csv", "--json"],
                 ["search", "--store", small_store, "--json", photo]):
        proc = subprocess.run([sys.executable, "-c", code, *map(str, args)],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "VITRINE_WEIGHTS": str(weights_path)})
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) and proc.stderr.strip() == "False", args


def test_json_output_is_strict_json(capsys):
    """Metrics of an empty set are NaN in Python; JSON has no NaN, so they print as null."""
    from vitrine.cli_support import print_json

    print_json({"acc": float("nan"), "acc_ci95": [float("nan"), 1.0], "n": 0,
                 "inner": {"f1": float("inf")}})
    out = capsys.readouterr().out
    assert "NaN" not in out and "Infinity" not in out
    assert json.loads(out) == {"acc": None, "acc_ci95": [None, 1.0], "n": 0,
                               "inner": {"f1": None}}


@pytest.mark.parametrize("name, value", [
    ("VITRINE_TRAIN_BATCH_SIZE", "0"), ("VITRINE_TRAIN_DROPOUT", "2"),
    ("VITRINE_TRAIN_PHASE1_LR", "-1"), ("VITRINE_TRAIN_VIEWS", "0"),
    ("VITRINE_TRAIN_PHASE1_EPOCHS", "-1"), ("VITRINE_TRAIN_VAL_FRACTION", "1.5"),
    ("VITRINE_BATCH_SIZE", "0"), ("VITRINE_RESIZE", "bogus"),
    # each of these trained and wrote an unusable model over a good one, or a traceback
    ("VITRINE_TRAIN_EMBEDDING", "bogus"), ("VITRINE_TRAIN_EMBEDDING_WEIGHT", "nan"),
    ("VITRINE_TRAIN_EMBEDDING_WEIGHT", "5"), ("VITRINE_TRAIN_PHASE1_LR", "inf"),
    ("VITRINE_TRAIN_PHASE2_LR", "1e30"), ("VITRINE_TRAIN_WEIGHT_DECAY", "inf"),
    ("VITRINE_TRAIN_PHASE1_EPOCHS", "0"), ("VITRINE_TRAIN_SEED", "-5"),
    ("VITRINE_TRAIN_SEED", "99999999999999999999999"), ("VITRINE_TRAIN_HEAD_UNITS", "100000000"),
    ("VITRINE_TRAIN_WEIGHT_DECAY", "1e39"), ("VITRINE_TRAIN_CLASS_WEIGHT_POWER", "1e308"),
    # read every photo, then said the disk was full (a map of every photo per view)
    ("VITRINE_TRAIN_VIEWS", "100000"),
    # these made every photo a duplicate or none (NaN compares false)
    ("VITRINE_DUP_EMBED_COSINE", "nan"), ("VITRINE_DUP_THUMB_COSINE", "-inf"),
    ("VITRINE_DUP_MAX_COLOUR_DIFF", "nan"), ("VITRINE_DUP_MAX_COLOUR_DIFF", "-1"),
    # FAISS crashed the process on M 1, torch on 100,000 threads; 1e11 overflowed FAISS' int
    ("VITRINE_HNSW_M", "1"), ("VITRINE_THREADS", "100000"),
    ("VITRINE_INTEROP_THREADS", "100000000000"), ("VITRINE_DECODE_WORKERS", "1000000"),
    ("VITRINE_HNSW_EF_SEARCH", "100000000000"), ("VITRINE_HNSW_EF_CONSTRUCTION", "1e11"),
    ("VITRINE_IVF_NPROBE", "100000000000"), ("VITRINE_BATCH_SIZE", "100000000000"),
    # train and evaluate took any device, and said it "applies to embedding"; an unknown
    # backbone or companion was said without its setting (two settings name backbones)
    ("VITRINE_DEVICE", "gpu"), ("VITRINE_DEVICE", "cuda:x"), ("VITRINE_BACKBONE", "resnet"),
    ("VITRINE_TRAIN_COMPANION", "foo")])
def test_out_of_range_settings_are_one_sentence(monkeypatch, name, value):
    """Refused when read, before any photo (they used to fail after reading every photo, or
    train with a negative number of epochs)."""
    from vitrine.config import load_settings
    from vitrine.errors import VitrineError

    monkeypatch.setenv(name, value)
    with pytest.raises(VitrineError, match=f"^setting {name}='{re.escape(value)}': "):
        load_settings()


def test_a_yes_or_no_setting_says_the_words_it_takes(monkeypatch):
    """"Input should be a valid boolean, unable to interpret input", and no word of what it
    takes (helper-230)."""
    from vitrine.config import load_settings
    from vitrine.errors import VitrineError

    monkeypatch.setenv("VITRINE_ONNX_SPINNING", "abc")
    with pytest.raises(VitrineError, match=r"^setting VITRINE_ONNX_SPINNING='abc': .* \(use "
                                           r"true or false, 1 or 0, yes or no, on or off\)\.$"):
        load_settings()


@pytest.mark.parametrize(("name", "value", "field", "read"), [
    ("VITRINE_DEVICE", "cuda:1", "device", "cuda:1"),
    ("VITRINE_DEVICE", "cpu", "device", "cpu"),
    ("VITRINE_TRAIN_COMPANION", "", "train_companion", ""),
    ("VITRINE_TRAIN_COMPANION", "efficientnet_lite0", "train_companion", "efficientnet_lite0"),
    ("VITRINE_BACKBONE", "efficientnet_lite0", "backbone", "efficientnet_lite0")])
def test_settings_checked_when_read_still_take_what_they_did(monkeypatch, name, value, field,
                                                             read):
    from vitrine.config import load_settings

    monkeypatch.setenv(name, value)
    assert getattr(load_settings(), field) == read


def test_fractions_that_leave_nothing_to_train_on_are_refused_with_the_settings(monkeypatch):
    """Each fraction within range but the two summing to 1 or more: `train` read every photo
    (a minute on the demo catalogue), then failed without naming either variable."""
    from vitrine.config import load_settings
    from vitrine.errors import VitrineError

    monkeypatch.setenv("VITRINE_TRAIN_VAL_FRACTION", "0.6")
    monkeypatch.setenv("VITRINE_TRAIN_TEST_FRACTION", "0.4")
    with pytest.raises(VitrineError, match=r"^settings VITRINE_TRAIN_VAL_FRACTION=0\.6 and "
                                           r"VITRINE_TRAIN_TEST_FRACTION=0\.4 leave nothing"):
        load_settings()
    monkeypatch.setenv("VITRINE_TRAIN_TEST_FRACTION", "0.39")
    assert load_settings().train_test_fraction == 0.39
    monkeypatch.delenv("VITRINE_TRAIN_TEST_FRACTION")  # the other one at its default
    monkeypatch.setenv("VITRINE_TRAIN_VAL_FRACTION", "0.9")
    with pytest.raises(VitrineError, match=r"^settings VITRINE_TRAIN_VAL_FRACTION=0\.9 and "
                                           r"VITRINE_TRAIN_TEST_FRACTION=0\.15 leave"):
        load_settings()


def test_an_empty_folder_setting_means_its_default_not_the_current_folder(monkeypatch):
    """``VITRINE_DEMO_STORE=`` wrote a store into whatever folder the command ran from."""
    from vitrine.config import Settings, load_settings

    for name in ("CACHE_DIR", "DEMO_STORE", "DEMO_OUT"):
        monkeypatch.setenv(f"VITRINE_{name}", " ")
    settings = load_settings()
    for name in ("cache_dir", "demo_store", "demo_out"):
        default = Settings.model_fields[name].get_default(call_default_factory=True)
        default = default and default.expanduser()  # (~ expands in a path setting)
        assert getattr(settings, name) == default != Path(".")


def test_path_settings_expand_home_and_the_api_key_is_what_a_client_can_send(monkeypatch,
                                                                              tmp_path):
    """`VITRINE_DEMO_OUT='~/out'` (a shell leaves ~ inside quotes) ended the demo in a
    traceback after it had made a store at the expanded place; a key read from a secret
    file with its line break, or of spaces only, locked every write out (401, not 403);
    a key beyond Latin-1 could never match a header (its bytes are read as Latin-1);
    `VITRINE_INDEX_FP16=` was an error, not unset."""
    from vitrine.config import load_settings
    from vitrine.errors import VitrineError

    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("DEMO_OUT", "DEMO_STORE", "DEMO_CATALOG", "UPLOAD_DIR", "CACHE_DIR",
                 "WEIGHTS", "MODEL"):
        monkeypatch.setenv(f"VITRINE_{name}", f"~/{name.lower()}")
    settings = load_settings()
    assert settings.demo_out == tmp_path / "demo_out" and settings.model == tmp_path / "model"
    assert settings.upload_dir == tmp_path / "upload_dir"
    for key, kept in (("s3cret\n", "s3cret"), ("  a key  ", "a key"), ("   ", None)):
        monkeypatch.setenv("VITRINE_API_KEY", key)
        assert load_settings().api_key == kept
    monkeypatch.setenv("VITRINE_API_KEY", "chave-ç")  # Latin-1: a client can send it
    assert load_settings().api_key == "chave-ç"
    monkeypatch.setenv("VITRINE_API_KEY", "chave-🔑")
    with pytest.raises(VitrineError, match="VITRINE_API_KEY.*printable Latin-1"):
        load_settings()
    monkeypatch.delenv("VITRINE_API_KEY")
    monkeypatch.setenv("VITRINE_INDEX_FP16", "")
    assert load_settings().index_fp16 is None


def test_the_model_cache_follows_xdg_cache_home(monkeypatch, tmp_path):
    """XDG_CACHE_HOME moves the cache (it was ignored); VITRINE_CACHE_DIR still wins, and a
    relative XDG_CACHE_HOME is ignored as the spec says."""
    from vitrine.config import load_settings

    monkeypatch.delenv("VITRINE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert load_settings().cache_dir == tmp_path / "xdg" / "vitrine"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")
    assert load_settings().cache_dir == Path("~/.cache/vitrine").expanduser()
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert load_settings().cache_dir == Path("~/.cache/vitrine").expanduser()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("VITRINE_CACHE_DIR", str(tmp_path / "mine"))
    assert load_settings().cache_dir == tmp_path / "mine"


def test_settings_without_a_home_folder(monkeypatch, tmp_path):
    """No HOME and a user id without a passwd entry (a container's): every command, even
    `info`, stopped with a traceback ("Could not determine home directory") from the
    default cache folder. That default moves to the temporary folder; a setting written
    with '~' is one sentence."""
    import pwd
    import tempfile

    from vitrine.config import load_settings
    from vitrine.errors import VitrineError

    def nobody(uid):
        raise KeyError(uid)

    for name in ("VITRINE_CACHE_DIR", "XDG_CACHE_HOME", "HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(pwd, "getpwuid", nobody)
    with pytest.raises(RuntimeError):
        Path("~").expanduser()  # (what Python does here)
    assert load_settings().cache_dir == (Path(tempfile.gettempdir())
                                         / f"vitrine-cache-{os.getuid()}")
    monkeypatch.setenv("VITRINE_WEIGHTS", "~/w.pth")
    with pytest.raises(VitrineError, match=r"setting VITRINE_WEIGHTS='~/w.pth': ~/w.pth "
                                           r"starts with '~', but that home folder is unknown"):
        load_settings()


@pytest.mark.parametrize("value, origins", [
    ("https://loja.com.br", ["https://loja.com.br"]),
    ("https://a.com, https://b.com,", ["https://a.com", "https://b.com"]),
    ('["https://a.com", "https://b.com"]', ["https://a.com", "https://b.com"]),
    ("HTTPS://Loja.com.br/, http://127.0.0.1:8000/", ["https://loja.com.br",
                                                      "http://127.0.0.1:8000"]),
    # as browsers send them: no default port, the host in IDNA form
    ("https://loja.com:443,http://a.com:80,https://a.com:80", ["https://loja.com",
                                                               "http://a.com", "https://a.com:80"]),
    ("https://Lojá.com.br,http://[::1]:8000", ["https://xn--loj-gla.com.br", "http://[::1]:8000"]),
    # UTS 46 non-transitional, as browsers send it (IDNA 2003 made ß "ss": never matched)
    ("https://straße.de,https://σοφός.gr", ["https://xn--strae-oqa.de", "https://xn--0xagbn4a.gr"]),
    # (UTS 46's mapping, not IDNA 2008's table, which refused what browsers send: helper-251)
    ("https://☃.net,https://i❤.ws,https://lojá。com.br,http://api_v2.loja.com:8080",
     ["https://xn--n3h.net", "https://xn--i-7iq.ws", "https://xn--loj-gla.com.br",
      "http://api_v2.loja.com:8080"]),
    # (a word-final Σ: UTS 46 makes it σ, Python's lower() ς, another host: helper-252)
    ("https://ΟΔΟΣ-shop.gr", ["https://xn---shop-u9d0fb0b.gr"]),
    ("*", ["*"]),
    ("", [])])
def test_cors_origins_is_a_comma_separated_or_json_list(monkeypatch, value, origins):
    """A plain URL crashed every command with a pydantic-settings traceback (JSON only)."""
    from vitrine.config import load_settings

    monkeypatch.setenv("VITRINE_CORS_ORIGINS", value)
    assert load_settings().cors_origins == origins


@pytest.mark.parametrize("value, reason", [
    ("https://loja.com.br/produtos", "without a path"), ("loja.com.br", "scheme://host"),
    ("ftp://loja.com.br", "scheme://host"), ("https://a.com,https://b.com?x=1", "without a path"),
    ("https://user:pw@loja.com", "no user name"), ("https://loja.com:abc", "port"),
    ("https://*.loja.com", "wildcard"), ("https://loja..com.br", "not a valid domain name")])
def test_an_origin_that_could_never_match_is_refused(monkeypatch, value, reason):
    """Browsers send ``scheme://host[:port]`` and nothing else, so such an entry could never
    match: one sentence saying why, instead of a CORS that silently stays closed."""
    from vitrine.config import load_settings
    from vitrine.errors import VitrineError

    monkeypatch.setenv("VITRINE_CORS_ORIGINS", value)
    with pytest.raises(VitrineError, match=r"is not an origin; .*" + re.escape(reason)):
        load_settings()


def test_unparsable_settings_are_one_sentence(tmp_path):
    """A setting pydantic-settings cannot parse is one `error:` sentence naming it, status 2
    (it was a SettingsError traceback, status 1); a plain URL in CORS_ORIGINS now works."""
    from vitrine.store import open_store

    open_store(tmp_path / "s", create=True).close()
    bad = run("info", "--store", tmp_path / "s", check=False,
              env_extra={"VITRINE_CORS_ORIGINS": '["https://a.com"'})
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.startswith("error: setting VITRINE_CORS_ORIGINS='[\"https://a.com\"'")
    assert len(bad.stderr.strip().splitlines()) == 1
    good = run("info", "--store", tmp_path / "s", "--json",
               env_extra={"VITRINE_CORS_ORIGINS": "https://loja.com.br"})
    assert json.loads(good.stdout)["products"] == 0


def test_settings_errors_of_any_parsing_name_the_variable(monkeypatch):
    """Any list or dict setting pydantic-settings decodes itself (as JSON) and cannot: one
    sentence naming the variable, not a SettingsError."""
    import vitrine.config as config
    from vitrine.errors import VitrineError

    class WithMap(config.Settings):
        extra_map: dict[str, int] = {}

    monkeypatch.setattr(config, "Settings", WithMap)
    monkeypatch.setenv("VITRINE_EXTRA_MAP", "a=1")
    with pytest.raises(VitrineError, match=r"^setting VITRINE_EXTRA_MAP='a=1' could not be read"):
        config.load_settings()


def test_migrate_and_train_take_the_settings_they_say(small_store, tmp_path, cli_here):
    """`migrate` builds the target's index as the settings ask (it built the default one, and
    the server then built the configured one again); `train` says that it runs on the CPU
    when VITRINE_DEVICE asks for another device, rather than ignore it silently."""
    target = tmp_path / "copy"
    cli_here("migrate", small_store, target, "--json", env_extra={"VITRINE_INDEX": "hnsw"})
    hnsw = IndexConfig.defaults(kind="hnsw").tag(48)
    assert [p.name.split(".")[2] for p in target.glob("index.*.faiss")] == [hnsw]
    proc = cli_here("train", tmp_path / "missing", "--out", tmp_path / "model", check=False,
                    env_extra={"VITRINE_DEVICE": "cuda"})
    assert proc.returncode != 0 and "training runs on the CPU" in proc.stderr


def test_weights_on_the_command_line_beat_vitrine_model_and_do_not_go_with_model(
        catalog, weights_path, tmp_path, small_store, cli_here):
    """--weights (the pretrained backbone) was overridden by VITRINE_MODEL without a word, and
    --weights with --model was accepted (the model won)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in sorted(catalog.glob("*/*.jpg"))[:2]:
        shutil.copyfile(photo, folder / photo.name)
    missing = {"VITRINE_MODEL": str(tmp_path / "no-model-here")}
    done = cli_here("dedupe", folder, "--weights", weights_path, "--json", env_extra=missing)
    assert json.loads(done.stdout)["skipped"] == []  # the environment's model was not loaded
    chosen = cli_here("dedupe", folder, "--model", tmp_path / "no-model-either", check=False)
    assert chosen.returncode == 2 and "no-model-either is not a trained model" in chosen.stderr
    both = cli_here("evaluate", catalog, "--weights", weights_path, "--model", tmp_path / "m",
                    check=False)
    assert both.returncode == 2 and both.stderr.count("\n") == 1
    assert "--weights and --model each choose the model to embed with" in both.stderr
    # a VITRINE_MODEL naming no model is said as the setting's (a path set in a shell
    # profile read as the command's own mistake); train, which writes models, reads none
    named = cli_here("dedupe", folder, check=False, env_extra=missing)
    assert named.returncode == 2 and named.stderr.startswith(
        f"error: setting VITRINE_MODEL={tmp_path / 'no-model-here'} is not a trained model "
        "folder"), named.stderr
    trains = cli_here("train", tmp_path / "no-catalogue", "--out", tmp_path / "m", check=False,
                      env_extra=missing)
    assert trains.returncode == 2 and "VITRINE_MODEL" not in trains.stderr, trains.stderr
    from vitrine.store import open_store  # nor similar, which reads stored vectors

    store = open_store(small_store)
    pid = store.list_products(limit=1)[0].product_id
    store.close()
    similar = cli_here("similar", pid, "--store", small_store, "--json", env_extra=missing)
    assert json.loads(similar.stdout)["results"]


def test_migrate_again_says_what_the_source_no_longer_holds_and_prune_removes_it(
        small_store, tmp_path, cli_here):
    """A product deleted at the source lived on in an earlier copy without a word."""
    from vitrine.store import open_store

    source, target = tmp_path / "source", tmp_path / "target"
    shutil.copytree(small_store, source)
    first = json.loads(cli_here("migrate", source, target, "--json").stdout)
    assert first["not_in_source"] == first["removed"] == 0 and first["copied"] == 48
    store = open_store(source)
    gone = store.list_products(limit=1)[0].product_id
    store.delete([gone])
    store.close()
    again = cli_here("migrate", source, target).stdout
    assert "Copied 47 products" in again
    assert "also holds 1 product(s) the source does not" in " ".join(again.split())
    assert "--prune removes them" in " ".join(again.split())
    assert open_store(target).get(gone) is not None
    pruned = json.loads(cli_here("migrate", source, target, "--prune", "--json").stdout)
    assert (pruned["not_in_source"], pruned["removed"]) == (1, 1)
    assert open_store(target).get(gone) is None
    # a store into itself (the same folder however named): refused, not copied onto itself
    for same in (source, tmp_path / "." / "source", f"{source}/"):
        itself = cli_here("migrate", source, same, check=False)
        assert itself.returncode == 2 and "are the same store" in itself.stderr, itself.stderr
    assert open_store(source).count() == 47
    # a target inside the source's folder would go with it (the copy is made so that the
    # source can go): refused, nothing made there
    for inner in (source / "copy", source / "uploads", f"milvus-lite://{source}/copy.db"):
        within = cli_here("migrate", source, inner, check=False)
        assert within.returncode == 2 and "is inside the store" in within.stderr, within.stderr
    assert not (source / "copy").exists() and not (source / "copy.db").exists()
    # a copy refused before anything is written leaves no empty store where there was none
    empty = open_store(tmp_path / "empty", create=True)
    empty.close()
    lite = IN_CI or importlib.util.find_spec("milvus_lite") is not None  # (./scripts/floors)
    for target in (tmp_path / "new", tmp_path / "new.db", tmp_path / "a" / "b" / "new",
                   tmp_path / "a" / "b" / "new.db"):
        if target.suffix == ".db" and not lite:
            continue
        where = f"milvus-lite://{target}" if target.suffix == ".db" else target
        refused = cli_here("migrate", tmp_path / "empty", where, check=False)
        assert refused.returncode == 2 and "is empty" in refused.stderr, refused.stderr
        assert not target.exists() and not (tmp_path / "a").exists()  # nor the folders made


def test_demo_keeps_its_store_inside_out_unless_told(small_catalog, weights_path, tmp_path,
                                                     cli_here):
    """`demo --out X` put its store in ./demo-output/store, outside X, where the demo does
    not know it as its own (another model was then refused instead of rebuilt)."""
    here = tmp_path / "here"
    here.mkdir()
    env = {"VITRINE_WEIGHTS": str(weights_path), "VITRINE_DEMO_STORE": None}
    # (two categories of the small catalogue: where the store goes is the same for eight,
    # whose eight figures took most of the time)
    two = copy_subset(small_catalog, tmp_path / "two", 2,
                      categories=("relogio_feminino", "x_bolsa_feminina"))

    def demo(*args, extra: dict | None = None):  # (the real entry point, in this process,
        # from the folder `here`)
        return cli_here("demo", *args, check=False, cwd=here, env_extra={**env, **(extra or {})})

    proc = demo("--catalog", two, "--out", tmp_path / "out", "--no-train", "--no-serve",
                "--k", "2")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "store" / ".vitrine-demo").is_file()
    assert list(here.iterdir()) == []  # nothing in the folder it ran from
    # an --out that is a file: said at once (the whole catalogue was indexed first)
    (tmp_path / "file").write_text("mine")
    proc = demo("--catalog", two, "--out", tmp_path / "file", "--store", tmp_path / "elsewhere",
                "--no-train", "--no-serve")
    assert proc.returncode == 2 and "is a file; name a folder" in proc.stderr, proc.stderr
    assert not (tmp_path / "elsewhere").exists()
    for option in ("--store", "--out"):  # empty: the folder it ran in, as "."
        proc = demo("--catalog", two, option, "", "--no-train", "--no-serve")
        assert proc.returncode == 2 and f"{option} is empty" in proc.stderr, proc.stderr
        assert list(here.iterdir()) == []
    # a Milvus address made a folder named "milvus-lite:" in the folder it ran in
    address = f"milvus-lite://{tmp_path / 'm.db'}"
    for args, extra, said in ((["--store", address], {}, f"--store {address}"),
                              ([], {"VITRINE_DEMO_STORE": address},
                               f"setting VITRINE_DEMO_STORE={address!r}")):
        proc = demo("--catalog", two, *args, "--no-train", "--no-serve", extra=extra)
        assert proc.returncode == 2 and proc.stderr == (
            f"error: {said}: the demo keeps its store in a folder; to use a Milvus store, "
            "index it with `vitrine index CATALOG --store ADDRESS` and serve it with "
            "`vitrine serve`.\n")
        assert list(here.iterdir()) == []
    # a VITRINE_DEMO_CATALOG naming no folder: said as the setting's (the user typed no path)
    proc = demo("--no-train", "--no-serve", extra={"VITRINE_DEMO_CATALOG": str(tmp_path / "no")})
    assert proc.returncode == 2 and proc.stderr.startswith(
        f"error: setting VITRINE_DEMO_CATALOG='{tmp_path / 'no'}': no folder there"), proc.stderr
    assert list(here.iterdir()) == []


def test_too_little_address_space_is_one_sentence(small_store):
    """FAISS's library (its OpenBLAS) crashed the process as it loaded under `ulimit -v`
    below about 550 MB: status 139 (SIGSEGV) and not a word. One sentence and status 2;
    the help and the version still answer."""
    def limited(command: list[str]) -> list[str]:
        """``command`` under 400 MB of address space, set by a trampoline that execs it (a
        preexec_fn forked from this test process, with gRPC's threads of earlier Milvus
        tests, died at times before it started: SIGABRT, "epoll_wait error")."""
        return [sys.executable, "-c", "import os, resource, sys; resource.setrlimit("
                "resource.RLIMIT_AS, (400 << 20, resource.RLIM_INFINITY)); "
                "os.execv(sys.argv[1], sys.argv[1:])", *command]

    proc = subprocess.run(limited([*CLI, "info", "--store", str(small_store)]),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc
    assert proc.stderr.startswith("error: this process may use 400 MB of address space "
                                  "(ulimit -v)") and "768 MB" in proc.stderr
    version = subprocess.run(limited([*CLI, "--version"]), capture_output=True, text=True,
                             timeout=120)
    assert version.returncode == 0 and version.stdout.startswith("vitrine "), version
    bare = subprocess.run(limited(CLI), capture_output=True, text=True,
                          timeout=120)  # (no command: the help, as `--help` answers it)
    assert "Usage:" in bare.stdout and "address space" not in bare.stderr, bare


def test_memory_or_threads_refused_are_one_sentence(capsys, monkeypatch):
    """Under `ulimit -v` torch's CPU allocator raised a RuntimeError that ended `index` in a
    traceback; memory or a thread refused is one sentence saying what to lower or raise. Other
    errors still reach the traceback (they are bugs)."""
    import signal

    import typer

    from vitrine.cli_run import run_app

    monkeypatch.setattr(sys, "argv", ["vitrine"])
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # pytest keeps its handlers

    torch_says = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                  "allocate memory: you tried to allocate 6422528 bytes. Error code 12 "
                  "(Cannot allocate memory)")
    import errno

    for raised in (RuntimeError(torch_says), MemoryError(), RuntimeError("can't start new "
                                                                           "thread"),
                   OSError(errno.ENOMEM, "Cannot allocate memory")):
        app = typer.Typer()

        @app.command()
        def fails(raised=raised) -> None:
            raise raised

        with pytest.raises(SystemExit) as stopped:
            run_app(app)
        assert stopped.value.code == 2
        said = capsys.readouterr().err
        assert said.startswith("error: the system refused memory or a thread (")
        assert said.count("\n") == 1 and "VITRINE_BATCH_SIZE" in said
        assert " at test_cli_contract.py:" in said  # where, for a size computed wrong
    app = typer.Typer()

    @app.command()
    def gpu() -> None:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(SystemExit):
        run_app(app)
    said = capsys.readouterr().err
    assert said.startswith("error: the GPU ran out of memory (CUDA out of memory.")
    assert "ulimit" not in said
    app = typer.Typer()

    @app.command()
    def bug() -> None:
        raise RuntimeError("index out of range")

    with pytest.raises(RuntimeError, match="index out of range"):
        run_app(app)
    # torch's library refused its memory as it is imported (`vitrine bench` under ulimit -v)
    for raised, says in ((ImportError("libtorch_cpu.so: failed to map segment from shared "
                                      "object"), "error: the system refused the memory to "
                                                 "load a library (libtorch_cpu.so: failed"),
                         (ImportError("No module named 'nothing'"), None),
                         (ImportError("libgomp.so.1: cannot allocate memory in static TLS "
                                      "block"), None)):  # (the loader, not the system)
        app = typer.Typer()

        @app.command()
        def loads(raised=raised) -> None:
            raise raised

        if says is None:  # a broken install is not the system's refusal
            with pytest.raises(ImportError, match="nothing|static TLS"):
                run_app(app)
            continue
        with pytest.raises(SystemExit) as stopped:
            run_app(app)
        said = capsys.readouterr().err
        assert stopped.value.code == 2 and said.startswith(says) and said.count("\n") == 1
        assert "ulimit -v" in said and "VITRINE_BATCH_SIZE" not in said
    # pymilvus's own errors (Milvus Lite on a full disk during a copy): a traceback before
    try:
        from pymilvus import MilvusException
    except ImportError:  # pragma: no cover - without the milvus extra (./scripts/floors)
        class MilvusException(Exception):  # (known by its name: pymilvus is not imported)
            def __init__(self, message: str):
                super().__init__(message)
                self.message = message

    app = typer.Typer()

    @app.command()
    def copy() -> None:
        raise MilvusException(message="[Errno 28] No space left on device")

    with pytest.raises(SystemExit) as stopped:
        run_app(app)
    said = capsys.readouterr().err
    assert stopped.value.code == 2 and said.count("\n") == 1
    assert said.startswith("error: the Milvus store failed ([Errno 28] No space left on "
                           "device); run the command again")


STOPPABLE = """import os, signal, sys, time
from pathlib import Path
import typer
from vitrine.cli_run import run_app
from vitrine.progress import progress_bar
app = typer.Typer()
@app.command()
def work(marker: Path) -> None:
    try:
        with progress_bar("working", 100, enabled=True) as advance:  # draws on stderr
            print("started", flush=True)
            for _ in range(600):
                time.sleep(0.1)
                advance(0)
    finally:
        os.kill(os.getpid(), signal.SIGHUP)  # a second stop signal: the clean-up goes on
        time.sleep(0.2)
        marker.write_text("cleaned up")
sys.argv = ["vitrine", sys.argv[1]]
run_app(app)
"""
"""A command that draws a progress bar until stopped, and whose clean-up gets a second
SIGHUP (a shell passes one on, then the terminal sends its own)."""


def hangs_up(command: list[str]) -> list[str]:
    """``command`` started with SIGHUP as a terminal's command gets it. A test run started
    under `nohup` (or a CI runner that ignores SIGHUP) passes the ignoring on, which Vitrine
    now keeps, as it should for `nohup vitrine …`. (A trampoline that execs it, not a
    preexec_fn: forked from a test process with gRPC threads, such a child could die before
    it started.)"""
    return [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGHUP, "
            "signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])", *command]


@pytest.mark.parametrize("stop", ["SIGHUP", "SIGTERM"])
def test_a_closed_terminal_stops_a_command_cleanly(tmp_path, stop):
    """Closing the terminal (SIGHUP) killed a command outright: `related` left its hidden
    part-written file behind, `index` its batch unsaved. It now stops as SIGTERM does: the
    command's clean-up runs whole, then the process ends by that signal."""
    import signal

    marker = tmp_path / "marker"
    proc = subprocess.Popen(hangs_up([sys.executable, "-c", STOPPABLE, str(marker)]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "started\n"
    proc.send_signal(getattr(signal, stop))
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == -getattr(signal, stop), stderr
    assert marker.read_text() == "cleaned up"
    assert stderr.strip().endswith("terminated.") and "Traceback" not in stderr


def test_a_real_terminal_closing_and_nohup(tmp_path):
    """At a real terminal that closes, SIGHUP comes and every later write to it fails (EIO):
    the progress bar's last draw turned the stop into "could not write …" and a traceback,
    exit 1. The process now ends by SIGHUP after its clean-up. And `nohup vitrine …`, which
    starts it with SIGHUP ignored, outlives its terminal as it did before SIGHUP was taken."""
    import signal

    marker = tmp_path / "marker"
    driver = ("import os, pty, signal, sys, time\n"
              "pid, fd = pty.fork()\n"
              "if pid == 0:\n"
              "    signal.signal(signal.SIGHUP, signal.SIG_DFL)  # (see hangs_up)\n"
              "    os.execv(sys.executable, [sys.executable, '-c', sys.argv[1], sys.argv[2]])\n"
              "seen = b''\n"
              "while b'started' not in seen:\n"
              "    seen += os.read(fd, 4096)\n"
              "time.sleep(0.5)\n"
              "os.close(fd)  # the terminal goes away\n"
              "_, status = os.waitpid(pid, 0)\n"
              "print(os.WTERMSIG(status) if os.WIFSIGNALED(status) else -1)\n")
    closed = subprocess.run([sys.executable, "-c", driver, STOPPABLE, str(marker)],
                            capture_output=True, text=True, timeout=60)
    assert closed.returncode == 0, closed.stderr
    assert int(closed.stdout) == signal.SIGHUP and marker.read_text() == "cleaned up"

    marker.unlink()
    ignoring = subprocess.Popen(  # (no preexec_fn: forked from a test process that has
        ["nohup", sys.executable, "-c", STOPPABLE, str(marker)],  # gRPC threads, it could
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # die before it started)
    assert ignoring.stdout.readline() == "started\n"
    ignoring.send_signal(signal.SIGHUP)
    time.sleep(1)
    assert ignoring.poll() is None and not marker.exists()  # still working
    ignoring.send_signal(signal.SIGTERM)
    ignoring.communicate(timeout=60)
    assert ignoring.returncode == -signal.SIGTERM and marker.read_text() == "cleaned up"


def test_an_option_given_beats_the_environments_value_of_its_setting(small_catalog,
                                                                     tmp_path, monkeypatch):
    """The environment was read whole before the options went over it: a bad
    VITRINE_ROOT_PATH refused `serve --root-path /good`, a bad VITRINE_DEMO_OUT `demo --out
    DIR`, and `demo --train` was refused for a VITRINE_MODEL set long ago (helper-230). An
    option's own bad value is said as the option's; a variable set twice in different case
    (which counted hung on the environment's order, and the refusal quoted the other) is
    refused."""
    from typer.testing import CliRunner

    from vitrine import demo
    from vitrine.cli import app
    from vitrine.config import load_settings
    from vitrine.errors import VitrineError

    monkeypatch.setenv("VITRINE_ROOT_PATH", "/bad/")
    assert load_settings({"root_path": ("--root-path", "/good")}).root_path == "/good"
    with pytest.raises(VitrineError, match="^setting VITRINE_ROOT_PATH='/bad/'"):
        load_settings()
    monkeypatch.delenv("VITRINE_ROOT_PATH")
    with pytest.raises(VitrineError, match="^--out '~nouser-vitrine/o': ~nouser-vitrine/o "
                                           "starts with '~', but that home folder is unknown"):
        load_settings({"demo_out": ("--out", "~nouser-vitrine/o")})
    monkeypatch.setenv("VITRINE_BATCH_SIZE", "4")
    monkeypatch.setenv("vitrine_batch_size", "0")
    with pytest.raises(VitrineError, match="VITRINE_BATCH_SIZE and vitrine_batch_size are "
                                           "the same setting, set twice"):
        load_settings()
    monkeypatch.delenv("vitrine_batch_size")
    ran = []
    monkeypatch.setattr(demo, "run_demo", lambda catalog, store, out, settings, *a, **k:
                        ran.append((catalog, store, out, settings)))
    for name, value in (("DEMO_TRAIN", "abc"), ("DEMO_OUT", "~nouser-vitrine/o"),
                        ("DEMO_CATALOG", "~nouser-vitrine/c"),
                        ("DEMO_STORE", f"milvus-lite://{tmp_path / 'm.db'}"),
                        ("MODEL", str(tmp_path / "no-model"))):
        monkeypatch.setenv(f"VITRINE_{name}", value)
    result = CliRunner().invoke(app, ["demo", "--catalog", str(small_catalog), "--out",
                                      str(tmp_path / "out"), "--store", str(tmp_path / "st"),
                                      "--train", "--no-serve"])
    assert result.exit_code == 0, result.output
    (catalog, store, out, settings), = ran
    assert (catalog, store, out) == (small_catalog, tmp_path / "st", tmp_path / "out")
    assert settings.demo_train and settings.model is None


def test_a_variable_that_names_no_setting_is_said(small_store):
    """`VITRINE_INDEX_KIND=hnsw` (the setting is VITRINE_INDEX) was ignored without a word
    (helper-230): a note names it and the setting it may have meant; the command goes on.
    The set-up scripts' own variables are no settings and say nothing."""
    proc = run("info", "--store", small_store, env_extra={
        "VITRINE_INDEX_KIND": "hnsw", "VITRINE_NOTHING_LIKE_IT": "1",
        "VITRINE_EXTRAS": "dev", "VITRINE_CHROMIUM": "/usr/bin/chromium"})
    assert proc.stderr == (
        "note: VITRINE_INDEX_KIND is not a Vitrine setting (did you mean VITRINE_INDEX?); "
        "it is ignored.\n"
        "note: VITRINE_NOTHING_LIKE_IT is not a Vitrine setting; it is ignored.\n")
    assert "products in" in proc.stdout


def test_demo_train_with_a_model_is_refused(small_catalog, tmp_path, cli_here):
    """`demo --train --model DIR` indexed with DIR and trained nothing, without a word."""
    proc = cli_here("demo", "--catalog", small_catalog, "--out", tmp_path / "out", "--train",
                    "--model", tmp_path / "m", "--no-serve", check=False)
    assert proc.returncode == 2 and "--train trains a model" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_info_counts_one_state_of_the_store(small_store, tmp_path, monkeypatch):
    """`vitrine info` read the count and the category counts in two reads: a product
    deleted between them (a server or index writing) made them disagree."""
    import sqlite3

    from typer.testing import CliRunner

    from vitrine.cli import app
    from vitrine.store.embedded import EmbeddedStore

    store = tmp_path / "st"
    shutil.copytree(small_store, store)
    count = EmbeddedStore.count

    def count_then_another_process_deletes(self):
        n = count(self)
        with sqlite3.connect(store / "vitrine.sqlite") as other:
            other.execute("DELETE FROM products WHERE rowid=(SELECT MIN(rowid) FROM products)")
        return n

    monkeypatch.setattr(EmbeddedStore, "count", count_then_another_process_deletes)
    result = CliRunner().invoke(app, ["info", "--store", str(store), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["products"] == sum(data["categories"].values()) > 0


def test_a_path_argument_that_cannot_be_read_is_vitrines_to_report(small_store, catalog,
                                                                   tmp_path):
    """Click's own readability check turned one unreadable query photo into a usage error:
    the good photos were not searched, no JSON was printed (a folder to index or dedupe
    likewise). Every path parameter leaves that to Vitrine, which reports each bad photo and
    searches the rest, and skips a folder it cannot list, saying why. Root reads anything:
    the commands drop the capabilities that let it."""
    good = sorted(catalog.glob("*/*.jpg"))[0]
    locked = tmp_path / "locked.jpg"
    shutil.copyfile(good, locked)
    locked.chmod(0)
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
            "--inh-caps=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    if drop:  # (a container without CAP_SETPCAP cannot drop them: nothing to see there)
        try:
            probe = subprocess.run([*drop, "true"], capture_output=True, timeout=30)
        except FileNotFoundError:
            probe = None
        if probe is None or probe.returncode != 0:
            pytest.skip("root's file-permission capabilities cannot be dropped here")
    proc = subprocess.run([*drop, *CLI, "search", "--store", str(small_store), "--k", "1",
                           "--json", str(good), str(locked)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "Usage:" not in proc.stderr, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines[0]["query"] == str(good) and lines[0]["results"]
    assert lines[1]["query"] == str(locked) and "Permission denied" in lines[1]["error"]
    shut = tmp_path / "shut"
    shut.mkdir(mode=0)
    proc = subprocess.run([*drop, *CLI, "dedupe", str(shut), str(catalog), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "Usage:" not in proc.stderr, proc.stderr
    assert json.loads(proc.stdout)["skipped"] == [
        {"path": str(shut), "reason": "the folder cannot be read (Permission denied)"}]


def test_a_path_this_user_may_not_use_is_one_sentence(capsys, monkeypatch):
    """A catalogue or model folder this user may not read (chmod 000, another user's) ended
    in a PermissionError traceback, wherever it was met."""
    import signal

    import typer

    from vitrine.cli_run import run_app

    monkeypatch.setattr(sys, "argv", ["vitrine"])
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # pytest keeps its handlers
    app = typer.Typer()

    @app.command()
    def reads() -> None:
        raise PermissionError(13, "Permission denied", "/srv/catalogue")

    with pytest.raises(SystemExit) as stopped:
        run_app(app)
    said = capsys.readouterr().err
    assert stopped.value.code == 2 and said == (
        "error: /srv/catalogue: Permission denied; give this user access there, or run as "
        "its owner.\n")


def test_a_command_started_without_stdout_runs(small_store):
    """Started with stdout closed (`>&-`, some daemonizers): Python leaves sys.stdout None,
    and the first write was an AttributeError traceback, status 1."""
    proc = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", *CLI, "info", "--store",
                           str(small_store)], stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_an_empty_store_name_is_refused(catalog, tmp_path, cli_here):
    """`--store ""` (an unset shell variable) indexed into the folder the command ran in,
    beside the user's files, and said "→ " with no name."""
    here = tmp_path / "here"
    here.mkdir()
    proc = cli_here("index", catalog, "--store", "", check=False, cwd=here)
    assert proc.returncode == 2 and proc.stderr.startswith("error: no store named"), proc.stderr
    assert list(here.iterdir()) == []


def test_a_milvus_address_with_one_slash_is_refused(catalog, tmp_path, cli_here):
    """`--store milvus-lite:/data/x.db` (one slash, as a path is written) indexed into a
    folder store made under the folder the command ran in, named `milvus-lite:`, exit 0."""
    here = tmp_path / "here"
    here.mkdir()
    for store in (f"milvus-lite:{tmp_path}/m.db", "milvus:localhost:19530", "Milvus:x"):
        proc = cli_here("index", catalog, "--store", store, check=False, cwd=here)
        assert proc.returncode == 2, proc.stderr
        assert "milvus-lite:///ABSOLUTE/PATH.db or milvus://HOST:PORT" in proc.stderr
        assert f"written with its whole path, {here / store}." in " ".join(
            proc.stderr.split())
        assert list(here.iterdir()) == [] and not (tmp_path / "m.db").exists()


def test_demo_says_a_bad_upload_folder_before_its_work(small_catalog, weights_path, tmp_path):
    """With VITRINE_API_KEY (the server takes writes) and VITRINE_UPLOAD_DIR under a file,
    the demo indexed, drew its figures (trained, by default) and only then stopped."""
    (tmp_path / "afile").write_text("x")
    env = {**os.environ, "VITRINE_WEIGHTS": str(weights_path), "VITRINE_API_KEY": "k" * 32,
           "VITRINE_UPLOAD_DIR": str(tmp_path / "afile" / "fotos")}
    proc = subprocess.run([*CLI, "demo", "--catalog", str(small_catalog), "--out",
                           str(tmp_path / "out"), "--no-train", "--port", "0"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2 and "is under a file" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()
    # a --store that is a file: said as such (not as its upload folder "under a file")
    proc = subprocess.run([*CLI, "demo", "--catalog", str(small_catalog), "--out",
                           str(tmp_path / "out"), "--store", str(tmp_path / "afile"),
                           "--no-train", "--port", "0"], capture_output=True, text=True,
                          timeout=300, env={**env, "VITRINE_UPLOAD_DIR": ""})
    assert proc.returncode == 2 and "not a store folder" in proc.stderr, proc.stderr


def test_a_stop_with_its_stderr_reader_gone_still_ends_as_a_stop(monkeypatch):
    """helper-163: `vitrine serve 2>&1 | head -1` stopped by Ctrl+C ended with status 1, not
    130: saying "interrupted." to the gone reader made Rich end the process (SystemExit 1)."""
    from rich.console import Console

    from vitrine import cli_run

    read, write = os.pipe()
    os.close(read)
    gone = os.fdopen(write, "w")
    kept = os.dup(1)  # (Rich points stdout at /dev/null: pytest -s said nothing more)
    try:
        monkeypatch.setattr(cli_run, "err", Console(file=gone))
        monkeypatch.setattr(cli_run, "_terminated", None)
        with pytest.raises(SystemExit) as stopped:
            cli_run._stopped()
    finally:
        os.dup2(kept, 1)
        os.close(kept)
        with contextlib.suppress(OSError):
            gone.close()
    assert stopped.value.code == 130


def test_a_suggested_command_names_the_vitrine_that_ran(monkeypatch, tmp_path):
    """The demo's "search and serve this store with its model: vitrine search …" was not
    found in the shell after `./scripts/demo`, which puts `.venv/bin` on the PATH of its own
    run only (helper-176): the command names the script that ran, as seen from here."""
    from vitrine.cli_support import program

    script = tmp_path / "venv dir" / "bin" / "vitrine"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(script), "demo"])
    assert program() == "'venv dir/bin/vitrine'"
    monkeypatch.chdir(script.parent)
    assert program() == "./vitrine"  # (a bare name is looked for on the PATH)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert program() == f"'{script}'"
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "vitrine" / "__main__.py")])
    assert program() == f"{sys.executable} -m vitrine"  # python -m vitrine
