"""The cohort-forgetting experiment: one user cohort held out of daily training, its AUC followed day by day.

It runs on the grid (:mod:`mtl_bench.experiments.grid`) with a suite that has days and cohorts
(``recsim``, ``movielens``, ``table`` with ``[time]`` and ``[cohorts]``) and the daily regime;
this module holds what the experiment adds: its defaults (:func:`adapt`), its plan note (:func:`notes`)
and the per-cohort table of the daily regime's evaluations (:func:`cohort_forgetting`, written as
``cohort_forgetting.csv`` by every run with the daily regime).
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from mtl_bench.config import RunConfig
from mtl_bench.engine.regimes import pretrain_last_day
from mtl_bench.errors import UserInputError
from mtl_bench.experiments import COHORT
from mtl_bench.schema import ALL, DAILY

UNIFORM_ROWS = 2000  # the unbiased evaluation sample per day


def adapt(config: RunConfig) -> RunConfig:
    """The configuration with the experiment's defaults filled in (what ``config.toml`` records).

    The experiment needs a suite with days and cohorts and the daily regime. On ``recsim`` it holds
    out cohort 1 (whose drift the simulator then switches off; cohort 0, which never drifts, is the
    control) and adds an unbiased sample of ``UNIFORM_ROWS`` random-policy impressions a day. On real
    logs (``table`` with ``[time]`` and ``[cohorts]``, ``movielens``) it holds out cohort 1, the second
    largest, with the largest as the control. The cohort is held out from the first day after
    pre-training, unless ``suite_params`` names ``holdout_cohort`` / ``holdout_day`` /
    ``uniform_rows_per_day``.

    Raises:
        UserInputError: For a suite without days or cohorts, no daily regime, or a sweep of the day
            counts without ``holdout_day``.
    """
    import inspect

    from mtl_bench.tasks import SUITES

    loader = SUITES.get(config.suite)
    if loader is None or "holdout_cohort" not in inspect.signature(loader).parameters:
        raise UserInputError(f"experiment {COHORT!r} needs a suite with days and cohorts (recsim, movielens, or "
                             f"table with [time] and [cohorts]). Received: suite={config.suite!r}")
    if DAILY not in config.regimes:
        raise UserInputError(
            f"experiment {COHORT!r} needs the daily regime (--regime daily). Received: regimes={config.regimes}"
        )
    params = dict(config.suite_params)
    params.setdefault("holdout_cohort", 1)
    if config.suite == "recsim":
        from mtl_bench.tasks import recsim

        params.setdefault("uniform_rows_per_day", UNIFORM_ROWS)
        if "holdout_day" not in params:
            lengths = [params.get(k, recsim.DEFAULTS[k]) for k in ("days", "validation_days", "test_days")]
            if any(isinstance(v, list) for v in lengths):
                raise UserInputError(f"experiment {COHORT!r}: set suite parameter holdout_day when days are swept")
            days, validation, test = lengths
            params["holdout_day"] = pretrain_last_day(range(max(days - validation - test, 1)), config.pretrain_days) + 1
    elif "holdout_day" not in params:
        if any(isinstance(v, list) for v in params.values()):
            raise UserInputError(f"experiment {COHORT!r}: set suite parameter holdout_day when suite parameters are swept")
        plain = {k: v for k, v in params.items() if k != "holdout_cohort"}
        data = loader(seed=config.first_seed, **plain)
        if "cohort" not in data.train.meta:
            raise UserInputError(f"experiment {COHORT!r}: suite {config.suite!r} has no cohorts "
                                 "(a table needs [time] and [cohorts] sections)")
        params["holdout_day"] = pretrain_last_day(data.train.meta["day"].tolist(), config.pretrain_days) + 1
    return dataclasses.replace(config, suite_params=params)


def notes(config: RunConfig) -> list[str]:
    """What the plan records about the experiment: the held-out rows leave every regime of the run."""
    if set(config.regimes) - {DAILY}:
        world = ", in a world where that cohort's interests do not drift" if config.suite == "recsim" else ""
        return [f"experiment {COHORT!r}: every regime trains without the held-out cohort's rows from the holdout "
                f"day{world}"]
    return []


def cohort_forgetting(daily: pd.DataFrame, variant_columns: list[str]) -> pd.DataFrame:
    """Per-cohort AUC by day: ``suite, <variant>, arch, remedy, seed, day, sample, cohort, heldout, task, auc``."""
    rows = daily[(daily["metric"] == "auc") & (daily["cohort"].astype(str) != ALL)]
    keep = ["suite", *variant_columns, "arch", "remedy", "seed", "day", "sample", "cohort", "heldout", "task", "value"]
    return rows[[c for c in keep if c in rows.columns]].rename(columns={"value": "auc"}).reset_index(drop=True)
