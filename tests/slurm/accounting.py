"""SLURM accounting as the real-SLURM tests read it: sacct rows, and waiting until jobs have ended
(accounting records a job's end a moment after the job's own last write)."""
from __future__ import annotations

import datetime as dt
import subprocess
import time

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
            "DEADLINE", "PREEMPTED", "REQUEUED"}   # REQUEUED: an earlier run of a job (sacct -D)
SINCE = (dt.datetime.now() - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")


def sacct(*args: str, dup: bool = False) -> list[list[str]]:
    cmd = ["sacct", "-X", "-n", "-P", "-S", SINCE, *(["-D"] if dup else []), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"{' '.join(cmd)}: {r.stderr}"
    return [line.split("|") for line in r.stdout.splitlines() if line.strip()]


def wait_sacct(*select: str, fields: str = "JobID,State", n: int | None = None, dup: bool = False,
               timeout: float = 120) -> list[list[str]]:
    """sacct rows (JobID, State first) once every selected job is in a terminal state; accounting
    lags the job's end by a second or so, and a just-submitted job may not be listed yet."""
    deadline = time.monotonic() + timeout
    while True:
        rows = sacct(*select, f"--format={fields}", dup=dup)
        if rows and (n is None or len(rows) >= n) and all(r[1].split()[0] in TERMINAL for r in rows):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"sacct {' '.join(select)}: jobs not finished after {timeout}s: {rows}")
        time.sleep(0.5)
