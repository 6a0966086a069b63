"""The budget's probe (`python -m gridtune.plan --probe`): measure a grid's shapes by training them here.

`run_probe(units, trials, cfg_of)` trains the first job unit (a trial, or a fused group) of each shape
for up to PROBE_EPOCHS epochs, as its job would (gridtune.train.fused.job.run_chunk: fused where fusion is on),
then the first unit once more: the process's first run is cold (it pays the one-off warm-up), the
later ones warm, as in a sweep. It also times what the sweep driver's validation adds to a plan's:
the torch import and the build checks (gridtune.checks.builds), and a lone trial's whole run, claim, records
and provenance included, as its wall time.

`time_sweep(trial, config)` times what a sweep pays beside its trials' setup and epochs, end to end:
it runs `python -m gridtune.sweep -m` on the local launcher in a subprocess, on the grid's own
arguments narrowed to one trial, twice (hydra.sweeper.repeats=2: two jobs of the same shape), one epoch
each. Each trial's end is the moment its result line arrives; a job's own seconds are those between
two ends less the later trial's recorded setup and epoch seconds (Hydra's per-job work, claim,
records, provenance); the driver's are what is left of the subprocess's wall time (interpreter start,
imports, composition, validation, the cache check, the launcher's start, the summary, the exit).

Everything is written in a temporary directory, removed afterwards, and read back through
gridtune.sweepdir.ledger like any trial's records; tracking is off. Only gridtune.checks.budget calls it.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

from gridtune.sweepdir import ledger

PROBE_EPOCHS = 2


def run_probe(units, trials, cfg_of) -> tuple[list, float, float, float]:
    """(timed runs as sweepdir.timed_runs gives them, torch import s, the driver's validation s, of which
    each trial's but the first) for `units`, (trials, shape) pairs in launch order; `trials` are the
    grid's, `cfg_of` gives a config."""
    t0 = time.perf_counter()
    import torch  # noqa: F401  (timed: the driver's validation imports it)
    t1 = time.perf_counter()
    from .builds import check_builds
    from gridtune.train.fused.job import run_chunk
    check_builds(cfg_of(trials[0]))
    t2 = time.perf_counter()
    check_builds(cfg_of(trials[-1]))   # another trial's parts: built again when they differ (memoized)
    per_trial_s = time.perf_counter() - t2
    validate_s = (t2 - t0) + (len(trials) - 1) * per_trial_s
    first: dict[str, list] = {}
    for unit, shape in units:
        first.setdefault(shape, unit)
    plan = [*first.values(), next(iter(first.values()))]
    runs: list = []
    with tempfile.TemporaryDirectory(prefix="gridtune-probe-") as tmp:
        for i, unit in enumerate(plan):
            print(f"gridtune: budget: probe {i + 1}/{len(plan)}: {len(unit)} trial(s) for up to {PROBE_EPOCHS} "
                  f"epochs{' (warm)' if i == len(plan) - 1 else ''} in {tmp}", flush=True)
            start = time.perf_counter()
            run_chunk([_entry(t, cfg_of(t), Path(tmp, str(i), t["trial_id"])) for t in unit])
            got = ledger.timed_runs([Path(tmp, str(i))])
            if len(unit) == 1:      # the trial as its job runs it: claim, records and provenance included
                for rec, _ in got:
                    rec["wall_time_s"] = time.perf_counter() - start
            runs += got
    return runs, t1 - t0, validate_s, per_trial_s


def _entry(t: dict, cfg, out: Path) -> tuple:
    """A job entry (config, directory, overrides) of trial `t` that stops after PROBE_EPOCHS, untracked."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    OmegaConf.update(cfg, "train.stop_after_epoch", min(PROBE_EPOCHS, int(t["epochs"])), force_add=True)
    OmegaConf.update(cfg, "tracking", {"name": "none"}, merge=False)
    return cfg, out, list(t["overrides"])


# what time_sweep sets itself: the keys of the grid's own overrides it drops
_SET = ("out_root", "sweep_name", "tracking", "train.stop_after_epoch", "launcher.trials_per_job")


def sweep_args(trial: dict, config, tmp: str) -> list[str]:
    """`python -m gridtune.sweep` arguments: the grid's trial `trial` (its overrides, and the command's
    hydra.* ones but the sweeper's and the sweep dir's) twice, one epoch each, as two local jobs in `tmp`."""
    own = [o for o in trial["overrides"] if o.split("=", 1)[0].lstrip("+~") not in _SET]
    hyd = [str(o) for o in OmegaConf.select(config, "hydra.overrides.hydra", default=None) or []
           if not str(o).lstrip("+~").startswith(("hydra.sweeper", "hydra.sweep.", "hydra/launcher", "hydra.launcher"))]
    return ["-m", *own, *hyd, f"out_root={tmp}", "sweep_name=probe", f"hydra.sweep.dir={tmp}/probe",
            "train.stop_after_epoch=1", "tracking=none", "launcher.trials_per_job=1",
            "hydra.sweeper.repeats=2", "hydra.sweeper.halving.eta=null", "hydra.sweeper.probe=false",
            "hydra.sweeper.dry_run=false"]


def time_sweep(trial: dict, config) -> tuple[float, float] | None:
    """(the sweep driver's own seconds, a job's own seconds) as a two-job local sweep of `trial` pays
    them (module docstring); None when that sweep did not run its two trials."""
    with tempfile.TemporaryDirectory(prefix="gridtune-probe-") as tmp:
        print(f"gridtune: budget: probe: a sweep of 2 one-epoch trials, end to end, in {tmp}", flush=True)
        ends: dict[str, float] = {}
        t0 = time.perf_counter()
        with subprocess.Popen([sys.executable, "-m", "gridtune.sweep", *sweep_args(trial, config, tmp)], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}) as p:
            tail = []
            for line in p.stdout:
                if m := re.match(r"\[gridtune\] (\w+): \w+ .* -> \S+result\.json$", line.rstrip()):
                    ends[m.group(1)] = time.perf_counter() - t0
                tail = [*tail[-9:], line]
        wall = time.perf_counter() - t0
        own = {rec["trial_id"]: rec["timing"]["setup_s"] + sum(r["time_s"] for r in hist if "time_s" in r)
               for rec, hist in ledger.timed_runs([Path(tmp, "probe")])}
    if p.returncode != 0 or len(ends) != 2 or set(ends) != set(own):
        print("gridtune: budget: probe: that sweep failed; its driver's and jobs' own seconds are not measured:\n"
              + "".join(tail), end="", flush=True)
        return None
    (a, ta), (b, tb) = sorted(ends.items(), key=lambda kv: kv[1])
    job_s = max(tb - ta - own[b], 0.0)
    return max(wall - sum(own.values()) - 2 * job_s, 0.0), job_s
