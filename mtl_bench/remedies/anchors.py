"""Forgetting remedies: extra loss terms that keep the model close to what it already does.

Where gradient-conflict remedies change how the task gradients are combined,
these leave the combination alone and add a term to the loss that protects a
set of tasks (the earlier phases' tasks in the sequential regime, every task
in the joint regime) from being overwritten:

* :class:`Replay`: a buffer of a share of the training rows keeps the
  protected tasks' true labels; their loss on the buffer rows of each batch
  joins the objective (experience replay).
* :class:`Distill`: Learning without Forgetting (Li & Hoiem 2016): the
  protected tasks' outputs on the current batch are pulled toward the
  reference model's predictions of the same rows, with the task's own loss
  on those soft targets: the supervised way to make targets "on-policy".
* :class:`KLAnchor`: a KL penalty to the reference model on the protected
  tasks, on an *independent* anchor batch of training inputs each step
  (Bernoulli KL for binary tasks, unit-variance Gaussian KL
  ``(mu - mu_ref)^2 / 2`` for regression), as RL fine-tuning anchors to a
  reference policy.

The reference is a snapshot of the model's predictions: taken when a
sequential phase starts, and at the start of every epoch after the first in
the joint regime (before that the model has learnt nothing worth keeping).
On suites whose tasks share their rows (every current suite), Distill and
KLAnchor differ in the batch the term is computed on and, for regression, by
the factor 1/2.

An aid is bound to one training run by :meth:`ForgettingAid.bind` and used
by the :class:`~mtl_bench.engine.training.Trainer`, which gathers its per-row
tensors with each batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from mtl_bench.schema import JOINT, PROB_EPS, SEQUENTIAL
from mtl_bench.spec import Split, Task
from mtl_bench.validation import check_number


class ForgettingAid:
    """Base class. ``refresh_each_epoch`` is set by the regime (joint: True, sequential: False).

    Attributes:
        needs_anchor: The loss needs predictions on an independent anchor batch.
        applies_to: Regimes where the remedy means something.
    """

    name: str = ""
    needs_anchor: bool = False
    applies_to: tuple[str, ...] = (JOINT, SEQUENTIAL)

    def __init__(self, weight: float = 1.0) -> None:
        self.weight = check_number(type(self).__name__, "weight", weight, 0.0, low_open=True)
        self.protected: tuple[Task, ...] = ()
        self.refresh_each_epoch = False
        self._predict: Callable[[], dict[str, np.ndarray]] | None = None
        self._active: tf.Variable | None = None

    def bind(
        self,
        protected: Sequence[Task],
        train: Split,
        predict: Callable[[], dict[str, np.ndarray]],
        *,
        refresh_each_epoch: bool,
        seed: int,
    ) -> None:
        """Attaches the aid to one training run.

        Args:
            protected: Tasks whose outputs the term protects; none makes the aid inactive.
            train: The training split (its rows are what the trainer's batch indices address).
            predict: Returns the model's current predictions on every training row.
            refresh_each_epoch: Re-take the reference at the start of every epoch after
                the first (joint regime); otherwise take it once, now.
            seed: Seeds any random choice of the aid (the replay buffer).
        """
        self.protected = tuple(protected)
        self.refresh_each_epoch = refresh_each_epoch
        self._predict = predict
        self._active = tf.Variable(0.0 if refresh_each_epoch or not self.protected else 1.0, trainable=False)

    @property
    def active(self) -> bool:
        return bool(self.protected)

    def resident(self) -> dict[str, tf.Variable]:
        """Per-row tensors (first axis = training rows) the trainer gathers with each batch."""
        return {}

    def on_epoch_begin(self, epoch: int) -> None:
        """``epoch`` is 1-based; joint runs refresh the reference from epoch 2 on."""
        if self.refresh_each_epoch and epoch >= 2 and self.protected:
            self._snapshot()
            self._active.assign(1.0)

    def _snapshot(self) -> None:
        pass

    def loss(self, pred: dict[str, tf.Tensor], rows: dict[str, tf.Tensor], anchor_pred: dict[str, tf.Tensor] | None) -> tf.Tensor:
        """The extra loss on one batch (already multiplied by the aid's weight and activity)."""
        raise NotImplementedError


class _Reference(ForgettingAid):
    """An aid holding the reference model's predictions of the protected tasks on every training row."""

    def bind(self, protected, train, predict, *, refresh_each_epoch, seed) -> None:
        super().bind(protected, train, predict, refresh_each_epoch=refresh_each_epoch, seed=seed)
        self._reference = {
            t.name: tf.Variable(tf.zeros([len(train)]), trainable=False, name=f"reference_{t.name}") for t in self.protected
        }
        if self.protected and not refresh_each_epoch:
            self._snapshot()

    def _snapshot(self) -> None:
        pred = self._predict()
        for name, variable in self._reference.items():
            variable.assign(pred[name].astype(np.float32))

    def resident(self) -> dict[str, tf.Variable]:
        return {f"reference/{n}": v for n, v in self._reference.items()}


class Distill(_Reference):
    """Self-distillation (LwF): the protected tasks' loss toward the reference's predictions of the batch.

    Args:
        weight: Weight of the term relative to a task loss.
    """

    name = "distill"

    def loss(self, pred, rows, anchor_pred) -> tf.Tensor:
        total = tf.constant(0.0)
        for t in self.protected:
            target = tf.expand_dims(rows[f"reference/{t.name}"], -1)
            total += t.loss_fn()(target, pred[t.name])
        return self.weight * self._active * total


class KLAnchor(_Reference):
    """KL to the reference on the protected tasks, on an independent anchor batch of training inputs.

    Args:
        weight: Weight of the term relative to a task loss.
    """

    name = "kl-anchor"
    needs_anchor = True

    def loss(self, pred, rows, anchor_pred) -> tf.Tensor:
        total = tf.constant(0.0)
        for t in self.protected:
            ref = tf.expand_dims(rows[f"anchor_reference/{t.name}"], -1)
            p = anchor_pred[t.name]
            total += tf.reduce_mean(kl_divergence(t.kind, ref, p))
        return self.weight * self._active * total

    def resident(self) -> dict[str, tf.Variable]:
        return {f"anchor_reference/{n}": v for n, v in self._reference.items()}


def kl_divergence(kind: str, reference: tf.Tensor, prediction: tf.Tensor) -> tf.Tensor:
    """Per-row ``KL(reference || prediction)``: Bernoulli for binary tasks, unit-variance Gaussian otherwise.

    The divergence of :func:`mtl_bench.measures.divergence.kl_divergence` (same clip,
    :data:`~mtl_bench.schema.PROB_EPS`, same formula) as a differentiable loss in the tensors' dtype.
    """
    if kind == "binary":
        p = tf.clip_by_value(reference, PROB_EPS, 1 - PROB_EPS)
        q = tf.clip_by_value(prediction, PROB_EPS, 1 - PROB_EPS)
        return p * tf.math.log(p / q) + (1 - p) * tf.math.log((1 - p) / (1 - q))
    return 0.5 * tf.square(reference - prediction)


class Replay(ForgettingAid):
    """Experience replay of the protected tasks' labels on a fixed buffer of training rows.

    The term is ``sum_j mean_batch(m * l_j) / share`` with ``m`` the buffer
    membership of each row, so each replayed task weighs like a task trained on
    its own. Only the sequential regime has earlier data to replay.

    Args:
        share: Fraction of the training rows kept in the buffer, in (0, 1].
        weight: Weight of the term relative to a task loss.
    """

    name = "replay"
    applies_to = (SEQUENTIAL,)

    def __init__(self, share: float = 0.1, weight: float = 1.0) -> None:
        super().__init__(weight)
        self.share = check_number("Replay", "share", share, 0.0, 1.0, low_open=True)

    def bind(self, protected, train, predict, *, refresh_each_epoch, seed) -> None:
        super().bind(protected, train, predict, refresh_each_epoch=False, seed=seed)
        n = len(train)
        rng = np.random.default_rng(seed)
        mask = np.zeros(n, np.float32)
        mask[rng.choice(n, size=max(1, round(self.share * n)), replace=False)] = 1.0
        self.mask = mask
        self._rows = {"replay/mask": tf.Variable(mask, trainable=False, name="replay_mask")}
        for t in self.protected:
            self._rows[f"replay/{t.name}"] = tf.Variable(train.labels[t.name].astype(np.float32), trainable=False)

    def resident(self) -> dict[str, tf.Variable]:
        return self._rows

    def loss(self, pred, rows, anchor_pred) -> tf.Tensor:
        mask = tf.expand_dims(rows["replay/mask"], -1)
        total = tf.constant(0.0)
        for t in self.protected:
            y = tf.expand_dims(rows[f"replay/{t.name}"], -1)
            total += t.loss_fn()(y, pred[t.name], sample_weight=mask) / self.share
        return self.weight * self._active * total
