"""ConflictProbe against independent per-task GradientTape computations, on small hand-built models."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from mtl_bench.measures.probe import RECORD_KEYS, ConflictProbe, Lookahead
from mtl_bench.engine import data as data_lib
from mtl_bench.spec import Split, Task
from mtl_bench.engine.training import Trainer

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
    # Epoch 1 is steps 1-3 and epoch 2 steps 4-6; the event at train begin is epoch 0.
    assert {r["step"]: r["epoch"] for r in first.records} == {0: 0, 2: 1, 4: 2, 6: 2}
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
    # model.fit calls on_epoch_begin(0), (1): 3 steps an epoch, so step 3 falls in epoch 1 and step 6 in epoch 2.
    assert frame.groupby("step").epoch.unique().map(list).to_dict() == {0: [0], 3: [1], 6: [2]}
    assert set(frame.measure) == {
        "loss", "cosine", "conflict", "magnitude_similarity", "affinity", "self_affinity",
        "cosine_floor", "conflict_floor", "cosine_halves", "conflict_halves",
        "forgetting_events", "forgetting_rate", "loss_rise",
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


# ------------------------------------------------------------------ noise floor by disjoint halves


def tape_gradients(model, x, y, task, variables, rows=slice(None)):
    """Task ``task``'s mean loss gradient on ``rows`` of the batch, flattened to one float64 vector."""
    with tf.GradientTape() as tape:
        pred = model({k: v[rows] for k, v in x.items()}, training=False)[task.name]
        loss = task.loss_fn()(y[task.name][rows][:, None], pred)
    return np.concatenate([g.numpy().astype(np.float64).ravel() for g in tape.gradient(loss, variables)])


def cos(u, v):
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


def test_halves_match_independent_tape_computation():
    model = built_model()
    x, y = make_data(63)  # odd: half A is the first 32 rows, half B the other 31
    probe = ConflictProbe(x, y, TASKS, learning_rate=0.1)
    probe.set_model(model)
    probe.probe(0)
    recs, shared = probe.records, model.shared_variables
    half_a = {t.name: tape_gradients(model, x, y, t, shared, slice(0, 32)) for t in TASKS}
    half_b = {t.name: tape_gradients(model, x, y, t, shared, slice(32, None)) for t in TASKS}
    full = {t.name: tape_gradients(model, x, y, t, shared) for t in TASKS}
    for ti in "abc":
        floor = cos(half_a[ti], half_b[ti])
        assert value(recs, "cosine_floor", ti, ti) == pytest.approx(floor, abs=1e-5)
        assert value(recs, "conflict_floor", ti, ti) == float(floor < 0)
        with tf.GradientTape():
            loss = TASKS["abc".index(ti)].loss_fn()(y[ti][:, None], model(x)[ti])
        assert value(recs, "loss", ti, ti) == pytest.approx(float(loss), rel=1e-5)
        for tj in "abc":
            if ti == tj:
                continue
            halves = 0.5 * (cos(half_a[ti], half_b[tj]) + cos(half_b[ti], half_a[tj]))
            assert value(recs, "cosine_halves", ti, tj) == pytest.approx(halves, abs=1e-5)
            assert value(recs, "conflict_halves", ti, tj) == float(halves < 0)
            # The full-batch cosine derived from the halves is still the full-batch tape value.
            assert value(recs, "cosine", ti, tj) == pytest.approx(cos(full[ti], full[tj]), abs=1e-5)
    assert not any(r["measure"].endswith(("_floor", "_halves")) and r["group"] != "all" for r in recs)
    # Not degenerate: the halves disagree with the full batch somewhere.
    assert min(value(recs, "cosine_floor", t, t) for t in "abc") < 0.999


def test_single_row_probe_skips_halves():
    model = built_model()
    x, y = make_data(1)
    probe = ConflictProbe(x, y, TASKS, learning_rate=0.1)
    probe.set_model(model)
    probe.probe(0)
    measures = {r["measure"] for r in probe.records}
    assert "cosine" in measures and not any(m.endswith(("_floor", "_halves")) for m in measures)
    pair, _ = reference(model, x, y, TASKS, model.shared_variables, 0.1)
    assert value(probe.records, "cosine", "a", "c") == pytest.approx(pair("a", "c", range(4))[0], abs=1e-5)


# ------------------------------------------------------------------ lookahead damage

PAIR = (Task("a", "a", "binary"), Task("c", "c", "regression"))


