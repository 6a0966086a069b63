"""`python -m gridtune.final sweep_dir=DIR [overrides...]`: retrain a sweep's winner and test it once.

Reads `DIR/best.yaml` (written by `python -m gridtune.reduce DIR`), composes the winner's config
from its overrides plus the command line's (the command line wins), trains it for `final.epochs`
on `final.train_on` into `final.out_dir` (default `DIR/final/`), checkpointing every epoch like a
trial so a requeued job resumes, and evaluates on the test data (`gridtune.use.evaluate`). Writes
model.pt, final.json, final_report.md, final_config.yaml and provenance.yaml there.

When the final model trains on train+val its "val" curve is in-sample, so the last epoch's weights
are kept and early stopping is off; the IRMAS threshold then comes from the sweep winner's own
best.pt (trained on train only) on val. Trained on train only, the best val epoch is kept and
its own val predictions set the threshold. User errors are one line on stderr and exit code 2.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from omegaconf import OmegaConf, open_dict

from gridtune.sweepdir import claims, ledger, records, rundir
from gridtune.config import identity
from gridtune.data.audio import BadAudio
from gridtune.data.layouts import DataError
from gridtune.use.final_report import figure_lines, report

USAGE = "usage: python -m gridtune.final sweep_dir=DIR [hydra overrides, e.g. final.epochs=30 data.root=...]"
MODEL = "model.pt"
# Keys whose change makes an existing checkpoint in the output directory a different run.
RUN_KEYS = ("final.epochs", "final.train_on")


class FinalError(ValueError):
    """A problem the user can fix; the message is one line."""


def parse_args(argv: list[str]) -> tuple[Path, list[str]]:
    """(sweep dir, the other overrides), read with Hydra's override grammar (gridtune.config.overrides): the
    path may be quoted Hydra-style (slurm/final.sh does). A bare first path is taken as sweep_dir."""
    from gridtune.config.overrides import OverrideError, parse_all
    if argv and "=" not in argv[0] and not argv[0].startswith(("-", "~")):
        argv = [f"sweep_dir='{_quote(argv[0])}'", *argv[1:]]
    try:
        parsed = parse_all(argv)
    except OverrideError as e:
        raise FinalError(str(e)) from None
    dirs = [o.value() for o in parsed if o.key_or_group == "sweep_dir" and not o.is_delete()]
    rest = [o.input_line for o in parsed if o.key_or_group != "sweep_dir"]
    if not dirs or not dirs[-1]:
        raise FinalError(f"missing sweep_dir=DIR ({USAGE})")
    return Path(str(dirs[-1])).resolve(), rest


def _quote(path: str) -> str:
    return path.replace("\\", "\\\\").replace("'", "\\'")


def read_best(sweep_dir: Path) -> dict:
    import yaml
    path = sweep_dir / "best.yaml"
    hint = f"run `python -m gridtune.reduce {sweep_dir}` first"
    try:
        best = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FinalError(f"{path}: not found; {hint}") from None
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise FinalError(f"{path}: unreadable ({type(e).__name__}); {hint}") from None
    if not isinstance(best, dict) or not best.get("trial_id") or not isinstance(best.get("overrides"), list):
        raise FinalError(f"{path}: no trial_id/overrides in it; {hint}")
    return best


def single_run_overrides(overrides: list[str]) -> list[str]:
    """A trial's overrides minus what only a multirun means: hydra settings and what the sweep driver
    set for one launch (gridtune.config.knobs.DRIVER_SET: the job's chunk, a halving rung's stop epoch...)."""
    from gridtune.config.knobs import DRIVER_SET
    from gridtune.config.overrides import parse_all
    return [o.input_line for o in parse_all(overrides) if not o.is_hydra_override() and not o.is_delete()
            and o.key_or_group not in ("hydra", *DRIVER_SET)]


def compose(best_overrides: list[str], user: list[str]):
    """The winner's config with the user's overrides on top (a user key replaces the winner's),
    checked by the validation path every entry point runs (gridtune.checks.validation)."""
    from hydra import compose as hydra_compose, initialize_config_dir

    from gridtune.checks import validation
    from gridtune.config.overrides import OverrideError, parse_all
    from gridtune.config.schema import CONF_DIR
    try:
        user_keys = {o.key_or_group for o in parse_all(user)}
        overrides = [o for o in single_run_overrides(best_overrides) if parse_all([o])[0].key_or_group not in user_keys]
    except OverrideError as e:
        raise FinalError(str(e)) from None
    overrides += user
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = hydra_compose("config", overrides=overrides)
    except Exception as e:       # Hydra's composition errors: unknown key, wrong type, missing group option
        raise FinalError(f"cannot compose [{' '.join(overrides)}]: {validation.one_line(e)}") from None
    problems = validation.trial_problems(cfg)
    if problems:
        raise FinalError(f"invalid config: {problems[0]}")
    return cfg, overrides


def _check_resumable(out: Path, cfg) -> None:
    """Refuse to resume a checkpoint that belongs to another config (it would mix two runs)."""
    old_path = out / "final_config.yaml"
    if not (out / records.CHECKPOINT).exists() or not old_path.exists():
        return
    old = OmegaConf.load(old_path)
    pairs = [("trial", identity.trial_id(old), identity.trial_id(cfg))]
    pairs += [(k, OmegaConf.select(old, k), OmegaConf.select(cfg, k)) for k in RUN_KEYS]
    for key, was, now in pairs:
        if was != now:
            raise FinalError(f"{out}: holds a checkpoint of another final run ({key} was {was}, now {now}); "
                             "delete it or set final.out_dir=...")


def run_final(sweep_dir: Path, user: list[str]) -> dict:
    from gridtune.use import evaluate
    from gridtune.train.engine import TrialRun
    t0 = time.perf_counter()
    best = read_best(sweep_dir)
    cfg, applied = compose(best["overrides"], user)
    config_id = _checked_config_id(cfg)     # before the final run's own changes below
    out = Path(cfg.final.get("out_dir") or sweep_dir / ledger.FINAL_DIR).resolve()
    winner = _read_winner(sweep_dir, best)   # its best.pt sets the IRMAS threshold
    train_on = str(cfg.final.train_on)
    if train_on == "train+val":        # the val curve is in-sample: nothing to stop early on
        with open_dict(cfg):
            cfg.train.early_stop.patience = 0
    _check_resumable(out, cfg)
    _claim(out)
    try:
        _write_inputs(out, cfg, sweep_dir, best, user, applied)
        with _open_tracker(cfg, out, best) as tracker:
            run = TrialRun(cfg, out, batch_size=int(cfg.train.batch_size), tracker=tracker,
                           train_parts=("train", "val") if train_on == "train+val" else ("train",),
                           val_part="val", epochs=int(cfg.final.epochs))
            mode, clips = evaluate.resolve_mode(cfg, run.classes)    # before training: fail early
            run.fit()
            summary = run.summary()
            weights = _keep_weights(run, cfg, out, train_on, summary)
            tested = _test_model(run, cfg, mode, clips, winner,
                                 changed=config_id != best["trial_id"] and train_on == "train+val")
            _log_test(tracker, tested["test"], tested["threshold"])
    finally:
        claims.release(out)
    rec = _record(t0=t0, sweep_dir=sweep_dir, best=best, cfg=cfg, config_id=config_id, applied=applied,
                  user=user, run=run, summary=summary, weights=weights, tested=tested, out=out)
    records.write_json(out / "final.json", rec)
    records.atomic_write_text(out / "final_report.md", report(rec))
    return rec


def _checked_config_id(cfg) -> str:
    """Run the data checks and the device check on `cfg` and return its trial id; FinalError if one fails."""
    from gridtune.checks.validation import extra_checks
    problems = extra_checks([cfg])             # the data, before anything is created
    if problems:
        raise FinalError(f"invalid config: {problems[0]}")
    config_id = identity.trial_id(cfg)
    if cfg.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise FinalError("device=cuda: no CUDA device is visible")
    return config_id


def _read_winner(sweep_dir: Path, best: dict):
    """The record of the trial best.yaml names, with a warning on stderr when it did not end ok."""
    winner = rundir.read_run(sweep_dir / str(best["trial_id"]))
    if winner.state != "ok":
        print(f"gridtune.final: warning: best.yaml names trial {winner.trial_id}, which is {winner.state} "
              f"in {sweep_dir} ({winner.reason}); reduce the sweep again?", file=sys.stderr)
    return winner


def _claim(out: Path) -> None:
    """Take the output directory's claim, or raise FinalError naming the final run that holds it."""
    held = claims.acquire(out)
    if held is not None:
        raise FinalError(f"{out}: a final run holds it ({held.get('host')}:{held.get('pid')}); "
                         "wait for it or set final.out_dir=...")


def _write_inputs(out: Path, cfg, sweep_dir: Path, best: dict, user: list[str], applied: list[str]) -> None:
    """Write final_config.yaml and provenance.yaml (where the config came from) into `out`."""
    records.atomic_write_text(out / "final_config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    records.atomic_write_text(out / "provenance.yaml", OmegaConf.to_yaml(OmegaConf.create(
        {"best_yaml": str(sweep_dir / "best.yaml"), "best": best, "user_overrides": user,
         "applied_overrides": applied})))


