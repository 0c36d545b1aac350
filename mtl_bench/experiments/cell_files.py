"""A grid cell: its work, which runs anywhere (a local worker, a Dask worker), and its files, which only the
driver writes.

:func:`compute` trains one cell and returns an :class:`Outcome` (its manifest entry and its result frames)
without touching the file system, so workers never need the run directory. :func:`commit`, in the driver,
writes ``cells/<key>.<stem>.csv`` atomically, the metrics file last (its presence marks the cell as
committed), or ``cells/<key>.failed.json`` for a cell that failed.
"""

from __future__ import annotations

import dataclasses
import re
import time
import traceback
from pathlib import Path
from typing import Any

import pandas as pd

from mtl_bench import io
from mtl_bench.config import RunConfig
from mtl_bench.engine import cells as cell_lib
from mtl_bench.engine import executor
from mtl_bench.engine.regimes import order_label
from mtl_bench.experiments import rundir
from mtl_bench.schema import BASELINE
from mtl_bench.spec import SuiteData

CELLS_DIR = "cells"


@dataclasses.dataclass(frozen=True)
class Cell:
    """One unit of work, committed to disk as a whole."""

    variant: tuple[tuple[str, Any], ...]  # the suite parameters of this variant, sorted
    arch: str
    regime: str
    order: tuple[str, ...]
    seed: int
    remedy: str = BASELINE

    @property
    def key(self) -> str:
        # The baseline adds nothing to the key, so runs from before remedies existed still resume.
        remedy = [] if self.remedy == BASELINE else [self.remedy]
        parts = [f"{k}={v}" for k, v in self.variant] + [self.arch, self.regime, *remedy, order_label(self.order), f"s{self.seed}"]
        return re.sub(r"[^A-Za-z0-9_.=+-]", "_", "__".join(parts).replace(">", "+"))

    def describe(self) -> str:
        variant = " ".join(f"{k}={v}" for k, v in self.variant)
        remedy = "" if self.remedy == BASELINE else f" {self.remedy}"
        return f"{variant} {self.arch} {self.regime}{remedy} {order_label(self.order)} seed={self.seed}".strip()


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a cell returns to the driver.

    Attributes:
        status: Its manifest entry: ``status`` (complete or failed), ``reason``, ``wall_seconds``.
        frames: Its result tables by file stem (``metrics``, ``probe``, ``retention``, ``daily``), with the
            cell's columns in front; empty for a failed cell.
        traceback: For a cell that raised, the traceback its ``.failed.json`` keeps.
    """

    status: dict[str, Any]
    frames: dict[str, pd.DataFrame] = dataclasses.field(default_factory=dict)
    traceback: str = ""


def died(cell: Cell, reason: str) -> Outcome:
    """The outcome of a cell whose worker kept dying."""
    return Outcome({"status": rundir.FAILED, "reason": reason, "wall_seconds": None})


def compute(config: RunConfig, swept: tuple[str, ...], cell: Cell) -> Outcome:
    """Runs one cell; ``swept`` names the suite parameters given several values (columns of every row).

    A cell that raises is a failed outcome with its reason and traceback, and the grid goes on: one bad cell
    does not cost the others.
    """
    t0 = time.perf_counter()
    tb = ""
    try:
        data = cell_lib.cached_suite(config, cell.variant, cell.seed)
        status, frames = _run(config, swept, cell, data)
    except Exception as err:  # noqa: BLE001 - isolation is the point; the reason and traceback are recorded
        first = str(err).splitlines()[0] if str(err) else ""
        status, frames = {"status": rundir.FAILED, "reason": f"{type(err).__name__}: {first}".rstrip(": ")}, {}
        tb = traceback.format_exc()
    status["wall_seconds"] = round(time.perf_counter() - t0, 3)
    return Outcome(status, frames, tb)


def _run(config: RunConfig, swept: tuple[str, ...], cell: Cell,
         data: SuiteData) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    job = cell_lib.job(config, data, cell.arch, seed=cell.seed, order=cell.order, name=cell.key, remedy=cell.remedy)
    try:
        result = cell_lib.train(cell.regime, job)
    except cell_lib.CellFailed as err:
        return {"status": rundir.FAILED, "reason": str(err)}, {}
    variant = {**{k: v for k, v in cell.variant if k in swept}, **data.variant}
    head = {"suite": data.name, **variant, "arch": cell.arch, "regime": cell.regime,
            "remedy": cell.remedy, "order": order_label(cell.order), "seed": cell.seed}
    frames = {}
    for stem, rows in result.frames().items():
        if not rows and stem != "metrics":
            continue
        frame = pd.DataFrame(rows)
        for i, (column, value) in enumerate(head.items()):
            frame.insert(i, column, value)
        frames[stem] = frame
    return {"status": rundir.COMPLETE, "reason": ""}, frames


def commit(cells_dir: Path, cell: Cell, outcome: Outcome) -> dict[str, Any]:
    """Writes a cell's files (the metrics file last) or its failure record; returns its manifest entry."""
    if outcome.status["status"] == rundir.FAILED:
        record = {**outcome.status, **({"traceback": outcome.traceback} if outcome.traceback else {})}
        io.write_json(cells_dir / f"{cell.key}.failed.json", record)
        return outcome.status
    for stem, frame in sorted(outcome.frames.items(), key=lambda kv: kv[0] == "metrics"):
        io.write_csv(cells_dir / f"{cell.key}.{stem}.csv", frame)
    (cells_dir / f"{cell.key}.failed.json").unlink(missing_ok=True)  # a retried cell whose workers had died
    return outcome.status


def committed(cells_dir: Path, cell: Cell) -> bool:
    """A cell is done when its metrics file (written last) or its failure record exists, unless the failure was
    its workers' (they died: out of memory, a lost machine), which a resumed run tries again."""
    if (cells_dir / f"{cell.key}.metrics.csv").is_file():
        return True
    failed = cells_dir / f"{cell.key}.failed.json"
    return failed.is_file() and io.read_json(failed).get("reason") != executor.WORKER_DIED


def committed_status(cells_dir: Path, cell: Cell) -> dict[str, Any]:
    """The manifest entry of a committed cell (an interrupted driver may have committed it without recording it)."""
    failed = cells_dir / f"{cell.key}.failed.json"
    if not failed.is_file():
        return {"status": rundir.COMPLETE, "reason": "", "wall_seconds": None}
    return {k: v for k, v in io.read_json(failed).items() if k != "traceback"}


def read(run_dir: str | Path, stem: str = "metrics") -> pd.DataFrame:
    """One result table (``metrics``, ``probe``, ``retention`` or ``daily``) of all committed cells, by cell key."""
    files = sorted((Path(run_dir) / CELLS_DIR).glob(f"*.{stem}.csv"))
    if not files:
        return pd.DataFrame()
    return pd.concat([pd.read_csv(f, keep_default_na=False, na_values=[""]) for f in files], ignore_index=True)
