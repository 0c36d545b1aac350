"""The daily regime and the cohort-forgetting experiment on a tiny simulator."""

import numpy as np
import pandas as pd
import pytest

from mtl_bench import cli

from mtl_bench.analysis import report

from mtl_bench.experiments import cohort, grid as runner
from mtl_bench.analysis.cohorts import half_life_table
from mtl_bench.config import RunConfig
from mtl_bench.errors import UserInputError
from mtl_bench.engine.regimes import pretrain_last_day, trainable
from mtl_bench.tasks import recsim

TINY = {"users": 200, "items": 80, "categories": 5, "days": 6, "impressions_per_day": 800}


def _config(**kw) -> RunConfig:
    base = dict(suite="recsim", suite_params=dict(TINY), archs=["shared_bottom", "mmoe"], regimes=["daily"], seeds=1,
                epochs=2, batch_size=128, probe_every=5, jobs=1)
    base.update(kw)
    return RunConfig(**base)


def test_pretrain_last_day():
    assert pretrain_last_day([0, 1, 2, 3], 0) == 1  # half of four days
    assert pretrain_last_day([0, 1, 2], 0) == 1  # half rounded up
    assert pretrain_last_day([0, 1, 2], 1) == 0
    assert pretrain_last_day([0, 1, 2], 9) == 2


@pytest.fixture(scope="module")
def cohort_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("daily") / "run"
    return runner.run(_config(experiment="cohort"), out=out, in_process=True, progress=None)


def test_cohort_experiment_resolves_its_holdout(cohort_run):
    config = RunConfig.from_toml(cohort_run / "config.toml")
    # Train days 0-3 (validation 4, test 5); pre-training covers days 0-1, so the holdout starts on day 2.
    assert config.suite_params["holdout_cohort"] == 1 and config.suite_params["holdout_day"] == 2
    assert config.suite_params["uniform_rows_per_day"] == cohort.UNIFORM_ROWS


def test_daily_rows_evaluate_every_next_day_and_cohort(cohort_run):
    daily = pd.read_csv(cohort_run / "daily.csv", keep_default_na=False, na_values=[""])
    assert set(daily["sample"]) == {"logged", "uniform"}  # the experiment adds an unbiased sample
    one = daily[(daily["arch"] == "mmoe") & (daily["task"] == "click") & (daily["metric"] == "auc")
                & (daily["sample"] == "logged")]
    # Phase 0 pre-trains on days 0-1 and is judged on day 2; phases 1 and 2 train days 2 and 3.
    assert sorted(set(zip(one["phase"], one["day"]))) == [(0, 2), (1, 3), (2, 4)]
    assert set(one["cohort"].astype(str)) == {"all", "0", "1", "2", "3"}
    held = one[one["heldout"].astype(str) == "True"]
    assert set(held["cohort"].astype(str)) == {"1"} and set(held["day"]) == {2, 3, 4}
    # The "all" AUC is recomputed independently from the predictions' cohorts: it lies within the cohorts' range.
    for day, g in one.groupby("day"):
        per_cohort = g[g["cohort"].astype(str) != "all"]["value"]
        overall = g[g["cohort"].astype(str) == "all"]["value"].iloc[0]
        assert per_cohort.min() - 0.05 <= overall <= per_cohort.max() + 0.05
    metrics = pd.read_csv(cohort_run / "metrics.csv")
    final = metrics[metrics["stage"] == "final"]
    assert set(final["split"]) == {"validation", "test"} and set(final["phase"]) == {2}


def test_cohort_forgetting_file_and_report(cohort_run):
    cohorts = pd.read_csv(cohort_run / "cohort_forgetting.csv")
    assert {"day", "cohort", "task", "auc", "arch"} <= set(cohorts.columns)
    assert len(cohorts) == 2 * 3 * 2 * 3 * 4  # archs x days x samples x tasks x cohorts
    _, result, out = report.write_report([cohort_run])
    table = pd.read_csv(out / "cohort_half_life.csv")
    assert set(table["role"]) == {"heldout", "control"} and set(table["sample"]) == {"logged", "uniform"}
    assert set(table[table["role"] == "heldout"]["cohort"].astype(str)) == {"1"}
    assert set(table[table["role"] == "control"]["cohort"].astype(str)) == {"0"}
    text = (out / "report.md").read_text()
    assert "## Cohort forgetting" in text and "No joint-regime results" in text


def test_holdout_rows_never_train():
    data = recsim.load(seed=0, **TINY, holdout_cohort=2, holdout_day=1)
    train = trainable(data.train)
    held = (data.train.meta["cohort"] == 2) & (data.train.meta["day"] >= 1)
    assert len(train) == len(data.train) - held.sum() > 0
    assert not ((train.meta["cohort"] == 2) & (train.meta["day"] >= 1)).any()


