"""Figures of what is built on the grid: the remedies' effects, the verdict per task and the cohort experiment.

Each function returns a matplotlib Figure drawn on the Agg canvas.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from mtl_bench.analysis import verdict as verdict_lib
from mtl_bench.analysis._style import COLORS, EXPLANATION_COLORS, empty_figure, new_figure, styles_of
from mtl_bench.schema import ALL, BASELINE


def remedy_effects(table: pd.DataFrame, *, baseline: str = BASELINE) -> Figure:
    """Each remedy's median paired change in Δm vs ``baseline`` with its 95% CI, beside the change in its target measure.

    Args:
        table: :func:`mtl_bench.analysis.remedies.remedy_table`.
        baseline: The baseline the changes are taken against.
    """
    if not table.empty and "variant" in table:
        table = table[table["variant"] == ALL]  # the pooled rows; per-variant rows are in remedies.csv
    rows = table[table["baseline"] == baseline].reset_index(drop=True) if not table.empty else table
    fig = new_figure(11, 0.45 * max(len(rows), 4) + 1.6)
    if rows.empty:
        return empty_figure(fig, f"no remedy was compared with {baseline!r}")
    left, right = fig.subplots(1, 2, sharey=True)
    families = styles_of(list(dict.fromkeys(rows["family"])), COLORS)
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
    table = entries if isinstance(entries, pd.DataFrame) else verdict_lib.frame(entries, variant_columns)
    fig = new_figure(13, 4)
    if table.empty:
        return empty_figure(fig, "no verdicts (the joint regime was not run)")
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
    if not shown.any():
        right.text(0.5, 0.5, "no task has a conflict ratio\n(probe off, or too few probe steps)", ha="center",
                   va="center", transform=right.transAxes, color="0.35", bbox=box)
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5), fontsize="small",
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
    fig = new_figure(max(7.0, 4.2 * (cohorts["arch"].nunique() if not cohorts.empty else 1)), 4.4)
    if not cohorts.empty and task not in set(cohorts["task"]):  # a suite without clicks: its first task
        task = str(cohorts["task"].iloc[0])
    rows = cohorts[cohorts["task"] == task] if not cohorts.empty else cohorts
    if not rows.empty and "sample" in rows:
        sample = sample or ("uniform" if (rows["sample"] == "uniform").any() else "logged")
        rows = rows[rows["sample"] == sample]
    if rows.empty:
        return empty_figure(fig, f"no cohort AUC rows for task {task!r}")
    rows = rows.assign(cohort=rows["cohort"].astype(str), heldout=rows["heldout"].astype(str) == "True")
    archs = list(dict.fromkeys(rows["arch"]))
    axes = np.atleast_1d(fig.subplots(1, len(archs), sharey=True))
    held_cohorts = set(rows[rows["heldout"]]["cohort"])
    start = rows[rows["heldout"]]["day"].min() if held_cohorts else None
    # The control of the cohort report (analysis.cohorts): the lowest-numbered cohort that keeps training.
    others = sorted((c for c in set(rows["cohort"]) if c not in held_cohorts), key=lambda c: (len(c), c))
    control = others[0] if held_cohorts and others else None
    cohorts_seen = sorted(set(rows["cohort"]), key=lambda c: (len(c), c))
    colors = styles_of([c for c in cohorts_seen if c not in held_cohorts], COLORS[:3] + COLORS[4:])
    for ax, arch in zip(axes, archs):
        for cohort, g in rows[rows["arch"] == arch].groupby("cohort", sort=True):
            curve = g.groupby("day")["auc"].mean()
            held = cohort in held_cohorts
            role = " (held out)" if held else " (control)" if cohort == control else ""
            ax.plot(curve.index, curve.to_numpy(), marker="o", markersize=3, linewidth=2.5 if held else 1.0,
                    color="tab:red" if held else colors[cohort], label=f"cohort {cohort}{role}")
        if start is not None:
            ax.axvline(start, color="gray", linestyle=":", linewidth=1, label=f"first held-out day ({start})")
        ax.set_title(arch, fontsize="medium")
        ax.set_xlabel("day")
    axes[0].set_ylabel(f"{task} AUC (next day)")
    # Below the panels, where it hides no curve.
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6), fontsize="small")
    seeds = rows["seed"].nunique() if "seed" in rows else 1
    fig.suptitle("Cohort forgetting: a cohort that stops training vs those that keep training\n"
                 f"({task} AUC{', ' + sample + ' sample' if sample else ''}, mean over {seeds} "
                 f"seed{'s' if seeds != 1 else ''}; each day evaluated after training through the day before)",
                 fontsize="medium")
    return fig



POLICY_MEASURES = {"auc_click": "click AUC on the last day (higher is better)",
                   "forgetting_click": "forgetting: pre-trained probe click AUC − last day's"}


def policy_arms(summary: pd.DataFrame, measures: dict[str, str] | None = None) -> Figure:
    """The policy experiment: one panel per measure, a bar per arm × architecture with its 95% CI over seeds.

    Args:
        summary: The experiment's summary frame, one row per ``arm`` × ``arch`` (``policy.summarize``): for each
            measure a column ``<measure>`` and, when it has an interval, ``<measure>_ci_low`` / ``_ci_high``;
            ``n_seeds`` when present goes into the title.
        measures: Column → axis label; default :data:`POLICY_MEASURES`. Columns the frame lacks are left out.

    Returns:
        A figure with one axes per measure found.
    """
    measures = POLICY_MEASURES if measures is None else measures
    shown = {m: label for m, label in measures.items() if not summary.empty and m in summary}
    fig = new_figure(max(7.0, 4.5 * max(len(shown), 1)), 4.8)
    if not shown:
        return empty_figure(fig, f"no policy summary with {', '.join(measures)}")
    # An arm run at several KL weights or PPO epochs is one bar per setting.
    summary = summary.assign(arm=[
        f"{r.arm}" + (f" ×{int(r.epochs)}" if "epochs" in summary and r.arm == "ppo" and r.epochs == r.epochs else "")
        + (f" kl={r.kl:g}" if "kl" in summary and r.kl == r.kl and r.kl > 0 else "")
        for r in summary.itertuples(index=False)])
    arms = list(dict.fromkeys(summary["arm"]))
    archs = list(dict.fromkeys(summary["arch"]))
    colors = styles_of(archs, COLORS)
    width = 0.8 / len(archs)
    for ax, (measure, label) in zip(np.atleast_1d(fig.subplots(1, len(shown))), shown.items()):
        for a, arch in enumerate(archs):
            rows = summary[summary["arch"] == arch].set_index("arm").reindex(arms)
            mean = rows[measure].to_numpy(float)
            low = rows[f"{measure}_ci_low"].to_numpy(float) if f"{measure}_ci_low" in rows else np.full(len(arms), np.nan)
            high = rows[f"{measure}_ci_high"].to_numpy(float) if f"{measure}_ci_high" in rows else np.full(len(arms), np.nan)
            err = np.nan_to_num(np.abs(np.vstack([mean - low, high - mean])))
            ax.bar(np.arange(len(arms)) + (a - (len(archs) - 1) / 2) * width, np.nan_to_num(mean), width, yerr=err,
                   capsize=2, color=colors[arch], label=arch)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(range(len(arms)), arms, rotation=35, ha="right", fontsize="small")
        ax.set_ylabel(label, fontsize="small")
        ax.set_title(measure, fontsize="small")
    fig.legend(handles=[Patch(color=colors[a], label=a) for a in archs], loc="outside lower center",
               ncols=len(archs), fontsize="small")
    n = int(summary["n_seeds"].min()) if "n_seeds" in summary else 0
    seeds = f", {n} seed{'s' if n != 1 else ''}" if n else ""
    fig.suptitle(f"Policy experiment: each arm's last day (mean, 95% CI over seeds{seeds})", fontsize="medium")
    return fig
