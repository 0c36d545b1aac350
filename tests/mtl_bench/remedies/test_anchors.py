"""Forgetting remedies: each extra loss against its formula computed in numpy."""

import numpy as np
import pytest
import tensorflow as tf

from mtl_bench.errors import UserInputError
from mtl_bench.remedies import anchors as forgetting
from mtl_bench.spec import Split, Task

BIN = Task("click", "click", "binary")
REG = Task("dwell", "dwell", "regression")


def _split(n=40, seed=0) -> Split:
    rng = np.random.default_rng(seed)
    return Split(
        features={"numeric": rng.normal(size=(n, 2)).astype(np.float32)},
        labels={"click": rng.integers(0, 2, n).astype(np.float32), "dwell": rng.normal(size=n).astype(np.float32)},
    )


def _bce(y, p):
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def _gather(aid, index, anchor=None):
    return {k: tf.gather(v, anchor if k.startswith("anchor_") else index) for k, v in aid.resident().items()}


def test_replay_buffer_and_loss():
    split = _split()
    aid = forgetting.Replay(share=0.25, weight=2.0)
    aid.bind([BIN, REG], split, lambda: {}, refresh_each_epoch=True, seed=7)
    assert aid.mask.sum() == 10  # round(0.25 * 40)
    again = forgetting.Replay(share=0.25)
    again.bind([BIN], split, lambda: {}, refresh_each_epoch=False, seed=7)
    np.testing.assert_array_equal(aid.mask, again.mask)
    index = np.arange(8, 24)
    rng = np.random.default_rng(1)
    p_click, p_dwell = rng.uniform(0.05, 0.95, 16).astype(np.float32), rng.normal(size=16).astype(np.float32)
    pred = {"click": tf.constant(p_click[:, None]), "dwell": tf.constant(p_dwell[:, None])}
    value = float(aid.loss(pred, _gather(aid, index), None))
    m = aid.mask[index]
    y_click, y_dwell = split.labels["click"][index], split.labels["dwell"][index]
    expected = 2.0 * (np.mean(m * _bce(y_click, p_click)) + np.mean(m * (y_dwell - p_dwell) ** 2)) / 0.25
    assert value == pytest.approx(expected, rel=1e-5)  # replay is never deferred, even when asked to refresh


def test_distill_targets_are_the_reference_predictions():
    split = _split()
    reference = {"click": np.linspace(0.1, 0.9, 40).astype(np.float32), "dwell": np.linspace(-1, 1, 40).astype(np.float32)}
    aid = forgetting.Distill(weight=0.5)
    aid.bind([BIN, REG], split, lambda: reference, refresh_each_epoch=False, seed=0)
    index = np.array([3, 7, 11, 30])
    p_click = np.array([0.2, 0.4, 0.6, 0.8], np.float32)
    p_dwell = np.array([0.0, 0.5, -0.5, 1.0], np.float32)
    pred = {"click": tf.constant(p_click[:, None]), "dwell": tf.constant(p_dwell[:, None])}
    value = float(aid.loss(pred, _gather(aid, index), None))
    expected = 0.5 * (np.mean(_bce(reference["click"][index], p_click)) + np.mean((reference["dwell"][index] - p_dwell) ** 2))
    assert value == pytest.approx(expected, rel=1e-5)


def test_joint_reference_waits_for_the_second_epoch_and_refreshes():
    split = _split()
    calls = []

    def predict():
        calls.append(1)
        return {"click": np.full(40, 0.1 * len(calls), np.float32)}

    aid = forgetting.Distill()
    aid.bind([BIN], split, predict, refresh_each_epoch=True, seed=0)
    pred = {"click": tf.constant(np.full((4, 1), 0.5, np.float32))}
    index = np.arange(4)
    assert calls == [] and float(aid.loss(pred, _gather(aid, index), None)) == 0.0
    aid.on_epoch_begin(1)
    assert calls == []
    aid.on_epoch_begin(2)
    assert len(calls) == 1
    assert float(aid.loss(pred, _gather(aid, index), None)) == pytest.approx(np.mean(_bce(0.1, 0.5)), rel=1e-5)
    aid.on_epoch_begin(3)
    assert float(aid.loss(pred, _gather(aid, index), None)) == pytest.approx(np.mean(_bce(0.2, 0.5)), rel=1e-5)


def test_kl_anchor_uses_the_anchor_batch():
    split = _split()
    reference = {"click": np.linspace(0.1, 0.9, 40).astype(np.float32), "dwell": np.linspace(-1, 1, 40).astype(np.float32)}
    aid = forgetting.KLAnchor(weight=1.0)
    aid.bind([BIN, REG], split, lambda: reference, refresh_each_epoch=False, seed=0)
    assert aid.needs_anchor
    index, anchor = np.array([0, 1]), np.array([20, 39])
    q_click, q_dwell = np.array([0.3, 0.6], np.float32), np.array([0.2, -0.4], np.float32)
    anchor_pred = {"click": tf.constant(q_click[:, None]), "dwell": tf.constant(q_dwell[:, None])}
    value = float(aid.loss({}, _gather(aid, index, anchor), anchor_pred))
    p = reference["click"][anchor]
    kl_bin = p * np.log(p / q_click) + (1 - p) * np.log((1 - p) / (1 - q_click))
    expected = np.mean(kl_bin) + np.mean(0.5 * (reference["dwell"][anchor] - q_dwell) ** 2)
    assert value == pytest.approx(expected, rel=1e-5)


def test_kl_is_zero_at_the_reference():
    p = tf.constant([[0.2], [0.7]])
    np.testing.assert_allclose(forgetting.kl_divergence("binary", p, p).numpy(), 0.0, atol=1e-6)
    np.testing.assert_allclose(forgetting.kl_divergence("regression", p, p).numpy(), 0.0)


def test_no_protected_task_means_no_aid():
    aid = forgetting.Distill()
    aid.bind([], _split(), lambda: {}, refresh_each_epoch=False, seed=0)
    assert not aid.active


@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda: forgetting.Replay(share=0.0), "Replay: share must be a number in (0, 1]. Received: share=0.0"),
        (lambda: forgetting.Replay(share=1.5), "Replay: share must be a number in (0, 1]. Received: share=1.5"),
        (lambda: forgetting.Distill(weight=-1), "Distill: weight must be a finite number > 0. Received: weight=-1"),
        (lambda: forgetting.KLAnchor(weight=float("inf")),
         "KLAnchor: weight must be a finite number > 0. Received: weight=inf"),
    ],
)
def test_bad_arguments(factory, message):
    with pytest.raises(UserInputError) as err:
        factory()
    assert str(err.value) == message


def test_good_arguments_are_kept_as_floats():
    replay = forgetting.Replay(share=1, weight=np.float32(0.5))
    assert (replay.share, replay.weight) == (1.0, 0.5) and type(replay.share) is float
