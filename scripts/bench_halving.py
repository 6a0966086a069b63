"""Successive halving against the full grid: epochs, time, and whether it finds the same winner.

    python scripts/bench_halving.py [--data data/demo] [--preset demo] [--epochs 9] [--eta 3]
                                    [--min-epochs 1] [--seeds 3] [--out sweeps/bench_halving]

For each seed s of the whole procedure, the task11 grid (18 configs, seed=s) runs halved first,
then without halving in the same directory: the full run resumes each stopped trial from its
checkpoint (same trial ids, same schedule, so the same records as a full run from scratch) and
trains the rest. So every trained epoch is a history row, and a trial's `wall_time_s` adds up its
runs: the full grid's cost is measured on the same trials, in the same command, as the halved one.
Then the repeats grid (task11's 9 dropout x lr configs at l2=1e-4, seeds 0, 1, 2) runs halved in a
directory of its own; its full answer is read from the task11 runs (the same trials).

Reported per procedure: trained epochs halved / full, summed trial time halved / full and the
halved driver's wall time, and whether the halved winner is the full grid's winner or, with
repeats, inside the full winner's 95 % interval. Writes bench_halving.json and bench_halving.md.
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
from gridtune.collect import SweepRecords, collect  # noqa: E402
from gridtune.leaderboard import build  # noqa: E402


def sweep(args: argparse.Namespace, name: str, *extra: str, halved: bool) -> float:
    cmd = [sys.executable, "-m", "gridtune.sweep", "sweep=task11", f"preset={args.preset}",
           f"train.epochs={args.epochs}", f"data.root={args.data}", f"out_root={args.out}", f"sweep_name={name}",
           *extra]
    if halved:
        cmd += [f"hydra.sweeper.halving.eta={args.eta}", f"hydra.sweeper.halving.min_epochs={args.min_epochs}"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return time.perf_counter() - t0


def board(sweep_dir: Path, keep):
    recs = collect(sweep_dir)
    trials = [t for t in recs.trials if keep(t.params)]
    return build(SweepRecords(recs.sweep_dir, recs.name, recs.manifest, trials), "val/acc", "max"), trials


def cost(trials) -> tuple[int, float]:
    return (sum(len(t.history()) for t in trials), sum(float(t.get("wall_time_s") or 0) for t in trials))


def config(group) -> dict:
    return {k: group.params.get(k) for k in ("dropout", "lr", "l2")}


def compare(halved, full) -> dict:
    hw, fw = halved.winner, full.winner
    rank = next(g.rank for g in full.groups if config(g) == config(hw))
    o = fw.objective
    inside = o.n > 1 and o.lo <= full_mean(full, hw) <= o.hi
    return {"halved_winner": config(hw), "full_winner": config(fw), "same": config(hw) == config(fw),
            "halved_winner_full_rank": rank, "halved_winner_full_value": full_mean(full, hw),
            "full_winner_value": o.mean, "full_ci95": [o.lo, o.hi] if o.n > 1 else None, "inside_ci95": inside}


def full_mean(full, group) -> float:
    return next(g.objective.mean for g in full.groups if config(g) == config(group))


def run(args: argparse.Namespace) -> dict:
    shared = args.out / "task11"
    out = {"settings": {k: str(v) for k, v in vars(args).items()}, "task11": [], "repeats": None}
    for s in range(args.seeds):
        wall_h = sweep(args, "task11", f"seed={s}", halved=True)
        ladder = records.read_json(shared / halving.LADDER)
        hb, ht = board(shared, lambda p, s=s: p.get("seed") == s)
        epochs_h, time_h = cost(ht)
        wall_f = sweep(args, "task11", f"seed={s}", halved=False)
        fb, ft = board(shared, lambda p, s=s: p.get("seed") == s)
        epochs_f, time_f = cost(ft)
        sizes = [d["n"] for d in ladder["decisions"]] + [ladder["decisions"][-1]["keep"]]
        out["task11"].append({"seed": s, "epochs_halved": epochs_h, "epochs_full": epochs_f,
                              "trial_time_halved_s": time_h, "trial_time_full_s": time_f,
                              "wall_halved_s": wall_h, "wall_full_rest_s": wall_f, "ladder": sizes,
                              **compare(hb, fb)})
        print(json.dumps(out["task11"][-1]), flush=True)
    if args.seeds >= 3:
        rep = ("l2=1e-4", "hydra.sweeper.repeats=3", "seed=0")
        wall_h = sweep(args, "repeats", *rep, halved=True)
        ladder = records.read_json(args.out / "repeats" / halving.LADDER)
        hb, ht = board(args.out / "repeats", lambda p: True)
        fb, ft = board(shared, lambda p: p.get("l2") == 1e-4 and p.get("seed") in (0, 1, 2))
        (epochs_h, time_h), (epochs_f, time_f) = cost(ht), cost(ft)
        out["repeats"] = {"epochs_halved": epochs_h, "epochs_full": epochs_f, "trial_time_halved_s": time_h,
                          "trial_time_full_s": time_f, "wall_halved_s": wall_h,
                          "ladder": [d["n"] for d in ladder["decisions"]] + [ladder["decisions"][-1]["keep"]],
                          **compare(hb, fb)}
        print(json.dumps(out["repeats"]), flush=True)
    return out


def markdown(res: dict) -> str:
    st = res["settings"]
    lines = [f"Successive halving vs full grid: preset={st['preset']}, {st['epochs']} epochs, eta={st['eta']}, "
             f"min_epochs={st['min_epochs']}, data {st['data']}", "",
             "| grid | seed | ladder (configs per rung) | epochs halved / full | trial time halved / full | "
             "halved driver wall | halved winner | full winner | same? | halved winner's full rank |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    rows = [("task11", str(r["seed"]), r) for r in res["task11"]]
    if res["repeats"]:
        rows.append(("task11 configs at l2=1e-4 x 3 seeds", "0,1,2", res["repeats"]))
    for grid, seed, r in rows:
        same = "yes" if r["same"] else ("inside full winner's 95% CI" if r["inside_ci95"] else "no")
        lines.append(f"| {grid} | {seed} | {r['ladder']} | {r['epochs_halved']} / {r['epochs_full']} = "
                     f"{r['epochs_halved'] / r['epochs_full']:.2f} | {r['trial_time_halved_s']:.0f} / "
                     f"{r['trial_time_full_s']:.0f} s = {r['trial_time_halved_s'] / r['trial_time_full_s']:.2f} | "
                     f"{r['wall_halved_s']:.0f} s | {r['halved_winner']} {r['halved_winner_full_value']:.4f} | "
                     f"{r['full_winner']} {r['full_winner_value']:.4f} | {same} | {r['halved_winner_full_rank']} |")
    hits = sum(r["same"] for r in res["task11"])
    lines += ["", f"task11: the halved winner is the full grid's winner in {hits} of {len(res['task11'])} seeds."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO / "data" / "demo")
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--epochs", type=int, default=9)
    ap.add_argument("--eta", type=int, default=3)
    ap.add_argument("--min-epochs", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=3, help="seeds of the whole procedure (repeats grid: needs 3)")
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
