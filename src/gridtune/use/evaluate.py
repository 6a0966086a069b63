"""Test-set evaluation of the final model: IRMAS test clips by windows, or the held-out split.

IRMAS test clips are multi-label and 5-20 s long, while the model sees `data.clip_seconds`. Each
clip is cut into windows of that length, `final.window_hop` of a window apart (the last one
zero-padded, as short training clips are), the softmax probabilities are averaged over a clip's
windows, and a class counts as present when its mean probability reaches a threshold. That
threshold is chosen on validation clips the evaluated weights did not train on (the caller picks
which weights), never on the test set. Windows are gathered batch by batch from the cache, so the
whole test set is never held as windows at once.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from gridtune.data import cache, layouts
from gridtune.train import metrics


def window_starts(length: int, window: int, hop: int) -> np.ndarray:
    """Start samples of the windows covering `length` samples: k*hop, until the end is covered."""
    if window < 1 or hop < 1:
        raise ValueError(f"window={window}, hop={hop}: both must be >= 1 sample")
    n = 1 + math.ceil(max(length - window, 0) / hop)
    return np.arange(n, dtype=np.int64) * hop


def window_and_hop(cfg) -> tuple[int, int]:
    """(window, hop) in samples: the training clip length, `final.window_hop` of it apart."""
    window = int(round(int(cfg.data.sample_rate) * float(cfg.data.clip_seconds)))
    return window, max(1, int(round(float(cfg.final.window_hop) * window)))


def window_plan(offsets: np.ndarray, window: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """(clip index, absolute start in the flat array) of every window of every clip."""
    clips, starts = [], []
    for i in range(len(offsets) - 1):
        s = window_starts(int(offsets[i + 1] - offsets[i]), window, hop)
        clips.append(np.full(len(s), i, dtype=np.int64))
        starts.append(s + int(offsets[i]))
    return np.concatenate(clips), np.concatenate(starts)


def clip_probabilities(prob_fn, waves: np.ndarray, offsets: np.ndarray, window: int, hop: int,
                       batch_size: int = 64) -> tuple[np.ndarray, int]:
    """(mean window probabilities per clip (N, C), number of windows).

    `waves` is the flat sample array of all clips, `offsets` their N+1 boundaries; `prob_fn` maps a
    float32 array (B, window) to probabilities (B, C).
    """
    clip_of, starts = window_plan(offsets, window, hop)
    ends = np.asarray(offsets[1:])[clip_of]
    sums, counts = None, np.bincount(clip_of, minlength=len(offsets) - 1)
    for b in range(0, len(starts), batch_size):
        batch = np.zeros((len(starts[b:b + batch_size]), window), dtype=np.float32)
        for j, (s, e) in enumerate(zip(starts[b:b + batch_size], ends[b:b + batch_size])):
            piece = waves[s:min(s + window, e)]
            batch[j, :len(piece)] = piece
        p = np.asarray(prob_fn(batch), dtype=np.float64)
        if sums is None:
            sums = np.zeros((len(counts), p.shape[1]))
        np.add.at(sums, clip_of[b:b + batch_size], p)
    return sums / counts[:, None], len(starts)


def model_prob_fn(model, features, device, amp_dtype=None, channels_last: bool = False):
    """A `prob_fn` running log-mel features and the CNN in eval mode, under the training's autocast."""
    import torch

    from gridtune.train.loop import autocast
    model.eval()

    @torch.no_grad()
    def fn(batch: np.ndarray) -> np.ndarray:
        x = features(torch.from_numpy(batch).to(device))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp_dtype):
            logits = model(x).float()
        return torch.softmax(logits, 1).cpu().numpy()
    return fn


def one_hot(labels, n_classes: int) -> np.ndarray:
    out = np.zeros((len(labels), n_classes), dtype=np.int64)
    out[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)] = 1
    return out


def multi_hot(label_lists, n_classes: int) -> np.ndarray:
    out = np.zeros((len(label_lists), n_classes), dtype=np.int64)
    for i, labels in enumerate(label_lists):
        out[i, list(labels)] = 1
    return out


def resolve_mode(cfg, classes: list[str]) -> tuple[str, list]:
    """(mode, IRMAS test clips) for final.test; auto prefers IRMAS test parts, then the test split."""
    mode = str(cfg.final.test)
    if mode not in ("auto", "irmas_test", "split", "none"):
        raise layouts.DataError(f"final.test={mode}: must be auto|irmas_test|split|none")
    audio = cfg.features.name != "image"
    clips = layouts.index_test(cfg.data.root, classes) if audio and mode in ("auto", "irmas_test") else []
    if mode == "auto":
        mode = "irmas_test" if clips else "split" if cfg.data.test_fraction else "none"
    if mode == "irmas_test" and not clips:
        why = "image features cannot read test audio" if not audio else "no IRMAS-TestingData*/**.wav found"
        raise layouts.DataError(f"final.test=irmas_test: {why} under data.root={cfg.data.root}")
    if mode == "split" and not cfg.data.test_fraction:
        raise layouts.DataError("final.test=split: needs data.test_fraction > 0 (e.g. data.test_fraction=0.2)")
    return mode, clips


