"""The rules the part builders enforce, without torch: front end, augmentation, model, optimizer, schedule.

Each function returns one-line problems ("optim.eps=0 is not valid; expected ..."), in the order
the builder meets them. The builders (gridtune.train.frontend, gridtune.train.model, gridtune.train.optim) raise
the first one as a ValueError; gridtune.config.checks reports them for a composed config, so planning,
which imports no torch, refuses exactly what building the parts would refuse. `input_shape` is
the model's input size for a feature config. Only the standard library and gridtune.config.schema.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any

from . import schema

POOLS = ("max", "avg")
HEADS = ("gap", "flatten")
MODEL_KEYS = tuple(f.name for f in fields(schema.CNNConf))   # what a conf/model/*.yaml may hold
OPTIM_COMMON = ("name", "lr_conv", "lr_head", "weight_decay")
OPTIMIZER_KNOBS: dict[str, dict[str, Any]] = {
    name: schema.knobs(s, OPTIM_COMMON) for name, s in schema.OPTIMIZERS.items()}
SCHEDULE_KNOBS: dict[str, dict[str, Any]] = {name: schema.knobs(s) for name, s in schema.SCHEDULES.items()}
INF = math.inf


def raise_first(problems: list[str]) -> None:
    """What a builder does with the rules: the first problem as a one-line ValueError."""
    if problems:
        raise ValueError(problems[0])


def bad(section: str, key: str, value: Any, expected: str) -> str:
    return f"{section}.{key}={value!r} is not valid; expected {expected}"


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)   # `true` is a mistake, not 1


def number(section: str, key: str, value: Any, lo: float, hi: float = INF, *, lo_open: bool = False,
           hi_open: bool = False, integer: bool = False) -> list[str]:
    """[] when value is a real number (an int if `integer`) in the interval, else its problem."""
    left, right = "(" if lo_open else "[", ")" if hi_open or hi == INF else "]"
    expected = f"{'an int' if integer else 'a number'} in {left}{lo}, {hi}{right}"
    if isinstance(value, bool) or not isinstance(value, (int,) if integer else (int, float)) \
            or not math.isfinite(value):
        return [bad(section, key, value, expected)]
    if value < lo or (lo_open and value == lo) or value > hi or (hi_open and value == hi):
        return [bad(section, key, value, expected)]
    return []


def knobs(section: str, cfg: Mapping[str, Any], common: tuple[str, ...],
          table: dict[str, dict[str, Any]]) -> tuple[str | None, dict[str, Any], list[str]]:
    """(name, knobs with defaults filled in, problems): an unknown name, or a key that does not apply."""
    name = cfg.get("name")
    if name not in table:
        return None, {}, [f"{section}.name={name!r} is not valid; expected one of: {', '.join(table)}"]
    allowed = (*common, *table[name])
    stray = [k for k in cfg.keys() if k not in allowed]     # optim.momentum with adam: silently ignored
    if stray:
        return name, {}, [f"{section}.{stray[0]} does not apply to {section}.name={name!r}; "
                          f"valid keys: {', '.join(allowed)}"]
    return name, {key: cfg[key] if key in cfg else default for key, default in table[name].items()}, []


# -- front end ------------------------------------------------------------------------------------
def input_shape(cfg_features, n_samples: int) -> tuple[int, int]:
    """(n_mels, frames) a clip of n_samples becomes; the flatten head sizes its Linear from it."""
    if cfg_features["name"] == "image":
        return int(cfg_features["n_mels"]), int(cfg_features["frames"])
    return int(cfg_features["n_mels"]), 1 + n_samples // int(cfg_features["hop_length"])


def features(cfg, sample_rate: int) -> list[str]:
    """The log-mel front end's settings (torchaudio's own refusals included); image inputs' size."""
    if cfg["name"] == "image":
        return [bad("features", k, cfg[k], "an int >= 1") for k in ("n_mels", "frames")
                if not (is_int(cfg[k]) and cfg[k] >= 1)]
    out = [bad("features", k, cfg[k], "an int >= 1") for k in ("n_fft", "hop_length", "n_mels")
           if not (is_int(cfg[k]) and cfg[k] >= 1)]
    win, n_fft, f_min, top_db = cfg["win_length"], cfg["n_fft"], cfg["f_min"], cfg["top_db"]
    if win is not None and not (is_int(win) and is_int(n_fft) and 1 <= win <= n_fft):
        out.append(bad("features", "win_length", win, "null or an int in [1, features.n_fft]"))
    f_max = sample_rate / 2 if cfg["f_max"] is None else cfg["f_max"]
    if not f_min <= f_max:
        out.append(bad("features", "f_min", f_min, f"<= features.f_max ({f_max})"))
    if top_db is not None and top_db < 0:
        out.append(bad("features", "top_db", top_db, "a number >= 0"))
    return out


