"""Smoke test of make bench's section g (scripts/bench_fused.py) at tiny sizes; nothing is timed or compared."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import bench  # noqa: E402
import bench_fused  # noqa: E402


def test_section_g_runs_every_arm_and_reports_it(tmp_path):
    sizes = bench.resolve_sizes(bench.parse_args(["--quick"]), "cpu", tmp_path)
    g = bench_fused.section_fused(["preset=debug", "device=cpu"], torch.device("cpu"), sizes, lambda m: None)
    assert [r["arm"] for r in g["rows"]] == ["sequential", "fused B=2", "fused B=4"]
    assert [r["groups"] for r in g["rows"]] == [4, 2, 1] and g["trials"] == 4
    assert all(r["samples_per_s_per_model"] > 0 for r in g["rows"]) and g["rows"][0]["speedup"] == 1.0
    rows = bench_fused.report_rows(g)
    assert len(rows) == 3 and rows[0][4].startswith("baseline")
