"""The static-weight sweep's Pareto front, and which methods land beyond it (better than every static weighting).

A run with the sweep (``--remedy sweep-0,...,sweep-10``, :mod:`mtl_bench.remedies.sweep`)
and other methods is read per (suite, variant, architecture, order) group of the joint
regime, on each task's headline metric on the validation split (AUC for binary tasks,
MSE for regression), as a direction-aware score (``-MSE``). :func:`pareto_table` returns
one row per (group, remedy, task):

* ``score_mean``, ``score_ci_low``, ``score_ci_high``, ``n``: the score over seeds
  (Student-t 95% interval, cut to the score's range; ``score`` is the metric, negated for MSE);
* ``sweep``: the row is a sweep point; ``front``: a sweep point whose mean scores no
  other sweep point dominates;
* ``status`` (methods only): ``"beyond"`` when, against every sweep point, the method
  is better on some task with the 95% interval of the seed-paired difference above 0
  (no static weighting matches it); ``"inside"`` when some sweep point is better on
  every task with every such interval above 0; ``"undecided"`` otherwise (including
  one seed, whose intervals are NaN).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mtl_bench.analysis._style import COLORS, MARKERS, new_figure
from mtl_bench.analysis.summary import final_results, headline_metric
from mtl_bench.engine.metrics import mean_ci
from mtl_bench.remedies import REMEDIES, SWEEP
from mtl_bench.schema import JOINT

COLUMNS = ["remedy", "family", "sweep", "task", "metric", "score_mean", "score_ci_low", "score_ci_high", "n", "front",
           "status"]


def _scores(metrics: pd.DataFrame, variant_columns: Sequence[str]) -> pd.DataFrame:
    final = final_results(metrics, list(variant_columns))
    final = final[(final["regime"] == JOINT) & (final["split"] == "validation")]
    heads = final.groupby("task")["metric"].agg(lambda m: headline_metric(set(m)))
    final = final[final["metric"] == final["task"].map(heads)].copy()
    final["score"] = np.where(final["metric"] == "mse", -final["value"], final["value"])
    return final


def _front(means: pd.DataFrame) -> set[str]:
    """Sweep points (rows of ``means``, one column per task) that no other point dominates."""
    keep = set()
    for name, row in means.iterrows():
        others = means.drop(index=name)
        dominated = ((others >= row).all(axis=1) & (others > row).any(axis=1)).any()
        if not dominated:
            keep.add(name)
    return keep


def _status(method: pd.DataFrame, sweep: dict[str, pd.DataFrame]) -> str:
    """``method`` and each sweep point: seeds x tasks score tables."""
    beyond_all, inside = True, False
    for point in sweep.values():
        diff = (method - point).dropna()
        cis = [mean_ci(diff[t].to_numpy())[1:3] for t in diff.columns]
        beyond_all &= any(low > 0 for low, _ in cis)
        inside |= bool(cis) and all(high < 0 for _, high in cis)
    return "beyond" if beyond_all else "inside" if inside else "undecided"


def pareto_table(metrics: pd.DataFrame, variant_columns: Sequence[str]) -> pd.DataFrame:
    """The sweep's front and every method's position (module docstring); empty without two sweep points."""
    scores = _scores(metrics, variant_columns)
    group = ["suite", *variant_columns, "arch", "order"]
    rows: list[dict] = []
    for key, sub in scores.groupby(group, dropna=False):
        tables = {r: s.pivot_table(index="seed", columns="task", values="score") for r, s in sub.groupby("remedy")}
        sweep = {r: t for r, t in tables.items() if r in SWEEP}
        if len(sweep) < 2:
            continue
        front = _front(pd.DataFrame({r: t.mean() for r, t in sweep.items()}).T)
        for remedy, table in sorted(tables.items(), key=lambda kv: list(REMEDIES).index(kv[0]) if kv[0] in REMEDIES else 0):
            status = "" if remedy in sweep else _status(table, sweep)
            for task in table.columns:
                metric = sub[sub["task"] == task]["metric"].iloc[0]
                mean, low, high, n = mean_ci(table[task].to_numpy(), bounds=(-np.inf, 0.0) if metric == "mse" else (0.0, 1.0))
                rows.append({**dict(zip(group, key)), "remedy": remedy,
                             "family": REMEDIES[remedy].family if remedy in REMEDIES else "", "sweep": remedy in sweep,
                             "task": task, "metric": metric, "score_mean": mean,
                             "score_ci_low": low, "score_ci_high": high, "n": n, "front": remedy in front, "status": status})
    return pd.DataFrame(rows, columns=[*group, *COLUMNS])


def markdown(table: pd.DataFrame, to_markdown: Callable[[pd.DataFrame], str]) -> list[str]:
    """The report's section on the sweep: which methods land beyond the static-weight front; none without a sweep."""
    if table.empty:
        return []
    methods = table[~table["sweep"]].drop_duplicates([c for c in table.columns if c not in COLUMNS] + ["remedy"])
    counts = ", ".join(f"{status} {n}" for status, n in methods["status"].value_counts().items())
    beyond = sorted(set(methods[methods["status"] == "beyond"]["remedy"]))
    if beyond:
        said = f"{len(beyond)} method(s) land beyond every static weighting: {', '.join(beyond)}."
    elif (methods["status"] == "inside").all():
        said = "No method lands beyond the static-weight front: a static weighting beats each of them."
    else:
        said = ("No method is shown to land beyond the static-weight front; the undecided ones need more seeds "
                "(the intervals are seed-paired).")
    return ["## Methods against the static-weight sweep (validation split)", "",
            f"{said} Methods × variants: {counts} (`beyond`: better than every sweep point on some "
            "task, seed-paired 95% interval; `inside`: some sweep point is better on every task; `undecided` "
            "otherwise). `pareto.csv` holds every point.", "", to_markdown(table), ""]


