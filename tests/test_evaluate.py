"""Retrieval metrics against hand-computed cases."""

from __future__ import annotations

import math

import pytest

from vitrine.evaluate import average_precision_at_k, per_label, precision_at_k, recall_at_k

QUERIES = ["a", "b"]
RETRIEVED = [["a", "b", "a"], ["a", "a", "b"]]


def test_precision_at_k():
    # query a: hits at ranks 1,3 → 2/3; query b: hit at rank 3 → 1/3
    assert precision_at_k(QUERIES, RETRIEVED, 3) == pytest.approx(0.5)
    assert precision_at_k(QUERIES, RETRIEVED, 1) == pytest.approx(0.5)
    # fewer results than k count as misses
    assert precision_at_k(["a"], [["a"]], 2) == pytest.approx(0.5)
    assert math.isnan(precision_at_k([], [], 5))
    with pytest.raises(ValueError):
        precision_at_k(QUERIES, RETRIEVED, 0)


def test_recall_at_k():
    # a: 2 of 4 relevant; b: 1 of 2 relevant
    assert recall_at_k(QUERIES, RETRIEVED, 3, [4, 2]) == pytest.approx((0.5 + 0.5) / 2)


def test_average_precision_at_k():
    # a: hits at 1 and 3 → (1/1 + 2/3) / min(3, 2) = 0.8333; b: hit at 3 → (1/3) / 1
    expected = ((1 + 2 / 3) / 2 + (1 / 3) / 1) / 2
    assert average_precision_at_k(QUERIES, RETRIEVED, 3, [2, 1]) == pytest.approx(expected)
    assert average_precision_at_k(["a"], [["a", "a"]], 2, [2]) == pytest.approx(1.0)


def test_per_label():
    out = per_label(precision_at_k, QUERIES, RETRIEVED, 3)
    assert out == {"a": pytest.approx(2 / 3), "b": pytest.approx(1 / 3)}


def test_a_query_with_nothing_to_find_is_not_scored():
    """The only photo of its category has no relevant result: it is left out of the means
    (it scored 0 / 0 / 0 and pulled every mean down), and its category shows no score."""
    import numpy as np

    from vitrine.model_eval import retrieval_metrics

    vecs = np.eye(4, dtype=np.float32)[[0, 0, 1, 1, 2]] + 0.01
    labels = ["a", "a", "b", "b", "solo"]
    out = retrieval_metrics(vecs, labels, vecs, labels, 1, leave_one_out=True)
    assert (out["n_queries"], out["without_relevant"]) == (4, 1)
    assert (out["precision"], out["recall"], out["map"]) == (1.0, 1.0, 1.0)
    assert out["per_category"]["solo"] == {"precision": None, "recall": None, "map": None}
    assert out["per_category"]["a"]["recall"] == 1.0
    # the terminal table shows '—' for it and says why
    from rich.console import Console

    from vitrine.train_display import evaluation_tables

    console = Console(record=True, width=120)
    for part in evaluation_tables({"k": 1, "protocol": "leave-one-out", "queries": 5,
                                   "index": 5, "retrieval": {"pretrained": out}}):
        console.print(part)
    text = console.export_text()
    assert "— / — / —" in text and "leave-one-out (5 queries, 5 indexed)" in text
    assert "Not scored ('—'): 1 query with nothing of its category" in text
    # one query is one, not "1 queries" (helper-394)
    console = Console(record=True, width=120)
    for part in evaluation_tables({"k": 1, "protocol": "held out", "queries": 1,
                                   "index": 4, "retrieval": {"pretrained": out}}):
        console.print(part)
    assert "held out (1 query, 4 indexed)" in console.export_text()


def test_precision_counts_every_hit_among_the_top_k():
    """Two of the three results share the query's label: precision 2/3, not 1/3 or 1."""
    assert precision_at_k(["a"], [["a", "a", "b"]], 3) == pytest.approx(2 / 3)


