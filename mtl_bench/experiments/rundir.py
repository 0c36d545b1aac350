"""A run directory's lifecycle, shared by every experiment: a new directory, its ``manifest.json`` and status.

The manifest records the experiment that wrote the directory (``"experiment"``), the package versions,
the seeds, when the run started and finished, its wall time, and its status: ``running``, then
``complete``, ``failed`` or ``interrupted`` (with a ``reason``). Experiments add their own keys (the
grid: notes, variant columns and per-cell status).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mtl_bench import io
from mtl_bench.engine import executor
from mtl_bench.engine.environment import versions
from mtl_bench.config import RunConfig
from mtl_bench.errors import UserInputError
from mtl_bench.experiments import CONFIG, MANIFEST, get

RUNNING, COMPLETE, FAILED, INTERRUPTED = "running", "complete", "failed", "interrupted"


def new_run_id(config: RunConfig) -> str:
    digest = hashlib.sha256(config.to_toml().encode()).hexdigest()[:6]
    return f"{config.suite}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{digest}"


def new_dir(config: RunConfig, out: str | Path | None, runs_root: str | Path) -> Path:
    """The directory a new run writes to (``out``, default ``<runs_root>/<run-id>``), created empty.

    Raises:
        UserInputError: When it is a file or a directory that is not empty.
    """
    run_dir = Path(out) if out else Path(runs_root) / new_run_id(config)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserInputError(f"--out {run_dir} is a file, not a directory")
    if run_dir.exists() and any(run_dir.iterdir()):
        raise UserInputError(f"run directory {run_dir} exists and is not empty; use --resume {run_dir} or another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def config_digest(config: RunConfig, *, legacy: bool = False) -> str:
    """The resolved configuration's hash but ``jobs`` (results do not depend on it; ``legacy``: with it, as before)."""
    import tomli_w

    settings = config.to_dict() if legacy else {k: v for k, v in config.to_dict().items() if k != "jobs"}
    return hashlib.sha256(tomli_w.dumps(settings).encode()).hexdigest()


def check_unchanged(run_dir: Path, manifest: dict[str, Any], config: RunConfig) -> None:
    """Refuses to resume a run whose ``config.toml`` was edited since it started (then records its hash).

    Raises:
        UserInputError: Its finished work was done under other settings.
    """
    recorded = manifest.get("config_sha256")
    if recorded and recorded not in (config_digest(config), config_digest(config, legacy=True)):
        raise UserInputError(
            f"{run_dir / CONFIG} changed since the run started: its finished work was done under the old settings; "
            "start a new run with --config instead of resuming")
    manifest.setdefault("config_sha256", config_digest(config))


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def start(run_dir: Path, config: RunConfig, **fields: Any) -> dict[str, Any]:
    """Writes and returns the manifest of a new run of ``config``'s experiment, status ``running``."""
    manifest = {
        "run_id": run_dir.name,
        "experiment": get(config.experiment).name,
        "status": RUNNING,
        "reason": "",
        "started": _now(),
        "versions": versions(),
        "seeds": config.seed_list,
        **fields,
    }
    io.write_json(run_dir / MANIFEST, manifest)
    return manifest


def restart(run_dir: Path, config: RunConfig, **fields: Any) -> dict[str, Any]:
    """The manifest of a resumed run, status ``running`` (a new one for a directory from before it had one).

    Not written: the resumed run writes it as it goes.
    """
    if not (run_dir / MANIFEST).is_file():
        return start(run_dir, config, **fields)
    manifest = io.read_json(run_dir / MANIFEST)
    manifest.setdefault("experiment", get(config.experiment).name)
    manifest["status"], manifest["reason"] = RUNNING, ""
    return manifest


def stop(run_dir: Path, manifest: dict[str, Any], err: BaseException) -> None:
    """Records that the run stopped on ``err``: ``interrupted`` for Ctrl-C (resume continues it), else ``failed``."""
    if isinstance(err, KeyboardInterrupt):
        manifest["status"], manifest["reason"] = INTERRUPTED, "interrupted by the user; continue with --resume"
    else:
        manifest["status"], manifest["reason"] = FAILED, f"{type(err).__name__}: {err}".splitlines()[0]
    io.write_json(run_dir / MANIFEST, manifest)


@contextlib.contextmanager
def recorded(run_dir: Path, manifest: dict[str, Any]) -> Iterator[None]:
    """Holds the run directory's lock for the block and records in the manifest how the block ends.

    ``complete`` when the block returns; ``interrupted`` on Ctrl-C or SIGTERM (which stops the block as
    Ctrl-C does); ``failed`` with the reason on an error, which is raised again.
    """
    started = time.perf_counter()
    with io.locked(run_dir), executor.stop_on_sigterm():
        try:
            yield
        except BaseException as err:
            with executor.uninterruptible():
                stop(run_dir, manifest, err)
            raise
        finish(run_dir, manifest, started)


def finish(run_dir: Path, manifest: dict[str, Any], started: float, status: str = COMPLETE, reason: str = "") -> None:
    """Records the end of a run (or of one resumption) that began at ``time.perf_counter()`` = ``started``."""
    manifest["status"], manifest["reason"] = status, reason
    manifest["finished"] = _now()
    manifest["wall_seconds"] = round(manifest.get("wall_seconds", 0.0) + time.perf_counter() - started, 3)
    io.write_json(run_dir / MANIFEST, manifest)
