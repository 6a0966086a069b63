"""The budget's probe (`python -m gridtune.plan --probe`): measure a grid's shapes by training them here.

`run_probe(units, trials, cfg_of)` trains the first job unit (a trial, or a fused group) of each shape
for up to PROBE_EPOCHS epochs, as its job would (gridtune.train.fused.job.run_chunk: fused where fusion is on),
then the first unit once more: the process's first run is cold (it pays the one-off warm-up), the
later ones warm, as in a sweep. It also times what the sweep driver's validation adds to a plan's:
the torch import and the build checks (gridtune.checks.builds), and a lone trial's whole run, claim, records
and provenance included, as its wall time. Everything is written in a temporary
directory, removed afterwards, and read back through gridtune.sweepdir.ledger like any trial's records;
tracking is off. Only gridtune.budget calls it.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

from gridtune.sweepdir import ledger

PROBE_EPOCHS = 2


def run_probe(units, trials, cfg_of) -> tuple[list, float, float]:
    """(timed runs as sweepdir.timed_runs gives them, torch import s, the driver's validation s) for
    `units`, (trials, shape) pairs in launch order; `trials` are the grid's, `cfg_of` gives a config."""
    t0 = time.perf_counter()
    import torch  # noqa: F401  (timed: the driver's validation imports it)
    t1 = time.perf_counter()
    from .builds import check_builds
    from gridtune.train.fused.job import run_chunk
    check_builds(cfg_of(trials[0]))
    t2 = time.perf_counter()
    check_builds(cfg_of(trials[-1]))   # another trial's parts: built again when they differ (memoized)
    validate_s = (t2 - t0) + (len(trials) - 1) * (time.perf_counter() - t2)
    first: dict[str, list] = {}
    for unit, shape in units:
        first.setdefault(shape, unit)
    plan = [*first.values(), next(iter(first.values()))]
    runs: list = []
    with tempfile.TemporaryDirectory(prefix="gridtune-probe-") as tmp:
        for i, unit in enumerate(plan):
            print(f"gridtune: budget: probe {i + 1}/{len(plan)}: {len(unit)} trial(s) for up to {PROBE_EPOCHS} "
                  f"epochs{' (warm)' if i == len(plan) - 1 else ''} in {tmp}", flush=True)
            start = time.perf_counter()
            run_chunk([_entry(t, cfg_of(t), Path(tmp, str(i), t["trial_id"])) for t in unit])
            got = ledger.timed_runs([Path(tmp, str(i))])
            if len(unit) == 1:      # the trial as its job runs it: claim, records and provenance included
                for rec, _ in got:
                    rec["wall_time_s"] = time.perf_counter() - start
            runs += got
    return runs, t1 - t0, validate_s


def _entry(t: dict, cfg, out: Path) -> tuple:
    """A job entry (config, directory, overrides) of trial `t` that stops after PROBE_EPOCHS, untracked."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    OmegaConf.update(cfg, "train.stop_after_epoch", min(PROBE_EPOCHS, int(t["epochs"])), force_add=True)
    OmegaConf.update(cfg, "tracking", {"name": "none"}, merge=False)
    return cfg, out, list(t["overrides"])
