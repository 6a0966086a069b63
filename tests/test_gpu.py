"""On a CUDA device: a trial trains with bf16 (or fp16 + GradScaler) autocast and channels_last,
its data resident on the device, and resumes exactly. Skipped where no CUDA device is visible."""
import pytest
import torch

from conftest import compose
from gridtune.sweepdir import records
from gridtune.train.loop import resolve_amp
from gridtune.train.trial import run_trial

pytestmark = pytest.mark.gpu


def test_amp_choice_on_this_gpu():
    dtype, scaler = resolve_amp("auto", torch.device("cuda"))
    if torch.cuda.is_bf16_supported():
        assert (dtype, scaler) == (torch.bfloat16, False)
    else:
        assert (dtype, scaler) == (torch.float16, True)


def test_trial_on_cuda_with_amp_and_resident_data(demo_root, tmp_path):
    rec = run_trial(compose("preset=demo", "train.epochs=2", "device=cuda", f"data.root={demo_root}"), tmp_path / "t")
    assert rec["status"] == "ok" and rec["device"].startswith("cuda") and rec["amp"] in ("bfloat16", "float16")
    assert torch.load(tmp_path / "t" / records.BEST, weights_only=True)["model"]


def test_resume_on_cuda_matches(demo_root, tmp_path, run_killed_after_epoch):
    cfg = compose("preset=demo", "train.epochs=3", "device=cuda", "train.cudnn_benchmark=false",
                  f"data.root={demo_root}")
    torch.backends.cudnn.deterministic = True
    whole = run_trial(cfg, tmp_path / "whole")
    run_killed_after_epoch(cfg, tmp_path / "cut", epoch=2)
    resumed = run_trial(cfg, tmp_path / "cut")
    assert resumed["epochs_run"] == 3
    for key, value in whole["metrics"].items():
        assert resumed["metrics"][key] == pytest.approx(value, rel=1e-3, abs=1e-4), key
