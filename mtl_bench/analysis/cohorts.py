"""The cohort-forgetting experiment's summary: how fast a cohort that stops training is forgotten.

From ``cohort_forgetting.csv`` (per-cohort AUC by day of the daily regime),
for every suite variant × architecture × remedy × task and two cohorts — the
held-out cohort, and as control the lowest-numbered cohort that keeps
training (cohort 0 never drifts in ``recsim``):

* ``start_lift``: AUC − 0.5 on the first held-out day ``H``, evaluated after
  training through day ``H - 1`` (the last day with the cohort's data);
* ``half_life_days``: the first ``t - H`` (``t > H``) at which the lift of the
  seed-averaged AUC curve is at most half of ``start_lift``; NaN when that
  never happens within the ``horizon_days`` the run covers. ``status`` says
  which: ``halved``, ``not halved``, or ``no lift`` when the cohort was not
  predicted better than random to begin with.

* ``lift_change`` (with ``lift_change_ci_low`` / ``_ci_high``): the cohort's AUC on the last day
  minus its AUC on day ``H``, per seed, then its mean and 95% t-interval over seeds;
* ``forgetting`` (with its interval; the same on both rows of a group): the control's
  ``lift_change`` minus the held-out cohort's, paired by seed. Above 0, the held-out cohort
  falls behind the cohorts that keep training.

The half-life reads the lift averaged over seeds, so one noisy seed cannot end the curve early;
the intervals need two seeds or more (NaN with one).
Each ``sample`` of the daily evaluation (``logged`` rows, and the ``uniform``
random-policy rows when the suite has them) gets its own rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mtl_bench.engine.metrics import mean_ci

COLUMNS = ["suite", "arch", "remedy", "sample", "task", "cohort", "role", "start_day", "start_lift", "end_lift",
           "half_life_days", "status", "horizon_days", "n_seeds", "lift_change", "lift_change_ci_low",
           "lift_change_ci_high", "forgetting", "forgetting_ci_low", "forgetting_ci_high"]
CHANGE_BOUNDS = (-1.0, 1.0)  # a change of AUC
MIN_SEEDS = 2  # for an interval over seeds


def half_life_table(cohorts: pd.DataFrame, variant_columns: Sequence[str] = ()) -> pd.DataFrame:
    """See the module docstring; empty when no cohort was held out."""
    variant_columns = [c for c in variant_columns if c in cohorts.columns]
    columns = ["suite", *variant_columns, *COLUMNS[1:]]
    if cohorts.empty or not (cohorts["heldout"].astype(str) == "True").any():
        return pd.DataFrame(columns=columns)
    frame = cohorts.assign(cohort=cohorts["cohort"].astype(str), heldout=cohorts["heldout"].astype(str) == "True")
    if "sample" not in frame:
        frame = frame.assign(sample="logged")
    keys = ["suite", *variant_columns, "arch", "remedy", "sample", "task"]
    rows = []
    for key, group in frame.groupby(keys, dropna=False, sort=False):
        held = group[group["heldout"]]
        if held.empty:
            continue
        held_cohort = held["cohort"].iloc[0]
        start = int(held["day"].min())
        others = sorted((c for c in set(group["cohort"]) if c != held_cohort), key=lambda c: (len(c), c))
        roles = [("heldout", held_cohort)] + ([("control", others[0])] if others else [])
        changes = {}
        for role, cohort in roles:
            curve = group[(group["cohort"] == cohort) & (group["day"] >= start)]
            lift = (curve.groupby("day")["auc"].mean() - 0.5).sort_index()
            if lift.empty or start not in lift.index:
                continue
            first = float(lift.loc[start])
            later = lift[lift.index > start]
            halved = later[later <= first / 2] if first > 0 else later.iloc[:0]
            half = float(halved.index[0] - start) if len(halved) else float("nan")
            status = "no lift" if first <= 0 else "halved" if len(halved) else "not halved"
            changes[role] = _seed_changes(curve, start)
            mean, low, high, _ = mean_ci(list(changes[role]), bounds=CHANGE_BOUNDS)
            rows.append({**dict(zip(keys, key)), "cohort": cohort, "role": role, "start_day": start,
                         "start_lift": first, "end_lift": float(lift.iloc[-1]), "half_life_days": half,
                         "status": status, "horizon_days": int(lift.index.max() - start),
                         "n_seeds": int(curve["seed"].nunique()), "lift_change": mean, "lift_change_ci_low": low,
                         "lift_change_ci_high": high})
        if len(changes) == 2:
            paired = (changes["control"] - changes["heldout"]).dropna()
            mean, low, high, _ = mean_ci(list(paired), bounds=(-2.0, 2.0))
            for row in rows[-2:]:
                row.update(forgetting=mean, forgetting_ci_low=low, forgetting_ci_high=high)
    return pd.DataFrame(rows, columns=columns)


def _seed_changes(curve: pd.DataFrame, start: int) -> pd.Series:
    """Per seed: the cohort's AUC on its last day minus its AUC on day ``start`` (NaN without day ``start``)."""
    by_seed = curve.groupby(["seed", "day"])["auc"].mean().unstack("day").sort_index(axis=1)
    if start not in by_seed.columns:
        return pd.Series(dtype=float)
    last = by_seed.apply(lambda r: r.dropna().iloc[-1] if r.notna().any() else np.nan, axis=1)
    return last - by_seed[start]


