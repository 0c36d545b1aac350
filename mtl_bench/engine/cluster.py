"""Runs work items on a Dask distributed cluster: ``mtl-bench run --executor dask --scheduler ADDRESS``.

The driver (the process that runs ``mtl-bench run``) submits one Dask task per item and is the only one that
writes the run directory: each item returns its results, which the driver commits as the local pool's are.

What the workers need:

* **The same versions** of Python, mtl-bench and the packages that determine the numbers
  (:func:`~mtl_bench.engine.environment.versions`): checked on every worker before anything runs, and refused
  with the first difference, since other versions would give other numbers for the same seeds.
* **The data of a suite read from files** at the same path as on the driver (census-income's and MovieLens'
  ``data_dir``, a table's TOML and CSV files: a shared file system or a copy). Synthetic, planted and recsim
  data are generated from the seed on the worker.
* **One thread each** (``dask worker --nworkers N --nthreads 1``): a worker process runs one item at a time
  whatever its threads; a worker with more threads is reported.

A Dask worker runs its items in a *cell process* of its own: a plain child process like a local pool's worker,
which pins TensorFlow to one thread (the run's ``initializer``), dies with the worker, and is renewed every
:data:`~mtl_bench.engine.executor.TASKS_PER_WORKER` items. Items and results travel pickled through the Dask
worker, which never imports TensorFlow. So a cluster gives the local pool's numbers byte for byte. A cell run in
the Dask worker process itself did not (measured: the same cell gave other losses once another cell had run
there, and not every time), most likely because the worker's own threads draw from Python's global random
numbers, which seed Keras' initializers, while a cell runs.

Faults: a worker that dies mid-item loses that item only; the scheduler runs it again on another worker, and
after more than ``distributed.scheduler.allowed-failures`` deaths (default 3) the item is reported failed with
:data:`~mtl_bench.engine.executor.WORKER_DIED` (which ``--resume`` tries again). Ctrl-C or SIGTERM cancel the queued items and raise
:class:`KeyboardInterrupt` (an item already running finishes on its worker; its result is dropped). A lost
scheduler ends the run (:class:`~mtl_bench.errors.RunStopped`); ``--resume`` continues it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import multiprocessing
import os
import pickle
import socket
import sys
import threading
import uuid
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TextIO

from mtl_bench.engine import executor
from mtl_bench.engine.environment import versions
from mtl_bench.errors import RunStopped, UserInputError

INSTALL = "pip install 'mtl-bench[dask]'"
CONNECT_SECONDS = 30.0
WORKERS_SECONDS = 60.0
CHECK_SECONDS = 300.0  # a worker's first task starts its cell process, which imports TensorFlow

_LOCK = threading.Lock()  # one item at a time per Dask worker process, whatever its threads
_CELL_PROCESS: dict[str, Any] = {"pool": None, "items": 0}  # on a Dask worker: its cell process and its item count
_INITIALIZED: set[Any] = set()  # in a cell process: the (pickled) initializers it has run, and "versions"


def require() -> Any:
    """``distributed``, or a one-line :class:`UserInputError` saying what to install."""
    try:
        import distributed
    except ImportError:
        raise UserInputError(f"the dask executor needs the dask extra on the driver and every worker: {INSTALL} "
                             "(or pip install distributed)") from None
    return distributed


class WorkerMismatch(UserInputError):
    """A Dask worker whose versions differ from the driver's (found before a run, or when it joins during one)."""


def _run_pickled(payload: bytes) -> bytes:
    """In a cell process: ``fn(item)`` of the pickled ``(fn, initializer, item, driver_versions)``, after checking
    this process's versions against the driver's and running the initializer on its first item; the result
    comes back pickled.

    The initializer travels pickled on its own and is known by those bytes: a closure unpickles as a new object
    for every item, and would otherwise run again each time.
    """
    fn, initializer, item, expected = pickle.loads(payload)
    if expected is not None and "versions" not in _INITIALIZED:
        _compare(f"{socket.gethostname()} (pid {os.getppid()})", versions(), expected)
        _INITIALIZED.add("versions")
    if initializer is not None and initializer not in _INITIALIZED:
        pickle.loads(initializer)()
        _INITIALIZED.add(initializer)
    return pickle.dumps(fn(item), protocol=pickle.HIGHEST_PROTOCOL)


