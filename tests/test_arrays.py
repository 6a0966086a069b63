"""Job arrays that fit the scheduler (gridtune.slurm.arrays, gridtune.slurm.cluster's limit queries): parsing
scontrol/sacctmgr/squeue through stand-ins on PATH, the split, and the wait for room in the queue,
on a simulated queue. The real cluster's side is tests/slurm/test_slurm_arrays.py."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import compose
from gridtune.slurm import arrays, cluster
from gridtune.config import checks

CAT = shutil.which("cat")      # the stand-ins run with nothing else on PATH
SCONTROL = """Configuration data as of 2026-01-01T00:00:00
AccountingStorageEnforce = none
MaxArraySize            = {size}
MaxJobCount             = 10000
"""


def stand_in(bin_dir: Path, name: str, body: str) -> None:
    (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
    (bin_dir / name).chmod(0o755)


@pytest.fixture
def bin_dir(tmp_path, monkeypatch) -> Path:
    """An empty PATH of stand-ins: a command not written here is missing."""
    d = tmp_path / "bin"
    d.mkdir()
    monkeypatch.setenv("PATH", str(d))
    return d


# ---- what the scheduler says --------------------------------------------------------------------

def test_max_array_size_from_scontrol(bin_dir):
    assert cluster.max_array_size() is None                           # no scontrol
    stand_in(bin_dir, "scontrol", f"{CAT} <<'EOF'\n{SCONTROL.format(size=3)}EOF")
    assert cluster.max_array_size() == 3
    stand_in(bin_dir, "scontrol", "echo 'slurm_load_ctl_conf error: Unable to contact' >&2; exit 1")
    assert cluster.max_array_size() is None


@pytest.mark.parametrize("rows, want", [
    ("", None),                          # no association of this user
    ("\n\n", None),                      # associations, none with a limit
    ("\n50\n20\n", 20),                  # the smallest of the user's associations
    ("7", 7),
])
def test_max_submit_jobs_from_sacctmgr(bin_dir, rows, want):
    stand_in(bin_dir, "sacctmgr", f"printf '{rows}'")
    assert cluster.max_submit_jobs("someone") == want


def test_max_submit_jobs_asks_about_the_user(bin_dir, tmp_path):
    args = tmp_path / "args"
    stand_in(bin_dir, "sacctmgr", f'echo "$@" > {args}; echo 9')
    assert cluster.max_submit_jobs("alice") == 9
    assert "user=alice" in args.read_text() and "format=MaxSubmitJobs" in args.read_text()
    stand_in(bin_dir, "sacctmgr", "exit 1")                             # slurmdbd down
    assert cluster.max_submit_jobs("alice") is None


def test_queued_jobs_from_squeue(bin_dir):
    assert cluster.queued_jobs() is None
    stand_in(bin_dir, "squeue", "printf '12_0\\n12_1\\n  13\\n\\n'")
    assert cluster.queued_jobs() == ["12_0", "12_1", "13"]


@pytest.mark.parametrize("reported, configured, want", [
    (1001, None, 1001), (3, None, 3), (1001, 50, 50), (3, 50, 3),     # a setting lowers, never raises
    (None, 50, 50), (None, None, arrays.SLURM_DEFAULT_MAX_ARRAY_SIZE),
])
def test_limits_take_the_smaller_of_cluster_and_config(bin_dir, reported, configured, want):
    if reported is not None:
        stand_in(bin_dir, "scontrol", f"{CAT} <<'EOF'\n{SCONTROL.format(size=reported)}EOF")
    stand_in(bin_dir, "sacctmgr", "echo 40")
    lim = arrays.limits(configured, 100)
    assert lim.max_array_size == want and lim.max_submit_jobs == 40
    assert arrays.limits(configured, 10).max_submit_jobs == 10


def test_limits_settings_are_validated():
    bad = checks.validate(compose("launcher=slurm", "launcher.max_array_size=0", "launcher.max_submit_jobs=-1"))
    assert "launcher.max_array_size=0: must be null (ask the scheduler) or an integer >= 1" in bad
    assert "launcher.max_submit_jobs=-1: must be null (ask the scheduler) or an integer >= 1" in bad
    assert checks.validate(compose("launcher=slurm", "launcher.max_array_size=3")) == []


# ---- the split ------------------------------------------------------------------------------------

@pytest.mark.parametrize("remaining, array, submit, queued, ours, want", [
    (7, 3, None, 99, 0, 3),        # no submit limit: the array limit alone
    (2, 3, None, 0, 0, 2),         # the last, smaller array
    (7, 3, 6, 0, 0, 3),
    (7, 3, 6, 3, 3, 3),            # 3 + 3 <= 6
    (7, 3, 6, 4, 4, 0),            # 4 + 3 > 6: wait for this sweep's jobs to end
    (7, 3, 6, 5, 0, 1),            # the queue is not ours: nothing to wait for, take the room there is
    (7, 3, 6, 6, 0, 0),            # no room at all: wait
    (7, 10, 4, 0, 0, 2),           # half of MaxSubmitJobs: one array runs while the next waits
    (7, 10, 1, 0, 0, 1),
])
def test_next_size(remaining, array, submit, queued, ours, want):
    assert arrays.next_size(remaining, arrays.Limits(array, submit, ""), queued, ours) == want


class FakeQueue:
    """A queue of one user: the executor below adds an array's tasks, each `sleep` ends the oldest
    `ends_per_poll` of them. Written where the squeue stand-in reads it."""

    def __init__(self, path: Path, others: int = 0, ends_per_poll: int = 2):
        self.path, self.ends_per_poll, self.next_id = path, ends_per_poll, 100
        self.jobs = [f"9{i}" for i in range(others)]           # not this launch's
        self.arrays: list[list[int]] = []                      # job numbers per submitted array
        self.peak = 0                                          # most jobs queued right after a submit
        self.write()

    def write(self) -> None:
        self.path.write_text("".join(f"{j}\n" for j in self.jobs))

    def sleep(self, _seconds: float) -> None:
        self.polls = getattr(self, "polls", 0) + 1
        assert self.polls < 100, "the launch never found room in the queue"
        ours = [j for j in self.jobs if "_" in j][: self.ends_per_poll]
        self.jobs = [j for j in self.jobs if j not in ours]
        self.write()

    def map_array(self, launcher, overrides, keys, numbers, *rest):
        self.next_id += 1
        self.arrays.append(list(numbers))
        jobs = [FakeJob(f"{self.next_id}_{i}", n) for i, n in enumerate(numbers)]
        self.jobs += [j.job_id for j in jobs]
        self.peak = max(self.peak, len(self.jobs))
        self.write()
        return jobs


class FakeJob:
    def __init__(self, job_id: str, number: int):
        self.job_id, self.number = job_id, number

    def results(self):
        return [f"return of job {self.number}"]


def _launch(bin_dir, monkeypatch, queue: FakeQueue, n: int, lim: arrays.Limits):
    stand_in(bin_dir, "squeue", f"{CAT} {queue.path}")
    monkeypatch.setattr(arrays, "_executor", lambda launcher: queue)
    said: list[str] = []
    returns, errors = arrays.launch(object(), [[f"lr={i}"] for i in range(n)], 10, lim, say=said.append,
                                    sleep=queue.sleep)
    return returns, errors, said


def test_launch_splits_into_arrays_no_larger_than_the_limit(bin_dir, monkeypatch, tmp_path):
    queue = FakeQueue(tmp_path / "queue")
    returns, errors, said = _launch(bin_dir, monkeypatch, queue, 7, arrays.Limits(3, None, "test"))
    assert [len(a) for a in queue.arrays] == [3, 3, 1]
    assert sum(queue.arrays, []) == list(range(10, 17))      # numbered on from the launch's first job
    assert returns == [f"return of job {i}" for i in range(10, 17)] and errors == []
    assert not any("waiting" in m for m in said)


def test_launch_waits_for_room_under_max_submit_jobs(bin_dir, monkeypatch, tmp_path):
    queue = FakeQueue(tmp_path / "queue", others=1)          # e.g. the driver's own job
    returns, errors, said = _launch(bin_dir, monkeypatch, queue, 7, arrays.Limits(3, 5, "test"))
    assert all(len(a) <= 3 for a in queue.arrays) and sum(map(len, queue.arrays)) == 7
    assert queue.peak <= 5                                     # never more queued than allowed
    assert len(returns) == 7 and errors == []
    assert sum("waiting for room" in m for m in said) >= 1


def test_launch_uses_the_room_left_when_only_other_jobs_hold_the_queue(bin_dir, monkeypatch, tmp_path):
    queue = FakeQueue(tmp_path / "queue", others=4)          # never end: none of them is ours
    returns, _, _ = _launch(bin_dir, monkeypatch, queue, 3, arrays.Limits(3, 5, "test"))
    assert [len(a) for a in queue.arrays] == [1, 1, 1] and len(returns) == 3


def test_a_refused_array_stops_the_launch_and_the_rest_still_returns(bin_dir, monkeypatch, tmp_path):
    queue = FakeQueue(tmp_path / "queue")
    real = queue.map_array

    def refuse_second(*args):
        if queue.arrays:
            raise RuntimeError("sbatch: error: QOSMaxSubmitJobPerUserLimit\nsubmission failed")
        return real(*args)
    queue.map_array = refuse_second
    returns, errors, _ = _launch(bin_dir, monkeypatch, queue, 7, arrays.Limits(3, None, "test"))
    assert len(queue.arrays) == 1 and len(returns) == 3
    assert [arrays.describe(e) for e in errors] == ["RuntimeError: sbatch: error: QOSMaxSubmitJobPerUserLimit"]
