"""What one run directory's files say: its state, read into a `Trial`.

A trial (or the final run) is in exactly one state of `STATES`, told from its result.json, its
claim.json (and the claim's heartbeat, its mtime), its history and its checkpoint: `read_run(dir)`.
`ledger` reads a whole sweep with it; `counts` and `counts_line` are the one summary of states that
status, reduce and the sweeper print. Standard library only.
"""
from __future__ import annotations

import datetime as dt
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import claims, records

STATES = ("ok", "stopped", "diverged", "oom", "failed", "torn", "paused", "running", "interrupted", "pending")
DONE = ("ok", "stopped", "diverged")
NEEDS_RERUN = ("oom", "failed", "torn")
UNFINISHED = ("paused", "running", "interrupted", "pending")
STALE_AFTER_S = 900                       # as gridtune.sweepdir.claims: no heartbeat for this long


@dataclass
class Trial:
    trial_id: str
    dir: Path
    state: str = "pending"
    reason: str | None = None             # one line: why this state (None for ok)
    params: dict = field(default_factory=dict)
    overrides: list = field(default_factory=list)
    result: dict | None = None
    claim: dict | None = None
    claim_age_s: float | None = None
    heartbeat_age_s: float | None = None
    slurm_job_id: str | None = None
    _history: list | None = field(default=None, repr=False)

    def history(self) -> list[dict]:
        """Per-epoch rows, read on first use (ranking a finished trial never needs them)."""
        if self._history is None:
            self._history = records.read_history(self.dir / records.HISTORY)
        return self._history

    @property
    def epochs_done(self) -> int:
        return len(self.history())

    @property
    def last_epoch(self) -> int | None:
        epochs = [r.get("epoch") for r in self.history() if isinstance(r.get("epoch"), int)]
        return max(epochs) if epochs else None

    def metric(self, key: str) -> float | None:
        value = ((self.result or {}).get("metrics") or {}).get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def get(self, key: str, default=None):
        """A top-level field of the trial's record (None-safe for trials without one)."""
        return (self.result or {}).get(key, default)


def counts(states) -> dict[str, int]:
    """{state: number} in STATES order, from trials or from their state strings."""
    states = [getattr(s, "state", s) for s in states]
    return {s: n for s in STATES if (n := states.count(s))}


def counts_line(states) -> str:
    """"5 trials: 4 ok, 1 diverged": the one summary line of status, reduce and the sweeper."""
    states = list(states)
    return f"{len(states)} trials: " + ", ".join(f"{n} {s}" for s, n in counts(states).items())


def fmt_duration(seconds) -> str | None:
    if not isinstance(seconds, (int, float)):
        return None
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _timestamp(value) -> float | None:
    """Seconds since the epoch from a number or an ISO-8601 string (naive means local time)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _pid_gone(claim: dict) -> bool:
    """The claim is from this host and its process surely no longer exists."""
    host, pid = claim.get("host"), claim.get("pid")
    if not host or str(host).split(".")[0] != socket.gethostname().split(".")[0]:
        return False
    return isinstance(pid, int) and pid > 0 and not claims.pid_alive(pid)


def _read_claim(t: Trial, now: float) -> float:
    """Fill in the trial's claim (an unreadable one is {}); returns its heartbeat (mtime), 0 without one."""
    path = t.dir / records.CLAIM
    try:
        heartbeat = path.stat().st_mtime
    except OSError:
        return 0.0
    try:
        claim = records.read_json(path)
    except (OSError, records.TornRecord):
        claim = None
    t.claim = claim if isinstance(claim, dict) else {}
    claimed = _timestamp(t.claim.get("time"))
    t.claim_age_s = None if claimed is None else max(0.0, now - claimed)
    t.heartbeat_age_s = max(0.0, now - heartbeat)
    job = t.claim.get("slurm_job_id")
    t.slurm_job_id = None if job in (None, "") else str(job)
    return heartbeat


