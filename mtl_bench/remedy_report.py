"""The remedy table of ``mtl-bench report``: interventions that separate the explanations.

Correlations cannot tell the explanations apart; interventions can. For every
regime and every remedy, each remedy cell is paired with the baseline cell of
the same run, suite variant, architecture, task order and seed. Cells that
share a seed and variant share data and single-task baselines, so the paired
changes are first averaged within each (run, suite, variant, seed) cluster
over architectures and orders; ``n`` counts clusters, and the table gives the
mean over clusters of the change in:

* ``delta_m``: Maninis et al.'s Δm vs single-task (percent; positive = less
  negative transfer): the mean with a 95% t-interval over clusters, and the
  median with its distribution-free 95% interval (sign test), with ``wins``,
  the clusters where the remedy did better. Δm is heavy-tailed (a relative MSE
  change explodes when the single-task MSE is small), so ``helps`` uses the
  median's interval: true when it lies above 0 (it needs 6 or more clusters);
* the conflict measures of the probe: ``conflict_rate`` and ``cosine`` between
  the raw task gradients, and ``update_conflict``, the share of (task, probe
  event) pairs where the update the method would apply next, computed on the
  probe batch, raises that task's loss to first order;
* the forgetting measures: the probe's ``forgetting_rate`` and ``affinity``
  (joint), the sequential regime's ``forgetting`` of the headline metric and
  ``output_drift``.

``lowers_conflict`` / ``lowers_forgetting`` are true when the sign-test 95%
interval of the median change of a conflict measure (update conflict, conflict
rate) / a forgetting measure (forgetting rate, sequential forgetting, output
drift) lies below 0: the remedy did remove its mechanism. ``target_measure``
is the measure a remedy of its family targets first (conflict remedies: the
raw conflict rate; forgetting remedies: the forgetting rate in the joint
regime, sequential forgetting in the sequential one) and
``target_lowered_share`` the share of clusters where the remedy lowered it.

The baselines are ``none`` (static weights) and, when run, ``equal``; following
Xin et al. 2022 and Kurin et al. 2022 a remedy only helps when it helps against
every baseline. Everything uses the validation split.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mtl_bench.metrics import mean_ci, median_ci, relative_transfer
from mtl_bench.remedies import BASELINE, EQUAL, REMEDIES
from mtl_bench.summary import headline_metric, per_seed_transfer

SPLIT = "validation"
BASELINES = (BASELINE, EQUAL)
# (column, source file, measure)
CHANGES: tuple[tuple[str, str, str], ...] = (
    ("conflict_rate", "probe", "conflict"),
    ("cosine", "probe", "cosine"),
    ("update_conflict", "probe", "update_conflict"),
    ("forgetting_rate", "probe", "forgetting_rate"),
    ("affinity", "probe", "affinity"),
    ("sequential_forgetting", "retention", "forgetting"),
    ("output_drift", "retention", "output_drift"),
)
COLUMNS = [
    "regime", "remedy", "family", "baseline", "n", "wins", "delta_m_change", "ci_low", "ci_high",
    "median_change", "median_ci_low", "median_ci_high", "helps",
    *[f"{c}_change" for c, _, _ in CHANGES], "baseline_update_conflict", "lowers_conflict", "lowers_forgetting",
    "target_measure", "target_lowered_share",
]
CONFLICT_MEASURES = ("update_conflict", "conflict_rate")
FORGETTING_MEASURES = ("forgetting_rate", "sequential_forgetting", "output_drift")


def _cell_keys(variant_columns: Sequence[str]) -> list[str]:
    return ["run", "suite", *variant_columns, "arch", "regime", "order", "seed"]


def _cluster_keys(variant_columns: Sequence[str]) -> list[str]:
    return ["run", "suite", *variant_columns, "seed"]


def _per_cell(metrics: pd.DataFrame, probe: pd.DataFrame, retention: pd.DataFrame, variant_columns: Sequence[str]) -> pd.DataFrame:
    """One row per cell (incl. remedy): its Δm and the mean of every measure."""
    keys = _cell_keys(variant_columns)
    transfer = pd.concat([per_seed_transfer(g, variant_columns) for _, g in metrics.groupby("run", sort=False)])
    headline = {t: headline_metric(set(g["metric"])) for t, g in transfer.groupby("task")}
    multi = transfer[(transfer["regime"] != "single") & (transfer["split"] == SPLIT) & transfer["single"].notna()]
    multi = multi[[m == headline[t] for t, m in zip(multi["task"], multi["metric"])]]
    multi = multi.assign(rel=[relative_transfer(m, v, s) for m, v, s in zip(multi["metric"], multi["value"], multi["single"])])
    cells = multi.groupby([*keys, "remedy"], dropna=False)["rel"].mean().rename("delta_m").reset_index()
    for column, source, measure in CHANGES:
        frame = probe if source == "probe" else retention
        if frame.empty or "measure" not in frame:
            cells[column] = np.nan
            continue
        if source == "probe":
            rows = frame[frame["measure"] == measure]
            rows = rows[rows["group"] == "all"] if "group" in rows else rows
            if measure in ("conflict", "cosine", "affinity"):
                rows = rows[rows["task_i"] != rows["task_j"]]
        else:
            wanted = measure if measure == "output_drift" else None
            names = [wanted or f"{measure}_{headline.get(t)}" for t in frame["task"]]
            rows = frame[frame["measure"] == pd.Series(names, index=frame.index)]
            rows = rows[rows["phase"] == rows.groupby([*keys, "remedy"], dropna=False)["phase"].transform("max")]
        values = rows.groupby([*keys, "remedy"], dropna=False)["value"].mean().rename(column).reset_index()
        cells = cells.merge(values, on=[*keys, "remedy"], how="left")
    return cells


def remedy_table(metrics: pd.DataFrame, probe: pd.DataFrame, retention: pd.DataFrame, variant_columns: Sequence[str]) -> pd.DataFrame:
    """Paired changes of every remedy vs each baseline, per regime (see the module docstring)."""
    if metrics.empty or "remedy" not in metrics or metrics["remedy"].nunique() < 2:
        return pd.DataFrame(columns=COLUMNS)
    cells = _per_cell(metrics, probe, retention, variant_columns)
    keys = _cell_keys(variant_columns)
    rows = []
    for regime, group in cells.groupby("regime", sort=False):
        present = list(dict.fromkeys(group["remedy"]))
        for baseline in [b for b in BASELINES if b in present]:
            base = group[group["remedy"] == baseline].set_index(keys)
            for remedy in sorted((r for r in present if r != baseline and r != BASELINE), key=_order):
                other = group[group["remedy"] == remedy].set_index(keys)
                pairs = other.join(base, how="inner", lsuffix="", rsuffix="_base")
                if pairs.empty:
                    continue
                measures = ["delta_m", *[c for c, _, _ in CHANGES]]
                diff = pd.DataFrame({m: pairs[m] - pairs[f"{m}_base"] for m in measures})
                diff["base_update_conflict"] = pairs["update_conflict_base"]
                clusters = diff.groupby(level=_cluster_keys(variant_columns), dropna=False).mean()
                mean, lo, hi, n = mean_ci(clusters["delta_m"].tolist())
                median, m_lo, m_hi, _ = median_ci(clusters["delta_m"].tolist())
                row = {
                    "regime": regime, "remedy": remedy, "family": REMEDIES[remedy].family if remedy in REMEDIES else "",
                    "baseline": baseline, "n": n, "wins": int((clusters["delta_m"] > 0).sum()),
                    "delta_m_change": mean, "ci_low": lo, "ci_high": hi,
                    "median_change": median, "median_ci_low": m_lo, "median_ci_high": m_hi,
                    "helps": bool(np.isfinite(m_lo) and m_lo > 0),
                }
                for column, _, _ in CHANGES:
                    values = clusters[column]
                    row[f"{column}_change"] = float(values.mean()) if values.notna().any() else np.nan
                for flag, names in (("lowers_conflict", CONFLICT_MEASURES), ("lowers_forgetting", FORGETTING_MEASURES)):
                    row[flag] = any(median_ci(clusters[c].tolist())[2] < 0 for c in names)
                target = _target(row["family"], regime)
                values = clusters[target].dropna() if target else pd.Series(dtype=float)
                row["target_measure"] = target or ""
                row["target_lowered_share"] = float((values < 0).mean()) if len(values) else np.nan
                base_conflict = clusters["base_update_conflict"]
                row["baseline_update_conflict"] = float(base_conflict.mean()) if base_conflict.notna().any() else np.nan
                rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def _target(family: str, regime: str) -> str | None:
    if family == "conflict":
        return "conflict_rate"
    if family == "forgetting":
        return "sequential_forgetting" if regime == "sequential" else "forgetting_rate"
    return None


def _order(name: str) -> int:
    return list(REMEDIES).index(name) if name in REMEDIES else len(REMEDIES)


def remedy_verdict(table: pd.DataFrame) -> str:
    """What the interventions say about each explanation; empty when the runs have no remedies."""
    if table.empty:
        return ""
    lines = []
    for (regime, remedy), group in table.groupby(["regime", "remedy"], sort=False):
        family = group["family"].iloc[0]
        if family not in ("conflict", "forgetting"):
            continue
        helps = bool(group["helps"].all())
        vs = group[group["baseline"] == BASELINE]
        vs = vs if not vs.empty else group
        row = vs.iloc[0]
        ci = (f"median Δm change {row['median_change']:+.2f}, 95% CI {row['median_ci_low']:+.2f} to "
              f"{row['median_ci_high']:+.2f}, better in {row['wins']} of {row['n']} seeds vs {row['baseline']}")
        if family == "conflict":
            removed = bool(row["lowers_conflict"])
            target = "gradient conflict"
            base_conflict = row["baseline_update_conflict"]
            if np.isfinite(base_conflict) and base_conflict == 0 and not removed:
                lines.append(f"- {regime}, {remedy}: the baseline's update never conflicted with a task at the probe, "
                             f"so there was no conflict to remove; {ci}.")
                continue
        else:
            removed = bool(row["lowers_forgetting"])
            target = "forgetting"
        if not np.isfinite(row["median_ci_low"]):
            effect = f"too few paired seeds for a confidence interval ({ci}); run 6 or more seeds × variants."
        elif helps:
            effect = f"reduces negative transfer against every baseline ({ci}): evidence for {target}."
        elif removed and row["median_ci_high"] < 0:
            effect = f"lowers {target} yet increases negative transfer ({ci}): evidence against {target} as the cause."
        elif removed:
            effect = (f"lowers {target} without a clear change in negative transfer ({ci}): "
                      f"no support for {target} as the cause.")
        else:
            effect = f"lowers neither {target} nor negative transfer clearly ({ci}): says nothing about {target}."
        lines.append(f"- {regime}, {remedy}: {effect}")
    if not lines:
        return "No conflict or forgetting remedy was run; the remedy table only compares weightings."
    return "\n".join(lines)

