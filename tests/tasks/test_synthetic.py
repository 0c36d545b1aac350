"""The synthetic suite against the formulas of the MMoE paper's generator (§3.2)."""

import inspect

import numpy as np
import pytest

from mtl_bench.errors import UserInputError
from mtl_bench.tasks import SUITES, synthetic

SMALL = dict(dim=16, train_rows=300, validation_rows=100, test_rows=100)


def _labels(data, split="train"):
    s = getattr(data, split)
    return np.column_stack([s.labels[t.name] for t in data.tasks])


def _weights(data):
    """Weight vectors recovered from noise-free linear labels: y_k = X w_k exactly, so least squares gives w_k."""
    x = data.train.features["numeric"].astype(np.float64)
    w, *_ = np.linalg.lstsq(x, _labels(data).astype(np.float64), rcond=None)
    return w.T


def test_registry_signatures_are_keyword_only_with_defaults():
    assert set(SUITES) == {"synthetic", "census-income", "table", "recsim", "planted", "movielens"}
    for name, factory in SUITES.items():
        params = inspect.signature(factory).parameters
        assert "seed" in params and params["seed"].default == 0, name
        for p in params.values():
            assert p.kind is inspect.Parameter.KEYWORD_ONLY, (name, p.name)
            assert p.default is not inspect.Parameter.empty, (name, p.name)


