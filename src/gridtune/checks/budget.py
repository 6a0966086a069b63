"""What a grid will cost before it runs: device-hours and wall time, and the launcher.max_gpu_hours limit.

`report` (called by the sweeper where the plan is printed, in plan and sweep alike) prints the
estimate and refuses a grid over the limit. It is built from measured epoch times only:

- records of earlier trials of the same shape (gridtune.config.knobs.epoch_shape: what an epoch's cost
  depends on, device class and fused group size included) in the sweep directory and its siblings,
  read through gridtune.sweepdir.ledger.timed_runs: each epoch's `time_s` and the run's `timing`;
- or, with `plan --probe`, the runs gridtune.checks.probe trains here first (each shape's first job unit,
  a couple of epochs, in a temporary directory) and its timing of the driver's validation.

A run in a process that has trained nothing yet is cold: its setup and first epoch carry the
process's one-off warm-up. A job's unit (a trial, or g fused trials) of E epochs costs g x setup +
the first epoch's extra + E x epoch. A job pays cold once; so does the local launcher, whose jobs all
run in the driver's process, one after another. SLURM runs up to hydra.launcher.array_parallelism jobs (and launcher.max_submit_jobs)
at once, packed in order into free slots. With halving each rung is a launch of the configs the
plain rule keeps (the noise margin may keep more, up to halving.budget), each with its setup again.
Device-hours are the jobs' time (CPU-hours on CPU); wall time adds the driver: its start, its
validation (the probe times it) and nothing for an audio cache still to build (said so) or queue waits.

The limit holds the device-hours of the measured shapes (a lower bound when some are not measured)
to launcher.max_gpu_hours: exit 2, one line, nothing created. With nothing measured it cannot be
checked: one line says so and the sweep goes on. Torch-free; the probe imports the engine.
"""
from __future__ import annotations

import heapq
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from gridtune.train.fused import grouping
from gridtune.config import knobs
from gridtune.sweepdir import ledger, rundir
from gridtune.data.cache import is_built


@dataclass
class Cost:
    """One shape's measured cost: a steady epoch, per run (cold: True/False) a trial's setup and its
    first epoch's extra over a steady one (a side never measured stands in for the other), and a
    trial's seconds around them (records, provenance: its wall time less setup and epochs)."""
    epoch_s: float
    setup_s: dict
    extra_s: dict
    runs: int
    other_s: float = 0.0

    def unit_s(self, size: int, epochs: int, cold: bool) -> float:
        c = cold if cold in self.setup_s else not cold
        return size * (self.setup_s[c] + self.other_s) + (self.extra_s[c] if epochs else 0.0) + epochs * self.epoch_s


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def cost_of(runs: list[tuple[dict, list[dict]]]) -> Cost | None:
    """The cost of one shape from its runs' (record, history rows); None without a timed epoch."""
    steady: list[float] = []
    first: dict = {True: [], False: []}
    setup: dict = {True: [], False: []}
    other: list[float] = []
    for rec, hist in runs:
        tm = rec["timing"]
        times = [r["time_s"] for r in hist if _num(r.get("time_s")) and _num(r.get("epoch"))
                 and r["epoch"] >= (tm.get("first_epoch") or 1)]    # earlier epochs: another process's
        if not times or not _num(tm.get("setup_s")):
            continue
        cold = bool(tm.get("cold"))
        steady += times[1:]
        first[cold].append(times[0])
        setup[cold].append(tm["setup_s"])
        if _num(rec.get("wall_time_s")) and (rec.get("trained") or {}).get("group_size") == 1 and len(times) == len(hist):
            other.append(rec["wall_time_s"] - tm["setup_s"] - sum(times))   # one whole run, not fused
    if not first[True] and not first[False]:
        return None
    epoch_s = statistics.median(steady or first[False] or first[True])
    sides = [c for c in (True, False) if setup[c]]
    return Cost(epoch_s, {c: statistics.fmean(setup[c]) for c in sides},
                {c: max(statistics.fmean(first[c]) - epoch_s, 0.0) for c in sides}, len(runs),
                max(statistics.fmean(other), 0.0) if other else 0.0)


def record_shape(rec: dict) -> str | None:
    """A timed record's epoch_shape key (None when it lacks what the key needs)."""
    tm, trained = rec.get("timing") or {}, rec.get("trained") or {}
    if not isinstance(rec.get("config"), dict) or not _num(tm.get("n_clips")):
        return None
    dev = str(trained.get("device") or rec.get("device") or "")
    cls = "cuda" if dev.startswith("cuda") else f"cpu/{tm.get('threads')}t"
    return knobs.epoch_shape(rec["config"], tm["n_clips"], cls, int(trained.get("group_size") or 1),
                             hints=tm.get("hints") or {})


def costs_of(runs) -> dict[str, Cost]:
    by_shape: dict[str, list] = {}
    for run in runs:
        shape = record_shape(run[0])
        if shape is not None:
            by_shape.setdefault(shape, []).append(run)
    return {s: c for s, rs in by_shape.items() if (c := cost_of(rs)) is not None}


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


def with_group(shape: str, size: int) -> str:
    return json.dumps({**json.loads(shape), "group": int(size)}, sort_keys=True)