def test_average_precision_is_normalised_by_k_when_more_items_are_relevant():
    """With 5 relevant items and k = 2, a hit at rank 1 only is AP 1/2 (the best possible
    score is 1, not 2/5): the mAP shown divides by min(k, relevant), not by relevant."""
    assert average_precision_at_k(["a"], [["a", "b"]], 2, [5]) == pytest.approx(0.5)


def test_per_label_passes_each_label_its_own_relevant_counts():
    """Per-category recall uses the relevant counts of that category's queries, not the
    first rows of the list: query 'a' found 1 of its 4 relevant items."""
    out = per_label(recall_at_k, ["b", "a"], [["x"], ["a"]], 1, relevant_counts=[1, 4])
    assert out == {"a": pytest.approx(0.25), "b": pytest.approx(0.0)}


def test_the_misclassified_table_keeps_its_photo_column_at_80_columns():
    """Categories named in 60 characters were kept whole: the table grew to 140 columns and,
    at 80 (a pipe), the product and probability columns were squeezed to nothing."""
    from rich.console import Console

    from vitrine.report import classification_report
    from vitrine.train_display import evaluation_tables

    long_a = "Relógio de pulso feminino com pulseira de aço inoxidável modelo A"
    long_b = long_a[:-1] + "B"
    cls = classification_report([long_a, "bolsa"], [long_b, "bolsa"], [long_a, long_b, "bolsa"])
    cls["misclassified"] = [{"product_id": "10105", "name": "Fastrack Watch", "labelled": long_a,
                             "predicted": long_b, "probability": 0.61}]
    retrieval = {"precision": 1.0, "recall": 1.0, "map": 1.0, "per_category": {}}

    def shown() -> str:
        console = Console(record=True, width=80)
        for part in evaluation_tables({"k": 1, "protocol": "the model's test split",
                                       "queries": 2, "index": 2,
                                       "retrieval": {"trained": retrieval},
                                       "classification": cls}):
            console.print(part)
        text = console.export_text()
        assert max(map(len, text.splitlines())) <= 80
        return text

    text = shown()
    assert "10105" in text and "61%" in text
    # the demo's categories stay whole, the product's name wraps
    cls["misclassified"] = [{"product_id": "10146", "probability": 0.49,
                             "name": "Rockport Men Sc Slip On Brown Casual Shoes",
                             "labelled": "x_sapato_social_masculino",
                             "predicted": "mocassim_masculino"}]
    text = shown()
    assert "x_sapato_social_masculino" in text and "mocassim_masculino" in text
    assert "10146" in text and "49%" in text


def test_a_photo_training_left_out_of_its_splits_is_one_the_model_saw():
    """Pre-split folders: training leaves out a val photo with a copy in train, and a test
    photo with a copy in train or val. `evaluate --model` took such a photo (a resized copy:
    other bytes) for one the model never saw, and queried with it, whenever its own
    duplicate rules did not join it to its copy again; then searched it."""
    from pathlib import Path

    from vitrine.catalog import Product
    from vitrine.model_eval import _seen_by_model, _sides
    from vitrine.split import Split

    ids = ["train/a.jpg", "val/a-small.jpg", "test/b-small.jpg", "test/c.jpg", "new.jpg"]
    products = [Product(pid, Path(pid), "x") for pid in ids]
    split = Split({"train/a.jpg": "train", "test/c.jpg": "test"},
                  contents={pid: f"sha-{pid}" for pid in ids[:4]},
                  left_out=["test/b-small.jpg"], left_out_val=["val/a-small.jpg"])
    shas = [f"sha-{pid}" for pid in ids]
    for known in (split, Split(split.assignment, left_out=split.left_out,
                               left_out_val=split.left_out_val)):  # (no sha256: an old model)
        seen = _seen_by_model(products, known, shas, groups=[])
        assert seen == {
            "train/a.jpg": "train", "val/a-small.jpg": "out", "test/b-small.jpg": "out",
            "test/c.jpg": "test", "new.jpg": None}
        # neither a query nor searched, as the training report leaves them (helper-154:
        # indexed, they counted as relevant items twice and moved R@k off the report's)
        queries, index = _sides(products, {p: w or "test" for p, w in seen.items()}, None)
        assert [ids[i] for i in queries] == ["test/c.jpg", "new.jpg"]
        assert [ids[i] for i in index] == ["train/a.jpg"]
    # a photo evaluate's own rules join to a trained one is left out the same way
    assert _seen_by_model(products, split, shas, groups=[["train/a.jpg", "new.jpg"]])[
        "new.jpg"] == "out"


