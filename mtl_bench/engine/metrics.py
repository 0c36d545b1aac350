"""Evaluation metrics, confidence intervals and direction-aware transfer."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score

from mtl_bench.schema import PROB_EPS
from mtl_bench.spec import METRIC_DIRECTIONS, Task



def logloss(y_true: np.ndarray, p: np.ndarray) -> float:
    """Mean binary cross-entropy with probabilities clipped to [1e-7, 1 - 1e-7] (as Keras does)."""
    p = np.clip(np.asarray(p, np.float64).reshape(-1), PROB_EPS, 1 - PROB_EPS)
    y = np.asarray(y_true, np.float64).reshape(-1)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def mse(y_true: np.ndarray, pred: np.ndarray) -> float:
    diff = np.asarray(pred, np.float64).reshape(-1) - np.asarray(y_true, np.float64).reshape(-1)
    return float(np.mean(diff * diff))


def auc(y_true: np.ndarray, p: np.ndarray) -> float:
    """Exact ROC AUC; NaN when the labels hold one class."""
    y = np.asarray(y_true).reshape(-1)
    if y.min() == y.max():
        return float("nan")
    return float(roc_auc_score(y, np.asarray(p, np.float64).reshape(-1)))


METRIC_FUNCTIONS = {"auc": auc, "logloss": logloss, "mse": mse}


def evaluate_task(task: Task, y_true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Every metric of ``task`` (``task.metrics``) on one split."""
    return {name: METRIC_FUNCTIONS[name](y_true, pred) for name in task.metrics}


def task_loss(task: Task, y_true: np.ndarray, pred: np.ndarray) -> float:
    """The task's training loss on a whole split (the early-stopping criterion)."""
    return logloss(y_true, pred) if task.loss == "binary_crossentropy" else mse(y_true, pred)


def mean_ci(
    values: Sequence[float], level: float = 0.95, bounds: tuple[float, float] = (-np.inf, np.inf)
) -> tuple[float, float, float, int]:
    """Mean and Student-t confidence interval over seeds, ignoring NaN.

    Args:
        values: One value per seed.
        level: Coverage of the interval.
        bounds: The values the quantity can take (e.g. ``(0, 1)`` for an AUC); the interval is cut to them,
            so a few seeds never report an AUC above 1 or an MSE below 0.

    Returns:
        ``(mean, ci_low, ci_high, n)``; the interval is NaN when n < 2.
    """
    x = np.asarray([v for v in values if np.isfinite(v)], np.float64)
    n = len(x)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    m = float(x.mean())
    if n < 2:
        return m, float("nan"), float("nan"), n
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * x.std(ddof=1) / np.sqrt(n))
    return m, max(m - half, bounds[0]), min(m + half, bounds[1]), n


def median_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float, int]:
    """Median with the distribution-free order-statistic interval (sign test), ignoring NaN.

    The interval ``[x_(k), x_(n-k+1)]`` uses the largest ``k`` with
    ``P(Binomial(n, 1/2) <= k - 1) <= (1 - level) / 2``, so it covers the median
    with probability at least ``level`` whatever the distribution; NaN when ``n``
    is too small for any ``k`` (fewer than 6 values at 95%).

    Returns:
        ``(median, ci_low, ci_high, n)``.
    """
    x = np.sort(np.asarray([v for v in values if np.isfinite(v)], np.float64))
    n = len(x)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    alpha = (1 - level) / 2
    k = 0
    while k < n // 2 and stats.binom.cdf(k, n, 0.5) <= alpha:
        k += 1
    if k == 0:
        return float(np.median(x)), float("nan"), float("nan"), n
    return float(np.median(x)), float(x[k - 1]), float(x[n - k]), n


def transfer(metric: str, multi: float | np.ndarray, single: float | np.ndarray) -> float | np.ndarray:
    """Direction-aware transfer: positive when the multi-task value is better than single-task.

    Negative transfer is a negative value, whichever direction the metric has.
    """
    diff = np.asarray(multi, np.float64) - np.asarray(single, np.float64)
    return diff if METRIC_DIRECTIONS[metric] else -diff


def relative_transfer(metric: str, multi: float, single: float) -> float:
    """One task's term of Maninis et al.'s Δm, in percent: sign-corrected relative change."""
    return float(100.0 * transfer(metric, multi, single) / abs(single)) if single else float("nan")
