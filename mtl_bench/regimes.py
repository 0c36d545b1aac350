"""Training regimes: the same tasks trained single-task, jointly and sequentially.

A regime turns one :class:`Job` (data, architecture, order, seed, settings)
into a :class:`CellResult`: tidy metric rows for ``metrics.csv``. ``REGIMES``
is a plain dict from name to regime.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import keras

from mtl_bench.config import RunConfig
from mtl_bench.spec import SuiteData, Task
from mtl_bench.training import FitResult, Trainer, evaluate

SINGLE_ARCH = "single_task"
NO_ORDER = "-"
ORDER_SEPARATOR = ">"

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
    callbacks: CallbackFactory | None = None


@dataclasses.dataclass
class CellResult:
    """A cell's tidy rows, one list per result file.

    Attributes:
        rows: ``metrics.csv`` rows: phase, epoch, stage, task, split, metric, value.
        probe: ``probe.csv`` rows: phase, step, task_i, task_j, group, measure, value.
        retention: ``retention.csv`` rows: phase, task, measure, value.
    """

    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    probe: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    retention: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def frames(self) -> dict[str, list[dict[str, Any]]]:
        """Result file stem -> rows."""
        return {"metrics": self.rows, "probe": self.probe, "retention": self.retention}

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


def _fit(job: Job, model: keras.Model, tasks: Sequence[Task], phase: int, variables=None) -> FitResult:
    cfg = job.config
    trainer = Trainer(model, tasks, learning_rate=cfg.learning_rate, variables=variables)
    callbacks = job.callbacks(model, tasks, phase) if job.callbacks else []
    return trainer.fit(
        job.data.train,
        job.data.validation,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        seed=job.seed + 7919 * phase,
        patience=cfg.patience,
        callbacks=callbacks,
        steps_per_call=cfg.probe_every if callbacks else 0,
    )


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
            fit = _fit(job, model, (task,), phase=0)
            result.add_fit(fit, phase=0)
            result.add_eval(evaluate(model, (task,), job.data.validation), 0, fit.best_epoch, "validation")
            result.add_eval(evaluate(model, (task,), job.data.test), 0, fit.best_epoch, "test")
        return result


class JointRegime(Regime):
    """All tasks at once: the weighted sum of the task losses."""

    name = "joint"

    def run(self, job: Job) -> CellResult:
        keras.utils.set_random_seed(job.seed)
        model = job.model_factory(features=job.data.features, tasks=job.data.tasks, **job.arch_params)
        fit = _fit(job, model, job.data.tasks, phase=0)
        result = CellResult()
        result.add_fit(fit, phase=0)
        result.add_eval(evaluate(model, job.data.tasks, job.data.validation), 0, fit.best_epoch, "validation")
        result.add_eval(evaluate(model, job.data.tasks, job.data.test), 0, fit.best_epoch, "test")
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
        result = CellResult()
        for phase, name in enumerate(job.order):
            task = data.task(name)
            variables = list(model.shared_variables) + list(model.task_variables[name])
            fit = _fit(job, model, (task,), phase=phase, variables=variables)
            result.add_fit(fit, phase=phase)
            result.add_eval(evaluate(model, data.tasks, data.validation), phase, fit.best_epoch, "validation")
        result.add_eval(evaluate(model, data.tasks, data.test), len(job.order) - 1, fit.best_epoch, "test")
        return result


REGIMES: dict[str, Regime] = {r.name: r for r in (SingleRegime(), JointRegime(), SequentialRegime())}


def order_label(order: Sequence[str]) -> str:
    """The ``order`` column's value: ``"a>b"``, or ``"-"`` when order does not apply."""
    return ORDER_SEPARATOR.join(order) if order else NO_ORDER
