"""Ranking: seed groups, their statistics, the order of configs and whether the winner stands out.

A trial's knobs are its recorded params plus the values its overrides set (`gridtune.config.knobs`); the
columns are the default set and the sweep's own axes (`Leaderboard.columns`), never a fixed list.
Trials whose knobs differ only in `seed` form one config group. A group is ranked by the mean of
the objective over its ok trials (ties: lower mean val/loss), and carries mean, std, n and a 95 %
t interval for the objective and val/loss. Whether the winner is separable from the runners-up is
decided here, once, so that the terminal, Markdown, HTML and best.yaml all say the same thing.
With successive halving, configs stopped at a rung rank after the survivors, by the rung they
reached and then by their objective (gridtune.halving.policy.tier); only survivors can win.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from gridtune.halving import policy
from gridtune.config import knobs
from gridtune.sweepdir.ledger import Sweep
from gridtune.sweepdir.rundir import STATES, Trial
from gridtune.sweepdir.rundir import counts as state_counts

# Two-sided 95 % Student t quantiles t_{0.975, df} for df = 1..30; larger df use an expansion.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
# States of the trials a config is ranked on.
RANKED = ("ok", "stopped")
# Objectives where lower is better when the mode is not given explicitly.
_LOWER_IS_BETTER = ("loss", "ece", "overconfidence", "error", "time")


def t975(df: int) -> float:
    if df < 1:
        return math.nan
    if df <= len(_T975):
        return _T975[df - 1]
    # Cornish-Fisher expansion of t around the normal quantile: off by < 1e-4 for df > 30, and
    # spares the reducer scipy's import (over a second on a busy login node).
    z = 1.959963984540054
    return (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))


def default_mode(objective: str) -> str:
    return "min" if any(word in objective for word in _LOWER_IS_BETTER) else "max"


@dataclass
class Stat:
    """Mean, sample std, n and 95 % interval of one metric over a group's seeds."""
    n: int
    mean: float | None
    std: float | None = None
    lo: float | None = None
    hi: float | None = None

    @classmethod
    def of(cls, values) -> "Stat":
        values = [v for v in values if v is not None and math.isfinite(v)]
        n = len(values)
        if n == 0:
            return cls(0, None)
        mean = sum(values) / n
        if n == 1:
            return cls(1, mean)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
        half = t975(n - 1) * std / math.sqrt(n)
        return cls(n, mean, std, mean - half, mean + half)


@dataclass
class Group:
    key: str
    params: dict                      # the config without its seed
    members: list[Trial]              # ok trials, ranked on
    others: list[Trial] = field(default_factory=list)  # same config, not ranked (diverged seed, ...)
    objective: Stat | None = None
    loss: Stat | None = None
    rank: int = 0

    @property
    def seeds(self) -> list:
        seeds = {knobs.value(t.params, t.overrides, "seed") for t in self.members}
        return sorted((s for s in seeds if s is not None), key=str)

    @property
    def survivor(self) -> bool:
        """False for a config stopped early by successive halving."""
        return policy.tier([t.result for t in self.members])[0] == 0

    @property
    def representative(self) -> Trial:
        """The member with the best objective (whose best.pt one would pick up); build() sorts members."""
        return self.members[0]

    def mean(self, key: str) -> float | None:
        return Stat.of(t.metric(key) for t in self.members).mean

    def overrides(self) -> list[str]:
        """The override list the final run applies: the representative's, minus seed when averaged over seeds."""
        items = list(self.representative.overrides)
        if len(self.seeds) > 1:
            items = [o for o in items if knobs.key_of(o) != "seed"]
        return items


@dataclass
class Leaderboard:
    records: Sweep
    objective: str
    mode: str
    groups: list[Group]               # ranked, best first
    not_ranked: list[Trial]
    varying: list[str]                # the grid's axes: knobs (seed included) taking more than one value
    base: list[str] = field(default_factory=list)   # always-shown knobs: dropout, the LR(s) used, l2
    reasons: dict = field(default_factory=dict)     # trial id -> why an ok trial was not ranked
    separable: bool = False
    separability: str = "n/a"         # separable | not separable | unknown | n/a
    note: str = ""

    @property
    def sweep_dir(self) -> Path:
        return self.records.dir

    @property
    def counts(self) -> dict:
        return state_counts(self.records.trials)

    @property
    def extra(self) -> list[str]:
        """Axes shown after the metrics: every varying knob not in `base`, seed aside."""
        return [k for k in self.varying if k not in self.base and k != "seed"]

    def reason(self, t: Trial) -> str | None:
        return self.reasons.get(t.trial_id, t.reason)

    @staticmethod
    def value(t: Trial, key: str):
        """A trial's value of one knob (recorded params, else its overrides)."""
        return knobs.value(t.params, t.overrides, key)

    @property
    def winner(self) -> Group | None:
        return self.groups[0] if self.groups and self.groups[0].survivor else None

    def skipped_files(self) -> list[tuple[str, str, int]]:
        """(path, reason, number of trials reporting it), deduplicated across trials."""
        seen: dict[tuple[str, str], int] = {}
        for t in self.records.trials:
            for item in t.get("skipped_files") or []:
                if isinstance(item, dict):
                    key = (str(item.get("path")), str(item.get("reason") or ""))
                    seen[key] = seen.get(key, 0) + 1
        return [(p, r, n) for (p, r), n in sorted(seen.items())]


