"""The k-step damage counterfactual of the conflict probe: what the other tasks' real updates do to a task.

Given a :class:`Lookahead`, :class:`~mtl_bench.measures.probe.ConflictProbe`
measures at every event, for each task ``i`` (group ``"all"``, ``task_i = i``,
``task_j = "others"``): ``k`` real steps of the training optimizer (its state
included: Adam's moments and iteration count as they are at this event) on
training batches, minimising ``sum_{j != i} w_j L_j`` and updating every
trainable variable except task ``i``'s own ``model.task_variables[i]``, so task
``i``'s loss only moves through the shared and the other tasks' weights. The
optimizer is applied to that subset of the variables it was built on (Keras 3
accepts it and leaves the other variables and their slots alone). The steps run
the model with ``training=True``, as the trainer does; the batches are
``Lookahead.batch_size`` training rows drawn with
``np.random.default_rng([seed, step])``, the same for every ``i`` at one event;
a missing (NaN) label gets sample weight 0 (a batch without labels for a task
gives it loss 0 and gradient 0). Every model variable (``model.variables``:
weights, non-trainable state, seed-generator states) and every optimizer
variable is then assigned back its saved value, bit for bit. With ``L_i`` task
``i``'s loss on the probe batch (``training=False``) before and after the ``k``
steps and ``d`` the change of the shared variables:

* ``damage``: ``(L_i(after) - L_i(before)) / L_i(before)``: the relative rise of
  task ``i``'s loss caused by the other tasks' real updates (positive: they hurt ``i``).
* ``damage_first_order``: ``<g_i, d> / L_i(before)`` with ``g_i`` task ``i``'s
  probe-batch gradient on the shared variables: the first-order prediction of
  that rise (gradient conflict as the optimizer realises it).
* ``damage_excess``: ``damage - damage_first_order``: the part the gradient
  angle does not predict (interference beyond first order, i.e. forgetting).

All three are NaN when ``L_i(before) == 0``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mtl_bench.engine.training import masked_loss
from mtl_bench.measures._model import cache, name_outputs, num_rows
from mtl_bench.measures.gradients import Row
from mtl_bench.schema import ALL
from mtl_bench.validation import check_int, fail

OTHERS = "others"  # task_j of the lookahead-damage measures


@dataclasses.dataclass(frozen=True, eq=False)
class Lookahead:
    """What the k-step counterfactual needs from the trainer.

    Attributes:
        features: The training split's features, resident (a feature dict, as the model takes it).
        labels: Task name -> training labels, float32 of shape ``(n,)``; NaN marks a missing label.
        optimizer: The training optimizer, already built on the model's trainable
            variables; its state is used (and restored) at every probe event.
        loss_weights: Static weight of each task in the training objective.
        steps: Number of optimizer steps ``k`` of each counterfactual, >= 1.
        batch_size: Training rows per step, >= 1.
        seed: Seed of the batches; an event at global step ``s`` draws them from
            ``np.random.default_rng([seed, s])``.

    Raises:
        UserInputError: (a ``ValueError``) on an invalid setting; the labels and weights
            are checked against the probed tasks by the probe.
    """

    features: dict[str, tf.Tensor]
    labels: dict[str, tf.Tensor]
    optimizer: keras.optimizers.Optimizer
    loss_weights: dict[str, float]
    steps: int = 10
    batch_size: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("Lookahead", "steps", self.steps, 1)
        check_int("Lookahead", "batch_size", self.batch_size, 1)
        check_int("Lookahead", "seed", self.seed, 0)
        if not isinstance(self.optimizer, keras.optimizers.Optimizer):
            raise fail("Lookahead", "optimizer", "a keras.optimizers.Optimizer", self.optimizer)
        if not isinstance(self.features, Mapping) or not self.features:
            raise fail("Lookahead", "features", "a non-empty dict of arrays", type(self.features))


def check_lookahead(lookahead: Any, names: Sequence[str]) -> int:
    """Checks a :class:`Lookahead` against the probed tasks; returns the number of training rows."""
    if not isinstance(lookahead, Lookahead):
        raise fail("ConflictProbe", "lookahead", "a Lookahead", type(lookahead))
    labels = lookahead.labels
    if not isinstance(labels, Mapping) or any(n not in labels for n in names):
        received = list(labels) if isinstance(labels, Mapping) else type(labels)
        raise fail("Lookahead", "labels", f"a dict holding labels for tasks {list(names)}", received)
    for n in names:
        shape = getattr(labels[n], "shape", None)
        if shape is None or not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise fail("Lookahead", f"labels[{n!r}].shape", "(n,)", shape)
    weights = lookahead.loss_weights
    if not isinstance(weights, Mapping) or any(
        n not in weights
        or isinstance(weights[n], bool)
        or not isinstance(weights[n], (int, float, np.integer, np.floating))
        or not math.isfinite(weights[n])
        for n in names
    ):
        raise fail("Lookahead", "loss_weights", f"a dict giving a finite weight to each of {list(names)}", weights)
    sizes = {num_rows(v, "Lookahead", f"features[{k!r}]") for k, v in lookahead.features.items()}
    sizes |= {num_rows(labels[n], "Lookahead", f"labels[{n!r}]") for n in names}
    if len(sizes) != 1 or 0 in sizes:
        raise fail("Lookahead", "features and labels", "arrays of one non-zero length", sorted(sizes))
    return sizes.pop()


def task_variables(model: keras.Model, names: Sequence[str], optimizer: keras.optimizers.Optimizer) -> list[list]:
    """Each task's own trainable variables (``model.task_variables``), checked for the lookahead."""
    trainable = list(model.trainable_variables)
    if not trainable:
        raise ValueError("ConflictProbe: lookahead needs a model with trainable variables. Received: none")
    own = getattr(model, "task_variables", None)
    if not isinstance(own, Mapping) or any(n not in own for n in names):
        raise ValueError(
            "ConflictProbe: lookahead needs model.task_variables, a dict from each task name to that task's "
            f"own variables. Received: {type(own).__name__ if not isinstance(own, Mapping) else list(own)}"
        )
    known = {id(v) for v in trainable}
    for n in names:
        outside = [getattr(v, "path", "?") for v in own[n] if id(v) not in known]
        if outside:
            raise ValueError(
                f"ConflictProbe: task_variables[{n!r}] holds variables that are not trainable. Received: {outside}"
            )
    built = getattr(optimizer, "_trainable_variables", None)
    if not optimizer.built or built is None:
        raise ValueError(
            "ConflictProbe: lookahead.optimizer must be built on the model's trainable variables before "
            f"the first probe event. Received: an unbuilt {type(optimizer).__name__}"
        )
    unknown = [getattr(v, "path", "?") for v in trainable if id(v) not in {id(b) for b in built}]
    if unknown:
        raise ValueError(
            "ConflictProbe: lookahead.optimizer was not built on every trainable variable of the model. "
            f"Received unknown variables: {unknown}"
        )
    return [list(own[n]) for n in names]


