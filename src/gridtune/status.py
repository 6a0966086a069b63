"""Where a sweep stands: `python -m gridtune.status <sweep_dir> [--json | --watch [--interval S]]`.

The state of each trial comes from its directory (see `gridtune.sweepdir.records` for the layout), never
from the scheduler: SLURM reports COMPLETED for a job whose Python trial raised, so its view is
only shown next to ours, from `squeue`/`sacct` where those exist.

States are `gridtune.sweepdir.ledger`'s (the reducer uses the same): ok / stopped / diverged (done;
stopped: early, by successive halving), oom / failed / torn (need a rerun), paused (at a halving
rung, waiting for the next), running, interrupted and pending (not finished). The final run, when
there is one, is shown on its own line, never as a trial. Exit code: 0 all final, 1 some
failed/oom/torn, 3 some not finished yet (wins over 1: a poller waits while this is 3), 2 bad
arguments.

`--watch` redraws a block every `--interval` seconds (default 5) until no trial is unfinished, then
exits as a plain call would (0 or 1): a progress bar over trials x epochs, the counts, the current
best and the trials under way. On a terminal the block is redrawn in place (ANSI); otherwise (a log
file, a pipe) each refresh prints a new block, with no escape codes. It reads the directory only.

Only the standard library is imported: this runs on login nodes without torch.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from gridtune.config import knobs
from gridtune.sweepdir import ledger, rundir
from gridtune.slurm.view import annotate, job_ids, job_key, jobs_from_logs, slurm_view
from gridtune.sweepdir.rundir import DONE, NEEDS_RERUN, STALE_AFTER_S, UNFINISHED, fmt_duration

__all__ = ["STALE_AFTER_S", "collect_states", "counts", "counts_line", "exit_code", "final_state", "main",
           "trial_state", "watch"]


def _ok_detail(t: rundir.Trial, objective: str | None) -> tuple[float | None, str]:
    objective = objective or t.get("objective")
    value = t.metric(objective) if isinstance(objective, str) else None
    parts = [f"{objective}={value:.4f}" if value is not None else None,
             f"best epoch {t.get('best_epoch')}/{t.get('epochs_run')}" if t.get("epochs_run") is not None else None,
             fmt_duration(t.get("wall_time_s")), how_trained(t.get("trained"))]
    return value, "  ".join(p for p in parts if p)


def how_trained(trained) -> str | None:
    """'fused x3 on cuda:0, bfloat16' or 'alone on cpu, float32', from result.json's `trained` block
    (None for a record without one)."""
    if not isinstance(trained, dict) or "device" not in trained:
        return None
    way = f"fused x{trained.get('group_size')}" if trained.get("fused") else "alone"
    return f"{way} on {trained['device']}, {trained.get('precision', '?')}"


def trial_state(t: rundir.Trial, objective: str | None = None) -> dict:
    """One trial as status shows it (and prints with --json)."""
    claim = t.claim or {}
    s = {"trial_id": t.trial_id, "state": t.state, "detail": t.reason or "", "status": t.get("status"),
         "error": t.get("error"), "diverged_epoch": t.get("diverged_epoch"), "stop_reason": t.get("stop_reason"),
         "epochs_done": t.epochs_done if t.dir.is_dir() else None, "objective": None,
         "host": claim.get("host"), "pid": claim.get("pid"), "claim_age_s": t.claim_age_s,
         "heartbeat_age_s": t.heartbeat_age_s, "slurm_job_id": t.slurm_job_id, "overrides": t.overrides,
         "on_disk": t.dir.is_dir(), "trained": t.get("trained")}
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


def final_state(final: rundir.Trial | None) -> dict | None:
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
    sweep = ledger.read_sweep(sweep_dir)
    objective = (sweep.manifest or {}).get("objective")
    return [trial_state(t, objective) for t in sweep.trials]


def counts(states: list[dict]) -> dict[str, int]:
    return rundir.counts(s["state"] for s in states)


def exit_code(states: list[dict]) -> int:
    if any(s["state"] in UNFINISHED for s in states):
        return 3
    return 1 if any(s["state"] in NEEDS_RERUN for s in states) else 0


def counts_line(states: list[dict]) -> str:
    return rundir.counts_line(s["state"] for s in states)


BAR_WIDTH = 30
WATCH_ROWS = 20        # trials under way listed per block; the rest are counted


def planned_epochs(sweep: ledger.Sweep) -> dict[str, int | None]:
    """Epochs each trial is to train: the manifest's `epochs`, else its `train.epochs` parameter (set
    when the grid or the command line sets it); a finished trial's plan is what it ran."""
    entries = {e.get("trial_id"): e for e in (sweep.manifest or {}).get("trials") or [] if isinstance(e, dict)}
    plans: dict[str, int | None] = {}
    for t in sweep.trials:
        plan = entries.get(t.trial_id, {}).get("epochs", t.params.get("train.epochs"))
        plans[t.trial_id] = t.epochs_done if t.state in DONE + NEEDS_RERUN else (
            plan if isinstance(plan, int) and not isinstance(plan, bool) else None)
    return plans


