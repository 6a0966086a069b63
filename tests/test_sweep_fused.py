"""Fused sweeps end to end on this machine: `plan` shows the groups, and a sweep whose chunk trains
fused gives a leaderboard of the same shape (same trials, columns and statuses) as the same grid
unfused, with the same numbers to rounding."""
from __future__ import annotations

import csv
import math

import pytest

from gridtune.sweepdir import records

# the same kernels in both sweeps (see tests/test_fused.py)
GRID = ("-m", "preset=debug", "train.epochs=2", "device=cpu", "train.amp=off", "train.threads=1", "train.onednn=false",
        "lr=1e-3,5e-4", "dropout=0.3,0.5")


def _board(sweep_dir):
    with open(sweep_dir / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return rows


def test_plan_shows_the_fused_groups(run_gridtune, demo_root, tmp_path):
    r = run_gridtune("-m", "preset=debug", "lr=1e-3,5e-4", "seed=0,1", "launcher.trials_per_job=4",
                     "launcher.fuse=on", f"out_root={tmp_path}", f"data.root={demo_root}", module="gridtune.plan")
    assert "fusion: on, launcher.fuse_max=18" in r.stdout
    job = [line for line in r.stdout.splitlines() if line.strip().startswith("job 0:")]
    assert len(job) == 1 and "4 trial(s) in 2 group(s)" in job[0], r.stdout     # seeds never fuse
    off = run_gridtune("-m", "preset=debug", "lr=1e-3,5e-4", "launcher.trials_per_job=2", "launcher.fuse=off",
                       f"out_root={tmp_path}", f"data.root={demo_root}", module="gridtune.plan")
    assert "fusion: off (launcher.fuse=off" in off.stdout
    bad = run_gridtune("-m", "preset=debug", "lr=1e-3,5e-4", "launcher.trials_per_job=2", "launcher.fuse=maybe",
                       f"out_root={tmp_path}", f"data.root={demo_root}", module="gridtune.plan", check=False)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].endswith("launcher.fuse='maybe': must be auto|on|off")


@pytest.mark.slow
def test_fused_local_sweep_has_the_leaderboard_of_an_unfused_one(run_gridtune, demo_root, tmp_path):
    common = (*GRID, f"out_root={tmp_path}", f"data.root={demo_root}")
    run_gridtune(*common, "sweep_name=apart", "launcher.fuse=off")
    r = run_gridtune(*common, "sweep_name=fused", "launcher.trials_per_job=4", "launcher.fuse=on")
    assert "fused group of 4:" in r.stdout and "4 trials: 4 ok" in r.stdout
    for name in ("apart", "fused"):
        run_gridtune(str(tmp_path / name), module="gridtune.reduce")
    apart, fused = _board(tmp_path / "apart"), _board(tmp_path / "fused")
    assert len(apart) == len(fused) == 4 and list(apart[0]) == list(fused[0])
    key = next(k for k in apart[0] if "trial" in k)
    by_id = {row[key]: row for row in fused}
    assert sorted(by_id) == sorted(row[key] for row in apart)
    for row in apart:
        tid = row[key]
        a = records.read_json(tmp_path / "apart" / tid / records.RESULT)
        f = records.read_json(tmp_path / "fused" / tid / records.RESULT)
        assert a["status"] == f["status"] == "ok" and sorted(a) == sorted(f)
        for m, v in a["metrics"].items():
            assert math.isclose(v, f["metrics"][m], rel_tol=1e-3, abs_tol=1e-4), (tid, m)
