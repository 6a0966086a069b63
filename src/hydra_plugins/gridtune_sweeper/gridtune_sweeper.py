"""The gridtune sweeper: Hydra's cartesian grid, made idempotent, validated up front and chunked.

Before launching anything it composes every trial of the grid (CLI lists, `hydra.sweeper.params`
from a grid file, `repeats`; once per distinct set of group choices, gridtune.planner), runs the
validation path (gridtune.validation) over every trial and stops with one line per problem and
exit code 2 if any is invalid, so no job is submitted, not even the valid ones. It computes each
trial's id, drops duplicates, skips trials whose record is final (ok or diverged), writes the
manifest and each pending trial's config into its directory, prepares the shared audio cache once,
and then launches the rest as one array, `launcher.trials_per_job` trials per job. `dry_run: true`
(used by `python -m gridtune.plan`) stops after printing the plan. Exit code: 0 when every trial
ended ok or diverged, 1 when one failed or a job broke (sbatch refused, a job died), 2 for invalid
input. `fast_compose: false` composes every trial from scratch (the reference; scripts/bench_plan.py).
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
class GridtuneSweeperConf:
    _target_: str = "hydra_plugins.gridtune_sweeper.gridtune_sweeper.GridtuneSweeper"
    params: Optional[Dict[str, str]] = None       # the grid: key -> comma list (grid files set it)
    repeats: int = 1                              # run every config with seeds seed, seed+1, ...
    dry_run: bool = False                         # print the plan, launch nothing
    prepare_cache: bool = True                    # decode the audio once in the driver, before fanning out
    fast_compose: bool = True                     # compose once per set of group choices, merge the values
    extra: Dict[str, Any] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="gridtune", node=GridtuneSweeperConf, provider="gridtune")


class GridtuneSweeper(Sweeper):
    def __init__(self, params=None, repeats: int = 1, dry_run: bool = False, prepare_cache: bool = True,
                 fast_compose: bool = True, extra=None) -> None:
        self.params = dict(params or {})
        self.repeats, self.dry_run, self.prepare_cache = int(repeats), bool(dry_run), bool(prepare_cache)
        self.fast_compose = bool(fast_compose)
        self.config = self.launcher = self.hydra_context = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        from hydra.core.plugins import Plugins
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    # -- the grid -------------------------------------------------------------------------------
    def _grid(self, arguments: List[str]) -> List[List[str]]:
        from gridtune import overrides as ov
        args = [f"{k}={v}" for k, v in self.params.items()] + list(arguments)
        # a CLI value replaces the grid file's list for the same key (Hydra keeps the last one)
        grid = ov.grid(args, self.hydra_context.config_loader)
        if self.repeats > 1:
            base_seed = int(self.config.get("seed", 0))
            grid = [g + [f"seed={base_seed + r}"] for g in grid for r in range(self.repeats)]
        return grid

    def compose(self, grid: List[List[str]]):
        """(trials, problems): every trial validated; duplicates (same id) dropped. A trial's "cfg"
        (the trial config proper, no hydra node) is made only where needed (`_cfg`)."""
        from gridtune import config as gconfig, validation
        from gridtune.planner import Planner, snapshot
        self.planner = planner = Planner(self.hydra_context.config_loader, self.config)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        trials, problems, seen = [], [], set()
        for overrides in grid:
            label = f"trial [{' '.join(overrides)}]"
            try:
                if self.fast_compose:
                    with planner.trial(list(overrides)) as (cfg, tid):
                        bad = validation.trial_problems(cfg, sweep_dir, deep=not self.dry_run)
                        epochs, clips = (0, 0) if bad else (int(cfg.train.epochs), validation.n_clips(cfg))
                    kept = None
                else:
                    cfg = planner.full(list(overrides))
                    bad = validation.trial_problems(cfg, sweep_dir, deep=not self.dry_run)
                    tid, kept = gconfig.trial_id(cfg), snapshot(cfg)
                    epochs, clips = (0, 0) if bad else (int(cfg.train.epochs), validation.n_clips(cfg))
            except Exception as e:    # Hydra's composition errors and the planner's: unknown key, bad type
                problems.append(f"{label} {validation.one_line(e)}")
                continue
            problems += [f"{label} {p}" for p in bad]
            if bad or tid in seen:
                continue
            seen.add(tid)
            trials.append({"trial_id": tid, "overrides": list(overrides), "cfg": kept, "epochs": epochs,
                           "n_clips": clips})
        launcher = OmegaConf.select(self.config, "hydra.launcher", default=None)
        cfgs = planner.view([t["overrides"] for t in trials]) if self.fast_compose else [t["cfg"] for t in trials]
        problems += validation.extra_checks(cfgs, launcher)
        return trials, problems

    def _cfg(self, t):
        if t["cfg"] is None:
            t["cfg"] = self.planner.snapshot(t["overrides"])
        return t["cfg"]

    def sweep(self, arguments: List[str]) -> Any:
        from gridtune import config as gconfig, records, validation
        from gridtune.trial import params_of
        t0 = time.perf_counter()
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        try:
            grid = self._grid(arguments)
        except ValueError as e:
            validation.refuse([str(e)], "gridtune", "in the grid; nothing was launched")
        trials, problems = self.compose(grid)
        if problems:
            validation.refuse(problems, "gridtune", "in the grid; nothing was launched")
        if not trials:
            print("gridtune: the grid is empty; nothing to launch", file=sys.stderr)
            sys.exit(2)
        for t in trials:
            gconfig.check_inside(sweep_dir / t["trial_id"], sweep_dir, "hydra.sweep.subdir")
        done = {t["trial_id"] for t in trials if _final(sweep_dir / t["trial_id"], t["trial_id"])}
        todo = [t for t in trials if t["trial_id"] not in done]
        k = max(int(OmegaConf.select(self.config, "launcher.trials_per_job") or 1), 1)
        n_jobs = -(-len(todo) // k)
        cfg0 = self._cfg(trials[0])
        cost = sum(t["epochs"] * t["n_clips"] for t in todo)
        print(f"gridtune: sweep '{cfg0.sweep_name}' in {sweep_dir}: {len(trials)} trials, {len(done)} already done "
              f"(skipped), {len(todo)} to run as {n_jobs} job(s) of <= {k}; est. cost {cost:,} clip-epochs "
              f"(composed in {time.perf_counter() - t0:.1f}s)", flush=True)
        if self.dry_run:
            for t in trials:
                state = "done" if t["trial_id"] in done else "run"
                print(f"  {t['trial_id']}  {state:4s}  {' '.join(t['overrides'])}")
            return []
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        for t in trials:
            self._cfg(t)
        self._write_manifest(sweep_dir, trials, params_of, records)
        if not todo:
            print(f"gridtune: nothing to run. Reduce with: python -m gridtune.reduce {sweep_dir}", flush=True)
            return []
        for t in todo:                                  # the configs chunk members will load
            hydra_dir = sweep_dir / t["trial_id"] / ".hydra"
            records.atomic_write_text(hydra_dir / "config.yaml", OmegaConf.to_yaml(t["cfg"]))
            records.atomic_write_text(hydra_dir / "overrides.yaml", OmegaConf.to_yaml(t["overrides"]))
        if self.prepare_cache:
            self._prepare(cfg0)
        jobs = []
        for i in range(0, len(todo), k):
            chunk = todo[i:i + k]
            ids = ",".join(f"'{t['trial_id']}'" for t in chunk[1:])
            jobs.append(chunk[0]["overrides"] + ([f"++launcher.chunk=[{ids}]"] if ids else []))
        broken = None
        try:
            returns = self.launcher.launch(jobs, initial_job_idx=0)
        except Exception as e:   # sbatch refused, or a job died without a result: records tell the rest
            broken = f"gridtune: launcher: {type(e).__name__}: {' '.join(str(e).split())[:500]}"
            returns = []
        raised = self._raised(returns)
        counts = self._summary(sweep_dir, trials, records)
        if broken:
            print(broken, file=sys.stderr, flush=True)
        # a trial missing while every job returned is held by another driver (its claim), not broken here
        bad = {s: n for s, n in counts.items() if s in ("failed", "oom", "torn") or (s == "missing" and broken)}
        if broken or raised or bad:   # a failed trial, or a job that broke: say so and exit non-zero
            if bad and not broken:
                print(f"gridtune: {sum(bad.values())} of {len(trials)} trials did not end ok or diverged "
                      f"({', '.join(f'{n} {s}' for s, n in sorted(bad.items()))})", file=sys.stderr, flush=True)
            sys.exit(1)
        return returns

    # -- helpers --------------------------------------------------------------------------------
    @staticmethod
    def _prepare(cfg) -> None:
        from gridtune import data
        from gridtune.audio import BadAudio
        t0 = time.perf_counter()
        try:
            p = data.prepare(cfg)
        except BadAudio as e:   # data.on_bad_file=error met a file it cannot use: one line, no trial runs
            print(f"gridtune: {e} (data.on_bad_file=error); nothing was launched", file=sys.stderr)
            sys.exit(2)
        state = "built" if p.entry.built else "found"
        print(f"gridtune: audio cache {state}: {len(p.labels)} clips, {len(p.skipped)} skipped, "
              f"{p.entry.path} ({time.perf_counter() - t0:.1f}s)", flush=True)

    def _write_manifest(self, sweep_dir: Path, trials, params_of, records) -> None:
        """The current grid's trials. Finished trials of earlier grids in this directory still show in
        the reducer and status (they read the trial dirs), but they are no longer expected."""
        cfg0 = trials[0]["cfg"]
        records.write_json(sweep_dir / records.MANIFEST, {
            "sweep": cfg0.sweep_name, "objective": cfg0.objective, "objective_mode": cfg0.objective_mode,
            "trials": [{"trial_id": t["trial_id"], "overrides": t["overrides"], "params": params_of(t["cfg"])}
                       for t in trials]})

    @staticmethod
    def _raised(returns) -> int:
        from hydra.core.utils import JobStatus
        n = 0
        for r in returns or []:
            if getattr(r, "status", None) == JobStatus.FAILED:
                n += 1
                err = r._return_value
                print(f"gridtune: job [{' '.join(r.overrides or [])}] raised {type(err).__name__}: "
                      f"{' '.join(str(err).split())[:300]}", file=sys.stderr)
        return n

    @staticmethod
    def _summary(sweep_dir: Path, trials, records) -> None:
        counts: Dict[str, int] = {}
        for t in trials:
            try:
                status = records.read_json(sweep_dir / t["trial_id"] / records.RESULT).get("status", "?")
            except FileNotFoundError:
                status = "missing"
            except records.TornRecord:
                status = "torn"
            counts[status] = counts.get(status, 0) + 1
        text = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        print(f"gridtune: {len(trials)} trials: {text}. Leaderboard: python -m gridtune.reduce {sweep_dir}", flush=True)
        return counts


def _final(trial_dir: Path, tid: str) -> bool:
    from gridtune.trial import final_record
    return final_record(trial_dir, tid) is not None
