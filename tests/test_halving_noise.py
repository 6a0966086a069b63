"""Halving's noise margin: the standard errors it is built from, decisions that keep what the val set
cannot tell apart from the cut, the reasons recorded, the setting check, and held-out renders whose
recordings cannot collide with the first render's."""
import math

import pytest

from gridtune.halving import policy
from gridtune.halving.noise import Noise, val_clips


def test_variance_is_binomial_on_the_val_clips_plus_the_seeds_spread():
    one = Noise(1.0, 64, True)
    # Agresti-Coull: p' = (0.5 * 64 + 2) / 68 = 0.5, SE² = 0.25 / 68
    assert one.variance([0.5]) == pytest.approx(0.25 / 68)
    assert one.variance([0.0]) == pytest.approx((2 / 68) * (66 / 68) / 68)    # 0 % still has an interval
    seeds = [0.4, 0.5, 0.6]
    p = (0.5 * 64 + 2) / 68
    assert one.variance(seeds) == pytest.approx(p * (1 - p) / 68 + 0.01 / 3)
    assert Noise(1.0, 64, False).variance(seeds) == pytest.approx(0.01 / 3)     # a loss: only the seeds
    assert Noise(1.0, None, True).variance([0.5]) == 0.0                        # val count not recorded
    assert Noise(2.0, 64, True).margin([0.5], [0.5]) == pytest.approx(2 * math.sqrt(2 * 0.25 / 68))
    assert Noise(0.0, 64, True).margin([0.5], [0.5]) == 0.0


def test_val_clips_come_from_the_records():
    assert val_clips([{"n_val_clips": 66}, {"n_val_clips": 66}, None, {}]) == 66
    assert val_clips([{"n_val_clips": 66}, {"n_val_clips": 60}]) == 60
    assert val_clips([{"n_val_clips": True}, {"n_val_clips": "66"}, {}]) is None
    assert Noise.of(1.0, "val/acc", [{"n_val_clips": 66}]) == Noise(1.0, 66, True)
    assert Noise.of(1.0, "val/loss", [{"n_val_clips": 66}]) == Noise(1.0, 66, False)


VALUES = {"a": 0.50, "b": 0.48, "c": 0.45, "d": 0.40, "e": 0.30, "f": 0.10}