def test_the_training_catalogue_keeps_the_models_split_whatever_its_test_fraction(tmp_path):
    """The catalogue's own protocol runs where it holds fewer than half the photos the model
    trained on and fewer of them than photos not the model's at all; the model's test photos
    are the model's: a test fraction of a half made them outnumber train + validation, and
    the training catalogue itself lost its split; a grown catalogue flipped to leave-one-out
    once its new photos outnumbered train + validation (helper-240)."""
    from pathlib import Path

    from vitrine.catalog import Product
    from vitrine.model_eval import _protocol
    from vitrine.split import Split

    sides = {"a": "train", "b": "train", "f": "train", "g": "val", "h": "val",
             "c": "test", "d": "test", "e": "test", "i": "test", "j": "test", "k": "test"}
    Split(sides, contents={pid: f"sha-{pid}" for pid in sides}).save(tmp_path / "split.json")

    def protocol(ids: list[str]) -> tuple[str, dict]:
        products = [Product(pid, Path(pid), "x") for pid in ids]
        return _protocol(products, None, tmp_path, [f"sha-{pid}" for pid in ids], [])

    line, got = protocol(list(sides))  # 6 test photos, 5 train + validation ones
    assert line == "the model's test split queries its train + validation photos"
    assert got == {pid: "test" if side == "test" else "train" for pid, side in sides.items()}
    grown = [*sides, *(f"new{i}" for i in range(8))]
    assert protocol(grown)[0].startswith("the model's test split and 8 photo(s) it never")
    # one photo it trained on among three of another shop's: the shop's own protocol
    line, got = protocol(["a", "o1", "o2", "o3"])
    assert line.startswith("leave-one-out: every photo queries all the others (1 photo the")
    assert got == {"a": "train", "o1": "both", "o2": "both", "o3": "both"}
    # three of the five (over half) among many others: the model's split
    assert protocol(["a", "b", "g", *(f"o{i}" for i in range(9))])[0] == (
        "9 photo(s) it never saw query its train + validation photos")


def test_a_byte_identical_copy_training_left_out_is_not_searched_either():
    """A test photo that is the same bytes as a train photo, left out by training: matched
    by content, it took the train photo's side and was searched beside it, so `evaluate
    --model` searched 41 photos where train's figures searched 40 (R@5 0.4848 against 0.500:
    helper-190). As many copies as training left out are left out here, the one it left out
    first, also when the catalogue's ids changed since."""
    from pathlib import Path

    from vitrine.catalog import Product
    from vitrine.model_eval import _seen_by_model
    from vitrine.split import Split

    ids = ["train/a.jpg", "test/copy.jpg", "test/b.jpg"]
    split = Split({"train/a.jpg": "train", "test/b.jpg": "test"},
                  contents={"train/a.jpg": "sha-a", "test/copy.jpg": "sha-a",
                            "test/b.jpg": "sha-b"}, left_out=["test/copy.jpg"])
    shas = ["sha-a", "sha-a", "sha-b"]
    for named in (ids, ["z/a.jpg", "a/copy.jpg", "z/b.jpg"]):  # (renamed since: by content)
        seen = _seen_by_model([Product(pid, Path(pid), "x") for pid in named], split, shas,
                              groups=[])
        # the other content's photo searched as the test photo it was; of the two copies
        # of one content, one trained on and one left out
        assert seen[named[2]] == "test", seen
        assert {seen[named[0]], seen[named[1]]} == {"train", "out"}, seen
    seen = _seen_by_model([Product(pid, Path(pid), "x") for pid in ids], split, shas, groups=[])
    assert seen == {"train/a.jpg": "train", "test/copy.jpg": "out", "test/b.jpg": "test"}
    # the copy deleted since (as the report named it): the photo it trained on is still
    # searched, not left out in its place (helper-191)
    seen = _seen_by_model([Product(pid, Path(pid), "x") for pid in (ids[0], ids[2])], split,
                          [shas[0], shas[2]], groups=[])
    assert seen == {"train/a.jpg": "train", "test/b.jpg": "test"}


