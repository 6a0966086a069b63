"""Every knob's facts, declared once: its range, whether it fuses, whether it is part of a trial's
identity, and its title in reports.

A knob's *type* is the schema's (gridtune.config.schema: Hydra refuses a wrong type while composing);
`FACTS` says the rest, one entry per config key:

    ok, why     its range: `ok(value)` is true for a good value, `why` says what a good value is;
                `names` instead names a table of option names in the schema (`OPTIMIZERS`...)
    fuses       trials that differ in it may still train as one fused model (gridtune.train.fused)
    identity    None: part of a trial's identity (or as its parent key says); else why not:
                  output - where a trial writes, how it is launched, tracked and followed up
                  place  - where the data lies, which device runs it (a fused group agrees on it)
                  hint   - a resource or speed setting that changes no result
                  driver - set by the sweep driver for one launch (a halving rung's stop epoch, the
                           job's other trials, the cache key it indexed); never a recorded override
    title       its column title in reports (else its last part, capitalized)
    cost        it changes what one epoch costs (a group: all of its keys but those that fuse); trials
                equal in these, the data's size, the device class and the fused group size have
                epochs of "the same shape" (gridtune.config.knobs.epoch_shape, gridtune.checks.budget)

An entry covers the keys below it (`launcher` covers `launcher.fuse`) for identity; `group.*` stands
for every parameter of the group's options but their `name` (`sched.*`: a schedule's parameters).
Checks (gridtune.config.checks), trial identity (gridtune.config.identity), the grid's axes
(gridtune.config.knobs), fusion (gridtune.train.fused.grouping) and the reports read them here.
Standard library only: the reducer imports it.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable

AMP = ("auto", "bf16", "fp16", "off")
DEVICES = ("auto", "cpu", "cuda")
FUSE_MODES = ("auto", "on", "off")
FINAL_TRAIN_ON = ("train", "train+val")
FINAL_TESTS = ("auto", "irmas_test", "split", "none")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=,+-]*$")
IDENTITY_KINDS = ("output", "place", "hint", "driver")


def real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def positive(v) -> bool:
    return real(v) and v > 0


def integer(low: int | None = None) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and (low is None or v >= low)


def one_of(*names: str) -> Callable[[Any], bool]:
    return lambda v: v in names


def _null_or(ok: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or ok(v)


def _plain_name(v) -> bool:
    return isinstance(v, str) and bool(SAFE_NAME.match(v)) and ".." not in v


@dataclass(frozen=True)
class Knob:
    ok: Callable[[Any], bool] | None = None
    why: str = ""
    names: str | None = None          # a table of option names in gridtune.config.schema
    unless_equal: str | None = None   # checked only when set apart from this knob (lr_conv from lr)
    fuses: bool = False
    identity: str | None = None
    title: str | None = None
    cost: bool = False


_INT1 = "must be an integer >= 1"
FACTS: dict[str, Knob] = {
    # the grid's own knobs
    "lr": Knob(positive, "must be a number > 0", fuses=True, title="LR"),
    "lr_conv": Knob(positive, "must be a number > 0", unless_equal="lr", fuses=True, title="LR conv"),
    "lr_head": Knob(positive, "must be a number > 0", unless_equal="lr", fuses=True, title="LR head"),
    "dropout": Knob(lambda v: real(v) and 0 <= v < 1, "must be in [0, 1)", fuses=True, title="Dropout"),
    "l2": Knob(lambda v: real(v) and v >= 0, "must be >= 0", fuses=True, title="L2"),
    "seed": Knob(integer(), "must be an integer"),
    # training
    "train.epochs": Knob(integer(1), _INT1, title="Max epochs"),
    "train.stop_after_epoch": Knob(_null_or(integer(1)), "must be null or an integer >= 1", identity="driver"),
    "train.batch_size": Knob(integer(1), _INT1, title="Batch", cost=True),
    "train.eval_batch_size": Knob(integer(1), _INT1, cost=True),
    "train.amp": Knob(one_of(*AMP), f"must be {'|'.join(AMP)}", cost=True),
    "train.channels_last": Knob(cost=True),
    "train.class_weights": Knob(cost=True),
    "train.diverge_factor": Knob(positive, "must be a number > 0"),
    "train.early_stop.patience": Knob(integer(0), "must be an integer >= 0"),
    "train.threads": Knob(identity="hint"),
    "train.compile": Knob(identity="hint", cost=True),
    "train.cudnn_benchmark": Knob(identity="hint"),
    "train.onednn": Knob(identity="hint", cost=True),
    "train.oom_retry": Knob(identity="hint"),
    # the swappable parts: option names, and what a fused group may hold per model
    "optim.name": Knob(names="OPTIMIZERS", why="optimizer", cost=True),
    "optim.lr_conv": Knob(fuses=True),
    "optim.lr_head": Knob(fuses=True),
    "optim.weight_decay": Knob(fuses=True, title="Weight decay"),
    "optim.momentum": Knob(fuses=True),
    "sched.name": Knob(names="SCHEDULES", why="schedule"),
    "sched.*": Knob(fuses=True),
    "model": Knob(cost=True),
    "model.name": Knob(names="MODELS", why="model"),
    "model.dropout": Knob(fuses=True),
    "augment": Knob(cost=True),
    "augment.name": Knob(names="AUGMENTS", why="augment"),
    "features": Knob(cost=True),
    "features.name": Knob(names="FEATURES", why="features"),
    "tracking.name": Knob(names="TRACKERS", why="tracking"),
    # where and how it runs
    "device": Knob(one_of(*DEVICES), f"must be {'|'.join(DEVICES)}", identity="place"),
    "objective_mode": Knob(one_of("max", "min"), "must be max|min"),
    "data.root": Knob(identity="place"),
    "data.cache_dir": Knob(identity="place"),
    "data.cache_key": Knob(identity="driver"),
    "data.resident": Knob(identity="hint"),
    "data.resident_max_gb": Knob(identity="hint"),
    "data.on_bad_file": Knob(one_of("skip", "error"), "must be skip|error"),
    "data.layout": Knob(cost=True),
    "data.val_fraction": Knob(lambda v: 0 < v < 1, "must be in (0, 1)", cost=True),
    "data.test_fraction": Knob(lambda v: 0 <= v < 1, "must be in [0, 1)", cost=True),
    "data.sample_rate": Knob(integer(1000), "must be an integer >= 1000 (Hz)", cost=True),
    "data.clip_seconds": Knob(positive, "must be > 0", cost=True),
    "sweep_name": Knob(_plain_name, "must be a plain name (letters, digits, _ . = , + -), no '/' or '..'",
                       identity="output"),
    "out_root": Knob(identity="output"),
    "hydra": Knob(identity="output"),
    "tracking": Knob(identity="output"),
    "lr_find": Knob(identity="output"),
    "launcher": Knob(identity="output"),
    "launcher.trials_per_job": Knob(integer(1), _INT1),
    "launcher.fuse": Knob(one_of(*FUSE_MODES), f"must be {'|'.join(FUSE_MODES)}"),
    "launcher.fuse_max": Knob(integer(1), _INT1),
    "launcher.max_array_size": Knob(_null_or(integer(1)), "must be null (ask the scheduler) or an integer >= 1"),
    "launcher.max_submit_jobs": Knob(_null_or(integer(1)), "must be null (ask the scheduler) or an integer >= 1"),
    "launcher.max_gpu_hours": Knob(_null_or(positive), "must be null (no limit) or a number of hours > 0"),
    "launcher.chunk": Knob(identity="driver"),
    "final": Knob(identity="output"),
    "final.train_on": Knob(one_of(*FINAL_TRAIN_ON), f"must be {'|'.join(FINAL_TRAIN_ON)}"),
    "final.epochs": Knob(integer(1), _INT1),
    "final.test": Knob(one_of(*FINAL_TESTS), f"must be {'|'.join(FINAL_TESTS)}"),
    "final.window_hop": Knob(lambda v: real(v) and 0 < v <= 1, "must be in (0, 1], a fraction of a window"),
}


def fact(key: str) -> Knob | None:
    """The entry for a key: its own, else its group's `group.*` (not for `name`), else None."""
    if key in FACTS:
        return FACTS[key]
    group, _, last = key.rpartition(".")
    return FACTS.get(f"{group}.*") if group and last != "name" else None