def _plain(values, eta):
    """The plain rule, computed here: top ceil(n/eta) by value, ties to the smaller id."""
    ranked = sorted(values, key=lambda t: (-values[t], t))
    return sorted(ranked[:-(-len(ranked) // eta)])


def test_configs_inside_the_noise_go_on_and_the_rest_stop():
    members = {t: t.upper() for t in VALUES}
    noise = Noise(1.0, 66, True)
    d = policy.decide(members, VALUES, 3, "max", noise)
    cut = VALUES["b"]                                               # top 2 of 6: a, b
    for g in d["ranking"]:
        margin = noise.margin([g["value"]], [cut])
        assert g["cut"] == cut and g["gap"] == pytest.approx(cut - g["value"]) and g["margin"] == pytest.approx(margin)
        assert g["se"] == pytest.approx(math.sqrt(noise.variance([g["value"]])))
        assert g["promoted"] == (g["rank"] <= 2 or cut - g["value"] < margin)
    # 66 clips: the margin at ~0.45 is about 0.12, so c (0.03 below) and d (0.08) go on, e and f stop
    assert d["promoted"] == ["a", "b", "c", "d"] and d["stopped"] == ["e", "f"]
    assert d["top"] == 2 and d["keep"] == 4 and d["noise"] == {"z": 1.0, "n_val": 66, "binomial": True}
    assert [g["why"] for g in d["ranking"]] == ["top 2 of 6"] * 2 + ["inside the noise"] * 2 + \
        ["worse than the cut by more than the noise"] * 2
    # a larger val set resolves smaller gaps: at 400 clips the margin is about 0.035
    assert policy.decide(members, VALUES, 3, "max", Noise(1.0, 400, True))["promoted"] == ["a", "b", "c"]


def test_no_margin_is_the_plain_rule():
    members = {t: t.upper() for t in VALUES}
    for noise in (Noise(), Noise(0.0, 66, True), Noise(1.0, None, True)):
        for eta in (2, 3, 4):
            d = policy.decide(members, VALUES, eta, "max", noise)
            assert d["promoted"] == _plain(VALUES, eta) and d["keep"] == d["top"]
    tie = {"a": 0.5, "b": 0.5, "c": 0.5}
    assert policy.decide({t: t for t in tie}, tie, 3, "max", Noise())["promoted"] == ["a"]   # a tie is not inside


def test_seeds_spread_widens_the_margin_and_min_mode_measures_the_gap_downwards():
    members = {"x0": "X", "x1": "X", "y0": "Y", "y1": "Y"}
    steady = {"x0": 1.0, "x1": 1.0, "y0": 1.2, "y1": 1.2}
    spread = {"x0": 0.8, "x1": 1.2, "y0": 0.9, "y1": 1.5}      # same means, seeds far apart
    assert policy.decide(members, steady, 2, "min", Noise(1.0, 66, False))["stopped"] == ["y0", "y1"]
    d = policy.decide(members, spread, 2, "min", Noise(1.0, 66, False))
    y = d["ranking"][1]
    assert y["gap"] == pytest.approx(0.2) and y["margin"] == pytest.approx(math.sqrt(0.08 / 2 + 0.18 / 2))
    assert d["stopped"] == [] and y["why"] == "inside the noise"


def test_a_config_without_value_stops_with_that_reason():
    d = policy.decide({"a": "A", "b": "B", "c": "C"}, {"a": 0.5, "b": None, "c": 0.49}, 3, "max", Noise(1.0, 66, True))
    assert d["promoted"] == ["a", "c"] and d["ranking"][-1]["why"] == "no value"
    assert policy.stop_reason(0, d["ranking"][-1], 3) == "stopped at rung 0: rank 3 of 3, no value"


def test_the_stop_record_and_reason_say_why():
    d = policy.decide({t: t.upper() for t in VALUES}, VALUES, 3, "max", Noise(1.0, 66, True))
    f = d["ranking"][-1]
    rec = policy.stop_record(1, 3, f, d["n"])
    assert rec == {"rung": 1, "epoch": 3, "value": 0.10, "rank": 6, "of": 6, "cut": 0.48,
                   "gap": pytest.approx(0.38), "margin": pytest.approx(f["margin"])}
    assert policy.stop_reason(1, f, d["n"]) == \
        f"stopped at rung 1: rank 6 of 6, 0.3800 worse than the cut 0.4800, noise margin {f['margin']:.4f}"
    assert policy.why({"rung": 0, "value": 0.1}) == ""         # a record written before the noise rule


@pytest.mark.parametrize("noise", [-0.5, float("inf"), float("nan"), True, "1"])
def test_check_refuses_a_bad_noise(noise):
    problems = policy.check(3, 1, {9}, {"val/acc"}, noise)
    assert problems == [f"hydra.sweeper.halving.noise={noise!r}: must be a number >= 0 (standard errors of a "
                        "difference; 0: the plain top-1/eta rule)"]
    assert policy.check(3, 1, {9}, {"val/acc"}, 0) == [] and policy.check(3, 1, {9}, {"val/acc"}, 2.5) == []


def test_a_track_offset_render_shares_no_recording(tmp_path):
    from gridtune.data.demo import generate, track_span
    from gridtune.data.layouts import TRAIN_RE

    def tracks(root):
        return {(m["inst"], int(m["track"])) for p in (root / "IRMAS-TrainingData").rglob("*.wav")
                if (m := TRAIN_RE.match(p.name))}

    first = generate(tmp_path / "a", seed=0, per_class=6, test_clips=0)
    again = generate(tmp_path / "b", seed=1, per_class=6, test_clips=0)
    held = generate(tmp_path / "c", seed=1, per_class=6, test_clips=0, track_offset=track_span(6))
    a, b, c = tracks(tmp_path / "a"), tracks(tmp_path / "b"), tracks(tmp_path / "c")
    assert len(a) == len(c) == first["train_recordings"] == held["train_recordings"] and held["track_offset"] == track_span(6)
    assert max(t for _, t in a) < track_span(6) <= min(t for _, t in c)
    assert not a & c and {t - track_span(6) for _, t in c} == {t for _, t in b} and again["track_offset"] == 0


def test_the_ladder_figure_caption_counts_promotions_inside_the_noise():
    from gridtune.report.plots.halving import _noise_note
    why = ["top 2 of 6", "top 2 of 6", "inside the noise", "inside the noise, but over the budget"]
    ladder = {"noise": 1.0, "budget": 0.5, "decisions": [{"ranking": [{"why": w} for w in why]}]}
    assert _noise_note(ladder) == (", and so do those less than 1 standard error(s) of the difference below the last "
                                   "of them, while the ladder stays within 0.5 of the full grid's epochs "
                                   "(1 such promotion(s))")
    assert _noise_note({**ladder, "noise": 0}) == "" and _noise_note({"decisions": []}) == ""
