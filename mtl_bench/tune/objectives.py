"""Tuning objectives: each task's *score* and what a study maximises over them.

A task's score is its headline metric signed so that higher is better: AUC for binary tasks and **negative
MSE** for regression tasks. Objectives (:data:`OBJECTIVES`), all maximised:

* ``mean_auc``: the mean score over tasks;
* ``main_auc``: the main task's score (the MMoE paper tunes this way);
* ``transfer``: the mean over tasks of score minus the tuned single-task arm's best score for that task
  (negative = negative transfer); the single-task arm is tuned first in a sibling study ``<study>.single_task``;
* ``per_task``: one value per task (multi-objective; the Pareto front is reported, no pruning since Optuna
  cannot prune multi-objective trials).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence

from mtl_bench.engine.regimes import CellResult
from mtl_bench.engine.training import val_log_key
from mtl_bench.schema import SPLIT
from mtl_bench.spec import Task


def task_score(task: Task, metrics: Mapping[str, float]) -> float:
    """The task's headline metric signed so that higher is better (AUC, or −MSE)."""
    value = metrics[task.metric]
    return value if task.higher_is_better else -value


@dataclasses.dataclass(frozen=True)
class ObjectiveContext:
    """What an objective needs besides the scores: the suite's tasks, main task, single-task reference."""

    tasks: tuple[str, ...]
    main_task: str
    reference: dict[str, float] = dataclasses.field(default_factory=dict)


def _mean_score(scores: dict[str, float], ctx: ObjectiveContext) -> list[float] | None:
    return [float(sum(scores.values()) / len(scores))] if scores else None


def _main_score(scores: dict[str, float], ctx: ObjectiveContext) -> list[float] | None:
    return [scores[ctx.main_task]] if ctx.main_task in scores else None


def _transfer(scores: dict[str, float], ctx: ObjectiveContext) -> list[float] | None:
    gaps = [scores[t] - ctx.reference[t] for t in scores if t in ctx.reference]
    return [float(sum(gaps) / len(gaps))] if gaps else None


def _per_task(scores: dict[str, float], ctx: ObjectiveContext) -> list[float] | None:
    return [scores[t] for t in ctx.tasks] if all(t in scores for t in ctx.tasks) else None


@dataclasses.dataclass(frozen=True)
class Objective:
    """A tuning objective: scores of the trained tasks -> values to maximise (None: not defined yet).

    Attributes:
        fn: ``(scores by task, context) -> values``; given the scores of some tasks only (an epoch of one
            phase), it returns the objective over those, or None when they do not define it.
        multi: One value per task (multi-objective, never pruned).
        needs_reference: Needs the single-task arm's scores (``ObjectiveContext.reference``).
    """

    fn: Callable[[dict[str, float], ObjectiveContext], list[float] | None]
    multi: bool = False
    needs_reference: bool = False

    def n_values(self, ctx: ObjectiveContext) -> int:
        """How many values a trial returns."""
        return len(ctx.tasks) if self.multi else 1


OBJECTIVES: dict[str, Objective] = {
    "mean_auc": Objective(_mean_score),
    "main_auc": Objective(_main_score),
    "transfer": Objective(_transfer, needs_reference=True),
    "per_task": Objective(_per_task, multi=True),
}


def final_scores(result: CellResult, tasks: Sequence[Task]) -> dict[str, float]:
    """Each task's validation score of the selected weights after the regime's last phase."""
    rows = [r for r in result.rows if r["stage"] == "final" and r["split"] == SPLIT]
    scores = {}
    for task in tasks:
        mine = [r for r in rows if r["task"] == task.name and r["metric"] == task.metric]
        if mine:
            last = max(mine, key=lambda r: r["phase"])
            scores[task.name] = last["value"] if task.higher_is_better else -last["value"]
    return scores


@dataclasses.dataclass(frozen=True)
class EpochObjective:
    """A single-valued objective read from a trainer's epoch logs: the ``monitor`` of a pruning callback.

    The logs carry ``val_<task>_<metric>`` of the tasks the current fit trains (all of them in the joint
    regime, the phase's task in the sequential regime, the model's one task in the single regime); the value
    is the objective over those tasks, on the rows the trainer validates on.
    """

    objective: Objective
    ctx: ObjectiveContext
    tasks: tuple[Task, ...]

    def __call__(self, logs: Mapping[str, float]) -> float | None:
        """The objective's value, or None when the logs do not define a finite one."""
        scores = {
            t.name: task_score(t, {t.metric: logs[val_log_key(t.name, t.metric)]})
            for t in self.tasks
            if val_log_key(t.name, t.metric) in logs
        }
        values = self.objective.fn(scores, self.ctx)
        if values is None or not math.isfinite(values[0]):
            return None
        return float(values[0])
