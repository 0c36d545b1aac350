"""The policy experiment's summary (``policy_summary.csv``) and its ``policy.md``, from the rows it recorded.

``policy_summary.csv`` has one row per ``arm, kl, epochs, arch`` with these columns (means over seeds;
``*_ci_low`` / ``*_ci_high`` are 95% Student-t intervals over seeds):

* ``n_seeds``;
* ``auc_<task>``: last day's AUC on the day's random-policy sample;
* ``forgetting_<task>`` (+ CI): the pre-trained model's probe AUC minus the last day's (> 0 = forgot);
* ``drift_<task>``: mean daily output drift (KL, nats) of the head on the probe sample;
  ``drift_pretrained_<task>``: the last day's KL from the pre-trained model's probe predictions;
* ``ratio_dev`` (+ CI), ``ratio_mean``, ``clip_share``, ``kl_ref``: off-policyness of the RL updates
  (means over days and update passes of ``policy_updates.csv``; NaN for the supervised arms);
* ``heldout_click_auc_change``, ``control_click_auc_change``: last day's click AUC minus the first arm
  day's, for the held-out cohort and the control cohort 0;
* ``click_rate_<first|last>``, ``reward_<first|last>``, ``coverage_<first|last>``, ``gini_<first|last>``
  (first and last arm day), ``coverage_last_ci_*``, ``gini_last_ci_*``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mtl_bench.engine import metrics as metrics_lib

VARIANT: tuple[str, ...] = ("arm", "kl", "epochs", "arch")
TASKS: tuple[str, ...] = ("click", "conversion", "like")


def gini(counts: np.ndarray) -> float:
    """The Gini coefficient of impressions per item (0 = every item shown alike; (n - 1) / n = one item only)."""
    x = np.sort(np.asarray(counts, np.float64))
    n = len(x)
    if n == 0 or x.sum() == 0:
        return float("nan")
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * x.sum()))


def _ci(row: dict, name: str, per_seed: pd.Series) -> None:
    mean, low, high, _ = metrics_lib.mean_ci(per_seed.tolist())
    row[name], row[f"{name}_ci_low"], row[f"{name}_ci_high"] = mean, low, high


def summarize(frame: pd.DataFrame, updates: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per arm variant and architecture (see the module docstring)."""
    if updates is None or updates.empty:
        updates = pd.DataFrame(columns=[*VARIANT, "seed", "day", "epoch", "measure", "value"])
    out = []
    for key, g in frame.groupby(list(VARIANT), sort=False):
        pre, last = g["day"].min(), g["day"].max()
        arm_days = g[g["day"] > pre]
        first = arm_days["day"].min()

        def per_seed(measure: str, task: str, day: int) -> pd.Series:
            sel = g[(g["measure"] == measure) & (g["task"] == task) & (g["day"] == day)]
            return sel.set_index("seed")["value"]

        row = dict(zip(VARIANT, key)) | {"n_seeds": g["seed"].nunique()}
        for t in TASKS:
            row[f"auc_{t}"] = per_seed("auc", t, last).mean()
            _ci(row, f"forgetting_{t}", per_seed("auc_probe", t, pre) - per_seed("auc_probe", t, last))
            drift = arm_days[(arm_days["measure"] == "output_drift") & (arm_days["task"] == t)]
            row[f"drift_{t}"] = drift["value"].mean()
            row[f"drift_pretrained_{t}"] = per_seed("drift_pretrained", t, last).mean()
        u = updates
        for col, value in zip(VARIANT, key):
            u = u[u[col] == value]
        for m in ("ratio_dev", "ratio_mean", "clip_share", "kl_ref"):
            values = u[u["measure"] == m].groupby("seed")["value"].mean()
            if m == "ratio_dev":
                _ci(row, m, values if len(values) else pd.Series([np.nan]))
            else:
                row[m] = values.mean() if len(values) else np.nan
        for name, cohort in (("heldout", "auc_heldout"), ("control", "auc_control")):
            row[f"{name}_click_auc_change"] = (per_seed(cohort, "click", last) - per_seed(cohort, "click", first)).mean()
        for m in ("click_rate", "reward", "coverage", "gini"):
            row[f"{m}_first"] = per_seed(m, "all", first).mean()
            row[f"{m}_last"] = per_seed(m, "all", last).mean()
        for m in ("coverage", "gini"):
            _, row[f"{m}_last_ci_low"], row[f"{m}_last_ci_high"], _ = metrics_lib.mean_ci(per_seed(m, "all", last).tolist())
        out.append(row)
    return pd.DataFrame(out)


