"""Planning time, before/after, in one command: `python -m gridtune.plan` on the task11 grid and on a
generated 1,000-trial grid, composing every trial from scratch (`hydra.sweeper.fast_compose=false`,
the reference: one full Hydra compose per trial) and composing once per set of group choices
(the default). Each figure is the wall time of the whole command (process start, imports, compose,
validation, the data check, the printed plan), the median of `--repeats` runs.

    python scripts/bench_plan.py                 # task11 both ways; 1,000 trials fast, and the reference
                                                 # on its first 100 trials, scaled to 1,000 (marked "est.")
    python scripts/bench_plan.py --full-1000     # the reference on all 1,000 trials too (many minutes)

Writes bench_plan.json next to the current directory's bench outputs.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# 2 optimizers x 2 schedules x 2 models x 5 lr x 5 dropout x 5 seeds = 1,000 trials (tests/test_planner.py's)
BIG = ["preset=debug", "optim=adam,sgd", "sched=constant,cosine", "model=cnn256,cnn256_deep",
       "lr=1e-4,2e-4,5e-4,1e-3,2e-3", "dropout=0.1,0.2,0.3,0.4,0.5", "seed=0,1,2,3,4"]
BIG_100 = ["preset=debug", "optim=adam,sgd", "sched=constant,cosine", "model=cnn256",
           "lr=1e-4,2e-4,5e-4,1e-3,2e-3", "dropout=0.1,0.2,0.3,0.4,0.5"]


def plan(args: list[str], data: Path, out: Path, fast: bool) -> tuple[float, int]:
    cmd = [sys.executable, "-m", "gridtune.plan", *args, f"data.root={data}", f"out_root={out}",
           f"hydra.sweeper.fast_compose={'true' if fast else 'false'}"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"bench_plan: {' '.join(cmd)} exited {r.returncode}\n{r.stderr[-2000:]}")
    n = sum(1 for line in r.stdout.splitlines() if line.startswith("  "))
    return wall, n


def median(args, data, out, fast, repeats) -> tuple[float, int]:
    runs = [plan(args, data, out, fast) for _ in range(repeats)]
    return statistics.median(w for w, _ in runs), runs[0][1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--full-1000", action="store_true", help="measure the reference on all 1,000 trials")
    ap.add_argument("--out", default="bench_plan.json")
    a = ap.parse_args()
    from gridtune.data.demo import generate
    rows = []
    with tempfile.TemporaryDirectory(prefix="gridtune-bench-plan-") as tmp:
        data, out = Path(tmp) / "data", Path(tmp) / "out"
        generate(data, per_class=6, test_clips=0, seed=0)   # 2 recordings per class: the split needs 2
        for name, args in (("task11", ["sweep=task11"]),):
            before, n = median(args, data, out, False, a.repeats)
            after, n2 = median(args, data, out, True, a.repeats)
            assert n == n2 == 18, (n, n2)
            rows.append({"grid": name, "trials": n, "before_s": before, "after_s": after, "estimated": False})
        after, n = median(BIG, data, out, True, a.repeats)
        assert n == 1000, n
        if a.full_1000:
            before, _ = median(BIG, data, out, False, a.repeats)
            est = False
        else:   # the reference's per-trial cost on 100 trials of the same kind, scaled to 1,000
            b100, n100 = median(BIG_100, data, out, False, a.repeats)
            base, _ = median(["preset=debug"], data, out, False, a.repeats)     # start-up + one trial
            before, est = base + (b100 - base) * (1000 - 1) / (n100 - 1), True
        rows.append({"grid": "generated", "trials": 1000, "before_s": before, "after_s": after, "estimated": est})
    for r in rows:
        r["speedup"] = r["before_s"] / r["after_s"]
        print(f"{r['grid']:10s} {r['trials']:5d} trials: full compose per trial {r['before_s']:7.1f} s"
              f"{' (est.)' if r['estimated'] else ''}, once per group choice {r['after_s']:6.1f} s "
              f"-> {r['speedup']:.1f}x")
    Path(a.out).write_text(json.dumps({"rows": rows, "cpus": os.cpu_count(),
                                       "load_avg": os.getloadavg()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
