"""Dataset layouts: IRMAS names parsed by position, test labels with tabs, grouping, other layouts."""
import numpy as np
import pytest

from gridtune.data import layouts
from gridtune.data.feed import split


def test_irmas_names_parse_by_position():
    a = layouts.parse_train_name("[cla][cla]0189__2.wav")
    assert (a["inst"], a["genre"], a["drums"], a["excerpt"]) == ("cla", "cla", None, "2")
    b = layouts.parse_train_name("008__[cel][nod][cla]0058__1.wav")
    assert (b["prefix"], b["inst"], b["drums"], b["genre"]) == ("008", "cel", "nod", "cla")
    assert layouts.parse_train_name("110__[org][dru][jaz_blu]1117__2.wav")["genre"] == "jaz_blu"
    assert layouts.parse_train_name("not an irmas name.wav") is None
    assert layouts.group_of("008__[cel][nod][cla]0058__1.wav") == "008__[cel][nod][cla]0058"


def test_index_train_on_demo_data(demo_root):
    clips, classes, layout = layouts.index_train(demo_root, "auto", None)
    assert layout == "irmas" and len(classes) == 11 and len(clips) == 66
    assert {c.label for c in clips} == set(range(11))
    assert all(layouts.parse_train_name(c.path.split("/")[-1]) for c in clips)


def test_test_layout_labels(tmp_path):
    part = tmp_path / "IRMAS-TestingData-Part2" / "IRTestingData-Part2"
    part.mkdir(parents=True)
    (part / "(02) dont kill the whale-1.wav").write_bytes(b"x")
    (part / "(02) dont kill the whale-1.txt").write_text("gel\t\nvoi\t\n\n")
    items = layouts.index_test(tmp_path, ["cel", "gel", "voi"])
    assert items == [("IRMAS-TestingData-Part2/IRTestingData-Part2/(02) dont kill the whale-1.wav", [1, 2])]


def test_missing_or_empty_class_is_named(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.wav").write_bytes(b"RIFF")
    (tmp_path / "b").mkdir()
    with pytest.raises(layouts.DataError, match="class 'b' has no readable"):
        layouts.index_train(tmp_path, "folders", None)
    with pytest.raises(layouts.DataError, match="class folder missing for class 'c'"):
        layouts.index_train(tmp_path, "folders", ["a", "c"])
    with pytest.raises(layouts.DataError, match="not a directory"):
        layouts.index_train(tmp_path / "nope", "auto", None)


def test_split_is_grouped_stratified_and_deterministic():
    rng = np.random.default_rng(1)
    labels, groups = [], []
    for c in range(5):
        for rec in range(int(rng.integers(4, 9))):
            for k in range(3):
                labels.append(c)
                groups.append(f"{c}/rec{rec}")
    labels = np.array(labels)
    parts = split(labels, groups, {"val": 0.2, "test": 0.2}, seed=0)
    seen = {}
    for name, idx in parts.items():
        for i in idx:
            assert seen.setdefault(groups[i], name) == name    # no recording on two sides
    assert sorted(np.concatenate(list(parts.values()))) == list(range(len(labels)))
    for c in range(5):
        for name in parts:
            assert (labels[parts[name]] == c).any()             # every class on every side
    again = split(labels, groups, {"val": 0.2, "test": 0.2}, seed=0)
    assert all((again[k] == parts[k]).all() for k in parts)
