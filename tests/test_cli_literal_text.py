"""The shop's data reaches the terminal as it is: product names, categories and paths with
[square brackets] are not rich markup (``Promo [/promo]`` crashed ``similar`` with a
MarkupError, ``Sapatos [promo]`` printed as "Sapatos", ``[red]`` coloured) nor emoji codes."""

from __future__ import annotations

import shutil

import pytest
from test_cli_contract import run

NAMES = {"p1": ("[b]", "Promo [/promo]"), "p2": ("[b]", "[red]x[/red] :fire:"),
         "p3": ("Sapatos [promo]", "Sapatos [promo]")}


@pytest.fixture(scope="module")
def env(weights_path) -> dict:
    return {"VITRINE_WEIGHTS": str(weights_path)}


@pytest.fixture(scope="module")
def bracket_store(demo_catalog, env, tmp_path_factory):
    """A three-product store whose names and categories hold brackets, and the index
    command's output (it skips a broken photo whose name holds brackets)."""
    root = tmp_path_factory.mktemp("brackets")
    cat = root / "catalog"
    photos = sorted(demo_catalog.rglob("*.jpg"))[:3]
    rows = ["product_id,image,category,name"]
    for (pid, (category, name)), photo in zip(NAMES.items(), photos, strict=True):
        (cat / "fotos").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photo, cat / "fotos" / f"{pid}.jpg")
        rows.append(f'{pid},fotos/{pid}.jpg,"{category}","{name}"')
    (cat / "products.csv").write_text("\n".join(rows) + "\n")
    (cat / "fotos" / "bad [promo] [b].jpg").write_bytes(b"not a photo")
    store = root / "store"
    indexed = run("index", cat, "--store", store, env_extra=env)
    return store, cat, indexed.stdout


def test_index_prints_a_skipped_path_with_brackets(bracket_store):
    _, _, stdout = bracket_store
    assert "skipped fotos/bad [promo] [b].jpg" in stdout


def test_similar_search_info_print_brackets_literally(bracket_store, env):
    store, cat, _ = bracket_store
    wide = {**env, "COLUMNS": "250"}
    similar = run("similar", "--store", store, "p1", "--k", "2", env_extra=wide).stdout
    assert "Similar to p1 (Promo [/promo])" in similar
    assert "[red]x[/red] :fire:" in similar and "Sapatos [promo]" in similar
    assert "[b]" in similar and "\x1b" not in similar
    search = run("search", "--store", store, "--k", "3", cat / "fotos" / "p1.jpg",
                 env_extra=wide).stdout
    assert "Promo [/promo]" in search and "[red]x[/red] :fire:" in search
    assert "Sapatos [promo]" in search
    info = run("info", "--store", store, env_extra=wide).stdout
    assert "  [b]: 2" in info and "  Sapatos [promo]: 1" in info


def test_shared_tables_are_literal_on_any_console():
    """The results and evaluation tables hold Text, so they stay literal even on a console
    that reads markup (the demo prints on the one it is given)."""
    from rich.console import Console

    from vitrine.display import results_table
    from vitrine.store.base import Match, StoredProduct
    from vitrine.train_display import evaluation_tables

    product = StoredProduct(product_id="p1 [/promo]", image="/x.jpg", category="[b]",
                            name="[red]x[/red] :fire:")
    m = {"precision": 1.0, "recall": 1.0, "map": 1.0}
    cls = {"acc": 1.0, "acc_ci95": [0.9, 1.0], "n": 1, "macro_f1": 1.0,
           "per_class": {"[b]": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}},
           "misclassified": [{"product_id": "p1", "name": "Promo [/promo]", "labelled": "[b]",
                              "predicted": "[i]", "probability": 0.5}]}
    report = {"k": 5, "protocol": "[dim]held out[/dim]", "queries": 1, "index": 1,
              "retrieval": {"pretrained": {**m, "per_category": {"[b]": m}}},
              "classification": cls}
    console = Console(record=True, width=200)
    console.print(results_table("Similar to [/promo]", [Match(product, 0.5)]))
    for item in evaluation_tables(report):
        console.print(item)
    text = console.export_text()
    for literal in ("Similar to [/promo]", "p1 [/promo]", "[red]x[/red] :fire:", "[b]",
                    "[dim]held out[/dim]", "p1 Promo [/promo]", "[i]"):
        assert literal in text


def test_index_and_results_say_names_with_control_characters_escaped():
    """A photo named with an escape sequence (or a line break), and a product name holding
    one, reached the terminal as they were: the skipped line and the results' title could
    recolour or rewrite the terminal, or read as two lines."""
    from rich.console import Console

    from vitrine.display import index_lines, results_table
    from vitrine.index_report import IndexReport

    report = IndexReport(skipped=[{"path": "cat/a\x1b[31mRED\x1b[0m.jpg",
                                   "reason": "not a recognised image"}],
                         duplicates=[["p\n1", "p2"]])
    lines = index_lines(report, 10_000, "st\r")
    assert lines[0].endswith("→ st\\r")
    assert "  skipped cat/a\\x1b[31mRED\\x1b[0m.jpg: not a recognised image" in lines
    assert "  p\\n1  ≈  p2" in lines
    # a group of thousands (a placeholder photo): the first ten named, the rest counted
    report.duplicates = [[f"shirt{k}" for k in range(2500)]]
    line = index_lines(report, 10_000, "st")[-1]
    assert line.startswith("  shirt0  ≈  shirt1") and "shirt9  ≈  … and 2,490 more" in line
    assert "shirt10" not in line
    console = Console(record=True, width=200, force_terminal=True)
    console.print(results_table("Similar to A (Promo\x1b[2J\nnew)", []))
    text = console.export_text()
    assert "Similar to A (Promo\\x1b[2J\\nnew)" in text
    # no results: said under the empty table, which alone read as a failure
    assert "No product to show: the store holds no other one (of the category asked " \
           "for)." in " ".join(text.split())  # (wrapped to the table's width)
    console = Console(record=True, width=200, force_terminal=True)
    console.print(results_table("Similar to q.jpg", [], itself_excluded=False))  # (search)
    assert "No product to show: the store holds none (of the category asked for)." in \
        " ".join(console.export_text().split())  # ("no other one": as if q.jpg were one)


