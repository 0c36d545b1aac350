"""``mtl-bench calibrate``: does the verdict recover mechanisms planted on purpose?

Runs the ``planted`` suite (:mod:`mtl_bench.tasks.planted`) at every mechanism
with its own model, single-task and joint, over ``draws`` independent draws
(draw ``d`` uses seeds ``1000 + d·seeds ..``: no data draw is shared between
draws or between mechanisms, nor with the development seeds 0-5 on which the
verdict's thresholds were set), reports each draw like any run, and compares
each verdict with the truth:

=============  =================  =============
mechanism      negative transfer  explanation
=============  =================  =============
identical      no                 neither
none           no                 neither
delayed        no                 neither
conflict       yes                conflict
forgetting     yes                forgetting
both           yes                both
=============  =================  =============

Writes ``calibration.csv`` (``draw, mechanism, expected_negative_transfer,
expected_explanation, negative_transfer, explanation, hit``) and
``calibration.md`` (the confusion matrix planted × verdict and the hit rate)
into ``out``; each draw is an ordinary run directory under ``out/draw<d>``
that ``mtl-bench report`` reads, and an interrupted calibration resumes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import pandas as pd

from mtl_bench import io
from mtl_bench.config import RunConfig
from mtl_bench.errors import UserInputError
from mtl_bench.schema import JOINT, SINGLE
from mtl_bench.tasks import planted

if TYPE_CHECKING:
    from mtl_bench.engine.executor import Executor
from mtl_bench.validation import check_int
from mtl_bench.analysis.verdict import EXPLANATIONS

EXPECTED: dict[str, tuple[str, str]] = {
    "identical": ("no", "neither"),
    "none": ("no", "neither"),
    "delayed": ("no", "neither"),
    "conflict": ("yes", "conflict"),
    "forgetting": ("yes", "forgetting"),
    "both": ("yes", "both"),
}
COLUMNS = ["draw", "mechanism", "expected_negative_transfer", "expected_explanation",
           "negative_transfer", "explanation", "hit"]
SEEDS = 10
# The verdict's thresholds were set on a development run of seeds 0-5; calibration draws never reuse them.
FIRST_SEED = 1000
PROBE_EVERY = 10  # about three events an epoch of the planted suite's 32 steps, at varying positions


def planted_config(*, seeds: int = SEEDS, first_seed: int = 0, jobs: int = 0, epochs: int = 40) -> RunConfig:
    """The configuration of one calibration draw (also what ``make demo`` runs)."""
    return RunConfig(
        suite=planted.NAME,
        suite_params={"mechanism": list(planted.MECHANISMS)},
        archs=[planted.ARCH],  # its arch_params are the suite's (filled in by mtl_bench.experiments.grid.resolve)
        regimes=[SINGLE, JOINT],
        seeds=seeds,
        first_seed=first_seed,
        epochs=epochs,
        probe_every=PROBE_EVERY,
        jobs=jobs,
    )


def calibrate(
    *, draws: int = 3, seeds: int = SEEDS, out: str | Path = "runs/calibration", jobs: int = 0,
    progress: TextIO | None = sys.stderr, executor: Executor | None = None,
) -> pd.DataFrame:
    """Runs ``draws`` independent draws of every planted mechanism and scores the verdicts.

    ``executor`` runs the draws' cells (default a local pool of ``jobs`` workers; see
    :func:`mtl_bench.experiments.grid.run`).

    Returns:
        One row per draw × mechanism (:data:`COLUMNS`).
    """
    from mtl_bench.experiments import grid as runner
    from mtl_bench.analysis.report import write_report

    check_int("calibrate", "draws", draws, 1)
    out = Path(out)
    rows = []
    for d in range(draws):
        run_dir = out / f"draw{d}"
        config = planted_config(seeds=seeds, first_seed=FIRST_SEED + d * seeds, jobs=jobs)
        if (run_dir / "manifest.json").is_file():
            stored = RunConfig.from_toml(run_dir / "config.toml").to_dict()
            wanted = runner.resolve(config).to_dict()
            if {k: v for k, v in stored.items() if k != "jobs"} != {k: v for k, v in wanted.items() if k != "jobs"}:
                raise UserInputError(f"{run_dir} holds a draw of another calibration (other seeds or settings); "
                                     "use another --out")
            if io.read_json(run_dir / "manifest.json").get("status") != "complete":
                runner.resume(run_dir, progress=progress, executor=executor)
        else:
            runner.run(config, out=run_dir, progress=progress, executor=executor)
        _, result, _ = write_report([run_dir])
        for v in result.verdicts:
            expected = EXPECTED[v["mechanism"]]
            rows.append({"draw": d, "mechanism": v["mechanism"], "expected_negative_transfer": expected[0],
                         "expected_explanation": expected[1], "negative_transfer": v["negative_transfer"],
                         "explanation": v["explanation"],
                         "hit": (v["negative_transfer"], v["explanation"]) == expected})
    table = pd.DataFrame(rows, columns=COLUMNS)
    io.write_csv(out / "calibration.csv", table)
    io.write_text(out / "calibration.md", summary(table))
    return table


def confusion(table: pd.DataFrame) -> pd.DataFrame:
    """Planted mechanism × verdict explanation counts (rows in :data:`EXPECTED` order)."""
    matrix = pd.crosstab(table["mechanism"], table["explanation"])
    return matrix.reindex(index=[m for m in EXPECTED if m in matrix.index], columns=list(EXPLANATIONS), fill_value=0)


def summary(table: pd.DataFrame) -> str:
    """The confusion matrix and the hit rate, as Markdown."""
    matrix = confusion(table)
    lines = ["| planted ↓ verdict → | " + " | ".join(matrix.columns) + " | negative transfer: yes / no / undetermined |",
             "|---|" + "---|" * (len(matrix.columns) + 1)]
    for mechanism, row in matrix.iterrows():
        nt = table[table["mechanism"] == mechanism]["negative_transfer"].value_counts()
        lines.append(f"| {mechanism} | " + " | ".join(str(int(v)) for v in row) +
                     f" | {nt.get('yes', 0)} / {nt.get('no', 0)} / {nt.get('undetermined', 0)} |")
    hits = int(table["hit"].sum())
    undetermined = table["explanation"] == "undetermined"
    partial = (table["expected_explanation"] == "both") & table["explanation"].isin(["conflict", "forgetting"])
    wrong = int(((table["explanation"] != table["expected_explanation"]) & ~undetermined & ~partial).sum())
    lines += ["", f"Hit rate: {hits} of {len(table)} verdicts name both the planted negative transfer and its "
              f"mechanism; {int(partial.sum())} name one of the two planted mechanisms; {wrong} name a mechanism "
              f"that was not planted; {int(undetermined.sum())} say undetermined."]
    return "\n".join(lines) + "\n"
