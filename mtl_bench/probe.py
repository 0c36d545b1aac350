"""The conflict probe: gradient conflict, lookahead affinity, forgetting events and gate health.

:class:`ConflictProbe` is a Keras callback. It works under the engine's
:class:`~mtl_bench.training.Trainer` and under a plain ``model.fit`` of a
user's multi-output Keras model. Every ``every`` global training steps (and
once at the start of training, step 0) it measures, on one fixed probe batch
taken from the validation split, in one compiled :func:`tf.function`:

Conflict view (Yu et al. 2020; per-task gradients ``g_i`` of task ``i``'s
unweighted loss with respect to the *shared* variables), for every ordered
pair ``i != j`` and every variable group plus ``"all"``:

* ``cosine``: ``<g_i, g_j> / (|g_i| |g_j|)``; NaN when a gradient is zero.
* ``conflict``: 1.0 when the cosine is negative, else 0.0 (NaN with the cosine).
* ``magnitude_similarity``: ``2 |g_i| |g_j| / (|g_i|^2 + |g_j|^2)``, in [0, 1].

Forgetting view inside joint training:

* ``affinity`` (lookahead inter-task affinity, TAG, Fifty et al. 2021), group
  ``"all"``, ordered pairs ``i != j``:
  ``Z_{i->j} = 1 - L_j(theta_s - lr * g_i) / L_j(theta_s)``: one plain SGD step
  of task ``i``'s gradient on the shared variables only (task-specific
  variables untouched), with the current learning rate. Positive: a step for
  ``i`` also lowers ``j``'s loss. The shared weights are then assigned back
  their saved values, so they are restored bit for bit.
* ``self_affinity``: ``Z_{i->i}`` (same formula), ``task_i == task_j``; kept
  apart from ``affinity`` so that averaging ``affinity`` rows never mixes in
  the (much larger) diagonal.
* ``loss``: ``L_i(theta)`` on the probe batch, ``task_i == task_j``.
* ``forgetting_events`` (Toneva et al. 2019): number of probe examples that the
  task had right at the previous probe event and has wrong now;
  ``forgetting_rate`` is that number divided by the probe batch size. Not
  recorded at the first event. "Right" means ``(p > 0.5) == (y > 0.5)`` for a
  binary task (``logit > 0`` for a loss with ``from_logits=True``) and
  ``|prediction - y| < 0.5 * std(y over the probe batch)`` for a regression
  task (``< 0.5`` when that standard deviation is 0).

Gate health, when the model has a ``gates(x)`` method returning a non-empty
``{gate key: (batch, experts)}`` dict (group ``"gate"``, ``task_i`` = gate key):

* ``gate_weight``: mean weight of expert ``e`` over the batch, ``task_j = f"expert{e}"``.
* ``gate_entropy``: batch mean of ``-sum_e w_e ln w_e`` (nats; ``0 ln 0 = 0``), ``task_j`` = gate key.
* ``gate_alarm``: 1.0 when one expert receives more than 90 % of the gate's
  mean weight (``max_e gate_weight > 0.9``), else 0.0; ``task_j`` = gate key.
  Not reported for a single-expert gate, which routes everything trivially.

The applied update, when the probe is given the run's ``combination`` (a
:class:`~mtl_bench.combination.LossCombination`, as built by the trainer),
group ``"all"``, ``task_j = "update"``: the update that method would apply
next if its batch were the probe batch, ``d = sum_k a_k g_k`` with ``a`` from
the probe's Gram matrix (and, for PCGrad and GradVac, the task order of the
next training step), against each task's gradient:

* ``update_cosine``: ``<d, g_i> / (|d| |g_i|)``; NaN when either is zero.
* ``update_conflict``: 1.0 when that cosine is negative: the update raises
  task ``i``'s loss to first order. A conflict remedy such as PCGrad should
  drive it to 0, whatever the raw ``conflict`` between the tasks.

Group ``"all"`` is every shared variable. ``loss``, ``forgetting_*``,
``affinity`` and ``self_affinity`` only use ``"all"``. Without groups (neither
the ``groups`` argument nor ``model.variable_groups``) only ``"all"`` is reported.

Every record is ``{**context, "step", "task_i", "task_j", "group", "measure", "value"}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from mtl_bench.spec import Task

ALL = "all"
GATE_GROUP = "gate"
UPDATE = "update"  # task_j of the applied-update measures
RECORD_KEYS: tuple[str, ...] = ("step", "task_i", "task_j", "group", "measure", "value")
ALARM_SHARE = 0.9
_CACHE_ATTR = "_mtl_bench_probe_fns"


def _keras_loss(name: str, loss: Any) -> Any:
    """A callable ``(y_true, y_pred) -> loss`` from a Keras loss object, name or function (mean-reduced by the caller)."""
    if isinstance(loss, str):
        loss = keras.losses.get(loss)
    if not callable(loss):
        raise ValueError(f"ConflictProbe: the loss of {name!r} must be a keras.losses.Loss. Received: {loss!r}")
    return loss


def _loss_key(loss: Any) -> str:
    if isinstance(loss, keras.losses.Loss):
        return f"{type(loss).__qualname__}:{sorted(loss.get_config().items())!r}"
    return f"{getattr(loss, '__module__', '')}.{getattr(loss, '__qualname__', repr(loss))}"


def _is_binary_loss(loss: Any) -> bool:
    if isinstance(loss, (keras.losses.BinaryCrossentropy, keras.losses.BinaryFocalCrossentropy)):
        return True
    return "binary" in getattr(loss, "__name__", getattr(loss, "name", "")).lower()


def _from_logits(loss: Any) -> bool:
    if isinstance(loss, keras.losses.Loss):
        return bool(loss.get_config().get("from_logits", False))
    return False


def _num_rows(value: Any) -> int:
    shape = getattr(value, "shape", None)
    if shape is None or len(shape) == 0:
        raise ValueError(f"ConflictProbe: probe arrays need a batch axis. Received a value of shape {shape}")
    return int(shape[0])


class ConflictProbe(keras.callbacks.Callback):
    """Measures gradient conflict, lookahead affinity, forgetting events and gate health during training.

    Args:
        probe_x: The fixed probe batch's inputs (a feature dict, as the model
            takes it); take it from the validation split.
        probe_y: ``{task name: labels}`` for the same rows, shape ``(n,)`` or ``(n, 1)``.
        tasks: mtl-bench tasks; their ``loss_fn()`` and ``kind`` are used.
        losses: Instead of ``tasks`` (for a user's own model): one Keras loss
            (object or name) per output name. Binary cross-entropy losses make
            binary tasks; anything else counts as regression for forgetting events.
        every: Probe cadence in global training steps, >= 1.
        learning_rate: SGD step size of the affinity lookahead; default the
            current learning rate of ``model.optimizer`` (``model.fit``). The
            engine passes its learning rate here.
        shared_variables: Variables to measure; default ``model.shared_variables``
            or, for models without it, the trainable variables that get a
            non-zero gradient from two or more task losses at the first probe.
        groups: ``{group name: variables}`` (subsets of the shared variables);
            default ``model.variable_groups`` (restricted to the shared variables).
        context: Columns prepended to every record (e.g. suite, arch, regime, seed, phase).
        tensorboard_dir: When given, every record is also written there as a
            scalar named ``probe/{group}/{measure}/{task_i}->{task_j}``.
        combination: The built loss combination that trains the model over
            exactly these tasks, in this order; adds the ``update_*`` measures.
    """

    def __init__(
        self,
        probe_x: dict[str, Any],
        probe_y: dict[str, np.ndarray],
        tasks: Sequence[Task] | None = None,
        *,
        losses: dict[str, keras.losses.Loss] | None = None,
        every: int = 50,
        learning_rate: float | None = None,
        shared_variables: Sequence[keras.Variable] | None = None,
        groups: dict[str, list] | None = None,
        context: dict[str, Any] | None = None,
        tensorboard_dir: str | None = None,
        combination: Any = None,
    ) -> None:
        super().__init__()
        if not isinstance(probe_x, Mapping) or not probe_x:
            raise ValueError(f"ConflictProbe: probe_x must be a non-empty dict of arrays. Received: {type(probe_x)}")
        if not isinstance(probe_y, Mapping) or not probe_y:
            raise ValueError(f"ConflictProbe: probe_y must be a non-empty dict of arrays. Received: {type(probe_y)}")
        if (tasks is None) == (losses is None):
            raise ValueError(
                "ConflictProbe: give exactly one of tasks and losses. "
                f"Received: tasks={tasks!r}, losses={losses!r}"
            )
        if tasks is not None:
            tasks = tuple(tasks)
            if not tasks or not all(isinstance(t, Task) for t in tasks):
                raise ValueError(f"ConflictProbe: tasks must be a non-empty sequence of Task. Received: {tasks!r}")
            names = [t.name for t in tasks]
            loss_fns = [t.loss_fn() for t in tasks]
            loss_keys = [t.loss for t in tasks]
            kinds = [t.kind for t in tasks]
            logits = [False] * len(tasks)
        else:
            if not isinstance(losses, Mapping) or not losses:
                raise ValueError(f"ConflictProbe: losses must be a non-empty dict. Received: {losses!r}")
            names = [str(n) for n in losses]
            loss_fns = [_keras_loss(n, losses[n]) for n in losses]
            loss_keys = [_loss_key(fn) for fn in loss_fns]
            kinds = ["binary" if _is_binary_loss(fn) else "regression" for fn in loss_fns]
            logits = [_from_logits(fn) for fn in loss_fns]
        if len(set(names)) != len(names):
            raise ValueError(f"ConflictProbe: task names must be unique. Received: {names}")
        missing = [n for n in names if n not in probe_y]
        if missing:
            raise ValueError(
                f"ConflictProbe: probe_y has no labels for tasks {missing}. "
                f"Received keys: {list(probe_y)}"
            )
        sizes = {_num_rows(v) for v in probe_x.values()} | {_num_rows(probe_y[n]) for n in names}
        if len(sizes) != 1 or 0 in sizes:
            raise ValueError(
                "ConflictProbe: probe arrays must share one non-zero length. "
                f"Received lengths {sorted(sizes)}"
            )
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"ConflictProbe: every must be an int >= 1. Received: every={every!r}")
        if learning_rate is not None and not (
            isinstance(learning_rate, (int, float, np.floating)) and math.isfinite(learning_rate) and learning_rate > 0
        ):
            raise ValueError(f"ConflictProbe: learning_rate must be a finite number > 0. Received: {learning_rate!r}")
        if shared_variables is not None and not isinstance(shared_variables, Sequence):
            raise ValueError(
                f"ConflictProbe: shared_variables must be a sequence of variables. Received: {shared_variables!r}"
            )
        if groups is not None:
            if not isinstance(groups, Mapping) or any(not isinstance(v, Sequence) for v in groups.values()):
                raise ValueError(f"ConflictProbe: groups must map a name to a list of variables. Received: {groups!r}")
            if ALL in groups:
                raise ValueError(f"ConflictProbe: group name {ALL!r} is reserved. Received: {list(groups)}")
        context = dict(context or {})
        clash = [k for k in context if k in RECORD_KEYS]
        if clash:
            raise ValueError(
                f"ConflictProbe: context keys {clash} clash with record keys {RECORD_KEYS}. "
                f"Received: {context}"
            )
        if combination is not None and getattr(combination, "num_tasks", None) != len(names):
            raise ValueError(
                "ConflictProbe: combination must be built for the probe's tasks. "
                f"Received: {type(combination).__name__} over {getattr(combination, 'num_tasks', None)} tasks, {len(names)} probed"
            )
        if tensorboard_dir is not None and not isinstance(tensorboard_dir, str):
            raise ValueError(f"ConflictProbe: tensorboard_dir must be a path string. Received: {tensorboard_dir!r}")

        self.task_names: tuple[str, ...] = tuple(names)
        self.every = int(every)
        self.learning_rate = None if learning_rate is None else float(learning_rate)
        self.context = context
        self.tensorboard_dir = tensorboard_dir
        self.combination = combination
        self.records: list[dict[str, Any]] = []
        self._loss_fns = loss_fns
        self._loss_keys = loss_keys
        self._kinds = kinds
        self._logits = logits
        self._x = {k: tf.constant(np.asarray(v)) for k, v in probe_x.items()}
        self._y_np = [np.asarray(probe_y[n], np.float32) for n in names]
        self._ys = [tf.constant(y.reshape(-1, 1) if y.ndim == 1 else y) for y in self._y_np]
        self._n = sizes.pop()
        self._shared_arg = None if shared_variables is None else list(shared_variables)
        self._groups_arg = None if groups is None else {str(g): list(v) for g, v in groups.items()}
        self._shared: list | None = None
        self._groups: dict[str, list[int]] = {}
        self._has_gates = False
        self._fn = None
        self._prepared_for = None
        self._previous_right: list[np.ndarray] | None = None
        self._last_step: int | None = None
        self._counter = 0
        self._writer = None

    # ------------------------------------------------------------------ public

    @property
    def shared_variables(self) -> list:
        """The variables measured (known after the first probe event)."""
        if self._shared is None:
            raise ValueError("ConflictProbe: shared variables are known after the first probe event.")
        return list(self._shared)

    @property
    def groups(self) -> dict[str, list]:
        """``{group: variables}`` measured besides ``"all"`` (known after the first probe event)."""
        shared = self.shared_variables
        return {g: [shared[k] for k in idx] for g, idx in self._groups.items()}

    def frame(self) -> pd.DataFrame:
        """The records as a DataFrame (context columns, then :data:`RECORD_KEYS`)."""
        return pd.DataFrame(self.records, columns=[*self.context, *RECORD_KEYS])

    def probe(self, step: int) -> None:
        """Runs one probe event now and appends its records, labelled ``step``."""
        self._event(int(step))

    # --------------------------------------------------------------- callbacks

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._previous_right = None
        self._counter = self._optimizer_step() or 0
        self._last_step = None
        self._event(self._counter)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._counter += 1
        step = self._global_step(logs)
        if self._last_step is None or step // self.every > self._last_step // self.every:
            self._event(step)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._writer is not None:
            self._writer.flush()

    # ---------------------------------------------------------------- internals

    def _optimizer_step(self) -> int | None:
        optimizer = getattr(self.model, "optimizer", None)
        iterations = getattr(optimizer, "iterations", None)
        if iterations is None:
            return None
        return int(keras.ops.convert_to_numpy(iterations))

    def _global_step(self, logs: dict[str, Any] | None) -> int:
        """``logs["global_step"]`` (the engine), else the optimizer's iteration count (``model.fit``),
        else the number of ``on_train_batch_end`` calls."""
        if logs and "global_step" in logs:
            return int(logs["global_step"])
        step = self._optimizer_step()
        return step if step is not None else self._counter

    def _current_learning_rate(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        optimizer = getattr(self.model, "optimizer", None)
        lr = getattr(optimizer, "learning_rate", None)
        if lr is None:
            raise ValueError(
                "ConflictProbe: no learning rate for the affinity lookahead: pass learning_rate= or "
                "compile the model with an optimizer. Received: learning_rate=None"
            )
        return float(keras.ops.convert_to_numpy(lr))

    def _outputs(self, out: Any) -> dict[str, Any]:
        return _name_outputs(out, self.model, self.task_names)

    def _prepare(self) -> None:
        model = self.model
        if model is None:
            raise ValueError("ConflictProbe: no model; use it as a callback or call set_model first.")
        small = {k: v[:2] for k, v in self._x.items()}
        out = self._outputs(model(small, training=False))
        missing = [n for n in self.task_names if n not in out]
        if missing:
            raise ValueError(
                f"ConflictProbe: the model has no output for tasks {missing}. "
                f"Received outputs: {list(out)}"
            )

        trainable = list(model.trainable_variables)
        if self._shared_arg is not None:
            shared = self._shared_arg
        elif hasattr(model, "shared_variables"):
            shared = list(model.shared_variables)
        else:
            shared = self._detect_shared(trainable)
        self._shared = list(shared)
        index = {id(v): k for k, v in enumerate(self._shared)}

        groups: dict[str, list[int]] = {}
        if self._groups_arg is not None:
            for g, variables in self._groups_arg.items():
                outside = [getattr(v, "path", getattr(v, "name", "?")) for v in variables if id(v) not in index]
                if outside:
                    raise ValueError(
                        f"ConflictProbe: group {g!r} holds variables that are not shared. "
                        f"Received: {outside}"
                    )
                groups[g] = [index[id(v)] for v in variables]
        elif hasattr(model, "variable_groups"):
            for g, variables in dict(model.variable_groups).items():
                idx = [index[id(v)] for v in variables if id(v) in index]
                if idx and g != ALL:
                    groups[g] = idx
        self._groups = groups

        gates = getattr(model, "gates", None)
        self._has_gates = callable(gates) and bool(gates(small))
        self._fn = self._compiled(model)
        self._prepared_for = model

    def _detect_shared(self, trainable: list) -> list:
        """Trainable variables with a non-zero gradient from two or more task losses on the probe batch."""
        with tf.GradientTape(persistent=True) as tape:
            out = self._outputs(self.model(self._x, training=False))
            losses = [fn(y, out[n]) for n, fn, y in zip(self.task_names, self._loss_fns, self._ys)]
        users = np.zeros(len(trainable), int)
        for loss in losses:
            grads = tape.gradient(loss, trainable)
            for k, g in enumerate(grads):
                if g is not None and bool(tf.reduce_any(tf.convert_to_tensor(g) != 0)):
                    users[k] += 1
        del tape
        return [v for v, u in zip(trainable, users) if u >= 2]

    def _compiled(self, model: keras.Model):
        """The probe function, traced once and cached on the model for identical settings."""
        key = (
            self.task_names,
            tuple(self._loss_keys),
            tuple(id(v) for v in self._shared),
            self._has_gates,
        )
        cache = model.__dict__.get(_CACHE_ATTR)
        if cache is None:
            cache = {}
            object.__setattr__(model, _CACHE_ATTR, cache)
        if key not in cache:
            cache[key] = self._make_fn(model)
        return cache[key]

    def _make_fn(self, model: keras.Model):
        names, loss_fns, shared = self.task_names, list(self._loss_fns), list(self._shared)
        has_gates = self._has_gates
        num_tasks = len(names)

        def task_losses(x, ys):
            out = _name_outputs(model(x, training=False), model, names)
            preds = [out[n] for n in names]
            # A loss given by name is a bare function returning per-example values: reduce it as fit does.
            return [keras.ops.mean(fn(y, p)) for fn, y, p in zip(loss_fns, ys, preds)], preds

        def probe_fn(x, ys, lr):
            result = {}
            if shared:
                with tf.GradientTape(persistent=True) as tape:
                    losses, preds = task_losses(x, ys)
                grads = [
                    [
                        tf.convert_to_tensor(g)
                        for g in tape.gradient(loss, shared, unconnected_gradients=tf.UnconnectedGradients.ZERO)
                    ]
                    for loss in losses
                ]
                del tape
                grams = []
                for k in range(len(shared)):
                    flat = tf.stack([tf.reshape(tf.cast(grads[i][k], tf.float64), [-1]) for i in range(num_tasks)])
                    grams.append(tf.matmul(flat, flat, transpose_b=True))
                result["grams"] = tf.stack(grams)
                # Lookahead: one SGD step of each task's gradient on the shared variables, then exact restore.
                saved = [tf.identity(v.value) for v in shared]
                after = []
                for i in range(num_tasks):
                    for v, s, g in zip(shared, saved, grads[i]):
                        v.assign(s - tf.cast(lr, s.dtype) * tf.cast(g, s.dtype))
                    after.append(tf.stack(task_losses(x, ys)[0]))
                for v, s in zip(shared, saved):
                    v.assign(s)
                result["after"] = tf.stack(after)
            else:
                losses, preds = task_losses(x, ys)
            result["losses"] = tf.stack(losses)
            result["preds"] = preds
            if has_gates:
                result["gates"] = {k: tf.convert_to_tensor(v) for k, v in model.gates(x).items()}
            return result

        fn = tf.function(probe_fn)
        # One trace per model is by design (the function captures that model's variables); TF would
        # otherwise warn about "frequent retracing" of the same code once a run has built a few models.
        fn._omit_frequent_tracing_warning = True
        return fn

    def _right(self, preds: list[np.ndarray]) -> list[np.ndarray]:
        right = []
        for kind, logits, y, p in zip(self._kinds, self._logits, self._y_np, preds):
            p = np.asarray(p, np.float64).reshape(len(y), -1)[:, 0]
            y = y.reshape(len(y), -1)[:, 0].astype(np.float64)
            if kind == "binary":
                right.append((p > (0.0 if logits else 0.5)) == (y > 0.5))
            else:
                std = float(np.std(y))
                right.append(np.abs(p - y) < (0.5 * std if std > 0 else 0.5))
        return right

    def _event(self, step: int) -> None:
        if self._fn is None or self._prepared_for is not self.model:
            self._prepare()
        lr = self._current_learning_rate() if self._shared else 1.0
        result = self._fn(self._x, self._ys, tf.constant(lr, tf.float32))
        names = self.task_names
        rows: list[tuple[str, str, str, str, float]] = []
        losses = result["losses"].numpy().astype(np.float64)
        for i, n in enumerate(names):
            rows.append((n, n, ALL, "loss", float(losses[i])))
        if self._shared:
            grams = result["grams"].numpy()
            for group, idx in [*self._groups.items(), (ALL, list(range(len(self._shared))))]:
                gram = grams[idx].sum(axis=0)
                for i, j in _pairs(len(names)):
                    cos, mag = _cosine_magnitude(gram[i, i], gram[j, j], gram[i, j])
                    conflict = float("nan") if math.isnan(cos) else float(cos < 0)
                    rows.append((names[i], names[j], group, "cosine", cos))
                    rows.append((names[i], names[j], group, "conflict", conflict))
                    rows.append((names[i], names[j], group, "magnitude_similarity", mag))
            if self.combination is not None:
                rows.extend(self._update_rows(grams.sum(axis=0), step))
            after = result["after"].numpy().astype(np.float64)
            for i in range(len(names)):
                for j in range(len(names)):
                    z = 1.0 - after[i, j] / losses[j] if losses[j] != 0 else float("nan")
                    rows.append((names[i], names[j], ALL, "self_affinity" if i == j else "affinity", float(z)))
        right = self._right([p.numpy() for p in result["preds"]])
        if self._previous_right is not None:
            for n, before, now in zip(names, self._previous_right, right):
                events = int(np.sum(before & ~now))
                rows.append((n, n, ALL, "forgetting_events", float(events)))
                rows.append((n, n, ALL, "forgetting_rate", events / self._n))
        self._previous_right = right
        for key, weights in result.get("gates", {}).items():
            rows.extend(_gate_rows(str(key), weights.numpy()))
        self._last_step = step
        new = [
            {**self.context, "step": step, "task_i": ti, "task_j": tj, "group": g, "measure": m, "value": float(v)}
            for ti, tj, g, m, v in rows
        ]
        self.records.extend(new)
        if self.tensorboard_dir is not None:
            self._write(step, new)

    def _update_rows(self, gram: np.ndarray, step: int) -> list[tuple[str, str, str, str, float]]:
        coef = self.combination.coefficients(tf.constant(gram, tf.float32), tf.constant(step, tf.int64), update=False)
        a = np.asarray(coef, np.float64)
        dot = gram @ a
        norm_d = math.sqrt(max(float(a @ gram @ a), 0.0))
        rows = []
        for i, n in enumerate(self.task_names):
            norm_i = math.sqrt(max(float(gram[i, i]), 0.0))
            cos = float("nan") if norm_d == 0 or norm_i == 0 else float(np.clip(dot[i] / (norm_d * norm_i), -1, 1))
            rows.append((n, UPDATE, ALL, "update_cosine", cos))
            rows.append((n, UPDATE, ALL, "update_conflict", float("nan") if math.isnan(cos) else float(cos < 0)))
        return rows

    def _write(self, step: int, records: list[dict[str, Any]]) -> None:
        from tensorflow.core.framework import summary_pb2

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.tensorboard_dir)
        metadata = summary_pb2.SummaryMetadata()
        metadata.plugin_data.plugin_name = "scalars"
        metadata.data_class = summary_pb2.DATA_CLASS_SCALAR
        with self._writer.as_default():
            for r in records:
                tag = f"probe/{r['group']}/{r['measure']}/{r['task_i']}->{r['task_j']}"
                tf.summary.write(tag, tf.constant(r["value"], tf.float32), step=step, metadata=metadata)


def _name_outputs(out: Any, model: Any, names: Sequence[str]) -> Mapping[str, Any]:
    """The model's outputs as ``{output name: tensor}``."""
    if isinstance(out, Mapping):
        return out
    if isinstance(out, (list, tuple)):
        out_names = list(getattr(model, "output_names", None) or [])
        if len(out_names) == len(out):
            return dict(zip(out_names, out))
    elif len(names) == 1:
        return {names[0]: out}
    raise ValueError(
        "ConflictProbe: cannot name the model's outputs; return a dict or give the outputs names. "
        f"Received an output of type {type(out).__name__}"
    )


def _pairs(t: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(t) for j in range(t) if i != j]


def _cosine_magnitude(gii: float, gjj: float, gij: float) -> tuple[float, float]:
    """Cosine and magnitude similarity from squared norms and the dot product."""
    ni, nj = math.sqrt(max(gii, 0.0)), math.sqrt(max(gjj, 0.0))
    cos = float("nan") if ni == 0 or nj == 0 else float(np.clip(gij / (ni * nj), -1.0, 1.0))
    denom = gii + gjj
    mag = float("nan") if denom == 0 else 2.0 * ni * nj / denom
    return cos, mag


def _gate_rows(key: str, weights: np.ndarray) -> list[tuple[str, str, str, str, float]]:
    w = np.asarray(weights, np.float64).reshape(weights.shape[0], -1)
    mean = w.mean(axis=0)
    safe = np.where(w > 0, w, 1.0)
    entropy = float(np.mean(-np.sum(np.where(w > 0, w * np.log(safe), 0.0), axis=1)))
    rows = [(key, f"expert{e}", GATE_GROUP, "gate_weight", float(m)) for e, m in enumerate(mean)]
    rows.append((key, key, GATE_GROUP, "gate_entropy", entropy))
    if w.shape[1] >= 2:
        rows.append((key, key, GATE_GROUP, "gate_alarm", float(mean.max() > ALARM_SHARE)))
    return rows
