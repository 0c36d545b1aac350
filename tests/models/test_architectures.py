"""The model contract of every architecture (outputs, gates, variable ownership, saving, arguments)."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_bench.models import ARCHITECTURES, MMoE, MultiTaskModel, OMoE, PLE, SharedBottom, SingleTask
from mtl_bench.errors import UserInputError
from mtl_bench.spec import FeatureSpec, Task

# (architecture, constructor arguments); small widths keep the suite fast.
CASES: dict[str, tuple[str, dict]] = {
    "single_task": ("single_task", {}),
    "shared_bottom": ("shared_bottom", {}),
    "mmoe": ("mmoe", {}),
    "omoe": ("omoe", {}),
    "ple1": ("ple", {"num_levels": 1}),
    "ple2": ("ple", {}),
    "ple3": ("ple", {"num_levels": 3, "num_task_experts": 1, "num_shared_experts": 2, "expert_units": 6}),
}
GATED = ["mmoe", "omoe", "ple1", "ple2", "ple3"]


def _make(case: str, spec: FeatureSpec, tasks: tuple[Task, ...], **extra) -> MultiTaskModel:
    arch, kwargs = CASES[case]
    if arch == "single_task":
        tasks = tasks[:1]
    return ARCHITECTURES[arch](features=spec, tasks=tasks, **kwargs, **extra)


def _np(x) -> np.ndarray:
    return keras.ops.convert_to_numpy(x)


def _ids(variables) -> list[int]:
    return [id(v) for v in variables]


def test_registry_is_a_plain_dict() -> None:
    assert type(ARCHITECTURES) is dict
    assert set(ARCHITECTURES) == {"single_task", "shared_bottom", "mmoe", "omoe", "ple", "esmm"}
    assert all(issubclass(cls, MultiTaskModel) for cls in ARCHITECTURES.values())


# ---------------------------------------------------------------------- outputs


@pytest.mark.parametrize("case", CASES)
def test_outputs_are_one_column_per_task(case: str, spec, tasks, batch) -> None:
    model = _make(case, spec, tasks)
    out = model(batch)
    assert set(out) == set(model.task_names)
    assert model.task_names == tuple(t.name for t in model.tasks)
    for task in model.tasks:
        value = _np(out[task.name])
        assert value.shape == (16, 1)
        assert np.all(np.isfinite(value))
        if task.kind == "binary":
            assert np.all((value > 0) & (value < 1))


@pytest.mark.parametrize("case", CASES)
def test_builds_on_first_call_inside_tf_function(case: str, spec, tasks, batch) -> None:
    model = _make(case, spec, tasks, dropout=0.3)
    step = tf.function(lambda x: model(x, training=True))
    out = step(batch)
    assert model.built and model.trainable_variables
    eager = model(batch, training=False)
    for name in model.task_names:
        assert out[name].shape == eager[name].shape == (16, 1)


@pytest.mark.parametrize(
    "features",
    [
        FeatureSpec(numeric=("a", "b"), numeric_mean=(0.0, 1.0), numeric_std=(1.0, 2.0)),
        FeatureSpec(categorical=("c",), vocabulary_sizes=(4,)),
    ],
    ids=["numeric_only", "categorical_only"],
)
@pytest.mark.parametrize("case", ["mmoe", "ple2"])
def test_feature_dict_with_one_kind_of_feature(case: str, features, tasks, make_batch) -> None:
    model = _make(case, features, tasks)
    x = make_batch(features, n=5)
    assert set(x) == set(features.keys)
    assert all(_np(v).shape == (5, 1) for v in model(x).values())
    assert ("embedding" in model.variable_groups) == bool(features.categorical)


# ------------------------------------------------------------------------ gates


@pytest.mark.parametrize("case", GATED)
def test_gates_are_distributions(case: str, spec, tasks, batch) -> None:
    model = _make(case, spec, tasks)
    gates = model.gates(batch)
    assert gates
    for value in gates.values():
        value = _np(value)
        assert value.shape[0] == 16
        assert np.all(value >= 0)
        np.testing.assert_allclose(value.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("case", ["single_task", "shared_bottom"])
def test_gate_less_models_report_no_gates(case: str, spec, tasks, batch) -> None:
    assert _make(case, spec, tasks).gates(batch) == {}


def test_linear_bottom_is_a_product_of_the_kernels(spec, tasks, batch) -> None:
    """With a linear bottom and linear heads a regression output is x_in · W_bottom · w_head + biases."""
    model = SharedBottom(spec, tasks, bottom_units=1, tower_units=0, bottom_activation="linear")
    out = model(batch)
    hidden = _np(model.input_block(batch)) @ _np(model.bottom.kernel) + _np(model.bottom.bias)
    tower = model.towers[1]  # "dwell": regression, a linear output
    np.testing.assert_allclose(_np(out["dwell"]), hidden @ _np(tower.output_layer.kernel) + _np(tower.output_layer.bias),
                               rtol=1e-5, atol=1e-6)
    assert model.get_config()["bottom_activation"] == "linear"


def test_mmoe_gate_keys_and_sizes(spec, tasks, batch) -> None:
    mmoe = MMoE(spec, tasks, num_experts=5)
    gates = mmoe.gates(batch)
    assert set(gates) == {"click", "dwell"}
    assert all(_np(g).shape == (16, 5) for g in gates.values())
    assert not np.allclose(_np(gates["click"]), _np(gates["dwell"]))


def test_omoe_has_one_gate_shared_by_all_tasks(spec, tasks, batch) -> None:
    omoe = OMoE(spec, tasks, num_experts=5)
    gates = omoe.gates(batch)
    np.testing.assert_array_equal(_np(gates["click"]), _np(gates["dwell"]))
    assert omoe.shared_gate
    assert _ids(omoe.variable_groups["gate"]) == _ids(omoe.gate_layers[0].trainable_variables)
    for name, tower in zip(omoe.task_names, omoe.towers):
        assert _ids(omoe.task_variables[name]) == _ids(tower.trainable_variables)


def test_ple_gate_keys_and_sizes(spec, tasks, batch) -> None:
    m_t, m_s, levels = 3, 2, 3
    ple = PLE(spec, tasks, num_levels=levels, num_task_experts=m_t, num_shared_experts=m_s)
    gates = ple.gates(batch)
    expected = {f"{t}/level{l}" for t in ("click", "dwell") for l in (1, 2, 3)} | {"shared/level1", "shared/level2"}
    assert set(gates) == expected
    for key, value in gates.items():
        size = len(tasks) * m_t + m_s if key.startswith("shared/") else m_t + m_s
        assert _np(value).shape == (16, size)


# ------------------------------------------------------------ exact equivalences


def test_one_expert_mmoe_equals_shared_bottom_of_that_width(spec, tasks, batch) -> None:
    width = 12
    mmoe = MMoE(spec, tasks, num_experts=1, expert_units=width, tower_units=5)
    bottom = SharedBottom(spec, tasks, bottom_units=width, tower_units=5)
    mmoe(batch), bottom(batch)
    bottom.input_block.set_weights(mmoe.input_block.get_weights())
    kernel, bias = mmoe.experts.get_weights()
    bottom.bottom.set_weights([kernel[0], bias[0]])
    for source, target in zip(mmoe.towers, bottom.towers):
        target.set_weights(source.get_weights())
    expected, out = mmoe(batch), bottom(batch)
    for name in mmoe.task_names:
        np.testing.assert_allclose(_np(out[name]), _np(expected[name]), rtol=1e-6, atol=1e-6)


def _perturb(variable: keras.Variable) -> None:
    variable.assign(variable + np.random.default_rng(9).normal(size=variable.shape).astype("float32"))


@pytest.mark.parametrize("changed", [0, 1])
def test_one_level_ple_routes_task_experts_to_their_task_only(changed: int, spec, tasks, batch) -> None:
    ple = PLE(spec, tasks, num_levels=1, num_task_experts=2, num_shared_experts=3)
    before = {k: _np(v) for k, v in ple(batch).items()}
    assert _np(ple.gates(batch)["click/level1"]).shape == (16, 2 + 3)
    _perturb(ple.levels[0].task_experts[changed].kernel)
    after = {k: _np(v) for k, v in ple(batch).items()}
    for k, name in enumerate(ple.task_names):
        if k == changed:
            assert not np.allclose(after[name], before[name])
        else:
            np.testing.assert_array_equal(after[name], before[name])


def test_two_level_ple_task_experts_reach_other_tasks_only_below_the_last_level(spec, tasks, batch) -> None:
    ple = PLE(spec, tasks, num_levels=2)
    before = _np(ple(batch)["click"])
    _perturb(ple.levels[1].task_experts[1].kernel)  # dwell's last-level experts
    np.testing.assert_array_equal(_np(ple(batch)["click"]), before)
    _perturb(ple.levels[0].task_experts[1].kernel)  # dwell's level-1 experts feed the shared gate
    assert not np.allclose(_np(ple(batch)["click"]), before)


# ---------------------------------------------------------------- variables


@pytest.mark.parametrize("case", CASES)
def test_variables_are_partitioned(case: str, spec, tasks, batch) -> None:
    model = _make(case, spec, tasks)
    model(batch)
    shared = _ids(model.shared_variables)
    per_task = [_ids(v) for v in model.task_variables.values()]
    assert set(model.task_variables) == set(model.task_names)
    everything = shared + [i for ids in per_task for i in ids]
    assert len(everything) == len(set(everything))
    assert sorted(everything) == sorted(_ids(model.trainable_variables))
    groups = model.variable_groups
    assert set(groups) <= {"embedding", "dense", "gate"} and all(groups.values())
    grouped = [i for g in groups.values() for i in _ids(g)]
    assert sorted(grouped) == sorted(shared) and len(grouped) == len(set(grouped))
    assert all(model.task_variables.values())


def test_single_task_model_has_no_shared_variables(spec, tasks, batch) -> None:
    model = SingleTask(spec, tasks[:1])
    model(batch)
    assert model.shared_variables == [] and model.variable_groups == {}
    assert _ids(model.task_variables["click"]) and sorted(_ids(model.task_variables["click"])) == sorted(
        _ids(model.trainable_variables)
    )


@pytest.mark.parametrize("case", CASES)
def test_ownership_matches_gradient_flow(case: str, spec, tasks, make_batch) -> None:
    """A variable is shared exactly when two tasks' outputs have a gradient with respect to it."""
    model = _make(case, spec, tasks)
    x = make_batch(spec, n=64, seed=3)
    model(x)
    variables = model.trainable_variables
    reached: dict[int, set[str]] = {id(v): set() for v in variables}
    for name in model.task_names:
        with tf.GradientTape() as tape:
            total = tf.reduce_sum(model(x)[name])
        for v, g in zip(variables, tape.gradient(total, variables)):
            if g is not None and np.any(_np(tf.convert_to_tensor(g)) != 0):
                reached[id(v)].add(name)
    assert all(reached.values())
    assert sorted(_ids(model.shared_variables)) == sorted(i for i, r in reached.items() if len(r) >= 2)
    for name, owned in model.task_variables.items():
        assert sorted(_ids(owned)) == sorted(i for i, r in reached.items() if r == {name})


