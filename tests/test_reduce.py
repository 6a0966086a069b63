"""Reducer tests on synthetic sweep directories: ranking, seeds, not-ranked trials, best.yaml, CLI."""
from __future__ import annotations

import math
import os
import random
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from gridtune.report.leaderboard import Stat, build, t975
from gridtune.sweepdir.records import write_history, write_json
from gridtune.reduce import main, reduce_sweep
from gridtune.sweepdir.ledger import read_sweep

SRC = str(Path(__file__).resolve().parents[1] / "src")
PARAMS = {"lr": 0.001, "dropout": 0.4, "l2": 0.0001, "seed": 0, "optim": "adam", "sched": "none",
          "lr_conv": None, "lr_head": None, "momentum": None, "weight_decay": None, "batch_size": 32,
          "epochs": 15, "model": "cnn256", "augment": True}
SWEPT = ("dropout", "lr", "l2", "seed", "optim", "sched", "lr_conv", "lr_head", "momentum")


def calibration(acc: float, over: float, bins: int = 15, n: int = 1000) -> dict:
    """Bins whose confidence exceeds accuracy by about `over` (the high-lr over-confidence)."""
    centre = min(0.97, acc + over)
    weights = [math.exp(-((i + 0.5) / bins - centre) ** 2 / 0.03) if (i + 0.5) / bins > 0.09 else 0.0
               for i in range(bins)]
    counts = [round(n * w / sum(weights)) for w in weights]
    conf = [(i + 0.5) / bins if c else None for i, c in enumerate(counts)]
    accs = [max(0.0, min(1.0, x - over * x / centre)) if x is not None else None for x in conf]
    return {"bins": bins, "bin_confidence": conf, "bin_accuracy": accs, "bin_count": counts, "prob_hist": counts}


def curves(acc: float, loss: float, lr: float, dropout: float, epochs: int, rng: random.Random) -> list[dict]:
    """Plausible per-epoch rows: faster rise at higher lr, overfitting val loss at low dropout."""
    tau = 1.5 + 0.9 * math.log10(0.001 / lr) * 3
    rows = []
    for e in range(1, epochs + 1):
        rise = 1 - math.exp(-e / tau)
        overfit = max(0.0, e - 2 * tau) * (0.5 - dropout) * 0.06 * (lr / 0.001) ** 0.5
        rows.append({"epoch": e, "lr": {"conv": lr, "head": lr},
                     "train/loss": 2.4 * math.exp(-e / (0.8 * tau)) + 0.15 + 0.4 * dropout + rng.gauss(0, 0.02),
                     "train/acc": min(0.99, (acc + 0.12) * rise + rng.gauss(0, 0.005)),
                     "val/loss": loss + 1.6 * math.exp(-e / tau) + overfit + rng.gauss(0, 0.03),
                     "val/acc": acc * rise + rng.gauss(0, 0.006), "val/bal_acc": acc * rise - 0.02,
                     "val/macro_f1": acc * rise - 0.03, "val/ece": 0.05, "time_s": 40.0})
    return rows


def write_trial(sweep: Path, trial_id: str, params: dict | None = None, *, acc: float | None = 0.8,
                loss: float = 0.8, status: str = "ok", history: bool = True, over: float = 0.03,
                rng: random.Random | None = None, **extra) -> dict:
    """One trial directory with result.json (every RESULT_KEYS key) and optionally history.jsonl."""
    params = {**PARAMS, **(params or {})}
    overrides = [f"{k}={params[k]}" for k in SWEPT if params.get(k) is not None]
    epochs = params["epochs"]
    rows = curves(acc or 0.5, loss, params["lr"], params["dropout"], epochs, rng or random.Random(trial_id))
    metrics = {"val/acc": acc, "val/loss": loss, "val/bal_acc": None if acc is None else acc - 0.02,
               "val/macro_f1": None if acc is None else acc - 0.03, "val/ece": over * 0.9,
               "val/confidence": None if acc is None else acc + over, "val/overconfidence": over,
               "train/loss": 0.3, "train/acc": None if acc is None else acc + 0.1}
    result = {"schema": 1, "trial_id": trial_id, "sweep": sweep.name, "status": status, "error": None,
              "diverged_epoch": None, "params": params, "overrides": overrides, "objective": "val/acc",
              "objective_mode": "max", "metrics": metrics, "per_class_acc": {"gac": acc, "pia": acc},
              "calibration": calibration(acc or 0.5, over), "best_epoch": max(1, epochs - 3),
              "epochs_run": epochs, "stopped_early": False, "wall_time_s": 612.0, "train_samples_per_s": 850.0,
              "git_sha": "abc1234", "git_dirty": False, "cache_hash": "c0ffee", "n_skipped_files": 0,
              "skipped_files": [], "device": "cuda", "amp": True, "host": "node1",
              "started_at": "2026-01-02T10:00:00", "finished_at": "2026-01-02T10:10:12",
              "config": {"params": params}}
    result.update(extra)
    tdir = sweep / trial_id
    write_json(tdir / "result.json", result)
    if history:
        if status == "diverged" and result["diverged_epoch"]:
            rows = rows[:result["diverged_epoch"] - 1]
        write_history(tdir / "history.jsonl", rows)
    return result


