"""A grid larger than the cluster's MaxArraySize, on the real local SLURM cluster: the driver splits it
into arrays the scheduler accepts, submits each once the queue has room under launcher.max_submit_jobs,
every trial ends once, and a rerun submits only the trials that are missing.

The test lowers MaxArraySize in slurm.conf through scripts/slurm_local.sh (SLURM_LOCAL_MAX_ARRAY_SIZE;
the daemons restart, running jobs survive) and restores the cluster's own configuration afterwards,
also when it fails. Changing slurm.conf needs root.
"""
from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from accounting import wait_sacct
from gridtune.slurm import cluster
from gridtune.sweepdir import records

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
NAME = f"gtarr{uuid.uuid4().hex[:6]}"
MAX_ARRAY_SIZE, MAX_SUBMIT = 3, 6    # arrays of <= min(3, 6 // 2) jobs
LRS = ("1e-3", "7e-4", "5e-4", "3e-4", "2e-4", "1e-4", "5e-5")     # 7 trials: more than 2 arrays' worth
LAUNCHER = ("launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=2", "hydra.launcher.gpus_per_node=0", "hydra.launcher.timeout_min=20",
            f"hydra.launcher.name={NAME}")


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "SBATCH_", "SRUN_")) or k.startswith("SLURM_LOCAL_")}
    return {**env, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", **extra}


def _cluster_up(max_array_size: int | None = None) -> None:
    """scripts/slurm_local.sh up with this environment's settings, MaxArraySize as given (None: default)."""
    env = {k: v for k, v in _env().items() if k != "SLURM_LOCAL_MAX_ARRAY_SIZE"}
    if max_array_size is not None:
        env["SLURM_LOCAL_MAX_ARRAY_SIZE"] = str(max_array_size)
    r = subprocess.run(["bash", str(REPO / "scripts" / "slurm_local.sh"), "up"], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


@pytest.fixture
def small_arrays():
    """MaxArraySize=3 on the cluster for the test's duration; the cluster's own value after it."""
    if os.geteuid() != 0 or not shutil.which("slurmctld"):
        pytest.skip("changing the local cluster's slurm.conf needs root and scripts/slurm_local.sh")
    before = cluster.max_array_size()
    try:
        _cluster_up(MAX_ARRAY_SIZE)
        assert cluster.max_array_size() == MAX_ARRAY_SIZE
        yield
    finally:
        subprocess.run(["scancel", "--name", NAME], capture_output=True, timeout=30)
        _cluster_up()
    assert cluster.max_array_size() == before


def _sweep(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "gridtune.sweep", *args], cwd=REPO, env=_env(),
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def _arrays(rows: list[list[str]]) -> dict[str, dict]:
    """sacct rows (JobID, State, Submit, End) by array: task ids, states, submit time, task end times
    (submitit sends an array of one job as a plain job: task 0)."""
    out: dict[str, dict] = {}
    for job, state, submit, end in rows:
        base, _, task = job.partition("_")
        a = out.setdefault(base, {"tasks": [], "states": [], "submit": submit, "ends": []})
        a["tasks"].append(int(task or 0))
        a["states"].append(state)
        a["ends"].append(end)
    return out


def _ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def test_a_grid_beyond_max_array_size_runs_as_several_arrays(small_arrays, demo_root, tmp_path):
    t0 = time.perf_counter()
    args = ("-m", "preset=debug", "train.epochs=1", f"lr={','.join(LRS)}", "sweep_name=arrays",
            f"launcher.max_submit_jobs={MAX_SUBMIT}", f"out_root={tmp_path}", f"data.root={demo_root}", *LAUNCHER)
    r = _sweep(*args)
    sweep = tmp_path / "arrays"
    res = {p.parent.name: records.read_json(p) for p in sweep.glob("*/result.json")}
    assert len(res) == len(LRS) and {x["status"] for x in res.values()} == {"ok"}, r.stdout[-2000:]
    assert f"{len(LRS)} trials: {len(LRS)} ok" in r.stdout
    rows = wait_sacct("--name", NAME, n=len(LRS), fields="JobID,State,Submit,End")
    arrays = _arrays(rows)
    # every trial ended once, in its own task, and every task completed
    assert len(rows) == len(LRS) and sorted(x["slurm_job_id"] for x in res.values()) == sorted(r[0] for r in rows)
    assert all(s == "COMPLETED" for a in arrays.values() for s in a["states"]), rows
    # several arrays, none over the limit: task ids 0..n-1 with n <= MaxArraySize
    assert len(arrays) >= -(-len(LRS) // MAX_ARRAY_SIZE), rows
    assert all(sorted(a["tasks"]) == list(range(len(a["tasks"]))) and len(a["tasks"]) <= MAX_ARRAY_SIZE
               for a in arrays.values()), rows
    # each array went out only when it fit under max_submit_jobs beside this sweep's unfinished tasks
    for base, a in arrays.items():
        live = sum(1 for other, b in arrays.items() if other != base and _ts(b["submit"]) <= _ts(a["submit"])
                   for end in b["ends"] if _ts(end) > _ts(a["submit"]))
        assert live + len(a["tasks"]) <= MAX_SUBMIT, (base, rows)
    first_wall = time.perf_counter() - t0

    # a rerun submits only what is missing: remove 4 trials, and 4 jobs go out, in arrays of <= 3
    gone = sorted(res)[:4]
    for tid in gone:
        shutil.rmtree(sweep / tid)
    r = _sweep(*args)
    assert f"{len(LRS)} trials, {len(LRS) - 4} already done (skipped), 4 to run" in r.stdout, r.stdout[-2000:]
    again = wait_sacct("--name", NAME, n=len(LRS) + 4, fields="JobID,State,Submit,End")
    new = _arrays([row for row in again if row not in rows])
    assert sum(len(a["tasks"]) for a in new.values()) == 4 and all(len(a["tasks"]) <= MAX_ARRAY_SIZE
                                                                  for a in new.values()), again
    assert sorted(records.read_json(sweep / tid / records.RESULT)["slurm_job_id"] for tid in gone) == sorted(
        f"{base}_{t}" if len(a["tasks"]) > 1 else base for base, a in new.items() for t in a["tasks"])
    print(f"\n[slurm timing] {len(LRS)} trials as arrays of {sorted(len(a['tasks']) for a in arrays.values())} "
          f"in {first_wall:.0f} s; rerun of 4 as {sorted(len(a['tasks']) for a in new.values())}, "
          f"{time.perf_counter() - t0:.0f} s in all")
