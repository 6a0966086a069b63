"""Tests for gridtune.status on a hand-made sweep directory, with fake squeue/sacct on PATH."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gridtune.sweepdir import ledger, records
from gridtune import status

SRC = Path(__file__).resolve().parents[1] / "src"

# t-failed ran as array task 1001_2 (known from its submitit log: the runner released its claim)
# and t-oom as 1001_3 (its result names the job): SLURM calls both COMPLETED, the trials did not.
SACCT_OUT = [
    "1001_0|gridtune|COMPLETED|0:0|00:05:00",
    "1001_1|gridtune|COMPLETED|0:0|00:02:00",
    "1001_2|gridtune|COMPLETED|0:0|00:01:00",
    "1001_3|gridtune|COMPLETED|0:0|00:00:30",
    "1001_5|gridtune|RUNNING|0:0|00:05:00",
    "999_1|someone-else|FAILED|1:0|00:00:01",
]
SQUEUE_OUT = [
    "1001_5|gridtune|RUNNING|5:00",
    "1001_[7-9]|gridtune|PENDING|0:00",
    "998|unrelated|RUNNING|1:00:00",
]


def _result(trial_id, status_, **kw):
    base = {k: None for k in records.RESULT_KEYS}
    base.update(trial_id=trial_id, status=status_, objective="val/acc", objective_mode="max",
                metrics={"val/acc": 0.8125, "val/loss": 0.5}, best_epoch=7, epochs_run=10,
                wall_time_s=312.0)
    base.update(kw)
    return base


def _history(n):
    return [{"epoch": e, "train/loss": 1.0 / (e + 1)} for e in range(n)]


def make_sweep(root: Path) -> Path:
    sweep = root / "sweep"
    ids = ["t-ok", "t-diverged", "t-oom", "t-failed", "t-torn", "t-running", "t-pending",
           "t-fresh", "t-missing"]
    records.write_json(sweep / records.MANIFEST, {
        "sweep": "lr-grid", "objective": "val/acc", "objective_mode": "max",
        "trials": [{"trial_id": t, "overrides": [f"optim.lr={i}"], "params": {"optim.lr": i}}
                   for i, t in enumerate(ids)]})
    records.write_json(sweep / "t-ok" / records.RESULT, _result("t-ok", "ok"))
    records.write_history(sweep / "t-ok" / records.HISTORY, _history(10))
    records.write_json(sweep / "t-diverged" / records.RESULT,
                       _result("t-diverged", "diverged", diverged_epoch=4, metrics={}))
    records.write_json(sweep / "t-oom" / records.RESULT,
                       _result("t-oom", "oom", error="torch.OutOfMemoryError: CUDA out of memory",
                               slurm_job_id="1001_3"))
    records.write_json(sweep / "t-failed" / records.RESULT,
                       _result("t-failed", "failed", error="RuntimeError: shapes\ndo not match"))
    (sweep / "t-torn").mkdir()
    (sweep / "t-torn" / records.RESULT).write_text('{"status": "ok", "metri')
    records.write_json(sweep / "t-running" / records.CLAIM, {
        "host": "node07", "pid": 4242, "time": time.time() - 300, "slurm_job_id": "1001_5"})
    records.write_history(sweep / "t-running" / records.HISTORY, _history(3))
    (sweep / "t-pending").mkdir()
    (sweep / "t-pending" / records.CHECKPOINT).write_bytes(b"not really a checkpoint")
    records.write_history(sweep / "t-pending" / records.HISTORY, _history(4))
    (sweep / "t-fresh" / ".hydra").mkdir(parents=True)
    logs = {"1001_0/1001_0_0_log.out": "[gridtune] t-ok epoch 1/10 train/loss=1.0\n",
            "1001_2/1001_2_0_log.out": "Traceback ...\n[gridtune] t-failed: failed val/acc=None\n",
            "1001_7/1001_7_0_log.err": "", "1001_submitted.pkl": "", "notajob/x_log.out": ""}
    for name, text in logs.items():
        (sweep / ".submitit" / name).parent.mkdir(parents=True, exist_ok=True)
        (sweep / ".submitit" / name).write_text(text)
    return sweep


def fake_bin(root: Path, sacct=SACCT_OUT, squeue=SQUEUE_OUT, rc=0) -> Path:
    """Executables named squeue/sacct that print canned lines and record their arguments."""
    bindir = root / "fakebin"
    bindir.mkdir(exist_ok=True)
    for name, lines in (("sacct", sacct), ("squeue", squeue)):
        body = "".join(f"printf '%s\\n' '{line}'\n" for line in lines)
        script = bindir / name
        script.write_text(f'#!/bin/sh\necho "$@" > "{bindir}/{name}.args"\n{body}exit {rc}\n')
        script.chmod(0o755)
    return bindir


@pytest.fixture
def sweep(tmp_path):
    return make_sweep(tmp_path)


@pytest.fixture
def no_slurm(tmp_path, monkeypatch):
    empty = tmp_path / "emptybin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def test_collect_states(sweep):
    states = {s["trial_id"]: s for s in status.collect_states(sweep)}
    assert {t: s["state"] for t, s in states.items()} == {
        "t-ok": "ok", "t-diverged": "diverged", "t-oom": "oom", "t-failed": "failed",
        "t-torn": "torn", "t-running": "running", "t-pending": "interrupted", "t-fresh": "pending",
        "t-missing": "pending"}
    assert list(states) == [s["trial_id"] for s in status.collect_states(sweep)]
    assert states["t-ok"]["objective"] == 0.8125 and "val/acc=0.8125" in states["t-ok"]["detail"]
    assert states["t-diverged"]["detail"] == "diverged at epoch 4"
    assert states["t-failed"]["detail"] == "RuntimeError: shapes do not match"
    assert states["t-failed"]["slurm_job_id"] is None    # only the log knows; see below
    assert states["t-oom"]["slurm_job_id"] == "1001_3"
    assert "OutOfMemoryError" in states["t-oom"]["detail"]
    assert states["t-torn"]["detail"].startswith("unparseable result.json")
    run = states["t-running"]
    assert (run["host"], run["pid"], run["epochs_done"]) == ("node07", 4242, 3)
    assert 290 < run["claim_age_s"] < 400 and "3 epochs done" in run["detail"]
    assert states["t-pending"]["detail"] == "interrupted at epoch 3"
    assert states["t-fresh"]["detail"] == "not started"
    assert states["t-missing"]["detail"] == "no trial directory"
    assert states["t-ok"]["overrides"] == ["optim.lr=0"]


def test_text_report_with_slurm(sweep, tmp_path, monkeypatch, capsys):
    bindir = fake_bin(tmp_path)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    assert status.main([str(sweep)]) == 3
    out = capsys.readouterr().out
    assert ("9 trials: 1 ok, 1 diverged, 1 oom, 1 failed, 1 torn, 1 running, 1 interrupted, "
            "2 pending") in out.splitlines()
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("  t-")}
    assert lines["t-failed"].split()[1] == "failed"
    assert "SLURM 1001_2 COMPLETED 0:0, but the trial record says failed" in lines["t-failed"]
    assert "SLURM 1001_3 COMPLETED 0:0, but the trial record says oom" in lines["t-oom"]
    assert "SLURM" not in lines["t-ok"]
    assert "interrupted at epoch 3" in lines["t-pending"]
    assert "node07:4242" in lines["t-running"]
    assert "SLURM (squeue + sacct): 5 jobs" in out
    jobs = {ln.split()[0]: ln.split() for ln in out.splitlines()[out.splitlines().index(
        "SLURM (squeue + sacct): 5 jobs") + 1:]}
    assert jobs["1001_2"][:3] == ["1001_2", "gridtune", "COMPLETED"]
    assert jobs["1001_2"][-1] == "t-failed"
    assert jobs["1001_5"][2] == "RUNNING" and jobs["1001_5"][-1] == "t-running"
    assert jobs["1001_[7-9]"][2] == "PENDING"
    assert list(jobs) == ["1001_0", "1001_2", "1001_3", "1001_5", "1001_[7-9]"]
    assert jobs["1001_0"][-1] == "t-ok" and jobs["1001_3"][-1] == "t-oom"
    assert "999_1" not in out and "998" not in out and "1001_1" not in out
    sacct_args = (bindir / "sacct.args").read_text().split()
    assert sacct_args[sacct_args.index("-j") + 1] == "1001"   # the array, not each task
    assert "-X" in sacct_args and "-S" in sacct_args


def test_json_output(sweep, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", f"{fake_bin(tmp_path)}{os.pathsep}{os.environ['PATH']}")
    assert status.main([str(sweep), "--json"]) == 3
    doc = json.loads(capsys.readouterr().out)
    assert doc["sweep"] == "lr-grid" and doc["exit_code"] == 3
    assert doc["counts"] == {"ok": 1, "diverged": 1, "oom": 1, "failed": 1, "torn": 1,
                             "running": 1, "interrupted": 1, "pending": 2}
    by_id = {t["trial_id"]: t for t in doc["trials"]}
    assert by_id["t-failed"]["state"] == "failed"
    assert by_id["t-failed"]["slurm"]["state"] == "COMPLETED"
    assert by_id["t-running"]["slurm"]["source"] == "squeue"
    assert by_id["t-failed"]["slurm"]["job_id"] == "1001_2"
    assert doc["slurm"]["available"] is True and set(doc["slurm"]["jobs"]) == {
        "1001_0", "1001_2", "1001_3", "1001_5", "1001_[7-9]"}


def test_slurm_unavailable_is_one_line(sweep, no_slurm, capsys):
    assert status.main([str(sweep)]) == 3
    out = capsys.readouterr().out
    assert [ln for ln in out.splitlines() if "SLURM" in ln] == [
        "SLURM info unavailable (squeue/sacct missing or failing)"]


def test_slurm_commands_failing(sweep, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(fake_bin(tmp_path, rc=1)))
    status.main([str(sweep)])
    assert "SLURM info unavailable" in capsys.readouterr().out


def test_exit_codes(tmp_path, no_slurm, capsys):
    sweep = tmp_path / "s"
    records.write_json(sweep / "a" / records.RESULT, _result("a", "ok"))
    records.write_json(sweep / "b" / records.RESULT, _result("b", "diverged", diverged_epoch=2))
    assert status.main([str(sweep)]) == 0          # no manifest: the directories are the trials
    out = capsys.readouterr().out
    assert "2 trials: 1 ok, 1 diverged" in out and "SLURM" not in out   # no job ids: no SLURM
    records.write_json(sweep / "c" / records.RESULT, _result("c", "failed", error="boom"))
    assert status.main([str(sweep)]) == 1
    (sweep / "plots").mkdir()                       # not a trial
    (sweep / "d").mkdir()
    (sweep / "d" / records.CHECKPOINT).write_bytes(b"x")
    assert status.main([str(sweep)]) == 3          # unfinished wins over failed
    assert "4 trials: 1 ok, 1 diverged, 1 failed, 1 interrupted" in capsys.readouterr().out
    capsys.readouterr()
    assert status.main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "nope" in err
    (tmp_path / "empty").mkdir()
    assert status.main([str(tmp_path / "empty")]) == 2


def test_failed_trial_being_retried_is_running(tmp_path, no_slurm):
    d = tmp_path / "s" / "t0"
    records.write_json(d / records.RESULT, _result("t0", "failed", error="boom"))
    old = time.time() - 600
    os.utime(d / records.RESULT, (old, old))
    records.write_json(d / records.CLAIM, {"host": "n1", "pid": 1, "time": time.time(),
                                           "slurm_job_id": None})
    (s,) = status.collect_states(tmp_path / "s")
    assert s["state"] == "running" and s["detail"].startswith("retrying after failed")


def test_dead_local_claim_is_flagged(tmp_path, no_slurm):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    d = tmp_path / "s" / "t0"
    records.write_json(d / records.CLAIM, {"host": socket.gethostname(), "pid": dead.pid,
                                           "time": time.time() - 60, "slurm_job_id": None})
    (s,) = status.collect_states(tmp_path / "s")
    assert s["state"] == "interrupted" and "stale claim: process gone" in s["detail"]
    records.write_json(d / records.CLAIM, {"host": "elsewhere", "pid": 5, "time": time.time()})
    old = time.time() - 2 * status.STALE_AFTER_S
    os.utime(d / records.CLAIM, (old, old))       # the runner's heartbeat touches the mtime
    (s,) = status.collect_states(tmp_path / "s")
    assert s["state"] == "running" and "no heartbeat for" in s["detail"]


def test_torn_manifest_falls_back_to_directories(sweep, no_slurm, capsys):
    (sweep / records.MANIFEST).write_text('{"trials": [')
    assert status.main([str(sweep)]) == 3
    out = capsys.readouterr().out
    assert "manifest unreadable" in out and "7 trials:" in out   # t-missing, t-fresh unknown now


def test_cli_in_subprocess_without_torch(sweep, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(SRC), "PATH": str(fake_bin(tmp_path))}
    cli = subprocess.run([sys.executable, "-m", "gridtune.status", str(sweep)], env=env,
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 3, cli.stderr
    assert "9 trials:" in cli.stdout and "COMPLETED" in cli.stdout
    code = ("import sys\nfrom gridtune import status\nrc = status.main(sys.argv[1:])\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n")
    probe = subprocess.run([sys.executable, "-c", code, str(sweep), "--json"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip().splitlines()[-1] == "NO-TORCH"


def test_claim_of_a_dead_slurm_job_is_flagged(tmp_path, monkeypatch, capsys):
    sweep = tmp_path / "s"
    records.write_json(sweep / "t0" / records.CLAIM, {
        "host": "node01", "pid": 9, "time": time.time(), "slurm_job_id": "2001_1"})
    bindir = fake_bin(tmp_path, sacct=["2001_1|gridtune|TIMEOUT|0:0|04:00:00"], squeue=[])
    monkeypatch.setenv("PATH", str(bindir))
    assert status.main([str(sweep)]) == 3
    out = capsys.readouterr().out
    assert "[SLURM 2001_1 TIMEOUT: stale claim]" in out and "SLURM (squeue + sacct): 1 jobs" in out


def test_a_long_error_keeps_its_cause(tmp_path):
    """A failed trial's error is clipped in the middle: the path's head and the cause at the end stay."""
    path = "/scratch/" + "deep/" * 40 + "[cel][cla]0999__1.wav"
    sweep = tmp_path / "s"
    records.write_json(sweep / "t-long" / records.RESULT,
                       _result("t-long", "failed", error=f"gridtune.data.audio.BadAudio: {path}: not readable as audio"))
    (detail,) = [s["detail"] for s in status.collect_states(sweep)]
    assert len(detail) == 160
    assert detail.startswith("gridtune.data.audio.BadAudio: /scratch/deep/")
    assert detail.endswith("/[cel][cla]0999__1.wav: not readable as audio") and "…" in detail


# ---- --watch ----------------------------------------------------------------------------------

class Screen:
    """A stdout that says whether it is a terminal, keeping what was written."""

    def __init__(self, tty: bool):
        self.tty, self.text = tty, ""

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass


def _finished(tmp_path: Path, epochs=None) -> Path:
    """Two trials: one ok after 10 epochs, one failed after 3; `epochs` goes into the manifest."""
    sweep = tmp_path / "done"
    records.write_json(sweep / records.MANIFEST, {
        "sweep": "two", "objective": "val/acc", "objective_mode": "max",
        "trials": [{"trial_id": t, "overrides": [f"lr={lr}", "seed=0"], "params": {"lr": lr},
                    **({"epochs": epochs} if epochs else {})} for t, lr in (("a", 1), ("b", 2))]})
    records.write_json(sweep / "a" / records.RESULT, _result("a", "ok"))
    records.write_history(sweep / "a" / records.HISTORY, _history(10))
    records.write_json(sweep / "b" / records.RESULT, _result("b", "failed", error="boom"))
    records.write_history(sweep / "b" / records.HISTORY, _history(3))
    return sweep


@pytest.mark.parametrize("tty", [True, False])
def test_watch_redraws_on_a_terminal_and_appends_blocks_elsewhere(tmp_path, tty):
    screen = Screen(tty)
    assert status.watch(_finished(tmp_path), 0.01, screen) == 1          # ended: one trial failed
    assert screen.text.startswith("\x1b[H\x1b[2J") if tty else "\x1b" not in screen.text
    lines = screen.text.replace("\x1b[H\x1b[2J", "").splitlines()
    assert "2 trials: 1 ok, 1 failed" in lines
    assert "[##############################] 100%  13/13 epochs, 2/2 trials final" in lines
    assert any(ln.startswith("best: a  val/acc=0.8125") and ln.endswith("(lr=1)") for ln in lines), lines
    assert any(ln.split()[:4] == ["b", "failed", "epoch", "3/3"] for ln in lines), lines


def test_watch_bar_counts_planned_epochs_of_unfinished_trials(tmp_path):
    sweep = _finished(tmp_path, epochs=10)
    records.write_json(sweep / records.MANIFEST, {**records.read_json(sweep / records.MANIFEST), "trials": [
        *records.read_json(sweep / records.MANIFEST)["trials"],
        {"trial_id": "c", "overrides": ["lr=3", "seed=0"], "params": {"lr": 3}, "epochs": 10}]})
    records.write_history(sweep / "c" / records.HISTORY, _history(4))      # interrupted after 4 of 10
    read = ledger.read_sweep(sweep)
    block = status.watch_block(read, [status.trial_state(t) for t in read.trials])
    assert "[######################--------]  73%  17/23 epochs, 2/3 trials final" in block.splitlines()
    assert "  c  interrupted  epoch 4/10" in block


def test_watch_bar_counts_trials_when_planned_epochs_are_unknown(sweep):
    read = ledger.read_sweep(sweep)
    block = status.watch_block(read, [status.trial_state(t) for t in read.trials]).splitlines()
    # final: ok, diverged, oom, failed, torn; epochs: t-ok's 10, t-running's 3, t-pending's 4
    assert block[1] == ("[################--------------]  55%  5/9 trials final, 17 epochs done "
                        "(planned epochs unknown)")
    assert block[3] == "best: t-ok  val/acc=0.8125  best epoch 7/10  5m12s  (optim.lr=0)"
    listed = [ln.split()[:2] for ln in block[4:]]     # under way or to rerun; not ok, diverged, pending
    assert listed == [["t-oom", "oom"], ["t-failed", "failed"], ["t-torn", "torn"], ["t-running", "running"],
                      ["t-pending", "interrupted"]]


def test_watch_refuses_json_and_a_bad_interval(sweep, capsys):
    assert status.main([str(sweep), "--watch", "--json"]) == 2
    assert status.main([str(sweep), "--watch", "--interval", "0"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["gridtune-status: --watch prints blocks; it does not combine with --json",
                   "gridtune-status: --interval=0.0: must be > 0 seconds"]


@pytest.mark.slow
def test_watch_follows_a_running_local_sweep_to_its_end(demo_root, tmp_path):
    """`status --watch` on a sweep under way: it shows the sweep in progress, then ends by itself
    after the last trial, its last block counting what a plain status call counts."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}
    sweep = tmp_path / "watched"
    with open(tmp_path / "driver.log", "wb") as log:
        driver = subprocess.Popen(
            [sys.executable, "-m", "gridtune.sweep", "-m", "preset=debug", "train.epochs=3", "lr=1e-3,5e-4,1e-4",
             "sweep_name=watched", f"data.root={demo_root}", f"out_root={tmp_path}"],
            cwd=SRC.parent, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not (sweep / records.MANIFEST).exists():          # the driver's own progress
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "no manifest after 300 s"
            time.sleep(0.05)
        w = subprocess.run([sys.executable, "-m", "gridtune.status", str(sweep), "--watch", "--interval", "0.2"],
                           cwd=SRC.parent, env=env, capture_output=True, text=True, timeout=600)
        results = sorted(p.parent.name for p in sweep.glob("*/result.json"))   # when the watch ended
        assert driver.wait(timeout=120) == 0, (tmp_path / "driver.log").read_text()[-2000:]
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert w.returncode == 0 and "\x1b" not in w.stdout, w.stdout[-2000:] + w.stderr
    blocks = [b.splitlines() for b in w.stdout.strip().split("\n\n")]
    counts = [next(ln for ln in b if ln.startswith("3 trials: ")) for b in blocks]
    assert any("3 ok" not in c for c in counts), counts                  # seen under way
    assert any(ln.endswith("/9 epochs, 0/3 trials final") or "running" in ln for b in blocks[:-1] for ln in b)
    assert len(results) == 3                                            # it ended after the last trial
    plain = subprocess.run([sys.executable, "-m", "gridtune.status", str(sweep), "--no-slurm"], cwd=SRC.parent,
                           env=env, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0 and counts[-1] == "3 trials: 3 ok" and counts[-1] in plain.stdout.splitlines()
    assert "[##############################] 100%  9/9 epochs, 3/3 trials final" in blocks[-1]


def test_status_says_how_each_ok_trial_trained(tmp_path):
    sweep = _finished(tmp_path)
    rec = records.read_json(sweep / "a" / records.RESULT)
    rec["trained"] = {"fused": True, "group_size": 3, "trials_per_job": 6, "device": "cuda:0", "precision": "bfloat16"}
    records.write_json(sweep / "a" / records.RESULT, rec)
    read = ledger.read_sweep(sweep)
    a, b = (status.trial_state(t) for t in read.trials)
    assert a["detail"].endswith("fused x3 on cuda:0, bfloat16") and a["trained"]["trials_per_job"] == 6
    assert b["trained"] is None
    assert status.how_trained({"fused": False, "group_size": 1, "device": "cpu", "precision": "float32"}) == \
        "alone on cpu, float32"

