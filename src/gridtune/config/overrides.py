"""Override strings (`key=value`, `+key=v`, `group=option`, `key=a,b,c`), read with Hydra's own
grammar (`OverridesParser`) and nothing else: quoting, escapes, lists and sweeps mean exactly
what they mean on a Hydra command line.

`parse(lines)` gives {key: value} for recorded overrides (the report and the final run read a
trial's overrides this way); `item(line)` is one override's (key, value), `key(line)` its key
without its +/++/~ prefix (both remembered per line: a report reads the same lines many times);
`grid(lines)` expands sweep overrides into the cartesian list of trials, a later value for a key
replacing an earlier one (a CLI list replaces a grid file's list). Errors are `OverrideError`,
one line naming the override.
"""
from __future__ import annotations

import copy
import functools
import itertools
from typing import Any, Iterable

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override

_PARSER: OverridesParser | None = None


class OverrideError(ValueError):
    """An override string that Hydra's grammar does not accept; the message is one line."""


def parser(config_loader=None) -> OverridesParser:
    global _PARSER
    if config_loader is not None:
        return OverridesParser.create(config_loader=config_loader)
    if _PARSER is None:
        _PARSER = OverridesParser.create()
    return _PARSER


def parse_all(lines: Iterable[str], config_loader=None) -> list[Override]:
    """Hydra's Override objects, one per line, in order."""
    out = []
    for line in map(str, lines):
        try:
            out.append(parser(config_loader).parse_override(line))
        except Exception as e:   # Hydra's OverrideParseException: a multi-line message with a caret
            raise OverrideError(f"{line}: not a valid override ({' '.join(str(e).split())[:200]})") from None
    return out


@functools.lru_cache(maxsize=4096)
def _item(line: str) -> tuple[str, Any]:
    o = parse_all([line])[0]
    return o.key_or_group, None if o.is_delete() else o.value()


def item(line: str) -> tuple[str, Any]:
    """(key, value) of one override as `parse` reads it: "+optim.momentum=0.9" -> ("optim.momentum", 0.9),
    "model.channels=[8,16]" -> ("model.channels", [8, 16]); the value is None for a deletion (~key)."""
    k, v = _item(str(line))
    return k, copy.deepcopy(v)


def key(line: str) -> str:
    """The key (or group) an override sets, without +, ++ or ~: 'optim.lr_conv', 'hydra/launcher'."""
    return _item(str(line))[0]


def parse(lines: Iterable[str]) -> dict[str, Any]:
    """{key: value} of recorded overrides; a later override of the same key wins, deletions drop it.
    Values are Python values as Hydra reads them ('1e-3' -> 0.001, "'a b'" -> 'a b', '[1,2]' -> [1, 2])."""
    out: dict[str, Any] = {}
    for o in parse_all(lines):
        if o.is_delete():
            out.pop(o.key_or_group, None)
        else:
            out[o.key_or_group] = o.value()
    return out


def grid(lines: Iterable[str], config_loader=None) -> list[list[str]]:
    """The trials of a grid: one list of single-valued overrides per point of the cartesian product."""
    axes: dict[str, list[str]] = {}
    for o in parse_all(lines, config_loader):
        k = o.get_key_element()
        if o.is_sweep_override():
            if not o.is_discrete_sweep():
                raise OverrideError(f"{o.input_line}: only lists and ranges can be swept, not intervals")
            axes[k] = [f"{k}={v}" for v in o.sweep_string_iterator()]
        else:
            axes[k] = [f"{k}={o.get_value_element_as_str()}"]
    return [list(point) for point in itertools.product(*axes.values())]
