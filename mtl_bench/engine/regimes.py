"""Training regimes: the same tasks trained single-task, jointly and sequentially.

A regime turns one :class:`Job` (data, architecture, order, seed, settings)
into a :class:`CellResult`: tidy metric rows for ``metrics.csv``. ``REGIMES``
is a plain dict from name to regime.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Sequence
from typing import Any

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mtl_bench.engine import data as data_lib
from mtl_bench.engine import metrics as metrics_lib
from mtl_bench.measures import retention
from mtl_bench.config import RunConfig
from mtl_bench.measures.probe import ConflictProbe, Lookahead
from mtl_bench.remedies import BASELINE, REMEDIES, Remedy
from mtl_bench.spec import Split, SuiteData, Task
from mtl_bench.engine.training import FitResult, Trainer, evaluate, evaluate_selected, predict

from mtl_bench.schema import NO_ORDER, ORDER_SEPARATOR, SHARED_WEIGHTS, SINGLE_ARCH

# (model, trained tasks, phase) -> callbacks for that training phase; the probe plugs in here.
CallbackFactory = Callable[[keras.Model, Sequence[Task], int], list[keras.callbacks.Callback]]


@dataclasses.dataclass(frozen=True)
class Job:
    """One grid cell's inputs."""

    data: SuiteData
    arch: str
    model_factory: Callable[..., keras.Model]
    arch_params: dict[str, Any]
    order: tuple[str, ...]
    seed: int
    config: RunConfig
    name: str = "cell"
    callbacks: CallbackFactory | None = None
    remedy: Remedy = REMEDIES[BASELINE]
    remedy_params: dict[str, Any] = dataclasses.field(default_factory=dict)

    @functools.cached_property
    def selection(self) -> Split:
        """The validation rows that select epochs (see :func:`selection_and_outcome`)."""
        return selection_and_outcome(self.data, self.config.selection_share)[0]

    @functools.cached_property
    def outcome(self) -> Split:
        """The validation rows results, the probe batch and the verdict are read on."""
        return selection_and_outcome(self.data, self.config.selection_share)[1]


@dataclasses.dataclass
class CellResult:
    """A cell's tidy rows, one list per result file.

    Attributes:
        rows: ``metrics.csv`` rows: phase, epoch, stage, task, split, metric, value.
        probe: ``probe.csv`` rows: phase, step, task_i, task_j, group, measure, value.
        retention: ``retention.csv`` rows: phase, task, measure, value.
        daily: ``daily.csv`` rows of the daily regime: phase, day (evaluated),
            sample, cohort (``"all"`` or the cohort), heldout, task, metric, value.
    """

    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    probe: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    retention: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    daily: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def frames(self) -> dict[str, list[dict[str, Any]]]:
        """Result file stem -> rows."""
        return {"metrics": self.rows, "probe": self.probe, "retention": self.retention, "daily": self.daily}

    def add_fit(self, fit: FitResult, phase: int) -> None:
        """Per-epoch training losses and validation metrics (stage ``epoch``)."""
        for log in fit.history:
            for task, loss in log.train_loss.items():
                self.rows.append(_row(phase, log.epoch, "epoch", task, "train", "loss", loss))
            for task, values in log.validation.items():
                for metric, value in values.items():
                    self.rows.append(_row(phase, log.epoch, "epoch", task, "validation", metric, value))

    def add_eval(self, evals: dict[str, dict[str, float]], phase: int, epoch: int, split: str) -> None:
        """Evaluation of the selected weights (stage ``final``)."""
        for task, values in evals.items():
            for metric, value in values.items():
                self.rows.append(_row(phase, epoch, "final", task, split, metric, value))


def _row(phase: int, epoch: int, stage: str, task: str, split: str, metric: str, value: float) -> dict[str, Any]:
    return {
        "phase": phase,
        "epoch": epoch,
        "stage": stage,
        "task": task,
        "split": split,
        "metric": metric,
        "value": float(value),
    }


def trainable(split: Split) -> Split:
    """The rows a regime may train or select on: all but held-out rows and the unbiased evaluation sample."""
    excluded = np.zeros(len(split), bool)
    for key in ("holdout", "uniform"):
        if key in split.meta:
            excluded |= split.meta[key] == 1
    return split.take(np.flatnonzero(~excluded)) if excluded.any() else split


def selection_and_outcome(data: SuiteData, share: float) -> tuple[Split, Split]:
    """The validation split cut in two: rows that select epochs and rows the outcome is read on.

    The first ``round(share · n)`` validation rows (rows are in a seeded random
    order) only select; the rest are where every reported validation number,
    the probe batch and the verdict come from, so no number a verdict reads
    was used to choose it. ``share = 0`` uses all rows for both (the protocol
    of runs made before the split existed).
    """
    validation = data.validation
    if not share:
        return validation, validation
    cut = int(round(share * len(validation)))
    if not 0 < cut < len(validation):
        raise ValueError(f"selection_share={share} leaves no selection or no outcome rows of {len(validation)}")
    return validation.take(slice(0, cut)), validation.take(slice(cut, None))


