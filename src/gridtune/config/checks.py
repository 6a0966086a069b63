"""Every range and cross-field check of a composed config, in one place, as one-line problems.

Hydra and the schemas (gridtune.config.schema) already refuse wrong types and unknown keys while the
config is composed; `validate(cfg)` checks what a type cannot say: ranges, names of options,
fields that must agree, and SLURM fields that end up in an sbatch script. Each problem reads
"key=value: why". When those pass, the part builders' own rules follow (an even kernel size,
nesterov without momentum...: gridtune.config.rules, the rules the builders enforce), so a check
that building the parts would make is made here too, without torch. Each knob's range is its
entry in gridtune.config.facts; what is here is what no single knob says. A config is read either
as a DictConfig or as the same trial resolved to plain containers (gridtune.config.plain.Values:
what the planner gives, read without OmegaConf's per-access resolution); both give the same
problems. Only omegaconf is imported.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from . import rules, schema
from .facts import FACTS, real

LR_FIND_MIN_ITERS = 8   # fewer points than this cannot show a loss curve over the LR range
# SLURM fields end up in an sbatch script: refuse anything a shell would interpret.
SHELL_META = re.compile(r"[\n\r;&|`$<>(){}\\\"'*?!#~]")


def _num(cfg: Mapping, key: str) -> Any:
    """The value at dotted `key` (None where absent or ???), walking plain containers until a DictConfig."""
    node: Any = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
        if isinstance(node, dict):
            if part not in node:
                return None
            node = node[part]
        elif isinstance(node, DictConfig):
            return OmegaConf.select(node, ".".join(parts[i:]), throw_on_missing=False)
        else:
            return None
    return node


def validate(cfg: Mapping) -> list[str]:
    """Problems with one composed trial config (a DictConfig or its plain resolved values), each
    'key=value: reason'. Empty when valid."""
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

    for key, knob in FACTS.items():             # each knob's range, as gridtune.config.facts declares it
        if knob.unless_equal and _num(cfg, key) == _num(cfg, knob.unless_equal):
            continue                             # reported only when set apart (lr_conv from lr)
        if knob.names:
            table = getattr(schema, knob.names)
            check(key, lambda v, table=table: v in table, f"unknown {knob.why} (one of {', '.join(table)})")
        elif knob.ok is not None:
            check(key, knob.ok, knob.why)
    problems.extend(lr_find_options(cfg)[1])
    problems.extend(slurm_fields(cfg))
    return problems or rules.composed(cfg)     # the part builders' own rules, on sound values


def lr_find_options(cfg: Mapping) -> tuple[dict, list[str]]:
    """(the LR range test's knobs: schema defaults overridden by +lr_find.<key>, problems)."""
    defaults = schema.knobs(schema.LrFindConf, ())
    given = cfg.get("lr_find")
    if given is not None and not isinstance(given, Mapping):
        return defaults, [f"lr_find={given!r}: expected keys, e.g. +lr_find.iters=50"]
    if isinstance(given, DictConfig):
        given = OmegaConf.to_container(given, resolve=True)
    given = dict(given) if given is not None else {}
    unknown = [k for k in given if k not in defaults]
    if unknown:
        return defaults, [f"lr_find.{k}: unknown key; expected one of {', '.join(defaults)}" for k in unknown]
    o = {**defaults, **given}
    wanted = (("iters", isinstance(o["iters"], int) and not isinstance(o["iters"], bool)
              and o["iters"] >= LR_FIND_MIN_ITERS, f"an integer >= {LR_FIND_MIN_ITERS}"),
             ("start_lr", real(o["start_lr"]) and o["start_lr"] > 0, "a number > 0"),
             ("end_lr", real(o["end_lr"]) and real(o["start_lr"]) and o["end_lr"] > o["start_lr"],
              "a number > lr_find.start_lr"),
             ("smooth", real(o["smooth"]) and 0 < o["smooth"] <= 1, "a number in (0, 1]"),
             ("diverge_factor", real(o["diverge_factor"]) and o["diverge_factor"] > 1, "a number > 1"))
    return o, [f"lr_find.{key}={o[key]!r}: expected {expected}" for key, ok, expected in wanted if not ok]


def slurm_fields(cfg: Mapping) -> list[str]:
    """SLURM string fields must not carry shell metacharacters or newlines into the sbatch script."""
    launcher = _num(cfg, "hydra.launcher")
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
    folder = OmegaConf.select(launcher, "submitit_folder", default=None, throw_on_resolution_failure=False) \
        if isinstance(launcher, DictConfig) else launcher.get("submitit_folder")
    if isinstance(folder, str) and ("\n" in folder or "\r" in folder):   # it becomes #SBATCH --output=...
        problems.append(f"hydra.launcher.submitit_folder={folder!r}: newlines are not allowed")
    for line in launcher.get("setup") or []:
        if "\n" in str(line) or "\r" in str(line):
            problems.append(f"hydra.launcher.setup={line!r}: newlines are not allowed (use one list item per line)")
    return problems
