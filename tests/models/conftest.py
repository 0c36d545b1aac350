"""Small feature specs, tasks and batches shared by the model tests."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from mtl_bench.spec import FeatureSpec, Task

VOCABULARY_SIZES = (5, 7)
NUM_NUMERIC = 3


@pytest.fixture(autouse=True)
def _seed() -> None:
    keras.utils.set_random_seed(1234)


@pytest.fixture
def spec() -> FeatureSpec:
    return FeatureSpec(
        numeric=("age", "price", "hour"),
        numeric_mean=(30.0, -2.0, 12.0),
        numeric_std=(10.0, 0.5, 6.0),
        categorical=("country", "device"),
        vocabulary_sizes=VOCABULARY_SIZES,
    )


@pytest.fixture
def tasks() -> tuple[Task, ...]:
    return (Task("click", "click", "binary"), Task("dwell", "dwell", "regression"))


def _make_batch(spec: FeatureSpec, n: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """A feature dict with the spec's layout: raw numeric values and in-range ids."""
    rng = np.random.default_rng(seed)
    batch = {}
    if spec.numeric:
        mean, std = np.asarray(spec.numeric_mean), np.asarray(spec.numeric_std)
        batch["numeric"] = (mean + std * rng.normal(size=(n, len(spec.numeric)))).astype("float32")
    if spec.categorical:
        batch["categorical"] = np.stack(
            [rng.integers(0, v, size=n) for v in spec.vocabulary_sizes], axis=1
        ).astype("int32")
    return batch


@pytest.fixture
def make_batch():
    """``make_batch(spec, n=16, seed=0)``: a feature dict for ``spec``."""
    return _make_batch


@pytest.fixture
def batch(spec: FeatureSpec) -> dict[str, np.ndarray]:
    return _make_batch(spec)
