"""Retention measures against hand-computed values and constructed subspaces."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mtl_bench.measures.retention import (
    MEAN_TASK,
    accuracy_matrix,
    sequential_measures,
    weight_drift,
)

ORDER = ["a", "b", "c"]
# R[phase, task]; columns deliberately not in training order.
AUC = pd.DataFrame(
    {"c": [0.52, 0.55, 0.85], "a": [0.80, 0.70, 0.75], "b": [0.50, 0.90, 0.60]}, index=[0, 1, 2]
)
LOGLOSS = pd.DataFrame(
    {"c": [0.69, 0.68, 0.35], "a": [0.40, 0.50, 0.45], "b": [0.70, 0.30, 0.60]}, index=[0, 1, 2]
)


def as_dict(rows):
    return {(r["phase"], r["task"], r["measure"]): r["value"] for r in rows}


def test_sequential_measures_higher_is_better():
    got = as_dict(sequential_measures(AUC, ORDER, "auc"))
    expected = {
        # After phase 1, task a (trained at phase 0: 0.80, now 0.70).
        (1, "a", "retention_auc"): 0.70 / 0.80,
        (1, "a", "forgetting_auc"): 0.80 - 0.70,
        (1, "a", "backward_transfer_auc"): 0.70 - 0.80,
        # After phase 2: a best since trained max(0.80, 0.70) = 0.80, now 0.75.
        (2, "a", "retention_auc"): 0.75 / 0.80,
        (2, "a", "forgetting_auc"): 0.80 - 0.75,
        (2, "a", "backward_transfer_auc"): 0.75 - 0.80,
        # b trained at phase 1 (0.90), now 0.60.
        (2, "b", "retention_auc"): 0.60 / 0.90,
        (2, "b", "forgetting_auc"): 0.90 - 0.60,
        (2, "b", "backward_transfer_auc"): 0.60 - 0.90,
        (2, MEAN_TASK, "retention_auc"): (0.75 / 0.80 + 0.60 / 0.90) / 2,
        (2, MEAN_TASK, "forgetting_auc"): (0.05 + 0.30) / 2,
        (2, MEAN_TASK, "backward_transfer_auc"): (-0.05 - 0.30) / 2,
        (1, MEAN_TASK, "forgetting_auc"): 0.10,
    }
    for key, v in expected.items():
        assert got[key] == pytest.approx(v, abs=1e-12), key
    # The last-trained task has nothing after it; a task is never measured at or before its own phase.
    assert not [k for k in got if k[1] == "c" or (k[1] == "b" and k[0] < 2)]
    assert len(got) == 3 * (1 + 1) + 3 * (2 + 1)


def test_sequential_measures_lower_is_better():
    got = as_dict(sequential_measures(LOGLOSS, ORDER, "logloss"))
    expected = {
        (1, "a", "retention_logloss"): 0.40 / 0.50,
        (1, "a", "forgetting_logloss"): 0.50 - 0.40,
        (1, "a", "backward_transfer_logloss"): 0.40 - 0.50,
        (2, "a", "retention_logloss"): 0.40 / 0.45,
        (2, "a", "forgetting_logloss"): 0.45 - min(0.40, 0.50),
        (2, "a", "backward_transfer_logloss"): 0.40 - 0.45,
        (2, "b", "retention_logloss"): 0.30 / 0.60,
        (2, "b", "forgetting_logloss"): 0.60 - 0.30,
        (2, "b", "backward_transfer_logloss"): 0.30 - 0.60,
    }
    for key, v in expected.items():
        assert got[key] == pytest.approx(v, abs=1e-12), key


def test_no_forgetting_reads_as_kept():
    flat = pd.DataFrame({"a": [0.2, 0.2], "b": [0.9, 0.2]})
    got = as_dict(sequential_measures(flat, ["a", "b"], "mse"))
    assert got[1, "a", "retention_mse"] == 1.0
    assert got[1, "a", "forgetting_mse"] == 0.0
    assert got[1, "a", "backward_transfer_mse"] == 0.0


@pytest.mark.parametrize(
    "matrix, order, metric, match",
    [
        (AUC, ORDER, "accuracy", "metric"),
        (AUC, ["a", "b"], "auc", "one row per phase"),
        (AUC, ["a", "b", "z"], "auc", "no column"),
        (AUC, ["a", "a", "b"], "auc", "distinct"),
    ],
)
def test_sequential_measures_validation(matrix, order, metric, match):
    with pytest.raises(ValueError, match=match):
        sequential_measures(matrix, order, metric)


def test_accuracy_matrix_from_metric_rows():
    rows = [
        {"phase": p, "epoch": 1, "stage": "final", "task": t, "split": "validation", "metric": "auc", "value": v}
        for p in range(3)
        for t, v in AUC.loc[p].items()
    ]
    noise = {"phase": 0, "epoch": 1, "task": "a", "metric": "auc", "value": 0.0}
    rows.append({**noise, "stage": "epoch", "split": "validation"})
    rows.append({**noise, "stage": "final", "split": "test"})
    matrix = accuracy_matrix(rows, "auc")
    pd.testing.assert_frame_equal(matrix[ORDER], AUC[ORDER], check_names=False, check_index_type=False)


def low_rank_kernel(rows: int = 6, cols: int = 5, seed: int = 0):
    """A kernel spanning span(e0, e1) with distinct singular values 3 and 1 (so the subspaces are well defined)."""
    v, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(cols, 2)))
    u = np.eye(rows)[:, :2]
    return u @ np.diag([3.0, 1.0]) @ v.T


def givens(n: int, i: int, j: int, theta: float) -> np.ndarray:
    g = np.eye(n)
    g[i, i] = g[j, j] = math.cos(theta)
    g[i, j], g[j, i] = -math.sin(theta), math.sin(theta)
    return g


def test_weight_drift_identical_kernel():
    w = np.random.default_rng(1).normal(size=(8, 5)).astype(np.float32)
    got = weight_drift(w, w.copy())
    assert got["principal_angle"] == pytest.approx(0.0, abs=1e-6)
    assert got["spectral_change"] == 0.0
    assert got["unchanged_fraction"] == 1.0


def test_weight_drift_rotation_out_of_the_subspace_gives_its_angle():
    before = low_rank_kernel()
    theta = 0.3
    # Rotating e0 towards e5 (outside the span) tilts the column space by theta: principal angles (theta, 0).
    after = givens(6, 0, 5, theta) @ before
    got = weight_drift(before, after)
    assert got["principal_angle"] == pytest.approx(theta, abs=1e-9)
    assert got["spectral_change"] == pytest.approx(0.0, abs=1e-12)  # rotations keep singular values
    assert got["unchanged_fraction"] == pytest.approx(4 / 6)  # only rows 0 and 5 change


def test_weight_drift_rotation_within_the_subspace_keeps_it():
    before = low_rank_kernel()
    after = givens(6, 0, 1, 0.7) @ before  # e0, e1 mixed: same column space
    got = weight_drift(before, after, k=2)
    assert got["principal_angle"] == pytest.approx(0.0, abs=1e-7)
    assert got["spectral_change"] == pytest.approx(0.0, abs=1e-12)


def test_weight_drift_orthogonal_subspace_and_spectrum():
    before = low_rank_kernel()
    after = 2.0 * np.roll(before, 2, axis=0)  # column space span(e2, e3), singular values (6, 2)
    got = weight_drift(before, after, k=4)  # k capped at rank 2
    assert got["principal_angle"] == pytest.approx(math.pi / 2, abs=1e-9)
    assert got["spectral_change"] == pytest.approx(1.0)  # |(6, 2) - (3, 1)| / |(3, 1)|
    # Entries unchanged: rows 4 and 5, zero before and after.
    assert got["unchanged_fraction"] == pytest.approx(2 / 6)


def test_weight_drift_batched_experts_average_and_vectors():
    before = low_rank_kernel()
    stacked_before = np.stack([before, before])
    stacked_after = np.stack([before, np.roll(before, 2, axis=0)])  # expert 0 kept, expert 1 orthogonal
    got = weight_drift(stacked_before, stacked_after)
    assert got["principal_angle"] == pytest.approx(math.pi / 4, abs=1e-9)
    assert got["spectral_change"] == pytest.approx(0.0, abs=1e-12)
    bias = np.array([1.0, 2.0, 0.0])
    assert weight_drift(bias, -bias)["principal_angle"] == pytest.approx(0.0, abs=1e-7)  # same line
    assert weight_drift(bias, np.array([2.0, -1.0, 0.0]))["principal_angle"] == pytest.approx(math.pi / 2)


def test_weight_drift_tolerance_is_relative_to_std():
    before = np.random.default_rng(2).normal(size=(10, 10))
    after = before.copy()
    std = before.std()
    after[0, 0] += 0.5e-3 * std  # within tol * std
    after[0, 1] += 2e-3 * std  # beyond
    assert weight_drift(before, after)["unchanged_fraction"] == pytest.approx(99 / 100)
    with pytest.raises(ValueError, match="shape"):
        weight_drift(before, after[:5])
    with pytest.raises(ValueError, match="k must"):
        weight_drift(before, after, k=0)
