"""Building blocks: InputBlock, Experts, Gate, Tower and CGC, checked against numpy."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from mtl_bench.models import CGC, Experts, Gate, InputBlock, Tower
from mtl_bench.spec import FeatureSpec


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _randomize(layer: keras.layers.Layer, seed: int = 0) -> None:
    """Sets every weight (biases included) to a non-trivial value."""
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(scale=0.5, size=w.shape).astype("float32") for w in layer.get_weights()])


# ------------------------------------------------------------------ InputBlock


def test_input_block_normalises_and_embeds_like_numpy(spec: FeatureSpec, batch: dict) -> None:
    block = InputBlock(spec, embedding_dim=4)
    out = keras.ops.convert_to_numpy(block(batch))
    table = keras.ops.convert_to_numpy(block.embedding.embeddings)

    numeric = (batch["numeric"] - np.array(spec.numeric_mean)) / np.array(spec.numeric_std)
    offsets = np.cumsum((0,) + spec.vocabulary_sizes[:-1])
    embedded = [table[offsets[j] + batch["categorical"][:, j]] for j in range(len(spec.categorical))]
    expected = np.concatenate([numeric, *embedded], axis=1)

    assert out.shape == (16, 3 + 2 * 4)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def test_input_block_reads_out_of_range_ids_as_unknown(spec: FeatureSpec, batch: dict) -> None:
    block = InputBlock(spec, embedding_dim=2)
    bad = dict(batch, categorical=np.array([[5, -1], [0, 0]], dtype="int32"), numeric=batch["numeric"][:2])
    out = keras.ops.convert_to_numpy(block(bad))[:, 3:]
    np.testing.assert_array_equal(out[0], out[1])  # column 0 id 5 >= vocab 5, column 1 id -1: both id 0


def test_input_block_params_and_constants(spec: FeatureSpec, batch: dict) -> None:
    block = InputBlock(spec, embedding_dim=6)
    block(batch)
    assert block.count_params() == sum(spec.vocabulary_sizes) * 6
    assert len(block.trainable_variables) == 1  # the normalisation is not trained
    assert block.output_dim == len(spec.numeric) + len(spec.categorical) * 6


def test_input_block_numeric_only_has_no_weights() -> None:
    spec = FeatureSpec(numeric=("a",), numeric_mean=(1.0,), numeric_std=(2.0,))
    block = InputBlock(spec)
    out = keras.ops.convert_to_numpy(block({"numeric": np.array([[5.0], [1.0]], dtype="float32")}))
    np.testing.assert_allclose(out, [[2.0], [0.0]])
    assert block.count_params() == 0


def test_input_block_rejects_wrong_width(spec: FeatureSpec) -> None:
    with pytest.raises(ValueError, match="Received:"):
        InputBlock(spec).build({"numeric": (None, 4), "categorical": (None, 2)})


# --------------------------------------------------------------------- Experts


def test_experts_match_numpy() -> None:
    layer = Experts(num_experts=3, units=5)
    x = np.random.default_rng(1).normal(size=(4, 6)).astype("float32")
    layer.build(x.shape)
    _randomize(layer)
    kernel, bias = layer.get_weights()
    expected = np.stack([_relu(x @ kernel[e] + bias[e]) for e in range(3)], axis=1)
    out = keras.ops.convert_to_numpy(layer(x))
    assert out.shape == (4, 3, 5)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert layer.count_params() == 3 * (6 * 5 + 5)


@pytest.mark.parametrize("initializer", ["glorot_uniform", keras.initializers.GlorotUniform(seed=7)])
def test_experts_start_different_and_initialised_like_dense(initializer) -> None:
    num_experts, input_dim, units = 8, 64, 16
    layer = Experts(num_experts, units, kernel_initializer=initializer)
    layer.build((None, input_dim))
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    for a in range(num_experts):
        for b in range(a + 1, num_experts):
            assert not np.allclose(kernel[a], kernel[b])
    # Glorot uniform of one Dense(units): U(-l, l), l = sqrt(6 / (fan_in + fan_out)).
    limit = np.sqrt(6.0 / (input_dim + units))
    limit_if_fans_times_e = np.sqrt(6.0 / (num_experts * (input_dim + units)))
    assert np.abs(kernel).max() <= limit
    for e in range(num_experts):
        assert np.abs(kernel[e]).max() > limit_if_fans_times_e
        np.testing.assert_allclose(kernel[e].std(), limit / np.sqrt(3.0), rtol=0.1)


# ------------------------------------------------------------------------ Gate


def test_gate_matches_numpy_softmax() -> None:
    layer = Gate(num_experts=4)
    x = np.random.default_rng(2).normal(size=(5, 3)).astype("float32")
    layer.build(x.shape)
    _randomize(layer)
    kernel, bias = layer.get_weights()
    out = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(out, _softmax(x @ kernel + bias), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-6)
    assert layer.count_params() == 3 * 4 + 4


# ----------------------------------------------------------------------- Tower


@pytest.mark.parametrize("kind", ["binary", "regression"])
def test_tower_matches_numpy(kind: str) -> None:
    layer = Tower(kind, hidden_units=8)
    x = np.random.default_rng(3).normal(size=(6, 5)).astype("float32")
    layer.build(x.shape)
    _randomize(layer)
    w1, b1, w2, b2 = layer.get_weights()
    logit = _relu(x @ w1 + b1) @ w2 + b2
    expected = 1.0 / (1.0 + np.exp(-logit)) if kind == "binary" else logit
    out = keras.ops.convert_to_numpy(layer(x))
    assert out.shape == (6, 1)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert layer.count_params() == (5 * 8 + 8) + (8 + 1)


def test_tower_without_hidden_layer_is_one_unit() -> None:
    layer = Tower("regression", hidden_units=0, dropout=0.5)
    layer.build((None, 5))
    assert layer.count_params() == 5 + 1


def test_tower_dropout_only_in_training() -> None:
    layer = Tower("regression", hidden_units=64, dropout=0.5)
    x = np.ones((4, 3), dtype="float32")
    layer.build(x.shape)
    _randomize(layer)
    a = keras.ops.convert_to_numpy(layer(x, training=False))
    np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(layer(x)))
    assert not np.allclose(a, keras.ops.convert_to_numpy(layer(x, training=True)))


# ------------------------------------------------------------------------- CGC


def test_cgc_matches_numpy() -> None:
    num_tasks, m_t, m_s, units, d = 2, 2, 3, 4, 5
    layer = CGC(num_tasks, m_t, m_s, units, shared_gate=True)
    rng = np.random.default_rng(4)
    inputs = [rng.normal(size=(3, d)).astype("float32") for _ in range(num_tasks + 1)]
    layer.build([x.shape for x in inputs])
    for sub in [*layer.task_experts, *layer.task_gates, layer.shared_experts, layer.shared_gate_layer]:
        _randomize(sub, seed=len(sub.name))
    result = {k: v for k, v in layer(inputs).items()}

    def experts(sub, x):
        kernel, bias = sub.get_weights()
        return np.stack([_relu(x @ kernel[e] + bias[e]) for e in range(kernel.shape[0])], axis=1)

    def gate(sub, x):
        kernel, bias = sub.get_weights()
        return _softmax(x @ kernel + bias)

    shared = experts(layer.shared_experts, inputs[-1])
    own = [experts(layer.task_experts[k], inputs[k]) for k in range(num_tasks)]
    for k in range(num_tasks):
        w = gate(layer.task_gates[k], inputs[k])
        assert w.shape == (3, m_t + m_s)
        expected = np.einsum("be,beu->bu", w, np.concatenate([own[k], shared], axis=1))
        np.testing.assert_allclose(keras.ops.convert_to_numpy(result["tasks"][k]), expected, rtol=1e-5, atol=1e-6)
    w = gate(layer.shared_gate_layer, inputs[-1])
    assert w.shape == (3, num_tasks * m_t + m_s)
    expected = np.einsum("be,beu->bu", w, np.concatenate([*own, shared], axis=1))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(result["shared"]), expected, rtol=1e-5, atol=1e-6)


def test_cgc_last_level_has_no_shared_gate() -> None:
    layer = CGC(2, 1, 1, 4, shared_gate=False)
    x = np.zeros((2, 3), dtype="float32")
    result = layer([x, x, x])
    assert set(result) == {"tasks", "task_gates"}


# ----------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    "make",
    [
        lambda: Experts(num_experts=0, units=4),
        lambda: Experts(num_experts=2, units=0),
        lambda: Experts(num_experts=True, units=4),
        lambda: Experts(num_experts=2, units=4097),
        lambda: Gate(num_experts=100_000_000),
        lambda: Gate(num_experts=0),
        lambda: Tower("ordinal"),
        lambda: Tower("binary", hidden_units=-1),
        lambda: Tower("binary", dropout=-0.1),
        lambda: Tower("binary", dropout=1.0),
        lambda: CGC(0, 1, 1, 4),
        lambda: CGC(2, 0, 1, 4),
        lambda: CGC(2, 1, 0, 4),
        lambda: CGC(2, 1, 1, 4, shared_gate="yes"),
        lambda: InputBlock({"numeric": ["a"], "numeric_mean": [0.0], "numeric_std": [1.0]}, embedding_dim=0),
        lambda: InputBlock("not a spec"),
    ],
)
def test_layers_reject_bad_arguments(make) -> None:
    with pytest.raises(ValueError, match="Received:"):
        make()


@pytest.mark.parametrize(
    "layer",
    [
        Experts(3, 4, kernel_initializer=keras.initializers.HeNormal(seed=1)),
        Gate(3),
        Tower("binary", 4, 0.25),
        CGC(2, 1, 3, 4, shared_gate=False),
    ],
    ids=["experts", "gate", "tower", "cgc"],
)
def test_layer_config_round_trip(layer: keras.layers.Layer) -> None:
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer)


def test_input_block_config_round_trip(spec: FeatureSpec) -> None:
    layer = InputBlock(spec, embedding_dim=3)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert restored.features == spec and restored.embedding_dim == 3
