"""One study: its storage, opening and resuming it, and running its trials (here or in worker processes).

A trial samples a configuration from the space, trains it on the tuning seed through the engine's cell
pipeline (:mod:`mtl_bench.engine.cells`: architecture check, job, one regime) and returns the objective on
the validation outcome rows. A :class:`PruningCallback` reports the objective after every epoch, read from
the trainer's epoch logs (the selection rows, over the tasks the fit trains), and prunes the trial when the
pruner says so.

Storage is an Optuna RDB storage: an SQLite file or any SQLAlchemy URL (``postgresql://user@host/db`` for
many machines). A heartbeat marks a trial whose process was killed as failed once its grace period has
passed; the budget counts only finished trials (complete, pruned, or failed for a recorded reason).

Several processes may share a study (``--workers``, or ``tune`` started on several machines); the storage is
the truth they agree on. Trial ``k``'s sampler is seeded from ``(sampler seed, k)`` (:class:`TrialSeededTPE`),
so a resumed study continues the stream instead of restarting it, and a study run in several sittings
proposes what an uninterrupted one would. A trial reserves its place in the budget when it starts: it is not
run (state FAIL, user attr :data:`SKIPPED`, not counted) when the trials numbered before it that are running
or counted already fill the budget, or when its parameters equal those of a counted trial or of an earlier
running one. Trials are therefore distinct and never more than ``n_trials`` are counted.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import optuna

from mtl_bench.config import RunConfig
from mtl_bench.engine import cells
from mtl_bench.engine.regimes import REGIMES
from mtl_bench.errors import UserInputError
from mtl_bench.spec import SuiteData, Task
from mtl_bench.tune import storage as storage_lib
from mtl_bench.tune.objectives import OBJECTIVES, EpochObjective, ObjectiveContext, final_scores
from mtl_bench.tune.space import Param, split_params

FAIL_REASON = "fail_reason"  # the user attribute holding why a trial failed
SKIPPED = "skipped"  # the user attribute holding why a trial was not run (a repeat, or over budget); not counted
BUDGET = "budget"  # the study user attribute recording the per-trial training budget
MAX_REPEATS = 20  # proposals in a row that repeat a tried configuration before a worker gives up
INTERRUPTED = "interrupted: the process running the trial stopped (no heartbeat)"

PRUNERS: dict[str, Callable[..., optuna.pruners.BasePruner]] = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "threshold": optuna.pruners.ThresholdPruner,
    "none": optuna.pruners.NopPruner,
}
DEFAULT_PRUNER_PARAMS: dict[str, dict[str, Any]] = {"median": {"n_startup_trials": 3, "n_warmup_steps": 1}}


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
    def variant(self) -> cells.Variant:
        return tuple(sorted(self.config.suite_params.items()))


class TrialSeededTPE(optuna.samplers.TPESampler):
    """Optuna's TPE sampler whose random state for trial ``k`` is seeded from ``(seed, k)``.

    A plain ``TPESampler(seed=s)`` seeds one stream per process: a resumed study (a new process) replays the
    stream from its start and proposes the configurations it already tried, and workers would need seeds of
    their own. Seeding per trial number, which the storage hands out once per study, makes a trial's proposal
    depend only on the seed, its number and the trials finished before it: resuming continues the stream,
    and the random start-up trials are the same however many workers run them. ``constant_liar`` keeps
    concurrent workers from proposing what a running trial is already trying.
    """

    def __init__(self, seed: int, **kwargs: Any) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(seed=seed, constant_liar=True, **kwargs)
        self._base_seed = seed

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        tpe, start_up = np.random.SeedSequence([self._base_seed, trial.number]).generate_state(2)
        self._rng.rng.seed(int(tpe))  # Optuna's own attributes: TPE's and its start-up RandomSampler's state
        self._random_sampler._rng.rng.seed(int(start_up))
        super().before_trial(study, trial)


class _TrialFailed(Exception):
    """A trial that diverged or had an invalid configuration; its reason is in its user attrs."""


class _TrialSkipped(Exception):
    """A trial not run (a repeat, or over budget); its reason is in its user attrs."""


def _storage(setup: StudySetup) -> optuna.storages.RDBStorage:
    return storage_lib.open_storage(setup.storage, heartbeat_interval=setup.heartbeat_interval,
                                    grace_period=setup.grace_period)


def _signature(setup: StudySetup) -> dict[str, Any]:
    return {"suite": setup.config.suite, "variant": json.dumps(dict(setup.variant), sort_keys=True, default=str),
            "arch": setup.arch, "regime": setup.regime, "objective": setup.objective}


BUDGET_FIELDS = ("epochs", "patience", "max_train_rows", "max_eval_rows", "first_seed", "selection",
                 "selection_share", "epochs_per_day", "pretrain_days")


def budget(setup: StudySetup) -> dict[str, Any]:
    """What makes one trial's score comparable with another's besides its parameters (a study user attr)."""
    return {name: getattr(setup.config, name) for name in BUDGET_FIELDS} | {
        "task_weights": dict(sorted(setup.config.task_weights.items())),
    }


def _changes(stored: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {stored.get(k)!r} -> {current.get(k)!r}" for k in sorted(set(stored) | set(current))
                     if stored.get(k) != current.get(k))


def make_pruner(setup: StudySetup) -> optuna.pruners.BasePruner:
    """The setup's pruner (none for a multi-objective study).

    Raises:
        UserInputError: The pruner parameters are wrong.
    """
    params = {**DEFAULT_PRUNER_PARAMS.get(setup.pruner, {}), **setup.pruner_params}
    try:
        return optuna.pruners.NopPruner() if OBJECTIVES[setup.objective].multi else PRUNERS[setup.pruner](**params)
    except (TypeError, ValueError) as err:
        raise UserInputError(f"pruner {setup.pruner!r}: {_first_line(err)}") from None


def open_study(setup: StudySetup, *, create: bool) -> optuna.Study:
    """The setup's study: created (or resumed, when its signature matches) with ``create``, else loaded.

    Raises:
        UserInputError: The storage cannot be opened, the pruner parameters are wrong, or the stored study
            was made for another suite variant, arm or objective.
    """
    objective = OBJECTIVES[setup.objective]
    n_values = objective.n_values(context(setup))
    sampler = TrialSeededTPE(setup.sampler_seed)
    pruner = make_pruner(setup)
    if not create:
        return optuna.load_study(storage=_storage(setup), study_name=setup.study_name, sampler=sampler,
                                 pruner=pruner)
    with storage_lib.creating_alone(setup.storage):
        study = optuna.create_study(
            storage=_storage(setup), study_name=setup.study_name, sampler=sampler, pruner=pruner,
            directions=["maximize"] * n_values, load_if_exists=True,
        )
        _sign(study, setup)
    return study


def _settled(study: optuna.Study, keys: Sequence[str]) -> dict[str, Any]:
    """The study's user attrs ``keys``, read again while a twin process is writing them (some set, some not)."""
    for _ in range(100):
        attrs = study.user_attrs  # one read: each access queries the storage
        stored = {k: attrs.get(k) for k in keys}
        if len({v is None for v in stored.values()}) == 1:
            break
        time.sleep(0.1)
    return stored


