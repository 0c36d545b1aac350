"""The verdict: is there negative transfer, and which mechanism explains it? Said only as far as the data allow.

Per suite × variant × architecture × task, over seeds (one value per seed; a
seed is the independent replicate: its data draw, its single-task baseline and
its joint run), from the joint regime on the outcome rows of the validation
split (rows that never selected an epoch):

1. **Negative transfer.** ``log_transfer``, ``100 · ln`` of the joint over the
   single-task value, sign-corrected (negative = worse; log points, about
   percent for small effects, and a model nine times worse weighs as much as
   one nine times better, so one seed's blow-up does not swamp the interval),
   with a Student-t 95% interval over seeds: ``yes`` when the interval lies
   below 0; ``no`` when it lies above ``-TOLERANCE`` (any negative transfer
   is smaller than that); ``undetermined`` otherwise, or with fewer than
   :data:`MIN_SEEDS` seeds.
2. **Explanation** (only for ``yes``), from two readings, each ``yes``,
   ``no`` or ``unclear`` by its 97.5% interval over seeds (Bonferroni: the
   two together name an absent mechanism with probability at most 2.5%):

   * *conflict*: ``conflict_ratio``, the cross-task gradient cosine on
     disjoint halves of the probe batch divided by the geometric mean of the
     two tasks' within-task cosines on the same halves (the noise floor):
     the cosine of the tasks' expected gradients. ``yes`` when its interval
     lies below ``-CONFLICT_RATIO``, ``no`` when it lies above; no ratio (so
     ``unclear``) when a floor is below ``FLOOR_MIN`` (noise). Opposed
     expected gradients mean the shared weights sit at a compromise between
     the tasks: gradient conflict, whether it comes from tasks that want
     different things or from shared capacity too small for both.
   * *forgetting*: ``absence_damage - absence_floor``, how much more the
     task's probe loss rises over training windows without any of its labels
     than the same task's single-task model's does over the same windows
     (that model sees the same missing labels and no other task: its rise is
     its own optimizer's drift). ``yes`` when the interval lies above
     ``FORGETTING_RISE``, ``no`` when it lies below; ``not measurable`` when
     every batch held the task's labels: forgetting between bursts cannot
     happen there.

   The explanation names the mechanisms with a ``yes`` reading (``both``
   for two), even when the other reading is unclear (the sentence says so);
   ``neither`` when every reading rules its mechanism out (the negative
   transfer comes from elsewhere, e.g. gates or selection);
   ``undetermined`` otherwise. The k-step ``damage`` measures of the probe
   are reported as evidence but do not decide: on the planted suite they did
   not separate the mechanisms (see :mod:`mtl_bench.measures.catalog`).
3. **Power.** With ``n`` seeds and the observed standard deviation ``s`` of
   the transfer, the smallest effect a two-sided 5% t-test detects with 80%
   probability: ``(t_{0.975, n-1} + t_{0.8, n-1}) · s / sqrt(n)``, and the
   seeds needed for a 10-point effect.

The thresholds were set on a development run of the planted suite (seeds
0-5); ``mtl-bench calibrate`` checks them on other seeds.

The variant's verdict joins its tasks': ``negative_transfer`` is ``yes`` when
any task's is, ``no`` when every task's is ``no``; its explanation is the union
of the explanations of its tasks with negative transfer (``both`` when they
name both mechanisms), ``undetermined`` when any of them is.

Interventions (runs with remedies) are attached as evidence: for each
conflict or forgetting remedy, whether it reduced negative transfer against
every baseline (:mod:`mtl_bench.analysis.remedies`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from mtl_bench.analysis.summary import variant_label
from mtl_bench.engine.metrics import mean_ci

TRANSFER = "log_transfer"  # 100 · ln(multi / single), sign-corrected: log points, ≈ percent for small effects
TOLERANCE = 10.0  # log points: "no" rules out negative transfer larger than this
MIN_SEEDS = 3
# Each reading's interval is two-sided 97.5% (one-sided 1.25%), so the chance that the explanation names a
# mechanism that is not there is at most 2.5% for the two readings together (Bonferroni).
READING_LEVEL = 0.975
CONFLICT_RATIO = 0.1  # the noise-free gradient cosine below which the tasks' gradients oppose
FORGETTING_RISE = 0.01  # relative loss rise per window (beyond the single-task floor) that counts as harm
EVIDENCE = ("conflict_ratio", "cosine_halves", "cosine_floor", "absence_damage", "absence_floor", "presence_rise",
            "damage", "damage_first_order", "damage_excess")
POWER = 0.8
TARGET_EFFECT = 10.0  # percent: the effect the seed count advice is given for
NEGATIVE_TRANSFER = ("yes", "no", "undetermined")
EXPLANATIONS = ("conflict", "forgetting", "both", "neither", "undetermined")


def detectable_effect(sd: float, n: int, power: float = POWER, alpha: float = 0.05) -> float:
    """Smallest mean a two-sided one-sample t-test of level ``alpha`` detects with probability ``power``."""
    if n < 2 or not np.isfinite(sd):
        return float("nan")
    return float((stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(power, n - 1)) * sd / math.sqrt(n))


def seeds_needed(sd: float, effect: float = TARGET_EFFECT, power: float = POWER, alpha: float = 0.05) -> int:
    """Seeds for :func:`detectable_effect` to reach ``effect`` (at most 10,000)."""
    if not np.isfinite(sd) or sd == 0:
        return MIN_SEEDS
    n = 2
    while n < 10_000 and detectable_effect(sd, n, power, alpha) > effect:
        n += 1
    return max(n, MIN_SEEDS)


def _interval(values: Sequence[float], level: float = 0.95) -> dict[str, float]:
    mean, lo, hi, n = mean_ci(list(values), level)
    return {"mean": mean, "ci_low": lo, "ci_high": hi, "n": n}


def task_verdict(units: pd.DataFrame) -> dict[str, Any]:
    """The verdict of one task of one suite variant × architecture, from its per-seed units.

    Args:
        units: One row per seed with ``log_transfer`` and, when the probe ran,
            the evidence columns (:data:`EVIDENCE`); several rows of one seed
            (the same seed in two runs) are averaged first: one data draw is
            one replicate.
    """
    if "seed" in units.columns and units["seed"].duplicated().any():
        units = units.groupby("seed", dropna=False).mean(numeric_only=True).reset_index()
    rel = units[TRANSFER].to_numpy(float)
    transfer = _interval(rel)
    n = transfer["n"]
    sd = float(np.nanstd(rel, ddof=1)) if n >= 2 else float("nan")
    mde = detectable_effect(sd, n)
    if n < MIN_SEEDS or not np.isfinite(transfer["ci_low"]):
        negative = "undetermined"
    elif transfer["ci_high"] < 0:
        negative = "yes"
    elif transfer["ci_low"] > -TOLERANCE:
        negative = "no"
    else:
        negative = "undetermined"
    parts = {k: _interval(units[k].to_numpy(float), READING_LEVEL) if k in units else _interval([]) for k in EVIDENCE}
    if {"absence_damage", "absence_floor"} <= set(units.columns):
        parts["absence_excess"] = _interval((units["absence_damage"] - units["absence_floor"]).to_numpy(float),
                                            READING_LEVEL)
    else:
        parts["absence_excess"] = _interval([])
    readings = {"conflict": _conflict_reading(parts["conflict_ratio"]), "forgetting": _forgetting_reading(parts)}
    if negative == "no":
        explanation = "neither"
    elif negative == "undetermined":
        explanation = "undetermined"
    else:
        explanation = _explain(readings)
    return {
        "negative_transfer": negative,
        "transfer": transfer,
        "explanation": explanation,
        "evidence": parts,
        "readings": readings,
        "power": {
            "seeds": n,
            "sd": sd,
            "detectable_effect": mde,
            "seeds_for_10_points": seeds_needed(sd),
            "statement": (f"with {n} seeds a transfer of -{mde:.1f} log points (about {100 * (1 - math.exp(-mde / 100)):.0f}% "
                          "worse than single-task) would have been "
                          f"detected with {POWER:.0%} probability" if np.isfinite(mde) else
                          f"with {n} seed(s) no interval can be computed"),
        },
    }


def _conflict_reading(ratio: dict[str, float]) -> str:
    """``yes`` when the conflict ratio's interval lies below ``-CONFLICT_RATIO``, ``no`` above it."""
    if not np.isfinite(ratio["ci_low"]):
        return "unclear"
    if ratio["ci_high"] < -CONFLICT_RATIO:
        return "yes"
    if ratio["ci_low"] > -CONFLICT_RATIO:
        return "no"
    return "unclear"


