"""The contract between task suites, models and the engine.

A *suite* (``mtl_bench.tasks``) produces a :class:`SuiteData`: a
:class:`FeatureSpec`, a tuple of :class:`Task` and three :class:`Split`.
Models (``mtl_bench.models``) are built from the feature spec and the tasks
and map a feature dict to ``dict[task_name, prediction]``. The engine owns the
training step; a task owns its label, loss and metric.

Feature dict layout (what a model's ``call`` receives and a split stores):

* ``"numeric"``: float32 array of shape ``(n, len(spec.numeric))``, raw values;
  the model's input block normalises them with ``spec.numeric_mean`` and
  ``spec.numeric_std`` (fitted on the training split only).
* ``"categorical"``: int32 array of shape ``(n, len(spec.categorical))``; column
  ``j`` holds ids in ``[0, spec.vocabulary_sizes[j])``, id 0 meaning unknown.

A key is present exactly when the spec has features of that kind.
Labels are float32 arrays of shape ``(n,)``: 0/1 for binary tasks.
A split may also carry ``meta``: per-row integer arrays the models never see
(the recommender simulator's ``day``, ``cohort``, ``user`` and ``holdout``
flag), which time-aware regimes and experiments use.
Binary predictions are probabilities of shape ``(n, 1)``; regression
predictions are values of shape ``(n, 1)``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import numpy as np

from mtl_bench.errors import UserInputError
from mtl_bench.validation import check_choice, check_number, fail

TaskKind = Literal["binary", "regression"]
TASK_KINDS: tuple[str, ...] = ("binary", "regression")

NUMERIC = "numeric"
CATEGORICAL = "categorical"

# metric name -> True when higher is better.
METRIC_DIRECTIONS: dict[str, bool] = {"auc": True, "logloss": False, "mse": False}
# metric name -> the values it can take: intervals over seeds are cut to this range.
METRIC_RANGES: dict[str, tuple[float, float]] = {"auc": (0.0, 1.0), "logloss": (0.0, math.inf), "mse": (0.0, math.inf)}
# loss name -> the keras.losses class that computes it (imported when a model is built, not with the spec).
LOSSES: dict[str, str] = {"binary_crossentropy": "BinaryCrossentropy", "mse": "MeanSquaredError"}
_DEFAULTS: dict[str, tuple[str, str]] = {
    "binary": ("binary_crossentropy", "auc"),
    "regression": ("mse", "mse"),
}


@dataclasses.dataclass(frozen=True)
class Task:
    """One prediction task: a label column with its loss and headline metric.

    Args:
        name: Identifier used as the model output key and in every result file.
        label: Column of the suite's label table that holds the target.
        kind: ``"binary"`` (probability output, 0/1 labels) or ``"regression"``.
        loss: Key of :data:`LOSSES`; defaults from ``kind``.
        metric: Headline metric, a key of :data:`METRIC_DIRECTIONS`; defaults
            from ``kind`` (AUC for binary, MSE for regression).
        weight: Weight of this task's loss in the joint objective.
        depends_on: The task this one is conditional on, or ``""``: a conversion that can only follow a
            click, labelled on every impression (1 only where the click is 1). Both binary. ESMM models
            such a pair as ``P(conversion) = P(click) · P(conversion | click)``.
    """

    name: str
    label: str
    kind: TaskKind
    loss: str = ""
    metric: str = ""
    weight: float = 1.0
    depends_on: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.replace("_", "").isalnum():
            raise fail("Task", "name", "a non-empty identifier", self.name)
        owner = f"Task {self.name!r}"
        check_choice(owner, "kind", self.kind, TASK_KINDS)
        loss, metric = _DEFAULTS[self.kind]
        if not self.loss:
            object.__setattr__(self, "loss", loss)
        if not self.metric:
            object.__setattr__(self, "metric", metric)
        check_choice(owner, "loss", self.loss, sorted(LOSSES))
        check_choice(owner, "metric", self.metric, ("mse",) if self.kind == "regression" else sorted(METRIC_DIRECTIONS))
        check_number(owner, "weight", self.weight, 0.0)  # kept as given, so that to_dict round-trips
        if self.depends_on:
            if not isinstance(self.depends_on, str) or self.depends_on == self.name:
                raise fail(owner, "depends_on", "the name of another task", self.depends_on)
            if self.kind != "binary":
                raise fail(owner, "depends_on", "empty for a regression task (only a binary task is conditional)",
                           self.depends_on)

    @property
    def higher_is_better(self) -> bool:
        """Direction of the headline metric."""
        return METRIC_DIRECTIONS[self.metric]

    @property
    def metrics(self) -> tuple[str, ...]:
        """Every metric reported for this task, headline first."""
        return ("auc", "logloss") if self.kind == "binary" else ("mse",)

    def loss_fn(self) -> Any:
        """A fresh Keras loss object (mean over the batch)."""
        import keras

        return getattr(keras.losses, LOSSES[self.loss])()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Task:
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """Model inputs: numeric columns with train statistics and categorical vocabularies.

    Args:
        numeric: Names of the numeric columns, in the order of ``features["numeric"]``.
        numeric_mean: Training-split mean of each numeric column.
        numeric_std: Training-split standard deviation of each numeric column (> 0).
        categorical: Names of the categorical columns, in the order of
            ``features["categorical"]``.
        vocabulary_sizes: Number of ids of each categorical column, id 0 = unknown.
    """

    numeric: tuple[str, ...] = ()
    numeric_mean: tuple[float, ...] = ()
    numeric_std: tuple[float, ...] = ()
    categorical: tuple[str, ...] = ()
    vocabulary_sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, tuple(getattr(self, f.name)))
        if not (len(self.numeric) == len(self.numeric_mean) == len(self.numeric_std)):
            raise UserInputError(
                "FeatureSpec: numeric, numeric_mean and numeric_std must have equal lengths. "
                f"Received: {len(self.numeric)}, {len(self.numeric_mean)}, {len(self.numeric_std)}"
            )
        if len(self.categorical) != len(self.vocabulary_sizes):
            raise UserInputError(
                "FeatureSpec: categorical and vocabulary_sizes must have equal lengths. "
                f"Received: {len(self.categorical)}, {len(self.vocabulary_sizes)}"
            )
        if not self.numeric and not self.categorical:
            raise UserInputError("FeatureSpec: at least one numeric or categorical feature is needed.")
        if any(not (s > 0) for s in self.numeric_std):
            raise fail("FeatureSpec", "numeric_std", "positive", self.numeric_std)
        if any(int(v) < 2 for v in self.vocabulary_sizes):
            raise fail("FeatureSpec", "vocabulary_sizes", "integers >= 2 (id 0 is unknown)", self.vocabulary_sizes)

    @property
    def keys(self) -> tuple[str, ...]:
        """Keys of the feature dict a model receives."""
        return tuple(k for k, cols in ((NUMERIC, self.numeric), (CATEGORICAL, self.categorical)) if cols)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: list(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSpec:
        return cls(**{k: tuple(v) for k, v in d.items()})


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """One data split: a feature dict and a label dict (see the module docstring)."""

    features: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    meta: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        sizes = {len(v) for v in (*self.features.values(), *self.labels.values(), *self.meta.values())}
        if len(sizes) > 1:
            raise ValueError(f"Split: all arrays must have the same length. Received lengths {sorted(sizes)}")

    def __len__(self) -> int:
        return len(next(iter(self.labels.values())))

    def take(self, index: np.ndarray | slice) -> Split:
        """Rows ``index`` of every array, as a new split."""
        return Split(
            {k: v[index] for k, v in self.features.items()},
            {k: v[index] for k, v in self.labels.items()},
            {k: v[index] for k, v in self.meta.items()},
        )


@dataclasses.dataclass(frozen=True, eq=False)
class SuiteData:
    """A task suite, materialised: what the engine trains and evaluates on.

    Args:
        name: Suite name (``"synthetic"``, ``"census-income"``, ``"table"``).
        variant: Suite parameters that identify this variant in result files,
            e.g. ``{"correlation": 0.5}`` or ``{"group": "income"}``; each key
            becomes a column of metrics.csv and summary.csv.
        features: The feature spec, fitted on ``train``.
        tasks: The tasks, in suite order.
        train: Training split.
        validation: Validation split: early stopping, tuning and verdicts use it.
        test: Test split, touched once per run.
        notes: Facts every output must repeat (e.g. how the split was made).
    """

    name: str
    variant: dict[str, Any]
    features: FeatureSpec
    tasks: tuple[Task, ...]
    train: Split
    validation: Split
    test: Split
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"SuiteData {self.name!r}: task names must be unique and non-empty. Received: {names}")
        for split_name in ("train", "validation", "test"):
            split: Split = getattr(self, split_name)
            if len(split) == 0:
                raise ValueError(f"SuiteData {self.name!r}: the {split_name} split is empty")
            missing = [n for n in names if n not in split.labels]
            if missing:
                raise ValueError(f"SuiteData {self.name!r}: {split_name} split has no labels for tasks {missing}")

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"Unknown task {name!r}; valid: {[t.name for t in self.tasks]}")

    def with_tasks(self, tasks: tuple[Task, ...]) -> SuiteData:
        """The same data with a subset (or reweighting) of the tasks."""
        return dataclasses.replace(self, tasks=tuple(tasks))
