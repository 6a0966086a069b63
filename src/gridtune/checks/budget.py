"""What a grid will cost before it runs: device-hours and wall time, and the launcher.max_gpu_hours limit.

`report` (called by the sweeper where the plan is printed, in plan and sweep alike) prints the
estimate and refuses a grid over the limit. It is built from measured epoch times only:

- records of earlier trials of the same shape (gridtune.config.knobs.epoch_shape: what an epoch's cost
  depends on, device class and fused group size included) in the sweep directory and its siblings,
  read through gridtune.sweepdir.ledger.timed_runs: each epoch's `time_s` and the run's `timing`;
- or, with `plan --probe`, the runs gridtune.checks.probe trains here first (each shape's first job unit,
  a couple of epochs, in a temporary directory) and its timing of the driver's validation.

The cost model (gridtune.checks.costs): a run in a process that has trained nothing yet is cold: its
setup and first epoch carry the process's one-off warm-up. A job's unit (a trial, or g fused trials) of
E epochs costs g x setup + the first epoch's extra + E x epoch. A job pays cold once; so does the local
launcher, whose jobs all run in the driver's process, one after another. SLURM runs up to
hydra.launcher.array_parallelism jobs (and launcher.max_submit_jobs) at once, packed in order into free
slots. With halving each rung is a launch of the configs the plain rule keeps (the noise margin may
keep more, up to halving.budget), each with its setup again. Device-hours are the jobs' time
(CPU-hours on CPU); wall time adds the driver. From records alone the driver is this process's start
and nothing for what a job pays beside its trials but its records. With `--probe` on the local
launcher both are timed end to end (gridtune.checks.probe.time_sweep: a two-job sweep of the grid's
first trial in a subprocess): the driver's start, validation, launch and exit (its validation scaled
to the grid's trials), and each job's own seconds (Hydra's per-job work, claim, records); on SLURM the
probe times the validation and a job's composition and torch import. Never in it: an audio cache
still to build (said so) and queue waits.

The limit holds the device-hours of the measured shapes (a lower bound when some are not measured)
to launcher.max_gpu_hours: exit 2, one line, nothing created. With nothing measured it cannot be
checked: one line says so and the sweep goes on. Torch-free; the probe imports the engine.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from gridtune.train.fused import grouping
from gridtune.config import knobs
from gridtune.sweepdir import ledger, rundir
from gridtune.data.cache import is_built
from .costs import costs_of, jobs_of, total, with_group


def device_class(cfg, slurm: bool, config) -> str:
    """Where the grid's trials will train: "cuda", or "cpu/<threads>t" (as gridtune.train.runtime.set_cpu)."""
    dev = str(cfg.device)
    if dev == "auto":
        gpus = OmegaConf.select(config, "hydra.launcher.gpus_per_node", default=0) or 0
        dev = "cuda" if (int(gpus) > 0 if slurm else _cuda_here()) else "cpu"
    if dev == "cuda":
        return "cuda"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = OmegaConf.select(config, "hydra.launcher.cpus_per_task") if slurm else os.environ.get("SLURM_CPUS_PER_TASK")
    return f"cpu/{int(cfg.train.get('threads') or cpus or usable or 1)}t"


def _cuda_here() -> bool:
    if "torch" in sys.modules:
        return bool(sys.modules["torch"].cuda.is_available())
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = Path("/proc/driver/nvidia/gpus")
    return visible not in ("", "-1") and gpus.is_dir() and any(gpus.iterdir())


