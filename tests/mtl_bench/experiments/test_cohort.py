"""The cohort experiment's part of the grid: its defaults, refusals, note and per-cohort table (no training)."""

import pandas as pd
import pytest

from mtl_bench.config import RunConfig
from mtl_bench.errors import UserInputError
from mtl_bench.experiments import cohort


def _config(**kw) -> RunConfig:
    base = dict(suite="recsim", suite_params={}, archs=["mmoe"], regimes=["daily"], experiment="cohort")
    base.update(kw)
    return RunConfig(**base)


@pytest.mark.parametrize(
    "params, pretrain_days, holdout_day",
    [
        # recsim's defaults: 12 days, the last two validate and test: train days 0-9, half (0-4) pre-train.
        ({}, 0, 5),
        ({"days": 7, "validation_days": 1, "test_days": 1}, 0, 3),  # train days 0-4: pre-training 0-2
        ({"days": 6, "validation_days": 1, "test_days": 1}, 0, 2),  # train days 0-3: pre-training 0-1
        ({"days": 6, "validation_days": 1, "test_days": 1}, 1, 1),  # one day of pre-training: day 0
    ],
)
def test_adapt_holds_cohort_1_out_from_the_first_day_after_pretraining(params, pretrain_days, holdout_day):
    config = cohort.adapt(_config(suite_params=params, pretrain_days=pretrain_days))
    assert config.suite_params == {**params, "holdout_cohort": 1, "holdout_day": holdout_day,
                                   "uniform_rows_per_day": cohort.UNIFORM_ROWS}


def test_adapt_keeps_what_the_user_set():
    mine = {"holdout_cohort": 2, "holdout_day": 7, "uniform_rows_per_day": 10}
    assert cohort.adapt(_config(suite_params=dict(mine))).suite_params == mine


@pytest.mark.parametrize(
    "kw, needle",
    [
        (dict(suite="synthetic"), "experiment 'cohort' needs a suite with days and cohorts"),
        (dict(regimes=["joint"]), "experiment 'cohort' needs the daily regime"),
        (dict(suite_params={"days": [6, 8]}), "set suite parameter holdout_day when days are swept"),
    ],
)
def test_adapt_refuses_what_it_cannot_run(kw, needle):
    with pytest.raises(UserInputError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        cohort.adapt(_config(**kw))


def test_note_only_when_other_regimes_lose_the_held_out_rows():
    assert cohort.notes(_config()) == []
    (note,) = cohort.notes(_config(regimes=["daily", "joint"]))
    assert "every regime trains without the held-out cohort's rows" in note


def test_cohort_forgetting_keeps_each_cohorts_auc():
    rows = []
    for cohort_name in ("all", "0", "1"):
        for metric, value in (("auc", 0.6), ("logloss", 0.4)):
            rows.append(dict(suite="recsim", relatedness=0.5, arch="mmoe", regime="daily", remedy="none", seed=0,
                             phase=1, day=3, sample="logged", cohort=cohort_name, heldout=cohort_name == "1",
                             task="click", metric=metric, value=value + int(cohort_name != "all") * 0.1))
    table = cohort.cohort_forgetting(pd.DataFrame(rows), ["relatedness"])
    assert list(table.columns) == ["suite", "relatedness", "arch", "remedy", "seed", "day", "sample", "cohort",
                                   "heldout", "task", "auc"]
    assert table["cohort"].tolist() == ["0", "1"] and table["heldout"].tolist() == [False, True]
    assert table["auc"].tolist() == pytest.approx([0.7, 0.7])
