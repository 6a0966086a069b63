"""Torch on disk and in the process, below the engine: checkpoint save/load, the thread count and
the CPU kernels.

`save_torch` writes atomically through `gridtune.sweepdir.records`; `load_torch` always loads with
weights_only=True, so no pickled code runs. torch is imported inside the functions only.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

from gridtune.sweepdir import records


def save_torch(path: Path, obj) -> None:
    import torch
    buf = io.BytesIO()
    torch.save(obj, buf)
    records.atomic_write_bytes(path, buf.getvalue())


def load_torch(path: Path, device="cpu"):
    """Checkpoints and models load with weights_only=True: no pickled code runs."""
    import torch
    return torch.load(path, map_location=device, weights_only=True)


def set_cpu(cfg) -> None:
    """Torch threads: train.threads, else SLURM's CPUs for the task, else the CPUs this process may use
    (not the machine's core count, which oversubscribes a shared node); and whether CPU convolutions
    go through oneDNN (train.onednn; absent from records written before it existed: on)."""
    import torch
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    n = cfg.train.get("threads") or os.environ.get("SLURM_CPUS_PER_TASK") or usable or 1
    torch.set_num_threads(int(n))
    torch.backends.mkldnn.enabled = bool(cfg.train.get("onednn", True))