def _before_paths(stored: str, current: str) -> bool:
    """Whether ``stored`` is ``current`` as tuning recorded it before it recorded paths as ``run`` does.

    Then a table or data directory was stored as given (maybe relative) and a table had no fingerprint; a
    relative one is read from the current directory, where the same command runs again.
    """
    try:
        old, new = json.loads(stored), json.loads(current)
    except json.JSONDecodeError:
        return False
    if not isinstance(old, dict) or "sha256" in old:
        return False
    new.pop("sha256", None)
    for key in ("table", "data_dir"):
        if isinstance(old.get(key), str):
            old[key] = str(Path(old[key]).expanduser().resolve())
    return old == new


def _sign(study: optuna.Study, setup: StudySetup) -> None:
    """Records the setup's signature and budget in a new study, or checks them against a resumed one's.

    Raises:
        UserInputError: The stored study was made for another arm, suite variant or per-trial budget.
    """
    signature = _signature(setup)
    stored = _settled(study, list(signature))
    if all(v is None for v in stored.values()):
        for key, value in signature.items():
            study.set_user_attr(key, value)
    elif stored == {**signature, "variant": stored["variant"]} and _before_paths(stored["variant"], signature["variant"]):
        study.set_user_attr("variant", signature["variant"])
    elif stored != signature:
        raise UserInputError(
            f"study {setup.study_name!r} in {setup.storage} was made for another arm or suite variant "
            f"({_changes(stored, signature)}); use the same settings to resume, or another --study name"
        )
    current = json.loads(json.dumps(budget(setup), default=str))
    recorded = study.user_attrs.get(BUDGET)
    if recorded is None:
        study.set_user_attr(BUDGET, current)
    elif recorded != current:
        raise UserInputError(
            f"study {setup.study_name!r} in {setup.storage} was tuned with another per-trial budget "
            f"({_changes(recorded, current)}); its trials would not be comparable: resume with the same "
            "settings, or use another --study name"
        )


