import pytest

from mtl_bench.config import RunConfig
from mtl_bench.errors import UserInputError


def test_toml_round_trip(tmp_path):
    config = RunConfig(suite="census-income", suite_params={"group": ["income", "education"]}, seeds=2,
                       arch_params={"mmoe": {"num_experts": 4}}, orders=[["income", "marital"]])
    path = tmp_path / "config.toml"
    path.write_text(config.to_toml())
    assert RunConfig.from_toml(path) == config


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"epochz": 3}, "epochz"),
        ({"epochs": 0}, "epochs"),
        ({"seeds": "3"}, "seeds"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"archs": []}, "archs"),
        ({"selection": "best"}, "selection must be one of ['per_task', 'sum', 'last']"),
        ({"selection_share": 1.0}, "selection_share must be a number in [0, 1)"),
        ({"lookahead_steps": -1}, "lookahead_steps must be an integer >= 0"),
    ],
)
def test_bad_values_raise_one_line(data, needle):
    with pytest.raises(UserInputError) as err:
        RunConfig.from_dict(data)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        RunConfig.from_toml(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = = 3")
    with pytest.raises(UserInputError, match="not valid TOML"):
        RunConfig.from_toml(bad)


def test_selection_names_match_the_trainers():
    from mtl_bench import config
    from mtl_bench.engine import training

    assert config.SELECTIONS == training.SELECTIONS
