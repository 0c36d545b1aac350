"""One configuration dataclass per run, loadable from and written to TOML."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from mtl_bench import experiments
from mtl_bench.errors import UserInputError
from mtl_bench.schema import JOINT, SEQUENTIAL, SINGLE, SINGLE_ARCH
from mtl_bench.validation import check_choice, check_int, check_number, fail

OWNER = "config"
SINGLE_BASELINES = (SINGLE_ARCH, "same_arch")
SELECTIONS = ("per_task", "sum", "last")  # mtl_bench.engine.training.SELECTIONS, without importing TensorFlow
# The registries' names without importing Keras, so the command line refuses a bad name at once
# (tests/mtl_bench/test_config.py checks them against mtl_bench.models.ARCHITECTURES and mtl_bench.tasks.SUITES).
ARCH_NAMES = (SINGLE_ARCH, "shared_bottom", "mmoe", "omoe", "ple", "esmm")
SUITE_NAMES = ("synthetic", "census-income", "table", "recsim", "planted", "movielens")
MAX_SEEDS = 1000  # more seeds than any interval needs; bounds the plan's memory before anything runs


@dataclasses.dataclass
class RunConfig:
    """Everything that determines a run; ``config.toml`` in a run directory is this, resolved.

    Attributes:
        suite: Name of a task suite (a key of ``mtl_bench.tasks.SUITES``).
        suite_params: Keyword arguments of the suite's ``load``; a list value is a
            sweep: every value becomes a suite variant of its own.
        archs: Architectures trained by the joint and sequential regimes (keys of
            ``mtl_bench.models.ARCHITECTURES``); the single regime always uses
            ``single_task``.
        arch_params: Constructor arguments per architecture name.
        regimes: Training regimes (keys of ``mtl_bench.engine.regimes.REGIMES``).
        orders: Task orders of the sequential regime; empty means every order for
            two tasks, and the suite order plus its reverse for more.
        seeds: Number of seeds; seed ``s`` runs ``first_seed + s``.
        first_seed: The first seed.
        epochs: Maximum epochs per training phase.
        patience: Early stopping: epochs without a better validation loss before stopping.
        batch_size: Training batch size.
        learning_rate: Adam learning rate.
        max_train_rows: Use at most this many training rows (small CI slices); 0 = all.
        max_eval_rows: Use at most this many validation and test rows; 0 = all.
        probe_every: Probe cadence in training steps; 0 switches the probe off.
        lookahead_steps: Joint regime: at each probe event, replay this many
            real optimizer steps of the other tasks alone to measure the
            damage they do to each task (the ``damage*`` measures; 0 = off).
            Descriptive evidence the verdict does not read; it costs ``T·k``
            training steps per probe event.
        tensorboard: Directory for TensorBoard scalars; empty = none.
        single_baseline: What the single regime trains: ``"single_task"`` (one
            tower model per task) or ``"same_arch"`` (each architecture of
            ``archs`` on one task at a time, so transfer compares like with like).
        remedies: Remedies of the contrast grid (keys of
            ``mtl_bench.remedies.REMEDIES``); each runs in the regimes it
            changes. ``"none"`` (the static-weight baseline) is always run, and
            ``"equal"`` too when a remedy is asked for and the static weights
            are not all 1.
        remedy_params: Constructor arguments per remedy name (e.g.
            ``{"replay": {"share": 0.2}}``).
        pretrain_days: Daily regime: days of pre-training; 0 = half the training days.
        epochs_per_day: Daily regime: passes over each later day's rows.
        experiment: A key of ``mtl_bench.experiments.EXPERIMENTS``: ``"grid"``
            (also ``""``, the default), ``"cohort"`` (the cohort-forgetting
            experiment on the ``recsim`` suite; held-out cohort defaults:
            cohort 1 from the first day after pre-training; see
            :func:`mtl_bench.experiments.cohort.adapt`), ``"sparse-dense"`` (a
            sweep of cohort experiments from embedding to dense parameters; see
            :mod:`mtl_bench.experiments.sparse_dense`) or ``"policy"``
            (on-policy vs logged data; see :mod:`mtl_bench.experiments.policy`).
        task_weights: Static loss weight per task name (e.g. tuned by
            ``mtl-bench tune``); tasks not named keep their suite's weight.
        selection: How the single, joint and sequential regimes select the
            epoch whose weights are evaluated: ``"per_task"`` (each task its
            own best epoch by its own validation loss, the rule a single-task
            model is selected by, so both arms are selected alike),
            ``"sum"`` (one epoch by the weighted sum of the task losses) or
            ``"last"`` (no selection: the last epoch, the same budget for all).
        selection_share: Share of the validation rows that only select epochs;
            every reported validation number, the probe batch and the verdict
            come from the other rows (0 = all rows do both).
        jobs: Worker processes running cells in parallel; 0 = one per CPU core not
            busy (:func:`mtl_bench.engine.executor.default_jobs`).
            Each worker runs TensorFlow on one thread, so results do not
            depend on the number of jobs.
    """

    suite: str = "synthetic"
    suite_params: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {"correlation": [1.0, 0.5, 0.0]}
    )
    archs: list[str] = dataclasses.field(default_factory=lambda: ["shared_bottom", "mmoe", "ple"])
    arch_params: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    regimes: list[str] = dataclasses.field(default_factory=lambda: [SINGLE, JOINT, SEQUENTIAL])
    orders: list[list[str]] = dataclasses.field(default_factory=list)
    seeds: int = 3
    first_seed: int = 0
    epochs: int = 40
    patience: int = 3
    batch_size: int = 256
    learning_rate: float = 1e-2
    max_train_rows: int = 0
    max_eval_rows: int = 0
    probe_every: int = 100
    lookahead_steps: int = 0
    tensorboard: str = ""
    single_baseline: str = "same_arch"
    remedies: list[str] = dataclasses.field(default_factory=lambda: ["none"])
    remedy_params: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    task_weights: dict[str, float] = dataclasses.field(default_factory=dict)
    pretrain_days: int = 0
    epochs_per_day: int = 1
    experiment: str = experiments.LEGACY_GRID
    selection: str = "per_task"
    selection_share: float = 0.5
    jobs: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Checks values that need no suite or model (names are checked by :func:`mtl_bench.experiments.grid.plan`)."""
        for name in ("epochs", "batch_size", "epochs_per_day"):
            check_int(OWNER, name, getattr(self, name), 1)
        check_int(OWNER, "seeds", self.seeds, 1, MAX_SEEDS)
        for name in ("patience", "max_train_rows", "max_eval_rows", "probe_every", "lookahead_steps", "first_seed", "jobs",
                     "pretrain_days"):
            check_int(OWNER, name, getattr(self, name), 0)
        check_number(OWNER, "learning_rate", self.learning_rate, 0, low_open=True)
        if self.first_seed + self.seeds > 2**32:
            raise fail(OWNER, "first_seed + seeds", "at most 2**32", self.first_seed + self.seeds)
        if not isinstance(self.tensorboard, str):
            raise fail(OWNER, "tensorboard", "a directory path", self.tensorboard)
        if not isinstance(self.orders, list) or not all(
            isinstance(o, list) and all(isinstance(t, str) for t in o) for o in self.orders
        ):
            raise fail(OWNER, "orders", "a list of task-name lists", self.orders)
        if len({tuple(o) for o in self.orders}) != len(self.orders):
            raise fail(OWNER, "orders", "a list that names each order once", self.orders)
        for name in ("archs", "regimes", "remedies"):
            value = getattr(self, name)
            if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
                raise fail(OWNER, name, "a non-empty list of names", value)
            if len(set(value)) != len(value):
                raise fail(OWNER, name, f"a list that names each {name[:-1].replace('remedie', 'remedy')} once", value)
        check_choice(OWNER, "single_baseline", self.single_baseline, SINGLE_BASELINES)
        for name in ("suite_params", "arch_params", "remedy_params", "task_weights"):
            if not isinstance(getattr(self, name), dict):
                raise fail(OWNER, name, "a table", getattr(self, name))
        for name, value in self.remedy_params.items():
            if not isinstance(value, dict):
                raise fail(OWNER, f"remedy_params.{name}", "a table", value)
        for task, w in self.task_weights.items():
            check_number(OWNER, f"task_weights.{task}", w, 0)
        check_choice(OWNER, "selection", self.selection, SELECTIONS)
        check_number(OWNER, "selection_share", self.selection_share, 0, 1, high_open=True)
        if self.experiment != experiments.LEGACY_GRID:
            check_choice(OWNER, "experiment", self.experiment, experiments.EXPERIMENTS)

    @property
    def seed_list(self) -> list[int]:
        return [self.first_seed + s for s in range(self.seeds)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserInputError(f"{source}: unknown key(s) {unknown}; valid keys: {sorted(known)}")
        try:
            return cls(**data)
        except TypeError as err:  # wrong value types that dataclasses cannot coerce
            raise UserInputError(f"{source}: {err}") from None

    @classmethod
    def from_toml(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        if not path.is_file():
            raise UserInputError(f"config file not found: {path}")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise UserInputError(f"config file {path} is not valid TOML: {err}") from None
        return cls.from_dict(data, source=str(path))
