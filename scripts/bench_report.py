"""The benchmark's Markdown report: one table of every measurement, its ratio to the same run's baseline,
and the goal it is held to. Also judges each `auto` speed flag against what was measured for it.
"""
from __future__ import annotations

TOLERANCE = 0.03     # a flag within 3% of its baseline counts as "no measurable effect"


def _variant(rows, dtype, cl, compiled, **extra):
    for r in rows:
        if (r["dtype"], r["channels_last"], r["compile"]) == (dtype, cl, compiled) and \
                all(r.get(k, True) == v for k, v in extra.items()):
            return r
    return None


def _sps(r):
    return r.get("samples_per_s") if r else None


def flag_effects(steps: list[dict], auto: dict, half: str) -> list[dict]:
    """Each auto flag against the measured ratio of turning it on alone (fp32 NCHW eager baseline)."""
    base = _sps(_variant(steps, "fp32", False, False))
    checks = [("amp", auto["amp"] != "off", _variant(steps, half, False, False), f"{half} vs fp32"),
              ("channels_last", auto["channels_last"], _variant(steps, "fp32", True, False), "channels_last vs NCHW"),
              ("compile", auto["compile_k3"], _variant(steps, "fp32", False, True), "compiled vs eager"),
              ("cudnn.benchmark", auto["cudnn_benchmark"], None, "on vs off")]
    out = []
    for flag, on, row, what in checks:
        ratio = None
        if flag == "cudnn.benchmark":
            off = _sps(_variant(steps, half, True, False, cudnn_benchmark=False))
            on_row = _sps(_variant(steps, half, True, False))
            ratio = on_row / off if on_row and off else None
        elif base and _sps(row):
            ratio = _sps(row) / base
        if ratio is None:
            verdict = "not measured here" + (" (CUDA only)" if flag == "cudnn.benchmark" else "")
        elif abs(ratio - 1) <= TOLERANCE:
            verdict = "no measurable effect"
        else:
            verdict = "auto agrees" if (ratio > 1) == bool(on) else "auto disagrees"
        out.append({"flag": flag, "auto_on": bool(on), "measured": what, "ratio": ratio, "verdict": verdict})
    return out


def _x(v, digits=2):
    return f"{v:.{digits}f}×" if v is not None else "–"


def _met(ok):
    return "yes" if ok else "**no**"


