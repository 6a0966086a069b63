"""Checks that need the data or the cluster, run by the driver before anything is launched.

`check_data(cfgs)` indexes each distinct data root of the composed trial configs once (no decoding)
and returns one line per problem: class names that do not match the folders, a class with too few
recordings for the grouped train/val(/test) split, an objective that is not a metric a trial
records, a batch size larger than a trial's training split. `inspect_data(cfgs)` does the same and
also returns, per config, what the driver needs next: clip count, training-split size and the
cache key of the data as it is now (`gridtune.data.cache.data_key(cfg)` computes that key for one
config; a trial counts as done only when its result.json records the same key).

`check_slurm(launcher_cfg)` checks a submitit SLURM launcher config (`hydra.launcher`): numeric
fields in range, and the request against the partitions and nodes that `sinfo` reports
(`gridtune.slurm.cluster`). Lines name the key, its value and why. Imports numpy, never torch.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gridtune.data import cache, feed, layouts
from gridtune.slurm import cluster
from gridtune.train import metrics


@dataclass(frozen=True)
class DataFacts:
    n_clips: int        # clips the index lists (before any file is refused by decoding)
    n_train: int        # clips in this config's training split
    cache_key: str      # the audio cache key of the data as it is now (file list, sizes, mtimes, params)


def _root_key(cfg) -> tuple:
    d = cfg.data
    return str(d.root), str(d.layout), tuple(d.classes) if d.classes else None, str(cfg.features.name)


def _class_mismatch(root: Path, layout: str, classes) -> str | None:
    layout = layouts.detect_layout(root) if layout == "auto" else layout
    base = layouts.class_dirs(root, layout)
    if not classes or not base.is_dir():
        return None
    found = layouts.class_folders(base)
    missing = [c for c in classes if c not in found]
    extra = [f for f in found if f not in classes]
    if not missing:       # folders beyond data.classes are allowed: training on a subset of the classes
        return None
    parts = ([f"no folder for {', '.join(missing)}"] if missing else []) + (
        [f"folders not in data.classes: {', '.join(extra)}"] if extra else [])
    return (f"data.classes=[{', '.join(classes)}]: do not match the class folders of {base} ({'; '.join(parts)}); "
            "fix the list, or data.classes=null to use the folders")


def _short_classes(clips, names: list[str], cfg) -> list[str]:
    """A class needs one recording per held-out part plus one for training (data.split's rule)."""
    held = [f"data.val_fraction={cfg.data.val_fraction}"] + (
        [f"data.test_fraction={cfg.data.test_fraction}"] if cfg.data.test_fraction else [])
    need = 1 + len(held)
    groups: dict[int, set] = {}
    counts: dict[int, int] = {}
    for c in clips:
        groups.setdefault(c.label, set()).add(c.group)
        counts[c.label] = counts.get(c.label, 0) + 1
    out = []
    for label, name in enumerate(names):
        n = len(groups.get(label, ()))
        if n < need:
            out.append(f"data.root={cfg.data.root}: class '{name}' has {n} recording{'s' * (n != 1)} "
                       f"({counts.get(label, 0)} clips); the split needs at least {need} per class "
                       f"(1 for training, 1 each for {', '.join(held)}; clips of one recording stay together)")
    return out


def _index(rk: tuple, features: str) -> tuple[tuple | None, str | None]:
    """((clips, class names, layout), None) of one data root, or (None, why it cannot be used)."""
    root, layout, classes, _ = rk
    bad = _class_mismatch(Path(root), layout, classes) if Path(root).is_dir() else None
    try:
        if bad:
            raise layouts.DataError(bad)
        clips, names, layout = layouts.index_train(root, layout, list(classes) if classes else None)
        layouts.check_features(layout, features)
        return (clips, names, layout), None
    except (layouts.DataError, OSError) as e:
        return None, str(e)


def inspect_data(cfgs) -> tuple[list[DataFacts | None], list[tuple[int, str]]]:
    """(facts per config, None where its data is unusable; problems as (index of the first config
    they concern, line)). Each data root is indexed once; each distinct problem is reported once."""
    indexed: dict[tuple, tuple] = {}       # root key -> (clips, names, layout) or None
    derived: dict = {}                     # memo of short classes, split sizes and cache keys
    facts: list[DataFacts | None] = []
    problems: list[tuple[int, str]] = []
    seen: set[str] = set()

    def report(i: int, line: str) -> None:
        if line not in seen:
            seen.add(line)
            problems.append((i, line))

    for i, cfg in enumerate(cfgs):
        if cfg.objective not in metrics.RECORDED:
            report(i, f"objective={cfg.objective}: not a metric a trial records (one of {', '.join(metrics.RECORDED)})")
        rk = _root_key(cfg)
        if rk not in indexed:
            indexed[rk], why = _index(rk, cfg.features.name)
            if why:
                report(i, why)
        if indexed[rk] is None:
            facts.append(None)
            continue
        clips, names, layout = indexed[rk]
        ck = (rk, repr(cfg.data.val_fraction), repr(cfg.data.test_fraction))   # all _short_classes reads
        if ck not in derived:
            derived[ck] = _short_classes(clips, names, cfg)
        short = derived[ck]
        for line in short:
            report(i, line)
        fractions = {"val": float(cfg.data.val_fraction)}
        if cfg.data.test_fraction:
            fractions["test"] = float(cfg.data.test_fraction)
        sk = json.dumps([rk, fractions, int(cfg.data.split_seed)], default=str)
        if sk not in derived:
            labels = [c.label for c in clips]
            derived[sk] = len(feed.split(labels, [c.group for c in clips], fractions, int(cfg.data.split_seed))["train"])
        n_train = derived[sk]
        bs = cfg.train.batch_size
        if not short and isinstance(bs, int) and bs > n_train:
            report(i, f"train.batch_size={bs} > {n_train} training clips (data.root={cfg.data.root}, "
                      f"data.val_fraction={cfg.data.val_fraction}): at most {n_train}")
        kk = json.dumps([rk, cache.train_params(cfg.data, layout, cfg.features)], default=str)
        if kk not in derived:
            try:
                derived[kk] = cache.key_of(cfg, clips, layout)
            except OSError as e:                 # a file vanished between the listing and the stat
                report(i, f"data.root={cfg.data.root}: {e}")
                derived[kk] = None
        facts.append(DataFacts(len(clips), n_train, derived[kk]) if derived[kk] else None)
    return facts, problems


def check_data(cfgs) -> list[str]:
    """One line per data problem of these composed trial configs; empty when they can run."""
    return [line for _, line in inspect_data(list(cfgs))[1]]


def redone_message(stale: list[tuple[str | None, str]]) -> str:
    """'3 trials redone: trained on other data (cache key a… ≠ b…)' for (recorded, current) keys."""
    pairs: dict[tuple, int] = {}
    for old, new in stale:
        pairs[(old, new)] = pairs.get((old, new), 0) + 1
    why = "; ".join(f"{n}× cache key {old or 'none recorded'} ≠ {new}" if len(pairs) > 1
                    else f"cache key {old or 'none recorded'} ≠ {new}" for (old, new), n in pairs.items())
    n = len(stale)
    return f"{n} trial{'s' * (n != 1)} redone: trained on other data ({why})"


# ---- SLURM ------------------------------------------------------------------------------------

# key -> (smallest value, integer only); None is allowed for every one (submitit then omits it)
_RANGES = {"timeout_min": (1, True), "cpus_per_task": (1, True), "gpus_per_node": (0, True),
           "tasks_per_node": (1, True), "nodes": (1, True), "mem_gb": (0, False), "cpus_per_gpu": (1, True),
           "gpus_per_task": (0, True), "array_parallelism": (1, True), "signal_delay_s": (0, True),
           "max_num_timeout": (0, True)}


def is_slurm(launcher_cfg) -> bool:
    return launcher_cfg is not None and "slurm" in str(launcher_cfg.get("_target_", "")).lower()


def _numbers(lc) -> tuple[dict, list[str]]:
    values, problems = {}, []
    for key, (low, integer) in _RANGES.items():
        v = lc.get(key)
        if v is None:
            continue
        number = isinstance(v, int) if integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not number:
            problems.append(f"hydra.launcher.{key}={v!r}: must be {'an integer' if integer else 'a number'}")
        elif v < low or (key == "mem_gb" and v <= 0):
            problems.append(f"hydra.launcher.{key}={v}: must be {'> 0' if key == 'mem_gb' else f'>= {low}'}")
        else:
            values[key] = v
    t, s = values.get("timeout_min"), values.get("signal_delay_s")
    if t is not None and s is not None and s >= t * 60:
        problems.append(f"hydra.launcher.signal_delay_s={s}: must be below the time limit "
                        f"(hydra.launcher.timeout_min={t} is {t * 60} s)")
    return values, problems


def check_slurm(launcher_cfg, nodes: list[cluster.Node] | None = None) -> list[str]:
    """Problems of a submitit SLURM launcher config; `nodes` defaults to one `sinfo` query. Without
    an answering cluster only the numeric checks run (sbatch's own refusal then tells the rest)."""
    if not is_slurm(launcher_cfg):
        return []
    values, problems = _numbers(launcher_cfg)
    nodes = cluster.query() if nodes is None else nodes
    if not nodes:
        return problems
    return problems + cluster.fit(values, launcher_cfg.get("partition"), nodes)
