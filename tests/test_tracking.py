"""Tests for gridtune.sweepdir.tracking: the no-op backend and offline wandb runs (never any network).

wandb 0.31 keeps an offline run's config, history and summary only in its transaction log
(`run-<id>.wandb`: a LevelDB-style log of protobuf records), so the assertions read that file.
`run.finish()` returns once wandb-core has handled the run's last record, but the file is
flushed when wandb-core closes the stream a moment later, so readers wait for the exit record.
"""
from __future__ import annotations

import json
import logging
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import load_option
from gridtune.sweepdir import tracking
from gridtune.sweepdir.tracking import open_tracker, resolve_mode, scrub_secrets

SRC = Path(__file__).resolve().parents[1] / "src"
CONF = Path(__file__).resolve().parents[1] / "conf" / "tracking"
FAKE_KEY = "fake-key-0123456789abcdef0123456789abcde"   # 40 characters, like a real key
assert len(FAKE_KEY) == 40

WANDB_CFG = {"name": "wandb", "project": "gridtune-test", "entity": None, "mode": "offline",
             "dir": None, "tags": ["test"]}


# ---- reading an offline run ------------------------------------------------------------------

def _wandb_records(path: Path):
    """Yield the protobuf records of a .wandb transaction log.

    Layout: a 7-byte file header (b":W&B", uint16 magic, uint8 version), then 32 KiB blocks of
    chunks, each with a 7-byte header (crc32c, uint16 length, uint8 type: 1 full, 2 first,
    3 middle, 4 last); a block tail shorter than a chunk header is zero padding.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    block = 32 * 1024
    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if pos + 7 + length > len(data):   # still being written
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def read_offline_run(run_path: Path, timeout: float = 20.0) -> dict:
    """config, history rows, final summary and exit code of one finished offline run."""
    deadline = time.monotonic() + timeout
    while True:
        out = _read_offline_run(run_path)
        if out["exit_code"] is not None or time.monotonic() > deadline:
            return out
        time.sleep(0.05)


def _read_offline_run(run_path: Path) -> dict:
    (log_file,) = run_path.glob("run-*.wandb")
    out = {"config": {}, "history": [], "summary": {}, "exit_code": None, "run_id": None}
    for rec in _wandb_records(log_file):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["run_id"] = rec.run.run_id
            for item in rec.run.config.update:
                out["config"][_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in rec.config.update:
                out["config"][_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            out["history"].append({_key(i): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            for item in rec.summary.update:
                out["summary"][_key(item)] = json.loads(item.value_json)
        elif kind == "exit":
            out["exit_code"] = rec.exit.exit_code
    return out


def offline_runs(root: Path) -> list[Path]:
    return sorted((root / "wandb").glob("offline-run-*"))


# ---- fixtures --------------------------------------------------------------------------------

@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """Offline, hermetic wandb: its config/cache dirs in tmp_path, no key unless a test sets one."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir_env"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb_data"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setattr(tracking, "_online_failed", False)
    return tmp_path


def _run(cfg, run_dir, config=None, name="t0000", job_type="trial"):
    return open_tracker(cfg, run_dir=run_dir, name=name, group="sweep-a", job_type=job_type,
                        config=config if config is not None else {"optim": {"lr": 0.01}})


# ---- no wandb at all -------------------------------------------------------------------------

