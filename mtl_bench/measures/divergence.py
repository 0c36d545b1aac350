"""The KL divergence between two sets of predictions of one task, in numpy: the measured KL.

For a binary task the predictions are probabilities, clipped to
``[PROB_EPS, 1 - PROB_EPS]`` (:data:`mtl_bench.schema.PROB_EPS`, the clip of
Keras and of the engine's log-loss), and the per-row KL is the Bernoulli
``p ln(p/q) + (1-p) ln((1-p)/(1-q))``. For a regression task the predictions
are the means of unit-variance Gaussians and the per-row KL is ``(q - p)^2 / 2``.
Values are in nats, computed in float64.

The training loss of the ``kl-anchor`` remedy is the same divergence with the
same clip, in TensorFlow: :func:`mtl_bench.remedies.anchors.kl_divergence`.
"""

from __future__ import annotations

import numpy as np

from mtl_bench.schema import PROB_EPS
from mtl_bench.validation import check_choice

KINDS: tuple[str, ...] = ("binary", "regression")


def kl_divergence(kind: str, reference: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """Per-row ``KL(reference || prediction)``, flattened, float64.

    Args:
        kind: ``"binary"`` (Bernoulli, on clipped probabilities) or ``"regression"``
            (unit-variance Gaussians).
        reference: The predictions the divergence is taken from.
        prediction: The predictions on the same rows, same size.

    Returns:
        One value per row, in nats.
    """
    check_choice("kl_divergence", "kind", kind, KINDS)
    p = np.asarray(reference, np.float64).reshape(-1)
    q = np.asarray(prediction, np.float64).reshape(-1)
    if kind == "regression":
        return (q - p) ** 2 / 2
    p = np.clip(p, PROB_EPS, 1 - PROB_EPS)
    q = np.clip(q, PROB_EPS, 1 - PROB_EPS)
    return p * (np.log(p) - np.log(q)) + (1 - p) * (np.log1p(-p) - np.log1p(-q))


def output_drift(before: np.ndarray, after: np.ndarray, kind: str) -> float:
    """Mean KL(before || after) between one task's predictions before and after a phase (RL's Razor).

    Args:
        before: Predictions on some inputs before the phase.
        after: Predictions on the same inputs after the phase.
        kind: ``"binary"`` or ``"regression"``: see :func:`kl_divergence`.

    Returns:
        The mean over examples, in nats (0 = unchanged outputs).
    """
    check_choice("output_drift", "kind", kind, KINDS)
    p = np.asarray(before).reshape(-1)
    q = np.asarray(after).reshape(-1)
    if p.shape != q.shape or p.size == 0:
        raise ValueError(f"output_drift: before and after need the same non-zero size. Received: {p.size}, {q.size}")
    return float(np.mean(kl_divergence(kind, p, q)))
