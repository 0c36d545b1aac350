"""The conflict probe: gradient conflict and its noise floor, affinity and damage lookaheads, forgetting, gate health.

:class:`ConflictProbe` is a Keras callback. It works under the engine's
:class:`~mtl_bench.engine.training.Trainer` and under a plain ``model.fit`` of a
user's multi-output Keras model. Every ``every`` global training steps (and
once at the start of training, step 0) it measures, on one fixed probe batch
taken from the validation split, in one compiled :func:`tf.function`:

Conflict view (Yu et al. 2020; per-task gradients ``g_i`` of task ``i``'s
unweighted loss with respect to the *shared* variables), for every ordered
pair ``i != j`` and every variable group plus ``"all"``:

* ``cosine``: ``<g_i, g_j> / (|g_i| |g_j|)``; NaN when a gradient is zero.
* ``conflict``: 1.0 when the cosine is negative, else 0.0 (NaN with the cosine).
* ``magnitude_similarity``: ``2 |g_i| |g_j| / (|g_i|^2 + |g_j|^2)``, in [0, 1].

Noise floor by disjoint halves, group ``"all"``: the probe batch's rows are cut
into half ``A`` (the first ``ceil(n / 2)`` rows) and half ``B`` (the rest).
Each task's gradient is computed on each half (``g_i^A``, ``g_i^B``, mean loss
over that half) and the full-batch gradient above is derived from them exactly,
``g_i = (n_A g_i^A + n_B g_i^B) / n`` (the losses are means over the rows): ``2 T``
backward passes over half the rows replace ``T`` over all of them, about the
same cost. Not reported when ``n == 1``.

* ``cosine_floor`` (``task_i == task_j``): ``cos(g_i^A, g_i^B)``: how much a
  task agrees with itself across disjoint rows, the noise floor of every cosine.
* ``conflict_floor`` (``task_i == task_j``): 1.0 when ``cosine_floor`` is
  negative, else 0.0 (NaN with the cosine).
* ``cosine_halves`` (ordered pairs ``i != j``):
  ``(cos(g_i^A, g_j^B) + cos(g_i^B, g_j^A)) / 2``: the cross-task cosine with
  the same disjoint-rows noise as the floor (NaN when a half-gradient is zero).
* ``conflict_halves`` (``i != j``): 1.0 when ``cosine_halves`` is negative, else 0.0.

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
* ``loss_rise`` (``task_i == task_j``, from the second event on): the
  relative change of ``loss`` since the previous event,
  ``(L_i(now) - L_i(previous)) / L_i(previous)``: what the real training
  stream did to task ``i`` over the window.
* ``window_signal`` (``task_i == task_j``; only for tasks with missing labels,
  under the engine's trainer, which reports per call how many steps had a
  label of the task in ``logs["signal_steps/<task>"]``): the share of the
  window's steps whose batch held a label of task ``i``. Windows with
  ``window_signal == 0`` are stretches without the task's signal: its
  ``loss_rise`` there is what the other tasks' updates and its own
  optimizer's momentum did to it (the report compares it with the same
  task's single-task model over the same windows, which has only the latter).
* ``forgetting_events`` (Toneva et al. 2019): number of probe examples that the
  task had right at the previous probe event and has wrong now;
  ``forgetting_rate`` is that number divided by the probe batch size. Not
  recorded at the first event. "Right" means ``(p > 0.5) == (y > 0.5)`` for a
  binary task (``logit > 0`` for a loss with ``from_logits=True``) and
  ``|prediction - y| < 0.5 * std(y over the probe batch)`` for a regression
  task (``< 0.5`` when that standard deviation is 0).

Lookahead damage, only when the probe is given a :class:`Lookahead` (group
``"all"``, ``task_i = i``, ``task_j = "others"``): for each task ``i``, ``k``
real steps of the training optimizer (its state included: Adam's moments and
iteration count as they are at this event) on training batches, minimising
``sum_{j != i} w_j L_j`` and updating every trainable variable except task
``i``'s own ``model.task_variables[i]``, so task ``i``'s loss only moves through
the shared and the other tasks' weights. The optimizer is applied to that subset
of the variables it was built on (Keras 3 accepts it and leaves the other
variables and their slots alone). The steps run the model with ``training=True``,
as the trainer does; the batches are ``Lookahead.batch_size`` training rows
drawn with ``np.random.default_rng([seed, step])``, the same for every ``i`` at
one event; a missing (NaN) label gets sample weight 0 (a batch without labels
for a task gives it loss 0 and gradient 0). Every model variable (``model.variables``:
weights, non-trainable state, seed-generator states) and every optimizer
variable is then assigned back its saved value, bit for bit. With
``L_i`` task ``i``'s loss on the probe batch (``training=False``) before and
after the ``k`` steps and ``d`` the change of the shared variables:

* ``damage``: ``(L_i(after) - L_i(before)) / L_i(before)``: the relative rise of
  task ``i``'s loss caused by the other tasks' real updates (positive: they hurt ``i``).
* ``damage_first_order``: ``<g_i, d> / L_i(before)`` with ``g_i`` task ``i``'s
  probe-batch gradient on the shared variables: the first-order prediction of
  that rise (gradient conflict as the optimizer realises it).
* ``damage_excess``: ``damage - damage_first_order``: the part the gradient
  angle does not predict (interference beyond first order, i.e. forgetting).

All three are NaN when ``L_i(before) == 0``.

Gate health, when the model has a ``gates(x)`` method returning a non-empty
``{gate key: (batch, experts)}`` dict (group ``"gate"``, ``task_i`` = gate key):

* ``gate_weight``: mean weight of expert ``e`` over the batch, ``task_j = f"expert{e}"``.
* ``gate_entropy``: batch mean of ``-sum_e w_e ln w_e`` (nats; ``0 ln 0 = 0``), ``task_j`` = gate key.
* ``gate_alarm``: 1.0 when one expert receives more than 90 % of the gate's
  mean weight (``max_e gate_weight > 0.9``), else 0.0; ``task_j`` = gate key.
  Not reported for a single-expert gate, which routes everything trivially.

The applied update, when the probe is given the run's ``combination`` (a
:class:`~mtl_bench.remedies.combination.LossCombination`, as built by the trainer),
group ``"all"``, ``task_j = "update"``: the update that method would apply
next if its batch were the probe batch, ``d = sum_k a_k g_k`` with ``a`` from
the probe's Gram matrix (and, for PCGrad and GradVac, the task order of the
next training step), against each task's gradient:

* ``update_cosine``: ``<d, g_i> / (|d| |g_i|)``; NaN when either is zero.
* ``update_conflict``: 1.0 when that cosine is negative: the update raises
  task ``i``'s loss to first order. A conflict remedy such as PCGrad should
  drive it to 0, whatever the raw ``conflict`` between the tasks.

Group ``"all"`` is every shared variable. ``loss``, ``forgetting_*``,
``affinity``, ``self_affinity``, the ``*_floor`` and ``*_halves`` measures and
the ``damage*`` measures only use ``"all"``. Without groups (neither the
``groups`` argument nor ``model.variable_groups``) only ``"all"`` is reported.

Every record is ``{**context, "epoch", "step", "task_i", "task_j", "group", "measure", "value"}``.
``epoch`` is 0 for the event at the start of training and otherwise the
1-based epoch during which the event happened (set by ``on_epoch_begin``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from mtl_bench.schema import ALL
from mtl_bench.spec import Task
from mtl_bench.engine.training import masked_loss

GATE_GROUP = "gate"
UPDATE = "update"  # task_j of the applied-update measures
OTHERS = "others"  # task_j of the lookahead-damage measures
RECORD_KEYS: tuple[str, ...] = ("epoch", "step", "task_i", "task_j", "group", "measure", "value")
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
    """

    features: dict[str, tf.Tensor]
    labels: dict[str, tf.Tensor]
    optimizer: keras.optimizers.Optimizer
    loss_weights: dict[str, float]
    steps: int = 10
    batch_size: int = 256
    seed: int = 0


