"""``mtl-bench report``: which explanation of negative transfer do the runs support?

For every suite × variant × arch × task, the report puts side by side the
joint regime's transfer vs single-task, the probe's conflict measures (mean
gradient cosine, conflict rate) and its forgetting measures (affinity from the
other tasks, forgetting events, sequential forgetting, retention, output drift).

The *contrast* asks which family of measures predicts negative transfer. The
unit is one task of one joint run (suite × variant × arch × seed × task). Over
all units, it takes the Spearman rank correlation of per-seed relative transfer
(percent of the single-task value, so tasks and metrics pool) with each measure, sign-corrected so that positive "support" means the measure moves
the way its explanation predicts. Each correlation gets a bootstrap 95% CI that
resamples whole training cells (a joint run's tasks share the run and, for
symmetric measures such as the cosine, the value). The verdict compares the best-supported measure of each explanation. The
best measure is re-chosen inside every bootstrap resample, so picking it does
not inflate the difference. A claim is made only when the CI of the difference
excludes 0. All of it uses the validation split.

The contrast uses the baseline cells (remedy ``none``) only; runs with
remedies add the remedy table of :mod:`mtl_bench.analysis.remedies`, whose
interventions speak to the explanations directly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from mtl_bench.analysis import cohorts as cohort_report

from mtl_bench import io
from mtl_bench.analysis import pareto
from mtl_bench.analysis import remedies as remedy_report
from mtl_bench.analysis import verdict as verdict_lib
from mtl_bench.measures.catalog import MEASURES, Measure
from mtl_bench.errors import UserInputError
from mtl_bench.spec import METRIC_DIRECTIONS
from mtl_bench.schema import BASELINE, SPLIT
from mtl_bench.analysis.summary import headline_metric, merge_on, per_seed_transfer, with_remedy

BOOTSTRAP = 2000
CONTRAST_COLUMNS = ["measure", "explanation", "expected_sign", "n", "spearman", "ci_low", "ci_high", "support"]
MIN_UNITS = 6


METRICS_COLUMNS = ["suite", "arch", "regime", "seed", "task", "split", "metric", "value"]  # what the report reads


def _read(run_dir: Path, name: str) -> pd.DataFrame:
    path = run_dir / name
    if not path.is_file():
        return pd.DataFrame()
    try:
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserInputError(f"{path} is not a result table (empty, truncated or edited?): "
                             f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    if name == "metrics.csv":
        missing = [c for c in METRICS_COLUMNS if c not in frame.columns]
        if missing or frame.empty:
            raise UserInputError(f"{path} is not a metrics table written by mtl-bench run: "
                                 + (f"no column(s) {missing}" if missing else "no rows"))
        short = frame[METRICS_COLUMNS[:-1]].isna().any(axis=1)
        if short.any():  # a file cut off mid-row leaves its last fields empty
            raise UserInputError(f"{path} is truncated or edited: row {int(short.idxmax()) + 2} lacks "
                                 "fields; write it again with mtl-bench run --resume")
    return frame


def run_warnings(run_dirs: Sequence[str | Path]) -> list[str]:
    """What a reader must know before trusting the report: unfinished runs, and intervals from too few seeds."""
    from mtl_bench.analysis.verdict import MIN_SEEDS

    warnings = []
    for run_dir in run_dirs:
        manifest = io.read_json(Path(run_dir) / "manifest.json")
        cells = manifest.get("cells", {})
        done = sum(1 for c in cells.values() if c.get("status") == "complete")
        planned = manifest.get("planned_cells", len(cells))  # older manifests name only the cells that ran
        status = manifest.get("status", "")
        if status != "complete" or done < planned:
            warnings.append(f"{run_dir}: run {status or 'of unknown status'}, {done} of {planned} cells finished"
                            + (f" ({manifest['reason']})" if manifest.get("reason") else "")
                            + "; the results below are partial: continue it with mtl-bench run --resume " + str(run_dir))
        seeds = len(manifest.get("seeds", []))
        if 0 < seeds < MIN_SEEDS:
            warnings.append(f"{run_dir}: {seeds} seed(s): an interval over seeds needs at least {MIN_SEEDS} "
                            f"(--seeds {MIN_SEEDS}); the intervals below cannot be trusted")
    return warnings


def load_runs(run_dirs: Sequence[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    """Concatenated metrics, probe and retention frames of several runs, and their variant columns."""
    metrics, probe, retention, variant_columns = [], [], [], []
    resolved = [Path(d).resolve() for d in run_dirs]
    duplicated = sorted({str(d) for d in resolved if resolved.count(d) > 1})
    if duplicated:
        raise UserInputError(f"run directory given more than once: {duplicated[0]}")
    for run_dir in resolved:
        if not (run_dir / "manifest.json").is_file() or not (run_dir / "metrics.csv").is_file():
            raise UserInputError(f"{run_dir} is not a finished run directory (no manifest.json and metrics.csv)")
        manifest = io.read_json(run_dir / "manifest.json")
        for c in manifest.get("variant_columns", []):
            if c not in variant_columns:
                variant_columns.append(c)
        for frames, name in ((metrics, "metrics.csv"), (probe, "probe.csv"), (retention, "retention.csv")):
            frame = with_remedy(_read(run_dir, name))
            if not frame.empty:
                frames.append(frame.assign(run=str(run_dir)))
    cat = lambda frames: pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()  # noqa: E731
    metrics_df, probe_df, retention_df = cat(metrics), cat(probe), cat(retention)
    for frame in (metrics_df, probe_df, retention_df):
        for c in variant_columns:
            if not frame.empty:
                # One dtype for every run's values, so merges never meet str against float.
                frame[c] = frame[c].astype(object) if c in frame.columns else pd.Series(None, index=frame.index, dtype=object)
    return metrics_df, probe_df, retention_df, variant_columns


def unit_table(metrics: pd.DataFrame, probe: pd.DataFrame, retention: pd.DataFrame, variant_columns: Sequence[str]) -> pd.DataFrame:
    """One row per joint-run task and seed: its transfer and every available measure."""
    unit = ["run", "suite", *variant_columns, "arch", "seed", "task"]
    metrics, probe, retention = (
        f[f["remedy"] == BASELINE] if not f.empty and "remedy" in f else f for f in (metrics, probe, retention)
    )
    # Per run, so that identical cells of two runs are never paired with each other's single-task values.
    transfer = pd.concat([per_seed_transfer(g, variant_columns) for _, g in metrics.groupby("run", sort=False)])
    headline = {t: headline_metric(set(g["metric"])) for t, g in transfer.groupby("task")}
    joint = transfer[(transfer["regime"] == "joint") & (transfer["split"] == SPLIT)]
    joint = joint[np.array([m == headline[t] for t, m in zip(joint["task"], joint["metric"])], dtype=bool)]
    table = joint[unit + ["metric", "transfer"]].copy()
    # Percent of the single-task value (one term of Δm): comparable across metrics, tasks and variants.
    table["relative_transfer"] = 100.0 * joint["transfer"].to_numpy() / joint["single"].abs().to_numpy()
    table["log_transfer"] = log_transfer(joint["metric"], joint["value"], joint["single"])
    probe = _within_selection(probe, metrics, variant_columns)
    for m in MEASURES:
        if m.source == "derived":
            continue
        values = _measure(m, probe, retention, unit, headline)
        table = merge_on(table, values, unit) if values is not None else table.assign(**{m.name: np.nan})
    return _derived(table, probe, unit).reset_index(drop=True)


def log_transfer(metric: pd.Series, multi: pd.Series, single: pd.Series) -> np.ndarray:
    """``100 · ln`` of the multi-task over the single-task value, sign-corrected (negative = negative transfer).

    For small effects it equals the relative transfer in percent; unlike it, a
    model nine times worse and one nine times better are equally far from 0,
    so a t-interval over seeds is not dominated by one seed's blow-up.
    """
    ratio = np.log(multi.to_numpy(float) / single.to_numpy(float))
    higher = np.array([METRIC_DIRECTIONS[m] for m in metric])
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * np.where(higher, ratio, -ratio)


FLOOR_MIN = 0.05  # a within-task cosine below this is noise-dominated: no conflict ratio is formed


def _derived(table: pd.DataFrame, probe: pd.DataFrame, unit: list[str]) -> pd.DataFrame:
    """The measures computed from several probe records: conflict ratio, absence damage and its floor."""
    cell = [c for c in unit if c != "task"]
    floor = table["cosine_floor"]
    # The geometric mean of this task's floor and the mean floor of the cell's other tasks. A floor below
    # FLOOR_MIN means the task's gradient is mostly noise: no ratio (the reading then stays unclear).
    total = floor.groupby([table[c] for c in cell], dropna=False).transform("sum")
    count = floor.groupby([table[c] for c in cell], dropna=False).transform("count")
    others = ((total - floor) / (count - 1)).where(count > 1)
    usable = (floor >= FLOOR_MIN) & (others >= FLOOR_MIN)
    table["conflict_ratio"] = table["cosine_halves"] / np.sqrt((floor * others).where(usable))
    windows = ["absence_damage", "presence_rise", "absence_floor"]
    table = table.assign(**{c: np.nan for c in windows})
    if probe.empty or "window_signal" not in set(probe["measure"]):
        return table
    # The joint cells' windows, and the same task's single-task cells' windows: the floor.
    joint, single = (_window_rises(probe[probe["regime"] == r], unit) for r in ("joint", "single"))
    table = merge_on(table.drop(columns=windows), joint, unit)
    floor = single.drop(columns="presence_rise").rename(columns={"absence_damage": "absence_floor"})
    same_arch = merge_on(table, floor, unit)["absence_floor"]
    # A one-tower single-task baseline (single_baseline = "single_task") has no probe: no floor then.
    table["absence_floor"] = same_arch.to_numpy()
    return table


def _window_rises(probe: pd.DataFrame, unit: list[str]) -> pd.DataFrame:
    """Per unit, the mean relative rise of the task's probe loss over windows without and with its labels."""
    probe = probe[probe["task_i"] == probe["task_j"]]
    cell = [c for c in unit if c != "task"]
    event = [*cell, "phase", "step", "task_i"]
    rise = probe[probe["measure"] == "loss_rise"][event + ["value"]].rename(columns={"value": "rise"})
    signal = probe[probe["measure"] == "window_signal"][event + ["value"]].rename(columns={"value": "signal"})
    rows = rise.merge(signal, on=event, how="inner").rename(columns={"task_i": "task"})
    absent = rows["signal"] == 0
    absence = rows[absent].groupby(unit, dropna=False)["rise"].mean().rename("absence_damage")
    presence = rows[~absent].groupby(unit, dropna=False)["rise"].mean().rename("presence_rise")
    return pd.concat([absence, presence], axis=1).reset_index()


