"""Figures of a run: each function takes the run's DataFrames and returns a matplotlib Figure.

The functions use the Agg canvas directly and never touch pyplot, so they hold
no global state and work in scripts, tests and notebooks alike. The frames are
the run directory's CSV files as read by :func:`pandas.read_csv` (or
:func:`mtl_bench.analysis.report.load_runs`). :func:`write_plots` writes every figure
whose inputs exist into the run directory (``mtl-bench report --plots``).

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
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from scipy import stats

from mtl_bench import io
from mtl_bench.measures.catalog import BY_NAME
from mtl_bench.analysis.summary import headline_metric, with_remedy
from mtl_bench.schema import ALL, BASELINE, MEAN_TASK, SHARED_WEIGHTS, SINGLE, SPLIT

RUN_COLUMN = "run"  # which run directory a row of several runs' summaries came from
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray")
# The measures of :mod:`mtl_bench.measures.catalog` the figures read, as (source record, catalog name). The keys are the
# ``x`` / ``y`` arguments of :func:`conflict_vs_retention`.
X_MEASURES = {key: (BY_NAME[name].record, name) for key, name in (("cosine", "cosine"), ("conflict", "conflict_rate"))}
Y_MEASURES = {key: (BY_NAME[name].record, name)
              for key, name in (("retention", "retention"), ("forgetting", "sequential_forgetting"))}
COSINE = BY_NAME["cosine"].record  # symmetric in the task pair
AFFINITY = BY_NAME["affinity_in"].record  # directional: i → j
DYNAMICS = (COSINE, AFFINITY)
OUTPUT_DRIFT = BY_NAME["output_drift"].record
FORGETTING = BY_NAME["sequential_forgetting"].record  # retention.csv names it f"{record}_{headline metric}"
# The verdict figure: one colour per explanation, the same in every run.
EXPLANATION_COLORS = {"conflict": "tab:red", "forgetting": "tab:blue", "both": "tab:purple", "neither": "tab:green",
                      "undetermined": "tab:gray"}


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def variant_columns_of(frame: pd.DataFrame) -> list[str]:
    """The variant columns of a run-directory frame: those between ``suite`` and ``arch``."""
    cols = list(frame.columns)
    if "suite" not in cols or "arch" not in cols:
        return []
    return cols[cols.index("suite") + 1 : cols.index("arch")]


def _variant_keys(frame: pd.DataFrame, variant_columns: Sequence[str] | None) -> list[str]:
    return ["suite", *(variant_columns_of(frame) if variant_columns is None else variant_columns)]


def _label(keys: Sequence[str], values: Sequence) -> str:
    suite, *rest = values
    # A run's directory name (e.g. a sparse-dense point, ``embedding_dim=16``) labels itself.
    parts = [str(suite)] + [str(v) if k == RUN_COLUMN else f"{k}={v}" for k, v in zip(keys[1:], rest) if not pd.isna(v)]
    return " ".join(parts)


def _scatter_by_arch_and_suite(ax: Axes, points: pd.DataFrame, x: str, y: str) -> None:
    """One scatter series per architecture (colour) and suite (marker)."""
    colors = _styles(points["arch"], COLORS)
    markers = _styles(points["suite"], MARKERS)
    for (arch, suite), group in points.groupby(["arch", "suite"], sort=False):
        ax.scatter(group[x], group[y], c=colors[arch], marker=markers[suite], label=f"{arch} · {suite}", alpha=0.8)


def _styles(values: Sequence, palette: Sequence[str]) -> dict:
    return {v: palette[i % len(palette)] for i, v in enumerate(dict.fromkeys(values))}


def _headline(frame: pd.DataFrame, prefix: str) -> dict[str, str]:
    """Each task's headline metric, from measure names such as ``retention_auc``."""
    metrics: dict[str, set[str]] = {}
    for task, measure in zip(frame["task"], frame["measure"]):
        if isinstance(measure, str) and measure.startswith(prefix + "_"):
            metrics.setdefault(task, set()).add(measure[len(prefix) + 1 :])
    return {t: headline_metric(m) for t, m in metrics.items()}