def rows(res: dict) -> list[tuple[str, str, str, str, str]]:
    """(section, measurement, value, ratio, goal/verdict) rows of the table."""
    out = []
    s = {k: v for k, v in res["sections"].items() if not (isinstance(v, dict) and "error" in v)}
    a = s.get("a")
    if isinstance(a, list):
        base = _sps(_variant(a, "fp32", False, False))
        for r in a:
            name = (f"{r['dtype']} {'channels_last' if r['channels_last'] else 'NCHW'} "
                    f"{'compiled' if r['compile'] else 'eager'}" + (", cudnn.benchmark off" if
                                                                    r.get("cudnn_benchmark") is False else ""))
            if "skipped" in r:
                out.append(("a. step throughput", name, r["skipped"], "–", ""))
                continue
            value = f"{r['samples_per_s']:.1f} samples/s ({r['step_ms']:.0f} ms/step)"
            if r["compile"]:
                value += f", warm-up {r['warmup_s']:.0f} s"
            out.append(("a. step throughput", name, value, _x(r["samples_per_s"] / base if base else None),
                        "baseline" if r is _variant(a, "fp32", False, False) else ""))
        for f in res.get("flags", []):
            when = " at K≥3" if f["flag"] == "compile" else ""
            out.append(("a. auto flags", f"{f['flag']}: auto {'on' if f['auto_on'] else 'off'}{when}",
                        f["measured"], _x(f["ratio"]), f["verdict"]))
    b = s.get("bf")
    if isinstance(b, dict):
        sps = b["samples_per_s"]
        out.append(("b. data path", "synthetic tensors on device", f"{sps['synthetic']:.1f} samples/s", "1.00×",
                    "baseline"))
        path = ("cache→DeviceData→log-mel once per trial→SpecAugment→step" if b.get("feed") == "FeatureData"
                else "cache→DeviceData→log-mel→SpecAugment→step")
        out.append(("b. data path", f"real: {path}", f"{sps['real']:.1f} samples/s",
                    _x(b["real_vs_synthetic"], 3), f"≥ 0.95: {_met(b['real_vs_synthetic'] >= 0.95)}"))
        out.append(("b. data path", "feed only (no model), for scale", f"{b['feed_only_samples_per_s']:.0f} samples/s",
                    "–", ""))
    c = s.get("c")
    if isinstance(c, dict):
        total = c["total_s"]
        for name, sec in c["stages_s"].items():
            out.append(("c. trial start", name, f"{sec:.2f} s", f"{100 * sec / total:.0f}%", ""))
        out.append(("c. trial start", "python + imports", f"{c['python_and_imports_s']:.2f} s",
                    f"{100 * c['python_and_imports_s'] / total:.0f}%", ""))
        out.append(("c. trial start", "process start → first optimizer step", f"{total:.2f} s", "100%", ""))
    de = s.get("de")
    if isinstance(de, dict):
        for where in ("local", "slurm"):
            for r in de.get(where) or []:
                counts = sorted(set(r["decodes"]))
                out.append(("d. decodes per sweep", f"{where} K={r['k']}",
                            f"{'/'.join(map(str, counts))} decodes in each of {r['runs']} sweep(s), "
                            f"{de['clips']} clips, built by {'the driver' if r['built_by_driver'] else r['built_by']}",
                            "–",
                            f"= clips: {_met(r['decodes_ok'])}"))
        for where in ("local", "slurm"):
            runs = de.get(where) or []
            for r in runs:
                value = (f"{r['wall_s']:.1f} s median of " + ", ".join(f"{w:.1f}" for w in r["walls"]) +
                         f"; {r['trials']} trials: " + ", ".join(f"{n} {k}" for k, n in r["statuses"].items()))
                out.append(("e. sweep wall time", f"{de['grid']} grid, {where}, K={r['k']}",
                            value + (f" ({'; '.join(r['notes'])})" if r.get("notes") else ""),
                            _x(runs[0]["wall_s"] / r["wall_s"]), "baseline" if r is runs[0] else ""))
        if de.get("slurm_skipped"):
            out.append(("e. sweep wall time", "slurm", de["slurm_skipped"], "–", ""))
    f = s.get("bf")
    if isinstance(f, dict):
        goal = 5.0 if res["env"]["device_type"] == "cuda" else 1.25
        sps = f["samples_per_s"]
        out.append(("f. vs naive", f"naive DataLoader + librosa ({f['naive_workers']} workers), fp32 NCHW eager",
                    f"{sps['naive']:.1f} samples/s", "1.00×", "baseline"))
        out.append(("f. vs naive", "gridtune real path (b)", f"{sps['real']:.1f} samples/s",
                    _x(f["gridtune_vs_naive"]), f"≥ {goal:g}: {_met(f['gridtune_vs_naive'] >= goal)}"))
    g = s.get("g")
    if isinstance(g, dict):
        from bench_fused import report_rows
        out += report_rows(g)
    for key, val in res["sections"].items():
        if isinstance(val, dict) and "error" in val:
            out.append((f"{key}. (failed)", "", val["error"], "–", "**error**"))
    return out


def _auto_text(auto) -> str:
    if not auto:
        return "unknown"
    return (f"amp={auto['amp']}, channels_last={auto['channels_last']}, compile={auto['compile_k1']} (K=1) / "
            f"{auto['compile_k3']} (K=3), cudnn.benchmark={auto['cudnn_benchmark']}")


def markdown(res: dict) -> str:
    env = res["env"]
    head = [f"# gridtune benchmark ({'quick' if res['sizes'].get('quick') else 'default'} mode)", "",
            f"Device: {env['device_name']} ({env['device_type']}), torch {env['torch']}, {env['threads']} threads, "
            f"{env['cpu_count']} CPUs, load average {env['loadavg_start']:.1f} → {env['loadavg_end']:.1f}. "
            f"Flags a trial picks here (TrialRun's auto, unless overridden): {_auto_text(env.get('auto'))}. "
            f"Total {res['total_s']:.0f} s.", "",
            "Ratio: speed against the section's baseline from this same run (> 1 is faster); in b and f the "
            "median over rounds of each round's own ratio; in c, the stage's share of the start-up.", "",
            "| Section | Measurement | Value | Ratio | Goal / verdict |", "|---|---|---|---|---|"]
    body = [f"| {' | '.join(c.replace('|', '/') for c in r)} |" for r in rows(res)]
    return "\n".join(head + body) + "\n"