def _hashable(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def base_knobs(trials: list[Trial]) -> list[str]:
    """dropout, LR, l2; the LR column becomes one per parameter group when a group did not train at lr."""
    lrs = [k for _, k in knobs.GROUP_LRS] if knobs.lr_split(trials) else ["lr"]
    return [k for d in knobs.DEFAULT for k in (lrs if d == "lr" else [d])]


def config_of(t: Trial, keys: list[str]) -> dict:
    """The trial's knobs without its seed: recorded params, plus what its overrides set for `keys`."""
    config = {k: v for k, v in t.params.items() if k != "seed"}
    config.update({k: knobs.value(t.params, t.overrides, k) for k in keys if k != "seed"})
    return config


def _group(trials: list[Trial], keys: list[str], rankable) -> dict[str, Group]:
    groups: dict[str, Group] = {}
    for t in trials:
        config = config_of(t, keys)
        key = _hashable(config)
        group = groups.setdefault(key, Group(key=key, params=config, members=[]))
        (group.members if rankable(t) else group.others).append(t)
    return groups


def _overlap(a: Stat, b: Stat) -> bool:
    # A single-seed runner-up has no interval: it overlaps when its value lies in the winner's.
    b_lo, b_hi = (b.lo, b.hi) if b.n > 1 else (b.mean, b.mean)
    return a.lo <= b_hi and b_lo <= a.hi


def _separability(board: Leaderboard) -> None:
    groups = [g for g in board.groups if g.survivor]   # stopped configs were scored at earlier epochs
    if len(groups) < 2:
        board.separable, board.separability = True, "n/a"
        board.note = ("only one config survived successive halving: the stopped ones were scored at earlier epochs, "
                      "so there is no runner-up to separate from" if len(board.groups) > len(groups) else
                      "only one config was ranked: there is no runner-up to separate from")
        return
    win = groups[0]
    if win.objective.n < 2:
        board.separable, board.separability = False, "unknown"
        board.note = "single seed: run repeats to check separability"
        return
    overlapping = [g.rank for g in groups[1:] if _overlap(win.objective, g.objective)]
    board.separable = not overlapping
    board.separability = "separable" if board.separable else "not separable"
    if board.separable:
        board.note = "winner separable from the runners-up: its 95% interval overlaps no other config's"
    elif overlapping[0] == 2:
        more = [r for r in overlapping if r != 2]
        board.note = "winner not separable from runner-up: 95% intervals overlap" + (
            f" (also with rank {', '.join(map(str, more))})" if more else "")
    else:
        board.note = (f"winner not separable from rank {', '.join(map(str, overlapping))}: "
                      "95% intervals overlap")
    if groups[1].objective.n < 2:
        board.note += "; runner-up has a single seed"


def build(records: Sweep, objective: str, mode: str) -> Leaderboard:
    """Group, rank and judge separability. Ok trials without the objective are listed as not ranked."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
    reasons = {t.trial_id: f"status {t.state} but metrics[{objective!r}] is missing or not finite"
               for t in records.trials if t.state in RANKED and t.metric(objective) is None}

    def rankable(t: Trial) -> bool:
        return t.state in RANKED and t.trial_id not in reasons
    varying = knobs.axes(records.trials)
    base = base_knobs(records.trials)
    groups = [g for g in _group(records.trials, varying + base, rankable).values() if g.members]
    sign = -1.0 if mode == "max" else 1.0
    for g in groups:
        g.members.sort(key=lambda t: (sign * t.metric(objective), t.metric("val/loss") or math.inf, t.trial_id))
        g.objective = Stat.of(t.metric(objective) for t in g.members)
        g.loss = Stat.of(t.metric("val/loss") for t in g.members)
    # Round before comparing so float noise in means does not break genuine ties.
    groups.sort(key=lambda g: (policy.tier([t.result for t in g.members]), round(sign * g.objective.mean, 12),
                               round(g.loss.mean, 12) if g.loss.mean is not None else math.inf,
                               g.representative.trial_id))
    for i, g in enumerate(groups, 1):
        g.rank = i
    not_ranked = sorted((t for t in records.trials if not rankable(t)),
                        key=lambda t: (STATES.index(t.state), t.trial_id))
    board = Leaderboard(records=records, objective=objective, mode=mode, groups=groups,
                        not_ranked=not_ranked, varying=varying, base=base, reasons=reasons)
    _separability(board)
    return board
