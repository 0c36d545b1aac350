"""``mtl-bench bench``: the engine's training throughput against plain ``keras.Model.fit``.

Both contenders train the identical architecture (same seed, same initial
weights), on the same synthetic data, batch size and validation split, in one
process. Each is warmed up for one epoch (tracing), then timed over several
epochs; repeats alternate between contenders and the median is reported.

The probe's cost is measured the same way: the engine with the conflict probe
at the default cadence against the engine without it, and one probe event
against one training step.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from mtl_bench.engine import data as data_lib
from mtl_bench.config import RunConfig
from mtl_bench.models import ARCHITECTURES
from mtl_bench.measures.probe import ConflictProbe, Lookahead
from mtl_bench.spec import SuiteData
from mtl_bench.tasks import SUITES
from mtl_bench.engine.training import Trainer

LEARNING_RATE = 1e-3
LOOKAHEAD_STEPS = 10  # the --lookahead-steps the bench times


def _model(data: SuiteData, arch: str) -> keras.Model:
    keras.utils.set_random_seed(0)
    return ARCHITECTURES[arch](features=data.features, tasks=data.tasks)


def engine_contender(data: SuiteData, arch: str, batch_size: int) -> Callable[[int], None]:
    """A function training the engine's joint regime for ``epochs`` epochs."""
    trainer = Trainer(_model(data, arch), data.tasks, learning_rate=LEARNING_RATE)

    def train(epochs: int) -> None:
        trainer.fit(data.train, data.validation, epochs=epochs, batch_size=batch_size, seed=0, patience=0)

    return train


def keras_fit_contender(data: SuiteData, arch: str, batch_size: int) -> Callable[[int], None]:
    """The same model trained by ``model.compile`` + ``model.fit`` with the tasks' losses and weights."""
    model = _model(data, arch)
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss={t.name: t.loss_fn() for t in data.tasks},
        loss_weights={t.name: t.weight for t in data.tasks},
    )
    labels = lambda split: {t.name: split.labels[t.name].reshape(-1, 1) for t in data.tasks}  # noqa: E731
    x, y = data.train.features, labels(data.train)
    validation = (data.validation.features, labels(data.validation))

    def train(epochs: int) -> None:
        model.fit(x, y, batch_size=batch_size, epochs=epochs, validation_data=validation, shuffle=True, verbose=0)

    return train


def probed_contender(
    data: SuiteData, arch: str, batch_size: int, every: int, lookahead_steps: int = 0
) -> Callable[[int], None]:
    """The engine's joint regime with the conflict probe attached at cadence ``every``
    (and, with ``lookahead_steps``, its k-step damage lookahead, as the joint regime runs it)."""
    model = _model(data, arch)
    trainer = Trainer(model, data.tasks, learning_rate=LEARNING_RATE)
    batch = data.validation.take(slice(0, batch_size))
    names = [t.name for t in data.tasks]
    features, labels = data_lib.resident(data.train, names)

    def train(epochs: int) -> None:
        lookahead = (Lookahead(features, labels, trainer.optimizer, dict(zip(names, trainer.loss_weights)),
                               steps=lookahead_steps, batch_size=batch_size) if lookahead_steps else None)
        probe = ConflictProbe(batch.features, batch.labels, data.tasks, every=every, learning_rate=LEARNING_RATE,
                              lookahead=lookahead)
        trainer.fit(data.train, data.validation, epochs=epochs, batch_size=batch_size, seed=0, patience=0,
                    callbacks=[probe], steps_per_call=every)

    return train


def probe_event_cost(data: SuiteData, arch: str, batch_size: int, events: int = 30) -> float:
    """Wall time of one probe event in units of one training step (same model, same batch size)."""
    model = _model(data, arch)
    trainer = Trainer(model, data.tasks, learning_rate=LEARNING_RATE)
    trainer.fit(data.train, data.validation, epochs=1, batch_size=batch_size, seed=0, patience=0)  # trace
    features, labels = data_lib.resident(data.train, [t.name for t in data.tasks])
    batches = tf.constant(data_lib.epoch_batches(len(data.train), batch_size, np.random.default_rng(0)))
    # Same positional signature as ``Trainer.fit``'s call: no forgetting aid here, so ``rows`` is empty.
    args = (features, labels, {}, batches, tf.constant(0), tf.constant(len(batches)), tf.constant(0, tf.int64))
    trainer._run_steps(*args)
    start = time.perf_counter()
    for _ in range(3):
        trainer._run_steps(*args).numpy()
    step_seconds = (time.perf_counter() - start) / (3 * len(batches))
    batch = data.validation.take(slice(0, batch_size))
    probe = ConflictProbe(batch.features, batch.labels, data.tasks, every=1, learning_rate=LEARNING_RATE)
    probe.set_model(model)
    probe.probe(0)  # trace
    start = time.perf_counter()
    for step in range(1, events + 1):
        probe.probe(step)
    return (time.perf_counter() - start) / events / step_seconds


def throughput(contenders: dict[str, Callable[[int], None]], rows: int, epochs: int, repeats: int) -> dict[str, float]:
    """Median examples/s of each contender over alternating timed repeats (after a one-epoch warm-up)."""
    for train in contenders.values():
        train(1)
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, train in contenders.items():
            start = time.perf_counter()
            train(epochs)
            samples[name].append(rows * epochs / (time.perf_counter() - start))
    return {name: statistics.median(v) for name, v in samples.items()}


