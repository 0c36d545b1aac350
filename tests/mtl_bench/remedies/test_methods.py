"""MGDA, IMTL-G, Nash-MTL, Aligned-MTL, DB-MTL, GradNorm, DWA, RLW, FAMO against their papers' formulas.

Expected values are worked by hand on tiny gradient vectors / loss histories, or computed
independently (a brute-force simplex grid, an SVD); each method also trains one epoch
on every multi-task architecture.
"""

import itertools
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_bench.engine.training import Trainer
from mtl_bench.models import ARCHITECTURES
from mtl_bench.remedies import REMEDIES
from mtl_bench.remedies import multiobjective as mo
from mtl_bench.remedies import weighting as wt
from mtl_bench.schema import SINGLE_ARCH
from mtl_bench.spec import Task
from mtl_bench.tasks import synthetic

TASKS2 = (Task("a", "a", "binary"), Task("b", "b", "regression"))
TASKS3 = (*TASKS2, Task("c", "c", "binary"))
RNG_G3 = np.random.default_rng(4).normal(size=(3, 5))


def _built(cls, tasks=TASKS2, weights=None, **kw):
    method = cls(**kw)
    method.build(tasks, weights or [1.0] * len(tasks), seed=3)
    return method


def _coef(method, vectors, step=0, losses=None, update=True):
    g = np.asarray(vectors, np.float64)
    kw = {} if losses is None else {"losses": tf.constant(losses, tf.float32)}
    return method.coefficients(tf.constant(g @ g.T, tf.float32), tf.constant(step, tf.int64), update=update, **kw).numpy()


def test_mgda_two_tasks_closed_form():
    # g1=(1,0), g2=(0,2): a1 = (G22 - G12) / (G11 + G22 - 2 G12) = 4/5; d = (0.8, 0.4), <d, g_k> = |d|^2 = 0.8.
    g = np.array([[1.0, 0.0], [0.0, 2.0]])
    a = _coef(_built(mo.MGDA), g)
    np.testing.assert_allclose(a, [0.8, 0.2], atol=1e-6)
    np.testing.assert_allclose(g @ (a @ g), [0.8, 0.8], atol=1e-6)
    # One gradient inside the other's direction: the min-norm point is the shorter one.
    np.testing.assert_allclose(_coef(_built(mo.MGDA), [[1.0, 0.0], [2.0, 0.0]]), [1.0, 0.0], atol=1e-6)


def test_mgda_is_the_min_norm_point_of_the_hull():
    g = RNG_G3
    a = _coef(_built(mo.MGDA, TASKS3), g)
    d = a @ g
    assert a.min() >= 0 and a.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.all(g @ d >= d @ d - 1e-4)  # optimality: no task's loss rises to first order
    # Independent check: no point of a fine simplex grid has a shorter combination.
    grid = np.array([(i, j, 200 - i - j) for i in range(201) for j in range(201 - i)]) / 200.0
    assert d @ d <= np.min(np.einsum("ni,ij,nj->n", grid, g @ g.T, grid)) + 1e-5


def test_imtl_g_equal_projections():
    # g1=(1,0), g2=(0,2): a2 = <g1, u1-u2> / <g1-g2, u1-u2> = 1/3, a1 = 2/3; d = (2/3, 2/3).
    g = np.array([[1.0, 0.0], [0.0, 2.0]])
    a = _coef(_built(mo.IMTLG), g)
    np.testing.assert_allclose(a, [2 / 3, 1 / 3], atol=1e-6)
    d = _coef(_built(mo.IMTLG, TASKS3), RNG_G3) @ RNG_G3
    u = RNG_G3 / np.linalg.norm(RNG_G3, axis=1, keepdims=True)
    proj = u @ d
    np.testing.assert_allclose(proj, np.full(3, proj[0]), rtol=1e-4)


