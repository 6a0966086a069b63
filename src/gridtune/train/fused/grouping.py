"""Which trials of a job train fused as one model, and when fusion is on: the one place that decides.

Trials fuse when their configs differ only in *fusable* knobs, the ones a fused group can hold per
model (declared in gridtune.config.facts): the learning rates, dropout, the `l2` penalty, the
optimizer's weight decay and momentum, and the parameters of a schedule of the same type. Everything else (model, features, augment, batch
size, epochs, optimizer or schedule type, seed, data, device, ...) must be equal. A model dropout
(`model.dropout`, the rate the model is built with) of 0 and one > 0 do not fuse (a rate of 0 draws
no random numbers, so the shared draws would differ).

`launcher.fuse`: on | off | auto (on where the job's device is CUDA, the only place
`scripts/bench.py --sections g` measured it faster); `launcher.fuse_max` caps a group's size, and a
larger group is split into near-equal parts; their defaults are the schema's (gridtune.config.schema.LauncherConf).
Only omegaconf and gridtune's config modules are imported at module level.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

from omegaconf import OmegaConf

from gridtune.config.facts import FUSE_MODES, fuses, not_identity
from gridtune.config.schema import LauncherConf

# Keys that never change what a job computes together (where it writes, how it is launched/tracked).
IGNORED_TOP = tuple(k for k in not_identity("output") if "." not in k)


def fuse_key(cfg) -> str:
    """Equal for two trial configs exactly when they may train in one fused group."""
    raw = OmegaConf.to_container(cfg, resolve=False) if not isinstance(cfg, dict) else dict(cfg)
    raw = OmegaConf.to_container(OmegaConf.create({k: v for k, v in raw.items() if k not in IGNORED_TOP}),
                                 resolve=True)    # hydra's own interpolations never resolve here
    rest = {k: v for k, v in raw.items() if not fuses(k)}       # what a fused group must agree on
    for group, options in list(rest.items()):
        if isinstance(options, dict):
            rest[group] = {k: v for k, v in options.items() if not fuses(f"{group}.{k}")}
    rest["dropout>0"] = float((raw.get("model") or {}).get("dropout") or 0) > 0   # the rate the model uses
    return json.dumps(rest, sort_keys=True, default=str)


def split_evenly(items: list, cap: int) -> list[list]:
    """`items` in ceil(n / cap) consecutive parts whose sizes differ by at most one."""
    cap = max(int(cap), 1)
    n_parts = -(-len(items) // cap)
    if n_parts <= 1:
        return [list(items)] if items else []
    size, extra = divmod(len(items), n_parts)
    out, start = [], 0
    for i in range(n_parts):
        stop = start + size + (1 if i < extra else 0)
        out.append(list(items[start:stop]))
        start = stop
    return out


def groups(cfgs: Sequence[Any], fuse_max: int) -> list[list[int]]:
    """Indices of `cfgs` grouped by fuse_key (in order of first appearance), each split to <= fuse_max."""
    by_key: dict[str, list[int]] = {}
    for i, cfg in enumerate(cfgs):
        by_key.setdefault(fuse_key(cfg), []).append(i)
    return [part for idx in by_key.values() for part in split_evenly(idx, fuse_max)]


def mode(cfg) -> tuple[str, int]:
    """(launcher.fuse, launcher.fuse_max) of a config, checked; a bad value is a one-line ValueError."""
    fuse = OmegaConf.select(cfg, "launcher.fuse", default=LauncherConf.fuse)
    fuse = {True: "on", False: "off"}.get(fuse, fuse)
    if fuse not in FUSE_MODES:
        raise ValueError(f"launcher.fuse={fuse!r} is not valid; expected one of: {', '.join(FUSE_MODES)}")
    cap = OmegaConf.select(cfg, "launcher.fuse_max", default=LauncherConf.fuse_max)
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise ValueError(f"launcher.fuse_max={cap!r} is not valid; expected an int >= 1")
    return str(fuse), cap


def enabled(cfg) -> bool:
    """Whether this job fuses: on, off, or auto = the trial's device is CUDA."""
    fuse, _ = mode(cfg)
    if fuse != "auto":
        return fuse == "on"
    import torch
    return cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())


def order(trials: list[dict]) -> list[dict]:
    """Trials (sweeper dicts with "cfg") stably sorted so fusable ones are neighbours in a chunk."""
    first: dict[str, int] = {}
    keys = [fuse_key(t["cfg"]) for t in trials]
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    return [t for _, _, t in sorted(zip((first[k] for k in keys), range(len(trials)), trials),
                                    key=lambda x: (x[0], x[1]))]


def plan_lines(trials: list[dict], trials_per_job: int, cfg) -> list[str]:
    """What `python -m gridtune.plan` prints about fusion: the groups each job would train fused."""
    fuse, cap = mode(cfg)
    if fuse == "off" or trials_per_job <= 1:
        return [f"fusion: off (launcher.fuse={fuse}, launcher.trials_per_job={trials_per_job})"]
    when = "on" if fuse == "on" else "auto: on where the job's device is CUDA"
    lines = [f"fusion: {when}, launcher.fuse_max={cap}"]
    for j in range(0, len(trials), trials_per_job):
        chunk = trials[j:j + trials_per_job]
        parts = groups([t["cfg"] for t in chunk], cap)
        text = " ".join("[" + " ".join(chunk[i]["trial_id"] for i in p) + "]" for p in parts)
        lines.append(f"  job {j // trials_per_job}: {len(chunk)} trial(s) in {len(parts)} group(s): {text}")
    return lines