def process_age_s() -> float | None:
    """Seconds since this process started (Linux /proc), None where that cannot be read."""
    try:
        start = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(uptime - start / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        return None


def fmt_h(h: float) -> str:
    return f"{h:.2f}" if h >= 0.1 else f"{h:.2g}"


def fmt_s(s: float) -> str:
    return f"{s:.1f}s" if s < 60 else rundir.fmt_duration(s)


def report(config, trials, todo, k: int, spec, cfg_of, planner, *, probe: bool = False) -> None:
    """Print the grid's estimate (the sweeper's plan); over launcher.max_gpu_hours: one line, exit 2.
    `cfg_of` gives a trial's config, `planner` (gridtune.config.planner.Planner) composes the grid's."""
    if not todo:
        print("gridtune: budget: nothing to run: 0 device-hours", flush=True)
        return
    age = process_age_s() or 0.0
    slurm = "submitit" in str(OmegaConf.select(config, "hydra.launcher._target_", default=""))
    cfg0 = cfg_of(todo[0])
    dev = device_class(cfg0, slurm, config)
    shapes = [knobs.epoch_shape(c, t["n_clips"], dev) for t, c in zip(todo, planner.view([t["overrides"] for t in todo]))]
    fuse, cap = grouping.mode(cfg0)
    fused = k > 1 and (fuse == "on" or (fuse == "auto" and dev == "cuda"))
    jobs = jobs_of(todo, k, shapes, fused, cap, cfg_of)
    parent = Path(str(config.hydra.sweep.dir)).parent
    costs = costs_of(ledger.timed_runs([Path(str(config.hydra.sweep.dir)), *(
        sorted(parent.iterdir()) if parent.is_dir() else [])]))
    start_s, validate_s, source, e2e = 0.0, None, "records of earlier trials", None
    if probe:
        costs, start_s, validate_s, e2e = _probe(config, trials, todo, jobs, cfg_of, planner, costs, slurm)
        source = "the probe"
    parallel = _parallel(config, len(jobs), slurm)
    device_s, jobs_s, missing = total(jobs, spec, costs, slurm, parallel, start_s)
    limit = OmegaConf.select(config, "launcher.max_gpu_hours", default=None)
    if missing == len(todo):
        print(f"gridtune: budget: unknown: no epoch of this grid's {len(set(shapes))} shape(s) was measured on "
              f"{dev} (no timed record of the same shape under {parent}); python -m gridtune.plan --probe "
              "<same args> measures them", flush=True)
        if limit is not None:
            _enforce(float(limit), None, missing)
        return
    dry = bool(OmegaConf.select(config, "hydra.sweeper.dry_run", default=False))
    driver_s = e2e[0] if e2e else age + (validate_s or 0.0 if dry else 0.0)
    how = f"up to {parallel} at once (SLURM; queue waits not in it)" if slurm else "one after another (local launcher)"
    unit = "GPU-hours" if dev == "cuda" else f"CPU-hours: {dev.split('/')[1][:-1]} CPU threads, no GPU"
    print(f"gridtune: budget: est. {'at least ' if missing else ''}{fmt_h(device_s / 3600)} {unit}; wall "
          f"{fmt_s(driver_s + jobs_s)}: {len(jobs)} job(s) {how}" + (
              f"; {missing} of {len(todo)} trials of shapes not measured on {dev} are not in it "
              "(python -m gridtune.plan --probe measures them)" if missing else ""), flush=True)
    valid = "done" if not dry else fmt_s(validate_s) if validate_s is not None else "not measured"
    unbuilt = {t["cache_key"] for t in todo if t.get("cache_key") and not is_built(cfg0.data.cache_dir, t["cache_key"])}
    cache = f"audio cache {f'{len(unbuilt)} to build, not estimated' if unbuilt else 'built'}"
    parts = (f"start, validation, launch and exit, timed end to end; {cache}) + jobs {fmt_s(jobs_s)} (each "
             f"{fmt_s(e2e[1])} of Hydra's and the records' beside its trials)" if e2e else
             f"start {fmt_s(age)}, validation {valid}, {cache}) + jobs {fmt_s(jobs_s)}")
    print(f"gridtune: budget: wall = driver {fmt_s(driver_s)} ({parts}; measured by {source}:", flush=True)
    for shape in dict.fromkeys(shapes):
        _shape_line(shape, shapes, jobs, costs)
    if spec is not None:
        full = total(jobs, None, costs, slurm, parallel, start_s)[0]
        print(f"gridtune: budget: halving: {fmt_h(device_s / 3600)} device-hours instead of {fmt_h(full / 3600)} for the full "
              f"grid ({device_s / full:.2f}x; plain rule: the noise margin may add up to halving.budget)", flush=True)
    if fused:
        alone, _, unmeasured = total(jobs_of(todo, k, shapes, False, cap, cfg_of), spec, costs, slurm, parallel, start_s)
        print(f"gridtune: budget: fusion: {fmt_h(device_s / 3600)} device-hours instead of {fmt_h(alone / 3600)} unfused"
              if not unmeasured else "gridtune: budget: fusion: unfused trials of these shapes are not measured")
    if limit is not None:
        _enforce(float(limit), device_s / 3600, missing)


def _probe(config, trials, todo, jobs, cfg_of, planner, costs, slurm: bool):
    """(costs with the probe's, a job's seconds before its trials, the driver's validation, and on the
    local launcher (driver seconds, a job's own seconds) timed end to end, else None): `plan --probe`."""
    from .probe import run_probe, time_sweep
    runs, import_s, validate_s, per_trial_s = run_probe([unit for job in jobs for unit in job], trials, cfg_of)
    costs = {**costs, **costs_of(runs)}
    e2e = None if slurm else time_sweep(todo[0], config)     # two jobs of its first trial
    if e2e is not None:     # a job's own seconds hold its composition, claim and records: not twice
        costs = {s: dataclasses.replace(c, other_s=0.0) for s, c in costs.items()}
        return costs, e2e[1], validate_s, (e2e[0] + (len(trials) - 2) * per_trial_s, e2e[1])
    t0 = time.perf_counter()
    planner.full(list(todo[0]["overrides"]))     # what the launcher does first for each job: Hydra's compose
    return costs, time.perf_counter() - t0 + (import_s if slurm else 0.0), validate_s, None


def _parallel(config, n_jobs: int, slurm: bool) -> int:
    if not slurm:
        return 1
    caps = [OmegaConf.select(config, "hydra.launcher.array_parallelism", default=None),
            OmegaConf.select(config, "launcher.max_submit_jobs", default=None), n_jobs]
    return max(1, min(int(c) for c in caps if c))


def _shape_line(shape: str, shapes, jobs, costs) -> None:
    n = shapes.count(shape)
    for size in sorted({len(u) for job in jobs for u, s in job if with_group(s, 1) == with_group(shape, 1)}):
        c = costs.get(with_group(shape, size))
        if c is None:
            continue
        cold, warm = c.start_s(True), c.start_s(False)
        print(f"gridtune: budget:   {n} trial(s){f' in fused groups of {size}' if size > 1 else ''}: "
              f"epoch {fmt_s(c.epoch_s)}, setup and first epoch's extra {fmt_s(warm)} ({fmt_s(cold)} cold: "
              f"a process's first run), from {c.runs} run(s)", flush=True)


def _enforce(limit: float, device_h: float | None, missing: int) -> None:
    if device_h is None:
        print(f"gridtune: budget: launcher.max_gpu_hours={limit:g} is set, but nothing of this grid is measured: "
              "the limit is not checked (python -m gridtune.plan --probe measures it)", flush=True)
    elif device_h > limit:
        print(f"gridtune: est. {'at least ' if missing else ''}{fmt_h(device_h)} device-hours exceed "
              f"launcher.max_gpu_hours={limit:g} by {fmt_h(device_h - limit)} ({(device_h - limit) / limit:.0%}); "
              "nothing was launched", file=sys.stderr, flush=True)
        sys.exit(2)
