"""PNG plots of a reduced sweep, and the entry point that decides which ones the sweep needs.

`make_plots(board, out_dir)` draws only plots whose axes vary in the sweep: the learning-curve
grid and reliability diagrams always (when there is data), the objective heatmap when two
lr/dropout-like params vary, objective-vs-lr when a learning rate varies, and the per-value
overlay when a categorical param (optim, sched, ...) varies, and the halving ladder when the sweep
ran one (`plots_halving.py`). This module owns the shared helpers
and the entry point; the figures over parameter axes live in `plots_params.py`, the per-epoch and
calibration figures in `plots_curves.py`. matplotlib is imported inside functions only and always renders with Agg;
on Linux the figures are drawn in a few forked processes at once (each takes 0.2-0.8 s).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from gridtune.leaderboard import Leaderboard

LR_PARAMS = ("lr", "lr_head", "lr_conv")
DPI = 100


@dataclass
class PlotFile:
    name: str
    title: str
    caption: str
    path: Path


def new_figure(width: float, height: float, constrained: bool = True):
    """An Agg figure outside pyplot (no global state). Constrained layout is tidy but costs about
    a second on grids of twenty-odd axes, so the big grids lay themselves out by hand."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained" if constrained else None)
    FigureCanvasAgg(fig)
    return fig


def save(fig, path: Path) -> Path:
    import io

    from gridtune.records import atomic_write_bytes
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write_bytes(path, buf.getvalue())
    return path


def fmt_num(value) -> str:
    """Compact numbers for titles and ticks: 1e-3, 5e-4, 0.3, adam."""
    if isinstance(value, float) and value != 0 and abs(value) < 0.01:
        mantissa, exp = f"{value:.0e}".split("e")
        if float(mantissa) * 10 ** int(exp) == value:
            return f"{mantissa}e{int(exp)}"
        return f"{value:.1e}".replace("e-0", "e-")
    return f"{value:g}" if isinstance(value, float) else str(value)


def config_label(params: dict, keys: list[str], sep: str = " · ") -> str:
    # A param that does not apply to this config (momentum under adam) is null: leave it out.
    return sep.join(f"{k} {fmt_num(params[k])}" for k in keys if params.get(k) is not None) or "single config"


def config_keys(board: Leaderboard) -> list[str]:
    return [k for k in board.varying if k != "seed"]


def is_numeric(board: Leaderboard, key: str) -> bool:
    values = [t.params[key] for t in board.records.trials if t.params.get(key) is not None]
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def values_of(board: Leaderboard, key: str) -> list:
    values = {t.params.get(key) for t in board.records.trials if t.params.get(key) is not None}
    return sorted(values, key=lambda v: (isinstance(v, str), v))


def palette(keys: list) -> dict:
    from matplotlib import colormaps
    cmap = colormaps["tab10" if len(keys) <= 10 else "viridis"]
    n = max(len(keys) - 1, 1)
    return {k: cmap(i if len(keys) <= 10 else i / n) for i, k in enumerate(keys)}


# Set just before forking the plot workers, which inherit it instead of unpickling the board.
_BOARD: Leaderboard | None = None


def _jobs() -> dict:
    from gridtune import plots_curves, plots_halving, plots_params
    # Slowest first, so that it starts at once when plots are drawn in parallel.
    return {"learning_curves.png": plots_curves.plot_curves, "reliability.png": plots_curves.plot_reliability,
            "heatmap.png": plots_params.plot_heatmap, "objective_vs_lr.png": plots_params.plot_vs_lr,
            "by_category.png": plots_curves.plot_by_category, "halving.png": plots_halving.plot_ladder}


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
