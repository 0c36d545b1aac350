"""The engine's stream order, missing labels and selection rules, against direct computations."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from mtl_bench.engine import data as data_lib
from mtl_bench.models import ARCHITECTURES
from mtl_bench.engine.regimes import selection_and_outcome
from mtl_bench.tasks import planted, recsim, synthetic
from mtl_bench.engine.training import Trainer, evaluate_selected, masked_loss


def test_stream_blocks_are_read_in_time_order_each_block_shuffled():
    blocks = np.repeat([2, 0, 1], 4)  # rows of block 0 are 4..7, of block 1 8..11, of block 2 0..3
    a = data_lib.epoch_batches(12, 4, np.random.default_rng(0), blocks)
    assert a.shape == (3, 4)
    assert [sorted(b) for b in a.tolist()] == [[4, 5, 6, 7], [8, 9, 10, 11], [0, 1, 2, 3]]
    b = data_lib.epoch_batches(12, 4, np.random.default_rng(1), blocks)
    assert a.tolist() != b.tolist()  # a fresh order within blocks every epoch
    # Without blocks: one permutation of all rows, as before.
    plain = data_lib.epoch_batches(12, 4, np.random.default_rng(0))
    np.testing.assert_array_equal(plain.reshape(-1), np.random.default_rng(0).permutation(12))


def test_masked_loss_counts_labelled_rows_over_the_batch_size():
    y = tf.constant([1.0, np.nan, 3.0, np.nan])
    p = tf.constant([[0.5], [9.0], [2.0], [-4.0]])
    got = float(masked_loss(keras.losses.MeanSquaredError(), y, p))
    assert got == pytest.approx(((0.5 - 1.0) ** 2 + (2.0 - 3.0) ** 2) / 4)
    none = tf.constant([np.nan, np.nan])
    pred = tf.Variable([[1.0], [2.0]])
    with tf.GradientTape() as tape:
        loss = masked_loss(keras.losses.MeanSquaredError(), none, pred * 1.0)
    assert float(loss) == 0.0 and float(tf.reduce_sum(tf.abs(tape.gradient(loss, pred)))) == 0.0


def test_a_task_without_labels_in_the_training_split_never_moves_its_head():
    data = planted.load(seed=0, mechanism="forgetting", delay=0.5, train_rows=512, validation_rows=128, test_rows=128)
    late = data.train.take(np.flatnonzero(data.train.meta["stream_block"] >= 4))  # task1 has no label here
    assert np.isnan(late.labels["task1"]).all()
    keras.utils.set_random_seed(0)
    model = ARCHITECTURES["shared_bottom"](features=data.features, tasks=data.tasks, bottom_units=2, tower_units=0)
    trainer = Trainer(model, data.tasks, learning_rate=0.01, seed=0)
    model(late.take(slice(0, 2)).features)
    head = [v.numpy() for v in model.task_variables["task1"]]
    other = [v.numpy() for v in model.task_variables["task2"]]
    trainer.fit(late, data.validation, epochs=2, batch_size=64, seed=0, patience=0, select="last")
    for before, v in zip(head, model.task_variables["task1"]):
        np.testing.assert_array_equal(before, v.numpy())  # zero gradient, zero Adam state: no update at all
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(other, model.task_variables["task2"]))


def test_per_task_selection_keeps_each_tasks_best_epoch():
    data = synthetic.load(seed=0, dim=8, train_rows=512, validation_rows=256, test_rows=64, correlation=0.0)
    keras.utils.set_random_seed(0)
    model = ARCHITECTURES["shared_bottom"](features=data.features, tasks=data.tasks, bottom_units=4)
    fit = Trainer(model, data.tasks, learning_rate=0.05, seed=0).fit(
        data.train, data.validation, epochs=8, batch_size=64, seed=0, patience=0, select="per_task")
    evals = evaluate_selected(model, fit, data.tasks, data.validation)
    for t in data.tasks:
        curve = [log.validation[t.name]["mse"] for log in fit.history]  # task_loss of a regression task = MSE
        assert fit.best_epochs[t.name] == int(np.argmin(curve)) + 1
        assert evals[t.name]["mse"] == pytest.approx(min(curve), rel=1e-6)
    assert fit.best_epoch == max(fit.best_epochs.values())


def test_selection_rows_and_outcome_rows_are_disjoint():
    data = synthetic.load(seed=0, dim=4, train_rows=64, validation_rows=101, test_rows=8)
    selection, outcome = selection_and_outcome(data, 0.5)
    assert (len(selection), len(outcome)) == (50, 51)  # round(0.5 · 101) = 50 (banker's rounding)
    np.testing.assert_array_equal(np.concatenate([selection.features["numeric"], outcome.features["numeric"]]),
                                  data.validation.features["numeric"])
    both, same = selection_and_outcome(data, 0.0)
    assert both is data.validation and same is data.validation


def test_epoch_logs_carry_each_trained_tasks_validation_metrics():
    data = recsim.load(seed=0, users=80, items=40, days=4, impressions_per_day=400)  # binary: auc and logloss
    trained = data.tasks[:2]  # the model has three outputs; the trainer trains (and validates) two
    keras.utils.set_random_seed(0)
    model = ARCHITECTURES["shared_bottom"](features=data.features, tasks=data.tasks, bottom_units=4)
    model(data.train.take(slice(0, 2)).features)  # build, so the variable lists exist
    variables = list(model.shared_variables) + [v for t in trained for v in model.task_variables[t.name]]
    validation = data.validation
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            # The epoch's last weights, predicted here in one call, apart from the trainer's own prediction.
            out = self.model(validation.features, training=False)
            seen.append((dict(logs), {n: np.asarray(v, np.float64).reshape(-1) for n, v in out.items()}))

    fit = Trainer(model, trained, learning_rate=0.02, variables=variables, seed=0).fit(
        data.train, validation, epochs=2, batch_size=64, seed=0, patience=0, callbacks=[Record()])
    assert len(seen) == 2
    for (logs, pred), log in zip(seen, fit.history):
        assert set(logs) == {"val_selection_loss"} | {f"val_{t.name}_{m}" for t in trained for m in ("auc", "logloss")}
        selection = 0.0
        for t in trained:
            y, p = validation.labels[t.name].astype(np.float64), np.clip(pred[t.name], 1e-7, 1 - 1e-7)
            logloss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
            assert logs[f"val_{t.name}_auc"] == pytest.approx(roc_auc_score(y, pred[t.name]), abs=1e-6)
            assert logs[f"val_{t.name}_logloss"] == pytest.approx(logloss, rel=1e-5)
            selection += t.weight * logloss
            assert log.validation[t.name] == {m: logs[f"val_{t.name}_{m}"] for m in ("auc", "logloss")}
        assert logs["val_selection_loss"] == pytest.approx(selection, rel=1e-5)
