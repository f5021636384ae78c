"""Duplicate-aware train/validation/test splits."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from vitrine.catalog import Product
from vitrine.config import Settings
from vitrine.errors import CatalogError
from vitrine.split import (
    Split,
    find_split_folders,
    group_split,
    make_split,
    read_catalogue,
)


def test_groups_stay_in_one_split():
    labels = ["a"] * 40 + ["b"] * 30
    groups = [[0, 1, 2], [5, 39], [40, 41, 69], [10, 45]]  # the last crosses labels
    for seed in range(20):
        names = group_split(labels, groups, 0.15, 0.15, seed)
        for group in groups:
            assert len({names[i] for i in group}) == 1, (seed, group)
        # the group across labels trains: tested, its copies were mistakes by construction
        # (seed 2 put two such groups in test: helper-190)
        assert names[10] == names[45] == "train", seed


def test_stratified_seeded_and_every_split_has_each_label():
    labels = ["a"] * 40 + ["b"] * 20 + ["c"] * 3
    names = group_split(labels, [], 0.15, 0.15, seed=3)
    assert names == group_split(labels, [], 0.15, 0.15, seed=3)
    assert names != group_split(labels, [], 0.15, 0.15, seed=4)
    counts = Counter(zip(labels, names, strict=True))
    assert counts[("a", "test")] == 6 and counts[("a", "val")] == 6
    assert counts[("b", "test")] == 3 and counts[("b", "val")] == 3
    assert counts[("c", "test")] == counts[("c", "val")] == counts[("c", "train")] == 1


def test_bad_fractions():
    with pytest.raises(CatalogError):
        group_split(["a"], [], 0.6, 0.5, 0)


def _products(n: int) -> list[Product]:
    return [Product(f"p{i:02d}", Path(f"/x/{i}.jpg"), "ab"[i % 2]) for i in range(n)]


def test_make_split_reports_crossing_groups_of_a_given_split(tmp_path):
    products = _products(20)
    given = {p.product_id: ("test" if i < 4 else "train") for i, p in enumerate(products)}
    groups = [["p00", "p10"], ["p11", "p12"]]
    split = make_split(products, groups, Settings(), given)
    assert split.source == "folders"
    assert split.crossing() == [["p00", "p10"]]
    assert split.counts()["val"] > 0  # carved out of the training folder
    assert split.assignment["p11"] == split.assignment["p12"]
    # the test photo whose copy the model trains on is tested no more (helper-127: train's
    # test figures counted it, evaluate left it out); its copy trains
    assert split.left_out == ["p00"] and "p00" not in split.assignment
    assert split.assignment["p10"] in ("train", "val") and split.counts()["test"] == 3
    split.save(tmp_path / "split.json")
    again = Split.load(tmp_path / "split.json")
    assert again.assignment == split.assignment and again.crossing() == split.crossing()
    assert again.left_out == ["p00"]


def test_a_val_photo_with_a_copy_in_train_is_validated_no_more(tmp_path):
    """Pre-split folders: a val photo whose copy the model trains on scored that photo as
    unseen in validation (the figures that pick the best epoch); it is left out of every
    split and named. A val photo copied only in test stays, and its test copy goes."""
    products = _products(12)
    given = {p.product_id: ("train", "val", "test")[i % 3] for i, p in enumerate(products)}
    groups = [["p00", "p01"], ["p04", "p05"], ["p06", "p08"], ["p09", "p10"]]
    split = make_split(products, groups, Settings(), given)
    # p01 (val) has p00 (train); p10 (val) has p09 (train); p05 (test) has p04 (val);
    # p08 (test) has p06 (train)
    assert split.left_out_val == ["p01", "p10"] and split.left_out == ["p05", "p08"]
    assert not {"p01", "p10", "p05", "p08"} & set(split.assignment)
    assert split.assignment["p04"] == "val" and split.assignment["p00"] == "train"
    assert split.counts() == {"train": 4, "val": 2, "test": 2}
    split.save(tmp_path / "split.json")
    again = Split.load(tmp_path / "split.json")
    assert again.left_out_val == ["p01", "p10"] and again.assignment == split.assignment


def test_presplit_folders_portuguese_names(tmp_path, demo_catalog):
    import shutil

    for split, n in (("treino", 3), ("validacao", 1), ("teste", 1)):
        for cat in ("relogio_feminino", "salto_feminino"):
            src = sorted((demo_catalog / cat).glob("*.jpg"))
            (tmp_path / split / cat).mkdir(parents=True)
            for path in src[:n] if split == "treino" else src[3:3 + n]:
                shutil.copyfile(path, tmp_path / split / cat / path.name)
    assert set(find_split_folders(tmp_path)) == {"train", "val", "test"}
    products, given = read_catalogue(tmp_path)[:2]
    assert len(products) == 10
    assert Counter(given.values()) == {"train": 6, "val": 2, "test": 2}
    assert {p.category for p in products} == {"relogio_feminino", "salto_feminino"}
    assert find_split_folders(tmp_path / "treino") is None
    # a folder without photos beside the splits changes nothing (an empty one flipped the
    # catalogue to plain, its categories "treino" and "teste"); a folder of photos is said
    # in one sentence, for every command alike (read as plain, the store's products were
    # recategorised without a word)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("x")
    # an empty split's folder holding a table of no rows (an exporter's empty test split)
    # is as missing, not the "lists no products" refusal of a catalogue (helper-185)
    teste = tmp_path / "teste"
    shutil.move(teste, tmp_path.parent / "teste-kept")
    teste.mkdir()
    (teste / "products.csv").write_text("id,image,name\n")
    assert Counter(read_catalogue(tmp_path)[1].values()) == {"train": 6, "val": 2}
    shutil.rmtree(teste)
    shutil.move(tmp_path.parent / "teste-kept", teste)
    (teste / "products.csv").write_text("id,image,name\n")  # but beside its photos: an
    # emptied sheet, every name and price of the split lost (helper-191)
    with pytest.raises(CatalogError, match="teste/products.csv lists no products"):
        read_catalogue(tmp_path)
    (teste / "products.csv").unlink()
    (tmp_path / "__pycache__").mkdir()
    assert set(find_split_folders(tmp_path)) == {"train", "val", "test"}
    (tmp_path / "cars").mkdir()
    shutil.copyfile(sorted((demo_catalog / "relogio_feminino").glob("*.jpg"))[0],
                    tmp_path / "cars" / "a.jpg")
    with pytest.raises(CatalogError, match=r"is split in folders \(treino, validacao, "
                                           r"teste\) but other folders beside them hold "
                                           r"photos too \(cars\)"):
        read_catalogue(tmp_path)
    shutil.rmtree(tmp_path / "cars")
    # a Mac's decomposed "validação" is the validation folder too
    import unicodedata

    (tmp_path / "validacao").rename(tmp_path / unicodedata.normalize("NFD", "validação"))
    assert set(find_split_folders(tmp_path)) == {"train", "val", "test"}
    # its table's composed ids: the id is of one form, which either form typed finds (a
    # decomposed folder name before a composed id was neither)
    mac = tmp_path / unicodedata.normalize("NFD", "validação")
    (mac / "products.csv").write_text("id,imagem\nrelógio-1,relogio_feminino/"
                                      + next((mac / "relogio_feminino").iterdir()).name + "\n")
    ids = {p.product_id for p in read_catalogue(tmp_path)[0]}
    assert "validação/relógio-1" in ids
    assert all(unicodedata.is_normalized("NFC", i) or unicodedata.is_normalized("NFD", i)
               for i in ids)
    # an id of one form already (a photo's path under it) is as it was: stores keep their ids
    photo = next((mac / "salto_feminino").iterdir()).name
    assert unicodedata.normalize("NFD", f"validação/salto_feminino/{photo}") in ids
    (mac / "products.csv").unlink()
    mac.rename(tmp_path / "validacao")
    # a product table at the top was not read (each split folder is a catalogue of its own):
    # its categories silently lost, while `vitrine index` of the folder used them. It is
    # the whole catalogue's; the folders under each split's are the others' categories
    photo = sorted((tmp_path / "treino" / "relogio_feminino").iterdir())[0]
    (tmp_path / "solta.jpg").write_bytes(photo.read_bytes())  # in no split: left out
    (tmp_path / "Produtos.CSV").write_text(
        f"id,imagem,categoria,nome\nr1,treino/relogio_feminino/{photo.name},relógio,Relógio\n")
    products, given = read_catalogue(tmp_path)[:2]
    assert len(products) == 10 and given["r1"] == "train"
    by_id = {p.product_id: p for p in products}
    assert (by_id["r1"].category, by_id["r1"].name) == ("relógio", "Relógio")
    assert by_id["r1"].folder_category == "relogio_feminino"
    assert Counter(given.values()) == {"train": 6, "val": 2, "test": 2}
    assert {p.category for p in products} == {"relógio", "relogio_feminino", "salto_feminino"}
    assert all(p.product_id.split("/")[0] in ("r1", "treino", "validacao", "teste")
               for p in products)
    (tmp_path / "teste" / "products.csv").write_text("image,category\n")
    with pytest.raises(CatalogError, match="keep one table at the top or one in each split"):
        read_catalogue(tmp_path)


def test_train_and_val_folders_without_test_carve_the_test_split(tmp_path):
    """``train`` + ``val`` folders are a given split (not two categories named so); the test
    split is carved out of training, stratified."""
    for split in ("train", "val"):
        (tmp_path / split / "bolsa").mkdir(parents=True)
    assert set(find_split_folders(tmp_path)) == {"train", "val"}
    assert find_split_folders(tmp_path / "train") is None
    products = _products(30)
    given = {p.product_id: ("val" if i < 6 else "train") for i, p in enumerate(products)}
    split = make_split(products, [], Settings(), given)
    counts = split.counts()
    assert counts["val"] == 6 and counts["test"] > 0 and counts["train"] + counts["test"] == 24
    assert all(given[pid] == "train" for pid in split.ids("test"))
    assert {products[int(pid[1:])].category for pid in split.ids("test")} == {"a", "b"}


def test_large_fractions_leave_each_category_a_training_photo():
    labels = ["a"] * 3 + ["b"] * 20
    names = group_split(labels, [], 0.6, 0.3, seed=0)
    assert [names[i] for i in range(3)].count("train") == 1  # all three left training before
    assert sorted(names[:3]) == ["test", "train", "val"]
    assert names[3:].count("train") >= 1


def test_a_small_category_of_duplicate_pairs_keeps_a_training_photo():
    """A pair fits a target of one plus one, so pairs used to fill validation and test and
    leave a three- or four-photo category nothing to train on (it vanished from the
    classes)."""
    cases = [(["s"] * 3 + ["b"] * 20, [[0, 1]]), (["s"] * 4 + ["b"] * 20, [[0, 1], [2, 3]]),
             (["s"] * 5 + ["b"] * 20, [[0, 1], [2, 3]])]
    for labels, groups in cases:
        for seed in range(30):
            names = group_split(labels, groups, 0.15, 0.15, seed)
            small = [n for n, label in zip(names, labels, strict=True) if label == "s"]
            assert "train" in small, (labels.count("s"), seed, small)
            assert small.count("train") < len(small)  # some still held out
            for group in groups:
                assert len({names[i] for i in group}) == 1


def test_a_category_of_one_photo_and_its_copy_keeps_it_for_training():
    """A category whose photos are all copies of one (one duplicate group) is one unit:
    at a fraction of 0.3 the unit fitted a target of one plus one, went to test (or
    validation) whole, and the category was left out of the model's classes (exit 0)."""
    for val, test in ((0.15, 0.3), (0.3, 0.15), (0.3, 0.3), (0.1, 0.5)):
        for labels, group in ((["s"] * 2 + ["b"] * 20, [0, 1]),
                              (["s"] * 3 + ["b"] * 20, [0, 1, 2])):
            for seed in range(10):
                names = group_split(labels, [group], val, test, seed)
                assert {names[i] for i in group} == {"train"}, (val, test, seed, names)


