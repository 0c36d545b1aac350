"""The recommender simulator: determinism, its documented behaviour model, splits and the cohort holdout."""

import numpy as np
import pytest

from mtl_bench.errors import UserInputError
from mtl_bench.tasks import SUITES, recsim

SMALL = dict(users=300, items=120, categories=6, days=5, impressions_per_day=1500)


def test_same_seed_same_world_other_seed_other_world():
    a, b = recsim.simulate(3, **SMALL).log, recsim.simulate(3, **SMALL).log
    assert a.equals(b)
    assert not a.equals(recsim.simulate(4, **SMALL).log)
    d1, d2 = recsim.load(seed=3, **SMALL), recsim.load(seed=3, **SMALL)
    for split in ("train", "validation", "test"):
        s1, s2 = getattr(d1, split), getattr(d2, split)
        for k in s1.features:
            np.testing.assert_array_equal(s1.features[k], s2.features[k])
        for k in s1.labels:
            np.testing.assert_array_equal(s1.labels[k], s2.labels[k])


@pytest.mark.parametrize("relatedness", [0.0, 0.3, 0.8, 1.0])
def test_behaviour_scores_correlate_as_the_relatedness(relatedness):
    # Uniform logging and many users and items: the sample correlation estimates the formula's r.
    log = recsim.simulate(0, relatedness=relatedness, users=4000, items=4000, days=3, impressions_per_day=20000,
                          policy="random", drift=0.0).log
    corr = np.corrcoef(log[["score_click", "score_conversion", "score_like"]].to_numpy().T)
    off = corr[np.triu_indices(3, 1)]
    np.testing.assert_allclose(off, relatedness, atol=0.04)


def test_label_correlation_grows_with_relatedness():
    def corr(r):
        log = recsim.simulate(0, relatedness=r, users=2000, items=2000, days=3, impressions_per_day=20000,
                              policy="random", drift=0.0).log
        return np.corrcoef(log["click"], log["like"])[0, 1]

    low, mid, high = corr(0.0), corr(0.5), corr(1.0)
    assert abs(low) < 0.02 < mid < high


def test_conversions_never_occur_without_clicks_and_rates_follow_the_probabilities():
    log = recsim.simulate(1, **SMALL).log
    assert (log["conversion"] <= log["click"]).all()
    assert log["conversion"].sum() > 0
    for b in ("click", "like"):
        # Bernoulli draws: the observed rate is within 4 standard errors of the mean probability.
        se = np.sqrt((log[f"p_{b}"] * (1 - log[f"p_{b}"])).sum()) / len(log)
        assert abs(log[b].mean() - log[f"p_{b}"].mean()) < 4 * se
    expected = (log["p_click"] * log["p_conversion"]).mean()
    assert abs(log["conversion"].mean() - expected) < 4 * np.sqrt(expected / len(log))


def test_popularity_policy_concentrates_exposure():
    random = recsim.simulate(0, **{**SMALL, "policy": "random"}).log["item"].value_counts(normalize=True)
    popular = recsim.simulate(0, **{**SMALL, "policy": "popularity"}).log["item"].value_counts(normalize=True)
    top = lambda shares: shares.sort_values(ascending=False).iloc[:12].sum()  # noqa: E731
    assert top(popular) > 2 * top(random)


def test_model_logging_policy_is_a_trained_model_and_shows_what_it_scores_higher():
    params = {**SMALL, "policy": "model"}
    log = recsim.simulate(0, **params).log
    assert recsim.simulate(0, **params).log.equals(log)
    sim = recsim.Simulator(0, **params)
    # Its scores track the true click probability of fresh random (user, item) pairs of day 0.
    slots = sim.requests(5000)
    items = sim.logging_items(5000, "random")
    truth = sim.outcomes(slots, items)
    assert np.corrcoef(sim.logging_scores(slots["user"], items), truth["p_click"])[0, 1] > 0.2
    # Shown items score higher under the model than the popularity candidates it chose among.
    shown = sim.logging_scores(log["user"].to_numpy(), log["item"].to_numpy()).mean()
    candidates = sim.logging_items(len(log), "popularity", k=recsim.MODEL_CANDIDATES)
    assert shown > sim.logging_scores(log["user"].to_numpy(), candidates).mean()
    # And the clicks follow: the model's logs have a higher click rate than popularity logs.
    assert log["click"].mean() > recsim.simulate(0, **SMALL).log["click"].mean()


