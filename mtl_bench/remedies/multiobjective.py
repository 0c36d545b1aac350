"""Gradient-aggregation methods that read the tasks' Gram matrix: MGDA, IMTL-G, Nash-MTL, Aligned-MTL, DB-MTL.

Each is a :class:`~mtl_bench.remedies.combination.LossCombination` with
``needs_gram``: the shared variables' update is ``d = sum_k a_k g_k``, ``a`` a function
of the Gram matrix ``G`` of the per-task gradients (as for PCGrad), so the probe
measures the update each method applies. Like the other gradient methods they act on
the gradients of the static-weighted losses ``w_k L_k``; task-specific variables get
the gradient of :meth:`objective` (the weighted sum; DB-MTL: its log losses).

* :class:`MGDA`: Sener & Koltun 2018, the min-norm point of the gradients' convex hull.
* :class:`IMTLG`: Liu et al. 2021, the update with equal projections on every task's direction.
* :class:`NashMTL`: Navon et al. 2022, the Nash bargaining solution ``G a = 1 / a``.
* :class:`AlignedMTL`: Senushkin et al. 2023, gradients aligned to condition number 1.
* :class:`DBMTL`: Lin et al. 2023, log losses with gradients rescaled to the largest norm.

MGDA-UB (the upper bound on the shared representation's gradients) is not
offered: MMoE and PLE mix experts per task, so there is no one shared
representation whose gradient the bound would use.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from mtl_bench.remedies.combination import LossCombination, _weighted
from mtl_bench.spec import Task
from mtl_bench.validation import check_number

EPS = 1e-8


def min_norm_weights(gram: np.ndarray) -> np.ndarray:
    """``argmin_{a in simplex} a^T G a``, exactly: the best KKT point over the simplex's faces.

    On each face ``S`` the minimiser solves ``G_SS a = mu 1``, ``1^T a = 1``; the
    feasible (``a >= 0``) solution of least value over all faces is the minimum.
    ``2^T - 1`` small solves, exact where Frank-Wolfe (the paper's solver) is approximate.
    """
    gram = np.asarray(gram, np.float64)
    t = len(gram)
    best, best_value = np.full(t, 1.0 / t), np.inf
    for size in range(1, t + 1):
        for face in itertools.combinations(range(t), size):
            idx = list(face)
            kkt = np.zeros((size + 1, size + 1))
            kkt[:size, :size] = gram[np.ix_(idx, idx)]
            kkt[:size, size] = kkt[size, :size] = 1.0
            rhs = np.zeros(size + 1)
            rhs[size] = 1.0
            sol = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
            if np.abs(kkt @ sol - rhs).max() > 1e-6 or sol[:size].min() < -1e-9:
                continue
            a = np.zeros(t)
            a[idx] = np.clip(sol[:size], 0.0, None)
            a /= a.sum()
            value = a @ gram @ a
            if not np.isfinite(best_value) or value < best_value - 1e-12 * max(1.0, abs(best_value)):
                best, best_value = a, value
    return best.astype(np.float32)


class MGDA(LossCombination):
    """Multiple-gradient descent (Sener & Koltun 2018, "Multi-task learning as multi-objective optimization").

    ``a = argmin_{a in simplex} |sum_k a_k w_k g_k|^2`` (no gradient normalisation, the
    LibMTL default), solved exactly by :func:`min_norm_weights`. The update ``d`` is the
    min-norm point, so ``<d, w_k g_k> >= |d|^2`` for every task: no task's loss rises to
    first order, and ``d = 0`` at a Pareto-stationary point.
    """

    name = "mgda"
    needs_gram = True
    jit_compatible = False  # the solver runs in numpy

    def coefficients(self, gram: tf.Tensor, step: tf.Tensor, *, update: bool = True, losses: tf.Tensor | None = None) -> tf.Tensor:
        g = _weighted(tf.cast(gram, tf.float32), self.weights)
        a = tf.numpy_function(min_norm_weights, [g], tf.float32, stateful=False)
        return tf.reshape(a, [self.num_tasks]) * self.weights


class IMTLG(LossCombination):
    """Impartial MTL, gradient balance (Liu et al. 2021, ICLR, "Towards impartial multi-task learning").

    With ``u_k = g_k / |g_k|``, ``D`` the rows ``g_1 - g_k`` and ``U`` the rows
    ``u_1 - u_k`` (``k = 2..T``): ``a_{2:T} = g_1 U^T (D U^T)^{-1}``,
    ``a_1 = 1 - sum a_{2:T}``. The update ``d = sum_k a_k g_k`` has the same projection
    ``<d, u_k>`` on every task's direction. IMTL-L (its loss-scale half) is not included.
    """

    name = "imtl"
    needs_gram = True

    def coefficients(self, gram: tf.Tensor, step: tf.Tensor, *, update: bool = True, losses: tf.Tensor | None = None) -> tf.Tensor:
        g = _weighted(tf.cast(gram, tf.float32), self.weights)
        norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(g), 0.0))
        gu = g / tf.maximum(norms, EPS)[None, :]  # gu[i, j] = <g_i, u_j>
        gu_first = gu[0:1, 0:1] - gu[0:1, 1:]  # <g_1, u_1 - u_j>, (1, T-1)
        du = gu_first - (gu[1:, 0:1] - gu[1:, 1:])  # <g_1 - g_i, u_1 - u_j>, (T-1, T-1)
        rest = tf.matmul(gu_first, tf.linalg.pinv(du))[0]
        a = tf.concat([[1.0 - tf.reduce_sum(rest)], rest], 0)
        return a * self.weights


def nash_weights(gram: np.ndarray, iterations: int = 100) -> np.ndarray:
    """The ``a > 0`` with ``a_k (G a)_k = 1`` for every ``k`` (Nash bargaining), by Newton's method.

    It is the minimiser of the convex ``a^T G a / 2 - sum_k log a_k`` (gradient
    ``G a - 1 / a``). A tiny ridge keeps the problem bounded when ``G`` is singular.
    """
    gram = np.asarray(gram, np.float64)
    t = len(gram)
    gram = gram + 1e-9 * max(np.trace(gram) / t, EPS) * np.eye(t)
    a = 1.0 / np.sqrt(np.maximum(np.diag(gram), EPS))

    def value(x: np.ndarray) -> float:
        return 0.5 * x @ gram @ x - np.log(x).sum()

    for _ in range(iterations):
        grad = gram @ a - 1.0 / a
        if np.abs(grad * a).max() < 1e-10:
            break
        step = np.linalg.solve(gram + np.diag(1.0 / a**2), grad)
        size = 1.0
        while np.any(a - size * step <= 0) or value(a - size * step) > value(a) - 1e-4 * size * grad @ step:
            size /= 2
            if size < 1e-12:
                break
        a = a - size * step
    return a.astype(np.float32)


class NashMTL(LossCombination):
    """Nash-MTL (Navon et al. 2022, ICML, "Multi-task learning as a bargaining game").

    On ``G' = G / |G|_F`` (the authors' normalisation), ``a`` solves
    ``a_k (G' a)_k = 1`` (:func:`nash_weights`, exactly, where the authors run 20
    concave-convex iterations toward the same point); the update ``sum_k a_k w_k g_k``
    is then clipped to norm ``max_norm`` as in the authors' code.

    Args:
        max_norm: Largest norm of the shared update; 0 = no clipping. The authors' 1.0.
    """

    name = "nash-mtl"
    needs_gram = True
    jit_compatible = False  # the solver runs in numpy

    def __init__(self, max_norm: float = 1.0) -> None:
        super().__init__()
        self.max_norm = check_number("NashMTL", "max_norm", max_norm, 0.0)

    def coefficients(self, gram: tf.Tensor, step: tf.Tensor, *, update: bool = True, losses: tf.Tensor | None = None) -> tf.Tensor:
        g = _weighted(tf.cast(gram, tf.float32), self.weights)
        scale = tf.maximum(tf.norm(g), EPS)
        a = tf.reshape(tf.numpy_function(nash_weights, [g / scale], tf.float32, stateful=False), [self.num_tasks])
        if self.max_norm:
            norm = tf.sqrt(tf.maximum(tf.tensordot(a, tf.linalg.matvec(g, a), 1), 0.0))
            a = a * tf.minimum(1.0, self.max_norm / tf.maximum(norm, EPS))
        return a * self.weights


class AlignedMTL(LossCombination):
    """Aligned-MTL (Senushkin et al. 2023, CVPR, "Independent component alignment for multi-task learning").

    With ``G = V Lambda V^T`` (the eigendecomposition of the Gram matrix, eigenvalues
    below ``max(Lambda) T eps`` dropped) and ``sigma_min^2`` its smallest kept
    eigenvalue, ``B = sigma_min V Lambda^{-1/2} V^T``: the aligned gradients
    ``[g_1 .. g_T] B`` are orthogonal with equal norms ``sigma_min`` (condition number
    1), and the update is their sum, ``a = B 1`` (the authors' ``min`` scale mode).
    """

    name = "aligned-mtl"
    needs_gram = True

    def coefficients(self, gram: tf.Tensor, step: tf.Tensor, *, update: bool = True, losses: tf.Tensor | None = None) -> tf.Tensor:
        b = alignment(_weighted(tf.cast(gram, tf.float32), self.weights))
        return tf.reduce_sum(b, axis=1) * self.weights


def alignment(gram: tf.Tensor) -> tf.Tensor:
    """Aligned-MTL's ``B = sigma_min V Lambda^{-1/2} V^T`` for the Gram matrix ``V Lambda V^T`` (rank-aware)."""
    values, vectors = tf.linalg.eigh(gram)
    kept = values > tf.reduce_max(values) * gram.shape[0] * np.finfo(np.float32).eps
    inverse_root = tf.where(kept, 1.0 / tf.sqrt(tf.where(kept, values, 1.0)), 0.0)
    sigma_min = tf.sqrt(tf.reduce_min(tf.where(kept, values, tf.reduce_max(values))))
    return sigma_min * tf.matmul(vectors * inverse_root[None, :], vectors, transpose_b=True)


class DBMTL(LossCombination):
    """Dual-balancing MTL (Lin et al. 2023, "Dual-balancing for multi-task learning"), without its gradient EMA.

    Loss-scale balance: every task trains on ``log(w_k L_k + eps)``, gradient
    ``h_k = w_k g_k / (w_k L_k + eps)``. Gradient-magnitude balance: the update is
    ``d = max_j |h_j| sum_k h_k / |h_k|``. The authors' code smooths ``h_k`` with an EMA
    (``beta = 0.9 / t^0.5``) over steps; that needs a parameter-sized buffer per task
    the Gram path does not keep, so here ``h_k`` is the step's own gradient.
    """

    name = "db-mtl"
    needs_gram = True

    def build(self, tasks: Sequence[Task], weights: Sequence[float], seed: int = 0) -> None:
        super().build(tasks, weights, seed)
        self.last_losses = tf.Variable(tf.ones([len(tasks)]), trainable=False, name="dbmtl_last_losses")

    def objective(self, losses: tf.Tensor, step: tf.Tensor | None = None) -> tf.Tensor:
        return tf.reduce_sum(tf.math.log(self.weights * losses + EPS))

    def coefficients(self, gram: tf.Tensor, step: tf.Tensor, *, update: bool = True, losses: tf.Tensor | None = None) -> tf.Tensor:
        if losses is None:
            losses = tf.convert_to_tensor(self.last_losses)
        elif update:
            self.last_losses.assign(losses)
        scale = self.weights / (self.weights * tf.cast(losses, tf.float32) + EPS)  # h_k = scale_k g_k
        norms = scale * tf.sqrt(tf.maximum(tf.linalg.diag_part(tf.cast(gram, tf.float32)), 0.0))
        return tf.reduce_max(norms) / tf.maximum(norms, EPS) * scale
