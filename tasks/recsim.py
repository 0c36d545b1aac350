"""A multi-behaviour recommender world whose ground truth mtl-bench controls (suite ``recsim``).

Users and items have latent vectors; every impression is a (user, item) pair
shown on one day, in one scenario (surface), at one position, chosen by a
logging policy; each impression carries three behaviours:

* ``click``: ``P = σ(-1 + 1.5 s_click - 0.25 (position - 1) + 0.3 log a_u + b_σ)``
* ``conversion``: click **and** a post-click conversion with
  ``P = σ(-1 + 1.5 s_conversion)`` (the click-through conversion of ESMM data:
  a conversion never occurs without a click)
* ``like`` (a long-view / like signal of the view): ``P = σ(-1.5 + 1.5 s_like)``

The behaviour scores mix a shared taste and one taste per behaviour::

    s_b = sqrt(r) * <u_0, v_0> / sqrt(d) + sqrt(1 - r) * <u_b, v_b> / sqrt(d)

with ``r = relatedness`` and independent standard-normal latent blocks of
dimension ``d``, so the scores of two behaviours have correlation ``r`` (in
expectation over users and items). With ``scenarios > 1`` each scenario ``σ``
replaces the behaviour block by ``sqrt(g) <u_b, v_b> + sqrt(1 - g) <u_bσ, v_bσ>``
(``g = scenario_similarity``) and adds a base rate ``b_σ`` to the click logit:
the same users and items, different behaviour functions.

Items belong to categories (an item's blocks are its category's blocks plus
item noise, so categories carry signal); ``a_u`` is a user's activity level.
Users fall into ``cohorts`` (user index modulo ``cohorts``); cohort ``k``'s user
blocks drift every day by ``u <- sqrt(1 - δ_k²) u + δ_k ε`` with
``δ_k = drift · k / (cohorts - 1)``: cohort 0 keeps its interests.

The logging policy picks the item of each impression: ``random`` (uniform),
``popularity`` (probability proportional to ``rank^-popularity_skew`` of a
seeded item ranking) or ``model``: an older trained model, a logistic
regression of click on one-hot (user, category) and one-hot item, fitted once
on three days' worth of random-policy impressions drawn before day 0; each slot gets
``MODEL_CANDIDATES`` popularity candidates and shows one sampled in proportion
to ``exp(score)`` (so every candidate keeps a positive propensity). The logs
carry exposure bias. Users are drawn uniformly.

The cohort experiment (``holdout_cohort >= 0``): rows of that cohort from day
``holdout_day`` on get ``meta["holdout"] = 1``, and the cohort's drift is
switched off for the whole simulation, so any decay of its predictions is
forgetting, not interest change. Regimes never train on holdout rows; they are evaluated like any other.

``uniform_rows_per_day > 0`` adds, every day, that many impressions of the
random policy (``meta["uniform"] = 1``): an unbiased sample that no regime
trains or selects on, which the daily regime evaluates apart from the
logging policy's rows (exposure bias hides what a model forgot about the
items the logging policy rarely shows).

Splits are by time: the last ``test_days`` days are the test split, the
``validation_days`` before them the validation split, earlier days train; rows
of each split are in a seeded random order. ``meta`` holds ``day``,
``cohort``, ``user``, ``holdout`` and ``uniform`` per row.

Features: categorical ``user_id``, ``item_id``, ``category`` (and ``scenario``
with several scenarios) — real embedding tables — and numeric ``position``,
``hour_sin``, ``hour_cos``, ``log_popularity`` and ``activity``, from one
:class:`Encoder`, which the policy experiment uses on the frames it simulates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mtl_bench.errors import UserInputError
from mtl_bench.spec import CATEGORICAL, NUMERIC, FeatureSpec, Split, SuiteData, Task
from mtl_bench.tasks import _common
from mtl_bench.tasks._common import MAX_DIM, MAX_ROWS
from mtl_bench.validation import check_choice, check_int, check_number, fail

NAME = "recsim"
BEHAVIOURS = ("click", "conversion", "like")
POLICIES = ("random", "popularity", "model")
MODEL_CANDIDATES = 20
TASKS: tuple[Task, ...] = tuple(
    Task(name=b, label=b, kind="binary", depends_on="click" if b == "conversion" else "") for b in BEHAVIOURS
)
NUMERIC_COLUMNS: tuple[str, ...] = ("position", "hour_sin", "hour_cos", "log_popularity", "activity")
# Categorical feature -> (column of the simulator's frames, parameter counting its values).
CATEGORICAL_COLUMNS: dict[str, tuple[str, str]] = {
    "user_id": ("user", "users"),
    "item_id": ("item", "items"),
    "category": ("category", "categories"),
    "scenario": ("scenario", "scenarios"),  # a feature only with scenarios > 1
}
META_COLUMNS: tuple[str, ...] = ("day", "cohort", "user", "holdout", "uniform")
LOGGING_WARMUP_DAYS = 3
DEFAULTS: dict[str, Any] = {
    "relatedness": 0.5,
    "users": 500,
    "items": 300,
    "categories": 12,
    "latent_dim": 8,
    "days": 12,
    "impressions_per_day": 8000,
    "scenarios": 1,
    "scenario_similarity": 0.5,
    "cohorts": 4,
    "drift": 0.2,
    "policy": "popularity",
    "popularity_skew": 1.0,
    "validation_days": 1,
    "test_days": 1,
    "holdout_cohort": -1,
    "holdout_day": 0,
    "uniform_rows_per_day": 0,
}


@dataclasses.dataclass(frozen=True)
class World:
    """The simulated log: one row per impression, with the true scores and probabilities."""

    log: pd.DataFrame
    params: dict[str, Any]


class Simulator:
    """The world, day by day: the state behind :func:`simulate`, for experiments that choose what is shown.

    ``Simulator(seed, **params)`` draws users, items, categories and the
    behaviour functions; :meth:`next_day` applies a day's interest drift;
    :meth:`requests` draws a day's impression slots (user, scenario,
    position, hour); :meth:`logging_items` fills them with the logging policy;
    :meth:`outcomes` draws the behaviours of any (slot, item) pairs.
    """

    def __init__(self, seed: int = 0, **params: Any) -> None:
        p = _check({**DEFAULTS, **params})
        self.params = p
        d = p["latent_dim"]
        rng_world, self._rng_drift, self._rng_log, self._rng_labels = np.random.default_rng(seed).spawn(4)
        n_blocks = 1 + len(BEHAVIOURS) * (1 + (p["scenarios"] if p["scenarios"] > 1 else 0))
        # Block 0 is shared; block 1 + b is behaviour b's; then one block per (behaviour, scenario).
        category_blocks = rng_world.standard_normal((n_blocks, p["categories"], d))
        self.item_category = rng_world.integers(0, p["categories"], p["items"])
        self.item_blocks = np.sqrt(0.5) * category_blocks[:, self.item_category] + np.sqrt(0.5) * rng_world.standard_normal(
            (n_blocks, p["items"], d))
        self.user_blocks = rng_world.standard_normal((n_blocks, p["users"], d))
        self.activity = rng_world.lognormal(0.0, 0.5, p["users"])
        rank = rng_world.permutation(p["items"]) + 1
        popularity = rank.astype(np.float64) ** -p["popularity_skew"]
        self.popularity = popularity / popularity.sum()
        self.scenario_bias = rng_world.normal(0.0, 0.5, max(p["scenarios"], 1)) if p["scenarios"] > 1 else np.zeros(1)
        self.cohort = np.arange(p["users"]) % p["cohorts"]
        rate = p["drift"] * self.cohort / max(p["cohorts"] - 1, 1)
        if p["holdout_cohort"] >= 0:
            rate = np.where(self.cohort == p["holdout_cohort"], 0.0, rate)
        self.rate = rate
        self.day = 0
        self._logging_model: tuple[np.ndarray, np.ndarray] | None = None
        self._rng_policy = np.random.default_rng(seed).spawn(5)[4]  # children 0-3 are the streams above

    def next_day(self) -> None:
        """Moves to the next day: every cohort's interests drift at its rate."""
        noise = self._rng_drift.standard_normal(self.user_blocks.shape)
        self.user_blocks = np.sqrt(1 - self.rate**2)[None, :, None] * self.user_blocks + self.rate[None, :, None] * noise
        self.day += 1

    def requests(self, n: int) -> dict[str, np.ndarray]:
        """``n`` impression slots of the current day: ``user, scenario, position, hour``."""
        p = self.params
        users = self._rng_log.integers(0, p["users"], n)
        return {"user": users, "scenario": self._rng_log.integers(0, max(p["scenarios"], 1), n),
                "position": self._rng_log.integers(1, 6, n), "hour": self._rng_log.integers(0, 24, n)}

    def logging_items(self, n: int, policy: str | None = None, k: int = 1, users: np.ndarray | None = None) -> np.ndarray:
        """``(n,)`` items (``(n, k)`` candidates when ``k > 1``) drawn by a logging policy (default the world's).

        The ``model`` policy needs the slots' ``users`` and gives one item per slot.
        """
        policy = policy or self.params["policy"]
        size = (n, k) if k > 1 else n
        if policy == "random":
            return self._rng_log.integers(0, self.params["items"], size)
        if policy == "popularity":
            return self._rng_log.choice(self.params["items"], size, p=self.popularity)
        if users is None or k != 1:
            raise ValueError("Simulator: the model policy picks one item per slot and needs the slots' users")
        candidates = self._rng_log.choice(self.params["items"], (n, MODEL_CANDIDATES), p=self.popularity)
        score = self.logging_scores(users, candidates)
        prob = np.exp(score - score.max(axis=1, keepdims=True))
        prob /= prob.sum(axis=1, keepdims=True)
        pick = (prob.cumsum(axis=1) > self._rng_policy.random(n)[:, None]).argmax(axis=1)
        return candidates[np.arange(n), pick]

    def logging_model(self) -> tuple[np.ndarray, np.ndarray]:
        """The ``model`` policy's logit effects: ``(users × categories, items)`` arrays (fitted on first use).

        A logistic regression of click on one-hot (user, item category) and
        one-hot item, fitted on ``LOGGING_WARMUP_DAYS`` days' worth of
        random-policy impressions from a stream of its own: it learns each
        user's taste per category, the part of the true affinity that items
        inherit from their category.
        """
        if self._logging_model is None:
            from scipy import sparse
            from sklearn.linear_model import LogisticRegression

            p = self.params
            n = LOGGING_WARMUP_DAYS * p["impressions_per_day"]
            rng = np.random.default_rng(self._rng_policy.integers(2**32))
            slots = {"user": rng.integers(0, p["users"], n), "scenario": rng.integers(0, max(p["scenarios"], 1), n),
                     "position": rng.integers(1, 6, n), "hour": rng.integers(0, 24, n)}
            items = rng.integers(0, p["items"], n)
            clicks = self.outcomes(slots, items, rng=rng)["click"].to_numpy()
            rows = np.arange(n)
            pair = slots["user"] * p["categories"] + self.item_category[items]
            n_pairs = p["users"] * p["categories"]
            x = sparse.hstack([
                sparse.csr_matrix((np.ones(n), (rows, pair)), shape=(n, n_pairs)),
                sparse.csr_matrix((np.ones(n), (rows, items)), shape=(n, p["items"])),
            ]).tocsr()
            coef = LogisticRegression(C=1.0, max_iter=300).fit(x, clicks).coef_.ravel()
            self._logging_model = (coef[:n_pairs].reshape(p["users"], p["categories"]), coef[n_pairs:])
        return self._logging_model

    def logging_scores(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The ``model`` policy's logit (up to a constant) of ``users[i]`` clicking ``items[i, ...]``."""
        taste, item_effect = self.logging_model()
        users = np.asarray(users).reshape(-1, *([1] * (np.ndim(items) - 1)))
        return taste[users, self.item_category[items]] + item_effect[items]

    def outcomes(self, slots: dict[str, np.ndarray], items: np.ndarray, rng: np.random.Generator | None = None) -> pd.DataFrame:
        """The impressions of ``items`` in ``slots``: true scores, probabilities and drawn behaviours.

        ``rng`` draws the behaviours instead of the world's label stream.
        """
        p, d = self.params, self.params["latent_dim"]
        users, scenario, position = slots["user"], slots["scenario"], slots["position"]
        n = len(users)
        dot = lambda k: np.einsum("nd,nd->n", self.user_blocks[k, users], self.item_blocks[k, items]) / np.sqrt(d)  # noqa: E731
        shared = dot(0)
        row = {"day": np.full(n, self.day), "scenario": scenario, "user": users, "cohort": self.cohort[users],
               "item": items, "category": self.item_category[items], "position": position, "hour": slots["hour"],
               "activity": self.activity[users], "popularity": self.popularity[items]}
        r = p["relatedness"]
        for b, name in enumerate(BEHAVIOURS):
            own = dot(1 + b)
            if p["scenarios"] > 1:
                base = 1 + len(BEHAVIOURS) + b * p["scenarios"]
                per_scenario = np.stack([dot(base + s) for s in range(p["scenarios"])])[scenario, np.arange(n)]
                g = p["scenario_similarity"]
                own = np.sqrt(g) * own + np.sqrt(1 - g) * per_scenario
            row[f"score_{name}"] = np.sqrt(r) * shared + np.sqrt(1 - r) * own
        logit = {
            "click": -1.0 + 1.5 * row["score_click"] - 0.25 * (position - 1) + 0.3 * np.log(self.activity[users])
            + self.scenario_bias[scenario],
            "conversion": -1.0 + 1.5 * row["score_conversion"],
            "like": -1.5 + 1.5 * row["score_like"],
        }
        for name in BEHAVIOURS:
            row[f"p_{name}"] = 1.0 / (1.0 + np.exp(-logit[name]))
        draws = (rng or self._rng_labels).random((len(BEHAVIOURS), n))
        click = draws[0] < row["p_click"]
        row["click"] = click.astype(np.int8)
        row["conversion"] = (click & (draws[1] < row["p_conversion"])).astype(np.int8)
        row["like"] = (draws[2] < row["p_like"]).astype(np.int8)
        frame = pd.DataFrame(row)
        frame["holdout"] = ((frame["cohort"] == p["holdout_cohort"]) & (frame["day"] >= p["holdout_day"])).astype(np.int8)
        return frame


class Encoder:
    """Simulator impressions -> model features under one fixed feature spec: the suite's features.

    It reads frames of :meth:`Simulator.outcomes` and :func:`simulate` (columns ``user, item, category,
    scenario, position, hour, popularity, activity``) and gives the numeric features
    :data:`NUMERIC_COLUMNS` (raw; the model normalises them with the spec's statistics) and the categorical
    features of :data:`CATEGORICAL_COLUMNS` (``scenario`` only with ``scenarios > 1``). It is fitted one of
    two ways, which give different numbers, so each caller keeps its own:

    * :meth:`fit_vocabulary` (the suite, :func:`load`): the convention of every suite
      (:mod:`~mtl_bench.tasks._common`): ids from vocabularies of the fitted rows, unseen values get 0;
      statistics computed in float64 on the raw values.
    * :meth:`fit_raw_ids` (the policy experiment): id = index + 1 for every user, item, category and
      scenario of the world, so that an item the fitted rows never showed, which an on-policy arm may show
      later, has an embedding row of its own; statistics of the float32 features.

    Args:
        spec: The feature spec the features follow.
        vocabularies: Categorical feature -> its values in id order (ids from 1); ``None`` for raw ids.
    """

    def __init__(self, spec: FeatureSpec, vocabularies: Mapping[str, Sequence[str]] | None = None) -> None:
        self.spec = spec
        self.vocabularies = None if vocabularies is None else {k: list(v) for k, v in vocabularies.items()}

    @property
    def tasks(self) -> tuple[Task, ...]:
        """One binary task per behaviour."""
        return TASKS

    @classmethod
    def fit_vocabulary(
        cls, frame: pd.DataFrame, params: Mapping[str, Any], rows: np.ndarray | None = None
    ) -> Encoder:
        """Vocabularies and numeric statistics fitted on ``rows`` of ``frame`` (default all), as every suite's.

        Args:
            frame: Impressions.
            params: The world's parameters (``Simulator.params``).
            rows: Positions of the rows to fit on (the training rows).
        """
        names = _categorical_features(params)
        fitted = slice(None) if rows is None else np.asarray(rows)
        mean, std = _common.fit_numeric(_numeric_values(frame)[fitted])
        vocabularies = {}
        for name in names:
            values = _common.as_category_strings(frame[CATEGORICAL_COLUMNS[name][0]])
            vocabularies[name] = _common.build_vocabulary(values.iloc[fitted])
        spec = FeatureSpec(
            numeric=NUMERIC_COLUMNS,
            numeric_mean=tuple(float(m) for m in mean),
            numeric_std=tuple(float(s) for s in std),
            categorical=names,
            vocabulary_sizes=tuple(len(v) + 1 for v in vocabularies.values()),
        )
        return cls(spec, vocabularies)

    @classmethod
    def fit_raw_ids(cls, frame: pd.DataFrame, params: Mapping[str, Any]) -> Encoder:
        """Raw ids over the whole world; numeric statistics of ``frame``'s float32 features."""
        names = _categorical_features(params)
        numeric = _numeric_values(frame).astype(np.float32)
        spec = FeatureSpec(
            numeric=NUMERIC_COLUMNS,
            numeric_mean=tuple(float(m) for m in numeric.mean(axis=0)),
            numeric_std=tuple(float(s) if s > _common.STD_FLOOR else 1.0 for s in numeric.std(axis=0)),
            categorical=names,
            vocabulary_sizes=tuple(params[CATEGORICAL_COLUMNS[name][1]] + 1 for name in names),
        )
        return cls(spec)

    def features(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """The feature dict of ``frame``'s rows (see :mod:`mtl_bench.spec`)."""
        ids = []
        for name in self.spec.categorical:
            values = frame[CATEGORICAL_COLUMNS[name][0]]
            if self.vocabularies is None:
                ids.append(values + 1)
            else:
                ids.append(_common.encode_categorical(values, self.vocabularies[name]))
        return {
            NUMERIC: _numeric_values(frame).astype(np.float32),
            CATEGORICAL: np.column_stack(ids).astype(np.int32),
        }

    def split(self, frame: pd.DataFrame) -> Split:
        """``frame``'s rows as a split: features, one label per behaviour, and the :data:`META_COLUMNS` it has."""
        return Split(
            self.features(frame),
            {b: frame[b].to_numpy(np.float32) for b in BEHAVIOURS},
            {k: frame[k].to_numpy(np.int32) for k in META_COLUMNS if k in frame.columns},
        )


def _categorical_features(params: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(name for name in CATEGORICAL_COLUMNS if name != "scenario" or params["scenarios"] > 1)


def _numeric_values(frame: pd.DataFrame) -> np.ndarray:
    """``(n, len(NUMERIC_COLUMNS))`` float64 values."""
    hour = frame["hour"].to_numpy(np.float64)
    return np.column_stack([
        frame["position"].to_numpy(np.float64),
        np.sin(2 * np.pi * hour / 24),
        np.cos(2 * np.pi * hour / 24),
        np.log(frame["popularity"].to_numpy()),
        frame["activity"].to_numpy(),
    ])


def simulate(seed: int = 0, **params: Any) -> World:
    """Draws the world and its impression log under the logging policy (see the module docstring).

    Args:
        seed: Seed of every draw; each component has its own spawned stream.
        **params: Any key of :data:`DEFAULTS`.

    Returns:
        The log with columns ``day, scenario, user, cohort, item, category,
        position, hour, activity, popularity, score_<b>, p_<b>`` and one 0/1
        column per behaviour, plus ``holdout`` and ``uniform``.
    """
    sim = Simulator(seed, **params)
    frames = []
    for day in range(sim.params["days"]):
        if day > 0:
            sim.next_day()
        slots = sim.requests(sim.params["impressions_per_day"])
        frames.append(sim.outcomes(slots, sim.logging_items(len(slots["user"]), users=slots["user"])).assign(uniform=0))
        extra = sim.params["uniform_rows_per_day"]
        if extra:
            frames.append(sim.outcomes(sim.requests(extra), sim.logging_items(extra, "random")).assign(uniform=1))
    log = pd.concat(frames, ignore_index=True)
    log["uniform"] = log["uniform"].astype(np.int8)
    return World(log, sim.params)


def load(
    *,
    seed: int = 0,
    relatedness: float = 0.5,
    users: int = 500,
    items: int = 300,
    categories: int = 12,
    latent_dim: int = 8,
    days: int = 12,
    impressions_per_day: int = 8000,
    scenarios: int = 1,
    scenario_similarity: float = 0.5,
    cohorts: int = 4,
    drift: float = 0.2,
    policy: str = "popularity",
    popularity_skew: float = 1.0,
    validation_days: int = 1,
    test_days: int = 1,
    holdout_cohort: int = -1,
    holdout_day: int = 0,
    uniform_rows_per_day: int = 0,
) -> SuiteData:
    """The simulator as a suite (see the module docstring).

    Returns:
        The suite; ``variant`` is ``{"relatedness": r}`` plus every parameter that
        differs from its default.

    Raises:
        UserInputError: For any invalid parameter.
    """
    params = {k: v for k, v in locals().items() if k != "seed"}
    world = simulate(seed, **params)
    log, p = world.log, world.params
    day = log["day"].to_numpy()
    first_validation = p["days"] - p["test_days"] - p["validation_days"]
    rng = np.random.default_rng([seed, 1])
    train_idx = rng.permutation(np.flatnonzero(day < first_validation))
    val_idx = rng.permutation(np.flatnonzero((day >= first_validation) & (day < p["days"] - p["test_days"])))
    test_idx = rng.permutation(np.flatnonzero(day >= p["days"] - p["test_days"]))
    variant = {"relatedness": p["relatedness"]}
    variant.update({k: v for k, v in p.items() if k != "relatedness" and v != DEFAULTS[k]})
    notes = [
        f"recsim: train days 0-{first_validation - 1}, validation days {first_validation}-"
        f"{p['days'] - p['test_days'] - 1}, test days {p['days'] - p['test_days']}-{p['days'] - 1}; "
        "conversion = click and post-click conversion (ESMM)",
    ]
    if p["holdout_cohort"] >= 0:
        notes.append(f"recsim: cohort {p['holdout_cohort']} held out of training from day {p['holdout_day']}, "
                     "its interest drift switched off")
    encoder = Encoder.fit_vocabulary(log, p, rows=train_idx)
    rows = encoder.split(log)
    return SuiteData(
        name=NAME,
        variant=variant,
        features=encoder.spec,
        tasks=encoder.tasks,
        train=rows.take(train_idx),
        validation=rows.take(val_idx),
        test=rows.take(test_idx),
        notes=tuple(notes),
    )


def _check(p: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(p) - set(DEFAULTS))
    if unknown:
        raise UserInputError(f"recsim has no parameter(s) {unknown}; valid parameters: {sorted(DEFAULTS)}")
    out = dict(p)
    for name in ("users", "items", "categories", "impressions_per_day"):
        out[name] = check_int(NAME, name, p[name], 1, MAX_ROWS)
    for name in ("latent_dim", "cohorts", "scenarios"):
        out[name] = check_int(NAME, name, p[name], 1, MAX_DIM)
    out["days"] = check_int(NAME, "days", p["days"], 3, MAX_DIM)
    for name in ("validation_days", "test_days"):
        out[name] = check_int(NAME, name, p[name], 1, MAX_DIM)
    if out["validation_days"] + out["test_days"] >= out["days"]:
        raise UserInputError(
            f"recsim needs training days: validation_days + test_days must be < days. "
            f"Received: days={out['days']}, validation_days={out['validation_days']}, test_days={out['test_days']}"
        )
    for name in ("relatedness", "scenario_similarity", "drift"):
        out[name] = check_number(NAME, name, p[name], 0.0, 1.0)
    out["popularity_skew"] = check_number(NAME, "popularity_skew", p["popularity_skew"], 0.0)
    check_choice(NAME, "policy", p["policy"], POLICIES)
    out["holdout_cohort"] = check_int(NAME, "holdout_cohort", p["holdout_cohort"], -1)
    if out["holdout_cohort"] >= out["cohorts"]:
        raise fail(NAME, "holdout_cohort", f"-1 (none) or a cohort in [0, {out['cohorts'] - 1}]", p["holdout_cohort"])
    out["holdout_day"] = check_int(NAME, "holdout_day", p["holdout_day"], 0)
    out["uniform_rows_per_day"] = check_int(NAME, "uniform_rows_per_day", p["uniform_rows_per_day"], 0, MAX_ROWS)
    if out["holdout_cohort"] >= 0 and out["cohorts"] < 2:
        raise fail(NAME, "cohorts", "an integer >= 2 with a held-out cohort (others must keep training)", p["cohorts"])
    return out
