"""The probe's arithmetic on Gram matrices, losses and gate weights, against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mtl_bench.measures import gradients
from mtl_bench.measures.gradients import GATE_GROUP, UPDATE

NAMES = ("a", "b")
# g_a = (1, 0), g_b = (-1, 1): <g_a, g_b> = -1, |g_a|^2 = 1, |g_b|^2 = 2.
G = np.array([[1.0, 0.0], [-1.0, 1.0]])
GRAM = G @ G.T


def by_measure(rows):
    return {(ti, tj, group, m): v for ti, tj, group, m, v in rows}


def test_pairs_are_ordered_and_off_the_diagonal():
    assert gradients.pairs(3) == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]


def test_cosine_magnitude_and_conflict_by_hand():
    assert gradients.cosine(-1.0, 1.0, 2.0) == pytest.approx(-1 / math.sqrt(2))
    assert gradients.magnitude_similarity(1.0, 2.0) == pytest.approx(2 * math.sqrt(2) / 3)
    assert gradients.magnitude_similarity(4.0, 4.0) == 1.0
    assert gradients.conflict(-0.1) == 1.0 and gradients.conflict(0.0) == 0.0
    # A zero gradient has no direction: cosine and conflict are NaN; magnitude only when both are zero.
    assert math.isnan(gradients.cosine(0.0, 0.0, 2.0)) and math.isnan(gradients.conflict(float("nan")))
    assert gradients.magnitude_similarity(0.0, 2.0) == 0.0 and math.isnan(gradients.magnitude_similarity(0.0, 0.0))
    assert gradients.cosine(2.0 + 1e-12, 1.0, 4.0) == 1.0  # round-off never leaves [-1, 1]


def test_conflict_rows_of_every_ordered_pair():
    rows = by_measure(gradients.conflict_rows(NAMES, GRAM, "dense"))
    assert len(rows) == 2 * 3
    for ti, tj in (("a", "b"), ("b", "a")):
        assert rows[(ti, tj, "dense", "cosine")] == pytest.approx(-1 / math.sqrt(2))
        assert rows[(ti, tj, "dense", "conflict")] == 1.0
        assert rows[(ti, tj, "dense", "magnitude_similarity")] == pytest.approx(2 * math.sqrt(2) / 3)


def test_halves_rows_floor_and_cross_task_cosines():
    # Half A: g_a^A = (1, 0), g_b^A = (0, 1); half B: g_a^B = (1, 1), g_b^B = (0, -1).
    halves = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, -1.0]])
    rows = by_measure(gradients.halves_rows(NAMES, halves @ halves.T))
    assert rows[("a", "a", "all", "cosine_floor")] == pytest.approx(1 / math.sqrt(2))
    assert rows[("a", "a", "all", "conflict_floor")] == 0.0
    assert rows[("b", "b", "all", "cosine_floor")] == pytest.approx(-1.0)
    assert rows[("b", "b", "all", "conflict_floor")] == 1.0
    # cos(g_a^A, g_b^B) = 0 and cos(g_a^B, g_b^A) = 1/sqrt(2): their mean, the same for (b, a).
    for ti, tj in (("a", "b"), ("b", "a")):
        assert rows[(ti, tj, "all", "cosine_halves")] == pytest.approx(0.5 / math.sqrt(2))
        assert rows[(ti, tj, "all", "conflict_halves")] == 0.0


def test_affinity_rows_by_hand():
    losses = np.array([2.0, 4.0])
    after = np.array([[1.0, 5.0], [3.0, 2.0]])  # after[i, j]: L_j after a step of task i
    rows = by_measure(gradients.affinity_rows(NAMES, losses, after))
    assert rows[("a", "a", "all", "self_affinity")] == 0.5
    assert rows[("a", "b", "all", "affinity")] == -0.25
    assert rows[("b", "a", "all", "affinity")] == -0.5
    assert rows[("b", "b", "all", "self_affinity")] == 0.5
    zero = by_measure(gradients.affinity_rows(NAMES, np.array([0.0, 4.0]), after))
    assert math.isnan(zero[("b", "a", "all", "affinity")]) and zero[("a", "b", "all", "affinity")] == -0.25


def test_update_rows_from_the_gram_matrix_match_the_update_vector():
    coef = np.array([1.0, 2.0])
    d = coef @ G  # (-1, 2)
    rows = by_measure(gradients.update_rows(NAMES, GRAM, coef))
    assert rows[("a", UPDATE, "all", "update_cosine")] == pytest.approx(-1 / math.sqrt(5))
    assert rows[("a", UPDATE, "all", "update_conflict")] == 1.0
    assert rows[("b", UPDATE, "all", "update_cosine")] == pytest.approx(d @ G[1] / (np.linalg.norm(d) * math.sqrt(2)))
    assert rows[("b", UPDATE, "all", "update_conflict")] == 0.0
    nothing = by_measure(gradients.update_rows(NAMES, GRAM, np.zeros(2)))
    assert math.isnan(nothing[("a", UPDATE, "all", "update_cosine")])
    assert math.isnan(nothing[("a", UPDATE, "all", "update_conflict")])


def test_gate_rows_weights_entropy_and_alarm():
    rows = by_measure(gradients.gate_rows("t", np.array([[1.0, 0.0], [0.5, 0.5]])))
    assert rows[("t", "expert0", GATE_GROUP, "gate_weight")] == 0.75
    assert rows[("t", "expert1", GATE_GROUP, "gate_weight")] == 0.25
    # Mean of per-row entropies: 0 (0 ln 0 = 0) and ln 2.
    assert rows[("t", "t", GATE_GROUP, "gate_entropy")] == pytest.approx(math.log(2) / 2)
    assert rows[("t", "t", GATE_GROUP, "gate_alarm")] == 0.0
    skewed = by_measure(gradients.gate_rows("t", np.array([[0.95, 0.05]])))
    assert skewed[("t", "t", GATE_GROUP, "gate_alarm")] == 1.0
    single = by_measure(gradients.gate_rows("t", np.ones((3, 1))))
    assert ("t", "t", GATE_GROUP, "gate_alarm") not in single
    assert single[("t", "t", GATE_GROUP, "gate_entropy")] == 0.0
