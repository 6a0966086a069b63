"""One trial: a composed config in, a trained CNN and an atomic `result.json` out.

`run_trial(cfg, out_dir)` skips a trial whose record is already final and was trained on the data
as it is now (the cache key its record holds against the one the driver passed down in
data.cache_key, or, run alone, the data's own; a record of other data is set aside), claims the directory,
resumes from the last completed epoch when a checkpoint is there (a requeued or killed job), and
records expected failures (divergence, CUDA OOM, any exception) as a status instead of raising,
so a sweep always goes on. `TrialRun` is the engine it drives; the final run reuses it.
"""
from __future__ import annotations

import os
import socket
import time
import traceback
from pathlib import Path

from omegaconf import DictConfig

from gridtune.sweepdir import claims, records
from gridtune.config.identity import semantic_config, trial_id
from gridtune.config.knobs import DRIVER_SET, params_of
from gridtune.config.overrides import key as override_key
from gridtune.sweepdir.ledger import done_record, same_data, trial_record


def _current_key(cfg: DictConfig) -> str | None:
    """The cache key of the trial's data as it is now: the one the sweep driver indexed and passed
    down (data.cache_key), else (a single run) worked out here; None when it cannot be told (then a
    final record stands: a data root that is away must not throw finished trials out)."""
    passed = cfg.data.get("cache_key")
    if passed:
        return str(passed)
    from gridtune.data.layouts import DataError
    from gridtune.data.cache import data_key
    try:
        return data_key(cfg)
    except (DataError, OSError):
        return None


def _set_aside(out: Path, stale: dict, key: str) -> None:
    """A final record trained on other data: keep it beside as result.<old key>.json and start over."""
    old = stale.get("cache_hash") or "unknown"
    os.replace(out / records.RESULT, out / f"result.{old}.json")
    (out / records.CHECKPOINT).unlink(missing_ok=True)
    print(f"[gridtune] {out.name}: trained on other data (cache key {old} != {key}); running again", flush=True)


def current_record(cfg: DictConfig, out: Path, tid: str, *, set_aside: bool = False) -> dict | None:
    """The trial's final record when it was trained on the data as it is now: a rerun skips the trial.
    A final record of other data does not count; with `set_aside` (the caller holds the claim) it is
    kept beside as result.<old key>.json and the trial starts over."""
    done = done_record(out, tid)
    if done is None:
        return None
    key = _current_key(cfg)     # indexing costs a stat per file: only when there is a record to check
    if same_data(done, key):
        return done
    if set_aside:
        _set_aside(out, done, key)
    return None


def run_trial(cfg: DictConfig, out_dir: str | Path, *, overrides: list[str] | None = None,
              job_type: str = "trial") -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tid = trial_id(cfg)
    done = current_record(cfg, out, tid)
    if done is not None:
        print(f"[gridtune] {tid}: already {done['status']}, skipped", flush=True)
        return done
    held = claims.acquire(out)
    if held is not None:
        print(f"[gridtune] {tid}: claimed by {held.get('host')}:{held.get('pid')}, not run here", flush=True)
        return {"trial_id": tid, "status": "claimed", "claim": held}
    try:
        done = current_record(cfg, out, tid, set_aside=True)   # another driver may have finished it meanwhile
        if done is not None:
            print(f"[gridtune] {tid}: already {done['status']}, skipped", flush=True)
            return done
        for tmp in out.glob(".*.tmp"):      # temp files of a writer killed before its rename
            tmp.unlink(missing_ok=True)
        batch_size = int(cfg.train.batch_size)
        rec = _attempt(cfg, out, tid, overrides, job_type, batch_size)
        if rec["status"] == "oom" and cfg.train.oom_retry and batch_size > 1:
            (out / records.CHECKPOINT).unlink(missing_ok=True)    # restart at the smaller batch size
            print(f"[gridtune] {tid}: CUDA OOM at batch {batch_size}; retrying once at {batch_size // 2}", flush=True)
            rec = _attempt(cfg, out, tid, overrides, job_type, batch_size // 2)
            rec["oom_retry"] = True
            records.write_json(out / records.RESULT, rec)
        return rec
    finally:
        claims.release(out)


def new_record(cfg, tid: str, overrides, batch_size: int) -> dict:
    """A trial record before training: identity, params, provenance; every RESULT_KEYS key present."""
    sha, dirty = records.git_info()
    rec = {k: None for k in records.RESULT_KEYS}
    overrides = [o for o in overrides or [] if override_key(str(o)) not in DRIVER_SET]   # how this run goes, not the trial
    rec.update(schema=1, trial_id=tid, sweep=cfg.sweep_name, params=params_of(cfg, overrides, batch_size),
               overrides=overrides, objective=cfg.objective, objective_mode=cfg.objective_mode,
               git_sha=sha, git_dirty=dirty, host=socket.gethostname(), slurm_job_id=claims.slurm_job(),
               started_at=time.strftime("%Y-%m-%dT%H:%M:%S"), config=semantic_config(cfg))
    return rec


def close_record(cfg, out: Path, rec: dict, run, seconds: float) -> dict:
    """Add the run's summary (when it got that far) and the times, then write result.json atomically."""
    if run is not None:
        rec.update(run.summary())
    rec["wall_time_s"] = seconds
    rec["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    records.write_json(out / records.RESULT, rec)
    print(f"[gridtune] {rec['trial_id']}: {rec['status']} {cfg.objective}="
          f"{(rec.get('metrics') or {}).get(cfg.objective)} -> {out / records.RESULT}", flush=True)
    return rec


def _attempt(cfg, out: Path, tid: str, overrides, job_type: str, batch_size: int) -> dict:
    from gridtune.sweepdir import tracking
    rec = new_record(cfg, tid, overrides, batch_size)
    t0 = time.perf_counter()
    run = None
    try:
        with tracking.open_tracker(cfg.get("tracking"), run_dir=out, name=tid, group=str(cfg.sweep_name),
                                   job_type=job_type, config=rec["config"]) as tracker:
            from .engine import TrialRun
            run = TrialRun(cfg, out, batch_size=batch_size, tracker=tracker)
            run.fit()
            rec["status"] = "paused" if run.paused else "ok"
    except Exception as e:   # expected failures become a status; the sweep goes on
        rec.update(classify(e))
        if rec["status"] == "failed":
            traceback.print_exc()
    return close_record(cfg, out, rec, run, time.perf_counter() - t0 + _paused_time(cfg, out, tid))


def _paused_time(cfg, out: Path, tid: str) -> float:
    """Wall time of this trial's earlier runs up to a halving rung (a paused or stopped record of the
    same data: one of other data trains again from epoch 1)."""
    prev = trial_record(out, tid)
    if prev is not None and prev.get("status") in ("paused", "stopped") and same_data(prev, cfg.data.get("cache_key")):
        return float(prev.get("wall_time_s") or 0.0)
    return 0.0


def classify(e: BaseException) -> dict:
    """The record fields of an expected failure: diverged (with its epoch), oom, or failed."""
    from .loop import Diverged
    if isinstance(e, Diverged):
        return {"status": "diverged", "diverged_epoch": e.epoch, "error": str(e)}
    name = type(e).__name__
    if name == "OutOfMemoryError" or "CUDA out of memory" in str(e):
        return {"status": "oom", "error": str(e).splitlines()[0][:300]}
    last = " ".join(traceback.format_exception_only(type(e), e)[-1].split())   # a multi-line message, on one line
    return {"status": "failed", "error": last[:500]}
