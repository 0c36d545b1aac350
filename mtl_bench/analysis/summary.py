"""From long-format ``metrics.csv`` to ``summary.csv``: means, CIs and transfer vs single-task."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mtl_bench.engine import metrics as metrics_lib
from mtl_bench.spec import METRIC_RANGES
from mtl_bench.schema import ALL, BASELINE, CELL_COLUMNS, DELTA_M, SINGLE, SINGLE_ARCH


SUMMARY_STATS = ["mean", "ci_low", "ci_high", "n", "transfer", "transfer_ci_low", "transfer_ci_high"]


def headline_metric(metrics: Sequence[str]) -> str:
    """The metric Δm uses for a task: AUC for binary tasks, MSE for regression."""
    return "auc" if "auc" in metrics else "mse"


def with_remedy(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a ``remedy`` column (``"none"`` for results of runs made before remedies existed)."""
    if frame.empty or "remedy" in frame.columns:
        return frame
    position = list(frame.columns).index("regime") + 1 if "regime" in frame.columns else len(frame.columns)
    frame = frame.copy()
    frame.insert(position, "remedy", BASELINE)
    return frame


def variant_label(key: dict, variant_columns: Sequence[str]) -> str:
    """``"name=value ..."`` of one suite variant; columns this variant's run does not have are left out
    (None, or NaN once several runs' rows are pooled)."""
    present = lambda v: v is not None and not (isinstance(v, float) and np.isnan(v))  # noqa: E731
    return " ".join(f"{c}={key[c]}" for c in variant_columns if c in key and present(key[c]))


