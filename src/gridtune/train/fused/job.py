"""A job's chunk of trials, fused where they can be: each fusable group trains as one model.

`run_chunk(entries)` is what a job runs (its own trial plus `launcher.chunk`): with fusion on
(`gridtune.train.fused.grouping.enabled`), trials that `gridtune.train.fused.grouping.groups` puts together train in one
`FusedCNN`; the rest run one by one through `run_trial`, as without fusion.

Inside a group every member lives as a trial does alone: it is skipped when already final, claims
its directory, resumes from its own checkpoint, and writes its own history, checkpoint, best.pt and
result.json through the engine's and the trial's own code (`TrialRun.record_epoch`,
`trial.new_record` / `close_record`), so the reducer cannot tell a fused trial from another. A
member that diverges is recorded diverged at its epoch and frozen (dropped from the fused model); an
early-stopped or finished member is recorded and dropped likewise; the group ends when none is left.
Members whose checkpoints stand at different epochs (a kill between two members' writes) resume as
separate groups, one per epoch, so each group's shared batch order and random state are exact.
A CUDA out-of-memory error splits the group in halves (a single member then runs alone, with
run_trial's own retry at half the batch size).
"""
from __future__ import annotations

import contextlib
import time
import traceback
from pathlib import Path

from gridtune.sweepdir import claims, records
from . import grouping
from gridtune.config.identity import trial_id
from gridtune.train.runtime import load_torch
from gridtune.sweepdir.ledger import done_record
from gridtune.train.trial import classify, close_record, current_record, new_record, run_trial


def run_chunk(entries: list[tuple]) -> list[dict]:
    """Records of (cfg, out_dir, overrides) entries, in order, each run once (fused where on)."""
    if len(entries) < 2 or not grouping.enabled(entries[0][0]):
        return [run_trial(cfg, out, overrides=ov) for cfg, out, ov in entries]
    _, cap = grouping.mode(entries[0][0])
    recs: dict[int, dict] = {}
    for part in grouping.groups([e[0] for e in entries], cap):
        got = run_group([entries[i] for i in part]) if len(part) > 1 else [run_trial(
            entries[part[0]][0], entries[part[0]][1], overrides=entries[part[0]][2])]
        recs.update(zip(part, got))
    return [recs[i] for i in range(len(entries))]


def _checkpoint_epoch(out: Path) -> int:
    try:
        return int(load_torch(out / records.CHECKPOINT)["epoch"])
    except Exception:   # missing or unreadable: the trial starts (over) at epoch 1
        return 0


def run_group(entries: list[tuple], job_type: str = "trial") -> list[dict]:
    """Train these fusable trials as one fused model; the records, in order (see the module docstring)."""
    recs: dict[int, dict] = {}
    mine: list[int] = []
    for i, (cfg, out, _) in enumerate(entries):
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        tid = trial_id(cfg)
        done = current_record(cfg, out, tid)
        held = claims.acquire(out) if done is None else None
        if held is not None:
            print(f"[gridtune] {tid}: claimed by {held.get('host')}:{held.get('pid')}, not run here", flush=True)
            recs[i] = {"trial_id": tid, "status": "claimed", "claim": held}
            continue
        done = done or current_record(cfg, out, tid, set_aside=True)   # another driver may have finished it meanwhile
        if done is not None:
            print(f"[gridtune] {tid}: already {done['status']}, skipped", flush=True)
            recs[i] = done
            continue
        for tmp in out.glob(".*.tmp"):          # temp files of a writer killed before its rename
            tmp.unlink(missing_ok=True)
        mine.append(i)
    try:
        by_epoch: dict[int, list[int]] = {}
        for i in mine:
            by_epoch.setdefault(_checkpoint_epoch(Path(entries[i][1])), []).append(i)
        for part in by_epoch.values():
            recs.update(_train_or_split([entries[i] for i in part], part, job_type))
    finally:
        for i in mine:
            claims.release(Path(entries[i][1]))
    return [recs[i] for i in range(len(entries))]


