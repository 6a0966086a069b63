"""The grid's knobs: which config keys a sweep varies, each trial's value of them, and its group LRs.

Nothing here keeps a list of knobs by hand. A trial's `params` (in result.json and the manifest)
are a small default set plus every key of its own overrides; the leaderboard's columns, the
plots' axes and best.yaml use the keys whose values differ across the sweep's trials (`axes`).
Overrides are read with Hydra's grammar (gridtune.config.overrides, imported on first use), as the sweep
read them. The keys that are not part of a trial's identity (gridtune.config.facts) are never axes,
resource hints aside, which stay in `params` as typed. The learning rate reaches the optimizer as `lr` ->
`lr_conv` / `lr_head` -> `optim.lr_conv` / `optim.lr_head`; `group_lrs` and `set_apart` are the one
place that follows that chain, so a row shows the rate each parameter group actually used. Only the
standard library at import (the reducer uses it); omegaconf and Hydra inside the functions that need them.
"""
from __future__ import annotations

import json
import math

from .facts import EPOCH_COST, NOT_IDENTITY, fuses, identity_of, not_identity

DRIVER_SET = not_identity("driver")

# The speed hints among the knobs that change an epoch's cost (gridtune.config.facts: `cost`) are no part
# of a trial's identity, so its record keeps the values its run used apart (the `timing` of result.json).
EPOCH_COST_HINTS = tuple(k for k in EPOCH_COST if NOT_IDENTITY.get(k) == "hint")


def epoch_shape(config, n_clips: int, device_class: str, group_size: int = 1, hints: dict | None = None) -> str:
    """The "same shape" key of a trial: equal for two trials whose epochs cost the same. `config` is a
    composed config (DictConfig), or the resolved plain `config` of a trial record with `hints`, the
    values of EPOCH_COST_HINTS its run used."""
    from omegaconf import DictConfig, OmegaConf
    values = {}
    for key in EPOCH_COST:
        if isinstance(config, DictConfig):
            node = OmegaConf.select(config, key, default=None)
            v = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        else:
            v = config
            for part in key.split("."):
                v = v.get(part) if isinstance(v, dict) else None
        if hints is not None and key in EPOCH_COST_HINTS:
            v = hints.get(key)
        values[key] = {k: x for k, x in v.items() if not fuses(f"{key}.{k}")} if isinstance(v, dict) else v
    return json.dumps({**values, "n_clips": int(n_clips), "device": device_class, "group": int(group_size)},
                      sort_keys=True, default=str)


DEFAULT = ("dropout", "lr", "l2")                   # always shown, as in the report's table
GROUP_LRS = (("conv", "lr_conv"), ("head", "lr_head"))   # parameter group -> its LR knob
RECORDED = (*DEFAULT, "seed", *(k for _, k in GROUP_LRS), "batch_size")   # in every trial's params


def item(override: str) -> tuple[str | None, object]:
    """(key, value) of a recorded override, read as the sweep read it (gridtune.config.overrides); (None,
    None) for one Hydra's grammar does not accept (a hand-edited record), which then names no knob."""
    from . import overrides as ov        # Hydra's parser: imported when a record is read, not with the reducer
    try:
        return ov.item(override)
    except ov.OverrideError:
        return None, None


def key_of(override: str) -> str | None:
    return item(override)[0]


def is_axis_key(key: str | None) -> bool:
    """Whether a key may be a grid axis: part of a trial's identity, or a resource hint; never where
    things run and are written or what the driver sets (a group path `a/b` is read as `a.b`)."""
    return bool(key) and identity_of(key.replace("/", ".")) in (None, "hint")


def value(params: dict, overrides: list, key: str):
    """A trial's value of `key`: its recorded params, else the last override that sets it."""
    if key in params:
        return params[key]
    found = None
    for o in overrides or []:
        k, v = item(o)
        if k == key:
            found = v
    return found


def known(params: dict, overrides: list, key: str) -> bool:
    return key in params or any(key_of(o) == key for o in overrides or [])


def _hashable(v) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def axes(trials) -> list[str]:
    """Keys (seed included) that take more than one value across trials (objects with `params` and
    `overrides`), in the order the overrides name them; trials that do not know a key are left out."""
    order: list[str] = []
    for t in trials:
        for o in t.overrides or []:
            k = key_of(o)
            if is_axis_key(k) and k not in order:
                order.append(k)
    order += [k for k in RECORDED if k not in order]
    keys = []
    for k in order:
        seen = {_hashable(value(t.params, t.overrides, k)) for t in trials if known(t.params, t.overrides, k)}
        if len(seen) > 1:
            keys.append(k)
    if not lr_split(trials):        # the group LRs only followed lr: columns that would say nothing new
        keys = [k for k in keys if k not in {key for _, key in GROUP_LRS}]
    return keys


def lr_split(trials) -> bool:
    """True when some trial's parameter groups did not all use its `lr` (then `lr` is not a rate any
    group trained at, and the per-group rates are shown instead)."""
    for t in trials:
        base = value(t.params, t.overrides, "lr")
        for _, key in GROUP_LRS:
            v = value(t.params, t.overrides, key)
            if isinstance(v, (int, float)) and isinstance(base, (int, float)) and not math.isclose(v, base):
                return True
    return False


def is_lr(key: str) -> bool:
    last = key.rsplit(".", 1)[-1]
    return last == "lr" or last.startswith("lr_")


def fmt_lr(v: float, digits: int = 2) -> str:
    """0.016, 2e-3, 3.7e-4, 10: short, and read back as the same float by Hydra's override grammar."""
    if 1e-2 <= v < 1e4:
        return f"{float(f'{v:.{digits}g}'):g}"
    mantissa, exp = f"{v:.{digits - 1}e}".split("e")
    return f"{float(mantissa):g}e{int(exp)}"


# -- from a composed config ---------------------------------------------------------------------
def group_lrs(cfg) -> dict[str, float]:
    """{"conv": ..., "head": ...}: the LR each parameter group starts at (optim.lr_conv / lr_head, resolved)."""
    return {group: float(cfg.optim[key]) for group, key in GROUP_LRS}


def set_apart(cfg) -> list[str]:
    """The group LR knobs (lr_conv, lr_head) that do not follow `lr`: those a change of lr leaves alone."""
    from omegaconf import OmegaConf
    doubled = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    doubled.lr = 2 * cfg.lr
    moved = group_lrs(doubled)
    return [key for group, key in GROUP_LRS if not math.isclose(moved[group], 2 * float(cfg.optim[key]))]


def params_of(cfg, overrides=(), batch_size: int | None = None) -> dict:
    """A trial's knobs, flat: RECORDED (the group LRs and batch size as used) plus every override key's value."""
    from omegaconf import DictConfig, OmegaConf
    lrs = group_lrs(cfg)
    params = {"dropout": cfg.dropout, "lr": cfg.lr, "l2": cfg.l2, "seed": cfg.seed,
              **{key: lrs[group] for group, key in GROUP_LRS}, "batch_size": batch_size or cfg.train.batch_size}
    for o in overrides or []:
        key, text = item(o)
        if not is_axis_key(key) or key in params:
            continue
        node = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if isinstance(node, DictConfig):     # a group choice (optim=sgd): the option's name
            params[key] = text
        else:
            params[key] = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    return params