class Damage:
    """The damage measures of one probe: the resident training rows, the compiled steps and the records.

    Args:
        lookahead: The settings, checked with :func:`check_lookahead` for ``names``.
        names: The probed tasks, in the probe's order.
    """

    def __init__(self, lookahead: Lookahead, names: Sequence[str]) -> None:
        self.lookahead = lookahead
        self.names = tuple(names)
        self._features = {k: tf.convert_to_tensor(v) for k, v in lookahead.features.items()}
        self._labels = {n: tf.reshape(tf.cast(lookahead.labels[n], tf.float32), [-1]) for n in names}
        self._weights = tf.constant([float(lookahead.loss_weights[n]) for n in names], tf.float32)
        self._rows = num_rows(self._labels[names[0]], "Lookahead", f"labels[{names[0]!r}]")
        self._fn = None

    def prepare(self, model: keras.Model, loss_fns: Sequence[Any], loss_keys: Sequence[str], shared: list) -> None:
        """Checks ``model`` and compiles (or finds in the model's cache) the k-step function."""
        own = task_variables(model, self.names, self.lookahead.optimizer)
        key = (
            "lookahead",
            self.names,
            tuple(loss_keys),
            tuple(id(v) for v in shared),
            tuple(id(v) for v in model.trainable_variables),
            tuple(tuple(id(v) for v in vs) for vs in own),
            id(self.lookahead.optimizer),
        )
        functions = cache(model)
        if key not in functions:
            functions[key] = _make_fn(model, self.names, list(loss_fns), list(shared), own, self.lookahead.optimizer)
        self._fn = functions[key]

    def batches(self, step: int) -> tf.Tensor:
        """The event's training batches, ``(steps, batch_size)`` row indices, the same for every task."""
        la, n = self.lookahead, self._rows
        rng = np.random.default_rng([la.seed, step])
        size = la.steps * la.batch_size
        rows = rng.permutation(n)[:size] if n >= size else rng.integers(0, n, size=size)
        return tf.constant(rows.reshape(la.steps, la.batch_size), tf.int32)

    def rows(self, step: int, x: dict[str, tf.Tensor], ys: list[tf.Tensor], grads: list[list[tf.Tensor]]) -> list[Row]:
        """``damage``, ``damage_first_order`` and ``damage_excess`` of every task at the event of ``step``.

        Args:
            step: The event's global step (seeds its batches).
            x: The probe batch's features.
            ys: The probe batch's labels, one ``(n, 1)`` tensor per task.
            grads: Per task, its probe-batch gradient on each shared variable.
        """
        names, rows = self.names, []
        batches = self.batches(step)
        for i, n in enumerate(names):
            keep = tf.constant([0.0 if j == i else 1.0 for j in range(len(names))], tf.float32)
            out = self._fn(self._features, self._labels, x, ys, batches, keep, self._weights, grads[i])
            before = float(out["before"].numpy()[i])
            after = float(out["after"].numpy()[i])
            if before == 0:
                damage = first = float("nan")
            else:
                damage = (after - before) / before
                first = float(out["dot"].numpy()) / before
            rows.append((n, OTHERS, ALL, "damage", damage))
            rows.append((n, OTHERS, ALL, "damage_first_order", first))
            rows.append((n, OTHERS, ALL, "damage_excess", damage - first))
        return rows