def pareto_figure(table: pd.DataFrame) -> Figure:
    """Two tasks: the sweep's points and front, every method's mean with its 95% intervals; one panel per group."""
    group = [c for c in table.columns if c not in COLUMNS]
    groups = list(table.groupby(group, dropna=False)) if not table.empty else []
    fig = new_figure(6.8 * max(len(groups), 1), 4.4)
    axes = fig.subplots(1, max(len(groups), 1), squeeze=False)[0]
    for ax, (key, sub) in zip(axes, groups):
        tasks = list(dict.fromkeys(sub["task"]))[:2]
        wide = {c: sub.pivot_table(index="remedy", columns="task", values=c) for c in ("score_mean", "score_ci_low",
                                                                                      "score_ci_high")}
        sweep = sub[sub["sweep"]]["remedy"].unique()
        front = sorted(sub[sub["front"]]["remedy"].unique(), key=lambda r: wide["score_mean"].loc[r, tasks[0]])
        m = wide["score_mean"]
        ax.scatter(m.loc[sweep, tasks[0]], m.loc[sweep, tasks[1]], color="0.6", s=18, label="static weights")
        ax.plot(m.loc[front, tasks[0]], m.loc[front, tasks[1]], color="0.3", lw=1, label="sweep's front")
        methods = [r for r in m.index if r not in sweep]
        for i, r in enumerate(methods):
            x, y = m.loc[r, tasks[0]], m.loc[r, tasks[1]]
            xerr = [[x - wide["score_ci_low"].loc[r, tasks[0]]], [wide["score_ci_high"].loc[r, tasks[0]] - x]]
            yerr = [[y - wide["score_ci_low"].loc[r, tasks[1]]], [wide["score_ci_high"].loc[r, tasks[1]] - y]]
            status = sub[sub["remedy"] == r]["status"].iloc[0]
            ax.errorbar(x, y, xerr=np.nan_to_num(xerr), yerr=np.nan_to_num(yerr), fmt=MARKERS[i % len(MARKERS)],
                        color=COLORS[i % len(COLORS)], ms=6, capsize=2, label=f"{r} ({status})")
        metric = dict(zip(sub["task"], sub["metric"]))
        label = lambda t: f"{t} {'-MSE' if metric[t] == 'mse' else metric[t].upper()}"  # noqa: E731
        title = ", ".join(f"{c}={k}" for c, k in zip(group, np.atleast_1d(key)) if str(k) not in ("-", "nan"))
        ax.set(xlabel=label(tasks[0]), ylabel=label(tasks[1]), title=title)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig
