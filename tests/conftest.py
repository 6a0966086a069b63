"""Shared fixtures: a small generated dataset, a runner for gridtune commands, and marker policy.

Markers: `slow` (seconds to a minute), `slurm` (needs the local cluster: scripts/slurm_local.sh up),
`gpu` (needs CUDA). slurm tests are skipped with a reason when no cluster answers, except when
GRIDTUNE_REQUIRE_SLURM=1 (CI), where a missing cluster is a failure.

Under pytest-xdist (`make test` runs `-n auto --dist loadgroup`) every slurm test goes to one worker,
one at a time, so that two tests never share the cluster's queue; and each worker (with the
processes it starts) is pinned to its own CPUs, so that trials size their torch threads to those
CPUs instead of every worker oversubscribing the whole machine.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_SLURM_MISSING = pytest.StashKey[str]()


def _slurm_usable() -> str | None:
    """None when sinfo answers, else the reason."""
    if not shutil.which("sinfo"):
        return "no SLURM client (run: make slurm-up)"
    try:
        r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"sinfo failed: {e}"
    if r.returncode != 0:
        return f"SLURM not running: {r.stderr.strip().splitlines()[0] if r.stderr.strip() else r.returncode}"
    return None


def pytest_configure(config):
    worker, n = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if worker and n and hasattr(os, "sched_setaffinity"):
        cpus, i, n = sorted(os.sched_getaffinity(0)), int(worker.removeprefix("gw")), int(n)
        if len(cpus) >= n:
            os.sched_setaffinity(0, cpus[i::n])


@pytest.hookimpl(tryfirst=True)   # before pytest-xdist reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    slurm_reason = gpu_reason = None
    if any("slurm" in i.keywords for i in items):
        slurm_reason = _slurm_usable()
    if any("gpu" in i.keywords for i in items):
        import torch
        gpu_reason = None if torch.cuda.is_available() else "no CUDA device"
    for item in items:
        if "slurm" in item.keywords:
            item.add_marker(pytest.mark.xdist_group("slurm"))
        if "slurm" in item.keywords and slurm_reason:
            if os.environ.get("GRIDTUNE_REQUIRE_SLURM") == "1":
                # a usefixtures mark added after collection is ignored: fail in runtest_setup instead
                item.stash[_SLURM_MISSING] = slurm_reason
            else:
                item.add_marker(pytest.mark.skip(reason=f"slurm: {slurm_reason}"))
        if "gpu" in item.keywords and gpu_reason:
            item.add_marker(pytest.mark.skip(reason=f"gpu: {gpu_reason}"))


def pytest_collection_finish(session):
    """Under `--dist loadgroup` every slurm test's id must carry its group, or pytest-xdist would run
    two of them at once on the one cluster (as it silently does with pytest 9.2, see pyproject.toml)."""
    if os.environ.get("PYTEST_XDIST_WORKER") and getattr(session.config.option, "loadgroup", False):
        loose = [i.nodeid for i in session.items if "slurm" in i.keywords and not i.nodeid.endswith("@slurm")]
        if loose:
            raise pytest.UsageError(f"pytest-xdist did not group {len(loose)} slurm test(s) (e.g. {loose[0]}): "
                                    "they would share the cluster's queue; use the pytest that uv.lock pins")


def pytest_runtest_setup(item):
    # before any fixture, so module-scoped fixtures do not start sweeps on a missing cluster
    reason = item.stash.get(_SLURM_MISSING, None)
    if reason:
        pytest.fail(f"GRIDTUNE_REQUIRE_SLURM=1 but the cluster is not usable: {reason}", pytrace=False)


@pytest.fixture(autouse=True)
def _torch_process_flags():
    """A trial sets process-wide torch settings (threads, oneDNN on or off: gridtune.train.runtime.set_cpu);
    each test leaves them as it found them, so no test sees another's and the order never matters.
    torch is not imported here for tests that never import it."""
    torch = sys.modules.get("torch")
    saved = (torch.get_num_threads(), torch.backends.mkldnn.enabled) if torch else None
    yield
    torch = sys.modules.get("torch")
    if torch is not None:
        threads, onednn = saved or (None, True)
        if threads:
            torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = onednn


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A small IRMAS-layout dataset (66 train clips in 22 recordings, 4 test clips), shared read-only."""
    from gridtune.data.demo import generate
    root = tmp_path_factory.mktemp("demo")
    generate(root, per_class=6, test_clips=4, seed=0)
    return root


@pytest.fixture
def fresh_data(demo_root, tmp_path) -> Path:
    """A private copy of the demo data (own cache dir), for tests that count decodes or break files."""
    dst = tmp_path / "data"
    shutil.copytree(demo_root, dst, ignore=shutil.ignore_patterns(".gridtune_cache"))
    return dst


def gridtune(*args: str, env: dict | None = None, timeout: float = 600, check: bool = True,
             module: str = "gridtune.sweep") -> subprocess.CompletedProcess:
    """Run `python -m <module> args...` from the repo root, capturing output."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", **(env or {})}
    r = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=full_env,
                       capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{module} {' '.join(args)} exited {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


@pytest.fixture
def run_gridtune():
    return gridtune


def compose(*overrides: str, hydra: bool = False):
    """The composed trial config for these overrides (no Hydra run, no output dirs);
    `hydra=True` keeps the hydra node (launcher settings)."""
    from hydra import compose as hcompose, initialize_config_dir
    from gridtune.config.schema import CONF_DIR
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hcompose("config", overrides=list(overrides), return_hydra_config=hydra)


class Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing records it."""


@pytest.fixture
def run_killed_after_epoch(monkeypatch):
    """`run(cfg, out_dir, epoch)`: run a trial that dies right after writing that epoch's checkpoint,
    as a kill at that moment would leave it; the next run_trial resumes from there."""
    from gridtune.train import engine
    from gridtune.sweepdir import records
    from gridtune.train.trial import run_trial
    real_save = engine.save_torch

    def run(cfg, out_dir, epoch: int) -> None:
        def save_then_die(path, obj):
            real_save(path, obj)
            if path.name == records.CHECKPOINT and obj["epoch"] == epoch:
                raise Killed()
        monkeypatch.setattr(engine, "save_torch", save_then_die)
        try:
            with pytest.raises(Killed):
                run_trial(cfg, out_dir)
        finally:
            monkeypatch.setattr(engine, "save_torch", real_save)
    return run


def load_option(path):
    """A conf/<group>/<option>.yaml on its own, without its defaults list (the schema it extends)."""
    from omegaconf import OmegaConf
    cfg = OmegaConf.load(path)
    cfg.pop("defaults", None)
    return cfg
