"""The policy experiment: shared world, each RL update against a hand computation, options, tiny runs."""

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from mtl_bench import cli, io
from mtl_bench.config import RunConfig
from mtl_bench.errors import UserInputError
from mtl_bench.experiments import policy, policy_report
from mtl_bench.experiments import policy_arms as pa
from mtl_bench.models import ARCHITECTURES
from mtl_bench.tasks import recsim

TINY = {"users": 100, "items": 50, "categories": 5, "days": 5, "impressions_per_day": 600}
K = 3
LOGITS = np.array([0.5, -0.2, 0.1])


class TinyPolicy(keras.Model):
    """Candidate ``i`` has click logit ``z[i]`` and like logit ``zl[i]``: the policy score is ``z`` itself."""

    def __init__(self):
        super().__init__()
        self.z = self.add_weight(shape=(K,), initializer="zeros", name="z")
        self.zl = self.add_weight(shape=(K,), initializer="zeros", name="zl")

    def call(self, features, training=False):
        idx = features["idx"]
        return {"click": tf.sigmoid(tf.gather(self.z, idx)), "like": tf.sigmoid(tf.gather(self.zl, idx))}


def _tiny(slots, **kw):
    model = TinyPolicy()
    model({"idx": tf.constant([0])})
    model.z.assign(LOGITS)
    return model, pa.PolicyGradient(model, {"click": 1.0}, K, **kw), {"idx": tf.constant(np.tile(np.arange(K), slots))}


def _pi():
    e = np.exp(LOGITS - LOGITS.max())
    return e / e.sum()


def _loss_and_grad(updater, model, features, slot, action, behaviour_logp, advantage, reference_logp):
    with tf.GradientTape() as tape:
        loss, stats = updater.loss(features, tf.constant(slot, tf.int32), tf.constant(action, tf.int32),
                                   tf.constant(behaviour_logp, tf.float32), tf.constant(advantage, tf.float32),
                                   tf.constant(reference_logp, tf.float32))
    return float(loss), tf.convert_to_tensor(tape.gradient(loss, model.z)).numpy(), stats.numpy()


def test_ppo_clipped_objective_and_gradient_inside_and_outside_the_clip():
    model, updater, features = _tiny(4, clip=0.2)
    pi = _pi()
    action = np.array([0, 1, 2, 0])
    ratio = np.array([1.1, 1.5, 0.5, 0.5])  # inside; above with A > 0; below with A < 0; below with A > 0
    advantage = np.array([1.0, 1.0, -1.0, 1.0])
    behaviour = np.log(pi[action]) - np.log(ratio)
    loss, grad, stats = _loss_and_grad(updater, model, features, np.arange(4), action, behaviour, advantage,
                                       np.log(np.tile(pi, (4, 1))))
    # min(r A, clip(r) A): 1.1, 1.2 (clipped), -0.8 (clipped), 0.5 (the unclipped term is the smaller one).
    assert loss == pytest.approx(-(1.1 + 1.2 - 0.8 + 0.5) / 4, abs=1e-5)
    # Where the clip binds the sample has no gradient; elsewhere d(r A)/dz = r A (e_a - pi).
    expected = np.zeros(K)
    for i in (0, 3):
        expected += -ratio[i] * advantage[i] * (np.eye(K)[action[i]] - pi) / 4
    np.testing.assert_allclose(grad, expected, atol=1e-5)
    # ratio_mean, mean |r - 1|, share with |r - 1| > eps, KL to a reference equal to pi.
    np.testing.assert_allclose(stats, [0.9, (0.1 + 0.5 + 0.5 + 0.5) / 4, 0.75, 0.0], atol=1e-5)


def test_reinforce_step_is_the_policy_gradient_and_ppo_at_ratio_one_equals_it():
    pi = _pi()
    action, advantage = np.array([0, 2, 1]), np.array([0.5, -0.25, -0.25])
    behaviour = np.log(pi[action])  # the data was sampled by these very weights: ratio 1
    expected = -sum(a * (np.eye(K)[i] - pi) for i, a in zip(action, advantage)) / 3
    grads = []
    for clip in (None, 1e9):
        model, updater, features = _tiny(3, clip=clip, optimizer=keras.optimizers.SGD(learning_rate=0.1))
        _, grad, _ = _loss_and_grad(updater, model, features, np.arange(3), action, behaviour, advantage,
                                    np.log(np.tile(pi, (3, 1))))
        np.testing.assert_allclose(grad, expected, atol=1e-6)
        updater.step({"idx": features["idx"].numpy()}, np.arange(3), action, behaviour, advantage, np.log(np.tile(pi, (3, 1))))
        np.testing.assert_allclose(model.z.numpy(), LOGITS - 0.1 * expected, atol=1e-6)  # one SGD step
        np.testing.assert_array_equal(model.zl.numpy(), np.zeros(K))  # the like head is not in the click reward
        grads.append(grad)
    np.testing.assert_allclose(grads[0], grads[1], atol=1e-7)


