"""Loss-weighting methods: each step's task weights come from the losses (their history, or chance).

Like every :class:`~mtl_bench.remedies.combination.LossCombination`, each acts on the
static-weighted losses ``w_k L_k`` (``w`` the task weights, all 1 under ``equal``)
and its :meth:`coefficients` give the applied update ``sum_k a_k g_k`` in terms of
the unweighted losses' gradients ``g_k``.

* :class:`RLW`: random loss weighting (Lin et al. 2022).
* :class:`DWA`: dynamic weight average (Liu, Johns & Davison 2019).
* :class:`FAMO`: fast adaptive multitask optimisation (Liu et al. 2023).
* :class:`GradNorm`: gradient normalisation (Chen et al. 2018), the one of these that needs the Gram matrix.

Their state (loss history, logits, learned weights, Adam moments) lives in
``tf.Variable`` s created at :meth:`build` and listed by ``state``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from mtl_bench.remedies.combination import LossCombination
from mtl_bench.spec import Task
from mtl_bench.validation import check_number

EPS = 1e-8


def _step_or_zero(step: tf.Tensor | None) -> tf.Tensor:
    return tf.constant(0, tf.int64) if step is None else tf.cast(step, tf.int64)


class _Adam:
    """Adam (Kingma & Ba 2015) on one vector, with torch's coupled L2 ``weight_decay``; state in variables."""

    def __init__(self, size: int, learning_rate: float, weight_decay: float = 0.0, prefix: str = "adam") -> None:
        self.learning_rate, self.weight_decay = learning_rate, weight_decay
        self.m = tf.Variable(tf.zeros([size]), trainable=False, name=f"{prefix}_m")
        self.v = tf.Variable(tf.zeros([size]), trainable=False, name=f"{prefix}_v")
        self.t = tf.Variable(0.0, trainable=False, name=f"{prefix}_t")

    @property
    def state(self) -> list[tf.Variable]:
        return [self.m, self.v, self.t]

    def apply(self, grad: tf.Tensor, var: tf.Variable, beta1: float = 0.9, beta2: float = 0.999) -> None:
        grad = grad + self.weight_decay * var
        t = self.t.assign_add(1.0)
        m = self.m.assign(beta1 * self.m + (1.0 - beta1) * grad)
        v = self.v.assign(beta2 * self.v + (1.0 - beta2) * grad**2)
        m_hat, v_hat = m / (1.0 - beta1**t), v / (1.0 - beta2**t)
        var.assign_sub(self.learning_rate * m_hat / (tf.sqrt(v_hat) + EPS))


class RLW(LossCombination):
    """Random loss weighting (Lin et al. 2022, "Reasonable effectiveness of random weighting", TMLR).

    Each step draws ``lambda = softmax(z)``, ``z ~ N(0, I)``, and minimises
    ``sum_k lambda_k w_k L_k``. The draw is seeded by (method seed, global step), so a
    rerun repeats it.
    """

    name = "rlw"

    def _lambda(self, step: tf.Tensor | None) -> tf.Tensor:
        seed = tf.stack([tf.constant(self.seed, tf.int64), _step_or_zero(step)])
        return tf.nn.softmax(tf.random.stateless_normal([self.num_tasks], seed=seed))

    def objective(self, losses: tf.Tensor, step: tf.Tensor | None = None) -> tf.Tensor:
        return tf.reduce_sum(self._lambda(step) * self.weights * losses)

    def coefficients(self, gram: tf.Tensor, step: tf.Tensor, *, update: bool = True, losses: tf.Tensor | None = None) -> tf.Tensor:
        return self._lambda(step) * self.weights