def merge_on(left: pd.DataFrame, right: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """A left merge on ``keys`` with ``right``'s keys in ``left``'s dtypes.

    A variant column that one of several runs lacks is all-null in that run's rows, and a groupby over
    those rows alone turns it into a float column, which pandas refuses to merge with the object column.
    """
    dtypes = {k: left[k].dtype for k in keys if k in right and right[k].dtype != left[k].dtype}
    return left.merge(right.astype(dtypes), on=keys, how="left")


def final_results(metrics: pd.DataFrame, variant_columns: Sequence[str]) -> pd.DataFrame:
    """Rows of each cell's final evaluation after its last phase."""
    metrics = with_remedy(metrics)
    final = metrics[metrics["stage"] == "final"]
    cell = ["suite", *variant_columns, *CELL_COLUMNS]
    last = final.groupby(cell, dropna=False)["phase"].transform("max")
    return final[final["phase"] == last]


def per_seed_transfer(metrics: pd.DataFrame, variant_columns: Sequence[str]) -> pd.DataFrame:
    """Final rows of every cell with ``single`` (the matched single-task value) and ``transfer`` columns.

    The single-task value is the same seed's, from the same architecture's
    single-task run when the run has one, else from the one-tower ``single_task``
    model; every remedy is compared with the same single-task value (a single
    task has nothing to remedy). ``transfer`` is direction-aware: negative means
    negative transfer.
    """
    final = final_results(metrics, list(variant_columns))
    match = ["suite", *variant_columns, "task", "split", "metric", "seed"]
    singles = final[(final["regime"] == SINGLE) & (final["remedy"] == BASELINE)]
    same_arch = singles[match + ["arch", "value"]].rename(columns={"value": "same_arch"})
    tower = singles[singles["arch"] == SINGLE_ARCH][match + ["value"]].rename(columns={"value": "tower"})
    merged = final.merge(same_arch, on=match + ["arch"], how="left").merge(tower, on=match, how="left")
    merged["single"] = merged["same_arch"].fillna(merged["tower"]).where(merged["regime"] != SINGLE)
    merged["transfer"] = [
        metrics_lib.transfer(m, v, s) for m, v, s in zip(merged["metric"], merged["value"], merged["single"])
    ]
    return merged.drop(columns=["same_arch", "tower"])


def summarize(metrics: pd.DataFrame, variant_columns: Sequence[str]) -> pd.DataFrame:
    """One row per suite × variant × arch × regime × order × task × split × metric.

    Intervals of a metric are cut to its range (:data:`mtl_bench.spec.METRIC_RANGES`).

    ``transfer`` is :func:`per_seed_transfer` averaged over seeds, with a paired
    t-interval. Rows with ``task == "all"`` and ``metric == "delta_m"`` hold
    Maninis et al.'s Δm in percent: the mean over tasks of the sign-corrected
    relative change of each task's headline metric vs single-task.
    """
    variant_columns = list(variant_columns)
    keys = ["suite", *variant_columns, "arch", "regime", "remedy", "order", "task", "split", "metric"]
    merged = per_seed_transfer(metrics, variant_columns)
    rows = []
    for key, group in merged.groupby(keys, sort=False, dropna=False):
        low, high = METRIC_RANGES.get(key[-1], (-np.inf, np.inf))
        mean, lo, hi, n = metrics_lib.mean_ci(group["value"].tolist(), bounds=(low, high))
        # A difference of two values in [low, high] lies in [low - high, high - low].
        t_mean, t_lo, t_hi, _ = metrics_lib.mean_ci(group["transfer"].tolist(), bounds=(low - high, high - low))
        rows.append((*key, mean, lo, hi, n, t_mean, t_lo, t_hi))
    summary = pd.DataFrame(rows, columns=keys + SUMMARY_STATS)
    return pd.concat([summary, _delta_m(merged, variant_columns)], ignore_index=True)


def _delta_m(merged: pd.DataFrame, variant_columns: list[str]) -> pd.DataFrame:
    multi = merged[merged["single"].notna()]
    headline = multi.groupby("task")["metric"].agg(lambda m: headline_metric(set(m)))
    multi = multi[multi["metric"] == multi["task"].map(headline)]
    if multi.empty:
        return pd.DataFrame(columns=["suite", *variant_columns, "arch", "regime", "remedy", "order", "task", "split", "metric"] + SUMMARY_STATS)
    multi = multi.assign(
        rel=[metrics_lib.relative_transfer(m, v, s) for m, v, s in zip(multi["metric"], multi["value"], multi["single"])]
    )
    per_seed = multi.groupby(["suite", *variant_columns, "arch", "regime", "remedy", "order", "split", "seed"], dropna=False)["rel"].mean()
    rows = []
    for key, values in per_seed.groupby(level=list(range(per_seed.index.nlevels - 1)), sort=False, dropna=False):
        mean, lo, hi, n = metrics_lib.mean_ci(values.tolist())
        *head, split = key
        rows.append((*head, ALL, split, DELTA_M, mean, lo, hi, n, np.nan, np.nan, np.nan))
    return pd.DataFrame(
        rows, columns=["suite", *variant_columns, "arch", "regime", "remedy", "order", "task", "split", "metric"] + SUMMARY_STATS
    )


def format_table(summary: pd.DataFrame, variant_columns: Sequence[str], split: str = "test") -> str:
    """A readable table: each task's headline metric (mean ± CI half-width) and transfer, plus Δm."""
    s = summary[summary["split"] == split]
    headline = {t: headline_metric(set(g["metric"])) for t, g in s[s["task"] != ALL].groupby("task")}
    keep = s[np.array([m == headline.get(t, DELTA_M) for t, m in zip(s["task"], s["metric"])], dtype=bool)]
    if keep.empty:
        return "(no results)"

    def cell(r: pd.Series) -> str:
        half = (r["ci_high"] - r["ci_low"]) / 2
        text = f"{r['mean']:.4f}" + (f"±{half:.4f}" if np.isfinite(half) else "")
        if np.isfinite(r["transfer"]):
            text += f" ({r['transfer']:+.4f})"
        return text

    keep = keep.assign(
        cell=keep.apply(cell, axis=1),
        column=[f"{t} {m}" if t != ALL else "Δm %" for t, m in zip(keep["task"], keep["metric"])],
    )
    index = [*variant_columns, "arch", "regime", "remedy", "order"]
    # A column with one value in every row is said once above the table, not repeated on each row.
    constant = [c for c in index if keep[c].astype(str).nunique() == 1]
    varying = [c for c in index if c not in constant] or ["arch"]
    table = keep.pivot_table(index=varying, columns="column", values="cell", aggfunc="first", sort=False)
    table.columns.name = None
    head = ", ".join(f"{c}={keep[c].iloc[0]}" for c in constant if c not in varying)
    return (f"every row: {head}\n" if head else "") + table.to_string()
