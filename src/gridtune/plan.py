"""`python -m gridtune.plan <same args as gridtune.sweep>`: a dry run of a sweep.

A Hydra app on conf/plan.yaml, which is conf/config.yaml in multirun mode with the sweeper's
`dry_run: true`: it composes and validates every trial exactly as the sweep driver would (same
sweeper, same validation path), then prints the trial count, which trials are already done and
will be skipped, and the estimated cost in clip-epochs, and launches nothing. `-m` is accepted and
changes nothing. It also prints the grid's estimated device-hours and wall time (gridtune.checks.budget);
`--probe` measures them first, training each shape's first trial for a couple of epochs in a
temporary directory. Exit code 2 when the grid is invalid or over launcher.max_gpu_hours.
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from gridtune.config.schema import CONF_DIR


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="plan")
def _main(cfg: DictConfig) -> None:   # never called: the dry run returns before launching
    raise RuntimeError("gridtune.plan launched a job")


def main() -> None:
    import sys
    if "--probe" in sys.argv[1:]:
        sys.argv = [a for a in sys.argv if a != "--probe"] + ["hydra.sweeper.probe=true"]
    from gridtune.checks.validation import run_app
    run_app(_main, "gridtune.plan")


if __name__ == "__main__":
    main()