def test_kl_penalty_and_its_gradient():
    model, updater, features = _tiny(2, kl=0.5)
    pi = _pi()
    ref = np.array([0.6, 0.3, 0.1])
    kl = float(np.sum(pi * np.log(pi / ref)))
    loss, grad, stats = _loss_and_grad(updater, model, features, np.arange(2), np.array([0, 1]), np.log(pi[[0, 1]]),
                                       np.zeros(2), np.log(np.tile(ref, (2, 1))))
    assert loss == pytest.approx(0.5 * kl, rel=1e-5)
    assert stats[3] == pytest.approx(kl, rel=1e-5)
    # d KL(pi || ref) / dz_j = pi_j (log(pi_j / ref_j) - KL), the same for both slots (mean over slots).
    np.testing.assert_allclose(grad, 0.5 * pi * (np.log(pi / ref) - kl), atol=1e-6)


def test_group_and_batch_advantages():
    np.testing.assert_allclose(pa.group_advantages(np.array([[1, 0, 0, 0], [1, 1, 1, 1], [2, 0, 2, 0]])),
                               [[np.sqrt(3), -1 / np.sqrt(3), -1 / np.sqrt(3), -1 / np.sqrt(3)], [0, 0, 0, 0],
                                [1, -1, 1, -1]], rtol=1e-6)
    np.testing.assert_allclose(pa.batch_advantages(np.array([1.0, 0.0, 0.0, 1.0, 1.0])), [0.4, -0.6, -0.6, 0.4, 0.4],
                               rtol=1e-6)


def test_sampling_reward_and_softmax():
    log_prob = np.log(np.array([[0.2, 0.5, 0.3]]))
    np.testing.assert_array_equal(pa.sample(np.repeat(log_prob, 4, 0), np.array([0.1, 0.21, 0.69, 0.71])), [0, 1, 1, 2])
    assert pa.sample(log_prob, np.array([[0.1, 0.9]])).tolist() == [[0, 2]]
    np.testing.assert_allclose(np.exp(pa.log_softmax(np.array([[0.0, np.log(3.0)]]))), [[0.25, 0.75]])
    outcomes = {"click": np.array([1, 1, 0]), "conversion": np.array([1, 0, 0]), "like": np.array([1, 0, 1])}
    np.testing.assert_allclose(pa.reward_of(outcomes, pa.REWARDS["engagement"]), [3.5, 1.0, 0.5])


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
    assert policy_report.gini(np.array([0, 0, 0, 10])) == pytest.approx(0.75)  # (n - 1) / n when one item takes all
    assert policy_report.gini(np.array([5, 5, 5, 5])) == pytest.approx(0.0)
    x = np.array([1.0, 2.0, 3.0, 10.0])
    mean_abs_diff = np.abs(x[:, None] - x[None, :]).mean()
    assert policy_report.gini(x) == pytest.approx(mean_abs_diff / (2 * x.mean()))


@pytest.mark.parametrize("reward, untouched", [("click", ("conversion", "like")), ("engagement", ())])
def test_the_reward_decides_which_heads_move(reward, untouched):
    sim = recsim.Simulator(0, **TINY)
    pretrain, _, _ = policy._prefix(sim, 1, 600)
    encoder = recsim.Encoder.fit_raw_ids(pretrain, sim.params)
    keras.utils.set_random_seed(0)
    model = ARCHITECTURES["mmoe"](features=encoder.spec, tasks=encoder.tasks)
    slots = sim.requests(64)
    features = encoder.features(policy._candidate_frame(sim, slots, sim.logging_items(64, k=policy.CANDIDATES)))
    model({k: v[:2] for k, v in features.items()})
    before = {n: [v.numpy() for v in vs] for n, vs in model.task_variables.items()}
    weights = pa.REWARDS[reward]
    updater = pa.PolicyGradient(model, weights, policy.CANDIDATES, 0.05)
    logp = pa.log_softmax(pa.policy_scores(model, features, weights).reshape(64, -1))
    chosen = np.arange(64) % policy.CANDIDATES
    reward_values = np.where(np.arange(64) % 2 == 0, 0.0, 1.0).astype(np.float32)
    updater.step(features, np.arange(64), chosen, logp[np.arange(64), chosen].astype(np.float32),
                 pa.batch_advantages(reward_values), logp.astype(np.float32))
    for name in recsim.BEHAVIOURS:
        moved = any(not np.array_equal(b, v.numpy()) for b, v in zip(before[name], model.task_variables[name]))
        assert moved == (name not in untouched), name
    # The rewarded choices gain log-probability relative to the unrewarded ones.
    gain = (pa.log_softmax(pa.policy_scores(model, features, weights).reshape(64, -1)) - logp)[np.arange(64), chosen]
    assert gain[reward_values == 1].mean() > gain[reward_values == 0].mean()