def irmas_test(cfg, clips: list, classes: list[str], prob_fn, threshold: float) -> dict:
    """Micro/macro F1 of window-averaged predictions on the IRMAS test clips at `threshold`."""
    sr = int(cfg.data.sample_rate)
    items = [(rel, labels, str(Path(rel).with_suffix(""))) for rel, labels in clips]
    entry = cache.load_or_build(cfg.data.root, items, {"kind": "audio", "sample_rate": sr, "variable": True},
                                cfg.data.cache_dir, cfg.data.on_bad_file)
    window, hop = window_and_hop(cfg)
    probs, n_windows = clip_probabilities(prob_fn, entry.waves, entry.offsets, window, hop,
                                          int(cfg.train.eval_batch_size))
    f1 = metrics.multilabel_f1(probs, multi_hot(entry.labels, len(classes)), threshold)
    return {"mode": "irmas_test", "micro_f1": f1["micro_f1"], "macro_f1": f1["macro_f1"],
            "per_class_f1": dict(zip(classes, f1["per_class_f1"])), "n_clips": len(probs),
            "n_windows": n_windows, "window_s": window / sr, "hop_s": hop / sr,
            "cache": str(entry.path), "skipped_files": entry.meta["skipped"]}


def split_test(run, model) -> dict:
    """Single-label metrics of `model` on the "test" part of the run's split (held out of every trial)."""
    from gridtune.train.loop import predict
    idx = run.split["test"]
    if len(idx) == 0:
        raise layouts.DataError(f"data.test_fraction={run.cfg.data.test_fraction}: left no test clips "
                                "(each class needs 3+ recordings: train, val and test)")
    probs, labels, loss = predict(model, run.features, run.data, idx, batch_size=int(run.cfg.train.eval_batch_size),
                                  amp_dtype=run.amp_dtype, channels_last=run.channels_last)
    m = metrics.classification_metrics(probs, labels, run.classes)
    return {"mode": "split", "acc": m["acc"], "bal_acc": m["bal_acc"], "macro_f1": m["macro_f1"],
            "ece": m["ece"], "loss": loss, "per_class_acc": m["per_class_acc"], "n_clips": int(len(idx))}


def val_threshold(run, model, features) -> tuple[float, float]:
    """(threshold with the best micro-F1 on the run's val part, that micro-F1) for these weights."""
    from gridtune.train.loop import predict
    probs, labels, _ = predict(model, features, run.data, run.val_idx, batch_size=int(run.cfg.train.eval_batch_size),
                               amp_dtype=run.amp_dtype, channels_last=run.channels_last)
    targets = one_hot(labels, len(run.classes))
    t = metrics.choose_threshold(probs, targets)
    return t, metrics.multilabel_f1(probs, targets, t)["micro_f1"]


def threshold_for(run, winner_best: Path, model) -> tuple[float, str, float | None]:
    """(threshold, its source, val micro-F1 there), always from weights that never trained on val.

    Trained on train only, `model` (the final weights) is out-of-sample on val. Trained on
    train+val it is not, so the sweep winner's own best.pt (train only) stands in for it.
    """
    import copy

    from gridtune.train.runtime import load_torch
    if run.cfg.final.train_on == "train":
        t, f1 = val_threshold(run, model, run.features)
        return t, "final model (trained on train only) on val", f1
    try:
        state = load_torch(winner_best, run.device)
        winner, features = copy.deepcopy(run.model), copy.deepcopy(run.features)
        winner.load_state_dict(state["model"])
        features.load_state_dict(state["features"])
    except Exception as e:       # missing, unreadable, or another architecture (a user override)
        return 0.5, f"default 0.5: no usable sweep-winner weights ({winner_best}: {type(e).__name__})", None
    t, f1 = val_threshold(run, winner, features)
    return t, f"sweep winner's best.pt (trained on train only) on val: {winner_best}", f1


def load_final_model(out_dir, device="cpu"):
    """(features, model, classes) of a finished final run, rebuilt from its config and model.pt."""
    from .trained import load
    t = load(out_dir, device, audio=False)
    return t.features, t.model, t.classes
