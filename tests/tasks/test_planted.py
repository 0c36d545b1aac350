"""The planted suite against its formulas: directions, delayed labels, time blocks, independent draws."""

import numpy as np
import pandas as pd
import pytest

from mtl_bench.engine import cells
from mtl_bench.errors import UserInputError
from mtl_bench.tasks import planted

SMALL = dict(train_rows=800, validation_rows=200, test_rows=200)


def _directions(data, task, split="validation"):
    """Least-squares weights of a noise-free linear label on the raw inputs."""
    s = getattr(data, split)
    w, *_ = np.linalg.lstsq(s.features["numeric"].astype(np.float64), s.labels[task].astype(np.float64), rcond=None)
    return w


# task2's weight vector on the inputs "now" (validation), as (coefficient on u1, norm): from the module docstring.
TASK2_NOW = {
    "identical": (1.0, 1.0),
    "none": (planted.RELATED, abs(planted.RELATED)),
    "forgetting": (planted.RELATED, abs(planted.RELATED)),
    "conflict": (0.0, 1.0),
    "both": (planted.PARTIAL[0], 1.0),
    "delayed": (planted.RELATED, abs(planted.RELATED)),
}


@pytest.mark.parametrize("mechanism", planted.MECHANISMS)
def test_labels_follow_the_formulas(mechanism):
    data = planted.load(seed=1, mechanism=mechanism, noise_std=0.0, task2_noise_std=0.0, **SMALL)
    u1 = _directions(data, "task1")
    np.testing.assert_allclose(np.linalg.norm(u1), 1.0, rtol=1e-4)  # task1 = u1ᵀx, |u1| = 1
    w2 = _directions(data, "task2")
    on_u1, norm = TASK2_NOW[mechanism]
    np.testing.assert_allclose(w2 @ u1, on_u1, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(w2), norm, rtol=1e-4)
    # Noise-free labels are exactly linear in x.
    x = data.validation.features["numeric"].astype(np.float64)
    np.testing.assert_allclose(x @ w2, data.validation.labels["task2"], atol=1e-4)


def test_delayed_labels_are_missing_in_the_latest_periods_of_the_training_split_only():
    for mechanism, delayed in (("none", False), ("conflict", False), ("forgetting", True), ("both", True),
                               ("delayed", True)):
        data = planted.load(seed=0, mechanism=mechanism, delay=0.25, periods=8, **SMALL)
        block = data.train.meta["stream_block"]
        assert (np.diff(block) >= 0).all() and block.min() == 0 and block.max() == 7
        assert np.bincount(block).tolist() == [100] * 8
        missing = np.isnan(data.train.labels["task1"])
        # round(0.25 · 8) = 2 periods: the last two.
        np.testing.assert_array_equal(missing, (block >= 6) if delayed else np.zeros_like(missing))
        assert not np.isnan(data.train.labels["task2"]).any()
        for split in (data.validation, data.test):
            assert not any(np.isnan(v).any() for v in split.labels.values())


def test_forgetting_task2_moves_to_an_orthogonal_direction_in_the_delayed_periods():
    data = planted.load(seed=2, mechanism="forgetting", noise_std=0.0, task2_noise_std=0.0, **SMALL)
    x = data.train.features["numeric"].astype(np.float64)
    y2 = data.train.labels["task2"].astype(np.float64)
    late = data.train.meta["stream_block"] >= 4  # delay 0.5 of 8 periods
    early_w = np.linalg.lstsq(x[~late], y2[~late], rcond=None)[0]
    late_w = np.linalg.lstsq(x[late], y2[late], rcond=None)[0]
    u1 = _directions(data, "task1")
    np.testing.assert_allclose(early_w, planted.RELATED * u1, atol=1e-4)  # as "now" (validation)
    assert abs(late_w @ u1) < 1e-4 and abs(np.linalg.norm(late_w) - 1) < 1e-4


def test_same_seed_same_data_and_mechanisms_never_share_a_draw():
    a = planted.load(seed=3, mechanism="none", **SMALL)
    b = planted.load(seed=3, mechanism="none", **SMALL)
    c = planted.load(seed=3, mechanism="conflict", **SMALL)
    np.testing.assert_array_equal(a.train.features["numeric"], b.train.features["numeric"])
    assert not np.allclose(a.train.features["numeric"], c.train.features["numeric"])


def test_variant_names_the_mechanism_and_changed_parameters():
    assert planted.load(mechanism="both", **SMALL).variant == {"mechanism": "both", **SMALL}
    assert planted.load(mechanism="none").variant == {"mechanism": "none"}