def _open_tracker(cfg, out: Path, best: dict):
    """The experiment tracker of the final run (a context manager)."""
    from gridtune.sweepdir import tracking
    return tracking.open_tracker(cfg.get("tracking"), run_dir=out, name=f"final-{best['trial_id']}",
                                 group=str(cfg.sweep_name), job_type="final",
                                 config={**identity.semantic_config(cfg), "winner": best["trial_id"],
                                         "final": OmegaConf.to_container(cfg.final, resolve=True)})


def _keep_weights(run, cfg, out: Path, train_on: str, summary: dict) -> str:
    """Load the weights to keep into `run.model` (best val epoch, or the last one on train+val), save
    them as model.pt and return a line saying which they are."""
    from gridtune.train.runtime import load_torch, save_torch
    if train_on == "train":
        run.model.load_state_dict(load_torch(out / records.BEST, run.device)["model"])
        weights = f"best epoch {summary['best_epoch']} by {cfg.objective} on val"
    else:
        weights = f"last epoch ({run.epoch}): val is in-sample when training on train+val"
        (out / records.BEST).unlink(missing_ok=True)   # its "best" epoch is an in-sample pick
    save_torch(out / MODEL, {"model": run.model.state_dict(), "features": run.features.state_dict()})
    return weights


def _test_model(run, cfg, mode: str, clips, winner, *, changed: bool) -> dict:
    """The trained model's test figures, IRMAS threshold, where it came from and the val micro-F1 at it
    (final.json's keys; the threshold ones None unless `mode` is irmas_test, which takes the threshold from
    the sweep `winner`'s best.pt). `changed`: the command line changed the winner's config and val is
    in-sample, so the threshold's source says its val may differ."""
    from gridtune.use import evaluate
    threshold = source = val_f1 = None
    test = {"mode": "none"}
    if mode == "irmas_test":
        threshold, source, val_f1 = evaluate.threshold_for(run, winner.dir / records.BEST, run.model)
        if changed:
            source += " (the command line changed the winner's config: its val may differ)"
        fn = evaluate.model_prob_fn(run.model, run.features, run.device, run.amp_dtype, run.channels_last)
        test = evaluate.irmas_test(cfg, clips, run.classes, fn, threshold)
    elif mode == "split":
        test = evaluate.split_test(run, run.model)
    return {"test": test, "threshold": threshold, "threshold_source": source, "val_micro_f1_at_threshold": val_f1}


