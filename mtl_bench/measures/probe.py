"""The conflict probe: gradient conflict and its noise floor, affinity and damage lookaheads, forgetting, gate health.

:class:`ConflictProbe` is a Keras callback. It works under the engine's
:class:`~mtl_bench.engine.training.Trainer` and under a plain ``model.fit`` of a
user's multi-output Keras model. Every ``every`` global training steps (and
once at the start of training, step 0) it measures, on one fixed probe batch
taken from the validation split, in one compiled :func:`tf.function`, the
per-task gradients ``g_i`` of task ``i``'s unweighted loss with respect to the
*shared* variables and their Gram matrix, from which
:mod:`~mtl_bench.measures.gradients` (where each formula is written out) derives:

* the conflict view (Yu et al. 2020), for every ordered pair ``i != j`` and
  every variable group plus ``"all"``: ``cosine``, ``conflict``,
  ``magnitude_similarity``;
* the noise floor by disjoint halves, group ``"all"``: ``cosine_floor``,
  ``conflict_floor`` (``task_i == task_j``), ``cosine_halves``,
  ``conflict_halves`` (``i != j``). The probe batch's rows are cut into half
  ``A`` (the first ``ceil(n / 2)`` rows) and half ``B`` (the rest). Each task's
  gradient is computed on each half (``g_i^A``, ``g_i^B``, mean loss over that
  half) and the full-batch gradient is derived from them exactly,
  ``g_i = (n_A g_i^A + n_B g_i^B) / n`` (the losses are means over the rows):
  ``2 T`` backward passes over half the rows replace ``T`` over all of them,
  about the same cost. Not reported when ``n == 1``;
* the lookahead affinity (TAG, Fifty et al. 2021), group ``"all"``:
  ``affinity`` (``i != j``) and ``self_affinity`` (``i == j``),
  ``Z_{i->j} = 1 - L_j(theta_s - lr * g_i) / L_j(theta_s)``: one plain SGD step
  of task ``i``'s gradient on the shared variables only (task-specific
  variables untouched), with the current learning rate. Positive: a step for
  ``i`` also lowers ``j``'s loss. The shared weights are then assigned back
  their saved values, so they are restored bit for bit;
* the applied update, when the probe is given the run's ``combination`` (a
  :class:`~mtl_bench.remedies.combination.LossCombination`, as built by the
  trainer), group ``"all"``, ``task_j = "update"``: ``update_cosine`` and
  ``update_conflict`` of the update that method would apply next if its batch
  were the probe batch, ``d = sum_k a_k g_k`` with ``a`` from the probe's Gram
  matrix (and, for PCGrad and GradVac, the task order of the next training
  step). A conflict remedy such as PCGrad should drive ``update_conflict`` to
  0, whatever the raw ``conflict`` between the tasks;
* gate health, when the model has a ``gates(x)`` method returning a non-empty
  ``{gate key: (batch, experts)}`` dict (group ``"gate"``, ``task_i`` = gate
  key): ``gate_weight``, ``gate_entropy``, ``gate_alarm``.

Forgetting view inside joint training (group ``"all"``, ``task_i == task_j``):

* ``loss``: ``L_i(theta)`` on the probe batch.
* ``loss_rise`` (from the second event on): the relative change of ``loss``
  since the previous event, ``(L_i(now) - L_i(previous)) / L_i(previous)``:
  what the real training stream did to task ``i`` over the window.
* ``window_signal`` (only for tasks with missing labels, under the engine's
  trainer, which reports per call how many steps had a label of the task in
  ``logs["signal_steps/<task>"]``): the share of the window's steps whose batch
  held a label of task ``i``. Windows with ``window_signal == 0`` are stretches
  without the task's signal: its ``loss_rise`` there is what the other tasks'
  updates and its own optimizer's momentum did to it (the report compares it
  with the same task's single-task model over the same windows, which has only
  the latter).
* ``forgetting_events`` (Toneva et al. 2019): number of probe examples that the
  task had right at the previous probe event and has wrong now;
  ``forgetting_rate`` is that number divided by the probe batch size. Not
  recorded at the first event. "Right" means ``(p > 0.5) == (y > 0.5)`` for a
  binary task (``logit > 0`` for a loss with ``from_logits=True``) and
  ``|prediction - y| < 0.5 * std(y over the probe batch)`` for a regression
  task (``< 0.5`` when that standard deviation is 0).

Lookahead damage, only when the probe is given a :class:`Lookahead`: ``damage``,
``damage_first_order``, ``damage_excess`` (group ``"all"``, ``task_j =
"others"``), from ``k`` real optimizer steps of the other tasks; see
:mod:`~mtl_bench.measures.lookahead`.

Group ``"all"`` is every shared variable. ``loss``, ``forgetting_*``,
``affinity``, ``self_affinity``, the ``*_floor`` and ``*_halves`` measures and
the ``damage*`` measures only use ``"all"``. Without groups (neither the
``groups`` argument nor ``model.variable_groups``) only ``"all"`` is reported.

Every record is ``{**context, "epoch", "step", "task_i", "task_j", "group", "measure", "value"}``.
``epoch`` is 0 for the event at the start of training and otherwise the
1-based epoch during which the event happened (set by ``on_epoch_begin``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from mtl_bench.errors import UserInputError
from mtl_bench.measures import gradients
from mtl_bench.measures._model import cache, from_logits, is_binary_loss, keras_loss, loss_key, name_outputs, num_rows
from mtl_bench.measures._probe_fn import detect_shared, make_probe_fn
from mtl_bench.measures.gradients import ALARM_SHARE, GATE_GROUP, UPDATE, Row
from mtl_bench.measures.lookahead import OTHERS, Damage, Lookahead, check_lookahead
from mtl_bench.schema import ALL
from mtl_bench.spec import Task
from mtl_bench.validation import check_int, check_number, fail

__all__ = ["ALARM_SHARE", "GATE_GROUP", "OTHERS", "RECORD_KEYS", "UPDATE", "ConflictProbe", "Lookahead"]

RECORD_KEYS: tuple[str, ...] = ("epoch", "step", "task_i", "task_j", "group", "measure", "value")


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
        lookahead: Adds the ``damage*`` measures: ``k`` real optimizer steps of
            the other tasks per task at every event (see :class:`Lookahead`).
            Needs ``tasks`` (not ``losses``) and a model with ``task_variables``
            (``{task name: that task's own variables}``); costs ``T * k``
            training steps per event.

    Raises:
        UserInputError: (a ``ValueError``) on an invalid argument.
        ValueError: At the first event, when the model does not fit the arguments
            (e.g. no ``task_variables`` for ``lookahead``).
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
        lookahead: Lookahead | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(probe_x, Mapping) or not probe_x:
            raise fail("ConflictProbe", "probe_x", "a non-empty dict of arrays", type(probe_x))
        if not isinstance(probe_y, Mapping) or not probe_y:
            raise fail("ConflictProbe", "probe_y", "a non-empty dict of arrays", type(probe_y))
        names, loss_fns, loss_keys, kinds, logits = _task_losses(tasks, losses)
        missing = [n for n in names if n not in probe_y]
        if missing:
            raise fail("ConflictProbe", "probe_y", f"a dict of labels for every task (no labels for {missing})",
                       list(probe_y))
        sizes = {num_rows(v, "ConflictProbe", f"probe_x[{k!r}]") for k, v in probe_x.items()}
        sizes |= {num_rows(probe_y[n], "ConflictProbe", f"probe_y[{n!r}]") for n in names}
        if len(sizes) != 1 or 0 in sizes:
            raise fail("ConflictProbe", "probe_x and probe_y", "arrays of one non-zero length", sorted(sizes))
        check_int("ConflictProbe", "every", every, 1)
        if learning_rate is not None:
            check_number("ConflictProbe", "learning_rate", learning_rate, 0, low_open=True)
        if shared_variables is not None and not isinstance(shared_variables, Sequence):
            raise fail("ConflictProbe", "shared_variables", "a sequence of variables", shared_variables)
        if groups is not None:
            if not isinstance(groups, Mapping) or any(not isinstance(v, Sequence) for v in groups.values()):
                raise fail("ConflictProbe", "groups", "a dict from a name to a list of variables", groups)
            if ALL in groups:
                raise fail("ConflictProbe", "groups", f"a dict without the reserved group name {ALL!r}", list(groups))
        context = dict(context or {})
        clash = [k for k in context if k in RECORD_KEYS]
        if clash:
            raise fail("ConflictProbe", "context", f"a dict whose keys do not clash with record keys {RECORD_KEYS}",
                       context)
        if combination is not None and getattr(combination, "num_tasks", None) != len(names):
            raise fail("ConflictProbe", "combination.num_tasks", f"the number of probed tasks, {len(names)}",
                       getattr(combination, "num_tasks", None))
        if tensorboard_dir is not None and not isinstance(tensorboard_dir, str):
            raise fail("ConflictProbe", "tensorboard_dir", "a path string", tensorboard_dir)
        if lookahead is not None:
            if tasks is None:
                raise UserInputError(
                    "ConflictProbe: lookahead needs tasks= (their Keras loss objects train the counterfactual), "
                    f"not losses=. Received: losses={losses!r}"
                )
            check_lookahead(lookahead, names)

        self.task_names: tuple[str, ...] = tuple(names)
        self.every = int(every)
        self.learning_rate = None if learning_rate is None else float(learning_rate)
        self.context = context
        self.tensorboard_dir = tensorboard_dir
        self.combination = combination
        self.lookahead = lookahead
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
        self._previous_losses: np.ndarray | None = None
        self._window_steps = 0
        self._window_signal: dict[str, int] = {}
        self._last_step: int | None = None
        self._counter = 0
        self._epoch = 0
        self._writer = None
        self._damage = Damage(lookahead, names) if lookahead is not None else None

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
        """Runs one probe event now and appends its records, labelled ``step`` (and the current epoch)."""
        self._event(int(step))

    # --------------------------------------------------------------- callbacks

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._previous_right = None
        self._previous_losses = None
        self._window_steps, self._window_signal = 0, {}
        self._counter = self._optimizer_step() or 0
        self._last_step = None
        self._epoch = 0
        self._event(self._counter)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = int(epoch) + 1

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._counter += 1
        if logs and "steps" in logs:
            self._window_steps += int(logs["steps"])
            for n in self.task_names:
                key = f"signal_steps/{n}"
                if key in logs:
                    self._window_signal[n] = self._window_signal.get(n, 0) + int(logs[key])
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
        return name_outputs(out, self.model, self.task_names)

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

        if self._shared_arg is not None:
            shared = self._shared_arg
        elif hasattr(model, "shared_variables"):
            shared = list(model.shared_variables)
        else:
            shared = detect_shared(model, self.task_names, self._loss_fns, self._x, self._ys)
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
        if self._damage is not None:
            self._damage.prepare(model, self._loss_fns, self._loss_keys, self._shared)
        self._fn = self._compiled(model)
        self._prepared_for = model

    def _compiled(self, model: keras.Model):
        """The probe function, traced once and cached on the model for identical settings."""
        with_grads = self.lookahead is not None  # then the function also returns the full-batch gradients
        key = (
            self.task_names,
            tuple(self._loss_keys),
            tuple(id(v) for v in self._shared),
            self._has_gates,
            with_grads,
        )
        functions = cache(model)
        if key not in functions:
            functions[key] = make_probe_fn(
                model, list(self.task_names), list(self._loss_fns), list(self._shared), self._has_gates, with_grads
            )
        return functions[key]

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
        rows: list[Row] = []
        losses = result["losses"].numpy().astype(np.float64)
        for i, n in enumerate(names):
            rows.append((n, n, ALL, "loss", float(losses[i])))
        if self._previous_losses is not None:
            for i, n in enumerate(names):
                before = self._previous_losses[i]
                rows.append((n, n, ALL, "loss_rise", float((losses[i] - before) / before) if before else float("nan")))
                if n in self._window_signal and self._window_steps:
                    rows.append((n, n, ALL, "window_signal", self._window_signal[n] / self._window_steps))
        self._previous_losses = losses
        self._window_steps, self._window_signal = 0, {}
        if self._shared:
            grams = result["grams"].numpy()
            for group, idx in [*self._groups.items(), (ALL, list(range(len(self._shared))))]:
                rows.extend(gradients.conflict_rows(names, grams[idx].sum(axis=0), group))
            if self.combination is not None:
                gram = grams.sum(axis=0)
                coef = self.combination.coefficients(
                    tf.constant(gram, tf.float32), tf.constant(step, tf.int64), update=False
                )
                rows.extend(gradients.update_rows(names, gram, coef))
            if "half_grams" in result:
                rows.extend(gradients.halves_rows(names, result["half_grams"].numpy().sum(axis=0)))
            rows.extend(gradients.affinity_rows(names, losses, result["after"].numpy().astype(np.float64)))
        if self._damage is not None:
            grads = result["grads"] if self._shared else [[] for _ in names]
            rows.extend(self._damage.rows(step, self._x, self._ys, grads))
        right = self._right([p.numpy() for p in result["preds"]])
        if self._previous_right is not None:
            for n, before, now in zip(names, self._previous_right, right):
                events = int(np.sum(before & ~now))
                rows.append((n, n, ALL, "forgetting_events", float(events)))
                rows.append((n, n, ALL, "forgetting_rate", events / self._n))
        self._previous_right = right
        for key, weights in result.get("gates", {}).items():
            rows.extend(gradients.gate_rows(str(key), weights.numpy()))
        self._last_step = step
        new = [
            {
                **self.context,
                "epoch": self._epoch,
                "step": step,
                "task_i": ti,
                "task_j": tj,
                "group": g,
                "measure": m,
                "value": float(v),
            }
            for ti, tj, g, m, v in rows
        ]
        self.records.extend(new)
        if self.tensorboard_dir is not None:
            self._write(step, new)

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


def _task_losses(
    tasks: Sequence[Task] | None, losses: Mapping[str, Any] | None
) -> tuple[list[str], list, list[str], list[str], list[bool]]:
    """Names, loss functions, loss cache keys, kinds and from-logits flags of the probed tasks."""
    if (tasks is None) == (losses is None):
        raise UserInputError(
            f"ConflictProbe: give exactly one of tasks and losses. Received: tasks={tasks!r}, losses={losses!r}"
        )
    if tasks is not None:
        tasks = tuple(tasks)
        if not tasks or not all(isinstance(t, Task) for t in tasks):
            raise fail("ConflictProbe", "tasks", "a non-empty sequence of Task", tasks)
        names = [t.name for t in tasks]
        loss_fns = [t.loss_fn() for t in tasks]
        loss_keys = [t.loss for t in tasks]
        kinds = [t.kind for t in tasks]
        logits = [False] * len(tasks)
    else:
        if not isinstance(losses, Mapping) or not losses:
            raise fail("ConflictProbe", "losses", "a non-empty dict", losses)
        names = [str(n) for n in losses]
        loss_fns = [keras_loss(n, losses[n]) for n in losses]
        loss_keys = [loss_key(fn) for fn in loss_fns]
        kinds = ["binary" if is_binary_loss(fn) else "regression" for fn in loss_fns]
        logits = [from_logits(fn) for fn in loss_fns]
    if len(set(names)) != len(names):
        raise fail("ConflictProbe", "task names", "unique", names)
    return names, loss_fns, loss_keys, kinds, logits
