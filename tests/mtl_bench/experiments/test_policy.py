"""On-policy vs logged data: the arms share their world, REINFORCE trains only the click policy, tiny run."""

import keras
import numpy as np
import pandas as pd
import pytest

from mtl_bench import cli

from mtl_bench.experiments import policy
from mtl_bench.config import RunConfig
from mtl_bench.models import ARCHITECTURES
from mtl_bench.tasks import recsim

TINY = {"users": 100, "items": 50, "categories": 5, "days": 5, "impressions_per_day": 600}


def test_arms_replay_the_same_world():
    a, b = recsim.Simulator(3, **TINY), recsim.Simulator(3, **TINY)
    for frame_a, frame_b in zip(policy._prefix(a, 1, 600), policy._prefix(b, 1, 600)):
        pd.testing.assert_frame_equal(frame_a, frame_b)
    a.next_day(), b.next_day()
    slots_a, slots_b = a.requests(50), b.requests(50)
    for k in slots_a:
        np.testing.assert_array_equal(slots_a[k], slots_b[k])
    np.testing.assert_array_equal(a.logging_items(50, k=4), b.logging_items(50, k=4))
    # Different choices, same random numbers: the label draws stay aligned.
    shown_a = a.outcomes(slots_a, np.zeros(50, np.int64))
    shown_b = b.outcomes(slots_b, np.zeros(50, np.int64))
    pd.testing.assert_frame_equal(shown_a, shown_b)


def test_gini():
    assert policy._gini(np.array([0, 0, 0, 10])) == pytest.approx(0.75)  # (n - 1) / n when one item takes all
    assert policy._gini(np.array([5, 5, 5, 5])) == pytest.approx(0.0)
    x = np.array([1.0, 2.0, 3.0, 10.0])
    mean_abs_diff = np.abs(x[:, None] - x[None, :]).mean()
    assert policy._gini(x) == pytest.approx(mean_abs_diff / (2 * x.mean()))


def test_reinforce_moves_the_click_policy_and_leaves_the_other_heads():
    sim = recsim.Simulator(0, **TINY)
    pretrain, _, _ = policy._prefix(sim, 1, 600)
    encoder = recsim.Encoder.fit_raw_ids(pretrain, sim.params)
    keras.utils.set_random_seed(0)
    model = ARCHITECTURES["mmoe"](features=encoder.spec, tasks=encoder.tasks)
    slots = sim.requests(64)
    candidates = sim.logging_items(64, k=policy.CANDIDATES)
    features = encoder.features(policy._candidate_frame(sim, slots, candidates))
    model({k: v[:2] for k, v in features.items()})
    before = {n: [v.numpy() for v in vs] for n, vs in model.task_variables.items()}
    logits_before = policy.predict_logits(model, features).reshape(64, -1)
    step = policy._Reinforce(model, 0.05, policy.CANDIDATES)
    chosen = np.arange(64) % policy.CANDIDATES
    reward = np.ones(64, np.float32)
    reward[::2] = 0.0
    step.train(features, chosen, reward, 64, np.random.default_rng(0))
    for name in ("conversion", "like"):
        for b, v in zip(before[name], model.task_variables[name]):
            np.testing.assert_array_equal(b, v.numpy())
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before["click"], model.task_variables["click"]))
    # The rewarded choices gain log-probability relative to the unrewarded ones.
    logits_after = policy.predict_logits(model, features).reshape(64, -1)
    log_pi = lambda z: z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) - z.max(1, keepdims=True)  # noqa: E731
    gain = (log_pi(logits_after) - log_pi(logits_before))[np.arange(64), chosen]
    assert gain[reward == 1].mean() > gain[reward == 0].mean()


@pytest.fixture(scope="module")
def tiny_rows():
    config = RunConfig(suite="recsim", suite_params=dict(TINY), archs=["shared_bottom"], seeds=1, epochs=1,
                       batch_size=64, experiment="policy")
    return policy.run_arms(config, "shared_bottom", 0), config


def test_tiny_run_records_every_arm_day_and_measure(tiny_rows):
    rows, config = tiny_rows
    # Train days 0-2: pre-training covers days 0-1; days 2, 3 and 4 are the arms' days.
    assert set(rows["arm"]) == set(policy.ARMS) and set(rows["day"]) == {2, 3, 4}
    measures = set(rows["measure"])
    assert {"auc", "auc_heldout", "auc_control", "auc_probe", "output_drift", "click_rate", "coverage", "gini"} <= measures
    coverage = rows[rows["measure"] == "coverage"]["value"]
    assert ((coverage > 0) & (coverage <= 1)).all()
    again = policy.run_arms(config, "shared_bottom", 0)
    pd.testing.assert_frame_equal(rows, again)  # deterministic per seed
    summary = policy.summarize(rows)
    assert list(summary["arm"]) == list(policy.ARMS)
    # Probe forgetting recomputed from the rows: first day's probe AUC minus the last day's.
    probe = rows[(rows["measure"] == "auc_probe") & (rows["task"] == "like") & (rows["arm"] == "logged")]
    expected = probe[probe["day"] == 2]["value"].mean() - probe[probe["day"] == 4]["value"].mean()
    assert summary.set_index("arm").loc["logged", "probe_forgetting_like"] == pytest.approx(expected)


def test_policy_needs_recsim(tmp_path, capsys):
    code = cli.main(["run", "--suite", "synthetic", "--experiment", "policy", "--out", str(tmp_path / "x")])
    assert code == 2 and "needs the recsim suite" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_report_on_a_policy_directory_prints_its_table(tmp_path, capsys, tiny_rows):
    rows, config = tiny_rows
    out = tmp_path / "exp"
    out.mkdir()
    (out / "config.toml").write_text(config.to_toml())
    (out / "policy.md").write_text(policy.describe(policy.summarize(rows)))
    assert cli.main(["report", str(out)]) == 0
    assert "# On-policy vs logged data" in capsys.readouterr().out
