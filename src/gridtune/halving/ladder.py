"""The successive-halving driver: run a grid rung by rung through the sweeper's launcher.

`run_ladder` replaces the sweeper's single launch when `hydra.sweeper.halving.eta` is set. For
each rung it launches the members that have not reached the rung epoch yet, with
`train.stop_after_epoch` set to it (a non-semantic knob: the trial id, directory and checkpoint
are those of the full grid, and the trial's schedule is still that of `train.epochs`), so a
promoted trial resumes from its checkpoint. Trials that stop at a rung epoch record status
`paused` (not final). A member is settled at a rung when its record reaches the rung epoch (or is
final) and was trained on the data as the driver indexed it (its cache key); a record of other data
trains again from epoch 1. Records are read and rewritten through gridtune.sweepdir.ledger. Once every
member of a rung is settled, the rung's decision is computed from the records
(`gridtune.halving.policy.decide`), the ladder file is rewritten, and the trials that do not go on get
status `stopped` with their reason and best metrics so far (a trial already final, ok or
diverged, keeps its record). The last rung runs the survivors to `train.epochs` (status `ok`).

A rung with a trial that failed or went missing is not decided: the driver says so and stops, and
the same command run again retries those trials and continues. A killed driver rerun with the same
command recomputes the same decisions from the same records, so no trial is trained twice.
Locally the rungs run one after the other; on SLURM each rung is one job array of the survivors.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

from . import policy
from gridtune.sweepdir import records, ledger
from gridtune.config.identity import semantic_config


def config_key(cfg) -> str:
    """The trial's semantic config without its seed: the seeds of one config share it."""
    sem = semantic_config(cfg)
    sem.pop("seed", None)
    return hashlib.sha1(json.dumps(sem, sort_keys=True, default=str).encode()).hexdigest()[:10]


def settled(rec: dict | None, epoch: int, cache_key: str | None = None) -> bool:
    """Whether a trial needs no more training for a rung at `epoch`: trained on the data whose cache
    key is `cache_key` (gridtune.sweepdir.ledger.same_data), and final or recorded that far."""
    if rec is None or not ledger.same_data(rec, cache_key):
        return False
    if rec.get("status") in records.FINAL_STATUSES:
        return True
    return rec.get("status") in ("paused", "stopped") and (rec.get("epochs_run") or 0) >= epoch


def _mark_stopped(sweep_dir: Path, decision: dict, rung: int, epoch: int) -> None:
    for g in decision["ranking"]:
        if g["promoted"]:
            continue
        for tid in g["trial_ids"]:
            rec = ledger.trial_record(sweep_dir / tid, tid)
            if rec is None or rec.get("status") in records.FINAL_STATUSES:
                continue                   # a final record (diverged, or ok from a full run) stays as it is
            rec.update(status="stopped", stop_reason=policy.stop_reason(rung, g, decision["n"]),
                       halving=policy.stop_record(rung, epoch, g, decision["n"]))
            ledger.write_record(sweep_dir / tid, rec)


def run_ladder(spec: policy.Spec, trials: list[dict], sweep_dir: Path, objective: str, mode: str,
               launch: Callable[[list[dict], int | None], list]) -> tuple[list, bool]:
    """Run the ladder; `trials` are the sweeper's {trial_id, overrides, cfg}; `launch(todo, stop_after)`
    runs trials to `stop_after` epochs (None: to train.epochs). Returns (job returns, complete)."""
    keys = {t["trial_id"]: config_key(t["cfg"]) for t in trials}
    data = {t["trial_id"]: t.get("cache_key") for t in trials}     # the data as the driver indexed it

    def record(tid: str) -> dict | None:
        return ledger.trial_record(sweep_dir / tid, tid)

    members, decisions, returns = list(trials), [], []
    for k, epoch in enumerate(spec.rungs):
        last = k == len(spec.rungs) - 1
        todo = [t for t in members if not settled(record(t["trial_id"]), epoch, data[t["trial_id"]])]
        n_configs = len({keys[t["trial_id"]] for t in members})
        print(f"gridtune: halving rung {k}/{len(spec.rungs) - 1}: {n_configs} config(s), {len(members)} trial(s) "
              f"to epoch {epoch}: {len(todo)} to run, {len(members) - len(todo)} already there", flush=True)
        if todo:
            returns += launch(todo, None if last else epoch)
        recs = {t["trial_id"]: record(t["trial_id"]) for t in members}
        open_ = sorted(tid for tid, rec in recs.items() if not settled(rec, epoch, data[tid]))
        if open_:
            policy.write_ladder(sweep_dir, spec, objective, mode, decisions, done=False)
            states = [(recs[tid] or {}).get("status") or "missing" for tid in open_]
            print(f"gridtune: halving stopped at rung {k}: {len(open_)} trial(s) did not reach epoch {epoch} "
                  f"({', '.join(f'{t} {s}' for t, s in zip(open_, states))}); run the same command again "
                  "to retry them and continue the ladder", flush=True)
            return returns, False
        if last:
            break
        values = {tid: policy.rung_value(ledger.history(sweep_dir / tid), objective, mode, epoch) for tid in recs}
        decision = policy.decide_rung(spec, decisions, {tid: keys[tid] for tid in recs}, values, mode,
                                       policy.Noise.of(spec.noise, objective, recs.values()))
        decisions.append({"rung": k, "epoch": epoch, **decision})
        policy.write_ladder(sweep_dir, spec, objective, mode, decisions, done=False)
        _mark_stopped(sweep_dir, decision, k, epoch)
        promoted = set(decision["promoted"])
        members = [t for t in members if t["trial_id"] in promoted]
        print(f"gridtune: rung {k} at epoch {epoch}: {decision['keep']} of {decision['n']} config(s) go on, "
              f"{decision['n'] - decision['keep']} stopped", flush=True)
    policy.write_ladder(sweep_dir, spec, objective, mode, decisions, done=True)
    return returns, True