def label(arm: str, kl: float, epochs: int) -> str:
    """A readable name of an arm variant, e.g. ``ppo ×4 kl=0.1``."""
    text = arm + (f" ×{epochs}" if arm == "ppo" else "")
    return text + (f" kl={kl:g}" if kl else "")


def _with_ci(row: pd.Series, name: str, digits: int = 4) -> str:
    mean, low, high = row[name], row.get(f"{name}_ci_low", np.nan), row.get(f"{name}_ci_high", np.nan)
    if not np.isfinite(mean):
        return "–"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _table(header: list[str], lines: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in lines]


def describe(summary: pd.DataFrame) -> str:
    """``policy.md``: forgetting and drift against off-policyness, then the feedback loop, per arm variant."""
    f = lambda v: "–" if not np.isfinite(v) else f"{v:.4f}"  # noqa: E731
    lines = ["# On-policy vs logged data: forgetting against off-policyness", "",
             "Means over seeds, 95% t-intervals over seeds in brackets. Forgetting = the pre-trained model's AUC on "
             "the probe sample of the pre-training world minus the last day's (> 0 = forgot). Drift = mean daily "
             "KL of the head's probe predictions (nats). Off-policyness = mean |pi/b - 1| of the samples each RL "
             "update used (0 = strictly on-policy); clip share = share with |pi/b - 1| > eps.", ""]
    rows = []
    for _, r in summary.iterrows():
        rows.append([label(r["arm"], r["kl"], r["epochs"]), str(r["arch"]), str(r["n_seeds"]),
                     _with_ci(r, "forgetting_click"), _with_ci(r, "forgetting_conversion"), _with_ci(r, "forgetting_like"),
                     " / ".join(f"{r[f'drift_{t}']:.2e}" for t in TASKS), _with_ci(r, "ratio_dev"), f(r["clip_share"]),
                     f(r["kl_ref"])])
    lines += _table(["arm", "arch", "seeds", "forgetting click", "forgetting conversion", "forgetting like",
                     "drift click / conv / like", "off-policyness", "clip share", "KL to pre-trained policy"], rows)
    lines += ["", "## The feedback loop", "",
              "Last day's AUC on a random-policy sample; click rate, reward, coverage (share of items shown) and "
              "Gini of impressions per item on the first and last arm day; held-out and control cohorts' change "
              "in click AUC.", ""]
    rows = []
    for _, r in summary.iterrows():
        rows.append([label(r["arm"], r["kl"], r["epochs"]), str(r["arch"]), f(r["auc_click"]), f(r["auc_conversion"]),
                     f(r["auc_like"]), f"{f(r['click_rate_first'])} → {f(r['click_rate_last'])}",
                     f"{f(r['reward_first'])} → {f(r['reward_last'])}",
                     f"{f(r['coverage_first'])} → {f(r['coverage_last'])}",
                     f"{f(r['gini_first'])} → {f(r['gini_last'])}", f(r["heldout_click_auc_change"]),
                     f(r["control_click_auc_change"])])
    lines += _table(["arm", "arch", "AUC click", "AUC conversion", "AUC like", "click rate", "reward", "coverage",
                     "Gini", "held-out Δ", "control Δ"], rows)
    return "\n".join(lines) + "\n"


__all__ = ["VARIANT", "describe", "label", "summarize"]
