"""The one validation path: what every entry point runs before it creates a directory, trial or job.

sweep (single run and multirun), plan, final and lr_find all go through here:

- `trial_problems(cfg)`: the value checks (gridtune.config.checks), then the builders' own checks
  (gridtune.checks.builds, imported lazily: it brings torch), then where the trial would write;
- `extra_checks(cfgs, launcher)`: checks over the whole set of composed trial configs and the
  Hydra launcher config (gridtune.checks.preflight: the data each trial reads, the SLURM request against
  the cluster), one-line problems;
- `refuse(problems)`: prints a count and one line per problem on stderr, the last line naming a
  culprit, and exits 2.

`Gate` is a Hydra callback (conf/config.yaml, hydra.callbacks) that runs the same path in single-run
mode, before Hydra creates the run directory; `run_app(main)` runs a Hydra app so that what Hydra
itself refuses (a wrong type, an unknown key or option, a bad override) is one line and exit 2 too.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Iterable, Mapping, NoReturn, Sequence

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from gridtune.config import checks
from gridtune.sweepdir import records
from gridtune.config.identity import ConfigError, check_inside

DEFAULT_SUBDIR = "${gridtune_trial_id:}"    # conf/config.yaml's hydra.sweep.subdir


def trial_problems(cfg: DictConfig, sweep_dir: Path | None = None, *, deep: bool = True,
                   values: Mapping | None = None) -> list[str]:
    """One trial's problems: values, then (`deep`, when the values are fine) each part built on the
    meta device, then where it would write. `deep=False` (planning) leaves out the builds, whose
    torch import costs seconds; every check the builders make is also in checks.validate. `values`,
    when given, is the same trial resolved to plain containers (gridtune.config.planner): the value checks
    read it instead of resolving cfg key by key; should it not read (a shape no check expects),
    they read cfg, which then says what is wrong as it always did."""
    bad = _checked(cfg, values)
    if not bad and deep:
        from .builds import check_builds
        bad = check_builds(cfg)
    sweep = (cfg if values is None else values)["hydra"]["sweep"] if sweep_dir else None
    subdir = OmegaConf.to_container(sweep, resolve=False).get("subdir") if sweep_dir else None
    if sweep_dir is not None and subdir != DEFAULT_SUBDIR:     # the trial id cannot escape; anything else may
        try:            # where Hydra will write this trial: inside the sweep dir
            check_inside(sweep_dir / str(sweep.subdir), sweep_dir, "hydra.sweep.subdir")
        except ConfigError as e:
            bad = [*bad, str(e)]
    return bad


def _checked(cfg: DictConfig, values: Mapping | None) -> list[str]:
    if values is not None:
        try:
            return checks.validate(values)
        except Exception:     # noqa: BLE001  (cfg's own reading raises or reports it)
            pass
    return checks.validate(cfg)


def extra_checks(cfgs: Iterable[DictConfig], launcher: DictConfig | None = None) -> list[str]:
    """Problems of the composed trials taken together and of the launcher config, one line each:
    gridtune.checks.preflight's checks of the data each trial reads (each root indexed once) and of the
    SLURM request against the cluster. `cfgs` may be the planner's view of a grid
    (gridtune.config.planner.View), which reuses one config object per trial: it is iterated once."""
    from . import preflight
    return preflight.check_data(cfgs) + preflight.check_slurm(launcher)


def sweep_inside(path: Path) -> Path | None:
    """The sweep or trial directory `path` lies in, else None."""
    p = Path(path).resolve()
    for d in (p, *p.parents):
        if (d / records.MANIFEST).exists():
            return d
    trial_files = (records.RESULT, records.CHECKPOINT, records.BEST, records.CLAIM)
    return p if any((p / f).exists() for f in trial_files) else None


def refuse(problems: Sequence[str], prog: str = "gridtune", what: str = "in the config; nothing was run") -> NoReturn:
    """Exit 2 with a count, then one line per problem (the last line names a culprit)."""
    print(f"{prog}: {len(problems)} problem(s) {what}", file=sys.stderr)
    for p in problems:
        print(f"{prog}: invalid {p}", file=sys.stderr)
    sys.exit(2)


def one_line(e: BaseException) -> str:
    """A Hydra or OmegaConf error on one line: its message and its cause's, schema entries left out."""
    from hydra.errors import MissingConfigException
    if isinstance(e, MissingConfigException) and getattr(e, "options", None):
        first = str(e).strip().splitlines()[0]
        options = [o for o in e.options if not o.endswith("_schema")]
        return f"{first} (options: {', '.join(options)})"
    text = " ".join(str(e).split())
    cause = e.__cause__
    if cause is not None and str(cause).strip():
        text += ": " + " ".join(str(cause).split())
    return text or type(e).__name__


def run_app(main: Callable[[], None], prog: str) -> None:
    """Run a Hydra app; Hydra's own refusals (types, keys, options, override syntax) exit 2, one line."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")    # let them reach us instead of Hydra's report
    try:
        main()
    except (HydraException, OmegaConfBaseException, ConfigError) as e:
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)


class Gate(Callback):
    """Runs the validation path in single-run mode before Hydra creates the run directory
    (`python -m gridtune.sweep lr=-1` exits 2 with one line, creating nothing)."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        job = str(OmegaConf.select(config, "hydra.job.name", default=""))
        prog = f"gridtune.{job}" if job in ("lr_find",) else "gridtune"
        problems = trial_problems(config)
        problems += extra_checks([config], OmegaConf.select(config, "hydra.launcher", default=None))
        if job == "lr_find":
            out = Path(str(config.hydra.run.dir))
            inside = sweep_inside(out)
            if inside is not None:
                problems.append(f"hydra.run.dir={out}: inside sweep or trial directory {inside}; "
                                "an LR range test writes nowhere in a sweep")
        if problems:
            refuse(problems, prog)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        if str(OmegaConf.select(config, "hydra.job.name", default="")) == "lr_find":
            refuse(["-m/--multirun: gridtune.lr_find runs one range test; drop -m (it would create a sweep)"],
                   "gridtune.lr_find")
