"""`python -m gridtune.lr_find`: an LR range test, to pick the learning rates of a grid before running it.

    python -m gridtune.lr_find preset=demo                       # same overrides as a trial
    python -m gridtune.lr_find preset=demo +lr_find.iters=50 hydra.run.dir=runs/lrf

The model, data, features, SpecAugment, optimizer and AMP are built exactly as a trial builds
them (`TrialRun`), then trained for `iters` batches while the learning rate grows exponentially
from `start_lr` to `end_lr`. Both parameter groups move together, keeping the lr_conv/lr_head
ratio. The suggestion is the LR where the smoothed loss falls fastest (per decade of LR), and a
four-point grid around it is printed as a ready `gridtune.sweep -m` command. The test costs at
most MAX_EPOCHS epochs of the training split (longer sweeps are shortened) and writes only
lr_find.json and lr_find.png into its run directory: no weights, nothing inside a sweep directory.

Knobs (`+lr_find.<key>=value`): iters (100), start_lr (1e-7), end_lr (10), smooth (0.05: EMA weight
of each new loss at 100 steps; a shorter sweep scales it up so that the smoothing window covers the
same span of LR), diverge_factor (4: stop once the smoothed loss exceeds 4x its minimum).
"""
from __future__ import annotations

import math
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, NamedTuple

import hydra
import numpy as np

from gridtune.sweepdir import records
from gridtune.config import schema
from gridtune.config.checks import LR_FIND_MIN_ITERS as MIN_ITERS
from gridtune.config.knobs import fmt_lr, group_lrs
from gridtune.config.knobs import set_apart as fixed_groups   # the group LRs that do not follow lr
from gridtune.config.schema import CONF_DIR

DEFAULTS = schema.knobs(schema.LrFindConf, ())   # +lr_find.<key>: iters, start_lr, end_lr, smooth, diverge_factor
MAX_EPOCHS = 1.5     # the most a range test may cost, in epochs of the training split
SKIP_FRACTION = 0.1  # the first points are left out of the suggestion: the smoothed loss is still settling
JSON_NAME, PNG_NAME = "lr_find.json", "lr_find.png"


class Suggestion(NamedTuple):
    lr: float
    index: int        # the point of the curve it was read at
    min_index: int    # the point of lowest smoothed loss, past the skipped start
    method: str       # "steepest" or, when the curve never falls, "min/10"


# -- the algorithm (no Hydra, no torch) -------------------------------------------------------------
def lr_at(i: int, iters: int, start: float, end: float) -> float:
    return start * (end / start) ** (i / (iters - 1))


def effective_smooth(smooth: float, iters: int) -> float:
    """EMA weight for a sweep of `iters` steps: `smooth` is the weight at 100 steps, so the window
    spans the same share of the LR range at any length (at 20 steps, 0.05 would average nearly all)."""
    return min(1.0, smooth * max(1.0, 100 / iters))


def range_test(step_fn: Callable[[], float], set_lr_fn: Callable[[float], None], iters: int, start_lr: float,
               end_lr: float, *, smooth: float = 0.05, diverge_factor: float = 4.0) -> dict:
    """Run `iters` steps at exponentially growing LR; stop on a non-finite loss or a diverging smoothed loss.

    `step_fn()` trains one batch and returns its loss; `smoothed` is its bias-corrected EMA (weight
    `smooth`), one entry per finite loss. The EMA lags the raw curve by about (1 - smooth)/smooth
    steps, and `suggest` reads the lagged curve on purpose: on toy problems its steepest point lands
    near the best constant LR, while the raw curve falls fastest where learning only starts (~10x lower).
    """
    if iters < 2 or not 0 < start_lr < end_lr or not 0 < smooth <= 1 or not diverge_factor > 1:
        raise ValueError(f"range_test: need iters >= 2, 0 < start_lr < end_lr, 0 < smooth <= 1, "
                         f"diverge_factor > 1; got {iters}, {start_lr}, {end_lr}, {smooth}, {diverge_factor}")
    lrs, losses, smoothed = [], [], []
    avg = 0.0
    best, reason = math.inf, "completed"
    for i in range(iters):
        lr = lr_at(i, iters, start_lr, end_lr)
        set_lr_fn(lr)
        loss = float(step_fn())
        lrs.append(lr)
        losses.append(loss)
        if not math.isfinite(loss):
            reason = "nonfinite"
            break
        avg = (1 - smooth) * avg + smooth * loss
        smoothed.append(avg / (1 - (1 - smooth) ** (i + 1)))
        best = min(best, smoothed[-1])
        if smoothed[-1] > diverge_factor * best:
            reason = "diverged"
            break
    return {"lrs": lrs, "losses": losses, "smoothed": smoothed,
            "iters_run": len(lrs), "stopped_reason": reason}


