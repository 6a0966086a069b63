"""The install guard and `python -m gridtune.doctor`."""
from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys

import pytest

from conftest import REPO, gridtune


def test_torch_and_torchaudio_load_together():
    """An ABI mismatch between torch and torchaudio (a patch release of one without the other) only
    shows when torchaudio's C++ library loads: fail here in seconds, naming both versions."""
    versions = f"torch {md.version('torch')} with torchaudio {md.version('torchaudio')}"
    try:
        import torch
        import torchaudio
        mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=512, n_mels=32)(torch.randn(1, 16000))
    except (ImportError, OSError, RuntimeError) as e:
        pytest.fail(f"{versions} do not load together (install from uv.lock: make install): {e}")
    assert mel.shape == (1, 32, 16000 // 256 + 1), versions
    assert torch.isfinite(mel).all(), versions


def test_torch_pair_matches_the_lock():
    """torch and torchaudio are pinned together exactly; the installed pair is the locked one."""
    lock = (REPO / "uv.lock").read_text()
    for name in ("torch", "torchaudio"):
        locked = lock.split(f'\nname = "{name}"\nversion = "', 1)[1].split('"', 1)[0]
        assert md.version(name).split("+")[0] == locked, f"{name} {md.version(name)} installed, {locked} locked"


@pytest.mark.slow   # a subprocess that imports torch
def test_doctor_passes_on_a_good_setup(demo_root):
    r = gridtune(f"data.root={demo_root}", module="gridtune.doctor", check=False)
    lines = r.stdout.strip().splitlines()
    names = [ln.split()[1] for ln in lines[:-1]]
    assert names == ["python", "torch", "cuda", "cpu", "data", "slurm", "wandb"], r.stdout
    assert all(ln.startswith("ok") for ln in lines[:-1]), r.stdout
    assert r.returncode == 0 and lines[-1] == "gridtune.doctor: 7 ok, 0 problem(s)", r.stdout + r.stderr
    assert "layout irmas, 11 classes, 66 clips" in r.stdout


@pytest.mark.slow   # a subprocess that imports torch
def test_doctor_names_a_missing_data_root():
    r = gridtune("data.root=/nonexistent/irmas", module="gridtune.doctor", check=False)
    assert r.returncode == 1, r.stdout
    bad = [ln for ln in r.stdout.splitlines() if ln.startswith("problem")]
    assert len(bad) == 1 and "data.root=/nonexistent/irmas" in bad[0], r.stdout
    assert r.stdout.strip().splitlines()[-1].endswith("1 problem(s): data")


@pytest.mark.slow   # a subprocess that imports torch
def test_doctor_needs_slurm_only_for_the_slurm_launcher(demo_root, tmp_path):
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin".replace("/usr/bin:/bin", "/nonexistent")}
    local = gridtune(f"data.root={demo_root}", module="gridtune.doctor", check=False, env=env)
    slurm = gridtune(f"data.root={demo_root}", "launcher=slurm", module="gridtune.doctor", check=False, env=env)
    assert local.returncode == 0, local.stdout
    assert slurm.returncode == 1 and "problem  slurm" in slurm.stdout, slurm.stdout


@pytest.mark.slow   # a subprocess that imports torch
def test_doctor_never_prints_the_wandb_key(demo_root):
    key = "f" * 40
    r = gridtune(f"data.root={demo_root}", "tracking=wandb", module="gridtune.doctor", check=False,
                 env={"WANDB_API_KEY": key, "WANDB_MODE": "offline"})
    assert "tracking=wandb, mode offline" in r.stdout and "key set" in r.stdout, r.stdout
    assert key not in r.stdout + r.stderr


@pytest.mark.slow   # a subprocess that imports torch
def test_doctor_refuses_an_unknown_key():
    r = gridtune("lrr=1", module="gridtune.doctor", check=False)
    assert r.returncode == 2 and "lrr" in r.stderr.strip().splitlines()[-1], r.stderr
    assert "Traceback" not in r.stderr