def main(*, arch: str = "mmoe", rows: int = 20000, batch_size: int = 256, epochs: int = 10, repeats: int = 3) -> dict[str, float]:
    """Runs the benchmark, prints a table and returns the measured figures."""
    from mtl_bench.errors import UserInputError

    if arch not in ARCHITECTURES or arch == "single_task":
        raise UserInputError(f"unknown architecture {arch!r}; valid: {sorted(set(ARCHITECTURES) - {'single_task'})}")
    for name, value in (("rows", rows), ("batch-size", batch_size), ("epochs", epochs), ("repeats", repeats)):
        if value < 1:
            raise UserInputError(f"--{name} must be >= 1. Received: {value}")
    data = SUITES["synthetic"](seed=0, train_rows=rows)
    results = throughput(
        {
            "mtl-bench engine": engine_contender(data, arch, batch_size),
            "keras.Model.fit": keras_fit_contender(data, arch, batch_size),
        },
        rows,
        epochs,
        repeats,
    )
    ratio = results["mtl-bench engine"] / results["keras.Model.fit"]
    print(f"joint training throughput, arch={arch}, {rows} rows, batch {batch_size}, {epochs} epochs × {repeats} repeats")
    for name, value in results.items():
        print(f"  {name:<18} {value:>12,.0f} examples/s")
    print(f"  ratio engine / fit  {ratio:>10.3f}   (target >= 1.0)")

    every = RunConfig().probe_every
    probed = throughput(
        {"no probe": engine_contender(data, arch, batch_size), "probe": probed_contender(data, arch, batch_size, every)},
        rows,
        epochs,
        repeats,
    )
    overhead = probed["no probe"] / probed["probe"]
    cost = probe_event_cost(data, arch, batch_size)
    tasks = len(data.tasks)
    print(f"conflict probe at the default cadence (every {every} steps), same model and data")
    print(f"  wall time with probe / without  {overhead:>8.3f}   (target <= 1.10)")
    print(f"  one probe event = {cost:.2f} training steps   (target <= T + 1 = {tasks + 1})")
    # The optional lookahead (--lookahead-steps) replays k real steps per task at every event: T·k/every more steps.
    k = LOOKAHEAD_STEPS
    looked = throughput(
        {"no probe": engine_contender(data, arch, batch_size),
         "probe + lookahead": probed_contender(data, arch, batch_size, every, lookahead_steps=k)},
        rows,
        epochs,
        repeats,
    )
    lookahead_overhead = looked["no probe"] / looked["probe + lookahead"]
    bound = 1 + tasks * k / every + 0.10
    print(f"  with a {k}-step damage lookahead (--lookahead-steps {k}): {lookahead_overhead:.3f}   "
          f"(target <= 1 + T·k/every + 0.10 = {bound:.2f})")
    results.update(ratio=round(ratio, 4), probe_overhead=round(overhead, 4), probe_event_steps=round(cost, 3),
                   lookahead_overhead=round(lookahead_overhead, 4))
    return results


def executors(*, workers: int = 2, seeds: int = 4) -> dict[str, float]:
    """Times one small grid on the local pool and on a localhost Dask cluster of as many workers; prints the ratio.

    The grid: synthetic suite (5,000 training rows), MMoE and PLE, single and joint regimes, ``seeds`` seeds,
    3 epochs. Both runs write a temporary run directory; their ``summary.csv`` files are compared byte for byte.
    The cluster's time includes starting its worker processes (and their TensorFlow), as a user's first run does.
    """
    import filecmp
    import tempfile
    from pathlib import Path

    from mtl_bench.engine.cluster import DaskCluster, require
    from mtl_bench.experiments import grid

    distributed = require()
    config = RunConfig(archs=["mmoe", "ple"], regimes=["single", "joint"], seeds=seeds, epochs=3, jobs=workers,
                       suite_params={"correlation": 0.5, "train_rows": 5000, "validation_rows": 1000, "test_rows": 1000})
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        local = grid.run(config, out=Path(tmp) / "local", progress=None)
        local_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                      dashboard_address=":0") as cluster:
            with DaskCluster(cluster.scheduler_address, warnings=None) as on_cluster:
                there = grid.run(config, out=Path(tmp) / "dask", progress=None, executor=on_cluster)
        dask_seconds = time.perf_counter() - t0
        same = filecmp.cmp(local / "summary.csv", there / "summary.csv", shallow=False)
    cells = len(grid.plan(grid.resolve(config)).cells)
    ratio = local_seconds / dask_seconds
    print(f"executors: {cells} synthetic cells, {workers} local workers vs a localhost Dask cluster of {workers} workers")
    print(f"  local pool {local_seconds:>7.1f} s   dask {dask_seconds:>7.1f} s   speed-up dask / local {ratio:.3f}")
    print(f"  summary.csv byte-identical: {'yes' if same else 'NO'}")
    return {"local_seconds": round(local_seconds, 2), "dask_seconds": round(dask_seconds, 2), "speedup": round(ratio, 4),
            "identical": float(same)}
