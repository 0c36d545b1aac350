import math

import pandas as pd
import pytest

from mtl_bench.analysis.summary import format_table, summarize


def _rows():
    # Two seeds; task a is binary (auc), task b regression (mse); single-task vs joint MMoE.
    values = {
        ("single_task", "single", 0): {"a": 0.80, "b": 0.20},
        ("single_task", "single", 1): {"a": 0.82, "b": 0.30},
        ("mmoe", "joint", 0): {"a": 0.78, "b": 0.10},
        ("mmoe", "joint", 1): {"a": 0.79, "b": 0.15},
    }
    rows = []
    for (arch, regime, seed), tasks in values.items():
        for task, value in tasks.items():
            metric = "auc" if task == "a" else "mse"
            base = dict(suite="s", correlation=0.5, arch=arch, regime=regime, order="-", seed=seed,
                        phase=0, epoch=3, task=task, split="test", metric=metric)
            rows.append({**base, "stage": "final", "value": value})
            rows.append({**base, "stage": "epoch", "split": "validation", "value": 0.0})  # ignored
    return pd.DataFrame(rows)


def test_means_transfer_and_delta_m():
    s = summarize(_rows(), ["correlation"])
    joint_a = s[(s.arch == "mmoe") & (s.task == "a")].iloc[0]
    assert joint_a["mean"] == pytest.approx(0.785)
    assert joint_a["n"] == 2
    # paired differences (joint - single) for auc: -0.02, -0.03
    assert joint_a["transfer"] == pytest.approx(-0.025)
    half = 12.7062 * math.sqrt(((-0.02 + 0.025) ** 2 + (-0.03 + 0.025) ** 2) / 1) / math.sqrt(2)
    assert joint_a["transfer_ci_high"] - joint_a["transfer"] == pytest.approx(half, rel=1e-4)
    joint_b = s[(s.arch == "mmoe") & (s.task == "b")].iloc[0]
    # mse lower is better: single - joint = 0.10, 0.15
    assert joint_b["transfer"] == pytest.approx(0.125)
    single_a = s[(s.arch == "single_task") & (s.task == "a")].iloc[0]
    assert math.isnan(single_a["transfer"])
    dm = s[(s.metric == "delta_m")].iloc[0]
    seed0 = ((0.78 - 0.80) / 0.80 + (0.20 - 0.10) / 0.20) / 2 * 100
    seed1 = ((0.79 - 0.82) / 0.82 + (0.30 - 0.15) / 0.30) / 2 * 100
    assert dm["mean"] == pytest.approx((seed0 + seed1) / 2)
    assert dm["task"] == "all" and dm["arch"] == "mmoe"


def test_sequential_summary_uses_last_phase():
    rows = _rows()
    seq = rows[(rows.arch == "mmoe") & (rows.stage == "final")].copy()
    seq["regime"], seq["order"] = "sequential", "a>b"
    early = seq.copy()
    early["value"] = 0.0
    early["phase"], seq["phase"] = 0, 1
    s = summarize(pd.concat([rows, seq, early]), ["correlation"])
    got = s[(s.regime == "sequential") & (s.task == "a")].iloc[0]
    assert got["mean"] == pytest.approx(0.785)


def test_format_table_mentions_every_arm():
    text = format_table(summarize(_rows(), ["correlation"]), ["correlation"])
    assert "mmoe" in text and "single_task" in text and "Δm" in text and "-0.0250" in text


def test_intervals_stay_in_the_metric_range():
    """Two seeds: the raw t-intervals of mean MSE (0.10, 0.15) and of the MMoE AUC run past 0 and 1."""
    s = summarize(_rows(), ["correlation"])
    joint_b = s[(s.arch == "mmoe") & (s.task == "b")].iloc[0]
    half = 12.7062 * math.sqrt(((0.10 - 0.125) ** 2 + (0.15 - 0.125) ** 2) / 1) / math.sqrt(2)
    assert 0.125 - half < 0 and joint_b["ci_low"] == 0.0  # an MSE is never negative
    assert joint_b["ci_high"] == pytest.approx(0.125 + half, rel=1e-4)
    for row in s[s.metric == "auc"].itertuples():
        assert 0.0 <= row.ci_low <= row.ci_high <= 1.0
        if row.regime != "single":  # single-task rows have no transfer
            assert -1.0 <= row.transfer_ci_low and row.transfer_ci_high <= 1.0
