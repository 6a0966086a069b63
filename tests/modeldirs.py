"""Tiny trained-model directories for the predict and export tests, made in a second without training.

`make_final_dir` writes what `python -m gridtune.final` leaves (model.pt, final_config.yaml,
final.json) for a debug-sized model whose weights, BatchNorm statistics and normalization are
seeded random values, with a per-class output bias so that probabilities differ between classes
and a threshold splits them. `make_trial_dir` writes a trial directory (best.pt, .hydra/config.yaml).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import compose
from omegaconf import OmegaConf

from gridtune.train import frontend
from gridtune.data.demo import CLASSES
from gridtune.train.model import build_model
from gridtune.train.runtime import save_torch


def _weights(cfg, seed: int) -> dict:
    torch.manual_seed(seed)
    features = frontend.Features(cfg.features, int(cfg.data.sample_rate))
    features.mean.fill_(-40.0)
    features.std.fill_(15.0)
    model = build_model(cfg.model, len(CLASSES), frontend.input_shape(cfg.features, 48000))
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    with torch.no_grad():
        model.classifier[-1].bias.copy_(torch.linspace(-1.0, 1.0, len(CLASSES)))
    return {"model": model.state_dict(), "features": features.state_dict()}


def make_final_dir(path: Path, data_root: Path, threshold: float = 0.1, seed: int = 0) -> Path:
    cfg = compose("preset=debug", f"data.root={data_root}", "sweep_name=tiny")
    path.mkdir(parents=True, exist_ok=True)
    save_torch(path / "model.pt", _weights(cfg, seed))
    (path / "final_config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    rec = {"schema": 1, "trial_id": "t0tiny0000", "sweep": "tiny", "sweep_dir": str(path.parent),
           "objective": "val/acc", "winner_value": 0.5, "overrides": ["preset=debug", "lr=0.001"],
           "train_on": "train+val", "epochs_run": 2, "weights": "last epoch (2)", "n_train_clips": 66,
           "threshold": threshold, "threshold_source": "sweep winner's best.pt on val",
           "classes": list(CLASSES), "cache_hash": "0123456789abcdef", "git_sha": "f" * 40, "git_dirty": False,
           "test": {"mode": "irmas_test", "micro_f1": 0.25, "macro_f1": 0.2, "n_clips": 4, "n_windows": 19,
                    "per_class_f1": {c: 0.1 for c in CLASSES}, "window_s": 3.0, "hop_s": 1.5}}
    (path / "final.json").write_text(json.dumps(rec))
    return path


def make_trial_dir(path: Path, data_root: Path, seed: int = 1) -> Path:
    cfg = compose("preset=debug", f"data.root={data_root}", "sweep_name=tiny")
    (path / ".hydra").mkdir(parents=True, exist_ok=True)
    save_torch(path / "best.pt", _weights(cfg, seed))
    (path / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return path
