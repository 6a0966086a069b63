"""Optimizer and learning-rate schedule builders for conf/optim/*.yaml and conf/sched/*.yaml.

The optimizer always has two parameter groups, named through a "name" key: "conv" (the model's
`features`, at `lr_conv`) and "head" (the model's `classifier`, at `lr_head`). Schedules scale
both groups by the same factor, so the ratio between the two learning rates is kept.

`Scheduler` hides whether a schedule moves per batch (cosine, warmup_cosine), per epoch (step) or
on the validation objective (plateau): the trainer calls `step_batch()` after every optimizer
step and `step_epoch(metric)` after every validation, whatever the schedule.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any, Callable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

from gridtune.config import rules, schema
from gridtune.config.rules import OPTIMIZER_KNOBS, SCHEDULE_KNOBS  # noqa: F401  (each option's knobs and defaults)

# Knobs each optimizer and schedule accepts, and their defaults, are the schemas' own fields
# (gridtune.config.rules reads them); the rules the builders below enforce are there too.
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    name: getattr(torch.optim, s.torch_class) for name, s in schema.OPTIMIZERS.items()}


def build_optimizer(model: nn.Module, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Build the optimizer of conf/optim/<name>.yaml with groups "conv" (features) and "head" (classifier).

    A learning rate of 0 freezes its group (both at 0 is rejected: nothing would train).
    `weight_decay` is torch's optimizer argument: decoupled (w -= lr·wd·w) for adamw, added to
    the gradient for the others, and applied to every parameter including biases and BatchNorm.
    It is separate from the trainer's `l2` loss penalty, which only touches conv/linear weights.
    """
    rules.raise_first(rules.optimizer(cfg))
    name, knobs, _ = rules.knobs("optim", cfg, rules.OPTIM_COMMON, OPTIMIZER_KNOBS)
    lr_conv, lr_head = float(cfg["lr_conv"]), float(cfg["lr_head"])
    kwargs: dict[str, Any] = {"weight_decay": float(cfg.get("weight_decay", 0.0))}
    for key, value in knobs.items():
        kwargs[key] = (tuple(float(b) for b in value) if key == "betas" else
                       value if key in ("nesterov", "centered") else float(value))

    features = getattr(model, "features", None)
    classifier = getattr(model, "classifier", None)
    if not isinstance(features, nn.Module) or not isinstance(classifier, nn.Module):
        raise ValueError(f"model {type(model).__name__} needs sub-modules 'features' and 'classifier' "
                         "for the conv/head parameter groups")
    conv_params = list(features.parameters())
    head_params = list(classifier.parameters())
    grouped = {id(p) for p in conv_params} | {id(p) for p in head_params}
    stray = [n for n, p in model.named_parameters() if id(p) not in grouped]
    if stray:
        raise ValueError(f"parameters outside model.features and model.classifier would not be trained: "
                         f"{', '.join(stray)}")
    groups = [
        {"params": conv_params, "lr": lr_conv, "name": "conv"},
        {"params": head_params, "lr": lr_head, "name": "head"},
    ]
    # the lr argument is only the default for groups without one; both groups set theirs
    return OPTIMIZERS[name](groups, lr=lr_conv, **kwargs)


