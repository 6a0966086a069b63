"""Benchmark of the data paths: the trial's real path against synthetic tensors and a naive DataLoader.

All three feed the same `train_epoch` with the same number of samples per round; rounds alternate
between them, and the order rotates from round to round, so that a slow moment of the machine, or
the wake of the one before (the naive loader's exiting worker), hits each path alike:

  real       a TrialRun's parts: cache -> DeviceData on the device -> log-mel -> SpecAugment -> step
  synthetic  the same model and flags on a (B, 1, n_mels, frames) tensor already on the device
  naive      a torch DataLoader whose Dataset runs librosa.load (resampling) and librosa's log-mel
             for every item, every epoch; fp32, NCHW, eager, no SpecAugment
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bench_steps import SyntheticData, build_parts, compose, sync, timed_epoch


class LibrosaClips:
    """Dataset: (normalized log-mel (1, n_mels, frames) float32, label), decoded from the file each time."""

    def __init__(self, root: Path, paths: list[str], labels: list[int], features, sample_rate: int,
                 n_samples: int, mean: float, std: float):
        import librosa   # imported (and its lazy submodules loaded) here, so forked workers inherit them
        _ = (librosa.load, librosa.feature.melspectrogram, librosa.power_to_db)
        self.root, self.paths, self.labels = Path(root), paths, labels
        self.f, self.sr, self.n = features, sample_rate, n_samples
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        import librosa
        f = self.f
        x, _ = librosa.load(self.root / self.paths[i], sr=self.sr, mono=True)
        x = x[:self.n] if len(x) >= self.n else np.pad(x, (0, self.n - len(x)))
        # the same transform as gridtune.train.frontend.Features: slaney mel, power 2, reflect padding, 80 dB floor
        s = librosa.feature.melspectrogram(y=x, sr=self.sr, n_fft=int(f.n_fft), hop_length=int(f.hop_length),
                                           win_length=f.win_length, n_mels=int(f.n_mels), fmin=float(f.f_min),
                                           fmax=f.f_max, power=2.0, norm="slaney", htk=False, pad_mode="reflect")
        db = librosa.power_to_db(s, ref=1.0, amin=1e-10, top_db=float(f.top_db))
        return ((db - self.mean) / self.std).astype(np.float32)[None], int(self.labels[i])


class NaiveData:
    """DataLoader-backed batches with DeviceData's interface; a new loader (and workers) every epoch."""

    def __init__(self, dataset: LibrosaClips, device, workers: int):
        self.ds, self.device, self.workers = dataset, device, workers

    def batches(self, indices, batch_size, generator=None, shuffle=False, drop_last=False):
        from torch.utils.data import DataLoader, Subset
        loader = DataLoader(Subset(self.ds, [int(i) for i in indices]), batch_size=batch_size, shuffle=shuffle,
                            drop_last=drop_last, num_workers=self.workers, generator=generator,
                            pin_memory=self.device.type == "cuda")
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def auto_flags(data_root: Path, overrides, device, tmp: Path, batch: int) -> dict:
    """The speed flags a trial ends up with on this device (its `auto` choices unless overridden), read
    from TrialRuns built exactly as a trial builds them, with launcher.trials_per_job 1 and 3."""
    import torch

    from gridtune.train.engine import TrialRun
    out = {}
    for k in (1, 3):
        cfg = compose([f"data.root={data_root}", *overrides, f"launcher.trials_per_job={k}"])
        run = TrialRun(cfg, Path(tmp) / f"auto_k{k}", batch_size=batch)
        if k == 1:
            out["amp"] = str(run.amp_dtype).replace("torch.", "") if run.amp_dtype else "off"
            out["channels_last"] = bool(run.channels_last)
            out["cudnn_benchmark"] = device.type == "cuda" and bool(torch.backends.cudnn.benchmark)
        out[f"compile_k{k}"] = run.step_model is not run.model
        del run
    return out


def paired(slow: list[float], fast: list[float]) -> float:
    """Median over rounds of slow/fast time: a drift of the machine's speed cancels within a round."""
    return float(np.median([s / f for s, f in zip(slow, fast)]))


