"""GPU check, step 4: how many recordings per second `python -m gridtune.predict` labels on this machine.

    python scripts/gpu_predict.py [--files 100] [--seconds 30] [--preset none|demo|debug] [--json FILE]

Uses `scripts/bench_predict.py`'s parts: an untrained final-run directory of the preset's model
(speed does not depend on the weights; `none` is the default 224-band cnn256) and --files
recordings of --seconds each (44.1 kHz stereo 16-bit WAV, as IRMAS ships). Two figures, both on
the device predict picks (auto: the GPU when there is one):
  loop     predict's own loop in this process (`gridtune.predict.label`: decoding in threads ahead
           of batched inference), model loaded and warmed up on two files first
  command  `python -m gridtune.predict MODEL FOLDER --out rows.csv` end to end, as a user runs it:
           process start, imports and model load included
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))   # bench_predict next to this file

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--preset", default="none", help="none (the default 224-band model), demo or debug")
    ap.add_argument("--json", type=Path, help="write the figures here")
    a = ap.parse_args(argv)
    if a.files < 1 or a.seconds <= 0:
        ap.error(f"--files={a.files} --seconds={a.seconds}: need at least one file of positive length")
    from bench_predict import untrained_final_dir, write_files

    from gridtune import predict
    from gridtune.use import trained
    from gridtune.train.engine import pick_device
    from gridtune.train.runtime import set_cpu
    with tempfile.TemporaryDirectory(prefix="gridtune-gpu-predict-") as tmp:
        tmp = Path(tmp)
        model = untrained_final_dir(tmp / "final", a.preset)
        t0 = time.perf_counter()
        paths = write_files(tmp / "recordings", a.files, a.seconds)
        print(f"{a.files} recordings of {a.seconds:g} s written in {time.perf_counter() - t0:.1f} s", flush=True)
        device = pick_device("auto")
        t = trained.load(model, device)
        set_cpu(t.cfg)
        fn = predict.model_fn(t, device)
        bs, rows = int(t.cfg.train.eval_batch_size), []

        def label(files):
            predict.label(t, files, prob_fn=fn, batch_size=bs, threshold=t.threshold,
                          threads=predict.decode_threads(), on_row=rows.append, on_bad=lambda p, r: None)
        label(paths[:2])                                        # warm-up: kernels, autotuning, imports
        rows.clear()
        t0 = time.perf_counter()
        label(paths)
        loop = time.perf_counter() - t0
        if len(rows) != len(paths):
            print(f"gpu_predict: predict labelled {len(rows)} of {len(paths)} files", file=sys.stderr)
            return 1
        cmd = [sys.executable, "-m", "gridtune.predict", str(model), str(tmp / "recordings"),
               "--out", str(tmp / "rows.csv")]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            print(f"gpu_predict: gridtune.predict exited {proc.returncode}", file=sys.stderr)
            return 1
        n_rows = len((tmp / "rows.csv").read_text().strip().splitlines()) - 1
    if n_rows != a.files:
        print(f"gpu_predict: the command wrote {n_rows} rows for {a.files} files", file=sys.stderr)
        return 1
    figures = {"files": a.files, "seconds_per_file": a.seconds, "preset": a.preset, "device": str(device),
               "loop_s": round(loop, 3), "loop_files_per_s": a.files / loop,
               "command_s": round(wall, 2), "command_files_per_s": a.files / wall}
    print(f"predict on {device}: {figures['loop_files_per_s']:.1f} files/s in its loop, "
          f"{figures['command_files_per_s']:.1f} files/s for the whole command ({wall:.1f} s)", flush=True)
    if a.json:
        a.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