def test_shop_text_in_tables_has_its_control_characters_escaped():
    """A supplier's product table whose names or categories hold ESC sequences cleared the
    operator's terminal, retitled it or planted a link (OSC 8) from `search`, `similar` and
    `evaluate` tables: their cells were the text as it was (helper-181)."""
    from rich.console import Console

    from vitrine.display import results_table
    from vitrine.store.base import Match, StoredProduct
    from vitrine.train_display import evaluation_tables

    evil = "evil\x1b]0;PWNED\x07cat\x1b[2J"
    product = StoredProduct(product_id="p\x1b[31m1", image="/x.jpg", category=evil,
                            name="n\x1b]8;;http://evil\x1b\\link\tx")
    m = {"precision": 1.0, "recall": 1.0, "map": 1.0}
    cls = {"acc": 1.0, "acc_ci95": [0.9, 1.0], "n": 1, "macro_f1": 1.0,
           "per_class": {evil: {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}},
           "misclassified": [{"product_id": "p1", "name": "a\x1b[2Jb", "labelled": evil,
                              "predicted": "x\x1b[31my", "probability": 0.5}]}
    report = {"k": 5, "protocol": "held out", "queries": 1, "index": 1,
              "retrieval": {"pretrained": {**m, "per_category": {evil: m}}},
              "classification": cls}
    console = Console(record=True, width=300, force_terminal=True)
    console.print(results_table("Similar to p1", [Match(product, 0.5)]))
    for item in evaluation_tables(report):
        console.print(item)
    shown = console.export_text()
    assert "\x1b" not in shown and "\x07" not in shown
    # line breaks and tabs (a spreadsheet's name over two lines) read as a space, as on the
    # pages, not as escapes (helper-185)
    product.name = "Relógio Dourado\r\nPulseira\tde couro"
    console = Console(record=True, width=300, force_terminal=True)
    console.print(results_table("Similar to p1", [Match(product, 0.5)]))
    assert "Relógio Dourado Pulseira de couro" in console.export_text()
    for literal in ("evil\\x1b]0;PWNED\\x07cat\\x1b[2J", "p\\x1b[31m1",
                    "n\\x1b]8;;http://evil\\x1b\\link x", "a\\x1b[2Jb", "x\\x1b[31my"):
        assert literal in shown, literal


def test_info_gives_each_category_one_line():
    """A product table's category may hold a line break (index keeps it): `info` printed it
    over two lines, the second read as a category of its own."""
    from vitrine.display import info_lines

    data = {"products": 3, "catalog_folder": "/shop\nnew", "categories": {"a\nb: 9": 2, "": 1}}
    assert info_lines(data, None, "st\r") == ["3 products in st\\r, indexed from /shop\\nnew",
                                              "  a\\nb: 9: 2", "  (none): 1"]
    # the model line says which vectors the store holds (only the JSON said "trained")
    from vitrine.manifest import ModelManifest

    prep = {"resize": "crop"}
    for kind, said in (("pooled", "pretrained embedding"),
                       ("trained:hidden+probs@0.8", "trained (hidden+probs@0.8) embedding")):
        line = info_lines(data, ModelManifest("mobilenet_v2", "ab" * 32, prep, 2440, kind),
                          "st")[-1]
        assert line == f"model: mobilenet_v2, 2440-d, weights {'ab' * 6}, resize crop, {said}"


def test_one_of_a_thing_is_said_in_the_singular():
    """"1 products in st", "1 photos are not listed", "1 products, 0 similar pairs written"
    (helper-222): each count of one says so."""
    from vitrine.display import index_lines, info_lines, migrate_lines
    from vitrine.index_report import IndexReport
    from vitrine.migrate import Migrated

    data = {"products": 1, "catalog_folder": "", "categories": {"a": 1}}
    assert info_lines(data, None, "st")[0] == "1 product in st"
    data["products"] = 2
    assert info_lines(data, None, "st")[0] == "2 products in st"
    for n, says in ((1, "1 photo is not listed"), (2, "2 photos are not listed")):
        report = IndexReport(unlisted=n, uploaded=n)
        lines = "\n".join(index_lines(report, 10_000, "st"))
        assert says in lines and f"as they are: {n} product{'s' * (n > 1)} added" in lines
        assert ("its file" in lines) == (n == 1) and ("their files" in lines) == (n > 1)
    done = Migrated(copied=1, not_in_source=[], removed=0)
    assert migrate_lines(done, "a", "b")[0] == "Copied 1 product from a to b."
