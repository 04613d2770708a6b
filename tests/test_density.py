"""Grid density (bench.report.density): the levels a series spans with no configuration near them."""

from __future__ import annotations

import math

import pandas as pd

from bench.report.density import GAP_COLUMNS, grid_gap_text, grid_gaps


def configs(rows):
    return pd.DataFrame([{"dataset": ds, "backend": "torch", "variant": var, "series": series, "sparsity": x}
                         for ds, var, series, xs in rows for x in xs])


def test_gaps_by_hand():
    df = configs([
        ("d", "bare", "a", [0.97, 0.70, 0.85]),          # 0.8 and 0.9 spanned, nothing near; 0.97 is near 0.95
        ("d", "bare", "b", [0.79, 0.90, 0.93]),          # every level near (0.95: 0.93 is 0.02 away)
        ("d", "bare", "c", [0.5, 0.6]),                  # spans no level: not gaps, out of reach
        ("d", "bare", "e", [0.78, 0.99, math.nan]),      # 0.8 near (|0.78 - 0.8| = 0.02, closed); NaN ignored
        ("d", "helped", "a", [0.7, 0.9]),                # the helped variant is its own group
        ("f", "bare", "a", [0.8, 0.9, 0.95]),            # another dataset, every level hit
    ])
    got = grid_gaps(df)
    assert list(got.columns) == GAP_COLUMNS
    want = [("d", "bare", "a", 0.8, 0.70, 0.85, 3), ("d", "bare", "a", 0.9, 0.85, 0.97, 3),
            ("d", "bare", "e", 0.9, 0.78, 0.99, 2), ("d", "bare", "e", 0.95, 0.78, 0.99, 2),
            ("d", "helped", "a", 0.8, 0.7, 0.9, 2)]
    assert [(r.dataset, r.variant, r.series, r.level, r.below, r.above, r.configurations)
            for r in got.itertuples()] == want
    assert "5 gap(s)" in grid_gap_text(got)


def test_tolerance_and_levels_are_parameters():
    df = configs([("d", "bare", "a", [0.85, 0.97])])
    assert grid_gaps(df).level.tolist() == [0.9]
    assert grid_gaps(df, tol=0.05).empty  # 0.85 and 0.97 are both within 0.05 of 0.9 (0.95: 0.97)
    assert grid_gaps(df, levels=[0.86, 0.96]).level.tolist() == []  # both within 0.02
    empty = grid_gaps(configs([]).reindex(columns=["dataset", "backend", "variant", "series", "sparsity"]))
    assert empty.empty and list(empty.columns) == GAP_COLUMNS
    assert "No such gaps" in grid_gap_text(empty)
