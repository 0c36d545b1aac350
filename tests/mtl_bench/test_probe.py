"""ConflictProbe against independent per-task GradientTape computations, on small hand-built models."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_bench.probe import RECORD_KEYS, ConflictProbe
from mtl_bench.spec import Split, Task
from mtl_bench.training import Trainer

TASKS = (Task("a", "a", "binary"), Task("b", "b", "binary"), Task("c", "c", "regression"))


def make_data(n: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = {
        "a": (x[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(np.float32),
        "b": (x[:, 1] - x[:, 0] > 0).astype(np.float32),
        "c": (2 * x[:, 2] + x[:, 3]).astype(np.float32),
    }
    return {"numeric": x}, y


class TinyMTL(keras.Model):
    """Shared two-layer bottom, one tower per task; exposes the mtl-bench model contract."""

    def __init__(self, tasks=TASKS, units: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.task_list = tuple(tasks)
        self.first = keras.layers.Dense(units, activation="tanh", name="first")
        self.second = keras.layers.Dense(units, activation="relu", name="second")
        self.heads = [
            keras.layers.Dense(1, activation="sigmoid" if t.kind == "binary" else None, name=f"head_{t.name}")
            for t in self.task_list
        ]

    def call(self, x, training=False):
        h = self.second(self.first(x["numeric"]))
        return {t.name: head(h) for t, head in zip(self.task_list, self.heads)}

    @property
    def variable_groups(self):
        return {"embedding": list(self.first.trainable_variables), "dense": list(self.second.trainable_variables)}

    @property
    def shared_variables(self):
        return [v for g in self.variable_groups.values() for v in g]

    @property
    def task_variables(self):
        return {t.name: list(h.trainable_variables) for t, h in zip(self.task_list, self.heads)}

    def gates(self, x):
        return {}


def built_model(seed: int = 0, **kwargs) -> TinyMTL:
    keras.utils.set_random_seed(seed)
    model = TinyMTL(**kwargs)
    x, _ = make_data(4)
    model(x)
    return model


def value(records, measure, task_i, task_j, group="all", step=None):
    hits = [
        r["value"]
        for r in records
        if r["measure"] == measure
        and r["task_i"] == task_i
        and r["task_j"] == task_j
        and r["group"] == group
        and (step is None or r["step"] == step)
    ]
    assert len(hits) == 1, (measure, task_i, task_j, group, step, hits)
    return hits[0]


def reference(model, x, y, tasks, variables, lr):
    """Per-task GradientTape gradients, cosines, magnitude similarities and lookahead affinities."""
    grads, base = {}, {}
    for t in tasks:
        with tf.GradientTape() as tape:
            pred = model(x, training=False)[t.name]
            loss = t.loss_fn()(y[t.name][:, None], pred)
        grads[t.name] = [g.numpy().astype(np.float64) for g in tape.gradient(loss, variables)]
        base[t.name] = float(loss)
    saved = [v.numpy() for v in variables]
    affinity = {}
    for ti in tasks:
        for v, s, g in zip(variables, saved, grads[ti.name]):
            v.assign(s - lr * g.astype(np.float32))
        pred = model(x, training=False)
        for tj in tasks:
            after = float(tj.loss_fn()(y[tj.name][:, None], pred[tj.name]))
            affinity[ti.name, tj.name] = 1 - after / base[tj.name]
        for v, s in zip(variables, saved):
            v.assign(s)

    def pair(names_i, names_j, select):
        gi = np.concatenate([grads[names_i][k].ravel() for k in select])
        gj = np.concatenate([grads[names_j][k].ravel() for k in select])
        ni, nj = np.linalg.norm(gi), np.linalg.norm(gj)
        return gi @ gj / (ni * nj), 2 * ni * nj / (ni**2 + nj**2)

    return pair, affinity


def test_measures_match_independent_tape_computation():
    model = built_model()
    x, y = make_data()
    lr = 0.1
    probe = ConflictProbe(x, y, TASKS, learning_rate=lr, context={"seed": 0})
    probe.set_model(model)
    shared = model.shared_variables
    pair, affinity = reference(model, x, y, TASKS, shared, lr)
    probe.probe(0)
    recs = probe.records
    groups = {"all": range(4), "embedding": range(0, 2), "dense": range(2, 4)}
    for group, select in groups.items():
        for ti in "abc":
            for tj in "abc":
                if ti == tj:
                    continue
                cos, mag = pair(ti, tj, list(select))
                assert value(recs, "cosine", ti, tj, group) == pytest.approx(cos, abs=1e-5)
                assert value(recs, "magnitude_similarity", ti, tj, group) == pytest.approx(mag, abs=1e-5)
                assert value(recs, "conflict", ti, tj, group) == float(cos < 0)
    for (ti, tj), z in affinity.items():
        measure = "self_affinity" if ti == tj else "affinity"
        assert value(recs, measure, ti, tj) == pytest.approx(z, abs=1e-5)
    assert not any(r["measure"] in ("affinity", "self_affinity") and r["group"] != "all" for r in recs)
    assert all(set(r) == {"seed", *RECORD_KEYS} for r in recs)
    # A real lookahead happened: some affinity is clearly non-zero.
    assert max(abs(z) for z in affinity.values()) > 1e-3


def test_weights_restored_bit_exactly_and_traced_once():
    model = built_model()
    x, y = make_data()
    probe = ConflictProbe(x, y, TASKS, learning_rate=0.5, every=1)
    probe.set_model(model)
    before = [v.numpy().copy() for v in model.weights]
    for step in range(3):
        probe.probe(step)
    after = [v.numpy() for v in model.weights]
    assert all(np.array_equal(b, a) for b, a in zip(before, after))
    assert probe._fn.experimental_get_tracing_count() == 1
    # A second probe on the same model with the same settings reuses the compiled function.
    again = ConflictProbe(x, y, TASKS, learning_rate=0.5)
    again.set_model(model)
    again.probe(0)
    assert again._fn is probe._fn and probe._fn.experimental_get_tracing_count() == 1
    assert again.records == probe.records[: len(again.records)]


class TiedHeads(keras.Model):
    """Shared trunk and ONE head whose output serves both tasks (no ``shared_variables``)."""

    def __init__(self, head_scale: float, **kwargs):
        super().__init__(**kwargs)
        self.trunk = keras.layers.Dense(8, activation="tanh", name="trunk")
        self.head = keras.layers.Dense(
            1, activation="sigmoid", kernel_initializer=keras.initializers.RandomNormal(stddev=head_scale)
        )

    def call(self, x, training=False):
        p = self.head(self.trunk(x["numeric"]))
        return {"a": p, "b": p}


def tied_probe(labels_b, head_scale):
    keras.utils.set_random_seed(1)
    model = TiedHeads(head_scale)
    x, y = make_data()
    model(x)
    tasks = (Task("a", "a", "binary"), Task("b", "b", "binary"))
    probe = ConflictProbe(x, {"a": y["a"], "b": labels_b(y["a"])}, tasks, learning_rate=0.1)
    probe.set_model(model)
    probe.probe(0)
    return model, probe


def test_identical_tasks_have_cosine_one():
    model, probe = tied_probe(lambda ya: ya.copy(), head_scale=0.5)
    # Same prediction, label and loss: the two gradients are the same vector.
    assert value(probe.records, "cosine", "a", "b") == pytest.approx(1.0, abs=1e-6)
    assert value(probe.records, "magnitude_similarity", "a", "b") == pytest.approx(1.0, abs=1e-6)
    assert value(probe.records, "conflict", "a", "b") == 0.0
    assert {id(v) for v in probe.shared_variables} == {id(v) for v in model.trainable_variables}


def test_flipped_labels_conflict():
    # BCE gradient w.r.t. the logit is p - y; with flipped labels it is p - (1 - y) = -(p - y) + (2p - 1).
    # A tiny head keeps p within ~1e-2 of 1/2, so g_b = -g_a + O(|2p - 1|): cosine near -1.
    _, probe = tied_probe(lambda ya: 1 - ya, head_scale=1e-3)
    assert value(probe.records, "cosine", "a", "b") < -0.9
    assert value(probe.records, "conflict", "a", "b") == 1.0
    assert value(probe.records, "conflict", "b", "a") == 1.0


def run_trainer(seed: int, every: int = 2):
    x, y = make_data(96, seed=5)
    train = Split(x, y)
    vx, vy = make_data(64, seed=6)
    model = built_model(seed)
    probe = ConflictProbe(vx, vy, TASKS, every=every, learning_rate=0.01, context={"phase": 0})
    fit = Trainer(model, TASKS, learning_rate=0.01).fit(
        train, Split(vx, vy), epochs=2, batch_size=32, seed=seed, patience=0, callbacks=[probe], steps_per_call=every
    )
    return probe, fit


def test_trainer_cadence_and_determinism():
    first, fit = run_trainer(seed=3)
    second, _ = run_trainer(seed=3)
    assert fit.steps == 6
    # 3 steps per epoch; the engine cuts its calls at global multiples of 2 (and at epoch ends): it reports
    # steps 2, 3 | 4, 6. A probe runs at each multiple of 2 (2, 4, 6), plus step 0 at train begin.
    assert sorted({r["step"] for r in first.records}) == [0, 2, 4, 6]
    assert first.records == second.records
    frame = first.frame()
    assert list(frame.columns) == ["phase", *RECORD_KEYS]
    assert set(frame.measure) >= {"cosine", "conflict", "magnitude_similarity", "affinity", "forgetting_events"}


def test_plain_keras_model_fit_detects_shared_trunk(tmp_path):
    keras.utils.set_random_seed(2)
    inputs = keras.Input((4,), name="numeric")
    trunk = keras.layers.Dense(8, activation="relu", name="trunk")
    h = trunk(inputs)
    click = keras.layers.Dense(1, activation="sigmoid", name="click")(keras.layers.Dense(4, name="t1")(h))
    dwell = keras.layers.Dense(1, name="dwell")(h)
    model = keras.Model({"numeric": inputs}, [click, dwell])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss={"click": "binary_crossentropy", "dwell": "mse"})
    x, y = make_data(96)
    x = x["numeric"]
    labels = {"click": y["a"], "dwell": y["c"]}
    probe = ConflictProbe(
        {"numeric": x[:32]},
        {k: v[:32] for k, v in labels.items()},
        losses={"click": keras.losses.BinaryCrossentropy(), "dwell": keras.losses.MeanSquaredError()},
        every=3,
        context={"regime": "user"},
        tensorboard_dir=str(tmp_path),
    )
    model.fit({"numeric": x}, labels, epochs=2, batch_size=32, shuffle=False, verbose=0, callbacks=[probe])
    assert {id(v) for v in probe.shared_variables} == {id(v) for v in trunk.trainable_variables}
    frame = probe.frame()
    assert list(frame.columns) == ["regime", *RECORD_KEYS]
    assert sorted(frame.step.unique()) == [0, 3, 6]
    assert set(frame.group) == {"all"}
    assert set(frame.measure) == {
        "loss", "cosine", "conflict", "magnitude_similarity", "affinity", "self_affinity",
        "forgetting_events", "forgetting_rate",
    }  # fmt: skip
    assert np.isfinite(frame.value).all()

    from tensorflow.core.util import event_pb2

    tags = {}
    for path in tmp_path.iterdir():
        for raw in tf.data.TFRecordDataset(str(path)):
            event = event_pb2.Event.FromString(raw.numpy())
            for v in event.summary.value:
                tags[v.tag, event.step] = float(tf.make_ndarray(v.tensor))
    row = frame[(frame.measure == "cosine") & (frame.step == 3) & (frame.task_i == "click")].iloc[0]
    assert tags["probe/all/cosine/click->dwell", 3] == pytest.approx(row.value, rel=1e-6)


def test_forgetting_events_count_right_then_wrong():
    model = built_model()
    x, y = make_data()
    probe = ConflictProbe(x, y, TASKS, learning_rate=0.1)
    probe.set_model(model)
    p0 = {k: v.numpy().ravel() for k, v in model(x).items()}
    probe.probe(0)
    assert not [r for r in probe.records if r["measure"].startswith("forgetting")]
    for head in model.heads:  # a large perturbation of every tower
        head.kernel.assign(-2.0 * head.kernel.numpy())
    p1 = {k: v.numpy().ravel() for k, v in model(x).items()}
    probe.probe(5)
    for name in ("a", "b"):
        right0, right1 = (p0[name] > 0.5) == (y[name] > 0.5), (p1[name] > 0.5) == (y[name] > 0.5)
        expected = int(np.sum(right0 & ~right1))
        assert value(probe.records, "forgetting_events", name, name, step=5) == expected
        assert value(probe.records, "forgetting_rate", name, name, step=5) == pytest.approx(expected / 64)
    tol = 0.5 * np.std(y["c"])
    right0, right1 = np.abs(p0["c"] - y["c"]) < tol, np.abs(p1["c"] - y["c"]) < tol
    assert value(probe.records, "forgetting_events", "c", "c", step=5) == np.sum(right0 & ~right1)
    assert sum(value(probe.records, "forgetting_events", n, n, step=5) for n in "abc") > 0


class GatedModel(TinyMTL):
    """TinyMTL with hand-set gate outputs: ``a`` constant, ``b`` alternating between two rows."""

    def gates(self, x):
        n = tf.shape(x["numeric"])[0]
        a = tf.tile(tf.constant([[0.95, 0.05]]), [n, 1])
        rows = tf.constant([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
        b = tf.gather(rows, tf.math.floormod(tf.range(n), 2))
        return {"a": a, "b": b}


def test_gate_health():
    keras.utils.set_random_seed(0)
    model = GatedModel()
    x, y = make_data()
    model(x)
    probe = ConflictProbe(x, y, TASKS, learning_rate=0.1)
    probe.set_model(model)
    probe.probe(0)
    recs = probe.records
    h_a = -(0.95 * math.log(0.95) + 0.05 * math.log(0.05))
    assert value(recs, "gate_entropy", "a", "a", "gate") == pytest.approx(h_a, abs=1e-6)
    assert value(recs, "gate_weight", "a", "expert0", "gate") == pytest.approx(0.95, abs=1e-6)
    assert value(recs, "gate_alarm", "a", "a", "gate") == 1.0
    # Mean of per-row entropies (0 and ln 2), not the entropy of the mean weights.
    assert value(recs, "gate_entropy", "b", "b", "gate") == pytest.approx(math.log(2) / 2, abs=1e-6)
    for e, w in enumerate([0.5, 0.25, 0.25]):
        assert value(recs, "gate_weight", "b", f"expert{e}", "gate") == pytest.approx(w, abs=1e-6)
    assert value(recs, "gate_alarm", "b", "b", "gate") == 0.0


def test_no_gate_rows_for_gateless_model():
    model = built_model()
    x, y = make_data()
    probe = ConflictProbe(x, y, TASKS, learning_rate=0.1)
    probe.set_model(model)
    probe.probe(0)
    assert not [r for r in probe.records if r["group"] == "gate"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one of tasks and losses"),
        ({"tasks": TASKS, "losses": {"a": "mse"}}, "exactly one of tasks and losses"),
        ({"tasks": TASKS, "every": 0}, "every"),
        ({"tasks": TASKS, "learning_rate": -1.0}, "learning_rate"),
        ({"tasks": TASKS, "context": {"step": 1}}, "clash"),
        ({"tasks": TASKS, "groups": {"all": []}}, "reserved"),
        ({"losses": {"z": "mse"}}, "no labels"),
    ],
)
def test_constructor_validation(kwargs, match):
    x, y = make_data(8)
    with pytest.raises(ValueError, match=match):
        ConflictProbe(x, y, **kwargs)


def test_missing_learning_rate_is_reported():
    model = built_model()
    x, y = make_data(8)
    probe = ConflictProbe(x, y, TASKS)
    probe.set_model(model)
    with pytest.raises(ValueError, match="learning rate"):
        probe.probe(0)
