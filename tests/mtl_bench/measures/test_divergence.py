"""The measured KL (numpy) against hand-computed values, and the kl-anchor loss (TensorFlow) against the same."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
from scipy import integrate, stats

from mtl_bench.measures import retention
from mtl_bench.measures.divergence import kl_divergence, output_drift
from mtl_bench.remedies import anchors
from mtl_bench.schema import PROB_EPS

# KL(Bern(0.2) || Bern(0.6)) = 0.2 ln(0.2/0.6) + 0.8 ln(0.8/0.4) = 0.8 ln 2 - 0.2 ln 3, and
# KL(Bern(0.9) || Bern(0.5)) = 0.9 ln 1.8 + 0.1 ln 0.2, written out by hand.
P = np.array([0.2, 0.9, 0.5])
Q = np.array([0.6, 0.5, 0.5])
BY_HAND = [0.8 * math.log(2) - 0.2 * math.log(3), 0.9 * math.log(1.8) + 0.1 * math.log(0.2), 0.0]
# Gaussians of unit variance: KL(N(m1, 1) || N(m2, 1)) = (m2 - m1)^2 / 2.
MEANS_BEFORE, MEANS_AFTER = np.array([0.0, 1.0]), np.array([0.5, -1.0])
GAUSS_BY_HAND = [0.125, 2.0]


def test_binary_kl_by_hand():
    np.testing.assert_allclose(kl_divergence("binary", P, Q), BY_HAND, rtol=1e-12, atol=1e-15)
    assert output_drift(P, Q, "binary") == pytest.approx(np.mean(BY_HAND), rel=1e-12)
    assert output_drift(P, P, "binary") == 0.0


def test_binary_kl_clips_certain_predictions_at_prob_eps():
    # Clipping keeps certain-but-wrong predictions finite: KL(e || 1 - e) with e = 1e-7.
    assert PROB_EPS == 1e-7
    e = 1e-7
    clipped = e * math.log(e / (1 - e)) + (1 - e) * math.log((1 - e) / e)
    assert output_drift(np.array([0.0]), np.array([1.0]), "binary") == pytest.approx(clipped, rel=1e-9)


def test_output_drift_binary_matches_scipy_entropy():
    p = np.array([0.2, 0.9, 0.5])
    q = np.array([0.3, 0.5, 0.5])
    expected = np.mean([stats.entropy([pi, 1 - pi], [qi, 1 - qi]) for pi, qi in zip(p, q)])
    assert output_drift(p, q, "binary") == pytest.approx(expected, rel=1e-12)


def test_output_drift_regression_matches_gaussian_kl():
    def kl(m1, m2):  # numerical KL(N(m1, 1) || N(m2, 1))
        f = lambda x: stats.norm.pdf(x, m1) * (stats.norm.logpdf(x, m1) - stats.norm.logpdf(x, m2))  # noqa: E731
        return integrate.quad(f, -30, 30)[0]

    expected = np.mean([kl(b, a) for b, a in zip(MEANS_BEFORE, MEANS_AFTER)])
    assert output_drift(MEANS_BEFORE, MEANS_AFTER, "regression") == pytest.approx(expected, rel=1e-6)
    assert output_drift(MEANS_BEFORE, MEANS_AFTER, "regression") == pytest.approx(np.mean(GAUSS_BY_HAND))
    np.testing.assert_allclose(kl_divergence("regression", MEANS_BEFORE, MEANS_AFTER), GAUSS_BY_HAND)


def test_bad_kind_and_sizes():
    with pytest.raises(ValueError, match="kind"):
        output_drift(MEANS_BEFORE, MEANS_AFTER, "ranking")
    with pytest.raises(ValueError, match="kind"):
        kl_divergence("ranking", MEANS_BEFORE, MEANS_AFTER)
    with pytest.raises(ValueError, match="same"):
        output_drift(MEANS_BEFORE, MEANS_AFTER[:1], "binary")


def test_the_kl_anchor_loss_is_the_same_divergence():
    # Float64 tensors: the TF loss and the numpy measure agree with the hand values to double precision,
    # the clip included; float32 (as in training) to float32 rounding.
    for dtype, rtol in ((tf.float64, 1e-12), (tf.float32, 1e-6)):
        got = anchors.kl_divergence("binary", tf.constant(P, dtype), tf.constant(Q, dtype)).numpy()
        np.testing.assert_allclose(got, BY_HAND, rtol=rtol, atol=rtol)
        got = anchors.kl_divergence("regression", tf.constant(MEANS_BEFORE, dtype), tf.constant(MEANS_AFTER, dtype))
        np.testing.assert_allclose(got.numpy(), GAUSS_BY_HAND, rtol=rtol)
    edge = anchors.kl_divergence("binary", tf.constant([0.0], tf.float64), tf.constant([1.0], tf.float64)).numpy()
    np.testing.assert_allclose(edge, kl_divergence("binary", [0.0], [1.0]), rtol=1e-9)


def test_retention_still_exports_output_drift():
    assert retention.output_drift is output_drift