def progress_line(states: list[dict], plans: dict[str, int | None]) -> str:
    """The bar: over trials x epochs when every trial's plan is known, else over trials."""
    final = sum(s["state"] not in UNFINISHED for s in states)
    ran = {s["trial_id"]: s["epochs_done"] or 0 for s in states}
    done_epochs = sum(min(n, plans[t]) if plans[t] is not None else n for t, n in ran.items())
    if all(plan is not None for plan in plans.values()):
        done, total = done_epochs, sum(plans.values()) or 1
        tail = f"{done}/{total} epochs, {final}/{len(states)} trials final"
    else:
        done, total = final, len(states)
        tail = f"{final}/{total} trials final, {done_epochs} epochs done (planned epochs unknown)"
    filled = BAR_WIDTH * done // total
    return f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {100 * done // total:3d}%  {tail}"


def best_line(states: list[dict], mode: str | None) -> str:
    """The best finished trial so far, with its values of the grid's axes (overrides that vary)."""
    scored = [s for s in states if s["objective"] is not None]
    if not scored:
        return "best: none yet"
    best = (min if mode == "min" else max)(scored, key=lambda s: s["objective"])
    values: dict[str | None, set] = {}
    for s in states:        # overrides read as the sweep read them (gridtune.config.knobs, Hydra's grammar)
        for o in s["overrides"]:
            values.setdefault(knobs.key_of(str(o)), set()).add(str(o))
    axes = [o for o in best["overrides"] if len(values[knobs.key_of(str(o))]) > 1]
    return f"best: {best['trial_id']}  {best['detail']}" + (f"  ({' '.join(axes)})" if axes else "")


def watch_block(sweep: ledger.Sweep, states: list[dict]) -> str:
    """One refresh: header, bar, counts, best, then the trials under way or needing a rerun."""
    manifest = sweep.manifest or {}
    plans = planned_epochs(sweep)
    lines = [f"sweep {sweep.name} ({sweep.dir})  {time.strftime('%H:%M:%S')}",
             progress_line(states, plans), counts_line(states),
             best_line(states, manifest.get("objective_mode"))]
    busy = [s for s in states if s["state"] not in ("pending", *DONE)]
    width = max((len(s["trial_id"]) for s in busy), default=0)
    for s in busy[:WATCH_ROWS]:
        plan = plans[s["trial_id"]]
        epochs = f"epoch {s['epochs_done'] or 0}/{plan if plan is not None else '?'}"
        lines.append(f"  {s['trial_id']:<{width}}  {s['state']:<11}  {epochs:<11}  {s['detail']}".rstrip())
    if len(busy) > WATCH_ROWS:
        lines.append(f"  ... and {len(busy) - WATCH_ROWS} more")
    return "\n".join(lines) + "\n"


def watch(sweep_dir: Path, interval: float, out=None) -> int:
    """Refresh until every trial is final; the exit code of a plain status call then."""
    out = out or sys.stdout
    tty = out.isatty()
    while True:
        sweep = ledger.read_sweep(sweep_dir)
        objective = (sweep.manifest or {}).get("objective")
        states = [trial_state(t, objective) for t in sweep.trials]
        block = watch_block(sweep, states) if states else f"no trials in {sweep_dir} yet\n"
        out.write("\x1b[H\x1b[2J" + block if tty else block + "\n")
        out.flush()
        if states and not any(s["state"] in UNFINISHED for s in states):
            return exit_code(states)
        time.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gridtune-status", description=__doc__.splitlines()[0])
    ap.add_argument("sweep_dir")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    ap.add_argument("--no-slurm", action="store_true", help="do not ask squeue/sacct")
    ap.add_argument("--watch", action="store_true", help="refresh until every trial is final")
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between refreshes (--watch)")
    args = ap.parse_args(argv)
    sweep_dir = Path(args.sweep_dir)
    if not sweep_dir.is_dir():
        print(f"gridtune-status: no such sweep directory: {sweep_dir}", file=sys.stderr)
        return 2
    if args.watch:
        if args.json or not args.interval > 0:
            why = "--watch prints blocks; it does not combine with --json" if args.json else \
                f"--interval={args.interval}: must be > 0 seconds"
            print(f"gridtune-status: {why}", file=sys.stderr)
            return 2
        try:
            return watch(sweep_dir, args.interval)
        except KeyboardInterrupt:
            return 130
    sweep = ledger.read_sweep(sweep_dir)
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
    print_slurm(states, slurm)
    return code


def print_slurm(states: list[dict], slurm: dict) -> None:
    """SLURM's jobs of the sweep, each with the trials it ran, or why there is no such view."""
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


if __name__ == "__main__":
    sys.exit(main())
