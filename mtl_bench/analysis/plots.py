"""Figures of a run: each function takes the run's DataFrames and returns a matplotlib Figure.

The functions use the Agg canvas directly and never touch pyplot, so they hold
no global state and work in scripts, tests and notebooks alike. The frames are
the run directory's CSV files as read by :func:`pandas.read_csv` (or
:func:`mtl_bench.analysis.report.load_runs`). :func:`figures` lists every figure
of a run and :func:`write_plots` writes those whose inputs exist into the run
directory (``mtl-bench report --plots``).

The grid's figures are drawn in :mod:`~mtl_bench.analysis.figures_grid`, those of
the remedies, the verdict and the cohort experiment in
:mod:`~mtl_bench.analysis.figures_experiments`; every one is importable from here.
The cohort experiment's curves come from ``cohort_forgetting.csv``
(:func:`cohort_curves`); the sparse-dense sweep and the policy experiment
write their own tables (``sparse_dense.csv``, ``policy.csv``).
"""

from __future__ import annotations

import io as _io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mtl_bench import io
from mtl_bench.analysis import cohorts as cohort_report
from mtl_bench.analysis import remedies as remedy_report
from mtl_bench.analysis import pareto, report
from mtl_bench.analysis import verdict as verdict_lib
from mtl_bench.analysis._style import COLORS, EXPLANATION_COLORS, MARKERS, RUN_COLUMN, variant_columns_of
from mtl_bench.analysis.figures_experiments import cohort_curves, remedy_effects, verdict
from mtl_bench.analysis.figures_grid import (
    AFFINITY,
    COSINE,
    DYNAMICS,
    FORGETTING,
    OUTPUT_DRIFT,
    X_MEASURES,
    Y_MEASURES,
    accuracy_matrix,
    conflict_retention_points,
    conflict_vs_retention,
    drift_vs_forgetting,
    gates,
    negative_transfer,
    training_dynamics,
)
from mtl_bench.analysis.summary import with_remedy
from mtl_bench.schema import BASELINE, JOINT, SEQUENTIAL

__all__ = [
    "AFFINITY", "COLORS", "COSINE", "DYNAMICS", "EXPLANATION_COLORS", "FORGETTING", "MARKERS", "OUTPUT_DRIFT",
    "RUN_COLUMN", "X_MEASURES", "Y_MEASURES", "accuracy_matrix", "cohort_curves", "conflict_retention_points",
    "conflict_vs_retention", "drift_vs_forgetting", "figures", "gates", "negative_transfer", "remedy_effects", "save",
    "to_png", "training_dynamics", "variant_columns_of", "verdict", "write_plots",
]


