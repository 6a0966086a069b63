"""The trial configs of a grid, composed fast: once per distinct set of group choices.

Hydra composes a trial in two steps: the defaults list (every `group=option` choice) builds the
config, then every `key=value` override is merged into it. Trials of a grid mostly differ only in
values (lr, dropout, l2...), so `Planner.compose(overrides)` composes the group choices once,
keeps that config, and for each trial merges its value overrides into a copy, as Hydra's own
second step does (`key=v` must exist, `+key=v` must not, `++key=v` either way, `~key` deletes),
and records the overrides in `hydra.overrides` like a full compose. `Planner.full(overrides)`
is the plain full compose per trial, kept as the reference: tests/test_planner.py checks that both
give equal configs and trial ids on every grid in conf/sweep/ and on a generated 1,000-trial grid.
The working copy of a set of group choices holds one trial at a time: `Planner.open(overrides)`
merges only the value overrides that differ from the previous trial's (and puts back those it
no longer has), and gives the trial's plain resolved values and id from the base's plain
containers (gridtune.config.plain), so the checks read plain dicts instead of resolving OmegaConf
interpolations per trial.
"""
from __future__ import annotations

import copy
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple

from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf, open_dict

from . import identity
from . import overrides as ov
from .plain import ABSENT, Derived, Values, walk


class PlanError(ValueError):
    """A trial whose overrides do not compose; one line naming the override."""


class Trial(NamedTuple):
    """One trial as `Planner.open` gives it; valid until the planner opens the next one."""
    cfg: DictConfig | None       # the config (the working copy, or a fresh compose for adds and deletions)
    values: Values | None        # the same trial as plain resolved values; None where not derived
    trial_id: str


@dataclass
class _Work:
    """One set of group choices: its working copy and the base as plain containers."""
    cfg: DictConfig                                          # the base with the value overrides applied now
    derived: Derived
    applied: dict[str, str] = field(default_factory=dict)    # key -> override line the copy holds now


class Planner:
    def __init__(self, config_loader, master: DictConfig):
        self.loader, self.master = config_loader, master
        self._parsed: dict[str, Override] = {}
        self._kind: dict[str, str] = {}
        self._is_group: dict[str, bool] = {}
        self._listed: dict[str, set[str]] = {}
        self._bases: dict[tuple[str, ...], DictConfig] = {}
        self._work: dict[tuple[str, ...], _Work] = {}

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

    def kind(self, line: str) -> str:
        """'group', 'value' (merged into the working copy) or 'compose' (adds, deletions, dict values,
        hydra settings: composed per trial), decided once per distinct string."""
        if line not in self._kind:
            o = self.parse([line])[0]
            self._kind[line] = "group" if self.is_group(o) else "compose" if (
                o.is_delete() or o.is_add() or o.is_force_add() or o.is_hydra_override()
                or isinstance(o.value(), dict)) else "value"
        return self._kind[line]

    def _base(self, choices: tuple[str, ...]) -> DictConfig:
        if choices not in self._bases:
            self._bases[choices] = self.full(list(choices))
        return self._bases[choices]

    @contextmanager
    def trial(self, overrides: list[str]) -> Iterator[tuple[DictConfig, str]]:
        """(config, trial id) of one trial, for reading inside the block: the config is a working
        copy shared by the trials of the same group choices, valid until the next trial (copy what
        must outlive it: `snapshot`). Adds, deletions, dict values and hydra settings take the
        `compose` path."""
        t = self.open(overrides)
        yield t.cfg, t.trial_id

    def open(self, overrides: list[str], with_id: bool = True, lazy: bool = False) -> Trial:
        """One trial: the working copy of its group choices made to hold exactly its value overrides
        (only what differs from the previous trial is merged or put back), its plain values (each
        interpolation resolved by OmegaConf once per distinct set of values it reads; their "hydra"
        entry is the working copy's hydra node) and its id. `lazy` (values only, no hydra node): the
        working copy is brought up to date only where OmegaConf must read it, and cfg is None when
        the values are given."""
        kinds = [self.kind(line) for line in overrides]
        lines = [line for line, k in zip(overrides, kinds) if k == "value"]
        keys = [self._parsed[line].key_or_group for line in lines]
        if "compose" in kinds or _overlapping(keys):
            cfg = self.compose(overrides)
            return Trial(cfg, None, identity.trial_id(cfg) if with_id else "")
        choices = tuple(line for line, k in zip(overrides, kinds) if k == "group")
        w = self._entry(choices)

        def synced() -> DictConfig:
            self._sync(choices, w, lines)
            return w.cfg
        if any("${" in line for line in lines):      # an interpolation typed on the command line
            return Trial(synced(), None, identity.trial_id(w.cfg) if with_id else "")
        if not lazy:
            synced()
        converted = [(tuple(k.split(".")), w.derived.convert(synced, line, k)) for line, k in zip(lines, keys)]
        values = w.derived.values(synced, converted)
        if values is None:
            return Trial(synced(), None, w.derived.trial_id(converted) if with_id else "")
        if not lazy:
            values["hydra"] = w.cfg.hydra
        return Trial(None if lazy else w.cfg, values, w.derived.trial_id(converted) if with_id else "")

    def _entry(self, choices: tuple[str, ...]) -> _Work:
        if choices not in self._work:
            base = self._base(choices)
            self._work[choices] = _Work(copy.deepcopy(base), Derived(base))
        return self._work[choices]

    def _sync(self, choices: tuple[str, ...], w: _Work, lines: list[str]) -> None:
        """Make the working copy hold the base plus exactly these value overrides."""
        want = {self._parsed[line].key_or_group: line for line in lines}
        if w.applied == want:
            return
        try:
            for key in [k for k in w.applied if k not in want]:
                value = walk(w.derived.raw, tuple(key.split(".")))
                if value is not ABSENT:
                    OmegaConf.update(w.cfg, key, copy.deepcopy(value), merge=False)
                del w.applied[key]
            for key, line in want.items():
                if w.applied.get(key) != line:
                    w.applied.pop(key, None)
                    _apply(w.cfg, self._parsed[line])
                    w.applied[key] = line
        except BaseException:       # a refused value: start the next trial from a fresh copy
            w.cfg, w.applied = copy.deepcopy(self._base(choices)), {}
            raise

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
    """The trials of a grid as configs, one at a time: each item is the trial's plain values
    (`Values`), or the planner's working copy where those are not derived, valid until the next
    item (copy with `snapshot` what must be kept)."""

    def __init__(self, planner: Planner, grid: list[list[str]]):
        self.planner, self.grid = planner, grid

    def __len__(self) -> int:
        return len(self.grid)

    def __iter__(self):
        for overrides in self.grid:
            t = self.planner.open(overrides, with_id=False, lazy=True)
            yield t.cfg if t.values is None else t.values


def snapshot(cfg: DictConfig) -> DictConfig:
    """The trial config proper (everything but the hydra node), as its own object."""
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])


def _overlapping(keys: list[str]) -> bool:
    """Two value overrides of one key, or of a key and a key inside it: merged in order instead."""
    if len(set(keys)) != len(keys):
        return True
    dotted = sorted(k + "." for k in keys)
    return any(b.startswith(a) for a, b in zip(dotted, dotted[1:]))