def _train_or_split(entries, index, job_type) -> dict[int, dict]:
    if len(entries) == 1:
        cfg, out, ov = entries[0]
        claims.release(Path(out))               # run_trial claims it itself
        return {index[0]: run_trial(cfg, out, overrides=ov, job_type=job_type)}
    out = _train(entries, index, job_type)
    if out is not None:
        return out
    print(f"[gridtune] fused group of {len(entries)}: CUDA out of memory; splitting it in halves", flush=True)
    _free_cuda()
    got, left = {}, []
    for k, (cfg, path, _) in enumerate(entries):    # members recorded before the OOM stay recorded
        done = done_record(Path(path), trial_id(cfg))
        if done is not None:
            got[index[k]] = done
        else:
            left.append(k)
    half = len(left) // 2
    for part in (left[:half], left[half:]):
        if part:
            got.update(_train_or_split([entries[k] for k in part], [index[k] for k in part], job_type))
    return got


def _free_cuda() -> None:
    import gc

    import torch
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _train(entries, index, job_type) -> dict[int, dict] | None:
    """Records of a group trained fused, or None when it ran out of CUDA memory (nothing recorded)."""
    from gridtune.sweepdir import tracking
    from gridtune.train.engine import TrialRun
    from .model import FusedCNN
    t0 = time.perf_counter()
    recs = [new_record(cfg, trial_id(cfg), ov, int(cfg.train.batch_size)) for cfg, _, ov in entries]
    runs: list = []
    out: dict[int, dict] = {}

    def finish(b: int, fields: dict) -> None:
        recs[b].update(fields)
        cfg, path, _ = entries[b]
        out[index[b]] = close_record(cfg, Path(path), recs[b], runs[b] if b < len(runs) else None,
                                     time.perf_counter() - t0)

    with contextlib.ExitStack() as stack:
        try:
            for b, (cfg, path, _) in enumerate(entries):
                tracker = stack.enter_context(tracking.open_tracker(
                    cfg.get("tracking"), run_dir=path, name=recs[b]["trial_id"], group=str(cfg.sweep_name),
                    job_type=job_type, config=recs[b]["config"]))
                runs.append(TrialRun(cfg, Path(path), batch_size=int(cfg.train.batch_size), tracker=tracker,
                                     shared=runs[0] if runs else None))
            model = FusedCNN([r.model for r in runs])
            print(f"[gridtune] fused group of {len(runs)}: {' '.join(r['trial_id'] for r in recs)}", flush=True)
            _fit(model, runs, finish)
        except Exception as e:   # expected failures become each pending member's status
            fields = classify(e)
            if fields["status"] == "oom":
                return None
            if fields["status"] == "failed":
                traceback.print_exc()
            for b in range(len(entries)):
                if index[b] not in out:
                    finish(b, fields)
    return out


def _fit(model, runs, finish) -> None:
    from . import loop
    lead = runs[0]
    pending = [b for b, r in enumerate(runs) if r.epoch < r.until]
    for b in range(len(runs)):
        if b not in pending:
            finish(b, {"status": "paused" if runs[b].paused else "ok"})
    while pending:
        model.unpack()
        model.pack(pending)
        epoch = runs[pending[0]].epoch + 1
        lrs = {b: runs[b].scheduler.current_lrs() for b in pending}
        t0 = time.perf_counter()
        trs, failed = loop.train_epoch(
            epoch, model, runs, lead.train_features, lead.augment, lead.train_data, lead.train_idx,
            batch_size=lead.batch_size, generator=lead.gen, amp_dtype=lead.amp_dtype,
            channels_last=lead.channels_last, scaler=lead.scaler,
            heartbeat=lambda active: [claims.heartbeat(runs[b].out) for b in active])
        model.unpack()
        for b, e in failed.items():
            finish(b, {"status": "diverged", "diverged_epoch": e.epoch, "error": str(e)})
        outs = loop.predict(model, lead.train_features, lead.train_data, lead.val_idx,
                                  batch_size=int(lead.cfg.train.eval_batch_size), amp_dtype=lead.amp_dtype,
                                  channels_last=lead.channels_last)
        for b, pred in outs.items():
            run = runs[b]
            if run.scaler is not None and run is not lead:
                run.scaler.load_state_dict(lead.scaler.state_dict())   # one loss scale for the group
            val, extra = run.score(*pred)
            run.record_epoch(epoch, lrs[b], trs[b], val, extra, time.perf_counter() - t0)
            if run.stopped_early or run.epoch >= run.until:
                finish(b, {"status": "paused" if run.paused else "ok"})
        pending = [b for b in outs if not (runs[b].stopped_early or runs[b].epoch >= runs[b].until)]
