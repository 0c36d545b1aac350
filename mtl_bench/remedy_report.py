"""The remedy table of ``mtl-bench report``: interventions that separate the explanations.

Correlations cannot tell the explanations apart; interventions can. For every
regime and every remedy, each remedy cell is paired with the baseline cell of
the same run, suite variant, architecture, task order and seed, and the table
gives the mean paired change, over those pairs, of:

* ``delta_m``: Maninis et al.'s Δm vs single-task (percent; positive = less
  negative transfer), with a 95% t-interval; ``helps`` is true when that
  interval lies above 0;
* the conflict measures of the probe: ``conflict_rate`` and ``cosine`` between
  the raw task gradients, and ``update_conflict``, the share of probe events
  where the update the method applies raises some task's loss;
* the forgetting measures: the probe's ``forgetting_rate`` and ``affinity``
  (joint), the sequential regime's ``forgetting`` of the headline metric and
  ``output_drift``.

The baselines are ``none`` (static weights) and, when run, ``equal``; following
Xin et al. 2022 and Kurin et al. 2022 a remedy only helps when it helps against
every baseline. Everything uses the validation split.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mtl_bench.metrics import mean_ci, relative_transfer
from mtl_bench.remedies import BASELINE, EQUAL, REMEDIES
from mtl_bench.summary import headline_metric, per_seed_transfer

SPLIT = "validation"
BASELINES = (BASELINE, EQUAL)
# (column, source, measure, lower is better when the explanation's remedy works)
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
    "regime", "remedy", "family", "baseline", "n", "delta_m_change", "ci_low", "ci_high", "helps",
    *[f"{c}_change" for c, _, _ in CHANGES], "baseline_update_conflict",
]


def _cell_keys(variant_columns: Sequence[str]) -> list[str]:
    return ["run", "suite", *variant_columns, "arch", "regime", "order", "seed"]


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
                change = pairs["delta_m"] - pairs["delta_m_base"]
                mean, lo, hi, n = mean_ci(change.tolist())
                row = {
                    "regime": regime, "remedy": remedy, "family": REMEDIES[remedy].family if remedy in REMEDIES else "",
                    "baseline": baseline, "n": n, "delta_m_change": mean, "ci_low": lo, "ci_high": hi,
                    "helps": bool(np.isfinite(lo) and lo > 0),
                }
                for column, _, _ in CHANGES:
                    row[f"{column}_change"] = float(np.nanmean(pairs[column] - pairs[f"{column}_base"])) \
                        if np.isfinite(pairs[column] - pairs[f"{column}_base"]).any() else np.nan
                row["baseline_update_conflict"] = float(pairs["update_conflict_base"].mean()) \
                    if pairs["update_conflict_base"].notna().any() else np.nan
                rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


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
        ci = f"Δm change {row['delta_m_change']:+.2f} (95% CI {row['ci_low']:+.2f} to {row['ci_high']:+.2f}) vs {row['baseline']}"
        if family == "conflict":
            removed = _lowered(row, "update_conflict_change") or _lowered(row, "conflict_rate_change")
            target = "gradient conflict"
            base_conflict = row["baseline_update_conflict"]
            if np.isfinite(base_conflict) and base_conflict == 0 and not removed:
                lines.append(f"- {regime}, {remedy}: the baseline's update never conflicted with a task at the probe, "
                             f"so there was no conflict to remove; {ci}.")
                continue
        else:
            removed = any(_lowered(row, c) for c in ("forgetting_rate_change", "sequential_forgetting_change", "output_drift_change"))
            target = "forgetting"
        if not np.isfinite(row["ci_low"]):
            effect = f"too few paired seeds for a confidence interval ({ci}); run more seeds."
        elif helps:
            effect = f"reduces negative transfer against every baseline ({ci}): evidence for {target}."
        elif removed and row["ci_high"] < 0:
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


def _lowered(row: pd.Series, column: str) -> bool:
    value = row.get(column, np.nan)
    return bool(np.isfinite(value) and value < 0)
