"""The one plain training loop: an epoch of training, and prediction over a split.

No framework: batches come from `DeviceData`, features and SpecAugment run on the device, the
forward pass runs under bf16/fp16 autocast when asked, the loss is class-weighted cross-entropy
plus the explicit L2 penalty, and a NaN, inf or exploding loss raises `Diverged` so the trial can
record it instead of training on garbage.
"""
from __future__ import annotations

import contextlib
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from .model import l2_penalty

CHECK_EVERY = 16   # batches between finiteness checks (each check syncs the device)


class Diverged(RuntimeError):
    def __init__(self, epoch: int, reason: str):
        super().__init__(f"diverged in epoch {epoch}: {reason}")
        self.epoch, self.reason = epoch, reason


# oneDNN's instruction-set caps (ONEDNN_MAX_CPU_ISA) under which it uses no bf16 instructions
NO_BF16_ISAS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


def cpu_has_bf16() -> bool:
    """Native bf16 matrix instructions (AVX512-BF16 or AMX): there bf16 autocast measured 1.9x faster
    than fp32 for the default model (scripts/bench.py, section a); without them it is emulated.
    GRIDTUNE_CPU_BF16=1|0 overrides what the CPU says (to run either path on any machine), and
    ONEDNN_MAX_CPU_ISA capped below bf16 counts as no native bf16, as it does for oneDNN."""
    forced = os.environ.get("GRIDTUNE_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in NO_BF16_ISAS:
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_amp(mode: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use GradScaler) for train.amp on this device."""
    if mode == "off" or (mode == "auto" and device.type == "cpu" and not cpu_has_bf16()):
        return None, False
    if device.type == "cpu":
        return torch.bfloat16, False
    if mode == "bf16" or (mode == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16, False
    return torch.float16, device.type == "cuda"   # fp16 needs loss scaling


def precision(train, device: torch.device, amp: str | None = None) -> tuple[torch.dtype | None, bool, bool]:
    """(autocast dtype or None, use GradScaler, channels_last) as `train.amp` (or `amp`) and
    `train.channels_last` resolve on this device: what training, the final run's test evaluation and
    predict all run under."""
    amp_dtype, use_scaler = resolve_amp(amp or str(train.amp), device)
    flag = train.channels_last
    channels_last = True if str(flag) == "auto" else bool(flag)     # auto: measured faster on CUDA and CPU
    return amp_dtype, use_scaler, channels_last


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def train_epoch(epoch: int, model, features, augment, data, indices, optimizer, scheduler, scaler,
                *, batch_size: int, generator, amp_dtype, l2: float, class_weights, grad_clip: float,
                diverge_loss: float, channels_last: bool, heartbeat=None, diverge_mean: float = float("inf")) -> dict:
    """One epoch. Raises Diverged when a batch loss is NaN/inf or above `diverge_loss`, or when the
    epoch's mean loss is above `diverge_mean` (a model worse than chance by that much is not learning)."""
    model.train()
    augment.train()
    device = data.device
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    n, t0 = 0, time.perf_counter()
    for step, (x, y) in enumerate(data.batches(indices, batch_size, generator, shuffle=True, drop_last=True)):
        with torch.no_grad():
            x = augment(features(x))                                   # (B, 1, n_mels, frames)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp_dtype):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, weight=class_weights)
        total = loss + l2 * l2_penalty(model) if l2 else loss
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(total).backward()
            scaler.unscale_(optimizer)
        else:
            total.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step_batch()
        loss_sum += loss.detach() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        n += len(y)
        if step % CHECK_EVERY == 0:
            value = loss.item()
            if not np.isfinite(value) or value > diverge_loss:
                raise Diverged(epoch, f"train loss {value:.4g} at batch {step}")
            if heartbeat is not None:
                heartbeat()
    if n == 0:
        raise ValueError(f"train.batch_size={batch_size}: larger than the training split ({len(indices)} clips)")
    mean = loss_sum.item() / n
    if not np.isfinite(mean) or mean > min(diverge_loss, diverge_mean):
        raise Diverged(epoch, f"mean train loss {mean:.4g} (limit {min(diverge_loss, diverge_mean):.3g})")
    seconds = time.perf_counter() - t0
    return {"train/loss": mean, "train/acc": correct.item() / n, "train/samples_per_s": n / seconds,
            "train/seconds": seconds}


@torch.no_grad()
def predict(model, features, data, indices, *, batch_size: int, amp_dtype, channels_last: bool
            ) -> tuple[np.ndarray, np.ndarray, float]:
    """(probabilities (N, C), labels (N,), mean unweighted cross-entropy) over `indices`."""
    model.eval()
    probs, labels, loss_sum = [], [], 0.0
    for x, y in data.batches(indices, batch_size):
        x = features(x)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(data.device, amp_dtype):
            logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        probs.append(torch.softmax(logits, 1).cpu())
        labels.append(y.cpu())
    p = torch.cat(probs).numpy().astype(np.float64)
    return p, torch.cat(labels).numpy(), loss_sum / max(len(p), 1)