def _is_int(value: Any, low: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= low


def _check_lookahead(lookahead: Any, names: Sequence[str]) -> int:
    """Validates a :class:`Lookahead` for the probed tasks; returns the number of training rows."""
    if not isinstance(lookahead, Lookahead):
        raise ValueError(f"ConflictProbe: lookahead must be a Lookahead. Received: {type(lookahead).__name__}")
    if not _is_int(lookahead.steps, 1):
        raise ValueError(f"ConflictProbe: lookahead.steps must be an int >= 1. Received: steps={lookahead.steps!r}")
    if not _is_int(lookahead.batch_size, 1):
        raise ValueError(
            f"ConflictProbe: lookahead.batch_size must be an int >= 1. Received: batch_size={lookahead.batch_size!r}"
        )
    if not _is_int(lookahead.seed, 0):
        raise ValueError(f"ConflictProbe: lookahead.seed must be an int >= 0. Received: seed={lookahead.seed!r}")
    if not isinstance(lookahead.optimizer, keras.optimizers.Optimizer):
        raise ValueError(
            "ConflictProbe: lookahead.optimizer must be a keras.optimizers.Optimizer. "
            f"Received: {type(lookahead.optimizer).__name__}"
        )
    if not isinstance(lookahead.features, Mapping) or not lookahead.features:
        raise ValueError(
            "ConflictProbe: lookahead.features must be a non-empty dict of arrays. "
            f"Received: {type(lookahead.features)}"
        )
    if not isinstance(lookahead.labels, Mapping) or any(n not in lookahead.labels for n in names):
        received = list(lookahead.labels) if isinstance(lookahead.labels, Mapping) else type(lookahead.labels)
        raise ValueError(
            f"ConflictProbe: lookahead.labels must hold labels for tasks {list(names)}. Received: {received}"
        )
    for n in names:
        shape = getattr(lookahead.labels[n], "shape", None)
        if shape is None or not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise ValueError(
                f"ConflictProbe: lookahead.labels[{n!r}] must have shape (n,). Received a value of shape {shape}"
            )
    weights = lookahead.loss_weights
    if not isinstance(weights, Mapping) or any(
        n not in weights
        or isinstance(weights[n], bool)
        or not isinstance(weights[n], (int, float, np.integer, np.floating))
        or not math.isfinite(weights[n])
        for n in names
    ):
        raise ValueError(
            f"ConflictProbe: lookahead.loss_weights must give a finite weight to each of {list(names)}. "
            f"Received: {weights!r}"
        )
    sizes = {_num_rows(v) for v in lookahead.features.values()} | {_num_rows(lookahead.labels[n]) for n in names}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(
            f"ConflictProbe: lookahead arrays must share one non-zero length. Received lengths {sorted(sizes)}"
        )
    return sizes.pop()


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
        ValueError: On an invalid argument; at the first event, when the model
            does not fit the arguments (e.g. no ``task_variables`` for ``lookahead``).
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
        if lookahead is not None:
            if tasks is None:
                raise ValueError(
                    "ConflictProbe: lookahead needs tasks= (their Keras loss objects train the counterfactual), "
                    f"not losses=. Received: losses={losses!r}"
                )
            _check_lookahead(lookahead, names)

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
        self._la_fn = None
        self._own: list[list] = []
        if lookahead is not None:
            self._la_features = {k: tf.convert_to_tensor(v) for k, v in lookahead.features.items()}
            self._la_labels = {n: tf.reshape(tf.cast(lookahead.labels[n], tf.float32), [-1]) for n in names}
            self._la_weights = tf.constant([float(lookahead.loss_weights[n]) for n in names], tf.float32)
            self._la_rows = _num_rows(self._la_labels[names[0]])

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
        if self.lookahead is not None:
            self._own = self._task_variables(model, trainable)
        self._fn = self._compiled(model)
        self._la_fn = self._compiled_lookahead(model) if self.lookahead is not None else None
        self._prepared_for = model

    def _task_variables(self, model: keras.Model, trainable: list) -> list[list]:
        """Each task's own trainable variables (``model.task_variables``), checked for the lookahead."""
        if not trainable:
            raise ValueError("ConflictProbe: lookahead needs a model with trainable variables. Received: none")
        own = getattr(model, "task_variables", None)
        if not isinstance(own, Mapping) or any(n not in own for n in self.task_names):
            raise ValueError(
                "ConflictProbe: lookahead needs model.task_variables, a dict from each task name to that task's "
                f"own variables. Received: {type(own).__name__ if not isinstance(own, Mapping) else list(own)}"
            )
        known = {id(v) for v in trainable}
        for n in self.task_names:
            outside = [getattr(v, "path", "?") for v in own[n] if id(v) not in known]
            if outside:
                raise ValueError(
                    f"ConflictProbe: task_variables[{n!r}] holds variables that are not trainable. Received: {outside}"
                )
        optimizer = self.lookahead.optimizer
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
        return [list(own[n]) for n in self.task_names]

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
            self.lookahead is not None,  # then the function also returns the full-batch gradients
        )
        cache = _cache(model)
        if key not in cache:
            cache[key] = self._make_fn(model)
        return cache[key]

    def _compiled_lookahead(self, model: keras.Model):
        """The k-step lookahead function, traced once and cached on the model for identical settings."""
        key = (
            "lookahead",
            self.task_names,
            tuple(self._loss_keys),
            tuple(id(v) for v in self._shared),
            tuple(id(v) for v in model.trainable_variables),
            tuple(tuple(id(v) for v in own) for own in self._own),
            id(self.lookahead.optimizer),
        )
        cache = _cache(model)
        if key not in cache:
            cache[key] = self._make_lookahead_fn(model)
        return cache[key]

    def _make_fn(self, model: keras.Model):
        names, loss_fns, shared = self.task_names, list(self._loss_fns), list(self._shared)
        has_gates = self._has_gates
        with_grads = self.lookahead is not None
        num_tasks = len(names)

        def task_losses(x, ys):
            out = _name_outputs(model(x, training=False), model, names)
            preds = [out[n] for n in names]
            # A loss given by name is a bare function returning per-example values: reduce it as fit does.
            return [keras.ops.mean(fn(y, p)) for fn, y, p in zip(loss_fns, ys, preds)], preds

        def gradients(tape, loss):
            zero = tf.UnconnectedGradients.ZERO
            return [tf.convert_to_tensor(g) for g in tape.gradient(loss, shared, unconnected_gradients=zero)]

        def gram(rows):
            """Per shared variable, the float64 Gram matrix of ``rows`` (a list of per-variable gradient lists)."""
            grams = []
            for k in range(len(shared)):
                flat = tf.stack([tf.reshape(tf.cast(r[k], tf.float64), [-1]) for r in rows])
                grams.append(tf.matmul(flat, flat, transpose_b=True))
            return tf.stack(grams)

        def probe_fn(x, ys, lr):
            result = {}
            if shared:
                # Half A is the first ceil(n/2) rows, half B the rest; the shape is static in each trace.
                n = int(ys[0].shape[0])
                n_a = (n + 1) // 2
                n_b = n - n_a
                parts = [(0, n_a), (n_a, n)] if n_b else [(0, n)]
                with tf.GradientTape(persistent=True) as tape:
                    per_part = [
                        task_losses({k: v[lo:hi] for k, v in x.items()}, [y[lo:hi] for y in ys]) for lo, hi in parts
                    ]
                half = [[gradients(tape, loss) for loss in losses] for losses, _ in per_part]
                del tape
                if n_b:
                    (losses_a, preds_a), (losses_b, preds_b) = per_part
                    # The losses are means over the rows: the full-batch values follow exactly from the halves.
                    losses = [(n_a * la + n_b * lb) / n for la, lb in zip(losses_a, losses_b)]
                    preds = [tf.concat([pa, pb], 0) for pa, pb in zip(preds_a, preds_b)]
                    grads = [
                        [(n_a * ga + n_b * gb) / n for ga, gb in zip(half[0][i], half[1][i])] for i in range(num_tasks)
                    ]
                    half_grams = gram(half[0] + half[1])  # (variables, 2T, 2T): A rows first, then B rows
                    result["half_grams"] = half_grams
                    # Full-batch Gram from the halves in float64: g = M^T [g^A; g^B], M = [(n_a/n) I; (n_b/n) I].
                    eye = tf.eye(num_tasks, dtype=tf.float64)
                    mix = tf.concat([eye * (n_a / n), eye * (n_b / n)], 0)
                    result["grams"] = tf.einsum("pi,vpq,qj->vij", mix, half_grams, mix)
                else:
                    (losses, preds), grads = per_part[0], half[0]
                    result["grams"] = gram(grads)
                if with_grads:
                    result["grads"] = grads
                # Affinity lookahead: one SGD step of each task's gradient on the shared variables, then exact restore.
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

    def _make_lookahead_fn(self, model: keras.Model):
        names, loss_fns, shared = self.task_names, list(self._loss_fns), list(self._shared)
        optimizer = self.lookahead.optimizer
        trainable = list(model.trainable_variables)
        # Task i's step updates every trainable variable except task i's own: a subset of the variables the
        # optimizer was built on, which Keras 3 accepts (it updates those variables and their slots only).
        subsets = []
        for own in self._own:
            own_ids = {id(v) for v in own}
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
            out = _name_outputs(model(x, training=False), model, names)
            return tf.stack([fn(y, out[n]) for n, fn, y in zip(names, loss_fns, ys)])

        def train_losses(x, labels):
            """Per-task losses of one training batch; a missing (NaN) label has sample weight 0."""
            out = _name_outputs(model(x, training=True), model, names)
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

    def _lookahead_batches(self, step: int) -> tf.Tensor:
        """The event's training batches, ``(steps, batch_size)`` row indices, the same for every task."""
        la, n = self.lookahead, self._la_rows
        rng = np.random.default_rng([la.seed, step])
        size = la.steps * la.batch_size
        rows = rng.permutation(n)[:size] if n >= size else rng.integers(0, n, size=size)
        return tf.constant(rows.reshape(la.steps, la.batch_size), tf.int32)

    def _damage_rows(self, step: int, grads: list[list[tf.Tensor]]) -> list[tuple[str, str, str, str, float]]:
        names, rows = self.task_names, []
        batches = self._lookahead_batches(step)
        for i, n in enumerate(names):
            keep = tf.constant([0.0 if j == i else 1.0 for j in range(len(names))], tf.float32)
            out = self._la_fn(
                self._la_features, self._la_labels, self._x, self._ys, batches, keep, self._la_weights, grads[i]
            )
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
                gram = grams[idx].sum(axis=0)
                for i, j in _pairs(len(names)):
                    cos, mag = _cosine_magnitude(gram[i, i], gram[j, j], gram[i, j])
                    conflict = float("nan") if math.isnan(cos) else float(cos < 0)
                    rows.append((names[i], names[j], group, "cosine", cos))
                    rows.append((names[i], names[j], group, "conflict", conflict))
                    rows.append((names[i], names[j], group, "magnitude_similarity", mag))
            if self.combination is not None:
                rows.extend(self._update_rows(grams.sum(axis=0), step))
            if "half_grams" in result:
                rows.extend(_halves_rows(names, result["half_grams"].numpy().sum(axis=0)))
            after = result["after"].numpy().astype(np.float64)
            for i in range(len(names)):
                for j in range(len(names)):
                    z = 1.0 - after[i, j] / losses[j] if losses[j] != 0 else float("nan")
                    rows.append((names[i], names[j], ALL, "self_affinity" if i == j else "affinity", float(z)))
        if self._la_fn is not None:
            grads = result["grads"] if self._shared else [[] for _ in names]
            rows.extend(self._damage_rows(step, grads))
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


