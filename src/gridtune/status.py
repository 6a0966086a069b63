"""Where a sweep stands: `python -m gridtune.status <sweep_dir> [--json]`.

The state of each trial comes from its directory (see `gridtune.records` for the layout), never
from the scheduler: SLURM reports COMPLETED for a job whose Python trial raised, so its view is
only shown next to ours, from `squeue`/`sacct` where those exist.

States are `gridtune.sweepdir`'s (the reducer uses the same): ok / stopped / diverged (done;
stopped: early, by successive halving), oom / failed / torn (need a rerun), paused (at a halving
rung, waiting for the next), running, interrupted and pending (not finished). The final run, when
there is one, is shown on its own line, never as a trial. Exit code: 0 all final, 1 some
failed/oom/torn, 3 some not finished yet (wins over 1: a poller waits while this is 3), 2 bad
arguments.

Only the standard library is imported: this runs on login nodes without torch.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gridtune import sweepdir
from gridtune.slurm_view import annotate, job_ids, job_key, jobs_from_logs, slurm_view
from gridtune.sweepdir import NEEDS_RERUN, STALE_AFTER_S, UNFINISHED, fmt_duration

__all__ = ["STALE_AFTER_S", "collect_states", "counts", "counts_line", "exit_code", "final_state", "main", "trial_state"]


def _ok_detail(t: sweepdir.Trial, objective: str | None) -> tuple[float | None, str]:
    objective = objective or t.get("objective")
    value = t.metric(objective) if isinstance(objective, str) else None
    parts = [f"{objective}={value:.4f}" if value is not None else None,
             f"best epoch {t.get('best_epoch')}/{t.get('epochs_run')}" if t.get("epochs_run") is not None else None,
             fmt_duration(t.get("wall_time_s"))]
    return value, "  ".join(p for p in parts if p)


def trial_state(t: sweepdir.Trial, objective: str | None = None) -> dict:
    """One trial as status shows it (and prints with --json)."""
    claim = t.claim or {}
    s = {"trial_id": t.trial_id, "state": t.state, "detail": t.reason or "", "status": t.get("status"),
         "error": t.get("error"), "diverged_epoch": t.get("diverged_epoch"), "stop_reason": t.get("stop_reason"),
         "epochs_done": t.epochs_done if t.dir.is_dir() else None, "objective": None,
         "host": claim.get("host"), "pid": claim.get("pid"), "claim_age_s": t.claim_age_s,
         "heartbeat_age_s": t.heartbeat_age_s, "slurm_job_id": t.slurm_job_id, "overrides": t.overrides,
         "on_disk": t.dir.is_dir()}
    if t.state == "ok":
        s["objective"], s["detail"] = _ok_detail(t, objective)
    elif t.state in NEEDS_RERUN:
        s["detail"] = _clip(s["detail"])
    return s


def _clip(text: str, limit: int = 160) -> str:
    """At most `limit` characters, cut in the middle: an error's cause ends the line, after a path."""
    if len(text) <= limit:
        return text
    head = limit // 3
    return f"{text[:head]}…{text[len(text) - (limit - head - 1):]}"


def final_state(final: sweepdir.Trial | None) -> dict | None:
    """The final run, on its own line: its state and, once done, its test figures."""
    if final is None:
        return None
    detail = final.reason or ""
    if final.state == "ok":
        test = final.get("test") or {}
        parts = [f"test {k}={test[k]:.4f}" for k in ("micro_f1", "macro_f1", "acc") if isinstance(test.get(k), float)]
        parts.append(f"{final.get('epochs_run')} epochs, {fmt_duration(final.get('wall_time_s'))}")
        detail = "  ".join(parts)
    return {"dir": str(final.dir), "state": final.state, "detail": detail, "winner": final.get("trial_id")}


def collect_states(sweep_dir: str | Path) -> list[dict]:
    """One dict per trial: the manifest's in order, then other trial directories by name."""
    sweep = sweepdir.read_sweep(sweep_dir)
    objective = (sweep.manifest or {}).get("objective")
    return [trial_state(t, objective) for t in sweep.trials]


def counts(states: list[dict]) -> dict[str, int]:
    return sweepdir.counts(s["state"] for s in states)


def exit_code(states: list[dict]) -> int:
    if any(s["state"] in UNFINISHED for s in states):
        return 3
    return 1 if any(s["state"] in NEEDS_RERUN for s in states) else 0


def counts_line(states: list[dict]) -> str:
    return sweepdir.counts_line(s["state"] for s in states)


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
    sweep = sweepdir.read_sweep(sweep_dir)
    manifest, notes = sweep.manifest or {}, sweep.warnings
    states = [trial_state(t, manifest.get("objective")) for t in sweep.trials]
    final = final_state(sweep.final)
    if not states:
        print(f"gridtune-status: no manifest and no trial directories in {sweep_dir}",
              file=sys.stderr)
        return 2
    if not args.no_slurm:
        jobs_from_logs(sweep_dir, states)
    ids = set() if args.no_slurm else job_ids(sweep_dir, states)
    slurm = slurm_view(sweep_dir, ids) if ids else {"available": None, "jobs": {}}
    annotate(states, slurm)
    code = exit_code(states)

    if args.json:
        print(json.dumps({"sweep_dir": str(sweep_dir), "sweep": manifest.get("sweep"),
                          "objective": manifest.get("objective"),
                          "objective_mode": manifest.get("objective_mode"), "notes": notes,
                          "trials": states, "counts": counts(states), "final": final, "slurm": slurm,
                          "exit_code": code}, indent=2, default=str))
        return code

    print(f"sweep {manifest.get('sweep') or sweep_dir.name} ({sweep_dir})"
          + (f"  objective {manifest['objective']} ({manifest.get('objective_mode')})"
             if manifest.get("objective") else ""))
    for note in notes:
        print(f"note: {note}")
    width = max(len(s["trial_id"]) for s in states)
    for s in states:
        print(f"  {s['trial_id']:<{width}}  {s['state']:<11}  {s['detail']}".rstrip())
    print(counts_line(states))
    if final:
        print(f"final run ({final['dir']}): {final['state']}  {final['detail']}".rstrip())
    if slurm["available"] is False:
        print("SLURM info unavailable (squeue/sacct missing or failing)")
    elif slurm["available"]:
        trials_of: dict[str, list[str]] = {}
        for s in states:
            if s["slurm_job_id"]:
                trials_of.setdefault(s["slurm_job_id"], []).append(s["trial_id"])
        sources = " + ".join(n for n in ("squeue", "sacct") if slurm[n])
        print(f"SLURM ({sources}): {len(slurm['jobs'])} jobs")
        for jid in sorted(slurm["jobs"], key=job_key):
            j = slurm["jobs"][jid]
            print(f"  {jid:<12} {j['name']:<16} {j['state']:<11} {j['exit_code'] or '-':<6} "
                  f"{j['elapsed']:<10} {' '.join(trials_of.get(jid, [])) or '-'}".rstrip())
    return code


if __name__ == "__main__":
    sys.exit(main())
