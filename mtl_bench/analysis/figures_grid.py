"""Figures of a grid run (``mtl-bench run``): transfer, conflict against retention, probe dynamics, gates,
the sequential accuracy matrix and output drift against forgetting.

Each function takes the run's DataFrames (the run directory's CSV files as read by :func:`pandas.read_csv`
or :func:`mtl_bench.analysis.report.load_runs`) and returns a matplotlib Figure drawn on the Agg canvas.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FormatStrFormatter, LogLocator
from scipy import stats

from mtl_bench.analysis._style import (
    COLORS,
    MARKERS,
    empty_figure,
    headline_of,
    last_phase,
    new_figure,
    panel_labels,
    scatter_by_arch_and_suite,
    styles_of,
    variant_keys,
)
from mtl_bench.analysis.summary import headline_metric
from mtl_bench.measures.catalog import BY_NAME
from mtl_bench.schema import ALL, JOINT, NO_ORDER, ORDER_SEPARATOR, SEQUENTIAL, SINGLE, SPLIT

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
    variant = variant_keys(probe, variant_columns)
    columns = [*variant, "arch", "seed", "task_i", "task_j", "x", "y"]
    if probe.empty or retention.empty:
        return pd.DataFrame(columns=columns)
    joint = probe[(probe["regime"] == JOINT) & (probe["measure"] == X_MEASURES[x][0]) & (probe["group"] == ALL)]
    joint = joint[joint["task_i"] != joint["task_j"]]
    xs = joint.groupby([*variant, "arch", "seed", "task_i", "task_j"], dropna=False)["value"].mean().rename("x").reset_index()
    prefix = Y_MEASURES[y][0]
    headline = headline_of(retention, prefix)
    seq = retention[(retention["regime"] == SEQUENTIAL) & retention["task"].isin(headline)]
    seq = seq[[m == f"{prefix}_{headline[t]}" for t, m in zip(seq["task"], seq["measure"])]]
    seq = last_phase(seq, [*variant, "arch", "order", "seed"])
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
    tasks = order.split(ORDER_SEPARATOR)
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
    fig = new_figure(7, 5)
    if points.empty:
        return empty_figure(fig, "no joint probe and sequential retention rows to pair")
    ax = fig.add_subplot()
    scatter_by_arch_and_suite(ax, points, "x", "y")
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
    variant = variant_keys(summary, variant_columns)
    s = summary[(summary["split"] == split) & (summary["regime"] != SINGLE) & (summary["task"] != ALL)]
    headline = {t: headline_metric(set(g["metric"])) for t, g in s.groupby("task")}
    s = s[np.array([m == headline[t] for t, m in zip(s["task"], s["metric"])], dtype=bool)]
    s = s[s["transfer"].notna()]
    fig = new_figure(4, 3)
    if s.empty:
        return empty_figure(fig, "no multi-task rows with transfer in summary")
    rows = list(dict.fromkeys(zip(s["regime"], s["order"])))
    cols = list(dict.fromkeys(s[variant].itertuples(index=False, name=None)))
    tasks = list(dict.fromkeys(s["task"]))
    archs = list(dict.fromkeys(s["arch"]))
    colors = styles_of(archs, COLORS)
    labels, common = panel_labels(variant, cols)
    # Wide enough for the two-line title however few the bars.
    fig.set_size_inches(max(7.0, max(3.0, 1.2 + 0.45 * len(tasks) * len(archs)) * len(cols)), 0.9 + 2.6 * len(rows))
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
                       label=arch)
            if panel.empty:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes, color="0.4")
            ax.axhline(0, color="black", lw=0.8)
            ax.set_xticks(range(len(tasks)), tasks, rotation=30 if sum(map(len, tasks)) > 40 else 0)
            where = regime if order in (NO_ORDER, "") or pd.isna(order) else f"{regime} {order}"
            ax.set_title(f"{labels[c]}\n{where}" if labels[c] else where, fontsize="small")
            if c == 0:
                ax.set_ylabel("transfer vs single-task\n(single-task = 0)")
    handles = [Patch(color=colors[a], label=a) for a in archs]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(archs), fontsize="small")
    fig.suptitle(f"Transfer vs single-task{': ' + common if common else ''}\n"
                 f"({split} split, headline metric, 95% CI over seeds; < 0 = negative transfer)", fontsize="medium")
    return fig


def training_dynamics(
    probe: pd.DataFrame,
    *,
    arch: str | None = None,
    regime: str = JOINT,
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
    variant = variant_keys(probe, variant_columns)
    fig = new_figure(4, 3)
    rows = probe[(probe["regime"] == regime) & probe["measure"].isin(measures) & (probe["task_i"] != probe["task_j"])] \
        if not probe.empty else probe
    if arch is not None and not rows.empty:
        rows = rows[rows["arch"] == arch]
    if rows.empty:
        return empty_figure(fig, f"no {regime} probe rows for {', '.join(measures)}")
    symmetric = rows["measure"] == COSINE
    rows = rows[~symmetric | (rows["task_i"] < rows["task_j"])]
    panels = [[(m, g) for g in dict.fromkeys(rows[rows["measure"] == m]["group"])] for m in measures]
    panels = [p for p in panels if p]
    ncols = max(len(p) for p in panels)
    fig.set_size_inches(max(6.5, 3.6 * ncols), 1.6 + 3.0 * len(panels))
    grid = fig.add_gridspec(len(panels), ncols)
    variants = list(dict.fromkeys(rows[variant].itertuples(index=False, name=None)))
    pairs = list(dict.fromkeys(zip(rows["task_i"], rows["task_j"])))
    names, common = panel_labels(variant, variants)
    # One variant: colour tells the task pairs apart; several: colour is the variant, line style the pair.
    by_variant = len(variants) > 1
    colors = styles_of(variants if by_variant else pairs, COLORS)
    styles = styles_of(pairs, ("-", "--", ":", "-.")) if by_variant else {p: "-" for p in pairs}
    points = rows.groupby([*variant, "measure", "group", "task_i", "task_j"], dropna=False)["step"].nunique().max()
    few = points <= 12
    marks = styles_of(pairs, MARKERS) if few else {p: None for p in pairs}  # a lone point has no line style
    for r, row in enumerate(panels):
        for c, (measure, group) in enumerate(row):
            ax = fig.add_subplot(grid[r, c])
            data = rows[(rows["measure"] == measure) & (rows["group"] == group)]
            curves = data.groupby([*variant, "task_i", "task_j", "step"], dropna=False)["value"].mean()
            for key, curve in curves.groupby(level=list(range(len(variant) + 2)), sort=False):
                *values, ti, tj = key
                steps = curve.index.get_level_values("step")
                arrow = "·" if measure == COSINE else "→"
                name = names[variants.index(tuple(values))]
                ax.plot(steps, curve.to_numpy(), color=colors[tuple(values) if by_variant else (ti, tj)],
                        ls=styles[(ti, tj)], lw=1.2, marker=marks[(ti, tj)], markersize=4,
                        label=f"{ti}{arrow}{tj}" + (f" {name}" if name else ""))
            ax.axhline(0, color="0.6", lw=0.8, zorder=0)
            ax.set_title(f"{measure} · {group}", fontsize="small")
            ax.set_xlabel("training step")
            if points == 1:
                ax.set_xticks(sorted(set(data["step"])))
            if c == 0:
                ax.set_ylabel(measure)
    # Below the panels, where it hides no curve; cosine is symmetric (i · j), affinity directional (i → j).
    handles = [Line2D([], [], color="0.3" if by_variant else colors[p], ls=styles[p], marker=marks[p],
                      label=f"{p[0]} → {p[1]}") for p in pairs]
    if by_variant:
        handles += [Line2D([], [], color=colors[v], label=n) for v, n in zip(variants, names)]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), fontsize="x-small",
               title=f"{'marker, line style' if few else 'line style'}: task pair · colour: variant" if by_variant
               else "task pair (colour)",
               title_fontsize="x-small")
    lone = "\n(one probe step per run: a lower --probe-every draws curves)" if points == 1 else ""
    fig.suptitle(f"Probe over {regime} training: {arch or 'all architectures'}{', ' + common if common else ''}\n"
                 f"(mean over seeds; cosine is symmetric in the pair, affinity i → j directional){lone}",
                 fontsize="medium")
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
    variant = variant_keys(metrics, variant_columns)
    fig = new_figure(4, 3)
    m = metrics[(metrics["regime"] == SEQUENTIAL) & (metrics["stage"] == "final") & (metrics["split"] == split)] \
        if not metrics.empty else metrics
    if m.empty:
        return empty_figure(fig, "no sequential runs")
    headline = {t: headline_metric(set(g["metric"])) for t, g in m.groupby("task")}
    m = m[[x == headline[t] for t, x in zip(m["task"], m["metric"])]]
    cells = m.groupby([*variant, "order", "arch", "phase", "task"], dropna=False, sort=False)["value"].mean().reset_index()
    rows = list(dict.fromkeys(cells[[*variant, "order"]].itertuples(index=False, name=None)))
    archs = list(dict.fromkeys(cells["arch"]))
    labels, common = panel_labels(variant, [key[:-1] for key in rows])
    metric_of = cells["task"].map(headline)
    # One colour scale per metric over every panel, so equal colours mean equal values across panels.
    scales = {metric: _matrix_scale(metric, cells.loc[metric_of == metric, "value"].to_numpy(float))
              for metric in dict.fromkeys(metric_of)}
    fig.set_size_inches(max(6.0, 3.2 * len(archs) + 1.2 * len(scales)), 1.0 + 2.6 * len(rows))
    axes = fig.subplots(len(rows), len(archs), squeeze=False)
    for r, key in enumerate(rows):
        for c, arch in enumerate(archs):
            ax: Axes = axes[r][c]
            sel = cells[cells["arch"] == arch]
            for k, v in zip([*variant, "order"], key):
                sel = sel[(sel[k] == v) | (sel[k].isna() & pd.isna(v))]
            order = str(key[-1])
            trained = order.split(ORDER_SEPARATOR)
            ax.set_title(f"{labels[r]}\n{arch} · {order}" if labels[r] else f"{arch} · {order}", fontsize="small")
            if sel.empty:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes, color="0.4")
                ax.set_axis_off()
                continue
            tasks = [t for t in trained if t in set(sel["task"])] or list(dict.fromkeys(sel["task"]))
            grid = sel.pivot_table(index="phase", columns="task", values="value", aggfunc="mean").reindex(columns=tasks)
            values = grid.to_numpy(float)
            for metric, (cmap, norm) in scales.items():
                columns = np.array([headline.get(t) == metric for t in tasks])
                if not columns.any():
                    continue
                image = ax.imshow(np.where(columns[None, :], values, np.nan), cmap=cmap, norm=norm, aspect="auto")
                for (i, j), value in np.ndenumerate(values):
                    if columns[j] and np.isfinite(value):
                        shade = image.cmap(image.norm(value))
                        dark = 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2] < 0.5
                        ax.text(j, i, f"{value:.3g}", ha="center", va="center", color="white" if dark else "black",
                                fontsize="small")
            ax.set_xticks(range(len(tasks)), [f"{t}\n({headline.get(t, '')})" for t in tasks], fontsize="small")
            phases = [f"after {trained[p] if p < len(trained) else p}" for p in grid.index]
            ax.set_yticks(range(len(grid.index)), phases, fontsize="small")
    for metric, (cmap, norm) in scales.items():
        better = "higher is better" if metric == "auc" else "lower is better"
        scale = ", log scale" if isinstance(norm, LogNorm) else ""
        bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, shrink=0.9,
                           label=f"{metric} ({better}{scale})")
        if scale:  # plain numbers, not powers of ten
            bar.ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
            bar.ax.yaxis.set_minor_formatter(FormatStrFormatter(""))
    fig.suptitle(f"Sequential accuracy matrix R[phase, task]{': ' + common if common else ''}\n"
                 f"({split} split, mean over seeds; one colour scale per metric)", fontsize="medium")
    return fig


def _matrix_scale(metric: str, values: np.ndarray) -> tuple[str, Normalize]:
    """The colour map and the normalisation shared by every panel's cells of ``metric``."""
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    # Log colours for errors spanning decades: an untrained task's error would otherwise flatten every other cell.
    if metric != "auc" and low > 0 and high / low > 100:
        return "viridis_r", LogNorm(low, high)
    return ("viridis" if metric == "auc" else "viridis_r"), Normalize(low, high if high > low else low + 1e-9)


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
    variant = variant_keys(retention, variant_columns)
    fig = new_figure(6.5, 4.8)
    if retention.empty:
        return empty_figure(fig, "no retention rows")
    headline = headline_of(retention, FORGETTING)
    seq = retention[(retention["regime"] == SEQUENTIAL) & retention["task"].isin(headline)]
    cell = [*variant, "arch", "order", "seed"]
    seq = last_phase(seq, cell)
    drift = seq[seq["measure"] == OUTPUT_DRIFT]
    forget = seq[[m == f"{FORGETTING}_{headline[t]}" for t, m in zip(seq["task"], seq["measure"])]]
    keys = [*cell, "phase", "task"]
    points = drift.merge(forget, on=keys, suffixes=("_drift", "_forgetting"), how="inner")
    if points.empty:
        return empty_figure(fig, "no output drift and forgetting rows to pair")
    ax = fig.add_subplot()
    scatter_by_arch_and_suite(ax, points, "value_drift", "value_forgetting")
    x, y = points["value_drift"].to_numpy(float), points["value_forgetting"].to_numpy(float)
    rho = float(stats.spearmanr(x, y).statistic) if len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0 else float("nan")
    if len(x) and np.nanmin(x) > 0:  # ticks at 1, 2, 5 × 10^k in plain numbers: a decade or two has a few
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%.3g"))
        ax.xaxis.set_minor_formatter(FormatStrFormatter(""))
    else:
        ax.set_xscale("symlog", linthresh=1e-3)
    spread = np.abs(y[np.isfinite(y)])
    if spread.size and spread.max() > 100 * max(np.median(spread), 1e-12):
        ax.set_yscale("symlog", linthresh=float(max(np.median(spread), 1e-6)))
    ax.set_xlabel("output drift: KL(predictions before ‖ after later phases)")
    ax.set_ylabel("forgetting (headline metric)")
    ax.legend(fontsize="small")
    ax.set_title(f"Output drift vs forgetting (RL's Razor): Spearman ρ = {rho:+.2f}, n = {len(points)}", fontsize="medium")
    return fig


