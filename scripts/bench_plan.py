"""Planning time and memory, in one command: `python -m gridtune.plan` on the task11 grid, on a
generated 1,000-trial grid, and on 10,000- and 100,000-trial grids of real axes (optimizer x
schedule x model x lr x dropout x l2 x seed). Each figure is the whole command: wall time (process
start, imports, compose, validation, the data check, the printed plan; the median of `--repeats`
runs) and peak memory (the plan process's max RSS, from its own rusage). The baselines, measured in
the same command: composing every trial from scratch (`hydra.sweeper.fast_compose=false`, the
reference: one full Hydra compose per trial) on task11 and 1,000 trials, and with `--before REV`
the code of an earlier commit (unpacked with git archive, same interpreter) on the grids up to
`--before-max` trials.

    python scripts/bench_plan.py                      # task11 both ways; 1,000 fast, and the reference on
                                                      # its first 100 trials scaled to 1,000 ("est."); 10k; 100k
    python scripts/bench_plan.py --before e765bd6     # ... and that commit's planner on task11, 1k and 10k
    python scripts/bench_plan.py --full-1000          # the reference on all 1,000 trials too (many minutes)
    python scripts/bench_plan.py --no-100k            # leave out the 100,000-trial grid

Writes bench_plan.json next to the current directory's bench outputs (rows and the machine's load).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GROUPS = ["preset=debug", "optim=adam,sgd", "sched=constant,cosine", "model=cnn256,cnn256_deep"]   # 8 sets
# 8 x 5 lr x 5 dropout x 5 seeds = 1,000 trials (tests/test_planner.py's)
BIG = [*GROUPS, "lr=1e-4,2e-4,5e-4,1e-3,2e-3", "dropout=0.1,0.2,0.3,0.4,0.5", "seed=0,1,2,3,4"]
BIG_100 = ["preset=debug", "optim=adam,sgd", "sched=constant,cosine", "model=cnn256",
           "lr=1e-4,2e-4,5e-4,1e-3,2e-3", "dropout=0.1,0.2,0.3,0.4,0.5"]
L2 = "l2=0,1e-5,2e-5,5e-5,1e-4,2e-4,5e-4,1e-3,2e-3,5e-3"
# 1,000 x 10 l2 = 10,000 trials
GRID_10K = [*BIG, L2]
# 8 x 10 lr x 5 dropout x 10 l2 x 25 seeds = 100,000 trials
GRID_100K = [*GROUPS, "lr=1e-4,2e-4,3e-4,5e-4,7e-4,1e-3,2e-3,3e-3,5e-3,7e-3", "dropout=0.1,0.2,0.3,0.4,0.5", L2,
             "seed=range(25)"]
SUMMARY = re.compile(r": (\d+) trials, (\d+) already done")


def plan(args: list[str], data: Path, out: Path, fast: bool, src: Path = REPO) -> tuple[float, int, float, float]:
    """(wall seconds, trials, peak RSS in MiB, CPU seconds) of one `python -m gridtune.plan` run of
    the code in `src`. The CPU time (user + system) says how much of the wall time a loaded machine added."""
    cmd = [sys.executable, "-m", "gridtune.plan", *args, f"data.root={data}", f"out_root={out}",
           f"hydra.sweeper.fast_compose={'true' if fast else 'false'}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if src != REPO:
        env["PYTHONPATH"] = os.pathsep.join([str(src / "src"), env.get("PYTHONPATH", "")])
    with tempfile.TemporaryFile("w+") as so, tempfile.TemporaryFile("w+") as se:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, cwd=src, stdout=so, stderr=se, text=True, env=env)
        _, status, usage = os.wait4(p.pid, 0)          # this child's own rusage: its peak RSS
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        so.seek(0), se.seek(0)
        stdout, stderr = so.read(), se.read()
    if p.returncode != 0:
        raise SystemExit(f"bench_plan: {' '.join(cmd)} exited {p.returncode}\n{stderr[-2000:]}")
    m = SUMMARY.search(stdout)
    if m is None:
        raise SystemExit(f"bench_plan: no trial count in the output of {' '.join(cmd)}\n{stdout[:2000]}")
    return wall, int(m.group(1)), usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def median(args, data, out, fast, repeats, src: Path = REPO) -> tuple[float, int, float, float]:
    runs = [plan(args, data, out, fast, src) for _ in range(repeats)]
    return (statistics.median(r[0] for r in runs), runs[0][1], max(r[2] for r in runs),
            statistics.median(r[3] for r in runs))


def _export(rev: str, tmp: Path) -> Path:
    """The code and configs of commit `rev`, unpacked in tmp (git archive: the repository is left as is)."""
    path = tmp / "before"
    path.mkdir()
    tar = subprocess.run(["git", "archive", rev, "src", "conf"], cwd=REPO, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(path)], input=tar, check=True)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--full-1000", action="store_true", help="measure the reference on all 1,000 trials")
    ap.add_argument("--no-100k", action="store_true", help="leave out the 100,000-trial grid")
    ap.add_argument("--before", metavar="REV", help="also time this commit's code")
    ap.add_argument("--before-max", type=int, default=10_000, help="largest grid the --before code plans")
    ap.add_argument("--data", type=Path, help="a data root (default: a small generated IRMAS-layout one)")
    ap.add_argument("--out", default="bench_plan.json")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="gridtune-bench-plan-") as tmp:
        data, out = (a.data.resolve() if a.data else Path(tmp) / "data"), Path(tmp) / "out"
        if a.data is None:
            from gridtune.data.demo import generate
            generate(data, per_class=6, test_clips=0, seed=0)   # 2 recordings per class: the split needs 2
        before = _export(a.before, Path(tmp)) if a.before else None
        rows = _measure(a, data, out, before)
    for r in rows:
        print(f"{r['grid']:6s} {r['trials']:6d} trials: {r['path']:24s} {r['wall_s']:6.1f} s wall, "
              f"{r['cpu_s']:6.1f} s CPU{' (est.)' if r['estimated'] else '       '}  peak {r['peak_mib']:4.0f} MiB")
    Path(a.out).write_text(json.dumps({"rows": rows, "before": a.before, "cpus": os.cpu_count(),
                                       "load_avg": os.getloadavg()}, indent=1) + "\n")


def _measure(a, data: Path, out: Path, before: Path | None) -> list[dict]:
    rows: list[dict] = []

    def row(grid: str, path: str, figures: tuple, estimated: bool = False) -> None:
        wall, n, peak, cpu = figures
        rows.append({"grid": grid, "trials": n, "path": path, "wall_s": wall, "cpu_s": cpu, "peak_mib": peak,
                     "estimated": estimated})

    ref = median(["sweep=task11"], data, out, False, a.repeats)
    fast = median(["sweep=task11"], data, out, True, a.repeats)
    assert ref[1] == fast[1] == 18, (ref, fast)
    row("task11", "full compose per trial", ref)
    row("task11", "fast", fast)
    fast = median(BIG, data, out, True, a.repeats)
    assert fast[1] == 1000, fast
    if a.full_1000:
        row("1k", "full compose per trial", median(BIG, data, out, False, a.repeats))
    else:   # the reference's per-trial cost on 100 trials of the same kind, scaled to 1,000
        b100, n100, peak, c100 = median(BIG_100, data, out, False, a.repeats)
        base, _, _, cbase = median(["preset=debug"], data, out, False, a.repeats)     # start-up + one trial
        row("1k", "full compose per trial", (base + (b100 - base) * 999 / (n100 - 1), 1000, peak,
                                             cbase + (c100 - cbase) * 999 / (n100 - 1)), True)
    row("1k", "fast", fast)
    grids = [("task11", ["sweep=task11"]), ("1k", BIG), ("10k", GRID_10K)] + ([] if a.no_100k else [("100k", GRID_100K)])
    for name, args in grids[2:]:
        row(name, "fast", median(args, data, out, True, a.repeats))
    for name, args in grids if before is not None else []:
        n = next(r["trials"] for r in rows if r["grid"] == name)
        if n <= a.before_max:
            row(name, f"before ({a.before})", median(args, data, out, True, a.repeats, before))
    return rows


if __name__ == "__main__":
    main()