def write_manifest(sweep: Path, entries: list[dict], objective="val/acc", mode="max") -> None:
    write_json(sweep / "gridtune_sweep.json", {"sweep": sweep.name, "objective": objective,
                                               "objective_mode": mode, "trials": entries})


def reduce_quiet(sweep: Path, **kw):
    import io
    out = io.StringIO()
    board = reduce_sweep(sweep, plots=kw.pop("plots", False), out=out, **kw)
    return board, out.getvalue()


def test_ranking_order_and_tiebreak(tmp_path):
    write_trial(tmp_path, "a", {"lr": 0.001}, acc=0.80, loss=0.70)
    write_trial(tmp_path, "b", {"lr": 0.0005}, acc=0.82, loss=0.90)
    write_trial(tmp_path, "c", {"lr": 0.0001}, acc=0.82, loss=0.80)
    board, text = reduce_quiet(tmp_path)
    assert [g.representative.trial_id for g in board.groups] == ["c", "b", "a"]
    assert [g.rank for g in board.groups] == [1, 2, 3]
    assert "winner: c" in text
    lines = (tmp_path / "leaderboard.csv").read_text().splitlines()
    assert [line.split(",")[1] for line in lines[1:]] == ["c", "b", "a"]
    md = (tmp_path / "leaderboard.md").read_text()
    assert "| Rank | Run ID | Dropout | LR | L2 | Val Accuracy | Val Loss | Bal. Acc | Macro-F1 | ECE |" in md
    assert "Optim" not in md  # optim does not vary: no extra column


def test_reproduces_hand_made_top_performers(tmp_path):
    # The users' table: run 8 wins; 14 and 16 tie on accuracy and 14 goes first on lower val loss.
    rows = [("8", 0.4, 0.001, 0.0001, 0.8284, 0.7298), ("1", 0.3, 0.001, 0.001, 0.8172, 0.8647),
            ("16", 0.5, 0.0005, 0.0001, 0.8165, 0.8005), ("14", 0.5, 0.001, 0.0001, 0.8165, 0.7999)]
    for run, do, lr, l2, acc, loss in rows:
        write_trial(tmp_path, run, {"dropout": do, "lr": lr, "l2": l2}, acc=acc, loss=loss)
    board, _ = reduce_quiet(tmp_path)
    assert [g.representative.trial_id for g in board.groups] == ["8", "1", "14", "16"]
    md = (tmp_path / "leaderboard.md").read_text()
    assert "| **1** | **8** | **0.4** | **0.001** | **0.0001** | **0.8284** | **0.7298** |" in md
    assert "| 3 | 14 | 0.5 | 0.001 | 0.0001 | 0.8165 | 0.7999 |" in md


def test_min_mode_from_cli_and_manifest(tmp_path):
    write_trial(tmp_path, "a", {"lr": 0.001}, acc=0.80, loss=0.70)
    write_trial(tmp_path, "b", {"lr": 0.0005}, acc=0.82, loss=0.90)
    board, _ = reduce_quiet(tmp_path, objective="val/loss", mode="min")
    assert [g.representative.trial_id for g in board.groups] == ["a", "b"]
    board, _ = reduce_quiet(tmp_path, objective="val/loss")  # mode inferred for a loss
    assert board.mode == "min" and board.groups[0].representative.trial_id == "a"
    write_manifest(tmp_path, [{"trial_id": "a", "overrides": ["lr=0.001"]}, {"trial_id": "b", "overrides": []}],
                   objective="val/ece", mode="min")
    board, _ = reduce_quiet(tmp_path)
    assert (board.objective, board.mode) == ("val/ece", "min")
    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert best["objective_mode"] == "min" and best["objective"] == "val/ece"