def jobs_of(todo, k: int, shapes: list[str], fused: bool, cap: int, cfg_of) -> list[list[tuple[list, str]]]:
    """Each job's units as (its trials, its shape), as the job trains them (gridtune.train.fused.job.run_chunk)."""
    jobs = []
    for j in range(0, len(todo), k):
        chunk = list(range(j, min(j + k, len(todo))))
        parts = grouping.groups([cfg_of(todo[i]) for i in chunk], cap) if fused and k > 1 else [[i] for i in
                                                                                             range(len(chunk))]
        jobs.append([([todo[chunk[i]] for i in p], with_group(shapes[chunk[p[0]]], len(p))) for p in parts])
    return jobs


def launch(jobs, epochs: int | None, costs: dict, slurm: bool, first_cold: bool, start_s: float):
    """(each job's seconds, trials of unmeasured shape) of one launch; epochs None: each trial's own;
    `start_s`: what each job costs before its trials (its composition; on SLURM its process too)."""
    times, missing = [], 0
    for j, job in enumerate(jobs):
        s, cold = start_s, slurm or (first_cold and j == 0)
        for trials, shape in job:
            c = costs.get(shape)
            if c is None:
                missing += len(trials)
                continue
            s += c.unit_s(len(trials), epochs if epochs is not None else int(trials[0]["epochs"]), cold)
            cold = False
        times.append(s)
    return times, missing


def makespan(times: list[float], parallel: int) -> float:
    """Wall seconds of jobs started in order, each as soon as one of `parallel` slots is free."""
    slots = [0.0] * max(1, min(parallel, len(times)))
    for t in times:
        heapq.heappush(slots, heapq.heappop(slots) + t)
    return max(slots) if times else 0.0


def total(jobs, spec, costs, slurm: bool, parallel: int, start_s: float):
    """(device seconds, wall seconds of the jobs, trials unmeasured) of the grid, rung by rung with halving."""
    if spec is None:
        times, missing = launch(jobs, None, costs, slurm, True, start_s)
        return sum(times), makespan(times, parallel), missing
    units = [u for job in jobs for u in job]
    sizes, device, wall = spec.sizes(len(units)), 0.0, 0.0
    for i, (n, e, s) in enumerate(zip(sizes, spec.rungs, [0] + spec.rungs[:-1])):
        times, _ = launch([[u] for u in units[:math.ceil(len(units) * n / sizes[0])]], e - s, costs, slurm,
                          i == 0, start_s)
        device, wall = device + sum(times), wall + makespan(times, parallel)
    return device, wall, launch(jobs, None, costs, slurm, True, start_s)[1]


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
    start_s, validate_s, source = 0.0, None, "records of earlier trials"
    if probe:
        from .probe import run_probe
        runs, import_s, validate_s = run_probe([unit for job in jobs for unit in job], trials, cfg_of)
        t0 = time.perf_counter()
        planner.full(list(todo[0]["overrides"]))     # what the launcher does first for each job: Hydra's compose
        start_s = time.perf_counter() - t0 + (import_s if slurm else 0.0)
        costs, source = {**costs, **costs_of(runs)}, "the probe"
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
    driver_s = age + (validate_s or 0.0 if dry else 0.0)
    how = f"up to {parallel} at once (SLURM; queue waits not in it)" if slurm else "one after another (local launcher)"
    unit = "GPU-hours" if dev == "cuda" else f"CPU-hours: {dev.split('/')[1][:-1]} CPU threads, no GPU"
    print(f"gridtune: budget: est. {'at least ' if missing else ''}{fmt_h(device_s / 3600)} {unit}; wall "
          f"{fmt_s(driver_s + jobs_s)}: {len(jobs)} job(s) {how}" + (
              f"; {missing} of {len(todo)} trials of shapes not measured on {dev} are not in it "
              "(python -m gridtune.plan --probe measures them)" if missing else ""), flush=True)
    valid = "done" if not dry else fmt_s(validate_s) if validate_s is not None else "not measured"
    unbuilt = {t["cache_key"] for t in todo if t.get("cache_key") and not is_built(cfg0.data.cache_dir, t["cache_key"])}
    print(f"gridtune: budget: wall = driver {fmt_s(driver_s)} (start {fmt_s(age)}, validation {valid}, audio cache "
          f"{f'{len(unbuilt)} to build, not estimated' if unbuilt else 'built'}) + jobs {fmt_s(jobs_s)}; measured "
          f"by {source}:", flush=True)
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


def _parallel(config, n_jobs: int, slurm: bool) -> int:
    if not slurm:
        return 1
    caps = [OmegaConf.select(config, "hydra.launcher.array_parallelism", default=None),
            OmegaConf.select(config, "launcher.max_submit_jobs", default=None), n_jobs]
    return max(1, min(int(c) for c in caps if c))


def _side(by_cold: dict, cold: bool) -> float:
    """A cold (or warm) figure; the other side's where that side was never measured."""
    return by_cold[cold] if cold in by_cold else by_cold[not cold]


def _shape_line(shape: str, shapes, jobs, costs) -> None:
    n = shapes.count(shape)
    for size in sorted({len(u) for job in jobs for u, s in job if with_group(s, 1) == with_group(shape, 1)}):
        c = costs.get(with_group(shape, size))
        if c is None:
            continue
        cold, warm = (_side(c.setup_s, side) + _side(c.extra_s, side) for side in (True, False))
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
