"""Text renderings of a leaderboard: the display table, the terminal table, leaderboard.csv and .md.

The display columns follow the hand-made "Top Performers" table (Rank, Run ID, Dropout, LR, L2,
Val Accuracy, Val Loss, ...), with extra columns for the sweep's own axes (`Leaderboard.extra`);
where a parameter group did not train at `lr`, the LR column is one column per group. The
HTML report uses `table()` and `not_ranked_rows()` from here so every output shows the same cells.
"""
from __future__ import annotations

import csv
import io
import math

from gridtune.halving import policy
from gridtune.config.facts import title as knob_title
from .leaderboard import Group, Leaderboard, Stat

# (metric key, column title) shown for every config, in this order.
METRICS = (("val/acc", "Val Accuracy"), ("val/loss", "Val Loss"), ("val/bal_acc", "Bal. Acc"),
           ("val/macro_f1", "Macro-F1"), ("val/ece", "ECE"), ("val/confidence", "Confidence"))
ALL_METRICS = [k for k, _ in METRICS] + ["val/overconfidence", "train/loss", "train/acc"]
NOT_RANKED_COLUMNS = ["Trial", "Status", "Config", "Reason"]


def fmt_value(value) -> str:
    """Params as the users write them: 0.001, 0.0005, 0.3, adam."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def fmt_stat(stat: Stat | None, digits: int = 4) -> str:
    if stat is None or stat.mean is None:
        return "-"
    text = f"{stat.mean:.{digits}f}"
    return text + (f" ± {stat.std:.{digits}f}" if stat.n > 1 else "")


def fmt_time(seconds) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _int_range(values) -> str:
    values = sorted({v for v in values if isinstance(v, int)})
    if not values:
        return "-"
    return str(values[0]) if len(values) == 1 else f"{values[0]}–{values[-1]}"


def group_status(group: Group) -> str:
    stopped = halving_status(group)
    if stopped:
        return stopped
    n_ok, n_all = len(group.members), len(group.members) + len(group.others)
    status = "ok" if n_ok == n_all else f"{n_ok}/{n_all} ok (" + ", ".join(
        f"{sum(t.state == s for t in group.others)} {s}" for s in sorted({t.state for t in group.others})) + ")"
    early = sum(bool(t.get("stopped_early")) for t in group.members)
    if early:
        status += ", early stop" + (f" {early}/{n_ok}" if n_ok > 1 else "")
    return status


def halving_status(group: Group) -> str | None:
    """'stopped at rung k (epoch e, value v): rank r of n' and, when recorded, its gap to the cut and
    the noise margin (gridtune.halving.policy.why), for a config that halving stopped, else None."""
    for t in group.members:
        h = t.get("halving") or {}
        if t.state == "stopped" and isinstance(h.get("rung"), int):
            value = f"{h['value']:.4f}" if isinstance(h.get("value"), (int, float)) else "-"
            return (f"stopped at rung {h['rung']} (epoch {h.get('epoch')}, value {value}): "
                    f"rank {h.get('rank')} of {h.get('of')}{policy.why(h)}")
    return None


def _show_seeds(board: Leaderboard) -> bool:
    return "seed" in board.varying or any(g.objective.n > 1 for g in board.groups)


def columns(board: Leaderboard) -> list[str]:
    cols = ["Rank", "Run ID"] + [knob_title(k) for k in board.base]
    if board.objective not in dict(METRICS):
        cols.append(board.objective)
    cols += [title for _, title in METRICS] + ["Best Epoch", "Epochs", "Status", "Time"]
    cols += [knob_title(k) for k in board.extra]
    if _show_seeds(board):
        cols += ["Seeds", "95% CI"]
    return cols


def row(board: Leaderboard, group: Group) -> list[str]:
    rep = group.representative
    cells = [str(group.rank), rep.trial_id + (f" +{len(group.members) - 1}" if len(group.members) > 1 else "")]
    cells += [fmt_value(group.params.get(k)) for k in board.base]
    stat = {key: Stat.of(t.metric(key) for t in group.members) for key, _ in METRICS}
    stat[board.objective] = group.objective
    if board.objective not in dict(METRICS):
        cells.append(fmt_stat(group.objective))
    cells += [fmt_stat(stat[key]) for key, _ in METRICS]
    cells += [_int_range(t.get("best_epoch") for t in group.members),
              _int_range(t.get("epochs_run") for t in group.members),
              group_status(group), fmt_time(Stat.of(t.get("wall_time_s") for t in group.members).mean)]
    cells += [fmt_value(group.params.get(k)) for k in board.extra]
    if _show_seeds(board):
        o = group.objective
        cells += [str(o.n), f"[{o.lo:.4f}, {o.hi:.4f}]" if o.n > 1 else "n=1"]
    return cells


def table(board: Leaderboard, top: int | None = None) -> tuple[list[str], list[list[str]]]:
    groups = board.groups[:top] if top else board.groups
    return columns(board), [row(board, g) for g in groups]


def not_ranked_rows(board: Leaderboard) -> list[list[str]]:
    return [[t.trial_id, t.state, " ".join(map(str, t.overrides)) or "-", board.reason(t) or "-"]
            for t in board.not_ranked]


def terminal(board: Leaderboard, top: int | None = 20) -> str:
    cols, rows = table(board, top)
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    out = [line(cols), line(["-" * w for w in widths])] + [line(r) for r in rows]
    if top and len(board.groups) > top:
        out.append(f"... {len(board.groups) - top} more configs in leaderboard.csv")
    return "\n".join(out)


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(cols: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(cols) + " |", "| " + " | ".join(":---" for _ in cols) + " |"]
    return out + ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]


def markdown(board: Leaderboard, top: int | None = None) -> str:
    cols, rows = table(board, top)
    if rows:  # the winner's row in bold, as in the hand-made table
        rows[0] = [f"**{c}**" if c not in ("", "-") else c for c in rows[0]]
    counts = ", ".join(f"{n} {s}" for s, n in board.counts.items())
    out = [f"# Leaderboard: {board.records.name}", "",
           f"Objective: `{board.objective}` ({board.mode}); ties broken by lower val/loss. "
           f"Trials: {len(board.records.trials)} ({counts}).", ""]
    if board.winner:
        overrides = " ".join(map(str, board.winner.overrides()))
        out += [f"**Winner:** {board.winner.representative.trial_id} — {board.note}.", "",
                f"Final run overrides (best.yaml): `{overrides}`", ""]
    out += ["## Top Performers", ""] + (_md_table(cols, rows) if rows else ["No trial finished ok."])
    if _show_seeds(board):
        out += ["", f"Values are mean ± std over seeds; 95% CI is the t interval of the mean {board.objective}."]
    if top and len(board.groups) > top:
        out += ["", f"{len(board.groups) - top} more configs in leaderboard.csv."]
    if board.not_ranked:
        out += ["", "## Not ranked", ""] + _md_table(NOT_RANKED_COLUMNS, not_ranked_rows(board))
    skipped = board.skipped_files()
    if skipped:
        out += ["", "## Skipped files", ""] + _md_table(
            ["Path", "Reason", "Trials"], [[p, r, str(n)] for p, r, n in skipped])
    return "\n".join(out) + "\n"


def _stat_fields(prefix: str, stat: Stat | None) -> dict:
    stat = stat or Stat(0, None)
    return {f"{prefix}_mean": stat.mean, f"{prefix}_std": stat.std, f"{prefix}_n": stat.n,
            f"{prefix}_ci_lo": stat.lo, f"{prefix}_ci_hi": stat.hi}


def csv_records(board: Leaderboard) -> list[dict]:
    """Every ranked config with every column, numbers unformatted (one record per config group)."""
    keys = {k for g in board.groups for k in g.params}
    params = [k for k in board.base + board.extra if k in keys]
    params += sorted(keys - set(params))
    records = []
    for g in board.groups:
        rec = {"rank": g.rank, "run_id": g.representative.trial_id,
               "trial_ids": ";".join(t.trial_id for t in g.members), "n_seeds": len(g.members),
               "seeds": ";".join(map(str, g.seeds))}
        rec.update({k: g.params.get(k) for k in params})
        rec["objective"] = board.objective
        rec.update(_stat_fields("objective", g.objective))
        rec.update(_stat_fields("val_loss", g.loss))
        rec.update({k: g.mean(k) for k in ALL_METRICS})
        rec.update({"best_epoch_mean": Stat.of(t.get("best_epoch") for t in g.members).mean,
                    "epochs_run_mean": Stat.of(t.get("epochs_run") for t in g.members).mean,
                    "status": group_status(g),
                    "wall_time_s_mean": Stat.of(t.get("wall_time_s") for t in g.members).mean,
                    "overrides": " ".join(map(str, g.overrides()))})
        records.append(rec)
    return records


def csv_text(board: Leaderboard) -> str:
    records = csv_records(board)
    buf = io.StringIO()
    if records:
        writer = csv.DictWriter(buf, fieldnames=list(records[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in records)
    return buf.getvalue()
