"""The successive-halving figure of a reduced sweep: every trial's objective curve with the point
where halving stopped it, the rung epochs, and the ladder itself (configs per rung).

Drawn only when the sweep directory holds a ladder file (gridtune.halving.policy.LADDER); matplotlib is
imported inside the function, like the other plot modules.
"""
from __future__ import annotations

import math
from pathlib import Path

from gridtune.halving import policy
from gridtune.report.leaderboard import Leaderboard
from .figure import PlotFile, new_figure, save

SURVIVOR, STOPPED = "#1f77b4", "#999999"


def _curve(history: list[dict], key: str) -> tuple[list, list]:
    rows = [(r["epoch"], r[key]) for r in history if isinstance(r.get("epoch"), int)
            and isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return [x for x, _ in rows], [y for _, y in rows]


def _noise_note(ladder: dict) -> str:
    """How the ladder treated configs just below the cut (ladders written before the noise rule have no key)."""
    z = ladder.get("noise")
    if not z:
        return ""
    kept = sum(g.get("why") == "inside the noise" for d in ladder.get("decisions") or [] for g in d["ranking"])
    return (f", and so do those less than {z:g} standard error(s) of the difference below the last of them, "
            f"while the ladder stays within {ladder.get('budget', 1):g} of the full grid's epochs "
            f"({kept} such promotion(s))")


def plot_ladder(board: Leaderboard, path: Path) -> PlotFile | None:
    ladder = policy.read_ladder(board.sweep_dir)
    if not ladder or not ladder.get("rungs"):
        return None
    rungs = list(ladder["rungs"])
    sizes = [d["n"] for d in ladder.get("decisions") or []]
    if ladder.get("complete") and ladder.get("decisions"):
        sizes.append(ladder["decisions"][-1]["keep"])
    fig = new_figure(11, 4.2)
    curves, bars = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1]})
    obj = board.objective
    for g in board.groups:
        for t in g.members:
            xs, ys = _curve(t.history(), obj)
            if not xs:
                continue
            stopped = t.state == "stopped"
            curves.plot(xs, ys, color=STOPPED if stopped else SURVIVOR, lw=0.9 if stopped else 1.6,
                        alpha=0.7 if stopped else 1.0)
            if stopped:
                curves.plot(xs[-1], ys[-1], marker="x", color="#d62728", ms=6, ls="none")
    for e in rungs[:-1]:
        curves.axvline(e, color="#d62728", ls=":", lw=0.8)
    from matplotlib.ticker import MaxNLocator
    curves.xaxis.set_major_locator(MaxNLocator(integer=True))
    bars.yaxis.set_major_locator(MaxNLocator(integer=True))
    curves.set_xlabel("epoch")
    curves.set_ylabel(obj)
    curves.set_title(f"{obj} per epoch: survivors (blue), stopped (grey, x = stop point); rungs dotted",
                     fontsize=9)
    curves.grid(alpha=0.25)
    labels = [f"rung {k}\nepoch {e}" for k, e in enumerate(rungs[:len(sizes)])]
    bars.bar(range(len(sizes)), sizes, color=SURVIVOR)
    for i, n in enumerate(sizes):
        bars.text(i, n, str(n), ha="center", va="bottom", fontsize=9)
    bars.set_xticks(range(len(sizes)), labels, fontsize=8)
    bars.set_ylabel("configs")
    bars.set_title(f"the ladder (eta {ladder.get('eta')})", fontsize=9)
    state = "complete" if ladder.get("complete") else "in progress"
    return PlotFile("halving", "Successive halving",
                    f"Ladder {state}: rungs at epochs {rungs}, configs per rung {sizes}. A config is ranked at a rung "
                    f"on its best {obj} up to the rung epoch (mean over seeds); the top 1/{ladder.get('eta')} go on"
                    f"{_noise_note(ladder)}.",
                    save(fig, path))
