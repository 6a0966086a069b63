"""What the SLURM cluster offers, from one `sinfo` query, and whether a job request fits it.

`query()` runs `sinfo -h -N -o FORMAT` once (one line per node and partition, fields separated by
'|') and `parse()` turns that text into `Node`s: partition (and whether it is the default), node
name, CPUs, memory in MB, GPUs (counted from the gres string: `gpu:2`, `gpu:a100:4(S:0-1)`,
`gpu:1,mps:100`, `(null)`), the partition's time limit in minutes (None: unlimited) and its
availability. `fit(request, partition, nodes)` says, one line per problem, where a request of
submitit's launcher fields (cpus_per_task, mem_gb, gpus_per_node, timeout_min, ...) cannot run.

What one user may submit: `max_array_size()` (`scontrol show config`), `max_submit_jobs()` (the
user's associations, `sacctmgr`) and `queued_jobs()` (the user's jobs now, one per array task,
`squeue -r`). `run(cmd)` is the one way gridtune runs a SLURM command (also for gridtune.slurm.view):
no shell, a timeout, None when the command is missing or fails. Standard library only.
"""
from __future__ import annotations

import getpass
import re
import shutil
import subprocess
from dataclasses import dataclass

FORMAT = "%P|%N|%c|%m|%G|%l|%a"


@dataclass(frozen=True)
class Node:
    partition: str
    default: bool          # the cluster's default partition (sinfo marks it with '*')
    name: str
    cpus: int
    mem_mb: int
    gpus: int
    time_min: int | None   # the partition's time limit; None when unlimited
    up: bool


def parse_time(text: str) -> int | None:
    """SLURM time ('infinite', 'UNLIMITED', 'D-HH:MM:SS', 'HH:MM:SS', 'MM:SS', 'MM') in whole minutes."""
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "n/a", ""):
        return None
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if days:                      # D-HH, D-HH:MM, D-HH:MM:SS
        h, m, s = (parts + [0, 0])[:3]
    else:                         # MM, MM:SS, HH:MM:SS
        h, m, s = ([0] * (3 - len(parts)) + parts) if len(parts) > 1 else (0, parts[0], 0)
    return (int(days or 0) * 24 + h) * 60 + m + (1 if s else 0)


def parse_gpus(gres: str) -> int:
    total = 0
    for item in re.sub(r"\([^)]*\)", "", gres).split(","):
        fields = item.strip().split(":")
        if fields[0] == "gpu" and len(fields) >= 2 and fields[-1].isdigit():
            total += int(fields[-1])
    return total


def _int(text: str) -> int:
    m = re.match(r"\d+", text.strip())
    return int(m.group()) if m else 0


def parse(text: str) -> list[Node]:
    """Nodes from `sinfo -h -N -o FORMAT` output; lines that do not have its 7 fields are ignored."""
    nodes = []
    for line in text.splitlines():
        f = line.strip().split("|")
        if len(f) != 7 or not f[0]:
            continue
        try:
            time_min = parse_time(f[5])
        except ValueError:
            time_min = None
        nodes.append(Node(f[0].rstrip("*"), f[0].endswith("*"), f[1], _int(f[2]), _int(f[3]),
                          parse_gpus(f[4]), time_min, f[6].strip().lower() == "up"))
    return nodes


def ask(cmd: list[str], timeout: float = 10) -> tuple[list[str] | None, str | None]:
    """(a SLURM command's output lines, None) or (None, one line saying why there are none: the
    command is missing, did not answer in time, or failed)."""
    if shutil.which(cmd[0]) is None:
        return None, f"{cmd[0]} is not on PATH"
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"{cmd[0]} did not answer in {timeout:g} s"
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"{cmd[0]} did not run: {' '.join(str(e).split())}"
    if r.returncode != 0:
        return None, f"{cmd[0]} failed: {' '.join(r.stderr.split()) or f'exit {r.returncode}'}"
    return r.stdout.splitlines(), None


def run(cmd: list[str], timeout: float = 10) -> list[str] | None:
    """A SLURM command's output lines, or None when it is missing, times out or exits non-zero."""
    return ask(cmd, timeout)[0]


def query(timeout: float = 20) -> list[Node] | None:
    """The cluster's nodes, or None when there is no `sinfo` or it does not answer."""
    return query_or_why(timeout)[0]


def query_or_why(timeout: float = 20) -> tuple[list[Node] | None, str | None]:
    """(the cluster's nodes, None), or (None, why `sinfo` gave none)."""
    lines, why = ask(["sinfo", "-h", "-N", "-o", FORMAT], timeout)
    return (None, why) if lines is None else (parse("\n".join(lines)), None)


