"""The entry points: :func:`tune` tunes one arm (an architecture trained by one regime), :func:`tune_arms`
several arms with an equal budget, then re-trains each best configuration over seeds."""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import inspect
import multiprocessing
import re
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TextIO

import optuna

from mtl_bench import io
from mtl_bench.config import RunConfig
from mtl_bench.errors import UserInputError
from mtl_bench.engine import cells
from mtl_bench.experiments import grid
from mtl_bench.models import ARCHITECTURES
from mtl_bench.schema import JOINT, SEQUENTIAL, SINGLE, SINGLE_ARCH
from mtl_bench.tune import study as study_lib
from mtl_bench.tune.objectives import OBJECTIVES
from mtl_bench.tune.results import (
    ArmsResult,
    TuneResult,
    best_single_scores,
    format_values,
    with_single_baseline,
    write_results,
)
from mtl_bench.tune.space import Param, load_space_overrides, search_space
from mtl_bench.validation import check_choice, check_int

OWNER = "tune"
SINGLE_ARM = "single"  # arm name of the single-task baseline: arch single_task, regime single
# Not the daily regime: it keeps each day's last weights, so it has no per-epoch selection to prune on.
TUNABLE_REGIMES = (JOINT, SEQUENTIAL, SINGLE)


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


def _options(options: dict[str, Any]) -> TuneOptions:
    valid = {f.name for f in dataclasses.fields(TuneOptions)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise TypeError(f"tune() got unknown option(s) {unknown}; valid: {sorted(valid)}")
    return TuneOptions(**options)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", name)


def arm(name: str, regime: str) -> tuple[str, str]:
    """Arm name -> (architecture, regime); ``single`` is the one-tower single-task arm, always trained single."""
    check_choice(OWNER, "arch", name, sorted([SINGLE_ARM, *ARCHITECTURES]))
    arch = SINGLE_ARCH if name == SINGLE_ARM else name
    return arch, (SINGLE if arch == SINGLE_ARCH else regime)


def _check(config: RunConfig, regime: str, opts: TuneOptions) -> None:
    check_choice(OWNER, "regime", regime, sorted(TUNABLE_REGIMES))
    check_choice(OWNER, "objective", opts.objective, sorted(OBJECTIVES))
    check_choice(OWNER, "pruner", opts.pruner, sorted(study_lib.PRUNERS))
    for name in ("n_trials", "workers", "retrain_seeds", "heartbeat_interval", "grace_period"):
        check_int(OWNER, name, getattr(opts, name), low=1)
    loader = inspect.signature(cells.suite_loader(config)).parameters
    valid = sorted(n for n, p in loader.items() if n != "seed" and p.kind is not p.VAR_KEYWORD)
    for name in config.suite_params:
        if name not in valid and not any(p.kind is p.VAR_KEYWORD for p in loader.values()):
            raise UserInputError(f"suite {config.suite!r} has no parameter {name!r} (--param); valid: {valid}")
    for name, params in config.arch_params.items():
        check_choice(OWNER, "arch_params table", name, sorted(ARCHITECTURES))
        ctor = inspect.signature(ARCHITECTURES[name].__init__).parameters
        names = sorted(n for n, p in ctor.items() if p.kind is p.KEYWORD_ONLY)
        for key in params:
            if key not in names:
                raise UserInputError(f"arch_params.{name}: {name} has no parameter {key!r}; valid: {names}")
    if any(isinstance(v, list) for v in config.suite_params.values()):
        raise UserInputError(f"tuning needs one suite variant; suite_params sweeps {config.suite_params}")
    if config.experiment:
        raise UserInputError(f"tuning runs no experiment; drop experiment={config.experiment!r} from the config")


@contextlib.contextmanager
def _removed_on_error(out: Path) -> Iterator[None]:
    """Creates ``out``; removes it again when setting up fails with a user error, so no empty directory is left."""
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except UserInputError:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _fixed_by_config(config: RunConfig, arch: str) -> dict[str, dict[str, Param]]:
    """The base configuration's ``arch_params`` of the tuned architecture: fixed, not searched."""
    return {arch: {k: Param(value=v, fixed=True) for k, v in config.arch_params.get(arch, {}).items()}}


def _setup(config: RunConfig, arch: str, regime: str, opts: TuneOptions, *, storage: str,
           study_name: str) -> study_lib.StudySetup:
    """One arm's study setup, every name and value checked; touches no file."""
    overrides = load_space_overrides(opts.space_file) if opts.space_file else {}
    fixed = _fixed_by_config(config, arch)
    overrides = {**overrides, arch: {**fixed[arch], **overrides.get(arch, {})}}
    objective = opts.objective
    if OBJECTIVES[objective].needs_reference and arch == SINGLE_ARCH:
        objective = "mean_auc"  # the single-task arm is the reference itself
    setup = study_lib.StudySetup(
        config=config, arch=arch, regime=regime, objective=objective, space={}, storage=storage,
        study_name=study_name, n_trials=opts.n_trials, sampler_seed=opts.sampler_seed, pruner=opts.pruner,
        pruner_params=dict(opts.pruner_params), main_task=opts.main_task or "",
        heartbeat_interval=opts.heartbeat_interval, grace_period=opts.grace_period,
    )
    data = study_lib.load_data(setup)
    if opts.main_task:
        check_choice(OWNER, "main_task", opts.main_task, [t.name for t in data.tasks])
    study_lib.make_pruner(setup)
    return dataclasses.replace(setup, space=search_space(arch, data.tasks, overrides))


def _run_study(setup: study_lib.StudySetup, out: Path, opts: TuneOptions, progress: TextIO | None) -> TuneResult:
    study = study_lib.open_study(setup, create=True)
    if study.user_attrs.get("enqueued") is None:
        for params in opts.enqueue:
            study.enqueue_trial(params, skip_if_exists=True)
        study.set_user_attr("enqueued", len(opts.enqueue))
    remaining = setup.n_trials - study_lib.counted(study)
    workers = opts.workers
    if progress:
        progress.write(f"study {setup.study_name}: {setup.n_trials - remaining} of {setup.n_trials} trials done; "
                       f"running {max(remaining, 0)} on {workers} worker(s)\n")
        progress.flush()
    t0 = time.perf_counter()
    died = ""
    # Keras seeds its initializers from Python's global random, which any other thread of this process (a Dask
    # client, a notebook's) may draw from meanwhile: trials run here only when this thread is alone.
    alone = threading.active_count() == 1
    if remaining > 0 and workers <= 1 and alone and study_lib.pin_threads():
        study_lib.optimize(setup)
    elif remaining > 0:  # workers, or one pinned worker when this process is not alone or not pinned
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = [pool.submit(study_lib.worker, setup) for _ in range(min(workers, remaining))]
            for future in concurrent.futures.as_completed(futures):
                try:
                    future.result()
                except BrokenProcessPool:  # killed (OOM, kill -9): the study stays usable
                    died = ("a worker process died; its trial is marked failed once its heartbeat is stale "
                            f"({setup.grace_period}s) and does not count: run the command again to finish the budget")
    study = study_lib.open_study(setup, create=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)
    result = write_results(setup, study, out, opts.retrain_seeds)
    if died:
        result.notes.append(died)
    if progress:
        counts = result.trials["state"].value_counts().to_dict() if not result.trials.empty else {}
        progress.write(f"study {setup.study_name}: {counts} in {time.perf_counter() - t0:.1f}s; "
                       f"best {result.objective} {format_values(result.best_values)}\n")
        progress.flush()
    return result


def tune(
    config: RunConfig,
    arch: str,
    *,
    regime: str = JOINT,
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
        The study's :class:`~mtl_bench.tune.results.TuneResult`.

    Raises:
        UserInputError: For an invalid name or value, before any trial runs.
    """
    opts = _options(options)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    arch, regime = arm(arch, regime)
    _check(config, regime, opts)
    study_name = opts.study_name or f"{config.suite}-{arch}-{regime}-{opts.objective}"
    out = Path(out) if out else Path(runs_root) / f"tune-{_safe(study_name)}"
    setup = _setup(config, arch, regime, opts, storage=opts.storage or f"sqlite:///{(out / 'study.db').resolve()}",
                   study_name=study_name)
    objective = setup.objective
    with _removed_on_error(out):
        study_lib.open_study(setup, create=True)  # storage, pruner and signature checks before any trial
    if OBJECTIVES[objective].needs_reference:
        if reference is None:
            single = tune(config, SINGLE_ARM, out=out / SINGLE_ARCH, progress=progress,
                          **{**options, "objective": "mean_auc", "storage": setup.storage,
                             "study_name": f"{study_name}.{SINGLE_ARCH}"})
            reference = best_single_scores(single)
        setup = dataclasses.replace(setup, reference=dict(reference))
    return _run_study(setup, out, opts, progress)


def tune_arms(
    config: RunConfig,
    arms: Sequence[str],
    *,
    regime: str = JOINT,
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

    Returns:
        Each arm's study and, with ``retrain``, its re-trained run directory.

    Raises:
        UserInputError: For an invalid name or value, before any trial runs.
    """
    opts = _options(options)
    if not arms or len(set(arms)) != len(arms):
        raise UserInputError(f"--arms must name each arm once. Received: {list(arms)}")
    resolved = {a: arm(a, regime) for a in arms}
    _check(config, regime, opts)
    base = opts.study_name or f"{config.suite}-{regime}-{opts.objective}"
    out = Path(out) if out else Path(runs_root) / f"tune-{_safe(base)}"
    storage = opts.storage or f"sqlite:///{(out / 'study.db').resolve()}"
    for arch, arm_regime in resolved.values():  # every arm's names and values, before any file is written
        _setup(config, arch, arm_regime, opts, storage=storage, study_name=f"{base}.{arch}")
    ordered = sorted(arms, key=lambda a: resolved[a][0] != SINGLE_ARCH)
    studies: dict[str, TuneResult] = {}
    reference = None
    created = not out.exists()
    for name in ordered:
        arch = resolved[name][0]
        try:
            result = tune(config, arch, regime=regime, out=out / _safe(name), progress=progress, reference=reference,
                          **{**options, "storage": storage, "study_name": f"{base}.{arch}"})
        except UserInputError:
            if created and not studies and not any(p.is_file() for p in out.rglob("*")):
                shutil.rmtree(out, ignore_errors=True)
            raise
        if arch == SINGLE_ARCH and OBJECTIVES[opts.objective].needs_reference:
            reference = best_single_scores(result)
        studies[name] = result
    single = next((r for n, r in studies.items() if resolved[n][0] == SINGLE_ARCH), None)
    if single is not None and single.config_path is not None:
        for result in studies.values():
            if result is not single and result.config_path is not None:
                with_single_baseline(result.config_path, single.config_path)
    run_dirs: dict[str, Path] = {}
    if retrain:
        for name, result in studies.items():
            if result.config_path is None:
                continue
            target = out / "runs" / _safe(name)
            if (target / "manifest.json").is_file() and io.read_json(target / "manifest.json")["status"] != "running":
                run_dirs[name] = target  # re-trained before (a resumed tune)
                continue
            if target.exists() and any(target.iterdir()):
                run_dirs[name] = grid.resume(target, progress=progress)
            else:
                run_dirs[name] = grid.run(RunConfig.from_toml(result.config_path), out=target, progress=progress)
    io.write_json(out / "arms.json", {
        "arms": list(arms), "regime": regime, "objective": opts.objective, "trials": opts.n_trials,
        "studies": {a: r.study_name for a, r in studies.items()}, "storage": storage,
        "best": {a: {"values": r.best_values, "params": r.best_params} for a, r in studies.items()},
        "run_dirs": {a: str(p) for a, p in run_dirs.items()},
    })
    return ArmsResult(studies, run_dirs)
