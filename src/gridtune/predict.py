"""`python -m gridtune.predict MODEL INPUT... [--format csv|jsonl|table] [--out FILE]`: label recordings.

MODEL is a final run directory (a sweep directory with `final/` works too) or a trial directory
(`gridtune.use.trained`). Each INPUT is an audio file, a folder (searched recursively for audio files)
or a glob. Every file is decoded as the training and test data were (any format soundfile reads,
mixed to mono, resampled to `data.sample_rate`, stored as the cache stores samples), cut into
training-length windows `final.window_hop` of a window apart (the last one zero-padded, as short
training clips are) and its window probabilities averaged: the test evaluation's own code
(`gridtune.use.evaluate`), in batches on the device. A class is predicted when its mean probability
reaches the final run's threshold (chosen on validation); a trial has no threshold, so its
prediction is the top-1 class. Rows come out in input order: CSV (default), JSON lines or a table.

Unreadable files are listed on stderr with their reason and skipped. Exit status: 0 when at least
one file was labelled, 1 when none could be read, 2 for a bad model directory or no inputs.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from gridtune.data import audio, cache
from gridtune.use import evaluate
from gridtune.sweepdir import records
from gridtune.use.output import FORMATS, Writer
from gridtune.use.trained import ModelDirError, load

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd",
                  ".caf", ".w64", ".rf64")
FLUSH_WINDOWS = 8      # run the model once this many batches of windows are decoded (files share batches)


def expand(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """(files in order, without repeats; the inputs that matched nothing). A file is taken whatever
    its suffix; folders and globs contribute only files with an audio suffix."""
    found, missing = {}, []
    for arg in inputs:
        p = Path(arg)
        if p.is_file():
            hits = [p]
        elif p.is_dir():
            hits = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
        else:
            hits = sorted(Path(f) for f in glob.glob(arg, recursive=True)
                          if Path(f).is_file() and Path(f).suffix.lower() in AUDIO_SUFFIXES)
        if not hits:
            missing.append(arg)
        for h in hits:
            found.setdefault(h, None)
    return list(found), missing


def decode_threads() -> int:
    """Decoder threads: libsndfile and resample_poly release the GIL; more than 4 only contend."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, usable))


def _decode(path: Path, sample_rate: int):
    try:
        return cache.decode_as_stored(path, sample_rate), None
    except audio.BadAudio as e:
        return None, str(e)
    except OSError as e:          # vanished, unreadable (permissions), a folder named like a file
        return None, f"cannot open ({e.strerror or type(e).__name__})"


def decoded(paths: list[Path], sample_rate: int, threads: int):
    """(path, samples or None, reason or None) in input order, decoded ahead by a bounded thread pool."""
    with ThreadPoolExecutor(threads) as pool:
        todo, queue = iter(paths), deque()
        for p in todo:
            queue.append((p, pool.submit(_decode, p, sample_rate)))
            if len(queue) >= 4 * threads:
                break
        while queue:
            p, fut = queue.popleft()
            nxt = next(todo, None)
            if nxt is not None:
                queue.append((nxt, pool.submit(_decode, nxt, sample_rate)))
            yield (p, *fut.result())


def label(trained, paths: list[Path], *, prob_fn, batch_size: int, threshold: float | None,
          threads: int = 2, on_row=None, on_bad=None, on_file=None) -> None:
    """Call on_row(row) for every readable file and on_bad(path, reason) for the others, in input order.

    A row is {"file", "predicted", "probabilities": {class: p}, "windows", "seconds"}.
    """
    window, hop = evaluate.window_and_hop(trained.cfg)
    sr, classes = trained.sample_rate, trained.classes
    pending, n_pending = [], 0

    def flush():
        nonlocal pending, n_pending
        if not pending:
            return
        offsets = np.concatenate([[0], np.cumsum([len(x) for _, x in pending])])
        probs, _ = evaluate.clip_probabilities(prob_fn, np.concatenate([x for _, x in pending]), offsets,
                                               window, hop, batch_size)
        for (path, x), p in zip(pending, probs):
            chosen = [int(np.argmax(p))] if threshold is None else [c for c in range(len(p)) if p[c] >= threshold]
            on_row({"file": str(path), "predicted": [classes[c] for c in chosen],
                    "probabilities": dict(zip(classes, map(float, p))),
                    "windows": len(evaluate.window_starts(len(x), window, hop)), "seconds": len(x) / sr})
            if on_file:
                on_file()
        pending, n_pending = [], 0

    for path, x, reason in decoded(paths, sr, threads):
        if x is None:
            on_bad(path, reason)
            if on_file:
                on_file()
            continue
        pending.append((path, x))
        n_pending += len(evaluate.window_starts(len(x), window, hop))
        if n_pending >= FLUSH_WINDOWS * batch_size:
            flush()
    flush()


