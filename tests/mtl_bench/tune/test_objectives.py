"""Objectives over task scores, read from final rows and from a trainer's epoch logs."""

import math

import pytest

from mtl_bench.engine.regimes import CellResult
from mtl_bench.spec import Task
from mtl_bench.tune.objectives import OBJECTIVES, EpochObjective, ObjectiveContext, final_scores, task_score

CLICK = Task("click", "click", "binary")  # metric auc, higher is better
DWELL = Task("dwell", "dwell", "regression")  # metric mse, lower is better
CTX = ObjectiveContext(("click", "dwell"), "dwell", reference={"click": 0.7, "dwell": -2.0})


def test_task_score_is_the_headline_metric_signed_higher_is_better():
    assert task_score(CLICK, {"auc": 0.8, "logloss": 0.4}) == 0.8
    assert task_score(DWELL, {"mse": 1.5}) == -1.5


def test_objectives_by_their_definitions():
    scores = {"click": 0.8, "dwell": -1.5}
    assert OBJECTIVES["mean_auc"].fn(scores, CTX) == [pytest.approx((0.8 - 1.5) / 2)]
    assert OBJECTIVES["main_auc"].fn(scores, CTX) == [-1.5]
    assert OBJECTIVES["transfer"].fn(scores, CTX) == [pytest.approx(((0.8 - 0.7) + (-1.5 + 2.0)) / 2)]
    assert OBJECTIVES["per_task"].fn(scores, CTX) == [0.8, -1.5]
    assert OBJECTIVES["per_task"].n_values(CTX) == 2 and OBJECTIVES["mean_auc"].n_values(CTX) == 1
    # Scores of some tasks only (one phase): the objective over those, or None when they do not define it.
    assert OBJECTIVES["mean_auc"].fn({"click": 0.8}, CTX) == [0.8]
    assert OBJECTIVES["main_auc"].fn({"click": 0.8}, CTX) is None
    assert OBJECTIVES["per_task"].fn({"click": 0.8}, CTX) is None


def test_epoch_objective_reads_the_trained_tasks_from_the_logs():
    logs = {"val_selection_loss": 9.0, "val_click_auc": 0.8, "val_click_logloss": 0.4, "val_dwell_mse": 1.5}
    mean = EpochObjective(OBJECTIVES["mean_auc"], CTX, (CLICK, DWELL))
    assert mean(logs) == pytest.approx((0.8 - 1.5) / 2)
    only_click = {k: v for k, v in logs.items() if "dwell" not in k}  # a phase that trains click alone
    assert mean(only_click) == pytest.approx(0.8)
    assert EpochObjective(OBJECTIVES["main_auc"], CTX, (CLICK, DWELL))(only_click) is None
    assert mean({**logs, "val_click_auc": math.nan}) is None  # one class in the rows: no report
    assert mean({"val_selection_loss": 9.0}) is None


def test_final_scores_take_each_tasks_last_phase_on_validation():
    result = CellResult()
    result.add_eval({"click": {"auc": 0.6}, "dwell": {"mse": 3.0}}, phase=0, epoch=2, split="validation")
    result.add_eval({"click": {"auc": 0.7}, "dwell": {"mse": 2.5}}, phase=1, epoch=3, split="validation")
    result.add_eval({"click": {"auc": 0.99}, "dwell": {"mse": 0.1}}, phase=1, epoch=3, split="test")
    assert final_scores(result, (CLICK, DWELL)) == {"click": 0.7, "dwell": -2.5}
