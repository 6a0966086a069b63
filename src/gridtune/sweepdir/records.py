"""On-disk records of a sweep: atomic writes, tolerant reads, and the trial-directory layout.

Everything a sweep leaves behind goes through this module, so that every file is either the old
version or the new one, never half-written (temp file in the same directory, fsync, rename).
It imports only the standard library: the reducer and `gridtune.status` use it without torch.

Layout of a sweep directory::

    <sweep_dir>/
      gridtune_sweep.json        manifest written by the driver: every expected trial and its overrides
      <trial_id>/
        .hydra/                  Hydra's config.yaml / overrides.yaml
        result.json              the trial record (see RESULT_KEYS); written once, at the end
      final/                     the final run (final.json, model.pt, ...): never a trial
        history.jsonl            one line per completed epoch
        checkpoint.pt            last completed epoch (model, optimizer, scaler, RNG, history)
        best.pt                  state_dict of the best epoch (loads with weights_only=True)
        claim.json               who runs this trial now (host, pid, time, SLURM job id)
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterable

RESULT = "result.json"
HISTORY = "history.jsonl"
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
CLAIM = "claim.json"
MANIFEST = "gridtune_sweep.json"

# Statuses a trial record can carry. `diverged` is final (rerunning gives the same NaN);
# `failed` and `oom` are retried when the sweep is run again. `paused` (stopped at a halving rung's
# epoch by train.stop_after_epoch) and `stopped` (stopped early by successive halving, with a
# `stop_reason`) are not final either: the halving ladder (halving.json) keeps a stopped trial
# stopped, and a sweep of the same grid without halving resumes both to train.epochs.
# `gridtune.sweepdir.ledger` turns them, with claims and checkpoints, into states.
STATUSES = ("ok", "diverged", "oom", "failed", "paused", "stopped")
FINAL_STATUSES = ("ok", "diverged")

# Keys every result.json has (values may be null where they do not apply). `trained` says how the
# trial trained: {fused, group_size, trials_per_job, device, precision} (gridtune.train.engine.TrialRun.trained);
# `timing` what its epochs' `time_s` (history.jsonl) leave out: setup seconds, a cold process, the first
# epoch of this run, clips and threads (gridtune.train.engine.TrialRun.timing; read by gridtune.checks.budget).
RESULT_KEYS = (
    "schema", "trial_id", "sweep", "status", "error", "diverged_epoch", "stop_reason",
    "params", "overrides", "objective", "objective_mode", "metrics", "per_class_acc",
    "calibration", "best_epoch", "epochs_run", "stopped_early", "wall_time_s",
    "train_samples_per_s", "git_sha", "git_dirty", "cache_hash", "n_skipped_files",
    "skipped_files", "device", "amp", "trained", "timing", "host", "started_at", "finished_at", "config",
)


_UMASK = os.umask(0)
os.umask(_UMASK)


class TornRecord(ValueError):
    """A record file exists but cannot be parsed (a writer was killed, or the disk lied)."""


def _clean(obj: Any) -> Any:
    """Make floats JSON-safe: NaN/inf become null instead of invalid JSON tokens."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)          # mkstemp makes 0600; results are for the whole group
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_clean(obj), indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON record; raise TornRecord (naming the file) when it exists but is not valid JSON."""
    path = Path(path)
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise TornRecord(f"{path}: unparseable JSON ({e.msg} at line {e.lineno})") from None


def write_history(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Rewrite history.jsonl atomically with all rows so far (it is small: one line per epoch)."""
    atomic_write_text(path, "".join(json.dumps(_clean(r), sort_keys=True) + "\n" for r in rows))


def read_history(path: str | os.PathLike) -> list[dict]:
    """Read history.jsonl; a torn last line (killed writer on a non-atomic FS) is dropped."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def git_info(start: str | os.PathLike | None = None) -> tuple[str | None, bool | None]:
    """(sha, dirty) of the checkout holding this package, or (None, None) outside git."""
    cwd = Path(start) if start else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=10).stdout.strip() or None
        if sha is None:
            return None, None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=cwd, capture_output=True, text=True, timeout=10).stdout.strip())
        return sha, dirty
    except (OSError, subprocess.SubprocessError):
        return None, None