def is_counted(trial: optuna.trial.FrozenTrial) -> bool:
    """The trial used up budget: complete, pruned, or failed for a recorded reason (not interrupted or skipped)."""
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return trial.state in done or (trial.state == optuna.trial.TrialState.FAIL and FAIL_REASON in trial.user_attrs)


def counted(study: optuna.Study) -> int:
    """Trials that use up the budget (see :func:`is_counted`)."""
    return sum(is_counted(t) for t in study.get_trials(deepcopy=False))


def _live(trial: optuna.trial.FrozenTrial) -> bool:
    return trial.state == optuna.trial.TrialState.RUNNING and SKIPPED not in trial.user_attrs


def reserved(study: optuna.Study, *, before: int | None = None, exclude: int | None = None) -> int:
    """Counted trials plus running ones (numbered below ``before``, if given, and not ``exclude``)."""
    return sum((is_counted(t) or _live(t)) and t.number != exclude and (before is None or t.number < before)
               for t in study.get_trials(deepcopy=False))


def skip_reason(study: optuna.Study, number: int, params: Mapping[str, Any], n_trials: int) -> str | None:
    """Why trial ``number`` with ``params`` must not run (a repeat, or the budget is reserved), or None."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.number != number]
    for t in trials:
        if (is_counted(t) or (_live(t) and t.number < number)) and t.params == dict(params):
            return f"repeats trial {t.number}'s parameters: not run, not counted"
    if reserved(study, before=number) >= n_trials:
        return f"the budget of {n_trials} trials was reserved by other trials: not run, not counted"
    return None


def _without_test(data: SuiteData) -> SuiteData:
    # Tuning selects on validation only: the regimes' test evaluation runs on a validation row.
    return dataclasses.replace(data, test=data.validation.take(slice(0, 1)))


def load_data(setup: StudySetup) -> SuiteData:
    """The suite variant for the tuning seed; the test split is replaced so no trial can see it."""
    return cells.cached_suite(setup.config, setup.variant, setup.config.first_seed, _without_test)


def context(setup: StudySetup, tasks: Sequence[Task] = ()) -> ObjectiveContext:
    """The objective's context: the suite's tasks (``tasks``, default loaded), main task, reference scores."""
    names = tuple(t.name for t in (tasks or load_data(setup).tasks))
    return ObjectiveContext(names, setup.main_task or names[0], dict(setup.reference))


class PruningCallback(keras.callbacks.Callback):
    """Reports a monitored epoch value to an Optuna trial and prunes the trial when its pruner says so.

    Optuna's ``KerasPruningCallback(trial, monitor)`` for the engine's trainer, which a regime may run
    several times per trial (one fit per task in the single regime, per phase in the sequential one).

    Args:
        trial: The trial to report to.
        monitor: An epoch-log key (see :class:`~mtl_bench.engine.training.Trainer`), or a function of the
            epoch logs giving the value (None: nothing to report this epoch). The value is maximised or
            minimised as the study's direction says; a non-finite value is not reported.
        epochs_per_fit: Steps reserved for each fit: the k-th fit's epoch e (from 1) is step
            ``k * epochs_per_fit + e``. With the configured epochs, a step is the same fit (task, phase)
            and epoch in every trial however early each fit stopped, so a pruner compares like with like.
            0: every fit reports steps 1, 2, ... (one fit per trial, as Optuna's callback).
    """

    def __init__(
        self,
        trial: optuna.Trial,
        monitor: str | Callable[[Mapping[str, float]], float | None],
        *,
        epochs_per_fit: int = 0,
    ) -> None:
        super().__init__()
        self.trial = trial
        self.monitor = monitor
        self.epochs_per_fit = epochs_per_fit
        self.fits = 0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.fits += 1

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        value = logs.get(self.monitor) if isinstance(self.monitor, str) else self.monitor(logs)
        if value is None or not math.isfinite(value):
            return
        step = (self.fits - 1) * self.epochs_per_fit + epoch + 1
        self.trial.report(float(value), step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step} at {value:.6g}")


def _fail(trial: optuna.Trial, reason: str) -> _TrialFailed:
    trial.set_user_attr(FAIL_REASON, reason)
    return _TrialFailed(reason)


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def evaluate_trial(trial: optuna.Trial, setup: StudySetup) -> list[float]:
    """Trains one sampled configuration and returns the objective's values.

    The pruning signal is the objective on the rows the trainer selects epochs on (``Job.selection``, from
    its epoch logs); the returned values are the objective on the outcome rows, as every reported number.
    """
    try:
        params = {name: p.suggest(trial, name) for name, p in setup.space.items()}
    except ValueError as err:  # an enqueued value outside the space
        raise _fail(trial, f"invalid configuration: {_first_line(err)}") from None
    reason = skip_reason(trial.study, trial.number, trial.params, setup.n_trials)
    if reason:
        trial.set_user_attr(SKIPPED, reason)
        raise _TrialSkipped(reason)
    training, ctor, weights = split_params(params)
    data = load_data(setup)
    if weights:
        data = data.with_tasks(tuple(dataclasses.replace(t, weight=weights.get(t.name, t.weight)) for t in data.tasks))
    objective = OBJECTIVES[setup.objective]
    ctx = context(setup, data.tasks)
    try:
        cfg = dataclasses.replace(
            setup.config, seeds=1, probe_every=0, tensorboard="", jobs=1, arch_params={setup.arch: ctor}, **training
        )
        cells.check_arch(setup.arch, data, ctor)
    except (TypeError, ValueError) as err:
        raise _fail(trial, f"invalid configuration: {_first_line(err)}") from None
    callbacks = None
    if not objective.multi:  # Optuna cannot prune a multi-objective trial
        pruning = PruningCallback(trial, EpochObjective(objective, ctx, data.tasks), epochs_per_fit=cfg.epochs)
        callbacks = lambda model, tasks, phase: [pruning]  # noqa: E731  (one callback over every fit)
    order = REGIMES[setup.regime].orders([t.name for t in data.tasks], cfg.orders)[0]
    job = cells.job(cfg, data, setup.arch, seed=cfg.first_seed, order=order,
                    name=f"{setup.study_name}-{trial.number}", callbacks=callbacks)
    try:
        result = cells.train(setup.regime, job)
    except cells.CellFailed as err:
        raise _fail(trial, f"diverged: {err}") from None
    scores = final_scores(result, data.tasks)
    trial.set_user_attr("scores", scores)
    values = objective.fn(scores, ctx)
    if values is None or not all(math.isfinite(v) for v in values):
        raise _fail(trial, f"objective is not finite: {values}")
    return values


def optimize(setup: StudySetup) -> None:
    """Runs trials of the study in this process until the study's budget is used or reserved by other processes."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(setup, create=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # a killed process's trial frees its place in the budget
    if reserved(study) >= setup.n_trials:
        return
    repeats = 0

    def stop_when_done(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal repeats
        repeats = repeats + 1 if SKIPPED in trial.user_attrs else 0
        if reserved(study) >= setup.n_trials or repeats >= MAX_REPEATS:
            study.stop()

    n_values = len(study.directions)

    def fn(trial: optuna.Trial) -> list[float]:
        try:
            return evaluate_trial(trial, setup)
        except (_TrialFailed, _TrialSkipped):  # the reason is in the trial's user attrs; NaN marks it failed
            return [float("nan")] * n_values

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.optimize(fn, callbacks=[stop_when_done], gc_after_trial=True)


def pin_threads() -> bool:
    """Pins TensorFlow in this process as every worker is pinned; False when TensorFlow already started otherwise.

    One thread per process keeps float sums in one order, so ``--workers 1`` and ``--workers 2`` give the
    same objective for the same parameters (TensorFlow's default thread pools differ in the last digits).
    """
    import tensorflow as tf

    try:
        cells.init_worker()
    except RuntimeError:  # TensorFlow's runtime already started in this process: its settings are final
        pass
    return (tf.config.threading.get_intra_op_parallelism_threads() == 1
            and tf.config.threading.get_inter_op_parallelism_threads() == 1)


def worker(setup: StudySetup) -> None:
    """A worker process's entry point: one TensorFlow thread, then :func:`optimize`."""
    cells.init_worker()
    optimize(setup)
