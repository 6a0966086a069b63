"""A base config as plain containers, and each trial of it resolved from them: the planner's fast path.

`Derived(base)` holds, for one set of group choices, the base's config proper as plain containers
(unresolved), the paths holding interpolations and the base's semantic config resolved (the trial
id's input). For a trial, given its value overrides as the schema converted them, `values` gives
the trial's config resolved to plain containers exactly as OmegaConf resolves it (typed) and
`trial_id` its id (resolved untyped, as gridtune.config.identity.trial_id does). An interpolation is resolved
by OmegaConf on the trial's working copy once per distinct set of values it reads (its
`signature`), then reused; one that reads anything else (a resolver, a container) is resolved on
the working copy every trial. Nothing is deep-copied per trial: a trial's containers share what
they do not change with the base's (copy on write). Only omegaconf is imported.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Callable, Iterator

from omegaconf import DictConfig, ListConfig, OmegaConf

from . import identity

_REF = re.compile(r"\$\{(\.*)([A-Za-z_][\w.]*)\}")   # ${key}, ${.sibling}, ${..uncle}: no resolver
_ENV = re.compile(r"\$\{oc\.env:([A-Za-z_]\w*)(?:,[^${}\\'\"]*)?\}")     # ${oc.env:NAME} or ${oc.env:NAME,default}
ABSENT = object()
_FAILED = object()
Path = tuple[str, ...]


class Fallback(Exception):
    """An interpolation the plain resolver does not handle; OmegaConf resolves it instead."""


class Values(dict):
    """A trial's config proper resolved to plain containers, read as `cfg.data.root` or
    `cfg["data"]["root"]`; its "hydra" entry, when there, is the working copy's hydra node (a
    DictConfig). Its containers are shared with other trials' and the base's: read, never change."""

    def __getattr__(self, key: str) -> Any:
        try:
            value = self[key]
        except KeyError:
            raise AttributeError(key) from None
        return Values(value) if type(value) is dict else value


def walk(raw: Any, path: Path) -> Any:
    """The value at `path` of plain containers, or ABSENT."""
    node = raw
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return ABSENT
        node = node[part]
    return node


def put(raw: dict, path: Path, value: Any) -> dict:
    """A copy of raw with `value` at `path`; only the dicts along the path are copied."""
    out = dict(raw)
    out[path[0]] = value if len(path) == 1 else put(raw[path[0]], path[1:], value)
    return out


def interpolations(raw: Any, path: Path = ()) -> Iterator[Path]:
    """Paths of the leaves (and lists) that hold an interpolation."""
    if isinstance(raw, dict):
        for k, v in raw.items():
            yield from interpolations(v, (*path, k))
    elif isinstance(raw, list):
        if "${" in json.dumps(raw, default=str):
            yield path
    elif isinstance(raw, str) and "${" in raw:
        yield path


def has_missing(raw: Any) -> bool:
    """A mandatory value left unset (???) anywhere."""
    if isinstance(raw, dict):
        return any(has_missing(v) for v in raw.values())
    if isinstance(raw, list):
        return any(has_missing(v) for v in raw)
    return raw == "???" and isinstance(raw, str)


def _target(m: re.Match, container: Path) -> Path:
    dots, name = m.group(1), tuple(m.group(2).split("."))
    return name if not dots else (*container[:len(container) - (len(dots) - 1)], *name)


def reads(raw: dict, path: Path, depth: int = 0) -> tuple | None:
    """What the interpolation at `path` reads, following the interpolations it reads: plain leaves
    (their paths) and environment variables (`${oc.env:NAME[,default]}`: their names); None when
    it reads anything else (another resolver, a container, a key that is not there)."""
    expr = walk(raw, path)
    if depth > 32 or not isinstance(expr, str) or "\\" in expr or "${" in _ENV.sub("", _REF.sub("", expr)):
        return None
    out: list = [m.group(1) for m in _ENV.finditer(expr)]
    for m in _REF.finditer(expr):
        target = _target(m, path[:-1])
        v = walk(raw, target)
        if v is ABSENT or isinstance(v, (dict, list)):
            return None
        if isinstance(v, str) and "${" in v:
            sub = reads(raw, target, depth + 1)
            if sub is None:
                return None
            out.extend(sub)
        else:
            out.append(target)
    return tuple(out)


def signature(raw: dict, leaves: tuple) -> tuple | None:
    """The values `leaves` (from `reads`) hold now, each with its type; None if one is a container."""
    out = []
    for leaf in leaves:
        if isinstance(leaf, str):
            out.append(os.environ.get(leaf))
            continue
        v = walk(raw, leaf)
        if isinstance(v, (dict, list)) or v is ABSENT:
            return None
        out.append((type(v), repr(v)))
    return tuple(out)


def resolve(root: dict, path: Path = ()) -> Any:
    """Untyped resolution of plain ${key} / ${.key} interpolations, as OmegaConf resolves them: of
    the whole of `root`, or of its node at `path`. Fallback for anything else."""
    def get(path: Path, depth: int):
        node = walk(root, path)
        if node is ABSENT:
            raise Fallback(".".join(path))
        return value(node, path if isinstance(node, dict) else path[:-1], depth + 1)

    def value(v, container: Path, depth: int):
        if depth > 32:
            raise Fallback("depth")
        if isinstance(v, dict):
            return {k: value(x, (*container, k), depth) if isinstance(x, (dict, list)) else value(x, container, depth)
                    for k, x in v.items()}
        if isinstance(v, list):
            if any(isinstance(x, (str, dict, list)) and "${" in json.dumps(x) for x in v):
                raise Fallback("an interpolation inside a list")
            return list(v)
        if not isinstance(v, str) or "${" not in v:
            return v
        if "\\" in v:
            raise Fallback(v)
        whole = _REF.fullmatch(v)
        if whole:
            return get(_target(whole, container), depth)
        out = _REF.sub(lambda m: str(get(_target(m, container), depth)), v)
        if "${" in out:
            raise Fallback(v)
        return out
    if not path:
        return value(root, (), 0)
    node = walk(root, path)
    return value(node, path if isinstance(node, dict) else path[:-1], 0)


def is_semantic(path: Path) -> bool:
    """Part of a trial's identity (gridtune.config.identity's NON_SEMANTIC_* left out)."""
    top, rest = path[0], path[1:]
    return top not in identity.NON_SEMANTIC_TOP and not (rest and rest[0] in identity.NON_SEMANTIC_NESTED.get(top, ()))


class Derived:
    """One base config (a set of group choices) as plain containers, and its trials resolved from
    them. `cfg` arguments give the working copy holding the trial (made to hold it when called)."""

    def __init__(self, base: DictConfig):
        self.raw = OmegaConf.to_container(OmegaConf.masked_copy(base, [k for k in base if k != "hydra"]),
                                          resolve=False)
        self.interps = tuple(interpolations(self.raw))
        self.missing = has_missing(self.raw)
        self.sem_raw = identity.semantic_raw(base)
        self.sem_interps = tuple(interpolations(self.sem_raw))
        try:    # the incremental id needs every semantic interpolation to read plain values
            self.sem = resolve(self.sem_raw)
        except Fallback:
            self.sem = None
        self.converted: dict[str, Any] = {}     # override line -> its value as the schema converted it
        self.typed: dict[tuple, Any] = {}       # (path, signature) -> OmegaConf's resolved value
        self.untyped: dict[tuple, Any] = {}     # (path, signature) -> the untyped resolved value
        self.plans: dict[tuple, tuple | None] = {}

    def convert(self, cfg: Callable[[], DictConfig], line: str, key: str) -> Any:
        """The value an override leaves at `key` (read from the working copy once per line)."""
        if line not in self.converted:
            value = OmegaConf.select(cfg(), key)
            if isinstance(value, (DictConfig, ListConfig)):
                value = OmegaConf.to_container(value, resolve=False)
            self.converted[line] = value
        return self.converted[line]

    def _plan(self, raw: dict, interps: tuple[Path, ...], paths: tuple[Path, ...]) -> tuple | None:
        """Of `interps`, those to resolve when `paths` are overridden (an overridden one is a plain
        value now), each with what it reads; None when an override lies inside an interpolated node.
        Decided once per set of overridden paths, on the first trial's containers."""
        if (interps, paths) not in self.plans:
            inside = any(p[:len(i)] == i and p != i for p in paths for i in interps)
            self.plans[interps, paths] = None if inside else tuple(
                (i, reads(raw, i)) for i in interps if not any(i[:len(p)] == p for p in paths))
        return self.plans[interps, paths]

    def values(self, cfg: Callable[[], DictConfig], overrides: list[tuple[Path, Any]]) -> Values | None:
        """The trial's config proper resolved as OmegaConf resolves it (typed), as plain containers;
        None where OmegaConf would refuse to read a value (the working copy is read instead)."""
        if self.missing or any(v == "???" and isinstance(v, str) for _, v in overrides):
            return None
        raw = self.raw
        for path, value in overrides:
            raw = put(raw, path, value)
        plan = self._plan(raw, self.interps, tuple(p for p, _ in overrides))
        if plan is None:
            return None
        out = raw
        for path, leaves in plan:
            sig = None if leaves is None else signature(raw, leaves)
            if sig is None:             # reads a resolver or a container: OmegaConf, every trial
                value = _select(cfg(), path)
            elif (path, sig) in self.typed:
                value = self.typed[path, sig]
            else:
                value = self.typed[path, sig] = _select(cfg(), path)
            if value is _FAILED:
                return None
            out = put(out, path, value)
        return Values(out)

    def trial_id(self, overrides: list[tuple[Path, Any]]) -> str:
        """gridtune.config.identity.trial_id of the trial, from plain containers: the base's resolved
        semantic config with the overridden values and the interpolations that read them."""
        sem = [(path, value) for path, value in overrides if is_semantic(path)]
        sem_raw = self.sem_raw
        for path, value in sem:
            sem_raw = put(sem_raw, path, value)
        plan = self._plan(sem_raw, self.sem_interps, tuple(p for p, _ in sem))
        out = self.sem
        try:
            if out is None or plan is None:
                raise Fallback("not plain references")
            for path, value in sem:
                out = put(out, path, value)
            for path, leaves in plan:
                sig = None if leaves is None else signature(sem_raw, leaves)
                if sig is None or (path, sig) not in self.untyped:
                    value = resolve(sem_raw, path)
                    if sig is None:
                        out = put(out, path, value)
                        continue
                    self.untyped[path, sig] = value
                out = put(out, path, self.untyped[path, sig])
        except Fallback:
            try:
                out = resolve(sem_raw)
            except Fallback:
                out = OmegaConf.to_container(OmegaConf.create(sem_raw), resolve=True)
        return identity.trial_id_of(out)


def _select(cfg: DictConfig, path: Path) -> Any:
    """OmegaConf's value at `path` of the working copy, containers made plain; _FAILED when it
    cannot be read (an interpolation that does not resolve, a missing value)."""
    try:
        value = OmegaConf.select(cfg, ".".join(path), throw_on_missing=True)
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
    except Exception:
        return _FAILED
    return value
