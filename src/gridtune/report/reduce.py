"""The reducer: read a sweep directory and write its leaderboard, report and best.yaml.

    python -m gridtune.reduce <sweep_dir> [--objective val/acc] [--mode max|min] [--top N]
                              [--no-plots] [--tracking none|wandb]

Outputs, written atomically into the sweep directory: leaderboard.csv, leaderboard.md, best.yaml
(what the final run composes its config from), report.html and plots/*.png; the table also goes
to stdout. The sweep is read by `gridtune.sweepdir.ledger`, the same account `gridtune.status` shows.
This module and everything it imports stay free of torch, so reducing a sweep on a login node is
instant; matplotlib and the tracker are imported only when needed.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from gridtune.sweepdir.records import atomic_write_text
from . import render
from .best import best_record, dump_yaml, resolve_objective
from .leaderboard import Leaderboard, build
from gridtune.sweepdir.ledger import read_sweep
from gridtune.sweepdir.rundir import counts_line

EXIT_OK, EXIT_NOTHING_RANKED, EXIT_BAD_INPUT = 0, 1, 2


def log_tracking(board: Leaderboard) -> None:
    """Log the leaderboard as a table to wandb through gridtune.sweepdir.tracking; never fails the reduce."""
    try:
        from gridtune.sweepdir.tracking import open_tracker
    except Exception as e:  # noqa: BLE001 - any import problem means "no tracking", not a crash
        print(f"warning: --tracking wandb skipped: cannot import gridtune.sweepdir.tracking ({e})", file=sys.stderr)
        return
    records = render.csv_records(board)
    # Reuse the trials' own tracking group (project, entity, mode) so the table lands beside their runs.
    trial_cfg = next((t.get("config") for t in board.records.trials if isinstance(t.get("config"), dict)), {})
    cfg = dict(trial_cfg.get("tracking") or {}) if isinstance(trial_cfg.get("tracking"), dict) else {}
    cfg["name"] = "wandb"
    try:
        with open_tracker(cfg, run_dir=board.sweep_dir, name=f"{board.records.name}-reduce",
                          group=board.records.name, job_type="reduce",
                          config={"objective": board.objective, "objective_mode": board.mode}) as tracker:
            if records:
                columns = list(records[0])
                tracker.log_table("leaderboard", columns, [[r[c] for c in columns] for r in records])
            tracker.summary({"best/trial_id": board.winner.representative.trial_id if board.winner else None,
                             "best/value": board.winner.objective.mean if board.winner else None,
                             "best/separable": board.separable, "best/note": board.note,
                             **{f"trials/{k}": n for k, n in board.counts.items()}})
    except Exception as e:  # noqa: BLE001 - an offline tracker must not lose the leaderboard
        print(f"warning: --tracking wandb failed: {e}", file=sys.stderr)


def reduce_sweep(sweep_dir, *, objective: str | None = None, mode: str | None = None,
                 top: int | None = 20, plots: bool = True, tracking: str = "none",
                 out=None) -> Leaderboard:
    """Collect, rank and write every output. Raises FileNotFoundError / LookupError on bad input."""
    out = out or sys.stdout
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep directory not found: {sweep_dir}")
    records = read_sweep(sweep_dir)
    if not records.trials:
        raise LookupError(f"no trials in {sweep_dir} (no manifest entries and no trial directories)")
    objective, mode = resolve_objective(records, objective, mode)
    board = build(records, objective, mode)

    atomic_write_text(sweep_dir / "leaderboard.csv", render.csv_text(board))
    atomic_write_text(sweep_dir / "leaderboard.md", render.markdown(board, top))
    best = best_record(board)
    if best is not None:
        atomic_write_text(sweep_dir / "best.yaml", dump_yaml(best))
    figures = []
    if plots:
        from gridtune.report.plots.draw import make_plots  # lazy: matplotlib costs ~0.5 s to import
        figures = make_plots(board, sweep_dir / "plots")
    from .html import write_report
    write_report(board, sweep_dir / "report.html", figures, best, top)
    if tracking == "wandb":
        log_tracking(board)

    for warning in records.warnings:
        print(f"warning: {warning}", file=out)
    print(f"sweep {records.name}: {counts_line(records.trials)}; objective {objective} ({mode})\n", file=out)
    print(render.terminal(board, top) if board.groups else "No trial finished ok: nothing ranked.", file=out)
    if board.winner:
        print(f"\nwinner: {board.winner.representative.trial_id}  "
              f"overrides: {' '.join(map(str, board.winner.overrides()))}\n{board.note}", file=out)
    if board.not_ranked:
        print(f"\nnot ranked ({len(board.not_ranked)}):", file=out)
        for trial_id, state, _, reason in render.not_ranked_rows(board):
            print(f"  {trial_id:<12} {state:<11} {reason}", file=out)
    written = ["leaderboard.csv", "leaderboard.md", "report.html"] + (["best.yaml"] if best else [])
    written += [str(Path(f.path).relative_to(sweep_dir)) for f in figures]
    print(f"\nwrote {', '.join(written)} in {sweep_dir}", file=out)
    return board


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gridtune.reduce",
                                     description="Rank a sweep's trials and write its leaderboard, report and best.yaml.")
    parser.add_argument("sweep_dir", help="directory holding gridtune_sweep.json and one folder per trial")
    parser.add_argument("--objective", help="metric to rank by (default: the sweep's, else val/acc)")
    parser.add_argument("--mode", choices=("max", "min"), help="max or min (default: the sweep's, "
                        "else min for loss-like metrics and max otherwise)")
    parser.add_argument("--top", type=int, default=20, help="rows shown in the terminal, md and html "
                        "tables (default 20, 0 for all); leaderboard.csv always has every config")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots (fast)")
    parser.add_argument("--tracking", choices=("none", "wandb"), default="none",
                        help="also log the leaderboard as a wandb table (default none)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        board = reduce_sweep(args.sweep_dir, objective=args.objective, mode=args.mode,
                             top=args.top or None, plots=not args.no_plots, tracking=args.tracking)
    except (FileNotFoundError, LookupError) as e:
        print(f"gridtune.reduce: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"reduced in {time.perf_counter() - started:.2f} s")
    return EXIT_OK if board.groups else EXIT_NOTHING_RANKED


if __name__ == "__main__":
    sys.exit(main())