def half_life_lines(table: pd.DataFrame) -> str:
    """The cohort result in words: one line per suite variant × architecture × remedy × sample, first task of each.

    Each line names the held-out and the control cohort, their AUC lift over random on the first held-out
    day and the last day, each change with its 95% interval over seeds, the forgetting (control change
    minus held-out change, paired by seed) with its interval, and what that interval supports. With one
    seed it makes no claim and says how to get one.
    """
    if table.empty:
        return ""
    lines = []
    variant = [c for c in table.columns if c not in COLUMNS]
    keys = ["suite", *variant, "arch", "remedy", "sample"]
    # Only what differs between lines labels them (a cohort run's holdout_day=5 is the same everywhere).
    shown = [k for k in keys if table[k].astype(str).nunique() > 1 or k in ("arch", "sample")]
    for key, group in table.groupby(keys, dropna=False, sort=False):
        values = dict(zip(keys, key))
        task = group["task"].iloc[0]
        part = group[group["task"] == task].set_index("role")
        held = part.loc["heldout"]
        label = ", ".join(_label(k, values[k]) for k in shown if not pd.isna(values[k]))
        n = int(part["n_seeds"].min())
        end = int(held["start_day"] + held["horizon_days"])
        text = (f"- {label}: {task} AUC lift over random, day {int(held['start_day'])} → {end}, "
                f"{n} seed{'s' if n != 1 else ''}: held-out cohort {held['cohort']} {_change(held)}")
        if "control" not in part.index:
            lines.append(text + "; no control cohort to compare with.")
            continue
        control = part.loc["control"]
        text += f"; control cohort {control['cohort']} {_change(control)}"
        if n < MIN_SEEDS:
            lines.append(text + f". One seed: no interval, so no claim; run --seeds {MIN_SEEDS + 1} or more.")
            continue
        lines.append(text + f"; forgetting (control change − held-out change) {_interval(held, 'forgetting')}: "
                            f"{_reading(held)}{_half_life(held)}.")
    return "\n".join(lines)


def _label(key: str, value: object) -> str:
    if key == "arch":
        return str(value)
    if key == "sample":
        return f"{value} sample"
    return f"{key}={value}"


def _interval(row: pd.Series, name: str) -> str:
    low, high = row[f"{name}_ci_low"], row[f"{name}_ci_high"]
    ci = f" [{low:+.3f}, {high:+.3f}]" if np.isfinite(low) and np.isfinite(high) else ""
    return f"{row[name]:+.3f}{ci}"


def _change(row: pd.Series) -> str:
    return f"{row['start_lift']:+.3f} → {row['end_lift']:+.3f} (change {_interval(row, 'lift_change')})"


def _reading(row: pd.Series) -> str:
    low, high = row["forgetting_ci_low"], row["forgetting_ci_high"]
    if not (np.isfinite(low) and np.isfinite(high)):
        return "no interval"
    if low > 0:
        return "the held-out cohort is forgotten (it falls behind the cohorts that keep training)"
    if high < 0:
        return "the held-out cohort does better than the control: no forgetting"
    return "no difference the seeds can resolve (the interval spans 0)"


def _half_life(row: pd.Series) -> str:
    if row["status"] == "halved":
        return f"; its lift halved after {row['half_life_days']:.0f} days"
    if row["status"] == "no lift":
        return "; it had no lift over random to lose"
    return f"; its lift did not halve within {int(row['horizon_days'])} days"


def summary_text(run_dir: str | Path, variant_columns: Sequence[str]) -> str:
    """What a run's closing summary says of its held-out cohort (``""`` when it held none out)."""
    table = half_life_table(read([str(run_dir)], variant_columns), variant_columns)
    if table.empty:
        return ""
    return "Cohort experiment: the held-out cohort vs the control (AUC lift = AUC − 0.5; 95% CIs over seeds)\n" \
        + half_life_lines(table)


def read(run_dirs: Sequence[str], variant_columns: Sequence[str]) -> pd.DataFrame:
    """The runs' ``cohort_forgetting.csv`` files, concatenated (empty when none has one)."""
    frames = []
    for d in run_dirs:
        path = Path(d) / "cohort_forgetting.csv"
        if path.is_file():
            frames.append(pd.read_csv(path, keep_default_na=False, na_values=[""]).assign(run=str(d)))
    if not frames:
        return pd.DataFrame()
    frame = pd.concat(frames, ignore_index=True)
    for c in variant_columns:
        if c not in frame.columns:
            frame[c] = np.nan
    return frame
