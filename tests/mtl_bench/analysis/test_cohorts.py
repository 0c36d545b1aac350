"""The cohort experiment's result in words, against a hand-made per-cohort AUC table."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy import stats

from mtl_bench.analysis import cohorts
from mtl_bench.analysis.summary import format_table

SEEDS = [0, 1, 2]


def _cohorts(seeds=SEEDS) -> pd.DataFrame:
    """Held-out cohort 1 loses 0.02 + 0.01·seed of AUC from day 5 to day 7; control cohort 0 gains 0.05 + 0.01·seed."""
    rows = []
    for seed in seeds:
        for day in (4, 5, 6, 7):
            held = {4: 0.70, 5: 0.70, 6: 0.69, 7: 0.70 - 0.02 - 0.01 * seed}[day]
            control = {4: 0.64, 5: 0.65, 6: 0.66, 7: 0.65 + 0.05 + 0.01 * seed}[day]
            for cohort, auc, heldout in (("0", control, False), ("1", held, day >= 5)):
                rows.append(dict(suite="recsim", holdout_day=5, arch="mmoe", remedy="none", seed=seed, day=day,
                                 sample="uniform", cohort=cohort, heldout=heldout, task="click", auc=auc))
    return pd.DataFrame(rows)


def _t_interval(values: list[float]) -> tuple[float, float, float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def test_lift_change_and_forgetting_with_intervals_over_seeds():
    table = cohorts.half_life_table(_cohorts(), ["holdout_day"]).set_index("role")
    held_changes = [-(0.02 + 0.01 * s) for s in SEEDS]
    control_changes = [0.05 + 0.01 * s for s in SEEDS]
    for role, changes in (("heldout", held_changes), ("control", control_changes)):
        mean, low, high = _t_interval(changes)
        assert table.loc[role, "lift_change"] == pytest.approx(mean)
        assert table.loc[role, "lift_change_ci_low"] == pytest.approx(low)
        assert table.loc[role, "lift_change_ci_high"] == pytest.approx(high)
    mean, low, high = _t_interval([c - h for c, h in zip(control_changes, held_changes)])
    for role in ("heldout", "control"):
        assert table.loc[role, ["forgetting", "forgetting_ci_low", "forgetting_ci_high"]].tolist() == pytest.approx(
            [mean, low, high])
    assert table.loc["heldout", "start_lift"] == pytest.approx(0.20)
    assert table.loc["heldout", "end_lift"] == pytest.approx(0.17)  # mean over seeds of 0.68, 0.67, 0.66 − 0.5
    assert table.loc["heldout", "status"] == "not halved"


def test_the_sentence_states_both_cohorts_the_forgetting_and_its_reading():
    lines = cohorts.half_life_lines(cohorts.half_life_table(_cohorts(), ["holdout_day"])).splitlines()
    assert len(lines) == 1
    line = lines[0]
    held = _t_interval([-(0.02 + 0.01 * s) for s in SEEDS])
    forgetting = _t_interval([0.07 + 0.02 * s for s in SEEDS])
    assert line.startswith("- mmoe, uniform sample: click AUC lift over random, day 5 → 7, 3 seeds")
    assert f"held-out cohort 1 +0.200 → +0.170 (change {held[0]:+.3f} [{held[1]:+.3f}, {held[2]:+.3f}])" in line
    assert "control cohort 0 +0.150 → +0.210 (change +0.060" in line
    assert f"forgetting (control change − held-out change) +0.090 [{forgetting[1]:+.3f}, {forgetting[2]:+.3f}]" in line
    assert "the held-out cohort is forgotten" in line and "did not halve within 2 days" in line
    # Constant columns do not label the line.
    assert "holdout_day" not in line and "recsim" not in line and "none" not in line


def test_no_claim_from_one_seed_and_no_claim_when_the_interval_spans_zero():
    line = cohorts.half_life_lines(cohorts.half_life_table(_cohorts([0]), ["holdout_day"]))
    assert "1 seed:" in line and "One seed: no interval, so no claim; run --seeds 3 or more" in line
    assert "forgotten" not in line
    mixed = _cohorts()
    # Seed 2's held-out cohort gains more than the control: the paired differences 0.07, 0.09, -0.2 span 0.
    mixed.loc[(mixed.seed == 2) & (mixed.day == 7) & (mixed.cohort == "1"), "auc"] = 0.70 + 0.27
    line = cohorts.half_life_lines(cohorts.half_life_table(mixed, ["holdout_day"]))
    assert "no difference the seeds can resolve" in line


def test_summary_text_of_a_run_directory(tmp_path):
    _cohorts().to_csv(tmp_path / "cohort_forgetting.csv", index=False)
    text = cohorts.summary_text(tmp_path, ["holdout_day"])
    assert text.startswith("Cohort experiment: the held-out cohort vs the control")
    assert "the held-out cohort is forgotten" in text
    assert cohorts.summary_text(tmp_path / "missing", []) == ""


def test_format_table_says_constant_columns_once():
    rows = []
    for arch in ("mmoe", "ple"):
        for regime in ("single", "daily"):
            rows.append(dict(suite="recsim", holdout_day=5, arch=arch, regime=regime, remedy="none", order="-",
                             task="click", split="test", metric="auc", mean=0.7, ci_low=0.68, ci_high=0.72,
                             transfer=float("nan")))
    text = format_table(pd.DataFrame(rows), ["holdout_day"])
    first, header, *body = text.splitlines()
    assert first == "every row: holdout_day=5, remedy=none, order=-"
    assert "holdout_day" not in header and "remedy" not in header and "order" not in header
    assert len([line for line in body if "0.7000±0.0200" in line]) == 4
