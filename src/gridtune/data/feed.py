"""A trial's data: the cached clips, the grouped stratified split, and batches drawn on the device.

`prepare(cfg)` indexes the data root and opens (or builds) the shared cache; the sweep driver calls
it once before launching, and each trial calls it again (a cache hit). `split()` holds out whole
recordings per class, with a seed that is the same for every trial of a sweep. `DeviceData` moves
the cached waveforms to the trial's device once (kept per process, so several trials in one job
share it) and serves batches by index, with no DataLoader workers on the hot path.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import cache, layouts

_RESIDENT: dict = {}     # (cache path, device) -> tensor, shared by the trials of one process


@dataclass
class Prepared:
    entry: cache.CacheEntry
    classes: list[str]
    layout: str

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.entry.meta["labels"], dtype=np.int64)

    @property
    def groups(self) -> list[str]:
        return self.entry.meta["groups"]

    @property
    def skipped(self) -> list[dict]:
        return self.entry.meta["skipped"]


def prepare(cfg) -> Prepared:
    clips, classes, layout = layouts.index_train(cfg.data.root, cfg.data.layout,
                                                 list(cfg.data.classes) if cfg.data.classes else None)
    layouts.check_features(layout, cfg.features.name)
    params = cache.train_params(cfg.data, layout, cfg.features)
    entry = cache.load_or_build(cfg.data.root, cache.clips_as_items(clips), params,
                                cfg.data.cache_dir, cfg.data.on_bad_file)
    return Prepared(entry, classes, layout)


def split(labels: np.ndarray, groups: list[str], fractions: dict[str, float], seed: int
          ) -> dict[str, np.ndarray]:
    """Stratified, grouped split: {'train': idx, 'val': idx, ...}; no group spans two parts.

    Per class, recordings are shuffled with `seed` and handed to each held-out part until it holds
    its fraction of that class's clips; the rest train. A group is assigned by its first clip's class.
    """
    rng = np.random.default_rng(seed)
    by_group: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    group_class: dict[int, list[str]] = {}
    for g, idx in by_group.items():
        group_class.setdefault(int(labels[idx[0]]), []).append(g)
    parts = {name: [] for name in fractions}
    parts["train"] = []
    for c in sorted(group_class):
        gs = sorted(group_class[c])
        rng.shuffle(gs)
        n_class = sum(len(by_group[g]) for g in gs)
        for name, frac in fractions.items():
            want, taken = frac * n_class, 0
            # at least one recording per held-out part, then whole recordings while they bring the
            # part closer to its share; one recording always stays for training
            while len(gs) > 1 and want > 0:
                size = len(by_group[gs[-1]])
                if taken and abs(taken + size - want) >= abs(taken - want):
                    break
                parts[name].extend(by_group[gs.pop()])
                taken += size
        for g in gs:
            parts["train"].extend(by_group[g])
    return {k: np.array(sorted(v), dtype=np.int64) for k, v in parts.items()}


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class loss weights as sklearn's class_weight='balanced' over the classes present:
    n / (n_present * n_c), so every present class weighs n / n_present in all. A class with no
    training sample gets 0, not infinity: it never is a target, and an inf would poison the loss."""
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array; got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers; got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes - 1}]; got [{y.min()}, {y.max()}]")
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = np.zeros(n_classes)
    present = counts > 0
    w[present] = y.size / (present.sum() * counts[present])
    return w


class DeviceData:
    """Waveforms (or images) as one tensor, on the device when it fits, batches gathered by index."""

    def __init__(self, prepared: Prepared, device, resident: str = "auto", max_gb: float = 4.0):
        import torch
        waves = prepared.entry.waves
        size_gb = waves.size * 2 / 1e9
        on_device = resident == "always" or (resident == "auto" and size_gb <= max_gb)
        key = (str(prepared.entry.path), str(device) if on_device else "cpu")
        if key not in _RESIDENT:
            t = torch.from_numpy(np.array(waves))   # one read of the memmap; float16 (N, L) or (N, H, W)
            _RESIDENT[key] = t.to(device) if on_device else t
        self.x = _RESIDENT[key]
        self.y = torch.as_tensor(prepared.labels, device=device)
        self.device = device
        self.resident = on_device

    def batch(self, idx):
        """Float32 inputs and labels for sample indices `idx` (a LongTensor on the device)."""
        if self.resident:
            return self.x.index_select(0, idx).float(), self.y[idx]
        return self.x.index_select(0, idx.cpu()).to(self.device, non_blocking=True).float(), self.y[idx]

    def batches(self, indices, batch_size: int, generator=None, shuffle: bool = False, drop_last: bool = False):
        import torch
        idx = torch.as_tensor(indices, device=self.device)
        if shuffle:
            idx = idx[torch.randperm(len(idx), generator=generator).to(self.device)]
        n = len(idx)
        stop = n - n % batch_size if drop_last and n >= batch_size else n
        for s in range(0, stop, batch_size):
            yield self.batch(idx[s:s + batch_size])


class FeatureData:
    """DeviceData's interface over each clip's un-normalized log-mel, computed once per trial.

    The log-mel of a cached clip never changes (SpecAugment, which does, still runs per batch), so a
    trial computes it once instead of every epoch: per step only a gather and SpecAugment are left.
    """

    def __init__(self, data: DeviceData, raw, batch_size: int = 64):
        import torch
        with torch.no_grad():
            self.x = torch.cat([raw(data.x[s:s + batch_size].to(data.device).float())
                                for s in range(0, len(data.x), batch_size)])   # (N, 1, n_mels, frames)
        self.y, self.device, self.resident = data.y, data.device, True

    batch = DeviceData.batch
    batches = DeviceData.batches
