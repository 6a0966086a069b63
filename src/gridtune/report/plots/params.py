"""Plots over the swept parameter axes: the objective heatmap (lr x dropout, one panel per l2)
and the objective / over-confidence against the learning rate. Helpers are in `figure`.
"""
from __future__ import annotations

import math
from pathlib import Path

from gridtune.report.leaderboard import Group, Leaderboard
from gridtune.config.knobs import is_lr
from .figure import PlotFile, config_keys, config_label, fmt_num, new_figure, numeric_axes, palette, save, values_of


def _cells(board: Leaderboard, x: str, y: str, panel: str | None):
    """(x, y, panel) -> best ranked group there, and -> state of unranked trials there."""
    best: dict[tuple, Group] = {}
    for g in board.groups:  # already best first, so the first hit per cell is the best one
        best.setdefault((g.params.get(x), g.params.get(y), g.params.get(panel) if panel else None), g)
    failed: dict[tuple, str] = {}
    for t in board.not_ranked:
        v = board.value
        failed.setdefault((v(t, x), v(t, y), v(t, panel) if panel else None), t.state)
    return best, failed


def plot_heatmap(board: Leaderboard, path: Path) -> PlotFile | None:
    """Objective over the first LR axis x the next numeric axis (lr x dropout, lr_conv x lr_head),
    one panel per value of a third numeric axis (l2) when the grid has one."""
    axes = numeric_axes(board)
    if len(axes) < 2 or not is_lr(axes[0]) or not board.groups:
        return None
    x, y = axes[0], axes[1]
    panel = axes[2] if len(axes) > 2 else None
    xs, ys = values_of(board, x), values_of(board, y)
    panels = values_of(board, panel) if panel else [None]
    best, failed = _cells(board, x, y, panel)
    others = [k for k in config_keys(board) if k not in (x, y, panel)]
    import numpy as np
    from matplotlib.patches import Rectangle
    means = [g.objective.mean for g in best.values()]
    lo, hi = min(means), max(means)
    cmap = "viridis" if board.mode == "max" else "viridis_r"
    fig = new_figure(min(2.0 + 1.15 * len(xs), 7.0) * len(panels) + 1.0, 1.4 + 0.75 * len(ys))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    image = None
    for ax, pv in zip(axes, panels):
        grid = np.full((len(ys), len(xs)), np.nan)
        for i, yv in enumerate(ys):
            for j, xv in enumerate(xs):
                g = best.get((xv, yv, pv))
                if g is not None:
                    grid[i, j] = g.objective.mean
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=lo, vmax=hi if hi > lo else lo + 1e-9,
                          aspect="auto", origin="lower")
        for i, yv in enumerate(ys):
            for j, xv in enumerate(xs):
                g = best.get((xv, yv, pv))
                if g is None:  # no ranked trial here: grey hatched, labelled with what happened
                    ax.add_patch(Rectangle((j - .5, i - .5), 1, 1, facecolor="#d9d9d9", hatch="//",
                                           edgecolor="#a0a0a0", linewidth=0))
                    ax.text(j, i, failed.get((xv, yv, pv), "no trial"), ha="center", va="center",
                            fontsize=8, color="#444444")
                    continue
                frac = (g.objective.mean - lo) / (hi - lo) if hi > lo else 1.0
                good = frac if board.mode == "max" else 1 - frac
                text = f"{g.objective.mean:.4f}" + (f"\n±{g.objective.std:.4f}" if g.objective.n > 1 else "")
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="black" if good > 0.6 else "white", fontweight="bold" if g.rank == 1 else None)
                if g.rank == 1:
                    ax.add_patch(Rectangle((j - .5, i - .5), 1, 1, fill=False, edgecolor="red", linewidth=2.5))
        ax.set_xticks(range(len(xs)), [fmt_num(v) for v in xs])
        ax.set_yticks(range(len(ys)), [fmt_num(v) for v in ys])
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_title(f"{panel} = {fmt_num(pv)}" if panel else "", fontsize=10)
    fig.colorbar(image, ax=list(axes), shrink=0.9, label=f"{board.objective} (mean over seeds)")
    fig.suptitle(f"{board.objective} over {x} × {y}" + (f", best over {', '.join(others)}" if others else "")
                 + "  (red box: winner; grey: no ranked trial)", fontsize=11)
    return PlotFile("heatmap", f"{board.objective} heatmap",
                    f"Mean {board.objective} per {x} × {y} cell" + (f", one panel per {panel}" if panel else "")
                    + ". Grey hatched cells had no ranked trial (labelled with why).", save(fig, path))


