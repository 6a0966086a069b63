"""The one account of a sweep directory: which trials it holds and what happened to each.

`read_sweep(dir)` lists every trial the manifest expects plus every trial directory found on disk,
and gives each exactly one state from `rundir.STATES`:

    ok, stopped, diverged     done (stopped: halted early by successive halving, `stop_reason` says why)
    oom, failed, torn         need a rerun (torn: result.json unparseable or of an unknown status)
    paused                    at a halving rung's epoch, waiting for the ladder's next rung
    running                   a live claim.json (also a failed trial being retried)
    interrupted               a checkpoint or history but no final record and no live claim
    pending                   expected by the manifest, nothing of it on disk yet

The final run (`final/`, or any directory holding final.json / final_config.yaml) is never a
trial: it is read into `Sweep.final` with its own state. reduce, status, the sweeper's done/todo
split and summary, the halving ladder and the final run all read a sweep through here
(`trial_record`, `history`), and the ladder rewrites a record through `write_record`. Standard
library only.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import records
from .rundir import Trial, read_run

TRIAL_FILES = (records.RESULT, records.CLAIM, records.HISTORY, records.CHECKPOINT)
FINAL_DIR = "final"                       # where `gridtune.final` writes by default
FINAL_RECORD = "final.json"
FINAL_MARKS = (FINAL_RECORD, "final_config.yaml")
NOT_TRIALS = {"plots", "__pycache__", FINAL_DIR}


@dataclass
class Sweep:
    dir: Path
    name: str
    manifest: dict | None
    trials: list[Trial]
    final: Trial | None = None
    warnings: list[str] = field(default_factory=list)


def trial_record(trial_dir: Path, trial_id: str) -> dict | None:
    """The trial's result.json, whatever its status, when it is this very trial's; None when it is
    missing, unreadable or another trial's. The driver, the trial and the ladder read records here."""
    try:
        rec = records.read_json(Path(trial_dir) / records.RESULT)
    except (OSError, records.TornRecord):
        return None
    return rec if isinstance(rec, dict) and rec.get("trial_id") == trial_id else None


def done_record(trial_dir: Path, trial_id: str) -> dict | None:
    """The trial's record when it is final for this very config (a rerun skips it), else None."""
    rec = trial_record(trial_dir, trial_id)
    return rec if rec is not None and rec.get("status") in records.FINAL_STATUSES else None


def write_record(trial_dir: Path, rec: dict) -> None:
    """Rewrite a trial's result.json atomically (the ladder's stop at a rung)."""
    records.write_json(Path(trial_dir) / records.RESULT, rec)


def history(trial_dir: Path) -> list[dict]:
    """A trial's per-epoch rows (history.jsonl); a torn last line is dropped."""
    return records.read_history(Path(trial_dir) / records.HISTORY)


TIMED = ("ok", "diverged", "stopped", "paused")     # records whose epochs ran to their end


def timed_runs(dirs) -> list[tuple[dict, list[dict]]]:
    """(result.json, history rows) of every trial under these sweep directories (the ones that exist)
    whose record holds the `timing` of its run and ran its epochs to their end: gridtune.checks.budget's
    measured epoch times. Each directory is read once, as `read_sweep` reads it."""
    out, seen = [], set()
    for d in dirs:
        d = Path(d)
        if not d.is_dir() or d.resolve() in seen:
            continue
        seen.add(d.resolve())
        for t in read_sweep(d).trials:
            if t.result is not None and isinstance(t.result.get("timing"), dict) and t.state in TIMED:
                out.append((t.result, t.history()))
    return out


def same_data(rec: dict, cache_key: str | None) -> bool:
    """Whether a trial record was trained on the data whose cache key is `cache_key` (the key its
    result.json records); None, a key that cannot be told, counts as the same."""
    return cache_key is None or rec.get("cache_hash") == cache_key


def names(sweep_dir: Path) -> set | None:
    """The names in the sweep directory, listed once (most trials of a new grid have no directory
    yet); None when it cannot be listed (then every trial's directory is looked at)."""
    try:
        with os.scandir(sweep_dir) as it:
            return {e.name for e in it}
    except (FileNotFoundError, NotADirectoryError):
        return set()
    except OSError:
        return None


def is_final_run(d: Path) -> bool:
    return d.name == FINAL_DIR or any((d / name).exists() for name in FINAL_MARKS)


def is_trial_dir(d: Path) -> bool:
    if not d.is_dir() or d.name.startswith(".") or d.name in NOT_TRIALS or is_final_run(d):
        return False
    return any((d / name).exists() for name in TRIAL_FILES)


def read_sweep(sweep_dir: str | os.PathLike) -> Sweep:
    """Every trial of a sweep, the manifest's in its order then other trial directories by name."""
    sweep_dir = Path(sweep_dir)
    warnings, manifest = [], None
    if (sweep_dir / records.MANIFEST).exists():
        try:
            manifest = records.read_json(sweep_dir / records.MANIFEST)
            if not isinstance(manifest, dict):
                raise records.TornRecord(f"{sweep_dir / records.MANIFEST}: not a JSON object")
        except records.TornRecord as e:
            manifest = None
            warnings.append(f"manifest unreadable, listing trial directories instead: {e}")
    expected = {str(e["trial_id"]): e for e in (manifest or {}).get("trials") or []
                if isinstance(e, dict) and e.get("trial_id")}
    children = sorted(p for p in sweep_dir.iterdir()) if sweep_dir.is_dir() else []
    on_disk = [p.name for p in children if p.name not in expected and is_trial_dir(p)]
    now = time.time()
    trials = [read_run(sweep_dir / tid, expected.get(tid), now=now) for tid in [*expected, *on_disk]]
    finals = sorted((p for p in children if p.is_dir() and is_final_run(p)), key=lambda p: p.name != FINAL_DIR)
    final = read_run(finals[0], record=FINAL_RECORD, now=now) if finals else None
    name = (manifest or {}).get("sweep") or next(
        (t.get("sweep") for t in trials if t.get("sweep")), sweep_dir.name)
    return Sweep(dir=sweep_dir, name=str(name), manifest=manifest, trials=trials, final=final, warnings=warnings)
