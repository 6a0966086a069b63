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
import hashlib
import json
import re
from contextlib import contextmanager
from typing import Iterator

from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from . import identity
from . import overrides as ov


_REF = re.compile(r"\$\{(\.*)([A-Za-z_][\w.]*)\}")   # ${key}, ${.sibling}, ${..uncle}: no resolver


class _Fallback(Exception):
    """An interpolation the plain resolver does not handle; OmegaConf resolves it instead."""


class PlanError(ValueError):
    """A trial whose overrides do not compose; one line naming the override."""


class Planner:
    def __init__(self, config_loader, master: DictConfig):
        self.loader, self.master = config_loader, master
        self._parsed: dict[str, Override] = {}
        self._is_group: dict[str, bool] = {}
        self._listed: dict[str, set[str]] = {}
        self._bases: dict[tuple[str, ...], DictConfig] = {}
        self._work: dict[tuple[str, ...], tuple[DictConfig, dict]] = {}

    def full(self, overrides: list[str]) -> DictConfig:
        """Hydra's full composition of one trial (the reference the fast path must equal)."""
        return self.loader.load_sweep_config(self.master, list(overrides))

    def is_group(self, o: Override) -> bool:
        """Hydra's own test (the key names a config group), asked once per distinct key."""
        key = o.key_or_group
        if key not in self._is_group:
            parent, _, name = key.rpartition("/")
            if "." in key:                      # a config path, never a group
                self._is_group[key] = False
            else:
                if parent not in self._listed:
                    self._listed[parent] = set(self.loader.list_groups(parent))
                self._is_group[key] = name in self._listed[parent]
        return (o.package is not None or self._is_group[key]) and not isinstance(o.value(), dict)

    def parse(self, overrides: list[str]) -> list[Override]:
        """Hydra's Override objects, parsed once per distinct string."""
        todo = [o for o in overrides if o not in self._parsed]
        for line, o in zip(todo, ov.parse_all(todo, self.loader)):
            self._parsed[line] = o
        return [self._parsed[o] for o in overrides]

    def _base(self, choices: tuple[str, ...]) -> DictConfig:
        if choices not in self._bases:
            self._bases[choices] = self.full(list(choices))
        return self._bases[choices]

    @contextmanager
    def trial(self, overrides: list[str]) -> Iterator[tuple[DictConfig, str]]:
        """(config, trial id) of one trial, for reading inside the block: the value overrides are
        merged into a working copy shared by the trials of the same group choices, and taken out
        again when the block ends (copy what must outlive it: `snapshot`). The id is computed from
        plain containers. Adds, deletions, dict values and hydra settings take the `compose` path."""
        parsed = self.parse(overrides)
        choices = tuple(o.input_line for o in parsed if self.is_group(o))
        values = [o for o in parsed if not self.is_group(o)]
        if any(o.is_delete() or o.is_add() or o.is_force_add() or o.is_hydra_override()
               or isinstance(o.value(), dict) for o in values):
            cfg = self.compose(overrides)
            yield cfg, identity.trial_id(cfg)
            return
        if choices not in self._work:
            base = self._base(choices)
            raw = OmegaConf.to_container(snapshot(base), resolve=False)
            self._work[choices] = (copy.deepcopy(base), identity.semantic_raw(base), raw)
        work, sem, raw = self._work[choices]
        saved = []
        try:
            for o in values:       # the working copy always holds the base's values between trials
                saved.append((o.key_or_group, _walk(raw, o.key_or_group)))
                _apply(work, o)
            yield work, _fast_id(work, sem, values)
        finally:
            for key, raw in reversed(saved):
                if raw is not _ABSENT:
                    OmegaConf.update(work, key, raw, merge=False)

    def view(self, grid: list[list[str]]) -> "View":
        return View(self, grid)

    def snapshot(self, overrides: list[str]) -> DictConfig:
        """One trial's config proper (no hydra node), as its own object."""
        with self.trial(overrides) as (cfg, _):
            return snapshot(cfg)

    def compose(self, overrides: list[str]) -> DictConfig:
        """One trial's full config (hydra node included), equal to Hydra's full compose."""
        parsed = self.parse(overrides)
        choices = tuple(o.input_line for o in parsed if self.is_group(o))
        cfg = copy.deepcopy(self._base(choices))
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


class View:
    """The trials of a grid as configs, one at a time: each item is the planner's working copy with
    that trial's values, valid until the next item (copy with `snapshot` what must be kept)."""

    def __init__(self, planner: Planner, grid: list[list[str]]):
        self.planner, self.grid = planner, grid

    def __len__(self) -> int:
        return len(self.grid)

    def __iter__(self):
        for overrides in self.grid:
            with self.planner.trial(overrides) as (cfg, _):
                yield cfg


def snapshot(cfg: DictConfig) -> DictConfig:
    """The trial config proper (everything but the hydra node), as its own object."""
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])


_ABSENT = object()


def _walk(raw: dict, key: str):
    """The value at dotted `key` of a plain container, or _ABSENT."""
    node = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return copy.deepcopy(node)


def _fast_id(work: DictConfig, sem: dict, values: list[Override]) -> str:
    """trial_id(work), from the base's plain semantic config with the overridden keys' values."""
    raw = copy.deepcopy(sem)
    for o in values:
        key = o.key_or_group
        top, *rest = key.split(".")
        if top in identity.NON_SEMANTIC_TOP or (rest and rest[0] in identity.NON_SEMANTIC_NESTED.get(top, ())):
            continue
        if "${" in o.input_line:          # an interpolation typed on the command line
            return identity.trial_id(work)
        value = OmegaConf.select(work, key)   # as the schema converted it
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=False)
        here = raw
        for part in [top, *rest][:-1]:
            here = here.setdefault(part, {})
        here[([top, *rest])[-1]] = value
    try:
        resolved = _resolve(raw)
    except _Fallback:
        resolved = OmegaConf.to_container(OmegaConf.create(raw), resolve=True)
    return identity.trial_id_of(resolved)


def _resolve(root: dict):
    """Untyped resolution of plain ${key} / ${.key} interpolations, as OmegaConf resolves them."""
    def get(path: list[str], depth: int):
        node = root
        for part in path:
            if not isinstance(node, dict) or part not in node:
                raise _Fallback(".".join(path))
            node = node[part]
        return value(node, path if isinstance(node, dict) else path[:-1], depth + 1)

    def value(v, container: list[str], depth: int):
        if depth > 32:
            raise _Fallback("depth")
        if isinstance(v, dict):
            return {k: value(x, [*container, k], depth) if isinstance(x, (dict, list)) else value(x, container, depth)
                    for k, x in v.items()}
        if isinstance(v, list):
            if any(isinstance(x, (str, dict, list)) and "${" in json.dumps(x) for x in v):
                raise _Fallback("an interpolation inside a list")
            return list(v)
        if not isinstance(v, str) or "${" not in v:
            return v
        if "\\" in v:
            raise _Fallback(v)

        def target(m):
            dots, name = m.group(1), m.group(2).split(".")
            base = [] if not dots else container[:len(container) - (len(dots) - 1)]
            return get([*base, *name], depth)
        whole = _REF.fullmatch(v)
        if whole:
            return target(whole)
        out = _REF.sub(lambda m: str(target(m)), v)
        if "${" in out:
            raise _Fallback(v)
        return out
    return value(root, [], 0)
