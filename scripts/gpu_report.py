"""The GPU check's report: gathers what each step left in the work folder into gpu_check.json and
gpu_check.md, and prints the summary table (standard library only, so it runs whatever broke).

    python3 scripts/gpu_report.py WORK OUT [--tiny]

WORK holds steps.tsv (one line per step: name, status, exit code, seconds, limit) and the steps'
JSON files: device.json, data.json, bench/bench.json, compare.json, predict.json. A step that did
not finish leaves its figures out; the table says so rather than showing a number. Exit status:
0 when every step finished, else 1.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

GOAL_SPEEDUP, GOAL_FUSED_S = 5.0, 120.0


def load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def steps(work: Path) -> list[dict]:
    out = []
    try:
        lines = (work / "steps.tsv").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        name, status, rc, secs, limit = line.split("\t")
        out.append({"step": name, "status": status, "exit": int(rc), "seconds": float(secs), "limit_s": int(limit)})
    return out


def train_step(bench: dict | None) -> dict | None:
    """Section a's reduced-precision channels_last rows (eager and compiled) and the fp32 NCHW baseline."""
    rows = (bench or {}).get("sections", {}).get("a")
    if isinstance(rows, dict) and "error" in rows:
        return {"error": rows["error"]}
    if not isinstance(rows, list):
        return None
    half = next((r["dtype"] for r in rows if r["dtype"] != "fp32"), "bf16")

    def pick(dtype, cl, comp):
        return next((r for r in rows if r["dtype"] == dtype and r["channels_last"] == cl
                     and r["compile"] == comp and "cudnn_benchmark" not in r), None)
    out = {"dtype": half, "batch": bench["sizes"].get("batch"), "size": bench["sizes"].get("size")}
    for key, row in (("eager", pick(half, True, False)), ("compiled", pick(half, True, True)),
                     ("fp32_nchw_eager", pick("fp32", False, False))):
        if row is None:
            out[key] = None
        elif "samples_per_s" in row:
            out[key] = {"samples_per_s": row["samples_per_s"], "step_ms": row["step_ms"],
                        **({"warmup_s": row["warmup_s"]} if row.get("compile") else {})}
        else:
            out[key] = {"skipped": row.get("skipped", "not measured")}
    return out


def data_path(bench: dict | None) -> dict | None:
    bf = (bench or {}).get("sections", {}).get("bf")
    if not isinstance(bf, dict):
        return None
    if "error" in bf:
        return {"error": bf["error"]}
    return {"real_vs_synthetic": bf["real_vs_synthetic"], "gridtune_vs_naive": bf["gridtune_vs_naive"],
            "samples_per_s": bf["samples_per_s"], "batch": bf["batch"], "input_shape": bf["input_shape"]}


def summarize(work: Path, tiny: bool) -> dict:
    bench = load(work / "bench" / "bench.json")
    res = {"mode": "tiny" if tiny else "full", "device": load(work / "device.json"), "steps": steps(work),
           "data": load(work / "data.json"), "train_step": train_step(bench), "data_path": data_path(bench),
           "task11": load(work / "compare.json"), "predict": load(work / "predict.json")}
    t = res["task11"] or {}
    if "fused_speedup" in t and not tiny:
        res["goals"] = {f"fused >= {GOAL_SPEEDUP:g}x sequential": t["fused_speedup"] >= GOAL_SPEEDUP,
                        f"fused grid <= {GOAL_FUSED_S:g} s": bool(t["fused"]["finished"])
                        and t["fused"]["wall_s"] <= GOAL_FUSED_S}
    return res


def _f(x, fmt="{:.1f}", none="–"):
    return none if x is None else fmt.format(x)


def _wall(a: dict | None) -> str:
    if not a or a.get("wall_s") is None:
        return "–"
    if a["finished"]:
        return f"{a['wall_s']:.1f} s"
    if a["estimated"]:
        return (f"stopped at {a['wall_s']:.0f} s with {a['epochs_done']}/{a['epochs_total']} epochs: "
                f"whole grid est. {a['wall_s_grid']:.0f} s")
    return f"stopped at {a['wall_s']:.0f} s, no epoch done"