def gates(probe: pd.DataFrame, *, regime: str = JOINT) -> Figure:
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
    fig = new_figure(4, 3)
    rows = probe[(probe["regime"] == regime) & probe["measure"].isin(["gate_weight", "gate_entropy"])] \
        if not probe.empty else probe
    if rows.empty:
        return empty_figure(fig, f"no gate rows in the {regime} probe (no gated architecture?)")
    archs = list(dict.fromkeys(rows["arch"]))
    fig.set_size_inches(max(7.0, 5.2 * len(archs)), 6.5)
    axes = fig.subplots(2, len(archs), squeeze=False)
    all_weights = rows[rows["measure"] == "gate_weight"]
    # One colour scale for every architecture's gate weights.
    top = float(all_weights.groupby(["arch", "task_i", "task_j"])["value"].mean().max()) if len(all_weights) else 1.0
    for c, arch in enumerate(archs):
        weights = all_weights[all_weights["arch"] == arch]
        grid = weights.pivot_table(index="task_i", columns="task_j", values="value", aggfunc="mean", sort=False)
        grid = grid.reindex(columns=sorted(grid.columns, key=_expert_index))
        ax: Axes = axes[0][c]
        image = ax.imshow(grid.to_numpy(float), cmap="magma", aspect="auto", vmin=0, vmax=top)
        ax.set_xticks(range(grid.shape[1]), [str(e).replace("expert", "") for e in grid.columns], fontsize="small")
        ax.set_yticks(range(grid.shape[0]), list(grid.index), fontsize="small")
        ax.set_xlabel("expert")
        blank = " (blank: not in that gate)" if grid.isna().to_numpy().any() else ""
        ax.set_title(f"{arch}: mean gate weight{blank}", fontsize="small")
        ax = axes[1][c]
        entropy = rows[(rows["arch"] == arch) & (rows["measure"] == "gate_entropy")]
        for task, curve in entropy.groupby("task_i", sort=False):
            mean = curve.groupby("step")["value"].mean()
            ax.plot(mean.index, mean.to_numpy(), marker="o" if len(mean) <= 12 else None, markersize=3,
                    label=str(task))
        # A gate's entropy is at most ln(its number of experts): one reference line per gate size.
        for k, ls in zip(sorted(set(grid.notna().sum(axis=1))), ("--", ":", "-.")):
            ax.axhline(np.log(k), color="0.5", ls=ls, lw=0.9, label=f"uniform over {k} experts")
        ax.set_xlabel("training step")
        ax.set_ylabel("gate entropy (nats)")
        ax.set_title(f"{arch}: gate entropy", fontsize="small")
        ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the curves
    fig.colorbar(image, ax=axes[0, :], shrink=0.9, label="mean gate weight (one scale)")
    fig.suptitle(f"Gate health ({regime} training)", fontsize="medium")
    return fig


def _expert_index(name: object) -> tuple[int, str]:
    digits = "".join(ch for ch in str(name) if ch.isdigit())
    return (int(digits) if digits else -1, str(name))

