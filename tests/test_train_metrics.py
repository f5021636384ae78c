"""Classification metrics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vitrine.evaluate import accuracy, confusion_matrix, macro_f1, per_class_prf, wilson_interval
from vitrine.model_eval import retrieval_metrics

TRUE = ["a", "a", "a", "b", "b", "c"]
PRED = ["a", "a", "b", "b", "c", "c"]


def test_accuracy():
    assert accuracy(TRUE, PRED) == pytest.approx(4 / 6)
    assert math.isnan(accuracy([], []))


def test_confusion_matrix_rows_true_columns_predicted():
    m = confusion_matrix(TRUE, PRED, ["a", "b", "c"])
    assert m.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert confusion_matrix(["a", "z"], ["a", "a"], ["a"]).tolist() == [[1]]


def test_per_class_precision_recall_f1():
    prf = per_class_prf(confusion_matrix(TRUE, PRED, ["a", "b", "c", "d"]), ["a", "b", "c", "d"])
    # a: predicted a twice, both right (P=1); 2 of 3 a's found (R=2/3); F1 = 0.8
    assert prf["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8,
                                      "support": 3, "predicted": 2})
    # b: predicted b twice, one right (P=1/2), 1 of 2 found (R=1/2)
    assert prf["b"]["precision"] == pytest.approx(0.5)
    assert prf["b"]["recall"] == pytest.approx(0.5)
    # c: predicted twice, one right (P=1/2); the one c found (R=1); F1 = 2/3
    assert prf["c"]["f1"] == pytest.approx(2 / 3)
    assert prf["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0,
                        "predicted": 0}
    assert macro_f1(prf) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_wilson_interval():
    # 8 of 10 at 95 %: the textbook values 0.4902–0.9433
    low, high = wilson_interval(8, 10)
    assert (low, high) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(10, 10)[1] == 1.0  # not 0.9999999999999999, below the accuracy
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_retrieval_metrics_leave_one_out():
    # 1-d "embeddings" on a line: a a b, nearest neighbours by inner product on unit vectors
    vecs = np.array([[1, 0], [0.9, 0.1], [0, 1]], dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    labels = ["a", "a", "b"]
    m = retrieval_metrics(vecs, labels, vecs, labels, 1, leave_one_out=True)
    # a→a, a→a: P@1 = R@1 = 1; b has nothing of its own to find: not scored
    assert m["precision"] == pytest.approx(1.0) and m["recall"] == pytest.approx(1.0)
    assert m["per_category"]["b"]["precision"] is None and m["without_relevant"] == 1


def test_a_querys_duplicates_are_neither_hits_nor_relevant():
    """Leave-one-out counted a photo's resized copy as a hit (P@5 0.956 → 0.978 with copies
    added); its duplicates are skipped as the query itself is."""
    vecs = np.array([[1, 0], [0.99, 0.01], [0.9, 0.1], [0.5, 0.5], [0, 1]], dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    labels = ["a", "a", "b", "a", "b"]  # row 1 is a copy of row 0; row 2 the nearest other
    plain = retrieval_metrics(vecs, labels, vecs, labels, 1, leave_one_out=True)
    assert plain["per_category"]["a"]["precision"] == pytest.approx(2 / 3, abs=1e-4)  # copies
    # kept to six decimals: the tables round them to three, and four first showed 17/21 as
    # 0.809 (helper-187)
    assert plain["per_category"]["a"]["precision"] == pytest.approx(2 / 3, abs=1e-6)
    from vitrine.train_display import evaluation_tables

    report = {"k": 1, "protocol": "held out", "queries": 21, "index": 21,
              "retrieval": {"pretrained": {"precision": round(17 / 21, 6), "recall": 1.0,
                                           "map": 1.0, "per_category": {}}}}
    from rich.console import Console

    console = Console(record=True, width=200)
    for item in evaluation_tables(report):
        console.print(item)
    assert "0.810" in console.export_text()
    skip = [[1], [0], [], [], []]
    fair = retrieval_metrics(vecs, labels, vecs, labels, 1, leave_one_out=True, skip=skip)
    assert fair["per_category"]["a"]["precision"] == 0  # each copy now finds the "b" first
    assert fair["n_queries"] == 5
    only_copy = retrieval_metrics(vecs[:2], ["a", "a"], vecs[:2], ["a", "a"], 1,
                                  leave_one_out=True, skip=[[1], [0]])
    assert only_copy["n_queries"] == 0 and only_copy["without_relevant"] == 2


def test_a_class_without_test_photos_is_shown_as_untested_not_as_zero():
    """A category too small to spare a test photo showed 0.000 recall and F1 next to a macro
    F1 of 1.000; it is shown as untested and named."""
    from vitrine.report import classification_report, prf_cells, untested_line

    report = classification_report(["a", "a", "b"], ["a", "a", "b"], ["a", "b", "c"])
    assert report["macro_f1"] == 1.0 and report["per_class"]["c"]["support"] == 0
    assert prf_cells(report["per_class"]["c"]) == ["—", "—", "—", "0"]  # nothing predicted c
    predicted = classification_report(["a", "b"], ["a", "c"], ["a", "b", "c"])["per_class"]
    assert prf_cells(predicted["c"]) == ["0.000", "—", "—", "0"]  # predicted, always wrong
    assert prf_cells(report["per_class"]["a"]) == ["1.000", "1.000", "1.000", "2"]
    assert untested_line(report["per_class"]).startswith("Not tested (no test photo")
    assert ": c;" in untested_line(report["per_class"])
    assert untested_line(classification_report(["a", "b"], ["a", "b"], ["a", "b"])
                         ["per_class"]) is None


def test_macro_f1_leaves_out_a_label_only_predicted():
    """A label no test photo has but that was predicted once is not averaged into the
    macro F1: 'a' scores 1, 'b' (missed) 0, so the macro F1 is 0.5, not 1/3."""
    labels = ["a", "b", "c"]
    prf = per_class_prf(confusion_matrix(["a", "b"], ["a", "c"], labels), labels)
    assert prf["c"]["support"] == 0 and prf["c"]["predicted"] == 1
    assert macro_f1(prf) == pytest.approx(0.5)


def test_retrieval_fetches_enough_neighbours_past_all_skipped_duplicates():
    """Each of rows 0-2 skips itself and its two copies, so its top 1 is the fourth
    neighbour: fetching only k + 1 neighbours left those queries with no result at all."""
    vecs = np.array([[1, 0], [0.999, 0.001], [0.998, 0.002], [0.9, 0.1], [0, 1]],
                    dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    labels = ["a", "a", "a", "a", "b"]
    skip = [[1, 2], [0, 2], [0, 1], [], []]
    m = retrieval_metrics(vecs, labels, vecs, labels, 1, leave_one_out=True, skip=skip)
    # rows 0-2 each find row 3 (the 1 relevant left: R = 1); row 3 finds row 2 (1 of 3)
    assert m["n_queries"] == 4 and m["without_relevant"] == 1
    assert m["precision"] == pytest.approx(1.0)
    assert m["recall"] == pytest.approx((1 + 1 + 1 + 1 / 3) / 4, abs=1e-4)
