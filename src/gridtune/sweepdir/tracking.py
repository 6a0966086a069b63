"""Experiment tracking: the one place that talks to Weights & Biases.

`open_tracker` gives every trial, final training run and reduce step a `Tracker`. With the
`tracking=none` config group (or no config) the tracker does nothing and wandb is never imported;
with `tracking=wandb` each call starts one wandb run and always finishes it, also when the body
raises. Tracking is a convenience, never a reason for a trial to die: if wandb cannot start, a
one-line warning is logged and the trial goes on with the no-op tracker.

Facts about wandb 0.31 this relies on (read from its installed source):
  * offline runs keep everything (config, history, summary, tables) in
    `<dir>/wandb/offline-run-<time>-<id>/run-<id>.wandb`; upload later with `wandb sync`;
  * `reinit="create_new"` lets several runs live in one process without touching each other;
  * the first run in a process starts the wandb-core service (~0.4 s), later runs reuse it;
  * `x_save_requirements` (a package listing per run) is the largest per-run cost after that.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import string
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterator

from . import records

log = logging.getLogger(__name__)

RUN_ID_FILE = "wandb_run_id.txt"
SUPERSEDED = "superseded"   # <dir>/wandb/superseded/: offline runs a later, complete run replaces
SECRET_KEY = re.compile(r"(?i)(api_?key|token|secret|password)")
_VALID_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")   # wandb forbids / \ # ? % : in run ids
MODES = ("auto", "online", "offline", "disabled")

# Set once an online start failed in this process (no network on a compute node, bad key):
# later runs in the same job go straight to offline instead of waiting for the same timeout.
_online_failed = False


class Tracker:
    """The tracker interface; this base class does nothing (used for `tracking=none`)."""

    run_id: str | None = None

    def log(self, metrics: dict, step: int | None = None) -> None:
        pass

    def summary(self, metrics: dict) -> None:
        pass

    def log_table(self, key: str, columns: list[str], rows: list[list]) -> None:
        pass

    def log_epoch(self, row: dict) -> None:
        """One history.jsonl row, at step = its epoch, with each parameter group's LR as lr/<group>."""
        self.log({k: v for k, v in row.items() if k != "lr"} |
                 {f"lr/{g}": v for g, v in (row.get("lr") or {}).items()}, step=int(row["epoch"]))

    def resume_from(self, history: list[dict]) -> None:
        """Called when a trial resumes from its checkpoint, with the epochs it already has."""

    def _finish(self, exit_code: int) -> None:
        pass


class WandbTracker(Tracker):
    """One wandb run. Logging errors are reported once and otherwise ignored."""

    def __init__(self, run: Any, wandb: Any):
        self._run = run
        self._wandb = wandb
        self.run_id = run.id
        self._warned = False

    def _guard(self, what: str, fn, *args, **kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as e:  # a tracking hiccup must not end a long training run
            if not self._warned:
                log.warning("wandb %s failed, ignoring further tracking errors: %s", what,
                            _one_line(e))
                self._warned = True

    def log(self, metrics: dict, step: int | None = None) -> None:
        # A resumed run only accepts steps at or after its current one. A trial restarted
        # from scratch would lose its history, so such rows are appended at the current step.
        def _log() -> None:
            self._run.log(dict(metrics), step=None if step is None or step < self._run.step
                          else step)
        self._guard("log", _log)

    def summary(self, metrics: dict) -> None:
        self._guard("summary", self._run.summary.update, dict(metrics))

    def log_table(self, key: str, columns: list[str], rows: list[list]) -> None:
        def _log_table() -> None:
            table = self._wandb.Table(columns=list(columns), data=[list(r) for r in rows])
            self._run.log({key: table})
        self._guard("log_table", _log_table)

    def resume_from(self, history: list[dict]) -> None:
        """Offline runs ignore `resume` (wandb#12110), and `wandb sync` of two offline runs with one
        id keeps only one of them (wandb#3841). So a requeued offline trial logs its earlier epochs
        again, from the checkpoint's history, before it goes on: the newest offline run holds every
        epoch. The earlier, partial offline runs of this id move to wandb/superseded/, out of the
        `wandb sync DIR/*/wandb/offline-run-*` glob. Online, wandb's own resume continues the run."""
        if not self._run.offline or not history:
            return
        for row in history:
            self.log_epoch(row)
        current = Path(self._run.settings.sync_dir).resolve()
        superseded = current.parent / SUPERSEDED
        for old in current.parent.glob(f"offline-run-*-{self.run_id}"):
            if old.resolve() != current:
                superseded.mkdir(exist_ok=True)
                old.rename(superseded / old.name)

    def _finish(self, exit_code: int) -> None:
        try:
            self._run.finish(exit_code=exit_code)
        except Exception as e:
            log.warning("wandb finish failed: %s", _one_line(e))
            return
        if self._run.offline:
            log.info("wandb offline run saved in %s (upload with `wandb sync`)",
                     self._run.settings.sync_dir)


@contextlib.contextmanager
def open_tracker(cfg: Mapping | None, *, run_dir: str | Path, name: str, group: str,
                 job_type: str, config: Mapping) -> Iterator[Tracker]:
    """Start a tracked run for the body of the `with` block and finish it afterwards.

    `cfg` is the `tracking` config group; `job_type` is "trial", "final" or "reduce".
    The run is finished with exit code 0 on normal exit and 1 when the body raises (the
    exception propagates).
    """
    opts = _plain(cfg) if cfg is not None else {}
    backend = opts.get("name") or "none"
    if backend not in ("none", "wandb"):
        raise ValueError(f"tracking.name must be 'none' or 'wandb', got {backend!r}")
    mode = resolve_mode(opts.get("mode")) if backend == "wandb" else "disabled"
    tracker = Tracker() if mode == "disabled" else _start_wandb(
        opts, mode, Path(run_dir), name=name, group=group, job_type=job_type, config=config)
    try:
        yield tracker
    except BaseException:
        tracker._finish(1)
        raise
    tracker._finish(0)


def resolve_mode(mode: str | None) -> str:
    """`auto` honours WANDB_MODE when set, else online with WANDB_API_KEY, else offline."""
    mode = (mode or "auto").lower()
    if mode not in MODES:
        raise ValueError(f"tracking.mode must be one of {MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE", "").lower()
    # "dryrun" and "run" are wandb's older spellings of offline and online.
    env = {"dryrun": "offline", "run": "online"}.get(env, env)
    if env in ("online", "offline", "disabled"):
        return env
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def scrub_secrets(obj: Any, secret: str | None = None) -> Any:
    """Copy `obj` without keys named like credentials and without the API key as a value."""
    secret = secret if secret is not None else os.environ.get("WANDB_API_KEY") or None
    if isinstance(obj, Mapping):
        return {str(k): scrub_secrets(v, secret) for k, v in obj.items()
                if not SECRET_KEY.search(str(k)) and not _holds(v, secret)}
    if isinstance(obj, (list, tuple)):
        return [scrub_secrets(v, secret) for v in obj if not _holds(v, secret)]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)   # Paths, enums, ...: wandb's config wants plain values


