"""Hyper-parameter tuning with Optuna: the only module that imports it.

A *study* tunes one arm (an architecture trained by one regime) of one suite
variant on the VALIDATION split; the test split is never loaded into a trial.
Every trial trains one seed (``config.first_seed``), so every arm and every
trial sees the same data and initial seed.

Search spaces are one function per architecture (:data:`SEARCH_SPACES`), each
returning ``{name: Param}``; names are ``learning_rate``, ``batch_size``, the
architecture's constructor arguments and, opt-in, ``loss_weight.<task>``. A
TOML file overrides them (see :func:`load_space_overrides`)::

    [common]                      # every arm
    learning_rate = {low = 1e-3, high = 3e-2, log = true}
    batch_size = [128, 256]       # a list is a categorical choice
    dropout = 0.0                 # a scalar is fixed (not searched)
    "loss_weight.y1" = {low = 0.25, high = 4.0, log = true}
    [mmoe]
    num_experts = {low = 2, high = 8}

Objectives (:data:`OBJECTIVES`), all maximised, use each task's *score*: its
headline metric signed so that higher is better, i.e. AUC for binary tasks and
**negative MSE** for regression tasks:

* ``mean_auc``: the mean score over tasks;
* ``main_auc``: the main task's score (the MMoE paper tunes this way);
* ``transfer``: the mean over tasks of score minus the tuned single-task arm's
  best score for that task (negative = negative transfer); the single-task arm
  is tuned first in a sibling study ``<study>.single_task``;
* ``per_task``: one value per task (multi-objective; the Pareto front is reported,
  no pruning since Optuna cannot prune multi-objective trials).

Storage is an Optuna RDB storage: an SQLite file ``<out>/study.db`` by default,
or any SQLAlchemy URL (``postgresql://user@host/db`` for many machines). A
heartbeat marks a trial whose process was killed as failed once its grace
period has passed; a later ``tune`` call with the same storage and study name
resumes, counting only finished trials (complete, pruned, or failed for a
recorded reason) against the budget.

Outputs (``<out>/``): ``trials.csv``, ``best.json``, ``config.toml`` (the best
configuration, accepted by ``mtl-bench run --config``), ``pareto.csv`` for
multi-objective studies and ``plots/*.png``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import inspect
import json
import math
import multiprocessing
import re
import sys
import time
import tomllib
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import keras
import optuna
import pandas as pd
import tensorflow as tf

from mtl_bench import io
from mtl_bench.engine import cells
from mtl_bench.engine import training as training_lib
from mtl_bench.config import RunConfig
from mtl_bench.errors import UserInputError
from mtl_bench.models import ARCHITECTURES
from mtl_bench.engine.regimes import REGIMES, SINGLE_ARCH, CellResult, Job
from mtl_bench.spec import SuiteData, Task
from mtl_bench.engine.training import TrainingDiverged, evaluate

SINGLE_ARM = "single"  # arm name of the single-task baseline: arch single_task, regime single
TRAINING_PARAMS = ("learning_rate", "batch_size")
LOSS_WEIGHT = "loss_weight."
FAIL_REASON = "fail_reason"
INTERRUPTED = "interrupted: the process running the trial stopped (no heartbeat)"


# --------------------------------------------------------------------------- search spaces


@dataclasses.dataclass(frozen=True)
class Param:
    """One searched (or fixed) hyper-parameter.

    Attributes:
        low: Lower bound of a range (int or float).
        high: Upper bound of a range.
        log: Sample the range on a log scale.
        step: Step of an int range.
        choices: A categorical choice instead of a range.
        value: A fixed value (not searched) when ``fixed`` is true.
    """

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: int = 1
    choices: tuple[Any, ...] = ()
    value: Any = None
    fixed: bool = False

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        """The trial's value of this parameter."""
        if self.fixed:
            return self.value
        if self.choices:
            return trial.suggest_categorical(name, list(self.choices))
        if isinstance(self.low, int) and isinstance(self.high, int):
            return trial.suggest_int(name, self.low, self.high, log=self.log, step=1 if self.log else self.step)
        return trial.suggest_float(name, float(self.low), float(self.high), log=self.log)


def _range(low: float, high: float, log: bool = False, step: int = 1) -> Param:
    return Param(low=low, high=high, log=log, step=step)


def _choice(*choices: Any) -> Param:
    return Param(choices=tuple(choices))


def _training_space() -> dict[str, Param]:
    """Optimiser, batch, input and tower parameters shared by every architecture."""
    return {
        "learning_rate": _range(1e-3, 5e-2, log=True),
        "batch_size": _choice(64, 128, 256, 512),
        "embedding_dim": _choice(4, 8, 16),
        "tower_units": _choice(0, 8, 16, 32),
        "dropout": _range(0.0, 0.3),
    }


