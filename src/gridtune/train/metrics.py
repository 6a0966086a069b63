"""Evaluation numbers from predicted probabilities: accuracy family, F1, calibration, class weights.

numpy only (no torch): the reducer and report code import this without a deep-learning stack.
Every function returns plain Python floats/ints/None (or a numpy array for class weights), so a
result can go straight into result.json.
"""
from __future__ import annotations

from typing import Any

import numpy as np

DEFAULT_THRESHOLDS = np.linspace(0.05, 0.95, 19)
# What a trial records: each epoch's val/loss and val/<scalar of classification_metrics>, and, with
# its best epoch, these training numbers. An objective must name one of RECORDED.
VAL_SCALARS = ("acc", "bal_acc", "macro_f1", "ece", "confidence", "overconfidence")
TRAIN_RECORDED = ("train/loss", "train/acc")
RECORDED = ("val/loss", *(f"val/{k}" for k in VAL_SCALARS), *TRAIN_RECORDED)


def _check_probs(probs: Any, name: str = "probs") -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0:
        raise ValueError(f"{name} must have shape (N, C) with N, C >= 1; got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name} contains NaN or inf")
    # a small tolerance for float32 softmax rounding; anything further out is probably logits
    if p.min() < -1e-6 or p.max() > 1 + 1e-6:
        raise ValueError(f"{name} must be probabilities in [0, 1]; got values in [{p.min():.4g}, {p.max():.4g}]")
    return p


