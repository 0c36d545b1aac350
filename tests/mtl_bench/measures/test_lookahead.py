"""Lookahead settings and the damage counterfactual's batches; the damage records are tested with the probe."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from mtl_bench.errors import UserInputError
from mtl_bench.measures.lookahead import Damage, Lookahead, check_lookahead
from mtl_bench.measures.probe import ConflictProbe
from mtl_bench.spec import Task

TASKS = (Task("a", "a", "binary"), Task("b", "b", "binary"), Task("c", "c", "regression"))
NAMES = [t.name for t in TASKS]


def make_data(n: int):
    rng = np.random.default_rng(0)
    x = {"numeric": rng.normal(size=(n, 4)).astype(np.float32)}
    y = {name: rng.random(n).astype(np.float32) for name in NAMES}
    return x, y


def settings(n: int = 8, **change) -> dict:
    x, y = make_data(n)
    base = dict(features=x, labels=y, optimizer=keras.optimizers.SGD(0.1), loss_weights={"a": 1, "b": 1, "c": 1})
    return {**base, **change}


@pytest.mark.parametrize(
    "change, match",
    [
        ({"steps": 0}, "Lookahead: steps must be an integer >= 1. Received: steps=0"),
        ({"batch_size": 0}, "batch_size"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"steps": 2.0}, "steps"),
        ({"optimizer": "adam"}, "Lookahead: optimizer must be a keras.optimizers.Optimizer"),
        ({"features": {}}, "features"),
    ],
)
def test_settings_are_checked_at_once(change, match):
    with pytest.raises(UserInputError, match=match):
        Lookahead(**settings(**change))


@pytest.mark.parametrize(
    "change, match",
    [
        ({"loss_weights": {"a": 1.0}}, "loss_weights"),
        ({"loss_weights": {"a": 1.0, "b": float("nan"), "c": 1.0}}, "loss_weights"),
        ({"labels": {"a": np.zeros(8, np.float32)}}, "labels"),
        ({"labels": {n: np.zeros((8, 2), np.float32) for n in NAMES}}, r"labels\['a'\]"),
        ({"labels": {n: np.zeros(7, np.float32) for n in NAMES}}, "one non-zero length"),
    ],
)
def test_labels_and_weights_are_checked_against_the_probed_tasks(change, match):
    lookahead = Lookahead(**settings(**change))
    with pytest.raises(UserInputError, match=match):
        check_lookahead(lookahead, NAMES)
    x, y = make_data(8)
    with pytest.raises(ValueError, match=match):
        ConflictProbe(x, y, TASKS, lookahead=lookahead)


def test_check_returns_the_number_of_training_rows():
    assert check_lookahead(Lookahead(**settings(12)), NAMES) == 12
    with pytest.raises(UserInputError, match="must be a Lookahead"):
        check_lookahead({"steps": 1}, NAMES)


def test_batches_depend_on_seed_and_step_only_and_draw_without_replacement_when_they_can():
    damage = Damage(Lookahead(**settings(10, steps=2, batch_size=3, seed=5)), NAMES)
    first = damage.batches(7).numpy()
    assert first.shape == (2, 3)
    assert len(set(first.ravel())) == 6 and set(first.ravel()) <= set(range(10))
    assert np.array_equal(first, Damage(Lookahead(**settings(10, steps=2, batch_size=3, seed=5)), NAMES).batches(7))
    assert not np.array_equal(first, damage.batches(8).numpy())
    # More rows asked for than there are: drawn with replacement, still within the split.
    small = Damage(Lookahead(**settings(4, steps=3, batch_size=3)), NAMES).batches(0).numpy()
    assert small.shape == (3, 3) and set(small.ravel()) <= set(range(4))
