"""Benchmark sections measured in fresh processes: a trial's fixed start-up cost, and whole sweeps.

c. `overhead`: a fresh interpreter builds the same TrialRun a trial builds and takes one optimizer
   step; the parent's spawn time and the child's stamps split the wait into stages.
d./e. `sweeps`: the grid (`smoke`) run as `python -m gridtune.sweep -m` with launcher.trials_per_job
   = K, each in a fresh output root and a fresh cache dir, timed from outside; the cache's meta.json
   and the driver's in-process `gridtune.data.cache.DECODES` say how many files were decoded.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_steps import CHILD

# overhead stages: (name, stamp it starts at, stamp it ends at)
STAGES = (("python startup", "spawn", "interpreter"), ("imports", "interpreter", "imports"),
          ("config compose", "imports", "config"), ("cache load (warm)", "config", "prepare_end"),
          ("data to device", "prepare_end", "device_end"), ("model build", "device_end", "build_end"),
          ("first step", "build_end", "first_step"))
# a SLURM node of this project's local cluster has few CPUs and ~23 GB: small jobs so the array fits
SLURM_ARGS = ("launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=0",
              "hydra.launcher.cpus_per_task=2", "hydra.launcher.mem_gb=4", "hydra.launcher.timeout_min=20")


def section_overhead(data_root: Path, overrides, sizes: dict) -> dict:
    params = {"overrides": [f"data.root={data_root}", *overrides], "batch": sizes["batch"],
              "out": str(Path(sizes["tmp"]) / "overhead_trial")}
    spawn = time.time()
    proc = subprocess.run([sys.executable, str(CHILD), "overhead", json.dumps(params), repr(spawn)],
                          capture_output=True, text=True, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"overhead child exit {proc.returncode}: {tail[:200]}")
    rec = json.loads(lines[-1][6:])
    s = rec["stamps"]
    stages = {name: s[b] - s[a] for name, a, b in STAGES}
    return {"stages_s": stages, "python_and_imports_s": s["imports"] - s["spawn"],
            "total_s": s["first_step"] - s["spawn"], "cache_was_built": rec["cache_built"],
            "threads": rec["threads"], "batch": sizes["batch"]}


def slurm_usable() -> str | None:
    """None when `sinfo` answers with at least one partition, else why not."""
    if shutil.which("sinfo") is None:
        return "no SLURM (sinfo not found)"
    try:
        p = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=15)
    except (subprocess.TimeoutExpired, OSError) as e:
        return f"no SLURM (sinfo: {type(e).__name__})"
    if p.returncode != 0 or not p.stdout.strip():
        return f"no SLURM (sinfo exit {p.returncode})"
    return None


def _cancel_own_jobs(out_root: Path) -> None:
    """scancel the array jobs this run submitted (their ids are the .submitit folder names)."""
    ids = {d.name.split("_")[0] for d in out_root.rglob(".submitit/*") if d.is_dir() and d.name[:1].isdigit()}
    for job in sorted(ids):
        subprocess.run(["scancel", job], capture_output=True, timeout=30)


def run_grid(data_root: Path, work: Path, k: int, grid: str, extra=(), timeout: float = 600) -> dict:
    out_root, cache_dir = work / f"out_k{k}", work / f"cache_k{k}"
    cmd = [sys.executable, str(CHILD), "sweep", "-m", f"sweep={grid}", f"launcher.trials_per_job={k}",
           f"out_root={out_root}", f"data.root={data_root}", f"data.cache_dir={cache_dir}", *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        note = None
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        _cancel_own_jobs(out_root)
        note = f"killed after {timeout:.0f} s"
    wall = time.perf_counter() - t0
    recs = [json.loads(ln[6:]) for ln in out.splitlines() if ln.startswith("BENCH ")]
    entries = sorted(p.parent for p in cache_dir.glob("*/meta.json"))
    meta = json.loads((entries[0] / "meta.json").read_text()) if entries else {}
    statuses: dict[str, int] = {}
    for r in out_root.rglob("result.json"):
        st = json.loads(r.read_text()).get("status", "?")
        statuses[st] = statuses.get(st, 0) + 1
    driver = recs[-1] if recs else {}
    built_by = meta.get("built_by")
    row = {"k": k, "wall_s": wall, "rc": proc.returncode, "statuses": statuses, "trials": sum(statuses.values()),
           "decodes_in_driver": driver.get("decodes"), "decodes_meta": meta.get("decodes"),
           "cache_entries": len(entries), "clips": meta.get("n_files"), "built_by": built_by,
           "built_by_driver": bool(built_by and driver.get("pid") and built_by.endswith(f":{driver['pid']}"))}
    if note or proc.returncode != 0:
        tail = [ln for ln in out.splitlines() if ln.strip() and not ln.startswith("BENCH ")][-1:] or [""]
        row["note"] = note or f"exit {proc.returncode}: {tail[0][:200]}"
    return row


def _runs(data_root: Path, work: Path, sizes: dict, clips: int, extra, where: str, log) -> list[dict]:
    """Every K, `sweep_repeats` times, the Ks alternating; one row per K with the median wall time."""
    by_k: dict[int, list[dict]] = {k: [] for k in sizes["ks"]}
    for rep in range(max(int(sizes["sweep_repeats"]), 1)):
        for k in sizes["ks"]:
            r = run_grid(data_root, work / f"r{rep}", k, sizes["grid"], extra, timeout=sizes["sweep_timeout"])
            by_k[k].append(r)
            log(f"e. {where} K={k}: {r['wall_s']:.1f} s, {r['trials']} trials {r['statuses']}, decodes "
                f"{r['decodes_in_driver']} in the driver (meta {r['decodes_meta']}, built by "
                f"{'the driver' if r['built_by_driver'] else r['built_by']}) for {clips} clips")
    rows = []
    for k, rs in by_k.items():
        walls = [r["wall_s"] for r in rs]
        statuses: dict[str, int] = {}
        for r in rs:
            for st, n in r["statuses"].items():
                statuses[st] = statuses.get(st, 0) + n
        # local: the driver runs every trial, so its own count is the sweep's; slurm: the one build's meta
        dec = [r["decodes_in_driver"] if where == "local" else r["decodes_meta"] for r in rs]
        rows.append({**rs[0], "wall_s": statistics.median(walls), "walls": walls, "runs": len(rs),
                     "statuses": statuses, "trials": sum(statuses.values()), "decodes": dec,
                     "decodes_ok": all(d == clips and r["cache_entries"] == 1 for d, r in zip(dec, rs)),
                     "notes": [r["note"] for r in rs if r.get("note")]})
    return rows


def section_sweeps(data_root: Path, classes, sizes: dict, log) -> dict:
    """d. decodes per sweep and e. wall time per K, locally and (with --slurm) on SLURM."""
    from gridtune.data.layouts import index_train
    clips = len(index_train(data_root, "auto", classes)[0])
    work = Path(sizes["tmp"]) / "sweeps"
    out = {"grid": sizes["grid"], "clips": clips, "slurm": [],
           "local": _runs(data_root, work / "local", sizes, clips, (), "local", log)}
    if not sizes["slurm"]:
        out["slurm_skipped"] = "skipped: not requested (--slurm)"
        return out
    why = slurm_usable()
    if why:
        out["slurm_skipped"] = f"skipped: {why}"
        return out
    out["slurm"] = _runs(data_root, work / "slurm", sizes, clips, SLURM_ARGS, "slurm", log)
    return out
