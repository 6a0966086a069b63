"""Tests for gridtune.train.metrics on hand-computed cases."""
from __future__ import annotations

import json

import numpy as np
import pytest

from gridtune.data.feed import class_weights
from gridtune.train.metrics import choose_threshold, classification_metrics, multilabel_f1

NAMES3 = ["a", "b", "c"]


def two_class(conf_first: list[float]) -> np.ndarray:
    c = np.asarray(conf_first)
    return np.stack([c, 1 - c], axis=1)


def test_perfectly_calibrated_toy_has_zero_ece():
    # 10 samples at confidence 0.8 (one bin), 8 of them right
    probs = two_class([0.8] * 10)
    labels = np.array([0] * 8 + [1] * 2)
    m = classification_metrics(probs, labels, ["x", "y"])
    assert m["acc"] == pytest.approx(0.8)
    assert m["confidence"] == pytest.approx(0.8)
    assert m["ece"] == pytest.approx(0.0, abs=1e-12)
    assert m["overconfidence"] == pytest.approx(0.0, abs=1e-12)


def test_all_confident_and_wrong_has_ece_near_one():
    probs = np.array([[0.999, 0.0005, 0.0005]] * 6)
    labels = np.array([1, 2, 1, 2, 1, 2])
    m = classification_metrics(probs, labels, NAMES3)
    assert m["acc"] == 0.0
    assert m["ece"] == pytest.approx(0.999)
    assert m["overconfidence"] == pytest.approx(0.999)


def test_two_bin_hand_example():
    # bin [0.6, 0.667): confidences 0.62, 0.64 -> conf 0.63, both right -> acc 1 -> gap 0.37
    # bin [0.933, 1.0]: confidences 0.95, 0.95, 0.95 -> conf 0.95, one right -> acc 1/3 -> gap 0.6167
    probs = two_class([0.62, 0.64, 0.95, 0.95, 0.95])
    labels = np.array([0, 0, 0, 1, 1])
    m = classification_metrics(probs, labels, ["x", "y"])
    expected = 2 / 5 * abs(1.0 - 0.63) + 3 / 5 * abs(1 / 3 - 0.95)
    assert m["ece"] == pytest.approx(expected)  # = 0.518
    assert m["ece"] == pytest.approx(0.518)
    cal = m["calibration"]
    assert cal["bins"] == 15
    assert cal["bin_count"][9] == 2 and cal["bin_count"][14] == 3
    assert cal["bin_confidence"][9] == pytest.approx(0.63) and cal["bin_accuracy"][14] == pytest.approx(1 / 3)
    assert cal["bin_confidence"][0] is None and cal["bin_accuracy"][0] is None


def test_accuracy_family_hand_example():
    # labels: a a a b b c ; predictions: a a b b c c
    probs = np.array([
        [0.7, 0.2, 0.1],
        [0.6, 0.3, 0.1],
        [0.3, 0.6, 0.1],
        [0.1, 0.8, 0.1],
        [0.1, 0.4, 0.5],
        [0.2, 0.2, 0.6],
    ])
    labels = np.array([0, 0, 0, 1, 1, 2])
    m = classification_metrics(probs, labels, NAMES3)
    assert m["acc"] == pytest.approx(4 / 6)
    assert m["per_class_acc"] == pytest.approx({"a": 2 / 3, "b": 1 / 2, "c": 1.0})
    assert m["bal_acc"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    # F1: a: tp2 fp0 fn1 -> 0.8 ; b: tp1 fp1 fn1 -> 0.5 ; c: tp1 fp1 fn0 -> 2/3
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["confidence"] == pytest.approx(np.mean([0.7, 0.6, 0.6, 0.8, 0.5, 0.6]))


def test_absent_classes():
    # class c never occurs; class b never occurs but is predicted once
    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.8, 0.1, 0.1]])
    labels = np.array([0, 0, 0])
    m = classification_metrics(probs, labels, NAMES3)
    assert m["per_class_acc"] == {"a": pytest.approx(2 / 3), "b": None, "c": None}
    assert m["bal_acc"] == pytest.approx(2 / 3)  # only class a is present
    # a: tp2 fp0 fn1 -> 0.8 ; b: predicted but never true -> 0 ; c: neither -> left out
    assert m["macro_f1"] == pytest.approx((0.8 + 0.0) / 2)


