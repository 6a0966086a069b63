"""Helpers shared by the fault tests: starting and killing real sweep processes, and checking that a
sweep directory is complete and untorn after whatever happened to it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gridtune.sweepdir import records

REPO = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).resolve().parent / "runner.py"
FAST = ("preset=debug",)


def sweep_args(data_root, out_root, name: str, *extra: str) -> list[str]:
    return ["-m", *FAST, f"data.root={data_root}", f"out_root={out_root}", f"sweep_name={name}", *extra]


class Proc:
    """A sweep driver in its own session (so its whole process group can be killed), output in files."""

    def __init__(self, args: list[str], log_dir: Path, *, env: dict | None = None, runner: bool = False,
                 tag: str = "driver"):
        log_dir.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = log_dir / f"{tag}.out", log_dir / f"{tag}.err"
        cmd = [sys.executable, str(RUNNER), *args] if runner else [sys.executable, "-m", "gridtune.sweep", *args]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", **(env or {})}
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.popen = subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=out, stderr=err,
                                          start_new_session=True)
        self.pid = self.popen.pid

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait(self, timeout: float = 300) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            raise AssertionError(f"driver {self.pid} still running after {timeout}s\n{self.stdout[-2000:]}\n"
                                 f"{self.stderr[-2000:]}") from None

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.popen.wait(30)

    def kill_group(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(30)

    def wait_until(self, predicate, timeout: float = 240, poll: float = 0.005):
        """Poll `predicate()` until it returns something truthy; fail if the driver exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if self.popen.poll() is not None:
                raise AssertionError(f"driver exited ({self.popen.returncode}) before the kill point\n"
                                     f"{self.stdout[-2000:]}\n{self.stderr[-2000:]}")
            time.sleep(poll)
        self.kill_group()
        raise AssertionError(f"kill point not reached in {timeout}s\n{self.stdout[-2000:]}\n{self.stderr[-2000:]}")


def trial_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def history_rows(sweep_dir: Path) -> dict[str, int]:
    return {p.parent.name: len(records.read_history(p)) for p in sweep_dir.glob("*/history.jsonl")}


def cache_entries(data_root: Path) -> tuple[list[Path], list[Path]]:
    """(published cache entries, leftover temp dirs) under the data root's cache dir."""
    cache_dir = Path(data_root) / ".gridtune_cache"
    if not cache_dir.is_dir():
        return [], []
    dirs = [p for p in cache_dir.iterdir() if p.is_dir()]
    return [p for p in dirs if not p.name.startswith(".")], [p for p in dirs if p.name.startswith(".")]


def assert_no_torn_records(root: Path) -> None:
    """Every record file a reader opens is complete; temp files are hidden names no reader opens."""
    import torch
    for path in Path(root).rglob("*"):
        if not path.is_file():
            continue
        if path.name.endswith(".tmp"):
            assert path.name.startswith("."), f"{path}: a temp file with a name a reader could pick up"
        elif path.name in (records.RESULT, records.MANIFEST, "meta.json"):
            records.read_json(path)                               # raises TornRecord when torn
        elif path.name in (records.CHECKPOINT, records.BEST):
            torch.load(path, map_location="cpu", weights_only=True)
        elif path.name == records.HISTORY:
            text = path.read_text()
            assert text.endswith("\n") and len(records.read_history(path)) == len(text.splitlines()), path


def assert_sweep_complete(sweep_dir: Path, n_trials: int, epochs: int) -> dict[str, dict]:
    """Every manifest trial ran exactly once to `ok`: one directory, one parseable result, `epochs`
    history rows, a final checkpoint, no claim left behind; returns the results by trial id."""
    import torch
    from gridtune.sweepdir.ledger import read_sweep
    manifest = records.read_json(sweep_dir / records.MANIFEST)
    ids = sorted(t["trial_id"] for t in manifest["trials"])
    assert len(ids) == len(set(ids)) == n_trials, ids
    assert [p.name for p in trial_dirs(sweep_dir)] == ids, "trial directories differ from the manifest"
    results = {}
    for tid in ids:
        d = sweep_dir / tid
        assert len(list(d.glob("result.json*"))) == 1, sorted(p.name for p in d.iterdir())
        rec = records.read_json(d / records.RESULT)
        assert rec["trial_id"] == tid and rec["status"] == "ok", (tid, rec["status"], rec["error"])
        assert rec["epochs_run"] == epochs, (tid, rec["epochs_run"])
        rows = records.read_history(d / records.HISTORY)
        assert [r["epoch"] for r in rows] == list(range(1, epochs + 1)), (tid, [r["epoch"] for r in rows])
        assert torch.load(d / records.CHECKPOINT, weights_only=True)["epoch"] == epochs
        assert set(torch.load(d / records.BEST, weights_only=True)) == {"model", "features"}
        assert not (d / records.CLAIM).exists() and not list(d.glob(f"{records.CLAIM}.stale-*")), tid
        results[tid] = rec
    assert_no_torn_records(sweep_dir)
    assert {t.trial_id: t.state for t in read_sweep(sweep_dir).trials} == {tid: "ok" for tid in ids}
    return results


# -- the bad-input corpus: commands run in-process, as their console entry points run them ---------------
def run_cli(module: str, args: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    """Run `python -m gridtune.<module> args` in this process: (exit code, stdout, stderr).
    Hydra apps read sys.argv and end with SystemExit; argparse/in-process commands return a code."""
    import importlib

    from hydra.core.global_hydra import GlobalHydra
    mod = importlib.import_module(f"gridtune.{module}")
    monkeypatch.setattr(sys, "argv", [f"{module}.py", *args])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")      # what run_app sets, kept out of the other tests
    GlobalHydra.instance().clear()
    code = 0
    try:
        rc = mod.main(list(args)) if module in ("final", "reduce", "status") else mod.main()
        code = int(rc or 0)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        GlobalHydra.instance().clear()
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(result: tuple[int, str, str], culprit: str, code: int = 2) -> None:
    """Exit `code`, no traceback anywhere, and the last line of stderr names `culprit`."""
    rc, out, err = result
    assert rc == code, (rc, out[-1500:], err[-1500:])
    assert "Traceback" not in out + err, err[-3000:]
    lines = err.strip().splitlines()
    assert lines and culprit in lines[-1], (culprit, err[-1500:])