def _fit(
    job: Job,
    model: keras.Model,
    tasks: Sequence[Task],
    phase: int,
    result: CellResult,
    variables=None,
    protected: Sequence[Task] = (),
) -> FitResult:
    """Trains one phase with the job's remedy; with the probe on, records it into ``result.probe``.

    Args:
        protected: Tasks a forgetting remedy keeps (the joint regime: every task,
            re-anchored each epoch; sequential: the earlier phases' tasks,
            anchored at the phase's start).
    """
    cfg = job.config
    seed = job.seed + 7919 * phase
    train = trainable(job.data.train)
    combination, aid = job.remedy.build(job.remedy_params)
    if aid is not None:
        # The job's seed, not the phase's: a replay buffer keeps the same rows in every phase.
        aid.bind(
            protected,
            train,
            lambda: predict(model, train),
            refresh_each_epoch=len(tasks) > 1,
            seed=job.seed,
        )
    trainer = Trainer(
        model, tasks, learning_rate=cfg.learning_rate, variables=variables, combination=combination, aid=aid, seed=seed
    )
    callbacks = job.callbacks(model, tasks, phase) if job.callbacks else []
    # The applied-update measures need the combination to train every probed task.
    trains_all = tuple(t.name for t in tasks) == tuple(getattr(model, "task_names", ()))
    probe = _probe(job, model, phase, trainer.combination if trains_all else None, trainer if trains_all else None)
    if probe is not None:
        callbacks.append(probe)
    fit = trainer.fit(
        train,
        trainable(job.selection),  # held-out rows select nothing either
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        seed=seed,
        patience=cfg.patience,
        callbacks=callbacks,
        steps_per_call=cfg.probe_every if probe is not None else 0,
        select=cfg.selection,
    )
    if probe is not None:
        result.probe.extend(probe.records)
    result.add_fit(fit, phase=phase)
    if cfg.tensorboard:
        _epoch_scalars(Path(cfg.tensorboard) / job.name / f"phase{phase}", fit)
    return fit


def _probe(job: Job, model: keras.Model, phase: int, combination=None, trainer: Trainer | None = None) -> ConflictProbe | None:
    """The conflict probe over all the model's tasks, on a fixed validation batch; None when nothing is shared.

    With ``trainer`` (a trainer of every probed task) and ``lookahead_steps``,
    the probe also replays k real optimizer steps of the other tasks (the damage measures).
    """
    cfg = job.config
    tasks = [job.data.task(n) for n in model.task_names]
    if not cfg.probe_every:
        return None
    if len(tasks) < 2:
        # A single-task model is probed only when its task misses labels: its loss over the stretches without
        # them (its own optimizer's drift, no other task) is the floor of the joint model's absence damage.
        if not np.isnan(job.data.train.labels[tasks[0].name]).any():
            return None
        trainer = None
    elif not model.shared_variables:
        return None
    batch = job.outcome.take(slice(0, cfg.batch_size))
    return ConflictProbe(
        batch.features,
        {t.name: batch.labels[t.name] for t in tasks},
        tasks,
        every=cfg.probe_every,
        learning_rate=cfg.learning_rate,
        context={"phase": phase},
        tensorboard_dir=str(Path(cfg.tensorboard) / job.name / f"phase{phase}") if cfg.tensorboard else None,
        combination=combination,
        lookahead=_lookahead(job, trainer, phase) if trainer is not None and cfg.lookahead_steps else None,
    )


def _lookahead(job: Job, trainer: Trainer, phase: int) -> Lookahead:
    train = trainable(job.data.train)
    names = [t.name for t in trainer.tasks]
    features, labels = data_lib.resident(train, names)
    return Lookahead(features, labels, trainer.optimizer, dict(zip(names, trainer.loss_weights)),
                     steps=job.config.lookahead_steps, batch_size=job.config.batch_size, seed=job.seed + 7919 * phase)


def _epoch_scalars(directory: Path, fit: FitResult) -> None:
    writer = tf.summary.create_file_writer(str(directory))
    with writer.as_default():
        for log in fit.history:
            for task, loss in log.train_loss.items():
                tf.summary.scalar(f"train/loss/{task}", loss, step=log.epoch)
            for task, values in log.validation.items():
                for metric, value in values.items():
                    tf.summary.scalar(f"validation/{metric}/{task}", value, step=log.epoch)
    writer.close()