def test_none_backend_never_imports_wandb(tmp_path):
    code = (
        "import sys\n"
        "from gridtune.sweepdir.tracking import open_tracker\n"
        "for cfg in ({'name': 'none'}, None, {'name': 'wandb', 'mode': 'disabled'}):\n"
        "    with open_tracker(cfg, run_dir=sys.argv[1], name='t', group='g', job_type='trial',\n"
        "                      config={'a': 1}) as tr:\n"
        "        tr.log({'x': 1.0}, step=0); tr.summary({'x': 1.0})\n"
        "        tr.log_table('t', ['a'], [[1]])\n"
        "        assert tr.run_id is None\n"
        "print('wandb' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("WANDB_MODE", None)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    assert not (tmp_path / "run").exists()


def test_none_backend_propagates_exceptions(tmp_path):
    with pytest.raises(KeyError):
        with _run({"name": "none"}, tmp_path):
            raise KeyError("boom")


def test_unknown_backend_is_a_config_error(tmp_path):
    with pytest.raises(ValueError, match="tracking.name"):
        with _run({"name": "mlflow"}, tmp_path):
            pass


def test_config_files():
    from omegaconf import OmegaConf

    assert OmegaConf.to_container(load_option(CONF / "none.yaml")) == {"name": "none"}
    assert OmegaConf.to_container(load_option(CONF / "wandb.yaml")) == {
        "name": "wandb", "project": "gridtune", "entity": None, "mode": "auto", "dir": None,
        "tags": []}


def test_resolve_mode(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert resolve_mode("auto") == "offline"
    assert resolve_mode(None) == "offline"
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    assert resolve_mode("auto") == "online"
    assert resolve_mode("offline") == "offline"
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_mode("auto") == "offline"
    assert resolve_mode("online") == "online"   # an explicit mode wins over the environment
    with pytest.raises(ValueError):
        resolve_mode("sometimes")


def test_scrub_secrets(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    cfg = {"optim": {"lr": 0.1, "Password": "x"}, "tracking": {"api_key": "k", "apiKey": "k",
           "project": "p"}, "hf_token": "t", "client_secret": "s", "note": FAKE_KEY,
           "cmd": f"run --key={FAKE_KEY}", "list": [FAKE_KEY, "ok", {"token": 1}],
           "path": Path("/data"), "n": None}
    assert scrub_secrets(cfg) == {"optim": {"lr": 0.1}, "tracking": {"project": "p"},
                                  "list": ["ok", {}], "path": "/data", "n": None}


# ---- offline wandb runs ----------------------------------------------------------------------

def test_offline_run_records_config_history_and_summary(wandb_env):
    run_dir = wandb_env / "sweep" / "t0000"
    config = {"optim": {"lr": 0.01, "name": "adamw"}, "model": {"width": 32}, "seed": 3}
    with _run(WANDB_CFG, run_dir, config) as tr:
        assert isinstance(tr, tracking.WandbTracker)
        tr.log({"train/loss": 1.5, "val/acc": 0.5}, step=0)
        tr.log({"train/loss": 0.9, "val/acc": 0.75}, step=1)
        tr.summary({"best/val_acc": 0.75, "best_epoch": 1})
        tr.log_table("confusion", ["true", "pred", "n"], [["a", "a", 3], ["a", "b", 1]])
    assert (run_dir / tracking.RUN_ID_FILE).read_text().strip() == tr.run_id
    (path,) = offline_runs(run_dir)   # dir: null puts wandb's files inside the trial dir
    assert path.name.endswith(f"-{tr.run_id}")
    assert (path / f"run-{tr.run_id}.wandb").is_file()
    assert list((path / "files" / "media" / "table").glob("confusion_*.table.json"))

    rec = read_offline_run(path)
    assert rec["run_id"] == tr.run_id
    assert rec["config"]["optim"] == {"lr": 0.01, "name": "adamw"}
    assert rec["config"]["model"] == {"width": 32} and rec["config"]["seed"] == 3
    accs = [(r["_step"], r["val/acc"]) for r in rec["history"] if "val/acc" in r]
    assert accs == [(0, 0.5), (1, 0.75)]
    assert rec["summary"]["val/acc"] == 0.75 and rec["summary"]["best/val_acc"] == 0.75
    assert rec["summary"]["best_epoch"] == 1
    assert rec["exit_code"] == 0


def test_requeued_trial_resumes_the_same_run(wandb_env):
    run_dir = wandb_env / "t0001"
    with _run(WANDB_CFG, run_dir) as first:
        first.log({"val/acc": 0.1}, step=0)
    with _run(WANDB_CFG, run_dir) as second:
        second.log({"val/acc": 0.2}, step=1)
    assert first.run_id == second.run_id
    runs = offline_runs(run_dir)
    assert len(runs) == 2
    assert {read_offline_run(p)["run_id"] for p in runs} == {first.run_id}


def test_exception_finishes_run_and_reraises(wandb_env):
    run_dir = wandb_env / "t0002"
    with pytest.raises(RuntimeError, match="diverged"):
        with _run(WANDB_CFG, run_dir) as tr:
            tr.log({"val/acc": 0.3}, step=0)
            raise RuntimeError("diverged")
    (path,) = offline_runs(run_dir)
    assert read_offline_run(path)["exit_code"] == 1


def test_api_key_is_never_written(wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    # a key passed on the command line ends up in wandb's run metadata unless we prevent it
    monkeypatch.setattr(sys, "argv", [sys.argv[0], f"+tracking.api_key={FAKE_KEY}"])
    run_dir = wandb_env / "t0003"
    wandb_dir = wandb_env / "shared_wandb"
    cfg = {**WANDB_CFG, "dir": str(wandb_dir)}
    config = {"tracking": {"api_key": FAKE_KEY, "project": "p"}, "env_copy": FAKE_KEY,
              "optim": {"lr": 0.1}}
    with _run(cfg, run_dir, config) as tr:
        tr.log({"val/acc": 0.5}, step=0)
        tr.summary({"note": "done"})
    (path,) = offline_runs(wandb_dir)
    rec = read_offline_run(path)
    assert rec["config"]["tracking"] == {"project": "p"}
    assert "env_copy" not in rec["config"] and rec["config"]["optim"] == {"lr": 0.1}
    files = [p for d in (run_dir, wandb_dir) for p in d.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files)
    leaks = [p for p in files if FAKE_KEY.encode() in p.read_bytes()]
    assert leaks == []


def test_several_runs_in_one_process(wandb_env):
    ids = []
    for i in range(3):
        with _run(WANDB_CFG, wandb_env / f"t{i:04d}", {"i": i}, name=f"t{i:04d}") as tr:
            tr.log({"val/acc": i / 10}, step=0)
            ids.append(tr.run_id)
    assert len(set(ids)) == 3
    for i in range(3):
        (path,) = offline_runs(wandb_env / f"t{i:04d}")
        rec = read_offline_run(path)
        assert rec["config"]["i"] == i and rec["exit_code"] == 0
        assert rec["summary"]["val/acc"] == i / 10


def test_init_failure_falls_back_to_noop(wandb_env, monkeypatch, caplog):
    import wandb

    def broken_init(**kwargs):
        raise wandb.errors.UsageError("bad setup")

    monkeypatch.setattr(wandb, "init", broken_init)
    with caplog.at_level(logging.WARNING, logger="gridtune.sweepdir.tracking"):
        with _run(WANDB_CFG, wandb_env / "t0004") as tr:
            tr.log({"val/acc": 0.5}, step=0)
    assert type(tr) is tracking.Tracker and tr.run_id is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "bad setup" in warnings[0].getMessage()


def test_online_failure_retries_offline_once_per_process(wandb_env, monkeypatch, caplog):
    import wandb

    real_init, modes = wandb.init, []

    def init(**kwargs):
        modes.append(kwargs["mode"])
        if kwargs["mode"] == "online":
            raise wandb.errors.CommError("no route to host")
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", init)
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.delenv("WANDB_MODE")
    cfg = {**WANDB_CFG, "mode": "auto"}
    with caplog.at_level(logging.WARNING, logger="gridtune.sweepdir.tracking"):
        for i in range(2):
            with _run(cfg, wandb_env / f"t{i:04d}") as tr:
                tr.log({"val/acc": 0.5}, step=0)
            assert isinstance(tr, tracking.WandbTracker)
    assert modes == ["online", "offline", "offline"]
    assert len(offline_runs(wandb_env / "t0000")) == 1
    assert "retrying offline" in caplog.text


# ---- a requeued trial, end to end --------------------------------------------------------------

def test_requeued_offline_trial_syncs_every_epoch(wandb_env, demo_root, run_killed_after_epoch):
    """A trial killed after epoch 2 and resumed: the offline run that `wandb sync` picks up holds all
    of its epochs (wandb offline ignores resume and a sync of two runs with one id keeps one)."""
    from conftest import compose
    from gridtune.sweepdir import records
    from gridtune.train.trial import run_trial
    cfg = compose("preset=debug", f"data.root={demo_root}", "train.epochs=4", "tracking=wandb",
                  "tracking.mode=offline", "tracking.project=gridtune-test")
    out = wandb_env / "trial"
    run_killed_after_epoch(cfg, out, epoch=2)
    (first,) = offline_runs(out)
    # the kill came after epoch 2's checkpoint and before its log: the first run holds epoch 1 only
    assert [r["epoch"] for r in read_offline_run(first)["history"]] == [1]
    rec = run_trial(cfg, out)
    assert rec["status"] == "ok" and rec["epochs_run"] == 4

    (synced,) = offline_runs(out)                      # the one `wandb sync DIR/*/wandb/offline-run-*` takes
    assert synced != first and (out / "wandb" / tracking.SUPERSEDED / first.name).is_dir()
    logged = read_offline_run(synced)
    history = records.read_history(out / records.HISTORY)
    assert [(r["_step"], r["epoch"]) for r in logged["history"]] == [(1, 1), (2, 2), (3, 3), (4, 4)]
    assert [r["val/acc"] for r in logged["history"]] == [h["val/acc"] for h in history]
    assert [r["lr/conv"] for r in logged["history"]] == [h["lr"]["conv"] for h in history]
    assert logged["run_id"] == read_offline_run(out / "wandb" / tracking.SUPERSEDED / first.name)["run_id"]
    assert logged["exit_code"] == 0
