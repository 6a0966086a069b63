"""A launch's jobs and what came back: the manifest of the grid, the shared audio cache prepared once,
the configs chunk members load, the jobs (`launcher.trials_per_job` trials each; a halving rung's
stop epoch), the cache key passed down, the jobs that raised, and the one summary line.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from gridtune.config.knobs import params_of
from gridtune.data import feed
from gridtune.data.audio import BadAudio
from gridtune.sweepdir import ledger, records, rundir


def write_manifest(sweep_dir: Path, trials: list[dict]) -> None:
    """The current grid's trials. Finished trials of earlier grids in this directory still show in
    the reducer and status (they read the trial dirs), but they are no longer expected."""
    cfg0 = trials[0]["cfg"]
    records.write_json(sweep_dir / records.MANIFEST, {
        "sweep": cfg0.sweep_name, "objective": cfg0.objective, "objective_mode": cfg0.objective_mode,
        "trials": [{"trial_id": t["trial_id"], "overrides": t["overrides"], "epochs": t["epochs"],
                    "params": params_of(t["cfg"], t["overrides"])} for t in trials]})


def prepare_cache(cfg) -> None:
    """Decode the audio once, in the driver, before any job starts (exit 2 on a file it must refuse)."""
    t0 = time.perf_counter()
    try:
        p = feed.prepare(cfg)
    except BadAudio as e:   # data.on_bad_file=error met a file it cannot use: one line, no trial runs
        print(f"gridtune: {e} (data.on_bad_file=error); nothing was launched", file=sys.stderr)
        sys.exit(2)
    state = "built" if p.entry.built else "found"
    print(f"gridtune: audio cache {state}: {len(p.labels)} clips, {len(p.skipped)} skipped, "
          f"{p.entry.path} ({time.perf_counter() - t0:.1f}s)", flush=True)


def keyed(todo: list[dict]) -> list[dict]:
    """The trials as launched, each with the cache key of the data the driver indexed (data.cache_key:
    not part of its identity, never among its recorded overrides): a trial need not index it again."""
    for t in todo:
        if t.get("cache_key"):
            OmegaConf.update(t["cfg"], "data.cache_key", t["cache_key"])
    return [{**t, "overrides": [*t["overrides"], f"data.cache_key='{t['cache_key']}'"]} if t.get("cache_key")
            else t for t in todo]


def chunks(sweep_dir: Path, todo: list[dict], k: int, stop_after: int | None = None) -> list[list[str]]:
    """Write the configs chunk members load, then the jobs' overrides: <= k trials each (the first
    trial's overrides, the others named in launcher.chunk), to `stop_after` epochs when given."""
    extra = [f"++train.stop_after_epoch={stop_after}"] if stop_after else []
    for t in todo:
        hydra_dir = sweep_dir / t["trial_id"] / ".hydra"
        cfg = OmegaConf.masked_copy(t["cfg"], [key for key in t["cfg"] if key != "hydra"])
        OmegaConf.update(cfg, "train.stop_after_epoch", stop_after, force_add=True)
        records.atomic_write_text(hydra_dir / "config.yaml", OmegaConf.to_yaml(cfg))
        records.atomic_write_text(hydra_dir / "overrides.yaml", OmegaConf.to_yaml(t["overrides"]))
    jobs = []
    for i in range(0, len(todo), k):
        chunk = todo[i:i + k]
        ids = ",".join(f"'{t['trial_id']}'" for t in chunk[1:])
        jobs.append(chunk[0]["overrides"] + extra + ([f"++launcher.chunk=[{ids}]"] if ids else []))
    return jobs


def raised(returns) -> int:
    """How many jobs raised (a trial's own failure is a status in its record), each said on stderr."""
    from hydra.core.utils import JobStatus
    n = 0
    for r in returns or []:
        if getattr(r, "status", None) == JobStatus.FAILED:
            n += 1
            err = r._return_value
            print(f"gridtune: job [{' '.join(r.overrides or [])}] raised {type(err).__name__}: "
                  f"{' '.join(str(err).split())[:300]}", file=sys.stderr)
    return n


def summary(sweep_dir: Path, trials: list[dict]) -> dict[str, int]:
    """The grid's trials as `gridtune.status` and the reducer count them (same states, same order)."""
    ids = {t["trial_id"] for t in trials}
    states = [t for t in ledger.read_sweep(sweep_dir).trials if t.trial_id in ids]
    print(f"gridtune: {rundir.counts_line(states)}. Leaderboard: python -m gridtune.reduce {sweep_dir}",
          flush=True)
    return rundir.counts(states)
