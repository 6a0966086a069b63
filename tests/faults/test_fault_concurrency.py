"""Many drivers on one sweep at once: the cache is built once, every trial runs once, and claims left
by dead or far-away processes are broken safely while live ones are respected."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import compose
from faultkit import Proc, assert_sweep_complete, cache_entries, sweep_args, trial_dirs
from gridtune.sweepdir import claims, records
from gridtune.data import layouts
from gridtune.train import trial
from gridtune.train.trial import run_trial


def _start_together(n: int, args: list[str], tmp_path) -> list[Proc]:
    """n drivers that import everything first and then start their sweep at the same instant."""
    gate = tmp_path / "gate"
    procs = [Proc(args, tmp_path / "logs", runner=True, env={"GRIDTUNE_TEST_GATE": str(gate)}, tag=f"d{i}")
             for i in range(n)]
    try:
        deadline = time.monotonic() + 300
        while len(list(tmp_path.glob("gate.ready-*"))) < n:
            assert time.monotonic() < deadline and all(p.popen.poll() is None for p in procs), \
                [(p.popen.returncode, p.stderr[-500:]) for p in procs]
            time.sleep(0.05)
        gate.touch()
        for p in procs:
            assert p.wait(600) == 0, (p.stdout[-2000:], p.stderr[-2000:])
    finally:
        for p in procs:                  # never leave a driver behind when the test fails half-way
            if p.popen.poll() is None:
                p.kill_group()
    return procs


def _runs_per_trial(procs: list[Proc], ids: list[str]) -> dict[str, list[int]]:
    """For each trial id, the drivers (by index) that printed its first epoch."""
    return {tid: [i for i, p in enumerate(procs) if f"[gridtune] {tid} epoch 1/" in p.stdout] for tid in ids}


@pytest.mark.slow
def test_eight_drivers_build_the_cache_once_and_run_each_trial_once(fresh_data, tmp_path):
    out = tmp_path / "out"
    procs = _start_together(8, sweep_args(fresh_data, out, "eight", "train.epochs=1", "lr=1e-3,5e-4"), tmp_path)
    built = [p for p in procs if "gridtune: audio cache built" in p.stdout]
    found = [p for p in procs if "gridtune: audio cache found" in p.stdout]
    assert len(built) == 1 and len(found) == 7
    published, leftovers = cache_entries(fresh_data)
    assert len(published) == 1 and leftovers == []
    meta = records.read_json(published[0] / "meta.json")
    assert meta["decodes"] == meta["n_files"] == len(layouts.index_train(fresh_data)[0])
    assert meta["built_by"] == f"{socket.gethostname()}:{built[0].pid}"

    sweep = out / "eight"
    assert_sweep_complete(sweep, n_trials=2, epochs=1)
    ids = [d.name for d in trial_dirs(sweep)]
    runs = _runs_per_trial(procs, ids)
    assert all(len(r) == 1 for r in runs.values()), runs
    for tid in ids:                                  # every other driver saw it claimed or done, never ran it
        for i, p in enumerate(procs):
            if i not in runs[tid]:
                assert f"{tid}: claimed by" in p.stdout or f"{tid}: already ok, skipped" in p.stdout, (i, tid)
    assert not any("resumed" in p.stdout for p in procs)      # nobody re-entered a finished trial


@pytest.mark.slow
def test_two_drivers_at_once_never_run_a_trial_twice(demo_root, tmp_path):
    out = tmp_path / "out"
    procs = _start_together(2, sweep_args(demo_root, out, "two", "train.epochs=2", "lr=1e-3,5e-4"), tmp_path)
    sweep = out / "two"
    assert_sweep_complete(sweep, n_trials=2, epochs=2)           # each history: exactly 2 rows, one run
    manifest = [t["trial_id"] for t in records.read_json(sweep / records.MANIFEST)["trials"]]
    runs = _runs_per_trial(procs, manifest)
    assert all(len(r) == 1 for r in runs.values()), runs
    first = manifest[0]                          # both drivers reach it at once: one runs it, one is refused
    loser = procs[1 - runs[first][0]]
    assert f"[gridtune] {first}: claimed by {socket.gethostname()}:{procs[runs[first][0]].pid}" in loser.stdout
    second = manifest[1]
    other = procs[1 - runs[second][0]]
    assert f"{second}: claimed by" in other.stdout or f"{second}: already ok, skipped" in other.stdout
    assert not any("resumed" in p.stdout for p in procs)


# -- stale and live claims, in process ---------------------------------------------------------------

def _cfg(root):
    return compose("preset=debug", "train.epochs=1", f"data.root={root}")


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _plant_claim(trial_dir, claim: dict | None, age_s: float = 0.0):
    path = trial_dir / records.CLAIM
    trial_dir.mkdir(parents=True)
    path.write_text("" if claim is None else json.dumps({"time": time.time() - age_s, "slurm_job_id": None, **claim}))
    if age_s:
        os.utime(path, (time.time() - age_s, time.time() - age_s))
    return path


@pytest.mark.parametrize("claim,age_s", [
    ({"host": socket.gethostname(), "pid": "dead"}, 0.0),       # this host, process gone
    ({"host": "far-away-node", "pid": 12345}, 2 * 3600.0),      # another host, no heartbeat for 2 h
    (None, 60.0),                                               # empty: creator killed before writing
], ids=["dead-pid-this-host", "old-heartbeat-other-host", "empty-claim"])
def test_stale_claim_is_broken_and_the_trial_runs(demo_root, tmp_path, claim, age_s):
    if claim and claim["pid"] == "dead":
        claim = {**claim, "pid": _dead_pid()}
    d = tmp_path / "t"
    _plant_claim(d, claim, age_s)
    rec = run_trial(_cfg(demo_root), d)
    assert rec["status"] == "ok" and records.read_json(d / records.RESULT)["status"] == "ok"
    assert not (d / records.CLAIM).exists() and not list(d.glob("claim.json.stale-*"))


@pytest.mark.parametrize("who", ["parent-process", "sleep-subprocess", "other-host-fresh-heartbeat"])
def test_live_claim_is_respected(demo_root, tmp_path, who):
    sleeper = subprocess.Popen(["sleep", "60"]) if who == "sleep-subprocess" else None
    try:
        holder = {"parent-process": {"host": socket.gethostname(), "pid": os.getppid()},
                  "sleep-subprocess": {"host": socket.gethostname(), "pid": sleeper and sleeper.pid},
                  "other-host-fresh-heartbeat": {"host": "far-away-node", "pid": 12345}}[who]
        d = tmp_path / "t"
        path = _plant_claim(d, holder)
        before = path.read_bytes()
        rec = run_trial(_cfg(demo_root), d)
        assert rec["status"] == "claimed" and rec["claim"]["pid"] == holder["pid"]
        assert path.read_bytes() == before                       # untouched, still theirs
        assert not (d / records.RESULT).exists() and not (d / records.HISTORY).exists()
    finally:
        if sleeper:
            sleeper.kill()
            sleeper.wait()


def test_trial_finished_by_another_driver_meanwhile_is_not_entered_again(demo_root, tmp_path, monkeypatch):
    """The window between 'is it done?' and 'claim it': the other driver writes its result and
    releases its claim exactly there. The claim then succeeds, and the record must still win."""
    cfg, d = _cfg(demo_root), tmp_path / "t"
    first = run_trial(cfg, d)
    stamp = (d / records.RESULT).stat().st_mtime_ns
    real_final = trial.done_record
    calls = []

    def not_yet_on_first_look(out, tid):
        calls.append(tid)
        return None if len(calls) == 1 else real_final(out, tid)
    monkeypatch.setattr(trial, "done_record", not_yet_on_first_look)
    again = run_trial(cfg, d)
    assert again["finished_at"] == first["finished_at"]
    assert (d / records.RESULT).stat().st_mtime_ns == stamp
    assert claims.read(d / records.CLAIM) is None
