"""The grid a sweep runs: expanded from its lists, every trial composed and checked, duplicates
dropped, and split into what is already done and what is to run.

`expand` is Hydra's cartesian product of the override lists (gridtune.config.overrides) with
`repeats` seeds. `compose` composes each trial (once per distinct set of group choices:
gridtune.config.planner), runs the one validation path over it (gridtune.checks.validation), then
the data and SLURM checks (gridtune.checks.preflight); it returns every problem, one line each, and
launches nothing. `split_done` lists the sweep directory once (gridtune.sweepdir.ledger.names): a trial whose record is final and
trained on the data as it is now (same cache key) is done; a final record on other data is stale.
"""
from __future__ import annotations

import re
from pathlib import Path

from omegaconf import OmegaConf

from gridtune.checks import preflight, validation
from gridtune.config import identity
from gridtune.config import overrides as ov
from gridtune.config.planner import Planner, snapshot
from gridtune.sweepdir import ledger

PLAIN_ID = re.compile(r"[0-9a-f]{1,40}")      # gridtune.config.identity.trial_id: hex digits, no path


def expand(params: dict, arguments: list[str], loader, repeats: int, base_seed: int) -> list[list[str]]:
    """Every trial's overrides: a grid file's lists, then the command line's (the last list of a key wins)."""
    args = [f"{k}={v}" for k, v in params.items()] + list(arguments)
    grid = ov.grid(args, loader)
    if repeats > 1:
        grid = [g + [f"seed={base_seed + r}"] for g in grid for r in range(repeats)]
    return grid


def _one(planner: Planner, overrides: list[str], sweep_dir: Path, fast: bool, deep: bool):
    """(problems, trial id, kept config or None, epochs) of one trial."""
    if fast:     # the checks read the trial's plain resolved values
        cfg, values, tid = planner.open(list(overrides))
        bad = validation.trial_problems(cfg, sweep_dir, deep=deep, values=values)
        return bad, tid, None, 0 if bad else int((cfg if values is None else values)["train"]["epochs"])
    cfg = planner.full(list(overrides))
    bad = validation.trial_problems(cfg, sweep_dir, deep=deep)
    return bad, identity.trial_id(cfg), snapshot(cfg), 0 if bad else int(cfg.train.epochs)


def compose(planner: Planner, grid: list[list[str]], config, *, fast: bool, deep: bool):
    """(trials, problems): every trial validated, then the grid's data and the SLURM request checked;
    duplicates (same id) dropped. A trial's "cfg" (the trial config proper, no hydra node) is made only
    where needed (the sweeper's `_cfg`)."""
    sweep_dir = Path(str(config.hydra.sweep.dir))
    trials, problems, seen = [], [], set()
    for overrides in grid:
        label = f"trial [{' '.join(overrides)}]"
        try:
            bad, tid, kept, epochs = _one(planner, overrides, sweep_dir, fast, deep)
        except Exception as e:    # Hydra's composition errors and the planner's: unknown key, bad type
            problems.append(f"{label} {validation.one_line(e)}")
            continue
        problems += [f"{label} {p}" for p in bad]
        if bad or tid in seen:
            continue
        seen.add(tid)
        trials.append({"trial_id": tid, "overrides": list(overrides), "cfg": kept, "epochs": epochs})
    # the data each trial reads, indexed once per root: problems, clip counts and cache keys
    cfgs = planner.view([t["overrides"] for t in trials]) if fast else [t["cfg"] for t in trials]
    facts, data_problems = preflight.inspect_data(cfgs)
    for t, f in zip(trials, facts):
        t["n_clips"], t["cache_key"] = (f.n_clips, f.cache_key) if f else (0, None)
    problems += [f"trial [{' '.join(trials[i]['overrides'])}] {p}" for i, p in data_problems]
    problems += preflight.check_slurm(OmegaConf.select(config, "hydra.launcher", default=None))
    return trials, problems


def split_done(trials: list[dict], sweep_dir: Path) -> tuple[set, dict]:
    """(ids done, {id: (old cache key, new cache key)} of final records trained on other data); first
    refuses (exit 2) a trial directory that leads outside the sweep directory."""
    present = ledger.names(sweep_dir)
    for t in trials:      # a trial id names no path; only a directory already there can lead elsewhere
        if present is None or t["trial_id"] in present or not PLAIN_ID.fullmatch(t["trial_id"]):
            identity.check_inside(sweep_dir / t["trial_id"], sweep_dir, "hydra.sweep.subdir")
    done, stale = set(), {}
    for t in trials:
        if present is not None and t["trial_id"] not in present:       # no trial directory, no record
            continue
        rec = ledger.done_record(sweep_dir / t["trial_id"], t["trial_id"])
        if rec is not None and ledger.same_data(rec, t["cache_key"]):
            done.add(t["trial_id"])
        elif rec is not None:
            stale[t["trial_id"]] = (rec.get("cache_hash"), t["cache_key"])
    return done, stale
