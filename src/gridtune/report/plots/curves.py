"""Per-epoch and calibration plots: the learning-curve grid, the per-value overlay and the
reliability diagrams. Shared helpers are in `figure`, the entry point in `draw`.
"""
from __future__ import annotations

import math
from pathlib import Path

from gridtune.sweepdir.rundir import Trial
from gridtune.report.leaderboard import Group, Leaderboard
from .figure import PlotFile, config_keys, config_label, is_numeric, new_figure, save

MAX_RANKED_PANELS = 12
MAX_DIVERGED_PANELS = 4
TRAIN, VAL, ACC = "#1f77b4", "#ff7f0e", "#2ca02c"


def _series(history: list[dict], key: str) -> tuple[list, list]:
    xs, ys = [], []
    for row in history:
        value = row.get(key)
        if isinstance(row.get("epoch"), int) and isinstance(value, (int, float)) and math.isfinite(value):
            xs.append(row["epoch"])
            ys.append(value)
    return xs, ys


def _mean_series(trials: list[Trial], key: str) -> tuple[list, list, list, list]:
    """Epoch-wise mean, min and max over seeds (epochs some seeds never reached use the others)."""
    per_epoch: dict[int, list] = {}
    for t in trials:
        for x, y in zip(*_series(t.history(), key)):
            per_epoch.setdefault(x, []).append(y)
    epochs = sorted(per_epoch)
    return (epochs, [sum(per_epoch[e]) / len(per_epoch[e]) for e in epochs],
            [min(per_epoch[e]) for e in epochs], [max(per_epoch[e]) for e in epochs])


def _grid(fig, n: int, ncols: int, margins: dict):
    nrows = math.ceil(n / ncols)
    axes = fig.subplots(nrows, ncols, squeeze=False, gridspec_kw=margins).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return axes[:n], ncols


def plot_curves(board: Leaderboard, path: Path) -> PlotFile | None:
    """One panel per config (top 12 by rank, then diverged trials): train/val loss, val acc on a twin axis."""
    keys = config_keys(board)
    ranked = [g for g in board.groups[:MAX_RANKED_PANELS] if any(t.history() for t in g.members)]
    diverged = [t for t in board.not_ranked if t.state == "diverged" and t.history()][:MAX_DIVERGED_PANELS]
    panels = [(g, g.members) for g in ranked] + [(None, [t]) for t in diverged]
    if not panels:
        return None
    # One loss scale for all ranked panels so curves compare at a glance; diverged ones scale alone.
    loss_top, acc_lim = _shared_scales(panels[:len(ranked)])
    n, ncols = len(panels), min(len(panels), 4)
    # Fixed margins in inches (the grid is too slow for constrained layout): room for tick labels
    # on both sides of each panel and a two-line title above it.
    width, height = 4.2 * ncols, 0.55 + 2.8 * math.ceil(n / ncols)
    fig = new_figure(width, height, constrained=False)
    axes, ncols = _grid(fig, n, ncols, dict(left=0.5 / width, right=1 - 0.5 / width, bottom=0.45 / height,
                                            top=1 - 0.85 / height, wspace=0.34, hspace=0.55))
    for i, (ax, (group, trials)) in enumerate(zip(axes, panels)):
        twin = ax.twinx()
        _plot_trials(ax, twin, trials)
        twin.set_ylim(*acc_lim)
        if group is not None:
            _label_ranked(ax, group, board, keys, loss_top)
        else:
            _label_diverged(ax, trials[0], board, keys)
        _style_panel(ax, twin, i, n, ncols)
    _curves_legend(fig)
    shown = f"top {len(ranked)} of {len(board.groups)} configs" if len(board.groups) > len(ranked) else \
        f"all {len(ranked)} configs"
    return PlotFile("learning_curves", "Learning curves",
                    f"Train and val loss (left axis) and val accuracy (right axis) per epoch, {shown} by rank"
                    + (f", then {len(diverged)} diverged trial(s) in red" if diverged else "")
                    + ". With several seeds, thin lines are single seeds and the bold line their mean.",
                    save(fig, path))


def _shared_scales(panels: list) -> tuple[float | None, tuple]:
    """(top of the loss axis, limits of the val acc axis) shared by the given (group, trials) panels."""
    losses = [y for _, ts in panels for t in ts for k in ("train/loss", "val/loss")
              for y in _series(t.history(), k)[1]]
    loss_top = max(losses) * 1.05 if losses else None
    accs = [y for _, ts in panels for t in ts for y in _series(t.history(), "val/acc")[1]]
    acc_lim = (max(0.0, min(accs) - 0.03), min(1.0, max(accs) + 0.03)) if accs else (0, 1)
    return loss_top, acc_lim


