"""The shared audio cache: decoded once per dataset, built exactly once by concurrent processes,
and odd audio converted or reported."""
import multiprocessing as mp
import os

import numpy as np
import pytest
import soundfile as sf

from gridtune.data import audio, cache, layouts


def _items(root):
    clips, _, _ = layouts.index_train(root, "auto", None)
    return cache.clips_as_items(clips)


PARAMS = {"kind": "audio", "sample_rate": 16000, "n_samples": 48000}


def test_decoded_once_per_dataset(fresh_data, tmp_path):
    items = _items(fresh_data)
    before = cache.DECODES
    first = cache.load_or_build(fresh_data, items, PARAMS, tmp_path / "c")
    assert first.built and cache.DECODES - before == len(items) == first.meta["decodes"]
    assert first.waves.shape == (len(items), 48000) and first.waves.dtype == np.float16
    second = cache.load_or_build(fresh_data, items, PARAMS, tmp_path / "c")
    assert not second.built and cache.DECODES - before == len(items)      # no decode the second time
    assert second.key == first.key
    # other audio parameters or a touched file make a new entry, never a stale one
    assert cache.load_or_build(fresh_data, items, {**PARAMS, "sample_rate": 8000, "n_samples": 24000},
                               tmp_path / "c").key != first.key
    os.utime(fresh_data / items[0][0], ns=(1, 1))
    assert cache.cache_key(fresh_data, [i[0] for i in items], PARAMS) != first.key


def _build(args):
    root, cache_dir = args
    entry = cache.load_or_build(root, _items(root), PARAMS, cache_dir)
    return entry.built, entry.key


def test_eight_processes_build_exactly_once(fresh_data, tmp_path):
    ctx = mp.get_context("spawn")
    with ctx.Pool(8) as pool:
        out = pool.map(_build, [(fresh_data, tmp_path / "c")] * 8)
    assert sum(built for built, _ in out) == 1
    assert len({key for _, key in out}) == 1
    entries = [p for p in (tmp_path / "c").iterdir() if p.is_dir()]
    assert len(entries) == 1 and not any(p.name.startswith(".") for p in entries)   # no leftover temp dir


def _write(path, data, sr, subtype):
    sf.write(str(path), data, sr, subtype=subtype)


@pytest.fixture
def odd_dir(tmp_path):
    d = tmp_path / "odd"
    d.mkdir()
    t = np.arange(int(44100 * 3)) / 44100
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    _write(d / "pcm8.wav", tone, 44100, "PCM_U8")
    _write(d / "pcm24.wav", tone, 44100, "PCM_24")
    _write(d / "float32.wav", tone.astype(np.float32), 44100, "FLOAT")
    _write(d / "rate8k.wav", tone[::5][:24000], 8000, "PCM_16")
    _write(d / "rate96k.wav", np.repeat(tone, 2)[:288000], 96000, "PCM_16")
    _write(d / "six channels.wav", np.stack([tone] * 6, 1), 44100, "PCM_16")
    _write(d / "short [1s] ü.wav", tone[:44100], 44100, "PCM_16")
    _write(d / "long 10s.wav", np.tile(tone, 4), 44100, "PCM_16")
    _write(d / "silence.wav", np.zeros_like(tone), 44100, "PCM_16")
    (d / "empty.wav").write_bytes(b"")
    (d / "not audio.wav").write_text("this is a text file\n")
    full = (d / "pcm24.wav").read_bytes()
    (d / "truncated.wav").write_bytes(full[:30])
    return d


CONVERTED = ["pcm8.wav", "pcm24.wav", "float32.wav", "rate8k.wav", "rate96k.wav", "six channels.wav",
             "short [1s] ü.wav", "long 10s.wav"]
REFUSED = {"silence.wav": "silent", "empty.wav": "empty", "not audio.wav": "not readable",
           "truncated.wav": "not readable"}


def test_odd_audio_is_converted_or_reported(odd_dir, tmp_path):
    for name in CONVERTED:
        x = audio.decode(odd_dir / name, 16000, 48000)
        assert x.shape == (48000,) and x.dtype == np.float32 and np.isfinite(x).all(), name
        assert np.abs(x[:16000]).max() > 0.1, name                 # the tone survived the conversion
    for name, why in REFUSED.items():
        with pytest.raises(audio.BadAudio, match=why):
            audio.decode(odd_dir / name, 16000, 48000)
    items = [(n, 0, n) for n in CONVERTED + list(REFUSED)]
    entry = cache.load_or_build(odd_dir, items, PARAMS, tmp_path / "c", on_bad_file="skip")
    assert entry.meta["paths"] == CONVERTED
    assert {s["path"]: s["reason"].split()[0] for s in entry.meta["skipped"]} == {
        "silence.wav": "silent", "empty.wav": "empty", "not audio.wav": "not", "truncated.wav": "not"}
    with pytest.raises(audio.BadAudio, match="silence.wav: silent"):
        cache.load_or_build(odd_dir, items, PARAMS, tmp_path / "c2", on_bad_file="error")
    assert not any((tmp_path / "c2").glob("*/meta.json"))         # nothing half-written
