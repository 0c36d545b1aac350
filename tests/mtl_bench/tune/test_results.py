"""A study's outputs: the best configuration (and its round trip into ``mtl-bench run``) and the Pareto front."""

import dataclasses

import pandas as pd
import pytest

from mtl_bench import cli, tune
from mtl_bench.config import RunConfig
from mtl_bench.tune.space import Param
from mtl_bench.tune.study import StudySetup


def test_best_config_merges_fixed_and_searched_parameters(tiny_config):
    base = tiny_config(task_weights={"task1": 3.0})
    space = {"dropout": Param(value=0.1, fixed=True), "batch_size": Param(value=32, fixed=True),
             "loss_weight.task2": Param(value=0.5, fixed=True), "num_experts": Param(low=2, high=8)}
    setup = StudySetup(config=base, arch="mmoe", regime="joint", objective="mean_auc", space=space,
                       storage="sqlite://", study_name="s", n_trials=1)
    best = tune.best_config(setup, {"learning_rate": 0.02, "num_experts": 5}, seeds=2)
    # The single regime is written too, so the configuration measures transfer when run.
    assert best.archs == ["mmoe"] and best.regimes == ["single", "joint"] and best.seeds == 2
    assert best.arch_params == {"mmoe": {"dropout": 0.1, "num_experts": 5}}
    assert (best.learning_rate, best.batch_size) == (0.02, 32)
    assert best.task_weights == {"task1": 3.0, "task2": 0.5}
    single = dataclasses.replace(setup, arch="single_task", regime="single")
    config = tune.best_config(single, {"bottom_units": 8}, seeds=1)
    assert config.single_baseline == "single_task" and "single_task" not in config.archs
    assert config.regimes == ["single"]


def test_best_config_round_trips_into_mtl_bench_run(tmp_path, capsys, tiny_args):
    out = tmp_path / "t"
    code = cli.main(["tune", "--suite", "synthetic", *tiny_args, "--arch", "ple", "--trials", "2", "--epochs", "1",
                     "--retrain-seeds", "1", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    best = RunConfig.from_toml(out / "config.toml")
    code = cli.main(["run", "--config", str(out / "config.toml"), "--jobs", "1", "--no-probe",
                     "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 0
    ran = RunConfig.from_toml(tmp_path / "run" / "config.toml")
    assert ran.arch_params == best.arch_params and ran.learning_rate == best.learning_rate
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert set(metrics.arch) == {"ple"} and set(metrics.regime) == {"single", "joint"}
    summary = pd.read_csv(tmp_path / "run" / "summary.csv")
    assert summary.loc[summary.regime == "joint", "transfer"].notna().any()  # compares against something


@pytest.mark.slow
def test_per_task_objective_reports_the_pareto_front(tmp_path, tiny_config):
    result = tune.tune(tiny_config(), "shared_bottom", n_trials=3, objective="per_task", out=tmp_path / "t",
                       progress=None)
    assert result.pareto and len(result.best_values) == 2
    pareto = pd.read_csv(tmp_path / "t" / "pareto.csv")
    assert set(pareto.number) == set(result.pareto) and {"value_0", "value_1"} <= set(pareto.columns)
    assert (tmp_path / "t" / "plots" / "pareto_front.png").is_file()
