"""Hyper-parameter tuning with Optuna: the only package that imports it.

A *study* tunes one arm (an architecture trained by one regime) of one suite variant on the VALIDATION
split; the test split is never loaded into a trial. Every trial trains one seed (``config.first_seed``)
through the engine's cell pipeline (:mod:`mtl_bench.engine.cells`), so every arm and every trial sees the
same data and initial seed. Trials select epochs on the validation selection rows, are pruned on the
objective read from the trainer's epoch logs (selection rows), and return the objective on the outcome rows.

Optuna is a required dependency, not an extra: it is pure Python with light dependencies, and
``mtl-bench tune``, the README's tuning section and notebook 03 all use it, so an optional extra would
save little and make a documented command fail on a default install.

Modules:

* :mod:`~mtl_bench.tune.space`: search spaces (one function per architecture, :data:`SEARCH_SPACES`) and
  TOML overrides (:func:`load_space_overrides`).
* :mod:`~mtl_bench.tune.objectives`: task scores and :data:`OBJECTIVES` (``mean_auc``, ``main_auc``,
  ``transfer``, ``per_task``).
* :mod:`~mtl_bench.tune.storage`: opening an Optuna storage, also by processes that start at once.
* :mod:`~mtl_bench.tune.study`: opening and resuming a study, trial evaluation, the
  :class:`PruningCallback`, worker processes.
* :mod:`~mtl_bench.tune.results`: ``trials.csv``, ``best.json``, ``config.toml``, ``pareto.csv``, plots.
* :mod:`~mtl_bench.tune.arms`: :func:`tune` (one arm) and :func:`tune_arms` (equal budget over arms).

Storage is ``<out>/study.db`` (SQLite) by default, or any SQLAlchemy URL; a later ``tune`` call with the
same storage and study name resumes, counting only finished trials against the budget. Trial ``k`` samples
from a state seeded by ``(sampler_seed, k)`` (:class:`~mtl_bench.tune.study.TrialSeededTPE`), so resuming
continues the search; the per-trial budget is recorded in the study and a resume with another one is refused;
processes sharing a study run distinct trials and exactly the budget (see :mod:`mtl_bench.tune.study`).
"""

from mtl_bench.tune.arms import SINGLE_ARM, TUNABLE_REGIMES, TuneOptions, tune, tune_arms
from mtl_bench.tune.objectives import (
    OBJECTIVES,
    EpochObjective,
    Objective,
    ObjectiveContext,
    final_scores,
    task_score,
)
from mtl_bench.tune.results import (
    ArmsResult,
    TuneResult,
    best_config,
    best_single_scores,
    format_values,
    trials_table,
)
from mtl_bench.tune.space import (
    LOSS_WEIGHT,
    SEARCH_SPACES,
    TRAINING_PARAMS,
    Param,
    load_space_overrides,
    loss_weight_space,
    search_space,
)
from mtl_bench.tune.study import (
    FAIL_REASON,
    INTERRUPTED,
    PRUNERS,
    SKIPPED,
    PruningCallback,
    StudySetup,
    TrialSeededTPE,
)

__all__ = [
    "ArmsResult",
    "EpochObjective",
    "FAIL_REASON",
    "INTERRUPTED",
    "LOSS_WEIGHT",
    "OBJECTIVES",
    "Objective",
    "ObjectiveContext",
    "PRUNERS",
    "Param",
    "PruningCallback",
    "SEARCH_SPACES",
    "SINGLE_ARM",
    "SKIPPED",
    "StudySetup",
    "TRAINING_PARAMS",
    "TUNABLE_REGIMES",
    "TrialSeededTPE",
    "TuneOptions",
    "TuneResult",
    "best_config",
    "best_single_scores",
    "final_scores",
    "format_values",
    "load_space_overrides",
    "loss_weight_space",
    "search_space",
    "task_score",
    "trials_table",
    "tune",
    "tune_arms",
]
