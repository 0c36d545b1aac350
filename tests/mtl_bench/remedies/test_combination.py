"""Each loss-combination method against its paper's formula, on hand-made gradient vectors."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_bench.errors import UserInputError
from mtl_bench.remedies import combination as comb
from mtl_bench.spec import Task

TASKS2 = (Task("a", "a", "binary"), Task("b", "b", "regression"))
TASKS3 = (*TASKS2, Task("c", "c", "binary"))


def _built(cls, tasks=TASKS2, weights=None, **kw):
    method = cls(**kw)
    method.build(tasks, weights or [1.0] * len(tasks), seed=3)
    return method


def _update(method, vectors, step=0, update=True):
    g = np.asarray(vectors, np.float64)
    a = method.coefficients(tf.constant(g @ g.T, tf.float32), tf.constant(step, tf.int64), update=update).numpy()
    return a @ g


def _pcgrad_reference(g: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """Yu et al. 2020, Algorithm 1, on the vectors themselves."""
    out = np.zeros_like(g[0])
    for i in range(len(g)):
        gi = g[i].copy()
        for j in orders[i]:
            if j != i and gi @ g[j] < 0:
                gi -= (gi @ g[j]) / (g[j] @ g[j]) * g[j]
        out += gi
    return out


def test_static_and_equal_coefficients_are_the_weights():
    static = _built(comb.Static, weights=[2.0, 0.5])
    equal = _built(comb.Equal, weights=[2.0, 0.5])
    g = [[1.0, 0.0], [0.0, 1.0]]
    np.testing.assert_allclose(_update(static, g), [2.0, 0.5])
    np.testing.assert_allclose(_update(equal, g), [1.0, 1.0])
    losses = tf.constant([0.3, 0.7])
    assert float(static.objective(losses)) == pytest.approx(2.0 * 0.3 + 0.5 * 0.7)
    assert float(equal.objective(losses)) == pytest.approx(1.0)


def test_pcgrad_two_conflicting_tasks_by_hand():
    # g1.g2 = -1 < 0: g1' = g1 + g2/2 = (0.5, 0.5), g2' = g2 + g1 = (0, 1); both now orthogonal to the other's g.
    g = np.array([[1.0, 0.0], [-1.0, 1.0]])
    d = _update(_built(comb.PCGrad), g)
    np.testing.assert_allclose(d, [0.5, 1.5], atol=1e-6)
    g1p, g2p = np.array([0.5, 0.5]), np.array([0.0, 1.0])
    assert g1p @ g[1] == pytest.approx(0.0) and g2p @ g[0] == pytest.approx(0.0)
    assert np.all(g @ d >= -1e-6)  # the update no longer raises either loss


def test_pcgrad_leaves_agreeing_gradients_alone():
    g = np.array([[1.0, 0.2], [0.5, 1.0]])
    np.testing.assert_allclose(_update(_built(comb.PCGrad), g), g.sum(axis=0), atol=1e-6)


def test_pcgrad_three_tasks_matches_algorithm_with_its_random_order():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(3, 6))
    method = _built(comb.PCGrad, TASKS3)
    for step in range(5):
        orders = comb._orders(3, method.seed, tf.constant(step, tf.int64)).numpy()
        np.testing.assert_allclose(_update(method, g, step), _pcgrad_reference(g, orders), atol=1e-5)
    a5 = _update(method, g, 5)
    np.testing.assert_array_equal(a5, _update(method, g, 5))  # same step, same order


def test_pcgrad_acts_on_weighted_gradients():
    g = np.array([[1.0, 0.0], [-1.0, 1.0]])
    w = np.array([2.0, 0.5])
    d = _update(_built(comb.PCGrad, weights=list(w)), g)
    np.testing.assert_allclose(d, _pcgrad_reference(g * w[:, None], np.array([[0, 1], [1, 0]])), atol=1e-6)


def test_gradvac_reaches_its_target_cosine_and_updates_the_ema():
    method = _built(comb.GradVac, beta=0.1)
    method.targets.assign([[0.0, 0.5], [0.5, 0.0]])
    g = np.array([[1.0, 0.0], [0.0, 3.0]])
    d = _update(method, g, update=False)
    # g1' = g1 + k g2 with cos(g1', g2) = 0.5: k |g2| / |g1'| = 0.5, k = |g1| / (|g2| sqrt(3)).
    k1 = 1.0 / (3.0 * math.sqrt(3.0))
    k2 = 3.0 / math.sqrt(3.0)
    g1p, g2p = g[0] + k1 * g[1], g[1] + k2 * g[0]
    cos = lambda u, v: u @ v / np.linalg.norm(u) / np.linalg.norm(v)  # noqa: E731
    assert cos(g1p, g[1]) == pytest.approx(0.5) and cos(g2p, g[0]) == pytest.approx(0.5)
    np.testing.assert_allclose(d, g1p + g2p, rtol=1e-5)
    np.testing.assert_allclose(method.targets.numpy(), [[0.0, 0.5], [0.5, 0.0]])  # update=False
    _update(method, g)
    np.testing.assert_allclose(method.targets.numpy(), [[0.0, 0.45], [0.45, 0.0]], atol=1e-6)  # 0.9*0.5 + 0.1*0


def test_gradvac_with_zero_targets_only_lifts_conflicting_pairs():
    method = _built(comb.GradVac)
    agree = np.array([[1.0, 0.2], [0.3, 1.0]])
    np.testing.assert_allclose(_update(method, agree, update=False), agree.sum(axis=0), atol=1e-6)
    conflict = np.array([[1.0, 0.0], [-1.0, 1.0]])
    # Target 0 makes each g_i' orthogonal to g_j: PCGrad's projection when phi < 0.
    np.testing.assert_allclose(_update(method, conflict, update=False), [0.5, 1.5], atol=1e-5)


def _cagrad_check(g: np.ndarray, alpha: float) -> None:
    method = _built(comb.CAGrad, tasks=TASKS3[: len(g)], alpha=alpha)
    d = _update(method, g) * (1 + alpha**2)  # undo the rescale
    g0 = g.mean(axis=0)
    radius = alpha * np.linalg.norm(g0)
    assert np.linalg.norm(d - g0) == pytest.approx(radius, rel=1e-3, abs=1e-6)
    # CAGrad's d maximises the worst task's improvement min_i <g_i, d> over the ball |d - g0| <= radius.
    rng = np.random.default_rng(1)
    u = rng.normal(size=(20000, g.shape[1]))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    candidates = g0 + radius * u
    best_sampled = (candidates @ g.T).min(axis=1).max()
    assert (g @ d).min() >= best_sampled - 1e-3 * np.abs(g).max() ** 2


def test_cagrad_maximises_the_worst_task_in_its_ball():
    _cagrad_check(np.array([[1.0, 0.0], [-0.8, 0.6]]), 0.5)
    _cagrad_check(np.random.default_rng(2).normal(size=(3, 3)), 0.4)


def test_cagrad_with_alpha_zero_is_the_mean_gradient():
    g = np.array([[1.0, 0.0], [-0.8, 0.6]])
    np.testing.assert_allclose(_update(_built(comb.CAGrad, alpha=0.0), g), g.mean(axis=0), atol=1e-5)


def test_uncertainty_objective_and_coefficients():
    method = _built(comb.Uncertainty)  # task a binary (c = 1), b regression (c = 1/2)
    method.log_variance.assign([0.5, -1.0])
    losses = tf.constant([0.4, 2.0])
    expected = math.exp(-0.5) * 0.4 + 0.25 + 0.5 * math.exp(1.0) * 2.0 - 0.5
    assert float(method.objective(losses)) == pytest.approx(expected, rel=1e-6)
    a = method.coefficients(tf.eye(2), tf.constant(0, tf.int64)).numpy()
    np.testing.assert_allclose(a, [math.exp(-0.5), 0.5 * math.exp(1.0)], rtol=1e-6)
    # d objective / d s_k = -c_k exp(-s_k) L_k + 1/2 vanishes at s_k = log(2 c_k L_k).
    method.log_variance.assign([math.log(2 * 0.4), math.log(2 * 0.5 * 2.0)])
    with tf.GradientTape() as tape:
        value = method.objective(losses)
    np.testing.assert_allclose(tape.gradient(value, method.log_variance).numpy(), [0.0, 0.0], atol=1e-6)


@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda: comb.GradVac(beta=0.0), "GradVac: beta must be a number in (0, 1]. Received: beta=0.0"),
        (lambda: comb.GradVac(beta=True), "GradVac: beta must be a number in (0, 1]. Received: beta=True"),
        (lambda: comb.CAGrad(alpha=-1), "CAGrad: alpha must be a finite number >= 0. Received: alpha=-1"),
        (lambda: comb.CAGrad(alpha=float("inf")), "CAGrad: alpha must be a finite number >= 0. Received: alpha=inf"),
    ],
)
def test_bad_arguments(factory, message):
    with pytest.raises(UserInputError) as err:
        factory()
    assert str(err.value) == message


def test_build_needs_one_weight_per_task():
    with pytest.raises(ValueError, match="one weight per task"):
        comb.Static().build(TASKS2, [1.0])


def test_trainer_applies_the_pcgrad_update_to_the_shared_variables():
    """One Adam step moves each weight by -lr * sign(gradient): PCGrad's for the shared ones."""
    from mtl_bench.models import ARCHITECTURES
    from mtl_bench.tasks import SUITES
    from mtl_bench.engine.training import Trainer

    data = SUITES["synthetic"](seed=0, correlation=0.0, train_rows=64, validation_rows=32, test_rows=32)
    keras.utils.set_random_seed(5)  # an initialisation whose task gradients conflict (cosine -0.03)
    model = ARCHITECTURES["shared_bottom"](features=data.features, tasks=data.tasks)
    trainer = Trainer(model, data.tasks, learning_rate=1e-3, combination=comb.PCGrad(), seed=0)
    train = data.train
    x = {k: tf.constant(v) for k, v in train.features.items()}
    shared = list(model.shared_variables)
    model(x)
    with tf.GradientTape(persistent=True) as tape:
        pred = model(x, training=True)
        losses = [t.loss_fn()(train.labels[t.name][:, None].astype(np.float32), pred[t.name]) for t in data.tasks]
    per_task = [np.concatenate([tape.gradient(l, v).numpy().ravel() for v in shared]) for l in losses]
    g = np.stack(per_task).astype(np.float64)
    # The engine's first step draws the task order at global step 0.
    orders = comb._orders(2, 0, tf.constant(0, tf.int64)).numpy()
    d = _pcgrad_reference(g, orders)
    before = np.concatenate([v.numpy().ravel() for v in shared])
    trainer.fit(train, data.validation, epochs=1, batch_size=64, seed=0, patience=0)
    # fit restores the best epoch's weights: with one epoch, the weights after its one step.
    after = np.concatenate([v.numpy().ravel() for v in shared])
    big = np.abs(d) > 1e-4  # Adam's first step is -lr * g / (|g| + eps): the sign, where |g| >> eps
    assert big.sum() > 10
    np.testing.assert_allclose((after - before)[big], -1e-3 * np.sign(d[big]), atol=5e-5)
    # The tasks conflict here, so PCGrad's direction differs from the plain sum's on some weights.
    assert g[0] @ g[1] < 0
    flipped = big & (np.sign(d) != np.sign(g.sum(axis=0))) & (np.abs(g.sum(axis=0)) > 1e-4)
    assert flipped.sum() > 0
    np.testing.assert_array_equal(np.sign(after - before)[flipped], -np.sign(d[flipped]))