def _cache(model: keras.Model) -> dict:
    """The model's cache of compiled probe functions."""
    cache = model.__dict__.get(_CACHE_ATTR)
    if cache is None:
        cache = {}
        object.__setattr__(model, _CACHE_ATTR, cache)
    return cache


def _pairs(t: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(t) for j in range(t) if i != j]


def _cosine_magnitude(gii: float, gjj: float, gij: float) -> tuple[float, float]:
    """Cosine and magnitude similarity from squared norms and the dot product."""
    ni, nj = math.sqrt(max(gii, 0.0)), math.sqrt(max(gjj, 0.0))
    cos = float("nan") if ni == 0 or nj == 0 else float(np.clip(gij / (ni * nj), -1.0, 1.0))
    denom = gii + gjj
    mag = float("nan") if denom == 0 else 2.0 * ni * nj / denom
    return cos, mag


def _cosine(gij: float, gii: float, gjj: float) -> float:
    """Cosine from a dot product and two squared norms; NaN when a norm is zero."""
    ni, nj = math.sqrt(max(gii, 0.0)), math.sqrt(max(gjj, 0.0))
    return float("nan") if ni == 0 or nj == 0 else float(np.clip(gij / (ni * nj), -1.0, 1.0))


def _halves_rows(names: Sequence[str], gram: np.ndarray) -> list[tuple[str, str, str, str, float]]:
    """Noise-floor measures from the ``(2T, 2T)`` Gram matrix of the half-A then half-B gradients."""
    t = len(names)
    rows = []
    for i, n in enumerate(names):
        cos = _cosine(gram[i, t + i], gram[i, i], gram[t + i, t + i])
        rows.append((n, n, ALL, "cosine_floor", cos))
        rows.append((n, n, ALL, "conflict_floor", float("nan") if math.isnan(cos) else float(cos < 0)))
    for i, j in _pairs(t):
        ab = _cosine(gram[i, t + j], gram[i, i], gram[t + j, t + j])
        ba = _cosine(gram[t + i, j], gram[t + i, t + i], gram[j, j])
        cos = 0.5 * (ab + ba)
        rows.append((names[i], names[j], ALL, "cosine_halves", cos))
        rows.append((names[i], names[j], ALL, "conflict_halves", float("nan") if math.isnan(cos) else float(cos < 0)))
    return rows


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