def test_not_ranked_trials_are_listed_with_reasons(tmp_path):
    write_trial(tmp_path, "good1", {"lr": 0.001}, acc=0.83)
    write_trial(tmp_path, "good2", {"lr": 0.0005}, acc=0.81)
    write_trial(tmp_path, "div", {"lr": 0.1}, acc=None, status="diverged", diverged_epoch=3,
                error="FloatingPointError: loss is nan <after> step 120")
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "result.json").write_text('{"schema": 1, "trial_id": "torn", "stat')
    (tmp_path / "run").mkdir()
    write_json(tmp_path / "run" / "claim.json", {"host": "othernode", "pid": 4242, "time": time.time() - 120,
                                                 "slurm_job_id": "777_3"})
    write_history(tmp_path / "run" / "history.jsonl", [{"epoch": 1}, {"epoch": 2}])
    (tmp_path / "half").mkdir()
    write_history(tmp_path / "half" / "history.jsonl", [{"epoch": e} for e in range(1, 5)])
    write_manifest(tmp_path, [{"trial_id": t, "overrides": [f"lr={lr}"], "params": {"lr": lr}}
                              for t, lr in [("good1", 0.001), ("good2", 0.0005), ("div", 0.1), ("torn", 0.01),
                                            ("run", 0.003), ("half", 0.002), ("gone", 0.0001)]])
    board, text = reduce_quiet(tmp_path)
    states = {t.trial_id: t.state for t in board.not_ranked}
    assert states == {"div": "diverged", "torn": "torn", "run": "running", "half": "interrupted", "gone": "pending"}
    assert [g.representative.trial_id for g in board.groups] == ["good1", "good2"]
    reasons = {t.trial_id: t.reason for t in board.not_ranked}
    assert reasons["div"].startswith("diverged at epoch 3: FloatingPointError")
    assert "unparseable result.json" in reasons["torn"]
    assert "othernode:4242" in reasons["run"] and "777_3" in reasons["run"] and "2 epochs done" in reasons["run"]
    assert reasons["half"] == "interrupted at epoch 4 (no checkpoint)"
    assert reasons["gone"] == "no trial directory"
    md = (tmp_path / "leaderboard.md").read_text()
    html = (tmp_path / "report.html").read_text()
    assert md.index("## Not ranked") > md.index("## Top Performers")
    for trial_id, reason in reasons.items():
        assert f"| {trial_id} |" in md
        assert trial_id in html and "unparseable result.json" in html
    assert "&lt;after&gt;" in html and "<after>" not in html  # error text is escaped
    assert "no trial directory" in text and "diverged at epoch 3" in text


def test_seed_group_statistics(tmp_path):
    for seed, acc, loss in [(0, 0.80, 0.70), (1, 0.82, 0.60), (2, 0.84, 0.50)]:
        write_trial(tmp_path, f"s{seed}", {"seed": seed}, acc=acc, loss=loss)
    write_trial(tmp_path, "other", {"lr": 0.0001, "seed": 0}, acc=0.70)
    board, _ = reduce_quiet(tmp_path)
    g = board.groups[0]
    assert g.objective.n == 3 and g.seeds == [0, 1, 2]
    assert g.objective.mean == pytest.approx(0.82)
    assert g.objective.std == pytest.approx(0.02)
    half = 4.303 * 0.02 / math.sqrt(3)  # t_{0.975,2} = 4.303
    assert (g.objective.lo, g.objective.hi) == pytest.approx((0.82 - half, 0.82 + half))
    assert g.loss.mean == pytest.approx(0.60) and g.loss.std == pytest.approx(0.10)
    assert g.representative.trial_id == "s2"  # best seed
    md = (tmp_path / "leaderboard.md").read_text()
    assert "0.8200 ± 0.0200" in md and "Seeds" in md and f"[{0.82 - half:.4f}, {0.82 + half:.4f}]" in md


