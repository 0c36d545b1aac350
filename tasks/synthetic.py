"""Synthetic regression tasks with a controlled correlation (MMoE paper, Ma et al., KDD 2018, §3.2).

Generator, for ``T`` tasks in ``d`` input dimensions:

1. Orthonormal unit vectors ``u_1..u_T`` in ``R^d``: the Q factor of a ``d × T``
   standard Gaussian matrix.
2. Task weight vectors ``w_k = c · Σ_j L[k, j] · u_j``, where ``L`` is the
   (lower-triangular) Cholesky factor of the ``T × T`` task correlation matrix
   ``R``. Then ``cos(w_k, w_l) = R[k, l]``; for two tasks this is the paper's
   ``w1 = c·u1`` and ``w2 = c·(p·u1 + sqrt(1 − p²)·u2)``. Positive
   semi-definite (singular) ``R``, e.g. ``p = 1``, is allowed: a zero pivot gives
   a zero column of ``L``.
3. Inputs ``x ~ N(0, I_d)``.
4. Labels ``y_k = w_kᵀx + Σ_{i=1..m} sin(α_i·w_kᵀx + β_i) + ε``,
   ``ε ~ N(0, noise_std²)``; ``α_i, β_i ~ N(0, 1)`` are drawn once per seed and
   shared by all tasks, as in the paper.

With ``num_sines=0`` and no noise, the Pearson correlation of ``y_k`` and
``y_l`` is exactly ``R[k, l]``; the sine terms make the tasks' relation
non-linear, so the label correlation is then only close to ``R[k, l]``.

Everything (vectors, α, β, inputs, noise) comes from
``np.random.default_rng(seed)`` (one spawned stream per component, so a
sweep over ``correlation`` at one seed shares unit vectors, inputs and noise):
one seed, one data set. The engine passes its
training seed, so every seed of a run sees a fresh draw (as the paper's
repeated runs do).

Features: ``numeric`` only, columns ``x0 .. x{d-1}`` (raw ``x``; mean/std fitted
on the training rows). Tasks ``task1 .. taskT``: regression, MSE.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from mtl_bench.errors import UserInputError
from mtl_bench.spec import SuiteData, Task
from mtl_bench.tasks import _common
from mtl_bench.tasks._common import MAX_DIM, MAX_ROWS
from mtl_bench.validation import check_int, check_number, fail

NAME = "synthetic"
DEFAULTS: dict[str, Any] = {
    "correlation": 0.5,
    "correlation_matrix": None,
    "num_tasks": 2,
    "dim": 100,
    "scale": 1.0,
    "num_sines": 10,
    "noise_std": 0.01,
    "train_rows": 8000,
    "validation_rows": 2000,
    "test_rows": 2000,
}
_PSD_TOL = 1e-8


def load(
    *,
    seed: int = 0,
    correlation: float = 0.5,
    correlation_matrix: Sequence[Sequence[float]] | None = None,
    num_tasks: int = 2,
    dim: int = 100,
    scale: float = 1.0,
    num_sines: int = 10,
    noise_std: float = 0.01,
    train_rows: int = 8000,
    validation_rows: int = 2000,
    test_rows: int = 2000,
) -> SuiteData:
    """Generates the synthetic suite.

    Args:
        seed: Seed of every random draw.
        correlation: Correlation ``p`` of every pair of tasks (cosine of their
            weight vectors), in ``[-1, 1]`` (and ``>= -1/(num_tasks-1)`` so the
            matrix is positive semi-definite).
        correlation_matrix: A full ``T × T`` task correlation matrix (symmetric,
            positive semi-definite, unit diagonal) instead of ``correlation``;
            ``T`` is then its size and ``num_tasks`` must match or be left at 2.
        num_tasks: Number of tasks ``T >= 2``.
        dim: Input dimension ``d >= T``, at most :data:`~mtl_bench.tasks._common.MAX_DIM` (4096).
        scale: ``c``, the norm of every weight vector (> 0).
        num_sines: ``m``, the number of sine terms (>= 0, at most 4096).
        noise_std: Standard deviation of the label noise (>= 0).
        train_rows, validation_rows, test_rows: Rows of each split (> 0, at most
            :data:`~mtl_bench.tasks._common.MAX_ROWS`, 10 000 000).

    Returns:
        The suite; ``variant`` is ``{"correlation": p}`` (or
        ``{"correlation_matrix": "<json>"}``), plus every other parameter that
        differs from its default, so sweeps over them stay distinguishable.

    Raises:
        UserInputError: For any invalid parameter.
    """
    seed = check_int(NAME, "seed", seed, 0)
    num_tasks = check_int(NAME, "num_tasks", num_tasks, 2, MAX_DIM)
    dim = check_int(NAME, "dim", dim, 1, MAX_DIM)
    num_sines = check_int(NAME, "num_sines", num_sines, 0, MAX_DIM)
    rows = {n: check_int(NAME, n, v, 1, MAX_ROWS) for n, v in
            (("train_rows", train_rows), ("validation_rows", validation_rows), ("test_rows", test_rows))}
    scale = check_number(NAME, "scale", scale, 0.0, low_open=True)
    noise_std = check_number(NAME, "noise_std", noise_std, 0.0)

    if correlation_matrix is not None:
        if correlation != DEFAULTS["correlation"]:
            raise UserInputError(
                "give either correlation or correlation_matrix, not both. "
                f"Received: correlation={correlation!r}, correlation_matrix={correlation_matrix!r}"
            )
        matrix = _check_matrix(correlation_matrix)
        if num_tasks not in (DEFAULTS["num_tasks"], len(matrix)):
            raise fail(NAME, "num_tasks", f"the size of correlation_matrix ({len(matrix)})", num_tasks)
        num_tasks = len(matrix)
    else:
        # The matrix with off-diagonal p is positive semi-definite for p >= -1/(T-1).
        lower = max(-1.0, -1.0 / (num_tasks - 1))
        correlation = check_number(f"{NAME} (num_tasks={num_tasks})", "correlation", correlation, lower - _PSD_TOL, 1.0)
        matrix = np.full((num_tasks, num_tasks), correlation)
        np.fill_diagonal(matrix, 1.0)
    if dim < num_tasks:
        raise fail(NAME, "dim", f"an integer >= num_tasks ({num_tasks})", dim)

    weights, alpha, beta, x, noise = _draw(seed, matrix, dim, scale, num_sines, sum(rows.values()))
    projections = x @ weights.T  # (n, T): w_kᵀx
    labels = projections.copy()
    for a, b in zip(alpha, beta):
        labels += np.sin(a * projections + b)
    labels += noise_std * noise

    n_train, n_val = rows["train_rows"], rows["validation_rows"]
    splits = (
        np.arange(0, n_train),
        np.arange(n_train, n_train + n_val),
        np.arange(n_train + n_val, len(x)),
    )
    tasks = tuple(Task(name=f"task{k + 1}", label=f"task{k + 1}", kind="regression") for k in range(num_tasks))

    params = {"correlation": correlation, "correlation_matrix": correlation_matrix, "num_tasks": num_tasks,
              "dim": dim, "scale": scale, "num_sines": num_sines, "noise_std": noise_std, **rows}
    if correlation_matrix is None:
        variant: dict[str, Any] = {"correlation": correlation}
    else:
        variant = {"correlation_matrix": json.dumps(matrix.tolist())}
    for key, value in params.items():
        if key not in ("correlation", "correlation_matrix") and value != DEFAULTS[key]:
            if not (key == "num_tasks" and correlation_matrix is not None):
                variant[key] = value

    return _common.assemble(
        name=NAME,
        variant=variant,
        tasks=tasks,
        labels={t.name: labels[:, k] for k, t in enumerate(tasks)},
        splits=splits,
        numeric={f"x{i}": x[:, i] for i in range(dim)},
    )


def _draw(seed: int, matrix: np.ndarray, dim: int, scale: float, num_sines: int, n: int):
    """All random draws. Each component has its own stream spawned from ``default_rng(seed)``, so
    e.g. changing ``correlation`` or ``num_sines`` keeps the same unit vectors, inputs and noise."""
    rng_vectors, rng_inputs, rng_noise, rng_sines = np.random.default_rng(seed).spawn(4)
    num_tasks = len(matrix)
    q, r = np.linalg.qr(rng_vectors.standard_normal((dim, num_tasks)))
    q = q * np.sign(np.diag(r))[None, :]  # unique QR: the Q of a Gaussian matrix is Haar-distributed
    factor = cholesky_psd(matrix)
    weights = scale * factor @ q.T  # (T, d): row k = c Σ_j L[k, j] u_j
    x = rng_inputs.standard_normal((n, dim))
    noise = rng_noise.standard_normal((n, num_tasks))
    alpha = rng_sines.standard_normal(num_sines)
    beta = rng_sines.standard_normal(num_sines)
    return weights, alpha, beta, x, noise


def cholesky_psd(matrix: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    """Lower-triangular ``L`` with ``L Lᵀ = matrix`` for a positive semi-definite matrix.

    Unlike ``np.linalg.cholesky`` it accepts singular matrices: a (near-)zero pivot
    gives a zero column.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    size = len(matrix)
    factor = np.zeros_like(matrix)
    for j in range(size):
        pivot = matrix[j, j] - factor[j, :j] @ factor[j, :j]
        if pivot < -1e-8:
            raise ValueError("matrix is not positive semi-definite")
        factor[j, j] = np.sqrt(max(pivot, 0.0))
        for i in range(j + 1, size):
            rest = matrix[i, j] - factor[i, :j] @ factor[j, :j]
            factor[i, j] = rest / factor[j, j] if factor[j, j] > tol else 0.0
    return factor


def _check_matrix(value: Any) -> np.ndarray:
    try:
        matrix = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        matrix = None
    if matrix is None or matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 2:
        raise fail(NAME, "correlation_matrix", "a square T × T list of lists with T >= 2", value)
    if not np.isfinite(matrix).all() or np.abs(matrix).max() > 1 + _PSD_TOL:
        raise fail(NAME, "correlation_matrix", "a matrix of finite entries in [-1, 1]", value)
    if not np.allclose(np.diag(matrix), 1.0, atol=1e-9):
        raise fail(NAME, "correlation_matrix", "a matrix with a unit diagonal", value)
    if not np.allclose(matrix, matrix.T, atol=1e-9):
        raise fail(NAME, "correlation_matrix", "symmetric", value)
    if np.linalg.eigvalsh(matrix).min() < -1e-8:
        raise fail(NAME, "correlation_matrix", "positive semi-definite", value)
    return matrix
