"""Where a sweep stands: `python -m gridtune.status <sweep_dir> [--json]`.

The state of each trial comes from its directory (see `gridtune.records` for the layout), never
from the scheduler: SLURM reports COMPLETED for a job whose Python trial raised, so its view is
only shown next to ours, from `squeue`/`sacct` where those exist.

States: ok / diverged / stopped (final; stopped early by successive halving), oom / failed / torn
(need a rerun), paused (at a halving rung, waiting for the next), running (claim.json, no
result), pending (directory but no claim and no result; may hold a checkpoint) and missing
(in the manifest, no directory). Exit code: 0 all final, 1 some failed/oom/torn, 3 some not
finished yet (wins over 1: a poller waits while this is 3), 2 bad arguments.

Only the standard library is imported: this runs on login nodes without torch.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import socket
import sys
import time
from pathlib import Path

from gridtune import claims, records
from gridtune.slurm_view import _annotate, _job_key, _jobs_from_logs, job_ids, slurm_view

STATES = ("ok", "diverged", "stopped", "oom", "failed", "torn", "paused", "running", "pending", "missing")
UNFINISHED = ("paused", "running", "pending", "missing")
NEEDS_RERUN = ("oom", "failed", "torn")
TRIAL_FILES = (records.RESULT, records.CLAIM, records.CHECKPOINT, records.HISTORY)
NOT_TRIALS = {"plots", "__pycache__"}
STALE_AFTER_S = 900          # same default as gridtune.claims: no heartbeat for this long


def load_manifest(sweep_dir: str | Path) -> dict | None:
    """The sweep manifest, or None when there is none (raises records.TornRecord if torn)."""
    path = Path(sweep_dir) / records.MANIFEST
    return records.read_json(path) if path.exists() else None


def collect_states(sweep_dir: str | Path) -> list[dict]:
    """One dict per trial: the manifest's in order, then other trial directories by name.

    Keys: trial_id, state, detail, status, error, diverged_epoch, epochs_done, objective,
    host, pid, claim_age_s, heartbeat_age_s, slurm_job_id, overrides.
    """
    sweep_dir = Path(sweep_dir)
    try:
        manifest = load_manifest(sweep_dir) or {}
    except records.TornRecord:
        manifest = {}
    trials = {str(t["trial_id"]): t for t in manifest.get("trials") or []
              if isinstance(t, dict) and t.get("trial_id")}
    for d in sorted(sweep_dir.iterdir()):
        if (d.name not in trials and d.is_dir() and not d.name.startswith(".")
                and d.name not in NOT_TRIALS and any((d / f).exists() for f in TRIAL_FILES)):
            trials[d.name] = {"trial_id": d.name}
    return [_trial_state(sweep_dir / tid, tid, t.get("overrides"), manifest.get("objective"))
            for tid, t in trials.items()]


def _trial_state(d: Path, trial_id: str, overrides, objective: str | None) -> dict:
    s = {"trial_id": trial_id, "state": None, "detail": "", "status": None, "error": None,
         "diverged_epoch": None, "epochs_done": None, "objective": None, "host": None,
         "pid": None, "claim_age_s": None, "heartbeat_age_s": None, "slurm_job_id": None,
         "overrides": overrides}
    if not d.is_dir():
        return {**s, "state": "missing", "detail": "no trial directory"}
    history = records.read_history(d / records.HISTORY)
    s["epochs_done"] = len(history)
    claim, heartbeat = _read_claim(d / records.CLAIM)
    now = time.time()
    if claim is not None:
        claimed = _timestamp(claim.get("time"))
        s.update(host=claim.get("host"), pid=claim.get("pid"),
                 slurm_job_id=_str_or_none(claim.get("slurm_job_id")),
                 claim_age_s=None if claimed is None else max(0.0, now - claimed),
                 heartbeat_age_s=max(0.0, now - heartbeat))

    result_path = d / records.RESULT
    if result_path.exists():
        try:
            result = records.read_json(result_path)
            if not isinstance(result, dict):
                raise records.TornRecord(f"{result_path}: not a JSON object")
        except (records.TornRecord, OSError) as e:
            detail = str(e).replace(str(result_path), records.RESULT)
            return {**s, "state": "torn", "detail": detail}
        status = result.get("status")
        s.update(status=status, error=result.get("error"),
                 diverged_epoch=result.get("diverged_epoch"),
                 slurm_job_id=s["slurm_job_id"] or _str_or_none(result.get("slurm_job_id")))
        # The runner releases its claim after writing the record. A claim touched after the
        # record means another attempt is under way (the OOM retry, or a rerun of the sweep).
        if (status in records.FINAL_STATUSES or claim is None
                or heartbeat <= result_path.stat().st_mtime):
            return {**s, **_finished(result, status, objective or result.get("objective"))}
        s["detail"] = f"retrying after {status}; "

    if claim is not None:
        where = f"host {s['host']} pid {s['pid']}" if s["host"] else "claim unreadable"
        age = f", claimed {_duration(s['claim_age_s'])} ago" if s["claim_age_s"] is not None else ""
        s["detail"] += f"{where}{age}, {len(history)} epochs done"
        if _local_pid_dead(s["host"], s["pid"]):
            s["detail"] += " (process gone: stale claim)"
        elif s["heartbeat_age_s"] > STALE_AFTER_S:
            s["detail"] += f" (no heartbeat for {_duration(s['heartbeat_age_s'])}: stale claim?)"
        return {**s, "state": "running"}
    if (d / records.CHECKPOINT).exists():
        last = history[-1].get("epoch") if history else None
        s["detail"] = f"interrupted at epoch {last}" if last is not None else \
            "interrupted (checkpoint present)"
    else:
        s["detail"] = (f"{len(history)} epochs logged, no checkpoint" if history
                       else "not started")
    return {**s, "state": "pending"}


def _finished(result: dict, status, objective: str | None) -> dict:
    if status not in records.STATUSES:
        return {"state": "torn", "detail": f"unknown status {status!r} in result.json"}
    if status == "diverged":
        return {"state": status, "detail": f"diverged at epoch {result.get('diverged_epoch')}"}
    if status in ("stopped", "paused"):   # successive halving: at a rung, for good or for now
        detail = result.get("stop_reason") or f"paused after epoch {result.get('epochs_run')}"
        return {"state": status, "detail": detail}
    if status != "ok":
        err = " ".join(str(result.get("error") or "no error message").split())
        return {"state": status, "detail": err[:160]}
    metrics = result.get("metrics") or {}
    value = metrics.get(objective) if isinstance(objective, str) else None
    parts = [f"{objective}={value:.4f}" if isinstance(value, (int, float)) else None,
             f"best epoch {result.get('best_epoch')}/{result.get('epochs_run')}"
             if result.get("epochs_run") is not None else None,
             _duration(result.get("wall_time_s"))]
    return {"state": "ok", "objective": value, "detail": "  ".join(p for p in parts if p)}


def _read_claim(path: Path) -> tuple[dict | None, float]:
    """(claim, last heartbeat): the runner touches claim.json's mtime while it trains."""
    try:
        heartbeat = path.stat().st_mtime
    except OSError:
        return None, 0.0
    try:
        claim = records.read_json(path)
    except (records.TornRecord, OSError):
        claim = None
    return (claim if isinstance(claim, dict) else {}), heartbeat