def test_fractions_outside_zero_to_one_are_refused():
    """A validation fraction of 1 (nothing left to train) or a negative fraction is an
    error, not an odd split."""
    with pytest.raises(CatalogError):
        group_split(["a"] * 10, [], 1.0, 0.0, 0)
    with pytest.raises(CatalogError):
        group_split(["a"] * 10, [], 0.2, -0.1, 0)
    with pytest.raises(CatalogError):
        group_split(["a"] * 10, [], -0.1, 0.2, 0)


def test_split_sizes_are_rounded_not_truncated():
    """20 photos at 18 % is 3.6 photos: the split holds 4 (rounded), not 3."""
    names = group_split(["a"] * 20, [], 0.18, 0.18, 0)
    assert Counter(names) == {"test": 4, "val": 4, "train": 12}


def test_a_two_photo_category_stays_in_training():
    """A category of two photos gets no forced validation or test photo (only one of three
    or more does): at 15 % both photos train."""
    names = group_split(["a"] * 2 + ["b"] * 20, [], 0.15, 0.15, 0)
    assert names[:2] == ["train", "train"]


def test_train_with_empty_val_and_test_folders_carves_both(tmp_path):
    """An empty split folder counts as missing: with train alone left, validation and test
    are both carved out of it (only validation was: no test split, without a word)."""
    products = _products(30)
    given = {p.product_id: "train" for p in products}
    split = make_split(products, [], Settings(), given)
    assert set(split.assignment.values()) == {"train", "val", "test"}


