"""Loss-combination methods: per-task losses (and their gradients on the shared variables) -> one update.

A :class:`LossCombination` is composed with any architecture by the
:class:`~mtl_bench.engine.training.Trainer`; the training loop has no switch over
method names. Every method is described the same way: the update of the
shared variables is a linear combination ``d = sum_k a_k g_k`` of the per-task
gradients ``g_k`` of the *unweighted* task losses, and :meth:`coefficients`
returns ``a`` from the tasks' Gram matrix ``G[i, j] = <g_i, g_j>``. Because
``a`` depends on the gradients only through ``G``, the probe can tell how much
conflict is left in the update a method actually applies, from the Gram
matrix it measures anyway. Task-specific variables get the gradient of
:meth:`objective`, the weighted sum of the losses.

* :class:`Static`: the task definitions' weights (or a run's tuned ``task_weights``).
* :class:`Equal`: weight 1 for every task.
* :class:`Uncertainty`: Kendall, Gal & Cipolla 2018, learned log-variances.
* :class:`PCGrad`: Yu et al. 2020, projection of conflicting gradients.
* :class:`GradVac`: Wang et al. 2021, gradient vaccine toward EMA similarity targets.
* :class:`CAGrad`: Liu et al. 2021, conflict-averse gradient descent.

MGDA, IMTL-G, Nash-MTL, Aligned-MTL and DB-MTL are in
:mod:`mtl_bench.remedies.multiobjective`; GradNorm, DWA, RLW and FAMO in
:mod:`mtl_bench.remedies.weighting`; the static-weight sweep in :mod:`mtl_bench.remedies.sweep`.

The gradient methods (``needs_gram``) act on the gradients of the static-
weighted losses ``w_k L_k``, as the papers act on the losses they are given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from scipy import optimize

from mtl_bench.spec import Task
from mtl_bench.validation import check_number


class LossCombination:
    """Base class: a weighted sum of the task losses, with ``weights`` fixed at :meth:`build`.

    Subclasses that need the per-task gradients set ``needs_gram = True`` and
    override :meth:`coefficients`.
    """

    name: str = ""
    needs_gram: bool = False
    jit_compatible: bool = True
    needs_losses_after: bool = False

    def __init__(self) -> None:
        self.weights: tf.Tensor | None = None
        self.num_tasks = 0
        self.seed = 0

    def build(self, tasks: Sequence[Task], weights: Sequence[float], seed: int = 0) -> None:
        """Fixes the tasks (in the order of the loss vector), their static weights and the method's seed."""
        if len(weights) != len(tasks) or not tasks:
            raise ValueError(f"{type(self).__name__}: one weight per task. Received: {len(weights)} for {len(tasks)} tasks")
        self.num_tasks = len(tasks)
        self.weights = tf.constant([float(w) for w in weights], tf.float32)
        self.seed = int(seed)

    @property
    def variables(self) -> list[tf.Variable]:
        """Variables the method learns alongside the model (trained by the same optimizer)."""
        return []

    @property
    def state(self) -> list[tf.Variable]:
        """Every variable of the method's state (learned or not): what a checkpoint of the method saves."""
        return [v for v in vars(self).values() if isinstance(v, tf.Variable)]

    def objective(self, losses: tf.Tensor, step: tf.Tensor | None = None) -> tf.Tensor:
        """The scalar whose gradient updates every variable (task-specific ones only, with ``needs_gram``).

        Args:
            losses: ``(T,)`` unweighted per-task losses of the batch.
            step: The global step (seeds per-step randomness such as RLW's weights).
        """
        return tf.reduce_sum(self.weights * losses)

    def coefficients(
        self, gram: tf.Tensor, step: tf.Tensor, *, update: bool = True, losses: tf.Tensor | None = None
    ) -> tf.Tensor:
        """``a`` with shared update ``sum_k a_k g_k``; ``gram`` holds the unweighted losses' gradients.

        Args:
            gram: ``(T, T)`` Gram matrix of the per-task gradients on the shared variables.
            step: The global step (seeds per-step randomness such as PCGrad's task order).
            update: Whether to advance the method's state (GradVac's targets); the
                probe asks without updating.
            losses: ``(T,)`` unweighted per-task losses of the batch, for the methods
                that read them; the probe passes none (they use the last training step's).
        """
        return self.weights

    def after_step(self, losses: tf.Tensor, losses_after: tf.Tensor | None) -> None:
        """Called in the training step after the update (in the compiled graph).

        Args:
            losses: The step's per-task losses (before the update).
            losses_after: With ``needs_losses_after``, the same batch's losses after the update; else None.
        """

    def on_epoch_end(self, train_losses: np.ndarray) -> None:
        """Called eagerly after each epoch with the epoch's mean unweighted training loss per task."""