def partitions(nodes: list[Node]) -> list[str]:
    """One line per partition: its nodes, the most CPUs, memory and GPUs a node has, its time limit."""
    out = []
    for name in dict.fromkeys(n.partition for n in nodes):
        part = [n for n in nodes if n.partition == name]
        limit = part[0].time_min
        gpus = max(n.gpus for n in part)
        out.append(f"{name}{' (default)' if part[0].default else ''}: {len(part)} node(s), up to "
                   f"{max(n.cpus for n in part)} CPUs, {max(n.mem_mb for n in part) // 1024} GB, "
                   f"{f'{gpus} GPU(s)' if gpus else 'no GPUs'}, limit {'none' if limit is None else f'{limit} min'}")
    return out


def config_value(lines: list[str], key: str) -> str | None:
    """One setting from `scontrol show config` output ("Key = value" lines)."""
    for line in lines:
        name, sep, value = line.partition("=")
        if sep and name.strip() == key:
            return value.strip()
    return None


def max_array_size() -> int | None:
    """The cluster's MaxArraySize: an array's task ids must stay below it. None when unknown."""
    value = config_value(run(["scontrol", "show", "config"]) or [], "MaxArraySize")
    return int(value) if value and value.isdigit() else None


def min_limit(lines: list[str]) -> int | None:
    """The smallest number among `sacctmgr -nP` rows of one field (blank: no limit set there)."""
    values = [int(v) for v in (line.strip() for line in lines) if v.isdigit()]
    return min(values) if values else None


def max_submit_jobs(user: str | None = None) -> int | None:
    """The smallest MaxSubmitJobs of the user's associations (pending + running jobs, each array
    task counted); None when sacctmgr does not answer or no association sets one."""
    user = user or getpass.getuser()
    return min_limit(run(["sacctmgr", "-nP", "show", "assoc", "where", f"user={user}",
                          "format=MaxSubmitJobs"]) or [])


def queued_jobs() -> list[str] | None:
    """The user's pending and running jobs, one id per array task (123_4); None when squeue fails."""
    lines = run(["squeue", "--me", "-h", "-r", "-t", "PENDING,RUNNING,SUSPENDED,CONFIGURING", "-o", "%i"])
    return None if lines is None else [line.strip() for line in lines if line.strip()]


def _gb(mb: int) -> str:
    return f"{mb / 1024:g} GB"


def fit(req: dict, partition: str | None, nodes: list[Node]) -> list[str]:
    """Problems of a request (submitit field -> value; absent or None fields ask for nothing) on
    `partition` (None: the default partition). Empty when at least one node can run it."""
    names = sorted({n.partition for n in nodes})
    where = f"partition '{partition}'"
    if partition is None:
        default = [n.partition for n in nodes if n.default]
        if not default:
            return []                  # no default partition known: sbatch decides
        partition, where = default[0], f"the default partition '{default[0]}'"
    part = [n for n in nodes if n.partition == partition]
    if not part:
        return [f"hydra.launcher.partition={partition}: no such partition (the cluster has: {', '.join(names)})"]
    tasks = int(req.get("tasks_per_node") or 1)
    cpus = int(req.get("cpus_per_task") or 1) * tasks
    gpus = int(req.get("gpus_per_node") or 0) or int(req.get("gpus_per_task") or 0) * tasks
    mem = int(round(float(req["mem_gb"]) * 1024)) if req.get("mem_gb") else 0
    problems = []
    wants = [("cpus_per_task", cpus, "cpus", lambda v: f"{v} CPUs", req.get("cpus_per_task")),
             ("mem_gb", mem, "mem_mb", _gb, req.get("mem_gb")),
             ("gpus_per_node" if req.get("gpus_per_node") else "gpus_per_task", gpus, "gpus",
              lambda v: f"{v} GPUs", req.get("gpus_per_node") or req.get("gpus_per_task"))]
    for field, need, attr, show, value in wants:
        most = max(getattr(n, attr) for n in part)
        if need > most:
            per = f" ({show(need)} for {tasks} tasks)" if tasks > 1 and field != "mem_gb" else ""
            problems.append(f"hydra.launcher.{field}={value}: no node of {where} has {show(need)}{per} "
                            f"(the largest has {show(most)})")
    if not problems and not any(n.cpus >= cpus and n.mem_mb >= mem and n.gpus >= gpus for n in part):
        shapes = "; ".join(f"{n.name}: {n.cpus} CPUs, {_gb(n.mem_mb)}, {n.gpus} GPUs" for n in part[:5])
        problems.append(f"hydra.launcher: {cpus} CPUs, {_gb(mem)} and {gpus} GPUs together fit no node of "
                        f"{where} ({shapes})")
    limits = [n.time_min for n in part]
    t = req.get("timeout_min")
    if t is not None and None not in limits and t > max(limits):
        problems.append(f"hydra.launcher.timeout_min={t}: above the time limit of {where} ({max(limits)} min)")
    n_nodes = req.get("nodes")
    if n_nodes is not None and n_nodes > len(part):
        problems.append(f"hydra.launcher.nodes={n_nodes}: {where} has {len(part)} node{'s' * (len(part) != 1)}")
    return problems