def single_task_space(tasks: Sequence[Task]) -> dict[str, Param]:
    """Single-task models (one per task): a bottom layer and a tower."""
    return {**_training_space(), "bottom_units": _choice(8, 16, 32, 64)}


def shared_bottom_space(tasks: Sequence[Task]) -> dict[str, Param]:
    """Shared-bottom: the shared layer's width and the towers."""
    return {**_training_space(), "bottom_units": _choice(8, 16, 32, 64, 128)}


def mmoe_space(tasks: Sequence[Task]) -> dict[str, Param]:
    """MMoE (and OMoE): expert count and width."""
    return {**_training_space(), "num_experts": _range(2, 8), "expert_units": _choice(8, 16, 32)}


def ple_space(tasks: Sequence[Task]) -> dict[str, Param]:
    """PLE: levels, task-specific and shared experts, expert width."""
    return {
        **_training_space(),
        "num_levels": _range(1, 3),
        "num_task_experts": _range(1, 3),
        "num_shared_experts": _range(1, 3),
        "expert_units": _choice(8, 16, 32),
    }


def loss_weight_space(tasks: Sequence[Task]) -> dict[str, Param]:
    """Loss weights of every task but the first (whose weight 1 fixes the scale).

    Opt-in: name a ``loss_weight.<task>`` in the ``[common]`` table of a space file.
    The best trial's weights become ``task_weights`` of the written ``config.toml``,
    the tuned static-weight baseline (remedy ``none``) of ``mtl-bench run``.
    """
    return {f"{LOSS_WEIGHT}{t.name}": _range(0.25, 4.0, log=True) for t in tasks[1:]}


SEARCH_SPACES: dict[str, Callable[[Sequence[Task]], dict[str, Param]]] = {
    "single_task": single_task_space,
    "shared_bottom": shared_bottom_space,
    "mmoe": mmoe_space,
    "omoe": mmoe_space,
    "ple": ple_space,
}


def _param_from_toml(where: str, value: Any) -> Param:
    if isinstance(value, list):
        if not value:
            raise UserInputError(f"{where}: a choice list must not be empty")
        return Param(choices=tuple(value))
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"low", "high", "log", "step"})
        if unknown or "low" not in value or "high" not in value:
            raise UserInputError(f"{where}: a range is {{low = .., high = .., log = false, step = 1}}. Received: {value!r}")
        low, high = value["low"], value["high"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low > high:
            raise UserInputError(f"{where}: low and high must be numbers with low <= high. Received: {value!r}")
        if value.get("log") and low <= 0:
            raise UserInputError(f"{where}: a log range needs low > 0. Received: {value!r}")
        return Param(low=low, high=high, log=bool(value.get("log", False)), step=int(value.get("step", 1)))
    return Param(value=value, fixed=True)


def load_space_overrides(path: str | Path) -> dict[str, dict[str, Param]]:
    """Reads a space file: ``{"common" | arch: {name: Param}}`` (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"search space file not found: {path}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise UserInputError(f"search space file {path} is not valid TOML: {err}") from None
    valid = ["common", *SEARCH_SPACES]
    out: dict[str, dict[str, Param]] = {}
    for section, table in data.items():
        if section not in valid or not isinstance(table, dict):
            raise UserInputError(f"{path}: unknown table [{section}]; valid tables: {valid}")
        out[section] = {name: _param_from_toml(f"{path} [{section}] {name}", v) for name, v in table.items()}
    return out


def search_space(
    arch: str, tasks: Sequence[Task], overrides: dict[str, dict[str, Param]] | None = None
) -> dict[str, Param]:
    """The architecture's space with the ``common`` and per-arch overrides applied, names checked."""
    if arch not in SEARCH_SPACES:
        raise UserInputError(f"no search space for architecture {arch!r}; valid: {sorted(SEARCH_SPACES)}")
    space = SEARCH_SPACES[arch](tasks)
    overrides = overrides or {}
    ctor = inspect.signature(ARCHITECTURES[arch].__init__).parameters
    weights = loss_weight_space(tasks) if arch != SINGLE_ARCH else {}
    valid = {*TRAINING_PARAMS, *(n for n, p in ctor.items() if p.kind is p.KEYWORD_ONLY), *weights}
    for section in ("common", arch):
        for name, param in overrides.get(section, {}).items():
            if name.startswith(LOSS_WEIGHT) and arch == SINGLE_ARCH:
                continue  # one task per model: a loss weight means nothing
            if name not in valid:
                raise UserInputError(
                    f"search space [{section}]: {arch} has no parameter {name!r}; valid: {sorted(valid)}"
                )
            space[name] = param
    return space


# --------------------------------------------------------------------------- objectives


def task_score(task: Task, metrics: dict[str, float]) -> float:
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
    """A tuning objective: scores of the trained tasks -> values to maximise (None: not defined yet)."""

    fn: Callable[[dict[str, float], ObjectiveContext], list[float] | None]
    multi: bool = False
    needs_reference: bool = False

    def n_values(self, ctx: ObjectiveContext) -> int:
        return len(ctx.tasks) if self.multi else 1


OBJECTIVES: dict[str, Objective] = {
    "mean_auc": Objective(_mean_score),
    "main_auc": Objective(_main_score),
    "transfer": Objective(_transfer, needs_reference=True),
    "per_task": Objective(_per_task, multi=True),
}


# --------------------------------------------------------------------------- pruners

PRUNERS: dict[str, Callable[..., optuna.pruners.BasePruner]] = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "threshold": optuna.pruners.ThresholdPruner,
    "none": optuna.pruners.NopPruner,
}
DEFAULT_PRUNER_PARAMS: dict[str, dict[str, Any]] = {"median": {"n_startup_trials": 3, "n_warmup_steps": 1}}


