"""Fused trials: the grouping rule, and a fused group equal to its trials run apart (CPU, fp32).

Same kernels on both sides: every comparison runs with `train.amp=off` (no bf16 on CPUs that have
it), `train.threads=1` and `train.onednn=false`. oneDNN's AVX-512 convolution kernels (taken on
AVX-512 CPUs, with or without native bf16) sum a grouped convolution's weight gradient in another
order than B separate convolutions: measured with torch 2.11, up to 6e-3 on a 33×96×28×28 grouped
convolution, which 3 epochs of SGD grow past any tolerance (14.3871 vs 14.3863 in one weight); 0 with
oneDNN off or capped at AVX2 (`ONEDNN_MAX_CPU_ISA=AVX2`). With oneDNN off, ATen computes a grouped
convolution group by group, each group the very convolution its trial runs alone, so the weights are
equal bit for bit (measured; the tolerance below is what the metrics need). The metrics are held to
|Δ| <= 1e-4 + 1e-3·|x|: the fused validation loss is one sum over the B models' outputs, in another
order than each model's own (measured within 3e-7). Everything else (statuses, epochs, batch order,
random states) must be identical.
"""
from __future__ import annotations

import math

import pytest
import torch

from conftest import Killed, compose
from gridtune.train import engine
from gridtune.train.fused import grouping
from gridtune.sweepdir import records
from gridtune.config.identity import trial_id
from gridtune.train.fused.job import run_chunk, run_group
from gridtune.train.runtime import load_torch
from gridtune.train.trial import run_trial

BASE = ("preset=debug", "device=cpu", "train.amp=off", "train.threads=1", "train.onednn=false", "optim=sgd",
        "sched=warmup_cosine")
# one group covering every fusable knob: lr, lr_conv/lr_head, dropout, l2, weight decay, momentum,
# and the parameters of a schedule of one type
MEMBERS = (
    ("lr=0.05", "dropout=0.5", "l2=1e-3", "optim.momentum=0.9"),
    ("lr=0.05", "lr_conv=0.02", "lr_head=0.1", "dropout=0.3", "l2=0", "optim.weight_decay=1e-3",
     "optim.momentum=0.5", "optim.nesterov=false", "sched.warmup_epochs=0.5", "sched.min_lr_factor=0.1"),
    ("lr=0.01", "dropout=0.1", "l2=1e-4", "optim.momentum=0.8", "sched.warmup_start_factor=0.3"),
)
RTOL, ATOL = 1e-3, 1e-4


def _cfgs(root, *extra, members=MEMBERS):
    return [compose(*BASE, f"data.root={root}", *extra, *m) for m in members]


def _entries(cfgs, base):
    return [(c, base / trial_id(c), []) for c in cfgs]


def _close(a, b, what):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for k in a:
            _close(a[k], b[k], f"{what}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{what}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL), (what, a, b)
    elif isinstance(a, torch.Tensor):
        if a.is_floating_point():
            torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL, msg=what)
        else:
            assert torch.equal(a, b), what
    else:
        assert a == b, (what, a, b)


TIMING = ("time_s", "train/seconds", "train/samples_per_s")


def _same_trial(apart, fused):
    """Two trial directories hold the same trial: result, history, checkpoint and best weights."""
    ra, rf = (records.read_json(d / records.RESULT) for d in (apart, fused))
    for k in ("status", "best_epoch", "epochs_run", "stopped_early", "diverged_epoch", "trial_id", "params"):
        assert ra[k] == rf[k], (k, ra[k], rf[k])
    _close(ra["metrics"], rf["metrics"], "metrics")
    ha, hf = (records.read_history(d / records.HISTORY) for d in (apart, fused))
    _close([{k: v for k, v in h.items() if k not in TIMING} for h in ha],
           [{k: v for k, v in h.items() if k not in TIMING} for h in hf], "history")
    for name in (records.CHECKPOINT, records.BEST):
        if (apart / name).exists() or (fused / name).exists():
            a, f = load_torch(apart / name), load_torch(fused / name)
            _close(a["model"], f["model"], f"{name}.model")
            if "optimizer" in a:
                _close(a["optimizer"]["state"], f["optimizer"]["state"], f"{name}.optimizer")
                _close(a["scheduler"], f["scheduler"], f"{name}.scheduler")
                assert torch.equal(a["rng_cpu"], f["rng_cpu"]) and torch.equal(a["rng_gen"], f["rng_gen"])
    return ra


