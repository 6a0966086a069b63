"""Decoding one audio file (or mel PNG) into a fixed-rate mono float32 array, or saying why not.

Odd inputs are converted when the conversion is exact enough to trust (8/24-bit and float PCM,
any sample rate, any channel count, any length) and refused with a reason otherwise (empty,
truncated or non-audio files, non-finite samples, silence). Refusals raise `BadAudio`, which the
cache records and reports by file name; nothing here crashes on a bad file.
"""
from __future__ import annotations

from math import gcd
from pathlib import Path

import numpy as np

SILENCE_PEAK = 1e-4      # a clip whose peak is below this (-80 dBFS) carries no signal
MIN_SECONDS = 0.1        # shorter clips are refused; longer ones are cut or zero-padded


class BadAudio(ValueError):
    """A file that cannot be used as audio; the message is the reason (the caller adds the path)."""


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out:
        return x
    from scipy.signal import resample_poly   # polyphase: exact rate change, anti-aliased
    g = gcd(sr_in, sr_out)
    return resample_poly(x, sr_out // g, sr_in // g).astype(np.float32)


def _library_reason(e: Exception, path: Path) -> str:
    """A decoder's own message, first line: the caller names the path, so the library's quoted copy of
    it shrinks to the file name (a deep path would otherwise hide the reason)."""
    return str(e).splitlines()[0].replace(repr(str(path)), repr(path.name))[:120] if str(e) else type(e).__name__


def decode(path: str | Path, sample_rate: int, n_samples: int | None = None) -> np.ndarray:
    """Mono float32 at `sample_rate`; cut or zero-padded to `n_samples` when it is given."""
    import soundfile as sf
    path = Path(path)
    if path.stat().st_size == 0:
        raise BadAudio("empty file (0 bytes)")
    try:
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:   # libsndfile: truncated header, not audio, unsupported format
        raise BadAudio(f"not readable as audio ({_library_reason(e, path)})") from None
    if x.shape[0] < MIN_SECONDS * sr:
        raise BadAudio(f"too short ({x.shape[0] / sr:.3f} s)")
    if not np.isfinite(x).all():
        raise BadAudio("non-finite samples (NaN or inf)")
    x = x.mean(axis=1)                       # any channel count -> mono
    if float(np.abs(x).max()) < SILENCE_PEAK:
        raise BadAudio("silent (peak below -80 dBFS)")
    x = resample(x, int(sr), sample_rate)
    if n_samples is not None:
        x = x[:n_samples] if len(x) >= n_samples else np.pad(x, (0, n_samples - len(x)))
    return np.ascontiguousarray(x, dtype=np.float32)


def decode_png(path: str | Path, height: int, width: int) -> np.ndarray:
    """A mel-spectrogram image as float32 in [0, 1], grey, resized to (height, width)."""
    from PIL import Image, UnidentifiedImageError
    path = Path(path)
    if path.stat().st_size == 0:
        raise BadAudio("empty file (0 bytes)")
    try:
        with Image.open(path) as im:
            im = im.convert("L").resize((width, height), Image.BILINEAR)
            return np.asarray(im, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as e:
        raise BadAudio(f"not readable as an image ({_library_reason(e, path)})") from None