def model_fn(trained, device, amp: str | None = None):
    """The test evaluation's prob_fn for this model, with the autocast and memory format training chose."""
    import torch

    from gridtune.train.loop import precision
    amp_dtype, _, channels_last = precision(trained.cfg.train, device, amp)
    if channels_last:
        trained.model.to(memory_format=torch.channels_last)
    return evaluate.model_prob_fn(trained.model, trained.features, device, amp_dtype, channels_last)


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m gridtune.predict", description=(
        "Predict the instruments in recordings with a final run's model (or a trial's best.pt)."))
    ap.add_argument("model", help="final run directory (DIR/final), sweep directory, or trial directory")
    ap.add_argument("inputs", nargs="+", help="audio files, folders (searched recursively) or globs")
    ap.add_argument("--format", choices=FORMATS, default=None,
                    help="csv (default; jsonl when --out ends in .jsonl), jsonl, or table")
    ap.add_argument("--out", type=Path, help="write the rows to this file (atomically) instead of stdout")
    ap.add_argument("--threshold", type=float, help="override the final run's threshold (also for a trial)")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--batch-size", type=int, help="windows per batch (default: the run's train.eval_batch_size)")
    ap.add_argument("--amp", choices=("auto", "off", "bf16", "fp16"),
                    help="autocast as training resolved it (default: the run's train.amp)")
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="a progress bar on stderr (default: when stderr is a terminal)")
    args = ap.parse_args(argv)
    if args.format is None:
        args.format = "jsonl" if args.out is not None and args.out.suffix == ".jsonl" else "csv"
    if args.batch_size is not None and args.batch_size < 1:
        ap.error(f"--batch-size={args.batch_size}: must be >= 1")
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        ap.error(f"--threshold={args.threshold}: must be in [0, 1]")
    return args


def _note(msg: str) -> None:
    print(f"gridtune.predict: {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from gridtune.train.engine import pick_device
    from gridtune.train.runtime import set_cpu
    try:
        device = pick_device(args.device)
        trained = load(args.model, device)
    except (ModelDirError, RuntimeError) as e:
        _note(f"error: {e}")
        return 2
    paths, missing = expand(args.inputs)
    if not paths:
        _note(f"error: {missing[0]}: no such file or folder, and no audio file matches it")
        return 2
    for arg in missing:
        _note(f"skipped {arg}: no such file or folder, and no audio file matches it")
    cfg = trained.cfg
    set_cpu(cfg)
    threshold = args.threshold if args.threshold is not None else trained.threshold
    prob_fn = model_fn(trained, device, args.amp)
    window, hop = evaluate.window_and_hop(cfg)
    sr = trained.sample_rate
    why = "a trial directory has no threshold" if trained.kind == "trial" else "this final run chose no threshold"
    rule = (f"top-1 class ({why})" if threshold is None else
            f"classes with mean probability >= {threshold:g}" + ("" if args.threshold is not None
                                                                 else " (the final run's, chosen on validation)"))
    _note(f"{trained.kind} model {trained.dir}: {window / sr:g} s windows every {hop / sr:g} s, "
          f"{len(trained.classes)} classes, predicted = {rule}; {len(paths)} files on {device}")
    writer = Writer(args.format, trained.classes, sys.stdout if args.out is None else None)
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    from tqdm import tqdm
    bar = tqdm(total=len(paths), unit="file", file=sys.stderr, disable=not show, dynamic_ncols=True)
    bad = []

    def on_bad(path, reason):
        bad.append(path)
        (bar.write if show else lambda m: print(m, file=sys.stderr))(f"gridtune.predict: skipped {path}: {reason}")

    threads = decode_threads()
    t0 = time.perf_counter()
    with bar:
        label(trained, paths, prob_fn=prob_fn, batch_size=args.batch_size or int(cfg.train.eval_batch_size),
              threshold=threshold, threads=threads, on_row=writer.row, on_bad=on_bad, on_file=bar.update)
    dt = time.perf_counter() - t0
    if args.out is not None and writer.n_rows:
        records.atomic_write_text(args.out, writer.text())
    n = writer.n_rows
    _note(f"labelled {n} of {len(paths)} files ({writer.n_windows} windows) in {dt:.1f} s, "
          f"{n / dt if dt > 0 else 0:.1f} files/s; skipped {len(bad)}" + (f"; wrote {args.out}" if args.out and n else ""))
    return 0 if n else 1


if __name__ == "__main__":
    sys.exit(main())