def test_nash_mtl_bargaining_solution():
    # G = diag(1, 4), |G|_F = sqrt(17): a_k (G a)_k / |G|_F = 1 gives a_k = 17^(1/4) / sqrt(G_kk).
    g = np.array([[1.0, 0.0], [0.0, 2.0]])
    a = _coef(_built(mo.NashMTL, max_norm=0.0), g)
    np.testing.assert_allclose(a, [17**0.25, 17**0.25 / 2], rtol=1e-5)
    gram = RNG_G3 @ RNG_G3.T
    a3 = _coef(_built(mo.NashMTL, TASKS3, max_norm=0.0), RNG_G3)
    np.testing.assert_allclose(a3 * (gram / np.linalg.norm(gram) @ a3), np.ones(3), rtol=1e-4)
    # Clipped: |d| = sqrt(T |G|_F) = sqrt(2 sqrt(17)) > 1 becomes 1, same direction.
    clipped = _coef(_built(mo.NashMTL), g)
    assert np.linalg.norm(clipped @ g) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(clipped / clipped[0], a / a[0], rtol=1e-5)


def test_aligned_mtl_condition_number_one_and_svd():
    # g1=(2,0), g2=(0,1): sigma_min = 1, B = diag(1/2, 1), d = (1, 1).
    np.testing.assert_allclose(_coef(_built(mo.AlignedMTL), [[2.0, 0.0], [0.0, 1.0]]), [0.5, 1.0], atol=1e-6)
    gmat = RNG_G3.T  # (P, T)
    b = mo.alignment(tf.constant(RNG_G3 @ RNG_G3.T, tf.float32)).numpy()
    aligned = gmat @ b
    assert np.linalg.cond(aligned.T @ aligned) == pytest.approx(1.0, abs=1e-3)
    u, s, vt = np.linalg.svd(gmat, full_matrices=False)  # independent: G B = sigma_min U V^T
    d = _coef(_built(mo.AlignedMTL, TASKS3), RNG_G3) @ RNG_G3
    np.testing.assert_allclose(d, s.min() * (u @ vt) @ np.ones(3), rtol=1e-3, atol=1e-4)


def test_db_mtl_log_losses_and_largest_norm():
    # h1 = g1/L1 = (2,0), h2 = g2/L2 = (0,1.5); d = 2 (h1/2 + h2/1.5) = (2, 2).
    g = np.array([[1.0, 0.0], [0.0, 3.0]])
    method = _built(mo.DBMTL)
    a = _coef(method, g, losses=[0.5, 2.0])
    np.testing.assert_allclose(a @ g, [2.0, 2.0], rtol=1e-5)
    np.testing.assert_allclose(_coef(method, g), a, rtol=1e-6)  # the probe (no losses) reads the last step's
    assert float(method.objective(tf.constant([0.5, 2.0]))) == pytest.approx(math.log(0.5) + math.log(2.0), rel=1e-5)


def test_gradnorm_weight_gradient_and_first_step():
    g = np.array([[1.0, 0.0], [0.0, 2.0]])  # n = (1, 2), G_bar = 1.5 with lambda = 1
    method = _built(wt.GradNorm)
    a = _coef(method, g, losses=[1.0, 1.0])  # first step: L(0) = L, r = 1, target 1.5: grad (-1, +2)
    np.testing.assert_allclose(a, [1.0, 1.0])
    # Adam's first step is -lr * sign(grad); the sum is already T.
    np.testing.assert_allclose(method.task_weights.numpy(), [1.025, 0.975], rtol=1e-5)
    method.task_weights.assign([1.0, 1.0])
    # L = (0.5, 1): r = (2/3, 4/3); targets 1.5 r^1.5 = (0.816, 2.309): grad = (+1 * 1, -1 * 2).
    grad = method.weight_gradient(tf.constant(g @ g.T, tf.float32), tf.constant([0.5, 1.0])).numpy()
    np.testing.assert_allclose(grad, [1.0, -2.0])


