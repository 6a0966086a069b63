"""A halved sweep on the real local SLURM cluster: the driver submits one job array per rung, each
holding only that rung's survivors, and the ladder ends as it does locally."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from accounting import wait_sacct
from gridtune.halving import policy
from gridtune.sweepdir import records

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
NAME = f"gth{uuid.uuid4().hex[:6]}"
LAUNCHER = ("launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=2", "hydra.launcher.gpus_per_node=0", "hydra.launcher.timeout_min=20",
            f"hydra.launcher.name={NAME}")


@pytest.fixture(autouse=True)
def _cancel():
    yield
    subprocess.run(["scancel", "--name", NAME], capture_output=True, timeout=30)


def test_halved_sweep_runs_one_array_per_rung(demo_root, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
    args = ["-m", "preset=debug", "train.epochs=4", "lr=1e-3,1e-4", "dropout=0.3,0.5", "launcher.trials_per_job=2",
            "hydra.sweeper.halving.eta=2", "hydra.sweeper.halving.min_epochs=1", "hydra.sweeper.halving.noise=0",
            "sweep_name=halved",
            f"out_root={tmp_path}", f"data.root={demo_root}", *LAUNCHER]
    r = subprocess.run([sys.executable, "-m", "gridtune.sweep", *args], cwd=REPO, capture_output=True, text=True,
                       timeout=900, env={**env, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    sweep = tmp_path / "halved"
    ladder = records.read_json(sweep / policy.LADDER)
    assert ladder["complete"] and [d["n"] for d in ladder["decisions"]] == [4, 2]
    res = {p.parent.name: records.read_json(p) for p in sweep.glob("*/result.json")}
    assert sorted(r["status"] for r in res.values()) == ["ok", "stopped", "stopped", "stopped"]
    assert sorted(r["epochs_run"] for r in res.values()) == [1, 1, 2, 4]
    # one array per rung: 4 trials in 2 tasks, then 2 trials in 1 task, then the survivor in 1 task
    acct = wait_sacct("--name", NAME, n=4)      # once every job has ended: SLURM records the end late
    arrays = {}
    for job, state in acct:
        arrays.setdefault(job.split("_")[0], []).append(state)
    assert sorted(len(v) for v in arrays.values()) == [1, 1, 2], acct
    assert all(s == "COMPLETED" for v in arrays.values() for s in v), acct
    # every trial ran in a SLURM job, and the survivor's last record came from the third array
    assert all(r.get("slurm_job_id") for r in res.values())
