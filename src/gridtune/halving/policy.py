"""Successive halving over a grid: the rungs, each rung's decision from the trials' records, the ladder file.

Rungs sit at `min_epochs · eta^k` epochs, below `train.epochs`, and the last rung is `train.epochs`
itself (min_epochs defaults to ⌈train.epochs/4⌉: `first_rung`, `HORIZON`). Every config of the grid
trains to the first rung; at each rung the configs are ranked and the top ⌈n/eta⌉ go on; the value
of the last of them is the cut. The value a trial is ranked on at a rung is its **best objective over the
epochs up to the rung epoch** (the same rule that picks a trial's best epoch, so a noisy last epoch
does not sink a config). A config's seeds (`repeats`) are ranked by their mean and promoted or
stopped together; configs with no value (every seed diverged) rank last; ties go to the config
whose smallest trial id sorts first.

A config below the cut goes on too when the data cannot tell it from the cut: its gap is less than
`noise` standard errors of the difference (gridtune.halving.noise: binomial on the val clips the
records hold, plus the seeds' spread), in rank order while the ladder, halved plainly from there on,
stays within `budget` of the full grid's epochs (`Spec.room`). noise = 0 is the plain rule.

A decision is a pure function of the rung's members, their `history.jsonl` and records, and the
earlier decisions, so it is the same whoever computes it and whenever: the rows up to a rung epoch
never change once written. The ladder (`halving.json` in the sweep directory, written atomically)
records every decision taken, with each config's value, cut, gap, standard error, margin and why it
went on or stopped. `plan_lines` shows the ladder and warns where rungs sit too early
(`HORIZON`). The leaderboard's order of stopped configs (`tier`) lives here too. Standard library only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from gridtune.sweepdir import records
from .noise import Noise

LADDER = "halving.json"
RULE = ("best objective up to the rung epoch; configs ranked by the mean over their seeds; configs without "
        "a value last; ties: smallest trial id first; the top ceil(n/eta) go on, and so does every config "
        "whose gap to the last of them (the cut) is less than `noise` standard errors of the difference "
        "(binomial on the val clips for a proportion, plus the seeds' spread), in rank order while the "
        "ladder stays within `budget` of the full grid's epochs")
# Curves still cross before this fraction of train.epochs: plan warns about a first rung there, and the
# default first rung is the first epoch after it (scripts/bench_halving.py, task11 at 15 epochs: one
# seed's full-grid pick ranked 12-14 of 18 by its value at epochs 1-3, and 2nd at epoch 4).
HORIZON = 0.25
# Metrics every history.jsonl row carries (engine.TrialRun.fit): the objectives halving can rank on.
PER_EPOCH = ("train/loss", "train/acc", "val/loss", "val/acc", "val/bal_acc", "val/macro_f1",
             "val/ece", "val/confidence", "val/overconfidence")


@dataclass(frozen=True)
class Spec:
    eta: int
    min_epochs: int
    epochs: int
    noise: float = 0.0          # configs below the cut by less than this many standard errors go on (0: plain rule)
    budget: float = 1.0         # ... while the ladder trains at most this fraction of the full grid's epochs

    @property
    def rungs(self) -> list[int]:
        """Epochs of the rungs: min_epochs · eta^k below epochs, then epochs."""
        out, e = [], self.min_epochs
        while e < self.epochs:
            out.append(e)
            e *= self.eta
        return out + [self.epochs]

    def _halve(self, sizes: list[int]) -> list[int]:
        """Configs per rung so far, continued to the last rung by the plain rule (⌈n/eta⌉)."""
        out = list(sizes)
        while len(out) < len(self.rungs):
            out.append(-(-out[-1] // self.eta))
        return out

    def _cost(self, sizes: list[int]) -> int:
        """Config-epochs of a ladder with these configs per rung."""
        return sum(n * (e - s) for n, e, s in zip(sizes, self.rungs, [0] + self.rungs[:-1]))

    def sizes(self, n_configs: int) -> list[int]:
        """Configs that train to each rung under the plain rule: n, ⌈n/eta⌉, ⌈n/eta²⌉, ..."""
        return self._halve([n_configs])

    def epochs_trained(self, n_configs: int, repeats: int = 1) -> int:
        """Total trained epochs of the plain ladder (each trial resumes where its last rung left it)."""
        return repeats * self._cost(self.sizes(n_configs))

    def room(self, sizes: list[int]) -> int:
        """How many configs may go on from the rung reached (`sizes`: configs per rung so far) so that
        this ladder, plain from the next rung on, trains at most `budget` of the full grid's epochs;
        never fewer than the plain rule's ⌈n/eta⌉."""
        n, limit = sizes[-1], self.budget * sizes[0] * self.epochs
        while n > -(-sizes[-1] // self.eta) and self._cost(self._halve([*sizes, n])) > limit:
            n -= 1
        return n


def first_rung(min_epochs: int | None, epochs: int) -> int:
    """The first rung's epoch: `min_epochs`, or by default ⌈HORIZON · epochs⌉."""
    return min_epochs if min_epochs is not None else max(1, math.ceil(HORIZON * epochs))


def _number(value, lo: float, hi: float, lo_open: bool = False) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        return False
    return (lo < value if lo_open else lo <= value) and value <= hi


def check(eta, min_epochs, epochs: set, objectives: set, noise=0.0, budget=1.0) -> list[str]:
    """One-line problems with a halving setting for a grid whose trials have these epochs/objectives."""
    problems = []
    if not isinstance(eta, int) or isinstance(eta, bool) or eta < 2:
        problems.append(f"hydra.sweeper.halving.eta={eta!r}: must be an integer >= 2")
    if not _number(noise, 0, math.inf) or noise == math.inf:
        problems.append(f"hydra.sweeper.halving.noise={noise!r}: must be a number >= 0 (standard errors of a "
                        "difference; 0: the plain top-1/eta rule)")
    if not _number(budget, 0, 1, lo_open=True):
        problems.append(f"hydra.sweeper.halving.budget={budget!r}: must be a number in (0, 1] (a fraction of "
                        "the full grid's epochs)")
    if len(epochs) != 1:
        problems.append(f"train.epochs={sorted(epochs)}: halving needs one train.epochs for the whole grid")
    elif min_epochs is not None and (not isinstance(min_epochs, int) or isinstance(min_epochs, bool)
                                     or not 1 <= min_epochs < min(epochs)):
        problems.append(f"hydra.sweeper.halving.min_epochs={min_epochs!r}: must be an integer >= 1 "
                        f"and < train.epochs ({min(epochs)})")
    elif first_rung(min_epochs, min(epochs)) >= min(epochs):
        problems.append(f"train.epochs={min(epochs)}: too few epochs for a ladder (the first rung must come before it)")
    for obj in sorted(objectives - set(PER_EPOCH)):
        problems.append(f"objective={obj}: not recorded per epoch, so halving cannot rank on it "
                        f"(one of {', '.join(PER_EPOCH)})")
    return problems


def plan_lines(spec: Spec, n_configs: int, repeats: int = 1) -> list[str]:
    """The ladder as `plan` prints it: configs and epochs per rung, total epochs against the full grid,
    how the noise margin may add configs, and warnings about where the rungs sit."""
    lines, start = [], 0
    for k, (n, e) in enumerate(zip(spec.sizes(n_configs), spec.rungs)):
        lines.append(f"  rung {k}: {n} config(s) x {repeats} seed(s) to epoch {e} (+{e - start} epochs each)")
        start = e
    full, halved = n_configs * repeats * spec.epochs, spec.epochs_trained(n_configs, repeats)
    lines.append(f"  total: {halved} trained epochs vs {full} for the full grid ({halved / full:.2f}x)")
    if spec.noise > 0:
        most = max(halved, math.floor(spec.budget * full))
        lines.append(f"  noise margin {spec.noise:g} SE: configs below the cut by less go on too, "
                     f"up to {most} trained epochs ({most / full:.2f}x, budget {spec.budget:g})")
    return lines + [f"  warning: {w}" for w in warnings(spec, halved / full)]


def warnings(spec: Spec, ratio: float) -> list[str]:
    """Where a ladder is likely to lose the full grid's pick, each with its reason."""
    out, first = [], spec.rungs[0]
    if first < HORIZON * spec.epochs:
        out.append(f"rung 0 at epoch {first} sits before {HORIZON:g} of train.epochs ({spec.epochs}), where learning "
                   f"curves still cross (short-horizon bias: slow starters win late; in the task11 benchmark one "
                   f"seed's full-grid pick ranked 12-14 of 18 at epochs 1-3 of 15, 2nd at epoch 4); "
                   f"the default min_epochs, {first_rung(None, spec.epochs)}, is past it")
    if spec.noise == 0:
        out.append("noise=0: configs are stopped on gaps the val set may not resolve (the plain top-1/eta rule)")
    if ratio > spec.budget:
        out.append(f"the plain ladder alone trains {ratio:.2f}x the full grid's epochs, "
                   f"more than budget {spec.budget:g}")
    return out


def rung_value(history: list[dict], objective: str, mode: str, epoch: int) -> float | None:
    """Best objective over history rows with epoch <= `epoch` (None when there is none)."""
    values = [r.get(objective) for r in history if isinstance(r.get("epoch"), int) and r["epoch"] <= epoch]
    values = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        return None
    return max(values) if mode == "max" else min(values)


def decide_rung(spec: Spec, decisions: list[dict], members: dict[str, str], values: dict[str, float | None],
                mode: str, noise: Noise) -> dict:
    """The decision at the rung after `decisions` (the ladder's earlier ones), its room from spec.budget."""
    sizes = [d["n"] for d in decisions] + [len(set(members.values()))]
    return decide(members, values, spec.eta, mode, noise, spec.room(sizes))


def decide(members: dict[str, str], values: dict[str, float | None], eta: int, mode: str,
           noise: Noise = Noise(), room: int | None = None) -> dict:
    """Rank a rung. `members`: trial id -> config key (seeds of one config share it); `values`: the
    trials' rung values. The top ⌈n/eta⌉ go on; the value of the last of them is the cut. A config
    below the cut goes on too when its gap to the cut is inside `noise`'s margin (strictly) and fewer
    than `room` configs go on before it (None: no limit); the others stop. Returns the ranking (best
    first) with each config's value, cut, gap, standard error, margin and verdict, and the trial ids."""
    groups: dict[str, list[str]] = {}
    for tid in sorted(members):
        groups.setdefault(members[tid], []).append(tid)
    sign = -1.0 if mode == "max" else 1.0
    ranked = []
    for key, tids in groups.items():
        vals = [values[t] for t in tids if values.get(t) is not None]
        ranked.append({"config": key, "trial_ids": tids, "value": sum(vals) / len(vals) if vals else None,
                       "seed_values": vals})
    ranked.sort(key=lambda g: (g["value"] is None, round(sign * g["value"], 12) if g["value"] is not None else 0.0,
                               g["trial_ids"][0]))
    top = -(-len(ranked) // eta)
    cut = ranked[top - 1]
    for rank, g in enumerate(ranked, 1):
        g["rank"] = rank
        if g["value"] is not None and cut["value"] is not None:
            mine, theirs = g["seed_values"], cut["seed_values"]
            g.update(cut=cut["value"], gap=-sign * (cut["value"] - g["value"]),
                     se=math.sqrt(noise.variance(mine)), margin=noise.margin(mine, theirs))
        if rank <= top:
            g.update(promoted=True, why=f"top {top} of {len(ranked)}")
        elif "gap" not in g:
            g.update(promoted=False, why="no value")
        elif g["gap"] >= g["margin"]:
            g.update(promoted=False, why="worse than the cut by more than the noise")
        elif room is not None and sum(r["promoted"] for r in ranked[:rank - 1]) >= room:
            g.update(promoted=False, why="inside the noise, but over the budget")
        else:
            g.update(promoted=True, why="inside the noise")
    return {"n": len(ranked), "top": top, "keep": sum(g["promoted"] for g in ranked), "noise": noise.describe(),
            "ranking": ranked,
            "promoted": sorted(t for g in ranked if g["promoted"] for t in g["trial_ids"]),
            "stopped": sorted(t for g in ranked if not g["promoted"] for t in g["trial_ids"])}


def stop_record(rung: int, epoch: int, g: dict, n: int) -> dict:
    """result.json's `halving` of a trial stopped at a rung: where, its value, and why (cut, gap, margin)."""
    return {"rung": rung, "epoch": epoch, "value": g["value"], "rank": g["rank"], "of": n,
            **{k: g[k] for k in ("cut", "gap", "margin") if k in g}}


def why(h: dict) -> str:
    """', 0.1212 worse than the cut 0.4545, noise margin 0.0831' from a stop record (', over the budget'
    added for a config inside the margin, stopped by the budget); '' without a cut."""
    if not all(isinstance(h.get(k), (int, float)) for k in ("cut", "gap", "margin")):
        return ""
    budget = ", over the budget" if h["gap"] < h["margin"] else ""
    return f", {h['gap']:.4f} worse than the cut {h['cut']:.4f}, noise margin {h['margin']:.4f}{budget}"


def stop_reason(rung: int, g: dict, n: int) -> str:
    reason = f"stopped at rung {rung}: rank {g['rank']} of {n}"
    return reason + (why(g) or ("" if g["value"] is not None else ", no value"))


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
        "noise": spec.noise, "budget": spec.budget, "rungs": spec.rungs, "objective": objective,
        "objective_mode": mode, "rule": RULE,
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

