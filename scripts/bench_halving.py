"""Successive halving against the full grid: epochs, time, and whether it finds the same winner.

    python scripts/bench_halving.py [--data data/demo] [--preset demo] [--epochs 9] [--eta 3]
                                    [--min-epochs 1] [--threads 1] [--out sweeps/bench_halving]

1. The task11 grid (18 configs, seed 0) runs halved, for real: its wall time, trained epochs
   (history rows) and summed trial time (`wall_time_s`, startups included).
2. The task11 grid runs in full with `repeats=3` (seeds 0, 1, 2: three single-seed task11 grids and
   one repeats grid at once) in the same directory: seed 0's stopped trials resume from their
   checkpoints (same trial ids and schedule: the same records as a full run from scratch).
3. The repeats grid (task11's 9 dropout x lr configs at l2=1e-4, seeds 0, 1, 2) runs halved, for real,
   in a directory of its own.
Seeds 1 and 2 of the task11 procedure are not run halved: their ladders are replayed on the full
grid's records with the driver's own decision function (gridtune.halving.decide), which reads
only history rows up to each rung; the two real halved runs check that a replay gives exactly
their ladders. Reports per procedure: epochs halved / full, trial time halved / full, and whether
the halved winner is the full grid's winner or, with repeats, inside its 95 % interval.
Writes bench_halving.json and bench_halving.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from gridtune import halving, records  # noqa: E402
from gridtune.sweepdir import Sweep, read_sweep  # noqa: E402
from gridtune.report.leaderboard import build  # noqa: E402

OBJ, MODE = "val/acc", "max"


def sweep(args: argparse.Namespace, name: str, *extra: str, halved: bool) -> float:
    cmd = [sys.executable, "-m", "gridtune.sweep", "sweep=task11", f"preset={args.preset}",
           f"train.epochs={args.epochs}", f"train.threads={args.threads}", f"data.root={args.data}",
           f"out_root={args.out}", f"sweep_name={name}", *extra]
    if halved:
        cmd += [f"hydra.sweeper.halving.eta={args.eta}", f"hydra.sweeper.halving.min_epochs={args.min_epochs}"]
    print(f"$ {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return time.perf_counter() - t0


def trials_of(sweep_dir: Path, keep) -> tuple[Sweep, list]:
    recs = read_sweep(sweep_dir)
    return recs, [t for t in recs.trials if keep(t.params)]


def board(recs: Sweep, trials):
    return build(Sweep(recs.dir, recs.name, recs.manifest, list(trials)), OBJ, MODE)


def config(params: dict) -> dict:
    return {k: params.get(k) for k in ("dropout", "lr", "l2")}


def replay(trials, spec: halving.Spec) -> tuple[list[dict], list]:
    """The ladder the driver would decide on these records, and its survivors."""
    members, decisions = list(trials), []
    for k, epoch in enumerate(spec.rungs[:-1]):
        values = {t.trial_id: halving.rung_value(t.history(), OBJ, MODE, epoch) for t in members}
        d = halving.decide({t.trial_id: json.dumps(config(t.params)) for t in members}, values, spec.eta, MODE)
        decisions.append({"rung": k, "epoch": epoch, **d})
        members = [t for t in members if t.trial_id in set(d["promoted"])]
    return decisions, members


def same_ladder(a: list[dict], b: list[dict]) -> bool:
    return [[g["trial_ids"] for g in d["ranking"]] for d in a] == [[g["trial_ids"] for g in d["ranking"]] for d in b]


def halved_cost(trials, decisions, spec) -> float:
    """Seconds of the epochs the ladder trains (history time_s), startups excluded."""
    reach = {t.trial_id: spec.rungs[-1] for t in trials}
    for d in decisions:
        for tid in d["stopped"]:
            reach[tid] = min(reach[tid], d["epoch"])
    return sum(r.get("time_s", 0) for t in trials for r in t.history() if r["epoch"] <= reach[t.trial_id])


def fate(decisions: list[dict], group) -> str:
    """Where the ladder left a config: 'survived', or 'stopped at rung k (rank r of n)'."""
    ids = {t.trial_id for t in group.members}
    for d in decisions:
        for g in d["ranking"]:
            if set(g["trial_ids"]) & ids and not g["promoted"]:
                return f"stopped at rung {d['rung']} (epoch {d['epoch']}, rank {g['rank']} of {d['n']})"
    return "survived"


def verdict(halved_board, full_board, decisions) -> dict:
    hw, fw = halved_board.winner, full_board.winner
    mine = next(g for g in full_board.groups if config(g.params) == config(hw.params))
    o = fw.objective
    return {"halved_winner": config(hw.params), "full_winner": config(fw.params),
            "same": config(hw.params) == config(fw.params), "halved_winner_full_rank": mine.rank,
            "halved_winner_full_value": mine.objective.mean, "full_winner_value": o.mean,
            "full_ci95": [o.lo, o.hi] if o.n > 1 else None,
            "inside_ci95": bool(o.n > 1 and o.lo <= mine.objective.mean <= o.hi),
            "full_winner_in_ladder": fate(decisions, fw)}


def run(args: argparse.Namespace) -> dict:
    spec = halving.Spec(args.eta, args.min_epochs, args.epochs)
    shared = args.out / "task11"
    out = {"settings": {k: str(v) for k, v in vars(args).items()}, "rungs": spec.rungs}
    wall_h0 = sweep(args, "task11", "seed=0", halved=True)
    ladder0 = records.read_json(shared / halving.LADDER)["decisions"]
    recs, t0 = trials_of(shared, lambda p: p.get("seed") == 0)
    real0 = {"wall_s": wall_h0, "epochs": sum(len(t.history()) for t in t0),
             "trial_time_s": sum(float(t.get("wall_time_s") or 0) for t in t0),
             "winner": config(board(recs, t0).winner.params)}
    out["full_wall_s"] = sweep(args, "task11", "hydra.sweeper.repeats=3", "seed=0", halved=False)
    out["task11"] = []
    for s in range(3):
        recs, ts = trials_of(shared, lambda p, s=s: p.get("seed") == s)
        decisions, survivors = replay(ts, spec)
        row = {"seed": s, "ladder": [d["n"] for d in decisions] + [decisions[-1]["keep"]],
               "epochs_halved": spec.epochs_trained(len(ts)), "epochs_full": sum(len(t.history()) for t in ts),
               "epoch_time_halved_s": halved_cost(ts, decisions, spec),
               "epoch_time_full_s": sum(r.get("time_s", 0) for t in ts for r in t.history()),
               "trial_time_full_s": sum(float(t.get("wall_time_s") or 0) for t in ts),
               **verdict(board(recs, survivors), board(recs, ts), decisions)}
        if s == 0:
            row["real_run"] = {**real0, "ladder_matches_replay": same_ladder(ladder0, decisions),
                               "winner_matches_replay": real0["winner"] == row["halved_winner"]}
        out["task11"].append(row)
        print(json.dumps(row), flush=True)
    wall_r = sweep(args, "repeats", "l2=1e-4", "hydra.sweeper.repeats=3", "seed=0", halved=True)
    rrecs, rt = trials_of(args.out / "repeats", lambda p: True)
    frecs, ft = trials_of(shared, lambda p: p.get("l2") == 1e-4)
    decisions, _ = replay(ft, spec)
    out["repeats"] = {"ladder": [d["n"] for d in decisions] + [decisions[-1]["keep"]], "wall_s": wall_r,
                      "epochs_halved": sum(len(t.history()) for t in rt), "epochs_full": sum(len(t.history()) for t in ft),
                      "trial_time_halved_s": sum(float(t.get("wall_time_s") or 0) for t in rt),
                      "trial_time_full_s": sum(float(t.get("wall_time_s") or 0) for t in ft),
                      "ladder_matches_replay": same_ladder(records.read_json(args.out / "repeats" / halving.LADDER)
                                                           ["decisions"], decisions),
                      **verdict(board(rrecs, rt), board(frecs, ft), decisions)}
    print(json.dumps(out["repeats"]), flush=True)
    return out


def _cfg(c: dict) -> str:
    return f"d{c['dropout']} lr{c['lr']:g} l2{c['l2']:g}"


def markdown(res: dict) -> str:
    st, real = res["settings"], res["task11"][0]["real_run"]
    rep = res["repeats"]
    lines = [f"Successive halving vs the full grid: preset={st['preset']}, {st['epochs']} epochs, eta={st['eta']}, "
             f"min_epochs={st['min_epochs']} (rungs {res['rungs']}), train.threads={st['threads']}, data {st['data']}",
             "", "| procedure | ladder | epochs halved / full | time halved / full | halved winner (its full rank) "
             "| full winner | same winner? | full winner in the ladder |", "|---|---|---|---|---|---|---|---|"]
    for r in res["task11"]:
        how = "run" if r["seed"] == 0 else "replayed"
        t_h, t_f = (real["trial_time_s"], r["trial_time_full_s"]) if r["seed"] == 0 else \
            (r["epoch_time_halved_s"], r["epoch_time_full_s"])
        kind = "trial" if r["seed"] == 0 else "epoch"
        lines.append(f"| task11 seed {r['seed']} ({how}) | {r['ladder']} | {r['epochs_halved']} / {r['epochs_full']} = "
                     f"{r['epochs_halved'] / r['epochs_full']:.2f} | {kind} {t_h:.0f} / {t_f:.0f} s = {t_h / t_f:.2f} | "
                     f"{_cfg(r['halved_winner'])} {r['halved_winner_full_value']:.3f} (#{r['halved_winner_full_rank']}) | "
                     f"{_cfg(r['full_winner'])} {r['full_winner_value']:.3f} | {'yes' if r['same'] else 'no'} | "
                     f"{r['full_winner_in_ladder']} |")
    ci = rep["full_ci95"]
    same = "yes" if rep["same"] else ("no, but inside the winner's 95% CI" if rep["inside_ci95"] else "no")
    lines.append(f"| repeats: 9 configs x 3 seeds (run) | {rep['ladder']} | {rep['epochs_halved']} / {rep['epochs_full']} = "
                 f"{rep['epochs_halved'] / rep['epochs_full']:.2f} | trial {rep['trial_time_halved_s']:.0f} / "
                 f"{rep['trial_time_full_s']:.0f} s = {rep['trial_time_halved_s'] / rep['trial_time_full_s']:.2f} | "
                 f"{_cfg(rep['halved_winner'])} {rep['halved_winner_full_value']:.3f} (#{rep['halved_winner_full_rank']}) | "
                 f"{_cfg(rep['full_winner'])} {rep['full_winner_value']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | {same} | "
                 f"{rep['full_winner_in_ladder']} |")
    hits = sum(r["same"] for r in res["task11"])
    lines += ["", f"task11: the halved winner is the full grid's winner in {hits} of 3 seeds.",
              f"Real halved runs: task11 seed 0 driver {real['wall_s']:.0f} s, ladder = replay: "
              f"{real['ladder_matches_replay']}; repeats driver {rep['wall_s']:.0f} s, ladder = replay: "
              f"{rep['ladder_matches_replay']}. Full grid (54 trials, seed 0's stopped trials resumed): driver "
              f"{res['full_wall_s']:.0f} s."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO / "data" / "demo")
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--epochs", type=int, default=9)
    ap.add_argument("--eta", type=int, default=3)
    ap.add_argument("--min-epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per trial (1: best on a shared machine)")
    ap.add_argument("--out", type=Path, default=REPO / "sweeps" / "bench_halving")
    args = ap.parse_args()
    args.data, args.out = args.data.resolve(), args.out.resolve()
    t0 = time.perf_counter()
    res = run(args)
    res["total_s"] = time.perf_counter() - t0
    records.write_json(REPO / "bench_halving.json", res)
    text = markdown(res) + f"\nWhole benchmark: {res['total_s']:.0f} s.\n"
    records.atomic_write_text(REPO / "bench_halving.md", text)
    print(text)


if __name__ == "__main__":
    main()
