"""Helpers every suite needs: seeded splits, train-only preprocessing, suite assembly.

Conventions shared by all suites:

* Numeric features are stored raw; :func:`fit_numeric` computes the training
  split's mean and population standard deviation (``ddof=0``). A standard
  deviation below :data:`STD_FLOOR` (a constant column) is replaced by ``1.0`` so
  that normalising never divides by zero and unseen values stay finite.
* Categorical vocabularies are built on the training split only. Ids start at 1
  in order of descending training frequency, ties broken by the sorted string
  value; id 0 is "unknown": a value unseen in training, dropped by
  ``max_vocabulary`` / ``min_count``, or missing (NaN).
* Rows of every split are in a seeded random order, so taking the first ``n``
  rows of a split (the engine's ``max_train_rows`` / ``max_eval_rows``) is a
  random subset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mtl_bench.errors import UserInputError
from mtl_bench.spec import CATEGORICAL, NUMERIC, FeatureSpec, Split, SuiteData, Task

STD_FLOOR = 1e-6

# Upper bounds of the generated suites' sizes (checked with mtl_bench.validation). They catch a typo — an
# extra zero or three — before a run allocates the data, not every combination of sizes that outgrows memory.
MAX_ROWS = 10_000_000
"""Rows of a split, impressions of a day, users, items, categories."""
MAX_DIM = 4096
"""Input and latent dimensions, sine terms, periods, days, scenarios, cohorts."""


def fit_numeric(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each column of ``train`` (ignoring NaN); std < floor becomes 1."""
    train = np.asarray(train, dtype=np.float64)
    if train.shape[0] == 0:
        raise ValueError("fit_numeric: the training split is empty")
    with np.errstate(all="ignore"):
        mean = np.nanmean(train, axis=0)
        std = np.nanstd(train, axis=0)
    std = np.where(np.isfinite(std) & (std >= STD_FLOOR), std, 1.0)
    return mean, std


def build_vocabulary(
    train_values: Sequence[Any] | pd.Series,
    *,
    max_vocabulary: int | None = None,
    min_count: int = 1,
) -> list[str]:
    """The training vocabulary of one column: values in id order (the value at position ``i`` gets id ``i + 1``).

    Values are compared as strings; missing values (NaN/None) are never in the vocabulary.
    """
    series = as_category_strings(train_values)
    counts = series.value_counts(dropna=True)
    counts = counts[counts >= max(int(min_count), 1)]
    order = sorted(counts.items(), key=lambda kv: (-int(kv[1]), kv[0]))
    if max_vocabulary is not None:
        order = order[: int(max_vocabulary)]
    return [value for value, _ in order]


def as_category_strings(values: Sequence[Any] | pd.Series) -> pd.Series:
    """``values`` as a string series, NaN kept as NaN."""
    series = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
    series = series.reset_index(drop=True)
    mask = series.isna().to_numpy()
    out = series.astype(str).astype(object)
    out[mask] = np.nan
    return out


def encode_categorical(values: Sequence[Any] | pd.Series, vocabulary: Sequence[str]) -> np.ndarray:
    """Ids of ``values`` under ``vocabulary`` (int32); unseen or missing values get 0."""
    series = as_category_strings(values)
    index = pd.Index(list(vocabulary), dtype=object)
    ids = index.get_indexer(series.to_numpy(dtype=object)) + 1  # -1 (not found) -> 0
    return ids.astype(np.int32)


def random_split(
    n: int, validation: float, test: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded random train/validation/test row indices (each in random order).

    The test split gets ``round(test * n)`` rows, the validation split
    ``round(validation * n)`` rows and the training split the rest.
    """
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(test * n))
    n_val = int(round(validation * n))
    return perm[n_test + n_val :], perm[n_test : n_test + n_val], perm[:n_test]


def assemble(
    *,
    name: str,
    variant: Mapping[str, Any],
    tasks: Sequence[Task],
    labels: Mapping[str, np.ndarray],
    splits: tuple[np.ndarray, np.ndarray, np.ndarray],
    numeric: Mapping[str, np.ndarray] | None = None,
    categorical: Mapping[str, Sequence[Any] | pd.Series] | None = None,
    max_vocabulary: int | None = None,
    min_count: int = 1,
    notes: Sequence[str] = (),
    source: str = "",
    meta: Mapping[str, np.ndarray] | None = None,
) -> SuiteData:
    """Fits the feature spec on the training rows and cuts features and labels into the three splits.

    Args:
        numeric: Column name -> float values over all rows (NaN allowed: filled with
            the training mean, which is also the value the model normalises to 0).
        categorical: Column name -> raw values over all rows (compared as strings).
        splits: Row indices of train, validation and test.
        source: Name of the data (file) used in error messages.
        meta: Per-row arrays over all rows that models never see (see :class:`~mtl_bench.spec.Split`).
    """
    numeric = dict(numeric or {})
    categorical = dict(categorical or {})
    train_idx, val_idx, test_idx = (np.asarray(s, dtype=np.int64) for s in splits)
    for split_name, idx in zip(("train", "validation", "test"), (train_idx, val_idx, test_idx)):
        if len(idx) == 0:
            raise UserInputError(
                f"{source or name}: the {split_name} split is empty; use more rows or larger split fractions"
            )

    features: dict[str, np.ndarray] = {}
    spec_kwargs: dict[str, Any] = {}
    if numeric:
        matrix = np.column_stack([np.asarray(v, dtype=np.float64) for v in numeric.values()])
        train_part = matrix[train_idx]
        empty = [c for c, j in zip(numeric, range(matrix.shape[1])) if np.isnan(train_part[:, j]).all()]
        if empty:
            raise UserInputError(
                f"{source or name}: numeric column {empty[0]!r} has no value in the training split"
            )
        mean, std = fit_numeric(train_part)
        nan = np.isnan(matrix)
        if nan.any():
            matrix = np.where(nan, mean[None, :], matrix)
        features[NUMERIC] = matrix.astype(np.float32)
        spec_kwargs.update(
            numeric=tuple(numeric),
            numeric_mean=tuple(float(m) for m in mean),
            numeric_std=tuple(float(s) for s in std),
        )
    if categorical:
        columns, sizes = [], []
        for column, values in categorical.items():
            series = as_category_strings(values)
            vocab = build_vocabulary(series.iloc[train_idx], max_vocabulary=max_vocabulary, min_count=min_count)
            if not vocab:
                raise UserInputError(
                    f"{source or name}: categorical column {column!r} has no value in the training split "
                    f"(with min_count={min_count})"
                )
            columns.append(encode_categorical(series, vocab))
            sizes.append(len(vocab) + 1)
        features[CATEGORICAL] = np.column_stack(columns).astype(np.int32)
        spec_kwargs.update(categorical=tuple(categorical), vocabulary_sizes=tuple(sizes))
    spec = FeatureSpec(**spec_kwargs)

    labels = {k: np.asarray(v, dtype=np.float32) for k, v in labels.items()}
    meta = {k: np.asarray(v) for k, v in (meta or {}).items()}

    def cut(idx: np.ndarray) -> Split:
        return Split(
            {k: v[idx] for k, v in features.items()},
            {k: v[idx] for k, v in labels.items()},
            {k: v[idx] for k, v in meta.items()},
        )

    return SuiteData(
        name=name,
        variant=dict(variant),
        features=spec,
        tasks=tuple(tasks),
        train=cut(train_idx),
        validation=cut(val_idx),
        test=cut(test_idx),
        notes=tuple(notes),
    )