def _log_test(tracker, test: dict, threshold) -> None:
    """Send the test figures (and the per-class F1 table, if any) to the tracker."""
    tracker.summary({**{f"test/{k}": v for k, v in test.items() if isinstance(v, float)},
                     "test/threshold": threshold})
    if isinstance(test.get("per_class_f1"), dict):
        tracker.log_table("test/per_class_f1", ["class", "f1"], [list(kv) for kv in test["per_class_f1"].items()])


def _record(*, t0: float, sweep_dir: Path, best: dict, cfg, config_id: str, applied: list[str], user: list[str],
            run, summary: dict, weights: str, tested: dict, out: Path) -> dict:
    """final.json's record of the run (`tested` is `_test_model`'s answer; its test figures lose skipped_files)."""
    test = tested["test"]
    train_on = str(cfg.final.train_on)
    sha, dirty = records.git_info()
    last = {k: v for k, v in run.history[-1].items() if k != "lr"} if run.history else None
    return {"schema": 1, "trial_id": best["trial_id"], "config_trial_id": config_id,
            "sweep": str(cfg.sweep_name), "sweep_dir": str(sweep_dir), "objective": cfg.objective,
            "winner_value": best.get("value"), "overrides": applied, "user_overrides": user,
            "train_on": train_on, "epochs": int(cfg.final.epochs), "epochs_run": run.epoch, "weights": weights,
            "n_train_clips": int(len(run.train_idx)), "n_val_clips": int(len(run.val_idx)),
            "history": {"last": last, "best_epoch": summary["best_epoch"], "best": summary["metrics"],
                        "val_in_sample": train_on == "train+val"},
            **tested,
            "n_test_clips": test.get("n_clips"), "n_test_windows": test.get("n_windows"),
            "classes": list(run.classes), "cache_hash": summary["cache_hash"],
            "model_path": str(out / MODEL), "out_dir": str(out),
            "wall_time_s": time.perf_counter() - t0, "git_sha": sha, "git_dirty": dirty,
            "device": summary["device"], "amp": summary["amp"],
            "skipped_files": {"train": summary["skipped_files"], "test": test.pop("skipped_files", [])},
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    try:
        rec = run_final(*parse_args(argv))
    except (FinalError, identity.ConfigError, DataError, BadAudio) as e:
        print(f"gridtune.final: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:      # model, optimizer and data checks name the key in one line
        print(f"gridtune.final: error: {(str(e) or type(e).__name__).splitlines()[0]}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        from gridtune.train.loop import Diverged
        if not isinstance(e, Diverged):
            raise
        print(f"gridtune.final: training {e}; lower lr or check the data", file=sys.stderr)
        return 1
    for line in figure_lines(rec):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
