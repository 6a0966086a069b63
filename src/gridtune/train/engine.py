"""The training engine of a trial: build everything from the config, train epoch by epoch, checkpoint.

`TrialRun` owns one trial's model, optimizer, schedule and state. Each completed epoch is
checkpointed atomically (model, optimizer, scheduler, scaler, RNG states, history, best-so-far),
so a run killed at any moment resumes from its last completed epoch and ends with the same
metrics as an uninterrupted one. The best epoch's weights go to `best.pt` (weights_only-loadable).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from gridtune.config.knobs import EPOCH_COST_HINTS
from gridtune.data import feed as data_mod
from gridtune.sweepdir import claims, records
from . import frontend, metrics
from .loop import precision, predict, train_epoch
from .model import build_model
from .optim import build_optimizer, build_scheduler
from .runtime import load_torch, save_torch, set_cpu


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but no CUDA device is visible")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


# what a member of a fused group takes from the group's first run (TrialRun(shared=...))
SHARED = ("prepared", "split", "train_idx", "val_idx", "data", "classes", "gen", "features", "augment",
          "train_data", "train_features")


_PROCESS_RUNS = [0]   # TrialRuns (fused groups: one) built in this process so far: the first one runs cold


def _auto(flag, default: bool) -> bool:
    return default if flag == "auto" else bool(flag)


class TrialRun:
    def __init__(self, cfg, out_dir: Path, *, batch_size: int, tracker=None,
                 train_parts: tuple[str, ...] = ("train",), val_part: str = "val", epochs: int | None = None,
                 shared: TrialRun | None = None):
        """`train_parts` are the split parts fitted on (the final run adds "val"); `val_part` is evaluated
        each epoch; `epochs` overrides train.epochs (the final run's final.epochs). `shared`: a run on the
        same data, features and seed whose data, front end and batch-order generator this one reuses
        (the members of a fused group); only the model, optimizer, schedule and records are its own."""
        t_setup = time.perf_counter()
        set_cpu(cfg)
        self.cfg, self.out, self.batch_size, self.tracker = cfg, Path(out_dir), batch_size, tracker
        self.device = pick_device(cfg.device)
        self.epochs = int(epochs or cfg.train.epochs)
        self._group = shared._group if shared is not None else [0]    # runs on this data: a fused group's
        self._group[0] += 1
        # the process's first run pays its one-off warm-up (first kernels, allocator): a fused group's members with it
        self.cold = shared.cold if shared is not None else _PROCESS_RUNS[0] == 0
        _PROCESS_RUNS[0] += shared is None
        if shared is not None:
            for key in SHARED:
                setattr(self, key, getattr(shared, key))
        else:
            self.prepared = data_mod.prepare(cfg)
            fractions = {"val": float(cfg.data.val_fraction)}
            if cfg.data.test_fraction:
                fractions["test"] = float(cfg.data.test_fraction)
            self.split = data_mod.split(self.prepared.labels, self.prepared.groups, fractions,
                                        int(cfg.data.split_seed))
            self.train_idx = np.sort(np.concatenate([self.split[p] for p in train_parts]))
            self.val_idx = self.split[val_part]
            self.data = data_mod.DeviceData(self.prepared, self.device, cfg.data.resident,
                                            float(cfg.data.resident_max_gb))
            self.classes = self.prepared.classes
        self._build(shared)
        self.history: list[dict] = []
        self.best = {"value": None, "epoch": None, "metrics": None, "extra": None}
        self.bad_epochs, self.stopped_early, self.epoch = 0, False, 0
        self._resume()
        self.setup_s, self.first_epoch = time.perf_counter() - t_setup, self.epoch + 1

    # -- construction -------------------------------------------------------------------------
    def _build(self, shared: TrialRun | None = None) -> None:
        cfg, dev = self.cfg, self.device
        torch.manual_seed(int(cfg.seed))
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = _auto(cfg.train.cudnn_benchmark, True)
        n_samples = self.data.x.shape[-1]
        if shared is None:
            self._build_front_end(n_samples)
        shape = frontend.input_shape(cfg.features, n_samples) if cfg.features.name != "image" else tuple(self.data.x.shape[1:])
        self.model = build_model(cfg.model, len(self.classes), shape).to(dev)
        self.amp_dtype, use_scaler, self.channels_last = precision(cfg.train, dev)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        steps = max(len(self.train_idx) // self.batch_size, 1)
        self.scheduler = build_scheduler(self.optimizer, cfg.sched, epochs=self.epochs,
                                         steps_per_epoch=steps, objective_mode=cfg.objective_mode)
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        w = data_mod.class_weights(self.prepared.labels[self.train_idx], len(self.classes))
        self.class_weights = (torch.tensor(w, dtype=torch.float32, device=dev)
                              if cfg.train.class_weights == "balanced" else None)
        self.step_model = self.model
        trials_per_job = int(cfg.get("launcher", {}).get("trials_per_job", 1))
        if shared is None and _auto(cfg.train.compile, dev.type == "cuda" and trials_per_job >= 3):
            self.step_model = torch.compile(self.model)

    def _build_front_end(self, n_samples: int) -> None:
        """Batch-order generator, log-mel + normalization, SpecAugment, and what training reads.
        No random draws: the model built after it starts from the seed's first draw."""
        cfg, dev = self.cfg, self.device
        self.gen = torch.Generator().manual_seed(int(cfg.seed))    # batch order
        sr = int(cfg.data.sample_rate)
        self.features = frontend.Features(cfg.features, sr).to(dev)
        self.features.fit(x for x, _ in self.data.batches(self.train_idx[:256], 64))   # 256 clips pin mean/std
        self.augment = frontend.build_augment(cfg.augment).to(dev)
        # what training and validation read: log-mel computed once per trial where it fits beside the waves
        self.train_data, self.train_features = self.data, self.features
        if cfg.features.name == "logmel" and self.data.resident:
            n_mels, frames = frontend.input_shape(cfg.features, n_samples)
            if len(self.data.x) * n_mels * frames * 4 / 1e9 <= float(cfg.data.resident_max_gb):
                self.train_data = data_mod.FeatureData(self.data, self.features.raw)
                self.train_features = frontend.Normalized(self.features)

    # -- checkpoints ----------------------------------------------------------------------------
    def _state(self) -> dict:
        state = {"epoch": self.epoch, "model": self.model.state_dict(), "features": self.features.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "rng_cpu": torch.get_rng_state(), "rng_gen": self.gen.get_state(),
                 "history": self.history, "best": self.best, "bad_epochs": self.bad_epochs,
                 "cache_key": self.prepared.entry.key}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _resume(self) -> None:
        path = self.out / records.CHECKPOINT
        if not path.exists():
            return
        try:
            s = load_torch(path, self.device)
        except Exception as e:   # an unreadable checkpoint is reported and ignored: start over
            print(f"[gridtune] {path}: unreadable checkpoint ({type(e).__name__}); starting from epoch 1", flush=True)
            return
        if s.get("cache_key", self.prepared.entry.key) != self.prepared.entry.key:
            print(f"[gridtune] {path}: trained on other data (cache key {s['cache_key']}); starting from epoch 1",
                  flush=True)
            return
        self.model.load_state_dict(s["model"])
        self.features.load_state_dict(s["features"])
        self.optimizer.load_state_dict(s["optimizer"])
        self.scheduler.load_state_dict(s["scheduler"])
        if self.scaler is not None and "scaler" in s:
            self.scaler.load_state_dict(s["scaler"])
        torch.set_rng_state(s["rng_cpu"].cpu())
        self.gen.set_state(s["rng_gen"].cpu())
        if "rng_cuda" in s and self.device.type == "cuda":
            torch.cuda.set_rng_state(s["rng_cuda"].cpu(), self.device)
        self.epoch, self.history, self.best, self.bad_epochs = s["epoch"], s["history"], s["best"], s["bad_epochs"]
        print(f"[gridtune] resumed {self.out.name} after epoch {self.epoch}", flush=True)
        if self.tracker is not None:
            self.tracker.resume_from(self.history)

    # -- training -------------------------------------------------------------------------------
    def evaluate(self, indices) -> tuple[dict, dict]:
        probs, labels, loss = predict(self.step_model, self.train_features, self.train_data, indices,
                                      batch_size=int(self.cfg.train.eval_batch_size),
                                      amp_dtype=self.amp_dtype, channels_last=self.channels_last)
        return self.score(probs, labels, loss)

    def score(self, probs, labels, loss: float) -> tuple[dict, dict]:
        """(the epoch's val/* metrics, per-class accuracy and calibration) from predictions."""
        m = metrics.classification_metrics(probs, labels, self.classes)
        flat = {"val/loss": loss, **{f"val/{k}": m[k] for k in metrics.VAL_SCALARS}}
        return flat, {"per_class_acc": m["per_class_acc"], "calibration": m["calibration"]}

    def _improved(self, value: float) -> bool:
        if self.best["value"] is None:
            return True
        delta = float(self.cfg.train.early_stop.min_delta)
        sign = 1 if self.cfg.objective_mode == "max" else -1
        return sign * (value - self.best["value"]) > delta

    def fit(self) -> None:
        cfg, epochs = self.cfg, self.epochs
        while self.epoch < self.until and not self.stopped_early:
            epoch = self.epoch + 1
            lrs = self.scheduler.current_lrs()
            t0 = time.perf_counter()
            tr = train_epoch(epoch, self.step_model, self.train_features, self.augment, self.train_data,
                             self.train_idx, self.optimizer, self.scheduler, self.scaler, batch_size=self.batch_size,
                             generator=self.gen, amp_dtype=self.amp_dtype, l2=float(cfg.l2),
                             class_weights=self.class_weights, grad_clip=float(cfg.train.grad_clip),
                             diverge_loss=float(cfg.train.diverge_loss), channels_last=self.channels_last,
                             diverge_mean=float(cfg.train.diverge_factor) * math.log(len(self.classes)),
                             heartbeat=lambda: claims.heartbeat(self.out))
            val, extra = self.evaluate(self.val_idx)
            self.record_epoch(epoch, lrs, tr, val, extra, time.perf_counter() - t0)

    def record_epoch(self, epoch: int, lrs: dict, tr: dict, val: dict, extra: dict, seconds: float) -> None:
        """Everything after an epoch's validation: schedule step, history, best.pt, early-stop count,
        checkpoint, tracker, progress line."""
        cfg, epochs = self.cfg, self.epochs
        patience = int(cfg.train.early_stop.patience)
        value = {**tr, **val}[cfg.objective]
        self.scheduler.step_epoch(value)
        row = {"epoch": epoch, "lr": lrs, **tr, **val, "time_s": seconds}
        self.history.append(row)
        if self._improved(value):
            quality = {k: v for k, v in tr.items() if k in metrics.TRAIN_RECORDED}
            self.best = {"value": value, "epoch": epoch, "metrics": {**quality, **val}, "extra": extra}
            self.bad_epochs = 0
            save_torch(self.out / records.BEST, {"model": self.model.state_dict(),
                                                 "features": self.features.state_dict()})
        else:
            self.bad_epochs += 1
        self.epoch = epoch
        self.stopped_early = bool(patience) and self.bad_epochs >= patience and epoch < epochs
        records.write_history(self.out / records.HISTORY, self.history)
        save_torch(self.out / records.CHECKPOINT, self._state())
        if self.tracker is not None:
            self.tracker.log_epoch(row)
        print(f"[gridtune] {self.out.name} epoch {epoch}/{epochs} train/loss={tr['train/loss']:.4f} "
              f"val/loss={val['val/loss']:.4f} val/acc={val['val/acc']:.4f} ({row['time_s']:.1f}s)", flush=True)

    @property
    def until(self) -> int:
        """The epoch this run stops after: train.epochs, or successive halving's rung
        (train.stop_after_epoch), which ends the run early without changing the schedule, so the
        trial resumed later continues as if it had never paused."""
        stop_after = self.cfg.train.get("stop_after_epoch")
        return min(self.epochs, int(stop_after)) if stop_after else self.epochs

    @property
    def paused(self) -> bool:
        """Stopped by train.stop_after_epoch before train.epochs (not by early stopping)."""
        return self.epoch < self.epochs and not self.stopped_early

    def trained(self) -> dict:
        """How this run trained (result.json's `trained`): fused, and with how many runs (the members
        built on one shared run's data: a fused group), trials per job, device, and the precision of
        its forward pass (the autocast dtype, float32 without)."""
        return {"fused": self._group[0] > 1, "group_size": self._group[0],
                "trials_per_job": int(self.cfg.get("launcher", {}).get("trials_per_job", 1)),
                "device": str(self.device),
                "precision": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "float32"}

    def timing(self) -> dict:
        """What gridtune.checks.budget reads besides each epoch's `time_s` (history.jsonl): this run's setup
        seconds (data, front end, model, resume), whether it ran cold (the process's first run), the
        first epoch it trained, the clips its data index lists, the CPU threads it used and the speed
        hints that are no part of its identity (gridtune.config.knobs.EPOCH_COST_HINTS)."""
        return {"setup_s": self.setup_s, "cold": self.cold, "first_epoch": self.first_epoch,
                "n_clips": len(self.prepared.labels) + len(self.prepared.skipped),
                "threads": torch.get_num_threads() if self.device.type == "cpu" else None,
                "hints": {key: OmegaConf.select(self.cfg, key, default=None) for key in EPOCH_COST_HINTS}}

    def summary(self) -> dict:
        """The result.json fields this run knows (also after a divergence: the best epoch so far)."""
        best, trained = self.best, self.trained()
        sps = [h["train/samples_per_s"] for h in self.history]
        out = {"metrics": best["metrics"], "best_epoch": best["epoch"], "epochs_run": self.epoch,
               "n_val_clips": int(len(self.val_idx)),      # what a val metric is measured on (halving's noise)
               "stopped_early": self.stopped_early, "stopped_epoch": self.epoch if self.stopped_early else None,
               "train_samples_per_s": float(np.mean(sps)) if sps else None,
               "cache_hash": self.prepared.entry.key, "skipped_files": self.prepared.skipped,
               "n_skipped_files": len(self.prepared.skipped), "trained": trained, "device": trained["device"],
               "amp": "off" if trained["precision"] == "float32" else trained["precision"],
               "timing": self.timing()}
        if best["extra"]:
            out.update(best["extra"])
        if self.tracker is not None and best["metrics"]:
            self.tracker.summary({**best["metrics"], "best_epoch": best["epoch"], "epochs_run": self.epoch})
        return out