def test_a_lone_train_folder_is_not_a_split_catalogue(tmp_path):
    """A catalogue whose only sub-folder is named 'train' is a category named so, not a
    catalogue split in folders (that needs a val or test folder too)."""
    (tmp_path / "train" / "bolsa").mkdir(parents=True)
    assert find_split_folders(tmp_path) is None


def test_validation_carved_from_training_keeps_its_share_of_the_whole():
    """With a given test folder (10 of 100) and no validation folder, validation takes
    15 % of the whole catalogue out of training: 0.15 / 0.85 of each category's 45 training
    photos rounds to 8, so 16 in all (15 % of the 90 would be 7 each, 14)."""
    products = _products(100)
    given = {p.product_id: ("test" if i < 10 else "train") for i, p in enumerate(products)}
    split = make_split(products, [], Settings(), given)
    assert split.counts() == {"train": 74, "val": 16, "test": 10}


def test_a_given_photo_left_out_of_the_products_is_in_no_split():
    """A photo of the folders that could not be read (left out of the products) is not
    assigned to any split."""
    products = _products(10)
    given = {p.product_id: ("train", "val", "test")[i % 3] for i, p in enumerate(products)}
    split = make_split(products[:9], [], Settings(), given)
    assert len(split.assignment) == 9 and "p09" not in split.assignment
    assert split.assignment == {pid: given[pid] for pid in list(given)[:9]}