# --------------------------------------------------------------------------- one study


@dataclasses.dataclass(frozen=True)
class StudySetup:
    """Everything a worker process needs to run trials of one study (picklable)."""

    config: RunConfig
    arch: str
    regime: str
    objective: str
    space: dict[str, Param]
    storage: str
    study_name: str
    n_trials: int
    sampler_seed: int = 0
    pruner: str = "median"
    pruner_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    main_task: str = ""
    reference: dict[str, float] = dataclasses.field(default_factory=dict)
    heartbeat_interval: int = 10
    grace_period: int = 30

    @property
    def variant(self) -> tuple[tuple[str, Any], ...]:
        return tuple(sorted(self.config.suite_params.items()))


class _TrialFailed(Exception):
    """A trial that diverged or had an invalid configuration; its reason is in its user attrs."""


def _storage(setup: StudySetup) -> optuna.storages.RDBStorage:
    kwargs: dict[str, Any] = {}
    url = setup.storage
    if url.startswith("postgresql://"):
        import importlib.util

        # SQLAlchemy 2.1 defaults to psycopg 3; the package installs psycopg2-binary ([dev] / [postgresql]).
        if importlib.util.find_spec("psycopg") is None:
            url = "postgresql+psycopg2://" + url[len("postgresql://"):]
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=setup.heartbeat_interval,
                grace_period=setup.grace_period,
                **kwargs,
            )
    except (ImportError, ModuleNotFoundError) as err:
        raise UserInputError(f"storage {setup.storage!r} needs a database driver: {err}") from None
    except Exception as err:  # sqlalchemy errors: bad URL, unreachable server
        raise UserInputError(f"cannot open storage {setup.storage!r}: {str(err).splitlines()[0]}") from None


def _signature(setup: StudySetup) -> dict[str, Any]:
    return {"suite": setup.config.suite, "variant": json.dumps(dict(setup.variant), sort_keys=True, default=str),
            "arch": setup.arch, "regime": setup.regime, "objective": setup.objective}


def _open_study(setup: StudySetup, *, create: bool) -> optuna.Study:
    objective = OBJECTIVES[setup.objective]
    ctx = _context(setup, ())
    n_values = len(ctx.tasks) if objective.multi else 1
    sampler = optuna.samplers.TPESampler(seed=setup.sampler_seed)
    params = {**DEFAULT_PRUNER_PARAMS.get(setup.pruner, {}), **setup.pruner_params}
    try:
        pruner = optuna.pruners.NopPruner() if objective.multi else PRUNERS[setup.pruner](**params)
    except TypeError as err:
        raise UserInputError(f"pruner {setup.pruner!r}: {err}") from None
    storage = _storage(setup)
    if create:
        study = optuna.create_study(
            storage=storage, study_name=setup.study_name, sampler=sampler, pruner=pruner,
            directions=["maximize"] * n_values, load_if_exists=True,
        )
        signature = _signature(setup)
        stored = {k: study.user_attrs.get(k) for k in signature}
        if all(v is None for v in stored.values()):
            for key, value in signature.items():
                study.set_user_attr(key, value)
        elif stored != signature:
            raise UserInputError(
                f"study {setup.study_name!r} in {setup.storage} was made for {stored}, not {signature}; "
                "use another --study name"
            )
        return study
    return optuna.load_study(storage=storage, study_name=setup.study_name, sampler=sampler, pruner=pruner)


def _counted(study: optuna.Study) -> int:
    """Trials that use up the budget: complete, pruned, or failed for a recorded reason (not interrupted)."""
    states = study.get_trials(deepcopy=False)
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sum(t.state in done or (t.state == optuna.trial.TrialState.FAIL and FAIL_REASON in t.user_attrs)
               for t in states)


def _without_test(data: SuiteData) -> SuiteData:
    # Tuning selects on validation only: the regimes' test evaluation runs on a validation row.
    return dataclasses.replace(data, test=data.validation.take(slice(0, 1)))


