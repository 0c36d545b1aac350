"""Search spaces: per-architecture defaults, TOML overrides and their errors."""

import inspect

import optuna
import pytest

from mtl_bench.errors import UserInputError
from mtl_bench.models import ARCHITECTURES
from mtl_bench.tasks import synthetic
from mtl_bench.tune import space as space_lib
from mtl_bench.tune.space import Param, load_space_overrides, search_space, split_params

TASKS = synthetic.load(seed=0, dim=4, train_rows=32, validation_rows=16, test_rows=8, correlation=0.5).tasks


def test_every_space_names_only_constructor_arguments_and_training_settings():
    for arch, make in space_lib.SEARCH_SPACES.items():
        ctor = inspect.signature(ARCHITECTURES[arch].__init__).parameters
        keyword_only = {n for n, p in ctor.items() if p.kind is p.KEYWORD_ONLY}
        assert set(make(TASKS)) <= keyword_only | set(space_lib.TRAINING_PARAMS), arch


def test_overrides_make_choices_ranges_and_fixed_values(write_space):
    path = write_space("""
        [common]
        learning_rate = {low = 1e-3, high = 3e-2, log = true}
        batch_size = [128, 256]
        dropout = 0.0
        "loss_weight.task2" = {low = 0.5, high = 2.0}
        [mmoe]
        num_experts = {low = 2, high = 6, step = 2}
    """)
    space = search_space("mmoe", TASKS, load_space_overrides(path))
    assert space["learning_rate"] == Param(low=1e-3, high=3e-2, log=True)
    assert space["batch_size"] == Param(choices=(128, 256))
    assert space["dropout"] == Param(value=0.0, fixed=True)
    assert space["loss_weight.task2"] == Param(low=0.5, high=2.0)
    assert space["num_experts"] == Param(low=2, high=6, step=2)
    assert space["expert_units"] == space_lib.mmoe_space(TASKS)["expert_units"]  # not overridden
    # One task per single-task model: a loss weight is dropped, the rest applies.
    single = search_space("single_task", TASKS, load_space_overrides(path))
    assert "loss_weight.task2" not in single and single["dropout"].fixed


def test_suggest_follows_the_param_kind():
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    assert Param(value=7, fixed=True).suggest(trial, "fixed") == 7 and "fixed" not in trial.params
    n = Param(low=2, high=6, step=2).suggest(trial, "n")
    assert isinstance(n, int) and n in (2, 4, 6)
    x = Param(low=0.5, high=1.5).suggest(trial, "x")
    assert isinstance(x, float) and 0.5 <= x <= 1.5
    assert Param(choices=("a", "b")).suggest(trial, "c") in ("a", "b")


def test_split_params_separates_training_constructor_and_loss_weights():
    training, ctor, weights = split_params(
        {"learning_rate": 0.01, "batch_size": 64, "num_experts": 3, "loss_weight.task2": 2}
    )
    assert training == {"learning_rate": 0.01, "batch_size": 64}
    assert ctor == {"num_experts": 3}
    assert weights == {"task2": 2.0}


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[mmoe]\nnum_levels = 2\n", "num_levels"),
        ("[bogus]\nx = 1\n", "unknown table [bogus]"),
        ("[common]\nbatch_size = []\n", "must not be empty"),
        ("[common]\nlearning_rate = {low = 0.0, high = 1.0, log = true}\n", "log range needs low > 0"),
        ("[common]\nlearning_rate = {low = 2.0, high = 1.0}\n", "low <= high"),
        ("[common]\nlearning_rate = {low = 1.0}\n", "a range is"),
        ("[common\n", "not valid TOML"),
    ],
)
def test_bad_space_files_are_one_line_user_errors(write_space, text, needle):
    path = write_space(text)
    with pytest.raises(UserInputError) as info:
        search_space("mmoe", TASKS, load_space_overrides(path))
    assert needle in str(info.value) and "\n" not in str(info.value).strip()


def test_a_missing_space_file_is_named(tmp_path):
    with pytest.raises(UserInputError, match="missing.toml"):
        load_space_overrides(tmp_path / "missing.toml")
