"""`python -m gridtune.doctor [overrides]`: is this machine ready to run gridtune with this config?

One line per check, `ok` or `problem`, with what to do about a problem: Python, torch and torchaudio
(their versions and whether they load together: a torchaudio built for another torch fails only when
its C++ library loads), CUDA devices and bf16, CPU bf16, the data root and its layout, the SLURM client
(sbatch, sinfo, partitions, GPUs per node) and wandb's mode (online/offline, whether a key is set;
the key itself is never printed). The config is composed from the same overrides as a sweep
(`python -m gridtune.doctor data.root=/data/irmas launcher=slurm`).

A problem is only what the composed config needs: no CUDA is fine for `device=auto`, a missing SLURM
client is fine for `launcher=local`. The exit status is 1 when any check the config needs fails,
2 when the overrides themselves do not compose.
"""
from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

MIN_PYTHON = (3, 10)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{'ok     ' if self.ok else 'problem'}  {self.name:<11} {self.detail}"
        return text + (f"  -> {self.fix}" if not self.ok and self.fix else "")


def check_python() -> Check:
    v = sys.version_info
    ok = v[:2] >= MIN_PYTHON
    return Check("python", ok, f"{v.major}.{v.minor}.{v.micro} ({sys.executable})",
                 f"use Python >= {MIN_PYTHON[0]}.{MIN_PYTHON[1]}")


def check_torch() -> Check:
    """Import torch and torchaudio and run one MelSpectrogram: the only way an ABI mismatch shows."""
    try:
        import torch
    except Exception as e:   # an ImportError, or an OSError from a broken CUDA library
        return Check("torch", False, f"import failed: {_one_line(e)}", "make install (installs uv.lock)")
    try:
        import torchaudio
        torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_mels=32)(torch.zeros(1, 16000))
    except Exception as e:
        ta = _dist_version("torchaudio")
        return Check("torch", False, f"torch {torch.__version__} with torchaudio {ta}: {_one_line(e)}",
                     "torch and torchaudio must be the pair uv.lock pins: make install")
    return Check("torch", True, f"torch {torch.__version__}, torchaudio {torchaudio.__version__}: load together")


def check_cuda(device: str) -> Check:
    import torch
    need = device == "cuda"
    if not torch.cuda.is_available():
        return Check("cuda", not need, "no CUDA device: trials run on the CPU",
                     "device=cuda needs a GPU node (or device=auto)")
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    bf16 = "bf16 yes" if torch.cuda.is_bf16_supported() else "bf16 no (fp16 + GradScaler)"
    return Check("cuda", True, f"{len(names)} device(s): {', '.join(names)}; {bf16}")


def check_cpu_bf16() -> Check:
    from gridtune.train.loop import cpu_has_bf16
    if cpu_has_bf16():
        return Check("cpu bf16", True, "native bf16 (AVX512-BF16/AMX): train.amp=auto uses bf16 on the CPU")
    return Check("cpu bf16", True, "no native bf16: train.amp=auto trains in fp32 on the CPU")


def check_data(cfg) -> Check:
    from gridtune.data.layouts import DataError, index_train
    root = str(cfg.data.root)
    try:
        clips, names, layout = index_train(root, str(cfg.data.layout), list(cfg.data.classes or []) or None)
    except (DataError, OSError) as e:
        return Check("data", False, str(e), "point data.root (or GRIDTUNE_DATA) at an IRMAS-layout folder; "
                     "python -m gridtune.data.demo --out DIR makes one")
    tests = sorted(p.name for p in Path(root).glob("IRMAS-TestingData-Part*") if p.is_dir())
    extra = f", test parts: {', '.join(tests)}" if tests else ", no IRMAS test parts"
    return Check("data", True, f"data.root={root}: layout {layout}, {len(names)} classes, {len(clips)} clips{extra}")


def check_slurm(cfg) -> Check:
    need = _launcher_name(cfg) == "slurm"
    missing = [c for c in ("sbatch", "sinfo", "squeue", "sacct") if shutil.which(c) is None]
    if missing:
        return Check("slurm", not need, f"no SLURM client ({', '.join(missing)} not on PATH)",
                     "run on a login node of the cluster (launcher=slurm submits with sbatch)")
    from gridtune.slurm import cluster
    nodes, why = cluster.query_or_why(15)
    if nodes is None:
        return Check("slurm", not need, why, "is slurmctld up? (sinfo)")
    parts = cluster.partitions(nodes)
    return Check("slurm", True, "partitions: " + "; ".join(parts))


def check_wandb(cfg) -> Check:
    from gridtune.sweepdir.tracking import resolve_mode
    backend = str((cfg.get("tracking") or {}).get("name", "none"))
    key = "key set" if os.environ.get("WANDB_API_KEY") or _netrc_has_wandb() else "no key"
    try:
        import wandb
        version = f"wandb {wandb.__version__}"
    except Exception as e:
        return Check("wandb", backend != "wandb", f"import failed: {_one_line(e)}", "make install")
    if backend != "wandb":
        return Check("wandb", True, f"{version}; tracking=none (tracking=wandb logs every trial); {key}")
    mode = resolve_mode(cfg.tracking.get("mode"))
    hint = " (upload later: wandb sync DIR/*/wandb/offline-run-*)" if mode == "offline" else ""
    return Check("wandb", True, f"{version}; tracking=wandb, mode {mode}{hint}; {key}")


def run_checks(cfg) -> list[Check]:
    checks = [check_python(), check_torch()]
    if checks[-1].ok:
        checks += [check_cuda(str(cfg.device)), check_cpu_bf16()]
    return checks + [check_data(cfg), check_slurm(cfg), check_wandb(cfg)]


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__.strip())
        return
    try:
        cfg = _compose(args)
    except Exception as e:   # a typo'd key or value: Hydra's own message, on one line
        print(f"gridtune.doctor: {_one_line(e)}", file=sys.stderr)
        sys.exit(2)
    checks = run_checks(cfg)
    for c in checks:
        print(c.line(), flush=True)
    bad = [c.name for c in checks if not c.ok]
    print(f"gridtune.doctor: {len(checks) - len(bad)} ok, {len(bad)} problem(s)" + (f": {', '.join(bad)}" if bad else ""))
    sys.exit(1 if bad else 0)


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from gridtune.config.schema import CONF_DIR
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def _launcher_name(cfg) -> str:
    target = str(cfg.hydra.launcher.get("_target_", "")) if "hydra" in cfg else ""
    return "slurm" if "slurm" in target.lower() else "local"


def _netrc_has_wandb() -> bool:
    try:
        return "api.wandb.ai" in (Path.home() / ".netrc").read_text()
    except OSError:
        return False


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _one_line(e: object) -> str:
    return " ".join(str(e).split())[:300]


if __name__ == "__main__":
    main()
