"""Shared preprocessing helpers: train-only statistics, vocabularies, seeded splits."""

import numpy as np
import pandas as pd
import pytest

from mtl_bench.errors import UserInputError
from mtl_bench.spec import Task
from mtl_bench.tasks import _common


def test_fit_numeric_floors_constant_columns():
    x = np.array([[1.0, 5.0, np.nan], [3.0, 5.0, 2.0], [5.0, 5.0, 4.0]])
    mean, std = _common.fit_numeric(x)
    np.testing.assert_allclose(mean, [3.0, 5.0, 3.0])
    np.testing.assert_allclose(std, [np.sqrt(8 / 3), 1.0, 1.0])  # constant column -> 1; NaN ignored


def test_vocabulary_by_frequency_then_value():
    values = ["b", "a", "c", "a", "b", "d", None, np.nan, "c", "a"]
    assert _common.build_vocabulary(values) == ["a", "b", "c", "d"]  # a:3, then b, c (2, tie by value), d:1
    assert _common.build_vocabulary(values, min_count=2) == ["a", "b", "c"]
    assert _common.build_vocabulary(values, max_vocabulary=2) == ["a", "b"]
    ids = _common.encode_categorical(["a", "d", "zz", None, "c"], ["a", "b", "c"])
    np.testing.assert_array_equal(ids, [1, 0, 0, 0, 3])
    assert ids.dtype == np.int32


def test_numbers_are_compared_as_strings():
    vocab = _common.build_vocabulary(pd.Series([1, 2, 2]))
    assert vocab == ["2", "1"]
    np.testing.assert_array_equal(_common.encode_categorical(pd.Series(["1", "2", "3"]), vocab), [2, 1, 0])


def test_random_split_is_a_seeded_partition():
    train, val, test = _common.random_split(101, 0.2, 0.1, seed=4)
    assert (len(train), len(val), len(test)) == (101 - 20 - 10, 20, 10)
    assert sorted(np.concatenate([train, val, test])) == list(range(101))
    again = _common.random_split(101, 0.2, 0.1, seed=4)
    other = _common.random_split(101, 0.2, 0.1, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))
    assert not np.array_equal(test, other[2])


def test_assemble_fits_on_train_only():
    values = np.array([0.0, 2.0, 100.0, 200.0])
    cats = ["x", "x", "y", "z"]
    data = _common.assemble(
        name="t", variant={}, tasks=(Task("a", "a", "regression"),), labels={"a": values},
        splits=(np.array([1, 0]), np.array([2]), np.array([3])),
        numeric={"v": values}, categorical={"c": cats},
    )
    assert data.features.numeric_mean == (1.0,) and data.features.numeric_std == (1.0,)
    assert data.features.vocabulary_sizes == (2,)
    np.testing.assert_array_equal(data.train.features["numeric"][:, 0], [2.0, 0.0])  # rows in split order
    assert data.validation.features["categorical"][0, 0] == 0 and data.test.features["categorical"][0, 0] == 0
    with pytest.raises(UserInputError, match="validation split is empty"):
        _common.assemble(name="t", variant={}, tasks=(Task("a", "a", "regression"),), labels={"a": values},
                         splits=(np.array([0, 1]), np.array([], dtype=int), np.array([3])), numeric={"v": values})


def test_depends_on_names_another_binary_task():
    assert Task("buy", "buy", "binary", depends_on="click").depends_on == "click"
    with pytest.raises(UserInputError, match=r"Task 'buy': depends_on must be the name of another task. Received: depends_on='buy'"):
        Task("buy", "buy", "binary", depends_on="buy")
    with pytest.raises(UserInputError, match="empty for a regression task"):
        Task("dwell", "dwell", "regression", depends_on="click")
    assert Task.from_dict(Task("buy", "buy", "binary", depends_on="click").to_dict()).depends_on == "click"