class Scheduler:
    """Learning-rate schedule over the optimizer's groups, stepped per batch and per epoch.

    `unit` says what advances the underlying torch scheduler: "batch", "epoch", "metric"
    (ReduceLROnPlateau) or None (constant). The other step method is then a no-op, so the trainer
    never needs to know which schedule it runs.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, name: str,
                 inner: LambdaLR | ReduceLROnPlateau | None, unit: str | None) -> None:
        self.optimizer = optimizer
        self.name = name
        self.unit = unit
        self._inner = inner
        self.batches = 0  # optimizer steps seen so far
        self.epochs = 0   # epochs seen so far

    def step_batch(self) -> None:
        """Call after every optimizer step."""
        self.batches += 1
        if self.unit == "batch":
            self._inner.step()

    def step_epoch(self, metric: float | None = None) -> None:
        """Call after each epoch's validation with the objective (plateau needs it; others ignore it).

        With plateau, `metric=None` (no validation this epoch) leaves its counters untouched.
        """
        self.epochs += 1
        if self.unit == "epoch":
            self._inner.step()
        elif self.unit == "metric" and metric is not None:
            self._inner.step(float(metric))

    def current_lrs(self) -> dict[str, float]:
        """Learning rate of every group, by group name."""
        return {str(g.get("name", i)): float(g["lr"]) for i, g in enumerate(self.optimizer.param_groups)}

    def state_dict(self) -> dict[str, Any]:
        # The group LRs are saved too: restoring them makes the current LR right even when the
        # fresh scheduler is built after the optimizer state was loaded (its constructor resets them).
        return {
            "name": self.name,
            "batches": self.batches,
            "epochs": self.epochs,
            "lrs": [float(g["lr"]) for g in self.optimizer.param_groups],
            "inner": copy.deepcopy(self._inner.state_dict()) if self._inner is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"sched.name={self.name!r} does not match the checkpoint's schedule {state.get('name')!r}")
        if len(state["lrs"]) != len(self.optimizer.param_groups):
            raise ValueError(f"checkpoint has {len(state['lrs'])} parameter groups, "
                             f"the optimizer has {len(self.optimizer.param_groups)}")
        self.batches = int(state["batches"])
        self.epochs = int(state["epochs"])
        if self._inner is not None:
            self._inner.load_state_dict(copy.deepcopy(state["inner"]))
        for group, lr in zip(self.optimizer.param_groups, state["lrs"]):
            group["lr"] = lr


def _cosine(progress: float, floor: float) -> float:
    """Factor going from 1 at progress 0 to `floor` at progress 1 along half a cosine."""
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any], *, epochs: int,
                    steps_per_epoch: int, objective_mode: str = "max") -> Scheduler:
    """Build the schedule of conf/sched/<name>.yaml for a run of `epochs` × `steps_per_epoch` optimizer steps.

    Per-batch schedules index their factor by the number of optimizer steps taken: the first batch
    runs at factor(0) and after the last one (step epochs·steps_per_epoch) the LR is at its end
    value. A warm-up longer than the run is cut at the run's end (useful for 1-epoch smoke runs).
    """
    rules.raise_first(rules.schedule(cfg, epochs=epochs, steps_per_epoch=steps_per_epoch,
                                                     objective_mode=objective_mode))
    name, knobs, _ = rules.knobs("sched", cfg, ("name",), SCHEDULE_KNOBS)
    epochs, steps_per_epoch = int(epochs), int(steps_per_epoch)
    total = epochs * steps_per_epoch

    if name == "constant":
        return Scheduler(optimizer, name, None, None)

    if name == "plateau":
        return Scheduler(optimizer, name, _plateau(optimizer, knobs, objective_mode), "metric")
    factor, unit = _lambda_factor(name, knobs, total=total, steps_per_epoch=steps_per_epoch)
    # plain functions (not callable objects) so that LambdaLR's state holds no copy of the
    # schedule's shape: a resumed run follows the config it was resumed with
    return Scheduler(optimizer, name, LambdaLR(optimizer, factor), unit)


def _plateau(optimizer: torch.optim.Optimizer, knobs: Mapping[str, Any], objective_mode: str) -> ReduceLROnPlateau:
    """The torch ReduceLROnPlateau of the plateau schedule's knobs."""
    return ReduceLROnPlateau(
        optimizer,
        mode=objective_mode,
        factor=float(knobs["factor"]),
        patience=int(knobs["patience"]),
        threshold=float(knobs["threshold"]),
        threshold_mode=knobs["threshold_mode"],
        cooldown=int(knobs["cooldown"]),
        min_lr=float(knobs["min_lr"]),
    )


def _lambda_factor(name: str, knobs: Mapping[str, Any], *, total: int,
                   steps_per_epoch: int) -> tuple[Callable[[int], float], str]:
    """(LR factor function, its unit "epoch" or "batch") of the step, cosine or warmup_cosine schedule."""
    factor: Callable[[int], float]
    if name == "step":
        step_size = int(knobs["step_size"])
        gamma = float(knobs["gamma"])

        def factor(epoch: int) -> float:
            return gamma ** (epoch // step_size)

        return factor, "epoch"
    if name == "cosine":
        floor = float(knobs["min_lr_factor"])

        def factor(step: int) -> float:
            return _cosine(step / total, floor)

        return factor, "batch"
    # warmup_cosine
    warmup_epochs = float(knobs["warmup_epochs"])
    start = float(knobs["warmup_start_factor"])
    floor = float(knobs["min_lr_factor"])
    warmup = min(round(warmup_epochs * steps_per_epoch), total)

    def factor(step: int) -> float:
        if step < warmup:
            return start + (1.0 - start) * step / warmup
        if total == warmup:  # warm-up takes the whole run: no cosine phase
            return 1.0
        return _cosine((step - warmup) / (total - warmup), floor)

    return factor, "batch"
