"""Which plots a reduced sweep gets, drawn in a few forked processes at once: `make_plots`.

`make_plots(board, out_dir)` draws only plots whose axes vary in the sweep: the learning-curve
grid and reliability diagrams always (when there is data), the objective heatmap when two numeric
axes vary one of which is a learning rate, objective-vs-lr when a learning rate varies, and the
per-value overlay when a categorical axis (optim, sched, ...) varies. The figures over parameter
axes are in `params`, the per-epoch and calibration figures in `curves`, the helpers in `figure`.
On Linux the figures are drawn in a few forked processes at once (each takes 0.2-0.8 s).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .figure import PlotFile, new_figure

if TYPE_CHECKING:
    from gridtune.report.leaderboard import Leaderboard

# Set just before forking the plot workers, which inherit it instead of unpickling the board.
_BOARD: Leaderboard | None = None


def _jobs() -> dict:
    from . import curves, halving, params
    # Slowest first, so that it starts at once when plots are drawn in parallel.
    return {"learning_curves.png": curves.plot_curves, "reliability.png": curves.plot_reliability,
            "heatmap.png": params.plot_heatmap, "objective_vs_lr.png": params.plot_vs_lr,
            "by_category.png": curves.plot_by_category, "halving.png": halving.plot_ladder}


def _draw(job: tuple[str, Path]):
    name, path = job
    try:
        return _jobs()[name](_BOARD, path), None
    except Exception as e:  # noqa: BLE001 - one bad plot must not cost the leaderboard
        return None, f"warning: plot {name} failed: {type(e).__name__}: {e}"


def _workers(n_jobs: int) -> int:
    """Worker processes for drawing: matplotlib is single-threaded and each figure takes 0.2-0.8 s.
    Only forked workers are cheap (they inherit the imported matplotlib), and fork is only safe on
    Linux from a single-threaded process; elsewhere the plots are drawn one after the other."""
    import threading
    if sys.platform != "linux" or threading.active_count() > 1:
        return 1
    return max(1, min(n_jobs, os.cpu_count() or 1, 3))


def make_plots(board: Leaderboard, out_dir, workers: int | None = None) -> list[PlotFile]:
    """Draw every plot the sweep supports into out_dir; a plot that fails is skipped with a warning."""
    global _BOARD
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(name, out_dir / name) for name in _jobs()]
    workers = _workers(len(jobs)) if workers is None else workers
    new_figure(1, 1)  # import matplotlib and load its font cache once, before any fork
    _BOARD = board
    results = None
    try:
        if workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor
            try:
                with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                    results = list(pool.map(_draw, jobs))
            except Exception as e:  # noqa: BLE001 - a worker that died: draw them here instead
                print(f"warning: parallel plotting failed ({type(e).__name__}: {e}); drawing serially",
                      file=sys.stderr)
        if results is None:
            results = [_draw(job) for job in jobs]
    finally:
        _BOARD = None
    made = []
    for (name, path), (result, warning) in zip(jobs, results):
        if warning:
            print(warning, file=sys.stderr)
        elif result is not None:
            made.append(result)
        elif path.exists():  # drawn by an earlier reduce but not wanted now: keep the folder honest
            path.unlink()
    # The report shows them in reading order: curves, heatmap, lr, reliability, categories.
    order = ["learning_curves", "halving", "heatmap", "objective_vs_lr", "reliability", "by_category"]
    return sorted(made, key=lambda f: order.index(f.name) if f.name in order else len(order))