def _plot_trials(ax, twin, trials: list[Trial]) -> None:
    """Draw each trial's train/val loss on `ax` and val acc on `twin`; with several seeds, bold means on top."""
    single = len(trials) == 1
    for t in trials:
        for key, colour in (("train/loss", TRAIN), ("val/loss", VAL)):
            ax.plot(*_series(t.history(), key), color=colour, linewidth=1.6 if single else 0.8,
                    alpha=1.0 if single else 0.45)
        twin.plot(*_series(t.history(), "val/acc"), color=ACC, linestyle="--",
                  linewidth=1.4 if single else 0.8, alpha=1.0 if single else 0.45)
    if not single:  # seeds: thin lines each, bold mean
        for key, colour, axis in (("train/loss", TRAIN, ax), ("val/loss", VAL, ax), ("val/acc", ACC, twin)):
            e, m, _, _ = _mean_series(trials, key)
            axis.plot(e, m, color=colour, linewidth=2.0, linestyle="--" if key == "val/acc" else "-")


def _label_ranked(ax, group: Group, board: Leaderboard, keys: list, loss_top: float | None) -> None:
    """Mark a ranked config's best epoch, set the shared loss scale and title it with rank, config and objective."""
    best = group.representative.get("best_epoch")
    if isinstance(best, int):
        ax.axvline(best, color="grey", linestyle=":", linewidth=1.2)
    if loss_top:
        ax.set_ylim(0, loss_top)
    o = group.objective
    stat = f"{o.mean:.4f}" + (f" ± {o.std:.4f} (n={o.n})" if o.n > 1 else "")
    ax.set_title(f"#{group.rank}  {config_label(group.params, keys)}\n{board.objective} {stat}",
                 fontsize=8.5, color="black")


def _label_diverged(ax, t: Trial, board: Leaderboard, keys: list) -> None:
    """Mark a diverged trial's epoch in red and title its panel in red."""
    epoch = t.get("diverged_epoch")
    if isinstance(epoch, int):
        ax.axvline(epoch, color="red", linewidth=2)
        ax.text(epoch, 0.5, " NaN ", transform=ax.get_xaxis_transform(), color="red",
                ha="right", va="center", fontsize=8, fontweight="bold")
    label = config_label({k: board.value(t, k) for k in keys}, keys)
    ax.set_title(f"DIVERGED at epoch {epoch}  {t.trial_id}\n{label}", fontsize=8.5, color="red")
    ax.set_facecolor("#fff0f0")


def _style_panel(ax, twin, i: int, n: int, ncols: int) -> None:
    """Ticks and grid of panel `i` of `n`; axis labels only on the grid's outer edges."""
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
    twin.yaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.tick_params(labelsize=7.5)
    twin.tick_params(labelsize=7.5, colors=ACC)
    ax.grid(alpha=0.25)
    if i % ncols == 0:
        ax.set_ylabel("loss", fontsize=8)
    if i % ncols == ncols - 1 or i == n - 1:
        twin.set_ylabel("val acc", fontsize=8, color=ACC)
    if i >= n - ncols:
        ax.set_xlabel("epoch", fontsize=8)


def _curves_legend(fig) -> None:
    """The figure's one legend above the panels: line colours and styles."""
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color=TRAIN, label="train loss"), Line2D([], [], color=VAL, label="val loss"),
               Line2D([], [], color=ACC, linestyle="--", label="val acc (right axis)"),
               Line2D([], [], color="grey", linestyle=":", label="best epoch")]
    fig.legend(handles=handles, loc="upper center", ncols=4, fontsize=8.5, frameon=False)


def _pooled_bins(trials: list[Trial]):
    """Sum counts over seeds; confidence and accuracy per bin weighted by count."""
    n_bins, count, conf, acc, hist = None, [], [], [], []
    for t in trials:
        cal = t.get("calibration") or {}
        c = cal.get("bin_count")
        if not c:
            continue
        if n_bins is None:
            n_bins = len(c)
            count, conf, acc, hist = [0] * n_bins, [0.0] * n_bins, [0.0] * n_bins, [0] * n_bins
        if len(c) != n_bins:
            continue
        for i in range(n_bins):
            k = c[i] or 0
            bc, ba = (cal.get("bin_confidence") or [None] * n_bins)[i], (cal.get("bin_accuracy") or [None] * n_bins)[i]
            if k and bc is not None and ba is not None:
                count[i] += k
                conf[i] += k * bc
                acc[i] += k * ba
            hist[i] += ((cal.get("prob_hist") or [0] * n_bins)[i]) or 0
    if n_bins is None:
        return None
    return n_bins, count, [c / k if k else None for c, k in zip(conf, count)], \
        [a / k if k else None for a, k in zip(acc, count)], hist


