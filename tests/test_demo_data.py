"""The demo-data generator writes IRMAS's layout and names, real-sounding stereo audio, deterministically."""
from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import find_peaks, welch

from gridtune.data import demo

TRAIN_NAME = re.compile(
    r"^(?:(?P<prefix>\d+)__)?\[(?P<inst>[a-z]{3})\](?:\[(?P<drums>dru|nod)\])?"
    r"\[(?P<genre>cou_fol|cla|pop_roc|lat_sou|jaz_blu)\](?P<track>\d+)__(?P<excerpt>\d+)\.wav$"
)
SMALL = dict(per_class=6, test_clips=4)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, demo.generate(out, seed=0, **SMALL)


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.suffix in (".wav", ".txt")}


def _spectral_peaks(x: np.ndarray, sr: int) -> int:
    """Prominent peaks within 40 dB of the strongest: 1 for a sine, many for a real instrument."""
    _, psd = welch(x, sr, nperseg=4096)
    db = 10 * np.log10(psd + 1e-20)
    return len(find_peaks(db, height=db.max() - 40, prominence=10)[0])


def test_training_layout_and_counts(small):
    out, summary = small
    train = out / "IRMAS-TrainingData"
    assert sorted(p.name for p in train.iterdir()) == sorted(demo.CLASSES)
    for cls in demo.CLASSES:
        assert len(list((train / cls).glob("*.wav"))) == 6
    assert summary["train_clips"] == 66 and summary["train_recordings"] == 22
    assert summary["test_clips"] == 4
    assert not list(out.rglob("*.tmp"))


def test_training_names_follow_both_irmas_forms(small):
    out, _ = small
    recordings = defaultdict(set)
    forms = Counter()
    for wav in (out / "IRMAS-TrainingData").rglob("*.wav"):
        m = TRAIN_NAME.match(wav.name)
        assert m, wav.name
        assert m["inst"] == wav.parent.name
        assert (m["prefix"] is None) == (m["drums"] is None)
        forms["B" if m["prefix"] else "A"] += 1
        recordings[(wav.parent.name, wav.name.rsplit("__", 1)[0])].add(int(m["excerpt"]))
    assert forms["A"] > 0 and forms["B"] > 0
    assert all(ks == {1, 2, 3} for ks in recordings.values())
    assert list((out / "IRMAS-TrainingData" / "cla").glob("*[[]cla[]][[]cla[]]*.wav"))


def test_training_audio_format(small):
    out, _ = small
    for wav in (out / "IRMAS-TrainingData").rglob("*.wav"):
        info = sf.info(wav)
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (44100, 2, "PCM_16", 132300)


def test_testing_part_is_multilabel_with_irmas_txt(small):
    out, _ = small
    wavs = sorted((out / "IRMAS-TestingData-Part1" / "Part1").glob("*.wav"))
    assert len(wavs) == 4
    assert any(" " in w.name and "(" in w.name for w in wavs)
    assert all(re.search(r"-\d+\.wav$", w.name) for w in wavs)
    n_labels = []
    for wav in wavs:
        text = wav.with_suffix(".txt").read_text()
        lines = text.splitlines(keepends=True)
        assert lines and all(line.endswith("\t\n") for line in lines)
        labels = [line.strip() for line in lines]
        assert set(labels) <= set(demo.CLASSES) and len(set(labels)) == len(labels)
        n_labels.append(len(labels))
        info = sf.info(wav)
        assert info.samplerate == 44100 and info.channels == 2 and info.subtype == "PCM_16"
        assert 5.0 <= info.duration <= 10.0
    assert max(n_labels) >= 2 and min(n_labels) == 1


def test_audio_is_instrument_like_not_silent_or_sine(small):
    out, _ = small
    sr = 44100
    t = np.arange(3 * sr) / sr
    assert _spectral_peaks(np.sin(2 * np.pi * 440 * t), sr) == 1  # the yardstick
    peaks = []
    for wav in sorted(out.rglob("*.wav")):
        x, _ = sf.read(wav)
        assert 0.01 < np.abs(x).max() < 1.0
        assert np.sqrt(np.mean(x ** 2)) > 1e-3
        peaks.append(_spectral_peaks(x.mean(axis=1), sr))
    assert min(peaks) >= 3 and np.median(peaks) >= 8


def test_same_seed_is_byte_identical_other_seed_differs(small, tmp_path):
    out, _ = small
    again = demo.generate(tmp_path / "a", seed=0, **SMALL)
    assert _hashes(out) == _hashes(Path(again["out"]))
    other = demo.generate(tmp_path / "b", seed=1, **SMALL)
    wavs = lambda root: {h for name, h in _hashes(root).items() if name.endswith(".wav")}
    assert not wavs(out) & wavs(Path(other["out"]))


def test_rerun_overwrites_and_drops_only_its_own_stale_files(tmp_path):
    demo.generate(tmp_path, seed=0, per_class=3, test_clips=2)
    keep = tmp_path / "IRMAS-TrainingData" / "cel" / "mine.wav"
    keep.write_bytes(b"not generated")
    summary = demo.generate(tmp_path, seed=5, per_class=3, test_clips=1)
    assert sorted(_hashes(tmp_path)) == sorted(summary["files"] + [str(keep.relative_to(tmp_path))])
    assert keep.read_bytes() == b"not generated"


def test_cli_prints_one_line_summary(tmp_path, capsys):
    demo.main(["--out", str(tmp_path), "--per-class", "1", "--test-clips", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "33 train clips" in lines[0] and "1 test clips" in lines[0]
