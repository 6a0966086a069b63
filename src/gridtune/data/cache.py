"""The shared audio cache: every clip decoded and resampled once per dataset, for every trial.

A cache entry is a directory `<cache_dir>/<key>/` holding `waves.npy` (float16, one row per usable
clip, or a flat array plus offsets for variable-length test clips) and `meta.json` (paths, labels,
groups, skipped files with reasons). The key hashes the file list, sizes, mtimes and the audio
parameters, so editing the data makes a new entry instead of a stale one.

Building happens under a file lock, into a temporary directory that is renamed into place, so 18
trials starting together build it exactly once, and a build killed half-way leaves nothing that a
reader could mistake for a cache. Imports no torch: the sweep driver can prepare the cache before
the array fans out.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gridtune.sweepdir import records

from . import audio, layouts
from .layouts import Clip

FORMAT = 3
STORED = np.float16  # the sample type of waves.npy: what every trial trains and is tested on
DECODES = 0          # files decoded by this process (tests and the benchmark count them)


@dataclass
class CacheEntry:
    key: str
    path: Path
    waves: np.ndarray            # (N, L) float16 memmap, or flat float16 for variable-length clips
    offsets: np.ndarray | None   # (N+1,) start offsets into the flat array, variable-length only
    meta: dict                   # paths, labels, groups, skipped, built_by ...
    built: bool                  # True when this call built it

    @property
    def labels(self) -> list:
        return self.meta["labels"]


def cache_key(root: Path, files: list[str], params: dict) -> str:
    h = hashlib.sha1(json.dumps({"format": FORMAT, **params}, sort_keys=True).encode())
    for rel in files:
        st = (root / rel).stat()
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _decode_one(root: Path, rel: str, params: dict) -> np.ndarray:
    global DECODES
    DECODES += 1
    if params["kind"] == "png":
        return audio.decode_png(root / rel, params["height"], params["width"])
    return audio.decode(root / rel, params["sample_rate"], params.get("n_samples"))


def decode_as_stored(path: str | Path, sample_rate: int) -> np.ndarray:
    """One audio file, any length, as a variable-length entry would hold it (no cache is written)."""
    return audio.decode(path, sample_rate).astype(STORED)


def _build(root: Path, items: list[tuple[str, object, str]], params: dict, dest: Path,
           on_bad_file: str) -> None:
    """Decode every file into a temp dir next to `dest`, then rename it into place."""
    tmp = dest.with_name(f".{dest.name}.tmp-{socket.gethostname()}-{os.getpid()}")
    for stale in dest.parent.glob(f".{dest.name}.tmp-*"):   # left by killed builders; we hold the lock
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir(parents=True)
    threads = min(8, os.cpu_count() or 1)   # libsndfile and resample_poly release the GIL
    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(_decode_one, root, rel, params) for rel, _, _ in items]
        arrays, kept, skipped = [], [], []
        for (rel, label, group), fut in zip(items, futures):
            try:
                arrays.append(fut.result())
                kept.append((rel, label, group))
            except audio.BadAudio as e:
                if on_bad_file == "error":
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise audio.BadAudio(f"{root / rel}: {e}") from None
                skipped.append({"path": rel, "reason": str(e)})
    if not arrays:
        shutil.rmtree(tmp, ignore_errors=True)
        raise audio.BadAudio(f"{root}: none of {len(items)} files could be decoded")
    if params.get("variable"):
        lengths = np.array([len(a) for a in arrays])
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        np.save(tmp / "offsets.npy", offsets)
        np.save(tmp / "waves.npy", np.concatenate(arrays).astype(STORED))
    else:
        np.save(tmp / "waves.npy", np.stack(arrays).astype(STORED))
    meta = {"format": FORMAT, "params": params, "paths": [k[0] for k in kept],
            "labels": [k[1] for k in kept], "groups": [k[2] for k in kept], "skipped": skipped,
            "n_files": len(items), "decodes": len(items), "built_by": f"{socket.gethostname()}:{os.getpid()}",
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    records.write_json(tmp / "meta.json", meta)
    shutil.rmtree(dest, ignore_errors=True)     # only a stale partial could be here (we hold the lock)
    os.rename(tmp, dest)                          # atomic publish


def _open(dest: Path, key: str, built: bool) -> CacheEntry:
    meta = records.read_json(dest / "meta.json")
    waves = np.load(dest / "waves.npy", mmap_mode="r")
    offsets = np.load(dest / "offsets.npy") if (dest / "offsets.npy").exists() else None
    return CacheEntry(key, dest, waves, offsets, meta, built)


def _strict(entry: CacheEntry, root: Path, on_bad_file: str) -> CacheEntry:
    """An entry built with on_bad_file=skip must not serve a caller that asked for 'error'."""
    if on_bad_file == "error" and entry.meta["skipped"]:
        bad = entry.meta["skipped"][0]
        raise audio.BadAudio(f"{root / bad['path']}: {bad['reason']}")
    return entry


def is_built(cache_dir: str | Path, key: str) -> bool:
    """Whether the cache entry `key` is complete (load_or_build would open it, not build it)."""
    return (Path(cache_dir) / key / "meta.json").exists()


def load_or_build(root: str | Path, items: list[tuple[str, object, str]], params: dict,
                  cache_dir: str | Path, on_bad_file: str = "skip") -> CacheEntry:
    """Open the cache entry for these files and parameters, building it under a lock if needed.

    `items` are (relative path, label, group); labels may be ints or lists (multi-label).
    """
    from filelock import FileLock
    root, cache_dir = Path(root), Path(cache_dir)
    key = cache_key(root, [i[0] for i in items], params)
    dest = cache_dir / key
    if (dest / "meta.json").exists():
        return _strict(_open(dest, key, built=False), root, on_bad_file)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_dir / f"{key}.lock")):
        if (dest / "meta.json").exists():      # someone else built it while we waited
            return _strict(_open(dest, key, built=False), root, on_bad_file)
        _build(root, items, params, dest, on_bad_file)
    return _open(dest, key, built=True)


def train_params(data_cfg, layout: str, features_cfg) -> dict:
    """Audio parameters that key the training cache (they decide what the decoded arrays hold)."""
    if layout == "png":
        return {"kind": "png", "height": int(features_cfg.n_mels), "width": int(features_cfg.frames)}
    sr = int(data_cfg.sample_rate)
    return {"kind": "audio", "sample_rate": sr, "n_samples": int(round(sr * float(data_cfg.clip_seconds)))}


def clips_as_items(clips: list[Clip]) -> list[tuple[str, int, str]]:
    return [(c.path, c.label, c.group) for c in clips]


def key_of(cfg, clips: list[Clip], layout: str) -> str:
    """The cache key of a trial config's data, given its indexed clips and layout."""
    params = train_params(cfg.data, layout, cfg.features)
    return cache_key(Path(cfg.data.root), [c.path for c in clips], params)


def data_key(cfg) -> str:
    """The cache key `feed.prepare(cfg)` will open, from the index alone. Raises DataError/OSError."""
    clips, _, layout = layouts.index_train(cfg.data.root, cfg.data.layout,
                                           list(cfg.data.classes) if cfg.data.classes else None)
    layouts.check_features(layout, cfg.features.name)
    return key_of(cfg, clips, layout)
