"""Fast synthetic audio in IRMAS's training layout: 11 additive-synthesis "instruments", no SoundFont.

This module owns a dataset generator for measuring at IRMAS's size (11 classes x ~610 clips of 3 s)
in seconds rather than the many minutes `gridtune.data.demo`'s SoundFont rendering takes, and where
its renderer is not installed (it needs only numpy and soundfile):

    DIR/IRMAS-TrainingData/<cls>/[cel][cla]0001__1.wav             3 s mono 16-bit excerpts, one label
    DIR/IRMAS-TrainingData/<cls>/008__[cel][nod][cla]0058__1.wav   (both IRMAS name forms)
    DIR/.gridtune_synth.json                                       what the last complete run wrote

Each class is a timbre: its own harmonic spectrum (odd harmonics for the clarinet, drawbars for the
organ, vowel formants for the voice ...), envelope (plucked, struck, bowed, blown), vibrato and
pitch range; chord instruments play triads. Each recording is a random phrase of notes, with the
spectrum jittered per recording, optional quiet bass accompaniment and noise drums, and a noise
floor, cut into EXCERPTS consecutive clips so that a split grouped by recording is meaningful.
Notes are played from one wavetable each (an inverse FFT of the note's harmonic amplitudes), so a
9 s recording costs a few milliseconds; recordings are spread over worker processes. Output is
byte-identical for a given seed and size, whatever the number of workers. The manifest is written
last: a run that was stopped part-way leaves none, and files of an earlier run that this run did
not write are removed.

    python -m gridtune.data.synth --out DIR [--per-class 610] [--seed 0] [--sample-rate 16000] [--workers N]
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .demo import CLASSES, EXCERPTS, GENRES, TRAIN_DIR, publish

MANIFEST = ".gridtune_synth.json"
TABLE = 2048            # wavetable length (a power of two: phases wrap with a mask)
MAX_HARMONICS = 40
# How often each genre has drums; `cla` (classical) almost never, as in IRMAS.
DRUM_ODDS = {"cou_fol": 0.4, "cla": 0.05, "pop_roc": 0.85, "lat_sou": 0.7, "jaz_blu": 0.6}
VOWELS = ((730, 1090, 2440), (530, 1840, 2480), (270, 2290, 3010), (570, 840, 2410), (300, 870, 2240))
# class -> (lowest MIDI key, highest, envelope, plays chords, vibrato (Hz, cents), breath noise)
TIMBRES = {
    "cel": (36, 67, "bowed", False, (5.0, 18.0), 0.02),
    "cla": (50, 84, "blown", False, (0.0, 0.0), 0.01),
    "flu": (60, 93, "blown", False, (5.0, 10.0), 0.08),
    "gac": (40, 76, "plucked", True, (0.0, 0.0), 0.0),
    "gel": (40, 79, "plucked_long", True, (5.5, 8.0), 0.0),
    "org": (36, 84, "organ", True, (0.0, 0.0), 0.0),
    "pia": (36, 96, "struck", True, (0.0, 0.0), 0.0),
    "sax": (46, 80, "blown", False, (5.0, 15.0), 0.04),
    "tru": (55, 82, "brass", False, (5.5, 8.0), 0.01),
    "vio": (55, 88, "bowed", False, (6.0, 25.0), 0.02),
    "voi": (48, 79, "sung", False, (5.5, 35.0), 0.02),
}
SCALES = ((0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10), (0, 2, 3, 5, 7, 9, 10), (0, 3, 5, 7, 10))


def _peak(f: np.ndarray, center: float, width: float, gain: float) -> np.ndarray:
    """A resonance on a log-frequency axis: 1 far away, 1 + gain at `center` Hz."""
    return 1.0 + gain * np.exp(-0.5 * (np.log2(f / center) / width) ** 2)


def harmonics(cls: str, f0: float, sr: int, rng, jitter: np.ndarray) -> np.ndarray:
    """Amplitudes of harmonics 1..MAX_HARMONICS of one note (0 at and above Nyquist)."""
    n = np.arange(1, MAX_HARMONICS + 1, dtype=np.float64)
    f = n * f0
    if cls == "cel":
        a = 1 / n * _peak(f, 250, 0.6, 2.0) * _peak(f, 1000, 0.5, 1.0)
    elif cls == "cla":
        a = np.where(n % 2 == 1, 1 / n, 0.04 / n)
    elif cls == "flu":
        a = np.exp(-(n - 1) * 1.1)
    elif cls in ("gac", "gel"):
        pluck = rng.uniform(0.1, 0.22)             # where the string is plucked: a comb on the spectrum
        a = np.abs(np.sin(np.pi * n * pluck)) / n ** (1.3 if cls == "gac" else 0.8)
    elif cls == "org":
        a = np.zeros(MAX_HARMONICS)
        a[[0, 1, 2, 3, 5, 7]] = rng.uniform(0.3, 1.0, 6)   # drawbars 8', 4', 2 2/3', 2', 1 3/5', 1'
    elif cls == "pia":
        a = 1 / n ** 1.6 * _peak(f, 2500, 0.8, 0.5)
    elif cls == "sax":
        a = 1 / n ** 0.7 * _peak(f, rng.uniform(1200, 1800), 0.4, 3.0)
    elif cls == "tru":
        a = n ** 1.2 * np.exp(-n / 3.0) * _peak(f, 1400, 0.5, 1.5)
    elif cls == "vio":
        a = 1 / n ** 0.8 * _peak(f, 3000, 0.35, 2.5) * _peak(f, 450, 0.4, 1.0)
    elif cls == "voi":
        formants = VOWELS[rng.integers(len(VOWELS))]
        a = np.exp(-n * 0.15) * np.prod([_peak(f, fc, 0.12, 8.0) for fc in formants], axis=0)
    else:
        raise ValueError(f"unknown class {cls!r}")
    a = a * jitter
    a[f >= 0.45 * sr] = 0.0
    return a / max(float(np.abs(a).sum()), 1e-9)


def wavetable(amps: np.ndarray) -> np.ndarray:
    spec = np.zeros(TABLE // 2 + 1, np.complex128)
    spec[1:len(amps) + 1] = -1j * amps * (TABLE / 2)        # sines of the given amplitudes
    return np.fft.irfft(spec, TABLE).astype(np.float32)


def envelope(kind: str, n: int, sr: int, rng) -> np.ndarray:
    t = np.arange(n, dtype=np.float32) / sr
    release = np.clip((n - np.arange(n)) / (0.03 * sr), 0.0, 1.0).astype(np.float32)
    if kind == "plucked":
        env = np.exp(-t / rng.uniform(0.25, 0.6)) * np.minimum(t / 0.004, 1)
    elif kind == "plucked_long":
        env = np.exp(-t / rng.uniform(0.8, 1.6)) * np.minimum(t / 0.004, 1)
    elif kind == "struck":
        env = (0.6 * np.exp(-t / 0.12) + 0.4 * np.exp(-t / rng.uniform(0.8, 1.5))) * np.minimum(t / 0.002, 1)
    elif kind == "bowed":
        env = np.minimum(t / rng.uniform(0.08, 0.2), 1) * (1 + 0.08 * np.sin(2 * np.pi * 1.3 * t))
    elif kind == "blown":
        env = np.minimum(t / rng.uniform(0.03, 0.07), 1)
    elif kind == "brass":
        env = np.minimum(t / 0.02, 1) * (1 + 0.5 * np.exp(-t / 0.05))
    elif kind == "sung":
        env = np.minimum(t / rng.uniform(0.05, 0.12), 1)
    else:   # organ: on, flat, off
        env = np.minimum(t / 0.005, 1)
    return env.astype(np.float32) * release


def _melody(rng, lo: int, hi: int, chords: bool, seconds: float, bpm: float, root: int, scale) -> list:
    """(start s, duration s, MIDI keys) of a random-walk phrase on the scale within [lo, hi]."""
    keys = [k for k in range(lo, hi + 1) if (k - root) % 12 in scale]
    beat, i, t, notes = 60.0 / bpm, int(rng.integers(len(keys) // 4, 3 * len(keys) // 4)), 0.0, []
    while t < seconds:
        dur = beat * float(rng.choice((0.5, 1.0, 1.0, 1.5, 2.0)))
        i = int(np.clip(i + rng.choice((-3, -2, -1, -1, 0, 1, 1, 2, 3)), 0, len(keys) - 1))
        if rng.random() > 0.08:   # occasional rests
            stack = (0, 2, 4) if chords and rng.random() < 0.4 else (0,)
            notes.append((t, dur * rng.uniform(0.8, 1.0), [keys[min(i + s, len(keys) - 1)] for s in stack]))
        t += dur
    return notes


def _voice(out: np.ndarray, table: np.ndarray, f0: float, start: int, env: np.ndarray, sr: int,
           vibrato: tuple, rng) -> None:
    """Add one note: wavetable playback at f0 (with vibrato) shaped by env, from sample `start`."""
    n = min(len(env), len(out) - start)
    if n <= 0:
        return
    rate, cents = vibrato
    f = np.full(n, f0, np.float64)
    if cents:
        t = np.arange(n) / sr
        f *= 2 ** (cents / 1200 * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)))
    phase = np.cumsum(f * (TABLE / sr)) + rng.uniform(0, TABLE)
    out[start:start + n] += table[phase.astype(np.int64) & (TABLE - 1)] * env[:n]


def _drums(out: np.ndarray, sr: int, bpm: float, rng, level: float) -> None:
    """Noise hi-hats on eighths, a decaying 60 Hz kick on 1 and 3, a noise snare on 2 and 4."""
    eighth = 30.0 / bpm
    hat = np.diff(rng.standard_normal(int(0.04 * sr) + 1)).astype(np.float32)   # high-passed noise
    hat *= np.exp(-np.arange(len(hat)) / (0.008 * sr)).astype(np.float32)
    k = np.arange(int(0.15 * sr)) / sr
    kick = (np.sin(2 * np.pi * 60 * k) * np.exp(-k / 0.05)).astype(np.float32)
    snare = (rng.standard_normal(int(0.1 * sr)) * np.exp(-k[:int(0.1 * sr)] / 0.03)).astype(np.float32)
    for b in range(int(len(out) / sr / eighth) + 1):
        s = round(b * eighth * sr)
        for hit, gain, on in ((hat, 0.3, True), (kick, 1.0, b % 4 == 0), (snare, 0.5, b % 4 == 2)):
            n = min(len(hit), len(out) - s)
            if on and n > 0:
                out[s:s + n] += level * gain * hit[:n]


def render(cls: str, seconds: float, sr: int, rng, drums: bool) -> np.ndarray:
    """One recording of `cls`: float32 mono, peak-normalized to -9 .. -1 dBFS."""
    lo, hi, kind, chords, vibrato, breath = TIMBRES[cls]
    out = np.zeros(round(seconds * sr), np.float32)
    bpm, root, scale = rng.uniform(70, 150), int(rng.integers(12)), SCALES[rng.integers(len(SCALES))]
    jitter = 10 ** (rng.uniform(-4, 4, MAX_HARMONICS) / 20)      # this recording's own spectrum: +-4 dB
    for start, dur, keys in _melody(rng, lo, hi, chords, seconds, bpm, root, scale):
        s, velocity = round(start * sr), rng.uniform(0.5, 1.0)
        for key in keys:
            f0 = 440.0 * 2 ** ((key - 69) / 12)
            env = envelope(kind, round(dur * sr), sr, rng) * (velocity / len(keys) ** 0.5)
            _voice(out, wavetable(harmonics(cls, f0, sr, rng, jitter)), f0, s, env, sr, vibrato, rng)
    level = float(np.abs(out).max()) or 1.0
    if breath:
        out += breath * level * np.diff(rng.standard_normal(len(out) + 1)).astype(np.float32)
    if rng.random() < 0.5:   # a quiet bass line: a near-sine an octave or two below, outside the labels
        bass = np.zeros_like(out)
        table = wavetable(np.array([1.0, 0.3, 0.1]))
        for start, dur, keys in _melody(rng, 28, 48, False, seconds, bpm / 2, root, scale):
            f0 = 440.0 * 2 ** ((keys[0] - 69) / 12)
            _voice(bass, table, f0, round(start * sr), envelope("plucked_long", round(dur * sr), sr, rng), sr,
                   (0.0, 0.0), rng)
        out += rng.uniform(0.15, 0.35) * level * bass
    if drums:
        _drums(out, sr, bpm, rng, rng.uniform(0.1, 0.3) * level)
    out += level * 10 ** (-rng.uniform(30, 50) / 20) * rng.standard_normal(len(out)).astype(np.float32)
    return out * (10 ** (rng.uniform(-9, -1) / 20) / max(float(np.abs(out).max()), 1e-9))


def _recordings(seed: int, n_rec: int) -> list[tuple[str, int, str, bool]]:
    """(class, recording index, file stem, drums) of every recording, in a fixed order."""
    recs = []
    for c, cls in enumerate(CLASSES):
        names = np.random.default_rng([seed, 0, c])    # names per class, apart from the audio draws
        track = int(names.integers(1, 2000))
        for r in range(n_rec):
            rng = np.random.default_rng([seed, 1, c, r])
            genre = "cla" if (cls == "cla" and r == 0) else GENRES[rng.integers(len(GENRES))]
            drums = bool(rng.random() < DRUM_ODDS[genre])
            track += int(names.integers(1, 40))
            stem = f"[{cls}][{genre}]{track:04d}"
            if r % 2:   # alternate the two IRMAS name forms so both always occur
                stem = f"{int(names.integers(1, 250)):03d}__[{cls}][{'dru' if drums else 'nod'}][{genre}]{track:04d}"
            recs.append((cls, r, stem, drums))
    return recs


def _write_chunk(out: str, seed: int, sr: int, seconds: float, chunk: list) -> list[str]:
    """Render and write some recordings (a worker's share); the relative paths written."""
    import soundfile as sf
    clip, written = round(seconds * sr), []
    for cls, r, stem, drums in chunk:
        rng = np.random.default_rng([seed, 2, CLASSES.index(cls), r])
        audio = render(cls, EXCERPTS * seconds, sr, rng, drums)
        pcm = np.round(audio * 32767).astype(np.int16)
        for k in range(EXCERPTS):
            rel = f"{TRAIN_DIR}/{cls}/{stem}__{k + 1}.wav"
            path = Path(out) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, pcm[k * clip:(k + 1) * clip], sr, subtype="PCM_16")
            written.append(rel)
    return written


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def generate(out: Path, *, seed: int = 0, per_class: int = 610, sample_rate: int = 16000,
             seconds: float = 3.0, workers: int | None = None) -> dict:
    """Write the dataset under `out`. `per_class` counts clips per class, rounded up to whole
    recordings of EXCERPTS clips. Returns counts, paths and the seconds taken."""
    if per_class < 2 * EXCERPTS:
        raise ValueError(f"per_class={per_class}: at least {2 * EXCERPTS} (two recordings per class, "
                         "one to train on and one to validate on)")
    if sample_rate < 8000 or seconds <= 0:
        raise ValueError(f"sample_rate={sample_rate}, seconds={seconds}: need >= 8000 Hz and > 0 s")
    start, out = time.perf_counter(), Path(out)
    n_rec = -(-per_class // EXCERPTS)
    recs = _recordings(seed, n_rec)
    workers = max(1, min(workers or usable_cpus(), len(recs)))
    chunks = [recs[i::workers * 4] for i in range(min(workers * 4, len(recs)))]
    if workers == 1:
        parts = [_write_chunk(str(out), seed, sample_rate, seconds, c) for c in chunks]
    else:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver")) as pool:
            parts = list(pool.map(_write_chunk, *zip(*[(str(out), seed, sample_rate, seconds, c) for c in chunks])))
    rel = sorted(p for part in parts for p in part)
    summary = {"out": str(out), "seed": seed, "sample_rate": sample_rate, "seconds": seconds,
               "classes": list(CLASSES), "train_dir": str(out / TRAIN_DIR), "train_recordings": len(recs),
               "train_clips": len(rel), "per_class": n_rec * EXCERPTS, "files": rel}
    publish(out, summary, MANIFEST)
    return {**summary, "workers": workers, "seconds_taken": round(time.perf_counter() - start, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write fast synthetic IRMAS-layout training audio (additive synthesis).")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-class", type=int, default=610, help="clips per class (rounded up to whole recordings of 3)")
    ap.add_argument("--sample-rate", type=int, default=16000)
    ap.add_argument("--seconds", type=float, default=3.0, help="clip length")
    ap.add_argument("--workers", type=int, help="worker processes (default: the usable CPUs)")
    a = ap.parse_args(argv)
    try:
        s = generate(a.out, seed=a.seed, per_class=a.per_class, sample_rate=a.sample_rate, seconds=a.seconds,
                     workers=a.workers)
    except ValueError as e:
        print(f"gridtune.data.synth: {e}", file=sys.stderr)
        return 2
    print(f"synthetic data: {s['train_clips']} clips ({s['train_recordings']} recordings, {len(CLASSES)} classes, "
          f"{s['sample_rate']} Hz) -> {s['out']} in {s['seconds_taken']} s with {s['workers']} workers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
