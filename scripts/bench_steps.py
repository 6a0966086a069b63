"""Benchmark parts that train: step throughput per speed flag, and the data paths compared on one loop.

Every measurement drives `gridtune.train.loop.train_epoch`, the trial's own loop (class-weighted CE plus
the L2 penalty, AMP, channels_last, optimizer and schedule steps), and only swaps what feeds it:
synthetic tensors already on the device, the trial's DeviceData -> log-mel -> SpecAugment path
(a `TrialRun`'s parts), or a DataLoader that decodes and computes the log-mel with librosa for every
item (the naive baseline). Compiled variants run in a child process, so a compile that outlives its
time budget can be killed and recorded as skipped.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CHILD = Path(__file__).resolve().with_name("bench_child.py")


def compose(overrides=()):
    """The composed trial config (conf/config.yaml) with these overrides, as a trial would see it."""
    from hydra import compose as hydra_compose, initialize_config_dir

    from gridtune.config import identity  # noqa: F401  (registers ${gridtune_trial_id:})
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


def sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class SyntheticData:
    """Stands in for DeviceData: the same (x, y) batch, already on the device, for every step."""

    def __init__(self, x, y):
        self.x, self.y, self.device = x, y, x.device

    def batches(self, indices, batch_size, generator=None, shuffle=False, drop_last=False):
        for _ in range(len(indices) // batch_size):
            yield self.x, self.y


def timed_epoch(parts: dict, data, features, augment, indices, batch: int, cfg) -> float:
    """Seconds of one `train_epoch` over `indices` (device synchronized before and after)."""
    import torch

    from gridtune.train.loop import train_epoch
    sync(data.device)
    t0 = time.perf_counter()
    train_epoch(0, parts["model"], features, augment, data, indices, parts["optimizer"], parts["scheduler"],
                parts.get("scaler"), batch_size=batch, generator=torch.Generator().manual_seed(0),
                amp_dtype=parts.get("amp_dtype"), l2=float(cfg.l2), class_weights=parts.get("class_weights"),
                grad_clip=float(cfg.train.grad_clip), diverge_loss=float(cfg.train.diverge_loss),
                channels_last=bool(parts.get("channels_last")))
    sync(data.device)
    return time.perf_counter() - t0


def build_parts(cfg, device, shape, n_classes: int, *, amp: str = "off", channels_last: bool = False,
                compiled: bool = False, labels=None) -> dict:
    """A fresh model, optimizer, schedule and loss weights, built the way TrialRun builds them."""
    import torch

    from gridtune.data.feed import class_weights
    from gridtune.train.loop import resolve_amp
    from gridtune.train.model import build_model
    from gridtune.train.optim import build_optimizer, build_scheduler
    torch.manual_seed(0)
    model = build_model(cfg.model, n_classes, tuple(shape)).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.sched, epochs=1, steps_per_epoch=1, objective_mode=cfg.objective_mode)
    amp_dtype, use_scaler = resolve_amp(amp, device)
    labels = np.arange(n_classes) if labels is None else labels
    w = torch.tensor(class_weights(np.asarray(labels), n_classes), dtype=torch.float32, device=device)
    return {"model": torch.compile(model) if compiled else model, "optimizer": optimizer, "scheduler": scheduler,
            "scaler": torch.amp.GradScaler("cuda") if use_scaler else None, "amp_dtype": amp_dtype,
            "channels_last": channels_last, "class_weights": w}


def half_dtype(device) -> str:
    """The reduced precision measured on this device: bf16, or fp16 on a GPU without bf16."""
    import torch
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "fp16"
    return "bf16"


def measure_variants(cfg, device, specs: list[dict], *, batch: int, size: int, steps: int, warmup: int,
                     rounds: int = 1) -> list[dict]:
    """Training-step throughput on synthetic (B, 1, size, size) inputs on the device, per spec
    ({dtype, channels_last, compile[, cudnn_benchmark]}). Rounds alternate between the specs, so a
    slow moment of the machine is shared; the median round counts."""
    import torch
    n_classes = len(cfg.data.classes)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(batch, 1, size, size, generator=g).to(device)
    y = torch.randint(0, n_classes, (batch,), generator=g).to(device)
    ident, built = torch.nn.Identity(), []

    def epoch(spec, parts, data, n_steps):
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = spec.get("cudnn_benchmark", True)   # auto's choice on CUDA
        return timed_epoch(parts, data, ident, ident, np.arange(n_steps * batch), batch, cfg)

    for spec in specs:
        cl = bool(spec["channels_last"])
        x = x0.contiguous(memory_format=torch.channels_last) if cl else x0
        amp = {"fp32": "off"}.get(spec["dtype"], spec["dtype"])
        parts = build_parts(cfg, device, (size, size), n_classes, amp=amp, channels_last=cl,
                            compiled=bool(spec["compile"]), labels=y.cpu().numpy())
        data = SyntheticData(x, y)
        built.append((spec, parts, data, epoch(spec, parts, data, max(warmup, 1))))
    times: list[list[float]] = [[] for _ in specs]
    for _ in range(max(rounds, 1)):
        for i, (spec, parts, data, _) in enumerate(built):
            times[i].append(epoch(spec, parts, data, steps))
    out = []
    for (spec, _, _, warm), t in zip(built, times):
        sec = float(np.median(t))
        out.append({**spec, "samples_per_s": steps * batch / sec, "step_ms": 1000 * sec / steps, "warmup_s": warm,
                    "steps": steps, "rounds": len(t), "batch": batch})
    return out


def measure_variant(cfg, device, dtype: str, channels_last: bool, compiled: bool, **sizes) -> dict:
    spec = {"dtype": dtype, "channels_last": channels_last, "compile": compiled}
    return measure_variants(cfg, device, [spec], **sizes)[0]


def variants(device) -> list[tuple[str, bool]]:
    """(dtype, channels_last) pairs; the order is also the compile order (the flag's own pair first)."""
    half = half_dtype(device)
    return [("fp32", False), (half, True), ("fp32", True), (half, False)]


def run_child(mode: str, params: dict, timeout: float, env: dict | None = None) -> tuple[list[dict], str | None]:
    """Run bench_child.py in its own process group; (the JSON records it printed, why it stopped early)."""
    proc = subprocess.Popen([sys.executable, str(CHILD), mode, json.dumps(params)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, **(env or {})})
    stopped = None
    try:
        out, _ = proc.communicate(timeout=max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)    # the child's own group: it and its compile workers
        out, _ = proc.communicate()
        stopped = f"time budget of {timeout:.0f} s used up"
    records = [json.loads(line[6:]) for line in out.splitlines() if line.startswith("BENCH ")]
    if stopped is None and proc.returncode != 0:
        tail = [line for line in out.splitlines() if line.strip()][-1:] or ["no output"]
        stopped = f"exit {proc.returncode}: {tail[0][:160]}"
    return records, stopped


def section_steps(cfg, device, sizes: dict, log) -> list[dict]:
    """a. fp32/half x NCHW/channels_last, eager, plus cudnn.benchmark off on CUDA."""
    specs = [{"dtype": d, "channels_last": cl, "compile": False} for d, cl in variants(device)]
    if device.type == "cuda":
        specs.append({"dtype": half_dtype(device), "channels_last": True, "compile": False, "cudnn_benchmark": False})
    rows = measure_variants(cfg, device, specs, rounds=sizes["rounds"],
                            **{k: sizes[k] for k in ("batch", "size", "steps", "warmup")})
    for r in rows:
        extra = ", cudnn.benchmark off" if r.get("cudnn_benchmark") is False else ""
        log(f"a. {r['dtype']:4s} {'channels_last' if r['channels_last'] else 'NCHW':13s} eager    "
            f"{r['samples_per_s']:8.1f} samples/s{extra}")
    return rows


def section_compile(overrides, device, sizes: dict, budget: float, log) -> list[dict]:
    """a. the same variants under torch.compile, in a child process killed when `budget` seconds are up."""
    pending = [{"dtype": d, "channels_last": cl} for d, cl in variants(device)]
    if budget <= 0:
        why = "--compile-budget 0" if sizes["compile_budget"] <= 0 else "no time left under --time-limit"
        return [{**p, "compile": True, "skipped": f"skipped ({why})"} for p in pending]
    common = {k: sizes[k] for k in ("batch", "size", "steps", "warmup", "rounds")}
    env = {"TORCHINDUCTOR_CACHE_DIR": str(Path(sizes["tmp"]) / "inductor")}   # cold: what a fresh job pays
    got, stopped = run_child("compile", {"overrides": list(overrides), "device": str(device), "variants": pending,
                                         **common}, budget, env)
    done = {(g["dtype"], g["channels_last"]): g for g in got}
    rows = []
    for p in pending:
        g = done.get((p["dtype"], p["channels_last"]))
        if g is None:
            g = {**p, "skipped": f"skipped ({stopped or 'not run'})"}
        elif "error" in g:
            g = {**p, "skipped": f"skipped ({g['error']})"}
        rows.append({**g, "compile": True})
        what = g.get("skipped") or f"{g['samples_per_s']:8.1f} samples/s (warm-up {g['warmup_s']:.0f} s)"
        log(f"a. {p['dtype']:4s} {'channels_last' if p['channels_last'] else 'NCHW':13s} compiled {what}")
    return rows
