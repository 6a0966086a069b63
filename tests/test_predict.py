"""gridtune.predict: formats, rates, channels and lengths decoded as training did, the test evaluation's
windowing and averaging, bad files, the threshold, and every output format parsed back."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from modeldirs import make_final_dir, make_trial_dir

from gridtune.use import evaluate, trained
from gridtune import predict
from gridtune.data.demo import CLASSES
from gridtune.train.loop import precision

SR, WINDOW, HOP = 16000, 48000, 24000


@pytest.fixture(scope="module")
def dirs(demo_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    return SimpleNamespace(final=make_final_dir(root / "final", demo_root, threshold=0.1),
                           trial=make_trial_dir(root / "trial", demo_root), root=root)


@pytest.fixture(scope="module")
def reference(dirs):
    """p(windows) of gridtune's own model as the final run's test evaluation computes them: under the
    autocast and memory format its training resolved (`loop.precision`: bf16 and channels_last on a
    CPU with native bf16, fp32 elsewhere), computed without predict."""
    t = trained.load(dirs.final)
    cpu = torch.device("cpu")
    amp_dtype, _, channels_last = precision(t.cfg.train, cpu)
    if channels_last:
        t.model.to(memory_format=torch.channels_last)
    return evaluate.model_prob_fn(t.model, t.features, cpu, amp_dtype, channels_last)


def tone(seconds: float, sr: int = SR, channels: int = 1, seed: int = 0, freq: float = 440.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(len(t))
    return np.repeat(x[:, None], channels, axis=1).astype(np.float32)


def run(argv, capsys) -> tuple[int, str, str]:
    rc = predict.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def rows_of(out: str) -> dict[str, dict]:
    return {Path(r["file"]).name: r for r in map(json.loads, out.splitlines())}


def probs(row) -> np.ndarray:
    return np.array([row["probabilities"][c] for c in CLASSES])


def stored(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(np.float32)     # the cache's sample type, as training saw it


def test_short_and_long_files_are_windowed_and_averaged_as_the_test_evaluation(dirs, reference, tmp_path, capsys):
    one = tone(1.0)[:, 0]                       # shorter than a window: one zero-padded window
    seven = tone(7.0, seed=1)[:, 0]             # windows at 0, 1.5, 3, 4.5 s; the last zero-padded
    sf.write(tmp_path / "one.wav", one, SR, subtype="FLOAT")
    sf.write(tmp_path / "seven.wav", seven, SR, subtype="FLOAT")
    rc, out, err = run([dirs.final, tmp_path, "--format", "jsonl"], capsys)
    assert rc == 0, err
    rows = rows_of(out)
    assert rows["one.wav"]["windows"] == 1 and rows["seven.wav"]["windows"] == 4
    assert rows["one.wav"]["seconds"] == pytest.approx(1.0) and rows["seven.wav"]["seconds"] == pytest.approx(7.0)
    assert list(rows) == ["one.wav", "seven.wav"]                # input order: one batch of 5 windows
    # the very batch predict runs (one.wav's window, then seven.wav's 4), so the same kernels see the
    # same rows: a CPU kernel may round a row differently in a batch of another size (oneDNN with bf16
    # does, by 1e-4). What is left is the mean, summed in float64 in another order: below 1e-12.
    x = stored(seven)
    windows = np.stack([np.pad(stored(one), (0, WINDOW - SR))] +
                       [np.pad(x[s:s + WINDOW], (0, max(0, s + WINDOW - len(x)))) for s in (0, 24000, 48000, 72000)])
    p = reference(windows).astype(np.float64)
    want_one, want_seven = p[0], p[1:].mean(axis=0)
    assert np.abs(probs(rows["one.wav"]) - want_one).max() < 1e-6
    assert np.abs(probs(rows["seven.wav"]) - want_seven).max() < 1e-6
    assert np.abs(want_one - want_seven).max() > 1e-3          # the two files really differ


def test_files_are_decoded_to_the_samples_the_test_evaluation_reads(demo_root, tmp_path):
    from gridtune.data import cache
    from gridtune.data.layouts import index_test
    clips = index_test(demo_root, list(CLASSES))
    entry = cache.load_or_build(demo_root, [(rel, labels, rel) for rel, labels in clips],
                                {"kind": "audio", "sample_rate": SR, "variable": True}, tmp_path / "cache")
    for i, (rel, _) in enumerate(clips):
        x = cache.decode_as_stored(demo_root / rel, SR)
        assert x.dtype == entry.waves.dtype and np.array_equal(x, entry.waves[entry.offsets[i]:entry.offsets[i + 1]])


@pytest.mark.parametrize("name, sr, channels, subtype", [
    ("pcm16.wav", 16000, 1, "PCM_16"), ("pcm24.wav", 44100, 2, "PCM_24"), ("float.wav", 22050, 3, "FLOAT"),
    ("lossless.flac", 48000, 2, "PCM_16"), ("vorbis.ogg", 32000, 1, "VORBIS"), ("pcm8.wav", 8000, 1, "PCM_U8")])
def test_formats_rates_and_channels_match_the_same_sound_at_16k(dirs, reference, tmp_path, capsys,
                                                                 name, sr, channels, subtype):
    if subtype not in sf.available_subtypes(name.rsplit(".", 1)[1].upper()):
        pytest.skip(f"this libsndfile cannot write {subtype} {name}")
    sf.write(tmp_path / name, tone(4.0, sr, channels), sr, subtype=subtype)
    sf.write(tmp_path / "ref.wav", tone(4.0, SR, 1), SR, subtype="FLOAT")
    rc, out, err = run([dirs.final, tmp_path / name, tmp_path / "ref.wav", "--format", "jsonl"], capsys)
    assert rc == 0, err
    rows = rows_of(out)
    assert rows[name]["seconds"] == pytest.approx(4.0, abs=1e-3) and rows[name]["windows"] == 2
    # the same sound through a lossy path (8-bit, Vorbis, resampling) lands close to the 16 kHz float file
    tol = 0.02 if subtype in ("VORBIS", "PCM_U8") else 0.005
    assert np.abs(probs(rows[name]) - probs(rows["ref.wav"])).max() < tol


def test_bad_files_are_listed_with_their_reason_and_skipped(dirs, tmp_path, capsys):
    sf.write(tmp_path / "good.wav", tone(2.0)[:, 0], SR)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("this is not audio\n" * 50)
    sf.write(tmp_path / "silent.flac", np.zeros(SR, dtype=np.float32), SR)
    sf.write(tmp_path / "blip.wav", tone(0.05)[:, 0], SR)
    (tmp_path / "notes.txt").write_text("not picked up from a folder")
    rc, out, err = run([dirs.final, tmp_path, tmp_path / "missing.wav"], capsys)
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [Path(r["file"]).name for r in rows] == ["good.wav"]
    reasons = {Path(line.split(" skipped ", 1)[1].split(": ", 1)[0]).name: line
               for line in err.splitlines() if " skipped " in line}
    assert "empty file" in reasons["empty.wav"] and "not readable as audio" in reasons["text.wav"]
    assert "silent" in reasons["silent.flac"] and "too short" in reasons["blip.wav"]
    assert "no such file" in reasons["missing.wav"] and "notes.txt" not in err
    assert "labelled 1 of 5 files" in err and "skipped 4" in err


def test_none_readable_exits_1_and_no_inputs_or_bad_model_exit_2(dirs, tmp_path, capsys):
    (tmp_path / "empty.wav").write_bytes(b"")
    rc, out, err = run([dirs.final, tmp_path / "empty.wav"], capsys)
    assert rc == 1 and "labelled 0 of 1" in err
    rc, out, err = run([dirs.final, tmp_path / "nothing*.wav"], capsys)
    assert rc == 2 and out == "" and err.count("\n") == 1 and "nothing*.wav" in err
    rc, out, err = run([tmp_path, tmp_path / "empty.wav"], capsys)
    assert rc == 2 and out == "" and err.count("\n") == 1 and str(tmp_path) in err
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.pt").write_bytes(b"torn")
    rc, _, err = run([tmp_path / "m", tmp_path / "empty.wav"], capsys)
    assert rc == 2 and err.count("\n") == 1 and "final_config.yaml" in err


@pytest.fixture(scope="module")
def clips(dirs):
    """Five recordings of different lengths and timbres."""
    folder = dirs.root / "clips"
    folder.mkdir()
    for i in range(5):
        sf.write(folder / f"clip{i}.wav", tone(2.0 + i, seed=i, freq=110.0 * 2 ** i), SR)
    return folder


def test_threshold_of_the_final_run_is_applied_and_can_be_overridden(dirs, clips, capsys):
    rc, out, err = run([dirs.final, clips, "--format", "jsonl"], capsys)
    assert rc == 0 and "mean probability >= 0.1 (the final run's" in err
    rows = list(rows_of(out).values())
    assert len(rows) == 5
    for r in rows:
        assert r["predicted"] == [c for c in CLASSES if r["probabilities"][c] >= 0.1]
    assert any(0 < len(r["predicted"]) < len(CLASSES) for r in rows)      # the threshold splits the classes
    rc, out, _ = run([dirs.final, clips, "--format", "jsonl", "--threshold", "0.99"], capsys)
    assert rc == 0 and all(r["predicted"] == [] for r in rows_of(out).values())


def test_a_trial_directory_predicts_the_top1_class_and_says_so(dirs, clips, capsys):
    for model in (dirs.trial, dirs.trial / "best.pt"):
        rc, out, err = run([model, clips, "--format", "jsonl"], capsys)
        assert rc == 0 and "top-1 class (a trial directory has no threshold)" in err
        for r in rows_of(out).values():
            assert r["predicted"] == [CLASSES[int(np.argmax(probs(r)))]]


def test_every_output_format_parses_back_to_the_same_rows(dirs, clips, tmp_path, capsys):
    _, out_jsonl, _ = run([dirs.final, clips, "--format", "jsonl"], capsys)
    ref = rows_of(out_jsonl)
    rc, out_csv, _ = run([dirs.final, clips], capsys)
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out_csv)))
    assert list(rows[0]) == ["file", "predicted", *CLASSES, "windows", "seconds"]
    assert [Path(r["file"]).name for r in rows] == sorted(ref)           # input (sorted folder) order
    for r in rows:
        want = ref[Path(r["file"]).name]
        assert (r["predicted"].split(";") if r["predicted"] else []) == want["predicted"]
        assert np.abs(np.array([float(r[c]) for c in CLASSES]) - probs(want)).max() < 1e-6
        assert int(r["windows"]) == want["windows"]
    rc, out_table, _ = run([dirs.final, clips, "--format", "table"], capsys)
    lines = out_table.splitlines()
    assert lines[0].split() == ["file", "predicted", *CLASSES] and len(lines) == 6
    for line in lines[1:]:
        cells = line.split()
        want = ref[Path(cells[0].lstrip("…")).name]
        assert cells[1] == (",".join(want["predicted"]) or "-")
        assert np.abs(np.array(cells[2:], dtype=float) - probs(want)).max() <= 0.005 + 1e-9
    out_file = tmp_path / "rows.jsonl"
    rc, stdout, err = run([dirs.final, clips, "--out", out_file], capsys)
    assert rc == 0 and stdout == "" and f"wrote {out_file}" in err
    assert rows_of(out_file.read_text()) == ref


def test_globs_and_folders_expand_once_each_in_order(clips):
    paths, missing = predict.expand([str(clips / "clip1.wav"), str(clips), str(clips / "clip[34].wav"), "nope/*.wav"])
    assert [p.name for p in paths] == ["clip1.wav", "clip0.wav", "clip2.wav", "clip3.wav", "clip4.wav"]
    assert missing == ["nope/*.wav"]


def test_progress_bar_only_when_asked_or_on_a_terminal(dirs, clips, capsys):
    rc, quiet, quiet_err = run([dirs.final, clips], capsys)          # captured stderr is not a terminal
    rc_bar, with_bar, bar_err = run([dirs.final, clips, "--progress"], capsys)
    assert rc == rc_bar == 0 and quiet == with_bar and len(quiet.splitlines()) == 6
    assert "5/5" not in quiet_err and "5/5" in bar_err and "file" in bar_err.split("5/5")[1]


@pytest.mark.slow
def test_predicting_a_final_runs_test_clips_reproduces_its_test_figures(demo_root, tmp_path):
    """A real sweep and final run; predict on its IRMAS test clips gives final.json's micro-F1."""
    from conftest import gridtune
    from gridtune import final
    from gridtune.train import metrics
    from gridtune.data.layouts import index_test
    env = {"GRIDTUNE_OUT": str(tmp_path), "WANDB_MODE": "disabled"}
    gridtune("-m", "preset=debug", "sweep_name=p", f"out_root={tmp_path}", f"data.root={demo_root}",
             "train.epochs=1", env=env)
    gridtune(str(tmp_path / "p"), module="gridtune.reduce", env=env)
    assert final.main([f"sweep_dir={tmp_path / 'p'}", "final.epochs=1", "preset=debug", f"data.root={demo_root}"]) == 0
    rec = json.loads((tmp_path / "p" / "final" / "final.json").read_text())
    r = gridtune(str(tmp_path / "p"), str(demo_root / "IRMAS-TestingData-Part1"), "--format", "jsonl",
                 module="gridtune.predict", env=env)
    rows = rows_of(r.stdout)
    clips = index_test(demo_root, list(CLASSES))
    p = np.stack([probs(rows[Path(rel).name]) for rel, _ in clips])
    f1 = metrics.multilabel_f1(p, evaluate.multi_hot([labels for _, labels in clips], len(CLASSES)), rec["threshold"])
    assert f1["micro_f1"] == pytest.approx(rec["test"]["micro_f1"], abs=1e-12)
    assert sum(row["windows"] for row in rows.values()) == rec["test"]["n_windows"]
