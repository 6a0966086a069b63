"""Successive halving's pure parts: rungs, the rung value, decisions from synthetic histories,
the setting checks, the plan, and how the leaderboard orders stopped configs."""
import pytest

from gridtune.halving import policy
from gridtune.sweepdir import records
from gridtune.sweepdir.ledger import read_sweep
from gridtune.report.leaderboard import build


def test_rungs_and_sizes():
    assert policy.Spec(3, 1, 9).rungs == [1, 3, 9]
    assert policy.Spec(3, 2, 15).rungs == [2, 6, 15]
    assert policy.Spec(2, 1, 4).rungs == [1, 2, 4]
    assert policy.Spec(3, 4, 9).rungs == [4, 9]
    assert policy.Spec(3, 1, 9).sizes(18) == [18, 6, 2]
    assert policy.Spec(3, 1, 9).sizes(4) == [4, 2, 1]
    # 18 configs: 18 x 1 + 6 x (3 - 1) + 2 x (9 - 3) epochs, against 18 x 9
    assert policy.Spec(3, 1, 9).epochs_trained(18) == 42
    assert policy.Spec(3, 1, 9).epochs_trained(9, repeats=3) == 3 * (9 + 3 * 2 + 1 * 6)


def test_rung_value_is_the_best_up_to_the_rung_epoch():
    hist = [{"epoch": 1, "val/acc": 0.2, "val/loss": 2.0}, {"epoch": 2, "val/acc": 0.5, "val/loss": 1.5},
            {"epoch": 3, "val/acc": 0.4, "val/loss": 1.7}, {"epoch": 4, "val/acc": 0.9, "val/loss": 0.5}]
    assert policy.rung_value(hist, "val/acc", "max", 3) == 0.5
    assert policy.rung_value(hist, "val/loss", "min", 3) == 1.5
    assert policy.rung_value(hist, "val/acc", "max", 1) == 0.2
    assert policy.rung_value([], "val/acc", "max", 3) is None
    assert policy.rung_value([{"epoch": 1, "val/acc": None}], "val/acc", "max", 1) is None


def _synthetic(curves: dict[str, list[float]]) -> dict[str, list[dict]]:
    return {tid: [{"epoch": e, "val/acc": v} for e, v in enumerate(vals, 1)] for tid, vals in curves.items()}


def test_decide_keeps_the_top_third_with_deterministic_ties():
    hist = _synthetic({"a": [0.1, 0.5], "b": [0.6, 0.2], "c": [0.3, 0.3], "d": [0.6, 0.0],
                       "e": [0.2, 0.25], "f": [0.05, 0.1], "g": [0.6, 0.6]})
    values = {t: policy.rung_value(h, "val/acc", "max", 2) for t, h in hist.items()}
    d = policy.decide({t: f"cfg-{t}" for t in hist}, values, 3, "max")
    # best up to epoch 2: b 0.6, d 0.6, g 0.6 (tie: smallest trial id first), then a 0.5, c, e, f
    assert [g["trial_ids"] for g in d["ranking"]] == [["b"], ["d"], ["g"], ["a"], ["c"], ["e"], ["f"]]
    assert d["keep"] == 3 and d["promoted"] == ["b", "d", "g"] and d["stopped"] == ["a", "c", "e", "f"]
    # the same records in another order give the same decision
    again = policy.decide(dict(reversed(list({t: f"cfg-{t}" for t in hist}.items()))),
                           dict(reversed(list(values.items()))), 3, "max")
    assert again == d


def test_decide_ranks_a_configs_seeds_by_their_mean_and_moves_them_together():
    members = {"x0": "X", "x1": "X", "y0": "Y", "y1": "Y", "z0": "Z", "z1": "Z"}
    values = {"x0": 0.9, "x1": 0.1, "y0": 0.6, "y1": 0.6, "z0": 0.55, "z1": 0.5}
    d = policy.decide(members, values, 2, "max")
    assert [g["config"] for g in d["ranking"]] == ["Y", "Z", "X"]       # means 0.6, 0.525, 0.5
    assert d["ranking"][0]["value"] == pytest.approx(0.6)
    assert d["promoted"] == ["y0", "y1", "z0", "z1"] and d["stopped"] == ["x0", "x1"]


