"""Final run tests: a real one-trial sweep on tiny demo data, then the winner retrained and tested."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from gridtune.use import evaluate
from gridtune import final
from gridtune.train import metrics
from gridtune.data.demo import generate
from gridtune.sweepdir.records import read_history, read_json

ROOT = Path(__file__).resolve().parents[1]


def run_main(argv, capsys) -> tuple[int, str, str]:
    rc = final.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A sweep dir holding one finished debug trial and a best.yaml naming it (as the reducer would)."""
    root = tmp_path_factory.mktemp("final")
    data, out_root = root / "data", root / "out"
    # 9 clips = 3 recordings per class, so a test split can hold one recording besides train and val
    generate(data, per_class=9, test_clips=4, seed=0)
    env = {**os.environ, "GRIDTUNE_OUT": str(out_root), "GRIDTUNE_DATA": str(data), "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-m", "gridtune.sweep", "-m", "preset=debug", "sweep_name=s",
                           f"out_root={out_root}", f"data.root={data}"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    sweep_dir = out_root / "s"
    (trial,) = [p for p in sweep_dir.iterdir() if (p / "result.json").exists()]
    result = read_json(trial / "result.json")
    assert result["status"] == "ok"
    best = {"trial_id": trial.name, "sweep_dir": str(sweep_dir), "objective": "val/acc", "objective_mode": "max",
            "value": result["metrics"]["val/acc"],
            # a sweep run with final.epochs=3 on its command line: the user's final.epochs=2 must win
            "overrides": result["overrides"] + ["final.epochs=3"], "params": result["params"],
            "git_sha": None, "n_seeds": 1, "separable": True, "note": "", "runners_up": []}
    (sweep_dir / "best.yaml").write_text(yaml.safe_dump(best))
    return SimpleNamespace(root=root, data=data, dir=sweep_dir, trial=trial, best=best)


@pytest.fixture(scope="module")
def finished(sweep):
    """The default final run (train+val, IRMAS test clips), run once for several tests."""
    rc = final.main([f"sweep_dir={sweep.dir}", "final.epochs=2", "preset=debug"])
    assert rc == 0
    out = sweep.dir / "final"
    return SimpleNamespace(out=out, rec=read_json(out / "final.json"))


def test_final_writes_model_metrics_and_report(sweep, finished):
    rec, out = finished.rec, finished.out
    assert rec["trial_id"] == sweep.trial.name and rec["train_on"] == "train+val"
    assert rec["epochs"] == 2 and rec["epochs_run"] == 2          # the user's final.epochs beat best.yaml's 3
    assert len(read_history(out / "history.jsonl")) == 2
    assert "final.epochs=3" not in rec["overrides"] and "final.epochs=2" in rec["overrides"]
    test = rec["test"]
    assert test["mode"] == "irmas_test" and test["n_clips"] == 4 == rec["n_test_clips"]
    assert test["n_windows"] >= 4 and test["window_s"] == 3.0 and test["hop_s"] == 1.5
    defined = [f for f in test["per_class_f1"].values() if f is not None]
    assert sorted(test["per_class_f1"]) == sorted(rec["classes"]) and defined
    assert test["macro_f1"] == pytest.approx(sum(defined) / len(defined))   # the mean of the defined classes
    assert isinstance(test["micro_f1"], float)   # tests/test_predict.py re-derives it from model.pt
    assert any(abs(rec["threshold"] - t) < 1e-9 for t in metrics.DEFAULT_THRESHOLDS)
    assert "winner's best.pt" in rec["threshold_source"] and str(sweep.trial / "best.pt") in rec["threshold_source"]
    assert rec["weights"].startswith("last epoch")
    assert not (out / "best.pt").exists()                            # an in-sample "best" is not kept
    assert rec["n_train_clips"] == 99 and rec["n_val_clips"] > 0       # train+val: every clip
    report = (out / "final_report.md").read_text()
    assert "train+val" in report and str(out / "model.pt") in report and "micro_f1" in report
    assert yaml.safe_load((out / "provenance.yaml").read_text())["best"]["trial_id"] == sweep.trial.name
    assert yaml.safe_load((out / "final_config.yaml").read_text())["final"]["epochs"] == 2


def test_model_pt_loads_weights_only_and_reproduces_predictions(sweep, finished):
    out, rec = finished.out, finished.rec
    state = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert set(state) == {"model", "features"}
    last = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
    assert all(torch.equal(state["model"][k], last[k]) for k in last)   # train+val keeps the last epoch
    features, model, classes = evaluate.load_final_model(out)
    assert classes == rec["classes"]
    from omegaconf import OmegaConf
    cfg = OmegaConf.load(out / "final_config.yaml")
    clips = evaluate.resolve_mode(cfg, classes)[1]
    # the computation the final run's test evaluation ran (its threads and kernels, its autocast and
    # memory format: bf16 and channels_last on a CPU with native bf16), so its figures come back exactly
    from gridtune.train.loop import precision
    from gridtune.train.runtime import set_cpu
    set_cpu(cfg)
    amp_dtype, _, channels_last = precision(cfg.train, torch.device("cpu"))
    if channels_last:
        model.to(memory_format=torch.channels_last)
    prob_fn = evaluate.model_prob_fn(model, features, torch.device("cpu"), amp_dtype, channels_last)
    again = evaluate.irmas_test(cfg, clips, classes, prob_fn, rec["threshold"])
    for key in ("micro_f1", "macro_f1", "per_class_f1", "n_windows"):
        assert again[key] == rec["test"][key]
    # and the loaded weights matter: a freshly initialized model predicts something else
    from gridtune.train.frontend import input_shape
    from gridtune.train.model import build_model
    fresh = build_model(cfg.model, len(classes), input_shape(cfg.features, 48000)).eval()
    batch = np.random.default_rng(0).standard_normal((2, 48000)).astype(np.float32) * 0.1
    p_loaded = evaluate.model_prob_fn(model, features, torch.device("cpu"))(batch)
    p_fresh = evaluate.model_prob_fn(fresh, features, torch.device("cpu"))(batch)
    assert p_loaded.shape == (2, len(classes)) and not np.allclose(p_loaded, p_fresh)


def test_rerun_resumes_from_checkpoint_with_same_metrics(sweep, finished, capsys):
    rc, out, _ = run_main([f"sweep_dir={sweep.dir}", "final.epochs=2", "preset=debug"], capsys)
    assert rc == 0
    assert "resumed final after epoch 2" in out and "epoch 1/2" not in out and "epoch 2/2" not in out
    rec = read_json(finished.out / "final.json")
    assert len(read_history(finished.out / "history.jsonl")) == 2
    assert rec["test"] == finished.rec["test"] and rec["threshold"] == finished.rec["threshold"]
    assert f"test micro_f1 = {rec['test']['micro_f1']:.4f}" in out


def test_checkpoint_of_another_run_is_refused(sweep, finished, capsys):
    rc, out, err = run_main([f"sweep_dir={sweep.dir}", "final.epochs=3", "preset=debug"], capsys)
    assert rc == 2 and "another final run" in err and len(err.strip().splitlines()) == 1


def test_train_only_keeps_best_epoch_and_thresholds_on_its_own_val(sweep, capsys):
    out = sweep.root / "train_only"
    rc, _, err = run_main([f"sweep_dir={sweep.dir}", "final.epochs=2", "final.train_on=train",
                           f"final.out_dir={out}"], capsys)
    assert rc == 0, err
    rec = read_json(out / "final.json")
    assert rec["weights"].startswith("best epoch") and rec["threshold_source"].startswith("final model")
    assert rec["n_train_clips"] < 99
    best = torch.load(out / "best.pt", weights_only=True)["model"]
    model = torch.load(out / "model.pt", weights_only=True)["model"]
    assert all(torch.equal(best[k], model[k]) for k in best)


def test_split_test_reports_accuracy(sweep, capsys):
    out = sweep.root / "split"
    rc, stdout, err = run_main([f"sweep_dir={sweep.dir}", "final.epochs=1", "final.test=split",
                                "data.test_fraction=0.2", f"final.out_dir={out}"], capsys)
    assert rc == 0, err
    rec = read_json(out / "final.json")
    n = rec["test"]["n_clips"]
    assert rec["test"]["mode"] == "split" and n > 0
    assert rec["test"]["acc"] * n == pytest.approx(round(rec["test"]["acc"] * n))   # a count of correct clips over n
    assert rec["threshold"] is None and "test acc = " in stdout
    assert rec["config_trial_id"] != rec["trial_id"]        # test_fraction is part of the config


def test_missing_best_yaml_is_one_line_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gridtune.final", f"sweep_dir={tmp_path}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path / "best.yaml") in lines[0] and "gridtune.reduce" in lines[0]