def _make_fn(
    model: keras.Model,
    names: Sequence[str],
    loss_fns: list,
    shared: list,
    own: list[list],
    optimizer: keras.optimizers.Optimizer,
):
    trainable = list(model.trainable_variables)
    # Task i's step updates every trainable variable except task i's own: a subset of the variables the
    # optimizer was built on, which Keras 3 accepts (it updates those variables and their slots only).
    subsets = []
    for variables in own:
        own_ids = {id(v) for v in variables}
        subsets.append([k for k, v in enumerate(trainable) if id(v) not in own_ids])
    # Everything a step can change: the model's state (seed generators included) and the optimizer's.
    state, seen = [], set()
    for v in [*model.variables, *shared, *optimizer.variables]:
        if id(v) not in seen:
            seen.add(id(v))
            state.append(v)
    shared_pos = [next(k for k, v in enumerate(state) if v is s) for s in shared]
    zero = tf.UnconnectedGradients.ZERO

    def probe_losses(x, ys):
        out = name_outputs(model(x, training=False), model, names)
        return tf.stack([fn(y, out[n]) for n, fn, y in zip(names, loss_fns, ys)])

    def train_losses(x, labels):
        """Per-task losses of one training batch; a missing (NaN) label has sample weight 0."""
        out = name_outputs(model(x, training=True), model, names)
        return tf.stack([masked_loss(fn, labels[n], out[n]) for n, fn in zip(names, loss_fns)])

    def lookahead_fn(features, labels, x, ys, batches, keep, weights, grads):
        """``k = len(batches)`` optimizer steps on ``sum_j keep_j w_j L_j`` without the task where
        ``keep`` is 0; returns the probe losses before and after and ``<grads, shared change>``."""
        excluded = tf.argmin(keep, output_type=tf.int32)
        coef = keep * weights
        saved = [tf.identity(v.value) for v in state]
        before = probe_losses(x, ys)

        def step(s):
            index = batches[s]
            bx = {k: tf.gather(v, index) for k, v in features.items()}
            by = {n: tf.gather(labels[n], index) for n in names}
            with tf.GradientTape() as tape:
                objective = tf.reduce_sum(coef * train_losses(bx, by))
            g = tape.gradient(objective, trainable, unconnected_gradients=zero)

            def apply(subset):
                def branch():
                    optimizer.apply([g[k] for k in subset], [trainable[k] for k in subset])
                    return tf.constant(0)

                return branch

            tf.switch_case(excluded, [apply(subset) for subset in subsets])
            return (s + 1,)

        tf.while_loop(lambda s: s < tf.shape(batches)[0], step, (tf.constant(0),))
        after = probe_losses(x, ys)
        dot = tf.constant(0.0, tf.float64)
        for v, k, g in zip(shared, shared_pos, grads):
            change = tf.cast(tf.convert_to_tensor(v.value), tf.float64) - tf.cast(saved[k], tf.float64)
            dot += tf.reduce_sum(tf.cast(g, tf.float64) * change)
        for v, value in zip(state, saved):
            v.assign(value)
        return {"before": before, "after": after, "dot": dot}

    # The loop is an explicit tf.while_loop (no AutoGraph), as in the trainer's run_steps.
    fn = tf.function(lookahead_fn, autograph=False)
    fn._omit_frequent_tracing_warning = True
    return fn