def test_t_quantiles():
    assert t975(1) == pytest.approx(12.706) and t975(30) == pytest.approx(2.042)
    assert t975(60) == pytest.approx(2.0003, abs=1e-4) and t975(31) == pytest.approx(2.0395, abs=1e-4)
    assert Stat.of([0.5]).std is None and Stat.of([]).mean is None


def _seeded(sweep: Path, name: str, lr: float, accs: list[float]) -> None:
    for seed, acc in enumerate(accs):
        write_trial(sweep, f"{name}{seed}", {"lr": lr, "seed": seed}, acc=acc)


def test_separability(tmp_path):
    close, apart = tmp_path / "close", tmp_path / "apart"
    _seeded(close, "w", 0.001, [0.83, 0.81, 0.85])
    _seeded(close, "r", 0.0005, [0.82, 0.80, 0.84])
    board, text = reduce_quiet(close)
    assert board.separable is False and board.separability == "not separable"
    assert "winner not separable from runner-up: 95% intervals overlap" in text
    best = yaml.safe_load((close / "best.yaml").read_text())
    assert best["separable"] is False and "not separable" in best["note"] and best["n_seeds"] == 3
    assert "not separable" in (close / "leaderboard.md").read_text()
    assert "not separable" in (close / "report.html").read_text()

    _seeded(apart, "w", 0.001, [0.900, 0.901, 0.899])
    _seeded(apart, "r", 0.0005, [0.800, 0.801, 0.799])
    board, _ = reduce_quiet(apart)
    assert board.separable is True
    assert yaml.safe_load((apart / "best.yaml").read_text())["separable"] is True


def test_single_seed_separability_unknown(tmp_path):
    write_trial(tmp_path, "a", {"lr": 0.001}, acc=0.83)
    write_trial(tmp_path, "b", {"lr": 0.0005}, acc=0.80)
    board, text = reduce_quiet(tmp_path)
    assert board.separability == "unknown" and board.separable is False
    assert "single seed: run repeats to check separability" in text
    assert "single seed" in yaml.safe_load((tmp_path / "best.yaml").read_text())["note"]


def test_best_yaml_round_trip(tmp_path):
    _seeded(tmp_path, "w", 0.001, [0.83, 0.84])
    write_trial(tmp_path, "r1", {"lr": 0.0005}, acc=0.80)
    write_trial(tmp_path, "r2", {"lr": 0.0001}, acc=0.75)
    write_trial(tmp_path, "r3", {"lr": 0.00005}, acc=0.70)
    reduce_quiet(tmp_path)
    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert best["trial_id"] == "w1"
    assert best["sweep_dir"] == str(tmp_path.resolve()) and Path(best["sweep_dir"]).is_absolute()
    # Averaged over seeds, so the seed is not part of what the final run applies.
    assert best["overrides"] == ["dropout=0.4", "lr=0.001", "l2=0.0001", "optim=adam", "sched=none"]
    assert "seed" not in best["params"] and best["params"]["lr"] == 0.001
    assert best["value"] == pytest.approx(0.835) and best["n_seeds"] == 2 and best["seeds"] == [0, 1]
    assert best["git_sha"] == "abc1234" and best["objective"] == "val/acc" and best["objective_mode"] == "max"
    assert [r["trial_id"] for r in best["runners_up"]] == ["r1", "r2"]
    assert best["runners_up"][0]["value"] == pytest.approx(0.80)
    assert set(best["trial_ids"]) == {"w0", "w1"}


def test_extra_columns_and_skipped_files(tmp_path):
    skipped = [{"path": "data/a.wav", "reason": "empty file"}]
    write_trial(tmp_path, "a", {"optim": "adam"}, acc=0.8, skipped_files=skipped, n_skipped_files=1)
    write_trial(tmp_path, "b", {"optim": "sgd", "momentum": 0.9}, acc=0.7, skipped_files=skipped, n_skipped_files=1)
    board, _ = reduce_quiet(tmp_path)
    md = (tmp_path / "leaderboard.md").read_text()
    assert "| Optim | Momentum |" in md and "Seeds" not in md
    assert board.skipped_files() == [("data/a.wav", "empty file", 2)]
    assert "## Skipped files" in md and "| data/a.wav | empty file | 2 |" in md


