"""Compare two runs of one grid: their wall times and their reduced leaderboards (GPU check, step 3).

    python scripts/gpu_compare.py SEQ_SWEEP_DIR FUSED_SWEEP_DIR --epochs 15 [--group 18]
                                  [--walls 412.3,61.0] [--finished no,yes] [--json FILE]

Both directories hold the same grid (the trial ids of gridtune_sweep.json), one run sequentially and
one fused, each reduced already (`python -m gridtune.reduce DIR` wrote leaderboard.csv). Reads only
files on disk (standard library only), so it also works on an arm that was stopped part-way:
  wall time   --walls gives each arm's measured seconds. An arm that did not finish (--finished no)
              gets an estimate for the whole grid, marked as such: its wall time plus the epochs it
              did not reach (trials x --epochs minus the history.jsonl rows) at the mean epoch time
              of those it did (the `time_s` of the rows; a fused group of --group trials trains
              their epochs together). The start-up of trials not reached is not counted, so the
              estimate is low, and a fused speedup against an estimated sequential arm is a lower bound;
  leaderboards  the configs ranked in both: same trial ids? same winner (the best-ranked config
              that both ranked)? the largest and mean |difference| of the objective and of val/loss,
              and Spearman's rank correlation of the two orders.
Prints a short report and writes the figures as JSON.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path


def progress(sweep: Path, epochs: int) -> dict:
    """Trials of the manifest, how many have a final record, and the epochs done over all of them."""
    manifest = json.loads((sweep / "gridtune_sweep.json").read_text())
    ids = [t["trial_id"] for t in manifest["trials"]]
    done, epoch_s, states = 0, [], {}
    for tid in ids:
        try:
            lines = (sweep / tid / "history.jsonl").read_text().splitlines()
        except OSError:
            lines = []
        rows = []
        for line in lines:
            try:
                row = json.loads(line)
            except ValueError:   # a line torn by a stopped process
                continue
            if "epoch" in row:
                rows.append(row)
        done += min(len(rows), epochs)
        epoch_s += [float(r["time_s"]) for r in rows[:epochs] if isinstance(r.get("time_s"), (int, float))]
        try:
            status = json.loads((sweep / tid / "result.json").read_text()).get("status", "unknown")
        except (OSError, ValueError):
            status = "no record"
        states[status] = states.get(status, 0) + 1
    return {"trials": len(ids), "trial_ids": sorted(ids), "states": states, "epochs_done": done,
            "epochs_total": len(ids) * epochs, "mean_epoch_s": sum(epoch_s) / len(epoch_s) if epoch_s else None}


def board(sweep: Path) -> list[dict]:
    """leaderboard.csv's rows in rank order: run id, rank, objective mean, val/loss mean, status."""
    path = sweep / "leaderboard.csv"
    if not path.exists():
        return []
    out = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            def num(key):
                try:
                    v = float(row.get(key) or "nan")
                except ValueError:
                    return None
                return v if math.isfinite(v) else None
            out.append({"run_id": row["run_id"], "rank": int(row["rank"]), "status": row.get("status"),
                        "objective": num("objective_mean"), "val_loss": num("val_loss_mean")})
    return sorted(out, key=lambda r: r["rank"])


def spearman(a: list[float], b: list[float]) -> float | None:
    def ranks(xs):
        order = sorted(range(len(xs)), key=lambda i: xs[i])
        r = [0.0] * len(xs)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r
    if len(a) < 2:
        return None
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va, vb = sum((x - ma) ** 2 for x in ra), sum((y - mb) ** 2 for y in rb)
    return cov / math.sqrt(va * vb) if va > 0 and vb > 0 else None