@pytest.mark.parametrize("bad, words", [("final.train_on=everything", "final.train_on"),
                                        ("nope=1", "nope"), ("lr=-1", "lr=")])
def test_invalid_override_is_one_line_exit_2(sweep, capsys, bad, words):
    rc, _, err = run_main([f"sweep_dir={sweep.dir}", bad, f"final.out_dir={sweep.root / 'unused'}"], capsys)
    assert rc == 2 and words in err and len(err.strip().splitlines()) == 1
    assert not (sweep.root / "unused").exists()


def test_user_overrides_win_and_multirun_settings_are_dropped():
    best = ["dropout=0.3", "lr=0.01", "preset=debug", "sweep=task11", "hydra.launcher.partition=gpu",
            "++launcher.chunk=['a1','b2']", "hydra/launcher=basic"]
    cfg, applied = final.compose(best, ["lr=0.002", "preset=demo"])
    assert cfg.lr == 0.002 and cfg.dropout == 0.3 and cfg.features.n_mels == 64   # demo's, not debug's 32
    assert cfg.sweep_name == "task11" and cfg.train.epochs == 15                    # the grid file's settings
    assert "launcher.chunk" not in json.dumps(applied) and not any(a.startswith("hydra") for a in applied)
    assert applied[-2:] == ["lr=0.002", "preset=demo"]


