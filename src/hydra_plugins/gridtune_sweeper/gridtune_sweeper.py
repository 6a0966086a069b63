"""The gridtune sweeper: Hydra's cartesian grid, made idempotent, validated up front and chunked. It
runs the driver's steps (gridtune.launch: grid, show, jobs) in order and owns the launcher.

Before launching anything it composes every trial of the grid (CLI lists, `hydra.sweeper.params`
from a grid file, `repeats`; once per distinct set of group choices, gridtune.config.planner), runs the
validation path (gridtune.checks.validation) over every trial, then the data and SLURM checks
(gridtune.checks.preflight), and stops with one line per problem and exit code 2 if any is invalid, so no
job is submitted, not even the valid ones. It computes each trial's id, drops duplicates, skips
trials whose record is final (ok or diverged) and holds the cache key of the data as it is now,
writes the manifest and each pending trial's config into its directory, prepares the shared audio
cache once, and then launches the rest, `launcher.trials_per_job` trials per job, on SLURM as job
arrays that fit the scheduler's limits (gridtune.slurm.arrays). With
`halving.eta` set it runs the grid as a successive-halving ladder instead (gridtune.halving.ladder: one
launch per rung). `dry_run: true` (used by `python -m gridtune.plan`) stops after printing the plan
(and the ladder, and the fused groups). Exit code: 0 when every trial ended ok, diverged (or, in a
ladder, stopped), 1 when one failed or a job broke (sbatch refused, a job died), 2 for invalid input.
`fast_compose: false` composes every trial from scratch (the reference; scripts/bench_plan.py).
The dry run lists at most `list_max` trials (the first and the last; null: every one).
"""

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


@dataclass
class HalvingConf:
    eta: Optional[int] = None                     # successive halving: keep the top 1/eta configs per rung (null: off)
    min_epochs: Optional[int] = None              # first rung (null: ceil(train.epochs/4)); rungs at min_epochs * eta^k
    noise: float = 1.0                            # below the cut but within this many standard errors: goes on (0: off)
    budget: float = 0.5                           # ... while the ladder trains <= this fraction of the full grid's epochs


@dataclass
class GridtuneSweeperConf:
    _target_: str = "hydra_plugins.gridtune_sweeper.gridtune_sweeper.GridtuneSweeper"
    params: Optional[Dict[str, str]] = None       # the grid: key -> comma list (grid files set it)
    repeats: int = 1                              # run every config with seeds seed, seed+1, ...
    dry_run: bool = False                         # print the plan, launch nothing
    prepare_cache: bool = True                    # decode the audio once in the driver, before fanning out
    fast_compose: bool = True                     # compose once per set of group choices, merge the values
    list_max: Optional[int] = 200                 # dry run: list at most this many trials (null: every one)
    halving: HalvingConf = field(default_factory=HalvingConf)   # early stopping of poor configs by rung
    probe: bool = False                           # time each shape's first trial here first (gridtune.checks.budget)


ConfigStore.instance().store(group="hydra/sweeper", name="gridtune", node=GridtuneSweeperConf, provider="gridtune")


