"""`python -m gridtune.sweep`: the Hydra app. One trial per run; a grid with `-m`.

    python -m gridtune.sweep                                # one trial, defaults, in hydra.run.dir
    python -m gridtune.sweep -m lr=1e-3,5e-4,1e-4           # three trials, local launcher
    python -m gridtune.sweep -m sweep=task11 launcher=slurm # the report's 18-trial grid as a job array

Both modes run the same validation path (gridtune.checks.validation) before anything is created: in
multirun mode the gridtune sweeper (hydra_plugins/gridtune_sweeper) composes and validates the whole
grid, skips trials already done, and hands the rest to the launcher; in single-run mode the
`Gate` callback (conf/config.yaml) validates the one trial before Hydra makes its run directory.
Each job runs this task function: its own trial, plus (with launcher.trials_per_job > 1) the other
trials of its chunk, whose configs the driver wrote into their directories beforehand; with
launcher.fuse the chunk's fusable trials train as one fused model (gridtune.train.fused.job).
Exit codes: 0 when every trial ended ok or diverged, 1 when one did not, 2 for invalid input.
"""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from gridtune.config import identity   # registers ${gridtune_trial_id:}
from gridtune.sweepdir import records
from gridtune.config.schema import CONF_DIR


def _run_one(cfg: DictConfig, out_dir: Path, overrides: list[str]) -> dict:
    from gridtune.train.trial import run_trial
    return run_trial(cfg, out_dir, overrides=overrides)


def task(cfg: DictConfig) -> float | None:
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    if hc.mode.name != "MULTIRUN":          # single run: the exit code says how the trial ended
        rec = _run_one(cfg, out_dir, list(hc.overrides.task))
        if rec.get("status") not in (*records.FINAL_STATUSES, "paused"):
            print(f"gridtune: trial {rec.get('trial_id')} ended {rec.get('status')}: {rec.get('error') or ''}".rstrip(),
                  file=sys.stderr, flush=True)
            sys.exit(1)
        return (rec.get("metrics") or {}).get(cfg.objective)
    identity.check_inside(out_dir, hc.sweep.dir, "hydra.sweep.subdir")
    entries = [(cfg, out_dir, list(hc.overrides.task))]
    for tid in cfg.launcher.get("chunk") or []:     # the rest of this job's chunk
        trial_dir = identity.check_inside(Path(hc.sweep.dir) / str(tid), hc.sweep.dir, "launcher.chunk")
        member = OmegaConf.load(trial_dir / ".hydra" / "config.yaml")
        entries.append((member, trial_dir, list(OmegaConf.load(trial_dir / ".hydra" / "overrides.yaml"))))
    if len(entries) == 1:
        rec = _run_one(cfg, out_dir, entries[0][2])
    else:
        from gridtune.train.fused.job import run_chunk                # fusable trials of the chunk train as one model
        rec = run_chunk(entries)[0]
    return (rec.get("metrics") or {}).get(cfg.objective)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _main(cfg: DictConfig) -> float | None:
    return task(cfg)


def main() -> None:
    if not Path(CONF_DIR, "config.yaml").exists():
        sys.exit(f"gridtune: {CONF_DIR}/config.yaml not found (install gridtune from its checkout: pip install -e .)")
    from gridtune.checks.validation import run_app
    run_app(_main, "gridtune")


if __name__ == "__main__":
    main()