def _forgetting_reading(parts: dict[str, dict[str, float]]) -> str:
    """``yes`` when the task's loss rises over stretches without its labels more than its single-task model's does.

    ``not measurable`` when training never had such a stretch (every batch held
    the task's labels): forgetting between bursts cannot happen there.
    """
    absence, excess = parts["absence_damage"], parts["absence_excess"]
    if absence["n"] == 0:
        return "not measurable"
    if not np.isfinite(excess["ci_low"]):
        return "unclear"
    if excess["ci_low"] > FORGETTING_RISE:
        return "yes"
    if excess["ci_high"] < FORGETTING_RISE:
        return "no"
    return "unclear"


def _explain(readings: dict[str, str]) -> str:
    """The mechanisms with a positive reading; ``neither`` only when every reading rules its mechanism out.

    A positive reading names its mechanism even when the other reading is
    unclear (``verdict.json`` keeps the readings, and the sentence says so).
    """
    conflict, forgetting = readings["conflict"] == "yes", readings["forgetting"] == "yes"
    if conflict and forgetting:
        return "both"
    if conflict or forgetting:
        return "conflict" if conflict else "forgetting"
    if readings["conflict"] == "no" and readings["forgetting"] in ("no", "not measurable"):
        return "neither"
    return "undetermined"


