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

The lift is averaged over seeds first, so one noisy seed cannot end the curve early.
Each ``sample`` of the daily evaluation (``logged`` rows, and the ``uniform``
random-policy rows when the suite has them) gets its own rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

COLUMNS = ["suite", "arch", "remedy", "sample", "task", "cohort", "role", "start_day", "start_lift", "end_lift",
           "half_life_days", "status", "horizon_days", "n_seeds"]


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
            rows.append({**dict(zip(keys, key)), "cohort": cohort, "role": role, "start_day": start,
                         "start_lift": first, "end_lift": float(lift.iloc[-1]), "half_life_days": half,
                         "status": status, "horizon_days": int(lift.index.max() - start),
                         "n_seeds": int(curve["seed"].nunique())})
    return pd.DataFrame(rows, columns=columns)


def half_life_lines(table: pd.DataFrame) -> str:
    """One line per suite variant × architecture × remedy, for the first task of each: what the report says."""
    if table.empty:
        return ""
    lines = []
    keys = ["suite", *[c for c in table.columns if c not in COLUMNS], "arch", "remedy", "sample"]
    for key, group in table.groupby(keys, dropna=False, sort=False):
        task = group["task"].iloc[0]
        part = group[group["task"] == task].set_index("role")

        def say(role: str) -> str:
            if role not in part.index:
                return "no control cohort"
            r = part.loc[role]
            lift = f"AUC lift {r['start_lift']:+.3f} → {r['end_lift']:+.3f}"
            if r["status"] == "no lift":
                return f"{lift}: no lift over random to lose"
            if r["status"] == "not halved":
                return f"{lift}, not halved within {r['horizon_days']} days"
            return f"{lift}, halved after {r['half_life_days']:.0f} days"

        label = " ".join(str(v) for v in key if not pd.isna(v))
        lines.append(f"- {label}, {task}: held-out cohort {part.loc['heldout', 'cohort']}: {say('heldout')}; "
                     f"control cohort: {say('control')}.")
    return "\n".join(lines)


def read(run_dirs: Sequence[str], variant_columns: Sequence[str]) -> pd.DataFrame:
    """The runs' ``cohort_forgetting.csv`` files, concatenated (empty when none has one)."""
    from pathlib import Path

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
