"""One trial: a composed config in, a trained CNN and an atomic `result.json` out.

`run_trial(cfg, out_dir)` skips a trial whose record is already final, claims the directory,
resumes from the last completed epoch when a checkpoint is there (a requeued or killed job), and
records expected failures (divergence, CUDA OOM, any exception) as a status instead of raising,
so a sweep always goes on. `TrialRun` is the engine it drives; the final run reuses it.
"""
from __future__ import annotations

import io
import os
import socket
import time
import traceback
from pathlib import Path

from omegaconf import DictConfig

from . import claims, records
from .config import semantic_config, trial_id


def params_of(cfg: DictConfig, batch_size: int | None = None) -> dict:
    """The knobs a leaderboard shows, flat."""
    m = cfg.model
    name = f"{m.name}{list(m.channels)[-1]}" + ("" if m.head == "gap" else f"_{m.head}") + (
        "" if m.convs_per_block == 1 else f"_x{m.convs_per_block}")
    return {"lr": cfg.lr, "dropout": cfg.dropout, "l2": cfg.l2, "seed": cfg.seed, "optim": cfg.optim.name,
            "sched": cfg.sched.name, "lr_conv": cfg.lr_conv, "lr_head": cfg.lr_head,
            "momentum": cfg.optim.get("momentum"), "weight_decay": cfg.optim.get("weight_decay"),
            "batch_size": batch_size or cfg.train.batch_size, "epochs": cfg.train.epochs, "model": name,
            "augment": cfg.augment.name}


def final_record(out_dir: Path, tid: str) -> dict | None:
    try:
        rec = records.read_json(Path(out_dir) / records.RESULT)
    except (FileNotFoundError, records.TornRecord):
        return None
    if rec.get("trial_id") == tid and rec.get("status") in records.FINAL_STATUSES:
        return rec
    return None


def run_trial(cfg: DictConfig, out_dir: str | Path, *, overrides: list[str] | None = None,
              job_type: str = "trial") -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tid = trial_id(cfg)
    done = final_record(out, tid)
    if done is not None:
        print(f"[gridtune] {tid}: already {done['status']}, skipped", flush=True)
        return done
    held = claims.acquire(out)
    if held is not None:
        print(f"[gridtune] {tid}: claimed by {held.get('host')}:{held.get('pid')}, not run here", flush=True)
        return {"trial_id": tid, "status": "claimed", "claim": held}
    try:
        done = final_record(out, tid)       # another driver may have finished it between the look and the claim
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


def _attempt(cfg, out: Path, tid: str, overrides, job_type: str, batch_size: int) -> dict:
    from . import tracking
    sha, dirty = records.git_info()
    rec = {k: None for k in records.RESULT_KEYS}
    rec.update(schema=1, trial_id=tid, sweep=cfg.sweep_name, params=params_of(cfg, batch_size),
               overrides=[o for o in overrides or [] if not _rung_override(o)], objective=cfg.objective, objective_mode=cfg.objective_mode,
               git_sha=sha, git_dirty=dirty, host=socket.gethostname(), slurm_job_id=claims.slurm_job(),
               started_at=time.strftime("%Y-%m-%dT%H:%M:%S"), config=semantic_config(cfg))
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
        rec.update(_classify(e))
        if rec["status"] == "failed":
            traceback.print_exc()
    if run is not None:
        rec.update(run.summary())
    rec["wall_time_s"] = time.perf_counter() - t0 + _paused_time(out, tid)
    rec["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    records.write_json(out / records.RESULT, rec)
    print(f"[gridtune] {tid}: {rec['status']} {cfg.objective}={(rec.get('metrics') or {}).get(cfg.objective)} "
          f"-> {out / records.RESULT}", flush=True)
    return rec


def _rung_override(item) -> bool:
    """The halving driver's `train.stop_after_epoch` override: how far this run goes, not what the trial is."""
    return str(item).lstrip("+~").split("=", 1)[0] == "train.stop_after_epoch"


def _paused_time(out: Path, tid: str) -> float:
    """Wall time of this trial's earlier runs up to a halving rung (a paused or stopped record)."""
    try:
        prev = records.read_json(out / records.RESULT)
    except (FileNotFoundError, records.TornRecord):
        return 0.0
    if isinstance(prev, dict) and prev.get("trial_id") == tid and prev.get("status") in ("paused", "stopped"):
        return float(prev.get("wall_time_s") or 0.0)
    return 0.0


def _classify(e: BaseException) -> dict:
    from .loop import Diverged
    if isinstance(e, Diverged):
        return {"status": "diverged", "diverged_epoch": e.epoch, "error": str(e)}
    name = type(e).__name__
    if name == "OutOfMemoryError" or "CUDA out of memory" in str(e):
        return {"status": "oom", "error": str(e).splitlines()[0][:300]}
    last = " ".join(traceback.format_exception_only(type(e), e)[-1].split())   # a multi-line message, on one line
    return {"status": "failed", "error": last[:500]}


def save_torch(path: Path, obj) -> None:
    import torch
    buf = io.BytesIO()
    torch.save(obj, buf)
    records.atomic_write_bytes(path, buf.getvalue())


def load_torch(path: Path, device="cpu"):
    """Checkpoints and models load with weights_only=True: no pickled code runs."""
    import torch
    return torch.load(path, map_location=device, weights_only=True)


def set_threads(cfg) -> None:
    """Torch threads: train.threads, else SLURM's CPUs for the task, else the CPUs this process may use
    (not the machine's core count, which oversubscribes a shared node)."""
    import torch
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    n = cfg.train.get("threads") or os.environ.get("SLURM_CPUS_PER_TASK") or usable or 1
    torch.set_num_threads(int(n))