def augment(cfg) -> list[str]:
    if cfg["name"] != "specaugment":
        return []
    return [bad("augment", k, cfg[k], "an int >= 0") for k in
            ("freq_mask_param", "time_mask_param", "n_freq_masks", "n_time_masks") if not (is_int(cfg[k]) and cfg[k] >= 0)]


# -- model ----------------------------------------------------------------------------------------
def model_keys(cfg: Mapping[str, Any]) -> list[str]:
    """A model mapping's keys and name (build_model's own checks, before the CNN's)."""
    stray = [str(k) for k in cfg.keys() if k not in MODEL_KEYS]
    if stray:
        return [f"model.{stray[0]} is not a known key; valid keys: {', '.join(MODEL_KEYS)}"]
    name = cfg.get("name")
    if name not in schema.MODELS:
        return [f"model.name={name!r} is not valid; expected one of: {', '.join(schema.MODELS)}"]
    channels = cfg.get("channels", [])
    if isinstance(channels, (str, bytes)) or not isinstance(channels, Iterable):
        return [bad("model", "channels", channels, "a non-empty list of ints >= 1")]
    return []


def cnn(n_classes, in_channels, channels, convs_per_block, kernel_size, pool, head, hidden, dropout,
        input_shape) -> list[str]:
    """AudioCNN's arguments, in its order; a spatial side that the poolings would bring to 0 included."""
    channels, input_shape = list(channels), list(input_shape)
    rules = [
        ("n_classes", n_classes, is_int(n_classes) and n_classes >= 1, "an int >= 1"),
        ("in_channels", in_channels, is_int(in_channels) and in_channels >= 1, "an int >= 1"),
        ("channels", channels, len(channels) >= 1 and all(is_int(c) and c >= 1 for c in channels),
         "a non-empty list of ints >= 1"),
        ("convs_per_block", convs_per_block, is_int(convs_per_block) and convs_per_block >= 1, "an int >= 1"),
        # odd kernels only: 'same' padding is then symmetric (k // 2 on each side)
        ("kernel_size", kernel_size, is_int(kernel_size) and kernel_size >= 1 and kernel_size % 2 == 1,
         "an odd int >= 1"),
        ("pool", pool, pool in POOLS, "one of: " + ", ".join(POOLS)),
        ("head", head, head in HEADS, "one of: " + ", ".join(HEADS)),
        ("hidden", hidden, is_int(hidden) and hidden >= 0, "an int >= 0 (0 = no hidden layer)"),
        ("dropout", dropout, isinstance(dropout, (int, float)) and not isinstance(dropout, bool)
         and 0.0 <= dropout < 1.0, "a float in [0, 1)"),
        ("input_shape", input_shape, len(input_shape) == 2 and all(is_int(s) and s >= 1 for s in input_shape),
         "two ints >= 1 (n_mels, frames)"),
    ]
    out = [bad("model", key, value, expected) for key, value, ok, expected in rules if not ok]
    if not out and any(side >> len(channels) < 1 for side in input_shape):   # each block halves both sides
        out.append(bad("model", "input_shape", input_shape,
                       f"both sides >= {2 ** len(channels)} for {len(channels)} pooling blocks"))
    return out[:1]


# -- optimizer and schedule -----------------------------------------------------------------------
def optimizer(cfg: Mapping[str, Any]) -> list[str]:
    """build_optimizer's rules: the name, keys that apply, both group LRs >= 0 and not both 0, each knob."""
    name, values, out = knobs("optim", cfg, OPTIM_COMMON, OPTIMIZER_KNOBS)
    if out:
        return out
    out = [f"optim.{k} is missing; expected a number >= 0" for k in ("lr_conv", "lr_head") if k not in cfg]
    out = out or [p for k in ("lr_conv", "lr_head") for p in number("optim", k, cfg[k], 0.0)]
    if not out and cfg["lr_conv"] == 0 and cfg["lr_head"] == 0:
        out = ["optim.lr_conv=0 and optim.lr_head=0 are not valid together; at least one must be > 0"]
    out += number("optim", "weight_decay", cfg.get("weight_decay", 0.0), 0.0)
    for key, value in values.items():
        out += _optim_knob(key, value)
    if not out and name == "sgd" and values["nesterov"] and (values["momentum"] == 0 or values["dampening"] != 0):
        out = [f"optim.nesterov=True needs momentum > 0 and dampening = 0; "
               f"got momentum={float(values['momentum'])}, dampening={float(values['dampening'])}"]
    return out[:1]


