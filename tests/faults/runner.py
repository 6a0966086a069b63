"""Runs `gridtune.sweep` exactly as `python -m gridtune.sweep` does, with two hooks for fault tests.

    python tests/faults/runner.py -m preset=debug ...        (same arguments as gridtune.sweep)

GRIDTUNE_TEST_KILL_ON=<file name>  SIGKILL this process inside `records.atomic_write_bytes` for that
    file name: after the temp file is written and fsynced, just before it is renamed into place.
    GRIDTUNE_TEST_KILL_NTH=<n> picks the n-th such write (default 1).
GRIDTUNE_TEST_GATE=<path>  import the heavy modules first, touch <path>.ready-<pid>, then wait until
    <path> exists: several drivers then start their sweep within milliseconds of each other.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path


def _install_kill_hook(target: str, nth: int) -> None:
    from gridtune.sweepdir import records
    real_write, real_replace = records.atomic_write_bytes, os.replace
    state = {"inside": None, "seen": 0}

    def write(path, data):
        state["inside"] = Path(path).name
        try:
            return real_write(path, data)
        finally:
            state["inside"] = None

    def replace(src, dst, *args, **kwargs):
        if state["inside"] == target and Path(dst).name == target:
            state["seen"] += 1
            if state["seen"] == nth:
                print(f"[runner] SIGKILL before renaming {src} -> {dst}", file=sys.stderr, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst, *args, **kwargs)

    records.atomic_write_bytes = write      # callers look it up on the module at call time
    os.replace = replace


def _wait_for_gate(gate: str) -> None:
    import torch  # noqa: F401  (the slow imports happen before the gate, not after it)
    import gridtune.train.engine  # noqa: F401
    import gridtune.sweep  # noqa: F401
    Path(f"{gate}.ready-{os.getpid()}").touch()
    deadline = time.monotonic() + 600
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            sys.exit("runner: gate never opened")
        time.sleep(0.005)


def main() -> None:
    if os.environ.get("GRIDTUNE_TEST_KILL_ON"):
        _install_kill_hook(os.environ["GRIDTUNE_TEST_KILL_ON"], int(os.environ.get("GRIDTUNE_TEST_KILL_NTH", "1")))
    if os.environ.get("GRIDTUNE_TEST_GATE"):
        _wait_for_gate(os.environ["GRIDTUNE_TEST_GATE"])
    from gridtune.sweep import main as sweep_main
    sweep_main()


if __name__ == "__main__":
    main()