def plot_vs_lr(board: Leaderboard, path: Path) -> PlotFile | None:
    """Objective vs the varying learning rate (log x), one line per other-param combination;
    beside it, over-confidence (confidence - accuracy) vs the same lr."""
    x = next((k for k in numeric_axes(board) if is_lr(k)), None)
    if x is None or not board.groups:
        return None
    others = [k for k in config_keys(board) if k != x]
    groups = [g for g in board.groups if isinstance(g.params.get(x), (int, float))]
    if not groups:
        return None
    lines: dict[str, list[Group]] = {}
    for g in groups:
        lines.setdefault(config_label(g.params, others), []).append(g)
    has_conf = any(g.mean("val/confidence") is not None for g in groups)
    fig = new_figure(12.0 if has_conf else 7.0, 4.6)
    axes = fig.subplots(1, 2 if has_conf else 1, squeeze=False)[0]
    colour_by = "dropout" if "dropout" in others else (others[0] if others else None)
    many = len(lines) > 8  # too many lines for a legend: scatter coloured by one param instead
    colours = palette(values_of(board, colour_by) if many and colour_by else list(lines))
    for ax, metric in zip(axes, [None, "overconfidence"]):
        _plot_lines(ax, metric, lines, x, many, colours, colour_by)
        _mark_winner_and_unranked(ax, metric, board, groups[0], x)  # groups are best first
        _style_lr_panel(ax, metric, board, groups, x)
    _lr_legend(axes[0], many, colours, colour_by)
    return PlotFile("objective_vs_lr", f"{board.objective} vs {x}",
                    f"Mean {board.objective} per config against {x}; the red star is the winner and crosses "
                    "on the bottom edge are trials that were not ranked."
                    + (" Right: mean confidence minus accuracy, above zero means over-confident." if has_conf else ""),
                    save(fig, path))


def _plot_lines(ax, metric: str | None, lines: dict[str, list[Group]], x: str, many: bool, colours: dict,
                colour_by: str | None) -> None:
    """Draw the objective (metric None) or the over-confidence of each line's groups against `x`: error-bar
    lines, or with `many` lines points coloured by `colour_by`."""
    for label, line in lines.items():
        line = sorted(line, key=lambda g: g.params[x])
        xs = [g.params[x] for g in line]
        if metric is None:
            ys = [g.objective.mean for g in line]
            errs = [g.objective.std or 0.0 for g in line]
        else:
            ys = [_overconf(g) for g in line]
            errs = [0.0] * len(line)
        if many:
            for g, xv, yv in zip(line, xs, ys):
                ax.scatter(xv, yv, s=28, color=colours[g.params.get(colour_by)], alpha=0.8)
        else:
            ax.errorbar(xs, ys, yerr=errs if any(errs) else None, marker="o", ms=4, capsize=3,
                        color=colours[label], label=label, linewidth=1.4)


def _mark_winner_and_unranked(ax, metric: str | None, board: Leaderboard, win: Group, x: str) -> None:
    """A red star at the winner; on the objective panel, crosses on the bottom edge at the unranked trials."""
    ax.scatter([win.params[x]], [win.objective.mean if metric is None else _overconf(win)], marker="*",
               s=220, color="red", zorder=5, label="winner")
    failed = [t for t in board.not_ranked if isinstance(board.value(t, x), (int, float))]
    if failed and metric is None:  # unranked trials sit on the bottom edge so they are not forgotten
        ax.scatter([board.value(t, x) for t in failed], [0.02] * len(failed), marker="x", color="crimson",
                   transform=ax.get_xaxis_transform(), clip_on=False, label="not ranked (failed/diverged/...)")


def _style_lr_panel(ax, metric: str | None, board: Leaderboard, groups: list[Group], x: str) -> None:
    """Log x axis ticked at the grid's `x` values, grid lines, and the panel's y label and title."""
    ax.set_xscale("log")
    xs_all = values_of(board, x)
    ax.set_xticks(xs_all, [fmt_num(v) for v in xs_all])
    ax.minorticks_off()
    ax.set_xlabel(f"{x} (log scale)")
    ax.grid(alpha=0.3)
    if metric is None:
        ax.set_ylabel(board.objective)
        ax.set_title(f"{board.objective} vs {x}" + (" (error bars: std over seeds)" if any(
            g.objective.n > 1 for g in groups) else ""), fontsize=10)
    else:
        ax.axhline(0, color="grey", linewidth=1)
        ax.set_ylabel("val confidence − val accuracy")
        ax.set_title(f"over-confidence vs {x} (> 0: more confident than accurate)", fontsize=10)


def _lr_legend(ax, many: bool, colours: dict, colour_by: str | None) -> None:
    """The first panel's legend: one entry per line, or with `many` lines one per `colour_by` value."""
    if many and colour_by:
        from matplotlib.lines import Line2D
        handles = [Line2D([], [], marker="o", linestyle="", color=c, label=f"{colour_by} {fmt_num(v)}")
                   for v, c in colours.items()]
        # Keep the winner star and the not-ranked crosses explained as well.
        handles += [h for h in ax.get_legend_handles_labels()[0]]
        ax.legend(handles=handles, fontsize=8)
    else:
        ax.legend(fontsize=8, loc="best")


def _overconf(group: Group) -> float:
    conf, acc = group.mean("val/confidence"), group.mean("val/acc")
    return conf - acc if conf is not None and acc is not None else math.nan