def to_png(fig: Figure, *, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (e.g. for ``IPython.display.Image``)."""
    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save(fig: Figure, path: str | Path, *, dpi: int = 100) -> Path:
    """Writes the figure as PNG atomically: to a temporary file beside ``path``, then renamed over it."""
    path = Path(path)
    io.write_bytes(path, to_png(fig, dpi=dpi))
    return path


def _read_summaries(run_dirs: Sequence[Path]) -> pd.DataFrame:
    """The runs' ``summary.csv`` rows, each with its run's directory name (its path when names repeat)."""
    names = [d.name for d in run_dirs]
    labels = names if len(set(names)) == len(names) else [str(d) for d in run_dirs]
    frames = [pd.read_csv(d / "summary.csv", keep_default_na=False, na_values=[""]).assign(**{RUN_COLUMN: label})
              for d, label in zip(run_dirs, labels) if (d / "summary.csv").is_file()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def figures(
    run_dirs: Sequence[str | Path],
    *,
    contrast_table: pd.DataFrame | None = None,
    verdicts: Sequence[dict] | None = None,
) -> dict[str, Callable[[], Figure] | str]:
    """Every figure of the runs: file name → a function drawing it, or the reason it is skipped.

    Args:
        run_dirs: Run directories written by ``mtl-bench run``.
        contrast_table: The runs' ``report.contrast`` table; default: computed when needed.
        verdicts: The runs' verdicts (``report.build_report(run_dirs)[1].verdicts``); default: computed
            when needed, the way ``build_report`` computes them (without its contrast, which they do not use).
    """
    dirs = [Path(d) for d in run_dirs]
    metrics, probe, retention, variant_columns = report.load_runs(dirs)
    remedies = remedy_report.remedy_table(metrics, probe, retention, variant_columns)
    all_cells = (metrics, probe, retention)
    # Every figure but the remedy one describes the baseline training.
    baseline = lambda f: f[f["remedy"] == BASELINE] if not f.empty else f  # noqa: E731
    metrics, probe, retention = baseline(metrics), baseline(probe), baseline(retention)
    summary = baseline(with_remedy(_read_summaries(dirs)))
    summary_variants = list(variant_columns)
    if not summary.empty:
        for c in variant_columns:
            if c not in summary.columns:
                summary[c] = np.nan
        # Runs of the same suite variant (the points of a sparse-dense sweep differ only in architecture
        # parameters) have rows with equal keys: the run tells them apart, one panel each.
        runs_per_variant = summary.groupby(["suite", *variant_columns], dropna=False)[RUN_COLUMN].nunique()
        if runs_per_variant.max() > 1:
            summary_variants.append(RUN_COLUMN)
    has = lambda frame, column, values: (not frame.empty) and frame[column].isin(values).any()  # noqa: E731
    out: dict[str, Callable[[], Figure] | str] = {}

    if has(summary, "regime", [JOINT, SEQUENTIAL]):
        out["negative_transfer.png"] = lambda: negative_transfer(summary, variant_columns=summary_variants)
    else:
        out["negative_transfer.png"] = "no multi-task regime in summary.csv"

    if probe.empty:
        reason = "no probe.csv (was the run made with --no-probe?)"
        out["conflict_vs_retention.png"] = out["training_dynamics.png"] = out["gates.png"] = reason
    else:
        if retention.empty or not has(probe, "regime", [JOINT]):
            out["conflict_vs_retention.png"] = "needs both the joint and the sequential regime"
        else:
            def conflict() -> Figure:
                table = contrast_table
                if table is None:
                    units = report.unit_table(metrics, probe, retention, variant_columns)
                    table = report.contrast(units).table if not units.empty else None
                return conflict_vs_retention(probe, retention, table, variant_columns=variant_columns)

            out["conflict_vs_retention.png"] = conflict
        if has(probe, "regime", [JOINT]):
            for arch in dict.fromkeys(probe[probe["regime"] == JOINT]["arch"]):
                out[f"training_dynamics_{arch}.png"] = (
                    lambda a=arch: training_dynamics(probe, arch=a, variant_columns=variant_columns))
        else:
            out["training_dynamics.png"] = "no joint-regime probe rows"
        if has(probe, "measure", ["gate_weight"]):
            # Joint training's gates when there are some, else those of the first regime that has gates.
            gated = list(dict.fromkeys(probe[probe["measure"] == "gate_weight"]["regime"]))
            out["gates.png"] = lambda: gates(probe, regime=JOINT if JOINT in gated else gated[0])
        else:
            out["gates.png"] = "no gated architecture (mmoe, omoe, ple) in the probe"

    if has(metrics, "regime", [SEQUENTIAL]):
        out["accuracy_matrix.png"] = lambda: accuracy_matrix(metrics, variant_columns=variant_columns)
    else:
        out["accuracy_matrix.png"] = "no sequential regime"
    if has(retention, "measure", [OUTPUT_DRIFT]):
        out["drift_vs_forgetting.png"] = lambda: drift_vs_forgetting(retention, variant_columns=variant_columns)
    else:
        out["drift_vs_forgetting.png"] = "no output drift in retention.csv"
    cohorts = cohort_report.read([str(d) for d in dirs], variant_columns)
    if not cohorts.empty:
        out["cohort_forgetting.png"] = lambda: cohort_curves(cohorts)
    else:
        out["cohort_forgetting.png"] = "no cohort_forgetting.csv (run the daily regime)"
    if remedies.empty:
        out["remedies.png"] = "no remedy besides the baseline (run with --remedy)"
    else:
        out["remedies.png"] = lambda: remedy_effects(remedies)
    sweep = pareto.pareto_table(all_cells[0], variant_columns)
    out["pareto.png"] = ((lambda: pareto.pareto_figure(sweep)) if not sweep.empty else
                         "no static-weight sweep (run with --remedy sweep-0,...,sweep-10 and the methods to place)")
    # The report has verdicts whenever it has joint-regime units (report.build_report).
    if verdicts is not None and len(verdicts) == 0:
        out["verdict.png"] = "the report has no verdicts"
    elif verdicts is None and not has(metrics, "regime", [JOINT]):
        out["verdict.png"] = "no joint regime: no verdict"
    else:
        def draw_verdict() -> Figure:
            entries = verdicts
            if entries is None:
                units = report.unit_table(*all_cells, variant_columns)
                entries = verdict_lib.verdicts(units, variant_columns, remedies) if not units.empty else []
            return verdict(entries, variant_columns)

        out["verdict.png"] = draw_verdict
    return out


def write_plots(
    run_dirs: Sequence[str | Path],
    out: str | Path | None = None,
    *,
    contrast_table: pd.DataFrame | None = None,
    verdicts: Sequence[dict] | None = None,
) -> tuple[list[Path], list[str]]:
    """Writes every figure whose inputs exist as PNG into ``out`` (default: the first run directory).

    Args:
        run_dirs: Run directories written by ``mtl-bench run``.
        out: Output directory.
        contrast_table: The runs' ``report.contrast`` table; default: computed.
        verdicts: The runs' verdicts (``report.build_report(...)[1].verdicts``); default: computed.

    Returns:
        The written paths and one note per skipped figure.
    """
    out_dir = Path(out) if out is not None else Path(run_dirs[0])
    written, notes = [], []
    for name, make in figures(run_dirs, contrast_table=contrast_table, verdicts=verdicts).items():
        if isinstance(make, str):
            notes.append(f"skipped {name}: {make}")
        else:
            written.append(save(make(), out_dir / name))
    return written, notes
