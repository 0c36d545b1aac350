"""Time and cohorts of real logs: periods from timestamps, cohorts from a column, splits by time.

What the daily regime and the cohort experiment read from a suite with time (as ``recsim`` provides):
``meta["day"]`` (the period of a row, 0 = the period of the earliest row), ``meta["cohort"]`` (an
integer cohort id) and ``meta["holdout"]`` (1 for the held-out cohort's rows from ``holdout_day`` on,
which no regime trains or selects on but every evaluation reads).

Conventions:

* A period is ``unit`` long (``hour``, ``day`` or ``week``, UTC) and counted from the period of the
  earliest row: ``day = floor(t / unit) - floor(t_min / unit)``.
* Cohort ids are in order of descending row count (ties by the value's string), so cohort 0 is the
  largest; with ``holdout_cohort = 1`` the held-out cohort is the second largest and the control the
  analysis compares it with (the lowest-numbered cohort that keeps training) is the largest.
* Splits by time: the last ``test`` periods are the test split, the ``validation`` periods before
  them the validation split, earlier periods train; no row of a later period trains a model that is
  evaluated on an earlier one. Rows of each split are in a seeded random order.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from mtl_bench.errors import UserInputError

UNITS: dict[str, int] = {"hour": 3600, "day": 86_400, "week": 7 * 86_400}
"""Period unit -> its length in seconds."""


def periods(values: pd.Series, unit: str, column: str, source: str) -> np.ndarray:
    """The period (0, 1, ...) of every row from a time column of unix seconds or ISO dates/datetimes.

    Raises:
        UserInputError: A missing value or a value that parses as neither.
    """
    if unit not in UNITS:
        raise UserInputError(f"{source}: time.unit must be one of {list(UNITS)}. Received: unit={unit!r}")
    if values.isna().any():
        raise UserInputError(f"time column {column!r} in {source} has {int(values.isna().sum())} missing value(s)")
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().all():
        seconds = numbers.to_numpy(dtype=np.float64)
    elif numbers.notna().any():  # unix seconds with a stray text value
        bad = values[numbers.isna()].iloc[0]
        raise UserInputError(f"time column {column!r} in {source} does not parse: {bad!r} is not unix seconds")
    else:
        parsed = pd.to_datetime(values.astype(str), errors="coerce", utc=True, format="ISO8601")
        if parsed.isna().any():
            bad = values[parsed.isna()].iloc[0]
            raise UserInputError(
                f"time column {column!r} in {source} does not parse: {bad!r} is neither unix seconds nor an ISO "
                "date/datetime (e.g. 2024-03-01 or 2024-03-01T12:00:00)"
            )
        seconds = (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()
    if not np.isfinite(seconds).all():
        raise UserInputError(f"time column {column!r} in {source} has infinite values")
    index = np.floor(seconds / UNITS[unit]).astype(np.int64)
    return (index - index.min()).astype(np.int32)


def cohorts(values: pd.Series, column: str, source: str, count: int = 0) -> tuple[np.ndarray, list[str]]:
    """Cohort ids (0 = the largest cohort) and the name of each id.

    Args:
        values: The cohort column, or with ``count`` the column whose values are hashed into cohorts.
        count: 0 for a cohort per value; otherwise ``crc32(str(value)) mod count`` (named ``hash<k>``).

    Raises:
        UserInputError: Missing values, or fewer than two cohorts.
    """
    if values.isna().any():
        raise UserInputError(f"cohort column {column!r} in {source} has {int(values.isna().sum())} missing value(s)")
    text = values.astype(str).to_numpy()
    if count:
        uniq, inverse = np.unique(text, return_inverse=True)
        bucket = np.array([zlib.crc32(u.encode()) % count for u in uniq], dtype=np.int64)[inverse]
        names = np.array([f"hash{b}" for b in bucket], dtype=object)
    else:
        names = text
    sizes = pd.Series(names).value_counts()
    if len(sizes) < 2:
        raise UserInputError(
            f"cohort column {column!r} in {source} has a single cohort ({sizes.index[0]!r}); cohorts need two values or more"
        )
    order = sorted(sizes.items(), key=lambda kv: (-int(kv[1]), str(kv[0])))
    ids = {name: i for i, (name, _) in enumerate(order)}
    return np.array([ids[n] for n in names], dtype=np.int32), [str(name) for name, _ in order]


def time_split(
    day: np.ndarray, validation: int, test: int, seed: int, source: str
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], str]:
    """Train / validation / test row indices by period, and the note that describes them.

    Raises:
        UserInputError: Fewer periods than two of training (pre-training and one daily step) plus
            ``validation`` plus ``test``, or a training period without rows.
    """
    n_periods = int(day.max()) + 1
    needed = 2 + validation + test
    if n_periods < needed:
        raise UserInputError(
            f"{source}: the time column spans {n_periods} period(s); a split by time needs at least {needed} "
            f"(pre-training and one daily step, {validation} validation, {test} test): use a shorter time.unit "
            "or fewer validation/test periods"
        )
    first_validation = n_periods - validation - test
    first_test = n_periods - test
    counts = np.bincount(day, minlength=n_periods)
    empty = [d for d in range(first_validation) if counts[d] == 0]
    if empty:
        raise UserInputError(
            f"{source}: training period {empty[0]} has no rows; the daily regime steps through every period "
            "(use a longer time.unit)"
        )
    rng = np.random.default_rng([seed, 1])
    splits = (
        rng.permutation(np.flatnonzero(day < first_validation)),
        rng.permutation(np.flatnonzero((day >= first_validation) & (day < first_test))),
        rng.permutation(np.flatnonzero(day >= first_test)),
    )
    note = (f"split by time: train periods 0-{first_validation - 1}, validation periods {first_validation}-"
            f"{first_test - 1}, test periods {first_test}-{n_periods - 1}")
    return splits, note


def holdout(
    day: np.ndarray, cohort: np.ndarray, names: Sequence[str], holdout_cohort: int, holdout_day: int,
    train_periods: int, source: str,
) -> tuple[np.ndarray, str]:
    """``meta["holdout"]`` for one held-out cohort and the note that says which (and its control).

    Raises:
        UserInputError: A cohort or day out of range, or a period the daily regime evaluates
            (``holdout_day`` to the first validation period) where the held-out cohort has no rows.
    """
    if not 0 <= holdout_cohort < len(names):
        raise UserInputError(
            f"{source}: holdout_cohort must be -1 (none) or a cohort id in [0, {len(names) - 1}]. "
            f"Received: holdout_cohort={holdout_cohort}"
        )
    if not 1 <= holdout_day < train_periods:
        raise UserInputError(
            f"{source}: holdout_day must be a training period after the first, in [1, {train_periods - 1}]. "
            f"Received: holdout_day={holdout_day}"
        )
    mine = cohort == holdout_cohort
    present = set(day[mine].tolist())
    missing = [d for d in range(holdout_day, train_periods + 1) if d not in present]
    if missing:
        raise UserInputError(
            f"{source}: the held-out cohort {holdout_cohort} ({names[holdout_cohort]!r}) has no rows in period "
            f"{missing[0]}, which the daily regime evaluates; hold out a larger cohort or use a longer time.unit"
        )
    control = 0 if holdout_cohort != 0 else 1
    note = (f"cohort {holdout_cohort} ({names[holdout_cohort]!r}, {int(mine.sum())} rows) held out of training "
            f"from period {holdout_day}; control: cohort {control} ({names[control]!r}, "
            f"{int((cohort == control).sum())} rows), which keeps training. On real logs nothing switches a "
            "cohort's interest drift off: a decay of the held-out cohort beyond the control's is forgetting "
            "plus whatever drift that cohort has and the control has not")
    return (mine & (day >= holdout_day)).astype(np.int8), note
