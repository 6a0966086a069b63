"""Security: no pickled code runs from a checkpoint, the wandb key is never written down, outputs stay
inside the sweep directory, and config values never reach a shell unquoted."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, compose
from faultkit import sweep_args
from gridtune.config import checks, identity
from gridtune.sweepdir import records
from gridtune.train.trial import run_trial


class _Payload:
    """Unpickling this creates `path`: what a planted checkpoint could do with weights_only=False."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _malicious_checkpoint(path: Path, side_effect: Path) -> None:
    torch.save({"epoch": 1, "model": _Payload(side_effect), "history": []}, str(path))


def test_planted_pickle_checkpoint_is_refused_and_the_trial_starts_over(demo_root, tmp_path, capsys):
    probe = tmp_path / "probe"                       # the payload is real: a plain torch.load runs it
    _malicious_checkpoint(tmp_path / "probe.pt", probe)
    torch.load(tmp_path / "probe.pt", weights_only=False)
    assert probe.exists()

    d, marker = tmp_path / "t", tmp_path / "pwned"
    d.mkdir()
    _malicious_checkpoint(d / records.CHECKPOINT, marker)
    rec = run_trial(compose("preset=debug", "train.epochs=2", f"data.root={demo_root}"), d)
    out = capsys.readouterr().out
    assert f"{d / records.CHECKPOINT}: unreadable checkpoint (UnpicklingError); starting from epoch 1" in out
    assert "resumed" not in out
    assert rec["status"] == "ok" and rec["epochs_run"] == 2
    assert [r["epoch"] for r in records.read_history(d / records.HISTORY)] == [1, 2]
    assert torch.load(d / records.CHECKPOINT, weights_only=True)["epoch"] == 2     # replaced by a real one
    assert not marker.exists()


def _calls(text: str, name: str) -> list[str]:
    """The argument text of every call `name(...)` in `text` (parentheses matched)."""
    out = []
    for m in re.finditer(re.escape(name) + r"\(", text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        out.append(text[m.end():i - 1])
    return out


def test_nothing_in_the_package_unpickles_untrusted_files():
    loads, npy = [], []
    for path in (REPO / "src").rglob("*.py"):
        text = path.read_text()
        assert "pickle.load" not in text and "allow_pickle=True" not in text, path
        loads += [(path.name, a) for a in _calls(text, "torch.load")]
        npy += [(path.name, a) for a in _calls(text, "np.load")]
    assert loads and all("weights_only=True" in args for _, args in loads), loads
    assert all("allow_pickle" not in args for _, args in npy), npy          # numpy's default refuses pickles


@pytest.mark.slow
def test_wandb_api_key_is_never_written(run_gridtune, demo_root, tmp_path):
    key = "f" * 8 + "0123456789abcdef0123456789abcdef"           # 40 characters, like a real key
    assert len(key) == 40
    home = tmp_path / "home"
    env = {"WANDB_MODE": "offline", "WANDB_API_KEY": key, "HOME": str(home),
           "WANDB_CONFIG_DIR": str(home / "wandb-config"), "WANDB_CACHE_DIR": str(home / "wandb-cache"),
           "WANDB_DATA_DIR": str(home / "wandb-data"), "WANDB_SILENT": "false"}
    sweep = tmp_path / "out" / "tracked"
    r = run_gridtune(*sweep_args(demo_root, tmp_path / "out", "tracked", "train.epochs=1", "tracking=wandb"),
                     env=env)
    (result,) = sweep.glob("*/result.json")
    assert records.read_json(result)["status"] == "ok"
    runs = list(sweep.glob("*/wandb/offline-run-*/run-*.wandb"))
    assert runs, "no offline wandb run was written: the check below would prove nothing"
    red = run_gridtune(str(sweep), "--no-plots", "--tracking", "wandb", module="gridtune.reduce", env=env)
    assert (sweep / "leaderboard.md").exists() and (sweep / "report.html").exists()

    needle = key.encode()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) > 10
    leaks = [str(p) for p in files if needle in p.read_bytes()]
    assert leaks == []
    assert key not in r.stdout + r.stderr + red.stdout + red.stderr


@pytest.mark.parametrize("override", ["hydra.sweep.subdir=../../escape", "hydra.sweep.subdir=../escape"],
                         ids=["two-up", "one-up"])
def test_trial_dir_cannot_escape_through_subdir(run_gridtune, demo_root, tmp_path, override):
    out = tmp_path / "out"
    sweep = out / "esc"
    r = run_gridtune(*sweep_args(demo_root, out, "esc", "train.epochs=1"), override, check=False)
    outside = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")
                     if p not in (out, sweep) and sweep not in p.parents)
    assert outside == []
    assert r.returncode == 2 and "hydra.sweep.subdir=" in r.stderr and "escapes the sweep directory" in r.stderr
    assert not list(sweep.rglob("result.json"))


