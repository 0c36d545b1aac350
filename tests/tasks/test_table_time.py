"""The table suite with time: periods, splits by time, cohorts, the held-out cohort, bad input."""

import numpy as np
import pandas as pd
import pytest

from mtl_bench.errors import UserInputError
from mtl_bench.tasks import table

DAYS = 8
PER_DAY = 60
T0 = 1_700_006_400  # 2023-11-15 00:00:00 UTC, a day boundary

TOML = """
[data]
path = "logs.csv"
[features]
numeric = ["row", "price"]
categorical = ["user"]
[tasks.click]
label = "clicked"
kind = "binary"
[tasks.dwell]
label = "dwell"
kind = "regression"
[time]
column = "ts"
[cohorts]
column = "group"
"""


def _frame(days=DAYS, per_day=PER_DAY):
    rng = np.random.default_rng(0)
    n = days * per_day
    day = np.repeat(np.arange(days), per_day)
    return pd.DataFrame({
        "row": np.arange(n),
        "ts": T0 + day * 86_400 + rng.integers(0, 86_400, n),
        "price": rng.normal(size=n).round(3),
        "user": rng.integers(0, 30, n),
        # sizes: a 50%, b 30%, c 20% of every day
        "group": np.tile(np.repeat(["a", "b", "c"], [per_day // 2, per_day * 3 // 10, per_day // 5]), days),
        "clicked": np.tile([0, 1], n // 2),
        "dwell": rng.gamma(2.0, 1.0, n).round(3),
    })


def _load(tmp_path, toml=TOML, frame=None, **params):
    (frame if frame is not None else _frame()).to_csv(tmp_path / "logs.csv", index=False)
    (tmp_path / "logs.toml").write_text(toml)
    return table.load(table=str(tmp_path / "logs.toml"), **params)


def _rows(split):
    return split.features["numeric"][:, 0].astype(int)


def test_split_by_time_has_no_future_rows_in_training(tmp_path):
    frame = _frame()
    data = _load(tmp_path, frame=frame)
    expected_day = ((frame.ts - T0) // 86_400).to_numpy()
    for name, days in (("train", range(0, 6)), ("validation", [6]), ("test", [7])):
        split = getattr(data, name)
        rows = _rows(split)
        assert sorted(rows) == sorted(np.flatnonzero(np.isin(expected_day, list(days))))
        np.testing.assert_array_equal(split.meta["day"], expected_day[rows])
    assert data.train.meta["day"].max() < data.validation.meta["day"].min() <= data.test.meta["day"].min()
    # Cohort ids by descending size: a (largest) = 0, b = 1, c = 2.
    cohort = data.train.meta["cohort"]
    np.testing.assert_array_equal(cohort, frame.group.map({"a": 0, "b": 1, "c": 2}).to_numpy()[_rows(data.train)])
    assert "holdout" not in data.train.meta
    assert any("split by time" in n and "0 = 'a'" in n for n in data.notes)


def test_iso_dates_weeks_and_hash_cohorts(tmp_path):
    frame = _frame(days=28, per_day=10)
    frame["ts"] = pd.to_datetime(frame.ts, unit="s", utc=True).dt.strftime("%Y-%m-%d")
    toml = TOML.replace('column = "ts"', 'column = "ts"\nunit = "week"').replace(
        'column = "group"', 'hash = "user"\ncount = 3')
    data = _load(tmp_path, toml, frame)
    # 2023-11-15 is a Wednesday; weeks are counted from the unix epoch (a Thursday): 1-day first week.
    stamp = ((pd.to_datetime(frame.ts) - pd.Timestamp(0)).dt.total_seconds()).astype(int)
    expected = (stamp // (7 * 86_400) - stamp.min() // (7 * 86_400)).to_numpy()
    rows = _rows(data.test)
    np.testing.assert_array_equal(data.test.meta["day"], expected[rows])
    import zlib

    bucket = frame.user.astype(str).map(lambda u: zlib.crc32(u.encode()) % 3)
    sizes = bucket.value_counts()
    order = sorted(sizes.index, key=lambda b: (-sizes[b], f"hash{b}"))
    ids = bucket.map({b: i for i, b in enumerate(order)}).to_numpy()
    np.testing.assert_array_equal(data.test.meta["cohort"], ids[rows])


def test_held_out_cohort(tmp_path):
    frame = _frame()
    data = _load(tmp_path, frame=frame, holdout_cohort=1, holdout_day=3)
    for name in ("train", "validation", "test"):
        split = getattr(data, name)
        rows = _rows(split)
        expected = (frame.group.to_numpy()[rows] == "b") & (split.meta["day"] >= 3)
        np.testing.assert_array_equal(split.meta["holdout"] == 1, expected)
    assert any("held out" in n and "control: cohort 0 ('a'" in n for n in data.notes)


@pytest.mark.parametrize(
    "change, params, fragments",
    [
        (lambda f: f.assign(ts=f.ts.astype(str).where(f.row != 5, "yesterday")), {}, ["'ts'", "'yesterday'"]),
        (lambda f: f[f.ts < T0 + 3 * 86_400], {}, ["3 period", "at least 4"]),
        (lambda f: f.assign(group="a"), {}, ["'group'", "single cohort"]),
        (lambda f: f[~((f.group == "c") & (f.ts >= T0 + 4 * 86_400) & (f.ts < T0 + 5 * 86_400))],
         {"holdout_cohort": 2, "holdout_day": 3}, ["cohort 2", "'c'", "period 4"]),
        (lambda f: f[(f.ts < T0 + 2 * 86_400) | (f.ts >= T0 + 3 * 86_400)], {}, ["period 2 has no rows"]),
        (lambda f: f, {"holdout_cohort": 5, "holdout_day": 3}, ["holdout_cohort", "[0, 2]"]),
        (lambda f: f, {"holdout_cohort": 1, "holdout_day": 6}, ["holdout_day", "[1, 5]"]),
    ],
    ids=["time_does_not_parse", "too_few_periods", "one_cohort", "holdout_without_rows", "empty_period",
         "bad_cohort", "bad_day"],
)
def test_bad_input(tmp_path, change, params, fragments):
    with pytest.raises(UserInputError) as info:
        _load(tmp_path, frame=change(_frame()), **params)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize(
    "old, new, fragment",
    [
        ('column = "ts"', 'column = "ts"\nunit = "month"', "time.unit"),
        ('column = "ts"', 'column = "when"', "'when'"),
        ("[cohorts]", '[split]\ncolumn = "row"\n[cohorts]', "cannot be combined with [time]"),
        ("[time]\ncolumn = \"ts\"\n", "", "[cohorts] needs a [time]"),
        ('column = "group"', 'column = "group"\ncount = 2', "cohorts.count"),
    ],
)
def test_bad_description(tmp_path, old, new, fragment):
    with pytest.raises(UserInputError, match=None) as info:
        _load(tmp_path, TOML.replace(old, new, 1))
    assert fragment in str(info.value), str(info.value)


def test_holdout_needs_cohorts(tmp_path):
    with pytest.raises(UserInputError, match="holdout_cohort needs"):
        _load(tmp_path, TOML.split("[cohorts]")[0], holdout_cohort=1, holdout_day=3)


def test_cohort_experiment_defaults_on_a_table(tmp_path):
    from mtl_bench.config import RunConfig
    from mtl_bench.experiments import cohort

    _load(tmp_path)
    config = RunConfig(suite="table", suite_params={"table": str(tmp_path / "logs.toml")}, archs=["mmoe"],
                       regimes=["daily"], experiment="cohort")
    # Train periods 0-5; pre-training takes half of them (0-2), so cohort 1 leaves training on period 3.
    assert cohort.adapt(config).suite_params == {**config.suite_params, "holdout_cohort": 1, "holdout_day": 3}
    config = RunConfig(suite="table", suite_params={"table": str(tmp_path / "logs.toml")}, archs=["mmoe"],
                       regimes=["daily"], experiment="cohort", pretrain_days=1)
    assert cohort.adapt(config).suite_params["holdout_day"] == 1


@pytest.mark.slow
def test_daily_regime_and_cohort_experiment_run_on_a_table(tmp_path):
    from mtl_bench import cli

    _load(tmp_path)
    out = tmp_path / "run"
    code = cli.main(["run", "--suite", "table", "--table", str(tmp_path / "logs.toml"), "--experiment", "cohort",
                     "--regime", "daily", "--arch", "shared_bottom", "--epochs", "1", "--seeds", "1", "--jobs", "1",
                     "--out", str(out), "--quiet"])
    assert code == 0
    forgetting = pd.read_csv(out / "cohort_forgetting.csv")
    held = forgetting[forgetting.heldout.astype(str) == "True"]
    assert set(held.cohort.astype(str)) == {"1"} and held.day.min() == 3
    assert set(forgetting.day) == {3, 4, 5, 6}  # the day after each phase: pre-training 0-2, then 3, 4, 5
    assert cli.main(["report", str(out)]) == 0
    half_life = pd.read_csv(out / "cohort_half_life.csv")
    assert set(half_life.role) == {"heldout", "control"}
    assert set(half_life[half_life.role == "control"].cohort.astype(str)) == {"0"}


def test_readme_time_example_loads(tmp_path):
    """The README's [time] / [cohorts] / [split] block, added to its table example."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    base = re.search(r"```toml\n(\[data\].*?)```", text, re.S).group(1).split("[split]")[0]
    timed = re.search(r"```toml\n(\[time\].*?)```", text, re.S).group(1)
    (tmp_path / "logs.toml").write_text(base + timed)
    n = 400
    rows = ["price,age,country,device,clicked,dwell_seconds,timestamp,occupation"]
    rows += [f"{i % 7}.5,{20 + i % 50},{'abc'[i % 3]},{'xy'[i % 2]},{'yes' if i % 3 == 0 else 'no'},{i % 11},"
             f"{T0 + (i // 50) * 86_400 + i},{'pq'[i % 2]}" for i in range(n)]
    (tmp_path / "clicks.csv").write_text("\n".join(rows) + "\n")
    data = table.load(table=str(tmp_path / "logs.toml"))
    assert (len(data.train), len(data.validation), len(data.test)) == (300, 50, 50)
    assert set(data.train.meta["cohort"]) == {0, 1}
