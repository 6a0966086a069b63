"""Build-checking: every part of a trial built once on torch's meta device, before anything runs.

`check_builds(cfg)` builds the front end, augmentation, model, optimizer and schedule exactly as a
trial will (on the meta device, so nothing is allocated). The builders' own rules (an even kernel
size, nesterov without momentum, a knob that does not apply to the chosen optimizer) are
gridtune.config.rules, which gridtune.config.checks runs without torch too, so planning refuses the same;
building them here is the driver's proof that the parts really build. Results are memoized per
distinct config of those parts. This module owns the torch import of the validation path; the
validation path imports it lazily.
"""
from __future__ import annotations

import json

import torch
from omegaconf import DictConfig, OmegaConf

from gridtune.config.rules import shape_of
from gridtune.train.frontend import Features, build_augment
from gridtune.train.model import build_model
from gridtune.train.optim import build_optimizer, build_scheduler

_BUILT: dict[str, str | None] = {}


def check_builds(cfg: DictConfig) -> list[str]:
    """The first builder error for this config's parts as a one-line problem, else []."""
    parts = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("features", "model", "optim", "sched", "augment")}
    parts["shape"] = [cfg.data.sample_rate, cfg.data.clip_seconds, len(cfg.data.classes or [0, 1]),
                      cfg.train.epochs, cfg.objective_mode]
    key = json.dumps(parts, sort_keys=True, default=str)
    if key not in _BUILT:
        _BUILT[key] = _try_build(cfg)
    return [] if _BUILT[key] is None else [_BUILT[key]]


def _try_build(cfg: DictConfig) -> str | None:
    try:
        Features(cfg.features, int(cfg.data.sample_rate))
        build_augment(cfg.augment)
        n_classes, shape = shape_of(cfg)
        with torch.device("meta"):
            model = build_model(cfg.model, n_classes, shape)
        optimizer = build_optimizer(model, cfg.optim)
        build_scheduler(optimizer, cfg.sched, epochs=int(cfg.train.epochs), steps_per_epoch=10,
                        objective_mode=str(cfg.objective_mode))
    except (ValueError, TypeError, KeyError, RuntimeError) as e:
        return " ".join(str(e).split())
    return None