def _on_worker(payload: bytes) -> bytes:
    """On a Dask worker: runs one pickled item in this worker's cell process and returns its pickled result.

    The cell process is a plain child process, as a local pool's worker is (see the module docstring for why a
    cell does not run in the worker process itself). The child is renewed every
    :data:`~mtl_bench.engine.executor.TASKS_PER_WORKER` items (memory) and dies with the worker; if it dies
    itself, the worker exits too, so that the scheduler runs the item again elsewhere.
    """
    with _LOCK:
        pool = _CELL_PROCESS["pool"]
        if pool is None or _CELL_PROCESS["items"] >= executor.TASKS_PER_WORKER:
            if pool is not None:
                pool.shutdown(wait=True)
            # A nanny's worker is a daemonic process, which multiprocessing forbids children; the child dies with
            # the worker anyway (PR_SET_PDEATHSIG), which is all a daemon's children are promised.
            multiprocessing.current_process()._config["daemon"] = False
            pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                                          initializer=executor.start_worker,
                                                          initargs=(None, os.getpid()))
            _CELL_PROCESS.update(pool=pool, items=0)
        _CELL_PROCESS["items"] += 1
        try:
            return pool.submit(_run_pickled, payload).result()
        except BrokenProcessPool:
            os._exit(1)  # a worker death to the scheduler: the item runs again on another worker


def _describe(_: Any = None) -> dict[str, Any]:
    """What the driver checks of a worker (run in its cell process): versions, host and process."""
    return {"versions": versions(), "host": socket.gethostname(), "pid": os.getpid()}


