import math

import numpy as np
import pytest

from mtl_bench.engine import metrics


def test_logloss_matches_formula():
    y = np.array([1.0, 0.0, 1.0])
    p = np.array([0.8, 0.3, 0.6])
    expected = -(math.log(0.8) + math.log(0.7) + math.log(0.6)) / 3
    assert metrics.logloss(y, p) == pytest.approx(expected, rel=1e-12)


def test_auc_equals_pairwise_concordance():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    p = np.round(rng.random(200), 2)  # ties on purpose
    pos, neg = p[y == 1], p[y == 0]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert metrics.auc(y, p) == pytest.approx(pairs / (len(pos) * len(neg)), abs=1e-12)


def test_auc_of_one_class_is_nan():
    assert math.isnan(metrics.auc(np.ones(5), np.linspace(0, 1, 5)))


def test_mean_ci_uses_student_t():
    mean, lo, hi, n = metrics.mean_ci([1.0, 3.0])
    # t(0.975, df=1) = 12.7062; sd = sqrt(2); half-width = t * sd / sqrt(2)
    assert (mean, n) == (2.0, 2)
    assert hi - mean == pytest.approx(12.7062, abs=1e-3)
    assert mean - lo == pytest.approx(12.7062, abs=1e-3)


def test_mean_ci_single_value_and_nan():
    mean, lo, hi, n = metrics.mean_ci([0.5, float("nan")])
    assert mean == 0.5 and n == 1 and math.isnan(lo) and math.isnan(hi)


def test_transfer_is_direction_aware():
    assert metrics.transfer("auc", 0.8, 0.7) == pytest.approx(0.1)
    assert metrics.transfer("mse", 0.3, 0.2) == pytest.approx(-0.1)
    assert metrics.transfer("logloss", 0.2, 0.3) == pytest.approx(0.1)
    assert metrics.relative_transfer("mse", 0.3, 0.2) == pytest.approx(-50.0)


def test_median_ci_order_statistics_and_coverage():
    from mtl_bench.engine.metrics import median_ci

    # n = 9: P(Bin(9, 1/2) <= 1) = 10/512 <= 0.025 < P(<= 2) = 46/512, so the interval is [x_(2), x_(8)].
    values = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0]
    assert median_ci(values) == (5.0, 2.0, 8.0, 9)
    med, lo, hi, n = median_ci([1.0, 2.0, 3.0, 4.0, 5.0])  # P(Bin(5, 1/2) <= 0) = 1/32 > 0.025: no interval
    assert med == 3.0 and np.isnan(lo) and np.isnan(hi) and n == 5
    # Coverage of the true median over many samples of a skewed distribution is at least 95%.
    rng = np.random.default_rng(0)
    true_median = np.log(2)  # Exponential(1)
    hits = [lo <= true_median <= hi for lo, hi in (median_ci(rng.exponential(size=12))[1:3] for _ in range(2000))]
    assert np.mean(hits) >= 0.95


def test_mean_ci_is_cut_to_the_metric_range():
    """Two seeds' AUCs 0.99 and 0.50: the t-interval (t_0.975,1 = 12.706) runs past 1; it is cut at 1."""
    mean, lo, hi, n = metrics.mean_ci([0.99, 0.50], bounds=(0.0, 1.0))
    half = 12.706204736174707 * np.std([0.99, 0.50], ddof=1) / np.sqrt(2)
    assert n == 2 and mean == pytest.approx(0.745)
    assert lo == 0.0 and 0.745 - half < 0  # the raw lower end is below 0 too
    assert hi == 1.0
    # Unbounded by default: the raw interval.
    assert metrics.mean_ci([0.99, 0.50])[2] == pytest.approx(0.745 + half)
