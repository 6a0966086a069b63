"""Every range and cross-field check of a composed config, in one place, as one-line problems.

Hydra and the schemas (gridtune.config.schema) already refuse wrong types and unknown keys while the
config is composed; `validate(cfg)` checks what a type cannot say: ranges, names of options,
fields that must agree, and SLURM fields that end up in an sbatch script. Each problem reads
"key=value: why". When those pass, the part builders' own rules follow (an even kernel size,
nesterov without momentum...: gridtune.config.rules, the rules the builders enforce), so a check
that building the parts would make is made here too, without torch. Only omegaconf is imported.
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from . import rules, schema

DEVICES = ("auto", "cpu", "cuda")
AMP = ("auto", "bf16", "fp16", "off")
FINAL_TRAIN_ON = ("train", "train+val")
FINAL_TESTS = ("auto", "irmas_test", "split", "none")
LR_FIND_MIN_ITERS = 8   # fewer points than this cannot show a loss curve over the LR range
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=,+-]*$")
# SLURM fields end up in an sbatch script: refuse anything a shell would interpret.
SHELL_META = re.compile(r"[\n\r;&|`$<>(){}\\\"'*?!#~]")


def _num(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, throw_on_missing=False)


def real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def positive(v) -> bool:
    return real(v) and v > 0


def _one_of(names) -> Callable[[Any], bool]:
    return lambda v: v in names


def validate(cfg: DictConfig) -> list[str]:
    """Problems with one composed trial config, each 'key=value: reason'. Empty when valid."""
    problems: list[str] = []

    def check(key: str, ok, why: str) -> None:
        try:
            value = _num(cfg, key)
        except Exception as e:  # an interpolation that cannot resolve
            problems.append(" ".join(f"{key}: {e}".split()))
            return
        try:
            good = ok(value)
        except TypeError:
            good = False
        if not good:
            problems.append(f"{key}={value!r}: {why}")

    def names(key: str, table, what: str) -> None:
        check(key, _one_of(table), f"unknown {what} (one of {', '.join(table)})")

    check("lr", positive, "must be a number > 0")
    for key in ("lr_conv", "lr_head"):      # reported only when set apart from lr
        if _num(cfg, key) != _num(cfg, "lr"):
            check(key, positive, "must be a number > 0")
    check("dropout", lambda v: real(v) and 0 <= v < 1, "must be in [0, 1)")
    check("l2", lambda v: real(v) and v >= 0, "must be >= 0")
    check("seed", lambda v: isinstance(v, int) and not isinstance(v, bool), "must be an integer")
    check("train.epochs", lambda v: isinstance(v, int) and v >= 1, "must be an integer >= 1")
    check("train.stop_after_epoch", lambda v: v is None or (isinstance(v, int) and v >= 1),
          "must be null or an integer >= 1")
    check("train.batch_size", lambda v: isinstance(v, int) and v >= 1, "must be an integer >= 1")
    check("train.eval_batch_size", lambda v: isinstance(v, int) and v >= 1, "must be an integer >= 1")
    check("train.amp", _one_of(AMP), f"must be {'|'.join(AMP)}")
    check("train.diverge_factor", positive, "must be a number > 0")
    check("train.early_stop.patience", lambda v: isinstance(v, int) and v >= 0, "must be an integer >= 0")
    names("optim.name", schema.OPTIMIZERS, "optimizer")
    names("sched.name", schema.SCHEDULES, "schedule")
    names("model.name", schema.MODELS, "model")
    names("augment.name", schema.AUGMENTS, "augment")
    names("features.name", schema.FEATURES, "features")
    names("tracking.name", schema.TRACKERS, "tracking")
    check("device", _one_of(DEVICES), f"must be {'|'.join(DEVICES)}")
    check("objective_mode", _one_of(("max", "min")), "must be max|min")
    check("data.on_bad_file", _one_of(("skip", "error")), "must be skip|error")
    check("data.val_fraction", lambda v: 0 < v < 1, "must be in (0, 1)")
    check("data.test_fraction", lambda v: 0 <= v < 1, "must be in [0, 1)")
    check("data.sample_rate", lambda v: isinstance(v, int) and v >= 1000, "must be an integer >= 1000 (Hz)")
    check("data.clip_seconds", positive, "must be > 0")
    check("sweep_name", lambda v: isinstance(v, str) and bool(SAFE_NAME.match(v)) and ".." not in v,
          "must be a plain name (letters, digits, _ . = , + -), no '/' or '..'")
    check("launcher.trials_per_job", lambda v: isinstance(v, int) and v >= 1, "must be an integer >= 1")
    check("launcher.fuse", _one_of(("auto", "on", "off")), "must be auto|on|off")
    check("launcher.fuse_max", lambda v: isinstance(v, int) and v >= 1, "must be an integer >= 1")
    for key in ("launcher.max_array_size", "launcher.max_submit_jobs"):
        check(key, lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
              "must be null (ask the scheduler) or an integer >= 1")
    check("final.train_on", _one_of(FINAL_TRAIN_ON), f"must be {'|'.join(FINAL_TRAIN_ON)}")
    check("final.epochs", lambda v: isinstance(v, int) and v >= 1, "must be an integer >= 1")
    check("final.test", _one_of(FINAL_TESTS), f"must be {'|'.join(FINAL_TESTS)}")
    check("final.window_hop", lambda v: real(v) and 0 < v <= 1, "must be in (0, 1], a fraction of a window")
    problems.extend(lr_find_options(cfg)[1])
    problems.extend(slurm_fields(cfg))
    return problems or rules.composed(cfg)     # the part builders' own rules, on sound values


def lr_find_options(cfg: DictConfig) -> tuple[dict, list[str]]:
    """(the LR range test's knobs: schema defaults overridden by +lr_find.<key>, problems)."""
    defaults = schema.knobs(schema.LrFindConf, ())
    given = cfg.get("lr_find")
    if given is not None and not isinstance(given, DictConfig):
        return defaults, [f"lr_find={given!r}: expected keys, e.g. +lr_find.iters=50"]
    given = OmegaConf.to_container(given, resolve=True) if given is not None else {}
    unknown = [k for k in given if k not in defaults]
    if unknown:
        return defaults, [f"lr_find.{k}: unknown key; expected one of {', '.join(defaults)}" for k in unknown]
    o = {**defaults, **given}
    rules = (("iters", isinstance(o["iters"], int) and not isinstance(o["iters"], bool)
              and o["iters"] >= LR_FIND_MIN_ITERS, f"an integer >= {LR_FIND_MIN_ITERS}"),
             ("start_lr", real(o["start_lr"]) and o["start_lr"] > 0, "a number > 0"),
             ("end_lr", real(o["end_lr"]) and real(o["start_lr"]) and o["end_lr"] > o["start_lr"],
              "a number > lr_find.start_lr"),
             ("smooth", real(o["smooth"]) and 0 < o["smooth"] <= 1, "a number in (0, 1]"),
             ("diverge_factor", real(o["diverge_factor"]) and o["diverge_factor"] > 1, "a number > 1"))
    return o, [f"lr_find.{key}={o[key]!r}: expected {expected}" for key, ok, expected in rules if not ok]


def slurm_fields(cfg: DictConfig) -> list[str]:
    """SLURM string fields must not carry shell metacharacters or newlines into the sbatch script."""
    launcher = OmegaConf.select(cfg, "hydra.launcher", throw_on_missing=False)
    if launcher is None or "slurm" not in str(launcher.get("_target_", "")).lower():
        return []
    problems = []
    for key in ("partition", "qos", "account", "constraint", "exclude", "gres", "comment", "name",
                "mem_per_gpu", "mem_per_cpu"):
        value = launcher.get(key)
        if isinstance(value, str) and SHELL_META.search(value):
            problems.append(f"hydra.launcher.{key}={value!r}: shell metacharacters or newlines are not allowed")
    for key, value in (launcher.get("additional_parameters") or {}).items():
        if SHELL_META.search(str(key)) or SHELL_META.search(str(value)):
            problems.append(f"hydra.launcher.additional_parameters.{key}={value!r}: "
                            "shell metacharacters or newlines are not allowed")
    folder = OmegaConf.select(cfg, "hydra.launcher.submitit_folder", default=None,
                              throw_on_resolution_failure=False)
    if isinstance(folder, str) and ("\n" in folder or "\r" in folder):   # it becomes #SBATCH --output=...
        problems.append(f"hydra.launcher.submitit_folder={folder!r}: newlines are not allowed")
    for line in launcher.get("setup") or []:
        if "\n" in str(line) or "\r" in str(line):
            problems.append(f"hydra.launcher.setup={line!r}: newlines are not allowed (use one list item per line)")
    return problems
