"""The entry points: one study per arm, input checks before any trial, equal-budget arms re-trained."""

import pandas as pd
import pytest

from mtl_bench import cli, tune
from mtl_bench.config import RunConfig
from mtl_bench.errors import UserInputError


@pytest.mark.parametrize("arch", ["single", "shared_bottom", "mmoe", "ple"])
def test_three_trial_study_per_arch(tmp_path, tiny_config, arch):
    result = tune.tune(tiny_config(), arch, n_trials=3, out=tmp_path / "t", progress=None)
    trials = pd.read_csv(tmp_path / "t" / "trials.csv")
    assert len(trials) == 3 and set(trials.state) == {"COMPLETE"}
    assert {"value", "duration_s", "params_learning_rate", "params_batch_size", "state"} <= set(trials.columns)
    assert (tmp_path / "t" / "study.db").is_file() and (tmp_path / "t" / "plots" / "history.png").is_file()
    best = RunConfig.from_toml(result.config_path)
    arch_name, regime = tune.arms.arm(arch, "joint")
    assert list(best.arch_params) == [arch_name] and best.learning_rate == result.best_params["learning_rate"]
    # A multi-task arm's config also trains the single regime, so `mtl-bench run --config` gives a transfer.
    assert best.regimes == (["single"] if arch == "single" else ["single", "joint"])
    assert set(best.arch_params[arch_name]) == set(result.best_params) - set(tune.TRAINING_PARAMS)
    assert result.best_values[0] == trials.value.max()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--arch", "mmoe", "--objective", "ndcg"], "objective must be one of"),
        (["--arch", "bogus"], "arch='bogus'"),
        (["--arch", "mmoe", "--pruner", "coin"], "pruner must be one of"),
        (["--arch", "mmoe", "--regime", "daily"], "regime must be one of"),
        (["--arch", "mmoe", "--trials", "0"], "n_trials must be an integer >= 1"),
        (["--arch", "mmoe", "--main-task", "nope"], "main_task='nope'"),
        (["--arch", "mmoe", "--space", "missing.toml"], "missing.toml"),
        (["--arch", "mmoe", "--param", "correlation=0.5,0.0"], "one suite variant"),
        (["--arms", "mmoe,mmoe"], "each arm once"),
        (["--arch", "mmoe", "--retrain-seeds", "0"], "retrain_seeds must be an integer >= 1"),
        (["--arms", "single,mmoe", "--retrain-seeds", "0"], "retrain_seeds must be an integer >= 1"),
        (["--arch", "mmoe", "--param", "corelation=0.5"], "valid: ['correlation', 'correlation_matrix'"),
        (["--arms", "single,mmoe", "--param", "corelation=0.5"], "no parameter 'corelation'"),
        (["--arch", "mmoe", "--pruner-param", "n_startup=2"], "pruner 'median'"),
        (["--arms", "single,mmoe", "--pruner-param", "n_startup=2"], "pruner 'median'"),
        (["--arch", "mmoe", "--storage", "nosuchdb://x"], "cannot open storage"),
        (["--arms", "single,mmoe", "--storage", "nosuchdb://x"], "cannot open storage"),
    ],
)
def test_bad_tune_input_exits_2_with_one_line(tmp_path, capsys, tiny_args, argv, needle):
    code = cli.main(["tune", "--suite", "synthetic", *tiny_args, *argv, "--out", str(tmp_path / "t")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and "\n" not in err, err
    assert not (tmp_path / "t").exists()  # no trial ran, and no empty output directory is left behind


def test_bad_arch_params_in_the_base_config_list_the_valid_names(tmp_path, capsys, tiny_args):
    config = tmp_path / "base.toml"
    config.write_text('suite = "synthetic"\nepochs = 1\n[arch_params.mmoe]\nnum_expert = 3\n')
    code = cli.main(["tune", "--config", str(config), *tiny_args, "--arch", "mmoe", "--out", str(tmp_path / "t")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no parameter 'num_expert'" in err and "'num_experts'" in err and "\n" not in err
    assert not (tmp_path / "t").exists()


def test_base_config_arch_params_are_fixed_not_searched(tmp_path, tiny_config):
    result = tune.tune(tiny_config(arch_params={"mmoe": {"num_experts": 3}}), "mmoe", n_trials=1,
                       out=tmp_path / "t", progress=None)
    assert "num_experts" not in result.best_params
    assert RunConfig.from_toml(result.config_path).arch_params["mmoe"]["num_experts"] == 3


def test_unknown_space_parameter_is_a_user_error(tmp_path, tiny_config, write_space):
    space = write_space("[mmoe]\nnum_levels = 2\n")
    with pytest.raises(UserInputError, match="num_levels"):
        tune.tune(tiny_config(), "mmoe", n_trials=1, out=tmp_path / "t", space_file=space, progress=None)


def test_unknown_option_is_a_type_error(tiny_config):
    with pytest.raises(TypeError, match="n_trails"):
        tune.tune(tiny_config(), "mmoe", n_trails=3, progress=None)


@pytest.mark.slow
def test_equal_budget_arms_retrain_for_report(tmp_path, tiny_config):
    from mtl_bench.analysis.report import build_report

    result = tune.tune_arms(tiny_config(), ["single", "mmoe"], n_trials=2, objective="transfer", retrain_seeds=2,
                            out=tmp_path / "t", progress=None)
    assert set(result.studies) == {"single", "mmoe"}
    assert all(len(r.trials) == 2 for r in result.studies.values())
    assert result.studies["mmoe"].trials.value.notna().all()
    assert set(result.run_dirs) == {"single", "mmoe"}
    seeds = {arm: set(pd.read_csv(d / "metrics.csv").seed) for arm, d in result.run_dirs.items()}
    assert seeds == {"single": {0, 1}, "mmoe": {0, 1}}
    tasks, _ = build_report([result.run_dirs["mmoe"], result.run_dirs["single"]])
    assert not tasks.empty
    # The tuned multi-task arm compares against the tuned single-task arm, with its best parameters.
    mmoe = RunConfig.from_toml(result.studies["mmoe"].config_path)
    single = RunConfig.from_toml(result.studies["single"].config_path)
    assert mmoe.regimes == ["single", "joint"] and mmoe.single_baseline == "single_task"
    assert mmoe.arch_params["single_task"] == single.arch_params["single_task"]
