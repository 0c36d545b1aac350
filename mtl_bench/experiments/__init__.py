"""The experiments of ``mtl-bench run``: a registry, and the run / resume / report entry points that dispatch on it.

``EXPERIMENTS`` maps each value of ``RunConfig.experiment`` (``mtl-bench run --experiment``) to an
:class:`Experiment`. An experiment either runs on the grid of cells (:mod:`mtl_bench.experiments.grid`),
adapting its configuration first (the cohort experiment), or brings a module of its own (the sparse-dense
sweep, the policy experiment). Each implementing module has the same functions:

* ``resolve(config) -> RunConfig``: the configuration with the experiment's defaults filled in; raises
  :class:`~mtl_bench.errors.UserInputError` for a suite, regime or value it cannot run. Writes nothing.
* ``plan(config)``: the validated work of a resolved configuration (the grid's :class:`~grid.Plan`, the
  sweep's points, the policy experiment's architecture × seed pairs). Writes nothing.
* ``run(config, *, out, runs_root, progress, in_process, executor) -> Path`` and
  ``resume(run_dir, *, progress, in_process, executor) -> Path``: the run directory. ``executor`` (an
  :class:`~mtl_bench.engine.executor.Executor`, default a local pool of ``config.jobs`` workers) runs the
  experiment's independent work items: the grid's cells, the sweep's points' cells, the policy experiment's
  architecture × seed pairs. Items return their results; only this process writes the run directory.
* ``summary(run_dir) -> str``: the closing summary ``mtl-bench run`` prints (and ``report``, for an
  experiment that is not a grid run).
* ``runs(run_dir) -> list[Path]``: the grid run directories in it that ``mtl-bench report`` analyses.

Every run directory's ``manifest.json`` records the experiment that wrote it (``"experiment"``);
:func:`of` reads it back. The registry names modules, so importing it (as ``config.py`` and the command
line do) imports no TensorFlow. Adding an experiment: one module with the functions above, one entry here.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TextIO

from mtl_bench.errors import UserInputError

if TYPE_CHECKING:
    from mtl_bench.config import RunConfig
    from mtl_bench.engine.executor import Executor

GRID, COHORT, SPARSE_DENSE, POLICY = "grid", "cohort", "sparse-dense", "policy"
LEGACY_GRID = ""  # the grid's name before the registry: config.toml files say it, and it stays the default
MANIFEST = "manifest.json"
CONFIG = "config.toml"


def _load(name: str) -> Any:
    module, _, attr = name.rpartition(".")
    loaded = importlib.import_module(f"mtl_bench.experiments.{module or name}")
    return getattr(loaded, attr) if module else loaded


@dataclasses.dataclass(frozen=True)
class Experiment:
    """What one experiment is and which code runs it.

    Attributes:
        name: The ``experiment`` value (``--experiment``) and the manifest's ``"experiment"``.
        help: One line for ``mtl-bench run --help``.
        module: The module (in this package) with ``resolve``, ``plan``, ``run``, ``resume``, ``summary``
            and ``runs``; ``"grid"`` for an experiment that runs on the grid of cells.
        adapt: For an experiment on the grid, ``module.function`` that fills in its defaults and refuses
            what it cannot run (``config -> config``; the grid's ``resolve`` calls it); ``""`` for none.
        notes: For an experiment on the grid, ``module.function`` giving the notes its plan records
            (``config -> list[str]``); ``""`` for none.
        markers: Files only this experiment writes: how a directory written before manifests named their
            experiment is recognised (:func:`of`).
    """

    name: str
    help: str
    module: str = "grid"
    adapt: str = ""
    notes: str = ""
    markers: tuple[str, ...] = ()

    @property
    def implementation(self) -> ModuleType:
        """The implementing module, imported on first use (it may import TensorFlow)."""
        return _load(self.module)

    @property
    def on_grid(self) -> bool:
        """Whether its run directory is a grid run (cells, metrics.csv, summary.csv) that ``report`` reads."""
        return self.module == "grid"

    def adapted(self, config: RunConfig) -> RunConfig:
        """``config`` with this experiment's defaults, for the grid (see ``adapt``)."""
        return _load(self.adapt)(config) if self.adapt else config

    def plan_notes(self, config: RunConfig) -> list[str]:
        """The notes this experiment adds to the grid's plan (see ``notes``)."""
        return list(_load(self.notes)(config)) if self.notes else []

    def resolve(self, config: RunConfig) -> RunConfig:
        """``config`` (of this experiment) with its defaults filled in; raises ``UserInputError`` for what it refuses."""
        return self.implementation.resolve(config)

    def plan(self, config: RunConfig) -> Any:
        """The validated work of ``config`` (of this experiment), resolved first; nothing is written."""
        return self.implementation.plan(self.resolve(config))

    def run(
        self,
        config: RunConfig,
        *,
        out: str | Path | None = None,
        runs_root: str | Path = "runs",
        progress: TextIO | None = sys.stderr,
        in_process: bool = False,
        executor: Executor | None = None,
    ) -> Path:
        """Runs ``config`` into a new run directory (see :func:`run`) and returns it."""
        return self.implementation.run(config, out=out, runs_root=runs_root, progress=progress, in_process=in_process,
                                       executor=executor)

    def resume(self, run_dir: str | Path, *, progress: TextIO | None = sys.stderr, in_process: bool = False,
               executor: Executor | None = None) -> Path:
        """Continues the run this experiment wrote into ``run_dir``."""
        return self.implementation.resume(run_dir, progress=progress, in_process=in_process, executor=executor)

    def summary(self, run_dir: str | Path) -> str:
        """The closing summary of ``run_dir`` (text to print; ``""`` for none)."""
        return self.implementation.summary(Path(run_dir))

    def runs(self, run_dir: str | Path) -> list[Path]:
        """The grid run directories in ``run_dir`` that ``mtl-bench report`` analyses."""
        return self.implementation.runs(Path(run_dir))


EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(GRID, "the grid of suite variants × architectures × regimes × seeds (the default)"),
        Experiment(
            COHORT, "hold one user cohort out of daily training and follow its AUC (recsim, movielens or a table with [time] and [cohorts]; daily regime)",
            adapt="cohort.adapt", notes="cohort.notes",
        ),
        Experiment(SPARSE_DENSE, "the cohort experiment swept from embedding to dense parameters (recsim)",
                   module="sparse_dense", markers=("points.csv", "sparse_dense.md")),
        Experiment(POLICY, "logged vs on-policy supervised vs REINFORCE, PPO and GRPO (with a KL penalty) in the simulator (recsim)",
                   module="policy", markers=("policy.md",)),
    )
}