def table(res: dict) -> list[tuple[str, str]]:
    rows = []
    ts = res["train_step"]
    if ts and "error" in ts:
        rows.append(("train step", ts["error"]))
    elif ts:
        for key, label in (("eager", "eager"), ("compiled", "compiled")):
            r = ts.get(key)
            what = ("not measured" if r is None else r["skipped"] if "skipped" in r
                    else f"{r['samples_per_s']:.0f} samples/s ({r['step_ms']:.1f} ms/step)")
            size = f"batch {ts['batch']}, {ts['size']}²"
            rows.append((f"train step, {ts['dtype']} channels_last {label} ({size})", what))
    else:
        rows.append(("train step", "not measured (bench step did not finish)"))
    dp = res["data_path"]
    if dp and "error" not in dp:
        rows.append(("data path: real / synthetic tensors", f"{dp['real_vs_synthetic']:.2f}"))
        rows.append(("data path: gridtune / naive librosa DataLoader", f"{dp['gridtune_vs_naive']:.1f}×"))
    else:
        rows.append(("data path", (dp or {}).get("error", "not measured")))
    t = res["task11"]
    if t:
        n = t["fused"]["trials"]
        rows.append((f"task11 sequential ({n} trials, one process)", _wall(t["sequential"])))
        rows.append((f"task11 fused (B = {n})", _wall(t["fused"])))
        sp = t.get("fused_speedup")
        est = " (estimated)" if t.get("fused_speedup_estimated") else ""
        rows.append(("fused vs sequential", "–" if sp is None else f"{sp:.2f}×{est}"))
        lb = t["leaderboards"]
        if lb.get("compared"):
            rows.append(("leaderboards: same trial ids / same winner",
                         f"{'yes' if lb['same_ids'] else 'no'} / {'yes' if lb['same_winner'] else 'no'} "
                         f"({lb['winner_sequential']} vs {lb['winner_fused']})"))
            rows.append(("leaderboards: largest Δ objective over configs", f"{lb['max_abs_objective_diff']:.4f} "
                         f"({lb['compared']} configs, rank correlation {_f(lb['rank_correlation'], '{:.2f}')})"))
    else:
        rows.append(("task11 sequential vs fused", "not compared (see the steps)"))
    p = res["predict"]
    rows.append(("predict files/s: loop / whole command",
                 "not measured" if not p else f"{p['loop_files_per_s']:.1f} / {p['command_files_per_s']:.1f} "
                 f"({p['files']} files of {p['seconds_per_file']:g} s on {p['device']})"))
    for goal, ok in (res.get("goals") or {}).items():
        rows.append((f"goal: {goal}", "yes" if ok else "no"))
    for s in res["steps"]:
        status = s["status"].replace("_", " ")
        rows.append((f"step {s['step']}", f"{status} ({s['seconds']:.0f} s of {s['limit_s']} s)"))
    return rows


def markdown(res: dict) -> str:
    d = res["device"] or {}
    head = (f"# gridtune GPU check ({res['mode']})\n\nDevice: {d.get('device_name', '?')}, "
            f"torch {d.get('torch', '?')}, Python {d.get('python', '?')}, {d.get('cpus', '?')} CPUs.")
    if res["data"]:
        x = res["data"]
        head += (f" Data: {x['clips']} synthetic clips ({x['recordings']} recordings, {x['sample_rate']} Hz) written "
                 f"in {x['generate_s']:.1f} s, decoded into the cache in {x['cache_s']:.1f} s.")
    lines = [head, "", "| Measure | Value |", "|---|---|"]
    cell = lambda text: str(text).replace("|", "\\|")   # noqa: E731
    lines += [f"| {cell(k)} | {cell(v)} |" for k, v in table(res)]
    t = res["task11"] or {}
    if any((t.get(arm) or {}).get("estimated") for arm in ("sequential", "fused")):
        lines += ["", "An arm stopped by its time limit is estimated for the whole grid: its wall time plus the "
                  "epochs it did not reach at the mean epoch time of those it did. The start-up of trials it did "
                  "not reach is not counted, so the estimate is low (a speedup against an estimated sequential "
                  "arm is a lower bound)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("work", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--tiny", action="store_true")
    a = ap.parse_args(argv)
    res = summarize(a.work, a.tiny)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "gpu_check.json").write_text(json.dumps(res, indent=1) + "\n")
    (a.out / "gpu_check.md").write_text(markdown(res))
    rows = table(res)
    width = max(len(k) for k, _ in rows)
    print(f"\ngridtune GPU check ({res['mode']}): {(res['device'] or {}).get('device_name', '?')}")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    return 0 if res["steps"] and all(s["status"] == "finished" for s in res["steps"]) else 1


if __name__ == "__main__":
    sys.exit(main())