def compare_boards(seq: list[dict], fused: list[dict]) -> dict:
    ranked = lambda rows: {r["run_id"]: r for r in rows if r["objective"] is not None}   # noqa: E731
    s, f = ranked(seq), ranked(fused)
    common = [r["run_id"] for r in seq if r["run_id"] in s and r["run_id"] in f]
    out = {"ranked_sequential": len(s), "ranked_fused": len(f), "compared": len(common),
           "same_ids": sorted(s) == sorted(f)}
    if not common:
        return out
    d_obj = [abs(s[i]["objective"] - f[i]["objective"]) for i in common]
    d_loss = [abs(s[i]["val_loss"] - f[i]["val_loss"]) for i in common
              if s[i]["val_loss"] is not None and f[i]["val_loss"] is not None]
    win_s = min(common, key=lambda i: s[i]["rank"])
    win_f = min(common, key=lambda i: f[i]["rank"])
    out.update(winner_sequential=win_s, winner_fused=win_f, same_winner=win_s == win_f,
               winner_objective_sequential=s[win_s]["objective"], winner_objective_fused=f[win_f]["objective"],
               max_abs_objective_diff=max(d_obj), mean_abs_objective_diff=sum(d_obj) / len(d_obj),
               max_abs_val_loss_diff=max(d_loss) if d_loss else None,
               rank_correlation=spearman([s[i]["rank"] for i in common], [f[i]["rank"] for i in common]))
    return out


def arm(sweep: Path, epochs: int, wall: float | None, finished: bool, group: int) -> dict:
    p = progress(sweep, epochs)
    out = {"dir": str(sweep), **{k: v for k, v in p.items() if k != "trial_ids"}, "group": group,
           "finished": finished, "wall_s": wall, "wall_s_grid": None, "estimated": False}
    if wall is not None:
        if finished:
            out["wall_s_grid"] = wall
        elif p["mean_epoch_s"] is not None:
            left = (p["epochs_total"] - p["epochs_done"]) / group * p["mean_epoch_s"]
            out.update(wall_s_grid=wall + left, estimated=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sequential", type=Path)
    ap.add_argument("fused", type=Path)
    ap.add_argument("--epochs", type=int, required=True, help="epochs per trial of the grid (train.epochs)")
    ap.add_argument("--group", type=int, default=1, help="trials per fused group in the fused arm")
    ap.add_argument("--walls", help="measured seconds of the two arms, SEQ,FUSED")
    ap.add_argument("--finished", default="yes,yes", help="whether each arm ran to its end, SEQ,FUSED (yes|no)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    for d in (a.sequential, a.fused):
        if not (d / "gridtune_sweep.json").is_file():
            ap.error(f"{d}: no gridtune_sweep.json (not a sweep directory, or its driver never started)")
    try:
        walls = [float(w) for w in a.walls.split(",")] if a.walls else [None, None]
        fin = [{"yes": True, "no": False}[x] for x in a.finished.split(",")]
        if len(walls) != 2 or len(fin) != 2:
            raise ValueError
    except (ValueError, KeyError):
        ap.error(f"--walls={a.walls} --finished={a.finished}: expected two numbers and two of yes|no")
    if a.epochs < 1 or a.group < 1:
        ap.error(f"--epochs={a.epochs} --group={a.group}: both must be >= 1")
    seq = arm(a.sequential, a.epochs, walls[0], fin[0], 1)
    fused = arm(a.fused, a.epochs, walls[1], fin[1], a.group)
    res = {"sequential": seq, "fused": fused,
           "same_grid": progress(a.sequential, a.epochs)["trial_ids"] == progress(a.fused, a.epochs)["trial_ids"],
           "leaderboards": compare_boards(board(a.sequential), board(a.fused))}
    if seq["wall_s_grid"] and fused["wall_s_grid"]:
        res["fused_speedup"] = seq["wall_s_grid"] / fused["wall_s_grid"]
        res["fused_speedup_estimated"] = seq["estimated"] or fused["estimated"]
    for name, r in (("sequential", seq), ("fused", fused)):
        wall = "?" if r["wall_s"] is None else f"{r['wall_s']:.1f} s"
        grid = "" if not r["estimated"] else f", whole grid est. {r['wall_s_grid']:.0f} s"
        print(f"{name:10s} {wall} ({r['epochs_done']}/{r['epochs_total']} epochs{grid}); trials {r['states']}")
    lb = res["leaderboards"]
    if lb.get("compared"):
        print(f"leaderboards: {lb['compared']} configs in both, same ids {lb['same_ids']}, same winner "
              f"{lb['same_winner']} ({lb['winner_sequential']} / {lb['winner_fused']}), max |d objective| "
              f"{lb['max_abs_objective_diff']:.4f}, rank correlation {lb['rank_correlation']}")
    if "fused_speedup" in res:
        est = " (estimated)" if res["fused_speedup_estimated"] else ""
        print(f"fused vs sequential: {res['fused_speedup']:.2f}x{est}")
    if a.json:
        a.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
