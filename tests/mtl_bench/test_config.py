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
        ({"archs": "mmoe"}, "archs must be a non-empty list of names. Received: archs='mmoe'"),
        ({"regimes": "joint"}, "regimes must be a non-empty list of names"),
        ({"archs": ["mmoe", "mmoe"]}, "archs must be a list that names each arch once"),
        ({"regimes": ["joint", "single", "joint"]}, "regimes must be a list that names each regime once"),
        ({"remedies": ["pcgrad", "pcgrad"]}, "remedies must be a list that names each remedy once"),
        ({"orders": [["a", "b"], ["a", "b"]]}, "orders must be a list that names each order once"),
        ({"seeds": 1001}, "seeds must be an integer in [1, 1000]"),
        ({"seeds": 100000000}, "seeds must be an integer in [1, 1000]"),
        ({"jobs": -1}, "jobs must be an integer >= 0"),
        ({"probe_every": -1}, "probe_every must be an integer >= 0"),
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


def test_tensorflow_free_names_match_the_registries():
    from mtl_bench import config
    from mtl_bench.models import ARCHITECTURES
    from mtl_bench.tasks import SUITES

    assert sorted(config.ARCH_NAMES) == sorted(ARCHITECTURES)
    assert sorted(config.SUITE_NAMES) == sorted(SUITES)


def test_the_largest_seed_count_is_accepted():
    assert RunConfig(seeds=1000).seed_list[-1] == 999