def test_sweep_name_cannot_escape(run_gridtune, demo_root, tmp_path):
    out = tmp_path / "root" / "out"
    r = run_gridtune(*sweep_args(demo_root, out, "../x", "train.epochs=1"), check=False)
    assert r.returncode == 2 and "sweep_name='../x': must be a plain name" in r.stderr
    assert not (tmp_path / "root").exists()                  # nothing written, inside or outside


def test_sweep_sh_hands_an_override_to_python_as_one_argument(tmp_path):
    bindir, marker, argv_file = tmp_path / "bin", tmp_path / "pwned", tmp_path / "argv.json"
    bindir.mkdir()
    fake = bindir / "python"
    fake.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, sys
        json.dump(sys.argv[1:], open({str(argv_file)!r}, "w"))
        """))
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "GRIDTUNE_", "WANDB_"))}
    env.update(PATH=f"{bindir}:{env['PATH']}", SLURM_SUBMIT_DIR=str(tmp_path), GRIDTUNE_VENV=str(tmp_path / "none"),
               HOME=str(tmp_path))
    value = f"lr=1e-3;touch {marker}"
    r = subprocess.run(["bash", str(REPO / "slurm" / "sweep.sh"), value, f"seed=$(touch {marker})"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(argv_file.read_text()) == ["-m", "gridtune.sweep", "-m", "launcher=slurm", value,
                                                 f"seed=$(touch {marker})"]
    assert not marker.exists()


# -- the sbatch text, built by submitit from the launcher config, without a cluster ----------------

def _sbatch_text(launcher: dict) -> str:
    """The sbatch script hydra-submitit-launcher would submit for these launcher settings."""
    from submitit.slurm.slurm import _make_sbatch_string
    kw = {"command": "python -u -m submitit.core._submit /x", "folder": launcher["submitit_folder"],
          "job_name": launcher["name"], "time": launcher["timeout_min"], "cpus_per_task": launcher["cpus_per_task"],
          "gpus_per_node": launcher["gpus_per_node"], "mem": f"{launcher['mem_gb']}GB",
          "signal_delay_s": launcher["signal_delay_s"], "setup": launcher["setup"],
          "additional_parameters": launcher["additional_parameters"], "map_count": 3,
          "array_parallelism": launcher["array_parallelism"]}
    for key in ("partition", "qos", "account", "constraint", "exclude", "gres", "comment", "mem_per_gpu",
                "mem_per_cpu"):
        if launcher.get(key) is not None:
            kw[key] = launcher[key]
    return _make_sbatch_string(**kw)


def _shell_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def _slurm_cfg(tmp_path):
    cfg = compose("launcher=slurm", f"out_root={tmp_path}", hydra=True)
    OmegaConf.update(cfg, "hydra.runtime.output_dir", str(tmp_path), force_add=True)
    return cfg


def _launcher(cfg) -> dict:
    return OmegaConf.to_container(cfg.hydra.launcher, resolve=True)


def test_sbatch_text_quotes_metacharacters_and_validation_refuses_them_first(tmp_path):
    cfg = _slurm_cfg(tmp_path)
    base = _shell_lines(_sbatch_text(_launcher(cfg)))
    assert base == ["export SUBMITIT_EXECUTOR=slurm", base[-1]] and base[-1].startswith("srun ")
    OmegaConf.update(cfg, "hydra.launcher.partition", "a;b", force_add=True)
    text = _sbatch_text(_launcher(cfg))
    assert "#SBATCH --partition='a;b'" in text and _shell_lines(text) == base     # quoted by submitit
    assert any(p.startswith("hydra.launcher.partition='a;b'") for p in checks.validate(cfg))


INJECT = "x\ntouch /tmp/gridtune-pwned #"
FIELDS = ["partition", "qos", "account", "constraint", "exclude", "gres", "comment", "mem_per_gpu", "mem_per_cpu",
          "name", "additional_parameters", "setup"]


@pytest.mark.parametrize("field", FIELDS + ["submitit_folder"])
def test_a_newline_that_would_inject_a_shell_line_is_refused(tmp_path, field):
    cfg = _slurm_cfg(tmp_path)
    value = {"additional_parameters": {"mail-user": INJECT}, "setup": [INJECT],
             "submitit_folder": f"{tmp_path}/{INJECT}/%j"}.get(field, INJECT)
    OmegaConf.update(cfg, f"hydra.launcher.{field}", value, force_add=True, merge=False)
    injected = [ln for ln in _shell_lines(_sbatch_text(_launcher(cfg))) if "touch /tmp/gridtune-pwned" in ln]
    assert injected, "submitit would have kept this value on its #SBATCH line"   # the danger is real
    assert any(p.startswith(f"hydra.launcher.{field}") for p in checks.validate(cfg)), checks.validate(cfg)
