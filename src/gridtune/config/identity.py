"""Trial identity: what makes two trials the same, and where a trial may write.

`trial_id(cfg)` hashes the *semantic* part of a composed config: everything except where things are
written, how they are launched and tracked, and which device runs them. The same id names the trial
directory, the wandb run and the leaderboard row, and lets a rerun skip trials already done.
`check_inside` refuses output paths that escape their sweep directory. Importing this module
stores the config schemas (gridtune.config.schema) and the `${gridtune_trial_id:}` resolver; only
omegaconf and Hydra's ConfigStore are imported. The value checks live in gridtune.config.checks.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from . import schema   # noqa: F401  (stores the config schemas in Hydra's ConfigStore)
from .facts import NOT_IDENTITY

# Top-level keys that do not change what a trial computes, and keys inside groups that do not: from
# the one declaration of the keys that are not part of a trial's identity (gridtune.config.facts).
NON_SEMANTIC_TOP = tuple(k for k in NOT_IDENTITY if "." not in k)
NON_SEMANTIC_NESTED = {g: tuple(k.split(".", 1)[1] for k in NOT_IDENTITY if k.startswith(g + "."))
                       for g in dict.fromkeys(k.split(".")[0] for k in NOT_IDENTITY if "." in k)
                       if g not in NON_SEMANTIC_TOP}


class ConfigError(ValueError):
    """An invalid trial config; the message is one line naming the key and value."""


def semantic_raw(cfg: DictConfig) -> dict:
    """The unresolved semantic part (interpolations stay strings), as a plain dict."""
    # only the semantic keys are converted: the hydra node alone is larger than the trial config
    raw = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k not in NON_SEMANTIC_TOP]),
                                 resolve=False)
    for group, keys in NON_SEMANTIC_NESTED.items():
        for key in keys:
            if isinstance(raw.get(group), dict):
                raw[group].pop(key, None)
    return raw


def semantic_config(cfg: DictConfig) -> dict:
    """The resolved config minus locations, launcher, tracking and device (see module docstring).
    Resolved untyped: `${dropout}` in a float-typed field stays the int 0 when dropout=0, as in every
    trial id on disk."""
    return OmegaConf.to_container(OmegaConf.create(semantic_raw(cfg)), resolve=True)


def trial_id_of(semantic: dict, length: int = 10) -> str:
    blob = json.dumps(semantic, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:length]


def trial_id(cfg: DictConfig, length: int = 10) -> str:
    return trial_id_of(semantic_config(cfg), length)


def _trial_id_resolver(*, _root_: DictConfig) -> str:
    return trial_id(_root_)


def register_resolvers() -> None:
    """`${gridtune_trial_id:}` names a multirun trial's directory (hydra.sweep.subdir)."""
    if not OmegaConf.has_resolver("gridtune_trial_id"):
        OmegaConf.register_new_resolver("gridtune_trial_id", _trial_id_resolver)


register_resolvers()


def check_inside(child: str | Path, parent: str | Path, what: str) -> Path:
    """Refuse an output path that escapes its sweep directory (e.g. through '../' in an override)."""
    child_p, parent_p = Path(child).resolve(), Path(parent).resolve()
    if child_p != parent_p and parent_p not in child_p.parents:
        raise ConfigError(f"{what}={child}: escapes the sweep directory {parent_p}")
    return child_p