def section_data(data_root: Path, overrides, device, sizes: dict, log) -> dict:
    """b. real vs synthetic and f. gridtune vs naive, as samples/s over the same samples per round."""
    import torch

    from gridtune.train import frontend
    from gridtune.train.engine import TrialRun
    batch, steps, rounds = sizes["batch"], sizes["data_steps"], sizes["rounds"]
    cfg = compose([f"data.root={data_root}", *overrides])
    if cfg.features.name != "logmel":
        raise ValueError(f"features.name={cfg.features.name}: the data-path benchmark needs log-mel features")
    run = TrialRun(cfg, Path(sizes["tmp"]) / "trial", batch_size=batch)
    n, n_classes = steps * batch, len(run.classes)
    idx = np.resize(run.train_idx, n)                  # repeats clips when the split is smaller than n
    shape = frontend.input_shape(cfg.features, run.data.x.shape[-1])
    g = torch.Generator().manual_seed(0)
    synth = SyntheticData(torch.randn(batch, 1, *shape, generator=g).to(device),
                          torch.randint(0, n_classes, (batch,), generator=g).to(device))
    real_parts = {"model": run.step_model, "optimizer": run.optimizer, "scheduler": run.scheduler,
                  "scaler": run.scaler, "amp_dtype": run.amp_dtype, "channels_last": run.channels_last,
                  "class_weights": run.class_weights}
    meta = run.prepared.entry.meta
    ds = LibrosaClips(data_root, meta["paths"], meta["labels"], cfg.features, int(cfg.data.sample_rate),
                      int(run.data.x.shape[-1]), float(run.features.mean), float(run.features.std))
    naive = NaiveData(ds, device, sizes["naive_workers"])
    naive_parts = build_parts(cfg, device, shape, n_classes, labels=run.prepared.labels[run.train_idx])
    ident = torch.nn.Identity()
    # what TrialRun.fit feeds train_epoch (precomputed log-mel where the engine keeps it, else waves)
    feed_data, feed_features = getattr(run, "train_data", run.data), getattr(run, "train_features", run.features)
    augment = run.augment
    paths = {
        "real": lambda ix: timed_epoch(real_parts, feed_data, feed_features, augment, ix, batch, cfg),
        "synthetic": lambda ix: timed_epoch(real_parts, synth, ident, ident, ix, batch, cfg),
        "naive": lambda ix: timed_epoch(naive_parts, naive, ident, ident, ix, batch, cfg),
    }
    for fn in paths.values():                          # warm-up: one step each
        fn(idx[:batch])
    times: dict[str, list[float]] = {k: [] for k in paths}
    names = list(paths)
    for r in range(rounds):
        for name in names[r % 3:] + names[:r % 3]:   # each path takes each place in the order in turn
            times[name].append(paths[name](idx))
        log(f"b/f. round {r + 1}/{rounds}: " + ", ".join(f"{k} {n / v[-1]:.1f}/s" for k, v in times.items()))
    # the data path alone (no model): how much of a step it can cost at most
    augment.train()
    sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        for x, _ in feed_data.batches(idx, batch, drop_last=True):
            augment(feed_features(x))
    sync(device)
    feed = time.perf_counter() - t0
    med = {k: float(np.median(v)) for k, v in times.items()}
    out = {"samples_per_round": n, "rounds": rounds, "batch": batch, "input_shape": list(shape),
           "amp": str(run.amp_dtype).replace("torch.", "") if run.amp_dtype else "off",
           "channels_last": run.channels_last, "compiled": run.step_model is not run.model,
           "naive_workers": sizes["naive_workers"], "seconds": times, "feed": type(feed_data).__name__,
           "samples_per_s": {k: n / v for k, v in med.items()}, "feed_only_samples_per_s": n / feed,
           # each round's own ratio (its paths ran back to back), then the median over rounds
           "real_vs_synthetic": paired(times["synthetic"], times["real"]),
           "gridtune_vs_naive": paired(times["naive"], times["real"])}
    return out