def _load_data(setup: StudySetup) -> SuiteData:
    """The suite variant for the tuning seed; the test split is replaced so no trial can see it."""
    return cells.cached_suite(setup.config, setup.variant, setup.config.first_seed, _without_test)


def _context(setup: StudySetup, tasks: Sequence[Task]) -> ObjectiveContext:
    if not tasks:
        tasks = _load_data(setup).tasks
    names = tuple(t.name for t in tasks)
    return ObjectiveContext(names, setup.main_task or names[0], dict(setup.reference))


def _split_params(arch: str, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, float]]:
    """Trial parameters -> (training settings, constructor arguments, loss weights)."""
    training = {k: v for k, v in params.items() if k in TRAINING_PARAMS}
    weights = {k[len(LOSS_WEIGHT):]: float(v) for k, v in params.items() if k.startswith(LOSS_WEIGHT)}
    ctor = {k: v for k, v in params.items() if k not in training and not k.startswith(LOSS_WEIGHT)}
    return training, ctor, weights


class _EpochReporter(keras.callbacks.Callback):
    """Reports the intermediate objective on validation after every epoch; raises TrialPruned when told to."""

    def __init__(self, trial: optuna.Trial, objective: Objective, ctx: ObjectiveContext, data: SuiteData) -> None:
        super().__init__()
        self.trial, self.objective, self.ctx, self.data = trial, objective, ctx, data
        self.step = 0
        self.tasks: Sequence[Task] = ()

    def bind(self, model: keras.Model, tasks: Sequence[Task], phase: int) -> list[keras.callbacks.Callback]:
        """The regimes' callback factory: (model, trained tasks, phase) -> callbacks."""
        self.tasks = tuple(self.data.task(n) for n in model.task_names)
        # One prediction function per model, traced once each: TF's retracing warning is noise here.
        training_lib._predict_fn(model)._omit_frequent_tracing_warning = True
        return [self]

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.step += 1
        metrics = evaluate(self.model, self.tasks, self.data.validation)  # one extra validation pass per epoch
        values = self.objective.fn({t.name: task_score(t, metrics[t.name]) for t in self.tasks}, self.ctx)
        if values is None or not math.isfinite(values[0]):
            return
        self.trial.report(values[0], self.step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after {self.step} epoch(s) at {values[0]:.6g}")


def final_scores(result: CellResult, tasks: Sequence[Task]) -> dict[str, float]:
    """Each task's validation score of the selected weights after the regime's last phase."""
    rows = [r for r in result.rows if r["stage"] == "final" and r["split"] == "validation"]
    scores = {}
    for task in tasks:
        mine = [r for r in rows if r["task"] == task.name and r["metric"] == task.metric]
        if mine:
            last = max(mine, key=lambda r: r["phase"])
            scores[task.name] = last["value"] if task.higher_is_better else -last["value"]
    return scores


def _fail(trial: optuna.Trial, reason: str) -> _TrialFailed:
    trial.set_user_attr(FAIL_REASON, reason)
    return _TrialFailed(reason)


def _evaluate_trial(trial: optuna.Trial, setup: StudySetup) -> list[float]:
    """Trains one sampled configuration and returns the objective's values."""
    try:
        params = {name: p.suggest(trial, name) for name, p in setup.space.items()}
    except ValueError as err:  # an enqueued value outside the space
        raise _fail(trial, f"invalid configuration: {str(err).splitlines()[0]}") from None
    training, ctor, weights = _split_params(setup.arch, params)
    data = _load_data(setup)
    if weights:
        data = data.with_tasks(tuple(dataclasses.replace(t, weight=weights.get(t.name, t.weight)) for t in data.tasks))
    objective = OBJECTIVES[setup.objective]
    ctx = _context(setup, data.tasks)
    try:
        cfg = dataclasses.replace(
            setup.config, seeds=1, probe_every=0, tensorboard="", jobs=1, arch_params={setup.arch: ctor}, **training
        )
        tasks = data.tasks[:1] if setup.arch == SINGLE_ARCH else data.tasks
        ARCHITECTURES[setup.arch](features=data.features, tasks=tasks, **ctor)
    except (TypeError, ValueError) as err:
        raise _fail(trial, f"invalid configuration: {str(err).splitlines()[0]}") from None
    reporter = _EpochReporter(trial, objective, ctx, data)
    job = Job(
        data=data, arch=setup.arch, model_factory=ARCHITECTURES[setup.arch], arch_params=ctor, order=(),
        seed=cfg.first_seed, config=cfg, name=f"{setup.study_name}-{trial.number}",
        callbacks=None if objective.multi else reporter.bind,
    )
    regime = REGIMES[setup.regime]
    if regime.orders([t.name for t in data.tasks], cfg.orders) != [()]:
        job = dataclasses.replace(job, order=regime.orders([t.name for t in data.tasks], cfg.orders)[0])
    try:
        result = regime.run(job)
    except (TrainingDiverged, tf.errors.InvalidArgumentError) as err:
        raise _fail(trial, f"diverged: {str(err).splitlines()[0]}") from None
    finally:
        keras.backend.clear_session(free_memory=True)
    scores = final_scores(result, data.tasks)
    trial.set_user_attr("scores", scores)
    values = objective.fn(scores, ctx)
    if values is None or not all(math.isfinite(v) for v in values):
        raise _fail(trial, f"objective is not finite: {values}")
    return values


def _optimize(setup: StudySetup, n_trials: int, worker: int = 0) -> None:
    """Runs up to ``n_trials`` trials of the study in this process; stops when the study's budget is used."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if n_trials <= 0:
        return
    setup = dataclasses.replace(setup, sampler_seed=setup.sampler_seed + worker)
    study = _open_study(setup, create=False)

    def stop_when_done(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        if _counted(study) >= setup.n_trials:
            study.stop()

    n_values = len(study.directions)

    def fn(trial: optuna.Trial) -> list[float]:
        try:
            return _evaluate_trial(trial, setup)
        except _TrialFailed:  # the reason is in the trial's user attrs; NaN marks it failed, one log line
            return [float("nan")] * n_values

    study.optimize(fn, n_trials=n_trials, callbacks=[stop_when_done], gc_after_trial=True)


def _worker(setup: StudySetup, n_trials: int, worker: int) -> None:
    cells.init_worker()
    _optimize(setup, n_trials, worker)


@dataclasses.dataclass
class TuneResult:
    """A finished study's outputs.

    Attributes:
        study_name: The Optuna study name.
        storage: The storage URL.
        out: Directory holding trials.csv, best.json, config.toml and plots/.
        trials: The trials table (also ``trials.csv``).
        best_params: Best trial's parameters (first Pareto trial for multi-objective); empty if none completed.
        best_values: Best trial's objective values.
        best_scores: Best trial's per-task validation scores.
        config_path: ``config.toml`` of the best configuration, or None.
        pareto: Numbers of the Pareto-optimal trials (multi-objective).
        notes: Things the user should know (e.g. skipped plots).
    """

    study_name: str
    storage: str
    out: Path
    trials: pd.DataFrame
    best_params: dict[str, Any]
    best_values: list[float]
    best_scores: dict[str, float]
    config_path: Path | None
    pareto: list[int]
    notes: list[str]


def _best_config(setup: StudySetup, params: dict[str, Any], seeds: int) -> RunConfig:
    training, ctor, weights = _split_params(setup.arch, params)
    fixed = {k: p.value for k, p in setup.space.items() if p.fixed}
    weights = {**{k[len(LOSS_WEIGHT):]: float(v) for k, v in fixed.items() if k.startswith(LOSS_WEIGHT)}, **weights}
    training = {**{k: v for k, v in fixed.items() if k in TRAINING_PARAMS}, **training}
    ctor = {**{k: v for k, v in fixed.items() if k not in TRAINING_PARAMS and not k.startswith(LOSS_WEIGHT)}, **ctor}
    single = setup.regime == REGIMES["single"].name
    # ``archs`` lists multi-task architectures only; the single regime trains ``single_task`` from arch_params.
    archs = [a for a in setup.config.archs if a != SINGLE_ARCH] if setup.arch == SINGLE_ARCH else [setup.arch]
    return dataclasses.replace(
        setup.config,
        archs=archs,
        regimes=[setup.regime],
        arch_params={setup.arch: ctor},
        seeds=seeds,
        single_baseline="single_task" if single else setup.config.single_baseline,
        task_weights={**setup.config.task_weights, **weights},
        **training,
    )


def _trials_table(study: optuna.Study) -> pd.DataFrame:
    rows = []
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"number": t.number, "state": t.state.name}
        values = t.values or []
        if len(study.directions) == 1:
            row["value"] = values[0] if values else float("nan")
        else:
            for i in range(len(study.directions)):
                row[f"value_{i}"] = values[i] if values else float("nan")
        row["duration_s"] = t.duration.total_seconds() if t.duration else float("nan")
        row.update({f"params_{k}": v for k, v in t.params.items()})
        for task, score in (t.user_attrs.get("scores") or {}).items():
            row[f"score_{task}"] = score
        row["last_step"] = t.last_step if t.last_step is not None else ""
        reason = t.user_attrs.get(FAIL_REASON, "")
        row["reason"] = reason or (INTERRUPTED if t.state == optuna.trial.TrialState.FAIL else "")
        rows.append(row)
    return pd.DataFrame(rows)


def _plots(study: optuna.Study, out: Path, ctx: ObjectiveContext) -> list[str]:
    """PNG plots via optuna.visualization.matplotlib; returns notes on plots that could not be drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    multi = len(study.directions) > 1
    first = lambda t: t.values[0]  # noqa: E731
    plots: dict[str, Callable[[], Any]] = {
        "history": (lambda: ovm.plot_optimization_history(study, target=first, target_name=ctx.tasks[0]))
        if multi else (lambda: ovm.plot_optimization_history(study)),
        "param_importances": (lambda: ovm.plot_param_importances(study, target=first, target_name=ctx.tasks[0]))
        if multi else (lambda: ovm.plot_param_importances(study)),
    }
    if multi and len(study.directions) in (2, 3):
        plots["pareto_front"] = lambda: ovm.plot_pareto_front(study, target_names=list(ctx.tasks))
    notes = []
    (out / "plots").mkdir(parents=True, exist_ok=True)
    for name, draw in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = draw()
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            path = out / "plots" / f"{name}.png"
            tmp = path.with_name(f".{path.name}.tmp.png")
            fig.savefig(tmp, dpi=100, bbox_inches="tight")
            tmp.replace(path)
            plt.close(fig)
        except Exception as err:  # too few trials, a constant parameter, ...
            notes.append(f"plot {name} skipped: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
    return notes


def _report(setup: StudySetup, study: optuna.Study, out: Path, retrain_seeds: int) -> TuneResult:
    """Writes trials.csv, best.json, config.toml, pareto.csv and plots for a study."""
    ctx = _context(setup, ())
    trials = _trials_table(study)
    io.write_csv(out / "trials.csv", trials)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    notes: list[str] = []
    pareto: list[int] = []
    best_params: dict[str, Any] = {}
    best_values: list[float] = []
    best_scores: dict[str, float] = {}
    config_path = None
    if complete:
        if len(study.directions) > 1:
            front = sorted(study.best_trials, key=lambda t: (-sum(t.values), t.number))
            pareto = [t.number for t in front]
            io.write_csv(out / "pareto.csv", trials[trials["number"].isin(pareto)])
            best = front[0]  # the Pareto trial with the best summed score
        else:
            best = study.best_trial
        best_params, best_values = dict(best.params), list(best.values)
        best_scores = dict(best.user_attrs.get("scores") or {})
        config = _best_config(setup, best_params, retrain_seeds)
        config_path = out / "config.toml"
        io.write_text(config_path, config.to_toml())
        io.write_json(out / "best.json", {
            "study": setup.study_name, "storage": setup.storage, "arch": setup.arch, "regime": setup.regime,
            "objective": setup.objective, "trial": best.number, "values": best_values, "params": best_params,
            "validation_scores": best_scores, "pareto_trials": pareto, "reference": setup.reference,
        })
    else:
        notes.append(f"study {setup.study_name!r} has no complete trial: no best configuration")
    if complete:
        notes.extend(_plots(study, out, ctx))
    return TuneResult(setup.study_name, setup.storage, out, trials, best_params, best_values, best_scores,
                      config_path, pareto, notes)


def _run_study(setup: StudySetup, out: Path, workers: int, retrain_seeds: int,
               enqueue: Sequence[dict[str, Any]], progress: TextIO | None) -> TuneResult:
    study = _open_study(setup, create=True)
    if study.user_attrs.get("enqueued") is None:
        for params in enqueue:
            study.enqueue_trial(params, skip_if_exists=True)
        study.set_user_attr("enqueued", len(enqueue))
    remaining = setup.n_trials - _counted(study)
    if progress:
        progress.write(f"study {setup.study_name}: {setup.n_trials - remaining} of {setup.n_trials} trials done; "
                       f"running {max(remaining, 0)} on {workers} worker(s)\n")
        progress.flush()
    t0 = time.perf_counter()
    if remaining > 0 and workers <= 1:
        _optimize(setup, remaining)
    elif remaining > 0:
        quotas = [remaining // workers + (i < remaining % workers) for i in range(workers)]
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = [pool.submit(_worker, setup, q, i) for i, q in enumerate(quotas) if q]
            for future in concurrent.futures.as_completed(futures):
                future.result()
    study = _open_study(setup, create=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)
    result = _report(setup, study, out, retrain_seeds)
    if progress:
        counts = result.trials["state"].value_counts().to_dict() if not result.trials.empty else {}
        progress.write(f"study {setup.study_name}: {counts} in {time.perf_counter() - t0:.1f}s; best {result.best_values}\n")
        progress.flush()
    return result


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", name)


def _arm(name: str, regime: str) -> tuple[str, str]:
    """Arm name -> (architecture, regime); ``single`` is the one-tower single-task arm."""
    arch = SINGLE_ARCH if name in (SINGLE_ARM, SINGLE_ARCH) else name
    if arch not in ARCHITECTURES:
        raise UserInputError(f"unknown architecture {name!r}; valid: {sorted([SINGLE_ARM, *ARCHITECTURES])}")
    return arch, ("single" if arch == SINGLE_ARCH else regime)


def _check(config: RunConfig, regime: str, objective: str, n_trials: int, workers: int, pruner: str) -> None:
    tunable = sorted(set(REGIMES) - {"daily"})  # the daily regime has no per-epoch report to prune on
    if regime not in tunable:
        raise UserInputError(f"unknown or untunable regime {regime!r}; valid regimes: {tunable}")
    if objective not in OBJECTIVES:
        raise UserInputError(f"unknown objective {objective!r}; valid objectives: {sorted(OBJECTIVES)}")
    if pruner not in PRUNERS:
        raise UserInputError(f"unknown pruner {pruner!r}; valid pruners: {sorted(PRUNERS)}")
    if n_trials < 1 or workers < 1:
        raise UserInputError(f"trials and workers must be >= 1. Received: trials={n_trials}, workers={workers}")
    if any(isinstance(v, list) for v in config.suite_params.values()):
        raise UserInputError(f"tuning needs one suite variant; suite_params sweeps {config.suite_params}")
    if config.experiment:
        raise UserInputError(f"tuning runs no experiment; drop experiment={config.experiment!r} from the config")


@dataclasses.dataclass
class TuneOptions:
    """Study settings shared by every arm of one ``tune`` call (see :func:`tune`)."""

    n_trials: int = 20
    objective: str = "mean_auc"
    storage: str | None = None
    study_name: str | None = None
    workers: int = 1
    space_file: str | Path | None = None
    pruner: str = "median"
    pruner_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    sampler_seed: int = 0
    main_task: str | None = None
    heartbeat_interval: int = 10
    grace_period: int = 30
    retrain_seeds: int = 3
    enqueue: Sequence[dict[str, Any]] = ()


def tune(
    config: RunConfig,
    arch: str,
    *,
    regime: str = "joint",
    out: str | Path | None = None,
    runs_root: str | Path = "runs",
    progress: TextIO | None = sys.stderr,
    reference: dict[str, float] | None = None,
    **options: Any,
) -> TuneResult:
    """Tunes one arm on the validation split and writes its outputs.

    Args:
        config: Suite, suite parameters (one variant), epochs, patience, row limits and
            ``first_seed`` of every trial; also the base of the best ``config.toml``.
        arch: Architecture (a key of ``SEARCH_SPACES``), or ``"single"`` for the
            single-task arm (always trained by the single regime).
        regime: Training regime of the arm.
        out: Output directory; default ``<runs_root>/tune-<study>``.
        runs_root: Parent of the default output directory.
        progress: Stream for one line per study, or None.
        reference: Per-task single-task scores for the ``transfer`` objective; default:
            tune the single-task arm first in the sibling study ``<study>.single_task``.
        **options: Fields of :class:`TuneOptions`: ``n_trials``, ``objective``, ``storage``
            (SQLAlchemy URL; default ``sqlite:///<out>/study.db``), ``study_name``, ``workers``
            (local processes sharing the storage), ``space_file``, ``pruner``,
            ``pruner_params``, ``sampler_seed``, ``main_task``, ``heartbeat_interval``,
            ``grace_period`` (seconds after which a silent trial is marked failed),
            ``retrain_seeds`` (``seeds`` of the best config.toml), ``enqueue`` (parameter
            dicts tried first).

    Returns:
        The study's :class:`TuneResult`.

    Raises:
        UserInputError: For an invalid name or value, before any trial runs.
    """
    opts = _options(options)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    arch, regime = _arm(arch, regime)
    _check(config, regime, opts.objective, opts.n_trials, opts.workers, opts.pruner)
    study_name = opts.study_name or f"{config.suite}-{arch}-{regime}-{opts.objective}"
    out = Path(out) if out else Path(runs_root) / f"tune-{_safe(study_name)}"
    out.mkdir(parents=True, exist_ok=True)
    storage = opts.storage or f"sqlite:///{(out / 'study.db').resolve()}"
    overrides = load_space_overrides(opts.space_file) if opts.space_file else {}
    objective = opts.objective
    if OBJECTIVES[objective].needs_reference and arch == SINGLE_ARCH:
        objective = "mean_auc"  # the single-task arm is the reference itself
    setup = StudySetup(
        config=config, arch=arch, regime=regime, objective=objective, space={}, storage=storage,
        study_name=study_name, n_trials=opts.n_trials, sampler_seed=opts.sampler_seed, pruner=opts.pruner,
        pruner_params=dict(opts.pruner_params), main_task=opts.main_task or "",
        heartbeat_interval=opts.heartbeat_interval, grace_period=opts.grace_period,
    )
    data = _load_data(setup)
    names = [t.name for t in data.tasks]
    if opts.main_task and opts.main_task not in names:
        raise UserInputError(f"main task {opts.main_task!r} is not a task of the suite; tasks: {names}")
    setup = dataclasses.replace(setup, space=search_space(arch, data.tasks, overrides))
    if OBJECTIVES[objective].needs_reference:
        if reference is None:
            single = tune(config, SINGLE_ARM, out=out / SINGLE_ARCH, progress=progress,
                          **{**options, "objective": "mean_auc", "storage": storage,
                             "study_name": f"{study_name}.{SINGLE_ARCH}"})
            reference = best_single_scores(single)
        setup = dataclasses.replace(setup, reference=dict(reference))
    return _run_study(setup, out, opts.workers, opts.retrain_seeds, opts.enqueue, progress)


def _options(options: dict[str, Any]) -> TuneOptions:
    valid = {f.name for f in dataclasses.fields(TuneOptions)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise TypeError(f"tune() got unknown option(s) {unknown}; valid: {sorted(valid)}")
    return TuneOptions(**options)


def best_single_scores(single: TuneResult) -> dict[str, float]:
    """Per task, the best validation score over the single-task arm's complete trials."""
    columns = [c for c in single.trials.columns if c.startswith("score_")]
    done = single.trials[single.trials["state"] == "COMPLETE"]
    if done.empty:
        raise UserInputError(f"the single-task study {single.study_name!r} has no complete trial to compare with")
    return {c[len("score_"):]: float(done[c].max()) for c in columns}


@dataclasses.dataclass
class ArmsResult:
    """Equal-budget tuning: one study per arm, then each best configuration re-trained over seeds."""

    studies: dict[str, TuneResult]
    run_dirs: dict[str, Path]


def tune_arms(
    config: RunConfig,
    arms: Sequence[str],
    *,
    regime: str = "joint",
    out: str | Path | None = None,
    runs_root: str | Path = "runs",
    progress: TextIO | None = sys.stderr,
    retrain: bool = True,
    **options: Any,
) -> ArmsResult:
    """Tunes every arm with the same number of trials and seeds, then re-trains each best configuration.

    The single-task arm (``"single"``) is tuned first; with the ``transfer`` objective its best
    per-task scores are the other arms' reference. Each best configuration is re-trained with
    ``retrain_seeds`` seeds by :func:`mtl_bench.experiments.grid.run` into ``<out>/runs/<arm>/``;
    ``mtl-bench report <out>/runs/*`` then compares the tuned arms.

    Args:
        config: As for :func:`tune`.
        arms: Arm names: ``single`` and architectures.
        regime: Regime of the multi-task arms.
        out: Output directory; default ``<runs_root>/tune-<study>``.
        runs_root: Parent of the default output directory.
        progress: Stream for progress lines, or None.
        retrain: Re-train the best configurations (off: tune only).
        **options: Fields of :class:`TuneOptions`, as for :func:`tune`.
    """
    from mtl_bench.experiments import grid as runner

    opts = _options(options)
    if not arms or len(set(arms)) != len(arms):
        raise UserInputError(f"--arms must name each arm once. Received: {list(arms)}")
    resolved = {a: _arm(a, regime) for a in arms}
    _check(config, regime, opts.objective, opts.n_trials, opts.workers, opts.pruner)
    base = opts.study_name or f"{config.suite}-{regime}-{opts.objective}"
    out = Path(out) if out else Path(runs_root) / f"tune-{_safe(base)}"
    out.mkdir(parents=True, exist_ok=True)
    storage = opts.storage or f"sqlite:///{(out / 'study.db').resolve()}"
    ordered = sorted(arms, key=lambda a: resolved[a][0] != SINGLE_ARCH)
    studies: dict[str, TuneResult] = {}
    reference = None
    for arm in ordered:
        arch = resolved[arm][0]
        result = tune(config, arch, regime=regime, out=out / _safe(arm), progress=progress, reference=reference,
                      **{**options, "storage": storage, "study_name": f"{base}.{arch}"})
        if arch == SINGLE_ARCH and OBJECTIVES[opts.objective].needs_reference:
            reference = best_single_scores(result)
        studies[arm] = result
    run_dirs: dict[str, Path] = {}
    if retrain:
        for arm, result in studies.items():
            if result.config_path is None:
                continue
            target = out / "runs" / _safe(arm)
            if (target / "manifest.json").is_file() and io.read_json(target / "manifest.json")["status"] != "running":
                run_dirs[arm] = target  # re-trained before (a resumed tune)
                continue
            if target.exists() and any(target.iterdir()):
                run_dirs[arm] = runner.resume(target, progress=progress)
            else:
                run_dirs[arm] = runner.run(RunConfig.from_toml(result.config_path), out=target, progress=progress)
    io.write_json(out / "arms.json", {
        "arms": list(arms), "regime": regime, "objective": opts.objective, "trials": opts.n_trials,
        "studies": {a: r.study_name for a, r in studies.items()}, "storage": storage,
        "best": {a: {"values": r.best_values, "params": r.best_params} for a, r in studies.items()},
        "run_dirs": {a: str(p) for a, p in run_dirs.items()},
    })
    return ArmsResult(studies, run_dirs)