def _within_selection(probe: pd.DataFrame, metrics: pd.DataFrame, variant_columns: Sequence[str]) -> pd.DataFrame:
    """Probe events that describe the weights a unit's outcome was read on.

    Drops the step-0 event (the untrained model) and, where the probe records
    epochs, every event after the epoch selected for the task (those weights
    were discarded). A measure of a pair of tasks (``task_j`` another task) is
    kept up to the later of the two tasks' selected epochs: both tasks'
    outcomes come from that stretch of the trajectory, and the pair's value
    is one (the cosine is symmetric).
    """
    if probe.empty:
        return probe
    probe = probe[probe["step"] > 0]
    if "epoch" not in probe.columns:
        return probe
    cell = ["run", "suite", *variant_columns, "arch", "regime", "remedy", "order", "seed", "phase"]
    final = metrics[(metrics["stage"] == "final") & (metrics["split"] == SPLIT)]
    selected = final.groupby([*cell, "task"], dropna=False)["epoch"].max().reset_index()
    merged = probe.merge(selected.rename(columns={"task": "task_i", "epoch": "selected_i"}), on=[*cell, "task_i"], how="left")
    merged = merged.merge(selected.rename(columns={"task": "task_j", "epoch": "selected_j"}), on=[*cell, "task_j"], how="left")
    pair = (merged["task_i"] != merged["task_j"]) & merged["selected_j"].notna()
    limit = merged["selected_i"].where(~pair, np.fmax(merged["selected_i"], merged["selected_j"]))
    keep = limit.isna() | (merged["epoch"] <= limit)
    return merged[keep.to_numpy()].drop(columns=["selected_i", "selected_j"])