def test_decide_min_mode_and_configs_without_value_rank_last():
    d = policy.decide({"a": "A", "b": "B", "c": "C", "d": "D"}, {"a": 1.2, "b": None, "c": 0.8, "d": 3.0},
                       2, "min")
    assert [g["config"] for g in d["ranking"]] == ["C", "A", "D", "B"]
    assert d["promoted"] == ["a", "c"]


@pytest.mark.parametrize("eta,min_epochs,epochs,objectives,expected", [
    (1, 1, {9}, {"val/acc"}, "hydra.sweeper.halving.eta=1: must be an integer >= 2"),
    (3, 9, {9}, {"val/acc"}, "hydra.sweeper.halving.min_epochs=9: must be an integer >= 1 and < train.epochs (9)"),
    (3, 0, {9}, {"val/acc"}, "hydra.sweeper.halving.min_epochs=0: must be an integer >= 1 and < train.epochs (9)"),
    (3, 1, {5, 9}, {"val/acc"}, "train.epochs=[5, 9]: halving needs one train.epochs for the whole grid"),
    (3, 1, {9}, {"test/f1"}, "objective=test/f1: not recorded per epoch"),
])
def test_check_names_the_bad_setting(eta, min_epochs, epochs, objectives, expected):
    problems = policy.check(eta, min_epochs, epochs, objectives)
    assert len(problems) == 1 and problems[0].startswith(expected)
    assert policy.check(3, 1, {9}, {"val/loss"}) == []


def test_plan_lines_count_epochs_per_rung_and_the_total():
    lines = policy.plan_lines(policy.Spec(3, 1, 9), 18)
    assert lines[:4] == ["  rung 0: 18 config(s) x 1 seed(s) to epoch 1 (+1 epochs each)",
                         "  rung 1: 6 config(s) x 1 seed(s) to epoch 3 (+2 epochs each)",
                         "  rung 2: 2 config(s) x 1 seed(s) to epoch 9 (+6 epochs each)",
                         "  total: 42 trained epochs vs 162 for the full grid (0.26x)"]
    # a first rung at epoch 1 of 9 and no noise margin: both warned about, with their reason
    assert lines[4].startswith("  warning: rung 0 at epoch 1 sits before 0.25 of train.epochs (9), where learning "
                               "curves still cross") and lines[4].endswith("the default min_epochs, 3, is past it")
    assert not any("sits before" in line for line in policy.plan_lines(policy.Spec(3, 3, 9), 18))
    assert any("sits before" in line for line in policy.plan_lines(policy.Spec(3, 3, 15), 18))
    assert lines[5].startswith("  warning: noise=0: configs are stopped on gaps") and len(lines) == 6


def test_plan_lines_with_the_noise_margin_and_its_budget():
    lines = policy.plan_lines(policy.Spec(3, 4, 15, 1.0, 0.5), 18)
    assert lines == ["  rung 0: 18 config(s) x 1 seed(s) to epoch 4 (+4 epochs each)",
                     "  rung 1: 6 config(s) x 1 seed(s) to epoch 12 (+8 epochs each)",
                     "  rung 2: 2 config(s) x 1 seed(s) to epoch 15 (+3 epochs each)",
                     "  total: 126 trained epochs vs 270 for the full grid (0.47x)",
                     "  noise margin 1 SE: configs below the cut by less go on too, up to 135 trained epochs "
                     "(0.50x, budget 0.5)"]
    # rungs at 5 and 15: the plain ladder alone (18 x 5 + 6 x 10 = 150 of 270) is over the budget
    assert policy.plan_lines(policy.Spec(3, 5, 15, 1.0, 0.5), 18)[-1] == \
        "  warning: the plain ladder alone trains 0.56x the full grid's epochs, more than budget 0.5"