def suggest(lrs, smoothed, skip: float = SKIP_FRACTION) -> Suggestion:
    """The LR of steepest descent of `smoothed` against log(lr), between the first `skip` share of
    the points and the minimum; lr at the minimum / 10 when the curve does not fall there. The first
    points count for neither: their smoothed loss is one or two batches (one lucky batch would
    otherwise be "the minimum")."""
    lrs, y = np.asarray(lrs, dtype=float), np.asarray(smoothed, dtype=float)
    n = len(y) if np.isfinite(y).all() else int(np.argmin(np.isfinite(y)))   # the finite prefix
    if n < 2 or len(lrs) < n:
        raise ValueError(f"suggest: need at least 2 finite points with their lrs, got {n}")
    x, y = np.log10(lrs[:n]), y[:n]
    lo = min(math.ceil(skip * n), n - 1)
    i_min = lo + int(np.argmin(y[lo:]))
    if i_min > lo:
        slope = np.gradient(y, x)
        i = lo + int(np.argmin(slope[lo:i_min + 1]))
        if slope[i] < 0:
            return Suggestion(float(lrs[i]), i, i_min, "steepest")
    return Suggestion(float(lrs[i_min] / 10), i_min, i_min, "min/10")


def round1(v: float) -> float:
    """One significant digit: 0.0037 -> 0.004."""
    return float(f"{v:.0e}")


def suggest_grid(lr: float) -> list[float]:
    return sorted({round1(lr * f) for f in (0.1, 1 / 3, 1.0, 3.0)})


