"""The one account of a sweep directory: every state once, and status, reduce and the sweeper agree."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gridtune.sweepdir import ledger, records, rundir
from gridtune import status
from gridtune.reduce import reduce_sweep

EXPECTED = {"t-ok": "ok", "t-ok2": "ok", "t-stopped": "stopped", "t-diverged": "diverged", "t-oom": "oom",
            "t-failed": "failed", "t-torn": "torn", "t-paused": "paused", "t-unknown": "torn", "t-running": "running",
            "t-retry": "running", "t-killed": "interrupted", "t-dead": "interrupted", "t-logged": "interrupted",
            "t-fresh": "pending", "t-gone": "pending"}


def _result(tid: str, status_: str, acc: float | None = 0.8, **kw) -> dict:
    rec = {k: None for k in records.RESULT_KEYS}
    rec.update(schema=1, trial_id=tid, status=status_, objective="val/acc", objective_mode="max",
               params={"lr": 0.001, "dropout": 0.5, "l2": 0.001, "seed": 0}, overrides=[f"lr={tid}"],
               metrics={"val/acc": acc, "val/loss": 0.5} if acc is not None else {}, best_epoch=3, epochs_run=4,
               wall_time_s=60.0)
    rec.update(kw)
    return rec


def _epochs(n: int) -> list[dict]:
    return [{"epoch": e, "train/loss": 1.0 / e} for e in range(1, n + 1)]


def make_every_state(root: Path) -> Path:
    sweep = root / "sweep"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    records.write_json(sweep / records.MANIFEST, {
        "sweep": "every", "objective": "val/acc", "objective_mode": "max",
        "trials": [{"trial_id": t, "overrides": [f"dropout=0.{i}"], "params": {"dropout": i / 10}}
                   for i, t in enumerate(EXPECTED)]})
    w = records.write_json
    w(sweep / "t-ok" / records.RESULT, _result("t-ok", "ok", 0.8, overrides=["dropout=0.3"],
                                               params={"lr": 0.001, "dropout": 0.3, "l2": 0.001, "seed": 0}))
    w(sweep / "t-ok2" / records.RESULT, _result("t-ok2", "ok", 0.7, overrides=["dropout=0.5"],
                                                params={"lr": 0.001, "dropout": 0.5, "l2": 0.001, "seed": 0}))
    w(sweep / "t-stopped" / records.RESULT, _result("t-stopped", "stopped", 0.4, overrides=["dropout=0.2"],
                                                    params={"lr": 0.001, "dropout": 0.2, "l2": 0.001, "seed": 0},
                                                    halving={"rung": 1, "epoch": 2, "rank": 3, "of": 3},
                                                    stop_reason="stopped at rung 1: rank 3 of 3"))
    w(sweep / "t-diverged" / records.RESULT, _result("t-diverged", "diverged", None, diverged_epoch=2,
                                                     error="loss is nan"))
    w(sweep / "t-oom" / records.RESULT, _result("t-oom", "oom", None, error="CUDA out of memory"))
    w(sweep / "t-failed" / records.RESULT, _result("t-failed", "failed", None, error="RuntimeError:\n boom"))
    w(sweep / "t-paused" / records.RESULT, _result("t-paused", "paused", 0.6, epochs_run=2))
    (sweep / "t-torn").mkdir()
    (sweep / "t-torn" / records.RESULT).write_text('{"status": "ok", "metr')
    w(sweep / "t-unknown" / records.RESULT, _result("t-unknown", "weird"))
    live = {"host": "node9", "pid": 77, "time": time.time() - 30, "slurm_job_id": "5_1"}
    w(sweep / "t-running" / records.CLAIM, live)
    records.write_history(sweep / "t-running" / records.HISTORY, _epochs(2))
    w(sweep / "t-retry" / records.RESULT, _result("t-retry", "failed", None, error="boom"))
    old = time.time() - 600
    os.utime(sweep / "t-retry" / records.RESULT, (old, old))
    w(sweep / "t-retry" / records.CLAIM, live)
    (sweep / "t-killed").mkdir()
    (sweep / "t-killed" / records.CHECKPOINT).write_bytes(b"ckpt")
    records.write_history(sweep / "t-killed" / records.HISTORY, _epochs(3))
    import socket
    w(sweep / "t-dead" / records.CLAIM, {"host": socket.gethostname(), "pid": dead.pid, "time": time.time()})
    (sweep / "t-dead" / records.CHECKPOINT).write_bytes(b"ckpt")
    records.write_history(sweep / "t-logged" / records.HISTORY, _epochs(1))
    (sweep / "t-fresh" / ".hydra").mkdir(parents=True)
    # never trials: the final run, the reducer's plots, submitit's folder, a stray folder
    final = sweep / "final"
    records.write_history(final / records.HISTORY, _epochs(2))
    (final / records.CHECKPOINT).write_bytes(b"ckpt")
    (final / "final_config.yaml").write_text("final: {epochs: 2}\n")
    w(final / "final.json", {"trial_id": "t-ok", "epochs_run": 2, "wall_time_s": 30.0,
                             "test": {"mode": "irmas_test", "micro_f1": 0.41, "macro_f1": 0.3}})
    (sweep / "plots").mkdir()
    (sweep / "plots" / records.HISTORY).write_text("")
    (sweep / ".submitit" / "5_1").mkdir(parents=True)
    (sweep / "notes").mkdir()
    return sweep


@pytest.fixture
def every(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))       # no squeue/sacct
    return make_every_state(tmp_path)


def test_every_state_once(every):
    sweep = ledger.read_sweep(every)
    assert {t.trial_id: t.state for t in sweep.trials} == EXPECTED
    assert [t.trial_id for t in sweep.trials] == list(EXPECTED)     # the manifest's order
    assert set(rundir.STATES) == set(EXPECTED.values())
    by_id = {t.trial_id: t for t in sweep.trials}
    assert by_id["t-stopped"].reason == "stopped at rung 1: rank 3 of 3"
    assert by_id["t-paused"].reason == "paused after epoch 2: waiting for its next halving rung"
    assert by_id["t-failed"].reason == "RuntimeError: boom"
    assert by_id["t-unknown"].reason == "unknown status 'weird' in result.json"
    assert by_id["t-retry"].reason.startswith("retrying after failed; running on node9:77 (job 5_1)")
    assert by_id["t-dead"].reason.startswith("stale claim: process gone")
    assert by_id["t-killed"].reason == "interrupted at epoch 3"
    assert by_id["t-logged"].reason == "interrupted at epoch 1 (no checkpoint)"
    assert by_id["t-gone"].reason == "no trial directory" and by_id["t-fresh"].reason == "not started"
    assert sweep.final is not None and sweep.final.state == "ok" and sweep.final.dir == every / "final"


def test_status_and_reduce_agree_on_every_trial(every, capsys):
    states = {s["trial_id"]: s for s in status.collect_states(every)}
    assert {t: s["state"] for t, s in states.items()} == EXPECTED
    out = io.StringIO()
    board = reduce_sweep(every, plots=False, out=out)
    reduced = {t.trial_id: t.state for t in board.records.trials}
    assert reduced == {t: s["state"] for t, s in states.items()}
    # a config stopped early by successive halving ranks after the survivors, and cannot win
    assert [g.representative.trial_id for g in board.groups] == ["t-ok", "t-ok2", "t-stopped"]
    assert board.winner.representative.trial_id == "t-ok" and not board.groups[2].survivor
    assert {t.trial_id for t in board.not_ranked} == {t for t, s in EXPECTED.items() if s not in ("ok", "stopped")}
    md = (every / "leaderboard.md").read_text()
    for t in board.not_ranked:         # the not-ranked table names the same state status shows
        assert f"| {t.trial_id} | {states[t.trial_id]['state']} |" in md
    assert status.main([str(every)]) == 3
    printed = capsys.readouterr().out
    line = rundir.counts_line(EXPECTED.values())
    assert line in printed.splitlines() and line in out.getvalue()
    assert line == ("16 trials: 2 ok, 1 stopped, 1 diverged, 1 oom, 1 failed, 2 torn, 1 paused, 2 running, "
                    "3 interrupted, 2 pending")
    assert "final" not in reduced and "final" not in states and "notes" not in states


def test_status_json_puts_the_final_run_apart(every, capsys):
    assert status.main([str(every), "--json"]) == 3
    doc = json.loads(capsys.readouterr().out)
    assert sum(doc["counts"].values()) == len(doc["trials"]) == len(EXPECTED)
    assert doc["final"]["state"] == "ok" and "test micro_f1=0.4100" in doc["final"]["detail"]


def test_demo_like_sweep_and_final_run(tmp_path, capsys):
    """4 trials and a finished final run: 4 trials, and the final run on its own line."""
    sweep = tmp_path / "demo"
    ids = [f"{i:010x}" for i in range(4)]
    records.write_json(sweep / records.MANIFEST, {"sweep": "demo", "objective": "val/acc", "objective_mode": "max",
                                                  "trials": [{"trial_id": t, "overrides": []} for t in ids]})
    for t in ids:
        records.write_json(sweep / t / records.RESULT, _result(t, "ok"))
        records.write_history(sweep / t / records.HISTORY, _epochs(4))
    final = sweep / "final"
    records.write_history(final / records.HISTORY, _epochs(12))
    (final / records.CHECKPOINT).write_bytes(b"ckpt")
    (final / "model.pt").write_bytes(b"m")
    (final / "final_config.yaml").write_text("final: {}\n")
    assert status.main([str(sweep), "--no-slurm"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "4 trials: 4 ok" in out
    assert out[-1] == f"final run ({final}): interrupted  interrupted at epoch 12"
    records.write_json(final / "final.json", {"trial_id": ids[0], "epochs_run": 12, "wall_time_s": 25.0,
                                              "test": {"micro_f1": 0.4}})
    assert status.main([str(sweep), "--no-slurm"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "4 trials: 4 ok" in out and out[-1] == f"final run ({final}): ok  test micro_f1=0.4000  12 epochs, 25s"
    assert not [ln for ln in out if ln.startswith("  final")]      # never a trial row


def test_sweeper_summary_and_done_split_use_the_same_account(every, capsys):
    from gridtune.launch import jobs
    jobs.summary(every, [{"trial_id": t} for t in ("t-ok", "t-diverged", "t-oom", "t-gone")])
    assert "gridtune: 4 trials: 1 ok, 1 diverged, 1 oom, 1 pending." in capsys.readouterr().out
    done = {t for t in EXPECTED if ledger.done_record(every / t, t)}
    assert done == {t for t, s in EXPECTED.items() if s in records.FINAL_STATUSES}
    # a trial stopped by successive halving is done for its ladder (halving.json keeps it stopped), not
    # for a rerun of the same grid without halving, which resumes it to train.epochs
    assert "stopped" in rundir.DONE and ledger.done_record(every / "t-stopped", "t-stopped") is None
    assert ledger.done_record(every / "t-ok", "another-id") is None
