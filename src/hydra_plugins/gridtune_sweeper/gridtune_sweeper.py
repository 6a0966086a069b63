"""The gridtune sweeper: Hydra's cartesian grid, made idempotent, validated up front and chunked.

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
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf

log = logging.getLogger(__name__)
_PLAIN_ID = re.compile(r"[0-9a-f]{1,40}")      # gridtune.config.identity.trial_id: hex digits, no path


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

    # -- the grid -------------------------------------------------------------------------------
    def _grid(self, arguments: List[str]) -> List[List[str]]:
        from gridtune.config import overrides as ov
        args = [f"{k}={v}" for k, v in self.params.items()] + list(arguments)
        # a CLI value replaces the grid file's list for the same key (Hydra keeps the last one)
        grid = ov.grid(args, self.hydra_context.config_loader)
        if self.repeats > 1:
            base_seed = int(self.config.get("seed", 0))
            grid = [g + [f"seed={base_seed + r}"] for g in grid for r in range(self.repeats)]
        return grid

    def compose(self, grid: List[List[str]]):
        """(trials, problems): every trial validated, then the grid's data and the SLURM request
        checked (gridtune.checks.preflight); duplicates (same id) dropped. A trial's "cfg" (the trial config
        proper, no hydra node) is made only where needed (`_cfg`)."""
        from gridtune.config import identity
        from gridtune.checks import preflight, validation
        from gridtune.config.planner import Planner, snapshot
        self.planner = planner = Planner(self.hydra_context.config_loader, self.config)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        trials, problems, seen = [], [], set()
        for overrides in grid:
            label = f"trial [{' '.join(overrides)}]"
            try:
                if self.fast_compose:     # the checks read the trial's plain resolved values
                    cfg, values, tid = planner.open(list(overrides))
                    bad = validation.trial_problems(cfg, sweep_dir, deep=not self.dry_run, values=values)
                    epochs = 0 if bad else int((cfg if values is None else values)["train"]["epochs"])
                    kept = None
                else:
                    cfg = planner.full(list(overrides))
                    bad = validation.trial_problems(cfg, sweep_dir, deep=not self.dry_run)
                    tid, kept = identity.trial_id(cfg), snapshot(cfg)
                    epochs = 0 if bad else int(cfg.train.epochs)
            except Exception as e:    # Hydra's composition errors and the planner's: unknown key, bad type
                problems.append(f"{label} {validation.one_line(e)}")
                continue
            problems += [f"{label} {p}" for p in bad]
            if bad or tid in seen:
                continue
            seen.add(tid)
            trials.append({"trial_id": tid, "overrides": list(overrides), "cfg": kept, "epochs": epochs})
        # the data each trial reads, indexed once per root: problems, clip counts and cache keys
        cfgs = planner.view([t["overrides"] for t in trials]) if self.fast_compose else [t["cfg"] for t in trials]
        facts, data_problems = preflight.inspect_data(cfgs)
        for t, f in zip(trials, facts):
            t["n_clips"], t["cache_key"] = (f.n_clips, f.cache_key) if f else (0, None)
        problems += [f"trial [{' '.join(trials[i]['overrides'])}] {p}" for i, p in data_problems]
        problems += preflight.check_slurm(OmegaConf.select(self.config, "hydra.launcher", default=None))
        return trials, problems

    def _cfg(self, t):
        if t["cfg"] is None:
            t["cfg"] = self.planner.snapshot(t["overrides"])
        return t["cfg"]

    def sweep(self, arguments: List[str]) -> Any:
        from gridtune.config import identity
        from gridtune.checks import preflight, validation
        from gridtune.sweepdir import ledger, records, rundir
        from gridtune.config.knobs import params_of
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
        k = max(int(OmegaConf.select(self.config, "launcher.trials_per_job") or 1), 1)
        if not self.dry_run or k > 1 or self.halving.get("eta") is not None:
            for t in trials:          # the halving ladder, fusion and the launch read each trial's config
                self._cfg(t)
        spec = self._halving_spec(trials)
        present = self._entries(sweep_dir)
        for t in trials:      # a trial id names no path; only a directory already there can lead elsewhere
            if present is None or t["trial_id"] in present or not _PLAIN_ID.fullmatch(t["trial_id"]):
                identity.check_inside(sweep_dir / t["trial_id"], sweep_dir, "hydra.sweep.subdir")
        done, stale = set(), {}
        for t in trials:      # done: final, and trained on the data as it is now (same cache key)
            if present is not None and t["trial_id"] not in present:       # no trial directory, no record
                continue
            rec = ledger.done_record(sweep_dir / t["trial_id"], t["trial_id"])
            if rec is not None and ledger.same_data(rec, t["cache_key"]):
                done.add(t["trial_id"])
            elif rec is not None:
                stale[t["trial_id"]] = (rec.get("cache_hash"), t["cache_key"])
        todo = [t for t in trials if t["trial_id"] not in done]
        todo = self._fusion_order(todo, k)
        n_jobs = -(-len(todo) // k)
        cfg0 = self._cfg(trials[0])
        cost = sum(t["epochs"] * t["n_clips"] for t in todo)
        print(f"gridtune: sweep '{cfg0.sweep_name}' in {sweep_dir}: {len(trials)} trials, {len(done)} already done "
              f"(skipped), {len(todo)} to run as {n_jobs} job(s) of <= {k}; est. cost {cost:,} clip-epochs "
              f"(composed in {time.perf_counter() - t0:.1f}s)", flush=True)
        if stale:
            print(f"gridtune: {preflight.redone_message(list(stale.values()))}", flush=True)
        if spec is not None:
            from gridtune.halving import ladder, policy
            n_configs = len({ladder.config_key(t["cfg"]) for t in trials})
            print(f"gridtune: successive halving, eta={spec.eta}, min_epochs={spec.min_epochs}, rungs at epochs "
                  f"{spec.rungs}:\n" + "\n".join(policy.plan_lines(spec, n_configs, len(trials) // n_configs)),
                  flush=True)
        from gridtune.checks import budget    # device-hours and wall time; over launcher.max_gpu_hours: exit 2
        budget.report(self.config, trials, todo, k, spec, self._cfg, self.planner, probe=self.probe)
        if self.dry_run:
            self._print_trials(trials, done, stale)
            from gridtune.train.fused.grouping import plan_lines
            print("\n".join(plan_lines(todo, k, cfg0)), flush=True)
            return []
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        self._write_manifest(sweep_dir, trials, params_of, records)
        if not todo:
            print(f"gridtune: nothing to run. Reduce with: python -m gridtune.reduce {sweep_dir}", flush=True)
            return []
        if self.prepare_cache:
            self._prepare(cfg0)
        complete = True
        if spec is None:
            returns = self._launch(sweep_dir, self._keyed(todo), k)
        else:
            from gridtune.halving import ladder
            returns, complete = ladder.run_ladder(
                spec, trials, sweep_dir, str(cfg0.objective), str(cfg0.objective_mode),
                lambda rung_todo, stop_after: self._launch(sweep_dir, self._keyed(rung_todo), k, stop_after))
        raised = self._raised(returns)
        counts = self._summary(sweep_dir, trials)
        # a trial pending while every job returned is held by another driver (its claim), not broken here
        bad = {s: n for s, n in counts.items() if s in rundir.NEEDS_RERUN or (s == "pending" and self.broke)}
        if bad and not self.broke:
            print(f"gridtune: {sum(bad.values())} of {len(trials)} trials did not end ok or diverged "
                  f"({', '.join(f'{n} {s}' for s, n in bad.items())})", file=sys.stderr, flush=True)
        # a failed trial, a job that broke, or a ladder that could not go on: say so and exit non-zero
        if raised or self.broke or bad or not complete:
            sys.exit(1)
        return returns

    def _launch(self, sweep_dir: Path, todo, k: int, stop_after: Optional[int] = None) -> list:
        """Write the configs chunk members will load, then launch `todo` as jobs of <= k trials
        (to `stop_after` epochs when given: a halving rung). On SLURM the jobs go out as arrays that
        fit the scheduler's limits, each once the queue has room (gridtune.slurm.arrays)."""
        from gridtune.slurm import arrays
        from gridtune.sweepdir import records
        extra = [f"++train.stop_after_epoch={stop_after}"] if stop_after else []
        for t in todo:
            hydra_dir = sweep_dir / t["trial_id"] / ".hydra"
            cfg = OmegaConf.masked_copy(t["cfg"], [key for key in t["cfg"] if key != "hydra"])
            OmegaConf.update(cfg, "train.stop_after_epoch", stop_after, force_add=True)
            records.atomic_write_text(hydra_dir / "config.yaml", OmegaConf.to_yaml(cfg))
            records.atomic_write_text(hydra_dir / "overrides.yaml", OmegaConf.to_yaml(t["overrides"]))
        jobs = []
        for i in range(0, len(todo), k):
            chunk = todo[i:i + k]
            ids = ",".join(f"'{t['trial_id']}'" for t in chunk[1:])
            jobs.append(chunk[0]["overrides"] + extra + ([f"++launcher.chunk=[{ids}]"] if ids else []))
        if arrays.is_slurm(self.launcher):
            lim = arrays.limits(OmegaConf.select(self.config, "launcher.max_array_size"),
                                OmegaConf.select(self.config, "launcher.max_submit_jobs"))
            returns, errors = arrays.launch(self.launcher, jobs, self.job_idx, lim)
        else:
            try:
                returns, errors = self.launcher.launch(jobs, initial_job_idx=self.job_idx), []
            except Exception as e:   # a job that raised past the launcher
                returns, errors = [], [e]
        for e in errors:             # sbatch refused, or a job died without a result (killed, node lost)
            print(f"gridtune: launcher: {arrays.describe(e)}", file=sys.stderr)
        self.broke = self.broke or bool(errors)
        self.job_idx += len(jobs)
        return list(returns or [])

    @staticmethod
    def _keyed(todo):
        """The trials as launched, each with the cache key of the data the driver indexed (data.cache_key:
        not part of its identity, never among its recorded overrides): a trial need not index it again."""
        for t in todo:
            if t.get("cache_key"):
                OmegaConf.update(t["cfg"], "data.cache_key", t["cache_key"])
        return [{**t, "overrides": [*t["overrides"], f"data.cache_key='{t['cache_key']}'"]} if t.get("cache_key")
                else t for t in todo]

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

    # -- helpers --------------------------------------------------------------------------------
    def _print_trials(self, trials, done, stale) -> None:
        """The dry run's list: one line per trial (id, state, overrides), at most `list_max` lines:
        a longer grid shows its first and last trials and the count of those left out."""
        def state(t) -> str:
            return "done" if t["trial_id"] in done else "redo" if t["trial_id"] in stale else "run"

        def line(t) -> str:
            return f"  {t['trial_id']}  {state(t):4s}  {' '.join(t['overrides'])}"
        n = len(trials)
        if self.list_max is None or n <= self.list_max:
            print("\n".join(line(t) for t in trials))
            return
        head, tail = (self.list_max + 1) // 2, self.list_max // 2
        left = trials[head:n - tail]
        counts = {s: 0 for s in ("run", "done", "redo")}
        for t in left:
            counts[state(t)] += 1
        print("\n".join([*(line(t) for t in trials[:head]),
                         f"  ... {len(left):,} more trials ({', '.join(f'{c:,} {s}' for s, c in counts.items())}; "
                         "hydra.sweeper.list_max=null lists every one)",
                         *(line(t) for t in trials[n - tail:])]))

    @staticmethod
    def _entries(sweep_dir: Path) -> Optional[set]:
        """The names in the sweep directory, listed once (most trials of a new grid have no directory
        yet); None when it cannot be listed (then every trial's directory is looked at)."""
        try:
            with os.scandir(sweep_dir) as it:
                return {e.name for e in it}
        except (FileNotFoundError, NotADirectoryError):
            return set()
        except OSError:
            return None

    def _fusion_order(self, todo, k: int):
        """With fusion possible, fusable trials become neighbours so they share a job's chunk."""
        from gridtune.train.fused import grouping
        try:
            fuse, _ = grouping.mode(self._cfg(todo[0])) if todo else ("off", 1)
        except ValueError as e:
            print(f"gridtune: {e}; nothing was launched", file=sys.stderr)
            sys.exit(2)
        return grouping.order(todo) if fuse != "off" and k > 1 else todo

    @staticmethod
    def _prepare(cfg) -> None:
        from gridtune.data import feed
        from gridtune.data.audio import BadAudio
        t0 = time.perf_counter()
        try:
            p = feed.prepare(cfg)
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
            "trials": [{"trial_id": t["trial_id"], "overrides": t["overrides"], "epochs": t["epochs"],
                        "params": params_of(t["cfg"], t["overrides"])} for t in trials]})

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
    def _summary(sweep_dir: Path, trials) -> Dict[str, int]:
        """The grid's trials as `gridtune.status` and the reducer count them (same states, same order)."""
        from gridtune.sweepdir import ledger, rundir
        ids = {t["trial_id"] for t in trials}
        states = [t for t in ledger.read_sweep(sweep_dir).trials if t.trial_id in ids]
        print(f"gridtune: {rundir.counts_line(states)}. Leaderboard: python -m gridtune.reduce {sweep_dir}",
              flush=True)
        return rundir.counts(states)