def _measure(m: Measure, probe: pd.DataFrame, retention: pd.DataFrame, unit: list[str], headline: dict[str, str]):
    if m.source == "probe":
        if probe.empty:
            return None
        rows = probe[(probe["regime"] == "joint") & (probe["measure"] == m.record)]
        if "group" in rows and m.direction != "self":
            rows = rows[rows["group"] == "all"]
        if m.direction == "out":
            rows = rows[rows["task_i"] != rows["task_j"]].assign(task=rows["task_i"])
        elif m.direction == "in":
            rows = rows[rows["task_i"] != rows["task_j"]].assign(task=rows["task_j"])
        else:
            rows = rows.assign(task=rows["task_i"])
    else:
        if retention.empty:
            return None
        # Accuracy-matrix measures are named f"{measure}_{metric}": keep each task's headline metric,
        # after the last phase of each sequential cell (both orders averaged below).
        wanted = [m.record if m.record == "output_drift" else f"{m.record}_{headline.get(t)}" for t in retention["task"]]
        rows = retention[retention["measure"] == pd.Series(wanted, index=retention.index)]
        cell = ["run", "suite", *[c for c in unit if c not in ("run", "suite", "arch", "seed", "task")], "arch", "order", "seed"]
        rows = rows[rows["phase"] == rows.groupby(cell, dropna=False)["phase"].transform("max")]
        # Sequential measures describe the same suite variant, architecture, seed and task as the joint unit.
    values = rows.groupby(unit, dropna=False)["value"].mean().rename(m.name).reset_index()
    return values if not values.empty else None


