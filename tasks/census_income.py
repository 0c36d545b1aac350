"""UCI Census-Income (KDD): the MMoE paper's real-data benchmark (Ma et al., KDD 2018, §6.3).

Data: the UCI Census-Income (KDD) files ``census-income.data`` (training split,
199,523 rows) and ``census-income.test`` (test split, 99,762 rows), gzipped or
not; comma-and-space separated, no header, 42 columns (:data:`COLUMNS`).
Lane, T. & Kohavi, R. (2000), Census-Income (KDD), UCI Machine Learning
Repository, CC BY 4.0.

Where the files come from (first match wins):

1. ``data_dir``: the files directly in it or in its ``census-income/`` subfolder;
2. the environment variable ``MTL_BENCH_DATA``: the same two places;
3. otherwise both files are downloaded from UCI with ``keras.utils.get_file``
   into ``<cache_dir or ~/.keras>/datasets/census-income/``.

With a data directory (1, 2) nothing is downloaded; the test split must be
there, the training split is optional. Integrity checks: the gzipped test split
must have sha256 :data:`TEST_SHA256`; an uncompressed test split must have
99,762 rows; a downloaded training split (no published hash) must have 199,523
rows and 42 columns.

Task groups (``group``):

* ``"income"``: ``income`` — income class ``50000+`` (main; base rate 6.20% of the
  test split, 6,186 / 99,762) and ``marital`` — ``marital_stat == "Never married"``
  (auxiliary; 43.25%, 43,143 / 99,762).
* ``"education"``: ``education`` — education at least college (main) and ``marital``.
  "At least college" means having attended college: ``education`` is one of
  :data:`AT_LEAST_COLLEGE` (Some college but no degree, both Associates degrees,
  Bachelors, Masters, Prof school, Doctorate); base rate 33.49% of the test split
  (33,410 / 99,762). Below it: High school graduate and every lower grade, and
  "Children".

In both groups ``education``, ``marital_stat``, ``income_50k`` (the labels) and
``instance_weight`` (a survey weight, not a feature) are removed from the inputs.

Features:

* numeric (:data:`NUMERIC`): age, wage_per_hour, capital_gains, capital_losses,
  stock_dividends, num_emp, weeks_worked. The heavy-tailed money columns
  (:data:`LOG1P`: wage_per_hour, capital_gains, capital_losses, stock_dividends;
  mostly 0 with a long tail up to 99,999) are stored as ``log1p(value)``; their
  names in the feature spec stay the raw column names.
* categorical: every other remaining column, 31 in all, including the coded
  columns det_ind_code, det_occ_code, own_or_self, vet_benefits and year, and
  "?" / "Not in universe" as ordinary values. Vocabularies and numeric mean/std
  are fitted on the training split only; a value unseen in training gets id 0.

Split (``split_seed``; the training ``seed`` never changes the split):

* training split present (the paper's split): train = the UCI training split,
  validation and test = the UCI test split halved 1:1 at random.
* only the test split present: a random, unstratified 60/20/20
  train/validation/test split of the UCI test split (59,858 / 19,952 / 19,952
  rows), the same rows for both groups; ``SuiteData.notes`` says so.

Rows of every split are in a seeded random order. Parsed files are cached in
process per (path, size, mtime), so loading many seeds parses once.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import os
import socket
from pathlib import Path

import numpy as np
import pandas as pd

from mtl_bench.errors import UserInputError
from mtl_bench.spec import SuiteData, Task
from mtl_bench.tasks import _common
from mtl_bench.validation import check_choice, check_int

NAME = "census-income"
ENV_VAR = "MTL_BENCH_DATA"
SUBDIR = "census-income"
BASE_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/census-income-mld/"
TRAIN_FILE = "census-income.data"
TEST_FILE = "census-income.test"
TEST_SHA256 = "5ac4cacd3ca9f1ecb10de1a0a41e4ac68fdc419e3fec190f5c0c6cc03b2ea659"
TRAIN_ROWS = 199_523
TEST_ROWS = 99_762
DOWNLOAD_TIMEOUT = 60.0  # seconds per socket operation, so a dead network fails instead of hanging

COLUMNS: tuple[str, ...] = (
    "age", "class_worker", "det_ind_code", "det_occ_code", "education", "wage_per_hour",
    "hs_college", "marital_stat", "major_ind_code", "major_occ_code", "race", "hisp_origin",
    "sex", "union_member", "unemp_reason", "full_or_part_emp", "capital_gains",
    "capital_losses", "stock_dividends", "tax_filer_stat", "region_prev_res",
    "state_prev_res", "det_hh_fam_stat", "det_hh_summ", "instance_weight", "mig_chg_msa",
    "mig_chg_reg", "mig_move_reg", "mig_same", "mig_prev_sunbelt", "num_emp", "fam_under_18",
    "country_father", "country_mother", "country_self", "citizenship", "own_or_self",
    "vet_question", "vet_benefits", "weeks_worked", "year", "income_50k",
)
NUMERIC: tuple[str, ...] = (
    "age", "wage_per_hour", "capital_gains", "capital_losses", "stock_dividends", "num_emp", "weeks_worked",
)
LOG1P: frozenset[str] = frozenset({"wage_per_hour", "capital_gains", "capital_losses", "stock_dividends"})
REMOVED: tuple[str, ...] = ("education", "marital_stat", "income_50k", "instance_weight")
CATEGORICAL: tuple[str, ...] = tuple(c for c in COLUMNS if c not in NUMERIC and c not in REMOVED)
AT_LEAST_COLLEGE: frozenset[str] = frozenset({
    "Some college but no degree",
    "Associates degree-occup /vocational",
    "Associates degree-academic program",
    "Bachelors degree(BA AB BS)",
    "Masters degree(MA MS MEng MEd MSW MBA)",
    "Prof school degree (MD DDS DVM LLB JD)",
    "Doctorate degree(PhD EdD)",
})
INCOME_CLASSES = ("- 50000", "50000+")
GROUPS: dict[str, tuple[str, str]] = {"income": ("income", "marital"), "education": ("education", "marital")}
TEST_ONLY_FRACTIONS = (0.2, 0.2)  # validation, test


def load(
    *,
    group: str = "income",
    data_dir: str | None = None,
    split_seed: int = 0,
    seed: int = 0,
    cache_dir: str | None = None,
) -> SuiteData:
    """Loads one task group of Census-Income.

    Args:
        group: ``"income"`` (income, marital) or ``"education"`` (education, marital).
        data_dir: Folder holding the UCI files (or a ``census-income/`` subfolder
            with them); default ``$MTL_BENCH_DATA``, else download.
        split_seed: Seed of the random split (see the module docstring).
        seed: The engine's training seed; accepted for the common factory
            signature, it does not change the data or the split.
        cache_dir: Download cache root for ``keras.utils.get_file`` (default ``~/.keras``).

    Returns:
        The suite; ``variant`` is ``{"task_group": group}`` (plus ``split_seed`` when it is not 0).

    Raises:
        UserInputError: Unknown group, missing or corrupt files, failed download.
    """
    check_choice(NAME, "group", group, sorted(GROUPS))
    split_seed = check_int(NAME, "split_seed", split_seed, 0)
    check_int(NAME, "seed", seed, 0)
    train_path, test_path = _locate(data_dir, cache_dir)

    test = _read(test_path)
    if train_path is None:
        n = len(test)
        splits = _common.random_split(n, *TEST_ONLY_FRACTIONS, seed=split_seed)
        frame = test
        notes = (
            f"census-income: only the UCI test split was found ({n:,} rows); it was split at random "
            f"60/20/20 into train/validation/test (split_seed={split_seed}), unlike the MMoE paper, which "
            "trains on the UCI training split and halves the test split into validation and test.",
        )
    else:
        train = _read(train_path)
        frame = pd.concat([train, test], ignore_index=True)
        rng = np.random.default_rng(split_seed)
        train_idx = rng.permutation(len(train))
        rest = len(train) + rng.permutation(len(test))
        half = len(test) // 2
        splits = (train_idx, rest[:half], rest[half:])
        notes = (
            f"census-income: the MMoE paper's split: train = UCI training split ({len(train):,} rows); the UCI "
            f"test split ({len(test):,} rows) halved at random into validation and test (split_seed={split_seed}).",
        )

    main, aux = GROUPS[group]
    labels = {
        "income": (frame["income_50k"] == "50000+").to_numpy(),
        "education": frame["education"].isin(AT_LEAST_COLLEGE).to_numpy(),
        "marital": (frame["marital_stat"] == "Never married").to_numpy(),
    }
    tasks = (Task(name=main, label=main, kind="binary"), Task(name=aux, label=aux, kind="binary"))
    numeric = {c: (np.log1p(frame[c].to_numpy()) if c in LOG1P else frame[c].to_numpy()) for c in NUMERIC}
    # "task_group", not "group": probe.csv already has a "group" column (variable groups).
    variant: dict[str, object] = {"task_group": group}
    if split_seed != 0:
        variant["split_seed"] = split_seed
    return _common.assemble(
        name=NAME,
        variant=variant,
        tasks=tasks,
        labels={t.name: labels[t.name] for t in tasks},
        splits=splits,
        numeric=numeric,
        categorical={c: frame[c] for c in CATEGORICAL},
        notes=notes,
        source=NAME,
    )


def only_test_split_rows(split_seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices (into the UCI test file) of train/validation/test when only the test split is present."""
    return _common.random_split(TEST_ROWS, *TEST_ONLY_FRACTIONS, seed=split_seed)


