"""Divergence, CUDA OOM and other exceptions end a trial with a status, never the sweep.

At lr=1.0 the default 256-filter CNN with Adam averages a train loss of ~40 in its first epoch,
16x the loss of chance (ln 11): above train.diverge_factor x ln(classes), so it is `diverged` in
epoch 1 (it then collapses to a constant predictor, which a loss check on NaN alone would miss).
RMSprop with the flatten head at lr=1.0 explodes further (mean train loss ~1e4) and is caught too.
"""
from __future__ import annotations

import pytest
import torch

from conftest import compose
from faultkit import sweep_args
from gridtune.train import engine
from gridtune.sweepdir import records
from gridtune.train.trial import run_trial

DIVERGING = ("optim=rmsprop", "model.head=flatten", "dropout=0")


@pytest.mark.slow
def test_lr_1_diverges_the_sweep_finishes_and_a_rerun_does_not_retry_it(run_gridtune, demo_root, tmp_path):
    args = sweep_args(demo_root, tmp_path, "div", "train.epochs=2", *DIVERGING, "lr=1e-3,1.0")
    r = run_gridtune(*args)
    assert "2 trials: 1 ok, 1 diverged." in r.stdout
    recs = {rec["params"]["lr"]: rec for rec in map(records.read_json, (tmp_path / "div").glob("*/result.json"))}
    bad, good = recs[1.0], recs[1e-3]
    assert good["status"] == "ok" and good["epochs_run"] == 2
    assert bad["status"] == "diverged" and bad["diverged_epoch"] == 1 and "mean train loss" in bad["error"]
    assert records.read_json(tmp_path / "div" / bad["trial_id"] / "result.json")["diverged_epoch"] == 1
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "div").glob("*/result.json")}

    again = run_gridtune(*args)
    assert "2 trials, 2 already done (skipped), 0 to run" in again.stdout and "Launching" not in again.stdout
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "div").glob("*/result.json")} == stamps


def test_default_model_at_lr_1_is_diverged(demo_root, tmp_path):
    # the report's model and optimizer (Adam), only the learning rate raised to 1.0
    rec = run_trial(compose("preset=demo", "train.epochs=2", "lr=1.0", f"data.root={demo_root}"), tmp_path / "t")
    assert rec["status"] == "diverged" and rec["diverged_epoch"] == 1, rec["error"]


def _cfg(root, *extra):
    return compose("preset=debug", "train.epochs=1", f"data.root={root}", *extra)


OOM = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.10 GiB total capacity)"


@pytest.fixture
def oom_at(monkeypatch):
    """Make the first training step raise CUDA OOM at the given batch sizes; returns the sizes tried."""
    tried = []

    def install(*sizes):
        real = engine.train_epoch

        def train_epoch(*args, batch_size, **kwargs):
            tried.append(batch_size)
            if batch_size in sizes:
                raise torch.cuda.OutOfMemoryError(OOM)
            return real(*args, batch_size=batch_size, **kwargs)
        monkeypatch.setattr(engine, "train_epoch", train_epoch)
        return tried
    return install


def test_cuda_oom_is_retried_once_at_half_the_batch(demo_root, tmp_path, oom_at, capsys):
    tried = oom_at(16)
    rec = run_trial(_cfg(demo_root), tmp_path / "t")
    assert tried == [16, 8]
    on_disk = records.read_json(tmp_path / "t" / records.RESULT)
    assert on_disk["status"] == "ok" and on_disk["oom_retry"] is True and on_disk["error"] is None
    assert on_disk["params"]["batch_size"] == 8 and on_disk["epochs_run"] == 1 == rec["epochs_run"]
    assert "CUDA OOM at batch 16; retrying once at 8" in capsys.readouterr().out


def test_cuda_oom_without_retry_ends_oom(demo_root, tmp_path, oom_at):
    tried = oom_at(16)
    rec = run_trial(_cfg(demo_root, "train.oom_retry=false"), tmp_path / "t")
    assert tried == [16]
    on_disk = records.read_json(tmp_path / "t" / records.RESULT)
    assert on_disk["status"] == "oom" == rec["status"] and on_disk["error"] == OOM
    assert on_disk.get("oom_retry") is None and on_disk["params"]["batch_size"] == 16


def test_cuda_oom_at_both_sizes_is_retried_only_once(demo_root, tmp_path, oom_at):
    tried = oom_at(16, 8)
    rec = run_trial(_cfg(demo_root), tmp_path / "t")
    assert tried == [16, 8]
    assert rec["status"] == "oom" and rec["oom_retry"] is True and rec["params"]["batch_size"] == 8
    assert records.read_json(tmp_path / "t" / records.RESULT)["status"] == "oom"


def _raise_in_training(monkeypatch, exc):
    def train_epoch(*args, **kwargs):
        def deep():
            raise exc
        deep()
    monkeypatch.setattr(engine, "train_epoch", train_epoch)


def test_other_exception_is_failed_with_the_last_traceback_line(demo_root, tmp_path, monkeypatch):
    _raise_in_training(monkeypatch, KeyError("features.n_mels"))
    rec = run_trial(_cfg(demo_root), tmp_path / "t")
    assert rec["status"] == "failed" and rec["error"] == "KeyError: 'features.n_mels'"
    assert records.read_json(tmp_path / "t" / records.RESULT)["error"] == rec["error"]


def test_multi_line_exception_message_is_recorded_on_one_line(demo_root, tmp_path, monkeypatch):
    _raise_in_training(monkeypatch, RuntimeError("shape mismatch\n  expected (16, 1, 32, 47)\n  got (16, 2)"))
    rec = run_trial(_cfg(demo_root), tmp_path / "t")
    assert rec["status"] == "failed" and rec["error"].startswith("RuntimeError: shape mismatch")
    assert "\n" not in rec["error"] and "got (16, 2)" in rec["error"]
