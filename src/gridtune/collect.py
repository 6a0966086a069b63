"""Reading a sweep directory into trials: one `Trial` per expected or present trial, with its state.

This module owns the question "what happened to each trial?". A trial is listed when the manifest
names it or when a directory under the sweep holds one of its records, and it gets exactly one
state: ok, stopped (by successive halving), diverged, oom, failed, paused (at a halving rung,
awaiting its next rung) (from result.json), torn (result.json unparseable), running (claim.json,
no result yet) or missing (no result and no claim). Nothing is dropped here; the
leaderboard decides what is ranked. Only the standard library and `gridtune.records` are used.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from gridtune import claims
from gridtune.records import CLAIM, HISTORY, MANIFEST, RESULT, STATUSES, TornRecord, read_history, read_json

# Display order of states, best first; also the order of the "Not ranked" section.
STATES = ("ok", "stopped", "diverged", "oom", "failed", "torn", "paused", "running", "missing")
# Directories the reducer itself writes (or Hydra leaves) that are never trials.
_NOT_TRIALS = {"plots", ".hydra", ".submitit", "__pycache__"}


@dataclass
class Trial:
    trial_id: str
    dir: Path
    state: str
    reason: str | None = None
    params: dict = field(default_factory=dict)
    overrides: list = field(default_factory=list)
    result: dict | None = None
    _history: list | None = field(default=None, repr=False)

    def history(self) -> list[dict]:
        """Per-epoch rows, read on first use (the text-only reduce never needs them for ok trials)."""
        if self._history is None:
            self._history = read_history(self.dir / HISTORY)
        return self._history

    def metric(self, key: str) -> float | None:
        value = ((self.result or {}).get("metrics") or {}).get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def get(self, key: str, default=None):
        """A top-level result.json field (None-safe for trials without a result)."""
        return (self.result or {}).get(key, default)


@dataclass
class SweepRecords:
    sweep_dir: Path
    name: str
    manifest: dict | None
    trials: list[Trial]
    warnings: list[str] = field(default_factory=list)


def params_from_overrides(overrides: list) -> dict:
    """Fallback params when no record carries them: `key=value` overrides, last path part as key."""
    params = {}
    for item in overrides or []:
        key, sep, value = str(item).lstrip("+~").partition("=")
        if not sep:
            continue
        try:
            parsed = float(value) if any(c in value for c in ".e") else int(value)
        except ValueError:
            parsed = value
        params[key.rsplit(".", 1)[-1]] = parsed
    return params


def _is_trial_dir(path: Path) -> bool:
    if not path.is_dir() or path.name in _NOT_TRIALS or path.name.startswith("."):
        return False
    return any((path / name).exists() for name in (RESULT, HISTORY, CLAIM))


def _age(seconds: float) -> str:
    minutes = max(0.0, seconds) / 60
    if minutes < 120:
        return f"{minutes:.0f} min"
    return f"{minutes / 60:.1f} h" if minutes < 48 * 60 else f"{minutes / 1440:.1f} days"


def _running_reason(claim: dict, last_epoch: int | None) -> str:
    host, pid = claim.get("host"), claim.get("pid")
    where = f"{host}:{pid}" if host else f"pid {pid}"
    if claim.get("slurm_job_id"):
        where += f" (SLURM job {claim['slurm_job_id']})"
    since = claim.get("time")
    if isinstance(since, (int, float)):
        where += f", claimed {_age(time.time() - since)} ago"
    elif since:
        where += f", claimed at {since}"
    progress = f", last epoch {last_epoch}" if last_epoch else ", no epoch finished yet"
    # A claim from this host whose process is gone will never finish: say so instead of "running".
    if host == socket.gethostname() and pid is not None and not claims.pid_alive(pid):
        return f"stale claim: {where} but that process is gone{progress}"
    return f"running on {where}{progress}"


def _last_epoch(history: list[dict]) -> int | None:
    epochs = [row.get("epoch") for row in history if isinstance(row.get("epoch"), int)]
    return max(epochs) if epochs else None


def _from_result(trial: Trial, result: dict) -> None:
    status = result.get("status")
    trial.result = result
    trial.params = result.get("params") or trial.params
    trial.overrides = result.get("overrides") or trial.overrides
    error = result.get("error")
    if status == "ok":
        trial.state = "ok"
    elif status == "diverged":
        trial.state = "diverged"
        epoch = result.get("diverged_epoch")
        trial.reason = f"diverged at epoch {epoch}" if epoch is not None else "diverged"
        if error:
            trial.reason += f": {error}"
    elif status == "stopped":
        trial.state = "stopped"
        trial.reason = result.get("stop_reason") or "stopped early by successive halving"
    elif status == "paused":
        trial.state = "paused"
        trial.reason = f"paused at epoch {result.get('epochs_run')}: waiting for its next halving rung"
    elif status in STATUSES:
        trial.state = status
        trial.reason = error or f"status {status}, no error text recorded"
    else:
        trial.state = "failed"
        trial.reason = f"unknown status {status!r} in result.json" + (f": {error}" if error else "")


def load_trial(trial_dir: Path, expected: dict | None = None) -> Trial:
    """Build one Trial from its directory; `expected` is its manifest entry (params, overrides)."""
    expected = expected or {}
    trial = Trial(trial_id=trial_dir.name, dir=trial_dir, state="missing",
                  params=dict(expected.get("params") or {}), overrides=list(expected.get("overrides") or []))
    result_path, claim_path = trial_dir / RESULT, trial_dir / CLAIM
    if result_path.exists():
        try:
            result = read_json(result_path)
            if not isinstance(result, dict):
                raise TornRecord(f"{result_path}: not a JSON object")
            _from_result(trial, result)
        except TornRecord as e:
            trial.state, trial.reason = "torn", f"unparseable result.json ({str(e).split(': ', 1)[-1]})"
    elif claim_path.exists():
        trial.state = "running"
        last = _last_epoch(trial.history())
        try:
            claim = read_json(claim_path)
            trial.reason = _running_reason(claim if isinstance(claim, dict) else {}, last)
        except TornRecord:
            trial.reason = "claim.json present but unparseable" + (f", last epoch {last}" if last else "")
    else:
        last = _last_epoch(trial.history()) if trial_dir.is_dir() else None
        trial.reason = (f"incomplete/missing: no result.json (last epoch reached: {last})" if last
                        else "no result.json")
    if not trial.params:
        trial.params = params_from_overrides(trial.overrides)
    return trial


def collect(sweep_dir: str | os.PathLike) -> SweepRecords:
    """Every trial of a sweep: those the manifest expects plus any trial directory found on disk."""
    sweep_dir = Path(sweep_dir)
    warnings, manifest = [], None
    if (sweep_dir / MANIFEST).exists():
        try:
            manifest = read_json(sweep_dir / MANIFEST)
        except TornRecord as e:
            warnings.append(f"manifest ignored: {e}")
    expected = {}
    for entry in (manifest or {}).get("trials") or []:
        if isinstance(entry, dict) and entry.get("trial_id"):
            expected[str(entry["trial_id"])] = entry
    on_disk = sorted(p.name for p in sweep_dir.iterdir() if _is_trial_dir(p)) if sweep_dir.is_dir() else []
    ids = list(expected) + [t for t in on_disk if t not in expected]
    trials = [load_trial(sweep_dir / tid, expected.get(tid)) for tid in ids]
    name = (manifest or {}).get("sweep") or next(
        (t.result.get("sweep") for t in trials if t.result and t.result.get("sweep")), sweep_dir.name)
    return SweepRecords(sweep_dir=sweep_dir, name=str(name), manifest=manifest, trials=trials, warnings=warnings)
