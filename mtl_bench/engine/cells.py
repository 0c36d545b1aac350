"""One cell's pipeline, shared by the grid (``mtl-bench run``) and tuning: load a suite variant, check an
architecture, build a :class:`~mtl_bench.engine.regimes.Job`, train it under one regime.

A worker process keeps one suite in memory (cells come grouped by variant and seed) and runs TensorFlow on
one thread (:func:`init_worker`), so the number of workers never changes a result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mtl_bench.config import RunConfig
from mtl_bench.engine import data as data_lib
from mtl_bench.engine.regimes import REGIMES, CallbackFactory, CellResult, Job
from mtl_bench.engine.training import TrainingDiverged
from mtl_bench.errors import UserInputError
from mtl_bench.models import ARCHITECTURES
from mtl_bench.remedies import REMEDIES
from mtl_bench.schema import BASELINE, SINGLE_ARCH
from mtl_bench.spec import Split, SuiteData
from mtl_bench.tasks import SUITES

Variant = tuple[tuple[str, Any], ...]  # the suite parameters of one variant, sorted by name


class CellFailed(Exception):
    """A cell that could not finish for a reason of its own (it diverged); the reason is one line."""


def init_worker() -> None:
    """Pins TensorFlow in this process to one thread and deterministic ops.

    Two thread pools per process fight over two cores (a default run is ~25% slower), and a fixed thread
    count keeps float sums in one order, so the number of workers never changes a result.
    """
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.experimental.enable_op_determinism()


def suite_loader(config: RunConfig) -> Callable[..., SuiteData]:
    """The ``load`` function of the configured suite."""
    if config.suite not in SUITES:
        raise UserInputError(f"unknown suite {config.suite!r}; valid suites: {sorted(SUITES)}")
    return SUITES[config.suite]


def load_suite(config: RunConfig, variant: Variant, seed: int) -> SuiteData:
    """Loads one suite variant for one seed, cut to the configured row limits."""
    loader = suite_loader(config)
    try:
        data = loader(seed=seed, **dict(variant))
    except TypeError as err:
        raise UserInputError(f"suite {config.suite!r}: {err}") from None
    if config.task_weights:
        data = data.with_tasks(
            tuple(dataclasses.replace(t, weight=float(config.task_weights.get(t.name, t.weight))) for t in data.tasks)
        )
    if config.max_train_rows or config.max_eval_rows:
        cut = lambda split, n: split.take(slice(0, n)) if n else split  # noqa: E731
        data = dataclasses.replace(
            data,
            train=_cut_stream(data.train, config.max_train_rows),
            validation=cut(data.validation, config.max_eval_rows),
            test=cut(data.test, config.max_eval_rows),
        )
    return data


def _cut_stream(split: Split, n: int) -> Split:
    """The first ``n`` training rows; for a log read in time blocks, the first rows of every block in proportion,
    so that a small slice keeps every period (and the missing labels of the latest ones)."""
    if not n or n >= len(split):
        return split
    blocks = split.meta.get(data_lib.STREAM_BLOCK)
    if blocks is None:
        return split.take(slice(0, n))
    keep = [np.flatnonzero(blocks == b)[: int(round(n * np.mean(blocks == b)))] for b in np.unique(blocks)]
    return split.take(np.sort(np.concatenate(keep)))


_SUITE_CACHE: dict[Any, SuiteData] = {}


def cached_suite(
    config: RunConfig, variant: Variant, seed: int, transform: Callable[[SuiteData], SuiteData] | None = None
) -> SuiteData:
    """:func:`load_suite`, keeping the last suite of this process in memory (then ``transform``-ed once)."""
    key = (config.suite, variant, seed, config.max_train_rows, config.max_eval_rows, repr(config.task_weights),
           transform)
    if key not in _SUITE_CACHE:
        _SUITE_CACHE.clear()
        data = load_suite(config, variant, seed)
        _SUITE_CACHE[key] = transform(data) if transform else data
    return _SUITE_CACHE[key]


def check_arch(arch: str, data: SuiteData, params: dict[str, Any]) -> None:
    """Builds the architecture once, so a bad constructor argument fails before any training.

    Raises:
        ValueError: One line naming the argument, from the layer's own check (``TypeError`` becomes one too).
    """
    tasks = data.tasks[:1] if arch == SINGLE_ARCH else data.tasks
    try:
        ARCHITECTURES[arch](features=data.features, tasks=tasks, **params)
    except (TypeError, ValueError) as err:
        raise ValueError(str(err).splitlines()[0] if str(err) else type(err).__name__) from None


def job(
    config: RunConfig,
    data: SuiteData,
    arch: str,
    *,
    seed: int,
    order: tuple[str, ...] = (),
    name: str = "cell",
    remedy: str = BASELINE,
    arch_params: dict[str, Any] | None = None,
    callbacks: CallbackFactory | None = None,
) -> Job:
    """A regime's inputs for one cell; constructor arguments default to ``config.arch_params[arch]``."""
    return Job(
        data=data,
        arch=arch,
        model_factory=ARCHITECTURES[arch],
        arch_params=dict(config.arch_params.get(arch, {}) if arch_params is None else arch_params),
        order=order,
        seed=seed,
        config=config,
        name=name,
        callbacks=callbacks,
        remedy=REMEDIES[remedy],
        remedy_params=dict(config.remedy_params.get(remedy, {})),
    )


def train(regime: str, the_job: Job) -> CellResult:
    """Runs one regime on one job and frees the Keras session.

    Raises:
        CellFailed: The training diverged (non-finite loss or an invalid tensor), with a one-line reason.
    """
    try:
        return REGIMES[regime].run(the_job)
    except (TrainingDiverged, tf.errors.InvalidArgumentError) as err:
        raise CellFailed(str(err).splitlines()[0]) from None
    finally:
        keras.backend.clear_session(free_memory=True)
