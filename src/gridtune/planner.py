"""The trial configs of a grid, composed fast: once per distinct set of group choices.

Hydra composes a trial in two steps: the defaults list (every `group=option` choice) builds the
config, then every `key=value` override is merged into it. Trials of a grid mostly differ only in
values (lr, dropout, l2...), so `Planner.compose(overrides)` composes the group choices once,
keeps that config, and for each trial merges its value overrides into a copy, as Hydra's own
second step does (`key=v` must exist, `+key=v` must not, `++key=v` either way, `~key` deletes),
and records the overrides in `hydra.overrides` like a full compose. `Planner.full(overrides)`
is the plain full compose per trial, kept as the reference: tests/test_planner.py checks that both
give equal configs and trial ids on every grid in conf/sweep/ and on a generated 1,000-trial grid.
"""
from __future__ import annotations

import copy
import re

from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf, open_dict

from . import overrides as ov


class PlanError(ValueError):
    """A trial whose overrides do not compose; one line naming the override."""


class Planner:
    def __init__(self, config_loader, master: DictConfig):
        self.loader, self.master = config_loader, master
        self.groups = _groups(config_loader)
        self._bases: dict[tuple[str, ...], DictConfig] = {}

    def full(self, overrides: list[str]) -> DictConfig:
        """Hydra's full composition of one trial (the reference the fast path must equal)."""
        return self.loader.load_sweep_config(self.master, list(overrides))

    def is_group(self, o: Override) -> bool:
        return (o.package is not None or o.key_or_group in self.groups) and not isinstance(o.value(), dict)

    def compose(self, overrides: list[str]) -> DictConfig:
        parsed = ov.parse_all(overrides, self.loader)
        choices = tuple(o.input_line for o in parsed if self.is_group(o))
        if choices not in self._bases:
            self._bases[choices] = self.full(list(choices))
        cfg = copy.deepcopy(self._bases[choices])
        values = [o for o in parsed if not self.is_group(o)]
        for o in values:
            _apply(cfg, o)
        hydra_lines = list(self.master.hydra.overrides.hydra) + [o.input_line for o in parsed if o.is_hydra_override()]
        app = [o for o in parsed if not o.is_hydra_override()]
        with open_dict(cfg.hydra):
            cfg.hydra.overrides.task = [o.input_line for o in app]
            cfg.hydra.overrides.hydra = hydra_lines
            dirname = cfg.hydra.job.config.override_dirname
            cfg.hydra.job.override_dirname = _dirname(app, list(dirname.exclude_keys), dirname.item_sep,
                                                      dirname.kv_sep)
        return cfg


def _groups(loader, parent: str = "") -> set[str]:
    out = set()
    for g in loader.list_groups(parent):
        name = f"{parent}/{g}" if parent else g
        out |= {name} | _groups(loader, name)
    return out


def _apply(cfg: DictConfig, o: Override) -> None:
    """Merge one value override into cfg with the meaning Hydra gives it."""
    key, value = o.key_or_group, o.value()
    try:
        if o.is_delete():
            here = OmegaConf.select(cfg, key, throw_on_missing=False)
            if here is None or (value is not None and value != here):
                raise PlanError(f"Could not delete from config. '{key}' does not exist"
                                + ("." if here is None else f" with the value {value}."))
            parent, _, leaf = key.rpartition(".")
            with open_dict(cfg):
                del (OmegaConf.select(cfg, parent) if parent else cfg)[leaf]
        elif o.is_add():
            if OmegaConf.select(cfg, key, throw_on_missing=False) is not None and not isinstance(value, (dict, list)):
                raise PlanError(f"Could not append to config. An item is already at '{key}'.")
            OmegaConf.update(cfg, key, value, merge=True, force_add=True)
        elif o.is_force_add():
            OmegaConf.update(cfg, key, value, merge=True, force_add=True)
        else:
            try:
                OmegaConf.update(cfg, key, value, merge=True)
            except (AttributeError, KeyError) as e:    # omegaconf's ConfigAttributeError / ConfigKeyError
                raise PlanError(f"Could not override '{key}'. To append to your config use +{o.input_line}") from e
    except PlanError:
        raise
    except Exception as e:    # a value of the wrong type for its schema, and the like
        raise PlanError(f"Error merging override {o.input_line}: {' '.join(str(e).split())}") from e


def _dirname(app: list[Override], exclude: list[str], item_sep: str, kv_sep: str) -> str:
    lines = sorted(o.input_line for o in app if o.key_or_group not in exclude)
    return re.sub("[=]", kv_sep, item_sep.join(lines))
