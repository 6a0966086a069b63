"""GPU check, step 1: IRMAS-sized synthetic data and its decoded-audio cache, ready before the sweeps.

    python scripts/gpu_data.py --out DIR [--per-class 610] [--json FILE] [OVERRIDE ...]

Writes the data with `gridtune.data.synth` (seconds on many cores; no SoundFont), then builds the
audio cache that every trial of every sweep on it shares (`gridtune.data.feed.prepare` with the sweeps'
OVERRIDEs), so that neither task11 arm pays the one decode and their wall times compare. Prints one
line and writes the figures as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))   # bench_steps next to this file


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="data root to write")
    ap.add_argument("--per-class", type=int, default=610)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of the sweeps (the cache key follows them)")
    a = ap.parse_args(argv)
    from gridtune.data import synth
    try:
        s = synth.generate(a.out, seed=a.seed, per_class=a.per_class)
    except ValueError as e:
        print(f"gpu_data: {e}", file=sys.stderr)
        return 2
    print(f"synthetic data: {s['train_clips']} clips, {s['train_recordings']} recordings in {s['seconds_taken']} s "
          f"({s['workers']} workers)", flush=True)
    from bench_steps import compose

    from gridtune.data import feed
    t0 = time.perf_counter()
    prepared = feed.prepare(compose([f"data.root={a.out.resolve()}", *a.overrides]))
    cache_s = time.perf_counter() - t0
    n = len(prepared.entry.meta["paths"])
    print(f"audio cache: {n} clips decoded in {cache_s:.1f} s", flush=True)
    figures = {"clips": s["train_clips"], "recordings": s["train_recordings"], "per_class": s["per_class"],
               "sample_rate": s["sample_rate"], "generate_s": s["seconds_taken"], "workers": s["workers"],
               "cache_clips": n, "cache_s": round(cache_s, 2)}
    if a.json:
        a.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
