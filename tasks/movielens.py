"""MovieLens-100K (GroupLens): 100,000 ratings of 1,682 movies by 943 users, Sept 1997 - Apr 1998.

Tasks (one rating, three labels; over all ratings: like rate 0.554, love rate 0.212; correlations
like/love 0.47, like/rating 0.84, love/rating 0.68):

* ``like``: rating >= 4 (binary, AUC);
* ``love``: rating = 5 (binary, AUC);
* ``rating``: the rating 1-5 (regression, MSE).

Features: categorical ``user_id``, ``item_id``, ``gender``, ``occupation``; numeric ``age``,
``release_year`` (missing: the training mean) and one 0/1 column per genre (``genre_<name>``).

Time: periods of ``unit`` (default a week: 31 weeks) from the timestamps, split by time (the last
``test`` periods test, the ``validation`` before them validate), so ``--regime daily`` and
``--experiment cohort`` run on it; cohorts by ``cohorts`` (``occupation``: 21 cohorts, ``age``: bands
<25, 25-34, 35-44, 45+, or ``gender``), ids by descending number of ratings (see
:mod:`mtl_bench.tasks._timeline`).

Data (the licence forbids redistributing it: it is never part of this repository), first found of:

1. ``data_dir`` (or the environment variable ``MTL_BENCH_DATA``): GroupLens's ``ml-100k`` folder
   (``u.data``, ``u.user``, ``u.item``), or a folder holding it;
2. the copy bundled in the ``recbole`` 1.2.1 wheel (``recbole/dataset_example/ml-100k/``:
   ``ml-100k.inter``, ``.user``, ``.item``), installed with ``pip install --no-deps recbole==1.2.1``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pandas as pd

from mtl_bench.errors import UserInputError
from mtl_bench.spec import SuiteData, Task
from mtl_bench.tasks import _common, _timeline
from mtl_bench.validation import check_choice, check_int

NAME = "movielens"
COHORTS = ("occupation", "age", "gender")
GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")
AGE_BANDS = (25, 35, 45)
INSTALL = ("movielens: MovieLens-100K not found; pip install --no-deps recbole==1.2.1 (it bundles the data set), "
           "or pass --data-dir <GroupLens ml-100k folder with u.data, u.user, u.item>")


def load(
    *, seed: int = 0, data_dir: str = "", unit: str = "week", cohorts: str = "occupation",
    validation: int = 1, test: int = 1, holdout_cohort: int = -1, holdout_day: int = 0,
) -> SuiteData:
    """Loads MovieLens-100K with the tasks, features, periods and cohorts of the module docstring.

    Args:
        seed: The engine's training seed (the split is by time and never changes).
        data_dir: Folder with GroupLens's ``ml-100k`` files (default ``$MTL_BENCH_DATA``, then recbole's copy).
        unit: Period length: ``hour``, ``day`` or ``week``.
        cohorts: What groups users into cohorts: ``occupation``, ``age`` (bands) or ``gender``.
        validation: Periods of the validation split (before the test periods).
        test: Periods of the test split (the last ones).
        holdout_cohort: A cohort id held out of training from ``holdout_day`` on (the cohort experiment); -1 none.
        holdout_day: The first held-out period.

    Raises:
        UserInputError: Bad parameters, or the data set is not installed.
    """
    check_int(NAME, "seed", seed, 0)
    check_choice(NAME, "unit", unit, tuple(_timeline.UNITS))
    check_choice(NAME, "cohorts", cohorts, COHORTS)
    check_int(NAME, "validation", validation, 1, _common.MAX_DIM)
    check_int(NAME, "test", test, 1, _common.MAX_DIM)
    check_int(NAME, "holdout_cohort", holdout_cohort, -1)
    check_int(NAME, "holdout_day", holdout_day, 0)
    ratings, source = read(data_dir)

    day = _timeline.periods(ratings["timestamp"], unit, "timestamp", source)
    splits, split_note = _timeline.time_split(day, validation, test, 0, NAME)
    if cohorts == "age":
        groups = pd.Series(np.digitize(ratings["age"], AGE_BANDS)).map(
            dict(enumerate(("<25", "25-34", "35-44", "45+"))))
    else:
        groups = ratings[cohorts].astype(str)
    meta = {"day": day}
    meta["cohort"], names = _timeline.cohorts(groups, cohorts, source)
    notes = [f"movielens ({source}): {split_note} ({unit}s); cohorts by {cohorts}: "
             + ", ".join(f"{i} = {n!r}" for i, n in enumerate(names[:8])) + (", ..." if len(names) > 8 else "")]
    if holdout_cohort >= 0:
        train_periods = int(day[splits[0]].max()) + 1
        meta["holdout"], held = _timeline.holdout(day, meta["cohort"], names, holdout_cohort, holdout_day,
                                                   train_periods, NAME)
        notes.append(f"movielens: {held}")
    rating = ratings["rating"].to_numpy(np.float64)
    numeric = {"age": ratings["age"].to_numpy(np.float64), "release_year": ratings["release_year"].to_numpy(np.float64)}
    numeric.update({f"genre_{g}": ratings[f"genre_{g}"].to_numpy(np.float64) for g in GENRES})
    return _common.assemble(
        name=NAME,
        variant={"cohorts": cohorts, "unit": unit},
        tasks=[Task("like", "like", "binary"), Task("love", "love", "binary"), Task("rating", "rating", "regression")],
        labels={"like": rating >= 4, "love": rating == 5, "rating": rating},
        splits=splits,
        numeric=numeric,
        categorical={c: ratings[c] for c in ("user_id", "item_id", "gender", "occupation")},
        notes=notes,
        source=NAME,
        meta=meta,
    )


def read(data_dir: str = "") -> tuple[pd.DataFrame, str]:
    """One row per rating: ``user_id, item_id, rating, timestamp, age, gender, occupation, release_year,
    genre_<name>...``, and where it was read from (``GroupLens`` or ``recbole``).

    Raises:
        UserInputError: No copy found (one line saying how to install one).
    """
    folder = data_dir or os.environ.get("MTL_BENCH_DATA", "")
    if folder:
        root = Path(folder).expanduser()
        for candidate in (root, root / "ml-100k"):
            if (candidate / "u.data").is_file():
                return _grouplens(candidate), "GroupLens"
        if data_dir:
            raise UserInputError(f"movielens: no u.data in {root} or {root / 'ml-100k'}; pass the GroupLens "
                                 "ml-100k folder, or pip install --no-deps recbole==1.2.1")
    spec = importlib.util.find_spec("recbole")
    if spec is None or spec.origin is None:
        raise UserInputError(INSTALL)
    bundled = Path(spec.origin).parent / "dataset_example" / "ml-100k"
    if not (bundled / "ml-100k.inter").is_file():
        raise UserInputError(INSTALL)
    return _recbole(bundled), "recbole"


def _recbole(folder: Path) -> pd.DataFrame:
    def table(suffix: str) -> pd.DataFrame:
        frame = pd.read_csv(folder / f"ml-100k.{suffix}", sep="\t", dtype=str, keep_default_na=False)
        return frame.rename(columns=lambda c: c.split(":")[0])

    inter, users, items = table("inter"), table("user"), table("item")
    genres = items["class"].str.split(" ")
    items = items.assign(**{f"genre_{g}": genres.map(lambda gs, g=g: float(g in gs)) for g in GENRES})
    items["release_year"] = pd.to_numeric(items["release_year"], errors="coerce")
    return _join(inter, users, items)


def _grouplens(folder: Path) -> pd.DataFrame:
    inter = pd.read_csv(folder / "u.data", sep="\t", names=["user_id", "item_id", "rating", "timestamp"], dtype=str)
    users = pd.read_csv(folder / "u.user", sep="|", names=["user_id", "age", "gender", "occupation", "zip_code"],
                        dtype=str)
    items = pd.read_csv(folder / "u.item", sep="|", encoding="latin-1", dtype=str, keep_default_na=False,
                        names=["item_id", "title", "release_date", "video_date", "url", *(f"genre_{g}" for g in GENRES)])
    items["release_year"] = pd.to_numeric(items["release_date"].str[-4:], errors="coerce")
    for g in GENRES:
        items[f"genre_{g}"] = items[f"genre_{g}"].astype(float)
    return _join(inter, users, items)


def _join(inter: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    frame = inter.merge(users[["user_id", "age", "gender", "occupation"]], on="user_id", how="left", validate="m:1")
    frame = frame.merge(items[["item_id", "release_year", *(f"genre_{g}" for g in GENRES)]], on="item_id",
                        how="left", validate="m:1")
    frame["rating"] = frame["rating"].astype(float)
    frame["timestamp"] = frame["timestamp"].astype(float).astype(np.int64)
    frame["age"] = frame["age"].astype(float)
    return frame