@dataclasses.dataclass
class Contrast:
    """The contrast table and its verdict."""

    table: pd.DataFrame
    verdict: str
    n_units: int
    remedies: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    remedy_verdict: str = ""
    pareto: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    cohorts: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    verdicts: list = dataclasses.field(default_factory=list)
    variant_columns: list = dataclasses.field(default_factory=list)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(stats.spearmanr(x, y).statistic)


def contrast(units: pd.DataFrame, *, seed: int = 0, n_boot: int = BOOTSTRAP) -> Contrast:
    """Rank correlations of relative transfer with each measure, cluster-bootstrap CIs, and the verdict.

    Units of one seed (run, suite, seed) share a data draw, single-task
    baselines and often a measure (the gradient cosine is symmetric), so the
    bootstrap resamples whole seeds, not single units.
    """
    rng = np.random.default_rng(seed)
    y = units["relative_transfer" if "relative_transfer" in units else "transfer"].to_numpy(float)
    # Units of one seed share its data draw (the variants of a sweep draw from the same seed) and its
    # single-task baselines: they are one cluster, never counted as independent replicates.
    cluster_columns = [c for c in ("run", "suite", "seed") if c in units.columns]
    cells = units.groupby(cluster_columns, dropna=False, sort=False).ngroup().to_numpy() if cluster_columns else np.arange(len(units))
    members = [np.flatnonzero(cells == c) for c in range(cells.max() + 1)] if len(units) else []
    boots = [np.concatenate([members[c] for c in rng.integers(0, len(members), len(members))]) for _ in range(n_boot)]
    rows, boot_support = [], {}
    n = int(np.isfinite(y).sum())
    for m in MEASURES:
        if m.name not in units:
            continue
        x = units[m.name].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() < 3:
            continue
        rho = _spearman(x[ok], y[ok])
        samples = np.array([_spearman(x[b][ok[b]], y[b][ok[b]]) for b in boots])
        boot_support[m.name] = m.sign * samples
        lo, hi = np.nanpercentile(samples, [2.5, 97.5]) if np.isfinite(samples).any() else (np.nan, np.nan)
        rows.append({"measure": m.name, "explanation": m.family, "expected_sign": m.sign,
                     "n": int(ok.sum()), "spearman": rho, "ci_low": lo, "ci_high": hi, "support": m.sign * rho})
    table = pd.DataFrame(rows, columns=CONTRAST_COLUMNS)
    return Contrast(table, _verdict(table, boot_support, n), n)