def test_multi_task_architecture_with_one_task_shares_nothing(spec, tasks, batch) -> None:
    model = MMoE(spec, tasks[:1])
    model(batch)
    assert model.shared_variables == []
    assert sorted(_ids(model.task_variables["click"])) == sorted(_ids(model.trainable_variables))


def test_variable_lists_build_the_model(spec, tasks) -> None:
    model = MMoE(spec, tasks)
    assert not model.built
    assert model.shared_variables and model.built


def test_experts_start_different_in_models(spec, tasks, batch) -> None:
    mmoe = MMoE(spec, tasks)
    mmoe(batch)
    kernel = _np(mmoe.experts.kernel)
    assert len({kernel[e].tobytes() for e in range(kernel.shape[0])}) == kernel.shape[0]
    ple = PLE(spec, tasks)
    ple(batch)
    level = ple.levels[0]
    kernels = [_np(level.shared_experts.kernel)] + [_np(e.kernel) for e in level.task_experts]
    flat = [k[e].tobytes() for k in kernels for e in range(k.shape[0])]
    assert len(set(flat)) == len(flat)


# ------------------------------------------------------------- parameter counts


def _input_width(spec: FeatureSpec, e: int) -> int:
    return len(spec.numeric) + len(spec.categorical) * e


def _tower_params(input_width: int, hidden: int) -> int:
    return (input_width * hidden + hidden) + (hidden + 1) if hidden else input_width + 1