def test_calibration_counts_sum_to_n_and_everything_is_json():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 11)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, 11, size=200)
    m = classification_metrics(probs, labels, [f"k{i}" for i in range(11)])
    cal = m["calibration"]
    assert sum(cal["bin_count"]) == 200 and sum(cal["prob_hist"]) == 200
    assert len(cal["bin_confidence"]) == len(cal["bin_accuracy"]) == 15
    # ECE computed here without the library: equal-width bins of the max probability, weighted |acc - conf|
    conf, hit = probs.max(axis=1), (probs.argmax(axis=1) == labels)
    bins = np.minimum((conf * 15).astype(int), 14)
    want = sum(abs(hit[bins == b].mean() - conf[bins == b].mean()) * (bins == b).sum() / 200
               for b in range(15) if (bins == b).any())
    assert m["ece"] == pytest.approx(want, abs=1e-9) and m["ece"] > 0.05
    assert json.loads(json.dumps(m)) == m  # plain Python types only
    for key in ("acc", "bal_acc", "macro_f1", "ece", "confidence", "overconfidence"):
        assert type(m[key]) is float
    assert all(type(c) is int for c in cal["bin_count"])


def test_probability_one_goes_to_the_last_bin():
    m = classification_metrics(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1]), ["x", "y"])
    assert m["calibration"]["bin_count"][-1] == 2
    assert m["ece"] == 0.0


@pytest.mark.parametrize("probs, labels, fragment", [
    (np.array([[2.0, -1.0]]), np.array([0]), "probabilities"),
    (np.array([[0.5, 0.5]]), np.array([2]), "labels must lie"),
    (np.array([[0.5, 0.5]]), np.array([0, 1]), "labels must have shape"),
    (np.array([[np.nan, 0.5]]), np.array([0]), "NaN"),
])
def test_classification_metrics_rejects_bad_input(probs, labels, fragment):
    with pytest.raises(ValueError, match=fragment):
        classification_metrics(probs, labels, ["x", "y"])


def test_multilabel_f1_hand_example():
    probs = np.array([
        [0.9, 0.2, 0.6],
        [0.4, 0.8, 0.1],
        [0.7, 0.6, 0.3],
    ])
    targets = np.array([
        [1, 0, 1],
        [1, 1, 0],
        [0, 1, 0],
    ])
    # threshold 0.5 -> predictions [1 0 1] [0 1 0] [1 1 0]
    # class 0: tp1 fp1 fn1 -> 0.5 ; class 1: tp2 fp0 fn0 -> 1.0 ; class 2: tp1 fp0 fn0 -> 1.0
    # micro: tp4 fp1 fn1 -> 8/10
    m = multilabel_f1(probs, targets, 0.5)
    assert m["per_class_f1"] == pytest.approx([0.5, 1.0, 1.0])
    assert m["macro_f1"] == pytest.approx(2.5 / 3)
    assert m["micro_f1"] == pytest.approx(0.8)


def test_multilabel_f1_undefined_class_is_none():
    probs = np.array([[0.9, 0.1], [0.8, 0.2]])
    targets = np.array([[1, 0], [1, 0]])
    m = multilabel_f1(probs, targets, 0.5)
    assert m["per_class_f1"] == [1.0, None]
    assert m["macro_f1"] == 1.0 and m["micro_f1"] == 1.0


def test_choose_threshold_on_constructed_case():
    # positives score 0.35-0.45, negatives 0.1-0.3 in every class: any threshold in (0.3, 0.35]
    # separates them perfectly; on the default grid that is 0.35 only
    probs = np.array([
        [0.40, 0.10],
        [0.35, 0.45],
        [0.20, 0.40],
        [0.30, 0.25],
    ])
    targets = np.array([
        [1, 0],
        [1, 1],
        [0, 1],
        [0, 0],
    ])
    best = choose_threshold(probs, targets)
    assert best == pytest.approx(0.35)
    assert multilabel_f1(probs, targets, best)["micro_f1"] == 1.0
    assert choose_threshold(probs, targets, grid=np.array([0.5, 0.3, 0.2])) == pytest.approx(0.3)


def test_balanced_class_weights_match_formula():
    # the one class-weight function (the trainer's): sklearn 'balanced' over the classes present
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 0])
    weights = class_weights(labels, n_classes=4)
    n = len(labels)
    assert weights.shape == (4,)
    assert weights[:3] == pytest.approx([n / (3 * 5), n / (3 * 2), n / (3 * 1)])
    assert weights[3] == 0.0  # class 3 has no samples
    # weighted counts are equal across the present classes
    counts = np.bincount(labels, minlength=4)
    assert (weights * counts)[:3] == pytest.approx([n / 3] * 3)


def test_balanced_class_weights_rejects_out_of_range():
    with pytest.raises(ValueError, match="labels must lie"):
        class_weights(np.array([0, 5]), n_classes=3)


def test_metrics_module_does_not_import_torch():
    # the report side imports gridtune.train.metrics on machines without torch
    import os
    import subprocess
    import sys
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src"
    code = "import sys, gridtune.train.metrics; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(src)})
    assert out.stdout.strip() == "False"