def _find(folder: Path, stem: str) -> Path | None:
    for base in (folder, folder / SUBDIR):
        for name in (stem + ".gz", stem):
            if (base / name).is_file():
                return base / name
    return None


def _locate(data_dir: str | None, cache_dir: str | None) -> tuple[Path | None, Path]:
    """(training split or None, test split)."""
    source = None
    if data_dir is not None:
        folder, source = Path(data_dir).expanduser(), "data_dir"
    elif os.environ.get(ENV_VAR):
        folder, source = Path(os.environ[ENV_VAR]).expanduser(), f"${ENV_VAR}"
    if source is not None:
        if not folder.is_dir():
            raise UserInputError(f"census-income: {source} {str(folder)!r} is not a directory")
        test_path = _find(folder, TEST_FILE)
        if test_path is None:
            raise UserInputError(
                f"census-income: no {TEST_FILE}[.gz] in {source} {str(folder)!r} or its {SUBDIR}/ subfolder; "
                f"download it from {BASE_URL}"
            )
        _verify_test(test_path)
        return _find(folder, TRAIN_FILE), test_path
    return _download(cache_dir)


def _download(cache_dir: str | None) -> tuple[Path, Path]:
    import keras  # here, so that importing the suites (the command line's checks) loads no TensorFlow

    paths = []
    for stem, file_hash in ((TEST_FILE, TEST_SHA256), (TRAIN_FILE, None)):
        fname = stem + ".gz"
        try:
            with _socket_timeout(DOWNLOAD_TIMEOUT):
                path = keras.utils.get_file(
                    fname=fname,
                    origin=BASE_URL + fname,
                    file_hash=file_hash,
                    cache_subdir=os.path.join("datasets", SUBDIR),
                    cache_dir=cache_dir,
                )
        except Exception as err:  # network errors, hash mismatch after download, ...
            message = " ".join(str(err).split()) or type(err).__name__
            raise UserInputError(
                f"census-income: could not download {BASE_URL + fname} ({message}); download the files by hand "
                f"and pass data_dir= or set ${ENV_VAR}"
            ) from None
        paths.append(Path(path))
    test_path, train_path = paths
    _verify_test(test_path)
    # UCI publishes no checksum of the training split, so check its shape instead:
    # _read checks the 42 columns and the income labels, here the row count.
    rows = len(_read(train_path))
    if rows != TRAIN_ROWS:
        raise UserInputError(
            f"census-income: downloaded {train_path} has {rows:,} rows, expected {TRAIN_ROWS:,}; delete it and retry"
        )
    return train_path, test_path


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _verify_test(path: Path) -> None:
    """The gzipped test split must match the UCI sha256; an uncompressed one must have 99,762 rows."""
    stat = path.stat()
    if path.name.endswith(".gz"):
        digest = _sha256(str(path), stat.st_size, stat.st_mtime_ns)
        if digest != TEST_SHA256:
            raise UserInputError(
                f"census-income: {path} has sha256 {digest}, expected {TEST_SHA256}; re-download it from {BASE_URL}"
            )
    else:
        rows = len(_read(path))
        if rows != TEST_ROWS:
            raise UserInputError(f"census-income: {path} has {rows:,} rows, expected {TEST_ROWS:,} (the UCI test split)")


