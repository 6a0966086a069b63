"""One launch's jobs as SLURM job arrays that fit the scheduler, each submitted once there is room.

SLURM refuses an array with a task id >= MaxArraySize (submitit numbers an array's tasks 0..n-1, so
n <= MaxArraySize) and a submission that takes the user past MaxSubmitJobs (pending + running jobs,
every array task counted); submitit submits one array whatever its size. This module owns how a
launch is cut and paced: `limits()` reads both limits (gridtune.slurm.cluster: scontrol, sacctmgr), capped
by `launcher.max_array_size` / `launcher.max_submit_jobs` where set; `next_size()` says how many jobs
the next array takes given the user's queue (0: wait); `launch()` submits the arrays through
hydra-submitit's launcher one by one, polling squeue between them, then collects every job's
result. Each array keeps the launcher's `%N` throttle (array_parallelism). Locally nothing of this
runs: the sweeper hands the jobs to its launcher as one batch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from . import cluster

SLURM_DEFAULT_MAX_ARRAY_SIZE = 1001   # SLURM's own default, for a cluster whose scontrol does not answer
POLL_S = (1.0, 30.0)                  # squeue between arrays: first wait, doubling up to the last


@dataclass(frozen=True)
class Limits:
    max_array_size: int               # most tasks in one array
    max_submit_jobs: int | None       # most of the user's jobs queued at once; None: no limit known
    source: str                       # where they come from, for the driver's log line


def _cap(configured: int | None, reported: int | None) -> int | None:
    known = [v for v in (configured, reported) if v is not None]
    return min(known) if known else None


def limits(max_array_size: int | None = None, max_submit_jobs: int | None = None) -> Limits:
    """The scheduler's limits, lowered (never raised) by the configured ones."""
    reported_array, reported_submit = cluster.max_array_size(), cluster.max_submit_jobs()
    array = _cap(max_array_size, reported_array) or SLURM_DEFAULT_MAX_ARRAY_SIZE
    source = (f"the cluster's MaxArraySize {reported_array if reported_array is not None else 'unknown'}, "
              f"MaxSubmitJobs {reported_submit if reported_submit is not None else 'unset'}")
    return Limits(array, _cap(max_submit_jobs, reported_submit), source)


def next_size(remaining: int, lim: Limits, queued: int, ours: int) -> int:
    """Jobs for the next array, once the user's `queued` jobs leave room for all of them; 0: wait.
    Under MaxSubmitJobs an array takes at most half of it, so that one array runs while the next is
    queued. While none of `ours` (this launch's queued jobs) is left to end, whatever room there is
    gets used, so jobs that are not ours (the driver's own job, say) never stall the launch."""
    size = min(remaining, lim.max_array_size)
    if lim.max_submit_jobs is None:
        return size
    size = min(size, max(1, lim.max_submit_jobs // 2))
    room = lim.max_submit_jobs - queued
    if room >= size:
        return size
    return max(room, 0) if ours == 0 else 0


def wait_for_room(remaining: int, lim: Limits, ids: set[str], say: Callable[[str], None],
                  sleep: Callable[[float], None] = time.sleep) -> int:
    """Poll the user's queue until the next array can go; its size. `ids`: this launch's array ids."""
    delay, said = POLL_S[0], False
    while True:
        jobs = cluster.queued_jobs() if lim.max_submit_jobs is not None else []
        if jobs is None:              # squeue does not answer: submit, sbatch says if it is too much
            return min(remaining, lim.max_array_size, lim.max_submit_jobs or remaining)
        ours = sum(1 for j in jobs if j.split("_")[0] in ids)
        n = next_size(remaining, lim, len(jobs), ours)
        if n:
            return n
        if not said:
            say(f"waiting for room in the queue: {len(jobs)} of your jobs queued ({ours} of this sweep), "
                f"MaxSubmitJobs {lim.max_submit_jobs}, {remaining} jobs still to submit")
            said = True
        sleep(delay)
        delay = min(delay * 2, POLL_S[1])


def _executor(launcher: Any):
    """A submitit executor set up as hydra-submitit-launcher 1.2.0's `launch()` sets up its own."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf
    kind, params = launcher._EXECUTOR, launcher.params
    init = {f"{kind}_{k}": v for k, v in params.items() if k == "max_num_timeout"}
    executor = submitit.AutoExecutor(cluster=kind, folder=params["submitit_folder"], **init)
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"{kind}_{k}": v for k, v in params.items()
                                  if k not in ("submitit_folder", "max_num_timeout")})
    return executor


def _submit(executor, launcher: Any, job_overrides: Sequence[Sequence[str]], first_idx: int) -> list:
    """One array of `job_overrides`, numbered from `first_idx` as the launcher numbers its jobs."""
    from hydra.core.singleton import Singleton
    state = Singleton.get_state()
    params = [(list(o), "hydra.sweep.dir", first_idx + i, f"job_id_for_{first_idx + i}", state)
              for i, o in enumerate(job_overrides)]
    return executor.map_array(launcher, *zip(*params))


def is_slurm(launcher: Any) -> bool:
    return getattr(launcher, "_EXECUTOR", None) == "slurm"


def describe(e: BaseException) -> str:
    """One line for a launch that broke: sbatch's error lines, else the exception's first line."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    reason = "; ".join(ln for ln in lines if "error" in ln.lower()) or (lines[0] if lines else "")
    return f"{type(e).__name__}: {reason}"


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], first_idx: int, lim: Limits,
           say: Callable[[str], None] = lambda m: print(f"gridtune: {m}", flush=True),
           sleep: Callable[[float], None] = time.sleep) -> tuple[list, list[BaseException]]:
    """Submit the jobs as arrays that fit `lim`, each when the queue has room, then wait for all of
    them. Returns every result that came back and the errors (a refused sbatch stops further arrays;
    those already submitted run to their end)."""
    executor, jobs, errors, i, total = _executor(launcher), [], [], 0, len(job_overrides)
    if total > lim.max_array_size or lim.max_submit_jobs is not None:
        say(f"{total} job(s) as arrays of <= {lim.max_array_size}, at most {lim.max_submit_jobs or 'any number'} "
            f"of your jobs queued at once ({lim.source})")
    while i < total:
        n = wait_for_room(total - i, lim, {j.job_id.split("_")[0] for j in jobs}, say, sleep)
        try:
            jobs += _submit(executor, launcher, job_overrides[i:i + n], first_idx + i)
        except Exception as e:            # sbatch refused this array: the ones before it still run
            errors.append(e)
            break
        i += n
        if n < total:
            say(f"submitted {jobs[-1].job_id.split('_')[0]}: {n} job(s), {i} of {total}")
    returns = []
    for job in jobs:
        try:
            returns.append(job.results()[0])
        except Exception as e:            # a job that died without a result (killed, node lost)
            errors.append(e)
    return returns, errors