def test_options_parse_and_refuse_bad_values():
    config = RunConfig(suite="recsim", suite_params={**TINY, "kl": [0.0, 0.1], "ppo_epochs": [1, 4],
                                                     "arms": ["logged", "ppo", "grpo"]}, experiment="policy")
    world, options = policy.split_params(config)
    assert world == TINY
    assert options.variants(2) == [("logged", 0.0, 2), ("ppo", 0.0, 1), ("ppo", 0.0, 4), ("ppo", 0.1, 1),
                                   ("ppo", 0.1, 4), ("grpo", 0.0, 1), ("grpo", 0.1, 1)]
    for params, needle in (({"arms": "dqn"}, "arms must be one of"), ({"kl": -1.0}, "kl must be"),
                           ({"ppo_epochs": 0}, "ppo_epochs must be"), ({"group": 1}, "group must be"),
                           ({"reward": "dwell"}, "reward must be one of"), ({"clip": 0}, "clip must be"),
                           ({"days": [5, 6]}, "needs one suite variant")):
        with pytest.raises(UserInputError, match=needle):
            policy.resolve(RunConfig(suite="recsim", suite_params={**TINY, **params}, experiment="policy"))


def test_bad_option_on_the_command_line_exits_2_and_writes_nothing(tmp_path, capsys):
    code = cli.main(["run", "--suite", "recsim", "--experiment", "policy", "--param", "arms=reinforce,dqn",
                     "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "arms must be one of" in err and "Received: arms='dqn'" in err
    assert not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def tiny_rows():
    config = RunConfig(suite="recsim", suite_params={**TINY, "ppo_epochs": [1, 3]}, archs=["shared_bottom"], seeds=1,
                       epochs=1, batch_size=64, experiment="policy")
    return policy.run_arms(config, "shared_bottom", 0), config


def test_tiny_run_records_every_arm_day_and_measure(tiny_rows):
    (rows, updates), config = tiny_rows
    # Train days 0-2: pre-training covers days 0-1 (day 1 rows: the pre-trained probe AUC); days 2-4 the arms'.
    assert set(rows["arm"]) == set(policy.ARMS) and set(rows["day"]) == {1, 2, 3, 4}
    assert set(rows[rows["day"] == 1]["measure"]) == {"auc_probe"}
    assert len(rows.groupby(["arm", "kl", "epochs"])) == 6  # ppo at 1 and 3 epochs
    measures = set(rows["measure"])
    assert {"auc", "auc_heldout", "auc_control", "auc_probe", "output_drift", "drift_pretrained", "click_rate",
            "reward", "coverage", "gini"} <= measures
    coverage = rows[rows["measure"] == "coverage"]["value"]
    assert ((coverage > 0) & (coverage <= 1)).all()
    # Strictly on-policy updates see ratio 1 (float32 rounding); PPO one pass per epoch, off-policy after the first.
    dev = updates[updates["measure"] == "ratio_dev"].groupby(["arm", "epochs", "epoch"])["value"].mean()
    assert dev.loc["reinforce"].max() < 1e-5 and dev.loc["grpo"].max() < 1e-5
    assert list(dev.loc[("ppo", 3)].index) == [1, 2, 3] and list(dev.loc[("ppo", 1)].index) == [1]
    assert dev.loc[("ppo", 3, 3)] > dev.loc[("ppo", 3, 1)] > 1e-4
    summary = policy_report.summarize(rows, updates)
    assert list(summary["arm"]) == ["logged", "on-policy", "reinforce", "ppo", "ppo", "grpo"]
    # Forgetting recomputed from the rows: the pre-trained probe AUC minus the last day's.
    probe = rows[(rows["measure"] == "auc_probe") & (rows["task"] == "like") & (rows["arm"] == "logged")]
    expected = probe[probe["day"] == 1]["value"].mean() - probe[probe["day"] == 4]["value"].mean()
    assert summary.set_index("arm").loc["logged", "forgetting_like"] == pytest.approx(expected)
    # The supervised arms make no policy-gradient updates: no off-policyness.
    assert np.isnan(summary.set_index("arm").loc["logged", "ratio_dev"])


@pytest.mark.slow
def test_tiny_run_is_deterministic_per_seed(tiny_rows):
    (rows, updates), config = tiny_rows
    again = policy.run_arms(config, "shared_bottom", 0)
    pd.testing.assert_frame_equal(rows, again[0])
    pd.testing.assert_frame_equal(updates, again[1])


def test_policy_needs_recsim(tmp_path, capsys):
    code = cli.main(["run", "--suite", "synthetic", "--experiment", "policy", "--out", str(tmp_path / "x")])
    assert code == 2 and "needs the recsim suite" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_report_on_a_policy_directory_prints_its_table(tmp_path, capsys, tiny_rows):
    (rows, updates), config = tiny_rows
    out = tmp_path / "exp"
    out.mkdir()
    (out / "config.toml").write_text(config.to_toml())
    (out / "policy.md").write_text(policy_report.describe(policy_report.summarize(rows, updates)))
    assert cli.main(["report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "# On-policy vs logged data" in printed and "| ppo ×3 |" in printed


@pytest.mark.slow
def test_end_to_end_run_and_resume_give_the_same_files(tmp_path):
    args = ["run", "--suite", "recsim", "--experiment", "policy", "--seeds", "1", "--epochs", "1", "--arch", "mmoe",
            "--batch-size", "64", "--quiet", "--param", "arms=on-policy,ppo,grpo", "--param", "kl=0.1"]
    args += [x for k, v in TINY.items() for x in ("--param", f"{k}={v}")]
    assert cli.main([*args, "--out", str(tmp_path / "run")]) == 0
    first = {n: (tmp_path / "run" / n).read_text() for n in ("policy.csv", "policy_updates.csv", "policy.md")}
    assert "ppo ×4 kl=0.1" in first["policy.md"]
    assert cli.main(["run", "--resume", str(tmp_path / "run"), "--quiet"]) == 0
    assert {n: (tmp_path / "run" / n).read_text() for n in first} == first


@pytest.mark.slow
def test_resume_keeps_finished_pairs_and_runs_the_missing_ones(tmp_path):
    """Each architecture × seed pair is committed on its own; an interrupted run loses only the unfinished ones."""
    import os

    config = RunConfig(suite="recsim", suite_params={**TINY, "arms": ["logged", "reinforce"]}, archs=["shared_bottom"],
                       seeds=2, epochs=1, batch_size=64, experiment="policy", jobs=2)
    run_dir = policy.run(config, out=tmp_path / "run", progress=None)
    first = {n: (run_dir / n).read_bytes() for n in ("policy.csv", "policy_updates.csv", "policy_summary.csv")}
    pairs = run_dir / policy.PAIRS_DIR
    kept = {p.name: os.stat(p).st_mtime_ns for p in pairs.glob("shared_bottom__s0.*")}
    for p in pairs.glob("shared_bottom__s1.*"):  # as if the run had stopped while seed 1 ran
        p.unlink()
    (run_dir / "policy.csv").unlink()
    policy.resume(run_dir, progress=None)
    assert {p.name: os.stat(p).st_mtime_ns for p in pairs.glob("shared_bottom__s0.*")} == kept
    assert sorted(p.name for p in pairs.glob("shared_bottom__s1.*")) == ["shared_bottom__s1.policy.csv",
                                                                         "shared_bottom__s1.updates.csv"]
    assert {n: (run_dir / n).read_bytes() for n in first} == first
    # Pairs are kept by architecture and seed only: a config.toml edited since is refused, as for a grid.
    (run_dir / "config.toml").write_text((run_dir / "config.toml").read_text().replace("epochs = 1", "epochs = 2"))
    with pytest.raises(UserInputError, match="changed since the run started"):
        policy.resume(run_dir, progress=None)


def test_a_pair_whose_workers_keep_dying_stops_the_run_in_one_line(tmp_path, workers_keep_dying):
    from mtl_bench.errors import RunStopped

    config = RunConfig(suite="recsim", suite_params=TINY, archs=["mmoe"], seeds=1, experiment="policy")
    with pytest.raises(RunStopped, match=r"^policy pair mmoe seed 0: the worker process running it died .* --resume$"):
        policy.run(config, out=tmp_path / "run", progress=None, executor=workers_keep_dying)
    manifest = io.read_json(tmp_path / "run" / "manifest.json")
    assert manifest["status"] == "failed" and manifest["reason"].startswith("RunStopped: policy pair mmoe seed 0")