def lookahead_setup(tasks, optimizer, *, train_n=96, steps=1, batch_size=32, weights=None, seed=7, labels=None):
    model = built_model(tasks=tasks)
    optimizer.build(model.trainable_variables)
    tx, ty = make_data(train_n, seed=5)
    ty = {t.name: ty[t.label] for t in tasks} if labels is None else labels
    px, py = make_data(64, seed=6)
    py = {t.name: py[t.label] for t in tasks}
    weights = weights or {t.name: 1.0 for t in tasks}
    lookahead = Lookahead(tx, ty, optimizer, weights, steps=steps, batch_size=batch_size, seed=seed)
    probe = ConflictProbe(px, py, tasks, learning_rate=0.1, lookahead=lookahead)
    probe.set_model(model)
    return model, probe, (tx, ty), (px, py)


def probe_loss(model, x, y, task):
    return float(task.loss_fn()(y[task.name][:, None], model(x, training=False)[task.name]))


def test_lookahead_one_sgd_step_by_hand():
    lr, weights = 0.5, {"a": 0.7, "c": 2.0}
    model, probe, (tx, ty), (px, py) = lookahead_setup(PAIR, keras.optimizers.SGD(lr), weights=weights)
    probe.probe(4)
    rows = np.random.default_rng([7, 4]).permutation(96)[:32]
    shared = model.shared_variables
    saved = [v.numpy().copy() for v in shared]
    g_probe = {t.name: tape_gradients(model, px, py, t, shared) for t in PAIR}
    for ti, tj in [(PAIR[0], PAIR[1]), (PAIR[1], PAIR[0])]:
        with tf.GradientTape() as tape:
            pred = model({k: v[rows] for k, v in tx.items()}, training=True)[tj.name]
            loss = tj.loss_fn()(ty[tj.name][rows][:, None], pred)
        step = [-np.float32(lr) * (weights[tj.name] * g.numpy()) for g in tape.gradient(loss, shared)]
        before = probe_loss(model, px, py, ti)
        for v, s, d in zip(shared, saved, step):
            v.assign(s + d)  # task j's own head also moves, but task i's loss does not depend on it
        after = probe_loss(model, px, py, ti)
        for v, s in zip(shared, saved):
            v.assign(s)
        damage = (after - before) / before
        first = float(g_probe[ti.name] @ np.concatenate([d.astype(np.float64).ravel() for d in step])) / before
        assert value(probe.records, "damage", ti.name, "others") == pytest.approx(damage, abs=2e-6)
        assert value(probe.records, "damage_first_order", ti.name, "others") == pytest.approx(first, abs=2e-6)
        assert value(probe.records, "damage_excess", ti.name, "others") == pytest.approx(damage - first, abs=4e-6)
        assert abs(damage) > 1e-3
    assert {r["task_j"] for r in probe.records if r["measure"].startswith("damage")} == {"others"}


def test_lookahead_adam_steps_match_independent_loop():
    keras.utils.set_random_seed(3)
    weights = {"a": 1.0, "b": 2.0, "c": 0.5}
    tx, ty = make_data(40, seed=5)
    ty["b"][::3] = np.nan  # missing labels are masked out of b's loss
    optimizer = keras.optimizers.Adam(learning_rate=0.01)
    model, probe, _, (px, py) = lookahead_setup(
        TASKS, optimizer, train_n=40, steps=3, batch_size=16, weights=weights, labels=ty
    )
    # Some real training first, so that Adam's moments and iteration count are not trivial.
    for rows in (slice(0, 16), slice(16, 32)):
        with tf.GradientTape() as tape:
            out = model({k: v[rows] for k, v in tx.items()}, training=True)
            loss = sum(t.loss_fn()(np.nan_to_num(ty[t.name][rows])[:, None], out[t.name]) for t in TASKS)
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
    model_state = [v.numpy().copy() for v in model.variables]
    opt_state = [v.numpy().copy() for v in optimizer.variables]
    probe.probe(2)
    assert all(np.array_equal(s, v.numpy()) for s, v in zip(model_state, model.variables))
    assert all(np.array_equal(s, v.numpy()) for s, v in zip(opt_state, optimizer.variables))
    # 48 rows needed from 40: drawn with replacement.
    batches = np.random.default_rng([7, 2]).integers(0, 40, size=48).reshape(3, 16)
    for i, ti in enumerate(TASKS):
        clone = built_model(seed=99)
        for c, v in zip(clone.variables, model.variables):
            c.assign(v)
        fresh = keras.optimizers.Adam(learning_rate=0.01)
        fresh.build(clone.trainable_variables)
        for f, s in zip(fresh.variables, opt_state):
            f.assign(s)
        own = {id(v) for v in clone.task_variables[ti.name]}
        update = [v for v in clone.trainable_variables if id(v) not in own]
        for rows in batches:
            with tf.GradientTape() as tape:
                out = clone({k: v[rows] for k, v in tx.items()}, training=True)
                objective = 0.0
                for tj in TASKS:
                    if tj is ti:
                        continue
                    y = ty[tj.name][rows]
                    per_row = type(tj.loss_fn())(reduction=None)(np.nan_to_num(y)[:, None], out[tj.name])
                    objective += weights[tj.name] * tf.reduce_sum(tf.boolean_mask(per_row, np.isfinite(y))) / 16
            fresh.apply(tape.gradient(objective, update), update)
        before, after = probe_loss(model, px, py, ti), probe_loss(clone, px, py, ti)
        change = np.concatenate(
            [(c.numpy().astype(np.float64) - v.numpy()).ravel() for c, v in zip(clone.shared_variables, model.shared_variables)]
        )
        first = float(tape_gradients(model, px, py, ti, model.shared_variables) @ change) / before
        damage = (after - before) / before
        assert value(probe.records, "damage", ti.name, "others") == pytest.approx(damage, abs=1e-5)
        assert value(probe.records, "damage_first_order", ti.name, "others") == pytest.approx(first, abs=1e-5)
        assert abs(damage) > 1e-3
        # Task i's own variables were not trained in the counterfactual (the clone's stayed put).
        for c, v in zip(clone.task_variables[ti.name], model.task_variables[ti.name]):
            assert np.array_equal(c.numpy(), v.numpy())