def identity_of(key: str) -> str | None:
    """None when the key is part of a trial's identity, else why not (its own entry or a parent's)."""
    parts = key.split(".")
    for i in range(len(parts), 0, -1):
        k = FACTS.get(".".join(parts[:i]))
        if k is not None and k.identity is not None:
            return k.identity
    return None


NOT_IDENTITY: dict[str, str] = {k: f.identity for k, f in FACTS.items() if f.identity is not None}


def not_identity(*kinds: str) -> tuple[str, ...]:
    """The declared non-identity keys of these kinds (all of them without kinds), in declaration order."""
    return tuple(k for k, why in NOT_IDENTITY.items() if not kinds or why in kinds)


EPOCH_COST: tuple[str, ...] = tuple(k for k, f in FACTS.items() if f.cost)


def fuses(key: str) -> bool:
    f = fact(key)
    return f is not None and f.fuses


def title(key: str) -> str:
    """A knob's column title: declared for the key, or for a knob with the same last part (a trial's
    short `batch_size` is `train.batch_size`), else the last part, capitalized."""
    last = key.rsplit(".", 1)[-1]
    for k in (key, last):
        if k in FACTS and FACTS[k].title:
            return FACTS[k].title
    named = next((f.title for k, f in FACTS.items() if f.title and k.rsplit(".", 1)[-1] == last), None)
    return named or last.replace("_", " ").capitalize()