def test_cohort_zero_keeps_its_interests_and_drifting_cohorts_do_not():
    world = recsim.simulate(0, **{**SMALL, "drift": 0.5, "relatedness": 1.0})
    log = world.log
    # Same (user, item) pair on two days: the score changes only when the user's cohort drifts.
    pairs = log.groupby(["user", "item"])["score_click"].agg(["min", "max", "count"])
    pairs = pairs[pairs["count"] > 1].join(log.groupby("user")["cohort"].first(), on="user")
    spread = (pairs["max"] - pairs["min"]).groupby(pairs["cohort"]).max()
    assert spread.loc[0] == pytest.approx(0.0, abs=1e-12)
    assert (spread.drop(0) > 0.01).all()


def test_holdout_flags_exactly_the_cohort_from_its_day_and_stops_its_drift():
    world = recsim.simulate(0, **{**SMALL, "holdout_cohort": 2, "holdout_day": 3, "drift": 0.5})
    log = world.log
    expected = (log["cohort"] == 2) & (log["day"] >= 3)
    np.testing.assert_array_equal(log["holdout"].to_numpy() == 1, expected.to_numpy())
    data = recsim.load(seed=0, **{**SMALL, "holdout_cohort": 2, "holdout_day": 3})
    for split in (data.train, data.validation, data.test):
        meta = split.meta
        np.testing.assert_array_equal(meta["holdout"] == 1, (meta["cohort"] == 2) & (meta["day"] >= 3))
    # The held-out cohort's users keep existing: they have rows (flagged) in the later days.
    assert (data.test.meta["cohort"] == 2).any()


def test_uniform_sample_is_random_policy_and_flagged():
    log = recsim.simulate(0, **{**SMALL, "uniform_rows_per_day": 500}).log
    uniform = log[log["uniform"] == 1]
    assert len(uniform) == 5 * 500 and (uniform.groupby("day").size() == 500).all()
    # The logging policy concentrates on popular items; the uniform sample does not.
    top = lambda frame: frame["item"].value_counts(normalize=True).iloc[:12].sum()  # noqa: E731
    assert top(log[log["uniform"] == 0]) > 2 * top(uniform)
    data = recsim.load(seed=0, **SMALL, uniform_rows_per_day=500)
    assert data.train.meta["uniform"].sum() == 3 * 500


def test_time_split_and_features():
    data = recsim.load(seed=0, **SMALL)
    assert set(data.train.meta["day"]) == {0, 1, 2}
    assert set(data.validation.meta["day"]) == {3} and set(data.test.meta["day"]) == {4}
    assert len(data.train) == 3 * 1500
    assert data.features.categorical == ("user_id", "item_id", "category")
    assert [t.name for t in data.tasks] == ["click", "conversion", "like"]
    assert all(t.kind == "binary" for t in data.tasks)
    assert "recsim" in SUITES
    multi = recsim.load(seed=0, **SMALL, scenarios=3)
    assert multi.features.categorical[-1] == "scenario"
    assert multi.variant == {"relatedness": 0.5, **SMALL, "scenarios": 3}


@pytest.mark.parametrize(
    "params, needle",
    [
        (dict(relatedness=1.5), "recsim: relatedness must be a number in [0, 1]. Received: relatedness=1.5"),
        (dict(drift=-0.1), "drift must be a number in [0, 1]"),
        (dict(popularity_skew=float("inf")), "popularity_skew must be a finite number >= 0"),
        (dict(policy="bandit"), "policy must be one of ['random', 'popularity', 'model']"),
        (dict(days=3, validation_days=1, test_days=2), "validation_days + test_days must be < days"),
        (dict(holdout_cohort=9), "holdout_cohort must be -1 (none) or a cohort in [0, 3]"),
        (dict(users=0), "users must be an integer in [1, 10000000]"),
        (dict(latent_dim=100_000), "latent_dim must be an integer in [1, 4096]"),
        (dict(holdout_cohort=0, cohorts=1), "cohorts must be an integer >= 2 with a held-out cohort"),
    ],
)
def test_bad_parameters(params, needle):
    with pytest.raises(UserInputError) as err:
        recsim.load(**params)
    assert needle in str(err.value) and "Received" in str(err.value)