def test_grouping_fuses_only_fusable_differences():
    base = compose("preset=debug")
    same = [compose("preset=debug", *m) for m in (("lr=5e-4",), ("lr_conv=1e-2", "lr_head=1e-4"),
                                                   ("dropout=0.3",), ("l2=0",), ("optim.weight_decay=0.1",))]
    sgd = [compose("preset=debug", "optim=sgd", m) for m in ("optim.momentum=0.5", "optim.momentum=0.0")]
    sched = [compose("preset=debug", "sched=step", m) for m in ("sched.step_size=3", "sched.gamma=0.5")]
    for c in same:
        assert grouping.fuse_key(c) == grouping.fuse_key(base)
    assert grouping.fuse_key(sgd[0]) == grouping.fuse_key(sgd[1]) and grouping.fuse_key(sched[0]) == grouping.fuse_key(sched[1])
    apart = ["seed=1", "optim=adamw", "train.batch_size=8", "train.epochs=3", "model.channels=[8,16,32,32]",
             "augment=none", "features.n_mels=16", "sched=cosine", "dropout=0", "data.root=/elsewhere",
             "train.early_stop.patience=2", "device=cpu"]
    for o in apart:
        assert grouping.fuse_key(compose("preset=debug", o)) != grouping.fuse_key(base), o
    # launcher, tracking and output settings never keep trials apart
    assert grouping.fuse_key(compose("preset=debug", "launcher=slurm", "out_root=/x", "sweep_name=s")) == \
        grouping.fuse_key(base)
    cfgs = [base, compose("preset=debug", "seed=1"), *same]
    assert grouping.groups(cfgs, 18) == [[0, 2, 3, 4, 5, 6], [1]]
    assert grouping.groups(cfgs, 4) == [[0, 2, 3], [4, 5, 6], [1]]     # split evenly under the cap


def test_fuse_mode_and_auto():
    assert grouping.mode(compose("launcher.fuse=on", "launcher.fuse_max=4")) == ("on", 4)
    assert grouping.enabled(compose("launcher.fuse=auto", "device=cpu")) is False
    assert grouping.enabled(compose("launcher.fuse=on", "device=cpu")) is True
    with pytest.raises(ValueError, match="launcher.fuse='sometimes'"):
        grouping.mode(compose("launcher.fuse=sometimes"))


def test_fused_group_equals_the_trials_run_apart(demo_root, tmp_path):
    cfgs = _cfgs(demo_root, "train.epochs=2")
    for c in cfgs:
        run_trial(c, tmp_path / "apart" / trial_id(c))
    recs = run_group(_entries(cfgs, tmp_path / "fused"))
    assert [r["status"] for r in recs] == ["ok"] * 3
    for c in cfgs:
        _same_trial(tmp_path / "apart" / trial_id(c), tmp_path / "fused" / trial_id(c))
    # the members really differ from one another (the comparison is not of three equal models)
    accs = {records.read_json(tmp_path / "fused" / trial_id(c) / records.RESULT)["metrics"]["train/loss"]
            for c in cfgs}
    assert len(accs) == 3


def test_fused_step_runs_under_bf16_autocast_and_channels_last():
    from gridtune.train.fused.model import FusedCNN
    from gridtune.train.model import AudioCNN
    models = []
    for p in (0.3, 0.5):
        torch.manual_seed(0)
        models.append(AudioCNN(channels=(8, 16), dropout=p, input_shape=(32, 32)).to(memory_format=torch.channels_last))
    fused = FusedCNN(models)
    x = torch.randn(4, 1, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = fused(x)
    assert logits.shape == (4, 2, 11) and logits.dtype == torch.bfloat16
    logits.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for m in models for p in m.parameters())
    fused.unpack()                 # the batch statistics the fused forward gathered, into each member
    assert all(int(m.features[0][1].num_batches_tracked) == 1 for m in models)
    fused.eval()
    with torch.no_grad():
        for b, m in enumerate(models):
            m.eval()
            torch.testing.assert_close(fused(x)[:, b], m(x))


@pytest.mark.slow
def test_a_diverging_member_is_frozen_and_the_others_go_on(demo_root, tmp_path):
    members = (MEMBERS[0], ("lr=1e3", "dropout=0.3", "l2=0"), MEMBERS[2])
    cfgs = _cfgs(demo_root, "train.epochs=3", members=members)
    for c in cfgs:
        run_trial(c, tmp_path / "apart" / trial_id(c))
    recs = run_group(_entries(cfgs, tmp_path / "fused"))
    assert [r["status"] for r in recs] == ["ok", "diverged", "ok"]
    assert recs[1]["diverged_epoch"] == 2 and recs[1]["epochs_run"] == 1       # its epoch-1 record stays
    assert recs[0]["epochs_run"] == recs[2]["epochs_run"] == 3                 # the others went on
    for c in cfgs:
        _same_trial(tmp_path / "apart" / trial_id(c), tmp_path / "fused" / trial_id(c))