@functools.lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read(path: Path) -> pd.DataFrame:
    """The parsed file (shared, cached: do not modify it)."""
    stat = path.stat()
    return _parse(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _parse(path: str, size: int, mtime_ns: int) -> pd.DataFrame:
    """Parses one UCI file: string columns stripped, numeric columns float64, income label without the '.'."""
    try:
        frame = pd.read_csv(
            path, header=None, sep=",", skipinitialspace=True, dtype=str,
            keep_default_na=False, na_filter=False, compression="infer",
        )
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError, gzip.BadGzipFile) as err:
        message = " ".join(str(err).split())
        raise UserInputError(f"census-income: cannot parse {path}: {message}") from None
    if frame.shape[1] != len(COLUMNS):
        raise UserInputError(
            f"census-income: {path} has {frame.shape[1]} columns, expected {len(COLUMNS)} (the UCI Census-Income format)"
        )
    frame.columns = list(COLUMNS)
    for column in COLUMNS:
        frame[column] = frame[column].str.strip()
    frame["income_50k"] = frame["income_50k"].str.rstrip(".")
    bad = ~frame["income_50k"].isin(INCOME_CLASSES)
    if bad.any():
        raise UserInputError(
            f"census-income: {path} has income_50k value {frame['income_50k'][bad].iloc[0]!r} in "
            f"{int(bad.sum())} rows; valid: {list(INCOME_CLASSES)}"
        )
    for column in NUMERIC:
        values = pd.to_numeric(frame[column], errors="coerce")
        if values.isna().any():
            raise UserInputError(f"census-income: {path} has non-numeric values in numeric column {column!r}")
        frame[column] = values.astype(np.float64)
    return frame
