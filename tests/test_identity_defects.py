"""One owner per fact about a trial's identity: the keys that are not part of it (one declaration,
read by ids, fusion, the axes and the records), overrides read with Hydra's grammar only, fusion's
defaults, the dropout rate fusion looks at, and the cache key the driver passes down."""
from pathlib import Path
from types import SimpleNamespace as T

import pytest
from omegaconf import OmegaConf

from conftest import REPO, compose
from gridtune.config import facts, identity, knobs
from gridtune import final
from gridtune.train.fused import grouping
from gridtune.data import cache
from gridtune.sweepdir import records
from gridtune.train import trial
from gridtune.config.schema import LauncherConf

# an override of each declared non-identity key ("hydra" aside: Hydra's own node, never composed here)
SAMPLES = {"launcher": "launcher=slurm", "tracking": "tracking=wandb", "final": "final.epochs=3",
           "lr_find": "+lr_find.iters=20", "out_root": "out_root=/x", "sweep_name": "sweep_name=s",
           "device": "device=cpu", "data.root": "data.root=/x", "data.cache_dir": "data.cache_dir=/y",
           "data.resident": "data.resident=never", "data.resident_max_gb": "data.resident_max_gb=1",
           "train.threads": "train.threads=1", "train.compile": "train.compile=false",
           "train.cudnn_benchmark": "train.cudnn_benchmark=false", "train.onednn": "train.onednn=false",
           "train.oom_retry": "train.oom_retry=false", "train.stop_after_epoch": "train.stop_after_epoch=1",
           "launcher.chunk": "launcher.chunk=[a]", "data.cache_key": "data.cache_key=abc"}


def test_the_non_identity_keys_are_declared_once():
    assert set(facts.NOT_IDENTITY) == {"hydra", *SAMPLES}
    assert set(identity.NON_SEMANTIC_TOP) == {k for k in facts.NOT_IDENTITY if "." not in k}


@pytest.mark.parametrize("key", list(SAMPLES))
def test_every_non_identity_key_is_read_alike_by_ids_fusion_axes_and_records(key):
    base = compose("preset=debug")
    if OmegaConf.select(base, key, default="absent") == "absent":
        pytest.skip(f"{key} is not in this config tree")
    cfg = compose("preset=debug", SAMPLES[key])
    why = facts.NOT_IDENTITY[key]
    assert identity.trial_id(cfg) == identity.trial_id(base)
    if why == "output":                      # where it writes, how it is launched: never keeps trials apart
        assert grouping.fuse_key(cfg) == grouping.fuse_key(base)
    assert knobs.is_axis_key(key) == (why == "hint")     # hints stay in params as typed; the rest is no axis
    if why == "driver":                      # set for one launch: never kept among a trial's overrides
        assert final.single_run_overrides(["lr=1e-3", SAMPLES[key]]) == ["lr=1e-3"]


def test_a_trial_records_no_override_the_driver_set_for_one_launch():
    cfg = compose("preset=debug")
    given = ["lr=1e-3", "++train.stop_after_epoch=1", "++launcher.chunk=['a1','b2']", "data.cache_key='abc'"]
    rec = trial.new_record(cfg, identity.trial_id(cfg), given, 16)
    assert rec["overrides"] == ["lr=1e-3"] and set(rec["params"]) == set(knobs.RECORDED)


def test_recorded_overrides_are_read_with_hydras_grammar():
    overrides = ["model.channels=[8,16]", "+optim.tag=", "sweep_name='a,b'", "~train.threads", "optim=sgd"]
    assert knobs.value({}, overrides, "model.channels") == [8, 16]
    assert knobs.value({}, overrides, "optim.tag") == ""
    assert knobs.value({}, overrides, "sweep_name") == "a,b"
    assert knobs.value({}, overrides, "optim") == "sgd"
    assert knobs.known({}, overrides, "train.threads") and knobs.value({}, overrides, "train.threads") is None
    # the same list typed two ways is one value: not an axis
    same = [T(params={"seed": 0}, overrides=[o]) for o in ("model.channels=[8,16]", "model.channels=[8, 16]")]
    assert knobs.axes(same) == []
    assert knobs.value({}, ["lr=[1"], "lr") is None and knobs.axes([T(params={}, overrides=["lr=[1"])]) == []


def test_fusion_defaults_are_the_schemas():
    default = (LauncherConf.fuse, LauncherConf.fuse_max)
    assert grouping.mode(OmegaConf.create({})) == default
    for launcher in ("local", "slurm"):
        assert grouping.mode(compose(f"launcher={launcher}")) == default
        text = (REPO / "conf" / "launcher" / f"{launcher}.yaml").read_text()
        assert not any(line.split("#")[0].strip().startswith(("fuse:", "fuse_max:")) for line in text.splitlines())


def test_model_dropout_0_does_not_fuse_with_dropout_above_0():
    base = compose("preset=debug")                            # dropout 0.5
    off = compose("preset=debug", "model.dropout=0")          # the model's own rate set apart: 0
    other = compose("preset=debug", "model.dropout=0.3")
    assert grouping.fuse_key(other) == grouping.fuse_key(base)
    assert grouping.fuse_key(off) != grouping.fuse_key(base)
    assert grouping.fuse_key(off) == grouping.fuse_key(compose("preset=debug", "dropout=0"))
    assert grouping.groups([base, off, other], 18) == [[0, 2], [1]]


def test_a_trial_takes_the_cache_key_the_driver_passed_down(tmp_path, monkeypatch):
    def index(cfg):
        raise AssertionError("the data was indexed again")
    monkeypatch.setattr(cache, "data_key", index)
    cfg = compose("preset=debug", "data.cache_key='abc'")
    tid = identity.trial_id(cfg)
    assert tid == identity.trial_id(compose("preset=debug"))
    records.write_json(tmp_path / records.RESULT, {"trial_id": tid, "status": "ok", "cache_hash": "abc"})
    assert trial.current_record(cfg, tmp_path, tid)["cache_hash"] == "abc"
    records.write_json(tmp_path / records.RESULT, {"trial_id": tid, "status": "ok", "cache_hash": "old"})
    assert trial.current_record(cfg, tmp_path, tid) is None


def test_a_single_run_works_the_cache_key_out_itself(tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(cache, "data_key", lambda cfg: asked.append(cfg) or "abc")
    cfg = compose("preset=debug")
    tid = identity.trial_id(cfg)
    records.write_json(Path(tmp_path) / records.RESULT, {"trial_id": tid, "status": "ok", "cache_hash": "abc"})
    assert trial.current_record(cfg, tmp_path, tid) is not None and len(asked) == 1