def test_a_test_folder_evaluated_alone_never_queries_the_copy_training_left_out(tmp_path):
    """Pre-split folders whose test folder holds a copy of a train photo (the reference
    design's leak): training leaves the copy out of every split. `evaluate --model MODEL
    CATALOG/test` held no photo the model trained on, so it fell back to leave-one-out over
    every photo, and the copy queried and was classified (7 queries where the model's split
    has 6: helper-372)."""
    from pathlib import Path

    from vitrine.catalog import Product
    from vitrine.model_eval import _protocol, _sides
    from vitrine.split import Split

    sides = {"train/a.jpg": "train", "val/b.jpg": "val", "test/c.jpg": "test",
             "test/d.jpg": "test"}
    Split(sides, contents={**{pid: f"sha-{pid}" for pid in sides}, "test/a-small.jpg": "sha-s"},
          left_out=["test/a-small.jpg"]).save(tmp_path / "split.json")
    ids = ["c.jpg", "d.jpg", "a-small.jpg", "e.jpg"]  # the test folder as its own catalogue
    products = [Product(pid, Path(pid), "x") for pid in ids]
    shas = ["sha-test/c.jpg", "sha-test/d.jpg", "sha-s", "sha-e"]
    line, assignment = _protocol(products, None, tmp_path, shas, [])
    queries, index = _sides(products, assignment, None)
    assert [ids[i] for i in queries] == ["c.jpg", "d.jpg", "e.jpg"], line
    assert [ids[i] for i in index] == ids  # (searched, as another catalogue's photos)
    assert line.startswith("leave-one-out") and "do not query" in line
    # without such a copy, the test folder alone is leave-one-out over all of it, as before
    line, assignment = _protocol(products[:2] + products[3:], None, tmp_path,
                                 shas[:2] + shas[3:], [])
    assert (line, assignment) == ("leave-one-out: every photo queries all the others", None)


@pytest.fixture(scope="module")
def tiny_model(demo_catalog, weights_path, tmp_path_factory):
    """A model trained in-process on 3 categories × 8 demo photos (2 + 1 epochs)."""
    import shutil

    from vitrine.config import Settings
    from vitrine.train import train_catalog

    root = tmp_path_factory.mktemp("tiny")
    for category in ("mocassim_masculino", "relogio_feminino", "x_bolsa_feminina"):
        (root / "base" / category).mkdir(parents=True)
        for photo in sorted((demo_catalog / category).glob("*.jpg"))[:8]:
            shutil.copyfile(photo, root / "base" / category / photo.name)
    settings = Settings(weights=weights_path, train_phase1_epochs=2, train_phase2_epochs=1,
                        train_val_fraction=0.2, train_test_fraction=0.2, train_refit=False)
    train_catalog(root / "base", root / "model", settings, show_progress=False)
    return root / "base", root / "model", settings