def test_identical_tasks_help_each_other():
    twins = (Task("a", "a", "binary"), Task("a2", "a", "binary"))
    tx, ty = make_data(96, seed=5)
    model, probe, _, _ = lookahead_setup(
        twins, keras.optimizers.SGD(0.1), steps=3, labels={"a": ty["a"], "a2": ty["a"].copy()}
    )
    for mine, twin in zip(*model.task_variables.values()):  # identical heads too: the same task twice
        twin.assign(mine)
    probe.probe(0)
    for name in ("a", "a2"):
        assert value(probe.records, "damage", name, "others") < 0
        assert value(probe.records, "damage_first_order", name, "others") < 0


class Bottleneck(keras.Model):
    """A linear 1-unit shared bottleneck with one linear unit-weight head per task."""

    def __init__(self, names, **kwargs):
        super().__init__(**kwargs)
        self.names = tuple(names)
        self.neck = keras.layers.Dense(1, kernel_initializer=keras.initializers.RandomNormal(stddev=0.01))
        self.heads = [keras.layers.Dense(1, kernel_initializer="ones") for _ in self.names]

    def call(self, x, training=False):
        h = self.neck(x["numeric"])
        return {n: head(h) for n, head in zip(self.names, self.heads)}

    @property
    def shared_variables(self):
        return list(self.neck.trainable_variables)

    @property
    def task_variables(self):
        return {n: list(h.trainable_variables) for n, h in zip(self.names, self.heads)}


def test_flipped_regression_labels_damage_first_order():
    tasks = (Task("up", "up", "regression"), Task("down", "down", "regression"))
    keras.utils.set_random_seed(0)
    model = Bottleneck(["up", "down"])
    tx, _ = make_data(96, seed=5)
    px, _ = make_data(64, seed=6)
    target = lambda x: x["numeric"] @ np.array([1.0, -1.0, 0.5, 0.0], np.float32)  # noqa: E731
    model(px)
    optimizer = keras.optimizers.SGD(0.05)
    optimizer.build(model.trainable_variables)
    lookahead = Lookahead(tx, {"up": target(tx), "down": -target(tx)}, optimizer, {"up": 1.0, "down": 1.0}, steps=1)
    probe = ConflictProbe(px, {"up": target(px), "down": -target(px)}, tasks, learning_rate=0.1, lookahead=lookahead)
    probe.set_model(model)
    probe.probe(0)
    for name in ("up", "down"):
        assert value(probe.records, "conflict", name, "down" if name == "up" else "up") == 1.0
        assert value(probe.records, "damage_first_order", name, "others") > 0
        assert value(probe.records, "damage", name, "others") > 0


def test_lookahead_masked_labels_leave_weights_unchanged():
    tx, ty = make_data(96, seed=5)
    labels = {"a": ty["a"], "c": np.full(96, np.nan, np.float32)}  # c has no training label at all
    model, probe, _, _ = lookahead_setup(PAIR, keras.optimizers.SGD(0.1), steps=2, labels=labels)
    probe.probe(0)
    # a's counterfactual trains only on c, whose loss is 0 with a zero gradient: nothing moves.
    assert value(probe.records, "damage", "a", "others") == 0.0
    assert value(probe.records, "damage_first_order", "a", "others") == 0.0
    assert abs(value(probe.records, "damage", "c", "others")) > 1e-4


