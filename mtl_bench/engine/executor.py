"""Where an experiment's independent work items run: :class:`LocalPool` (the default), :class:`InProcess`,
or a Dask cluster (:class:`mtl_bench.engine.cluster.DaskCluster`), all behind one :class:`Executor` interface.

An item is a pure function of its arguments and returns its results to the driver (this process), which alone
writes the run directory; so results do not depend on where, in how many processes, or after how many restarts
items ran.

The local pool (:func:`run`):

* **Ctrl-C and SIGTERM** (what ``kill``, ``timeout`` and job schedulers send) stop the run within
  seconds: queued items are cancelled, running workers are terminated (their item's files are never
  half-committed: every file is written atomically and the item's last file marks it done), and
  :class:`KeyboardInterrupt` reaches the caller, which records what finished.
* **Workers die with their parent**, even when the parent is killed with ``kill -9``: each worker
  asks Linux to send it SIGKILL when its parent dies (``PR_SET_PDEATHSIG``), and ignores SIGINT
  (a Ctrl-C reaches the whole process group; the parent alone decides what stops).
* **A killed worker** (out of memory, ``kill``) breaks a ``ProcessPoolExecutor``; the unfinished
  items are then run again in a fresh pool, and after :data:`MAX_POOL_BREAKS` broken pools the
  remaining items are reported failed with the reason instead of ending the run with a traceback.
* **Memory**: workers are replaced after :data:`TASKS_PER_WORKER` items each (the pool is renewed
  between waves of items), so whatever TensorFlow keeps from one item to the next (about 6 MiB a
  cell) cannot grow without bound. Python 3.11's own ``max_tasks_per_child`` deadlocks when a worker
  exits (CPython gh-115634), hence the waves.

"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import dataclasses
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol, TextIO

MAX_POOL_BREAKS = 3
TASKS_PER_WORKER = 25
TERMINATE_GRACE_SECONDS = 5.0
_PR_SET_PDEATHSIG = 1

WORKER_DIED = "the worker process running it died (killed, or out of memory)"


class Executor(Protocol):
    """Runs ``fn(item)`` for every item and passes each result, in this process, to ``on_result``.

    ``initializer`` runs once in each process before its first item (every executor that runs items in other
    processes pins TensorFlow there with it); ``failed(item, reason)`` gives the result of an item whose worker
    kept dying (None: raise). Ctrl-C and SIGTERM raise :class:`KeyboardInterrupt` after the executor has stopped
    its items. An exception ``fn`` raises ends the run: ``fn`` should return its failures as results.
    ``prepare`` checks that the executor can run anything at all; an experiment calls it before it writes.
    """

    def prepare(self) -> None: ...

    def run(
        self,
        fn: Callable[[Any], Any],
        items: Sequence[Hashable],
        on_result: Callable[[Any, Any], None],
        *,
        initializer: Callable[[], None] | None = None,
        failed: Callable[[Any, str], Any] | None = None,
    ) -> None: ...


@dataclasses.dataclass(frozen=True)
class LocalPool:
    """Worker processes on this machine (:func:`run`); ``jobs`` 0 = :func:`default_jobs`."""

    jobs: int = 0

    def prepare(self) -> None:
        """Nothing to check: this machine runs the items."""

    def run(
        self,
        fn: Callable[[Any], Any],
        items: Sequence[Hashable],
        on_result: Callable[[Any, Any], None],
        *,
        initializer: Callable[[], None] | None = None,
        failed: Callable[[Any, str], Any] | None = None,
    ) -> None:
        run(fn, items, on_result, jobs=self.jobs or default_jobs(), initializer=initializer, failed=failed)


@dataclasses.dataclass(frozen=True)
class InProcess:
    """This process, one item after another, with its own TensorFlow threads (for debugging; ``initializer`` is
    not run, so numbers may differ from a pool's in the last digits)."""

    def prepare(self) -> None:
        """Nothing to check: this process runs the items."""

    def run(
        self,
        fn: Callable[[Any], Any],
        items: Sequence[Hashable],
        on_result: Callable[[Any, Any], None],
        *,
        initializer: Callable[[], None] | None = None,
        failed: Callable[[Any, str], Any] | None = None,
    ) -> None:
        run_in_process(fn, items, on_result)


def ready(given: Executor | None, *, jobs: int, in_process: bool = False) -> Executor:
    """The executor of a run, prepared: ``given``, else :class:`InProcess` when ``in_process``, else a
    :class:`LocalPool`. An experiment calls it before it writes, so an unusable cluster leaves nothing behind.

    Raises:
        UserInputError: The executor cannot run the items (see :meth:`Executor.prepare`).
    """
    where = given if given is not None else InProcess() if in_process else LocalPool(jobs)
    where.prepare()
    return where


def default_jobs() -> int:
    """Worker processes when the user sets none: one per core not busy with other processes, at least one.

    The cores this process may use minus the 1-minute load average (rounded): on a machine other
    processes keep busy, one worker per core competes with them and with itself (measured on a
    2-core machine at load 7: ``--jobs 2`` took longer than ``--jobs 1``, see the README's
    "Parallel cells"); on an idle one every core gets a worker.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        busy = round(os.getloadavg()[0])
    except (OSError, AttributeError):  # no load average (Windows): every core
        busy = 0
    return max(1, min(cores, cores - busy))


class Progress:
    """A progress bar over work items: redrawn in place on a terminal, one line per cell otherwise."""

    def __init__(self, total: int, stream: TextIO | None) -> None:
        self.total, self.stream, self.done = total, stream, 0
        self.tty = bool(stream and stream.isatty())

    def update(self, text: str) -> None:
        if not self.stream:
            return
        self.done += 1
        width = 24
        filled = width * self.done // max(self.total, 1)
        line = f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {text}"
        self.stream.write(("\r\033[K" + line) if self.tty else line + "\n")
        if self.tty and self.done == self.total:
            self.stream.write("\n")
        self.stream.flush()


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        # The parent died before the request took effect: the orphan now belongs to init or to a subreaper.
        if os.getppid() != parent:
            os._exit(1)


def start_worker(initializer: Callable[[], None] | None, parent: int) -> None:
    """What a worker process does first: die with its parent (the process ``parent``, which started it), leave
    Ctrl-C to it, then run ``initializer``."""
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if initializer is not None:
        initializer()


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`KeyboardInterrupt` in the main thread, as Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def uninterruptible() -> Iterator[None]:
    """Defers Ctrl-C and SIGTERM for a short block that must finish (recording what is done)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if received:
            raise KeyboardInterrupt(f"signal {signal.Signals(received[0]).name}")


def _terminate(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """Cancels queued items and stops running workers now (SIGTERM, then SIGKILL after a grace period)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    # Workers first: shutdown() takes the pool's lock, which a wedged pool may hold; a stopped worker frees it.
    for p in processes:
        with contextlib.suppress(Exception):
            p.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        with contextlib.suppress(Exception):
            p.join(TERMINATE_GRACE_SECONDS)
            if p.is_alive():
                p.kill()
                p.join(1.0)


def run(
    fn: Callable[[Any], Any],
    items: Sequence[Hashable],
    on_result: Callable[[Any, Any], None],
    *,
    jobs: int,
    initializer: Callable[[], None] | None = None,
    failed: Callable[[Any, str], Any] | None = None,
) -> None:
    """Runs ``fn(item)`` for every item in ``jobs`` worker processes and passes each result to ``on_result``.

    Args:
        fn: A picklable function (module level, or a ``functools.partial`` of one).
        items: The work; each item is picklable and hashable.
        on_result: Called in this process, in completion order, with ``(item, fn(item))``.
        jobs: Worker processes (at most one per item).
        initializer: Run once in each worker before its first item.
        failed: ``(item, reason) -> result`` for items whose workers kept dying; default: re-raise.

    Raises:
        KeyboardInterrupt: On Ctrl-C or SIGTERM, after the workers are stopped.
        Exception: An exception ``fn`` raised (it ends the run: ``fn`` should return failures as results).
    """
    pending = list(items)
    breaks = 0
    context = multiprocessing.get_context("spawn")
    with stop_on_sigterm():
        while pending:
            workers = max(1, min(jobs, len(pending)))
            pool = concurrent.futures.ProcessPoolExecutor(
                workers, mp_context=context, initializer=start_worker, initargs=(initializer, os.getpid())
            )
            broken: BrokenProcessPool | None = None
            try:
                wave = pending[: workers * TASKS_PER_WORKER]
                futures = {pool.submit(fn, item): item for item in wave}
                for future in concurrent.futures.as_completed(futures):
                    item = futures[future]
                    try:
                        result = future.result()
                    except BrokenProcessPool as err:
                        broken = err
                        break
                    pending.remove(item)
                    on_result(item, result)
            except BaseException:
                _terminate(pool)
                raise
            if broken is None:
                pool.shutdown(wait=True)
                continue
            _terminate(pool)
            breaks += 1
            if breaks >= MAX_POOL_BREAKS:
                if failed is None:
                    raise broken
                for item in list(pending):
                    pending.remove(item)
                    on_result(item, failed(item, WORKER_DIED))


def run_in_process(fn: Callable[[Any], Any], items: Sequence[Hashable], on_result: Callable[[Any, Any], None]) -> None:
    """:func:`run` in this process, one item after another (for debugging); SIGTERM stops it as Ctrl-C does."""
    with stop_on_sigterm():
        for item in items:
            on_result(item, fn(item))