class Static(LossCombination):
    """The weighted sum with the tasks' static weights (``Task.weight``, or a run's tuned weights)."""

    name = "static"


class Equal(LossCombination):
    """The plain sum of the task losses: every weight 1."""

    name = "equal"

    def build(self, tasks: Sequence[Task], weights: Sequence[float], seed: int = 0) -> None:
        super().build(tasks, [1.0] * len(tasks), seed)


class Uncertainty(LossCombination):
    """Homoscedastic-uncertainty weighting (Kendall et al. 2018), one learned ``s_k = log sigma_k^2`` per task.

    Objective ``sum_k c_k exp(-s_k) w_k L_k + s_k / 2`` with ``c_k = 1/2`` for
    regression (Gaussian likelihood) and 1 for binary tasks; ``s_k`` starts at 0.
    """

    name = "uncertainty"

    def build(self, tasks: Sequence[Task], weights: Sequence[float], seed: int = 0) -> None:
        super().build(tasks, weights, seed)
        self._scale = tf.constant([0.5 if t.kind == "regression" else 1.0 for t in tasks], tf.float32)
        self.log_variance = tf.Variable(tf.zeros([len(tasks)]), name="uncertainty_log_variance")

    @property
    def variables(self) -> list[tf.Variable]:
        return [self.log_variance]

    def objective(self, losses: tf.Tensor, step: tf.Tensor | None = None) -> tf.Tensor:
        s = self.log_variance
        return tf.reduce_sum(self._scale * tf.exp(-s) * self.weights * losses + 0.5 * s)

    def coefficients(self, gram: tf.Tensor, step: tf.Tensor, *, update: bool = True, losses: tf.Tensor | None = None) -> tf.Tensor:
        return self._scale * tf.exp(-tf.convert_to_tensor(self.log_variance)) * self.weights


def _weighted(gram: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """Gram matrix of the weighted gradients ``w_k g_k``."""
    return gram * weights[:, None] * weights[None, :]


def _orders(num_tasks: int, seed: int, step: tf.Tensor) -> tf.Tensor:
    """``(T, T)``: row ``i`` is a random order of all tasks (row ``i``'s own index is skipped by the caller)."""
    noise = tf.random.stateless_uniform([num_tasks, num_tasks], seed=tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64)]))
    return tf.argsort(noise, axis=1)


class PCGrad(LossCombination):
    """Projecting conflicting gradients (Yu et al. 2020).

    For each task ``i`` and the other tasks ``j`` in a random order (fresh each
    step): when ``<g_i', g_j> < 0``, ``g_i' <- g_i' - <g_i', g_j> / |g_j|^2 g_j``.
    The update is ``sum_i g_i'``.
    """

    name = "pcgrad"
    needs_gram = True

    def coefficients(self, gram: tf.Tensor, step: tf.Tensor, *, update: bool = True, losses: tf.Tensor | None = None) -> tf.Tensor:
        g = _weighted(tf.cast(gram, tf.float32), self.weights)
        t = self.num_tasks
        eye = tf.eye(t)
        orders = _orders(t, self.seed, step)
        total = tf.zeros([t])
        for i in range(t):
            c = eye[i]  # g_i' = sum_k c_k g_k
            for r in range(t):
                j = orders[i, r]
                gj = tf.gather(g, j, axis=1)
                gjj = tf.gather(gj, j)
                dot = tf.tensordot(c, gj, 1)
                coef = tf.where((dot < 0) & (gjj > 0) & (j != i), dot / tf.where(gjj > 0, gjj, 1.0), 0.0)
                c = c - coef * tf.one_hot(j, t)
            total = total + c
        return total * self.weights


