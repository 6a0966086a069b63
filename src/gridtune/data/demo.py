"""Demo and test audio in IRMAS's on-disk layout, rendered from random MIDI with a GM SoundFont.

IRMAS itself cannot be shipped, so this module owns a stand-in with the same layout and naming:

    DIR/IRMAS-TrainingData/<cls>/[cel][cla]0001__1.wav             3 s stereo excerpts, one label
    DIR/IRMAS-TrainingData/<cls>/008__[cel][nod][cla]0058__1.wav   (both IRMAS name forms)
    DIR/IRMAS-TestingData-Part1/Part1/<title>-<n>.wav + .txt       5-10 s, 1-3 labels, "cls\\t" lines
    DIR/.gridtune_demo.json                                        what the last run wrote

Each training "recording" is one rendered piece (predominant instrument, optional quieter bass/pad
and GM drums) cut into EXCERPTS consecutive clips `__1`, `__2`, `__3`, so a train/val split grouped
by recording is meaningful. Notes are played by the sampled instruments of pretty_midi's
TimGM6mb.sf2 through tinysoundfont, offline into a numpy buffer (no audio device). Output is
byte-identical for a given seed; files from an earlier run that this run did not write are removed.

    python -m gridtune.data.demo --out data/demo [--seed 0] [--per-class 24] [--test-clips 12] [--track-offset 0]

A second render meant as held-out data (recordings a sweep on the first never saw) takes another
`--seed` and a `--track-offset` of at least `track_span(per_class)` of the first render, so no track
id (the recording, which the train/val split groups by) occurs in both.

Rendering needs `pip install --no-deps tinysoundfont==0.3.7` (its pyaudio dependency is only for
live playback).
"""
from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf

from gridtune.sweepdir.records import atomic_write_bytes, atomic_write_text

CLASSES = ("cel", "cla", "flu", "gac", "gel", "org", "pia", "sax", "tru", "vio", "voi")
GENRES = ("cou_fol", "cla", "pop_roc", "lat_sou", "jaz_blu")
# class -> (GM programs of the family, lowest key, highest key, plays chords)
INSTRUMENTS = {
    "cel": ((42,), 36, 67, False),
    "cla": ((71,), 50, 84, False),
    "flu": ((73, 72), 60, 93, False),
    "gac": ((24, 25), 40, 76, True),
    "gel": ((26, 27, 28, 29, 30), 40, 79, True),
    "org": ((16, 17, 18, 19), 36, 84, True),
    "pia": ((0, 1, 2), 36, 96, True),
    "sax": ((64, 65, 66, 67), 46, 80, False),
    "tru": ((56, 59), 55, 82, False),
    "vio": ((40, 110), 55, 88, False),
    "voi": ((52, 53), 48, 79, False),
}
# Accompaniment comes from outside the 11 labels (basses, a pad) so the label stays unambiguous.
ACCOMPANIMENT = ((32, 28, 48), (33, 28, 48), (34, 28, 48), (89, 48, 72))
# How often each genre has drums; `cla` (classical) almost never, as in IRMAS.
DRUM_ODDS = {"cou_fol": 0.4, "cla": 0.05, "pop_roc": 0.85, "lat_sou": 0.7, "jaz_blu": 0.6}
SCALES = ((0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10), (0, 2, 3, 5, 7, 9, 10), (0, 3, 5, 7, 10))
TITLES = ("Paper Lanterns", "Slow River Song", "Harbour Lights", "The Glass Orchard", "Cinder Road",
          "Winter Postcard", "Blue Kite", "Marrow and Moss", "Late Tram Home", "Salt in the Wind",
          "Copper Bells", "Quiet Engine")
# Track ids: the first of a class drawn in [1, FIRST_TRACK), each next one 1 to STEP_TRACK - 1 higher.
FIRST_TRACK, STEP_TRACK = 2000, 40
TRAIN_DIR = "IRMAS-TrainingData"
TEST_DIR = "IRMAS-TestingData-Part1/Part1"
MANIFEST = ".gridtune_demo.json"
EXCERPTS = 3      # excerpts per training recording (IRMAS has about three)
LEAD_IN = 0.5     # seconds rendered and dropped, so clips start mid-phrase rather than on silence


class Part(NamedTuple):
    program: int
    notes: list   # (start s, end s, key, velocity)
    pan: int = 64
    volume: int = 100
    drums: bool = False


def soundfont_path() -> Path:
    import pretty_midi
    return Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"


