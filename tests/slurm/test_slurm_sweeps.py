"""Sweeps on the real local SLURM cluster (scripts/slurm_local.sh up): job arrays, idempotent
reruns, a requeue in the middle of training, the driver and the final run as batch jobs, and a
failed trial that SLURM calls COMPLETED.

Every job gets a job name unique to this test run, so that sacct/scancel only ever see this
module's jobs even when others use the cluster; teardown cancels whatever of them is left.
Everything that waits on the cluster has a deadline. Timings (scheduler latency, SLURM vs local
wall time, requeue to resume) are printed at the end of the module.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from accounting import sacct, wait_sacct
from gridtune.sweepdir import claims, records

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
# A tiny cluster: one CPU, 1 GB and no GPU per trial. timeout_min > 10, else submitit counts
# every preemption signal as a timeout.
LAUNCHER = ("launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=1", "hydra.launcher.gpus_per_node=0", "hydra.launcher.timeout_min=20")
SMOKE = ("sweep=smoke", "preset=debug", "train.epochs=2")
TIMING_KEYS = ("time_s", "train/seconds", "train/samples_per_s")
RUN_ID = uuid.uuid4().hex[:6]
TIMINGS: dict[str, str] = {}
_NAMES: list[str] = []


# ---- helpers ----------------------------------------------------------------------------------

def job_name(tag: str) -> str:
    """A job name no other call gives: a module fixture set up twice (tests run in a shuffled order)
    launches its jobs again, and sacct must not mix the two launches up."""
    name = f"gt{RUN_ID}-{tag}-{len(_NAMES)}"
    _NAMES.append(name)
    return name


def clean_env(**extra: str) -> dict:
    """This environment minus SLURM's and sbatch's variables (a pytest run inside a job must not
    leak its job's settings into the sweeps it starts)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
    env.update(PYTHONUNBUFFERED="1", WANDB_MODE="offline", **extra)
    return env


def gridtune(*args: str, module: str = "gridtune.sweep", timeout: float = 300,
             check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=clean_env(),
                       capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{module} exited {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def gridtune_bg(*args: str, log: Path) -> subprocess.Popen:
    with log.open("w") as f:
        return subprocess.Popen([sys.executable, "-m", "gridtune.sweep", *args], cwd=REPO, env=clean_env(),
                                stdout=f, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, log: Path, timeout: float) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"still running after {timeout}s:\n{log.read_text()[-3000:]}")
    text = log.read_text()
    assert proc.returncode == 0, f"exited {proc.returncode}:\n{text[-3000:]}"
    return text


def sbatch(*args: str, env: dict) -> str:
    r = subprocess.run(["sbatch", "--parsable", *args], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"sbatch {' '.join(args)}: {r.stderr}"
    return r.stdout.strip().split(";")[0]


def wait_for(predicate, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def results(sweep_dir: Path) -> dict[str, dict]:
    return {(rec := records.read_json(p))["trial_id"]: rec for p in sorted(sweep_dir.glob("*/result.json"))}


def job_dirs(sweep_dir: Path) -> set[str]:
    sub = sweep_dir / ".submitit"
    return {p.name for p in sub.iterdir() if p.is_dir()} if sub.is_dir() else set()


def logs(sweep_dir: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(sweep_dir.glob(".submitit/*/*_log.out")))


def no_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def _ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


_LOG_START = re.compile(r"submitit INFO \((\S+ \S+?),(\d+)\) - Starting with JobEnvironment\(job_id=(\S+?),")


def latencies(sweep_dir: Path, name: str) -> str:
    """Submit -> start (sacct, 1 s resolution) and submit -> trial process start (submitit's log)."""
    rows = sacct("--name", name, "--format=JobID,State,Submit,Start")
    sched = [_ts(r[3]) - _ts(r[2]) for r in rows if r[3] not in ("Unknown", "None")]
    submit = {r[0]: _ts(r[2]) for r in rows}
    proc = []
    for m in _LOG_START.finditer(logs(sweep_dir)):
        if m.group(3) in submit:
            proc.append(_ts(m.group(1)) + int(m.group(2)) / 1000 - submit[m.group(3)])
    return (f"submit->start {min(sched):.0f}..{max(sched):.0f} s (sacct), submit->python {min(proc):.1f}.."
            f"{max(proc):.1f} s (submitit log), {len(rows)} jobs")


def warm_cache(data_root: Path) -> None:
    from hydra import compose, initialize_config_dir

    from gridtune.data import feed
    from gridtune.config.schema import CONF_DIR
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        feed.prepare(compose("config", overrides=[*SMOKE[1:], f"data.root={data_root}"]))


# ---- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def _report_and_cancel(request):
    yield
    for name in _NAMES:      # only this module's jobs, by their unique names
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["scancel", "--name", name], capture_output=True, timeout=30)
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():  # shown without -s
        for key, value in TIMINGS.items():
            print(f"\n[slurm timing] {key}: {value}", end="")
        print()


@pytest.fixture(scope="module")
def smoke(demo_root, tmp_path_factory) -> dict:
    """The smoke grid (4 trials) run once as a SLURM array; tests 1, 2 and 6 share it."""
    out = tmp_path_factory.mktemp("smoke_slurm")
    name = job_name("smoke")
    args = ("-m", *SMOKE, *LAUNCHER, f"hydra.launcher.name={name}", f"out_root={out}", f"data.root={demo_root}")
    warm_cache(demo_root)     # so that neither timed run below pays for decoding the audio
    t0 = time.perf_counter()
    r = gridtune(*args, timeout=300)
    wall = time.perf_counter() - t0
    return {"args": args, "out": out, "dir": out / "smoke", "name": name, "wall": wall, "stdout": r.stdout}


# ---- tests ------------------------------------------------------------------------------------

def test_smoke_sweep_runs_as_a_job_array(smoke, demo_root, tmp_path):
    sweep = smoke["dir"]
    res = results(sweep)
    assert len(res) == 4 and {r["status"] for r in res.values()} == {"ok"}, smoke["stdout"][-2000:]
    assert "4 trials: 4 ok" in smoke["stdout"]
    rows = wait_sacct("--name", smoke["name"], n=4)
    array = {r[0]: r[1] for r in rows}
    base = next(iter(array)).split("_")[0]
    assert array == {f"{base}_{i}": "COMPLETED" for i in range(4)}
    assert job_dirs(sweep) >= {f"{base}_{i}" for i in range(4)}
    # every trial ran in its own array task, and says so in its record
    assert sorted(r["slurm_job_id"] for r in res.values()) == sorted(array)

    # the same grid on the local launcher, 1 thread like the 1-CPU jobs: same numbers, timed
    t0 = time.perf_counter()
    gridtune("-m", *SMOKE, "train.threads=1", f"out_root={tmp_path}", f"data.root={demo_root}", timeout=300)
    local_wall = time.perf_counter() - t0
    local = results(tmp_path / "smoke")
    assert sorted(local) == sorted(res)
    for tid in res:
        assert local[tid]["metrics"] == res[tid]["metrics"], tid
    TIMINGS["smoke sweep wall time"] = f"SLURM {smoke['wall']:.1f} s (4 parallel 1-CPU jobs), local {local_wall:.1f} s"
    TIMINGS["smoke array latency"] = latencies(sweep, smoke["name"])
    assert 0 < smoke["wall"] < 300 and 0 < local_wall < 300


def test_rerun_submits_nothing(smoke):
    before_dirs = job_dirs(smoke["dir"])
    before_jobs = wait_sacct("--name", smoke["name"], n=4)
    before = results(smoke["dir"])
    r = gridtune(*smoke["args"], timeout=120)
    assert "4 trials, 4 already done (skipped), 0 to run" in r.stdout
    assert "nothing to run" in r.stdout
    assert job_dirs(smoke["dir"]) == before_dirs
    assert sacct("--name", smoke["name"], "--format=JobID,State") == before_jobs
    assert results(smoke["dir"]) == before


def test_requeue_resumes_mid_training(demo_root, tmp_path):
    epochs = 60      # ~0.4-1.5 s an epoch; a requeued job keeps running ~7 s (KillWait + srun grace),
                     # so the trial must last well beyond that or it finishes before the kill
    common = ("-m", "preset=demo", f"train.epochs={epochs}", "sweep_name=requeue", f"data.root={demo_root}")
    name = job_name("requeue")
    ref_log, drv_log = tmp_path / "local.log", tmp_path / "driver.log"
    ref = gridtune_bg(*common, "train.threads=1", f"out_root={tmp_path / 'local'}", log=ref_log)
    drv = gridtune_bg(*common, *LAUNCHER, f"hydra.launcher.name={name}", f"out_root={tmp_path / 'slurm'}",
                      log=drv_log)
    try:
        sweep = tmp_path / "slurm" / "requeue"
        claim = wait_for(lambda: next(iter(sweep.glob("*/claim.json")), None), 120, "the trial's claim")
        trial = claim.parent
        job = wait_for(lambda: (claims.read(claim) or {}).get("slurm_job_id"), 30, "claim.json")
        done = wait_for(lambda: len(records.read_history(trial / records.HISTORY)) >= 2 or drv.poll() is not None,
                        120, "2 epochs in history.jsonl")
        n = len(records.read_history(trial / records.HISTORY))
        assert done and n < epochs and not (trial / records.RESULT).exists(), f"too late to requeue ({n} epochs)"
        r = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        t_requeue = time.perf_counter()
        wait_for(lambda: "] resumed " in logs(sweep), 180, "the requeued job to resume", poll=0.1)
        resume_s = time.perf_counter() - t_requeue
        finish(drv, drv_log, timeout=240)
        finish(ref, ref_log, timeout=120)
    finally:
        for p in (drv, ref):
            if p.poll() is None:
                p.kill()
                p.wait()

    text = logs(sweep)
    m = re.search(rf"\[gridtune\] resumed {trial.name} after epoch (\d+)", text)
    assert m and n <= int(m.group(1)) < epochs, text[-3000:]
    assert text.count("Starting with JobEnvironment") == 2
    history = records.read_history(trial / records.HISTORY)
    assert [h["epoch"] for h in history] == list(range(1, epochs + 1))
    res = records.read_json(trial / records.RESULT)
    assert res["status"] == "ok" and res["epochs_run"] == epochs
    # the interrupted run ends exactly where an uninterrupted local one does
    local_dir = tmp_path / "local" / "requeue" / trial.name
    local = records.read_json(local_dir / records.RESULT)
    assert res["metrics"] == local["metrics"]
    assert no_timing(history) == no_timing(records.read_history(local_dir / records.HISTORY))
    # SLURM's side: the first run is on record as REQUEUED, the second one COMPLETED
    rows = wait_sacct("-j", job, dup=True, n=2, fields="JobID,State,Submit,Start,End")
    assert [r[1] for r in rows] == ["REQUEUED", "COMPLETED"], rows
    TIMINGS["requeue"] = (f"scontrol requeue after epoch {n} -> 'resumed after epoch {m.group(1)}' in the log "
                          f"{resume_s:.1f} s later (sacct: first run ended -> second started "
                          f"{_ts(rows[1][3]) - _ts(rows[0][4]):.0f} s)")


def test_sweep_driver_as_a_batch_job(demo_root, tmp_path):
    driver, trials = job_name("driver"), job_name("driver-trials")
    args = (*SMOKE, f"out_root={tmp_path}", f"data.root={demo_root}", *LAUNCHER[1:],
            f"hydra.launcher.name={trials}", "hydra.launcher.array_parallelism=3")   # 1 CPU driver + 3 trials
    t0 = time.perf_counter()
    job = sbatch("-J", driver, f"--output={tmp_path}/driver-%j.out", "slurm/sweep.sh", *args,
                 env=clean_env(GRIDTUNE_PYTHON=sys.executable))
    rows = wait_sacct("-j", job, fields="JobID,State,Submit,Start", timeout=300)
    wall = time.perf_counter() - t0
    out = (tmp_path / f"driver-{job}.out").read_text()
    assert [r[:2] for r in rows] == [[job, "COMPLETED"]], out[-3000:]
    assert f"{sys.executable} -m gridtune.sweep -m launcher=slurm" in out
    assert "4 trials: 4 ok" in out
    res = results(tmp_path / "smoke")
    assert len(res) == 4 and {r["status"] for r in res.values()} == {"ok"}
    arr = wait_sacct("--name", trials, n=4)
    assert [r[1] for r in arr] == ["COMPLETED"] * 4
    script = next((tmp_path / "smoke" / ".submitit").glob("*/*_submission.sh")).read_text()
    assert "#SBATCH --array=0-3%3" in script
    TIMINGS["sbatch slurm/sweep.sh (driver job + 4 trials, 3 at a time)"] = (
        f"{wall:.1f} s; driver submit->start {_ts(rows[0][3]) - _ts(rows[0][2]):.0f} s; trials "
        + latencies(tmp_path / "smoke", trials))


def test_failed_trial_is_failed_though_slurm_says_completed(fresh_data, tmp_path):
    """A corrupt file only shows when the audio is decoded, inside the jobs (the driver's cache
    preparation is off): the trial with data.on_bad_file=error records `failed`, its job exits 0.
    It also asks for a (fake) GPU per job, to show those schedule."""
    (fresh_data / "IRMAS-TrainingData" / "cel" / "[cel][cla]0999__1.wav").write_text("not audio")
    name = job_name("failing")
    launcher = [a for a in LAUNCHER if "gpus_per_node" not in a] + ["hydra.launcher.gpus_per_node=1"]
    r = gridtune("-m", "preset=debug", "train.epochs=2", "data.on_bad_file=skip,error", "sweep_name=failing",
                 "hydra.sweeper.prepare_cache=false", *launcher, f"hydra.launcher.name={name}",
                 f"out_root={tmp_path}", f"data.root={fresh_data}", timeout=300, check=False)
    assert "2 trials: 1 ok, 1 failed" in r.stdout
    assert r.returncode == 1, r.stderr       # a failed trial: the driver exits 1 though SLURM says COMPLETED
    assert r.stderr.strip().splitlines()[-1] == "gridtune: 1 of 2 trials did not end ok or diverged (1 failed)"
    rows = wait_sacct("--name", name, fields="JobID,State,AllocTRES", n=2)
    assert [row[1] for row in rows] == ["COMPLETED"] * 2
    assert all("gres/gpu=1" in row[2] for row in rows), rows
    sweep = tmp_path / "failing"
    bad = next(tid for tid, rec in results(sweep).items() if rec["status"] == "failed")
    st = gridtune(str(sweep), module="gridtune.status", check=False, timeout=60)
    assert st.returncode == 1, st.stdout + st.stderr
    line = next(ln for ln in st.stdout.splitlines() if ln.strip().startswith(bad))
    assert re.search(rf"{bad}\s+failed\s+\S*BadAudio: .*0999__1\.wav: not readable as audio", line), st.stdout
    assert re.search(r"\[SLURM \S+ COMPLETED 0:0, but the trial record says failed\]", line), st.stdout
    job = records.read_json(sweep / bad / records.RESULT)["slurm_job_id"]
    assert re.search(rf"^\s+{re.escape(job)}\s+{name}\s+COMPLETED\s.*\b{bad}$", st.stdout, re.M), st.stdout
    assert "2 trials: 1 ok, 1 failed" in st.stdout


def test_final_run_as_a_gpu_job(smoke, demo_root):
    sweep = smoke["dir"]
    gridtune(str(sweep), "--no-plots", module="gridtune.reduce", timeout=120)
    assert (sweep / "best.yaml").exists()
    name = job_name("final")
    log = smoke["out"] / "final-%j.out"
    job = sbatch("-J", name, f"--output={log}", "slurm/final.sh", str(sweep), "final.epochs=2",
                 f"data.root={demo_root}", env=clean_env(GRIDTUNE_PYTHON=sys.executable))
    rows = wait_sacct("-j", job, fields="JobID,State,AllocTRES,Submit,Start,End", timeout=240)
    out = Path(str(log).replace("%j", job)).read_text()
    assert rows[0][1] == "COMPLETED", out[-3000:]
    assert "gres/gpu=1" in rows[0][2]                  # the fake GPU was granted...
    final = sweep / "final"
    assert (final / "model.pt").exists() and (final / "final.json").exists()
    rec = records.read_json(final / "final.json")
    assert rec["device"] == "cpu"                      # ...and the run fell back to the CPU
    assert rec["epochs"] == 2 and rec["epochs_run"] == 2
    assert rec["user_overrides"] == ["final.epochs=2", f"data.root={demo_root}"]
    assert f"'sweep_dir={sweep}' 'final.epochs=2' 'data.root={demo_root}'" in out
    TIMINGS["sbatch slurm/final.sh (1 fake GPU, 2 epochs)"] = (
        f"submit->start {_ts(rows[0][4]) - _ts(rows[0][3]):.0f} s, ran {_ts(rows[0][5]) - _ts(rows[0][4]):.0f} s")


def test_sbatch_refusal_exits_1_with_its_reason(demo_root, tmp_path):
    """sbatch refuses the array (an option it cannot parse): the driver exits 1, and its last line
    is sbatch's reason, not a summary of "missing" trials."""
    r = gridtune("-m", *SMOKE, *LAUNCHER, f"data.root={demo_root}", f"out_root={tmp_path}", "sweep_name=refused",
                 f"hydra.launcher.name={job_name('refused')}", "++hydra.launcher.additional_parameters.begin=garbage",
                 check=False)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("gridtune: launcher:") and "--begin" in last, r.stderr[-2000:]
    assert "Traceback" not in r.stdout + r.stderr