class GradVac(LossCombination):
    """Gradient vaccine (Wang et al. 2021), on the whole shared gradient.

    For each task ``i`` and the other tasks ``j`` in a random order: with
    ``phi = cos(g_i', g_j)`` and the target ``phi_hat_ij`` (an EMA of past
    cosines, starting at 0), when ``phi < phi_hat``
    ``g_i' <- g_i' + |g_i'| (phi_hat sqrt(1 - phi^2) - phi sqrt(1 - phi_hat^2)) / (|g_j| sqrt(1 - phi_hat^2)) g_j``,
    which makes ``cos(g_i', g_j) = phi_hat``; then ``phi_hat <- (1 - beta) phi_hat + beta phi``.

    Args:
        beta: EMA rate of the similarity targets, in (0, 1].
    """

    name = "gradvac"
    needs_gram = True

    def __init__(self, beta: float = 0.01) -> None:
        super().__init__()
        self.beta = check_number("GradVac", "beta", beta, 0.0, 1.0, low_open=True)

    def build(self, tasks: Sequence[Task], weights: Sequence[float], seed: int = 0) -> None:
        super().build(tasks, weights, seed)
        self.targets = tf.Variable(tf.zeros([len(tasks), len(tasks)]), trainable=False, name="gradvac_targets")

    def coefficients(self, gram: tf.Tensor, step: tf.Tensor, *, update: bool = True, losses: tf.Tensor | None = None) -> tf.Tensor:
        g = _weighted(tf.cast(gram, tf.float32), self.weights)
        t = self.num_tasks
        eye = tf.eye(t)
        orders = _orders(t, self.seed, step)
        targets = tf.convert_to_tensor(self.targets)
        new_targets = targets
        total = tf.zeros([t])
        for i in range(t):
            c = eye[i]
            for r in range(t):
                j = orders[i, r]
                gj = tf.gather(g, j, axis=1)
                nj = tf.sqrt(tf.maximum(tf.gather(gj, j), 0.0))
                ni = tf.sqrt(tf.maximum(tf.tensordot(c, tf.linalg.matvec(g, c), 1), 0.0))
                valid = (j != i) & (ni > 0) & (nj > 0)
                phi = tf.tensordot(c, gj, 1) / tf.where(valid, ni * nj, 1.0)
                phi = tf.clip_by_value(phi, -1.0, 1.0)
                target = targets[i, j]
                root = tf.sqrt(tf.maximum(1.0 - target**2, 1e-12))
                coef = ni * (target * tf.sqrt(tf.maximum(1.0 - phi**2, 0.0)) - phi * root) / (tf.where(valid, nj, 1.0) * root)
                c = c + tf.where(valid & (phi < target), coef, 0.0) * tf.one_hot(j, t)
                ema = (1.0 - self.beta) * target + self.beta * phi
                index = tf.stack([tf.constant(i, orders.dtype), j])[None, :]
                new_targets = tf.where(valid, tf.tensor_scatter_nd_update(new_targets, index, ema[None]), new_targets)
            total = total + c
        if update:
            self.targets.assign(new_targets)
        return total * self.weights


def cagrad_weights(gram: np.ndarray, alpha: float) -> np.ndarray:
    """CAGrad's inner problem: ``argmin_{w in simplex} w^T G 1/T + c sqrt(w^T G w)``, ``c = alpha |g_0|``.

    Solved with SLSQP from the uniform point, as the authors' code does.
    """
    gram = np.asarray(gram, np.float64)
    t = len(gram)
    start = np.full(t, 1.0 / t)
    c = alpha * math.sqrt(max(gram.mean(), 0.0) + 1e-8)
    b = gram @ start

    def objective(w: np.ndarray) -> float:
        return float(w @ b + c * math.sqrt(max(w @ gram @ w, 0.0) + 1e-8))

    result = optimize.minimize(
        objective,
        start,
        bounds=[(0.0, 1.0)] * t,
        constraints=({"type": "eq", "fun": lambda w: 1.0 - w.sum()},),
        method="SLSQP",
    )
    w = np.clip(result.x, 0.0, None)
    return (w / w.sum()).astype(np.float32) if w.sum() > 0 else start.astype(np.float32)


class CAGrad(LossCombination):
    """Conflict-averse gradient descent (Liu et al. 2021).

    ``d = (g_0 + c |g_0| / |g_w| g_w) / (1 + alpha^2)`` with ``g_0`` the mean
    gradient, ``c = alpha``, and ``g_w = sum_k w_k g_k`` for the simplex weights
    of :func:`cagrad_weights`. Before the ``1 / (1 + alpha^2)`` rescale, ``d`` is
    the update that maximises the worst task's improvement within a ball of
    radius ``alpha |g_0|`` around ``g_0``.

    Args:
        alpha: Radius of the ball, relative to ``|g_0|``; >= 0 (0 is the mean gradient).
    """

    name = "cagrad"
    needs_gram = True
    jit_compatible = False  # the inner solver runs in numpy

    def __init__(self, alpha: float = 0.5) -> None:
        super().__init__()
        self.alpha = check_number("CAGrad", "alpha", alpha, 0.0)

    def coefficients(self, gram: tf.Tensor, step: tf.Tensor, *, update: bool = True, losses: tf.Tensor | None = None) -> tf.Tensor:
        g = _weighted(tf.cast(gram, tf.float32), self.weights)
        t = self.num_tasks
        w = tf.numpy_function(lambda m: cagrad_weights(m, self.alpha), [g], tf.float32, stateful=False)
        w = tf.reshape(w, [t])
        g0_norm = tf.sqrt(tf.maximum(tf.reduce_mean(g), 0.0) + 1e-8)
        gw_norm = tf.sqrt(tf.maximum(tf.tensordot(w, tf.linalg.matvec(g, w), 1), 0.0)) + 1e-8
        a = tf.fill([t], 1.0 / t) + self.alpha * g0_norm / gw_norm * w
        return a / (1.0 + self.alpha**2) * self.weights