def plot_reliability(board: Leaderboard, path: Path, top: int = 4) -> PlotFile | None:
    """Reliability diagram (top) and max-probability histogram (bottom) for the top configs."""
    chosen = [(g, b) for g in board.groups for b in [_pooled_bins(g.members)] if b][:top]
    if not chosen:
        return None
    keys = config_keys(board)
    width, height = 3.1 * len(chosen) + 0.6, 6.4
    fig = new_figure(width, height, constrained=False)
    axes = fig.subplots(2, len(chosen), squeeze=False, height_ratios=[3, 1.3], gridspec_kw=dict(
        left=0.75 / width, right=1 - 0.15 / width, top=1 - 0.9 / height, bottom=0.5 / height,
        wspace=0.25, hspace=0.3))
    for hax in axes[1][1:]:  # one fraction scale so the histograms compare
        hax.sharey(axes[1][0])
    for j, (g, (n_bins, count, conf, acc, hist)) in enumerate(chosen):
        ax, hax = axes[0][j], axes[1][j]
        width = 1.0 / n_bins
        centres = [(i + 0.5) * width for i in range(n_bins)]
        used = [i for i in range(n_bins) if count[i] and acc[i] is not None]
        ax.bar([centres[i] for i in used], [acc[i] for i in used], width=width, color="#4c72b0",
               edgecolor="white", label="accuracy")
        # The gap between what the model claims (confidence) and what it gets (accuracy).
        ax.bar([centres[i] for i in used], [conf[i] - acc[i] for i in used], bottom=[acc[i] for i in used],
               width=width, color="none", edgecolor="crimson", hatch="///", linewidth=0.6, label="gap to confidence")
        ax.plot([0, 1], [0, 1], color="black", linestyle="--", linewidth=1, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ece, mconf, macc = g.mean("val/ece"), g.mean("val/confidence"), g.mean("val/acc")
        parts = [f"ECE {ece:.3f}" if ece is not None else None, f"conf {mconf:.3f}" if mconf is not None else None,
                 f"acc {macc:.3f}" if macc is not None else None]
        verdict = ""
        if mconf is not None and macc is not None:
            gap = mconf - macc
            verdict = f"\nconf − acc {gap:+.3f} ({'over' if gap > 0 else 'under'}-confident)"
        ax.set_title(f"#{g.rank} {config_label(g.params, keys, sep=' ')}\n"
                     + " · ".join(p for p in parts if p) + verdict, fontsize=8.5)
        ax.set_xlabel("confidence (max prob)", fontsize=8)
        ax.tick_params(labelsize=7.5)
        if j == 0:
            ax.set_ylabel("accuracy", fontsize=8)
            ax.legend(fontsize=7, loc="upper left")
        total = sum(hist) or 1
        hax.bar(centres, [h / total for h in hist], width=width, color="#8c8c8c", edgecolor="white")
        hax.set_xlim(0, 1)
        hax.tick_params(labelsize=7.5)
        hax.set_xlabel("max probability", fontsize=8)
        if j == 0:
            hax.set_ylabel("fraction of\nval samples", fontsize=8)
    fig.suptitle("Calibration of the top configs (pooled over seeds)", fontsize=11)
    return PlotFile("reliability", "Reliability diagrams",
                    "Per top config: bars are the accuracy in each confidence bin, hatched red the gap up to the "
                    "mean confidence; bars below the diagonal mean over-confidence. Below: histogram of the "
                    "max predicted probability on the validation set.", save(fig, path))


def plot_by_category(board: Leaderboard, path: Path) -> PlotFile | None:
    """Val acc vs epoch, one line per value of each varying categorical param (its best config)."""
    params = [k for k in config_keys(board) if not is_numeric(board, k)]
    if not params or not board.groups:
        return None
    others = config_keys(board)
    fig = new_figure(5.2 * len(params) + 0.4, 4.2)
    axes = fig.subplots(1, len(params), squeeze=False)[0]
    for ax, key in zip(axes, params):
        best: dict = {}
        for g in board.groups:  # best first: keep the best config for each value
            best.setdefault(str(g.params.get(key)), g)
        for value, g in sorted(best.items(), key=lambda item: item[1].rank):
            epochs, mean, lo, hi = _mean_series(g.members, "val/acc")
            if not epochs:
                continue
            rest = config_label({k: v for k, v in g.params.items() if k != key}, [k for k in others if k != key], " ")
            line, = ax.plot(epochs, mean, marker="o", markersize=3, linewidth=1.6,
                            label=f"{value}  (#{g.rank}: {g.objective.mean:.4f}; {rest})")
            if len(g.members) > 1:
                ax.fill_between(epochs, lo, hi, color=line.get_color(), alpha=0.15)
        ax.set_title(f"val acc per epoch, best config for each {key}", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("val acc")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    return PlotFile("by_category", "Comparison by " + ", ".join(params),
                    "Validation accuracy per epoch for the best config of each value of "
                    + ", ".join(params) + " (shaded: min–max over seeds).", save(fig, path))
