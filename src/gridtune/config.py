"""Trial identity and config validation: what makes two trials the same, and what makes one invalid.

`trial_id(cfg)` hashes the *semantic* part of a composed config: everything except where things are
written, how they are launched and tracked, and which device runs them. The same id names the trial
directory, the wandb run and the leaderboard row, and lets a rerun skip trials already done.

`validate(cfg)` returns one-line problems ("key=value: why") for a composed trial config; the sweep
driver runs it over the whole grid before anything is launched. Only omegaconf is imported here.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Top-level keys that do not change what a trial computes.
NON_SEMANTIC_TOP = ("hydra", "launcher", "tracking", "final", "out_root", "sweep_name", "device")
# Keys inside groups that are locations or resource hints, not experiment settings.
NON_SEMANTIC_NESTED = {"data": ("root", "cache_dir", "resident", "resident_max_gb"),
                       "train": ("threads", "compile", "cudnn_benchmark", "oom_retry", "stop_after_epoch")}

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "adagrad", "adamax")
SCHEDULES = ("constant", "step", "cosine", "warmup_cosine", "plateau")
MODELS = ("cnn",)
AUGMENTS = ("specaugment", "none")
FEATURES = ("logmel", "image")
DEVICES = ("auto", "cpu", "cuda")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=,+-]*$")
# SLURM fields end up in an sbatch script: refuse anything a shell would interpret.
SHELL_META = re.compile(r"[\n\r;&|`$<>(){}\\\"'*?!#~]")


class ConfigError(ValueError):
    """An invalid trial config; the message is one line naming the key and value."""


def semantic_config(cfg: DictConfig) -> dict:
    """The resolved config minus locations, launcher, tracking and device (see module docstring)."""
    raw = OmegaConf.to_container(cfg, resolve=False)
    for key in NON_SEMANTIC_TOP:
        raw.pop(key, None)
    for group, keys in NON_SEMANTIC_NESTED.items():
        for key in keys:
            if isinstance(raw.get(group), dict):
                raw[group].pop(key, None)
    return OmegaConf.to_container(OmegaConf.create(raw), resolve=True)


def trial_id(cfg: DictConfig, length: int = 10) -> str:
    blob = json.dumps(semantic_config(cfg), sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:length]


def _trial_id_resolver(*, _root_: DictConfig) -> str:
    return trial_id(_root_)


def register_resolvers() -> None:
    """`${gridtune_trial_id:}` names a multirun trial's directory (hydra.sweep.subdir)."""
    if not OmegaConf.has_resolver("gridtune_trial_id"):
        OmegaConf.register_new_resolver("gridtune_trial_id", _trial_id_resolver)


register_resolvers()


def _num(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, throw_on_missing=False)