def _shared_bottom_params(spec: FeatureSpec, t: int, e: int, b: int, h: int) -> int:
    d = _input_width(spec, e)
    return sum(spec.vocabulary_sizes) * e + b * (d + 1) + t * _tower_params(b, h)


def _mmoe_params(spec: FeatureSpec, t: int, e: int, n_exp: int, u: int, h: int, gates: int) -> int:
    d = _input_width(spec, e)
    return sum(spec.vocabulary_sizes) * e + n_exp * u * (d + 1) + gates * n_exp * (d + 1) + t * _tower_params(u, h)


def _ple_params(spec: FeatureSpec, t: int, e: int, levels: int, m_t: int, m_s: int, u: int, h: int) -> int:
    d = _input_width(spec, e)
    total = sum(spec.vocabulary_sizes) * e + t * _tower_params(u, h)
    for level in range(1, levels + 1):
        width = d if level == 1 else u
        total += (t * m_t + m_s) * u * (width + 1)  # experts
        total += t * (m_t + m_s) * (width + 1)  # task gates
        if level < levels:
            total += (t * m_t + m_s) * (width + 1)  # shared gate
    return total


@pytest.mark.parametrize("e,b,h", [(8, 20, 8), (3, 7, 0)])
def test_shared_bottom_parameter_count(spec, tasks, batch, e: int, b: int, h: int) -> None:
    model = SharedBottom(spec, tasks, bottom_units=b, tower_units=h, embedding_dim=e)
    model(batch)
    assert model.count_params() == _shared_bottom_params(spec, 2, e, b, h)