def test_sweep_dir_may_be_quoted_or_bare(tmp_path):
    assert final.parse_args([f"sweep_dir='{tmp_path}'", "lr=1"]) == (tmp_path.resolve(), ["lr=1"])
    assert final.parse_args([str(tmp_path)]) == (tmp_path.resolve(), [])
    odd = "/x/my sweep's, best"             # as slurm/final.sh quotes it for Hydra
    assert final.parse_args(["sweep_dir='" + odd.replace("'", "\\'") + "'"]) == (Path(odd), [])
    with pytest.raises(final.FinalError):
        final.parse_args(["lr=1"])


def test_windows_of_a_7s_clip_are_averaged():
    sr, window, hop = 100, 300, 150                 # 3 s windows every 1.5 s
    assert list(evaluate.window_starts(700, window, hop)) == [0, 150, 300, 450]
    assert list(evaluate.window_starts(200, window, hop)) == [0]              # short clip: one padded window
    waves = np.concatenate([np.arange(700), 1000 + np.arange(200)]).astype(np.float32) / 2000
    offsets = np.array([0, 700, 900])
    seen = []

    def prob_fn(batch):
        seen.append(batch.copy())
        a = batch[:, 0]                              # each window's first sample tells which it is
        return np.stack([a, 1 - a], axis=1)

    probs, n_windows = evaluate.clip_probabilities(prob_fn, waves, offsets, window, hop, batch_size=3)
    assert n_windows == 5 and [len(b) for b in seen] == [3, 2]
    windows = np.concatenate(seen)
    firsts = np.array([0, 150, 300, 450]) / 2000
    assert np.allclose(probs[0], [firsts.mean(), 1 - firsts.mean()])
    assert np.allclose(probs[1], [0.5, 0.5])
    assert windows[3, 249] == np.float32(699 / 2000) and not windows[3, 250:].any()   # last window zero-padded
    assert windows[4, 199] == np.float32(1199 / 2000) and not windows[4, 200:].any()


def test_threshold_falls_back_to_half_without_winner_weights(tmp_path):
    run = SimpleNamespace(cfg=SimpleNamespace(final=SimpleNamespace(train_on="train+val")), device="cpu")
    t, source, f1 = evaluate.threshold_for(run, tmp_path / "nope" / "best.pt", model=None)
    assert t == 0.5 and f1 is None and source.startswith("default 0.5")


@pytest.mark.slow
def test_killed_final_resumes_to_the_same_result(sweep, finished):
    """SIGTERM after epoch 1, then a rerun: epoch 2 and the test figures match an uninterrupted run."""
    import signal
    out = sweep.root / "killed"
    cmd = [sys.executable, "-m", "gridtune.final", f"sweep_dir={sweep.dir}", "final.epochs=2", "preset=debug",
           f"final.out_dir={out}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "epoch 1/2" in line:
            proc.send_signal(signal.SIGTERM)
            break
    proc.wait(timeout=60)
    assert proc.returncode != 0 and len(read_history(out / "history.jsonl")) == 1
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed killed after epoch 1" in again.stdout and "epoch 1/2" not in again.stdout
    rows, ref = read_history(out / "history.jsonl"), read_history(finished.out / "history.jsonl")
    for key in ("train/loss", "val/loss", "val/acc"):
        assert [r[key] for r in rows] == pytest.approx([r[key] for r in ref], abs=1e-6)
    rec = read_json(out / "final.json")
    assert rec["test"]["micro_f1"] == finished.rec["test"]["micro_f1"] and rec["threshold"] == finished.rec["threshold"]


def test_unusable_test_choice_fails_before_training(sweep, capsys):
    out = sweep.root / "no_split"
    rc, stdout, err = run_main([f"sweep_dir={sweep.dir}", "final.test=split", f"final.out_dir={out}"], capsys)
    assert rc == 2 and "data.test_fraction" in err and len(err.strip().splitlines()) == 1
    assert "epoch 1/" not in stdout and not (out / "checkpoint.pt").exists()


def test_status_shows_the_final_run_apart_from_the_trials(sweep, finished, capsys):
    from gridtune import status
    assert status.main([str(sweep.dir), "--no-slurm"]) == 0
    out = capsys.readouterr().out
    assert "1 trials: 1 ok" in out.splitlines()
    (line,) = [ln for ln in out.splitlines() if ln.startswith("final run")]
    assert line.startswith(f"final run ({finished.out}): ok  test micro_f1=")
    assert not [ln for ln in out.splitlines() if ln.startswith("  final")]