def test_first_rung_default_and_the_budget_room():
    assert [policy.first_rung(None, e) for e in (4, 9, 15, 16)] == [1, 3, 4, 4]
    assert policy.first_rung(2, 15) == 2
    spec = policy.Spec(3, 4, 15, 1.0, 0.5)            # rungs 4, 12, 15; the budget is 135 config-epochs of 18
    # at rung 0 (18 x 4 = 72 spent): n configs on to 12 cost 8n, then ceil(n/3) x 3; 72 + 8 x 7 + 3 x 3 = 137 > 135
    assert spec.room([18]) == 6 and policy.Spec(3, 4, 15, 1.0, 0.51).room([18]) == 7
    assert spec.room([18, 6]) == 5                       # 72 + 48 + 5 x 3 = 135
    assert spec.room([18, 8]) == 3                       # 72 + 64 is over already: never fewer than ceil(8/3)
    assert policy.Spec(3, 4, 15, 1.0, 1.0).room([18]) == 18
    assert policy.Spec(3, 1, 9, 1.0, 0.3).room([18, 6]) == 3      # 18 + 12 + 3 x 6 = 48 <= 48.6


def test_decide_rung_caps_what_goes_on_inside_the_noise_by_the_budget():
    from gridtune.halving.noise import Noise
    values = {f"t{i:02d}": 0.5 - 0.005 * i for i in range(18)}       # all inside a 66-clip margin
    members = {t: t.upper() for t in values}
    spec = policy.Spec(3, 4, 15, 1.0, 0.5)
    d = policy.decide_rung(spec, [], members, values, "max", Noise(1.0, 66, True))
    assert d["top"] == 6 and d["keep"] == spec.room([18]) == 6
    spec = policy.Spec(3, 4, 15, 1.0, 0.6)
    d = policy.decide_rung(spec, [], members, values, "max", Noise(1.0, 66, True))
    assert d["keep"] == spec.room([18]) == 9 and d["promoted"] == sorted(values)[:9]
    assert [g["why"] for g in d["ranking"][8:10]] == ["inside the noise", "inside the noise, but over the budget"]
    assert policy.decide_rung(policy.Spec(3, 4, 15, 1.0, 1.0), [], members, values, "max",
                               Noise(1.0, 66, True))["keep"] == 18
    over = d["ranking"][9]
    assert policy.stop_reason(0, over, 18) == (f"stopped at rung 0: rank 10 of 18, {over['gap']:.4f} worse than the cut "
                                                f"{over['cut']:.4f}, noise margin {over['margin']:.4f}, over the budget")


@pytest.mark.parametrize("budget", [0, -0.1, 1.5, float("nan"), "0.5", None])
def test_check_refuses_a_bad_budget(budget):
    assert policy.check(3, 1, {9}, {"val/acc"}, 1.0, budget) == [
        f"hydra.sweeper.halving.budget={budget!r}: must be a number in (0, 1] (a fraction of the full grid's epochs)"]
    assert policy.check(3, None, {9}, {"val/acc"}, 1.0, 1) == []
    assert policy.check(3, None, {1}, {"val/acc"}, 1.0, 0.5) == [
        "train.epochs=1: too few epochs for a ladder (the first rung must come before it)"]


def _trial(sweep, tid, status, value, lr, rung=None, epochs=9, rank=2):
    rec = {"trial_id": tid, "status": status, "params": {"lr": lr, "dropout": 0.5, "seed": 0},
           "metrics": {"val/acc": value, "val/loss": 1.0}, "epochs_run": epochs, "objective": "val/acc",
           "objective_mode": "max"}
    if rung is not None:
        g = {"rank": rank, "value": value}
        rec.update(stop_reason=policy.stop_reason(rung, g, 3), halving=policy.stop_record(rung, 3 ** rung, g, 3))
    records.write_json(sweep / tid / records.RESULT, rec)


