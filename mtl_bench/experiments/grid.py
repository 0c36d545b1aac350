"""A run: the grid of cells (suite variant × arch × regime × order × seed), executed and written to disk.

Run directory layout (``runs/<run-id>/``):

* ``config.toml``: the resolved :class:`~mtl_bench.config.RunConfig`;
  ``mtl-bench run --config`` on it reproduces the run.
* ``cells/<cell>.csv``: each finished cell's metric rows, committed before the next cell starts.
* ``metrics.csv``: all cells' rows, long format.
* ``summary.csv``: means, 95% CIs and transfer vs single-task (:mod:`mtl_bench.analysis.summary`).
* ``manifest.json``: versions, seeds, notes, per-cell status and wall time, run status
  (:mod:`mtl_bench.experiments.rundir`).
* ``daily.csv``, ``cohort_forgetting.csv``, ``probe.csv``, ``retention.csv``: when a cell writes them.

Every file is written atomically; ``resume`` skips the cells already on disk. The grid is the
``"grid"`` experiment and runs every experiment registered with ``module = "grid"`` (the cohort
experiment), after that experiment's ``adapt`` (see :mod:`mtl_bench.experiments`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import inspect
import itertools
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import pandas as pd
import tensorflow as tf

from mtl_bench import experiments, io
from mtl_bench.analysis.cohorts import summary_text as cohort_summary
from mtl_bench.analysis.summary import format_table, summarize
from mtl_bench.config import RunConfig
from mtl_bench.engine import cells as cell_lib
from mtl_bench.engine import executor as executor_lib
from mtl_bench.engine.regimes import REGIMES
from mtl_bench.errors import UserInputError
from mtl_bench.experiments import cell_files, rundir
from mtl_bench.experiments.cell_files import CELLS_DIR, Cell
from mtl_bench.experiments.cohort import cohort_forgetting
from mtl_bench.models import ARCHITECTURES
from mtl_bench.remedies import REMEDIES
from mtl_bench.schema import BASELINE, DAILY, EQUAL, JOINT, SINGLE, SINGLE_ARCH
from mtl_bench.spec import SuiteData

MAX_CELLS = 100_000  # a plan beyond this is a typo (seeds, a sweep), not a benchmark; refused before anything runs


@dataclasses.dataclass
class Plan:
    """The validated grid of a configuration."""

    config: RunConfig
    cells: list[Cell]
    variant_columns: list[str]
    notes: list[str]


def _variants(config: RunConfig) -> list[tuple[tuple[str, Any], ...]]:
    loader = cell_lib.suite_loader(config)
    params = inspect.signature(loader).parameters
    valid = sorted(p for p in params if p != "seed")
    for name in config.suite_params:
        if name not in valid:
            raise UserInputError(f"suite {config.suite!r} has no parameter {name!r}; valid parameters: {valid}")
    names = sorted(config.suite_params)
    values = [v if isinstance(v, list) else [v] for v in (config.suite_params[n] for n in names)]
    for name, vs in zip(names, values):
        if not vs:
            raise UserInputError(f"suite parameter {name!r} is an empty list")
        if len({repr(v) for v in vs}) != len(vs) or len({str(v) for v in vs}) != len(vs):
            raise UserInputError(f"suite parameter {name!r} lists a value twice. Received: {vs}")
    return [tuple(zip(names, combo)) for combo in itertools.product(*values)]


def resolve(config: RunConfig) -> RunConfig:
    """The configuration with the suite's and the experiment's defaults filled in (what ``config.toml`` records).

    Raises:
        UserInputError: For an experiment that does not run on the grid, or one whose ``adapt`` refuses
            the configuration.
    """
    experiment = experiments.get(config.experiment)
    if not experiment.on_grid:
        raise UserInputError(f"experiment {experiment.name!r} does not run on the grid; run it with "
                             "mtl_bench.experiments.run (mtl-bench run --experiment)")
    if config.suite == "planted":
        from mtl_bench.tasks import planted

        # The planted mechanisms are calibrated on the suite's own model (a one-unit linear bottleneck).
        missing = {a: p for a, p in planted.ARCH_PARAMS.items() if a not in config.arch_params}
        if missing:
            config = dataclasses.replace(config, arch_params={**config.arch_params, **missing})
    return experiment.adapted(config)


def plan(config: RunConfig) -> Plan:
    """Validates every name in ``config`` and expands the grid; loads each variant once to learn its tasks.

    Raises:
        UserInputError: For any unknown name or invalid value, before anything is written.
    """
    multi_task = sorted(set(ARCHITECTURES) - {SINGLE_ARCH})
    for arch in config.archs:
        if arch not in multi_task:
            raise UserInputError(f"unknown multi-task architecture {arch!r}; valid architectures: {multi_task}")
    for regime in config.regimes:
        if regime not in REGIMES:
            raise UserInputError(f"unknown regime {regime!r}; valid regimes: {sorted(REGIMES)}")
    for arch in config.arch_params:
        if arch not in ARCHITECTURES:
            raise UserInputError(f"arch_params names unknown architecture {arch!r}; valid: {sorted(ARCHITECTURES)}")
    for remedy in config.remedies:
        if remedy not in REMEDIES:
            raise UserInputError(f"unknown remedy {remedy!r}; valid remedies: {sorted(REMEDIES)}")
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise UserInputError("--tensorboard needs the tensorboard package: pip install 'mtl-bench[tensorboard]' "
                             "(or pip install tensorboard)")
    cells: list[Cell] = []
    variant_columns: list[str] = []
    notes: list[str] = []
    variants = _variants(config)
    _check_size(len(variants) * config.seeds * len(config.regimes))  # a lower bound, before any suite loads
    for variant in variants:
        data = cell_lib.load_suite(config, variant, config.first_seed)
        _check_arch_params(config, data)
        if DAILY in config.regimes and "day" not in data.train.meta:
            raise UserInputError(f"regime {DAILY!r} needs a suite with days (recsim); suite {config.suite!r} has none")
        if DAILY in config.regimes:
            days = sorted(set(data.train.meta["day"].tolist()))
            if days != list(range(days[0], days[-1] + 1)):
                raise UserInputError(f"regime {DAILY!r} needs every training day; max_train_rows left days {days}")
            if config.pretrain_days >= len(days):
                raise UserInputError(f"pretrain_days must be fewer than the {len(days)} training days (0 = half), or "
                                     f"nothing is left for daily training. Received: pretrain_days={config.pretrain_days}")
        for note in experiments.get(config.experiment).plan_notes(config):
            _note(notes, note)
        remedies = _remedies(config, data, notes)
        for column in data.variant:
            if column not in variant_columns:
                variant_columns.append(column)
        notes.extend(n for n in data.notes if n not in notes)
        names = [t.name for t in data.tasks]
        for order in config.orders:
            if sorted(order) != sorted(names):
                raise UserInputError(
                    f"sequential order {list(order)} must list each task once; tasks: {names}"
                )
        for seed in config.seed_list:
            for regime_name in sorted(config.regimes, key=list(REGIMES).index):
                regime = REGIMES[regime_name]
                archs = config.archs if regime.uses_arch or config.single_baseline == "same_arch" else [SINGLE_ARCH]
                for remedy in remedies:
                    if regime_name not in REMEDIES[remedy].regimes:
                        continue
                    for arch in archs:
                        for order in regime.orders(names, config.orders):
                            cells.append(Cell(variant, arch, regime_name, order, seed, remedy))
        _check_size(len(cells))
    # A suite leaves a parameter at its default out of data.variant; a swept one is a column for every value.
    variant_columns += [name for name in _swept(config) if name not in variant_columns]
    return Plan(config, cells, variant_columns, notes)


def _swept(config: RunConfig) -> list[str]:
    """The suite parameters given several values (each value is a suite variant of its own)."""
    return sorted(name for name, value in config.suite_params.items() if isinstance(value, list))


def _check_size(cells: int) -> None:
    if cells > MAX_CELLS:
        raise UserInputError(f"the planned grid has more than {MAX_CELLS:,} cells (at least {cells:,}): fewer seeds, "
                             "sweep values, architectures or regimes")


def _remedies(config: RunConfig, data: SuiteData, notes: list[str]) -> list[str]:
    """The remedies to run on one suite variant: the configured ones plus the baselines every comparison needs.

    Checks ``task_weights`` names and each remedy's parameters (by building it) first.
    """
    names = [t.name for t in data.tasks]
    unknown = sorted(set(config.task_weights) - set(names))
    if unknown:
        raise UserInputError(f"task_weights names unknown task(s) {unknown}; tasks: {names}")
    for name, params in config.remedy_params.items():
        if name not in REMEDIES:
            raise UserInputError(f"remedy_params names unknown remedy {name!r}; valid remedies: {sorted(REMEDIES)}")
        remedy = REMEDIES[name]
        valid = remedy.parameters()
        bad = sorted(set(params) - set(valid))
        if bad:
            raise UserInputError(f"remedy_params for {name!r}: unknown parameter(s) {bad}; valid: {valid}")
        try:
            remedy.build(params)
        except (TypeError, ValueError) as err:
            raise UserInputError(f"remedy_params for {name!r}: {str(err).splitlines()[0]}") from None
    remedies = list(config.remedies)
    if BASELINE not in remedies:
        remedies.insert(0, BASELINE)
        _note(notes, f"remedy {BASELINE!r} (the static-weight baseline) is always run")
    joint_others = [r for r in remedies if r not in (BASELINE, EQUAL) and JOINT in REMEDIES[r].regimes]
    if joint_others and JOINT in config.regimes and EQUAL not in remedies and any(t.weight != 1.0 for t in data.tasks):
        remedies.insert(1, EQUAL)
        _note(notes, f"remedy {EQUAL!r} (the equal-weight baseline) is run because the static weights are not all 1")
    anchored = [r for r in remedies if REMEDIES[r].aid and JOINT in REMEDIES[r].regimes]
    if anchored and JOINT in config.regimes and config.epochs < 2:
        _note(notes, f"with epochs={config.epochs}, {anchored} do nothing in the joint regime: they anchor to the "
                     "model of the previous epoch, from the second epoch on")
    return sorted(remedies, key=list(REMEDIES).index)


def _note(notes: list[str], text: str) -> None:
    if text not in notes:
        notes.append(text)


def _check_arch_params(config: RunConfig, data: SuiteData) -> None:
    """Builds each architecture once so a bad constructor argument fails before the run starts."""
    archs = set(config.archs) | ({SINGLE_ARCH} if SINGLE in config.regimes else set())
    for arch in sorted(archs):
        try:
            cell_lib.check_arch(arch, data, config.arch_params.get(arch, {}))
        except ValueError as err:
            raise UserInputError(f"arch_params for {arch!r}: {err}") from None


def run(
    config: RunConfig,
    *,
    out: str | Path | None = None,
    runs_root: str | Path = "runs",
    progress: TextIO | None = sys.stderr,
    in_process: bool = False,
    executor: executor_lib.Executor | None = None,
) -> Path:
    """Plans and executes a run into a new run directory.

    Args:
        config: The run configuration.
        out: The run directory; default ``<runs_root>/<run-id>``. It must not exist
            or be empty.
        runs_root: Parent of generated run directories.
        progress: Stream for the progress bar, or None.
        in_process: Run cells in this process (with its TensorFlow thread
            settings) instead of in ``config.jobs`` single-threaded worker
            processes: for debugging; numbers may differ in the last digits.
        executor: Where the cells run (e.g. a
            :class:`~mtl_bench.engine.cluster.DaskCluster`); default a
            :class:`~mtl_bench.engine.executor.LocalPool` of ``config.jobs``
            workers. Results do not depend on it.

    Returns:
        The run directory.

    Raises:
        UserInputError: For invalid configuration (nothing is written then).
    """
    config = resolve(config)
    the_plan = plan(config)
    where = executor_lib.ready(executor, jobs=config.jobs, in_process=in_process)
    run_dir = rundir.new_dir(config, out, runs_root)
    with io.locked(run_dir):
        io.write_text(run_dir / experiments.CONFIG, config.to_toml())
        manifest = rundir.start(run_dir, config, notes=the_plan.notes, variant_columns=the_plan.variant_columns,
                                cells={}, config_sha256=rundir.config_digest(config))
        return _execute(the_plan, run_dir, manifest, progress, where)


def resume(
    run_dir: str | Path,
    *,
    progress: TextIO | None = sys.stderr,
    in_process: bool = False,
    jobs: int | None = None,
    executor: executor_lib.Executor | None = None,
) -> Path:
    """Continues an interrupted run, skipping the cells already committed to disk.

    ``jobs`` (None = as configured) and ``executor`` choose where the remaining cells run, as in :func:`run`.

    Raises:
        UserInputError: When ``run_dir`` is no run directory or its ``config.toml`` was edited.
    """
    run_dir = Path(run_dir)
    if not (run_dir / experiments.CONFIG).is_file() or not (run_dir / experiments.MANIFEST).is_file():
        raise UserInputError(f"{run_dir} is not a run directory (no config.toml and manifest.json)")
    with io.locked(run_dir):
        config = resolve(RunConfig.from_toml(run_dir / experiments.CONFIG))
        manifest = rundir.restart(run_dir, config)
        rundir.check_unchanged(run_dir, manifest, config)
        if jobs is not None:
            config = dataclasses.replace(config, jobs=jobs)
        where = executor_lib.ready(executor, jobs=config.jobs, in_process=in_process)
        return _execute(plan(config), run_dir, manifest, progress, where)


def _execute(
    the_plan: Plan, run_dir: Path, manifest: dict[str, Any], progress: TextIO | None, where: executor_lib.Executor
) -> Path:
    config = the_plan.config
    cells_dir = run_dir / CELLS_DIR
    cells_dir.mkdir(exist_ok=True)
    for stale in cells_dir.glob(".*.tmp"):  # a driver stopped mid-write; its cell is not committed and runs again
        stale.unlink(missing_ok=True)
    bar, manifest["planned_cells"] = executor_lib.Progress(len(the_plan.cells), progress), len(the_plan.cells)
    pending = []
    for cell in the_plan.cells:
        if cell_files.committed(cells_dir, cell):
            # A driver stopped between committing a cell and recording it.
            manifest["cells"].setdefault(cell.key, cell_files.committed_status(cells_dir, cell))
            bar.update(f"{cell.describe()} (done before)")
        else:
            pending.append(cell)
    start = time.perf_counter()

    def record(cell: Cell, outcome: cell_files.Outcome) -> None:
        # Cell files are the committed results; the combined CSVs are rebuilt once, at the end.
        with executor_lib.uninterruptible():
            manifest["cells"][cell.key] = status = cell_files.commit(cells_dir, cell, outcome)
            io.write_json(run_dir / experiments.MANIFEST, manifest)
        failed = "" if status["status"] == rundir.COMPLETE else " FAILED"
        wall = "" if status["wall_seconds"] is None else f" {status['wall_seconds']:.1f}s"
        bar.update(f"{cell.describe()}{wall}{failed}")

    work = functools.partial(cell_files.compute, config, tuple(_swept(config)))
    try:
        if isinstance(where, executor_lib.InProcess):
            tf.config.experimental.enable_op_determinism()
        where.run(work, pending, record, initializer=cell_lib.init_worker, failed=cell_files.died)
    except BaseException as err:
        with executor_lib.uninterruptible():  # a second Ctrl-C must not leave the manifest saying "running"
            with contextlib.suppress(OSError):  # a full disk must not hide the error that stopped the run
                _write_results(run_dir, the_plan)
            rundir.stop(run_dir, manifest, err)
        raise
    failed = [k for k, v in manifest["cells"].items() if v["status"] == rundir.FAILED]
    with executor_lib.uninterruptible():
        _write_results(run_dir, the_plan)
        rundir.finish(run_dir, manifest, start,
                      status=rundir.FAILED if failed and len(failed) == len(manifest["cells"]) else rundir.COMPLETE,
                      reason=f"{len(failed)} cell(s) failed: {failed}" if failed else "")
    return run_dir


def read_cells(run_dir: str | Path, stem: str = "metrics") -> pd.DataFrame:
    """One result table (``metrics``, ``probe``, ``retention`` or ``daily``) of all committed cells, by cell key."""
    return cell_files.read(run_dir, stem)


def _write_results(run_dir: Path, the_plan: Plan) -> None:
    metrics = read_cells(run_dir, "metrics")
    if metrics.empty:
        return
    io.write_csv(run_dir / "metrics.csv", metrics)
    io.write_csv(run_dir / "summary.csv", summarize(metrics, the_plan.variant_columns))
    for stem in ("probe", "retention", DAILY):  # the daily regime's file is named after it
        frame = read_cells(run_dir, stem)
        if not frame.empty:
            io.write_csv(run_dir / f"{stem}.csv", frame)
            if stem == DAILY:
                io.write_csv(run_dir / "cohort_forgetting.csv", cohort_forgetting(frame, the_plan.variant_columns))


def summary(run_dir: Path) -> str:
    """The closing summary: the test split's headline metric per cell group, then the run's notes."""
    manifest = io.read_json(run_dir / experiments.MANIFEST)
    lines = []
    if (run_dir / "summary.csv").is_file():
        table = pd.read_csv(run_dir / "summary.csv", keep_default_na=False, na_values=[""])
        lines += ["\nTest split: headline metric mean±95% CI half-width (transfer vs single-task; < 0 = negative "
                  "transfer)", format_table(table, manifest["variant_columns"])]
    cohorts = cohort_summary(run_dir, manifest["variant_columns"])
    lines += [f"\n{cohorts}"] if cohorts else []
    lines += [f"note: {note}" for note in manifest["notes"]]
    if manifest["reason"]:
        lines.append(f"note: {manifest['reason']}")
    return "\n".join(lines)


def runs(run_dir: Path) -> list[Path]:
    """The grid run directories ``mtl-bench report`` reads: this one."""
    return [run_dir]
