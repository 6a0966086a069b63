"""Each knob's facts are declared once (gridtune.config.facts) and read from there by the checks,
trial identity, fusion and the reports: a fact changed there changes what each of them does."""
from __future__ import annotations

import dataclasses

import pytest
from omegaconf import OmegaConf

from conftest import compose
from gridtune.config import checks, facts, identity, schema
from gridtune.train.fused import grouping

# keys that are not fields of gridtune's schema: Hydra's node, the LR range test's free-form knobs,
# and the keys the sweep driver adds for one launch
NOT_IN_SCHEMA = {"hydra", "lr_find", "train.stop_after_epoch", "launcher.chunk", "data.cache_key"}


def _schema_has(key: str) -> bool:
    """Whether some schema declares the key (through the root's fields or any option of a group)."""
    group, _, rest = key.partition(".")
    roots = {f.name: f for f in dataclasses.fields(schema.Config)}
    if group not in roots:
        return False
    if not rest:
        return True
    options = {**schema.GROUP_SCHEMAS.get(group, {}), "launcher": schema.LauncherConf}.values() \
        if group != "launcher" else [schema.LauncherConf]
    if rest == "*":
        return bool(list(options))
    for option in options:
        node, ok = option, True
        for part in rest.split("."):
            fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
            if part not in fields:
                ok = False
                break
            node = fields[part].type if isinstance(fields[part].type, type) else \
                getattr(schema, str(fields[part].type), None)
        if ok:
            return True
    return False


def test_every_fact_is_about_a_key_the_schema_types_or_the_driver_sets():
    strays = [k for k in facts.FACTS if k not in NOT_IN_SCHEMA and not _schema_has(k)]
    assert strays == []
    assert _schema_has("train.early_stop.patience") and not _schema_has("train.no_such_knob")


@pytest.mark.parametrize("key, bad", [(k, v) for k, v in (
    ("lr", 0), ("dropout", 1.0), ("l2", -1), ("train.epochs", 0), ("train.amp", "fp8"), ("device", "tpu"),
    ("data.val_fraction", 1.5), ("launcher.fuse", "maybe"), ("launcher.fuse_max", 0), ("final.window_hop", 2.0),
    ("optim.name", "lion"))])
def test_the_checks_refuse_what_a_fact_says_is_out_of_range(key, bad):
    knob = facts.FACTS[key]
    cfg = compose("preset=debug")
    OmegaConf.update(cfg, key, bad, force_add=True)
    problems = checks.validate(cfg)
    assert any(p.startswith(f"{key}={bad!r}: ") for p in problems), problems
    if knob.ok is not None:
        assert not knob.ok(bad) and knob.why in next(p for p in problems if p.startswith(f"{key}="))


def test_the_checks_follow_the_table(monkeypatch):
    cfg = compose("preset=debug", "dropout=0.9")
    assert checks.validate(cfg) == []
    monkeypatch.setitem(facts.FACTS, "dropout", dataclasses.replace(
        facts.FACTS["dropout"], ok=lambda v: v <= 0.5, why="must be <= 0.5 here"))
    assert checks.validate(cfg) == ["dropout=0.9: must be <= 0.5 here"]


def test_fusion_follows_the_table(monkeypatch):
    base, other = compose("preset=debug", "optim=sgd"), compose("preset=debug", "optim=sgd", "optim.momentum=0.5")
    assert grouping.fuse_key(base) == grouping.fuse_key(other)
    monkeypatch.setitem(facts.FACTS, "optim.momentum", facts.Knob())
    assert grouping.fuse_key(base) != grouping.fuse_key(other)
    cos = [compose("preset=debug", "sched=cosine", f"sched.min_lr_factor={f}") for f in (0.0, 0.1)]
    assert grouping.fuse_key(cos[0]) == grouping.fuse_key(cos[1])          # sched.*: a schedule's parameters
    assert grouping.fuse_key(cos[0]) != grouping.fuse_key(compose("preset=debug", "sched=constant"))


def test_identity_and_fusability_are_read_from_one_entry():
    assert facts.identity_of("launcher.fuse") == "output" and facts.identity_of("lr") is None
    assert facts.identity_of("train.threads") == "hint" and facts.identity_of("data.cache_key") == "driver"
    assert facts.fuses("sched.gamma") and not facts.fuses("sched.name") and not facts.fuses("optim.betas")
    assert set(identity.NON_SEMANTIC_TOP) == {k for k, f in facts.FACTS.items() if f.identity and "." not in k}


def test_titles_come_from_the_table():
    assert [facts.title(k) for k in ("lr", "optim.lr_conv", "batch_size", "train.epochs", "optim.weight_decay",
                                     "train.eval_batch_size")] == \
        ["LR", "LR conv", "Batch", "Max epochs", "Weight decay", "Eval batch size"]
