"""Optuna storages: opening one, also when several processes create it at the same instant.

Several ``tune`` processes (``--workers``, or one per machine) may open one new storage at once. SQLite
twins wait for each other (:func:`creating_alone`); on a database server, creation is retried.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy

from mtl_bench.errors import UserInputError

# A twin process creating the same storage on a database server at the same instant: Optuna creates its schema
# and version rows check-then-insert, so one of the two fails (a UNIQUE failure on the version row). A later
# attempt finds them made. (SQLite twins wait for each other instead: :func:`creating_alone`.)
_INIT_RACES = (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, optuna.exceptions.StorageInternalError)
_INIT_ATTEMPTS = 3
_CREATE_WAIT_SECONDS = 120.0  # creating a storage and a study takes about a second


@contextlib.contextmanager
def creating_alone(url: str) -> Iterator[None]:
    """Holds an ``flock`` on an SQLite storage's directory while the block creates the storage and its study
    (a no-op for other storages).

    The directory, not the database file: SQLite locks the file with POSIX locks, which a process loses on
    every file descriptor of the file when it closes any one of them.

    Raises:
        UserInputError: Another process kept the lock for :data:`_CREATE_WAIT_SECONDS` (stopped with Ctrl-Z?).
    """
    try:
        database = sqlalchemy.engine.make_url(url).database if url.startswith("sqlite") else None
    except sqlalchemy.exc.ArgumentError:
        database = None  # a malformed URL: RDBStorage reports it
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    try:
        fd = os.open(Path(database).parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield  # a missing directory: RDBStorage reports it
        return
    try:
        deadline = time.monotonic() + _CREATE_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise UserInputError(
                        f"storage {url!r}: another process has been creating a study in {Path(database).parent} "
                        f"for over {_CREATE_WAIT_SECONDS:.0f} s (stopped?); let it finish or stop it") from None
                time.sleep(0.05)
            except OSError:  # a file system without flock: twins fall back on the retries
                break
        yield
    finally:
        os.close(fd)


def open_storage(url: str, *, heartbeat_interval: int, grace_period: int) -> optuna.storages.RDBStorage:
    """The Optuna RDB storage at ``url``, its tables created when new.

    Raises:
        UserInputError: The URL is malformed, its database driver is missing or its server cannot be reached.
    """
    given = url
    kwargs: dict[str, Any] = {}
    if url.startswith("postgresql://"):
        # SQLAlchemy 2.1 defaults to psycopg 3; the package installs psycopg2-binary ([dev] / [postgresql]).
        if importlib.util.find_spec("psycopg") is None:
            url = "postgresql+psycopg2://" + url[len("postgresql://"):]
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    for attempt in range(1, _INIT_ATTEMPTS + 1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period,
                    **kwargs,
                )
        except (ImportError, ModuleNotFoundError) as err:
            raise UserInputError(f"storage {given!r} needs a database driver: {err}") from None
        except _INIT_RACES as err:
            if attempt == _INIT_ATTEMPTS:
                raise UserInputError(f"cannot open storage {given!r}: {str(err).splitlines()[0]}") from None
            time.sleep(0.2 * attempt)
        except Exception as err:  # sqlalchemy errors: bad URL, unreachable server
            raise UserInputError(f"cannot open storage {given!r}: {str(err).splitlines()[0]}") from None
    raise AssertionError("unreachable")