@pytest.mark.slow
def test_per_member_early_stopping(demo_root, tmp_path):
    # patience 1 on the train loss: a member whose lr is too small to lower it stops early, the other trains on
    members = (("lr=0.05", "dropout=0.3"), ("lr=1e-9", "dropout=0.5"))
    cfgs = _cfgs(demo_root, "train.epochs=4", "train.early_stop.patience=1", "objective=train/loss",
                 "objective_mode=min", members=members)
    for c in cfgs:
        run_trial(c, tmp_path / "apart" / trial_id(c))
    run_group(_entries(cfgs, tmp_path / "fused"))
    got = [_same_trial(tmp_path / "apart" / trial_id(c), tmp_path / "fused" / trial_id(c)) for c in cfgs]
    assert got[1]["stopped_early"] and got[1]["epochs_run"] < 4
    assert got[0]["epochs_run"] > got[1]["epochs_run"]


@pytest.mark.slow
@pytest.mark.parametrize("after_member", [0, 2])
def test_killed_fused_group_resumes_to_the_same_metrics(demo_root, tmp_path, monkeypatch, after_member):
    """Killed right after member 0's epoch-1 checkpoint (the members then stand at different epochs)
    or after the last member's: the rerun ends every member as the uninterrupted fused run does."""
    cfgs = _cfgs(demo_root, "train.epochs=2")
    run_group(_entries(cfgs, tmp_path / "whole"))
    real_save = engine.save_torch
    target = tmp_path / "killed" / trial_id(cfgs[after_member]) / records.CHECKPOINT

    def save_then_die(path, obj):
        real_save(path, obj)
        if path == target and obj["epoch"] == 1:
            raise Killed()
    monkeypatch.setattr(engine, "save_torch", save_then_die)
    with pytest.raises(Killed):
        run_group(_entries(cfgs, tmp_path / "killed"))
    monkeypatch.setattr(engine, "save_torch", real_save)
    assert not list((tmp_path / "killed").glob("*/result.json"))
    recs = run_group(_entries(cfgs, tmp_path / "killed"))
    assert [r["status"] for r in recs] == ["ok"] * 3
    for c in cfgs:
        _same_trial(tmp_path / "whole" / trial_id(c), tmp_path / "killed" / trial_id(c))


@pytest.mark.slow
def test_run_chunk_runs_apart_what_does_not_fuse(demo_root, tmp_path):
    cfgs = _cfgs(demo_root, "train.epochs=1", "launcher.fuse=on", members=MEMBERS[:2]) + \
        [compose(*BASE, f"data.root={demo_root}", "train.epochs=1", "launcher.fuse=on", "seed=3")]
    recs = run_chunk(_entries(cfgs, tmp_path))
    assert [r["status"] for r in recs] == ["ok"] * 3
    again = run_chunk(_entries(cfgs, tmp_path))          # all final: skipped, same records
    assert [r["trial_id"] for r in again] == [r["trial_id"] for r in recs]


@pytest.mark.slow
def test_a_group_out_of_cuda_memory_is_split(demo_root, tmp_path, monkeypatch):
    """Out of memory at 3 models: the group is split in halves (1 alone + 2 fused), with the same results."""
    from gridtune.train.fused import loop
    real = loop.train_epoch

    def tight(epoch, model, *a, **k):
        if len(model.active) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(epoch, model, *a, **k)
    monkeypatch.setattr(loop, "train_epoch", tight)
    cfgs = _cfgs(demo_root, "train.epochs=1")
    for c in cfgs:
        run_trial(c, tmp_path / "apart" / trial_id(c))
    recs = run_group(_entries(cfgs, tmp_path / "fused"))
    assert [r["status"] for r in recs] == ["ok"] * 3
    for c in cfgs:
        _same_trial(tmp_path / "apart" / trial_id(c), tmp_path / "fused" / trial_id(c))


@pytest.mark.gpu
def test_fused_group_on_cuda_bf16_channels_last(demo_root, tmp_path):
    """On CUDA at bf16 + channels_last (what a GPU trial picks): the group trains and each member's
    metrics stay near the same trial run alone (cuDNN picks other kernels for grouped convolutions)."""
    cuda = ("device=cuda", "train.amp=bf16", "train.channels_last=true", "train.compile=false")
    cfgs = [compose(*BASE[:1], *cuda, "optim=sgd", "sched=warmup_cosine", f"data.root={demo_root}", "train.epochs=1", *m)
            for m in MEMBERS]
    for c in cfgs:
        run_trial(c, tmp_path / "apart" / trial_id(c))
    recs = run_group(_entries(cfgs, tmp_path / "fused"))
    assert [r["status"] for r in recs] == ["ok"] * 3 and all(r["device"].startswith("cuda") for r in recs)
    for c, r in zip(cfgs, recs):
        alone = records.read_json(tmp_path / "apart" / trial_id(c) / records.RESULT)
        assert math.isclose(alone["metrics"]["train/loss"], r["metrics"]["train/loss"], rel_tol=0.05)
