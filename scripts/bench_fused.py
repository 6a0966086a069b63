"""Benchmark section g: the task11 grid's 18 trials one after another in one process vs fused groups.

Every arm trains the same 18 configs (dropout x lr x l2 of conf/sweep/task11.yaml, the default
224x224 model) on the same synthetic log-mel batches with the trial's own SpecAugment, at the dtype
and memory format a trial picks on this device (bf16 + channels_last on CUDA):
  sequential  each trial alone with `gridtune.train.loop.train_epoch` (K = 18 trials in one process: no
              start-up cost, the baseline), `warmup` + `steps` steps each, only `steps` timed;
  fused B     the 18 trials in groups of B (2, 6, 18) with `gridtune.train.fused.loop.train_epoch`.
Reported per arm: the wall time of the timed steps of all 18 trials, and samples/s per model
(18 · steps · batch / wall). Ratios are against the sequential arm of the same run.
"""
from __future__ import annotations

import itertools
import time
from types import SimpleNamespace

import numpy as np

TASK11 = {"dropout": (0.3, 0.4, 0.5), "lr": (1e-3, 5e-4, 1e-4), "l2": (1e-3, 1e-4)}
DEFAULTS = {"cpu": dict(batch=8, steps=2, warmup=1, bs="2,6,18"),     # 18 x batch 32 fp32 needs ~16 GB
            "cuda": dict(batch=32, steps=20, warmup=5, bs="2,6,18"),
            "quick": dict(batch=2, steps=1, warmup=1, bs="2,4")}


def _configs(overrides, n_trials: int):
    from bench_steps import compose
    grid = [dict(zip(TASK11, v)) for v in itertools.product(*TASK11.values())][:n_trials]
    return [compose([*overrides, *(f"{k}={v}" for k, v in g.items())]) for g in grid]


def _member(cfg, device, shape, n_classes: int, steps: int, channels_last: bool, weights):
    import torch

    from gridtune.train.model import build_model
    from gridtune.train.optim import build_optimizer, build_scheduler
    torch.manual_seed(int(cfg.seed))
    model = build_model(cfg.model, n_classes, shape).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer(model, cfg.optim)
    sched = build_scheduler(opt, cfg.sched, epochs=1, steps_per_epoch=max(steps, 1), objective_mode=cfg.objective_mode)
    return SimpleNamespace(cfg=cfg, model=model, optimizer=opt, scheduler=sched, class_weights=weights,
                           classes=list(cfg.data.classes))


def section_fused(overrides, device, sizes: dict, log) -> dict:
    import torch

    from bench_steps import SyntheticData, sync
    from gridtune.train import frontend, loop
    from gridtune.train.fused import loop as fused_loop, grouping
    from gridtune.train.fused.model import FusedCNN
    batch, steps, warmup, size = int(sizes["fused_batch"]), int(sizes["fused_steps"]), int(sizes["fused_warmup"]), 224
    bs = [int(b) for b in str(sizes["fused_bs"]).split(",") if b.strip()]
    cfgs = _configs(overrides, int(sizes.get("fused_trials", 18)))
    cfg0 = cfgs[0]
    if sizes.get("quick"):
        size = 64
    amp_dtype, _ = loop.resolve_amp(cfg0.train.amp, device)
    channels_last = True
    n_classes = len(cfg0.data.classes)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, size, size, generator=g).to(device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, n_classes, (batch,), generator=g).to(device)
    data, ident = SyntheticData(x, y), torch.nn.Identity()
    augment = frontend.build_augment(cfg0.augment).to(device)
    weights = torch.ones(n_classes, device=device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    def run_sequential(n_steps, members):
        t = 0.0
        for m in members:
            sync(device)
            t0 = time.perf_counter()
            loop.train_epoch(0, m.model, ident, augment, data, np.arange(n_steps * batch), m.optimizer, m.scheduler,
                             None, batch_size=batch, generator=g, amp_dtype=amp_dtype, l2=float(m.cfg.l2),
                             class_weights=weights, grad_clip=0.0, diverge_loss=1e9, channels_last=channels_last)
            sync(device)
            t += time.perf_counter() - t0
        return t

    def run_group(n_steps, fused, members):
        sync(device)
        t0 = time.perf_counter()
        fused_loop.train_epoch(0, fused, members, ident, augment, data, np.arange(n_steps * batch), batch_size=batch,
                               generator=g, amp_dtype=amp_dtype, channels_last=channels_last)
        sync(device)
        return time.perf_counter() - t0

    def members_of(group):
        return [_member(cfgs[i], device, (size, size), n_classes, warmup + steps, channels_last, weights) for i in group]

    rows = []
    members = members_of(range(len(cfgs)))
    run_sequential(warmup, members)
    wall = run_sequential(steps, members)
    rows.append({"arm": "sequential", "b": 1, "wall_s": wall, "groups": len(cfgs)})
    log(f"g. sequential {len(cfgs)} trials: {wall:.2f} s for {steps} step(s) each")
    del members
    for b in bs:
        wall, parts = 0.0, grouping.split_evenly(list(range(len(cfgs))), b)
        try:
            for part in parts:
                members = members_of(part)
                fused = FusedCNN([m.model for m in members])
                run_group(warmup, fused, members)
                wall += run_group(steps, fused, members)
                del fused, members
            rows.append({"arm": f"fused B={b}", "b": b, "wall_s": wall, "groups": len(parts)})
            log(f"g. fused B={b} ({len(parts)} groups): {wall:.2f} s")
        except torch.OutOfMemoryError as e:
            rows.append({"arm": f"fused B={b}", "b": b, "skipped": f"out of memory ({str(e).splitlines()[0][:80]})"})
            log(f"g. fused B={b}: out of memory")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    base = rows[0]["wall_s"]
    for r in rows:
        if "wall_s" in r:
            r["samples_per_s_per_model"] = len(cfgs) * steps * batch / r["wall_s"]
            r["speedup"] = base / r["wall_s"]
    return {"rows": rows, "trials": len(cfgs), "batch": batch, "size": size, "steps": steps, "warmup": warmup,
            "dtype": str(amp_dtype).replace("torch.", "") if amp_dtype else "fp32", "channels_last": channels_last}


def report_rows(g: dict) -> list[tuple[str, str, str, str, str]]:
    """Rows of bench.md's table for section g."""
    out = []
    what = (f"task11, {g['trials']} trials, {g['size']}x{g['size']}, batch {g['batch']}, {g['dtype']}"
            f"{' channels_last' if g['channels_last'] else ''}, {g['steps']} step(s) each")
    for r in g["rows"]:
        if "skipped" in r:
            out.append(("g. fused trials", f"{r['arm']}: {what}", r["skipped"], "–", ""))
            continue
        value = (f"{r['samples_per_s_per_model']:.1f} samples/s per model, {r['wall_s']:.2f} s wall "
                 f"({r['groups']} group(s))")
        goal = "baseline (K=18 in one process)" if r["b"] == 1 else ("≥ 5× on an H100/H200" if r["b"] == 18 else "")
        out.append(("g. fused trials", f"{r['arm']}: {what}", value, f"{r['speedup']:.2f}×", goal))
    return out
