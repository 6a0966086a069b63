"""Successive halving over a grid: the rungs, each rung's decision from the trials' records, the ladder file.

Rungs sit at `min_epochs · eta^k` epochs, below `train.epochs`, and the last rung is `train.epochs`
itself. Every config of the grid trains to the first rung; at each rung the configs are ranked and
the top ⌈n/eta⌉ go on to the next, the rest stop there. The value a trial is ranked on at a rung is
its **best objective over the epochs up to the rung epoch** (the same rule that picks a trial's
best epoch, so a noisy last epoch does not sink a config). A config's seeds (`repeats`) are ranked
by their mean and promoted or stopped together; configs with no value (every seed diverged) rank
last; ties go to the config whose smallest trial id sorts first.

A decision is a pure function of the rung's members and their `history.jsonl`, so it is the same
whoever computes it and whenever: the rows up to a rung epoch never change once written. The
ladder (`halving.json` in the sweep directory, written atomically) records every decision taken.
The leaderboard's order of stopped configs (`tier`) lives here too. Standard library only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from gridtune import records

LADDER = "halving.json"
RULE = ("best objective up to the rung epoch; configs ranked by the mean over their seeds; "
        "configs without a value last; ties: smallest trial id first")
# Metrics every history.jsonl row carries (engine.TrialRun.fit): the objectives halving can rank on.
PER_EPOCH = ("train/loss", "train/acc", "val/loss", "val/acc", "val/bal_acc", "val/macro_f1",
             "val/ece", "val/confidence", "val/overconfidence")


@dataclass(frozen=True)
class Spec:
    eta: int
    min_epochs: int
    epochs: int

    @property
    def rungs(self) -> list[int]:
        """Epochs of the rungs: min_epochs · eta^k below epochs, then epochs."""
        out, e = [], self.min_epochs
        while e < self.epochs:
            out.append(e)
            e *= self.eta
        return out + [self.epochs]

    def sizes(self, n_configs: int) -> list[int]:
        """Configs that train to each rung: n, ⌈n/eta⌉, ⌈n/eta²⌉, ..."""
        out = [n_configs]
        for _ in self.rungs[1:]:
            out.append(-(-out[-1] // self.eta))
        return out

    def epochs_trained(self, n_configs: int, repeats: int = 1) -> int:
        """Total trained epochs of the whole ladder (each trial resumes where its last rung left it)."""
        starts = [0] + self.rungs[:-1]
        return repeats * sum(n * (e - s) for n, e, s in zip(self.sizes(n_configs), self.rungs, starts))


def check(eta, min_epochs, epochs: set, objectives: set) -> list[str]:
    """One-line problems with a halving setting for a grid whose trials have these epochs/objectives."""
    problems = []
    if not isinstance(eta, int) or isinstance(eta, bool) or eta < 2:
        problems.append(f"hydra.sweeper.halving.eta={eta!r}: must be an integer >= 2")
    if len(epochs) != 1:
        problems.append(f"train.epochs={sorted(epochs)}: halving needs one train.epochs for the whole grid")
    elif not isinstance(min_epochs, int) or isinstance(min_epochs, bool) or not 1 <= min_epochs < min(epochs):
        problems.append(f"hydra.sweeper.halving.min_epochs={min_epochs!r}: must be an integer >= 1 "
                        f"and < train.epochs ({min(epochs)})")
    for obj in sorted(objectives - set(PER_EPOCH)):
        problems.append(f"objective={obj}: not recorded per epoch, so halving cannot rank on it "
                        f"(one of {', '.join(PER_EPOCH)})")
    return problems


def plan_lines(spec: Spec, n_configs: int, repeats: int = 1) -> list[str]:
    """The ladder as `plan` prints it: configs and epochs per rung, total epochs against the full grid."""
    lines, start = [], 0
    for k, (n, e) in enumerate(zip(spec.sizes(n_configs), spec.rungs)):
        lines.append(f"  rung {k}: {n} config(s) x {repeats} seed(s) to epoch {e} (+{e - start} epochs each)")
        start = e
    full, halved = n_configs * repeats * spec.epochs, spec.epochs_trained(n_configs, repeats)
    lines.append(f"  total: {halved} trained epochs vs {full} for the full grid ({halved / full:.2f}x)")
    return lines


def rung_value(history: list[dict], objective: str, mode: str, epoch: int) -> float | None:
    """Best objective over history rows with epoch <= `epoch` (None when there is none)."""
    values = [r.get(objective) for r in history if isinstance(r.get("epoch"), int) and r["epoch"] <= epoch]
    values = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        return None
    return max(values) if mode == "max" else min(values)


def decide(members: dict[str, str], values: dict[str, float | None], eta: int, mode: str) -> dict:
    """Rank a rung. `members`: trial id -> config key (seeds of one config share it); `values`: the
    trials' rung values. Returns the ranking (best first) and the promoted and stopped trial ids."""
    groups: dict[str, list[str]] = {}
    for tid in sorted(members):
        groups.setdefault(members[tid], []).append(tid)
    sign = -1.0 if mode == "max" else 1.0
    ranked = []
    for key, tids in groups.items():
        vals = [values.get(t) for t in tids if values.get(t) is not None]
        mean = sum(vals) / len(vals) if vals else None
        ranked.append({"config": key, "trial_ids": tids, "value": mean})
    ranked.sort(key=lambda g: (g["value"] is None, round(sign * g["value"], 12) if g["value"] is not None else 0.0,
                               g["trial_ids"][0]))
    keep = -(-len(ranked) // eta)
    for rank, g in enumerate(ranked, 1):
        g["rank"], g["promoted"] = rank, rank <= keep
    return {"n": len(ranked), "keep": keep, "ranking": ranked,
            "promoted": sorted(t for g in ranked if g["promoted"] for t in g["trial_ids"]),
            "stopped": sorted(t for g in ranked if not g["promoted"] for t in g["trial_ids"])}


def stop_reason(rung: int, rank: int, n: int) -> str:
    return f"stopped at rung {rung}: rank {rank} of {n}"


def read_ladder(sweep_dir: str | Path) -> dict | None:
    """The ladder file of a sweep, or None (no halving, or a torn file)."""
    try:
        return records.read_json(Path(sweep_dir) / LADDER)
    except (FileNotFoundError, records.TornRecord):
        return None


def write_ladder(sweep_dir: str | Path, spec: Spec, objective: str, mode: str, decisions: list[dict],
                 done: bool) -> None:
    records.write_json(Path(sweep_dir) / LADDER, {
        "schema": 1, "eta": spec.eta, "min_epochs": spec.min_epochs, "epochs": spec.epochs,
        "rungs": spec.rungs, "objective": objective, "objective_mode": mode, "rule": RULE,
        "decisions": decisions, "complete": done})


def tier(results: list[dict | None]) -> tuple:
    """Leaderboard order of a config from its trials' result.json: survivors (0, 0, 0), then configs
    stopped at rung k as (1, -k, rank at that rung): a config that reached a later rung ranks above
    one stopped earlier, and configs stopped at the same rung keep that rung's order."""
    stops = [(r.get("halving") or {}) for r in results if (r or {}).get("status") == "stopped"]
    stops = [(h["rung"], h.get("rank") or 0) for h in stops if isinstance(h.get("rung"), int)]
    if not stops:
        return (0, 0, 0)
    rung, rank = max(stops)
    return (1, -rung, rank)

