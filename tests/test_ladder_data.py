"""A halved sweep honours the data's identity: rerun on data that changed (one file touched), every
trial trains again on the data as it is now, at every rung, instead of counting records of the old
data as reached; and the driver passes the cache key it indexed down to its trials."""
import os

import pytest
import yaml

from conftest import compose
from gridtune.halving import policy
from gridtune.data import layouts
from gridtune.data import cache
from gridtune.sweepdir import records, ledger
from gridtune.halving.ladder import settled

GRID = ("preset=debug", "train.epochs=4", "lr=1e-3,1e-4", "dropout=0.3,0.5", "train.threads=1",
        "hydra.sweeper.halving.eta=2", "hydra.sweeper.halving.min_epochs=1")


def test_a_record_of_other_data_is_not_settled():
    rec = {"trial_id": "t", "status": "stopped", "epochs_run": 2, "cache_hash": "old"}
    assert settled(rec, 2, "old") and settled(rec, 2, None)        # None: the data cannot be told now
    assert not settled(rec, 2, "new") and not settled({**rec, "status": "ok"}, 4, "new")
    assert not settled(rec, 3, "old")


@pytest.mark.slow
def test_halved_sweep_on_touched_data_trains_every_trial_again(run_gridtune, fresh_data, tmp_path):
    args = ("-m", *GRID, "sweep_name=touched", f"out_root={tmp_path}", f"data.root={fresh_data}")
    run_gridtune(*args)
    sweep = tmp_path / "touched"
    old_key = cache.data_key(compose("preset=debug", f"data.root={fresh_data}"))
    tids = [t.trial_id for t in ledger.read_sweep(sweep).trials]
    assert len(tids) == 4 and {records.read_json(sweep / t / records.RESULT)["cache_hash"] for t in tids} == {old_key}

    wav = sorted((fresh_data / layouts.TRAIN_DIR / "pia").glob("*.wav"))[0]
    os.utime(wav, ns=(wav.stat().st_atime_ns, wav.stat().st_mtime_ns + 1_000_000))
    new_key = cache.data_key(compose("preset=debug", f"data.root={fresh_data}"))
    assert new_key != old_key
    r = run_gridtune(*args)
    assert "1 trial redone: trained on other data" in r.stdout
    assert "halving rung 0/2: 4 config(s), 4 trial(s) to epoch 1: 4 to run, 0 already there" in r.stdout, r.stdout
    ladder = records.read_json(sweep / policy.LADDER)
    assert ladder["complete"] and len(ladder["decisions"]) == 2
    for t in tids:
        rec = records.read_json(sweep / t / records.RESULT)
        assert rec["cache_hash"] == new_key, (t, rec["status"], rec["cache_hash"])
        assert [h["epoch"] for h in ledger.history(sweep / t)] == list(range(1, rec["epochs_run"] + 1))
    assert [t for t in tids if records.read_json(sweep / t / records.RESULT)["status"] == "ok"] == \
        ladder["decisions"][1]["promoted"]
    for t in tids:          # the driver passed its key down; the record does not count it as an override
        launched = yaml.safe_load((sweep / t / ".hydra" / "overrides.yaml").read_text())
        assert f"data.cache_key='{new_key}'" in launched or f"data.cache_key={new_key}" in launched, launched
        assert not any("cache_key" in o for o in records.read_json(sweep / t / records.RESULT)["overrides"])

