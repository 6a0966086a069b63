"""result.json says how the trial trained: alone or fused, in a group of how many, how many trials
its job ran, on which device and in which precision."""
from __future__ import annotations

import pytest

from conftest import compose
from gridtune.sweepdir import records
from gridtune.config.identity import trial_id
from gridtune.train.fused.job import run_chunk
from gridtune.train.trial import run_trial

BASE = ("preset=debug", "device=cpu", "train.threads=1", "train.epochs=1")


@pytest.mark.slow
def test_a_trial_run_alone_records_that_it_trained_alone(demo_root, tmp_path):
    cfg = compose(*BASE, f"data.root={demo_root}", "train.amp=off")
    rec = run_trial(cfg, tmp_path / trial_id(cfg))
    assert rec["status"] == "ok"
    on_disk = records.read_json(tmp_path / trial_id(cfg) / records.RESULT)
    assert on_disk["trained"] == {"fused": False, "group_size": 1, "trials_per_job": 1, "device": "cpu",
                                  "precision": "float32"}
    assert on_disk["device"] == on_disk["trained"]["device"] and on_disk["amp"] == "off"


@pytest.mark.slow
def test_fused_trials_record_their_group(demo_root, tmp_path):
    extra = (f"data.root={demo_root}", "train.amp=bf16", "launcher.fuse=on", "launcher.trials_per_job=3")
    cfgs = [compose(*BASE, *extra, f"lr={lr}") for lr in ("1e-3", "5e-4")] + [
        compose(*BASE, *extra, "seed=1")]                               # another seed: trains alone
    recs = run_chunk([(c, tmp_path / trial_id(c), []) for c in cfgs])
    assert [r["status"] for r in recs] == ["ok"] * 3
    trained = [records.read_json(tmp_path / trial_id(c) / records.RESULT)["trained"] for c in cfgs]
    assert trained[0] == trained[1] == {"fused": True, "group_size": 2, "trials_per_job": 3, "device": "cpu",
                                        "precision": "bfloat16"}
    assert trained[2] == {"fused": False, "group_size": 1, "trials_per_job": 3, "device": "cpu",
                          "precision": "bfloat16"}