def test_lookahead_restores_and_training_continues_identically():
    def trained(probe_on: bool):
        model, probe, (tx, ty), _ = lookahead_setup(
            TASKS, keras.optimizers.Adam(0.01), steps=2, batch_size=16, labels=make_data(96, seed=5)[1]
        )
        optimizer = probe.lookahead.optimizer

        def train_step(rows):
            with tf.GradientTape() as tape:
                out = model({k: v[rows] for k, v in tx.items()}, training=True)
                loss = sum(t.loss_fn()(ty[t.name][rows][:, None], out[t.name]) for t in TASKS)
            optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)

        train_step(slice(0, 32))
        if probe_on:
            model_state = [v.numpy().copy() for v in model.variables]
            opt_state = [v.numpy().copy() for v in optimizer.variables]
            for step in range(3):
                probe.probe(step)
            assert all(np.array_equal(s, v.numpy()) for s, v in zip(model_state, model.variables))
            assert all(np.array_equal(s, v.numpy()) for s, v in zip(opt_state, optimizer.variables))
            assert probe._damage._fn.experimental_get_tracing_count() == 1
            assert len([r for r in probe.records if r["measure"] == "damage"]) == 3 * len(TASKS)
        train_step(slice(32, 64))
        train_step(slice(64, 96))
        return [v.numpy() for v in model.variables], [v.numpy() for v in optimizer.variables]

    (m1, o1), (m2, o2) = trained(True), trained(False)
    assert all(np.array_equal(a, b) for a, b in zip(m1, m2))
    assert all(np.array_equal(a, b) for a, b in zip(o1, o2))


def test_trainer_with_lookahead_trains_like_without_probe():
    x, y = make_data(96, seed=5)
    train = Split(x, y)
    vx, vy = make_data(64, seed=6)

    def fit(with_probe: bool):
        model = built_model(3)
        trainer = Trainer(model, TASKS, learning_rate=0.01)
        callbacks = []
        if with_probe:
            features, labels = data_lib.resident(train, [t.name for t in TASKS])
            lookahead = Lookahead(features, labels, trainer.optimizer, {t.name: t.weight for t in TASKS}, steps=2,
                                  batch_size=16)
            callbacks = [ConflictProbe(vx, vy, TASKS, every=2, learning_rate=0.01, lookahead=lookahead)]
        result = trainer.fit(train, Split(vx, vy), epochs=2, batch_size=32, seed=3, patience=0, callbacks=callbacks,
                             steps_per_call=2, restore_best=False)
        return result, [v.numpy() for v in model.variables], [v.numpy() for v in trainer.optimizer.variables], callbacks

    (fit_a, model_a, opt_a, (probe,)), (fit_b, model_b, opt_b, _) = fit(True), fit(False)
    assert [h.train_loss for h in fit_a.history] == [h.train_loss for h in fit_b.history]
    assert all(np.array_equal(a, b) for a, b in zip(model_a, model_b))
    assert all(np.array_equal(a, b) for a, b in zip(opt_a, opt_b))
    damage = probe.frame().query("measure == 'damage'")
    assert sorted(damage.step.unique()) == [0, 2, 4, 6] and np.isfinite(damage.value).all()


def test_lookahead_needs_tasks_task_variables_and_a_built_optimizer():
    x, y = make_data(8)
    optimizer = keras.optimizers.SGD(0.1)
    lookahead = Lookahead(x, y, optimizer, {"a": 1.0, "b": 1.0, "c": 1.0})
    with pytest.raises(ValueError, match="lookahead needs tasks"):
        ConflictProbe(x, y, losses={"a": "binary_crossentropy", "b": "mse"}, lookahead=lookahead)
    with pytest.raises(ValueError, match="must be a Lookahead"):
        ConflictProbe(x, y, TASKS, lookahead={"steps": 1})
    model = built_model()
    probe = ConflictProbe(x, y, TASKS, learning_rate=0.1, lookahead=lookahead)
    probe.set_model(model)
    with pytest.raises(ValueError, match="built"):
        probe.probe(0)
    keras.utils.set_random_seed(1)
    tied = TiedHeads(0.5)  # a shared trunk and one head, but no task_variables
    tied(x)
    optimizer.build(tied.trainable_variables)
    pair = (Task("a", "a", "binary"), Task("b", "b", "binary"))
    probe = ConflictProbe(x, y, pair, learning_rate=0.1, lookahead=Lookahead(x, y, optimizer, {"a": 1.0, "b": 1.0}))
    probe.set_model(tied)
    with pytest.raises(ValueError, match="task_variables"):
        probe.probe(0)
