"""report.html: one self-contained page per sweep (inline CSS, PNGs as base64 data URIs).

Sections: summary (sweep, trials by status, winner, separability), leaderboard, not ranked,
plots, skipped files. The page loads nothing from the network, so it can be mailed or opened
from a cluster's scratch space as is. Table cells come from `render`, like the Markdown.
"""
from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from gridtune.sweepdir.records import atomic_write_text
from . import render
from .leaderboard import Leaderboard, Stat
from gridtune.sweepdir.rundir import STATES

CSS = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1500px; padding: 0 1.5em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.8em; }
table { border-collapse: collapse; font-size: 12.5px; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; white-space: nowrap; }
th { background: #f3f3f3; position: sticky; top: 0; }
tr.winner td { background: #fff6d5; font-weight: 600; }
td.reason { white-space: normal; max-width: 60em; }
.scroll { overflow-x: auto; }
.note { padding: 0.6em 0.9em; border-left: 4px solid #999; background: #f7f7f7; margin: 0.8em 0; }
.note.bad { border-color: #d9822b; background: #fff4e8; } .note.good { border-color: #3a9a4a; background: #eef8ef; }
.muted { color: #666; } code { background: #f3f3f3; padding: 0 3px; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 13px; max-width: 70em; }
.state-diverged, .state-failed, .state-oom, .state-torn { color: #b22; font-weight: 600; }
.state-running { color: #2761b5; font-weight: 600; }
.state-interrupted, .state-pending, .state-stopped { color: #8a6d00; font-weight: 600; }
"""


def _table(cols: list[str], rows: list[list[str]], winner_first: bool = False, state_col: int | None = None,
           wrap_col: int | None = None) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, cell in enumerate(row):
            cls = []
            if j == state_col and cell in STATES:
                cls.append(f"state-{cell}")
            if j == wrap_col:
                cls.append("reason")
            attr = f' class="{" ".join(cls)}"' if cls else ""
            cells.append(f"<td{attr}>{escape(str(cell))}</td>")
        attr = ' class="winner"' if winner_first and i == 0 else ""
        body.append(f"<tr{attr}>{''.join(cells)}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _summary(board: Leaderboard, best: dict | None) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in board.counts.items())
    out = [f"<p>Sweep directory <code>{escape(str(board.sweep_dir.resolve()))}</code><br>",
           f"{len(board.records.trials)} trials: {escape(counts)} · {len(board.groups)} configs ranked by "
           f"<code>{escape(board.objective)}</code> ({escape(board.mode)}), ties broken by lower val/loss"
           + (" · mean over seeds" if any(g.objective.n > 1 for g in board.groups) else "") + "</p>"]
    if board.winner is None:
        out.append('<p class="note bad">No trial finished ok: nothing was ranked and no best.yaml was written.</p>')
        return "".join(out)
    win = board.winner
    o = win.objective
    value = f"{o.mean:.4f}" + (f" ± {o.std:.4f} (n={o.n}, 95% CI [{o.lo:.4f}, {o.hi:.4f}])" if o.n > 1 else "")
    overrides = " ".join(map(str, win.overrides()))
    out.append(f"<p><b>Winner:</b> {escape(win.representative.trial_id)} — {escape(board.objective)} "
               f"{escape(value)}<br><b>Final run overrides</b> (from best.yaml): <code>{escape(overrides)}</code></p>")
    kind = {"separable": "good", "not separable": "bad", "unknown": "bad"}.get(board.separability, "")
    out.append(f'<p class="note {kind}"><b>Separability:</b> {escape(board.note)}.</p>')
    if best and best.get("git_sha"):
        dirty = " (dirty tree)" if best.get("git_dirty") else ""
        out.append(f'<p class="muted">git {escape(str(best["git_sha"]))}{dirty} · data cache '
                   f'{escape(str(best.get("cache_hash")))}</p>')
    return "".join(out)


def _per_class(board: Leaderboard, n: int = 3) -> str:
    """Per-class validation accuracy of the top configs: a winner can hide a class it gave up on."""
    top = board.groups[:n]
    classes = sorted({c for g in top for t in g.members for c in (t.get("per_class_acc") or {})})
    if not classes:
        return ""
    cols = ["Class"] + [f"#{g.rank} {g.representative.trial_id}" for g in top]
    rows = [[c] + [render.fmt_stat(Stat.of((t.get("per_class_acc") or {}).get(c) for t in g.members), 3)
                   for g in top] for c in classes]
    return f"<h3>Per-class val accuracy, top {len(top)}</h3>" + _table(cols, rows)


def render_html(board: Leaderboard, figures: list = (), best: dict | None = None, top: int | None = None) -> str:
    """The whole page as a string; `figures` are plots.figure.PlotFile entries whose PNGs get embedded."""
    parts = [f"<h1>Sweep report: {escape(board.records.name)}</h1>",
             "<h2>Summary</h2>", _summary(board, best), "<h2>Leaderboard</h2>"]
    if board.groups:
        cols, rows = render.table(board, top)
        parts.append(_table(cols, rows, winner_first=True, state_col=cols.index("Status")))
        if top and len(board.groups) > top:
            parts.append(f'<p class="muted">{len(board.groups) - top} more configs in leaderboard.csv.</p>')
    else:
        parts.append("<p>No trial finished ok.</p>")
    parts.append(_per_class(board))
    parts.append("<h2>Not ranked</h2>")
    if board.not_ranked:
        parts.append("<p>Trials that did not finish ok. They are listed, never dropped.</p>")
        parts.append(_table(render.NOT_RANKED_COLUMNS, render.not_ranked_rows(board), state_col=1, wrap_col=3))
    else:
        parts.append("<p>None: every trial finished ok.</p>")
    parts.append("<h2>Plots</h2>")
    for fig in figures:
        parts.append(f'<figure id="{escape(fig.name)}"><h3>{escape(fig.title)}</h3>'
                     f'<img alt="{escape(fig.title)}" src="{_data_uri(fig.path)}">'
                     f"<figcaption>{escape(fig.caption)}</figcaption></figure>")
    if not figures:
        parts.append('<p class="muted">No plots (reduced with --no-plots, or nothing to draw).</p>')
    skipped = board.skipped_files()
    if skipped:
        parts.append(f"<h2>Skipped files</h2><p>{len(skipped)} audio files were skipped while loading data.</p>")
        parts.append(_table(["Path", "Reason", "Trials"], [[p, r, str(n)] for p, r, n in skipped], wrap_col=1))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(board.records.name)}: sweep report</title><style>{CSS}</style></head>"
            f"<body>{''.join(parts)}</body></html>\n")


def write_report(board: Leaderboard, path, figures: list = (), best: dict | None = None,
                 top: int | None = None) -> Path:
    path = Path(path)
    atomic_write_text(path, render_html(board, figures, best, top))
    return path