@pytest.mark.parametrize("n_exp,u,h,e", [(8, 16, 8, 8), (3, 5, 0, 2)])
def test_mmoe_and_omoe_parameter_counts(spec, tasks, batch, n_exp: int, u: int, h: int, e: int) -> None:
    kwargs = dict(num_experts=n_exp, expert_units=u, tower_units=h, embedding_dim=e)
    mmoe, omoe = MMoE(spec, tasks, **kwargs), OMoE(spec, tasks, **kwargs)
    mmoe(batch), omoe(batch)
    assert mmoe.count_params() == _mmoe_params(spec, 2, e, n_exp, u, h, gates=2)
    assert omoe.count_params() == _mmoe_params(spec, 2, e, n_exp, u, h, gates=1)


@pytest.mark.parametrize("levels,m_t,m_s", [(1, 2, 3), (2, 2, 2), (3, 1, 4)])
def test_ple_parameter_count(spec, tasks, batch, levels: int, m_t: int, m_s: int) -> None:
    model = PLE(spec, tasks, num_levels=levels, num_task_experts=m_t, num_shared_experts=m_s, expert_units=6)
    model(batch)
    assert model.count_params() == _ple_params(spec, 2, 8, levels, m_t, m_s, 6, 8)


@pytest.mark.parametrize("embedding_dim", [2, 8, 32])
@pytest.mark.parametrize("num_tasks", [1, 2, 3])
def test_default_shared_bottom_is_parameter_matched_to_default_mmoe(
    spec, make_batch, embedding_dim: int, num_tasks: int
) -> None:
    tasks = tuple(Task(f"t{i}", f"t{i}", "binary") for i in range(num_tasks))
    d = _input_width(spec, embedding_dim)
    # Experts + gates + towers' first layers of MMoE(8 x 16), over the per-unit cost of a bottom unit.
    expected = round((8 * 16 * (d + 1) + num_tasks * 8 * (d + 1) + num_tasks * 8 * 16) / (d + 1 + num_tasks * 8))
    bottom = SharedBottom(spec, tasks, embedding_dim=embedding_dim)
    mmoe = MMoE(spec, tasks, embedding_dim=embedding_dim)
    x = make_batch(spec, n=2)
    bottom(x), mmoe(x)
    assert bottom.resolved_bottom_units == expected
    assert abs(bottom.count_params() - mmoe.count_params()) <= (d + 1 + num_tasks * 8) / 2
    if num_tasks == 1:
        single = SingleTask(spec, tasks, embedding_dim=embedding_dim)
        assert single.resolved_bottom_units == expected


# --------------------------------------------------------------------- saving


@pytest.mark.parametrize("case", CASES)
def test_keras_file_round_trip(case: str, spec, tasks, batch, tmp_path) -> None:
    model = _make(case, spec, tasks, dropout=0.2, embedding_dim=3)
    expected = {k: _np(v) for k, v in model(batch).items()}
    path = tmp_path / f"{case}.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    assert type(restored) is type(model)
    assert restored.get_config() == model.get_config()
    assert restored.features == spec and restored.tasks == model.tasks
    for name, value in restored(batch).items():
        np.testing.assert_array_equal(_np(value), expected[name])
    assert len(restored.shared_variables) == len(model.shared_variables)
    assert {k: len(v) for k, v in restored.task_variables.items()} == {
        k: len(v) for k, v in model.task_variables.items()
    }


# -------------------------------------------------------------- bad arguments


