"""The policy-gradient updates of the policy experiment: REINFORCE, PPO and GRPO, with an optional KL penalty.

The policy of a model over one slot's ``k`` candidates is the softmax of a *policy score* per candidate,
``s = sum_b w_b logit(p_b)``: the reward's weights ``w_b`` over the heads (:data:`REWARDS`), so the
reward decides which heads the update touches (with the click reward, only the click head and the layers
under it get a gradient; the other heads keep their values through the shared layers).

Every update minimises one loss over samples ``i`` = (slot, chosen candidate ``a_i``, advantage ``A_i``,
behaviour log-probability ``log b_i``, the log-probability the policy had when it picked ``a_i``)::

    ratio_i = pi(a_i) / b_i
    loss = -mean_i surrogate_i + kl * mean_slots KL(pi || pi_ref)
    surrogate_i = ratio_i A_i                                           (REINFORCE, GRPO)
    surrogate_i = min(ratio_i A_i, clip(ratio_i, 1 - eps, 1 + eps) A_i)  (PPO)

``pi_ref`` is the pre-trained model's policy on the same candidates and the KL is exact over the ``k``
candidates. REINFORCE and GRPO update once on data the current weights just sampled, so ``ratio = 1``
and the gradient is ``A_i grad log pi(a_i)``: the REINFORCE gradient. PPO passes ``ppo_epochs`` times over
a day's rollouts, so every update after the first one uses data from an older policy (``ratio != 1``).

Advantages: REINFORCE and PPO use the batch-mean baseline (``A = r - mean r`` over the update's batch; no
value network); GRPO samples a group of ``G`` candidates per slot and uses ``(r - mean_g r) / std_g r``
(0 for a group whose rewards are all equal).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mtl_bench.engine.training import predict
from mtl_bench.schema import PROB_EPS
from mtl_bench.spec import Split

SUPERVISED_ARMS: tuple[str, ...] = ("logged", "on-policy")
RL_ARMS: tuple[str, ...] = ("reinforce", "ppo", "grpo")
ARMS: tuple[str, ...] = SUPERVISED_ARMS + RL_ARMS
# The reward of a shown item is sum_b w_b * y_b over its behaviours; the same weights make the policy score.
# "engagement": a conversion (which implies a click) is worth two clicks, a like half a click.
REWARDS: dict[str, dict[str, float]] = {
    "click": {"click": 1.0},
    "engagement": {"click": 1.0, "conversion": 2.0, "like": 0.5},
}
STATS: tuple[str, ...] = ("ratio_mean", "ratio_dev", "clip_share", "kl_ref")


def reward_of(outcomes: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """``sum_b w_b y_b`` per row, float32."""
    return sum(w * np.asarray(outcomes[b], np.float32) for b, w in weights.items()).astype(np.float32)


def policy_scores(model: keras.Model, features: dict[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """The policy score ``sum_b w_b logit(p_b)`` of many candidate rows (float64)."""
    n = len(next(iter(features.values())))
    pred = predict(model, Split(features, {b: np.zeros(n, np.float32) for b in weights}))
    score = np.zeros(n)
    for b, w in weights.items():
        p = np.clip(pred[b].astype(np.float64), PROB_EPS, 1 - PROB_EPS)
        score += w * (np.log(p) - np.log1p(-p))
    return score


def log_softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of ``(n, k)`` scores."""
    z = scores - scores.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def sample(log_prob: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Inverse-CDF draws: ``(n,)`` or ``(n, g)`` candidate indices from ``(n, k)`` log-probabilities."""
    cdf = np.exp(log_prob).cumsum(axis=1)
    u = uniforms.reshape(len(log_prob), -1)
    picks = (cdf[:, None, :] > u[:, :, None]).argmax(axis=2)
    return picks.reshape(uniforms.shape)


def batch_advantages(reward: np.ndarray) -> np.ndarray:
    """``r - mean(r)``: the batch-mean baseline of REINFORCE and PPO."""
    reward = np.asarray(reward, np.float32)
    return reward - reward.mean(dtype=np.float64).astype(np.float32) if reward.size else reward


def group_advantages(reward: np.ndarray) -> np.ndarray:
    """GRPO's ``(r - mean_g r) / std_g r`` per group (rows of ``(n, G)``; population std; 0 when std = 0)."""
    r = np.asarray(reward, np.float64)
    std = r.std(axis=1, keepdims=True)
    centred = r - r.mean(axis=1, keepdims=True)
    return np.where(std > 0, centred / np.where(std > 0, std, 1.0), 0.0).astype(np.float32)


class PolicyGradient:
    """The update of one RL arm on a model's softmax policy over ``k`` candidates (see the module docstring).

    Args:
        model: A multi-task model whose outputs include every head named in ``reward``.
        reward: Head -> weight of the reward and of the policy score.
        k: Candidates per slot.
        learning_rate: Adam learning rate (ignored when ``optimizer`` is given).
        clip: PPO's ``eps``; ``None`` for the unclipped ``ratio * A`` (REINFORCE, GRPO).
        kl: Weight of ``KL(pi || pi_ref)``; 0 for none.
        optimizer: The optimizer (default Adam).
    """

    def __init__(self, model: keras.Model, reward: Mapping[str, float], k: int, learning_rate: float = 1e-2, *,
                 clip: float | None = None, kl: float = 0.0, optimizer: Any = None) -> None:
        self.model, self.k, self.clip, self.kl = model, int(k), clip, float(kl)
        self.heads = {b: float(w) for b, w in reward.items() if w != 0}
        self.optimizer = optimizer or keras.optimizers.Adam(learning_rate=learning_rate)
        self.optimizer.build(model.trainable_variables)
        self._step = tf.function(self._apply, reduce_retracing=True, autograph=False)
        self._policy = tf.function(self.log_policy, reduce_retracing=True, autograph=False)

    def policy(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """``(slots, k)`` log-probabilities of the current policy, numpy: the very numbers the update divides by."""
        return self._policy({key: tf.constant(v) for key, v in features.items()}).numpy()

    def log_policy(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """``(slots, k)`` log-probabilities of the current policy."""
        out = self.model(features, training=training)
        score = 0.0
        for b, w in self.heads.items():
            p = tf.clip_by_value(tf.reshape(out[b], [-1]), PROB_EPS, 1 - PROB_EPS)
            score += w * (tf.math.log(p) - tf.math.log1p(-p))
        return tf.nn.log_softmax(tf.reshape(score, [-1, self.k]), axis=1)

    def loss(self, features, slot, action, behaviour_logp, advantage, reference_logp):
        """The loss and ``(ratio_mean, ratio_dev, clip_share, kl_ref)`` of one batch (tensors; see the module docstring).

        Args:
            features: The ``slots * k`` candidate rows, slot-major.
            slot: ``(S,)`` slot of each sample (int32).
            action: ``(S,)`` chosen candidate of each sample (int32).
            behaviour_logp: ``(S,)`` log-probability of the choice under the policy that sampled it.
            advantage: ``(S,)`` advantages.
            reference_logp: ``(slots, k)`` log-probabilities of the reference policy.
        """
        log_pi = self.log_policy(features, training=True)
        logp = tf.gather_nd(log_pi, tf.stack([slot, action], axis=1))
        ratio = tf.exp(logp - behaviour_logp)
        eps = 0.2 if self.clip is None else self.clip
        if self.clip is None:
            surrogate = ratio * advantage
        else:
            surrogate = tf.minimum(ratio * advantage, tf.clip_by_value(ratio, 1 - eps, 1 + eps) * advantage)
        kl_ref = tf.reduce_sum(tf.exp(log_pi) * (log_pi - reference_logp), axis=1)
        loss = -tf.reduce_mean(surrogate)
        if self.kl:
            loss += self.kl * tf.reduce_mean(kl_ref)
        ratio = tf.stop_gradient(ratio)
        stats = tf.stack([tf.reduce_mean(ratio), tf.reduce_mean(tf.abs(ratio - 1)),
                          tf.reduce_mean(tf.cast(tf.abs(ratio - 1) > eps, ratio.dtype)),
                          tf.reduce_mean(tf.stop_gradient(kl_ref))])
        return loss, stats

    def _apply(self, *args):
        with tf.GradientTape() as tape:
            loss, stats = self.loss(*args)
        # Heads outside the reward get no gradient and stay as they are.
        pairs = [(g, v) for g, v in zip(tape.gradient(loss, self.model.trainable_variables),
                                        self.model.trainable_variables) if g is not None]
        self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        return stats

    def step(self, features: dict[str, np.ndarray], slot: np.ndarray, action: np.ndarray, behaviour_logp: np.ndarray,
             advantage: np.ndarray, reference_logp: np.ndarray) -> np.ndarray:
        """One optimizer step; returns the batch's ``STATS`` measured before it (numpy)."""
        return self._step({key: tf.constant(v) for key, v in features.items()}, tf.constant(slot, tf.int32),
                          tf.constant(action, tf.int32), tf.constant(behaviour_logp, tf.float32),
                          tf.constant(advantage, tf.float32), tf.constant(reference_logp, tf.float32)).numpy()


def slot_rows(slots: np.ndarray, k: int) -> np.ndarray:
    """The candidate-row positions of ``slots`` (slot-major, ``k`` rows per slot)."""
    return (np.asarray(slots)[:, None] * k + np.arange(k)[None, :]).reshape(-1)


__all__ = ["ARMS", "REWARDS", "RL_ARMS", "STATS", "SUPERVISED_ARMS", "PolicyGradient", "batch_advantages",
           "group_advantages", "log_softmax", "policy_scores", "reward_of", "sample", "slot_rows"]