def test_partial_seed_failure_shows_in_status(tmp_path):
    _seeded(tmp_path, "w", 0.001, [0.83, 0.84])
    write_trial(tmp_path, "w2", {"lr": 0.001, "seed": 2}, acc=None, status="diverged", diverged_epoch=4)
    board, _ = reduce_quiet(tmp_path)
    assert board.groups[0].objective.n == 2
    assert "2/3 ok (1 diverged)" in (tmp_path / "leaderboard.md").read_text()
    assert [t.trial_id for t in board.not_ranked] == ["w2"]


def _run_cli(args: list[str], code: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", code or "import sys; from gridtune.reduce import main; "
                           "sys.exit(main(sys.argv[1:]))", *args], capture_output=True, text=True, env=env)


def test_reduce_does_not_import_torch(tmp_path):
    write_trial(tmp_path, "a", acc=0.8)
    code = ("import sys; from gridtune.reduce import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)")
    proc = _run_cli([str(tmp_path), "--no-plots"], code)
    assert proc.returncode == 0, proc.stderr


def _many(sweep: Path, n: int = 100) -> None:
    entries = []
    for i in range(n):
        params = {"lr": [0.001, 0.0005, 0.0001, 0.00005][i % 4], "dropout": [0.3, 0.4, 0.5][i // 4 % 3],
                  "l2": [0.001, 0.0001][i // 12 % 2], "seed": i // 24}
        result = write_trial(sweep, f"t{i:03d}", params, acc=0.7 + 0.001 * (i % 37), loss=0.9 - 0.001 * i)
        entries.append({"trial_id": f"t{i:03d}", "overrides": result["overrides"], "params": params})
    write_manifest(sweep, entries)


def test_100_trials_reduce_fast_without_plots(tmp_path):
    _many(tmp_path)
    started = time.perf_counter()
    proc = _run_cli([str(tmp_path), "--no-plots"])
    wall = time.perf_counter() - started  # interpreter start-up and imports included
    assert proc.returncode == 0, proc.stderr
    reduced = float(re.search(r"reduced in ([0-9.]+) s", proc.stdout).group(1))
    assert reduced < 2.0, f"reduce of 100 trials took {reduced:.2f} s"
    assert wall < 5.0, f"the whole command took {wall:.2f} s"
    assert len((tmp_path / "leaderboard.csv").read_text().splitlines()) == 1 + 24  # 24 configs x ~4 seeds


def test_cli_bad_dirs_exit_2(tmp_path):
    missing = tmp_path / "nope"
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.run([sys.executable, "-m", "gridtune.reduce", str(missing)], capture_output=True,
                          text=True, env=env)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and str(missing) in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _run_cli([str(empty)])
    assert proc.returncode == 2 and str(empty) in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_stale_claim_on_this_host(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_trial(tmp_path, "a", acc=0.8)
    write_json(tmp_path / "b" / "claim.json", {"host": socket.gethostname(), "pid": dead.pid,
                                               "time": time.time(), "slurm_job_id": None})
    board, _ = reduce_quiet(tmp_path)
    (trial,) = board.not_ranked
    assert trial.state == "interrupted" and trial.reason.startswith("stale claim:")


def test_nothing_ranked_still_reports(tmp_path):
    write_trial(tmp_path, "x", acc=None, status="failed", error="RuntimeError: boom")
    assert main([str(tmp_path), "--no-plots"]) == 1
    assert not (tmp_path / "best.yaml").exists()
    assert "RuntimeError: boom" in (tmp_path / "leaderboard.md").read_text()
    assert "RuntimeError: boom" in (tmp_path / "report.html").read_text()


def test_collect_without_manifest_and_ok_without_objective(tmp_path):
    write_trial(tmp_path, "a", acc=0.8)
    write_trial(tmp_path, "b", {"lr": 0.01}, acc=None)  # status ok, objective null
    (tmp_path / "plots").mkdir()
    records = read_sweep(tmp_path)
    assert [t.trial_id for t in records.trials] == ["a", "b"]
    board = build(records, "val/acc", "max")
    assert [t.trial_id for t in board.not_ranked] == ["b"] and "missing or not finite" in board.reason(board.not_ranked[0])