def test_renamed_resaved_copies_of_training_photos_are_no_queries(tiny_model, tmp_path):
    """Every photo of the training catalogue resized to 80 %, saved again as JPEG and renamed:
    no sha256 nor product id matched, so `evaluate --model` ran leave-one-out over them all,
    the copies of its train and validation photos as queries it never saw (classification
    n=36, 0.904-1.000: helper-231). The model folder keeps their pHashes and thumbnails, and
    the duplicate rules find the copies: searched in place of the photos, never queries,
    and counted; copies of nothing it trained on and nothing else query."""
    import json
    import shutil

    from PIL import Image

    from vitrine.errors import CatalogError
    from vitrine.model_eval import evaluate_catalog

    base, model, settings = tiny_model
    assignment = json.loads((model / "split.json").read_text())["assignment"]
    copies, trained_only = tmp_path / "copies", tmp_path / "trained-only"
    for pid, side in assignment.items():
        with Image.open(base / pid) as img:
            small = img.convert("RGB").resize((img.width * 8 // 10, img.height * 8 // 10))
        for folder in (copies, trained_only) if side != "test" else (copies,):
            target = folder / pid.split("/")[0] / f"sku_{pid.split('/')[1]}"
            target.parent.mkdir(parents=True, exist_ok=True)
            small.save(target, "JPEG", quality=85)
    trained = sum(side != "test" for side in assignment.values())
    tested = len(assignment) - trained
    assert trained and tested
    report = evaluate_catalog(copies, settings, model_dir=model, show_progress=False)
    assert report["queries"] == tested and report["index"] == trained
    assert report["classification"]["n"] == tested
    assert report["copies_of_trained_photos"] == {"searched": trained, "left_out": 0}
    assert (f"({trained} of them found by the duplicate rules as copies of those photos "
            "under other names and bytes)") in report["protocol"]
    # copies of nothing but photos it trained on: nothing to query, said
    with pytest.raises(CatalogError, match="the model trained on every one of these photos"):
        evaluate_catalog(trained_only, settings, model_dir=model, show_progress=False)
    # a model folder from before the fingerprints were kept still evaluates, and says
    # that such copies cannot be told apart
    older = tmp_path / "older"
    shutil.copytree(model, older)
    (older / "split_fingerprints.npz").unlink()
    report = evaluate_catalog(copies, settings, model_dir=older, show_progress=False)
    assert report["queries"] == len(assignment)
    assert report["protocol"].startswith("leave-one-out: every photo queries all the others (")
    assert "split_fingerprints.npz" in report["protocol"]


def test_fingerprints_keep_what_the_model_trained_on(tmp_path):
    """split_fingerprints.npz holds the train and validation photos (and the copies training
    left out), and reads back as the duplicate rules compare them; a folder without one (an
    older model) reads None, a damaged one is one sentence."""
    from vitrine.errors import CatalogError
    from vitrine.split import FINGERPRINTS, Split, load_fingerprints, save_fingerprints

    split = Split({"a": "train", "b": "val", "c": "test", "é\udcff": "train"},
                  left_out=["d"])
    phash = {pid: f"{i:016x}" for i, pid in enumerate(["a", "b", "c", "d", "é\udcff"])}
    thumb = {pid: bytes([i]) * 768 for i, pid in enumerate(phash)}
    assert load_fingerprints(tmp_path, split) is None
    save_fingerprints(tmp_path, split, phash, thumb)
    phashes, thumbs = load_fingerprints(tmp_path, split)
    assert sorted(zip(phashes, thumbs, strict=True)) == sorted(
        (phash[p], thumb[p]) for p in ("a", "b", "d", "é\udcff"))
    whole = (tmp_path / FINGERPRINTS).read_bytes()
    for damaged in (b"not a zip", whole[:len(whole) // 2], whole[:-30]):
        (tmp_path / FINGERPRINTS).write_bytes(damaged)
        with pytest.raises(CatalogError, match="not a file written by `vitrine train`"):
            load_fingerprints(tmp_path, split)


def test_copies_in_the_test_split_count_once(demo_catalog, weights_path, tmp_path):
    """A test split holding copies of one photo (the same file twice, a half-size PNG of it)
    counted each as a test photo, the accuracy's n and interval as if they were independent
    (helper-231): each duplicate group counts once, in training's report and in `evaluate`
    alike."""
    import shutil

    from PIL import Image

    from vitrine.config import Settings
    from vitrine.model_eval import evaluate_catalog
    from vitrine.train import train_catalog

    catalog = tmp_path / "shop"
    for category in ("mocassim_masculino", "relogio_feminino", "x_bolsa_feminina"):
        photos = sorted((demo_catalog / category).glob("*.jpg"))[:10]
        for side, chosen in (("train", photos[:6]), ("val", photos[6:8]),
                             ("test", photos[8:10])):
            (catalog / side / category).mkdir(parents=True)
            for photo in chosen:
                shutil.copyfile(photo, catalog / side / category / photo.name)
    first = sorted((catalog / "test" / "relogio_feminino").glob("*.jpg"))[0]
    shutil.copyfile(first, first.with_name("copia.jpg"))
    with Image.open(first) as img:
        img.convert("RGB").resize((img.width // 2, img.height // 2)).save(
            first.with_name("metade.png"))
    settings = Settings(weights=weights_path, train_phase1_epochs=2, train_phase2_epochs=1,
                        train_refit=False)
    summary = train_catalog(catalog, tmp_path / "model", settings, show_progress=False)
    test = summary["test"]
    assert (test["n"], test["copies_counted_once"]) == (6, 2)
    assert sum(v["support"] for v in test["per_class"].values()) == 6
    assert test["retrieval"]["layers"][settings.train_embedding]["n_queries"] == 6
    report = evaluate_catalog(catalog, settings, model_dir=tmp_path / "model",
                              show_progress=False)
    assert (report["queries"], report["copies_among_queries"]) == (6, 2)
    assert report["classification"]["n"] == 6
    assert report["classification"]["acc"] == test["acc"]
    assert "2 copies of them counted once" in (tmp_path / "model" / "report.md").read_text()
    # the table's test figures too (they counted every copy: 60 % in the table, 85.7 % in
    # the line below it: helper-237)
    tuned = summary["phases"]["fine_tuning"]["metrics"]["test"]
    assert (tuned["n"], tuned["acc"]) == (6, round(test["acc"], 4))


def test_a_few_training_photos_in_another_catalogue_do_not_make_it_the_models_split(
        tiny_model, demo_catalog, tmp_path, monkeypatch):
    """Another shop's catalogue holding one copy of a photo the model trained on: the
    model's split made every other photo query that one photo alone (17 queries, 1
    searched, P@5 0.2: helper-237). Where it holds fewer photos the model trained on than
    photos it never saw, the catalogue's own protocol runs, those photos searched but never
    querying. A damaged fingerprint file is said before any photo is embedded."""
    import json
    import shutil

    from PIL import Image

    from vitrine import model_eval
    from vitrine.errors import CatalogError
    from vitrine.model_eval import evaluate_catalog

    base, model, settings = tiny_model
    shop = tmp_path / "shop"
    for category in ("mocassim_masculino", "relogio_feminino", "x_bolsa_feminina"):
        (shop / category).mkdir(parents=True)
        for photo in sorted((demo_catalog / category).glob("*.jpg"))[8:14]:
            shutil.copyfile(photo, shop / category / photo.name)
    assignment = json.loads((model / "split.json").read_text())["assignment"]
    trained = next(pid for pid, side in assignment.items() if side == "train")
    with Image.open(base / trained) as img:
        img.convert("RGB").resize((img.width * 9 // 10, img.height * 9 // 10)).save(
            shop / trained.split("/")[0] / "fornecedor.jpg", "JPEG", quality=90)
    report = evaluate_catalog(shop, settings, model_dir=model, show_progress=False)
    unseen = sum(1 for _ in shop.rglob("*.jpg")) - 1
    assert unseen >= 12 and report["duplicate_groups"] == 0
    assert (report["queries"], report["index"]) == (unseen, unseen + 1), report["protocol"]
    assert report["protocol"] == (
        "leave-one-out: every photo queries all the others (1 photo the model trained on, "
        "or copies of them, are searched but do not query)")
    assert report["classification"]["n"] == unseen
    damaged = tmp_path / "damaged"
    shutil.copytree(model, damaged)
    fingerprints = damaged / "split_fingerprints.npz"
    fingerprints.write_bytes(fingerprints.read_bytes()[:100])
    monkeypatch.setattr(model_eval, "_embed", lambda *a, **k: pytest.fail("embedded first"))
    with pytest.raises(CatalogError, match="is not a file written by `vitrine train`"):
        evaluate_catalog(shop, settings, model_dir=damaged, show_progress=False)


def test_a_confident_mistake_never_reads_certain():
    """A wrong guess of 0.9998 was "100.0%" in report.md and "100%" in `vitrine evaluate`'s
    table, while misclassified.png and `vitrine train`'s line said 99.9 %; one of 0.99996
    was stored as 1.0, "100%" everywhere."""
    from pathlib import Path

    import numpy as np
    from rich.console import Console

    from vitrine.catalog import Product
    from vitrine.display import percent
    from vitrine.report import _misclassified_lines, classification_report, misclassified
    from vitrine.train_display import evaluation_tables

    products = [Product("p1", Path("/x/p1.jpg"), "a"), Product("p2", Path("/x/p2.jpg"), "a")]
    rows = misclassified(products, [0, 0], np.array([[0.0002, 0.9998], [0.00004, 0.99996]]),
                         ["a", "b"])
    assert all(r["probability"] < 1 for r in rows)
    report = "\n".join(_misclassified_lines(rows))
    assert "100.0%" not in report and report.count("99.9%") == 2
    assert [percent(r["probability"]) for r in rows] == ["99.9%", "99.9%"]  # the figure's
    cls = classification_report(["a", "a"], ["b", "b"], ["a", "b"])
    cls["misclassified"] = rows
    console = Console(record=True, width=100)
    retrieval = {"precision": 1.0, "recall": 1.0, "map": 1.0, "per_category": {}}
    for part in evaluation_tables({"k": 1, "protocol": "the model's test split", "queries": 2,
                                   "index": 2, "retrieval": {"trained": retrieval},
                                   "classification": cls}):
        console.print(part)
    text = console.export_text()
    assert "100%" not in text and text.count("99.9%") == 2


def test_a_photo_without_a_category_is_named_as_left_out(demo_catalog, settings, tmp_path):
    """A photo at the catalogue's top (no category folder, no table category) was dropped
    from the evaluation without a word, where `train` names it (uncategorised_photos)."""
    import shutil

    from rich.console import Console

    from vitrine.model_eval import evaluate_catalog
    from vitrine.train_display import evaluation_tables

    photos = sorted(demo_catalog.glob("relogio_feminino/*.jpg"))[:2] + \
        sorted(demo_catalog.glob("x_bolsa_feminina/*.jpg"))[:2]
    for photo in photos:
        (tmp_path / photo.parent.name).mkdir(exist_ok=True)
        shutil.copyfile(photo, tmp_path / photo.parent.name / photo.name)
    shutil.copyfile(photos[0], tmp_path / "top.jpg")
    report = evaluate_catalog(tmp_path, settings, show_progress=False)
    assert report["queries"] == 4
    assert [p["product_id"] for p in report["uncategorised_photos"]] == ["top.jpg"]
    console = Console(record=True, width=200)
    for item in evaluation_tables(report):
        console.print(item)
    text = console.export_text()
    assert "1 photo(s) have no category and were left out of the evaluation:" in text
    assert "  top.jpg: not in a category folder" in text


def test_a_fraction_under_one_never_reads_one():
    """2999 of 3000 test photos right: report.md's accuracy line said 99.9 %, but the
    terminal said accuracy 1.000 (and a P@5 of 0.9997 read 1.000, the class's recall and F1
    1.000 in both tables): a mistake read as none."""
    from rich.console import Console

    from vitrine.report import classification_report, prf_cells
    from vitrine.train_display import evaluation_tables

    cls = classification_report(["a"] * 3000, ["a"] * 2999 + ["b"], ["a", "b"])
    assert prf_cells(cls["per_class"]["a"]) == ["1.000", "0.999", "0.999", "3000"]
    retrieval = {"precision": 0.99967, "recall": 0.5, "map": 0.99967, "per_category": {}}
    console = Console(record=True, width=120)
    for part in evaluation_tables({"k": 5, "protocol": "leave-one-out", "queries": 3000,
                                   "index": 3000, "retrieval": {"pretrained": retrieval},
                                   "classification": cls}):
        console.print(part)
    text = console.export_text()
    assert "Classification accuracy 0.999 (95 % CI 0.998–0.999, n=3000), macro F1 0.999." \
        in text
    assert "0.999 / 0.500 / 0.999" in text
