"""Tests for gridtune.train.optim: every optimizer/schedule yaml builds, group LRs apply, schedules hit their values."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import load_option
from gridtune.train.model import AudioCNN
from gridtune.train.optim import OPTIMIZERS, SCHEDULE_KNOBS, build_optimizer, build_scheduler

CONF = Path(__file__).resolve().parents[1] / "conf"
SHAPE = (16, 16)


def load_optim_cfg(name: str, lr_conv: float = 1e-2, lr_head: float = 1e-2) -> dict:
    # the optim yaml interpolates the top-level lr_conv / lr_head; supply them from a parent
    root = OmegaConf.create({"lr_conv": lr_conv, "lr_head": lr_head,
                             "optim": load_option(CONF / "optim" / f"{name}.yaml")})
    return OmegaConf.to_container(root.optim, resolve=True)


def load_sched_cfg(name: str, **overrides) -> dict:
    cfg = OmegaConf.to_container(load_option(CONF / "sched" / f"{name}.yaml"), resolve=True)
    cfg.update(overrides)
    return cfg


def tiny_model() -> AudioCNN:
    torch.manual_seed(0)
    return AudioCNN(n_classes=3, channels=(4, 8), hidden=6, input_shape=SHAPE)


def train_step(model: AudioCNN, optimizer: torch.optim.Optimizer) -> None:
    x = torch.randn(4, 1, *SHAPE)
    y = torch.tensor([0, 1, 2, 0])
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()


def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(b, p.detach()) for b, p in zip(before, module.parameters()))


def all_unchanged(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return all(torch.equal(b, p.detach()) for b, p in zip(before, module.parameters()))


def test_every_optimizer_has_a_yaml():
    assert sorted(p.stem for p in (CONF / "optim").glob("*.yaml")) == sorted(OPTIMIZERS)
    assert sorted(p.stem for p in (CONF / "sched").glob("*.yaml")) == sorted(SCHEDULE_KNOBS)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_yaml_builds_and_steps(name):
    model = tiny_model()
    optimizer = build_optimizer(model, load_optim_cfg(name, lr_conv=1e-2, lr_head=3e-2))
    assert isinstance(optimizer, OPTIMIZERS[name])
    assert [(g["name"], g["lr"]) for g in optimizer.param_groups] == [("conv", 1e-2), ("head", 3e-2)]
    before_conv, before_head = snapshot(model.features), snapshot(model.classifier)
    train_step(model, optimizer)
    assert changed(before_conv, model.features) and changed(before_head, model.classifier)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("frozen", ["conv", "head"])
def test_group_learning_rates_are_applied(name, frozen):
    model = tiny_model()
    lrs = {"lr_conv": 0.0 if frozen == "conv" else 1e-2, "lr_head": 0.0 if frozen == "head" else 1e-2}
    optimizer = build_optimizer(model, load_optim_cfg(name, **lrs))
    before = {"conv": snapshot(model.features), "head": snapshot(model.classifier)}
    modules = {"conv": model.features, "head": model.classifier}
    for _ in range(2):
        train_step(model, optimizer)
    moving = "head" if frozen == "conv" else "conv"
    assert all_unchanged(before[frozen], modules[frozen])
    assert changed(before[moving], modules[moving])


@pytest.mark.parametrize("cfg, fragment", [
    ({"name": "adamm", "lr_conv": 1e-3, "lr_head": 1e-3}, "optim.name='adamm'"),
    ({"name": "adam", "lr_conv": -1e-3, "lr_head": 1e-3}, "optim.lr_conv=-0.001"),
    ({"name": "adam", "lr_conv": 0.0, "lr_head": 0.0}, "optim.lr_conv=0 and optim.lr_head=0"),
    ({"name": "adam", "lr_conv": 1e-3}, "optim.lr_head is missing"),
    ({"name": "adam", "lr_conv": 1e-3, "lr_head": 1e-3, "momentum": 0.9}, "optim.momentum does not apply"),
    ({"name": "adam", "lr_conv": 1e-3, "lr_head": 1e-3, "betas": [0.9]}, "optim.betas=[0.9]"),
    ({"name": "sgd", "lr_conv": 1e-3, "lr_head": 1e-3, "momentum": 0.0, "nesterov": True}, "optim.nesterov=True"),
    ({"name": "sgd", "lr_conv": 1e-3, "lr_head": 1e-3, "weight_decay": -1}, "optim.weight_decay=-1"),
    ({"name": "rmsprop", "lr_conv": 1e-3, "lr_head": 1e-3, "eps": 0}, "optim.eps=0"),
])
def test_optimizer_rejects_bad_config(cfg, fragment):
    with pytest.raises(ValueError) as err:
        build_optimizer(tiny_model(), cfg)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_unknown_optimizer_lists_choices():
    with pytest.raises(ValueError, match="adam, adamw, adamax, sgd, rmsprop, adagrad"):
        build_optimizer(tiny_model(), {"name": "lion", "lr_conv": 1e-3, "lr_head": 1e-3})


def make(sched: str, epochs: int = 10, steps: int = 4, objective_mode: str = "max", **overrides):
    model = tiny_model()
    optimizer = build_optimizer(model, {"name": "sgd", "lr_conv": 0.1, "lr_head": 0.2})
    scheduler = build_scheduler(optimizer, load_sched_cfg(sched, **overrides), epochs=epochs,
                                steps_per_epoch=steps, objective_mode=objective_mode)
    return optimizer, scheduler


def run_epoch(optimizer, scheduler, steps: int, metric: float | None = None) -> None:
    for _ in range(steps):
        optimizer.step()  # no gradients: a no-op, but keeps torch's step-order check satisfied
        scheduler.step_batch()
    scheduler.step_epoch(metric)


def assert_lrs(scheduler, conv: float) -> None:
    # both groups move by the same factor, so the head stays at twice the conv LR
    lrs = scheduler.current_lrs()
    assert lrs["conv"] == pytest.approx(conv, abs=1e-12)
    assert lrs["head"] == pytest.approx(2 * conv, abs=1e-12)


@pytest.mark.parametrize("name", sorted(SCHEDULE_KNOBS))
def test_every_schedule_yaml_runs_to_the_end(name):
    optimizer, scheduler = make(name, epochs=3, steps=5)
    for epoch in range(3):
        run_epoch(optimizer, scheduler, 5, metric=0.5)
        assert all(lr >= 0 and math.isfinite(lr) for lr in scheduler.current_lrs().values())
    assert scheduler.batches == 15 and scheduler.epochs == 3


def test_constant():
    optimizer, scheduler = make("constant")
    for _ in range(10):
        run_epoch(optimizer, scheduler, 4, metric=0.1)
    assert_lrs(scheduler, 0.1)


def test_step_decays_at_the_boundary():
    optimizer, scheduler = make("step", step_size=3, gamma=0.5)
    for _ in range(2):
        run_epoch(optimizer, scheduler, 4)
    for _ in range(4):
        optimizer.step()
        scheduler.step_batch()
    assert_lrs(scheduler, 0.1)  # batches alone never move a per-epoch schedule
    scheduler.step_epoch(None)  # end of epoch 3
    assert_lrs(scheduler, 0.05)
    for _ in range(3):
        run_epoch(optimizer, scheduler, 4)
    assert_lrs(scheduler, 0.025)


def test_cosine_per_batch():
    epochs, steps, floor = 10, 4, 0.1
    optimizer, scheduler = make("cosine", epochs=epochs, steps=steps, min_lr_factor=floor)
    total = epochs * steps
    assert_lrs(scheduler, 0.1)
    for _ in range(total // 2):
        optimizer.step()
        scheduler.step_batch()
    assert_lrs(scheduler, 0.1 * (floor + (1 - floor) * 0.5))  # half-way: mid-point of the cosine
    for _ in range(total // 2):
        optimizer.step()
        scheduler.step_batch()
    assert_lrs(scheduler, 0.1 * floor)


def test_warmup_cosine_points():
    epochs, steps = 10, 4
    optimizer, scheduler = make("warmup_cosine", epochs=epochs, steps=steps, warmup_epochs=2.5,
                                warmup_start_factor=0.2, min_lr_factor=0.0)
    warmup, total = 10, 40  # 2.5 epochs x 4 batches
    assert_lrs(scheduler, 0.1 * 0.2)  # first batch runs at the start factor
    for _ in range(5):
        optimizer.step()
        scheduler.step_batch()
    assert_lrs(scheduler, 0.1 * (0.2 + 0.8 * 5 / warmup))
    for _ in range(5):
        optimizer.step()
        scheduler.step_batch()
    assert_lrs(scheduler, 0.1)  # end of warm-up: the base LR
    for _ in range(total - warmup):
        optimizer.step()
        scheduler.step_batch()
    assert_lrs(scheduler, 0.0)  # end of cosine


def test_warmup_longer_than_run_is_cut():
    optimizer, scheduler = make("warmup_cosine", epochs=1, steps=4, warmup_epochs=5.0, warmup_start_factor=0.0)
    run_epoch(optimizer, scheduler, 4)
    assert_lrs(scheduler, 0.1)


def test_plateau_reduces_after_patience():
    optimizer, scheduler = make("plateau", factor=0.5, patience=2, threshold=0.0, min_lr=0.0,
                                objective_mode="max")
    run_epoch(optimizer, scheduler, 4, metric=0.5)  # best so far
    run_epoch(optimizer, scheduler, 4, metric=0.5)  # bad epoch 1
    run_epoch(optimizer, scheduler, 4, metric=0.4)  # bad epoch 2 = patience, not yet reduced
    assert_lrs(scheduler, 0.1)
    run_epoch(optimizer, scheduler, 4, metric=0.3)  # bad epoch 3 > patience
    assert_lrs(scheduler, 0.05)
    run_epoch(optimizer, scheduler, 4, metric=None)  # no validation: counters untouched
    assert_lrs(scheduler, 0.05)


def test_plateau_follows_objective_mode():
    optimizer, scheduler = make("plateau", factor=0.5, patience=0, threshold=0.0, objective_mode="min")
    run_epoch(optimizer, scheduler, 1, metric=1.0)
    run_epoch(optimizer, scheduler, 1, metric=0.5)  # loss went down: an improvement in min mode
    assert_lrs(scheduler, 0.1)
    run_epoch(optimizer, scheduler, 1, metric=0.6)
    assert_lrs(scheduler, 0.05)


@pytest.mark.parametrize("name, overrides, metrics", [
    ("step", {"step_size": 2, "gamma": 0.5}, None),
    ("cosine", {"min_lr_factor": 0.05}, None),
    ("warmup_cosine", {"warmup_epochs": 1.5, "warmup_start_factor": 0.1}, None),
    ("plateau", {"factor": 0.5, "patience": 1, "threshold": 0.0}, [0.5, 0.4, 0.4, 0.6, 0.3, 0.3, 0.3, 0.7, 0.2, 0.1]),
    ("constant", {}, None),
])
@pytest.mark.parametrize("load_order", ["optimizer_first", "scheduler_first"])
def test_state_dict_round_trip_is_exact(name, overrides, metrics, load_order):
    epochs, steps, cut = 10, 3, 4
    metrics = metrics or [None] * epochs

    def lr_trace(optimizer, scheduler, start: int) -> list[tuple[float, float]]:
        trace = []
        for epoch in range(start, epochs):
            for _ in range(steps):
                optimizer.step()
                scheduler.step_batch()
                trace.append(tuple(scheduler.current_lrs().values()))
            scheduler.step_epoch(metrics[epoch])
            trace.append(tuple(scheduler.current_lrs().values()))
        return trace

    optimizer, scheduler = make(name, epochs=epochs, steps=steps, **overrides)
    # run `cut` epochs, save, then continue: the reference trace
    for epoch in range(cut):
        for _ in range(steps):
            optimizer.step()
            scheduler.step_batch()
        scheduler.step_epoch(metrics[epoch])
    saved = copy.deepcopy({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()})
    lrs_at_save = scheduler.current_lrs()
    reference = lr_trace(optimizer, scheduler, cut)

    # fresh optimizer + scheduler from the same config, state loaded in either order
    fresh_model = tiny_model()
    fresh_opt = build_optimizer(fresh_model, {"name": "sgd", "lr_conv": 0.1, "lr_head": 0.2})
    if load_order == "optimizer_first":
        fresh_opt.load_state_dict(saved["optimizer"])
        fresh_sched = build_scheduler(fresh_opt, load_sched_cfg(name, **overrides), epochs=epochs,
                                      steps_per_epoch=steps)
    else:
        fresh_sched = build_scheduler(fresh_opt, load_sched_cfg(name, **overrides), epochs=epochs,
                                      steps_per_epoch=steps)
        fresh_opt.load_state_dict(saved["optimizer"])
    fresh_sched.load_state_dict(saved["scheduler"])
    assert fresh_sched.batches == cut * steps and fresh_sched.epochs == cut
    assert fresh_sched.current_lrs() == lrs_at_save
    assert lr_trace(fresh_opt, fresh_sched, cut) == reference


def test_state_dict_restores_current_lr_before_any_step():
    optimizer, scheduler = make("warmup_cosine", epochs=4, steps=5, warmup_epochs=1.0, warmup_start_factor=0.0)
    run_epoch(optimizer, scheduler, 5)
    run_epoch(optimizer, scheduler, 2)
    saved = copy.deepcopy({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()})
    fresh_opt = build_optimizer(tiny_model(), {"name": "sgd", "lr_conv": 0.1, "lr_head": 0.2})
    fresh_opt.load_state_dict(saved["optimizer"])
    fresh = build_scheduler(fresh_opt, load_sched_cfg("warmup_cosine", warmup_epochs=1.0, warmup_start_factor=0.0),
                            epochs=4, steps_per_epoch=5)
    fresh.load_state_dict(saved["scheduler"])
    assert fresh.current_lrs() == scheduler.current_lrs()


def test_load_state_dict_rejects_other_schedule():
    _, cosine = make("cosine")
    _, step = make("step")
    with pytest.raises(ValueError, match="sched.name='step'"):
        step.load_state_dict(cosine.state_dict())


@pytest.mark.parametrize("name, overrides, fragment", [
    ("cosine", {"min_lr_factor": 1.5}, "sched.min_lr_factor=1.5"),
    ("step", {"step_size": 0}, "sched.step_size=0"),
    ("step", {"gamma": 0.0}, "sched.gamma=0.0"),
    ("plateau", {"factor": 1.0}, "sched.factor=1.0"),
    ("plateau", {"threshold_mode": "relative"}, "sched.threshold_mode='relative'"),
    ("warmup_cosine", {"warmup_epochs": -1}, "sched.warmup_epochs=-1"),
    ("cosine", {"gamma": 0.5}, "sched.gamma does not apply"),
])
def test_scheduler_rejects_bad_config(name, overrides, fragment):
    with pytest.raises(ValueError) as err:
        make(name, **overrides)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_scheduler_rejects_unknown_name_and_mode():
    optimizer = build_optimizer(tiny_model(), {"name": "adam", "lr_conv": 1e-3, "lr_head": 1e-3})
    with pytest.raises(ValueError, match="sched.name='linear'.*constant, step, cosine, warmup_cosine, plateau"):
        build_scheduler(optimizer, {"name": "linear"}, epochs=2, steps_per_epoch=2)
    with pytest.raises(ValueError, match="sched.objective_mode='maximize'"):
        build_scheduler(optimizer, {"name": "plateau"}, epochs=2, steps_per_epoch=2, objective_mode="maximize")
    with pytest.raises(ValueError, match="sched.steps_per_epoch=0"):
        build_scheduler(optimizer, {"name": "cosine"}, epochs=2, steps_per_epoch=0)