def test_a_split_file_reads_the_same_under_any_locale(tmp_path):
    """split.json is UTF-8 whatever the locale: a model trained under UTF-8 and evaluated by
    a program under LC_ALL=C (Python then reads files as ASCII) failed to read its split."""
    import os
    import subprocess
    import sys

    path = tmp_path / "split.json"
    Split({"relógio/時計.jpg": "train"}, groups=[["relógio/時計.jpg"]]).save(path)
    code = ("import sys\nfrom vitrine.split import Split\n"
            "s = Split.load(sys.argv[1])\ns.save(sys.argv[1])\n"
            "assert Split.load(sys.argv[1]).assignment == {'rel\\u00f3gio/\\u6642\\u8a08.jpg':"
            " 'train'}\n")
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    proc = subprocess.run([sys.executable, "-c", code, str(path)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert Split.load(path).groups == [["relógio/時計.jpg"]]


def test_a_file_name_that_is_not_utf8_is_saved_and_a_failed_save_keeps_the_last(tmp_path):
    """`train` (and `demo`, its demo.json) ended in a traceback after all their work on a
    catalogue with a photo named in Latin-1 bytes ("caf\\xe9.jpg"): its name cannot be
    written as UTF-8 text. It is saved as a \\u escape; and a save that fails leaves the last
    file whole (demo.json was left empty)."""
    from vitrine.jsonfile import write_json

    latin = b"relogio/caf\xe9.jpg".decode("utf-8", "surrogateescape")
    path = tmp_path / "split.json"
    Split({latin: "train", "relógio/b.jpg": "test"}, groups=[[latin, "relógio/b.jpg"]]).save(
        path)
    # (that name alone escaped: every other string was too, "rel\\u00f3gio": helper-220)
    assert "\\udce9" in path.read_text(encoding="utf-8")
    assert "relógio/b.jpg" in path.read_text(encoding="utf-8")
    assert "\\u00f3" not in path.read_text(encoding="utf-8")
    assert Split.load(path).assignment == {latin: "train", "relógio/b.jpg": "test"}
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_json(path, {"assignment": {"a.jpg": object()}})  # (fails while writing)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [
        "split.json"]


def test_a_json_save_keeps_the_file_mode_and_sweeps_a_killed_runs_part(tmp_path):
    """A saved JSON file (demo.json, split.json) took the umask's mode each time, undoing a
    chmod that shared it; and the part file of a run killed outright stayed for good."""
    import json
    import os
    import time

    from vitrine.files import STALE_PART_S
    from vitrine.jsonfile import write_json

    path = tmp_path / "demo.json"
    write_json(path, {"a": 1})
    path.chmod(0o640)
    old = time.time() - STALE_PART_S - 60
    killed = tmp_path / ".demo.json.4242-0badc0de.part"
    running = tmp_path / ".demo.json.4243-00000001.part"  # another run writing it now
    for part in (killed, running):
        part.write_text("{")
    os.utime(killed, (old, old))
    write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == [running.name, "demo.json"]


def test_a_damaged_split_file_is_one_sentence(tmp_path):
    """A split.json cut short or edited by hand ended `evaluate --model` in a traceback
    (JSONDecodeError, KeyError: 'source')."""
    path = tmp_path / "split.json"
    Split({"a.jpg": "train", "b.jpg": "test"}).save(path)
    whole = path.read_text()
    for text in (whole[:len(whole) // 2], '{"assignment": 5}', "[]",
                 whole.replace('"train"', "7"), ""):
        path.write_text(text)
        with pytest.raises(CatalogError, match=r"split.json is not a split written by "
                                               r"`vitrine train` \(.*\); train again"):
            Split.load(path)


def test_train_and_evaluate_read_what_index_reads_beside_an_upload_folder(tmp_path,
                                                                          demo_catalog):
    """A VITRINE_UPLOAD_DIR inside the catalogue: index left the server's photos out, but
    train and evaluate refused a split catalogue with it (a folder of photos beside the
    splits) and trained a plain one on them as a category of their own."""
    import hashlib
    import shutil

    from vitrine.split import read_catalogue

    photos = sorted((demo_catalog / "relogio_feminino").glob("*.jpg"))[:3]
    uploads = tmp_path / "api-photos"
    uploads.mkdir(parents=True)
    data = photos[2].read_bytes()
    (uploads / (hashlib.sha256(data).hexdigest() + ".jpg")).write_bytes(data)
    for split, photo in zip(("train", "test"), photos, strict=False):
        (tmp_path / split / "relogio").mkdir(parents=True)
        shutil.copyfile(photo, tmp_path / split / "relogio" / photo.name)
    with pytest.raises(CatalogError, match=r"other folders beside them hold photos too "
                                           r"\(api-photos\)"):
        read_catalogue(tmp_path)
    products, given, outside = read_catalogue(tmp_path, uploads)
    assert sorted(given.values()) == ["test", "train"] and outside == []
    assert {p.category for p in products} == {"relogio"}
    for split in ("train", "test"):  # a plain catalogue: not a category "api-photos"
        shutil.copytree(tmp_path / split / "relogio", tmp_path / "relogio", dirs_exist_ok=True)
        shutil.rmtree(tmp_path / split)
    products, given, _ = read_catalogue(tmp_path, uploads)
    assert given is None and [p.category for p in products] == ["relogio", "relogio"]
    # a row of the shop's product table naming one of them is the shop's: kept
    upload = next(uploads.iterdir())
    (tmp_path / "products.csv").write_text(f"id,image,category\nsku9,api-photos/{upload.name},"
                                           "relogio\n")
    products, _, _ = read_catalogue(tmp_path, uploads)
    assert sorted(p.product_id for p in products)[-1] == "sku9" and len(products) == 3


def test_a_split_catalogue_given_by_a_relative_path_names_its_loose_photos(tmp_path,
                                                                          demo_catalog,
                                                                          monkeypatch):
    """`vitrine train cat` (relative) of a split catalogue with a photo at its top: the
    photo's path was made relative to the resolved folder, a ValueError traceback."""
    import shutil

    from vitrine.split import read_catalogue

    photos = sorted((demo_catalog / "relogio_feminino").glob("*.jpg"))[:3]
    for split, photo in zip(("train", "test"), photos, strict=False):
        (tmp_path / "cat" / split / "relogio").mkdir(parents=True)
        shutil.copyfile(photo, tmp_path / "cat" / split / "relogio" / photo.name)
    shutil.copyfile(photos[2], tmp_path / "cat" / "loose.jpg")
    monkeypatch.chdir(tmp_path)
    outside = read_catalogue(Path("cat"))[2]
    assert [p.relative_to((tmp_path / "cat").resolve()).as_posix() for p in outside] == [
        "loose.jpg"]


def test_equal_duplicate_groups_fill_validation_and_test():
    """Every product in three to six copies (a shirt's sizes under one picture): a group
    that overshot test went to training and the next one tried test again, so validation
    got no photo of the category (half of the sizes from 8 to 100 products; train then
    refused the catalogue), and 5 groups of 8 were neither tested nor validated."""
    for size in (3, 4, 5, 6, 8):
        for products in range(5, 60):
            n = size * products
            groups = [list(range(i, i + size)) for i in range(0, n, size)]
            names = group_split(["a"] * n, groups, 0.15, 0.15, 0)
            counts = Counter(names)
            assert counts["val"] and counts["test"], (size, products, counts)
            assert 2 * counts["train"] >= n
            for group in groups:
                assert len({names[i] for i in group}) == 1


def test_copies_across_categories_count_towards_no_categorys_share():
    """A placeholder photo ("no photo yet") that 10 products of each of three categories
    share is one unit across categories: it trains, and it counted towards its first
    member's category as 30 photos of its own, so 16 of that category's 20 real photos were
    held out (8 validation, 8 test) and 4 trained, against 14 of the others' 20."""
    labels = ["a"] * 20 + ["b"] * 20 + ["c"] * 20 + ["a"] * 10 + ["b"] * 10 + ["c"] * 10
    placeholder = list(range(60, 90))
    for seed in range(5):
        names = group_split(labels, [placeholder], 0.15, 0.15, seed)
        assert {names[i] for i in placeholder} == {"train"}
        for category in "abc":
            real = Counter(names[i] for i in range(60) if labels[i] == category)
            assert real == {"train": 14, "val": 3, "test": 3}, (seed, category, real)


def test_a_large_group_of_copies_takes_no_split_that_single_photos_fit():
    """10 products of a 30-photo category share one placeholder photo: the group, met
    first, took the whole test (or validation) share while the category's 20 other photos
    could fill it (1 seed of 4), so that category was tested (or validated) on one photo,
    its placeholder. A category of equal groups still gets its splits
    (test_equal_duplicate_groups_fill_validation_and_test)."""
    labels = ["a"] * 30 + ["b"] * 30
    placeholder = list(range(20, 30))
    for seed in range(40):
        names = group_split(labels, [placeholder], 0.15, 0.15, seed)
        assert {names[i] for i in placeholder} == {"train"}, seed
        assert Counter(names[:20]) == {"train": 12, "val": 4, "test": 4}, seed


def test_a_product_tables_group_column_keeps_a_products_shots_in_one_split(tmp_path):
    """Photos of one product (front, back, a crop a supplier made) are no duplicates the
    rules find: without a column saying so they landed in train and test (helper-268).
    Photos sharing an ``item_group_id`` (any case and spacing of the column's name) or
    another group column stay together, joined with the duplicate groups; a column named
    "group" is no product (a department, say) and splits nothing. A given folder split is
    kept: a product's shots across its folders are not copies, none is left out."""
    products = [Product(f"p{i:02d}", Path(f"/x/{i}.jpg"), "ab"[i % 2],
                        attributes={"group": "ab"[i % 2],
                                    "Item Group ID" if i < 40 else "parent_id": f"g{i % 10}"})
                for i in range(50)]
    groups = [["p00", "p02"]]  # (a duplicate pair joining two products' shots: g0, g2)
    together = [[p.product_id for p in products if p.attributes.get(
        "Item Group ID", p.attributes.get("parent_id")) in gs] for gs in (("g0", "g2"),)]
    for seed in range(10):
        split = make_split(products, groups, Settings(train_seed=seed))
        for g in range(1, 10):
            if g != 2:
                shots = {split.assignment[p.product_id] for p in products
                         if f"g{g}" in p.attributes.values()}
                assert len(shots) == 1, (seed, g, shots)
        assert len({split.assignment[pid] for pid in together[0]}) == 1, seed
        assert split.groups == groups  # (the duplicates: reported, counted once)
        assert split.product_groups == 10  # (g0 … g9: said in the training report)
        assert {"train", "val", "test"} <= set(split.assignment.values()), seed
    given = {p.product_id: ("test" if i < 10 else "val" if i < 20 else "train")
             for i, p in enumerate(products)}
    split = make_split(products, [], Settings(), given)
    assert split.assignment == given and not split.left_out and not split.left_out_val
    assert split.product_groups == 0  # (the folders' split: none kept together)
    split.save(tmp_path / "split.json")
    assert Split.load(tmp_path / "split.json").product_groups == 0
    seeded = make_split(products, [], Settings())
    seeded.save(tmp_path / "split.json")
    assert Split.load(tmp_path / "split.json").product_groups == 10


def test_a_group_column_naming_a_department_splits_as_without_it():
    """A group column naming a department (one value across two categories) or a kind of
    product (one value for most of a category) is no product's shots: joined, every
    category it spans trained, none validated or tested, and train refused the catalogue
    or said its categories had too few photos (helper-247). Such values are not joined;
    a product's own shots still are."""
    products = [Product(f"{c}{i}", Path(f"/x/{c}{i}.jpg"), c, attributes={
        "item_group_id": "Calcados" if c in "ab" else f"{c}-all" if c == "c" else
        f"{c}{i // 2}"}) for c in "abcd" for i in range(20)]
    split = make_split(products, [], Settings())
    for c in "abcd":
        assert {split.assignment[p.product_id] for p in products if p.category == c} == {
            "train", "val", "test"}, c
    assert split.product_groups == 10  # (d's pairs only)
    for i in range(0, 20, 2):
        assert split.assignment[f"d{i}"] == split.assignment[f"d{i + 1}"]


def test_a_category_the_group_column_halves_still_gets_every_split():
    """A group column naming two kinds of product, each half of a category (tenis, bota):
    no value over half, so both were joined, one tested, the other trained, the category
    never validated (helper-251). Such a category is split as without the column; the
    others keep their products' shots together, and only theirs are counted."""
    products = [Product(f"{c}{i}", Path(f"/x/{c}{i}.jpg"), c, attributes={
        "item_group_id": ("tenis" if i < 10 else "bota") if c == "c" else f"{c}{i // 2}"})
        for c in "abcd" for i in range(20)]
    for seed in range(4):
        split = make_split(products, [], Settings(train_seed=seed))
        for c in "abcd":
            assert {split.assignment[p.product_id] for p in products if p.category == c} == {
                "train", "val", "test"}, (seed, c)
        assert split.product_groups == 30  # (a, b and d's pairs)
        for c in "abd":
            for i in range(0, 20, 2):
                assert split.assignment[f"{c}{i}"] == split.assignment[f"{c}{i + 1}"]
    given = {p.product_id: "test" if p.product_id.endswith("0") else "train"
             for p in products}  # (validation carved out of training: the same rule)
    split = make_split(products, [], Settings(), given)
    assert "val" in {split.assignment[p.product_id] for p in products if p.category == "c"}


def test_a_category_whose_test_took_two_small_units_still_gets_a_validation_photo():
    """7 products of a 10-photo category share a placeholder photo, two more are copies of
    one photo, one is alone: test (a target of 2) took the single photo and then the pair
    (within a target plus one), and validation got nothing in 15 seeds of 40, though the
    pair and the photo could each hold out one split."""
    labels = ["bolsas"] * 10 + ["sapatos"] * 20
    for seed in range(40):
        names = group_split(labels, [list(range(7)), [7, 8]], 0.15, 0.15, seed)
        assert {names[i] for i in range(7)} == {"train"}, seed
        assert names[7] == names[8], seed
        assert {names[i] for i in (7, 8, 9)} == {"val", "test"}, seed
        assert Counter(names[10:]) == {"train": 14, "val": 3, "test": 3}, seed


# --- a split kept when the catalogue changes (vitrine.split_kept) ---------------------------

SIZES = (("a", 15), ("b", 20), ("c", 30))
"""Three categories where one photo added to "a" moves 23 photos of a fresh split (seed 0),
20 of them of "b" and "c"."""


def _shop(extra: tuple[str, ...] = ()) -> list[Product]:
    return [Product(f"{c}{i:02d}", Path(f"/x/{c}{i}.jpg"), c) for c, n in SIZES
            for i in range(n)] + [Product(pid, Path(f"/x/{pid}.jpg"), pid[0]) for pid in extra]


def _bytes(products) -> dict[str, str]:
    return {p.product_id: f"sha-{p.product_id}" for p in products}


def _trained(products, groups=(), settings=None) -> Split:
    """The split a training wrote to split.json, read back as a later training reads it."""
    split = make_split(products, list(groups), settings or Settings())
    split.contents = _bytes(products)
    split.categories = {p.product_id: p.category for p in products}
    return split


def test_a_photo_added_or_removed_leaves_every_other_photo_in_its_split(tmp_path):
    from vitrine.split_kept import kept_split

    before = _shop()
    earlier = _trained(before)
    path = tmp_path / "split.json"  # (what is kept survives split.json)
    earlier.save(path)
    earlier = Split.load(path)
    grown = _shop(("a99",))
    fresh = make_split(grown, [], Settings())
    assert sum(fresh.assignment[k] != v for k, v in earlier.assignment.items()) == 23
    kept = kept_split(grown, [], Settings(), earlier, _bytes(grown))
    assert {k: kept.assignment[k] for k in earlier.assignment} == earlier.assignment
    assert kept.kept_from_earlier == {"kept": 65, "placed": 1, "moved": 0}
    shrunk = [p for p in before if p.product_id != earlier.ids("test")[0]]
    kept = kept_split(shrunk, [], Settings(), earlier, _bytes(shrunk))
    assert kept.assignment == {p.product_id: earlier.assignment[p.product_id] for p in shrunk}
    assert kept.kept_from_earlier == {"kept": 64, "placed": 0, "moved": 0}
    assert kept.as_dict()["kept_from_earlier"] == kept.kept_from_earlier


def test_new_and_changed_photos_fill_the_held_out_shares_of_the_categorys_new_size():
    from vitrine.split_kept import kept_split

    before = _shop()
    earlier = _trained(before)
    products = _shop(tuple(f"a9{i}" for i in range(5)))  # "a" grows from 15 to 20 photos
    contents = _bytes(products)
    changed = earlier.ids("test")[0]  # same id, other bytes: placed anew
    contents[changed] = "sha-retaken"
    moved_category = next(p for p in products if p.product_id == "b00")
    moved_category.category = "c"  # recategorised: placed anew
    kept = kept_split(products, [], Settings(), earlier, contents)
    assert kept.kept_from_earlier == {"kept": 63, "placed": 7, "moved": 0}
    for pid, side in earlier.assignment.items():
        if pid not in (changed, "b00"):
            assert kept.assignment[pid] == side, pid
    share = Counter((p.category, kept.assignment[p.product_id]) for p in products)
    assert (share["a", "val"], share["a", "test"]) == (3, 3)  # 15 % of 20, as a fresh split
    assert kept == kept_split(products, [], Settings(), earlier, contents)  # seeded


def test_a_copy_of_a_test_photo_tests_and_a_group_across_splits_goes_to_the_furthest():
    from vitrine.split_kept import kept_split

    earlier = _trained(_shop())
    tested = earlier.ids("test")[0]
    trained = next(pid for pid in earlier.ids("train") if pid[0] == tested[0])
    validated = next(pid for pid in earlier.ids("val") if pid[0] == tested[0])
    products = _shop(("a97", "a98", "c99"))
    kept = kept_split(products, [[tested, "a98"]], Settings(), earlier, _bytes(products))
    assert kept.assignment["a98"] == "test"
    assert kept.kept_from_earlier["moved"] == 0
    # a new photo that is a copy of a trained and a tested photo: the three test (so no
    # test photo is ever trained on), the trained one moved
    groups = [[trained, "a97", tested], [validated, "c99"]]
    kept = kept_split(products, groups, Settings(), earlier, _bytes(products))
    assert {kept.assignment[pid] for pid in (trained, "a97", tested)} == {"test"}
    assert kept.assignment[validated] == kept.assignment["c99"] == "val"  # across categories
    assert kept.kept_from_earlier == {"kept": 64, "placed": 3, "moved": 1}
    assert kept.crossing() == []


def test_a_new_category_is_split_as_a_fresh_split_and_a_gone_one_is_gone():
    from vitrine.split_kept import kept_split

    earlier = _trained(_shop())
    products = [p for p in _shop() if p.category != "b"] + [
        Product(f"d{i:02d}", Path(f"/x/d{i}.jpg"), "d") for i in range(12)]
    kept = kept_split(products, [], Settings(), earlier, _bytes(products))
    fresh = make_split(products, [], Settings())
    assert {pid: s for pid, s in kept.assignment.items() if pid[0] == "d"} == {
        pid: s for pid, s in fresh.assignment.items() if pid[0] == "d"}
    assert not any(pid[0] == "b" for pid in kept.assignment)


def test_another_seed_fraction_or_new_split_setting_splits_afresh(tmp_path):
    """The earlier split is kept only when a fresh one would be made alike; a damaged or
    foreign split.json, or an older one without categories, gives a fresh split and why."""
    import json

    from vitrine.catalog import MODEL_FORMAT
    from vitrine.split_kept import earlier_split, kept_split

    products = _shop(("a99",))
    earlier = _trained(_shop())
    for settings in (Settings(train_seed=1), Settings(train_test_fraction=0.2)):
        again = kept_split(products, [], settings, earlier, _bytes(products))
        assert again.assignment == make_split(products, [], settings).assignment
        assert again.kept_from_earlier is None
    assert earlier_split(tmp_path, Settings()) == (None, None)  # a first training
    (tmp_path / "model.json").write_text(json.dumps({"format": MODEL_FORMAT + "1"}))
    earlier.save(tmp_path / "split.json")
    found, why = earlier_split(tmp_path, Settings())
    assert why is None and found.assignment == earlier.assignment
    assert found.categories == earlier.categories
    assert earlier_split(tmp_path, Settings(train_new_split=True)) == (
        None, "VITRINE_TRAIN_NEW_SPLIT is set")
    assert "VITRINE_TRAIN_SEED is 3" in earlier_split(tmp_path, Settings(train_seed=3))[1]
    assert "fractions" in earlier_split(tmp_path, Settings(train_val_fraction=0.1))[1]
    data = json.loads((tmp_path / "split.json").read_text())
    (tmp_path / "split.json").write_text(json.dumps({**data, "category": {}}))
    assert "no categories" in earlier_split(tmp_path, Settings())[1]
    (tmp_path / "split.json").write_text(json.dumps({**data, "source": "folders"}))
    assert "folders" in earlier_split(tmp_path, Settings())[1]
    for damaged in ("{", json.dumps({"assignment": ["x"], "source": "seeded"}),
                    json.dumps({**data, "assignment": {"a00": "elsewhere"}})):
        (tmp_path / "split.json").write_text(damaged)
        found, why = earlier_split(tmp_path, Settings())
        assert found is None and "split.json" in why


def test_retraining_an_unchanged_catalogue_keeps_the_split_its_table_groups_did_not_make():
    """A category whose product-table groups a fresh split drops (two kinds of product in
    the column, each half the category: helper-251) was split without them; kept, they
    were joined again and every photo moved to validation or test: the category left the
    classes (with two categories, `vitrine train` refused the unchanged catalogue)."""
    from vitrine.split_kept import kept_split

    products = [Product(f"a{i:02d}", Path(f"/x/a{i}.jpg"), "a",
                        attributes={"item_group_id": "K1" if i < 10 else "K2"})
                for i in range(20)] + [Product(f"b{i:02d}", Path(f"/x/b{i}.jpg"), "b")
                                       for i in range(20)]
    earlier = _trained(products)
    assert earlier.product_groups == 0  # (the groups were dropped for "a")
    kept = kept_split(products, [], Settings(), earlier, _bytes(products))
    assert kept.assignment == earlier.assignment
    assert kept.kept_from_earlier == {"kept": 40, "placed": 0, "moved": 0}


def test_a_category_whose_training_photos_are_gone_still_trains():
    """Its kept photos all validated or tested, and nothing new to place: the category had
    no training photo (it left the classes); the smallest validated unit trains."""
    from vitrine.split_kept import kept_split

    before = _shop()
    earlier = _trained(before)
    for keep in (("val", "test"), ("test",)):
        products = [p for p in before if p.category != "a"] + [
            next(p for p in before if p.category == "a" and
                 earlier.assignment[p.product_id] == side) for side in keep]
        kept = kept_split(products, [], Settings(), earlier, _bytes(products))
        sides = Counter(kept.assignment[p.product_id] for p in products if p.category == "a")
        assert sides == Counter(("train", *keep[1:])), keep
        assert kept.kept_from_earlier["moved"] == 1


def test_a_small_category_of_products_with_several_shots_keeps_each_product_whole():
    """Three products of three shots each (item_group_id): held out by photos, test takes
    one product and validation none (training would keep 3 of 9), so the category was split
    as without the column and every seed put a product's shots in train and test: the test
    figures scored products the model trained on. Each product counted as one photo, the
    category gets a trained, a validated and a tested product, each whole."""
    products = [Product(f"a{i}", Path(f"/x/a{i}.jpg"), "a",
                        attributes={"item_group_id": f"K{i // 3}"}) for i in range(9)] + [
        Product(f"b{i:02d}", Path(f"/x/b{i}.jpg"), "b") for i in range(20)]
    for seed in range(10):
        split = make_split(products, [], Settings(train_seed=seed))
        for k in range(3):
            shots = {split.assignment[f"a{i}"] for i in range(3 * k, 3 * k + 3)}
            assert len(shots) == 1, (seed, k, shots)
        assert {split.assignment[f"a{i}"] for i in range(9)} == {"train", "val", "test"}
        assert split.product_groups == 3, seed