class Regime:
    """Base regime. Subclasses set ``name`` / ``uses_arch`` and implement :meth:`run`."""

    name: str = ""
    uses_arch: bool = True

    def orders(self, tasks: Sequence[str], configured: Sequence[Sequence[str]]) -> list[tuple[str, ...]]:
        """Task orders this regime runs; ``[()]`` when order does not apply."""
        return [()]

    def run(self, job: Job) -> CellResult:
        raise NotImplementedError


class SingleRegime(Regime):
    """One single-task model per task, same budget and seeds as the multi-task arms."""

    name = "single"
    uses_arch = False

    def run(self, job: Job) -> CellResult:
        result = CellResult()
        for task in job.data.tasks:
            keras.utils.set_random_seed(job.seed)
            model = job.model_factory(features=job.data.features, tasks=(task,), **job.arch_params)
            fit = _fit(job, model, (task,), 0, result)
            result.add_eval(evaluate(model, (task,), job.outcome), 0, fit.best_epoch, "validation")
            result.add_eval(evaluate(model, (task,), job.data.test), 0, fit.best_epoch, "test")
        return result


class JointRegime(Regime):
    """All tasks at once: the weighted sum of the task losses."""

    name = "joint"

    def run(self, job: Job) -> CellResult:
        keras.utils.set_random_seed(job.seed)
        model = job.model_factory(features=job.data.features, tasks=job.data.tasks, **job.arch_params)
        result = CellResult()
        fit = _fit(job, model, job.data.tasks, 0, result, protected=job.data.tasks)
        for split_name, split in (("validation", job.outcome), ("test", job.data.test)):
            for task, values in evaluate_selected(model, fit, job.data.tasks, split).items():
                result.add_eval({task: values}, 0, fit.best_epochs.get(task, fit.best_epoch), split_name)
        return result


class SequentialRegime(Regime):
    """Tasks one after another; phase k trains task k's loss on the shared variables and its own head.

    After every phase every task is evaluated on validation: the accuracy matrix
    R[phase, task]. The test split is evaluated once, after the last phase.
    """

    name = "sequential"

    def orders(self, tasks: Sequence[str], configured: Sequence[Sequence[str]]) -> list[tuple[str, ...]]:
        if configured:
            return [tuple(o) for o in configured]
        if len(tasks) <= 2:
            return list(itertools.permutations(tasks))
        return [tuple(tasks), tuple(reversed(tasks))]

    def run(self, job: Job) -> CellResult:
        keras.utils.set_random_seed(job.seed)
        data = job.data
        model = job.model_factory(features=data.features, tasks=data.tasks, **job.arch_params)
        model(data.train.take(slice(0, 2)).features)  # build, so the variable lists exist
        kernels = [v for v in model.variable_groups.get("dense", []) if len(v.shape) >= 2]
        result = CellResult()
        outcome = job.outcome
        before = predict(model, outcome)
        for phase, name in enumerate(job.order):
            task = data.task(name)
            weights_before = [v.numpy() for v in kernels]
            variables = list(model.shared_variables) + list(model.task_variables[name])
            earlier = [data.task(n) for n in job.order[:phase]]
            fit = _fit(job, model, (task,), phase, result, variables=variables, protected=earlier)
            after = predict(model, outcome)
            result.add_eval(evaluate(model, data.tasks, outcome, after), phase, fit.best_epoch, "validation")
            for t in data.tasks:
                # Drift of an earlier task's outputs is forgetting; of the phase's own task, learning.
                trained_before = t.name in job.order[:phase]
                measure = "output_drift" if trained_before else "output_drift_new" if t.name == name else None
                if measure:
                    drift = retention.output_drift(before[t.name], after[t.name], t.kind)
                    result.retention.append({"phase": phase, "task": t.name, "measure": measure, "value": drift})
            if kernels:
                drifts = [retention.weight_drift(b, v.numpy()) for b, v in zip(weights_before, kernels)]
                for measure in drifts[0]:
                    value = float(np.nanmean([d[measure] for d in drifts]))
                    result.retention.append({"phase": phase, "task": SHARED_WEIGHTS, "measure": measure, "value": value})
            before = after
        result.add_eval(evaluate(model, data.tasks, data.test), len(job.order) - 1, fit.best_epoch, "test")
        for metric in sorted({m for t in data.tasks for m in t.metrics}):
            matrix = retention.accuracy_matrix(result.rows, metric).reindex(columns=list(job.order))
            rows = retention.sequential_measures(matrix, job.order, metric)
            result.retention.extend(r for r in rows if np.isfinite(r["value"]))
        return result


def pretrain_last_day(train_days: Sequence[int], pretrain_days: int) -> int:
    """The last day of the daily regime's pre-training: ``pretrain_days`` days, default half the training days."""
    days = sorted(set(int(d) for d in train_days))
    count = pretrain_days or (len(days) + 1) // 2
    return days[min(count, len(days)) - 1]