def _optim_knob(key: str, value: Any) -> list[str]:
    if key == "betas":
        betas = list(value) if isinstance(value, Iterable) and not isinstance(value, str) else None
        if betas is None or len(betas) != 2:
            return [bad("optim", key, value, "a list of two numbers in [0, 1)")]
        return [p for b in betas for p in number("optim", key, b, 0.0, 1.0, hi_open=True)][:1]
    if key in ("nesterov", "centered"):
        return [] if isinstance(value, bool) else [bad("optim", key, value, "true or false")]
    if key == "eps":
        return number("optim", key, value, 0.0, lo_open=True)
    if key in ("alpha", "dampening"):
        return number("optim", key, value, 0.0, 1.0)
    return number("optim", key, value, 0.0)     # momentum, lr_decay, initial_accumulator_value


SCHEDULE_RULES = {   # knob -> number() bounds, per knob of any schedule
    "factor": dict(lo=0.0, hi=1.0, lo_open=True, hi_open=True), "patience": dict(lo=0, integer=True),
    "threshold": dict(lo=0.0), "cooldown": dict(lo=0, integer=True), "min_lr": dict(lo=0.0),
    "step_size": dict(lo=1, integer=True), "gamma": dict(lo=0.0, hi=1.0, lo_open=True),
    "min_lr_factor": dict(lo=0.0, hi=1.0), "warmup_epochs": dict(lo=0.0),
    "warmup_start_factor": dict(lo=0.0, hi=1.0)}


def schedule(cfg: Mapping[str, Any], *, epochs: Any, steps_per_epoch: Any, objective_mode: Any) -> list[str]:
    """build_scheduler's rules: the name, keys that apply, the run's length, each knob of the schedule."""
    name, values, out = knobs("sched", cfg, ("name",), SCHEDULE_KNOBS)
    if out:
        return out
    out = number("sched", "epochs", epochs, 1, integer=True) + number(
        "sched", "steps_per_epoch", steps_per_epoch, 1, integer=True)
    if name == "plateau":
        if objective_mode not in ("min", "max"):
            out.append(bad("sched", "objective_mode", objective_mode, "one of: min, max"))
        if values["threshold_mode"] not in ("rel", "abs"):
            out.append(bad("sched", "threshold_mode", values["threshold_mode"], "one of: rel, abs"))
    for key, value in values.items():
        if key in SCHEDULE_RULES:
            out += number("sched", key, value, **SCHEDULE_RULES[key])
    return out[:1]


# -- a composed trial config ------------------------------------------------------------------------
def shape_of(cfg) -> tuple[int, tuple[int, int]]:
    """(classes, input shape) a composed config's model is built for before any data is read."""
    data = cfg["data"]
    n_samples = int(round(data["sample_rate"] * data["clip_seconds"]))
    return len(data["classes"] or [0, 1]), input_shape(cfg["features"], n_samples)


def composed(cfg) -> list[str]:
    """Every rule above for a composed trial config (option names already known good), as building
    its parts meets them: the front end, augmentation and model first, then optimizer and schedule.
    `cfg` is a DictConfig or the same trial as plain resolved values (gridtune.config.plain.Values)."""
    model = cfg["model"]
    out = features(cfg["features"], int(cfg["data"]["sample_rate"])) + augment(cfg["augment"])
    out = out or model_keys(model)
    if not out:
        n_classes, shape = shape_of(cfg)
        out = cnn(n_classes, 1, **{k: model[k] for k in MODEL_KEYS[1:]}, input_shape=shape)
    return out + optimizer(cfg["optim"]) + schedule(cfg["sched"], epochs=cfg["train"]["epochs"], steps_per_epoch=1,
                                                    objective_mode=cfg["objective_mode"])
