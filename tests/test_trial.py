"""The trial engine on CPU: an atomic, complete record; skip when done; divergence recorded;
a trial killed after an epoch resumes to exactly the metrics of an uninterrupted run."""
import json

import torch

from conftest import compose
from gridtune.sweepdir import records
from gridtune.train.trial import run_trial

FAST = ("preset=debug", "train.epochs=3")


def _cfg(root, *extra):
    return compose(*FAST, f"data.root={root}", *extra)


def test_trial_writes_a_complete_record(demo_root, tmp_path):
    rec = run_trial(_cfg(demo_root), tmp_path / "t", overrides=["preset=debug"])
    on_disk = records.read_json(tmp_path / "t" / "result.json")
    assert on_disk == json.loads(json.dumps(rec, default=str))
    assert set(records.RESULT_KEYS) <= set(on_disk)
    assert on_disk["status"] == "ok" and on_disk["epochs_run"] == 3 and 1 <= on_disk["best_epoch"] <= 3
    for key in ("val/acc", "val/loss", "val/bal_acc", "val/macro_f1", "val/ece", "val/confidence", "train/loss"):
        assert on_disk["metrics"][key] is not None, key
    assert on_disk["cache_hash"] and on_disk["n_skipped_files"] == 0 and on_disk["train_samples_per_s"] > 0
    assert on_disk["overrides"] == ["preset=debug"] and on_disk["params"]["lr"] == 1e-3
    assert len(records.read_history(tmp_path / "t" / "history.jsonl")) == 3
    best = torch.load(tmp_path / "t" / "best.pt", weights_only=True)
    assert set(best) == {"model", "features"}
    assert not (tmp_path / "t" / "claim.json").exists()


def test_final_trial_is_skipped(demo_root, tmp_path):
    cfg = _cfg(demo_root)
    first = run_trial(cfg, tmp_path / "t")
    mtime = (tmp_path / "t" / "result.json").stat().st_mtime_ns
    again = run_trial(cfg, tmp_path / "t")
    assert again["finished_at"] == first["finished_at"]
    assert (tmp_path / "t" / "result.json").stat().st_mtime_ns == mtime


def test_divergence_is_a_status_not_an_exception(demo_root, tmp_path):
    rec = run_trial(_cfg(demo_root, "train.diverge_loss=0.5"), tmp_path / "t")
    assert rec["status"] == "diverged" and rec["diverged_epoch"] == 1 and "diverged" in rec["error"]
    assert records.read_json(tmp_path / "t" / "result.json")["status"] == "diverged"


def test_other_exceptions_are_failed_with_the_last_line(demo_root, tmp_path):
    rec = run_trial(_cfg(demo_root, "model.kernel_size=4"), tmp_path / "t")
    assert rec["status"] == "failed" and "kernel_size" in rec["error"] and "\n" not in rec["error"]
    assert records.read_json(tmp_path / "t" / "result.json")["status"] == "failed"


def test_resume_after_a_kill_matches_an_uninterrupted_run(demo_root, tmp_path, run_killed_after_epoch):
    cfg = _cfg(demo_root, "sched=cosine")
    whole = run_trial(cfg, tmp_path / "whole")
    run_killed_after_epoch(cfg, tmp_path / "cut", epoch=2)
    assert not (tmp_path / "cut" / "result.json").exists()
    resumed = run_trial(cfg, tmp_path / "cut")
    assert resumed["status"] == "ok" and resumed["epochs_run"] == 3
    assert resumed["metrics"] == whole["metrics"]
    assert records.read_history(tmp_path / "cut" / "history.jsonl")[-1]["val/loss"] == \
        records.read_history(tmp_path / "whole" / "history.jsonl")[-1]["val/loss"]


def _png_dataset(root):
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for c, name in enumerate(["clean", "augmented"]):
        (root / name).mkdir(parents=True)
        for i in range(20):
            img = rng.random((100, 120)) * 0.3
            img[c * 40:c * 40 + 20] += 0.6                      # a class-specific band
            Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(root / name / f"{i}_aug{i % 2}.png")


def test_mel_png_folders_train(tmp_path):
    _png_dataset(tmp_path / "mel")
    cfg = compose("preset=debug", "features=image", f"data.root={tmp_path / 'mel'}", "data.classes=null",
                  "train.epochs=4", "train.batch_size=8", "data.val_fraction=0.25")
    rec = run_trial(cfg, tmp_path / "t")
    assert rec["status"] == "ok" and rec["metrics"]["val/acc"] >= 0.8, rec["metrics"]
    bad = run_trial(compose("preset=debug", f"data.root={tmp_path / 'mel'}", "data.classes=null"), tmp_path / "u")
    assert bad["status"] == "failed" and "data.layout=png needs features=image" in bad["error"]


def test_plain_class_folders_of_wavs(demo_root, tmp_path):
    import shutil
    for cls in ("pia", "voi", "gel"):
        shutil.copytree(demo_root / "IRMAS-TrainingData" / cls, tmp_path / "wavs" / f"my {cls}")
    rec = run_trial(compose("preset=debug", f"data.root={tmp_path / 'wavs'}", "data.classes=null"), tmp_path / "t")
    assert rec["status"] == "ok" and set(rec["per_class_acc"]) == {"my pia", "my voi", "my gel"}
