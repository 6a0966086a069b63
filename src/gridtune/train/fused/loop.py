"""The training loop of a fused group: `gridtune.train.loop`'s epoch and prediction, for B models at once.

Every step runs the shared front end once (the batch, its log-mel and its SpecAugment masks are the
same for every model, as they are when the trials run one by one with the same seed), one fused
forward and backward pass, then each model's own optimizer, gradient clipping and schedule step.
The loss is the sum over models of each one's class-weighted cross-entropy plus its own
`l2 · Σw²`; as the models share no weights, each model's gradient is exactly its own loss's.

Divergence is per model, with `train_epoch`'s rules: a model whose checked batch loss is NaN/inf or
above its `train.diverge_loss`, or whose epoch mean is above its limit, is returned as `Diverged`
and dropped from the fused model at once; the others go on.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from gridtune.train.loop import CHECK_EVERY, Diverged, autocast
from gridtune.train.model import l2_penalty


def _limits(run) -> tuple[float, float]:
    cfg = run.cfg
    return float(cfg.train.diverge_loss), float(cfg.train.diverge_factor) * math.log(len(run.classes))


def _drop(model, gone) -> None:
    model.unpack()
    model.pack([i for i in model.active if i not in gone])


def train_epoch(epoch: int, model, runs, features, augment, data, indices, *, batch_size: int, generator,
                amp_dtype, channels_last: bool, scaler=None, heartbeat=None) -> tuple[dict, dict]:
    """One epoch of the active members of `model` (a FusedCNN over `runs`' models, same order).

    Returns ({member: train metrics}, {member: Diverged}); a diverged member is no longer active."""
    model.train()
    augment.train()
    device = data.device
    sums = {i: torch.zeros((), device=device, dtype=torch.float64) for i in model.active}
    correct = {i: torch.zeros((), device=device, dtype=torch.int64) for i in model.active}
    failed: dict[int, Diverged] = {}
    n, t0 = 0, time.perf_counter()
    for step, (x, y) in enumerate(data.batches(indices, batch_size, generator, shuffle=True, drop_last=True)):
        if not model.active:
            break
        with torch.no_grad():
            x = augment(features(x))                                   # (N, 1, n_mels, frames), shared
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp_dtype):
            logits = model(x)                                          # (N, B, n_classes)
        active = list(model.active)
        losses, total = _fused_loss(logits, y, runs, active)
        _backward_and_step(runs, active, total, scaler)
        for p, i in enumerate(active):
            sums[i] += losses[p].detach() * len(y)
            correct[i] += (logits[:, p].detach().argmax(1) == y).sum()
        n += len(y)
        if step % CHECK_EVERY == 0:
            _check_batch(epoch, step, model, runs, active, losses, failed)
            if heartbeat is not None:
                heartbeat(model.active)
    if n == 0:
        raise ValueError(f"train.batch_size={batch_size}: larger than the training split ({len(indices)} clips)")
    seconds = time.perf_counter() - t0
    return _epoch_results(epoch, model, runs, sums, correct, n, seconds, failed), failed


def _fused_loss(logits, y, runs, active: list[int]):
    """(each active model's cross-entropy, the sum over them of cross-entropy plus `l2 · Σw²`), in `active` order."""
    losses, total = [], None
    for p, i in enumerate(active):
        run = runs[i]
        loss = F.cross_entropy(logits[:, p].float(), y, weight=run.class_weights)
        l2 = float(run.cfg.l2)
        term = loss + l2 * l2_penalty(run.model) if l2 else loss
        losses.append(loss)
        total = term if total is None else total + term
    return losses, total


def _backward_and_step(runs, active: list[int], total, scaler) -> None:
    """Backpropagate the fused loss, then each active model's clipping, optimizer step and batch schedule step."""
    for i in active:
        runs[i].optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(total).backward()
    else:
        total.backward()
    for i in active:
        run = runs[i]
        if scaler is not None:
            scaler.unscale_(run.optimizer)
        clip = float(run.cfg.train.grad_clip)
        if clip:
            torch.nn.utils.clip_grad_norm_(run.model.parameters(), clip)
        if scaler is not None:
            scaler.step(run.optimizer)
        else:
            run.optimizer.step()
        run.scheduler.step_batch()
    if scaler is not None:
        scaler.update()


def _check_batch(epoch: int, step: int, model, runs, active: list[int], losses, failed: dict) -> None:
    """Record in `failed` and drop from `model` each member whose batch loss is NaN/inf or above its limit."""
    values = torch.stack([v.detach() for v in losses]).tolist()
    gone = set()
    for i, value in zip(active, values):
        if not np.isfinite(value) or value > _limits(runs[i])[0]:
            failed[i] = Diverged(epoch, f"train loss {value:.4g} at batch {step}")
            gone.add(i)
    if gone:
        _drop(model, gone)


def _epoch_results(epoch: int, model, runs, sums: dict, correct: dict, n: int, seconds: float,
                   failed: dict) -> dict:
    """{member: train metrics} of the active members; a member whose mean loss is over its limit is
    recorded in `failed` instead and dropped from `model`."""
    results, gone = {}, set()
    for i in model.active:
        mean = sums[i].item() / n
        limit = min(_limits(runs[i]))
        if not np.isfinite(mean) or mean > limit:
            failed[i] = Diverged(epoch, f"mean train loss {mean:.4g} (limit {limit:.3g})")
            gone.add(i)
        else:
            results[i] = {"train/loss": mean, "train/acc": correct[i].item() / n, "train/samples_per_s": n / seconds,
                          "train/seconds": seconds}
    if gone:
        _drop(model, gone)
    return results


@torch.no_grad()
def predict(model, features, data, indices, *, batch_size: int, amp_dtype, channels_last: bool
            ) -> dict[int, tuple[np.ndarray, np.ndarray, float]]:
    """{member: (probabilities (N, C), labels (N,), mean unweighted cross-entropy)} for the active members."""
    model.eval()
    probs, labels = [], []
    loss_sum = torch.zeros(len(model.active), dtype=torch.float64)
    for x, y in data.batches(indices, batch_size):
        x = features(x)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(data.device, amp_dtype):
            logits = model(x).float()                                  # (N, B, C)
        per = F.cross_entropy(logits.permute(0, 2, 1), y[:, None].expand(-1, logits.shape[1]), reduction="none")
        loss_sum += per.sum(0).double().cpu()
        probs.append(torch.softmax(logits, 2).cpu())
        labels.append(y.cpu())
    p = torch.cat(probs).numpy().astype(np.float64)                   # (N, B, C)
    lab = torch.cat(labels).numpy()
    count = max(len(p), 1)
    return {i: (p[:, b], lab, float(loss_sum[b]) / count) for b, i in enumerate(model.active)}