def _bin_index(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bins over [0, 1]: bin k holds [k/n, (k+1)/n), the last one also holds 1.0."""
    return np.clip(np.floor(conf * n_bins).astype(np.int64), 0, n_bins - 1)


def _f1(tp: float, fp: float, fn: float) -> float:
    # 2TP / (2TP + FP + FN) equals 2PR / (P + R) whenever both are defined, and it needs no
    # special case for a class that is predicted but absent (TP=0 → F1=0) or present but never
    # predicted (TP=0 → F1=0). Callers only ask about classes with TP+FP+FN > 0.
    return float(2 * tp / (2 * tp + fp + fn))


def classification_metrics(probs: np.ndarray, labels: np.ndarray, class_names: list[str],
                           n_bins: int = 15) -> dict[str, Any]:
    """Single-label metrics of softmax outputs `probs` (N, C) against integer `labels` (N,).

    - acc: fraction of argmax predictions that are right.
    - bal_acc: mean recall over the classes present in `labels` (absent classes have no recall).
    - macro_f1: mean F1 over classes present in `labels` or in the predictions; a class that is
      predicted but never true scores 0, and a class that is neither is left out.
    - per_class_acc: {class name: recall, or None when the class has no samples}.
    - ece: Σ_b (n_b / N)·|acc_b − conf_b| over `n_bins` equal-width bins of the max probability.
    - confidence: mean max probability; overconfidence: confidence − acc.
    - calibration: per-bin confidence/accuracy (None for empty bins), counts, and the histogram of
      the max probability (the same bins, so it equals bin_count; kept as its own key for plots).
    """
    p = _check_probs(probs)
    y = np.asarray(labels)
    n, n_classes = p.shape
    _check_labels(y, n, n_classes, class_names, n_bins)

    pred = p.argmax(axis=1)
    conf = p.max(axis=1)
    correct = pred == y
    acc = float(correct.mean())
    per_class, recalls, f1s = _per_class_scores(y, pred, correct, class_names)
    idx, counts, bin_conf, bin_acc, ece = _calibration_bins(conf, correct, n_bins)
    confidence = float(conf.mean())

    return {
        "acc": acc,
        "bal_acc": float(np.mean(recalls)),  # labels are non-empty, so at least one class is present
        "macro_f1": float(np.mean(f1s)),
        "per_class_acc": per_class,
        "ece": float(ece),
        "confidence": confidence,
        "overconfidence": confidence - acc,
        "calibration": {
            "bins": n_bins,
            "bin_confidence": bin_conf,
            "bin_accuracy": bin_acc,
            "bin_count": [int(k) for k in counts],
            "prob_hist": [int(k) for k in np.bincount(idx, minlength=n_bins)],
        },
    }


def _check_labels(y: np.ndarray, n: int, n_classes: int, class_names: list[str], n_bins: Any) -> None:
    """Raise ValueError unless `y` holds n integer labels in [0, n_classes), one name per class and n_bins >= 1."""
    if y.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match probs; got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers; got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes - 1}]; got [{y.min()}, {y.max()}]")
    if len(class_names) != n_classes:
        raise ValueError(f"class_names has {len(class_names)} names but probs has {n_classes} columns")
    if not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins={n_bins!r} is not valid; expected an int >= 1")


def _per_class_scores(y: np.ndarray, pred: np.ndarray, correct: np.ndarray, class_names: list[str]
                      ) -> tuple[dict[str, float | None], list[float], list[float]]:
    """({class name: recall or None}, recalls of the classes present, F1s of the classes present or predicted)."""
    per_class: dict[str, float | None] = {}
    recalls: list[float] = []
    f1s: list[float] = []
    for c, cname in enumerate(class_names):
        true_c = y == c
        pred_c = pred == c
        if true_c.any():
            recall = float(correct[true_c].mean())
            recalls.append(recall)
            per_class[str(cname)] = recall
        else:
            per_class[str(cname)] = None
        if true_c.any() or pred_c.any():
            tp = float(np.sum(true_c & pred_c))
            f1s.append(_f1(tp, float(pred_c.sum()) - tp, float(true_c.sum()) - tp))
    return per_class, recalls, f1s


def _calibration_bins(conf: np.ndarray, correct: np.ndarray, n_bins: int):
    """(bin index of each sample, bin counts, per-bin mean confidence and accuracy (None when empty), ECE)
    over `n_bins` equal-width bins of the max probability `conf`."""
    n = len(conf)
    idx = _bin_index(conf, n_bins)
    counts = np.bincount(idx, minlength=n_bins)
    bin_conf: list[float | None] = []
    bin_acc: list[float | None] = []
    ece = 0.0
    for b in range(n_bins):
        in_bin = idx == b
        if counts[b] == 0:
            bin_conf.append(None)
            bin_acc.append(None)
            continue
        cb = float(conf[in_bin].mean())
        ab = float(correct[in_bin].mean())
        bin_conf.append(cb)
        bin_acc.append(ab)
        ece += counts[b] / n * abs(ab - cb)
    return idx, counts, bin_conf, bin_acc, ece


def multilabel_f1(probs: np.ndarray, targets: np.ndarray, threshold: float) -> dict[str, Any]:
    """F1 of multi-label predictions `probs >= threshold` against 0/1 `targets` (N, C).

    micro_f1 pools TP/FP/FN over all classes (0.0 if there are neither targets nor predictions).
    per_class_f1[c] is None for a class with neither targets nor predictions (F1 is undefined
    there), and macro_f1 averages the defined ones (0.0 if none is defined).
    """
    p = _check_probs(probs)
    t = np.asarray(targets)
    if t.shape != p.shape:
        raise ValueError(f"targets must have the shape of probs {p.shape}; got {t.shape}")
    if not np.all((t == 0) | (t == 1)):
        raise ValueError("targets must contain only 0 and 1")
    t = t.astype(bool)
    pred = p >= threshold
    tp = np.sum(pred & t, axis=0).astype(np.float64)
    fp = np.sum(pred & ~t, axis=0).astype(np.float64)
    fn = np.sum(~pred & t, axis=0).astype(np.float64)

    per_class: list[float | None] = []
    for c in range(p.shape[1]):
        per_class.append(_f1(tp[c], fp[c], fn[c]) if tp[c] + fp[c] + fn[c] > 0 else None)
    defined = [f for f in per_class if f is not None]
    total_tp, total_fp, total_fn = tp.sum(), fp.sum(), fn.sum()
    micro = _f1(total_tp, total_fp, total_fn) if total_tp + total_fp + total_fn > 0 else 0.0
    return {
        "micro_f1": micro,
        "macro_f1": float(np.mean(defined)) if defined else 0.0,
        "per_class_f1": per_class,
    }


def choose_threshold(probs: np.ndarray, targets: np.ndarray, grid: np.ndarray = DEFAULT_THRESHOLDS) -> float:
    """The threshold in `grid` with the highest micro-F1 (the first one in grid order on ties).

    Meant for validation data; the chosen value is then applied unchanged to the test set.
    """
    candidates = [float(g) for g in np.asarray(grid, dtype=np.float64).ravel()]
    if not candidates:
        raise ValueError("grid must hold at least one threshold")
    scores = [multilabel_f1(probs, targets, g)["micro_f1"] for g in candidates]
    return candidates[int(np.argmax(scores))]  # argmax returns the first maximum
