"""The probe's arithmetic on Gram matrices, losses and gate weights: pure numpy, no TensorFlow.

:class:`~mtl_bench.measures.probe.ConflictProbe` computes, in one compiled
function, the per-task gradients ``g_i`` of the unweighted losses with respect to
the shared variables and their float64 Gram matrix ``G[i, j] = <g_i, g_j>``; the
functions here turn such matrices into records. A record row is
``(task_i, task_j, group, measure, value)``.

Conflict view (Yu et al. 2020), :func:`conflict_rows`, every ordered pair ``i != j``:

* ``cosine``: ``<g_i, g_j> / (|g_i| |g_j|)``; NaN when a gradient is zero.
* ``conflict``: 1.0 when the cosine is negative, else 0.0 (NaN with the cosine).
* ``magnitude_similarity``: ``2 |g_i| |g_j| / (|g_i|^2 + |g_j|^2)``, in [0, 1].

Noise floor by disjoint halves, :func:`halves_rows`, from the ``(2T, 2T)`` Gram
matrix of the half-A gradients ``g_i^A`` then the half-B gradients ``g_i^B``:

* ``cosine_floor`` (``task_i == task_j``): ``cos(g_i^A, g_i^B)``: how much a
  task agrees with itself across disjoint rows, the noise floor of every cosine.
* ``conflict_floor`` (``task_i == task_j``): 1.0 when ``cosine_floor`` is
  negative, else 0.0 (NaN with the cosine).
* ``cosine_halves`` (ordered pairs ``i != j``):
  ``(cos(g_i^A, g_j^B) + cos(g_i^B, g_j^A)) / 2``: the cross-task cosine with
  the same disjoint-rows noise as the floor (NaN when a half-gradient is zero).
* ``conflict_halves`` (``i != j``): 1.0 when ``cosine_halves`` is negative, else 0.0.

Lookahead affinity (TAG, Fifty et al. 2021), :func:`affinity_rows`:
``Z_{i->j} = 1 - L_j(after a step of g_i) / L_j``, ``affinity`` for ``i != j``
and ``self_affinity`` for ``i == j`` (kept apart so that averaging ``affinity``
rows never mixes in the much larger diagonal).

The applied update, :func:`update_rows` (``task_j = "update"``): the update
``d = sum_k a_k g_k`` a loss combination would apply, against each task's gradient:

* ``update_cosine``: ``<d, g_i> / (|d| |g_i|)``; NaN when either is zero.
* ``update_conflict``: 1.0 when that cosine is negative: the update raises
  task ``i``'s loss to first order.

Gate health, :func:`gate_rows` (group ``"gate"``, ``task_i`` = gate key), from
one gate's ``(batch, experts)`` weights:

* ``gate_weight``: mean weight of expert ``e`` over the batch, ``task_j = f"expert{e}"``.
* ``gate_entropy``: batch mean of ``-sum_e w_e ln w_e`` (nats; ``0 ln 0 = 0``), ``task_j`` = gate key.
* ``gate_alarm``: 1.0 when one expert receives more than 90 % of the gate's
  mean weight (``max_e gate_weight > 0.9``), else 0.0; ``task_j`` = gate key.
  Not reported for a single-expert gate, which routes everything trivially.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from mtl_bench.schema import ALL

Row = tuple[str, str, str, str, float]
"""One record: ``(task_i, task_j, group, measure, value)``."""

GATE_GROUP = "gate"
UPDATE = "update"  # task_j of the applied-update measures
ALARM_SHARE = 0.9


def pairs(t: int) -> list[tuple[int, int]]:
    """Every ordered pair ``(i, j)``, ``i != j``, of ``t`` tasks, row by row."""
    return [(i, j) for i in range(t) for j in range(t) if i != j]


def cosine(gij: float, gii: float, gjj: float) -> float:
    """Cosine from a dot product and two squared norms, clipped to [-1, 1]; NaN when a norm is zero."""
    ni, nj = math.sqrt(max(gii, 0.0)), math.sqrt(max(gjj, 0.0))
    return float("nan") if ni == 0 or nj == 0 else float(np.clip(gij / (ni * nj), -1.0, 1.0))


def magnitude_similarity(gii: float, gjj: float) -> float:
    """``2 |g_i| |g_j| / (|g_i|^2 + |g_j|^2)`` from the two squared norms; NaN when both are zero."""
    ni, nj = math.sqrt(max(gii, 0.0)), math.sqrt(max(gjj, 0.0))
    denom = gii + gjj
    return float("nan") if denom == 0 else 2.0 * ni * nj / denom


def conflict(cos: float) -> float:
    """1.0 when ``cos`` is negative, 0.0 otherwise, NaN when it is NaN."""
    return float("nan") if math.isnan(cos) else float(cos < 0)


def conflict_rows(names: Sequence[str], gram: np.ndarray, group: str) -> list[Row]:
    """``cosine``, ``conflict`` and ``magnitude_similarity`` of every ordered pair from one ``(T, T)`` Gram matrix."""
    rows = []
    for i, j in pairs(len(names)):
        cos = cosine(gram[i, j], gram[i, i], gram[j, j])
        rows.append((names[i], names[j], group, "cosine", cos))
        rows.append((names[i], names[j], group, "conflict", conflict(cos)))
        rows.append((names[i], names[j], group, "magnitude_similarity", magnitude_similarity(gram[i, i], gram[j, j])))
    return rows


def halves_rows(names: Sequence[str], gram: np.ndarray) -> list[Row]:
    """Noise-floor measures from the ``(2T, 2T)`` Gram matrix of the half-A then half-B gradients."""
    t = len(names)
    rows = []
    for i, n in enumerate(names):
        cos = cosine(gram[i, t + i], gram[i, i], gram[t + i, t + i])
        rows.append((n, n, ALL, "cosine_floor", cos))
        rows.append((n, n, ALL, "conflict_floor", conflict(cos)))
    for i, j in pairs(t):
        ab = cosine(gram[i, t + j], gram[i, i], gram[t + j, t + j])
        ba = cosine(gram[t + i, j], gram[t + i, t + i], gram[j, j])
        cos = 0.5 * (ab + ba)
        rows.append((names[i], names[j], ALL, "cosine_halves", cos))
        rows.append((names[i], names[j], ALL, "conflict_halves", conflict(cos)))
    return rows


def affinity_rows(names: Sequence[str], losses: np.ndarray, after: np.ndarray) -> list[Row]:
    """``Z_{i->j} = 1 - after[i, j] / losses[j]`` for every ``(i, j)``: ``affinity`` off the diagonal,
    ``self_affinity`` on it; NaN where ``losses[j]`` is 0.

    Args:
        names: The tasks.
        losses: ``L_j`` before the step, shape ``(T,)``.
        after: ``after[i, j]``: ``L_j`` after one step of task ``i``'s gradient, shape ``(T, T)``.
    """
    rows = []
    for i in range(len(names)):
        for j in range(len(names)):
            z = 1.0 - after[i, j] / losses[j] if losses[j] != 0 else float("nan")
            rows.append((names[i], names[j], ALL, "self_affinity" if i == j else "affinity", float(z)))
    return rows


def update_rows(names: Sequence[str], gram: np.ndarray, coefficients: np.ndarray) -> list[Row]:
    """``update_cosine`` and ``update_conflict`` of ``d = sum_k a_k g_k`` against each ``g_i``, from the Gram matrix.

    ``<d, g_i> = (G a)_i`` and ``|d|^2 = a^T G a``, so no gradient is needed.
    """
    a = np.asarray(coefficients, np.float64)
    dot = gram @ a
    norm_d = math.sqrt(max(float(a @ gram @ a), 0.0))
    rows = []
    for i, n in enumerate(names):
        norm_i = math.sqrt(max(float(gram[i, i]), 0.0))
        cos = float("nan") if norm_d == 0 or norm_i == 0 else float(np.clip(dot[i] / (norm_d * norm_i), -1, 1))
        rows.append((n, UPDATE, ALL, "update_cosine", cos))
        rows.append((n, UPDATE, ALL, "update_conflict", conflict(cos)))
    return rows


def gate_rows(key: str, weights: np.ndarray) -> list[Row]:
    """``gate_weight`` per expert, ``gate_entropy`` and (two experts or more) ``gate_alarm`` of one gate."""
    w = np.asarray(weights, np.float64).reshape(weights.shape[0], -1)
    mean = w.mean(axis=0)
    safe = np.where(w > 0, w, 1.0)
    entropy = float(np.mean(-np.sum(np.where(w > 0, w * np.log(safe), 0.0), axis=1)))
    rows = [(key, f"expert{e}", GATE_GROUP, "gate_weight", float(m)) for e, m in enumerate(mean)]
    rows.append((key, key, GATE_GROUP, "gate_entropy", entropy))
    if w.shape[1] >= 2:
        rows.append((key, key, GATE_GROUP, "gate_alarm", float(mean.max() > ALARM_SHARE)))
    return rows