def join(explanations: Sequence[str]) -> str:
    """The explanation of a variant from those of its tasks with negative transfer."""
    named = set(explanations)
    if not named:
        return "neither"
    if "undetermined" in named:
        return "undetermined"
    mechanisms = named & {"conflict", "forgetting", "both"}
    if "both" in mechanisms or mechanisms == {"conflict", "forgetting"}:
        return "both"
    if mechanisms:
        return mechanisms.pop()
    return "neither"


def verdicts(units: pd.DataFrame, variant_columns: Sequence[str], remedies: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """One verdict per suite × variant × architecture, each with its tasks' verdicts.

    Args:
        units: The report's unit table (one row per run × suite × variant × arch × seed × task).
        variant_columns: The suite parameters that identify a variant.
        remedies: The report's remedy table, attached as intervention evidence.
    """
    if units.empty:
        return []
    keys = ["suite", *variant_columns, "arch"]
    out = []
    for key, group in units.groupby(keys, dropna=False, sort=False):
        tasks = {task: task_verdict(g) for task, g in group.groupby("task", sort=False)}
        flags = [v["negative_transfer"] for v in tasks.values()]
        if "yes" in flags:
            negative = "yes"
        elif all(f == "no" for f in flags):
            negative = "no"
        else:
            negative = "undetermined"
        explanation = (join([v["explanation"] for v in tasks.values() if v["negative_transfer"] == "yes"])
                       if negative == "yes" else "neither" if negative == "no" else "undetermined")
        entry = {**{k: _plain(v) for k, v in zip(keys, key)}, "negative_transfer": negative,
                 "explanation": explanation, "tasks": tasks,
                 "interventions": _interventions(remedies, _scope(dict(zip(keys, key)), variant_columns))}
        out.append(entry)
    return out


def _scope(key: dict[str, Any], variant_columns: Sequence[str]) -> str:
    """The remedy table's ``variant`` value of one variant (see :mod:`mtl_bench.analysis.remedies`)."""
    return variant_label(key, variant_columns)


def _interventions(remedies: pd.DataFrame | None, scope: str) -> list[dict[str, Any]]:
    """The conflict and forgetting remedies' rows of this variant (the pooled rows when the run has one variant)."""
    if remedies is None or remedies.empty:
        return []
    rows = remedies[remedies["family"].isin(["conflict", "forgetting"])]
    if "variant" in rows:
        own = rows[rows["variant"] == scope]
        rows = own if not own.empty else rows[rows["variant"] == "all"]
    return [{"regime": r.regime, "remedy": r.remedy, "family": r.family, "baseline": r.baseline,
             "median_delta_m_change": float(r.median_change), "ci_low": float(r.median_ci_low),
             "ci_high": float(r.median_ci_high), "reduces_negative_transfer": bool(r.helps)}
            for r in rows.itertuples(index=False)]


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def to_json(value: Any) -> Any:
    """``value`` with NaN and infinities as None (strict JSON) and numpy scalars as Python ones."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    value = _plain(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def sentence(entry: dict[str, Any], variant_columns: Sequence[str]) -> str:
    """One line a user can act on, for one variant's verdict."""
    where = variant_label(entry, variant_columns)
    head = f"{entry['suite']} {where} {entry['arch']}".replace("  ", " ")
    parts = []
    for task, v in entry["tasks"].items():
        t = {k: float("nan") if x is None else x for k, x in v["transfer"].items()}  # read back from JSON: null
        ci = f"{t['mean']:+.1f} [{t['ci_low']:+.1f}, {t['ci_high']:+.1f}]" if np.isfinite(t["ci_low"]) else f"{t['mean']:+.1f}"
        text = f"{task}: negative transfer {v['negative_transfer']} ({ci} log points vs single-task, {v['power']['seeds']} seeds)"
        if v["negative_transfer"] == "yes":
            text += f", explained by {v['explanation']}" if v["explanation"] != "undetermined" else ", explanation undetermined"
            unclear = [k for k, r in v["readings"].items() if r == "unclear"]
            if unclear and v["explanation"] not in ("undetermined",):
                text += f" ({' and '.join(unclear)} unclear)"
        parts.append(text)
    return f"{head}: negative transfer {entry['negative_transfer']}, explanation {entry['explanation']}. " + "; ".join(parts) + "."


CONFLICT_REMEDIES = "pcgrad,gradvac,cagrad"
FORGETTING_REMEDIES = "distill,kl-anchor"  # the anchors that act in the joint regime (replay: sequential only)


def _percent(log_points: float) -> str:
    """A log-point transfer as the percent change of the metric's error-like scale (``-10`` → about ``10%`` worse)."""
    change = 100 * (1 - math.exp(-abs(log_points) / 100))
    return f"about {change:.0f}% {'worse' if log_points < 0 else 'better'} than single-task"


def _why(v: dict[str, Any]) -> str:
    """The readings behind an explanation, in words."""
    r, ev = v["readings"], v["evidence"]
    if r["conflict"] == "yes":
        conflict = "the tasks' noise-free gradient cosine is below -0.1 (gradient conflict)"
    elif r["conflict"] == "no":
        conflict = "the noise-free gradient cosine rules conflict out"
    elif ev["conflict_ratio"]["n"] == 0:
        conflict = "conflict unclear (the gradients are mostly noise at the probe: no noise-free cosine)"
    else:
        conflict = "conflict unclear (the noise-free cosine's interval straddles -0.1)"
    forgetting = {
        "yes": "its loss rises over stretches without its labels beyond its single-task model's (forgetting)",
        "no": "its loss over stretches without its labels rules forgetting out",
        "not measurable": "forgetting not measurable (every batch held its labels)",
        "unclear": "forgetting unclear (the excess loss rise's interval straddles the threshold)",
    }[r["forgetting"]]
    return f"{conflict}; {forgetting}"


def answer(entries: Sequence[dict[str, Any]], variant_columns: Sequence[str]) -> list[str]:
    """The report's opening in words a user can act on: where negative transfer is, how large, why, what next.

    Markdown lines. Every number is the verdict's (validation outcome rows, joint regime against the same
    architecture trained single-task, 95% t-interval over seeds).
    """
    units = [(e, task, v) for e in entries for task, v in e["tasks"].items()]
    if not units:
        return []
    where = lambda e: f"{e['arch']} on {e['suite']} {variant_label(e, variant_columns)}".rstrip()  # noqa: E731
    found = [(e, t, v) for e, t, v in units if v["negative_transfer"] == "yes"]
    ruled_out = [(e, t, v) for e, t, v in units if v["negative_transfer"] == "no"]
    open_ = [(e, t, v) for e, t, v in units if v["negative_transfer"] == "undetermined"]
    lines = ["## Answer", "",
             f"Negative transfer of each task under each architecture ({len(units)} task units; joint regime "
             "against the same architecture trained single-task on the same seeds; validation rows that never "
             "selected an epoch; 95% interval over seeds; in log points, 100·ln of the joint over the single-task "
             "metric, negative = worse):", ""]
    for e, task, v in found:
        t = v["transfer"]
        lines.append(f"- **{task} under {where(e)}: negative transfer** of {t['mean']:+.1f} log points "
                     f"({_percent(t['mean'])}), 95% CI [{t['ci_low']:+.1f}, {t['ci_high']:+.1f}], "
                     f"{v['power']['seeds']} seeds. Explanation: **{v['explanation']}**: {_why(v)}.")
    if ruled_out:
        names = ", ".join(f"{t} under {where(e)}" for e, t, _ in ruled_out)
        lines.append(f"- No negative transfer larger than {TOLERANCE:g} log points for {len(ruled_out)} of "
                     f"{len(units)}: {names}.")
    if open_:
        seeds = [v["power"]["seeds_for_10_points"] for _, _, v in open_]
        lines.append(f"- **Undetermined** for {len(open_)} of {len(units)}: their intervals hold both 0 and "
                     f"-{TOLERANCE:g} log points (or fewer than {MIN_SEEDS} seeds). With the spread seen, "
                     f"{max(seeds)} seeds per configuration would detect a {TARGET_EFFECT:g}-point effect with "
                     f"{POWER:.0%} power in every one of them (median {int(np.median(seeds))}).")
    lines += ["", "What to try next:", ""]
    nexts = []
    for e in entries:
        for i in e.get("interventions", []):
            if i["reduces_negative_transfer"]:
                nexts.append(f"- {i['remedy']} ({i['family']} remedy) reduced negative transfer for {where(e)} in the "
                             f"{i['regime']} regime (median Δm change {i['median_delta_m_change']:+.2f}, 95% CI "
                             f"{i['ci_low']:+.2f} to {i['ci_high']:+.2f}, against {i['baseline']}).")
    explained = {v["explanation"] for _, _, v in found}
    if explained & {"conflict", "both"}:
        nexts.append(f"- Conflict is named: compare the conflict remedies, `--remedy {CONFLICT_REMEDIES}`, against "
                     "the static-weight sweep (`sweep-0` ... `sweep-10`), and read the remedy and sweep sections.")
    if explained & {"forgetting", "both"}:
        nexts.append(f"- Forgetting is named: compare the forgetting remedies, `--remedy {FORGETTING_REMEDIES}` "
                     "(and `replay` in the sequential regime).")
    if explained & {"undetermined"}:
        nexts.append("- The explanation is undetermined: test both families directly, `--remedy "
                     f"{CONFLICT_REMEDIES.split(',')[0]},{FORGETTING_REMEDIES.split(',')[-1]}`, with more seeds; "
                     "a remedy that removes the negative transfer is evidence for its mechanism.")
    if explained & {"neither"}:
        nexts.append("- Neither mechanism explains it: look at the architecture (expert and gate capacity) and "
                     "the task weights (`mtl-bench tune`).")
    if open_:
        seeds = sorted(v["power"]["seeds_for_10_points"] for _, _, v in open_)
        median, most = int(np.median(seeds)), seeds[-1]
        nexts.append(f"- Decide the undetermined ones with more seeds: `--seeds {median}` settles half of them "
                     f"(the noisiest needs {most}); seeds are independent data draws, and the verdict needs at least "
                     f"{MIN_SEEDS}.")
    if not found and not open_:
        nexts.append("- Nothing to fix: no task loses more than the tolerance by training jointly.")
    return lines + (nexts or ["- (no suggestion)"]) + [""]


def frame(entries: Sequence[dict[str, Any]], variant_columns: Sequence[str]) -> pd.DataFrame:
    """The verdicts as a tidy table, one row per variant × arch × task (``verdict.csv``)."""
    rows = []
    for e in entries:
        for task, v in e["tasks"].items():
            t, ev = v["transfer"], v["evidence"]
            rows.append({"suite": e["suite"], **{c: e.get(c) for c in variant_columns}, "arch": e["arch"], "task": task,
                         "negative_transfer": v["negative_transfer"], "explanation": v["explanation"],
                         "variant_negative_transfer": e["negative_transfer"], "variant_explanation": e["explanation"],
                         "log_transfer": t["mean"], "ci_low": t["ci_low"], "ci_high": t["ci_high"], "seeds": t["n"],
                         **{f"{k}{s}": ev[k][f] for k in ev for s, f in (("", "mean"), ("_ci_low", "ci_low"), ("_ci_high", "ci_high"))},
                         "detectable_effect": v["power"]["detectable_effect"],
                         "seeds_for_10_points": v["power"]["seeds_for_10_points"]})
    if not rows:
        return pd.DataFrame(columns=["suite", *variant_columns, "arch", "task", "negative_transfer", "explanation",
                                     "log_transfer", "ci_low", "ci_high", "seeds", "seeds_for_10_points"])
    return pd.DataFrame(rows)