def _apply_result(t: Trial, result: dict) -> None:
    status, error = result.get("status"), result.get("error")
    if status not in records.STATUSES:
        t.state, t.reason = "torn", f"unknown status {status!r} in result.json"
    elif status == "ok":
        t.state = "ok"
    elif status == "diverged":
        epoch = result.get("diverged_epoch")
        t.state = "diverged"
        t.reason = (f"diverged at epoch {epoch}" if epoch is not None else "diverged") + (
            f": {_one_line(error)}" if error else "")
    elif status == "stopped":
        t.state = "stopped"
        t.reason = _one_line(result.get("stop_reason") or error or "stopped early, no reason recorded")
    elif status == "paused":
        t.state = "paused"
        t.reason = f"paused after epoch {result.get('epochs_run')}: waiting for its next halving rung"
    else:
        t.state, t.reason = status, _one_line(error) if error else f"status {status}, no error text recorded"


def _progress(t: Trial) -> str:
    return f"{t.epochs_done} epochs done" if t.epochs_done else "no epoch finished yet"


def read_run(d: Path, expected: dict | None = None, *, record: str = records.RESULT,
             now: float | None = None) -> Trial:
    """One trial (or the final run, with record=final.json) from its directory."""
    now = time.time() if now is None else now
    expected = expected or {}
    t = Trial(trial_id=d.name, dir=d, params=dict(expected.get("params") or {}),
              overrides=list(expected.get("overrides") or []))
    if not d.is_dir():
        t.reason = "no trial directory"
        return t
    heartbeat = _read_claim(t, now)
    prefix = ""
    path = d / record
    if path.exists():
        try:
            result = records.read_json(path)
            if not isinstance(result, dict):
                raise records.TornRecord(f"{path}: not a JSON object")
        except (OSError, records.TornRecord) as e:
            why = str(e).split(": ", 1)[-1].removeprefix("unparseable JSON ").strip("()")
            t.state, t.reason = "torn", f"unparseable {record} ({why})"
            return t
        t.result = result
        t.params = result.get("params") or t.params
        t.overrides = result.get("overrides") or t.overrides
        job = result.get("slurm_job_id")
        t.slurm_job_id = t.slurm_job_id or (None if job in (None, "") else str(job))
        if record != records.RESULT:          # final.json is written only when the run finished
            t.state = "ok"
            return t
        # The runner releases its claim after writing the record. A claim touched after the record
        # means another attempt is under way (the OOM retry, or a rerun of the sweep).
        if result.get("status") in records.FINAL_STATUSES or t.claim is None or heartbeat <= path.stat().st_mtime:
            _apply_result(t, result)
            return t
        prefix = f"retrying after {result.get('status')}; "
    if t.claim is not None:
        c = t.claim
        where = f"{c.get('host')}:{c.get('pid')}" if c else "an unreadable claim.json"
        if t.slurm_job_id:
            where += f" (job {t.slurm_job_id})"
        if t.claim_age_s is not None:
            where += f", claimed {fmt_duration(t.claim_age_s)} ago"
        if c and _pid_gone(c):
            t.state, t.reason = "interrupted", f"stale claim: process gone; was {where}, {_progress(t)}"
            return t
        t.state, t.reason = "running", f"{prefix}running on {where}, {_progress(t)}"
        if t.heartbeat_age_s > STALE_AFTER_S:
            t.reason += f" (no heartbeat for {fmt_duration(t.heartbeat_age_s)}: stale claim?)"
        return t
    has_checkpoint = (d / records.CHECKPOINT).exists()
    if has_checkpoint or t.epochs_done:
        t.state = "interrupted"
        t.reason = (f"interrupted at epoch {t.last_epoch}" if t.last_epoch is not None
                    else "interrupted (checkpoint present)") + ("" if has_checkpoint else " (no checkpoint)")
    else:
        t.reason = "not started"
    return t
