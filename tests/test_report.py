"""report.html and plot tests: self-contained page, embedded PNGs, only the plots a sweep supports."""
from __future__ import annotations

import base64
import random
import re
import sys
import types

import pytest
from test_reduce import reduce_quiet, write_manifest, write_trial

from gridtune.report.plots.draw import make_plots
from gridtune.reduce import main

PNG = b"\x89PNG\r\n\x1a\n"


def grid_sweep(sweep, epochs: int = 6):
    """2 dropout x 3 lr x 2 l2, accuracy rising with lr, one diverged trial and one missing."""
    rng = random.Random(0)
    entries = []
    for i, (do, lr, l2) in enumerate((d, lr, l2) for d in (0.3, 0.4) for lr in (0.001, 0.0005, 0.0001)
                                     for l2 in (0.001, 0.0001)):
        tid = f"g{i:02d}"
        params = {"dropout": do, "lr": lr, "l2": l2, "epochs": epochs}
        entries.append({"trial_id": tid, "overrides": [f"dropout={do}", f"lr={lr}", f"l2={l2}"], "params": params})
        if i == 3:
            write_trial(sweep, tid, params, acc=None, status="diverged", diverged_epoch=4, error="loss is nan")
        elif i != 7:
            write_trial(sweep, tid, params, acc=0.70 + 100 * lr + rng.gauss(0, 0.005),
                        over=80 * lr, rng=rng)
    entries.append({"trial_id": "zz", "overrides": ["lr=0.01"], "params": {"lr": 0.01, "dropout": 0.3, "l2": 0.001}})
    write_manifest(sweep, entries)


@pytest.fixture(scope="module")
def grid_report(tmp_path_factory):
    """The grid sweep reduced once with plots (matplotlib is the slow part of these tests)."""
    sweep = tmp_path_factory.mktemp("grid")
    grid_sweep(sweep)
    board, _ = reduce_quiet(sweep, plots=True)
    return sweep, board


def test_report_is_self_contained_with_plots(grid_report):
    tmp_path, board = grid_report
    html = (tmp_path / "report.html").read_text()
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', html)
    assert "<link" not in html and "<script" not in html and "@import" not in html
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert pngs == ["heatmap.png", "learning_curves.png", "objective_vs_lr.png", "reliability.png"]
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(uris) == len(pngs)
    assert all(base64.b64decode(u).startswith(PNG) for u in uris)
    assert all((tmp_path / "plots" / p).read_bytes().startswith(PNG) for p in pngs)
    for section in ("Summary", "Leaderboard", "Not ranked", "Plots"):
        assert f"<h2>{section}</h2>" in html
    assert "diverged at epoch 4: loss is nan" in html and "no trial directory" in html
    assert "single seed: run repeats to check separability" in html
    assert board.groups[0].params["lr"] == 0.001


def test_only_plots_whose_axes_vary(tmp_path):
    seeds = tmp_path / "seeds"
    for seed in range(3):  # one config, three seeds: no lr or dropout axis to plot against
        write_trial(seeds, f"s{seed}", {"seed": seed, "epochs": 5}, acc=0.8 + 0.01 * seed)
    (seeds / "plots").mkdir()
    (seeds / "plots" / "heatmap.png").write_bytes(PNG)  # stale from an earlier reduce
    board, _ = reduce_quiet(seeds, plots=True)
    assert sorted(p.name for p in (seeds / "plots").glob("*.png")) == ["learning_curves.png", "reliability.png"]
    serial = make_plots(board, tmp_path / "serial", workers=1)  # the path taken off Linux or with threads
    assert [f.name for f in serial] == ["learning_curves", "reliability"]
    assert (seeds / "report.html").read_text().count("data:image/png;base64,") == 2


def test_categorical_and_split_lr_sweeps(tmp_path):
    optim = tmp_path / "optim"
    for i, (name, sched) in enumerate((o, s) for o in ("adam", "sgd") for s in ("none", "cosine")):
        momentum = 0.9 if name == "sgd" else None
        write_trial(optim, f"o{i}", {"optim": name, "sched": sched, "momentum": momentum, "epochs": 5},
                    acc=0.8 - 0.02 * i)
    reduce_quiet(optim, plots=True)
    made = sorted(p.name for p in (optim / "plots").glob("*.png"))
    assert made == ["by_category.png", "learning_curves.png", "reliability.png"]
    split = tmp_path / "split"  # per-group learning rates, as in the conv/head experiments
    for i, (conv, head) in enumerate((c, h) for c in (0.1, 0.01) for h in (0.001, 0.0001)):
        write_trial(split, f"l{i}", {"lr_conv": conv, "lr_head": head, "epochs": 5}, acc=0.7 + 0.02 * i)
    reduce_quiet(split, plots=True)
    assert (split / "plots" / "heatmap.png").exists() and (split / "plots" / "objective_vs_lr.png").exists()
    assert "LR conv" in (split / "leaderboard.md").read_text()


def test_no_plots_report(tmp_path):
    grid_sweep(tmp_path)
    assert main([str(tmp_path), "--no-plots"]) == 0
    html = (tmp_path / "report.html").read_text()
    assert "<img" not in html and "No plots" in html
    assert not (tmp_path / "plots").exists()


def test_tracking_logs_leaderboard_table(tmp_path, monkeypatch, capsys):
    grid_sweep(tmp_path)
    calls = {}

    class FakeTracker:
        def log(self, metrics, step=None):
            pass

        def summary(self, metrics):
            calls["summary"] = metrics

        def log_table(self, key, columns, rows):
            calls["table"] = (key, columns, rows)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def open_tracker(cfg, *, run_dir, name, group, job_type, config):
        calls["open"] = (cfg, job_type, group)
        return FakeTracker()

    monkeypatch.setitem(sys.modules, "gridtune.sweepdir.tracking", types.SimpleNamespace(open_tracker=open_tracker))
    assert main([str(tmp_path), "--no-plots", "--tracking", "wandb"]) == 0
    key, columns, rows = calls["table"]
    assert key == "leaderboard" and "objective_mean" in columns and len(rows) == 10
    assert calls["open"][0]["name"] == "wandb" and calls["open"][1] == "reduce"
    assert calls["summary"]["best/trial_id"] == rows[0][columns.index("run_id")]

    monkeypatch.setitem(sys.modules, "gridtune.sweepdir.tracking", None)  # import fails: one warning, still exit 0
    assert main([str(tmp_path), "--no-plots", "--tracking", "wandb"]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: --tracking wandb skipped") == 1


def test_report_escapes_and_lists_skipped_files(tmp_path):
    write_trial(tmp_path, "a", acc=0.8, skipped_files=[{"path": "x/<b>.wav", "reason": "bad & broken"}])
    reduce_quiet(tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert "<h2>Skipped files</h2>" in html and "x/&lt;b&gt;.wav" in html and "bad &amp; broken" in html
    assert html.startswith("<!DOCTYPE html>")
