"""Forgetting in sequential training: accuracy-matrix measures, output drift and shared-weight drift.

Pure functions on numpy arrays and pandas frames. Output drift, the KL between a
task's predictions before and after a phase, is
:func:`mtl_bench.measures.divergence.output_drift` (importable from here too).

Accuracy matrix ``R``: rows are phases in training order, columns are tasks,
``R[k, t]`` is task ``t``'s metric after phase ``k``; ``order[i]`` is the task
trained at phase ``i``. Every measure is *sign-corrected* by the metric's
direction (:data:`~mtl_bench.spec.METRIC_DIRECTIONS`), so that one reading
holds for AUC (higher is better) and logloss / MSE (lower is better).
For task ``t = order[i]`` evaluated after a later phase ``k > i``:

* ``retention``: ``R[k, t] / R[i, t]`` for a higher-is-better metric and
  ``R[i, t] / R[k, t]`` for a lower-is-better one: 1 = kept, < 1 = lost,
  > 1 = improved. NaN when the denominator is 0.
* ``forgetting`` (Chaudhry et al. 2018): the best value the task had since it
  was trained, minus its value now: ``max_{i <= l < k} R[l, t] - R[k, t]``
  (``R[k, t] - min_{i <= l < k} R[l, t]`` when lower is better); positive =
  forgot, in metric units. Phases before ``i`` are left out: the task's head
  was untrained there.
* ``backward_transfer`` (Lopez-Paz & Ranzato 2017): ``R[k, t] - R[i, t]``
  (``R[i, t] - R[k, t]`` when lower is better); negative = forgetting.

Each measure is also averaged over the tasks trained before ``k`` (``task =``
:data:`MEAN_TASK`); at the final phase the mean of ``backward_transfer`` is
Lopez-Paz & Ranzato's BWT and the mean of ``forgetting`` Chaudhry's average
forgetting. Rows are named ``f"{measure}_{metric}"`` (e.g. ``forgetting_auc``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.linalg import subspace_angles

from mtl_bench.measures.divergence import output_drift  # noqa: F401  (its home; the regimes read it here)
from mtl_bench.schema import MEAN_TASK, SPLIT
from mtl_bench.spec import METRIC_DIRECTIONS

SEQUENTIAL_MEASURES: tuple[str, ...] = ("retention", "forgetting", "backward_transfer")
DRIFT_MEASURES: tuple[str, ...] = ("principal_angle", "spectral_change", "unchanged_fraction")


def accuracy_matrix(
    rows: Iterable[Mapping[str, Any]], metric: str, split: str = SPLIT, stage: str = "final"
) -> pd.DataFrame:
    """The matrix R[phase, task] of one metric from tidy ``metrics.csv`` rows.

    Rows need ``phase, stage, task, split, metric, value``; those of ``stage`` and
    ``split`` are kept (the evaluation of the selected weights after each phase).
    """
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        raise ValueError("accuracy_matrix: no rows. Received: []")
    sel = frame[(frame["metric"] == metric) & (frame["split"] == split) & (frame["stage"] == stage)]
    if sel.empty:
        raise ValueError(
            f"accuracy_matrix: no {stage!r} rows for metric={metric!r}, split={split!r}. "
            f"Received metrics {sorted(frame['metric'].unique())}"
        )
    return sel.pivot_table(index="phase", columns="task", values="value", aggfunc="mean").sort_index()


def sequential_measures(matrix: pd.DataFrame, order: Sequence[str], metric: str) -> list[dict[str, Any]]:
    """Retention, forgetting and backward transfer after every phase, as tidy rows.

    Args:
        matrix: R[phase, task]: one row per phase in training order (``len(order)``
            rows, read by position), one column per task.
        order: The task trained at each phase.
        metric: Name of the metric in ``matrix``; its direction comes from
            :data:`~mtl_bench.spec.METRIC_DIRECTIONS`.

    Returns:
        Rows ``{"phase": k, "task", "measure": f"{name}_{metric}", "value"}`` for
        every phase ``k >= 1`` and every task trained at a phase ``i < k``, plus
        the mean over those tasks (``task = MEAN_TASK``).
    """
    if metric not in METRIC_DIRECTIONS:
        raise ValueError(
            f"sequential_measures: metric must be one of {sorted(METRIC_DIRECTIONS)}. "
            f"Received: {metric!r}"
        )
    if not isinstance(matrix, pd.DataFrame):
        raise ValueError(f"sequential_measures: matrix must be a DataFrame. Received: {type(matrix).__name__}")
    order = [str(t) for t in order]
    if len(set(order)) != len(order) or not order:
        raise ValueError(f"sequential_measures: order must name distinct tasks. Received: {order}")
    if len(matrix) != len(order):
        raise ValueError(
            f"sequential_measures: the matrix needs one row per phase ({len(order)}). Received {len(matrix)} rows"
        )
    missing = [t for t in order if t not in matrix.columns]
    if missing:
        raise ValueError(
            f"sequential_measures: the matrix has no column for {missing}. "
            f"Received: {list(matrix.columns)}"
        )
    higher = METRIC_DIRECTIONS[metric]
    r = matrix[order].to_numpy(np.float64)  # column i = task trained at phase i
    rows: list[dict[str, Any]] = []
    for k in range(1, len(order)):
        per_measure: dict[str, list[float]] = {m: [] for m in SEQUENTIAL_MEASURES}
        for i in range(k):
            trained, now, history = r[i, i], r[k, i], r[i:k, i]
            if higher:
                retention = _ratio(now, trained)
                forgetting = np.max(history) - now
                transfer = now - trained
            else:
                retention = _ratio(trained, now)
                forgetting = now - np.min(history)
                transfer = trained - now
            for name, v in zip(SEQUENTIAL_MEASURES, (retention, forgetting, transfer)):
                per_measure[name].append(float(v))
                rows.append({"phase": k, "task": order[i], "measure": f"{name}_{metric}", "value": float(v)})
        for name, values in per_measure.items():
            rows.append({"phase": k, "task": MEAN_TASK, "measure": f"{name}_{metric}", "value": _nanmean(values)})
    return rows


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den != 0 and np.isfinite(den) else float("nan")


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def weight_drift(before: np.ndarray, after: np.ndarray, k: int = 4, tol: float = 1e-3) -> dict[str, float]:
    """How a shared kernel moved during a phase (The Path Not Taken): subspace, spectrum, untouched entries.

    Args:
        before: The kernel before the phase: 2-D ``(in, units)``; 3-D
            ``(experts, in, units)`` (each expert's kernel measured on its own
            and the subspace and spectral measures averaged over experts); 1-D
            (a bias, treated as one ``(n, 1)`` column).
            Computed in float64.
        after: The kernel after the phase, same shape.
        k: Number of leading left singular vectors spanning the compared
            subspaces, capped at the numerical rank of both kernels.
        tol: An entry counts as unchanged when ``|after - before| <= tol * std(before)``
            (``<= tol`` when ``before`` is constant).

    Returns:
        ``principal_angle``: the largest principal angle, in **radians** in
        ``[0, pi/2]``, between the top-``k`` left singular subspaces (NaN for a
        zero kernel); ``spectral_change``: ``|sigma_after - sigma_before| /
        |sigma_before|`` over all singular values (NaN when ``before`` is 0);
        ``unchanged_fraction``: fraction of unchanged entries.
    """
    dtype = np.asarray(before).dtype
    eps = float(np.finfo(dtype if dtype.kind == "f" else np.float64).eps)
    b = np.asarray(before, np.float64)
    a = np.asarray(after, np.float64)
    if b.shape != a.shape or b.size == 0:
        raise ValueError(
            f"weight_drift: before and after need the same non-empty shape. "
            f"Received: {b.shape}, {a.shape}"
        )
    if b.ndim not in (1, 2, 3):
        raise ValueError(f"weight_drift: kernels must be 1-, 2- or 3-D. Received shape {b.shape}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"weight_drift: k must be an int >= 1. Received: k={k!r}")
    if not (np.isfinite(tol) and tol >= 0):
        raise ValueError(f"weight_drift: tol must be a finite number >= 0. Received: tol={tol!r}")
    std = float(np.std(b))
    threshold = tol * std if std > 0 else tol
    unchanged = float(np.mean(np.abs(a - b) <= threshold))
    if b.ndim == 1:
        b, a = b[:, None], a[:, None]
    if b.ndim == 2:
        b, a = b[None], a[None]
    angles, spectral = zip(*(_matrix_drift(be, ae, int(k), eps) for be, ae in zip(b, a)))
    return {
        "principal_angle": _nanmean(angles),
        "spectral_change": _nanmean(spectral),
        "unchanged_fraction": unchanged,
    }


def _matrix_drift(before: np.ndarray, after: np.ndarray, k: int, eps: float) -> tuple[float, float]:
    ub, sb, _ = np.linalg.svd(before, full_matrices=False)
    ua, sa, _ = np.linalg.svd(after, full_matrices=False)
    rank = min(_rank(sb, before.shape, eps), _rank(sa, after.shape, eps), k)
    angle = float(np.max(subspace_angles(ub[:, :rank], ua[:, :rank]))) if rank > 0 else float("nan")
    norm = float(np.linalg.norm(sb))
    spectral = float(np.linalg.norm(sa - sb) / norm) if norm > 0 else float("nan")
    return angle, spectral


def _rank(s: np.ndarray, shape: tuple[int, ...], eps: float) -> int:
    """Numerical rank: singular values above ``s_max * max(shape) * eps`` (numpy's ``matrix_rank`` rule,
    with the machine epsilon of the kernel's own dtype, so a float32 kernel's round-off is not rank)."""
    if s.size == 0 or s[0] == 0:
        return 0
    return int(np.sum(s > s[0] * max(shape) * eps))
