"""Claiming a trial directory, so that two drivers (or a requeued job and its ghost) never run it twice.

A claim is `claim.json` created with O_EXCL, holding host, PID, time and SLURM job id, and touched
as a heartbeat while the trial runs. A claim is stale when its process is gone (same host, dead
PID), when it belongs to this very SLURM job (a requeue restarts it under the same id), or when its
heartbeat is older than `stale_after_s`. A stale claim is broken by renaming it away: only one of
several racing processes can rename it, and then the usual O_EXCL create decides who runs.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from . import records


def slurm_job() -> str | None:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def pid_alive(pid) -> bool:
    """Whether process `pid` exists on this host. Unknown (a bad or non-positive value, another user's
    process) counts as alive: only a process surely gone makes a claim stale this way."""
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return True
    if pid <= 0:            # os.kill(0 or -1, 0) would ask about whole process groups
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_stale(claim: dict | None, path: Path, stale_after_s: float) -> bool:
    if claim is None:                       # unreadable: a writer died between create and write
        return time.time() - path.stat().st_mtime > 5
    if claim.get("host") == socket.gethostname() and not pid_alive(claim.get("pid")):
        return True
    if claim.get("slurm_job_id") and claim.get("slurm_job_id") == slurm_job():
        return True
    return time.time() - path.stat().st_mtime > stale_after_s


def acquire(trial_dir: Path, stale_after_s: float = 900.0) -> dict | None:
    """Claim the trial: None on success, else the live claim that holds it."""
    path = Path(trial_dir) / records.CLAIM
    path.parent.mkdir(parents=True, exist_ok=True)
    mine = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(),
            "slurm_job_id": slurm_job()}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            held = read(path)
            try:
                if not is_stale(held, path, stale_after_s):
                    return held or {"host": "?", "pid": "?"}
                os.rename(path, path.with_name(f"{records.CLAIM}.stale-{os.getpid()}"))
            except FileNotFoundError:
                pass                        # released or broken by someone else meanwhile: retry
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(mine, f)
        return None
    return read(path) or {"host": "?", "pid": "?"}


def heartbeat(trial_dir: Path) -> None:
    try:
        os.utime(Path(trial_dir) / records.CLAIM)
    except FileNotFoundError:
        pass


def release(trial_dir: Path) -> None:
    path = Path(trial_dir) / records.CLAIM
    held = read(path)
    if held and held.get("pid") == os.getpid() and held.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)
    for stale in Path(trial_dir).glob(f"{records.CLAIM}.stale-*"):
        stale.unlink(missing_ok=True)
