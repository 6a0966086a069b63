"""A fused sweep on the real local SLURM cluster: the smoke grid's 4 trials as K=4 trials in one array
task, trained as one fused model, give a leaderboard of the same shape as the unfused sweep."""
from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from gridtune.sweepdir import records

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = ("launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=2", "hydra.launcher.gpus_per_node=0", "hydra.launcher.timeout_min=20")
# the same kernels in both sweeps (see tests/test_fused.py)
SMOKE = ("sweep=smoke", "preset=debug", "train.epochs=2", "device=cpu", "train.amp=off", "train.threads=1",
         "train.onednn=false")
NAME = f"gtfused{uuid.uuid4().hex[:6]}"


def _gridtune(*args: str, module: str = "gridtune.sweep") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
    env.update(PYTHONUNBUFFERED="1", WANDB_MODE="offline")
    r = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, f"{module} exited {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module", autouse=True)
def _cancel():
    yield
    subprocess.run(["scancel", "--name", NAME], capture_output=True, timeout=30)


def _board(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "leaderboard.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_fused_slurm_sweep_has_the_leaderboard_of_an_unfused_one(demo_root, tmp_path):
    fused_out, apart_out = tmp_path / "fused", tmp_path / "apart"
    r = _gridtune("-m", *SMOKE, *LAUNCHER, f"hydra.launcher.name={NAME}", "launcher.trials_per_job=4",
                  "launcher.fuse=on", f"out_root={fused_out}", f"data.root={demo_root}")
    assert "4 to run as 1 job(s) of <= 4" in r.stdout and "4 trials: 4 ok" in r.stdout, r.stdout[-2000:]
    sweep = fused_out / "smoke"
    task_logs = "".join(p.read_text(errors="replace") for p in sweep.glob(".submitit/*/*_log.out"))
    assert "fused group of 4:" in task_logs
    jobs = {records.read_json(p)["slurm_job_id"] for p in sweep.glob("*/result.json")}
    assert len(jobs) == 1                                       # all four in one array task
    _gridtune("-m", *SMOKE, f"out_root={apart_out}", f"data.root={demo_root}")     # unfused, local
    for d in (sweep, apart_out / "smoke"):
        _gridtune(str(d), module="gridtune.reduce")
    fused, apart = _board(sweep), _board(apart_out / "smoke")
    assert len(fused) == len(apart) == 4 and list(fused[0]) == list(apart[0])
    key = next(k for k in apart[0] if "trial" in k)
    assert sorted(row[key] for row in fused) == sorted(row[key] for row in apart)
    for row in apart:
        a = records.read_json(apart_out / "smoke" / row[key] / records.RESULT)
        f = records.read_json(sweep / row[key] / records.RESULT)
        assert a["status"] == f["status"] == "ok"
        for m, v in a["metrics"].items():
            assert math.isclose(v, f["metrics"][m], rel_tol=1e-3, abs_tol=1e-4), (row[key], m)