def _verdict(table: pd.DataFrame, boot_support: dict[str, np.ndarray], n: int) -> str:
    if n < MIN_UNITS:
        return (f"Too few joint-run tasks with a single-task baseline ({n} < {MIN_UNITS}) to weigh the "
                "explanations; run more seeds or variants, with the single regime.")
    best, per_family = {}, {}
    for family in ("conflict", "forgetting"):
        names = table[(table["explanation"] == family) & table["support"].notna()]["measure"].tolist()
        if not names:
            return (f"Cannot weigh the explanations: no {family} measure varies with transfer on these runs "
                    "(was the probe on, and the sequential regime run?).")
        stacked = np.vstack([boot_support[k] for k in names])
        per_family[family] = np.nanmax(np.where(np.isnan(stacked), -np.inf, stacked), axis=0)
        row = table[table["measure"].isin(names)].sort_values("support", ascending=False).iloc[0]
        best[family] = row
    diff = per_family["forgetting"] - per_family["conflict"]
    finite = np.isfinite(diff)
    if finite.mean() < 0.9:  # a CI over the few resamples where both families are defined would be conditional
        return ("Cannot weigh the explanations: too many bootstrap resamples leave a family without a "
                "defined correlation; run more seeds or variants.")
    lo, hi = np.percentile(diff[finite], [2.5, 97.5])

    def describe(row: pd.Series) -> str:
        return f"{row['measure']} (Spearman {row['spearman']:+.2f}, 95% CI {row['ci_low']:+.2f} to {row['ci_high']:+.2f})"

    def supported(row: pd.Series) -> bool:
        ci = sorted((row["expected_sign"] * row["ci_low"], row["expected_sign"] * row["ci_high"]))
        return ci[0] > 0

    head = (f"Across {n} joint-run tasks, the best conflict measure is {describe(best['conflict'])} and the best "
            f"forgetting measure is {describe(best['forgetting'])}; forgetting minus conflict support: "
            f"95% CI {lo:+.2f} to {hi:+.2f}.")
    if not supported(best["conflict"]) and not supported(best["forgetting"]):
        return head + " Neither explanation's measures predict negative transfer on these runs."
    if lo > 0:
        return head + " Forgetting predicts negative transfer better than gradient conflict on these runs."
    if hi < 0:
        return head + " Gradient conflict predicts negative transfer better than forgetting on these runs."
    return head + " The evidence does not separate the two explanations on these runs."


def task_table(units: pd.DataFrame, variant_columns: Sequence[str]) -> pd.DataFrame:
    """Per suite × variant × arch × task: mean transfer with CI over seeds and the mean of every measure."""
    from mtl_bench.engine.metrics import mean_ci

    keys = ["suite", *variant_columns, "arch", "task", "metric"]
    rows = []
    for key, group in units.groupby(keys, dropna=False, sort=False):
        mean, lo, hi, count = mean_ci(group["transfer"].tolist())
        row = dict(zip(keys, key), transfer=mean, transfer_ci_low=lo, transfer_ci_high=hi, n=count)
        for m in MEASURES:
            if m.name in group:
                row[m.name] = group[m.name].mean()
        rows.append(row)
    return pd.DataFrame(rows)


def build_report(run_dirs: Sequence[str | Path]) -> tuple[pd.DataFrame, Contrast]:
    """The per-task table and the contrast (with the remedy table, when the runs have remedies)."""
    metrics, probe, retention, variant_columns = load_runs(run_dirs)
    has_joint = not metrics.empty and (metrics["regime"] == "joint").any()
    units = unit_table(metrics, probe, retention, variant_columns) if has_joint else pd.DataFrame()
    cohorts = cohort_report.half_life_table(
        cohort_report.read([str(Path(d).resolve()) for d in run_dirs], variant_columns), variant_columns)
    if units.empty and cohorts.empty:
        raise UserInputError(
            "the runs have nothing to report on: run the joint regime (--regime joint,...) or the cohort "
            "experiment (--suite recsim --regime daily --experiment cohort)"
        )
    if units.empty:
        result = Contrast(pd.DataFrame(columns=CONTRAST_COLUMNS),
                          "No joint-regime results in these runs: no contrast.", 0)
    else:
        result = contrast(units)
    result.remedies = remedy_report.remedy_table(metrics, probe, retention, variant_columns)
    result.remedy_verdict = remedy_report.remedy_verdict(result.remedies)
    result.pareto = pareto.pareto_table(metrics, variant_columns)
    result.cohorts = cohorts
    result.variant_columns = list(variant_columns)
    result.verdicts = verdict_lib.verdicts(units, variant_columns, result.remedies) if not units.empty else []
    return task_table(units, variant_columns) if not units.empty else pd.DataFrame(), result