def test_cagrad_refuses_xla():
    from mtl_bench.models import ARCHITECTURES
    from mtl_bench.tasks import SUITES
    from mtl_bench.engine.training import Trainer

    data = SUITES["synthetic"](seed=0, correlation=0.0, train_rows=64, validation_rows=32, test_rows=32)
    model = ARCHITECTURES["shared_bottom"](features=data.features, tasks=data.tasks)
    with pytest.raises(UserInputError, match="Trainer: jit_compile must be False with CAGrad"):
        Trainer(model, data.tasks, learning_rate=1e-3, combination=comb.CAGrad(), jit_compile=True)


def _gradvac_reference(g: np.ndarray, orders: np.ndarray, targets: np.ndarray, beta: float):
    """Wang et al. 2021, Algorithm 1 (whole-model granularity), on the vectors themselves."""
    targets = targets.copy()
    out = np.zeros_like(g[0])
    for i in range(len(g)):
        gi = g[i].copy()
        for j in orders[i]:
            if j == i:
                continue
            phi = gi @ g[j] / (np.linalg.norm(gi) * np.linalg.norm(g[j]))
            t = targets[i, j]
            if phi < t:
                gi = gi + np.linalg.norm(gi) * (t * np.sqrt(1 - phi**2) - phi * np.sqrt(1 - t**2)) / (
                    np.linalg.norm(g[j]) * np.sqrt(1 - t**2)) * g[j]
            targets[i, j] = (1 - beta) * t + beta * phi
        out += gi
    return out, targets