def test_shapes_names_and_spec():
    data = synthetic.load(seed=0, **SMALL)
    assert data.name == "synthetic" and data.variant == {"correlation": 0.5, "dim": 16, "train_rows": 300,
                                                          "validation_rows": 100, "test_rows": 100}
    assert [t.name for t in data.tasks] == ["task1", "task2"]
    assert all(t.kind == "regression" and t.metric == "mse" for t in data.tasks)
    assert data.features.numeric == tuple(f"x{i}" for i in range(16))
    assert data.features.categorical == ()
    assert set(data.train.features) == {"numeric"}
    assert (len(data.train), len(data.validation), len(data.test)) == (300, 100, 100)
    x = data.train.features["numeric"]
    assert x.dtype == np.float32 and data.train.labels["task1"].dtype == np.float32
    np.testing.assert_allclose(data.features.numeric_mean, x.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(data.features.numeric_std, x.std(axis=0), rtol=1e-4)


def test_default_variant_is_the_correlation():
    data = synthetic.load(correlation=1.0)
    assert data.variant == {"correlation": 1.0}
    assert (len(data.train), len(data.validation), len(data.test)) == (8000, 2000, 2000)
    assert data.features.numeric[-1] == "x99"


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = synthetic.load(seed=3, **SMALL), synthetic.load(seed=3, **SMALL), synthetic.load(seed=4, **SMALL)
    for split in ("train", "validation", "test"):
        np.testing.assert_array_equal(getattr(a, split).features["numeric"], getattr(b, split).features["numeric"])
        np.testing.assert_array_equal(_labels(a, split), _labels(b, split))
    assert not np.array_equal(a.train.features["numeric"], c.train.features["numeric"])
    assert not np.array_equal(_labels(a), _labels(c))


@pytest.mark.parametrize("p", [1.0, 0.5, 0.0, -0.5])
def test_weight_vectors_follow_the_formula(p):
    scale = 2.0
    data = synthetic.load(seed=1, correlation=p, scale=scale, num_sines=0, noise_std=0.0, **SMALL)
    w1, w2 = _weights(data)
    # |w_k| = c and w1·w2 = c²p, i.e. cos(w1, w2) = p.
    np.testing.assert_allclose([np.linalg.norm(w1), np.linalg.norm(w2)], [scale, scale], rtol=1e-4)
    np.testing.assert_allclose(w1 @ w2, scale**2 * p, atol=1e-4)


@pytest.mark.parametrize("p", [1.0, 0.5, 0.0, -0.5])
def test_label_correlation_is_p_without_sines(p):
    n = 20000
    data = synthetic.load(seed=2, correlation=p, num_sines=0, noise_std=1e-4, dim=20,
                          train_rows=n, validation_rows=10, test_rows=10)
    corr = np.corrcoef(_labels(data).T)[0, 1]
    # Sample correlation of a bivariate normal: standard error (1 - p²)/sqrt(n) < 0.008.
    assert abs(corr - p) < 0.03


def test_three_tasks_reproduce_a_correlation_matrix():
    matrix = [[1.0, 0.8, -0.3], [0.8, 1.0, 0.1], [-0.3, 0.1, 1.0]]
    data = synthetic.load(seed=5, correlation_matrix=matrix, num_sines=0, noise_std=0.0,
                          dim=10, train_rows=20000, validation_rows=10, test_rows=10)
    assert [t.name for t in data.tasks] == ["task1", "task2", "task3"]
    assert "correlation_matrix" in data.variant and "correlation" not in data.variant
    w = _weights(data)
    np.testing.assert_allclose(w @ w.T, matrix, atol=1e-4)
    np.testing.assert_allclose(np.corrcoef(_labels(data).T), matrix, atol=0.03)


def test_equicorrelated_three_tasks():
    data = synthetic.load(seed=0, correlation=0.3, num_tasks=3, num_sines=0, noise_std=0.0, **SMALL)
    w = _weights(data)
    expected = np.full((3, 3), 0.3) + 0.7 * np.eye(3)
    np.testing.assert_allclose(w @ w.T, expected, atol=1e-4)
    assert data.variant["num_tasks"] == 3


def test_sines_and_noise_change_labels_but_not_inputs():
    base = synthetic.load(seed=0, num_sines=0, noise_std=0.0, **SMALL)
    sines = synthetic.load(seed=0, num_sines=3, noise_std=0.0, **SMALL)
    np.testing.assert_array_equal(base.train.features["numeric"], sines.train.features["numeric"])
    residual = _labels(sines) - _labels(base)
    # Each label gains a sum of 3 sines: bounded by 3 and not zero.
    assert np.abs(residual).max() <= 3 + 1e-5 and np.abs(residual).max() > 0.1


def test_cholesky_psd_handles_singular_matrices():
    for p in (1.0, -1.0, 0.5):
        r = np.array([[1.0, p], [p, 1.0]])
        factor = synthetic.cholesky_psd(r)
        np.testing.assert_allclose(factor @ factor.T, r, atol=1e-12)
        np.testing.assert_allclose(factor, [[1.0, 0.0], [p, np.sqrt(1 - p * p)]], atol=1e-12)


@pytest.mark.parametrize(
    "params, fragment",
    [
        (dict(correlation=1.5), "correlation"),
        (dict(correlation=-1.01), "correlation"),
        (dict(correlation=-0.9, num_tasks=3), "correlation"),
        (dict(num_tasks=1), "num_tasks"),
        (dict(dim=1), "dim"),
        (dict(dim=3, num_tasks=4), "dim"),
        (dict(train_rows=0), "train_rows"),
        (dict(validation_rows=-5), "validation_rows"),
        (dict(test_rows=1.5), "test_rows"),
        (dict(scale=0.0), "scale"),
        (dict(noise_std=-1.0), "noise_std"),
        (dict(num_sines=-1), "num_sines"),
        (dict(correlation="high"), "correlation"),
        (dict(correlation_matrix=[[1.0, 0.5], [0.4, 1.0]]), "symmetric"),
        (dict(correlation_matrix=[[2.0, 0.5], [0.5, 1.0]]), "correlation_matrix"),
        (dict(correlation_matrix=[[0.9, 0.5], [0.5, 0.9]]), "unit diagonal"),
        (dict(correlation_matrix=[[1, 0.9, -0.9], [0.9, 1, 0.9], [-0.9, 0.9, 1]]), "positive semi-definite"),
        (dict(correlation_matrix=[[1.0, 0.5]]), "square"),
        (dict(correlation_matrix=[[1.0, 0.5], [0.5, 1.0]], correlation=0.2), "not both"),
        (dict(correlation_matrix=[[1.0, 0.5], [0.5, 1.0]], num_tasks=3), "num_tasks"),
    ],
)
def test_bad_parameters_raise_user_input_error(params, fragment):
    with pytest.raises(UserInputError, match=fragment) as info:
        synthetic.load(**params)
    message = str(info.value)
    assert "\n" not in message and "Received" in message


def test_correlation_sweep_is_paired_at_one_seed():
    # Changing p keeps u_1, u_2, x and noise: the inputs are identical and, as w1 = c·u1 for every p, so is y1.
    a = synthetic.load(seed=7, correlation=0.0, num_sines=0, **SMALL)
    b = synthetic.load(seed=7, correlation=1.0, num_sines=0, **SMALL)
    np.testing.assert_array_equal(a.train.features["numeric"], b.train.features["numeric"])
    np.testing.assert_allclose(a.train.labels["task1"], b.train.labels["task1"], atol=1e-6)
    # With p = 1, w2 = w1: the two labels differ only by the noise (std 0.01 each).
    assert np.abs(b.train.labels["task1"] - b.train.labels["task2"]).max() < 0.1