def _holds(value: Any, secret: str | None) -> bool:
    return bool(secret) and isinstance(value, str) and secret in value


def _plain(cfg: Any) -> Any:
    """An OmegaConf node or a mapping as plain dicts/lists (interpolations resolved if possible)."""
    if type(cfg).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf
        try:
            return OmegaConf.to_container(cfg, resolve=True)
        except Exception:  # e.g. ${hydra:...} outside a Hydra run
            return OmegaConf.to_container(cfg, resolve=False)
    if isinstance(cfg, Mapping):
        return {k: _plain(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [_plain(v) for v in cfg]
    return cfg


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}"


def _run_id(run_dir: Path, wandb: Any) -> str:
    """The run id kept in run_dir, so a requeued trial continues the same wandb run."""
    path = run_dir / RUN_ID_FILE
    try:
        run_id = path.read_text(encoding="utf-8").strip()
        if _VALID_ID.match(run_id):
            return run_id
    except (OSError, UnicodeDecodeError):
        pass
    # Older wandb releases expose wandb.util.generate_id; 0.31 keeps it in wandb.sdk.lib.runid.
    generate = getattr(getattr(wandb, "util", None), "generate_id", None)
    if generate is None:
        try:
            from wandb.sdk.lib.runid import generate_id as generate
        except ImportError:   # same alphabet and length as wandb's own ids
            alphabet = string.ascii_lowercase + string.digits
            generate = lambda: "".join(secrets.choice(alphabet) for _ in range(8))  # noqa: E731
    run_id = generate()
    records.atomic_write_text(path, run_id + "\n")
    return run_id


def _start_wandb(opts: dict, mode: str, run_dir: Path, *, name: str, group: str, job_type: str,
                 config: Mapping) -> Tracker:
    global _online_failed
    # wandb reads WANDB_SILENT when it first sets itself up; setdefault keeps a user's choice.
    os.environ.setdefault("WANDB_SILENT", "true")
    try:
        import wandb
        run_dir.mkdir(parents=True, exist_ok=True)
        run_id = _run_id(run_dir, wandb)
        root = Path(opts.get("dir") or run_dir)
        # wandb infers a git root from `dir` and warns on the terminal when it does not exist yet.
        root.mkdir(parents=True, exist_ok=True)
        secret = os.environ.get("WANDB_API_KEY") or None
        argv_leaks = any(SECRET_KEY.search(a) or _holds(a, secret) for a in sys.argv)
        settings = wandb.Settings(
            silent=True,
            console="off",              # no stdout/stderr wrapping; Hydra already logs to files
            x_save_requirements=False,  # a package listing per trial costs ~50 ms and is noise
            disable_code=True,
            disable_git=True,           # git root would come from `dir`, not the code;
                                        # result.json records the code's git sha instead
            use_dot_wandb=False,        # always <dir>/wandb/, never a hidden .wandb/
            # run metadata records sys.argv; skip it when a credential is on the command line
            x_disable_meta=argv_leaks,
        )
        kwargs = dict(project=opts.get("project") or "gridtune", entity=opts.get("entity"),
                      group=group, job_type=job_type, name=name,
                      tags=[str(t) for t in opts.get("tags") or []] or None,
                      config=scrub_secrets(_plain(config), secret), dir=str(root), id=run_id,
                      resume="allow", reinit="create_new", settings=settings)
    except Exception as e:
        log.warning("wandb tracking disabled for %s: %s", name, _one_line(e))
        return Tracker()

    tries = [mode]
    if mode == "online":
        tries = ["offline"] if _online_failed else ["online", "offline"]
    for i, attempt in enumerate(tries):
        try:
            run = wandb.init(mode=attempt, **kwargs)
            return WandbTracker(run, wandb)
        except Exception as e:
            if attempt == "online":
                _online_failed = True
            rest = "retrying offline" if i + 1 < len(tries) else "continuing without tracking"
            log.warning("wandb %s start failed for %s (%s); %s", attempt, name, _one_line(e), rest)
    return Tracker()
