"""Odd audio at the trial and sweep level: converted files train, refused files are listed in every
trial's result.json and in the reducer's leaderboard, and `data.on_bad_file=error` fails naming the file."""
from __future__ import annotations

import html

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from conftest import compose
from faultkit import sweep_args
from gridtune.data import feed, layouts
from gridtune.sweepdir import records
from gridtune.train.trial import run_trial

TRAIN = layouts.TRAIN_DIR
# relative path -> the start of the reason it is refused with
REFUSED = {
    f"{TRAIN}/cel/zero bytes.wav": "empty file",
    f"{TRAIN}/cla/[cla][jaz_blu]0998__1 truncated.wav": "not readable as audio",
    f"{TRAIN}/flu/notes.wav": "not readable as audio",                # a text file named .wav
    f"{TRAIN}/gac/silence__1.wav": "silent",
    f"{TRAIN}/gel/blip.wav": "too short",
    f"{TRAIN}/org/nan float.wav": "non-finite samples",
}
CONVERTED = [
    f"{TRAIN}/pia/u8 (8-bit).wav", f"{TRAIN}/pia/pcm24.wav", f"{TRAIN}/sax/float32.wav",
    f"{TRAIN}/sax/rate 8k.wav", f"{TRAIN}/tru/rate 96k.wav", f"{TRAIN}/tru/mono.wav",
    f"{TRAIN}/vio/six-channels.wav", f"{TRAIN}/vio/one second.wav", f"{TRAIN}/voi/ten seconds.wav",
    f"{TRAIN}/cel/[cel][cla]0999 (live) — ü__1.wav",
]