def _frame():
    """Four impressions: user 2 shown twice, user 0 once in the fitted rows, user 5 only in the last row."""
    import pandas as pd

    return pd.DataFrame({
        "user": [2, 0, 2, 5], "item": [7, 7, 1, 9], "category": [1, 1, 0, 3], "scenario": [0, 1, 0, 1],
        "position": [1, 3, 2, 5], "hour": [0, 6, 12, 18], "popularity": [0.5, 0.5, 0.25, 0.125],
        "activity": [1.0, 2.0, 3.0, 4.0], "day": [0, 0, 1, 1], "cohort": [2, 0, 2, 1],
        "holdout": [0, 0, 0, 1], "click": [1, 0, 0, 1], "conversion": [0, 0, 0, 1], "like": [1, 1, 0, 0],
    })


def test_encoder_with_vocabularies_numbers_the_fitted_rows_by_frequency():
    frame = _frame()
    params = {**recsim.DEFAULTS, "users": 10, "items": 12, "categories": 4}
    encoder = recsim.Encoder.fit_vocabulary(frame, params, rows=np.array([0, 1, 2]))
    # Fitted rows: users {2: twice, 0: once} -> ids 2 -> 1, 0 -> 2; user 5 is unseen -> 0.
    assert encoder.spec.categorical == ("user_id", "item_id", "category")  # one scenario: no scenario feature
    assert encoder.spec.vocabulary_sizes == (3, 3, 3)
    features = encoder.features(frame)
    np.testing.assert_array_equal(features["categorical"][:, 0], [1, 2, 1, 0])
    np.testing.assert_array_equal(features["categorical"][:, 1], [1, 1, 2, 0])  # item 7 twice, item 1 once
    # Statistics of the fitted rows only: positions 1, 3, 2 have mean 2 and population std sqrt(2/3).
    assert encoder.spec.numeric[0] == "position"
    assert encoder.spec.numeric_mean[0] == pytest.approx(2.0)
    assert encoder.spec.numeric_std[0] == pytest.approx(np.sqrt(2 / 3))
    np.testing.assert_allclose(features["numeric"][:, 1], np.sin(2 * np.pi * np.array([0, 6, 12, 18]) / 24), atol=1e-7)
    np.testing.assert_allclose(features["numeric"][:, 3], np.log([0.5, 0.5, 0.25, 0.125]), rtol=1e-6)


def test_encoder_with_raw_ids_gives_every_user_and_item_of_the_world_its_own_id():
    frame = _frame()
    params = {**recsim.DEFAULTS, "users": 10, "items": 12, "categories": 4, "scenarios": 2}
    encoder = recsim.Encoder.fit_raw_ids(frame.iloc[:3], params)
    assert encoder.spec.categorical == ("user_id", "item_id", "category", "scenario")
    assert encoder.spec.vocabulary_sizes == (11, 13, 5, 3)  # every value of the world, plus id 0
    split = encoder.split(frame)
    # User 5 and item 9 never appear in the fitted rows and still get index + 1.
    np.testing.assert_array_equal(split.features["categorical"], frame[["user", "item", "category", "scenario"]] + 1)
    assert list(split.labels) == list(recsim.BEHAVIOURS) and list(split.meta) == ["day", "cohort", "user", "holdout"]
    np.testing.assert_array_equal(split.labels["click"], [1, 0, 0, 1])
    assert encoder.spec.numeric_mean[4] == pytest.approx(2.0)  # activity 1, 2, 3 of the fitted rows


def test_the_suite_encodes_users_with_its_training_vocabulary():
    small = {**SMALL, "users": 3000, "impressions_per_day": 600}  # many users: some appear only after training
    data = recsim.load(seed=1, **small)
    train_users, ids = data.train.meta["user"], data.train.features["categorical"][:, 0]
    counts = np.bincount(train_users, minlength=small["users"])
    # Id 1 is the most frequent training user, ties going to the smaller string.
    top = min(np.flatnonzero(counts == counts.max()), key=str)
    assert set(ids[train_users == top]) == {1} and ids.min() == 1
    assert data.features.vocabulary_sizes[0] == (counts > 0).sum() + 1
    # A user never seen in training is unknown (0) in the later splits.
    later_users, later_ids = data.test.meta["user"], data.test.features["categorical"][:, 0]
    unseen = ~np.isin(later_users, train_users)
    assert unseen.any()
    np.testing.assert_array_equal(later_ids == 0, unseen)