def get(name: str) -> Experiment:
    """The experiment named ``name`` (``""`` is the grid)."""
    key = GRID if name == LEGACY_GRID else name
    if key not in EXPERIMENTS:
        raise UserInputError(f"unknown experiment {name!r}; valid experiments: {list(EXPERIMENTS)}")
    return EXPERIMENTS[key]


def of(run_dir: str | Path) -> Experiment:
    """The experiment that wrote ``run_dir``: its manifest's ``"experiment"``, else (older directories) its files.

    Raises:
        UserInputError: When ``run_dir`` is no run directory.
    """
    from mtl_bench import io

    run_dir = Path(run_dir)
    manifest = run_dir / MANIFEST
    if manifest.is_file():
        name = io.read_json(manifest).get("experiment")
        if name is not None:
            return get(name)
    # Written before manifests named their experiment: the old file test.
    for experiment in EXPERIMENTS.values():
        if any((run_dir / marker).is_file() for marker in experiment.markers):
            return experiment
    if (run_dir / CONFIG).is_file():  # a grid run, or a policy run interrupted before it wrote anything else
        try:
            return get(tomllib.loads((run_dir / CONFIG).read_text()).get("experiment", LEGACY_GRID))
        except tomllib.TOMLDecodeError as err:
            raise UserInputError(f"config file {run_dir / CONFIG} is not valid TOML: {err}") from None
    if manifest.is_file():
        return EXPERIMENTS[GRID]
    raise UserInputError(f"{run_dir} is not a run directory (no config.toml and manifest.json)")


def run(
    config: RunConfig,
    *,
    out: str | Path | None = None,
    runs_root: str | Path = "runs",
    progress: TextIO | None = sys.stderr,
    in_process: bool = False,
    executor: Executor | None = None,
) -> Path:
    """Runs ``config``'s experiment into a new run directory (default ``<runs_root>/<run-id>``) and returns it.

    ``executor`` runs its work items (default: a local pool of ``config.jobs`` workers; ``in_process``: this
    process); results do not depend on it.

    Raises:
        UserInputError: For an invalid configuration or a non-empty ``out`` (nothing is written then).
    """
    return get(config.experiment).run(config, out=out, runs_root=runs_root, progress=progress, in_process=in_process,
                                      executor=executor)


def resume(run_dir: str | Path, *, progress: TextIO | None = sys.stderr, in_process: bool = False,
           executor: Executor | None = None) -> Path:
    """Continues the run in ``run_dir`` with the experiment that wrote it (``executor``: as in :func:`run`)."""
    return of(run_dir).resume(run_dir, progress=progress, in_process=in_process, executor=executor)
