"""`make bench`: how fast gridtune trains on this device, each number a ratio to a baseline of the same run.

    .venv/bin/python scripts/bench.py [--quick] [--out DIR] [--data DIR] [--slurm] [size flags]

Sections (a progress line each; bench.json and bench.md go to --out, the table is printed at the end):
  a. training-step throughput of the default model, fp32/bf16 x NCHW/channels_last x eager/compile,
     and whether each `auto` speed flag agrees with what was measured for it
  b. the trial's real data path (cache -> DeviceData -> log-mel -> SpecAugment -> step) vs synthetic tensors
  c. a trial's fixed start-up cost, process start -> first optimizer step, in a fresh interpreter
  d. decodes per sweep (must equal the number of clips)     e. sweep wall time, trials_per_job K = 1, 2, 4
  f. the real path vs a naive DataLoader that runs librosa for every item, every epoch
  g. the task11 grid's 18 trials one by one in one process vs fused groups of B = 2, 6, 18 (bench_fused.py)
Sizes default to what finishes in minutes on a 2-core CPU, larger on CUDA; --quick is a smoke check.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))   # the bench_* helpers next to this file

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = {   # per mode: CPU, CUDA, quick
    "cpu": dict(batch=8, size=224, steps=3, warmup=1, data_steps=5, rounds=3, compile_budget=200, per_class=24,
                ks="1,2,4", sweep_repeats=2, sweep_timeout=300, time_limit=560,
                fused_batch=8, fused_steps=2, fused_warmup=1, fused_bs="2,6,18", fused_trials=18),
    "cuda": dict(batch=32, size=224, steps=30, warmup=10, data_steps=20, rounds=3, compile_budget=400,
                 per_class=24, ks="1,2,4", sweep_repeats=2, sweep_timeout=300, time_limit=1500,
                 fused_batch=32, fused_steps=20, fused_warmup=5, fused_bs="2,6,18", fused_trials=18),
    "quick": dict(batch=4, size=64, steps=2, warmup=1, data_steps=2, rounds=1, compile_budget=0, per_class=6,
                  ks="1", sweep_repeats=1, sweep_timeout=120, time_limit=60,
                  fused_batch=2, fused_steps=1, fused_warmup=1, fused_bs="2,4", fused_trials=4),
}
QUICK_OVERRIDES = ("preset=debug",)   # 32 mel bands and a narrow CNN


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes, a smoke check (< 1 minute)")
    p.add_argument("--out", type=Path, default=ROOT, help="where bench.json and bench.md go (default: repo root)")
    p.add_argument("--data", type=Path, help="data root (default: demo data generated into a temp dir)")
    p.add_argument("--sections", default="abcdefg", help="which sections to run, e.g. 'ab' (default: abcdefg)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="Hydra override for the benchmarked trial config (repeatable)")
    p.add_argument("--batch", type=int, help="batch size of sections a, b, c, f")
    p.add_argument("--size", type=int, help="input height = width of section a")
    p.add_argument("--steps", type=int, help="timed steps per variant and round in section a")
    p.add_argument("--warmup", type=int, help="warm-up steps per variant in section a")
    p.add_argument("--data-steps", type=int, help="steps per round in sections b and f")
    p.add_argument("--rounds", type=int, help="alternating rounds in sections a, b and f (the median counts)")
    p.add_argument("--compile-budget", type=float, help="seconds for all torch.compile variants (0: skip them)")
    p.add_argument("--time-limit", type=float,
                   help="seconds for the whole run; the compile variants, run last, get at most what is left")
    p.add_argument("--naive-workers", type=int, help="DataLoader workers of the naive baseline")
    p.add_argument("--per-class", type=int, help="demo clips per class when --data is not given")
    p.add_argument("--ks", help="trials_per_job values of section e, comma-separated")
    p.add_argument("--grid", default="smoke", help="grid file (conf/sweep) of sections d and e")
    p.add_argument("--sweep-repeats", type=int, help="runs of each K in section e (the median counts)")
    p.add_argument("--sweep-timeout", type=float, help="seconds before one sweep of section e is killed")
    p.add_argument("--fused-batch", type=int, help="batch size of section g (CPU default 8: 18 x 32 needs ~16 GB)")
    p.add_argument("--fused-steps", type=int, help="timed steps per trial or group in section g")
    p.add_argument("--fused-warmup", type=int, help="untimed steps per trial or group in section g")
    p.add_argument("--fused-bs", help="fused group sizes B of section g, comma-separated")
    p.add_argument("--fused-trials", type=int, help="trials of the task11 grid in section g (default 18)")
    p.add_argument("--slurm", action="store_true", help="also run section e with launcher=slurm")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (data, sweeps) for inspection")
    return p.parse_args(argv)


def resolve_sizes(args, device_type: str, tmp: Path) -> dict:
    base = DEFAULTS["quick" if args.quick else ("cuda" if device_type == "cuda" else "cpu")]
    sizes = {k: getattr(args, k) if getattr(args, k, None) is not None else v for k, v in base.items()}
    sizes["ks"] = [int(k) for k in str(sizes["ks"]).split(",") if k.strip()]
    workers = args.naive_workers if args.naive_workers is not None else min(4, (os.cpu_count() or 2) // 2)
    sizes.update(naive_workers=workers, grid=args.grid, slurm=args.slurm, quick=args.quick, tmp=str(tmp))
    return sizes


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device) -> dict:
    import torch
    cuda = device.type == "cuda"
    return {"device_type": device.type, "device_name": torch.cuda.get_device_name(device) if cuda else cpu_name(),
            "torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "loadavg_start": os.getloadavg()[0]}


def main(argv=None) -> dict:
    args = parse_args(argv)
    t_start = time.perf_counter()
    from bench_report import flag_effects, markdown
    from bench_steps import compose, half_dtype

    from gridtune.train.engine import pick_device
    from gridtune.train.runtime import set_cpu
    overrides = [*(QUICK_OVERRIDES if args.quick else ()), *args.override]
    cfg = compose(overrides)
    set_cpu(cfg)                                   # the thread count a trial would use
    device = pick_device(cfg.device)
    tmp = Path(tempfile.mkdtemp(prefix="gridtune-bench-"))
    sizes = resolve_sizes(args, device.type, tmp)
    env = environment(device)
    res = {"env": env, "sizes": sizes, "overrides": overrides, "sections": {}}

    def log(msg: str) -> None:
        print(f"[bench {time.perf_counter() - t_start:6.1f}s] {msg}", flush=True)

    log(f"{env['device_name']} ({device}), torch {env['torch']}, {env['threads']} threads; sizes: "
        + ", ".join(f"{k}={v}" for k, v in sizes.items() if k != "tmp"))
    try:
        data_root = args.data
        if data_root is None:
            from gridtune.data.demo import generate
            data_root = tmp / "data"
            generate(data_root, per_class=int(sizes["per_class"]), test_clips=0, seed=0)
            log(f"demo data: {sizes['per_class']} clips per class in {data_root}")
        data_root = data_root.resolve()
        from bench_data import auto_flags
        try:
            env["auto"] = auto_flags(data_root, overrides, device, tmp, int(sizes["batch"]))
            log("flags a trial picks here: " + ", ".join(f"{k}={v}" for k, v in env["auto"].items()))
        except Exception:   # the sections still run; the flag verdicts are then left out
            traceback.print_exc()
            env["auto"] = None
        deadline = t_start + float(sizes["time_limit"])
        run_sections(args.sections, res, data_root, overrides, cfg, device, sizes, log, deadline)
        a = res["sections"].get("a")
        if isinstance(a, list) and env["auto"]:
            res["flags"] = flag_effects(a, env["auto"], half_dtype(device))
    finally:
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    env["loadavg_end"] = os.getloadavg()[0]
    res["total_s"] = time.perf_counter() - t_start
    res["goals"] = goals(res)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    text = markdown(res)
    (args.out / "bench.md").write_text(text)
    print("\n" + text, flush=True)
    log(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.md'}")
    return res


def run_sections(which: str, res: dict, data_root: Path, overrides, cfg, device, sizes: dict, log,
                 deadline: float) -> None:
    """Each section on its own: one that fails is recorded with its error and the rest still run.

    The torch.compile variants of section a go last: their warm-up is the one cost that can run
    away (minutes on a CPU), so they get min(--compile-budget, time left before --time-limit)."""
    from bench_data import section_data
    from bench_procs import section_overhead, section_sweeps
    from bench_steps import compose, section_compile, section_steps, variants

    def attempt(key: str, title: str, fn):
        log(f"{title} ...")
        t0 = time.perf_counter()
        try:
            res["sections"][key] = fn()
        except Exception as e:   # a benchmark reports what broke and goes on
            traceback.print_exc()
            res["sections"][key] = {"error": f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"}
        log(f"{title} done in {time.perf_counter() - t0:.0f} s")

    if "a" in which:
        attempt("a", "a. training-step throughput (eager)", lambda: section_steps(cfg, device, sizes, log))
    if "b" in which or "f" in which:
        attempt("bf", "b/f. real data path vs synthetic vs naive DataLoader",
                lambda: section_data(data_root, overrides, device, sizes, log))
    if "c" in which:
        def overhead():
            from gridtune.data import feed
            feed.prepare(compose([f"data.root={data_root}", *overrides]))   # the cache is warm, as for a trial
            return section_overhead(data_root, overrides, sizes)
        attempt("c", "c. per-trial fixed overhead (fresh process)", overhead)
    if "d" in which or "e" in which:
        attempt("de", f"d/e. decodes and wall time of the '{sizes['grid']}' grid",
                lambda: section_sweeps(data_root, list(cfg.data.classes or []) or None, sizes, log))
    if "g" in which:
        from bench_fused import section_fused
        attempt("g", "g. task11 trials sequential vs fused", lambda: section_fused(overrides, device, sizes, log))
    if "a" in which and isinstance(res["sections"].get("a"), list):
        left = deadline - time.perf_counter() - 15          # margin for writing the report
        budget = min(float(sizes["compile_budget"]), left)
        log(f"a. torch.compile variants (budget {max(budget, 0):.0f} s) ...")
        try:
            res["sections"]["a"] += section_compile(overrides, device, sizes, budget, log)
        except Exception as e:   # e.g. the child could not start: every compiled variant is skipped
            traceback.print_exc()
            res["sections"]["a"] += [{"dtype": d, "channels_last": cl, "compile": True,
                                      "skipped": f"skipped ({type(e).__name__}: {str(e)[:120]})"}
                                     for d, cl in variants(device)]


def goals(res: dict) -> dict:
    s, out = res["sections"], {}
    b = s.get("bf")
    if isinstance(b, dict) and "error" not in b:
        out["real_vs_synthetic >= 0.95"] = b["real_vs_synthetic"] >= 0.95
        goal = 5.0 if res["env"]["device_type"] == "cuda" else 1.25
        out[f"gridtune_vs_naive >= {goal:g}"] = b["gridtune_vs_naive"] >= goal
    de = s.get("de")
    if isinstance(de, dict) and "error" not in de:
        runs = de.get("local", []) + de.get("slurm", [])
        out["decodes == clips"] = bool(runs) and all(r["decodes_ok"] for r in runs)
    g = s.get("g")
    if isinstance(g, dict) and "error" not in g and res["env"]["device_type"] == "cuda":
        b18 = [r for r in g["rows"] if r["b"] == 18 and "speedup" in r]
        out["fused B=18 >= 5x sequential"] = bool(b18) and b18[0]["speedup"] >= 5.0
    return out


if __name__ == "__main__":
    main()