def _timestamp(value) -> float | None:
    """Seconds since the epoch from a number or an ISO-8601 string (naive means local time)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _local_pid_dead(host, pid) -> bool:
    """True when the claim is from this host and its process no longer exists."""
    if not host or not isinstance(pid, int) or pid <= 0 or \
            str(host).split(".")[0] != socket.gethostname().split(".")[0]:
        return False
    return not claims.pid_alive(pid)


def _str_or_none(v) -> str | None:
    return None if v in (None, "") else str(v)


def _duration(seconds) -> str | None:
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


def counts(states: list[dict]) -> dict[str, int]:
    return {k: n for k in STATES if (n := sum(s["state"] == k for s in states))}


def exit_code(states: list[dict]) -> int:
    if any(s["state"] in UNFINISHED for s in states):
        return 3
    return 1 if any(s["state"] in NEEDS_RERUN for s in states) else 0


def counts_line(states: list[dict]) -> str:
    return f"{len(states)} trials: " + ", ".join(f"{n} {k}" for k, n in counts(states).items())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gridtune-status", description=__doc__.splitlines()[0])
    ap.add_argument("sweep_dir")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    ap.add_argument("--no-slurm", action="store_true", help="do not ask squeue/sacct")
    args = ap.parse_args(argv)
    sweep_dir = Path(args.sweep_dir)
    if not sweep_dir.is_dir():
        print(f"gridtune-status: no such sweep directory: {sweep_dir}", file=sys.stderr)
        return 2
    notes = []
    try:
        manifest = load_manifest(sweep_dir) or {}
    except records.TornRecord as e:
        manifest = {}
        notes.append(f"manifest unreadable, listing trial directories instead: {e}")
    states = collect_states(sweep_dir)
    if not states:
        print(f"gridtune-status: no manifest and no trial directories in {sweep_dir}",
              file=sys.stderr)
        return 2
    if not args.no_slurm:
        _jobs_from_logs(sweep_dir, states)
    ids = set() if args.no_slurm else job_ids(sweep_dir, states)
    slurm = slurm_view(sweep_dir, ids) if ids else {"available": None, "jobs": {}}
    _annotate(states, slurm)
    code = exit_code(states)

    if args.json:
        print(json.dumps({"sweep_dir": str(sweep_dir), "sweep": manifest.get("sweep"),
                          "objective": manifest.get("objective"),
                          "objective_mode": manifest.get("objective_mode"), "notes": notes,
                          "trials": states, "counts": counts(states), "slurm": slurm,
                          "exit_code": code}, indent=2, default=str))
        return code

    print(f"sweep {manifest.get('sweep') or sweep_dir.name} ({sweep_dir})"
          + (f"  objective {manifest['objective']} ({manifest.get('objective_mode')})"
             if manifest.get("objective") else ""))
    for note in notes:
        print(f"note: {note}")
    width = max(len(s["trial_id"]) for s in states)
    for s in states:
        print(f"  {s['trial_id']:<{width}}  {s['state']:<8}  {s['detail']}".rstrip())
    print(counts_line(states))
    if slurm["available"] is False:
        print("SLURM info unavailable (squeue/sacct missing or failing)")
    elif slurm["available"]:
        trials_of: dict[str, list[str]] = {}
        for s in states:
            if s["slurm_job_id"]:
                trials_of.setdefault(s["slurm_job_id"], []).append(s["trial_id"])
        sources = " + ".join(n for n in ("squeue", "sacct") if slurm[n])
        print(f"SLURM ({sources}): {len(slurm['jobs'])} jobs")
        for jid in sorted(slurm["jobs"], key=_job_key):
            j = slurm["jobs"][jid]
            print(f"  {jid:<12} {j['name']:<16} {j['state']:<11} {j['exit_code'] or '-':<6} "
                  f"{j['elapsed']:<10} {' '.join(trials_of.get(jid, [])) or '-'}".rstrip())
    return code


if __name__ == "__main__":
    sys.exit(main())