def _melody(rng, lo, hi, chords, end, bpm, root, scale, vel) -> list:
    """A random-walk phrase on the scale within [lo, hi]; chord instruments sometimes play triads."""
    keys = [k for k in range(lo, hi + 1) if (k - root) % 12 in scale]
    beat, i, t, notes = 60.0 / bpm, int(rng.integers(len(keys) // 4, 3 * len(keys) // 4)), 0.0, []
    while t < end:
        dur = beat * rng.choice((0.5, 1.0, 1.0, 1.5, 2.0))
        i = int(np.clip(i + rng.choice((-3, -2, -1, -1, 0, 1, 1, 2, 3)), 0, len(keys) - 1))
        if rng.random() > 0.08:  # occasional rests, as in real phrasing
            stack = (0, 2, 4) if chords and rng.random() < 0.4 else (0,)
            v = int(np.clip(vel + rng.integers(-12, 13), 30, 127))
            off = t + dur * rng.uniform(0.75, 1.0)
            notes += [(t, off, keys[min(i + s, len(keys) - 1)], v) for s in stack]
        t += dur
    return notes


def _drums(rng, end, bpm) -> list:
    """Kick on 1 and 3, snare on 2 and 4, closed hi-hat on eighths (GM drum keys 36, 38, 42)."""
    eighth, notes = 30.0 / bpm, []
    for n in range(int(end / eighth) + 1):
        t, v = n * eighth, int(rng.integers(45, 75))
        notes.append((t, t + 0.1, 42, v - 10))
        if n % 4 == 0 or (n % 8 == 5 and rng.random() < 0.3):
            notes.append((t, t + 0.1, 36, v))
        elif n % 4 == 2:
            notes.append((t, t + 0.1, 38, v))
    return notes


def _render(sf_data: bytes, sr: int, parts: list, seconds: float) -> np.ndarray:
    """Play the parts through a fresh synth (no state carried between pieces) -> float32 (n, 2)."""
    try:
        import tinysoundfont
    except ImportError as e:
        raise ImportError("rendering needs: pip install --no-deps tinysoundfont==0.3.7") from e
    synth = tinysoundfont.Synth(samplerate=sr)
    sfid = synth.sfload(sf_data)
    events = []
    for idx, part in enumerate(parts):
        chan = 9 if part.drums else idx + (idx >= 9)  # channel 10 (index 9) is GM's drum channel
        synth.program_select(chan, sfid, 0, part.program, is_drums=part.drums)
        synth.control_change(chan, 10, part.pan)
        synth.control_change(chan, 7, part.volume)
        for on, off, key, vel in part.notes:
            events += [(round(on * sr), 1, chan, key, vel), (round(off * sr), 0, chan, key, 0)]
    n = round(seconds * sr)
    out, pos = np.zeros((n, 2), np.float32), 0
    for sample, is_on, chan, key, vel in sorted(events) + [(n, -1, 0, 0, 0)]:
        sample = min(sample, n)
        if sample > pos:
            out[pos:sample] = np.frombuffer(synth.generate_simple(sample - pos), np.float32).reshape(-1, 2)
            pos = sample
        if is_on == 1:
            synth.noteon(chan, key, vel)
        elif is_on == 0:
            synth.noteoff(chan, key)
    return out


def _piece(rng, classes, seconds, drums, accompany) -> list:
    """Parts for one piece: the given classes (lead first, equally loud) plus optional backing."""
    bpm, root, scale = rng.uniform(70, 150), int(rng.integers(12)), SCALES[rng.integers(len(SCALES))]
    parts = []
    for cls in classes:
        programs, lo, hi, chords = INSTRUMENTS[cls]
        notes = _melody(rng, lo, hi, chords, seconds, bpm, root, scale, int(rng.integers(70, 111)))
        parts.append(Part(int(rng.choice(programs)), notes, int(rng.integers(34, 95)), 110))
    if accompany:
        program, lo, hi = ACCOMPANIMENT[rng.integers(len(ACCOMPANIMENT))]
        notes = _melody(rng, lo, hi, False, seconds, bpm / 2, root, scale, 55)
        parts.append(Part(program, notes, int(rng.integers(44, 85)), int(rng.integers(50, 75))))
    if drums:
        parts.append(Part(0, _drums(rng, seconds, bpm), 64, int(rng.integers(55, 80)), True))
    return parts


def _wav(audio: np.ndarray, sr: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.round(audio * 32767).astype(np.int16), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _normalize(audio: np.ndarray, rng) -> np.ndarray:
    """Peak-normalize to a random level between -9 and -1 dBFS: mild level variation, no clipping."""
    return audio * (10 ** (rng.uniform(-9, -1) / 20) / max(float(np.abs(audio).max()), 1e-9))


def track_span(per_class: int) -> int:
    """Track ids of a render with track_offset 0 lie in [1, track_span): a render whose
    track_offset is at least this cannot share a track id with it."""
    return FIRST_TRACK + STEP_TRACK * -(-per_class // EXCERPTS)


def generate(out: Path, *, seed: int = 0, per_class: int = 24, test_clips: int = 12,
             sample_rate: int = 44100, seconds: float = 3.0, track_offset: int = 0) -> dict:
    """Write the demo dataset under `out`. `per_class` counts training excerpts per class and is
    rounded up to whole recordings of EXCERPTS clips; `track_offset` is added to every track id.
    Returns counts and paths."""
    start, out, sr = time.perf_counter(), Path(out), int(sample_rate)
    sf_data, written = soundfont_path().read_bytes(), []
    n_rec, clip = -(-per_class // EXCERPTS), round(seconds * sr)
    for c, cls in enumerate(CLASSES):
        names = np.random.default_rng([seed, 0, c])  # names per class, apart from the audio draws
        track = track_offset + int(names.integers(1, FIRST_TRACK))
        for r in range(n_rec):
            rng = np.random.default_rng([seed, 1, c, r])
            genre = "cla" if (cls == "cla" and r == 0) else GENRES[rng.integers(len(GENRES))]
            drums = bool(rng.random() < DRUM_ODDS[genre])
            track += int(names.integers(1, STEP_TRACK))
            stem = f"[{cls}][{genre}]{track:04d}"
            if r % 2:  # alternate the two IRMAS name forms so both always occur
                prefix = int(names.integers(1, 250))
                stem = f"{prefix:03d}__[{cls}][{'dru' if drums else 'nod'}][{genre}]{track:04d}"
            total = LEAD_IN + EXCERPTS * seconds
            parts = _piece(rng, [cls], total, drums, accompany=rng.random() < 0.6)
            audio = _normalize(_render(sf_data, sr, parts, total), rng)
            lead = round(LEAD_IN * sr)
            for k in range(EXCERPTS):
                path = out / TRAIN_DIR / cls / f"{stem}__{k + 1}.wav"
                atomic_write_bytes(path, _wav(audio[lead + k * clip: lead + (k + 1) * clip], sr))
                written.append(path)
    for i in range(test_clips):
        rng = np.random.default_rng([seed, 2, i])
        labels = [CLASSES[j] for j in sorted(rng.choice(len(CLASSES), 1 + i % 3, replace=False))]
        length = round(rng.uniform(5.0, 10.0), 2)
        parts = _piece(rng, list(rng.permutation(labels)), LEAD_IN + length, rng.random() < 0.4, False)
        audio = _normalize(_render(sf_data, sr, parts, LEAD_IN + length), rng)[round(LEAD_IN * sr):]
        title, n, k = TITLES[i % len(TITLES)], i + 1, int(rng.integers(1, 10))
        stem = (f"{n:02d} - {title}-{k}", f"({n:02d}) {title.lower()}-{k}",
                f"{n:02d}. {title} (live)-{k}", f"{n:02d} {title} - Remaster-{k}")[i % 4]
        wav = out / TEST_DIR / f"{stem}.wav"
        atomic_write_bytes(wav, _wav(audio, sr))
        atomic_write_text(wav.with_suffix(".txt"), "".join(f"{lab}\t\n" for lab in labels))
        written += [wav, wav.with_suffix(".txt")]
    rel = sorted(str(p.relative_to(out)) for p in written)
    summary = {"out": str(out), "seed": seed, "sample_rate": sr, "classes": list(CLASSES),
               "train_dir": str(out / TRAIN_DIR), "test_dir": str(out / TEST_DIR),
               "train_recordings": n_rec * len(CLASSES), "train_clips": n_rec * EXCERPTS * len(CLASSES),
               "per_class": n_rec * EXCERPTS, "test_clips": test_clips, "track_offset": track_offset,
               "files": rel}
    publish(out, summary)
    return {**summary, "seconds_taken": round(time.perf_counter() - start, 2)}


def publish(out: Path, summary: dict, manifest: str = MANIFEST) -> None:
    """Write the render's manifest (its `files`, relative to `out`), after removing what an earlier
    render there (another seed or size) wrote and this one did not; nothing else is touched."""
    try:
        stale = set(json.loads((out / manifest).read_text())["files"]) - set(summary["files"])
    except (OSError, ValueError, KeyError, TypeError):
        stale = set()
    for name in stale:
        (out / name).unlink(missing_ok=True)
    atomic_write_text(out / manifest, json.dumps(summary, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Render IRMAS-layout demo audio from a GM SoundFont.")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-class", type=int, default=24, help="training excerpts per class (x3 rounded up)")
    ap.add_argument("--test-clips", type=int, default=12)
    ap.add_argument("--sample-rate", type=int, default=44100)
    ap.add_argument("--track-offset", type=int, default=0,
                    help="added to every track id; a held-out render takes >= the first render's span "
                         "(2000 + 40 x recordings per class) so no recording is in both")
    a = ap.parse_args(argv)
    if a.track_offset < 0:
        ap.error(f"--track-offset={a.track_offset}: must be >= 0")
    s = generate(a.out, seed=a.seed, per_class=a.per_class, test_clips=a.test_clips,
                 sample_rate=a.sample_rate, track_offset=a.track_offset)
    print(f"demo data: {s['train_clips']} train clips ({s['train_recordings']} recordings, "
          f"{len(CLASSES)} classes), {s['test_clips']} test clips -> {s['out']} in {s['seconds_taken']} s")


if __name__ == "__main__":
    main()