class DWA(LossCombination):
    """Dynamic weight average (Liu, Johns & Davison 2019, "End-to-end multi-task learning with attention").

    In epoch ``t``, ``lambda_k = T exp(r_k / tau) / sum_i exp(r_i / tau)`` with
    ``r_k = L_k(t-1) / L_k(t-2)`` the ratio of task ``k``'s mean training losses over the
    last two epochs (``lambda_k = 1`` in the first two epochs); the objective is
    ``sum_k lambda_k w_k L_k``.

    Args:
        temperature: ``tau`` > 0; the paper's 2.
    """

    name = "dwa"

    def __init__(self, temperature: float = 2.0) -> None:
        super().__init__()
        self.temperature = check_number("DWA", "temperature", temperature, 0.0, low_open=True)

    def build(self, tasks: Sequence[Task], weights: Sequence[float], seed: int = 0) -> None:
        super().build(tasks, weights, seed)
        self.history = tf.Variable(tf.ones([2, len(tasks)]), trainable=False, name="dwa_history")
        self.epochs = tf.Variable(0, trainable=False, name="dwa_epochs")

    def _lambda(self) -> tf.Tensor:
        ratio = self.history[1] / tf.maximum(self.history[0], EPS)
        dynamic = self.num_tasks * tf.nn.softmax(ratio / self.temperature)
        return tf.where(self.epochs >= 2, dynamic, tf.ones_like(dynamic))

    def objective(self, losses: tf.Tensor, step: tf.Tensor | None = None) -> tf.Tensor:
        return tf.reduce_sum(self._lambda() * self.weights * losses)

    def coefficients(self, gram: tf.Tensor, step: tf.Tensor, *, update: bool = True, losses: tf.Tensor | None = None) -> tf.Tensor:
        return self._lambda() * self.weights

    def on_epoch_end(self, train_losses: np.ndarray) -> None:
        new = tf.constant(np.asarray(train_losses, np.float32))
        self.history.assign(tf.stack([self.history[1], new]))
        self.epochs.assign_add(1)


class FAMO(LossCombination):
    """Fast adaptive multitask optimisation (Liu, Liu, Stone & Liu 2023, NeurIPS), the authors' code.

    With logits ``xi`` (starting at 0), ``z = softmax(xi)`` and ``D_k = w_k L_k``, the
    step minimises ``sum_k (z_k / c) log D_k``, ``c = sum_k z_k / D_k`` (held constant),
    i.e. the loss coefficients ``a_k = w_k z_k / (c D_k)``. After the update, with the
    same batch's losses ``D'``, ``delta_k = log D_k - log D'_k`` and the logits take one
    Adam step (``learning_rate``, coupled L2 ``gamma``) on the gradient
    ``J_softmax(xi)^T delta``. The static weights cancel in ``delta``.

    Args:
        learning_rate: The logits' Adam learning rate; the paper's 0.025.
        gamma: The logits' weight decay; the paper's 0.01 (0.001 on some benchmarks).
    """

    name = "famo"
    needs_losses_after = True

    def __init__(self, learning_rate: float = 0.025, gamma: float = 0.01) -> None:
        super().__init__()
        self.learning_rate = check_number("FAMO", "learning_rate", learning_rate, 0.0, low_open=True)
        self.gamma = check_number("FAMO", "gamma", gamma, 0.0)

    def build(self, tasks: Sequence[Task], weights: Sequence[float], seed: int = 0) -> None:
        super().build(tasks, weights, seed)
        self.logits = tf.Variable(tf.zeros([len(tasks)]), trainable=False, name="famo_logits")
        self.last_losses = tf.Variable(tf.ones([len(tasks)]), trainable=False, name="famo_last_losses")
        self._adam = _Adam(len(tasks), self.learning_rate, self.gamma, "famo_adam")

    @property
    def state(self) -> list[tf.Variable]:
        return [self.logits, self.last_losses, *self._adam.state]

    def _coefficients(self, losses: tf.Tensor) -> tf.Tensor:
        z = tf.nn.softmax(self.logits)
        d = self.weights * losses + EPS
        return self.weights * z / (tf.reduce_sum(z / d) * d)

    def objective(self, losses: tf.Tensor, step: tf.Tensor | None = None) -> tf.Tensor:
        return tf.reduce_sum(tf.stop_gradient(self._coefficients(losses)) * losses)

    def coefficients(self, gram: tf.Tensor, step: tf.Tensor, *, update: bool = True, losses: tf.Tensor | None = None) -> tf.Tensor:
        return self._coefficients(self.last_losses if losses is None else losses)

    def after_step(self, losses: tf.Tensor, losses_after: tf.Tensor | None) -> None:
        self.last_losses.assign(losses)
        delta = tf.math.log(self.weights * losses + EPS) - tf.math.log(self.weights * losses_after + EPS)
        z = tf.nn.softmax(self.logits)
        self._adam.apply(z * delta - z * tf.reduce_sum(z * delta), self.logits)