def test_gradvac_three_tasks_over_steps_matches_the_algorithm():
    rng = np.random.default_rng(4)
    method = _built(comb.GradVac, TASKS3, weights=[1.0, 2.0, 0.5], beta=0.3)
    w = np.array([1.0, 2.0, 0.5])
    targets = np.zeros((3, 3))
    for step in range(6):
        g = rng.normal(size=(3, 5))
        orders = comb._orders(3, method.seed, tf.constant(step, tf.int64)).numpy()
        expected, targets = _gradvac_reference(g * w[:, None], orders, targets, 0.3)
        np.testing.assert_allclose(_update(method, g, step), expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(method.targets.numpy(), targets, atol=1e-5)


@pytest.mark.parametrize(
    "remedy",
    ["uncertainty", "gradvac", "cagrad", "distill", "kl-anchor"],
)
def test_each_joint_remedy_changes_the_training(remedy):
    """Two epochs of the joint regime: every remedy's weights differ from the baseline's."""
    from mtl_bench.config import RunConfig
    from mtl_bench.models import ARCHITECTURES
    from mtl_bench.engine.regimes import REGIMES, Job
    from mtl_bench.remedies import REMEDIES
    from mtl_bench.tasks import SUITES

    data = SUITES["synthetic"](seed=0, correlation=0.0, train_rows=256, validation_rows=64, test_rows=64)
    config = RunConfig(epochs=2, patience=0, batch_size=64, probe_every=0)
    finals = {}
    for name in ("none", remedy):
        job = Job(data, "shared_bottom", ARCHITECTURES["shared_bottom"], {}, (), 0, config, remedy=REMEDIES[name])
        rows = REGIMES["joint"].run(job).rows
        finals[name] = [r["value"] for r in rows if r["stage"] == "final"]
    assert finals["none"] != finals[remedy]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(tasks=()), "Trainer: tasks must be a non-empty sequence of Task. Received: tasks=()"),
        (dict(learning_rate=0), "Trainer: learning_rate must be a finite number > 0. Received: learning_rate=0"),
        (dict(learning_rate=float("nan")), "Trainer: learning_rate must be a finite number > 0. Received: learning_rate=nan"),
    ],
)
def test_trainer_checks_its_arguments_before_touching_the_model(kwargs, message):
    from mtl_bench.engine.training import Trainer

    with pytest.raises(UserInputError) as err:
        Trainer(None, **{"tasks": TASKS2, "learning_rate": 1e-3, **kwargs})
    assert str(err.value) == message
