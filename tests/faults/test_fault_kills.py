"""Real SIGKILLs at the moments that matter, then the same command again: the sweep completes, every
trial exactly once, and no reader ever sees a torn file.

Kill points: while the audio cache is being built, mid-epoch (the driver process alone, then its
whole process group), inside the checkpoint write and inside the result.json write (between the
complete temp file and its rename: tests/faults/runner.py installs the hook).
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from faultkit import (REPO, Proc, assert_no_torn_records, assert_sweep_complete, cache_entries, history_rows,
                      sweep_args, trial_dirs)
from gridtune.data import cache, layouts
from gridtune.sweepdir import records


def _killed(proc: Proc) -> None:
    assert proc.popen.returncode == -9, (proc.popen.returncode, proc.stdout[-2000:], proc.stderr[-2000:])


@pytest.mark.slow
def test_kill_during_cache_build(run_gridtune, fresh_data, tmp_path):
    out = tmp_path / "out"
    args = sweep_args(fresh_data, out, "kcache", "train.epochs=1", "lr=1e-3,5e-4")
    cache_dir = fresh_data / ".gridtune_cache"
    proc = Proc(args, tmp_path / "logs")
    tmp_dir = proc.wait_until(lambda: next(cache_dir.glob(".*.tmp-*"), None) if cache_dir.is_dir() else None,
                              poll=0.002)
    proc.kill()
    _killed(proc)
    published, leftovers = cache_entries(fresh_data)
    assert published == [] and leftovers == [tmp_dir]      # half a build: nothing a reader takes for a cache
    assert not list(out.glob("kcache/*/result.json"))

    r = run_gridtune(*args)
    assert f"audio cache built: {len(layouts.index_train(fresh_data)[0])} clips, 0 skipped" in r.stdout
    published, _ = cache_entries(fresh_data)
    assert len(published) == 1
    meta = records.read_json(published[0] / "meta.json")
    assert meta["decodes"] == meta["n_files"] == len(meta["paths"]) == len(layouts.index_train(fresh_data)[0])
    assert_sweep_complete(out / "kcache", n_trials=2, epochs=1)
    assert_no_torn_records(cache_dir)


def test_rebuild_removes_the_temp_dir_of_a_killed_build(fresh_data, tmp_path):
    items = cache.clips_as_items(layouts.index_train(fresh_data)[0])
    params = {"kind": "audio", "sample_rate": 16000, "n_samples": 16000}
    key = cache.cache_key(fresh_data, [i[0] for i in items], params)
    dead = tmp_path / "c" / f".{key}.tmp-otherhost-4242"            # what a SIGKILLed builder leaves
    dead.mkdir(parents=True)
    (dead / "waves.npy").write_bytes(b"\0" * 4096)
    entry = cache.load_or_build(fresh_data, items, params, tmp_path / "c")
    assert entry.built and not dead.exists()


@pytest.mark.slow
def test_kill_inside_checkpoint_write_then_inside_result_write(run_gridtune, demo_root, tmp_path):
    out, logs = tmp_path / "out", tmp_path / "logs"
    args = sweep_args(demo_root, out, "kwrite", "train.epochs=2", "lr=1e-3,5e-4")
    sweep = out / "kwrite"

    # 1. killed between the complete checkpoint temp file and its rename, at the end of epoch 1
    p1 = Proc(args, logs, runner=True, env={"GRIDTUNE_TEST_KILL_ON": records.CHECKPOINT}, tag="ckpt")
    p1.wait()
    _killed(p1)
    assert "[runner] SIGKILL before renaming" in p1.stderr
    started = [d for d in trial_dirs(sweep) if (d / records.HISTORY).exists()]
    assert len(started) == 1
    first = started[0]
    assert list(first.glob(".checkpoint.pt.*.tmp")) and not (first / records.CHECKPOINT).exists()
    assert len(records.read_history(first / records.HISTORY)) == 1
    assert (first / records.CLAIM).exists() and not list(sweep.glob("*/result.json"))
    assert_no_torn_records(sweep)

    # 2. killed between the complete result.json temp file and its rename (after the last epoch)
    p2 = Proc(args, logs, runner=True, env={"GRIDTUNE_TEST_KILL_ON": records.RESULT}, tag="result")
    p2.wait()
    _killed(p2)
    assert list(first.glob(".result.json.*.tmp")) and not list(sweep.glob("*/result.json"))
    assert history_rows(sweep) == {first.name: 2}           # restarted from epoch 1: no checkpoint was there
    assert_no_torn_records(sweep)

    # 3. the same command again: the first trial only writes its record, the second one runs
    r = run_gridtune(*args)
    assert f"resumed {first.name} after epoch 2" in r.stdout
    assert f"[gridtune] {first.name} epoch" not in r.stdout
    results = assert_sweep_complete(sweep, n_trials=2, epochs=2)

    # a result.json torn by hand is flagged by the reducer, not trusted by a rerun of its trial
    torn = first / records.RESULT
    torn.write_bytes(b'{"status": "ok", "trial_id": "' + bytes(range(256)))
    red = subprocess.run([sys.executable, "-m", "gridtune.reduce", str(sweep), "--no-plots"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert red.returncode == 0 and "Traceback" not in red.stderr, red.stderr
    assert f"{first.name}" in red.stdout and "torn" in red.stdout and "unparseable result.json" in red.stdout
    assert "| torn |" in (sweep / "leaderboard.md").read_text()
    from gridtune.train.trial import run_trial
    cfg = OmegaConf.load(first / ".hydra" / "config.yaml")
    again = run_trial(cfg, first)
    assert again["status"] == "ok" and again["metrics"] == json.loads(json.dumps(results[first.name]["metrics"]))
    assert records.read_json(torn)["status"] == "ok"


@pytest.mark.slow
def test_kill_mid_epoch_then_kill_the_process_group(run_gridtune, demo_root, tmp_path):
    out, logs = tmp_path / "out", tmp_path / "logs"
    args = sweep_args(demo_root, out, "kepoch", "train.epochs=3", "lr=1e-3,5e-4")
    sweep = out / "kepoch"

    # the driver alone, once the first trial has finished epoch 1 (it is now inside epoch 2)
    p1 = Proc(args, logs, tag="one")
    p1.wait_until(lambda: any(n >= 1 for n in history_rows(sweep).values()) if sweep.is_dir() else False)
    p1.kill()
    _killed(p1)
    assert not list(sweep.glob("*/result.json"))
    assert_no_torn_records(sweep)

    # the whole process group, once the second trial is running (after the first one finished)
    p2 = Proc(args, logs, tag="group")
    p2.wait_until(lambda: len(history_rows(sweep)) == 2 and min(history_rows(sweep).values()) >= 1)
    p2.kill_group()
    _killed(p2)
    assert len(list(sweep.glob("*/result.json"))) == 1
    assert_no_torn_records(sweep)

    r = run_gridtune(*args)
    assert "1 already done (skipped), 1 to run" in r.stdout
    assert_sweep_complete(sweep, n_trials=2, epochs=3)
    ids = [d.name for d in trial_dirs(sweep)]
    everything = p1.stdout + p2.stdout + r.stdout
    for tid in ids:             # each epoch of each trial ran once, or again only after a kill
        assert everything.count(f"[gridtune] {tid} epoch 3/3") == 1, tid