@pytest.mark.parametrize("kwargs, match", [
    (dict(mechanism="gradient"), r"mechanism must be one of \['identical', 'none', 'conflict', 'forgetting', 'both', 'delayed'\]"),
    (dict(mechanism="forgetting", delay=0.95, periods=8), r"round to between 1 and periods - 1 .* \(8 of 8\)"),
    (dict(mechanism="both", delay=0.05, periods=8), r"\(0 of 8\)"),
    (dict(delay=1.0), "delay must be a number in"),
    (dict(periods=1), r"^planted: periods must be an integer in \[2, 4096\]\. Received: periods=1$"),
    (dict(dim=1), r"dim must be an integer in \[2, 4096\]"),
    (dict(dim=4097), r"dim must be an integer in \[2, 4096\]"),
    (dict(train_rows=10_000_001), r"train_rows must be an integer in \[2, 10000000\]"),
    (dict(noise_std=-1.0), "noise_std must be a finite number >= 0"),
    (dict(task2_noise_std=float("nan")), "task2_noise_std must be a finite number >= 0"),
])
def test_bad_parameters(kwargs, match):
    with pytest.raises(UserInputError, match=match):
        planted.load(**kwargs)


def _joint_probe(tmp_path, mechanism, seed=0):
    """The joint regime's probe records of one planted mechanism on its own model (one seed)."""
    from mtl_bench.experiments import grid as runner
    from mtl_bench.experiments.calibrate import planted_config

    config = planted_config(seeds=1, first_seed=seed)
    config = type(config)(**{**config.to_dict(), "suite_params": {"mechanism": mechanism}, "regimes": ["joint"],
                             "lookahead_steps": 0})
    run_dir = runner.run(config, out=tmp_path / mechanism, progress=None, in_process=True)
    probe = pd.read_csv(run_dir / "probe.csv")
    return probe[probe["step"] > 0]


def test_planted_conflict_opposes_the_gradients_at_most_probes(tmp_path):
    probe = _joint_probe(tmp_path, "conflict")
    cos = probe[(probe.measure == "cosine") & (probe.group == "all") & (probe.task_i == "task1")]["value"]
    floor = probe[(probe.measure == "cosine_floor") & (probe.task_i == "task1")]["value"]
    assert len(cos) > 20
    assert (cos < 0).mean() > 0.75  # opposed at most events...
    assert floor.median() > 0.5  # ...while each task agrees with itself across disjoint rows


def test_planted_forgetting_rises_without_labels_and_gradients_do_not_oppose(tmp_path):
    probe = _joint_probe(tmp_path, "forgetting")
    cos = probe[(probe.measure == "cosine") & (probe.group == "all") & (probe.task_i == "task1")]["value"]
    assert (cos > 0).mean() > 0.75  # the tasks want the same representation "now"
    rise = probe[(probe.measure == "loss_rise") & (probe.task_i == "task1")].set_index("step")["value"]
    signal = probe[(probe.measure == "window_signal") & (probe.task_i == "task1")].set_index("step")["value"]
    absent = rise[signal.reindex(rise.index) == 0]
    present = rise[signal.reindex(rise.index) == 1]
    assert len(absent) >= 8 and len(present) >= 8
    assert absent.mean() > 0 > present.mean()  # forgotten between its bursts, relearned during them
    # task2 always has labels: no window_signal rows for it.
    assert probe[(probe.measure == "window_signal") & (probe.task_i == "task2")].empty


def test_delay_rounds_half_up():
    data = planted.load(mechanism="forgetting", delay=0.5, periods=5, train_rows=1000, validation_rows=100, test_rows=100)
    # floor(0.5 · 5 + 0.5) = 3 of 5 periods, 200 rows each.
    assert np.isnan(data.train.labels["task1"]).sum() == 600


def test_a_small_training_slice_keeps_every_period():
    from mtl_bench.experiments import grid as runner
    from mtl_bench.config import RunConfig

    config = RunConfig(suite="planted", suite_params={"mechanism": "forgetting"}, max_train_rows=1024)
    data = cells.load_suite(config, (("mechanism", "forgetting"),), 0)
    blocks = data.train.meta["stream_block"]
    assert len(data.train) == 1024 and np.bincount(blocks).tolist() == [128] * 8  # 8192 rows, 8 periods
    assert np.isnan(data.train.labels["task1"]).sum() == 512  # the delayed half is still there