class GradNorm(LossCombination):
    """Gradient normalisation (Chen, Badrinarayanan, Lee & Rabinovich 2018, ICML).

    Learned weights ``lambda`` (starting at 1) scale ``w_k L_k``. With ``n_k`` the norm
    of ``w_k g_k`` on the shared variables (the paper takes the last shared layer's;
    here every shared variable), ``G_k = lambda_k n_k``, ``G_bar = mean_k G_k``, the
    loss ratios ``r_k = (L_k / L_k(0)) / mean_j (L_j / L_j(0))`` over the first step's
    losses ``L(0)``, the weights follow the gradient of
    ``L_grad = sum_k |G_k - G_bar r_k^alpha|`` (``G_bar r^alpha`` held constant):
    ``dL_grad / dlambda_k = sign(G_k - G_bar r_k^alpha) n_k``, one Adam step of
    ``learning_rate``, then renormalised to ``sum_k lambda_k = T``. The step's update
    uses the weights before this step's change.

    Args:
        alpha: Restoring-force strength; the paper's 1.5 (its NYUv2 setting; 0.12 on its synthetic data).
        learning_rate: The weights' Adam learning rate (the paper trains them with the network's optimizer).
    """

    name = "gradnorm"
    needs_gram = True

    def __init__(self, alpha: float = 1.5, learning_rate: float = 0.025) -> None:
        super().__init__()
        self.alpha = check_number("GradNorm", "alpha", alpha, 0.0)
        self.learning_rate = check_number("GradNorm", "learning_rate", learning_rate, 0.0, low_open=True)

    def build(self, tasks: Sequence[Task], weights: Sequence[float], seed: int = 0) -> None:
        super().build(tasks, weights, seed)
        self.task_weights = tf.Variable(tf.ones([len(tasks)]), trainable=False, name="gradnorm_weights")
        self.initial_losses = tf.Variable(tf.ones([len(tasks)]), trainable=False, name="gradnorm_initial_losses")
        self.started = tf.Variable(False, trainable=False, name="gradnorm_started")
        self._adam = _Adam(len(tasks), self.learning_rate, 0.0, "gradnorm_adam")

    @property
    def state(self) -> list[tf.Variable]:
        return [self.task_weights, self.initial_losses, self.started, *self._adam.state]

    def objective(self, losses: tf.Tensor, step: tf.Tensor | None = None) -> tf.Tensor:
        return tf.reduce_sum(tf.convert_to_tensor(self.task_weights) * self.weights * losses)

    def weight_gradient(self, gram: tf.Tensor, losses: tf.Tensor) -> tf.Tensor:
        """``dL_grad / dlambda`` for the Gram matrix ``gram`` of the unweighted losses' gradients."""
        norms = self.weights * tf.sqrt(tf.maximum(tf.linalg.diag_part(tf.cast(gram, tf.float32)), 0.0))
        lam = tf.convert_to_tensor(self.task_weights)
        ratio = losses / tf.maximum(self.initial_losses, EPS)
        ratio = ratio / tf.maximum(tf.reduce_mean(ratio), EPS)
        target = tf.reduce_mean(lam * norms) * ratio**self.alpha
        return tf.sign(lam * norms - target) * norms

    def coefficients(self, gram: tf.Tensor, step: tf.Tensor, *, update: bool = True, losses: tf.Tensor | None = None) -> tf.Tensor:
        a = tf.convert_to_tensor(self.task_weights) * self.weights
        if update and losses is not None:
            losses = tf.cast(losses, tf.float32)
            self.initial_losses.assign(tf.where(self.started, self.initial_losses, losses))
            self.started.assign(True)
            self._adam.apply(self.weight_gradient(gram, losses), self.task_weights)
            lam = tf.maximum(self.task_weights, EPS)
            self.task_weights.assign(self.num_tasks * lam / tf.reduce_sum(lam))
        return a