def write_report(run_dirs: Sequence[str | Path]) -> tuple[pd.DataFrame, Contrast, Path]:
    """Builds the report; writes report.csv, contrast.csv, remedies.csv (with remedies) and report.md into the first run directory."""
    tasks, result = build_report(run_dirs)
    out = Path(run_dirs[0])
    io.write_csv(out / "report.csv", tasks)
    io.write_csv(out / "contrast.csv", result.table)
    if result.verdicts:
        io.write_json(out / "verdict.json", verdict_lib.to_json(result.verdicts))
        io.write_csv(out / "verdict.csv", verdict_lib.frame(result.verdicts, result.variant_columns))
    if not result.remedies.empty:
        io.write_csv(out / "remedies.csv", result.remedies)
    if not result.pareto.empty:
        io.write_csv(out / "pareto.csv", result.pareto)
    if not result.cohorts.empty:
        io.write_csv(out / "cohort_half_life.csv", result.cohorts)
    md = [
        "# mtl-bench report",
        "",
        "Runs: " + ", ".join(Path(r).name for r in run_dirs),
        "",
        *[f"**Warning:** {w}\n" for w in run_warnings(run_dirs)],
        *verdict_lines(result),
        "## Per task (validation split; transfer < 0 is negative transfer)",
        "",
        _markdown(tasks),
        "",
        *_legend(tasks),
        "## Contrast: which measures predict negative transfer",
        "",
        _markdown(result.table),
        "",
        "## What the correlations say (descriptive: correlations cannot separate causes)",
        "",
        result.verdict,
        "",
    ]
    if not result.remedies.empty:
        md += [
            "## Remedies: paired changes vs the baselines (validation split)",
            "",
            "Δm change > 0 is less negative transfer; `helps` when its 95% CI lies above 0. "
            "`update_conflict` is the share of probe events where the applied update raises a task's loss.",
            "",
            _markdown(result.remedies),
            "",
            "## What the interventions say",
            "",
            result.remedy_verdict,
            "",
        ]
    md += pareto.markdown(result.pareto, _markdown)
    if not result.cohorts.empty:
        md += [
            "## Cohort forgetting: a cohort that stops training (daily regime, validation days)",
            "",
            "Days until the held-out cohort loses half of its AUC lift over random, against a control cohort "
            "that keeps training; the held-out cohort's interests do not drift, so any decay is forgetting.",
            "",
            cohort_report.half_life_lines(result.cohorts),
            "",
            _markdown(result.cohorts),
            "",
        ]
    io.write_text(out / "report.md", "\n".join(md))
    return tasks, result, out


def verdict_lines(result: Contrast) -> list[str]:
    """The report's opening: one sentence per suite variant × architecture, then how it was decided."""
    if not result.verdicts:
        return []
    lines = [*verdict_lib.answer(result.verdicts, result.variant_columns), "## Verdict", ""]
    lines += [f"- {verdict_lib.sentence(v, result.variant_columns)}" for v in result.verdicts]
    lines += ["", "Read on the validation rows that never selected an epoch (joint regime vs the same architecture "
              "trained single-task, same seeds). Negative transfer: a 95% t-interval over seeds of `log_transfer` "
              f"(100·ln joint/single, sign-corrected, log points) below 0 (`no`: above -{verdict_lib.TOLERANCE:g}). "
              "Conflict: the tasks' gradient cosine with its noise removed (`conflict_ratio`, disjoint halves of "
              f"the probe batch) below -{verdict_lib.CONFLICT_RATIO:g} over seeds (97.5% interval). Forgetting: the "
              "task's probe loss rises over training windows without its labels more than its single-task model's "
              f"does over the same windows (`absence_damage` - `absence_floor` above {verdict_lib.FORGETTING_RISE:g}). "
              "`verdict.json` holds the evidence, each reading and the power.", ""]
    return lines


def _legend(tasks: pd.DataFrame) -> list[str]:
    """What each measure column of the per-task table means (from the measure catalog)."""
    rows = [f"- `{m.name}` ({m.family}): {m.text}" for m in MEASURES if m.name in tasks.columns and m.text]
    if not rows:
        return []
    head = ("Columns: `transfer` is the joint minus the single-task headline metric (sign-corrected, negative = "
            "worse) with its 95% interval over seeds; `n` the seeds. Measures are means over seeds, each marked "
            "with the explanation it speaks for; the verdict reads only `conflict_ratio` and `absence_damage` "
            "minus `absence_floor`, the others are evidence:")
    return [head, "", *rows, ""]


def _markdown(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(none)"
    fmt = lambda v: f"{v:.4g}" if isinstance(v, (float, np.floating)) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)
