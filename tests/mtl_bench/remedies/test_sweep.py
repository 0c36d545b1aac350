"""The static-weight sweep's points, and the Pareto reading of methods against it on planted scores."""

import matplotlib
import numpy as np
import pandas as pd
import pytest

from mtl_bench.analysis.pareto import pareto_figure, pareto_table
from mtl_bench.errors import UserInputError
from mtl_bench.remedies import REMEDIES, SWEEP
from mtl_bench.remedies.sweep import sweep_weights
from mtl_bench.spec import Task

TASKS2 = (Task("a", "a", "binary"), Task("b", "b", "regression"))


def test_two_task_sweep_is_the_simplex_grid_scaled_to_two():
    assert len(SWEEP) == 11
    for k in range(11):
        np.testing.assert_allclose(sweep_weights(k, 2), [2 * k / 10, 2 - 2 * k / 10])
    np.testing.assert_allclose(sweep_weights(5, 2), [1.0, 1.0])  # the equal-weight sum is a point


def test_more_tasks_sample_the_simplex_as_documented():
    w = sweep_weights(4, 3)
    np.testing.assert_allclose(w, 3 * np.random.default_rng(4).dirichlet(np.ones(3)))
    assert w.sum() == pytest.approx(3.0) and w.min() > 0
    with pytest.raises(UserInputError, match="point"):
        sweep_weights(11, 2)


def test_sweep_remedies_replace_the_static_weights():
    remedy = REMEDIES["sweep-3"]
    assert remedy.parameters() == [] and remedy.family == "weighting"
    combination, aid = remedy.build({})
    combination.build(TASKS2, [5.0, 5.0])
    np.testing.assert_allclose(combination.weights.numpy(), [0.6, 1.4], rtol=1e-6)


def _metrics(points: dict[str, tuple[float, float]], noise: dict[str, list[float]], seeds: int = 5) -> pd.DataFrame:
    rows = []
    for remedy, (x, y) in points.items():
        e = noise.get(remedy, [0.001, -0.001, 0.002, -0.002, 0.0])
        for seed in range(seeds):
            for task, value in (("t1", x + e[seed]), ("t2", 1.0 - y - e[seed])):  # t2 is an MSE: score = -value
                metric = "auc" if task == "t1" else "mse"
                rows.append({"suite": "s", "arch": "mmoe", "regime": "joint", "remedy": remedy, "order": "-", "seed": seed,
                             "phase": 0, "epoch": 2, "stage": "final", "task": task, "split": "validation",
                             "metric": metric, "value": value})
    return pd.DataFrame(rows)


# Sweep points on the line x + y = 1.5 (all on the front) but sweep-10, dominated.
PLANTED = {f"sweep-{k}": (0.70 + 0.01 * k, 0.80 - 0.01 * k) for k in range(10)}
PLANTED["sweep-10"] = (0.69, 0.69)
PLANTED.update({"mgda": (0.76, 0.76), "famo": (0.70, 0.70), "rlw": (0.74, 0.76)})
NOISE = {"rlw": [0.004, -0.004, 0.0, 0.002, -0.002]}  # rlw is sweep-4 plus noise of mean 0


def test_pareto_table_front_and_status_on_planted_scores():
    table = pareto_table(_metrics(PLANTED, NOISE), [])
    front = set(table[table["front"]]["remedy"])
    assert front == {f"sweep-{k}" for k in range(10)}
    status = table.drop_duplicates("remedy").set_index("remedy")["status"]
    assert status["mgda"] == "beyond" and status["famo"] == "inside" and status["rlw"] == "undecided"
    t2 = table[(table["remedy"] == "mgda") & (table["task"] == "t2")].iloc[0]
    assert t2["score_mean"] == pytest.approx(0.76 - 1.0) and t2["n"] == 5  # -MSE


def test_one_seed_decides_nothing():
    table = pareto_table(_metrics(PLANTED, NOISE, seeds=1), [])
    assert set(table[~table["sweep"]]["status"]) == {"undecided"}


def test_no_sweep_no_table():
    assert pareto_table(_metrics({"none": (0.7, 0.7), "mgda": (0.7, 0.7)}, {}), []).empty


def test_pareto_figure(tmp_path):
    fig = pareto_figure(pareto_table(_metrics(PLANTED, NOISE), []))
    fig.savefig(tmp_path / "pareto.png", dpi=100)
    assert (tmp_path / "pareto.png").stat().st_size > 0
    assert matplotlib.get_backend()  # the figure is drawn on its own Agg canvas


def test_pareto_markdown_says_what_the_statuses_allow():
    import pandas as pd

    from mtl_bench.analysis import pareto

    def table(statuses):
        rows = [dict(suite="s", arch="mmoe", order="-", remedy=f"m{i}", family="conflict", sweep=False, task="a",
                     metric="auc", score_mean=0.7, score_ci_low=0.6, score_ci_high=0.8, n=3, front=False, status=s)
                for i, s in enumerate(statuses)]
        return pd.DataFrame(rows)

    text = lambda statuses: " ".join(pareto.markdown(table(statuses), lambda f: "TABLE"))  # noqa: E731
    assert "1 method(s) land beyond every static weighting: m1." in text(["inside", "beyond"])
    assert "a static weighting beats each of them" in text(["inside", "inside"])
    assert "need more seeds" in text(["inside", "undecided"]) and "inside 1, undecided 1" in text(["inside", "undecided"])
    assert pareto.markdown(table([]).iloc[0:0], str) == []