def test_half_life_from_hand_made_curves():
    rows = []
    # Held-out cohort 1 from day 3: lift 0.20, 0.15, 0.09 (<= 0.10 two days later), 0.08.
    for day, auc in zip([3, 4, 5, 6], [0.70, 0.65, 0.59, 0.58]):
        rows.append(dict(suite="recsim", arch="mmoe", remedy="none", seed=0, day=day, cohort=1, heldout=True,
                         task="click", auc=auc))
    # Control cohort 0 keeps a lift of 0.2: never halved within 3 days.
    for day in [3, 4, 5, 6]:
        rows.append(dict(suite="recsim", arch="mmoe", remedy="none", seed=0, day=day, cohort=0, heldout=False,
                         task="click", auc=0.70))
    table = half_life_table(pd.DataFrame(rows)).set_index("role")
    assert table.loc["heldout", "start_lift"] == pytest.approx(0.2)
    assert table.loc["heldout", "half_life_days"] == 2 and table.loc["heldout", "status"] == "halved"
    assert np.isnan(table.loc["control", "half_life_days"]) and table.loc["control", "status"] == "not halved"
    assert table.loc["control", "horizon_days"] == 3


def test_no_lift_is_not_reported_as_kept():
    rows = [dict(suite="recsim", arch="mmoe", remedy="none", seed=0, day=d, cohort=1, heldout=True, task="click",
                 auc=0.48) for d in (3, 4)]
    table = half_life_table(pd.DataFrame(rows))
    assert table["status"].tolist() == ["no lift"]


def test_daily_never_trains_or_selects_on_held_out_rows(monkeypatch, tmp_path):
    from mtl_bench.engine.training import Trainer

    seen = []
    original = Trainer.fit

    def spy(self, train, validation, **kw):
        seen.append((train.meta["holdout"].sum() + train.meta["uniform"].sum(),
                     validation.meta["holdout"].sum() + validation.meta["uniform"].sum(), kw.get("restore_best", True)))
        return original(self, train, validation, **kw)

    monkeypatch.setattr(Trainer, "fit", spy)
    runner.run(_config(experiment="cohort", archs=["mmoe"], regimes=["daily", "joint"], probe_every=0),
               out=tmp_path / "r", in_process=True, progress=None)
    assert len(seen) == 3 + 1  # daily: pre-training (days 0-1), days 2 and 3; then the joint cell
    assert all(train == 0 and validation == 0 for train, validation, _ in seen)
    # Only pre-training (and the joint cell) restore a best epoch; daily steps keep their last weights.
    assert [restore for *_, restore in seen].count(False) == 2


def test_one_day_daily_run_without_experiment(tmp_path):
    # Train days 0-2: pre-training on days 0-1, then a single daily step on day 2, judged on day 3 (validation).
    config = _config(suite_params={**TINY, "days": 5}, archs=["shared_bottom"])
    run_dir = runner.run(config, out=tmp_path / "r", in_process=True, progress=None)
    daily = pd.read_csv(run_dir / "daily.csv", keep_default_na=False, na_values=[""])
    assert sorted(set(zip(daily["phase"], daily["day"]))) == [(0, 2), (1, 3)]
    assert not daily["heldout"].astype(str).eq("True").any()


def test_daily_needs_a_suite_with_days(tmp_path):
    with pytest.raises(UserInputError, match="regime 'daily' needs a suite with days"):
        runner.run(RunConfig(regimes=["daily"], suite_params={"correlation": 0.5}), out=tmp_path / "r",
                   in_process=True, progress=None)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "kw, needle",
    [
        (dict(suite="synthetic", suite_params={}), "experiment 'cohort' needs a suite with days and cohorts"),
        (dict(regimes=["joint"]), "experiment 'cohort' needs the daily regime"),
    ],
)
def test_cohort_experiment_needs_recsim_and_daily(tmp_path, kw, needle):
    with pytest.raises(UserInputError, match=needle):
        runner.run(_config(experiment="cohort", **kw), out=tmp_path / "r", in_process=True, progress=None)


def test_cli_bad_experiment_exits_2(capsys):
    assert cli.main(["run", "--suite", "recsim", "--experiment", "bogus"]) == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err


def test_cohort_curves_one_panel_per_arch_and_a_line_per_cohort(cohort_run):
    from mtl_bench.analysis import plots

    cohorts = pd.read_csv(cohort_run / "cohort_forgetting.csv")
    fig = plots.cohort_curves(cohorts)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == list(dict.fromkeys(cohorts["arch"]))
    assert sorted(ax.get_title() for ax in panels) == ["mmoe", "shared_bottom"]
    labels = [line.get_label() for line in panels[0].get_lines() if not line.get_label().startswith("_")]
    # Cohort 0 keeps training (the control), cohort 1 is held out; a marker names the first held-out day.
    assert labels[:4] == ["cohort 0 (control)", "cohort 1 (held out)", "cohort 2", "cohort 3"]
    assert len(labels) == 5 and labels[4].startswith("first held-out day")
    assert callable(plots.figures([cohort_run])["cohort_forgetting.png"])