def test_leaderboard_ranks_survivors_then_stopped_by_rung(tmp_path):
    from gridtune.report import render
    _trial(tmp_path, "s1", "ok", 0.50, 1e-3)
    _trial(tmp_path, "r0", "stopped", 0.90, 1e-4, rung=0, epochs=1)     # high value, but stopped first
    _trial(tmp_path, "r1a", "stopped", 0.45, 2e-4, rung=1, epochs=3, rank=3)   # same rung: its rank decides
    _trial(tmp_path, "r1b", "stopped", 0.40, 3e-4, rung=1, epochs=3, rank=2)
    _trial(tmp_path, "p", "paused", 0.99, 4e-4, epochs=3)
    board = build(read_sweep(tmp_path), "val/acc", "max")
    assert [g.representative.trial_id for g in board.groups] == ["s1", "r1b", "r1a", "r0"]
    assert board.winner.representative.trial_id == "s1"
    assert [t.trial_id for t in board.not_ranked] == ["p"] and board.not_ranked[0].state == "paused"
    assert render.group_status(board.groups[1]) == "stopped at rung 1 (epoch 3, value 0.4000): rank 2 of 3"
    assert render.group_status(board.groups[0]) == "ok"


def test_no_winner_while_only_stopped_configs_are_ranked(tmp_path):
    _trial(tmp_path, "r0", "stopped", 0.9, 1e-4, rung=0, epochs=1)
    _trial(tmp_path, "p", "paused", 0.5, 1e-3, epochs=1)
    board = build(read_sweep(tmp_path), "val/acc", "max")
    assert board.winner is None and len(board.groups) == 1


@pytest.mark.slow
def test_a_paused_trial_resumes_to_the_metrics_of_an_uninterrupted_run(demo_root, tmp_path):
    """train.stop_after_epoch pauses a trial without changing its id or its schedule."""
    from conftest import compose
    from gridtune.config.identity import trial_id
    from gridtune.train.trial import run_trial
    base = ("preset=debug", "train.epochs=3", "sched=cosine", "train.threads=1", f"data.root={demo_root}")
    whole = run_trial(compose(*base), tmp_path / "whole")
    paused_cfg = compose(*base, "train.stop_after_epoch=1")
    assert trial_id(paused_cfg) == whole["trial_id"]
    paused = run_trial(paused_cfg, tmp_path / "cut", overrides=["lr=1e-3", "++train.stop_after_epoch=1"])
    assert paused["status"] == "paused" and paused["epochs_run"] == 1 and paused["overrides"] == ["lr=1e-3"]
    resumed = run_trial(compose(*base), tmp_path / "cut")
    assert resumed["status"] == "ok" and resumed["epochs_run"] == 3
    assert resumed["metrics"] == whole["metrics"]
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("time_s", "train/seconds", "train/samples_per_s")}
                          for r in rows]
    assert strip(records.read_history(tmp_path / "cut" / records.HISTORY)) == \
        strip(records.read_history(tmp_path / "whole" / records.HISTORY))


def test_leaderboard_status_says_why_a_config_was_stopped(tmp_path):
    from gridtune.halving.noise import Noise
    from gridtune.report import render
    d = policy.decide({"s1": "A", "r0": "B"}, {"s1": 0.5, "r0": 0.2}, 2, "max", Noise(1.0, 66, True))
    g = d["ranking"][1]
    _trial(tmp_path, "s1", "ok", 0.50, 1e-3)
    rec = {"trial_id": "r0", "status": "stopped", "params": {"lr": 1e-4, "dropout": 0.5, "seed": 0},
           "metrics": {"val/acc": 0.2}, "epochs_run": 1, "objective": "val/acc", "objective_mode": "max",
           "stop_reason": policy.stop_reason(0, g, 2), "halving": policy.stop_record(0, 1, g, 2)}
    records.write_json(tmp_path / "r0" / records.RESULT, rec)
    board = build(read_sweep(tmp_path), "val/acc", "max")
    assert render.group_status(board.groups[1]) == (
        f"stopped at rung 0 (epoch 1, value 0.2000): rank 2 of 2, 0.3000 worse than the cut 0.5000, "
        f"noise margin {g['margin']:.4f}")
    assert rec["stop_reason"] == f"stopped at rung 0: rank 2 of 2, 0.3000 worse than the cut 0.5000, noise margin {g['margin']:.4f}"