class GridtuneSweeper(Sweeper):
    def __init__(self, params=None, repeats: int = 1, dry_run: bool = False, prepare_cache: bool = True,
                 fast_compose: bool = True, halving=None, list_max: Optional[int] = 200,
                 probe: bool = False) -> None:
        self.params = dict(params or {})
        self.list_max = None if list_max is None else max(int(list_max), 0)
        self.fast_compose = bool(fast_compose)
        self.halving = dict(halving or {})
        self.probe = bool(probe)
        self.job_idx = 0
        self.broke = False           # a launch that raised: sbatch refused, or a job died without a result
        self.repeats, self.dry_run, self.prepare_cache = int(repeats), bool(dry_run), bool(prepare_cache)
        self.config = self.launcher = self.hydra_context = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        from hydra.core.plugins import Plugins
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def _cfg(self, t):
        if t["cfg"] is None:
            t["cfg"] = self.planner.snapshot(t["overrides"])
        return t["cfg"]

    def sweep(self, arguments: List[str]) -> Any:
        from gridtune.checks import budget, validation
        from gridtune.config.planner import Planner
        from gridtune.launch import grid, jobs, show
        from gridtune.sweepdir import rundir
        t0 = time.perf_counter()
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        try:
            expanded = grid.expand(self.params, arguments, self.hydra_context.config_loader, self.repeats,
                                   int(self.config.get("seed", 0)))
        except ValueError as e:
            validation.refuse([str(e)], "gridtune", "in the grid; nothing was launched")
        self.planner = Planner(self.hydra_context.config_loader, self.config)
        trials, problems = grid.compose(self.planner, expanded, self.config, fast=self.fast_compose,
                                        deep=not self.dry_run)
        if problems:
            validation.refuse(problems, "gridtune", "in the grid; nothing was launched")
        if not trials:
            print("gridtune: the grid is empty; nothing to launch", file=sys.stderr)
            sys.exit(2)
        k = max(int(OmegaConf.select(self.config, "launcher.trials_per_job") or 1), 1)
        if not self.dry_run or k > 1 or self.halving.get("eta") is not None:
            for t in trials:          # the halving ladder, fusion and the launch read each trial's config
                self._cfg(t)
        spec = self._halving_spec(trials)
        done, stale = grid.split_done(trials, sweep_dir)
        todo = self._fusion_order([t for t in trials if t["trial_id"] not in done], k)
        cfg0 = self._cfg(trials[0])
        show.plan(str(cfg0.sweep_name), sweep_dir, trials, done, stale, todo, k, time.perf_counter() - t0, spec)
        # device-hours and wall time; over launcher.max_gpu_hours: exit 2
        budget.report(self.config, trials, todo, k, spec, self._cfg, self.planner, probe=self.probe)
        if self.dry_run:
            from gridtune.train.fused.grouping import plan_lines
            print("\n".join([*show.trial_lines(trials, done, stale, self.list_max), *plan_lines(todo, k, cfg0)]),
                  flush=True)
            return []
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        jobs.write_manifest(sweep_dir, trials)
        if not todo:
            print(f"gridtune: nothing to run. Reduce with: python -m gridtune.reduce {sweep_dir}", flush=True)
            return []
        if self.prepare_cache:
            jobs.prepare_cache(cfg0)
        returns, complete = self._run(spec, trials, todo, sweep_dir, k, cfg0)
        n_raised = jobs.raised(returns)
        counts = jobs.summary(sweep_dir, trials)
        # a trial pending while every job returned is held by another driver (its claim), not broken here
        bad = {s: n for s, n in counts.items() if s in rundir.NEEDS_RERUN or (s == "pending" and self.broke)}
        if bad and not self.broke:
            print(f"gridtune: {sum(bad.values())} of {len(trials)} trials did not end ok or diverged "
                  f"({', '.join(f'{n} {s}' for s, n in bad.items())})", file=sys.stderr, flush=True)
        # a failed trial, a job that broke, or a ladder that could not go on: say so and exit non-zero
        if n_raised or self.broke or bad or not complete:
            sys.exit(1)
        return returns

    def _run(self, spec, trials, todo, sweep_dir: Path, k: int, cfg0) -> tuple[list, bool]:
        """(job returns, whether the run is complete): the grid in one launch, or rung by rung."""
        from gridtune.launch import jobs
        if spec is None:
            return self._launch(sweep_dir, jobs.keyed(todo), k), True
        from gridtune.halving import ladder
        return ladder.run_ladder(
            spec, trials, sweep_dir, str(cfg0.objective), str(cfg0.objective_mode),
            lambda rung_todo, stop_after: self._launch(sweep_dir, jobs.keyed(rung_todo), k, stop_after))

    def _launch(self, sweep_dir: Path, todo, k: int, stop_after: Optional[int] = None) -> list:
        """Launch `todo` as jobs of <= k trials (to `stop_after` epochs when given: a halving rung). On
        SLURM the jobs go out as arrays that fit the scheduler's limits, each once the queue has room
        (gridtune.slurm.arrays)."""
        from gridtune.launch import jobs
        from gridtune.slurm import arrays
        launched = jobs.chunks(sweep_dir, todo, k, stop_after)
        if arrays.is_slurm(self.launcher):
            lim = arrays.limits(OmegaConf.select(self.config, "launcher.max_array_size"),
                                OmegaConf.select(self.config, "launcher.max_submit_jobs"))
            returns, errors = arrays.launch(self.launcher, launched, self.job_idx, lim)
        else:
            try:
                returns, errors = self.launcher.launch(launched, initial_job_idx=self.job_idx), []
            except Exception as e:   # a job that raised past the launcher
                returns, errors = [], [e]
        for e in errors:             # sbatch refused, or a job died without a result (killed, node lost)
            print(f"gridtune: launcher: {arrays.describe(e)}", file=sys.stderr)
        self.broke = self.broke or bool(errors)
        self.job_idx += len(launched)
        return list(returns or [])

    def _halving_spec(self, trials):
        """The ladder's Spec when halving is on, None when off; a bad setting exits 2, one line each."""
        from gridtune.halving import policy
        eta = self.halving.get("eta")
        if eta is None:
            return None
        epochs = {int(t["cfg"].train.epochs) for t in trials}
        h = {k: self.halving.get(k) for k in ("min_epochs", "noise", "budget")}
        objectives = {str(t["cfg"].objective) for t in trials}
        bad = policy.check(eta, h["min_epochs"], epochs, objectives, h["noise"], h["budget"])
        if bad:
            from gridtune.checks.validation import refuse
            refuse(bad, "gridtune", "in the halving settings; nothing was launched")
        e = epochs.pop()
        return policy.Spec(int(eta), policy.first_rung(h["min_epochs"], e), e, float(h["noise"]),
                            float(h["budget"]))

    def _fusion_order(self, todo, k: int):
        """With fusion possible, fusable trials become neighbours so they share a job's chunk."""
        from gridtune.train.fused import grouping
        try:
            fuse, _ = grouping.mode(self._cfg(todo[0])) if todo else ("off", 1)
        except ValueError as e:
            print(f"gridtune: {e}; nothing was launched", file=sys.stderr)
            sys.exit(2)
        return grouping.order(todo) if fuse != "off" and k > 1 else todo
