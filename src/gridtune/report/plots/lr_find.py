"""The LR range test's figure: loss and smoothed loss against the learning rate, with the suggestion.

Drawn with the report's own helpers (`figure.new_figure`, `figure.save`); matplotlib is imported
only when `plot` runs, so `gridtune.lr_find` itself stays light.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from gridtune.config.knobs import fmt_lr
from .figure import new_figure, save

METHODS = {"steepest": "steepest descent of the smoothed loss", "min/10": "lowest smoothed loss / 10"}


def plot(path: Path, rec: dict) -> None:
    lrs, losses = np.asarray(rec["lrs"], float), np.array([np.nan if v is None else v for v in rec["losses"]])
    smoothed = np.asarray(rec["smoothed"], float)
    s, n, i_min, grid = rec["suggested_lr"], len(smoothed), rec["min_index"], rec["suggested_grid"]
    fig = new_figure(9, 6)
    ax = fig.add_subplot()
    ax.axvspan(min(grid), max(grid), color="C3", alpha=0.07)
    for i, v in enumerate(grid):
        ax.axvline(v, color="C3", ls=":", lw=0.9, label="suggested grid: lr=" + ", ".join(map(fmt_lr, grid))
                   if i == 0 else None)
    ax.plot(lrs, losses, ".-", color="0.6", lw=0.8, ms=4, label="loss of each batch")
    ax.plot(lrs[:n], smoothed, color="C0", lw=2.2, label=f"smoothed loss (EMA, weight {rec['smooth_used']:.2g})")
    ax.axvline(s, color="C3", ls="--", lw=1.4)
    ax.plot([s], [np.interp(np.log(s), np.log(lrs[:n]), smoothed)], "o", color="C3", ms=10, zorder=5,
            label=f"suggested lr = {fmt_lr(s)} ({METHODS[rec['suggest_method']]})")
    ax.plot([rec["min_loss_lr"]], [rec["min_smoothed_loss"]], "v", color="C2", ms=10, zorder=5,
            label=f"lowest smoothed loss ({rec['min_smoothed_loss']:.3g}) at lr = {fmt_lr(rec['min_loss_lr'])}")
    # y up to twice the spread of the losses before the minimum: the descent stays readable and the
    # blow-up after it shows as the curves leaving the top
    before = losses[: i_min + 1][np.isfinite(losses[: i_min + 1])]
    lo, hi = min(before.min(), smoothed.min()), max(before.max(), smoothed[: i_min + 1].max())
    ax.set_ylim(lo - 0.1 * (hi - lo + 1e-3), hi + (hi - lo + 1e-3))
    ax.set_xscale("log")
    ax.set_xlim(lrs[0] / 1.5, lrs[-1] * 1.5)
    ratios = rec["group_lr_ratios"]
    scaled = "" if all(r == 1 for r in ratios.values()) else "; " + ", ".join(
        f"{g} at {r:g} x lr" for g, r in ratios.items())
    ax.set_xlabel(f"learning rate (lr{scaled})")
    ax.set_ylabel("training loss (class-weighted cross-entropy)")
    ax.set_title(f"LR range test: suggested lr = {fmt_lr(s)}\n{rec['iters_run']} steps of {rec['batch_size']} "
                 f"clips ({rec['cost_epochs']:.2f} epochs of {rec['n_train']}), lr {fmt_lr(rec['start_lr'])} to "
                 f"{fmt_lr(rec['end_lr'])}, stopped: {rec['stopped_reason']}", fontsize=11)
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.1)
    fig.legend(loc="outside lower center", ncols=2, fontsize=9, frameon=False)
    save(fig, path)