def test_dwa_weights_from_the_last_two_epochs():
    method = _built(wt.DWA)
    np.testing.assert_allclose(_coef(method, np.eye(2)), [1.0, 1.0])
    method.on_epoch_end(np.array([1.0, 1.0]))
    np.testing.assert_allclose(_coef(method, np.eye(2)), [1.0, 1.0])  # still epoch 2
    method.on_epoch_end(np.array([0.5, 1.0]))  # r = (0.5, 1), T = 2
    e1, e2 = math.exp(0.5 / 2), math.exp(1.0 / 2)
    np.testing.assert_allclose(_coef(method, np.eye(2)), [2 * e1 / (e1 + e2), 2 * e2 / (e1 + e2)], rtol=1e-6)


def test_rlw_softmax_of_a_seeded_normal():
    method = _built(wt.RLW, TASKS3, weights=[1.0, 2.0, 1.0])
    a = _coef(method, np.eye(3), step=5)
    z = tf.random.stateless_normal([3], seed=tf.constant([3, 5], tf.int64)).numpy()
    lam = np.exp(z) / np.exp(z).sum()
    np.testing.assert_allclose(a, lam * [1.0, 2.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(_coef(method, np.eye(3), step=5), a)
    assert not np.allclose(_coef(method, np.eye(3), step=6), a)
    losses = tf.constant([0.1, 0.2, 0.3])
    assert float(method.objective(losses, tf.constant(5, tf.int64))) == pytest.approx(float(a @ [0.1, 0.2, 0.3]), rel=1e-6)


def test_famo_coefficients_and_logit_update():
    method = _built(wt.FAMO)
    # z = (1/2, 1/2), L = (0.5, 2): c = 0.5/0.5 + 0.5/2 = 1.25, a = z / (c L) = (0.8, 0.2).
    np.testing.assert_allclose(_coef(method, np.eye(2), losses=[0.5, 2.0]), [0.8, 0.2], rtol=1e-6)
    # Task a's loss halves, b's stays: delta = (log 2, 0); J^T delta = (log2 / 4, -log2 / 4); Adam: -lr sign.
    method.after_step(tf.constant([0.5, 2.0]), tf.constant([0.25, 2.0]))
    np.testing.assert_allclose(method.logits.numpy(), [-0.025, 0.025], rtol=1e-4)
    np.testing.assert_allclose(_coef(method, np.eye(2)), _coef(method, np.eye(2), losses=[0.5, 2.0]))


NEW = ("mgda", "imtl", "nash-mtl", "aligned-mtl", "db-mtl", "gradnorm", "dwa", "rlw", "famo")


def test_new_methods_are_registered_with_their_families():
    for name in NEW:
        remedy = REMEDIES[name]
        combination, aid = remedy.build({})
        assert aid is None and remedy.family in ("conflict", "weighting")


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(set(ARCHITECTURES) - {SINGLE_ARCH, "esmm"}))
@pytest.mark.parametrize("name", NEW)
def test_one_epoch_on_every_architecture(arch, name):
    data = synthetic.load(seed=0, dim=6, train_rows=256, validation_rows=128, test_rows=64, correlation=0.0)
    keras.utils.set_random_seed(0)
    model = ARCHITECTURES[arch](features=data.features, tasks=data.tasks)
    combination, _ = REMEDIES[name].build({})
    trainer = Trainer(model, data.tasks, learning_rate=0.01, combination=combination, seed=0)
    fit = trainer.fit(data.train, data.validation, epochs=2, batch_size=64, seed=0, patience=0)
    assert len(fit.history) == 2
    assert all(np.isfinite(v) for log in fit.history for v in log.train_loss.values())
    assert all(np.all(np.isfinite(v.numpy())) for v in combination.state)


@pytest.mark.slow
@pytest.mark.parametrize("name", NEW)
def test_one_epoch_on_esmm(name):
    from mtl_bench.tasks import recsim

    data = recsim.load(seed=0, days=4, impressions_per_day=400)
    keras.utils.set_random_seed(0)
    model = ARCHITECTURES["esmm"](features=data.features, tasks=data.tasks)
    combination, _ = REMEDIES[name].build({})
    fit = Trainer(model, data.tasks, learning_rate=0.01, combination=combination, seed=0).fit(
        data.train, data.validation, epochs=1, batch_size=64, seed=0, patience=0)
    assert all(np.isfinite(v) for v in fit.history[0].train_loss.values())