BAD_ARGUMENTS: list[tuple[str, dict]] = [
    ("mmoe", {"num_experts": 0}),
    ("mmoe", {"expert_units": 0}),
    ("mmoe", {"tower_units": -1}),
    ("mmoe", {"dropout": -0.1}),
    ("mmoe", {"dropout": 1.0}),
    ("mmoe", {"embedding_dim": 0}),
    ("mmoe", {"num_experts": 2.5}),
    ("mmoe", {"shared_gate": "yes"}),
    ("omoe", {"num_experts": 0}),
    ("shared_bottom", {"bottom_units": 0}),
    ("shared_bottom", {"dropout": -0.5}),
    ("shared_bottom", {"bottom_activation": "gelu"}),
    ("single_task", {"bottom_units": -3}),
    ("ple", {"num_levels": 0}),
    ("ple", {"num_task_experts": 0}),
    ("ple", {"num_shared_experts": 0}),
    ("ple", {"expert_units": 0}),
    ("mmoe", {"num_experts": 100_000_000}),  # once hung a run allocating the experts' kernel
    ("ple", {"expert_units": 4097}),
    ("shared_bottom", {"bottom_units": 10**9}),
    ("mmoe", {"embedding_dim": 5000}),
]


@pytest.mark.parametrize("arch,kwargs", BAD_ARGUMENTS, ids=[f"{a}-{k}" for a, k in BAD_ARGUMENTS])
def test_bad_hyper_parameters_raise(arch: str, kwargs: dict, spec, tasks) -> None:
    tasks = tasks[:1] if arch == "single_task" else tasks
    with pytest.raises(ValueError, match="Received:"):
        ARCHITECTURES[arch](features=spec, tasks=tasks, **kwargs)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda spec, tasks: MMoE(spec, tasks, num_experts=0),
         "MMoE: num_experts must be an integer in [1, 4096]. Received: num_experts=0"),
        (lambda spec, tasks: OMoE(spec, tasks, num_experts=4097),
         "OMoE: num_experts must be an integer in [1, 4096]. Received: num_experts=4097"),
        (lambda spec, tasks: PLE(spec, tasks, dropout=1.0), "PLE: dropout must be a number in [0, 1). Received: dropout=1.0"),
        (lambda spec, tasks: SharedBottom(spec, tasks, tower_units=-1),
         "SharedBottom: tower_units must be an integer in [0, 4096]. Received: tower_units=-1"),
        (lambda spec, tasks: SharedBottom(spec, tasks, bottom_activation="gelu"),
         "SharedBottom: bottom_activation must be one of ['relu', 'linear', 'tanh']. Received: bottom_activation='gelu'"),
        (lambda spec, tasks: MMoE(spec, tasks, shared_gate=1), "MMoE: shared_gate must be a bool. Received: shared_gate=1"),
        (lambda spec, tasks: SingleTask(spec, tasks), "SingleTask: tasks must be exactly one task. Received: tasks="),
    ],
)
def test_bad_arguments_fail_in_the_one_format(make: Callable, message: str, spec, tasks) -> None:
    with pytest.raises(UserInputError) as err:
        make(spec, tasks)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(
    "make",
    [
        lambda spec, tasks: SingleTask(spec, tasks),
        lambda spec, tasks: MMoE(spec, ()),
        lambda spec, tasks: SharedBottom(spec, (tasks[0], tasks[0])),
        lambda spec, tasks: MMoE(spec, tasks[0]),
        lambda spec, tasks: MMoE("spec", tasks),
        lambda spec, tasks: PLE(spec, (Task("shared", "y", "binary"), tasks[0])),
    ],
    ids=[
        "single_task_two_tasks", "empty_tasks", "duplicate_names", "task_not_sequence", "bad_features", "ple_reserved"
    ],
)
def test_bad_features_or_tasks_raise(make: Callable, spec, tasks) -> None:
    with pytest.raises(ValueError, match="Received:"):
        make(spec, tasks)


@pytest.mark.parametrize("arch", sorted(set(ARCHITECTURES) - {"esmm"}))  # ESMM needs a click/conversion pair: test_esmm.py
def test_defaults_build(arch: str, spec, tasks) -> None:
    cls = ARCHITECTURES[arch]
    model = cls(spec, tasks[:1] if arch == "single_task" else tasks)
    assert model.embedding_dim == 8
    if arch in ("mmoe", "omoe"):
        assert (model.num_experts, model.expert_units, model.tower_units) == (8, 16, 8)
    if arch == "ple":
        assert (model.num_levels, model.num_task_experts, model.num_shared_experts) == (2, 2, 2)
        assert (model.expert_units, model.tower_units) == (16, 8)