@dataclasses.dataclass
class DaskCluster:
    """An :class:`~mtl_bench.engine.executor.Executor` on a running Dask cluster.

    :meth:`prepare` (which the experiments call before they write anything) connects to the scheduler and checks
    the workers; the connection is kept for later runs until :meth:`close` (or the end of a ``with`` block).

    Args:
        scheduler: The scheduler's address (``tcp://host:8786``); None = the ``DASK_SCHEDULER_ADDRESS``
            environment variable (Dask's own setting). Ignored when ``client`` is given.
        client: An existing ``distributed.Client`` to use (its owner closes it).
        warnings: Where to report workers with more than one thread, or None.
    """

    scheduler: str | None = None
    client: Any = None
    warnings: TextIO | None = sys.stderr
    _own: Any = dataclasses.field(default=None, init=False, repr=False)  # a client this object opened
    _checked: Any = dataclasses.field(default=None, init=False, repr=False)  # the client prepare() last checked

    def __post_init__(self) -> None:
        require()  # refuse at once, before a run starts, when the extra is missing
        if self.client is None and not (self.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")):
            raise UserInputError("the dask executor needs a scheduler address: --scheduler tcp://HOST:PORT "
                                 "(or the DASK_SCHEDULER_ADDRESS environment variable)")

    def __enter__(self) -> DaskCluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection this object opened (a ``client`` given to it stays open)."""
        if self._own is not None:
            with contextlib.suppress(Exception):
                self._own.close()
            self._own = None

    def _connect(self) -> Any:
        if self.client is not None:
            return self.client
        if self._own is not None and self._own.status == "running":
            return self._own
        distributed = require()
        address = self.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
        try:
            # Checked first: a Client that fails to connect lingers and complains at exit, a minute later.
            scheme, location = distributed.comm.addressing.parse_address(address)
            distributed.comm.registry.get_backend(scheme)
            if scheme in ("tcp", "tls"):
                socket.create_connection(distributed.comm.addressing.parse_host_port(location),
                                         timeout=CONNECT_SECONDS).close()
            self._own = distributed.Client(address, timeout=CONNECT_SECONDS, set_as_default=False)
        except (OSError, TimeoutError, ValueError, TypeError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UserInputError(f"cannot reach the Dask scheduler at {address}: {reason} (an address is "
                                 "tcp://HOST:PORT)") from None
        return self._own

    def prepare(self) -> None:
        """Connects and checks every worker: refuses workers with other versions than this process, workers that
        cannot run mtl-bench, and workers inside this process; reports workers with several threads.

        Raises:
            UserInputError: One line naming the scheduler or the worker and what is wrong.
        """
        client = self._connect()
        address = client.scheduler.address
        try:
            client.wait_for_workers(1, timeout=WORKERS_SECONDS)
        except TimeoutError:
            raise UserInputError(f"no Dask worker joined the scheduler {address} within {WORKERS_SECONDS:.0f} s: "
                                 f"start workers with dask worker {address} --nthreads 1") from None
        try:
            workers = client.scheduler_info(n_workers=-1)["workers"]
        except TypeError:  # distributed before 2025: every worker, always
            workers = client.scheduler_info()["workers"]
        if os.getpid() in client.run(os.getpid).values():
            raise UserInputError("the Dask workers run inside this process (processes=False): a cell process that "
                                 "dies would take this one with it; start them as processes (LocalCluster("
                                 "processes=True), or dask worker)")
        mine = versions()
        payload = _payload((_describe, None, None, None))
        futures = {worker: client.submit(_on_worker, payload, workers=[worker], allow_other_workers=False, pure=False,
                                         key=f"mtl-bench-check-{uuid.uuid4().hex}")
                   for worker in workers}
        try:
            for worker, future in futures.items():
                try:
                    theirs = pickle.loads(future.result(timeout=CHECK_SECONDS))["versions"]
                except Exception as err:  # noqa: BLE001 - any failure here is the worker's, said in one line
                    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                    raise UserInputError(f"Dask worker {worker} cannot run mtl-bench ({type(err).__name__}: {reason}); "
                                         f"install it there: pip install 'mtl-bench[dask]'") from None
                _compare(worker, theirs, mine)
        finally:
            with contextlib.suppress(Exception):
                client.cancel(list(futures.values()), force=True)
        self._checked = client
        crowded = {a: w["nthreads"] for a, w in workers.items() if w.get("nthreads", 1) > 1}
        if crowded and self.warnings:
            self.warnings.write(f"note: Dask worker(s) {crowded} have several threads but run one cell at a time "
                                "(each runs its cells in one child process): start workers with --nthreads 1 and "
                                "--nworkers N instead\n")

    def run(
        self,
        fn: Callable[[Any], Any],
        items: Sequence[Hashable],
        on_result: Callable[[Any, Any], None],
        *,
        initializer: Callable[[], None] | None = None,
        failed: Callable[[Any, str], Any] | None = None,
    ) -> None:
        """Runs ``fn(item)`` for every item on the cluster; see :class:`~mtl_bench.engine.executor.Executor`.

        Raises:
            UserInputError: When the scheduler cannot be reached, no worker joins, or a worker's versions differ
                (also a worker that joins during the run).
            RunStopped: When the scheduler is lost or cancels the run's tasks (``--resume`` continues it).
            KeyboardInterrupt: On Ctrl-C or SIGTERM, after the queued items are cancelled.
        """
        if not items:
            return
        distributed = require()
        if self._checked is not self._connect():  # workers that join later are checked at their first item
            self.prepare()
        client = self._connect()
        mine = versions()
        futures: dict[Any, Any] = {}
        try:
            with executor.stop_on_sigterm():
                run_id = uuid.uuid4().hex[:8]
                start = None if initializer is None else _payload(initializer)
                for i, item in enumerate(items):
                    payload = _payload((fn, start, item, mine))
                    futures[client.submit(_on_worker, payload, pure=False, key=f"mtl-bench-{run_id}-{i}")] = item
                for future in distributed.as_completed(list(futures), loop=client.loop):
                    item = futures.pop(future)
                    result = _result(distributed, future, item, failed)
                    future.release()  # the worker may forget the result now: the driver holds it
                    on_result(item, result)
        except BaseException:
            if futures:
                with contextlib.suppress(Exception):  # the scheduler may be gone
                    client.cancel(list(futures), force=True)
            raise


def _payload(parts: tuple[Any, ...]) -> bytes:
    import cloudpickle  # distributed's own dependency: functions of a script or a notebook travel by value

    return cloudpickle.dumps(parts, protocol=pickle.HIGHEST_PROTOCOL)


def _compare(worker: str, theirs: dict[str, str], mine: dict[str, str]) -> None:
    differ = [f"{name} {theirs.get(name)} (driver {mine[name]})" for name in mine if theirs.get(name) != mine[name]]
    if differ:
        raise WorkerMismatch(f"Dask worker {worker} has other versions than this process, so the same seeds would "
                             f"give other numbers: {', '.join(differ)}")


def _result(distributed: Any, future: Any, item: Any, failed: Callable[[Any, str], Any] | None) -> Any:
    """An item's result from its finished future: ``failed(item, ...)`` when its workers kept dying."""
    if future.status == "error":
        err = future.exception()
        if isinstance(err, distributed.KilledWorker) and failed is not None:
            return failed(item, executor.WORKER_DIED)
        raise err
    try:
        return pickle.loads(future.result())
    except (distributed.client.FutureCancelledError, concurrent.futures.CancelledError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise RunStopped(f"lost the Dask scheduler or the run's tasks ({reason}); the finished work is kept: "
                         "continue with --resume") from None
