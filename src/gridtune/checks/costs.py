"""The budget's cost model: what one shape's measured runs say a trial costs, and what a grid's jobs cost.

It owns `Cost` (a shape's steady epoch, a run's setup and first epoch's extra, cold or warm, and the
seconds around them), reading it from timed records (`cost_of`, `costs_of`, keyed by `record_shape`:
gridtune.config.knobs.epoch_shape), how a grid's trials fall into jobs and units (`jobs_of`, fused
groups as gridtune.train.fused.grouping makes them), and a launch's seconds: each job's (`launch`),
packed into parallel slots (`makespan`), rung by rung with halving (`total`). gridtune.checks.budget
adds the driver and prints it. Torch-free.
"""
from __future__ import annotations

import heapq
import json
import math
import statistics
from dataclasses import dataclass

from gridtune.config import knobs
from gridtune.train.fused import grouping


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

    def side(self, cold: bool) -> bool:
        """The side measured for `cold`: itself, or the other one where it never was."""
        return cold if cold in self.setup_s else not cold

    def start_s(self, cold: bool) -> float:
        """A trial's setup plus its first epoch's extra, cold or warm."""
        c = self.side(cold)
        return self.setup_s[c] + self.extra_s[c]

    def unit_s(self, size: int, epochs: int, cold: bool) -> float:
        c = self.side(cold)
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