def cap_iters(iters: int, batch_size: int, n_train: int) -> int:
    """The number of steps to run: `iters`, or fewer so that iters·batch_size <= MAX_EPOCHS·n_train."""
    batch = min(batch_size, n_train)
    most = int(MAX_EPOCHS * n_train // batch)
    if most < MIN_ITERS:
        raise ValueError(f"train.batch_size={batch_size}: {MAX_EPOCHS} epochs of the {n_train}-clip training "
                         f"split allow only {most} steps of an LR range test (need {MIN_ITERS}); "
                         f"use a smaller batch size or more data")
    return min(iters, most)


# -- the probe on a trial's setup -----------------------------------------------------------------------
class _NoSchedule:
    """The range test sets every LR itself: the trial's schedule must not move them."""

    def step_batch(self) -> None:
        pass


def _batches(train_idx: np.ndarray, batch_size: int, generator):
    """Full batches of shuffled training indices, reshuffled at every pass, forever."""
    import torch
    n = len(train_idx)
    while True:
        order = train_idx[torch.randperm(n, generator=generator).numpy()]
        for s in range(0, max(n - batch_size, 0) + 1, batch_size):
            yield order[s:s + batch_size]


def probe(cfg, opts: dict) -> dict:
    """Build a trial's run in a throw-away directory (no checkpoint is read or written) and sweep its LR."""
    from gridtune.train.engine import TrialRun
    from gridtune.train.loop import Diverged, train_epoch
    with tempfile.TemporaryDirectory(prefix="gridtune-lr_find-") as tmp:
        run = TrialRun(cfg, Path(tmp), batch_size=int(cfg.train.batch_size))
    n_train = len(run.train_idx)
    batch = min(int(cfg.train.batch_size), n_train)
    iters = cap_iters(int(opts["iters"]), batch, n_train)
    if iters < opts["iters"]:
        print(f"[gridtune] lr_find: {opts['iters']} steps of {batch} would cost "
              f"{opts['iters'] * batch / n_train:.1f} epochs of {n_train} clips; running {iters} "
              f"(at most {MAX_EPOCHS} epochs)", flush=True)
    base = float(cfg.lr)
    ratios = {group: lr / base for group, lr in group_lrs(cfg).items()}
    batches = _batches(run.train_idx, batch, run.gen)

    def set_lr(lr: float) -> None:
        for g in run.optimizer.param_groups:
            g["lr"] = lr * ratios[g["name"]]

    def step() -> float:
        # one batch through the trial's own training loop: same loss, l2 penalty, clipping, AMP
        try:
            tr = train_epoch(0, run.step_model, run.features, run.augment, run.data, next(batches),
                             run.optimizer, _NoSchedule(), run.scaler, batch_size=batch, generator=run.gen,
                             amp_dtype=run.amp_dtype, l2=float(cfg.l2), class_weights=run.class_weights,
                             grad_clip=float(cfg.train.grad_clip), diverge_loss=float(cfg.train.diverge_loss),
                             channels_last=run.channels_last)
        except Diverged:   # NaN/inf, or above train.diverge_loss
            return math.inf
        return tr["train/loss"]

    per_decade = (iters - 1) / math.log10(float(opts["end_lr"]) / float(opts["start_lr"]))
    if per_decade < 4:
        print(f"[gridtune] lr_find: {per_decade:.1f} steps per decade of LR make a coarse, noisy curve; "
              f"a narrower range gives more (e.g. +lr_find.start_lr=1e-5 +lr_find.end_lr=1)", flush=True)
    t0 = time.perf_counter()
    smooth = effective_smooth(float(opts["smooth"]), iters)
    res = range_test(step, set_lr, iters, float(opts["start_lr"]), float(opts["end_lr"]),
                     smooth=smooth, diverge_factor=float(opts["diverge_factor"]))
    res.update(seconds=time.perf_counter() - t0, iters_requested=int(opts["iters"]), iters=iters,
               smooth_used=smooth, steps_per_decade=per_decade, n_train=n_train, batch_size=batch,
               group_lr_ratios=ratios, cost_epochs=res["iters_run"] * batch / n_train, device=str(run.device))
    return res


# -- the Hydra app ----------------------------------------------------------------------------------------
def options(cfg) -> dict:
    """The lr_find knobs: DEFAULTS overridden by `+lr_find.<key>=value`; unknown keys and bad values
    refused (the checks are gridtune.config.checks', run by the validation path before anything starts)."""
    from gridtune.config.checks import lr_find_options
    from gridtune.config.identity import ConfigError
    opts, problems = lr_find_options(cfg)
    if problems:
        raise ConfigError(problems[0])
    return opts


def sweep_command(overrides: list[str], grid: list[float]) -> str:
    """`python -m gridtune.sweep -m` with the probe's own overrides (minus lr, hydra.*, lr_find.*) and the grid."""
    from gridtune.config.overrides import parse_all
    keep = [o.input_line for o in parse_all(overrides)
            if o.key_or_group != "lr" and not o.is_hydra_override() and not o.key_or_group.startswith("lr_find")]
    return " ".join(["python -m gridtune.sweep -m", *map(shlex.quote, keep),
                     "lr=" + ",".join(fmt_lr(v) for v in grid)])


def task(cfg) -> dict:
    """The range test of one composed config. The validation path (gridtune.checks.validation.Gate) has
    already checked it, and that the run directory is in no sweep, before Hydra created it."""
    from hydra.core.hydra_config import HydraConfig

    from gridtune.config import identity
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    overrides = list(hc.overrides.task)
    opts = options(cfg)
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    res = probe(cfg, opts)
    n = len(res["smoothed"])
    if n < 2:
        raise RuntimeError(f"lr_find: the loss was not finite from step {n + 1} on; check the config with a trial")
    sug = suggest(res["lrs"][:n], res["smoothed"])
    grid = suggest_grid(sug.lr)
    fixed = fixed_groups(cfg)
    sha, dirty = records.git_info()
    rec = {"schema": 1, **res, **{k: opts[k] for k in ("start_lr", "end_lr", "smooth", "diverge_factor")},
           "suggested_lr": sug.lr, "suggested_grid": grid, "suggest_method": sug.method,
           "min_index": sug.min_index, "min_loss_lr": res["lrs"][sug.min_index],
           "min_smoothed_loss": res["smoothed"][sug.min_index],
           "max_epochs": MAX_EPOCHS, "fixed_groups": fixed, "command": sweep_command(overrides, grid),
           "overrides": overrides, "git_sha": sha, "git_dirty": dirty, "started_at": started,
           "config": identity.semantic_config(cfg)}
    records.write_json(out / JSON_NAME, rec)
    from gridtune.report.plots.lr_find import plot
    plot(out / PNG_NAME, rec)
    if fixed:
        print(f"[gridtune] lr_find: {' and '.join(fixed)} set apart from lr: the grid below does not move "
              f"{'it' if len(fixed) == 1 else 'them'}", flush=True)
    print(f"  {rec['command']}")
    print(f"[gridtune] lr_find: suggested lr={fmt_lr(sug.lr)} ({sug.method}), grid "
          f"lr={','.join(fmt_lr(v) for v in grid)}; {res['iters_run']}/{res['iters']} steps "
          f"({res['stopped_reason']}), {res['cost_epochs']:.2f} epochs, "
          f"{res['seconds']:.1f} s -> {out / JSON_NAME}, {out / PNG_NAME}", flush=True)
    return rec


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _main(cfg) -> None:
    from gridtune.config.identity import ConfigError
    from gridtune.data.layouts import DataError
    try:
        task(cfg)
    except (ConfigError, DataError, ValueError) as e:   # what a probe finds about its inputs: one line
        print(f"gridtune.lr_find: error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(2)
    except RuntimeError as e:    # the loss was never finite, a device that is not there
        print(f"gridtune.lr_find: failed: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(1)


def main() -> None:
    from gridtune.checks.validation import run_app
    run_app(_main, "gridtune.lr_find")


if __name__ == "__main__":
    main()