def validate(cfg: DictConfig) -> list[str]:
    """Problems with one composed trial config, each 'key=value: reason'. Empty when valid."""
    problems: list[str] = []

    def check(key: str, ok, why: str) -> None:
        try:
            value = _num(cfg, key)
        except Exception as e:  # an interpolation that cannot resolve
            problems.append(f"{key}: {e}".splitlines()[0])
            return
        try:
            good = ok(value)
        except TypeError:
            good = False
        if not good:
            problems.append(f"{key}={value!r}: {why}")

    def positive(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0

    check("lr", positive, "must be a number > 0")
    for key in ("lr_conv", "lr_head"):      # reported only when set apart from lr
        if _num(cfg, key) != _num(cfg, "lr"):
            check(key, positive, "must be a number > 0")
    check("dropout", lambda v: isinstance(v, (int, float)) and 0 <= v < 1, "must be in [0, 1)")
    check("l2", lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v >= 0, "must be >= 0")
    check("seed", lambda v: isinstance(v, int) and not isinstance(v, bool), "must be an integer")
    check("train.epochs", lambda v: isinstance(v, int) and v >= 1, "must be an integer >= 1")
    check("train.stop_after_epoch", lambda v: v is None or (isinstance(v, int) and v >= 1),
          "must be null or an integer >= 1")
    check("train.batch_size", lambda v: isinstance(v, int) and v >= 1, "must be an integer >= 1")
    check("train.eval_batch_size", lambda v: isinstance(v, int) and v >= 1, "must be an integer >= 1")
    check("train.amp", lambda v: v in ("auto", "bf16", "fp16", "off"), "must be auto|bf16|fp16|off")
    check("train.diverge_factor", positive, "must be a number > 0")
    check("train.early_stop.patience", lambda v: isinstance(v, int) and v >= 0, "must be an integer >= 0")
    check("optim.name", lambda v: v in OPTIMIZERS, f"unknown optimizer (one of {', '.join(OPTIMIZERS)})")
    check("sched.name", lambda v: v in SCHEDULES, f"unknown schedule (one of {', '.join(SCHEDULES)})")
    check("model.name", lambda v: v in MODELS, f"unknown model (one of {', '.join(MODELS)})")
    check("augment.name", lambda v: v in AUGMENTS, f"unknown augment (one of {', '.join(AUGMENTS)})")
    check("features.name", lambda v: v in FEATURES, f"unknown features (one of {', '.join(FEATURES)})")
    check("device", lambda v: v in DEVICES, "must be auto|cpu|cuda")
    check("objective_mode", lambda v: v in ("max", "min"), "must be max|min")
    check("data.on_bad_file", lambda v: v in ("skip", "error"), "must be skip|error")
    check("data.val_fraction", lambda v: 0 < v < 1, "must be in (0, 1)")
    check("data.test_fraction", lambda v: 0 <= v < 1, "must be in [0, 1)")
    check("data.sample_rate", lambda v: isinstance(v, int) and v >= 1000, "must be an integer >= 1000 (Hz)")
    check("data.clip_seconds", positive, "must be > 0")
    check("sweep_name", lambda v: isinstance(v, str) and bool(SAFE_NAME.match(v)) and ".." not in v,
          "must be a plain name (letters, digits, _ . = , + -), no '/' or '..'")
    check("launcher.trials_per_job", lambda v: isinstance(v, int) and v >= 1, "must be an integer >= 1")
    problems.extend(_check_slurm(cfg))
    return problems


_BUILT: dict[str, str | None] = {}


def check_builds(cfg: DictConfig) -> list[str]:
    """Build the front end, model, optimizer, schedule and augmentation once (on the meta device, so
    nothing is allocated): the builders' own checks (kernel size, nesterov without momentum, unknown
    knobs...) then reject a grid before launch instead of failing inside its trials. Memoized per
    distinct config of those parts; imports torch lazily."""
    parts = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("features", "model", "optim", "sched", "augment")}
    parts["shape"] = [cfg.data.sample_rate, cfg.data.clip_seconds, len(cfg.data.classes or [0, 1]),
                      cfg.train.epochs, cfg.objective_mode]
    key = json.dumps(parts, sort_keys=True, default=str)
    if key not in _BUILT:
        _BUILT[key] = _try_build(cfg)
    return [] if _BUILT[key] is None else [_BUILT[key]]


def _try_build(cfg: DictConfig) -> str | None:
    import torch
    from .frontend import Features, build_augment, input_shape
    from .model import build_model
    from .optim import build_optimizer, build_scheduler
    try:
        n_samples = int(round(cfg.data.sample_rate * cfg.data.clip_seconds))
        Features(cfg.features, int(cfg.data.sample_rate))
        build_augment(cfg.augment)
        with torch.device("meta"):
            model = build_model(cfg.model, len(cfg.data.classes or [0, 1]), input_shape(cfg.features, n_samples))
        optimizer = build_optimizer(model, cfg.optim)
        build_scheduler(optimizer, cfg.sched, epochs=int(cfg.train.epochs), steps_per_epoch=10,
                        objective_mode=str(cfg.objective_mode))
    except (ValueError, TypeError, KeyError, RuntimeError) as e:
        return " ".join(str(e).split())
    return None


def _check_slurm(cfg: DictConfig) -> list[str]:
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


def check_inside(child: str | Path, parent: str | Path, what: str) -> Path:
    """Refuse an output path that escapes its sweep directory (e.g. through '../' in an override)."""
    child_p, parent_p = Path(child).resolve(), Path(parent).resolve()
    if child_p != parent_p and parent_p not in child_p.parents:
        raise ConfigError(f"{what}={child}: escapes the sweep directory {parent_p}")
    return child_p
