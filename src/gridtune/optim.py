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

from . import schema

# Knobs each optimizer and schedule accepts besides its common keys, with the torch default used when
# a key is left out: the schemas' own fields (gridtune.schema), which also name the options.
OPTIMIZER_KNOBS: dict[str, dict[str, Any]] = {
    name: schema.knobs(s, ("name", "lr_conv", "lr_head", "weight_decay")) for name, s in schema.OPTIMIZERS.items()}
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    name: getattr(torch.optim, s.torch_class) for name, s in schema.OPTIMIZERS.items()}
SCHEDULE_KNOBS: dict[str, dict[str, Any]] = {name: schema.knobs(s) for name, s in schema.SCHEDULES.items()}


def _bad(section: str, key: str, value: Any, expected: str) -> ValueError:
    return ValueError(f"{section}.{key}={value!r} is not valid; expected {expected}")


def _number(section: str, key: str, value: Any, lo: float, hi: float = math.inf, *,
            lo_open: bool = False, hi_open: bool = False, integer: bool = False) -> float:
    """Check that value is a real number (an int if `integer`) in the given interval."""
    kinds = (int,) if integer else (int, float)
    left = "(" if lo_open else "["
    right = ")" if hi_open or hi == math.inf else "]"
    expected = f"{'an int' if integer else 'a number'} in {left}{lo}, {hi}{right}"
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
        raise _bad(section, key, value, expected)
    if value < lo or (lo_open and value == lo) or value > hi or (hi_open and value == hi):
        raise _bad(section, key, value, expected)
    return value


