"""What a trial computes in: `train.amp=auto` on CPUs with and without native bf16 (forced either way
with GRIDTUNE_CPU_BF16, so both paths run on any machine), channels_last, and oneDNN on or off
(`train.onednn`), set per trial and recorded."""
from __future__ import annotations

import pytest
import torch

from conftest import compose
from gridtune.sweepdir import records
from gridtune.config.identity import trial_id
from gridtune.train.loop import cpu_has_bf16, precision, resolve_amp
from gridtune.train.runtime import set_cpu
from gridtune.train.trial import run_trial

CPU = torch.device("cpu")


@pytest.mark.parametrize("forced, isa, want", [
    ("1", "", True), ("0", "", False),
    ("1", "AVX2", True),              # the explicit setting wins
    (None, "AVX2", False), (None, "avx512_core", False),     # oneDNN capped below bf16: no native bf16
])
def test_cpu_bf16_can_be_forced_either_way(monkeypatch, forced, isa, want):
    monkeypatch.delenv("GRIDTUNE_CPU_BF16", raising=False)
    if forced is not None:
        monkeypatch.setenv("GRIDTUNE_CPU_BF16", forced)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    assert cpu_has_bf16() is want


def test_cpu_bf16_follows_the_cpu_flags_when_nothing_is_forced(monkeypatch):
    monkeypatch.delenv("GRIDTUNE_CPU_BF16", raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    with open("/proc/cpuinfo") as f:
        flags = f.read()
    assert cpu_has_bf16() is ("avx512_bf16" in flags or "amx_bf16" in flags)


@pytest.mark.parametrize("native, amp, want", [
    ("1", "auto", torch.bfloat16), ("0", "auto", None), ("0", "bf16", torch.bfloat16), ("1", "off", None)])
def test_amp_on_the_cpu(monkeypatch, native, amp, want):
    monkeypatch.setenv("GRIDTUNE_CPU_BF16", native)
    assert resolve_amp(amp, CPU) == (want, False)


def test_precision_is_one_answer_for_training_and_prediction(monkeypatch):
    monkeypatch.setenv("GRIDTUNE_CPU_BF16", "1")
    train = compose("preset=debug").train
    assert precision(train, CPU) == (torch.bfloat16, False, True)            # auto, auto
    assert precision(train, CPU, "off") == (None, False, True)               # predict --amp off
    assert precision(compose("preset=debug", "train.channels_last=false").train, CPU)[2] is False


def test_set_cpu_sets_threads_and_onednn():
    set_cpu(compose("train.threads=1", "train.onednn=false"))
    assert torch.get_num_threads() == 1 and torch.backends.mkldnn.enabled is False
    set_cpu(compose("train.threads=1"))
    assert torch.backends.mkldnn.enabled is True


def test_onednn_is_not_part_of_a_trials_identity():
    assert trial_id(compose("preset=debug", "train.onednn=false")) == trial_id(compose("preset=debug"))


@pytest.mark.parametrize("native, recorded", [("1", "bfloat16"), ("0", "off")])
def test_a_trial_trains_on_either_path_and_records_it(demo_root, tmp_path, monkeypatch, native, recorded):
    monkeypatch.setenv("GRIDTUNE_CPU_BF16", native)
    cfg = compose("preset=debug", "device=cpu", "train.epochs=1", f"data.root={demo_root}")
    rec = run_trial(cfg, tmp_path / trial_id(cfg))
    assert rec["status"] == "ok" and rec["amp"] == recorded
    assert records.read_json(tmp_path / trial_id(cfg) / records.RESULT)["amp"] == recorded
