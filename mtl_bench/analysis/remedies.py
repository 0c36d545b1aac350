"""The remedy table of ``mtl-bench report``: interventions that separate the explanations.

Correlations cannot tell the explanations apart; interventions can. For every
regime and every remedy, each remedy cell is paired with the baseline cell of
the same run, suite variant, architecture, task order and seed. Cells that
share a seed share its data draw (a sweep's variants draw from the same seed)
and single-task baselines, so the paired changes are first averaged within
each (run, suite, seed) cluster over variants, architectures and orders;
``n`` counts clusters. ``variant`` is ``"all"`` for that pooled row; with
several variants, one more row per variant (``"mechanism=conflict"``) pairs
the same seeds within it, which is what a suite of different worlds (the
planted mechanisms) needs. The table gives the mean over clusters of the
change in:

* ``delta_m``: Maninis et al.'s Δm vs single-task (percent; positive = less
  negative transfer): the mean with a 95% t-interval over clusters, and the
  median with its distribution-free 95% interval (sign test), with ``wins``,
  the clusters where the remedy did better. Δm is heavy-tailed (a relative MSE
  change explodes when the single-task MSE is small), so ``helps`` uses the
  median's interval: true when it lies above 0 (it needs 6 or more clusters);
* every per-cell measure of :mod:`mtl_bench.measures.catalog` (those read from
  ``probe.csv`` or ``retention.csv``; the derived ones, ``conflict_ratio``,
  ``absence_damage`` and ``presence_rise``, are computed per task by
  :func:`mtl_bench.analysis.report.unit_table` and left to it), as
  ``<catalog name>_change``: the conflict family
  ``conflict_rate_change``, ``cosine_change``, ``cosine_halves_change``,
  ``affinity_in_change`` (TAG affinity from the other tasks); the forgetting
  family ``sequential_forgetting_change`` (sequential regime, headline
  metric); and the descriptive ``cosine_floor_change``, ``damage_change``,
  ``damage_first_order_change``, ``damage_excess_change``,
  ``update_conflict_change`` (the share of (task, probe event) pairs where
  the update the method would apply next, computed on the probe batch,
  raises that task's loss to first order), ``forgetting_events_change``
  (Toneva et al.'s events; they follow the task's own error),
  ``retention_change`` and ``output_drift_change``. A measure a cell does not
  record (the probe off, the sequential regime for joint cells) is NaN.
  Columns renamed from earlier versions: ``forgetting_rate_change`` is
  ``forgetting_events_change``, ``affinity_change`` is ``affinity_in_change``.

``lowers_conflict`` / ``lowers_forgetting`` are true when the sign-test 95%
interval of the median change of a conflict-family measure of the catalog or
``update_conflict`` / of a forgetting-family measure (``sequential_forgetting``)
lies on the side of less conflict / forgetting: below 0 for a measure whose
larger values go with negative transfer (``sign`` -1, e.g. the conflict rate),
above 0 for one whose larger values go with better transfer (``sign`` +1, e.g.
the cosine): the remedy did remove its mechanism. Forgetting events and output
drift are descriptive and never count. ``target_measure`` is the measure a
remedy of its family targets first (conflict remedies: the raw conflict rate;
forgetting remedies: sequential forgetting in the sequential regime, none in
the joint regime, which has no per-cell forgetting measure) and
``target_lowered_share`` the share of clusters where the remedy lowered it.

The baselines are ``none`` (static weights) and, when run, ``equal``; following
Xin et al. 2022 and Kurin et al. 2022 a remedy only helps when it helps against
every baseline. Everything uses the validation split.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mtl_bench.measures.catalog import BY_NAME, CONFLICT, FORGETTING, MEASURES, Measure
from mtl_bench.engine.metrics import mean_ci, median_ci, relative_transfer
from mtl_bench.remedies import REMEDIES
from mtl_bench.schema import ALL, BASELINE, EQUAL, SPLIT
from mtl_bench.analysis.summary import headline_metric, merge_on, per_seed_transfer, variant_label

BASELINES = (BASELINE, EQUAL)
# The per-cell measures: every catalog measure read from probe.csv or retention.csv (the derived ones are unit-level).
CHANGES: tuple[Measure, ...] = tuple(m for m in MEASURES if m.source in ("probe", "retention"))
UPDATE_CONFLICT = "update_conflict"
COLUMNS = [
    "regime", "variant", "remedy", "family", "baseline", "n", "wins", "delta_m_change", "ci_low", "ci_high",
    "median_change", "median_ci_low", "median_ci_high", "helps",
    *[f"{m.name}_change" for m in CHANGES], "baseline_update_conflict", "lowers_conflict", "lowers_forgetting",
    "target_measure", "target_lowered_share",
]
# The measures whose change says a remedy removed its mechanism: the catalog's families (plus the applied update's
# conflict for conflict remedies, which act on the update, not on the raw gradients).
CONFLICT_MEASURES: tuple[Measure, ...] = (
    *[m for m in CHANGES if m.family == CONFLICT], *[m for m in CHANGES if m.name == UPDATE_CONFLICT])
FORGETTING_MEASURES: tuple[Measure, ...] = tuple(m for m in CHANGES if m.family == FORGETTING)
# The measure each remedy family targets first (a retention measure only exists in the sequential regime).
TARGETS = {CONFLICT: "conflict_rate", FORGETTING: "sequential_forgetting"}


def _cell_keys(variant_columns: Sequence[str]) -> list[str]:
    return ["run", "suite", *variant_columns, "arch", "regime", "order", "seed"]


def _cluster_keys(variant_columns: Sequence[str]) -> list[str]:
    # The variants of a sweep share each seed's data draw and single-task baselines: one cluster per seed.
    return ["run", "suite", "seed"]


def _per_cell(metrics: pd.DataFrame, probe: pd.DataFrame, retention: pd.DataFrame, variant_columns: Sequence[str]) -> pd.DataFrame:
    """One row per cell (incl. remedy): its Δm and the mean of every measure."""
    keys = _cell_keys(variant_columns)
    transfer = pd.concat([per_seed_transfer(g, variant_columns) for _, g in metrics.groupby("run", sort=False)])
    headline = {t: headline_metric(set(g["metric"])) for t, g in transfer.groupby("task")}
    multi = transfer[(transfer["regime"] != "single") & (transfer["split"] == SPLIT) & transfer["single"].notna()]
    multi = multi[np.array([m == headline[t] for t, m in zip(multi["task"], multi["metric"])], dtype=bool)]
    multi = multi.assign(rel=[relative_transfer(m, v, s) for m, v, s in zip(multi["metric"], multi["value"], multi["single"])])
    cells = multi.groupby([*keys, "remedy"], dropna=False)["rel"].mean().rename("delta_m").reset_index()
    for m in CHANGES:
        values = _cell_measure(m, probe, retention, [*keys, "remedy"], headline)
        if values is None:
            cells[m.name] = np.nan
        else:
            cells = merge_on(cells, values, [*keys, "remedy"])
    return cells


def _cell_measure(m: Measure, probe: pd.DataFrame, retention: pd.DataFrame, cell: list[str], headline: dict[str, str]):
    """The mean of measure ``m`` per cell, its rows chosen as :func:`mtl_bench.analysis.report._measure` chooses them."""
    frame = probe if m.source == "probe" else retention
    if frame.empty or "measure" not in frame:
        return None
    if m.source == "probe":
        rows = frame[frame["measure"] == m.record]
        if "group" in rows and m.direction != "self":
            rows = rows[rows["group"] == "all"]
        if m.direction in ("out", "in"):  # a pair of tasks; the cell's mean pools both directions
            rows = rows[rows["task_i"] != rows["task_j"]]
    else:
        # Accuracy-matrix measures are named f"{record}_{headline metric}"; after the last phase of each cell.
        wanted = [m.record if m.record == "output_drift" else f"{m.record}_{headline.get(t)}" for t in frame["task"]]
        rows = frame[frame["measure"] == pd.Series(wanted, index=frame.index)]
        rows = rows[rows["phase"] == rows.groupby(cell, dropna=False)["phase"].transform("max")]
    values = rows.groupby(cell, dropna=False)["value"].mean().rename(m.name).reset_index()
    return values if not values.empty else None


def _lowers(clusters: pd.DataFrame, measures: Sequence[Measure]) -> bool:
    """True when the median change of one of ``measures`` has its sign-test 95% interval on the side of less of it."""
    for m in measures:
        # sign -1 (larger = worse transfer): lowered when the interval lies below 0; sign +1: when it lies above 0.
        _, lo, hi, _ = median_ci((-m.sign * clusters[m.name]).tolist())
        if hi < 0:
            return True
    return False


def remedy_table(metrics: pd.DataFrame, probe: pd.DataFrame, retention: pd.DataFrame, variant_columns: Sequence[str]) -> pd.DataFrame:
    """Paired changes of every remedy vs each baseline, per regime (see the module docstring)."""
    if metrics.empty or "remedy" not in metrics or metrics["remedy"].nunique() < 2:
        return pd.DataFrame(columns=COLUMNS)
    cells = _per_cell(metrics, probe, retention, variant_columns)
    keys = _cell_keys(variant_columns)
    rows = []
    for (regime, scope), group in _scopes(cells, variant_columns):
        present = list(dict.fromkeys(group["remedy"]))
        for baseline in [b for b in BASELINES if b in present]:
            base = group[group["remedy"] == baseline].set_index(keys)
            for remedy in sorted((r for r in present if r != baseline and r != BASELINE), key=_order):
                other = group[group["remedy"] == remedy].set_index(keys)
                pairs = other.join(base, how="inner", lsuffix="", rsuffix="_base")
                if pairs.empty:
                    continue
                measures = ["delta_m", *[m.name for m in CHANGES]]
                diff = pd.DataFrame({m: pairs[m] - pairs[f"{m}_base"] for m in measures})
                diff["base_update_conflict"] = pairs[f"{UPDATE_CONFLICT}_base"]
                clusters = diff.groupby(level=_cluster_keys(variant_columns), dropna=False).mean()
                mean, lo, hi, n = mean_ci(clusters["delta_m"].tolist())
                median, m_lo, m_hi, _ = median_ci(clusters["delta_m"].tolist())
                row = {
                    "regime": regime, "variant": scope, "remedy": remedy, "family": REMEDIES[remedy].family if remedy in REMEDIES else "",
                    "baseline": baseline, "n": n, "wins": int((clusters["delta_m"] > 0).sum()),
                    "delta_m_change": mean, "ci_low": lo, "ci_high": hi,
                    "median_change": median, "median_ci_low": m_lo, "median_ci_high": m_hi,
                    "helps": bool(np.isfinite(m_lo) and m_lo > 0),
                }
                for m in CHANGES:
                    values = clusters[m.name]
                    row[f"{m.name}_change"] = float(values.mean()) if values.notna().any() else np.nan
                row["lowers_conflict"] = _lowers(clusters, CONFLICT_MEASURES)
                row["lowers_forgetting"] = _lowers(clusters, FORGETTING_MEASURES)
                target = _target(row["family"], regime)
                values = clusters[target].dropna() if target else pd.Series(dtype=float)
                row["target_measure"] = target or ""
                row["target_lowered_share"] = float((values < 0).mean()) if len(values) else np.nan
                base_conflict = clusters["base_update_conflict"]
                row["baseline_update_conflict"] = float(base_conflict.mean()) if base_conflict.notna().any() else np.nan
                rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)




def _scopes(cells: pd.DataFrame, variant_columns: Sequence[str]):
    """Per regime: every variant pooled (``"all"``), then each variant on its own when there are several.

    A variant's row pairs the same seeds within that variant: on a suite whose variants are different
    worlds (the planted mechanisms) the pooled row mixes them and only the per-variant rows answer.
    """
    for regime, group in cells.groupby("regime", sort=False):
        yield (regime, ALL), group
        present = [c for c in variant_columns if c in group.columns]
        if not present:
            continue
        variants = group.groupby(present, dropna=False, sort=False)
        if variants.ngroups < 2:
            continue
        for key, sub in variants:
            key = key if isinstance(key, tuple) else (key,)
            yield (regime, variant_label(dict(zip(present, key)), present)), sub


def _target(family: str, regime: str) -> str | None:
    name = TARGETS.get(family)
    if name is None or (BY_NAME[name].source == "retention" and regime != "sequential"):
        return None
    return name


def _order(name: str) -> int:
    return list(REMEDIES).index(name) if name in REMEDIES else len(REMEDIES)


def remedy_verdict(table: pd.DataFrame) -> str:
    """What the interventions say about each explanation; empty when the runs have no remedies."""
    if table.empty:
        return ""
    lines = []
    pooled = table[table["variant"] == ALL] if "variant" in table else table
    for (regime, remedy), group in pooled.groupby(["regime", "remedy"], sort=False):
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
        measured = any(np.isfinite(row.get(f"{m.name}_change", np.nan))
                       for m in (CONFLICT_MEASURES if family == "conflict" else FORGETTING_MEASURES))
        if not np.isfinite(row["median_ci_low"]):
            effect = f"too few paired seeds for a confidence interval ({ci}); run 6 or more seeds × variants."
        elif helps:
            effect = f"reduces negative transfer against every baseline ({ci}): evidence for {target}."
        elif removed and row["median_ci_high"] < 0:
            effect = f"lowers {target} yet increases negative transfer ({ci}): evidence against {target} as the cause."
        elif removed:
            effect = (f"lowers {target} without a clear change in negative transfer ({ci}): "
                      f"no support for {target} as the cause.")
        elif not measured:
            worse = row["median_ci_high"] < 0
            change = "increases negative transfer" if worse else "no clear change in negative transfer"
            effect = (f"{change} ({ci}), and no per-cell {target} measure in this regime shows whether it removed "
                      f"{target}: says nothing about {target}.")
        else:
            effect = f"lowers neither {target} nor negative transfer clearly ({ci}): says nothing about {target}."
        lines.append(f"- {regime}, {remedy}: {effect}")
    if not lines:
        return "No conflict or forgetting remedy was run; the remedy table only compares weightings."
    return "\n".join(lines)

