"""Child processes of the benchmark; each prints its results as `BENCH {json}` lines.

    bench_child.py overhead PARAMS_JSON SPAWN_TIME   fresh interpreter -> first optimizer step, timestamped
    bench_child.py compile PARAMS_JSON               torch.compile variants (killable when over budget)
    bench_child.py sweep HYDRA_ARGS...               python -m gridtune.sweep, then the decodes it did

The first line runs before any other import, so `overhead` can tell interpreter start-up from imports.
"""
import time

T_FIRST = time.time()

import json  # noqa: E402
import sys  # noqa: E402


def emit(record: dict) -> None:
    print("BENCH " + json.dumps(record), flush=True)


def overhead(params: dict, t_spawn: float) -> None:
    """Stamps of one trial's start: the same TrialRun a trial builds, timed around its stages."""
    stamps = {"spawn": t_spawn, "interpreter": T_FIRST}
    import numpy as np
    import torch

    import gridtune.sweep  # noqa: F401  (the Hydra app module every trial process imports)
    from gridtune.data import feed as data_mod
    from gridtune.train import engine
    from gridtune.train.loop import train_epoch
    stamps["imports"] = time.time()
    from bench_steps import compose, sync
    cfg = compose(params["overrides"])
    stamps["config"] = time.time()
    device = engine.pick_device(cfg.device)

    def timed(fn, start, end, wait=False):
        def wrapper(*a, **k):
            stamps.setdefault(start, time.time())
            out = fn(*a, **k)
            if wait:
                sync(device)
            stamps[end] = time.time()
            return out
        return wrapper

    data_mod.prepare = timed(data_mod.prepare, "prepare_start", "prepare_end")
    data_mod.DeviceData = timed(data_mod.DeviceData, "device_start", "device_end", wait=True)
    engine.TrialRun._build = timed(engine.TrialRun._build, "build_start", "build_end", wait=True)
    batch = int(params["batch"])
    run = engine.TrialRun(cfg, params["out"], batch_size=batch)
    stamps["trialrun"] = time.time()
    idx = np.resize(run.train_idx, batch)          # one batch, repeating clips if the split is smaller
    feed_data, feed_features = getattr(run, "train_data", run.data), getattr(run, "train_features", run.features)
    train_epoch(1, run.step_model, feed_features, run.augment, feed_data, idx, run.optimizer, run.scheduler,
                run.scaler, batch_size=batch, generator=run.gen, amp_dtype=run.amp_dtype, l2=float(cfg.l2),
                class_weights=run.class_weights, grad_clip=float(cfg.train.grad_clip),
                diverge_loss=float(cfg.train.diverge_loss), channels_last=run.channels_last)
    sync(device)
    stamps["first_step"] = time.time()
    emit({"stamps": stamps, "device": str(device), "threads": torch.get_num_threads(),
          "cache_built": run.prepared.entry.built})


def compile_variants(params: dict) -> None:
    import torch

    from bench_steps import compose, measure_variant
    from gridtune.train.runtime import set_cpu
    cfg = compose(params["overrides"])
    set_cpu(cfg)
    device = torch.device(params["device"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    for v in params["variants"]:
        try:
            r = measure_variant(cfg, device, v["dtype"], v["channels_last"], True, batch=params["batch"],
                                size=params["size"], steps=params["steps"], warmup=params["warmup"],
                                rounds=params.get("rounds", 1))
        except Exception as e:   # no compiler, unsupported backend: reported, not fatal
            r = {"error": f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"}
        emit({**v, **r})


def sweep(args: list[str]) -> None:
    import atexit
    import os

    from gridtune.data import cache
    atexit.register(lambda: emit({"decodes": cache.DECODES, "pid": os.getpid()}))
    sys.argv = ["gridtune.sweep", *args]
    from gridtune.sweep import main
    main()


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "overhead":
        overhead(json.loads(sys.argv[2]), float(sys.argv[3]))
    elif mode == "compile":
        compile_variants(json.loads(sys.argv[2]))
    elif mode == "sweep":
        sweep(sys.argv[2:])
    else:
        sys.exit(f"bench_child.py: unknown mode {mode!r} (overhead|compile|sweep)")
