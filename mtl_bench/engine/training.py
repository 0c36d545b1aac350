"""The engine's training step: compiled, multi-step, with validation-only model selection.

Models only compute outputs; tasks own labels, losses and metrics; this module
owns the optimisation. One :class:`Trainer` trains one model on a set of tasks
over a set of variables (all of them, or the shared ones plus one task's head
in a sequential phase).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from mtl_bench.engine import data as data_lib
from mtl_bench.engine import metrics as metrics_lib
from mtl_bench.remedies.combination import LossCombination, Static
from mtl_bench.remedies.anchors import ForgettingAid
from mtl_bench.spec import Split, Task
from mtl_bench.validation import check_number, fail

PREDICT_BATCH = 8192


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclasses.dataclass
class EpochLog:
    """One epoch: mean training loss per task and validation metrics per task."""

    epoch: int
    train_loss: dict[str, float]
    validation: dict[str, dict[str, float]]
    selection_loss: float


SELECTIONS: tuple[str, ...] = ("per_task", "sum", "last")


@dataclasses.dataclass
class FitResult:
    """A fit's history and what it selected.

    Attributes:
        history: One log per epoch run.
        best_epoch: The selected epoch (1-based); with per-task selection, the
            latest of the tasks' selected epochs.
        steps: Training steps run.
        best_epochs: The epoch selected for each task (per-task selection:
            each task's own validation loss; otherwise ``best_epoch`` for all).
        snapshots: Per-task selection only: each task's selected weights
            (``model.weights`` values), which :func:`evaluate_selected` uses.
    """

    history: list[EpochLog]
    best_epoch: int
    steps: int
    best_epochs: dict[str, int] = dataclasses.field(default_factory=dict)
    snapshots: dict[str, list[np.ndarray]] = dataclasses.field(default_factory=dict)


def masked_loss(loss_fn: keras.losses.Loss, y: tf.Tensor, pred: tf.Tensor) -> tf.Tensor:
    """A task's batch loss over its labelled rows: a NaN label is a missing one.

    Keras's sum-over-batch-size reduction divides by the batch size, so a
    batch with few labels gives a small loss and one with none gives 0 and no
    gradient: a task whose labels arrive in bursts gets no signal between them.
    """
    mask = tf.math.is_finite(y)
    return loss_fn(tf.expand_dims(tf.where(mask, y, tf.zeros_like(y)), -1), pred, sample_weight=tf.cast(mask, pred.dtype))


def val_log_key(task: str, metric: str) -> str:
    """The epoch-log key of one task's validation metric, ``val_<task>_<metric>`` (Keras's naming)."""
    return f"val_{task}_{metric}"


def predict(model: keras.Model, split: Split, batch_size: int = PREDICT_BATCH) -> dict[str, np.ndarray]:
    """Predictions of every model output on a whole split, as flat numpy arrays."""
    fn = _predict_fn(model)
    parts: dict[str, list[np.ndarray]] = {}
    for batch in data_lib.feature_batches(split, batch_size):
        for name, value in fn(batch).items():
            parts.setdefault(name, []).append(value.numpy().reshape(-1))
    return {name: np.concatenate(v) for name, v in parts.items()}


def _predict_fn(model: keras.Model):
    fn = getattr(model, "_mtl_bench_predict", None)
    if fn is None:
        fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True, autograph=False)
        # Splits of different lengths (forgetting remedies predict the training split too) trace anew once each.
        fn._omit_frequent_tracing_warning = True
        model._mtl_bench_predict = fn
    return fn


def evaluate(
    model: keras.Model, tasks: Sequence[Task], split: Split, pred: dict[str, np.ndarray] | None = None
) -> dict[str, dict[str, float]]:
    """``{task: {metric: value}}`` for every task on one split (from ``pred`` when given)."""
    pred = predict(model, split) if pred is None else pred
    return {t.name: metrics_lib.evaluate_task(t, split.labels[t.name], pred[t.name]) for t in tasks}


def evaluate_selected(model: keras.Model, fit: FitResult, tasks: Sequence[Task], split: Split) -> dict[str, dict[str, float]]:
    """Like :func:`evaluate`, each task with the weights selected for it (per-task selection).

    Without per-task snapshots this is :func:`evaluate` of the model as it is.
    The model is left with the weights it had on entry.
    """
    if not fit.snapshots:
        return evaluate(model, tasks, split)
    current = [v.numpy() for v in model.weights]
    out = {}
    for t in tasks:
        for v, w in zip(model.weights, fit.snapshots[t.name]):
            v.assign(w)
        out[t.name] = metrics_lib.evaluate_task(t, split.labels[t.name], predict(model, split)[t.name])
    for v, w in zip(model.weights, current):
        v.assign(w)
    return out


class Trainer:
    """Trains ``model`` on ``tasks`` over ``variables``, combining the task losses with ``combination``.

    After every epoch the Keras callbacks' ``on_epoch_end`` logs carry the validation
    numbers the trainer computed for that epoch: ``val_selection_loss`` and, for every
    task in ``tasks`` and every metric of the task, ``val_<task>_<metric>``
    (:func:`val_log_key`), so a callback never needs a validation pass of its own.

    Args:
        model: A model mapping a feature dict to ``{task_name: prediction}``.
        tasks: The tasks whose losses are optimised.
        learning_rate: Adam learning rate, a finite number > 0.
        variables: Variables to update; default all trainable variables.
        loss_weights: Per-task static weight; default each task's ``weight``.
        combination: How the task losses (and, for gradient methods, their
            gradients on the shared variables) become one update; default
            :class:`~mtl_bench.remedies.combination.Static`, the weighted sum. It is
            built here, with ``loss_weights`` and ``seed``; each step passes it the
            step and the per-task losses and calls its ``after_step`` (FAMO), each
            epoch its ``on_epoch_end`` with the epoch's mean training losses (DWA).
        aid: A forgetting remedy already bound to this run
            (:meth:`~mtl_bench.remedies.anchors.ForgettingAid.bind`); its loss joins
            the objective of every step.
        seed: Seeds the combination's per-step randomness (PCGrad's task order).
        jit_compile: Compile the training step with XLA: faster steps, but a
            compile of about 2 s per model, which short runs do not win back.
            Not with CAGrad (its inner solver runs in numpy).
    """

    def __init__(
        self,
        model: keras.Model,
        tasks: Sequence[Task],
        *,
        learning_rate: float,
        variables: Sequence[keras.Variable] | None = None,
        loss_weights: dict[str, float] | None = None,
        combination: LossCombination | None = None,
        aid: ForgettingAid | None = None,
        seed: int = 0,
        jit_compile: bool = False,
    ) -> None:
        if not tasks:
            raise fail("Trainer", "tasks", "a non-empty sequence of Task", tasks)
        self.model = model
        self.tasks = tuple(tasks)
        self.learning_rate = check_number("Trainer", "learning_rate", learning_rate, 0.0, low_open=True)
        self._variables = list(variables) if variables is not None else None
        weights = loss_weights or {t.name: t.weight for t in self.tasks}
        self.loss_weights = [float(weights[t.name]) for t in self.tasks]
        self.combination = combination if combination is not None else Static()
        if jit_compile and not self.combination.jit_compatible:
            method = type(self.combination).__name__
            raise fail("Trainer", "jit_compile", f"False with {method}, which XLA cannot compile", jit_compile)
        self.combination.build(self.tasks, self.loss_weights, seed)
        self.aid = aid if aid is not None and aid.active else None
        self._loss_fns = [t.loss_fn() for t in self.tasks]
        self.optimizer = keras.optimizers.Adam(learning_rate=self.learning_rate)
        self._run_steps = None
        self._masked: set[str] = set()
        self.jit_compile = jit_compile

    @property
    def variables(self) -> list[keras.Variable]:
        model_vars = self._variables if self._variables is not None else list(self.model.trainable_variables)
        return model_vars + list(self.combination.variables)

    def task_losses(self, x: dict[str, tf.Tensor], y: dict[str, tf.Tensor], training: bool = True) -> tf.Tensor:
        """Vector of per-task mean losses on one batch (differentiable)."""
        return tf.stack(self._each_loss(self.model(x, training=training), y))

    def _each_loss(self, pred: dict[str, tf.Tensor], y: dict[str, tf.Tensor]) -> list[tf.Tensor]:
        return [
            masked_loss(fn, y[t.name], pred[t.name]) if t.name in self._masked else fn(tf.expand_dims(y[t.name], -1), pred[t.name])
            for t, fn in zip(self.tasks, self._loss_fns)
        ]

    def _gram_split(self, variables: list) -> tuple[list[int], list[int]]:
        """Positions of the shared variables (combined by the Gram method) and of the rest."""
        if not self.combination.needs_gram or len(self.tasks) < 2:
            return [], list(range(len(variables)))
        shared = {id(v) for v in getattr(self.model, "shared_variables", [])}
        if not shared:
            raise ValueError(
                f"Trainer: {type(self.combination).__name__} needs a model with shared_variables. "
                f"Received: {type(self.model).__name__}"
            )
        inside = [k for k, v in enumerate(variables) if id(v) in shared]
        return inside, [k for k in range(len(variables)) if k not in set(inside)]

    def _build(self, sample: Split) -> None:
        # Tasks with missing training labels (NaN) are trained on their labelled rows only.
        self._masked = {t.name for t in self.tasks if np.isnan(sample.labels[t.name]).any()}
        if not self.model.built or not self.model.trainable_variables:
            self.model(sample.take(slice(0, 2)).features)
        variables = self.variables
        if not variables:
            raise ValueError("Trainer: the model has no trainable variables to train")
        self.optimizer.build(variables)
        combination, aid, model = self.combination, self.aid, self.model
        shared_pos, rest_pos = self._gram_split(variables)
        shared_vars = [variables[k] for k in shared_pos]
        # Differentiated through their tf.Variable: TF's zero fill of an unconnected gradient (ESMM's CTR tower
        # and a third task) fails on a Keras variable, whose dtype is a string.
        shared_sources = [getattr(v, "value", v) for v in shared_vars]
        rest_vars = [variables[k] for k in rest_pos]
        zero = tf.UnconnectedGradients.ZERO

        def step(x, y, rows, anchor_x, global_step):
            with tf.GradientTape(persistent=bool(shared_pos)) as tape:
                pred = model(x, training=True)
                each = self._each_loss(pred, y)
                losses = tf.stack(each)
                total = combination.objective(losses, global_step)
                extra = None
                if aid is not None:
                    anchor_pred = model(anchor_x, training=True) if aid.needs_anchor else None
                    extra = aid.loss(pred, rows, anchor_pred)
                    total = total + extra
            if not shared_pos:
                grads = tape.gradient(total, variables, unconnected_gradients=zero)
            else:
                per_task = [tape.gradient(loss, shared_sources, unconnected_gradients=zero) for loss in each]
                flat = tf.stack([tf.concat([tf.reshape(g, [-1]) for g in gs], 0) for gs in per_task])
                coef = combination.coefficients(tf.matmul(flat, flat, transpose_b=True), global_step, losses=losses)
                combined = [sum(coef[k] * per_task[k][n] for k in range(len(self.tasks))) for n in range(len(shared_vars))]
                if extra is not None:
                    combined = [c + g for c, g in zip(combined, tape.gradient(extra, shared_sources, unconnected_gradients=zero))]
                rest = tape.gradient(total, rest_vars, unconnected_gradients=zero) if rest_vars else []
                grads = [None] * len(variables)
                for k, g in zip(shared_pos, combined):
                    grads[k] = g
                for k, g in zip(rest_pos, rest):
                    grads[k] = g
                del tape
            self.optimizer.apply(grads, variables)
            # FAMO reads the same batch's losses after the update; the other methods get None.
            after = tf.stack(self._each_loss(model(x, training=True), y)) if combination.needs_losses_after else None
            combination.after_step(losses, after)
            return losses

        if self.jit_compile:
            step = tf.function(step, jit_compile=True)

        def run_steps(features, labels, rows, batches, start, count, first_step):
            """Steps on ``batches[start : start + count]``; returns each step's per-task losses, (count, T)."""
            num_batches = tf.shape(batches)[0]

            def body(i, losses):
                index = batches[i]
                x = {k: tf.gather(v, index) for k, v in features.items()}
                y = {k: tf.gather(v, index) for k, v in labels.items()}
                # The anchor batch is the epoch's next batch: other rows, drawn by the same permutation.
                anchor = batches[(i + 1) % num_batches]
                r = {k: tf.gather(v, anchor if k.startswith("anchor_") else index) for k, v in rows.items()}
                anchor_x = {k: tf.gather(v, anchor) for k, v in features.items()} if aid is not None and aid.needs_anchor else None
                return i + 1, losses.write(i - start, step(x, y, r, anchor_x, first_step + tf.cast(i - start, tf.int64)))

            _, losses = tf.while_loop(
                lambda i, _: i < start + count, body, (start, tf.TensorArray(tf.float32, size=count))
            )
            return losses.stack()

        # The loop is an explicit tf.while_loop: AutoGraph would only add conversion time to every trace.
        self._run_steps = tf.function(run_steps, reduce_retracing=True, autograph=False)
        # TF counts traces of this code across every model built in the process and warns about
        # "frequent retracing"; each new model must be traced once, so the warning is noise here.
        self._run_steps._omit_frequent_tracing_warning = True

    def fit(
        self,
        train: Split,
        validation: Split,
        *,
        epochs: int,
        batch_size: int,
        seed: int,
        patience: int = 2,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        steps_per_call: int = 0,
        restore_best: bool = True,
        select: str = "sum",
    ) -> FitResult:
        """Trains with early stopping on the validation loss and restores the best epoch's weights.

        With ``select="sum"`` the validation loss weighs the tasks with the
        static ``loss_weights`` whatever the combination, so every remedy is
        selected by one criterion. With ``select="per_task"`` every task keeps
        the weights of the epoch with its own lowest validation loss (the rule
        a single-task model is selected by, so single-task and multi-task arms
        are selected alike); training stops when no task improved for
        ``patience`` epochs.

        Args:
            train: Training split.
            validation: Validation split; the only data used for model selection.
            epochs: Maximum number of epochs.
            batch_size: Batch size.
            seed: Shuffling seed.
            patience: Epochs without improvement before stopping; 0 = never stop early.
            callbacks: Keras callbacks; ``on_train_batch_end`` is called at every
                global multiple of ``steps_per_call`` steps (and at each epoch's
                end) with the global step as the batch index and in
                ``logs["global_step"]``, the steps since the previous call in
                ``logs["steps"]`` and, for each task with missing labels, the
                number of those steps whose batch held one of its labels in
                ``logs["signal_steps/<task>"]``. ``on_epoch_end`` gets the epoch's
                validation numbers, all computed on ``validation`` with the epoch's
                last weights: ``logs["val_selection_loss"]`` (the ``select="sum"``
                criterion) and every metric of every trained task in
                ``logs["val_<task>_<metric>"]`` (:func:`val_log_key`; the values of
                :func:`evaluate` on ``validation``, as in the epoch's
                :class:`EpochLog`).
            steps_per_call: Steps run in one compiled call at most; 0 = a whole epoch.
                Each epoch is a seeded permutation of the training rows cut
                into full batches.
            restore_best: Restore the best validation epoch's weights at the end;
                False keeps the last epoch's (no model selection at all).
            select: ``"sum"``, ``"per_task"`` or ``"last"`` (no selection: the
                last epoch's weights, the same as ``restore_best=False``).

        Returns:
            The epoch history, the selected (1-based) epoch and the number of steps.

        Raises:
            TrainingDiverged: When the training loss is not finite.
        """
        if select not in SELECTIONS:
            raise ValueError(f"Trainer.fit: select must be one of {SELECTIONS}. Received: select={select!r}")
        restore_best = restore_best and select != "last"
        per_task = select == "per_task" and len(self.tasks) > 1
        if self._run_steps is None:
            self._build(train)
        names = [t.name for t in self.tasks]
        task_best = {n: (np.inf, 0, None) for n in names}  # per-task selection: (loss, epoch, weights)
        spe = data_lib.steps_per_epoch(train, batch_size)
        chunk = steps_per_call or spe
        features, labels = data_lib.resident(train, names)
        rows = self.aid.resident() if self.aid is not None else {}
        rng = np.random.default_rng(seed)
        cb = keras.callbacks.CallbackList(list(callbacks), model=self.model)
        cb.on_train_begin()
        history: list[EpochLog] = []
        best, best_epoch, best_weights, since_best, step = np.inf, 0, None, 0, 0
        for epoch in range(1, epochs + 1):
            cb.on_epoch_begin(epoch - 1)
            if self.aid is not None:
                self.aid.on_epoch_begin(epoch)
            # The whole epoch goes in at once (one shape, one trace); chunks are index ranges of it.
            batches = data_lib.epoch_batches(len(train), batch_size, rng, train.meta.get(data_lib.STREAM_BLOCK))
            epoch_tensor = tf.constant(batches)
            # Steps whose batch holds a label of a task with missing labels (the others have one in every batch).
            signal = {t: np.isfinite(train.labels[t][batches]).any(axis=1) for t in names if t in self._masked}
            loss_sum = np.zeros(len(names))
            start = 0
            while start < len(batches):
                # Chunks end on global multiples of ``chunk``, so callbacks see steps chunk, 2·chunk, ...
                n = min(chunk - step % chunk, len(batches) - start)
                step_losses = self._run_steps(
                    features, labels, rows, epoch_tensor, tf.constant(start), tf.constant(n), tf.constant(step, tf.int64)
                ).numpy()
                start += n
                # Summed here, step by step, so the logged loss does not depend on how steps are chunked.
                mean_losses = step_losses.astype(np.float64).mean(axis=0)
                if not np.all(np.isfinite(mean_losses)):
                    bad = [t for t, v in zip(names, mean_losses) if not np.isfinite(v)]
                    raise TrainingDiverged(f"training loss of {bad} is not finite at epoch {epoch}, step {step + n}")
                loss_sum += step_losses.astype(np.float64).sum(axis=0)
                step += n
                cb.on_train_batch_end(
                    step, {"global_step": step, "steps": n, **{f"loss/{t}": float(v) for t, v in zip(names, mean_losses)},
                           **{f"signal_steps/{t}": int(has[start - n : start].sum()) for t, has in signal.items()}}
                )
            pred = predict(self.model, validation)
            val = {
                t.name: metrics_lib.evaluate_task(t, validation.labels[t.name], pred[t.name]) for t in self.tasks
            }
            selection = float(
                sum(
                    w * metrics_lib.task_loss(t, validation.labels[t.name], pred[t.name])
                    for t, w in zip(self.tasks, self.loss_weights)
                )
            )
            self.combination.on_epoch_end(loss_sum / len(batches))
            log = EpochLog(epoch, dict(zip(names, (loss_sum / len(batches)).tolist())), val, selection)
            history.append(log)
            cb.on_epoch_end(epoch - 1, {
                "val_selection_loss": selection,
                **{val_log_key(task, metric): value for task, values in val.items() for metric, value in values.items()},
            })
            if per_task:
                improved = False
                for t in self.tasks:
                    loss = metrics_lib.task_loss(t, validation.labels[t.name], pred[t.name])
                    if loss < task_best[t.name][0]:
                        task_best[t.name] = (loss, epoch, [v.numpy() for v in self.model.weights])
                        improved = True
                if improved:
                    since_best = 0
                    best_epoch = max(e for _, e, _ in task_best.values())
                    best_weights = next(w for _, e, w in task_best.values() if e == best_epoch)
                else:
                    since_best += 1
                    if patience and since_best >= patience:
                        break
            elif selection < best:
                best, best_epoch, since_best = selection, epoch, 0
                best_weights = [v.numpy() for v in self.model.weights]
            else:
                since_best += 1
                if patience and since_best >= patience:
                    break
        if best_weights is None or (per_task and any(w is None for _, _, w in task_best.values())):
            raise TrainingDiverged("validation loss is not finite at any epoch")
        if restore_best:
            for v, w in zip(self.model.weights, best_weights):
                v.assign(w)
        else:
            best_epoch = len(history)
        cb.on_train_end()
        if per_task and restore_best:
            return FitResult(history, best_epoch, step, {n: e for n, (_, e, _) in task_best.items()},
                             {n: w for n, (_, _, w) in task_best.items()})
        return FitResult(history, best_epoch, step, {n: best_epoch for n in names})