@pytest.fixture
def odd_data(fresh_data):
    """The demo data plus one file of every odd kind, spread over the class folders."""
    src = sorted((fresh_data / TRAIN / "cel").glob("*.wav"))[0]
    x, sr = sf.read(str(src), dtype="float32", always_2d=True)           # 44.1 kHz stereo, 3 s
    mono = x.mean(1)
    root = fresh_data

    def w(rel, arr, rate, subtype):
        sf.write(str(root / rel), arr, rate, subtype=subtype)
    w(CONVERTED[0], x, sr, "PCM_U8")
    w(CONVERTED[1], x, sr, "PCM_24")
    w(CONVERTED[2], x, sr, "FLOAT")
    w(CONVERTED[3], resample_poly(mono, 80, 441), 8000, "PCM_16")
    w(CONVERTED[4], resample_poly(x, 320, 147, axis=0), 96000, "PCM_16")
    w(CONVERTED[5], mono, sr, "PCM_16")
    w(CONVERTED[6], np.repeat(mono[:, None], 6, 1), sr, "PCM_16")
    w(CONVERTED[7], x[:sr], sr, "PCM_16")
    w(CONVERTED[8], np.tile(x, (4, 1))[: 10 * sr], sr, "PCM_16")
    w(CONVERTED[9], x, sr, "PCM_16")
    (root / f"{TRAIN}/cel/zero bytes.wav").write_bytes(b"")
    (root / f"{TRAIN}/cla/[cla][jaz_blu]0998__1 truncated.wav").write_bytes((root / CONVERTED[1]).read_bytes()[:30])
    (root / f"{TRAIN}/flu/notes.wav").write_text("RIFF? no: these are my notes about the flute take\n")
    w(f"{TRAIN}/gac/silence__1.wav", np.zeros_like(x), sr, "PCM_16")
    w(f"{TRAIN}/gel/blip.wav", x[: sr // 20], sr, "PCM_16")
    bad = x.copy()
    bad[1000, 0] = np.nan
    w(f"{TRAIN}/org/nan float.wav", bad, sr, "FLOAT")
    return root


def _check_skipped(rec):
    assert rec["n_skipped_files"] == len(REFUSED)
    got = {s["path"]: s["reason"] for s in rec["skipped_files"]}
    assert sorted(got) == sorted(REFUSED)
    for path, why in REFUSED.items():
        assert got[path].startswith(why), (path, got[path])


@pytest.mark.slow
def test_odd_files_a_trial_runs_ok_and_the_refused_ones_are_reported(run_gridtune, odd_data, tmp_path):
    n_demo = 66
    r = run_gridtune(*sweep_args(odd_data, tmp_path, "odd", "train.epochs=1"))
    assert f"audio cache built: {n_demo + len(CONVERTED)} clips, {len(REFUSED)} skipped" in r.stdout
    (result,) = (tmp_path / "odd").glob("*/result.json")
    rec = records.read_json(result)
    assert rec["status"] == "ok", rec["error"]
    _check_skipped(rec)
    prepared = feed.prepare(compose("preset=debug", f"data.root={odd_data}"))
    assert set(CONVERTED) <= set(prepared.entry.meta["paths"])          # every converted file is trained on
    assert len(prepared.labels) == n_demo + len(CONVERTED)

    red = run_gridtune(str(tmp_path / "odd"), "--no-plots", module="gridtune.reduce")
    assert "Traceback" not in red.stderr
    board = (tmp_path / "odd" / "leaderboard.md").read_text()
    assert "## Skipped files" in board
    rows = [ln for ln in board.splitlines() if ln.startswith(f"| {TRAIN}/")]
    assert len(rows) == len(REFUSED)
    for path, why in REFUSED.items():
        assert any(ln.startswith(f"| {path} | {why}") and ln.endswith("| 1 |") for ln in rows), path
    page = (tmp_path / "odd" / "report.html").read_text()
    assert all(html.escape(p) in page for p in REFUSED)


def test_on_bad_file_error_fails_the_trial_naming_the_file(odd_data, tmp_path):
    rec = run_trial(compose("preset=debug", "train.epochs=1", f"data.root={odd_data}", "data.on_bad_file=error"),
                    tmp_path / "t")
    assert rec["status"] == "failed" and "\n" not in rec["error"]
    assert rec["error"].startswith(f"gridtune.data.audio.BadAudio: {odd_data}/{TRAIN}/")
    named = rec["error"].split(f"{odd_data}/", 1)[1].split(": ", 1)[0]
    assert named in REFUSED and f"{named}: {REFUSED[named]}" in rec["error"]
    assert records.read_json(tmp_path / "t" / records.RESULT)["status"] == "failed"
    assert not list((odd_data / ".gridtune_cache").glob("*/meta.json"))     # no cache that hides the bad file


def test_on_bad_file_error_also_fails_when_a_skip_build_is_cached(odd_data, tmp_path):
    feed.prepare(compose("preset=debug", f"data.root={odd_data}"))                # a sweep with the default 'skip'
    rec = run_trial(compose("preset=debug", "train.epochs=1", f"data.root={odd_data}", "data.on_bad_file=error"),
                    tmp_path / "t")
    assert rec["status"] == "failed" and f"{odd_data}/{TRAIN}/" in rec["error"], rec["status"]


def test_sweep_with_on_bad_file_error_stops_with_one_line(run_gridtune, odd_data, tmp_path):
    r = run_gridtune(*sweep_args(odd_data, tmp_path, "strict", "train.epochs=1", "data.on_bad_file=error"),
                     check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-1500:]
    assert any(ln.startswith("gridtune: ") and f"{odd_data}/{TRAIN}/" in ln for ln in r.stderr.splitlines())
    assert not list((tmp_path / "strict").glob("*/result.json"))


@pytest.mark.parametrize("name, decoder, args, expected", [
    ("[cel][cla]0999__1.wav", "decode", (16000,), "not readable as audio (Error opening '[cel][cla]0999__1.wav': "
                                                   "Format not recognised.)"),
    ("x.png", "decode_png", (32, 32), "not readable as an image (cannot identify image file 'x.png')")])
def test_a_decoders_reason_names_the_file_not_its_deep_path(tmp_path, name, decoder, args, expected):
    """The caller names the path; the library's own copy of it shrinks to the name, so its reason shows."""
    from gridtune.data import audio
    deep = tmp_path.joinpath(*["deep"] * 30)
    deep.mkdir(parents=True)
    (deep / name).write_text("not a media file")
    with pytest.raises(audio.BadAudio) as e:
        getattr(audio, decoder)(deep / name, *args)
    assert str(e.value) == expected
