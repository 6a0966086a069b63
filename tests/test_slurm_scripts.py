"""Fast checks of the SLURM shell scripts; none of them needs a running cluster.

`slurm/sweep.sh` and `slurm/final.sh` are run with plain bash (not sbatch), with a
stub interpreter (GRIDTUNE_PYTHON) that prints the arguments it received, so that
nothing real runs.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "slurm" / "sweep.sh"
FINAL = ROOT / "slurm" / "final.sh"
CLUSTER = ROOT / "scripts" / "slurm_local.sh"
SCRIPTS = [SWEEP, FINAL, CLUSTER]


def sbatch_options(script: Path) -> list[str]:
    """The options sbatch would read: #SBATCH lines before the first command."""
    options = []
    for line in script.read_text().splitlines()[1:]:
        if line.startswith("#SBATCH"):
            options.append(line[len("#SBATCH"):].strip())
        elif line.strip() and not line.lstrip().startswith("#"):
            break
    return options


@pytest.fixture()
def sandbox(tmp_path: Path) -> dict:
    """A submit dir, a stub interpreter and a clean environment (no SLURM, no W&B)."""
    submit = tmp_path / "submit"
    submit.mkdir()
    stub = tmp_path / "stub-python"
    stub.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, os, sys, time
        print(json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(),
                          "WANDB_MODE": os.environ.get("WANDB_MODE"),
                          "VENV_MARK": os.environ.get("VENV_MARK")}}), flush=True)
        if os.environ.get("STUB_PID_FILE"):
            with open(os.environ["STUB_PID_FILE"], "w") as f:
                f.write(str(os.getpid()))
        stop = os.environ.get("STUB_WAIT_FOR")
        while stop and not os.path.exists(stop):
            time.sleep(0.05)
        """))
    stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "WANDB_", "GRIDTUNE_"))}
    env.update(HOME=str(tmp_path / "home"), SLURM_SUBMIT_DIR=str(submit),
               GRIDTUNE_PYTHON=str(stub), GRIDTUNE_VENV=str(tmp_path / "no-venv"))
    env.pop("NETRC", None)
    return {"tmp": tmp_path, "submit": submit, "env": env}


def run(script: Path, *args: str, env: dict, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], env=env, capture_output=True,
                          text=True, timeout=30, **kw)


def stub_call(proc: subprocess.CompletedProcess) -> dict:
    """The JSON line the stub printed (the scripts also log a few lines of their own)."""
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0])


# --- syntax and lint -------------------------------------------------------------

@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script: Path) -> None:
    subprocess.run(["bash", "-n", str(script)], check=True)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script: Path) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    proc = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


# --- #SBATCH headers -----------------------------------------------------------------

def test_sweep_headers() -> None:
    opts = sbatch_options(SWEEP)
    assert "--job-name=gridtune-sweep" in opts
    assert "--ntasks=1" in opts
    cpus = [int(o.split("=")[1]) for o in opts if o.startswith("--cpus-per-task=")]
    assert cpus and 1 <= cpus[0] <= 2
    assert any(re.fullmatch(r"--mem=\d+[MG]", o) for o in opts)
    assert "--time=24:00:00" in opts
    assert any(o.startswith("--output=") and "%j" in o for o in opts)
    assert not any("gpu" in o for o in opts), "the sweep driver needs no GPU"


def test_final_headers() -> None:
    opts = sbatch_options(FINAL)
    for required in ("--job-name=gridtune-final", "--ntasks=1", "--gpus-per-node=1",
                     "--requeue", "--signal=B:USR2@120", "--open-mode=append"):
        assert required in opts
    assert any(o.startswith("--cpus-per-task=") for o in opts)
    assert any(re.fullmatch(r"--mem=\d+[MG]", o) for o in opts)
    assert any(re.fullmatch(r"--time=\d+:\d\d:\d\d", o) for o in opts)
    assert any(o.startswith("--output=") and "%j" in o for o in opts)


@pytest.mark.parametrize("script", [SWEEP, FINAL], ids=lambda p: p.name)
def test_no_inline_comments_in_sbatch_lines(script: Path) -> None:
    # sbatch would take "# ..." after an option as part of its value
    assert not any("#" in o for o in sbatch_options(script))


# --- sweep.sh -------------------------------------------------------------------------

def test_sweep_passes_arguments_verbatim(sandbox: dict) -> None:
    marker = sandbox["tmp"] / "pwned"
    args = ["sweep=task11", "x=a;b c", f"y=$(touch {marker})", "z='q' \"r\" `s`", "w=*"]
    call = stub_call(run(SWEEP, *args, env=sandbox["env"]))
    assert call["argv"] == ["-m", "gridtune.sweep", "-m", "launcher=slurm", *args]
    assert call["cwd"] == str(sandbox["submit"])
    assert not marker.exists()


def test_sweep_without_arguments(sandbox: dict) -> None:
    call = stub_call(run(SWEEP, env=sandbox["env"]))
    assert call["argv"] == ["-m", "gridtune.sweep", "-m", "launcher=slurm"]


def test_wandb_offline_only_without_credentials(sandbox: dict) -> None:
    env = sandbox["env"]
    assert stub_call(run(SWEEP, env=env))["WANDB_MODE"] == "offline"
    assert stub_call(run(SWEEP, env={**env, "WANDB_MODE": "disabled"}))["WANDB_MODE"] == "disabled"
    assert stub_call(run(SWEEP, env={**env, "WANDB_API_KEY": "k"}))["WANDB_MODE"] is None
    netrc = sandbox["tmp"] / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password k\n")
    assert stub_call(run(SWEEP, env={**env, "NETRC": str(netrc)}))["WANDB_MODE"] is None


def test_venv_is_activated_when_present(sandbox: dict) -> None:
    venv = sandbox["submit"] / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text("export VENV_MARK=activated\n")
    env = {k: v for k, v in sandbox["env"].items() if k != "GRIDTUNE_VENV"}
    assert stub_call(run(SWEEP, env=env))["VENV_MARK"] == "activated"
    assert stub_call(run(FINAL, str(sandbox["submit"]), env=env))["VENV_MARK"] == "activated"


# --- final.sh -------------------------------------------------------------------------

@pytest.mark.parametrize("args", [[], [""], ["does-not-exist", "x=1"]], ids=["none", "empty", "missing"])
def test_final_rejects_a_bad_sweep_dir(sandbox: dict, args: list[str]) -> None:
    proc = run(FINAL, *args, env=sandbox["env"])
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "sweep_dir" in proc.stderr


def test_final_passes_arguments_verbatim(sandbox: dict) -> None:
    sweep_dir = sandbox["submit"] / "sweeps" / "task11"
    sweep_dir.mkdir(parents=True)
    marker = sandbox["tmp"] / "pwned"
    extra = ["x=a;b c", f"y=$(touch {marker})"]
    call = stub_call(run(FINAL, "sweeps/task11", *extra, env=sandbox["env"]))
    # relative to the submit dir, made absolute
    assert call["argv"] == ["-m", "gridtune.final", f"sweep_dir={sweep_dir}", *extra]
    assert not marker.exists()


def test_final_quotes_an_unusual_sweep_dir_for_hydra(sandbox: dict) -> None:
    sweep_dir = sandbox["submit"] / "my sweep's, best"
    sweep_dir.mkdir()
    call = stub_call(run(FINAL, str(sweep_dir), env=sandbox["env"]))
    override = call["argv"][2]
    assert override == "sweep_dir='" + str(sweep_dir).replace("'", "\\'") + "'"
    hydra = pytest.importorskip("hydra.core.override_parser.overrides_parser")
    parsed = hydra.OverridesParser.create().parse_override(override)
    assert parsed.key_or_group == "sweep_dir" and parsed.value() == str(sweep_dir)


def _final_signalled(sandbox: dict, env: dict, at: str) -> subprocess.Popen:
    """Start final.sh with the stub interpreter; SLURM's USR2 reaches the shell either as the job
    starts (`start`: its venv's activate script, sourced before Python starts, sends it, so the
    moment is fixed) or once the stub runs (`running`: it prints its JSON line first)."""
    if at == "start":
        venv = sandbox["tmp"] / "venv"
        (venv / "bin").mkdir(parents=True)
        (venv / "bin" / "activate").write_text("kill -USR2 $$\n")
        env = {**env, "GRIDTUNE_VENV": str(venv)}
    proc = subprocess.Popen(["bash", str(FINAL), str(sandbox["submit"])], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if at == "running":
        line = ""
        while not line.startswith("{"):
            line = proc.stdout.readline()
            if not line:
                proc.kill()
                raise AssertionError(f"final.sh ended before starting the stub: {proc.stderr.read()}")
        proc.send_signal(signal.SIGUSR2)
    return proc


@pytest.mark.parametrize("at", ["start", "running"])
def test_final_requeues_itself_on_usr2(sandbox: dict, at: str) -> None:
    """USR2 (sent by SLURM 120 s before the time limit) -> `scontrol requeue <job>`."""
    tmp = sandbox["tmp"]
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    stop = tmp / "stop"
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f"#!/bin/sh\necho \"$@\" > {tmp}/scontrol.args\ntouch {stop}\n")
    scontrol.chmod(0o755)
    env = {**sandbox["env"], "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "SLURM_JOB_ID": "4242", "SLURM_RESTART_COUNT": "0", "STUB_WAIT_FOR": str(stop)}
    proc = _final_signalled(sandbox, env, at)
    try:
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert (tmp / "scontrol.args").read_text().split() == ["requeue", "4242"]
    assert "requeueing job 4242" in out


def test_final_exits_with_the_runs_status_when_it_ends_during_the_usr2_trap(sandbox: dict) -> None:
    """The run ends while the shell handles USR2 (its `scontrol requeue` returns only once the run is
    gone): final.sh exits with the run's status (0), not with the interrupted wait's (140)."""
    tmp = sandbox["tmp"]
    bin_dir, stop, pid = tmp / "bin", tmp / "stop", tmp / "stub.pid"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f"#!/bin/sh\ntouch {stop}\nwhile kill -0 $(cat {pid}) 2>/dev/null; do sleep 0.05; done\n")
    scontrol.chmod(0o755)
    env = {**sandbox["env"], "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242",
           "SLURM_RESTART_COUNT": "0", "STUB_WAIT_FOR": str(stop), "STUB_PID_FILE": str(pid)}
    proc = _final_signalled(sandbox, env, "running")
    try:
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert "requeueing job 4242" in out
    assert proc.returncode == 0, f"final.sh exited {proc.returncode}: {out}{err}"


@pytest.mark.parametrize("at", ["start", "running"])
def test_final_stops_requeueing_after_the_limit(sandbox: dict, at: str) -> None:
    tmp = sandbox["tmp"]
    stop = tmp / "stop"
    env = {**sandbox["env"], "SLURM_JOB_ID": "4242", "SLURM_RESTART_COUNT": "3",
           "GRIDTUNE_MAX_REQUEUES": "3", "STUB_WAIT_FOR": str(stop)}
    proc = _final_signalled(sandbox, env, at)
    try:
        deadline = time.monotonic() + 10
        lines = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "not requeueing" in line:
                break
        stop.touch()
        proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert any("not requeueing" in ln for ln in lines), lines
    assert proc.returncode == 0, f"final.sh exited {proc.returncode}: " + "".join(lines)


# --- slurm_local.sh (no root or cluster needed) ---------------------------------------

def test_cluster_script_usage() -> None:
    proc = subprocess.run(["bash", str(CLUSTER), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for word in ("up", "down", "status", "SLURM_LOCAL_CPUS", "SLURM_LOCAL_GPUS"):
        assert word in proc.stdout
    proc = subprocess.run(["bash", str(CLUSTER), "bogus"], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage" in proc.stderr


def test_cluster_config_keys_exist_in_slurm_22_05() -> None:
    # An unknown key makes every SLURM command fail; 22.05 spells the preemption
    # signal option preempt_send_user_signal (PreemptParameters came later).
    text = CLUSTER.read_text()
    assert "SlurmctldParameters=preempt_send_user_signal" in text
    assert not re.search(r"^PreemptParameters=", text, re.M)
    for needed in ("AuthInfo=cred_expire=10", "batch_sched_delay=0,sched_interval=2",
                   "PartitionName=$PARTITION", "PartitionName=$URGENT_PARTITION",
                   "SlurmdParameters=config_overrides", "File=$gpu_files"):
        assert needed in text
