"""MovieLens-100K from recbole's bundled copy (skipped when recbole is not installed)."""

import importlib.util

import numpy as np
import pandas as pd
import pytest

from mtl_bench.errors import UserInputError
from mtl_bench.tasks import movielens

needs_data = pytest.mark.skipif(importlib.util.find_spec("recbole") is None,
                                reason="pip install --no-deps recbole==1.2.1 for MovieLens-100K")

# GroupLens's published figures: 100,000 ratings by 943 users of 1,682 movies; ratings 1-5 counted
# 6,110 / 11,370 / 27,145 / 34,174 / 21,201.
RATING_COUNTS = {1: 6110, 2: 11370, 3: 27145, 4: 34174, 5: 21201}


@pytest.fixture(scope="module")
def data():
    if importlib.util.find_spec("recbole") is None:
        pytest.skip("recbole not installed")
    return movielens.load()


def _all(data, key, kind="labels"):
    return np.concatenate([getattr(getattr(data, s), kind)[key] for s in ("train", "validation", "test")])


@needs_data
def test_rows_users_items_and_label_rates_match_grouplens(data):
    ratings, source = movielens.read()
    assert source == "recbole" and len(ratings) == 100_000
    assert ratings.user_id.nunique() == 943 and ratings.item_id.nunique() == 1682
    assert ratings.rating.value_counts().sort_index().to_dict() == RATING_COUNTS
    assert sum(len(getattr(data, s)) for s in ("train", "validation", "test")) == 100_000
    assert _all(data, "like").sum() == RATING_COUNTS[4] + RATING_COUNTS[5]
    assert _all(data, "love").sum() == RATING_COUNTS[5]
    assert sorted(np.unique(_all(data, "rating"))) == [1, 2, 3, 4, 5]
    assert [t.kind for t in data.tasks] == ["binary", "binary", "regression"]


@needs_data
def test_weeks_split_by_time_and_occupation_cohorts(data):
    ratings, _ = movielens.read()
    week = ratings.timestamp // (7 * 86_400)
    assert week.max() - week.min() + 1 == 31  # Sept 1997 - Apr 1998
    assert data.train.meta["day"].max() == 28 and set(data.validation.meta["day"]) == {29}
    assert set(data.test.meta["day"]) == {30}
    counts = ratings.occupation.value_counts()
    assert counts.index[0] == "student" and counts.index[1] == "other"
    assert np.bincount(_all(data, "cohort", "meta"))[:2].tolist() == [counts.iloc[0], counts.iloc[1]]
    assert data.features.categorical == ("user_id", "item_id", "gender", "occupation")
    assert "genre_Drama" in data.features.numeric


@needs_data
def test_age_bands_and_holdout(data):
    aged = movielens.load(cohorts="age", holdout_cohort=1, holdout_day=15)
    ratings, _ = movielens.read()
    bands = pd.cut(ratings.age, [0, 24, 34, 44, 200], labels=["<25", "25-34", "35-44", "45+"])
    assert sorted(np.bincount(_all(aged, "cohort", "meta")).tolist()) == sorted(bands.value_counts().tolist())
    held = _all(aged, "holdout", "meta") == 1
    assert held.any() and (_all(aged, "day", "meta")[held] >= 15).all()
    assert (_all(aged, "cohort", "meta")[held] == 1).all()


def test_missing_data_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.delenv("MTL_BENCH_DATA", raising=False)
    with pytest.raises(UserInputError, match=r"pip install --no-deps recbole==1\.2\.1"):
        movielens.read()
    with pytest.raises(UserInputError, match="no u.data"):
        movielens.read(str(tmp_path))


def test_grouplens_layout(tmp_path):
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_text("1\t10\t5\t881250949\n2\t10\t2\t891717742\n1\t11\t4\t878887116\n")
    (folder / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    genres = ["0"] * len(movielens.GENRES)
    comedy = genres.copy()
    comedy[movielens.GENRES.index("Comedy")] = "1"
    (folder / "u.item").write_text(
        "10|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join(comedy) + "\n"
        "11|Unknown|||http://y|" + "|".join(genres) + "\n", encoding="latin-1")
    ratings, source = movielens.read(str(tmp_path))
    assert source == "GroupLens" and len(ratings) == 3
    assert ratings.release_year.iloc[0] == 1995 and np.isnan(ratings.release_year.iloc[2])
    assert ratings["genre_Comedy"].tolist() == [1.0, 1.0, 0.0] and ratings.occupation.tolist()[1] == "other"


def test_bad_parameters():
    for kw, fragment in [({"unit": "month"}, "unit"), ({"cohorts": "zip"}, "cohorts"), ({"test": 0}, "test")]:
        with pytest.raises(UserInputError, match=fragment):
            movielens.load(**kw)


@needs_data
@pytest.mark.slow
@pytest.mark.parametrize("arch", ["shared_bottom", "mmoe", "omoe", "ple"])
def test_one_epoch_fit_of_each_architecture(tmp_path, arch):
    from mtl_bench import cli

    out = tmp_path / arch
    assert cli.main(["run", "--suite", "movielens", "--arch", arch, "--regime", "joint", "--epochs", "1",
                     "--seeds", "1", "--jobs", "1", "--max-train-rows", "20000", "--out", str(out), "--quiet"]) == 0
    metrics = pd.read_csv(out / "metrics.csv")
    test = metrics[metrics.split == "test"].set_index(["task", "metric"]).value
    assert set(test.index) == {("like", "auc"), ("like", "logloss"), ("love", "auc"), ("love", "logloss"),
                               ("rating", "mse")}
    assert test.between(0, 1).loc[["like", "love"]].all() and 0 < test.loc[("rating", "mse")] < 16


@needs_data
@pytest.mark.slow
def test_cohort_experiment_completes(tmp_path):
    from mtl_bench import cli

    out = tmp_path / "cohort"
    assert cli.main(["run", "--suite", "movielens", "--experiment", "cohort", "--regime", "daily", "--arch", "mmoe",
                     "--epochs", "1", "--seeds", "1", "--jobs", "1", "--pretrain-days", "25", "--out", str(out),
                     "--quiet"]) == 0
    forgetting = pd.read_csv(out / "cohort_forgetting.csv")
    assert set(forgetting[forgetting.heldout.astype(str) == "True"].cohort.astype(str)) == {"1"}
    assert cli.main(["report", str(out)]) == 0
    assert set(pd.read_csv(out / "cohort_half_life.csv").role) == {"heldout", "control"}