def _bool(section: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _bad(section, key, value, "true or false")
    return value


def _knobs(section: str, cfg: Mapping[str, Any], common: tuple[str, ...],
           table: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """Return (name, knobs with defaults filled in); reject unknown names and stray keys."""
    name = cfg.get("name")
    if name not in table:
        raise ValueError(f"{section}.name={name!r} is not valid; expected one of: {', '.join(table)}")
    allowed = (*common, *table[name])
    for key in cfg.keys():
        if key not in allowed:
            # e.g. optim.momentum with adam would otherwise be silently ignored
            raise ValueError(f"{section}.{key} does not apply to {section}.name={name!r}; "
                             f"valid keys: {', '.join(allowed)}")
    knobs = {key: cfg[key] if key in cfg else default for key, default in table[name].items()}
    return name, knobs


def build_optimizer(model: nn.Module, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Build the optimizer of conf/optim/<name>.yaml with groups "conv" (features) and "head" (classifier).

    A learning rate of 0 freezes its group (both at 0 is rejected: nothing would train).
    `weight_decay` is torch's optimizer argument: decoupled (w -= lr·wd·w) for adamw, added to
    the gradient for the others, and applied to every parameter including biases and BatchNorm.
    It is separate from the trainer's `l2` loss penalty, which only touches conv/linear weights.
    """
    name, knobs = _knobs("optim", cfg, ("name", "lr_conv", "lr_head", "weight_decay"), OPTIMIZER_KNOBS)
    for key in ("lr_conv", "lr_head"):
        if key not in cfg:
            raise ValueError(f"optim.{key} is missing; expected a number >= 0")
    lr_conv = float(_number("optim", "lr_conv", cfg["lr_conv"], 0.0))
    lr_head = float(_number("optim", "lr_head", cfg["lr_head"], 0.0))
    if lr_conv == 0.0 and lr_head == 0.0:
        raise ValueError("optim.lr_conv=0 and optim.lr_head=0 are not valid together; at least one must be > 0")
    weight_decay = float(_number("optim", "weight_decay", cfg.get("weight_decay", 0.0), 0.0))

    kwargs: dict[str, Any] = {"weight_decay": weight_decay}
    for key, value in knobs.items():
        if key == "betas":
            betas = list(value) if hasattr(value, "__iter__") and not isinstance(value, str) else None
            if betas is None or len(betas) != 2:
                raise _bad("optim", key, value, "a list of two numbers in [0, 1)")
            kwargs[key] = tuple(float(_number("optim", key, b, 0.0, 1.0, hi_open=True)) for b in betas)
        elif key in ("nesterov", "centered"):
            kwargs[key] = _bool("optim", key, value)
        elif key == "eps":
            kwargs[key] = float(_number("optim", key, value, 0.0, lo_open=True))
        elif key == "alpha":
            kwargs[key] = float(_number("optim", key, value, 0.0, 1.0))
        elif key == "dampening":
            kwargs[key] = float(_number("optim", key, value, 0.0, 1.0))
        else:  # momentum, lr_decay, initial_accumulator_value
            kwargs[key] = float(_number("optim", key, value, 0.0))
    if name == "sgd" and kwargs["nesterov"] and (kwargs["momentum"] == 0.0 or kwargs["dampening"] != 0.0):
        raise ValueError(f"optim.nesterov=True needs momentum > 0 and dampening = 0; "
                         f"got momentum={kwargs['momentum']}, dampening={kwargs['dampening']}")

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
    name, knobs = _knobs("sched", cfg, ("name",), SCHEDULE_KNOBS)
    epochs = int(_number("sched", "epochs", epochs, 1, integer=True))
    steps_per_epoch = int(_number("sched", "steps_per_epoch", steps_per_epoch, 1, integer=True))
    total = epochs * steps_per_epoch

    if name == "constant":
        return Scheduler(optimizer, name, None, None)

    if name == "plateau":
        if objective_mode not in ("min", "max"):
            raise _bad("sched", "objective_mode", objective_mode, "one of: min, max")
        if knobs["threshold_mode"] not in ("rel", "abs"):
            raise _bad("sched", "threshold_mode", knobs["threshold_mode"], "one of: rel, abs")
        inner = ReduceLROnPlateau(
            optimizer,
            mode=objective_mode,
            factor=float(_number("sched", "factor", knobs["factor"], 0.0, 1.0, lo_open=True, hi_open=True)),
            patience=int(_number("sched", "patience", knobs["patience"], 0, integer=True)),
            threshold=float(_number("sched", "threshold", knobs["threshold"], 0.0)),
            threshold_mode=knobs["threshold_mode"],
            cooldown=int(_number("sched", "cooldown", knobs["cooldown"], 0, integer=True)),
            min_lr=float(_number("sched", "min_lr", knobs["min_lr"], 0.0)),
        )
        return Scheduler(optimizer, name, inner, "metric")

    factor: Callable[[int], float]
    if name == "step":
        step_size = int(_number("sched", "step_size", knobs["step_size"], 1, integer=True))
        gamma = float(_number("sched", "gamma", knobs["gamma"], 0.0, 1.0, lo_open=True))

        def factor(epoch: int) -> float:
            return gamma ** (epoch // step_size)

        unit = "epoch"
    elif name == "cosine":
        floor = float(_number("sched", "min_lr_factor", knobs["min_lr_factor"], 0.0, 1.0))

        def factor(step: int) -> float:
            return _cosine(step / total, floor)

        unit = "batch"
    else:  # warmup_cosine
        warmup_epochs = float(_number("sched", "warmup_epochs", knobs["warmup_epochs"], 0.0))
        start = float(_number("sched", "warmup_start_factor", knobs["warmup_start_factor"], 0.0, 1.0))
        floor = float(_number("sched", "min_lr_factor", knobs["min_lr_factor"], 0.0, 1.0))
        warmup = min(round(warmup_epochs * steps_per_epoch), total)

        def factor(step: int) -> float:
            if step < warmup:
                return start + (1.0 - start) * step / warmup
            if total == warmup:  # warm-up takes the whole run: no cosine phase
                return 1.0
            return _cosine((step - warmup) / (total - warmup), floor)

        unit = "batch"
    # plain functions (not callable objects) so that LambdaLR's state holds no copy of the
    # schedule's shape: a resumed run follows the config it was resumed with
    return Scheduler(optimizer, name, LambdaLR(optimizer, factor), unit)
