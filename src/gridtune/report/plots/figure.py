"""The plotting helpers every figure shares: Agg figures outside pyplot, atomic PNG saves, compact
number labels, colour palettes, and the sweep's plottable axes.

matplotlib is imported inside the functions only, so importing this module costs nothing; the
sweep's figures (`curves`, `params`) and the LR finder's (`lr_find`) all draw through here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gridtune.config.knobs import is_lr

if TYPE_CHECKING:
    from gridtune.report.leaderboard import Leaderboard

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

    from gridtune.sweepdir.records import atomic_write_bytes
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
    values = [v for t in board.records.trials if (v := board.value(t, key)) is not None]
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def values_of(board: Leaderboard, key: str) -> list:
    values = {v for t in board.records.trials if (v := board.value(t, key)) is not None}
    return sorted(values, key=lambda v: (isinstance(v, str), v))


def numeric_axes(board: Leaderboard) -> list[str]:
    """The sweep's varying numeric knobs (seed aside), learning rates first, then in grid order."""
    keys = [k for k in config_keys(board) if is_numeric(board, k)]
    return [k for k in keys if is_lr(k)] + [k for k in keys if not is_lr(k)]


def palette(keys: list) -> dict:
    from matplotlib import colormaps
    cmap = colormaps["tab10" if len(keys) <= 10 else "viridis"]
    n = max(len(keys) - 1, 1)
    return {k: cmap(i if len(keys) <= 10 else i / n) for i, k in enumerate(keys)}