class DailyRegime(Regime):
    """Production-style incremental training on a suite with days (``recsim``).

    Phase 0 pre-trains on the training days up to :func:`pretrain_last_day`
    with early stopping on the validation split's rows that are not held out
    (the held-out cohort's labels never select anything). Each later training
    day ``d`` is one phase: the same model and optimizer continue for
    ``epochs_per_day`` passes over day ``d``'s rows and keep the last pass's
    weights (no model selection, as in production). After every
    phase, every task is evaluated on the next day's rows (the validation
    split after the last training day), overall and per user cohort: the
    ``daily`` rows. Held-out rows (the cohort experiment) never train but are
    evaluated. The test split is evaluated once, after the last day.
    """

    name = "daily"

    def run(self, job: Job) -> CellResult:
        data, cfg = job.data, job.config
        if "day" not in data.train.meta:
            raise ValueError(f"the daily regime needs a suite with days; suite {data.name!r} has none")
        keras.utils.set_random_seed(job.seed)
        model = job.model_factory(features=data.features, tasks=data.tasks, **job.arch_params)
        result = CellResult()
        train = trainable(data.train)
        day = train.meta["day"]
        days = sorted(set(int(d) for d in data.train.meta["day"]))
        last_pretrain = pretrain_last_day(days, cfg.pretrain_days)
        trainer = Trainer(model, data.tasks, learning_rate=cfg.learning_rate, seed=job.seed)
        selection = trainable(data.validation)
        phases = [(days[0], last_pretrain)] + [(d, d) for d in days if d > last_pretrain]
        fit = None
        for phase, (first, last) in enumerate(phases):
            rows = train.take(np.flatnonzero((day >= first) & (day <= last)))
            pretraining = phase == 0
            probe = _probe(job, model, phase, trainer.combination)
            fit = trainer.fit(
                rows,
                selection,
                epochs=cfg.epochs if pretraining else cfg.epochs_per_day,
                batch_size=cfg.batch_size,
                seed=job.seed + 7919 * phase,
                patience=cfg.patience if pretraining else 0,
                callbacks=[probe] if probe is not None else [],
                steps_per_call=cfg.probe_every if probe is not None else 0,
                restore_best=pretraining,
            )
            if probe is not None:
                result.probe.extend(probe.records)
            result.add_fit(fit, phase=phase)
            next_day = last + 1
            source = data.train if next_day in days else data.validation
            result.daily.extend(_daily_rows(model, data.tasks, source, next_day, phase))
        result.add_eval(evaluate(model, data.tasks, data.validation), len(phases) - 1, fit.best_epoch, "validation")
        result.add_eval(evaluate(model, data.tasks, data.test), len(phases) - 1, fit.best_epoch, "test")
        return result


def _daily_rows(model: keras.Model, tasks: Sequence[Task], split: Split, day: int, phase: int) -> list[dict[str, Any]]:
    """Every task's metrics on one day's rows of ``split``: overall and per cohort, per sample.

    ``sample`` is ``"logged"`` (the logging policy's rows) or ``"uniform"`` (the
    unbiased random-policy sample, when the suite has one).
    """
    on_day = np.flatnonzero(split.meta["day"] == day)
    if not len(on_day):
        return []
    rows_of_day = split.take(on_day)
    pred = predict(model, rows_of_day)
    n = len(rows_of_day)
    cohort = rows_of_day.meta.get("cohort", np.zeros(n, np.int32))
    heldout = rows_of_day.meta.get("holdout", np.zeros(n, np.int32))
    uniform = rows_of_day.meta.get("uniform", np.zeros(n, np.int32)) == 1
    out = []
    for sample, in_sample in (("logged", ~uniform), ("uniform", uniform)):
        if not in_sample.any():
            continue
        groups = [("all", in_sample, False)]
        groups += [(str(c), in_sample & (cohort == c), bool(heldout[cohort == c].any()))
                   for c in sorted(set(cohort[in_sample].tolist()))]
        for name, mask, held in groups:
            for t in tasks:
                values = metrics_lib.evaluate_task(t, rows_of_day.labels[t.name][mask], pred[t.name][mask])
                for metric, value in values.items():
                    out.append({"phase": phase, "day": day, "sample": sample, "cohort": name, "heldout": held,
                                "task": t.name, "metric": metric, "value": float(value)})
    return out


REGIMES: dict[str, Regime] = {
    r.name: r for r in (SingleRegime(), JointRegime(), SequentialRegime(), DailyRegime())
}


def order_label(order: Sequence[str]) -> str:
    """The ``order`` column's value: ``"a>b"``, or ``"-"`` when order does not apply."""
    return ORDER_SEPARATOR.join(order) if order else NO_ORDER
