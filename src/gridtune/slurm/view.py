"""SLURM's view of a sweep, for `gridtune.status`: which jobs belong to it and what squeue/sacct say.

Job ids come from claim.json / result.json (`slurm_job_id`) and from submitit's `.submitit/<jobid>/`
logs, where the trial runner prints its trial id. The commands run through gridtune.slurm.cluster.run (a
timeout, no shell); where they are missing or fail, the view says it is unavailable. Standard
library only.
"""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from . import cluster
from gridtune.sweepdir import records
from gridtune.sweepdir.rundir import NEEDS_RERUN

SLURM_TIMEOUT_S = 10
SLURM_LIVE = ("RUNNING", "PENDING", "COMPLETING", "CONFIGURING", "REQUEUED", "RESIZING",
              "SUSPENDED")
_JOB_DIR = re.compile(r"^\d+(_\d+)?$")                  # submitit folders: .submitit/<jobid>/
_LOG_TRIAL = re.compile(r"^\[gridtune\] ([^\s:]+)", re.M)  # lines the trial runner prints
_LOG_TAIL = 4 << 20


def job_ids(sweep_dir: str | Path, states: list[dict]) -> set[str]:
    """SLURM job ids from claim.json files and from submitit's `.submitit/<jobid>/` folders."""
    ids = {s["slurm_job_id"] for s in states if s.get("slurm_job_id")}
    return ids | set(_submitit_logs(sweep_dir))


def _submitit_logs(sweep_dir: str | Path) -> dict[str, list[Path]]:
    sub = Path(sweep_dir) / ".submitit"
    if not sub.is_dir():
        return {}
    return {p.name: sorted(p.glob("*_log.out")) for p in sub.iterdir()
            if p.is_dir() and _JOB_DIR.match(p.name)}


def jobs_from_logs(sweep_dir: str | Path, states: list[dict]) -> None:
    """Fill in the job of trials whose claim is gone, from what the runner printed in its log.

    Finished trials have released their claim, yet the failed ones are exactly where SLURM's
    COMPLETED needs contradicting. Later jobs (higher ids) win: they are the latest attempt.
    """
    todo = {s["trial_id"]: s for s in states if not s["slurm_job_id"] and s["on_disk"]}
    if not todo:
        return
    logs = _submitit_logs(sweep_dir)
    for job in sorted(logs, key=job_key):
        for log in logs[job]:
            try:
                with log.open("rb") as f:
                    f.seek(max(0, log.stat().st_size - _LOG_TAIL))
                    text = f.read().decode("utf-8", "replace")
            except OSError:
                continue
            for tid in set(_LOG_TRIAL.findall(text)) & set(todo):
                todo[tid]["slurm_job_id"] = job


def job_key(job_id: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", job_id)]


def _run(cmd: list[str]) -> list[str] | None:
    return cluster.run(cmd, SLURM_TIMEOUT_S)


def slurm_view(sweep_dir: str | Path, ids: set[str]) -> dict:
    """{"available", "jobs": {job_id: {name, state, exit_code, elapsed, source}}}."""
    bases = {i.split("_")[0] for i in ids}
    # sacct -j <array> lists every task; keep the ones this sweep knows, plus pending task
    # ranges such as 123_[4-9] of its arrays (not started, so no folder or claim yet).
    wanted = lambda j: j in ids or ("[" in j and j.split("_")[0] in bases)  # noqa: E731
    jobs: dict[str, dict] = {}
    sacct_cmd = ["sacct", "-X", "-n", "-P", "--format=JobID,JobName,State,ExitCode,Elapsed",
                 "-j", ",".join(sorted(bases))]
    start = _earliest_mtime(Path(sweep_dir))
    if start is not None:   # sacct's default window is "today"; sweeps run longer than that
        sacct_cmd += ["-S", dt.datetime.fromtimestamp(start - 86400).strftime("%Y-%m-%dT%H:%M:%S")]
    sacct = _run(sacct_cmd)
    for line in sacct or []:
        f = line.split("|")
        if len(f) >= 5 and wanted(f[0]):
            jobs[f[0]] = {"name": f[1], "state": f[2].split(" ")[0], "exit_code": f[3],
                          "elapsed": f[4], "source": "sacct"}
    squeue = _run(["squeue", "--me", "-h", "-o", "%i|%j|%T|%M"])
    for line in squeue or []:   # live state wins over accounting
        f = line.split("|")
        if len(f) >= 4 and wanted(f[0]):
            prev = jobs.get(f[0], {})
            jobs[f[0]] = {"name": f[1], "state": f[2], "exit_code": prev.get("exit_code"),
                          "elapsed": f[3], "source": "squeue"}
    return {"available": sacct is not None or squeue is not None,
            "squeue": squeue is not None, "sacct": sacct is not None, "jobs": jobs}


def _earliest_mtime(sweep_dir: Path) -> float | None:
    times = []
    for p in (sweep_dir / records.MANIFEST, sweep_dir / ".submitit"):
        try:
            times.append(p.stat().st_mtime)
        except OSError:
            pass
    return min(times) if times else None


def annotate(states: list[dict], slurm: dict) -> None:
    """Attach SLURM's state to each trial and say where it disagrees with the record."""
    for s in states:
        job = slurm["jobs"].get(s["slurm_job_id"] or "")
        s["slurm"] = job and {"job_id": s["slurm_job_id"], **job}
        if not job:
            continue
        if s["state"] in NEEDS_RERUN and job["state"] == "COMPLETED":
            s["detail"] += (f"  [SLURM {s['slurm_job_id']} COMPLETED {job['exit_code']}, "
                            f"but the trial record says {s['state']}]")
        elif s["state"] == "running" and job["state"] not in SLURM_LIVE:
            s["detail"] += f"  [SLURM {s['slurm_job_id']} {job['state']}: stale claim]"