def _last_phase(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    last = frame.groupby(list(keys), dropna=False)["phase"].transform("max")
    return frame[frame["phase"] == last]


def _empty(fig: Figure, text: str) -> Figure:
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return fig


def _contrast_text(contrast_table: pd.DataFrame | None, name: str) -> str:
    if contrast_table is None or contrast_table.empty or name not in set(contrast_table["measure"]):
        return f"{name}: no contrast"
    row = contrast_table[contrast_table["measure"] == name].iloc[0]
    return f"ρ(transfer, {name}) = {row['spearman']:+.2f} [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]"


def conflict_retention_points(
    probe: pd.DataFrame,
    retention: pd.DataFrame,
    *,
    x: str = "cosine",
    y: str = "retention",
    variant_columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per task pair × variant × arch × seed: the joint-run x measure and the sequential y measure.

    For the ordered pair (i, j), x is the mean of the probe's ``x`` measure
    between i and j over joint training (all shared weights), and y is task i's
    ``y`` measure (on its headline metric) after the last phase of the
    sequential orders that train i before j.

    Args:
        probe: ``probe.csv`` rows.
        retention: ``retention.csv`` rows.
        x: ``"cosine"`` or ``"conflict"`` (the conflict rate).
        y: ``"retention"`` or ``"forgetting"``.
        variant_columns: The run's variant columns; default: inferred from ``probe``.

    Returns:
        Columns ``suite, <variant>, arch, seed, task_i, task_j, x, y``.
    """
    variant = _variant_keys(probe, variant_columns)
    columns = [*variant, "arch", "seed", "task_i", "task_j", "x", "y"]
    if probe.empty or retention.empty:
        return pd.DataFrame(columns=columns)
    joint = probe[(probe["regime"] == "joint") & (probe["measure"] == X_MEASURES[x][0]) & (probe["group"] == "all")]
    joint = joint[joint["task_i"] != joint["task_j"]]
    xs = joint.groupby([*variant, "arch", "seed", "task_i", "task_j"], dropna=False)["value"].mean().rename("x").reset_index()
    prefix = Y_MEASURES[y][0]
    headline = _headline(retention, prefix)
    seq = retention[(retention["regime"] == "sequential") & retention["task"].isin(headline)]
    seq = seq[[m == f"{prefix}_{headline[t]}" for t, m in zip(seq["task"], seq["measure"])]]
    seq = _last_phase(seq, [*variant, "arch", "order", "seed"])
    rows = []
    for r in xs.itertuples(index=False):
        key = dict(zip(xs.columns, r))
        match = seq[(seq["arch"] == key["arch"]) & (seq["seed"] == key["seed"]) & (seq["task"] == key["task_i"])]
        for c in variant:
            match = match[(match[c] == key[c]) | (match[c].isna() & pd.isna(key[c]))]
        first = [_before(str(o), key["task_i"], key["task_j"]) for o in match["order"]]
        match = match[first] if len(match) else match
        if len(match):
            rows.append({**key, "y": float(match["value"].mean())})
    return pd.DataFrame(rows, columns=columns)


def _before(order: str, first: str, second: str) -> bool:
    tasks = order.split(">")
    return first in tasks and second in tasks and tasks.index(first) < tasks.index(second)


def conflict_vs_retention(
    probe: pd.DataFrame,
    retention: pd.DataFrame,
    contrast_table: pd.DataFrame | None = None,
    *,
    x: str = "cosine",
    y: str = "retention",
    variant_columns: Sequence[str] | None = None,
) -> Figure:
    """Gradient conflict in joint training against retention in sequential training.

    One point per task pair × variant × architecture × seed (see
    :func:`conflict_retention_points`), coloured by architecture, marker by
    suite. The title carries the report's rank correlation of transfer with
    the x and the y measure and their bootstrap 95% CIs.

    Args:
        probe: ``probe.csv`` rows.
        retention: ``retention.csv`` rows.
        contrast_table: ``mtl_bench.analysis.report.contrast(...).table``; None leaves it out of the title.
        x: ``"cosine"`` or ``"conflict"``.
        y: ``"retention"`` or ``"forgetting"``.
        variant_columns: The run's variant columns; default: inferred from ``probe``.

    Returns:
        A figure with one axes.
    """
    points = conflict_retention_points(probe, retention, x=x, y=y, variant_columns=variant_columns)
    fig = _figure(7, 5)
    if points.empty:
        return _empty(fig, "no joint probe and sequential retention rows to pair")
    ax = fig.add_subplot()
    _scatter_by_arch_and_suite(ax, points, "x", "y")
    ax.set_xlabel(f"joint training: mean gradient {'cosine' if x == 'cosine' else 'conflict rate'} (task i, task j)")
    ax.set_ylabel(f"sequential: {y} of task i after training task j")
    ax.axvline(0 if x == "cosine" else 0.5, color="0.7", lw=0.8, zorder=0)
    ax.legend(fontsize="small")
    ax.set_title(
        f"Conflict vs {y} ({len(points)} points)\n"
        f"{_contrast_text(contrast_table, X_MEASURES[x][1])}; {_contrast_text(contrast_table, Y_MEASURES[y][1])}",
        fontsize="medium",
    )
    return fig


def negative_transfer(summary: pd.DataFrame, *, split: str = SPLIT, variant_columns: Sequence[str] | None = None) -> Figure:
    """Transfer vs single-task per task and architecture, with 95% CI bars (single-task at 0).

    One panel per multi-task regime (and sequential order) × suite variant;
    each panel has one bar per task × architecture. Each task's headline metric
    (AUC or MSE), ``split`` rows of ``summary.csv``. Below 0 is negative transfer.

    Args:
        summary: ``summary.csv`` rows.
        split: The split to show; model selection only ever uses validation.
        variant_columns: The run's variant columns; default: inferred from ``summary``.

    Returns:
        A figure with one axes per regime/order × variant.
    """
    variant = _variant_keys(summary, variant_columns)
    s = summary[(summary["split"] == split) & (summary["regime"] != SINGLE) & (summary["task"] != ALL)]
    headline = {t: headline_metric(set(g["metric"])) for t, g in s.groupby("task")}
    s = s[[m == headline[t] for t, m in zip(s["task"], s["metric"])]]
    s = s[s["transfer"].notna()]
    fig = _figure(4, 3)
    if s.empty:
        return _empty(fig, "no multi-task rows with transfer in summary")
    rows = list(dict.fromkeys(zip(s["regime"], s["order"])))
    cols = list(dict.fromkeys(s[variant].itertuples(index=False, name=None)))
    tasks = list(dict.fromkeys(s["task"]))
    archs = list(dict.fromkeys(s["arch"]))
    colors = _styles(archs, COLORS)
    fig.set_size_inches(max(4.0, 1.2 + 0.45 * len(tasks) * len(archs)) * len(cols), 2.8 * len(rows))
    axes = fig.subplots(len(rows), len(cols), squeeze=False, sharey="row")
    width = 0.8 / len(archs)
    for r, (regime, order) in enumerate(rows):
        for c, values in enumerate(cols):
            ax: Axes = axes[r][c]
            panel = s[(s["regime"] == regime) & (s["order"] == order)]
            for k, v in zip(variant, values):
                panel = panel[(panel[k] == v) | (panel[k].isna() & pd.isna(v))]
            for a, arch in enumerate(archs):
                bars = panel[panel["arch"] == arch].set_index("task").reindex(tasks).dropna(subset=["transfer"])
                if bars.empty:
                    continue
                pos = np.array([tasks.index(t) for t in bars.index]) + (a - (len(archs) - 1) / 2) * width
                err = np.abs(np.vstack([bars["transfer"] - bars["transfer_ci_low"], bars["transfer_ci_high"] - bars["transfer"]]))
                ax.bar(pos, bars["transfer"], width, yerr=np.nan_to_num(err), capsize=2, color=colors[arch],
                       label=arch if r == 0 and c == 0 else None)
            ax.axhline(0, color="black", lw=0.8)
            ax.set_xticks(range(len(tasks)), tasks)
            where = regime if order in ("-", "") or pd.isna(order) else f"{regime} {order}"
            ax.set_title(f"{_label(variant, values)}\n{where}", fontsize="small")
            if c == 0:
                ax.set_ylabel("transfer vs single-task\n(single-task = 0)")
    fig.legend(loc="outside lower center", ncols=len(archs), fontsize="small")
    fig.suptitle(f"Transfer vs single-task ({split}, headline metric, 95% CI over seeds; < 0 = negative transfer)",
                 fontsize="medium")
    return fig


def training_dynamics(
    probe: pd.DataFrame,
    *,
    arch: str | None = None,
    regime: str = "joint",
    measures: Sequence[str] = DYNAMICS,
    variant_columns: Sequence[str] | None = None,
) -> Figure:
    """Gradient cosine and TAG affinity over training steps, per layer group.

    One panel per measure × layer group present; one line per task pair and
    suite variant, averaged over seeds (and over architectures when ``arch``
    is None). Cosine is symmetric, so each unordered pair is drawn once;
    affinity i→j is directional.

    Args:
        probe: ``probe.csv`` rows.
        arch: One architecture, or None to pool them.
        regime: ``"joint"`` (the default) or ``"sequential"``.
        measures: Probe measures to draw, one row of panels each.
        variant_columns: The run's variant columns; default: inferred from ``probe``.

    Returns:
        A figure with one axes per (measure, group) pair found.
    """
    variant = _variant_keys(probe, variant_columns)
    fig = _figure(4, 3)
    rows = probe[(probe["regime"] == regime) & probe["measure"].isin(measures) & (probe["task_i"] != probe["task_j"])] \
        if not probe.empty else probe
    if arch is not None and not rows.empty:
        rows = rows[rows["arch"] == arch]
    if rows.empty:
        return _empty(fig, f"no {regime} probe rows for {', '.join(measures)}")
    symmetric = rows["measure"] == COSINE
    rows = rows[~symmetric | (rows["task_i"] < rows["task_j"])]
    panels = [[(m, g) for g in dict.fromkeys(rows[rows["measure"] == m]["group"])] for m in measures]
    panels = [p for p in panels if p]
    ncols = max(len(p) for p in panels)
    fig.set_size_inches(3.6 * ncols, 3.0 * len(panels))
    grid = fig.add_gridspec(len(panels), ncols)
    variants = list(dict.fromkeys(rows[variant].itertuples(index=False, name=None)))
    colors = _styles(variants, COLORS)
    pairs = list(dict.fromkeys(zip(rows["task_i"], rows["task_j"])))
    styles = _styles(pairs, ("-", "--", ":", "-."))
    for r, row in enumerate(panels):
        for c, (measure, group) in enumerate(row):
            ax = fig.add_subplot(grid[r, c])
            data = rows[(rows["measure"] == measure) & (rows["group"] == group)]
            curves = data.groupby([*variant, "task_i", "task_j", "step"], dropna=False)["value"].mean()
            for key, curve in curves.groupby(level=list(range(len(variant) + 2)), sort=False):
                *values, ti, tj = key
                steps = curve.index.get_level_values("step")
                arrow = "·" if measure == COSINE else "→"
                ax.plot(steps, curve.to_numpy(), color=colors[tuple(values)], ls=styles[(ti, tj)], lw=1.2,
                        label=f"{ti}{arrow}{tj} {_label(variant, values)}")
            ax.axhline(0, color="0.6", lw=0.8, zorder=0)
            ax.set_title(f"{measure} · {group}", fontsize="small")
            ax.set_xlabel("training step")
            if c == 0:
                ax.set_ylabel(measure)
            if r == 0 and c == 0:
                ax.legend(fontsize="x-small")
    fig.suptitle(f"Probe over {regime} training ({arch or 'all architectures'}; mean over seeds)", fontsize="medium")
    return fig


def accuracy_matrix(metrics: pd.DataFrame, *, split: str = SPLIT, variant_columns: Sequence[str] | None = None) -> Figure:
    """The sequential accuracy matrix R[phase, task] as heatmaps, averaged over seeds.

    One heatmap per suite variant × order (rows) and architecture (columns);
    cells hold each task's headline metric after each phase, annotated.

    Args:
        metrics: ``metrics.csv`` rows.
        split: The evaluated split.
        variant_columns: The run's variant columns; default: inferred from ``metrics``.

    Returns:
        A figure with one axes per variant × order × architecture.
    """
    variant = _variant_keys(metrics, variant_columns)
    fig = _figure(4, 3)
    m = metrics[(metrics["regime"] == "sequential") & (metrics["stage"] == "final") & (metrics["split"] == split)] \
        if not metrics.empty else metrics
    if m.empty:
        return _empty(fig, "no sequential runs")
    headline = {t: headline_metric(set(g["metric"])) for t, g in m.groupby("task")}
    m = m[[x == headline[t] for t, x in zip(m["task"], m["metric"])]]
    cells = m.groupby([*variant, "order", "arch", "phase", "task"], dropna=False, sort=False)["value"].mean().reset_index()
    rows = list(dict.fromkeys(cells[[*variant, "order"]].itertuples(index=False, name=None)))
    archs = list(dict.fromkeys(cells["arch"]))
    fig.set_size_inches(3.2 * len(archs), 2.6 * len(rows))
    axes = fig.subplots(len(rows), len(archs), squeeze=False)
    for r, key in enumerate(rows):
        for c, arch in enumerate(archs):
            ax: Axes = axes[r][c]
            sel = cells[cells["arch"] == arch]
            for k, v in zip([*variant, "order"], key):
                sel = sel[(sel[k] == v) | (sel[k].isna() & pd.isna(v))]
            order = str(key[-1])
            tasks = [t for t in order.split(">") if t in set(sel["task"])] or list(dict.fromkeys(sel["task"]))
            grid = sel.pivot_table(index="phase", columns="task", values="value", aggfunc="mean").reindex(columns=tasks)
            values = grid.to_numpy(float)
            finite = values[np.isfinite(values)]
            # Log colours: an untrained task's error would otherwise flatten every other cell to one colour.
            norm = LogNorm() if finite.size and (finite > 0).all() and np.ptp(finite) > 0 else None
            image = ax.imshow(values, cmap="viridis_r" if headline.get(tasks[0]) != "auc" else "viridis",
                              norm=norm, aspect="auto")
            for (i, j), value in np.ndenumerate(values):
                if np.isfinite(value):
                    shade = image.cmap(image.norm(value))
                    dark = 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2] < 0.5
                    ax.text(j, i, f"{value:.3g}", ha="center", va="center", color="white" if dark else "black",
                            fontsize="small")
            ax.set_xticks(range(len(tasks)), [f"{t}\n({headline.get(t, '')})" for t in tasks], fontsize="small")
            ax.set_yticks(range(len(grid.index)), [f"after {order.split('>')[p] if p < len(order.split('>')) else p}"
                                                   for p in grid.index], fontsize="small")
            ax.set_title(f"{_label(variant, key[:-1])}\n{arch} · {order}", fontsize="small")
    fig.suptitle(f"Sequential accuracy matrix R[phase, task] ({split}, mean over seeds)", fontsize="medium")
    return fig


def drift_vs_forgetting(retention: pd.DataFrame, *, variant_columns: Sequence[str] | None = None) -> Figure:
    """Output drift against forgetting in sequential training (RL's Razor).

    One point per sequential cell × task that later phases could make it forget:
    x is the KL between the task's predictions before and after the later
    phases, y its forgetting on its headline metric, both after the last phase.
    Coloured by architecture, marker by suite; the title has Spearman's ρ.

    Args:
        retention: ``retention.csv`` rows.
        variant_columns: The run's variant columns; default: inferred from ``retention``.

    Returns:
        A figure with one axes.
    """
    variant = _variant_keys(retention, variant_columns)
    fig = _figure(6.5, 4.8)
    if retention.empty:
        return _empty(fig, "no retention rows")
    headline = _headline(retention, FORGETTING)
    seq = retention[(retention["regime"] == "sequential") & retention["task"].isin(headline)]
    cell = [*variant, "arch", "order", "seed"]
    seq = _last_phase(seq, cell)
    drift = seq[seq["measure"] == OUTPUT_DRIFT]
    forget = seq[[m == f"{FORGETTING}_{headline[t]}" for t, m in zip(seq["task"], seq["measure"])]]
    keys = [*cell, "phase", "task"]
    points = drift.merge(forget, on=keys, suffixes=("_drift", "_forgetting"), how="inner")
    if points.empty:
        return _empty(fig, "no output drift and forgetting rows to pair")
    ax = fig.add_subplot()
    _scatter_by_arch_and_suite(ax, points, "value_drift", "value_forgetting")
    x, y = points["value_drift"].to_numpy(float), points["value_forgetting"].to_numpy(float)
    rho = float(stats.spearmanr(x, y).statistic) if len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0 else float("nan")
    ax.set_xscale("symlog", linthresh=1e-3)
    spread = np.abs(y[np.isfinite(y)])
    if spread.size and spread.max() > 100 * max(np.median(spread), 1e-12):
        ax.set_yscale("symlog", linthresh=float(max(np.median(spread), 1e-6)))
    ax.set_xlabel("output drift: KL(predictions before ‖ after later phases)")
    ax.set_ylabel("forgetting (headline metric)")
    ax.legend(fontsize="small")
    ax.set_title(f"Output drift vs forgetting (RL's Razor): Spearman ρ = {rho:+.2f}, n = {len(points)}", fontsize="medium")
    return fig


def gates(probe: pd.DataFrame, *, regime: str = "joint") -> Figure:
    """Gate utilisation per task and expert (heatmap) and gate entropy over training.

    One column per gated architecture: on top, the mean gate weight each task
    gives each expert over the run (all variants, seeds and probe steps); below,
    each task's gate entropy over training steps, mean over variants and seeds.

    Args:
        probe: ``probe.csv`` rows.
        regime: ``"joint"`` (the default) or ``"sequential"``.

    Returns:
        A figure with two axes per gated architecture.
    """
    fig = _figure(4, 3)
    rows = probe[(probe["regime"] == regime) & probe["measure"].isin(["gate_weight", "gate_entropy"])] \
        if not probe.empty else probe
    if rows.empty:
        return _empty(fig, f"no gate rows in the {regime} probe (no gated architecture?)")
    archs = list(dict.fromkeys(rows["arch"]))
    fig.set_size_inches(4.5 * len(archs), 6.5)
    axes = fig.subplots(2, len(archs), squeeze=False)
    for c, arch in enumerate(archs):
        weights = rows[(rows["arch"] == arch) & (rows["measure"] == "gate_weight")]
        grid = weights.pivot_table(index="task_i", columns="task_j", values="value", aggfunc="mean", sort=False)
        grid = grid.reindex(columns=sorted(grid.columns, key=_expert_index))
        ax: Axes = axes[0][c]
        image = ax.imshow(grid.to_numpy(float), cmap="magma", aspect="auto", vmin=0)
        ax.set_xticks(range(grid.shape[1]), [str(e).replace("expert", "") for e in grid.columns], fontsize="small")
        ax.set_yticks(range(grid.shape[0]), list(grid.index))
        ax.set_xlabel("expert")
        ax.set_title(f"{arch}: mean gate weight", fontsize="small")
        fig.colorbar(image, ax=ax, shrink=0.8)
        ax = axes[1][c]
        entropy = rows[(rows["arch"] == arch) & (rows["measure"] == "gate_entropy")]
        for task, curve in entropy.groupby("task_i", sort=False):
            mean = curve.groupby("step")["value"].mean()
            ax.plot(mean.index, mean.to_numpy(), label=str(task))
        if grid.shape[1]:
            ax.axhline(np.log(grid.shape[1]), color="0.6", ls="--", lw=0.8, label=f"uniform over {grid.shape[1]}")
        ax.set_xlabel("training step")
        ax.set_ylabel("gate entropy (nats)")
        ax.set_title(f"{arch}: gate entropy", fontsize="small")
        ax.legend(fontsize="x-small")
    fig.suptitle(f"Gate health ({regime} training)", fontsize="medium")
    return fig


def _expert_index(name: object) -> tuple[int, str]:
    digits = "".join(ch for ch in str(name) if ch.isdigit())
    return (int(digits) if digits else -1, str(name))


def remedy_effects(table: pd.DataFrame, *, baseline: str = BASELINE) -> Figure:
    """Each remedy's median paired change in Δm vs ``baseline`` with its 95% CI, beside the change in its target measure.

    Args:
        table: :func:`mtl_bench.analysis.remedies.remedy_table`.
        baseline: The baseline the changes are taken against.
    """
    if not table.empty and "variant" in table:
        table = table[table["variant"] == "all"]  # the pooled rows; per-variant rows are in remedies.csv
    rows = table[table["baseline"] == baseline].reset_index(drop=True) if not table.empty else table
    fig = _figure(11, 0.45 * max(len(rows), 4) + 1.6)
    if rows.empty:
        return _empty(fig, f"no remedy was compared with {baseline!r}")
    left, right = fig.subplots(1, 2, sharey=True)
    families = _styles(list(dict.fromkeys(rows["family"])), COLORS)
    y = np.arange(len(rows))[::-1]
    labels = [f"{r.regime}: {r.remedy}" for r in rows.itertuples()]
    for k, r in enumerate(rows.itertuples()):
        color = families[r.family]
        lo = r.median_change - r.median_ci_low if np.isfinite(r.median_ci_low) else 0.0
        hi = r.median_ci_high - r.median_change if np.isfinite(r.median_ci_high) else 0.0
        left.errorbar(r.median_change, y[k], xerr=[[lo], [hi]], fmt="o", color=color, capsize=3)
        # Scale-free: how often the remedy lowered the measure its family targets.
        if np.isfinite(r.target_lowered_share):
            right.barh(y[k], r.target_lowered_share, color=color, alpha=0.7)
            right.annotate(r.target_measure, (r.target_lowered_share, y[k]), fontsize=7, va="center",
                           xytext=(3, 0), textcoords="offset points")
        elif r.family in ("conflict", "forgetting"):
            right.annotate(f"no per-cell {r.family} measure in this regime", (0, y[k]), fontsize=7, va="center",
                           color="0.4", xytext=(3, 0), textcoords="offset points")
    left.axvline(0, color="black", linewidth=0.8)
    right.axvline(0.5, color="gray", linewidth=0.8, linestyle="--")
    right.set_xlim(0, 1.35)
    left.set_yticks(y, labels)
    left.set_xscale("symlog", linthresh=1.0)  # sequential Δm changes run to thousands of points, joint ones to a few
    left.set_xlabel(f"median Δm change vs {baseline} (points, symlog; > 0 = less negative transfer)")
    right.set_xlabel("share of seeds where the remedy lowered its targeted measure")
    handles = [left.plot([], [], "o", color=c)[0] for c in families.values()]
    left.legend(handles, list(families), fontsize=8, loc="best")
    fig.suptitle("Interventions: does removing the mechanism remove negative transfer? "
                 "(validation; median and its 95% sign-test CI over seeds)")
    return fig


def verdict(entries: Sequence[dict] | pd.DataFrame, variant_columns: Sequence[str]) -> Figure:
    """Each task's verdict: its transfer (left) and where its evidence puts it (right).

    Left: per suite variant × architecture × task, ``log_transfer`` (100 · ln of
    the joint over the single-task value; < 0 is negative transfer) with its 95%
    t-interval over seeds, coloured by the task's explanation; 0 and the
    ``-TOLERANCE`` bound of a ``no`` are marked. Right: the evidence map, one
    point per task: x the conflict ratio, y ``absence_excess``
    (``absence_damage - absence_floor``), each with the interval the verdict
    reads (97.5%); dashed lines at ``-CONFLICT_RATIO`` and 0 split it into the
    quadrants of the explanations. A task whose training never lacked its labels
    has no ``absence_excess``: it is drawn hollow at y = 0. Numbers tie the
    right panel's points to the left panel's rows.

    Args:
        entries: :func:`mtl_bench.analysis.verdict.verdicts` (``report.build_report(...)[1].verdicts``), or
            a table shaped like :func:`mtl_bench.analysis.verdict.frame` of them.
        variant_columns: The suite parameters that identify a variant.

    Returns:
        A figure with two axes.
    """
    from mtl_bench.analysis import verdict as verdict_lib

    table = entries if isinstance(entries, pd.DataFrame) else verdict_lib.frame(entries, variant_columns)
    fig = _figure(13, 4)
    if table.empty:
        return _empty(fig, "no verdicts (the joint regime was not run)")
    table = table.reset_index(drop=True)
    variant = [c for c in variant_columns if c in table.columns]
    # The suite and the architecture only label the rows when they vary.
    keys = [k for k in ("suite", *variant, "arch") if k in variant or table[k].nunique() > 1]
    labels = [" ".join([*(f"{k}={r[k]}" if k in variant else str(r[k]) for k in keys if not pd.isna(r[k])),
                        str(r["task"])]) for _, r in table.iterrows()]
    n = len(table)
    colors = [EXPLANATION_COLORS.get(e, "black") for e in table["explanation"]]
    fig.set_size_inches(13, 2.6 + 0.32 * max(n, 6))
    left, right = fig.subplots(1, 2, width_ratios=[1.1, 1])

    y = np.arange(n)[::-1].astype(float)
    mean = table["log_transfer"].to_numpy(float)
    err = np.vstack([mean - table["ci_low"].to_numpy(float), table["ci_high"].to_numpy(float) - mean])
    for k in range(n):
        if np.isfinite(err[:, k]).all():
            left.errorbar(mean[k], y[k], xerr=err[:, k : k + 1], fmt="none", ecolor=colors[k], capsize=3, lw=1.2)
    left.scatter(mean, y, c=colors, s=36, zorder=3, gid="transfer")
    left.axvline(0, color="black", lw=0.8)
    left.axvline(-verdict_lib.TOLERANCE, color="0.6", lw=0.8, ls=":")
    left.set_yticks(y, [f"{lab}  [{k + 1}]" for k, lab in enumerate(labels)], fontsize="small")
    left.set_ylim(-0.7, n - 0.3)
    left.set_xlabel("log_transfer: 100·ln(joint / single-task), sign-corrected (< 0 = negative transfer)",
                    fontsize="small")
    left.set_title("Transfer vs single-task (mean, 95% CI over seeds)", fontsize="medium")
    left.grid(axis="x", color="0.9", lw=0.6)
    handles = [left.scatter([], [], c=c, s=36, label=name) for name, c in EXPLANATION_COLORS.items()]
    handles.append(left.plot([], [], color="0.6", lw=0.8, ls=":",
                             label=f"-{verdict_lib.TOLERANCE:g}: 'no' needs the CI above it")[0])

    x = table["conflict_ratio"].to_numpy(float) if "conflict_ratio" in table else np.full(n, np.nan)
    excess = table["absence_excess"].to_numpy(float) if "absence_excess" in table else np.full(n, np.nan)
    col = lambda name: table[name].to_numpy(float) if name in table else np.full(n, np.nan)  # noqa: E731
    x_err = np.vstack([x - col("conflict_ratio_ci_low"), col("conflict_ratio_ci_high") - x])
    y_err = np.vstack([excess - col("absence_excess_ci_low"), col("absence_excess_ci_high") - excess])
    shown = np.isfinite(x)
    measured = shown & np.isfinite(excess)
    hollow = shown & ~np.isfinite(excess)
    ys = np.where(measured, excess, 0.0)
    for k in np.flatnonzero(shown):
        xe = x_err[:, k : k + 1] if np.isfinite(x_err[:, k]).all() else None
        ye = y_err[:, k : k + 1] if measured[k] and np.isfinite(y_err[:, k]).all() else None
        if xe is not None or ye is not None:
            right.errorbar(x[k], ys[k], xerr=xe, yerr=ye, fmt="none", ecolor=colors[k], capsize=2, lw=1.0, alpha=0.8)
    pick = lambda mask: [c for c, m in zip(colors, mask) if m]  # noqa: E731
    right.scatter(x[measured], ys[measured], c=pick(measured), s=40, zorder=3, gid="evidence")
    right.scatter(x[hollow], ys[hollow], facecolors="none", edgecolors=pick(hollow), s=40, linewidths=1.4, zorder=3,
                  gid="evidence_no_stretch")
    right.axvline(-verdict_lib.CONFLICT_RATIO, color="0.3", lw=0.9, ls="--")
    right.axhline(verdict_lib.FORGETTING_RISE, color="0.3", lw=0.9, ls="--")
    x_lo, x_hi = right.get_xlim()
    x_lo, x_hi = min(x_lo, -1.05), max(x_hi, 1.05)
    y_lo, y_hi = right.get_ylim()
    span = max(abs(y_lo), abs(y_hi), 0.05)
    y_lo, y_hi = min(y_lo, -0.3 * span), max(y_hi, 0.3 * span)
    right.set_xlim(x_lo, x_hi)
    right.set_ylim(y_lo, y_hi)
    # Points close together (the tasks of a variant share their conflict ratio) share one label.
    groups: list[tuple[float, float, list[str]]] = []
    for k in np.flatnonzero(shown):
        fx, fy = (x[k] - x_lo) / (x_hi - x_lo), (ys[k] - y_lo) / (y_hi - y_lo)
        near = next((g for g in groups if np.hypot(g[0] - fx, g[1] - fy) < 0.05), None)
        if near is None:
            groups.append((fx, fy, [str(k + 1)]))
        else:
            near[2].append(str(k + 1))
    for fx, fy, names in groups:
        right.annotate(",".join(names), (fx, fy), xycoords="axes fraction", xytext=(4, 4), textcoords="offset points",
                       fontsize="x-small")
    box = dict(boxstyle="round,pad=0.2", facecolor="white", edgecolor="none", alpha=0.8)
    for text, (qx, qy), ha, va in (("both", (0.02, 0.98), "left", "top"), ("forgetting", (0.98, 0.98), "right", "top"),
                                   ("conflict", (0.02, 0.02), "left", "bottom"),
                                   ("neither", (0.98, 0.02), "right", "bottom")):
        right.text(qx, qy, text, transform=right.transAxes, ha=ha, va=va, fontsize="small", color="0.35",
                   style="italic", bbox=box)
    right.set_xlabel(f"conflict_ratio (noise-free gradient cosine; conflict below -{verdict_lib.CONFLICT_RATIO:g})",
                     fontsize="small")
    right.set_ylabel(f"absence_excess (forgetting above {verdict_lib.FORGETTING_RISE:g})\n"
                     "= absence_damage - absence_floor (single-task)", fontsize="small")
    right.set_title("Evidence (mean, 97.5% CI over seeds, as the verdict reads it)", fontsize="medium")
    handles.append(right.scatter([], [], facecolors="none", edgecolors="0.3", s=40, linewidths=1.4,
                                 label="no stretch without labels (drawn at y = 0)"))
    if (~shown).any():
        handles.append(right.plot([], [], " ", label=f"{int((~shown).sum())} task(s) without a conflict ratio: "
                                                     "not on the map")[0])
    # Below the panels, where it hides no point: the explanation of each colour and the special markers.
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 8), fontsize="small",
               title="explanation (colour)", title_fontsize="small")
    fig.suptitle("Verdict per task (validation rows that never selected an epoch, 95% CIs over seeds)",
                 fontsize="medium")
    return fig


def cohort_curves(cohorts: pd.DataFrame, *, task: str = "click", sample: str | None = None) -> Figure:
    """The cohort experiment: each cohort's ``task`` AUC by day, one panel per architecture (mean over seeds).

    The held-out cohort is drawn thick and red, and a dotted line marks its first
    held-out day. ``sample``: which evaluation rows (``"logged"`` or
    ``"uniform"``); default the unbiased ``uniform`` sample when there is one.
    """
    fig = _figure(4.2 * max(cohorts["arch"].nunique() if not cohorts.empty else 1, 1), 3.8)
    rows = cohorts[cohorts["task"] == task] if not cohorts.empty else cohorts
    if not rows.empty and "sample" in rows:
        sample = sample or ("uniform" if (rows["sample"] == "uniform").any() else "logged")
        rows = rows[rows["sample"] == sample]
    if rows.empty:
        return _empty(fig, f"no cohort AUC rows for task {task!r}")
    rows = rows.assign(cohort=rows["cohort"].astype(str), heldout=rows["heldout"].astype(str) == "True")
    archs = list(dict.fromkeys(rows["arch"]))
    axes = np.atleast_1d(fig.subplots(1, len(archs), sharey=True))
    held_cohorts = set(rows[rows["heldout"]]["cohort"])
    start = rows[rows["heldout"]]["day"].min() if held_cohorts else None
    for ax, arch in zip(axes, archs):
        for cohort, g in rows[rows["arch"] == arch].groupby("cohort", sort=True):
            curve = g.groupby("day")["auc"].mean()
            held = cohort in held_cohorts
            ax.plot(curve.index, curve.to_numpy(), marker="o", markersize=3, linewidth=2.5 if held else 1.0,
                    color="tab:red" if held else None, label=f"cohort {cohort}" + (" (held out)" if held else ""))
        if start is not None:
            ax.axvline(start, color="gray", linestyle=":", linewidth=1)
        ax.set_title(arch, fontsize="medium")
        ax.set_xlabel("day")
    axes[0].set_ylabel(f"{task} AUC (next day)")
    axes[0].legend(fontsize="small")
    fig.suptitle("Cohort forgetting: a cohort that stops training vs those that keep training"
                 + (f" ({sample} sample)" if sample else ""))
    return fig


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
    from mtl_bench.analysis import report

    from mtl_bench.analysis import cohorts as cohort_report, remedies as remedy_report
    from mtl_bench.analysis import verdict as verdict_lib

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

    if has(summary, "regime", ["joint", "sequential"]):
        out["negative_transfer.png"] = lambda: negative_transfer(summary, variant_columns=summary_variants)
    else:
        out["negative_transfer.png"] = "no multi-task regime in summary.csv"

    if probe.empty:
        reason = "no probe.csv (was the run made with --no-probe?)"
        out["conflict_vs_retention.png"] = out["training_dynamics.png"] = out["gates.png"] = reason
    else:
        if retention.empty or not has(probe, "regime", ["joint"]):
            out["conflict_vs_retention.png"] = "needs both the joint and the sequential regime"
        else:
            def conflict() -> Figure:
                table = contrast_table
                if table is None:
                    units = report.unit_table(metrics, probe, retention, variant_columns)
                    table = report.contrast(units).table if not units.empty else None
                return conflict_vs_retention(probe, retention, table, variant_columns=variant_columns)

            out["conflict_vs_retention.png"] = conflict
        if has(probe, "regime", ["joint"]):
            for arch in dict.fromkeys(probe[probe["regime"] == "joint"]["arch"]):
                out[f"training_dynamics_{arch}.png"] = (
                    lambda a=arch: training_dynamics(probe, arch=a, variant_columns=variant_columns))
        else:
            out["training_dynamics.png"] = "no joint-regime probe rows"
        if has(probe, "measure", ["gate_weight"]):
            out["gates.png"] = lambda: gates(probe)
        else:
            out["gates.png"] = "no gated architecture (mmoe, omoe, ple) in the probe"

    if has(metrics, "regime", ["sequential"]):
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
    # The report has verdicts whenever it has joint-regime units (report.build_report).
    if verdicts is not None and len(verdicts) == 0:
        out["verdict.png"] = "the report has no verdicts"
    elif verdicts is None and not has(metrics, "regime", ["joint"]):
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
