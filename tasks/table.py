"""A user's own table (CSV or Parquet) described by a TOML file.

Schema (every key not listed here is an error)::

    [data]
    path = "clicks.csv"            # required; relative to the TOML file; .csv, .csv.gz or .parquet
    delimiter = ","                # optional, CSV only (default ",")

    [features]                     # at least one feature
    numeric = ["price", "age"]     # optional; float columns
    categorical = ["country"]      # optional; compared as strings
    max_vocabulary = 10000         # optional; keep the most frequent training values per column
    min_count = 1                  # optional; training count a value needs to get its own id

    [tasks.click]                  # one table per task; the key is the task name (letters, digits, _)
    label = "clicked"              # required; the label column
    kind = "binary"                # required; "binary" or "regression"
    positive = ["yes", "1"]        # binary: values that mean 1 (compared as strings), or
    threshold = 0.5                # binary: value > threshold means 1 (numeric column);
                                   # with neither, the column must hold only 0/1 (or true/false)
    weight = 1.0                   # optional; weight of the task's loss (default 1)

    [tasks.dwell]
    label = "dwell_seconds"
    kind = "regression"

    [split]                        # optional; default validation = 0.1, test = 0.1, seed = 0
    validation = 0.1               # fractions of the rows, at random
    test = 0.1
    seed = 0                       # the split seed (the training seed never changes the split)
    # or: column = "split"         # a column with values train / validation / test

    [time]                         # optional: the table has days; splits are by time
    column = "timestamp"           # unix seconds, or ISO dates / datetimes (UTC)
    unit = "day"                   # "hour", "day" or "week": one period = one day of the daily regime

    [cohorts]                      # optional, with [time]: user cohorts for the cohort experiment
    column = "occupation"          # a cohort per value, or:
    # hash = "user_id"             # values hashed into count cohorts (crc32 mod count)
    # count = 4

    With [time], [split] takes by = "time" (the default), validation = 1 and test = 1 (the last
    periods: test; the ones before: validation; earlier ones train), and seed.

Rules:

* Empty CSV cells are missing values. Missing numeric features are filled with
  the training mean (the value the model normalises to 0); missing categorical
  values get id 0 (unknown), as do values unseen in training.
* Labels must not be missing; a binary label needs both classes in every split
  (AUC is undefined otherwise).
* Statistics and vocabularies are fitted on the training split only.
* Parquet needs ``pyarrow`` (``pip install pyarrow``). Parquet values are
  compared with ``positive`` through their string form (``str(value)``).

Time (see :mod:`mtl_bench.tasks._timeline`): ``meta["day"]`` is the period of a row, ``meta["cohort"]``
its cohort id (0 = the largest cohort) and, with ``holdout_cohort``, ``meta["holdout"]`` flags the
held-out cohort's rows from ``holdout_day`` on, so ``--regime daily`` and ``--experiment cohort`` run
as on ``recsim``.

``variant`` is ``{"table": <TOML file stem>}``; ``notes`` describe the split, the cohorts and the
files' sha256.
"""

from __future__ import annotations

import hashlib
import importlib.util
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtl_bench.errors import UserInputError
from mtl_bench.spec import TASK_KINDS, SuiteData, Task
from mtl_bench.tasks import _common, _timeline
from mtl_bench.validation import check_choice, check_int, check_number, fail

NAME = "table"
SPLITS = ("train", "validation", "test")
_KEYS: dict[str, tuple[str, ...]] = {
    "": ("data", "features", "tasks", "split", "time", "cohorts"),
    "data": ("path", "delimiter"),
    "features": ("numeric", "categorical", "max_vocabulary", "min_count"),
    "task": ("label", "kind", "positive", "threshold", "weight", "depends_on"),
    "split": ("validation", "test", "seed", "column", "by"),
    "time": ("column", "unit"),
    "cohorts": ("column", "hash", "count"),
}
SPLIT_BY = ("random", "time")
_TRUE = {"1", "1.0", "true"}
_FALSE = {"0", "0.0", "false"}


def load(
    *, table: str = "", seed: int = 0, sha256: str = "", holdout_cohort: int = -1, holdout_day: int = 0
) -> SuiteData:
    """Loads the table described by the TOML file ``table``.

    Args:
        table: Path of the TOML description (schema in the module docstring).
        seed: The engine's training seed; the split uses ``[split] seed`` instead.
        sha256: The fingerprint (:func:`fingerprint`) of the TOML and data files when the run's
            configuration was written; when today's files differ, a note says so (the command line
            records it, so that ``--config runs/<id>/config.toml`` warns when the data changed).
        holdout_cohort: A cohort id (``[cohorts]`` needed) whose rows from ``holdout_day`` on no
            regime trains on (the cohort experiment); -1 for none.
        holdout_day: The first held-out period.

    Raises:
        UserInputError: Missing file, unknown key, missing column, bad label, empty split, ...
    """
    if not table:
        raise UserInputError("suite 'table' needs the parameter table = \"<path to a TOML file>\"")
    check_int(NAME, "seed", seed, 0)
    toml_path = Path(table).expanduser()
    if not toml_path.is_file():
        raise UserInputError(f"table description not found: {toml_path}")
    try:
        config = tomllib.loads(toml_path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise UserInputError(f"{toml_path}: invalid TOML: {' '.join(str(err).split())}") from None
    where = toml_path.name

    _check_keys(config, "", where)
    for section in ("data", "features", "tasks"):
        if section not in config:
            raise UserInputError(f"{where}: missing section [{section}]")
    for section in ("data", "features", "split", "time", "cohorts"):
        if section in config:
            if not isinstance(config[section], dict):
                raise UserInputError(f"{where}: {section} must be a table [{section}]")
            _check_keys(config[section], section, where)
    tasks_cfg = config["tasks"]
    if not isinstance(tasks_cfg, dict) or not tasks_cfg:
        raise UserInputError(f"{where}: [tasks] needs at least two task tables, e.g. [tasks.click] and [tasks.dwell]")
    if len(tasks_cfg) < 2:
        raise UserInputError(
            f"{where}: a multi-task benchmark needs at least two tasks; [tasks] has only {list(tasks_cfg)}"
        )
    for task_name, task_cfg in tasks_cfg.items():
        if not isinstance(task_cfg, dict):
            raise UserInputError(f"{where}: tasks.{task_name} must be a table [tasks.{task_name}]")
        _check_keys(task_cfg, "task", where, f"tasks.{task_name}")

    data_cfg, features_cfg, split_cfg = config["data"], config["features"], config.get("split", {})
    if "path" not in data_cfg or not isinstance(data_cfg["path"], str):
        raise UserInputError(f"{where}: [data] needs path = \"<file>\" (.csv, .csv.gz or .parquet)")
    data_path = (toml_path.parent / data_cfg["path"]).expanduser()
    frame = _read_table(data_path, data_cfg.get("delimiter", ","), where)
    file_name = data_path.name
    if len(frame) == 0:  # e.g. a CSV with its header line only; every later check assumes rows
        raise UserInputError(f"{where}: data file {file_name} has no rows")

    numeric_cols = _names(features_cfg.get("numeric", []), "features.numeric", where)
    categorical_cols = _names(features_cfg.get("categorical", []), "features.categorical", where)
    if not numeric_cols and not categorical_cols:
        raise UserInputError(f"{where}: [features] lists no column; give numeric = [...] and/or categorical = [...]")
    both = sorted(set(numeric_cols) & set(categorical_cols))
    if both:
        raise UserInputError(f"{where}: column {both[0]!r} is listed as both numeric and categorical")
    max_vocabulary = features_cfg.get("max_vocabulary")
    if max_vocabulary is not None:
        max_vocabulary = check_int(where, "features.max_vocabulary", max_vocabulary, 1)
    min_count = check_int(where, "features.min_count", features_cfg.get("min_count", 1), 1)
    for column in (*numeric_cols, *categorical_cols):
        _require_column(frame, column, file_name, where)

    tasks: list[Task] = []
    labels: dict[str, np.ndarray] = {}
    feature_cols = set(numeric_cols) | set(categorical_cols)
    for task_name, task_cfg in tasks_cfg.items():
        task, label = _task(task_name, task_cfg, frame, file_name, where, feature_cols)
        tasks.append(task)
        labels[task_name] = label
    binary = [t.name for t in tasks if t.kind == "binary"]
    for task in tasks:
        if task.depends_on and task.depends_on not in binary:
            raise fail(where, f"tasks.{task.name}.depends_on", f"the name of another binary task, one of {binary}",
                       task.depends_on)
        if task.depends_on and np.any((labels[task.name] == 1) & (labels[task.depends_on] == 0)):
            bad = int(np.sum((labels[task.name] == 1) & (labels[task.depends_on] == 0)))
            raise UserInputError(f"{where}: tasks.{task.name}.depends_on = {task.depends_on!r}, but {bad} row(s) "
                                 f"have {task.name} = 1 where {task.depends_on} = 0")

    meta: dict[str, np.ndarray] = {}
    if "time" in config or split_cfg.get("by") == "time":
        splits, split_note, meta = _by_time(config, frame, file_name, where, feature_cols, holdout_cohort, holdout_day)
    else:
        if "cohorts" in config:
            raise UserInputError(f"{where}: [cohorts] needs a [time] section (cohorts are followed over time)")
        if holdout_cohort != -1:
            raise UserInputError(f"{where}: holdout_cohort needs [time] and [cohorts] sections")
        splits, split_note = _split(split_cfg, frame, file_name, where, feature_cols)
    for split_name, idx in zip(SPLITS, splits):
        if len(idx) == 0:
            raise UserInputError(
                f"{where}: the {split_name} split is empty ({len(frame)} rows); use more rows or change [split]"
            )
    for task in tasks:
        if task.kind == "binary":
            for split_name, idx in zip(SPLITS, splits):
                if len(np.unique(labels[task.name][idx])) < 2:
                    raise UserInputError(
                        f"{where}: task {task.name!r}: label column {task.label!r} has a single class in the "
                        f"{split_name} split; both classes are needed (more rows or another split)"
                    )

    numeric = {c: _numeric_column(frame[c], c, file_name) for c in numeric_cols}
    notes = [f"table {toml_path.stem}: {split_note}"]
    digests = _digests(str(toml_path))
    now = ":".join(h[:16] for h in digests)
    notes.append(f"table {toml_path.stem}: sha256 {digests[0]} of {toml_path.resolve()}, "
                 f"sha256 {digests[1]} of {data_path.resolve()}")
    if sha256 and sha256 != now:
        notes.append(
            f"table {toml_path.stem}: WARNING the TOML or data file changed since this configuration was written "
            f"(sha256 was {sha256}, now {now}); results are not comparable with the run it came from"
        )
    filled = {c: int(np.isnan(v).sum()) for c, v in numeric.items() if np.isnan(v).any()}
    if filled:
        notes.append(
            f"table {toml_path.stem}: missing numeric values filled with the training mean: "
            + ", ".join(f"{c} ({n})" for c, n in filled.items())
        )
    return _common.assemble(
        name=NAME,
        variant={"table": toml_path.stem},
        tasks=tasks,
        labels=labels,
        splits=splits,
        numeric=numeric,
        categorical={c: frame[c] for c in categorical_cols},
        max_vocabulary=max_vocabulary,
        min_count=min_count,
        notes=notes,
        source=file_name,
        meta=meta,
    )


def fingerprint(table: str) -> str:
    """``"<toml>:<data>"``, the first 16 hex digits of the sha256 of the TOML file and of its data file.

    Short, because suite parameters name the run's cell files; a part is empty when its file is unreadable.
    """
    return ":".join(h[:16] for h in _digests(table))


def _digests(table: str) -> tuple[str, str]:
    toml_path = Path(table).expanduser()
    parts = []
    try:
        raw = toml_path.read_bytes()
        parts.append(hashlib.sha256(raw).hexdigest())
        data_path = toml_path.parent / tomllib.loads(raw.decode())["data"]["path"]
        parts.append(_file_sha256(data_path.expanduser()))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError):
        parts += [""] * (2 - len(parts))
    return parts[0], parts[1]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_keys(section: dict[str, Any], kind: str, where: str, label: str | None = None) -> None:
    valid = _KEYS[kind]
    unknown = sorted(set(section) - set(valid))
    if unknown:
        place = label if label is not None else (f"[{kind}]" if kind else "the top level")
        raise UserInputError(f"{where}: unknown key {unknown[0]!r} in {place}; valid keys: {list(valid)}")


def _names(value: Any, key: str, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UserInputError(f"{where}: {key} must be a list of column names. Received: {value!r}")
    if len(set(value)) != len(value):
        raise UserInputError(f"{where}: {key} lists a column twice. Received: {value!r}")
    return list(value)


def _read_table(path: Path, delimiter: Any, where: str) -> pd.DataFrame:
    if not path.is_file():
        raise UserInputError(f"{where}: data file not found: {path}")
    name = path.name.lower()
    if name.endswith(".parquet"):
        if importlib.util.find_spec("pyarrow") is None:
            raise UserInputError(f"reading {path.name} needs pyarrow: pip install pyarrow")
        try:
            return pd.read_parquet(path)
        except Exception as err:  # pyarrow raises many types
            raise UserInputError(f"cannot read {path.name}: {' '.join(str(err).split())}") from None
    if not (name.endswith(".csv") or name.endswith(".csv.gz")):
        raise UserInputError(f"{where}: data file {path.name!r} must end in .csv, .csv.gz or .parquet")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise UserInputError(f"{where}: data.delimiter must be one character. Received: {delimiter!r}")
    try:
        frame = pd.read_csv(path, sep=delimiter, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as err:
        raise UserInputError(f"cannot read {path.name}: {' '.join(str(err).split())}") from None
    return frame


def _require_column(frame: pd.DataFrame, column: str, file_name: str, where: str = "") -> None:
    if column not in frame.columns:
        columns = [str(c) for c in frame.columns]
        shown = columns[:20] + (["..."] if len(columns) > 20 else [])
        hint = ""
        if len(columns) == 1:  # the whole header read as one name: the file has another delimiter
            found = [d for d in (";", "\t", "|", ",") if d in columns[0]]
            if found:
                hint = f"; the header was read as one column: set delimiter = {found[0]!r} in [data] of {where or 'the TOML'}"
        raise UserInputError(f"column {column!r} not found in {file_name}; columns: {shown}{hint}")


def _numeric_column(series: pd.Series, column: str, file_name: str, role: str = "numeric column") -> np.ndarray:
    """Float values; NaN where missing; an error for a present value that is not a number.

    ``role`` names the column in that error ("numeric column", "label column 'x' ... is not numeric").
    """
    if pd.api.types.is_bool_dtype(series.dtype):
        return series.astype(np.float64).to_numpy()
    values = pd.to_numeric(series, errors="coerce")
    bad = values.isna() & series.notna()
    if bad.any():
        raise UserInputError(
            f"{role} {column!r} in {file_name} has {int(bad.sum())} non-numeric value(s), "
            f"e.g. {series[bad].iloc[0]!r}"
        )
    values = values.astype(np.float64).to_numpy()
    if np.isinf(values).any():
        raise UserInputError(f"numeric column {column!r} in {file_name} has infinite values")
    return values


def _task(
    name: str, cfg: dict[str, Any], frame: pd.DataFrame, file_name: str, where: str, feature_cols: set[str]
) -> tuple[Task, np.ndarray]:
    place = f"tasks.{name}"
    if "label" not in cfg or not isinstance(cfg["label"], str):
        raise UserInputError(f"{where}: {place} needs label = \"<column>\"")
    if "kind" not in cfg:
        raise UserInputError(f"{where}: {place} needs kind; valid kinds: {list(TASK_KINDS)}")
    column, kind = cfg["label"], cfg["kind"]
    check_choice(where, f"{place}.kind", kind, TASK_KINDS)
    _require_column(frame, column, file_name, where)
    if column in feature_cols:
        raise UserInputError(f"{where}: label column {column!r} of {place} is also a feature")
    weight = check_number(where, f"{place}.weight", cfg.get("weight", 1.0), 0.0)

    series = frame[column]
    # The text "NaN" is pandas' and numpy's own spelling of a missing value, never a class.
    is_missing = series.isna() | (series.astype(str).str.strip().str.lower() == "nan")
    missing = int(is_missing.sum())
    if missing:
        raise UserInputError(f"label column {column!r} in {file_name} has {missing} missing (NaN) value(s)")

    if kind == "regression":
        if "positive" in cfg or "threshold" in cfg:
            raise UserInputError(f"{where}: {place}: positive and threshold are for binary tasks only")
        label = _numeric_column(series, column, file_name, "regression label column")
    else:
        if "positive" in cfg and "threshold" in cfg:
            raise UserInputError(f"{where}: {place}: give positive or threshold, not both")
        if "positive" in cfg:
            positive = cfg["positive"]
            if not isinstance(positive, list) or not positive:
                raise UserInputError(f"{where}: {place}.positive must be a non-empty list of values. Received: {positive!r}")
            label = series.astype(str).isin([str(v) for v in positive]).to_numpy()
            if not label.any() or label.all():
                seen = sorted(series.astype(str).unique())
                shown = seen[:10] + (["..."] if len(seen) > 10 else [])
                which = "matches no value" if not label.any() else "matches every value"
                raise UserInputError(
                    f"{where}: {place}.positive = {[str(v) for v in positive]} {which} of label column {column!r} "
                    f"in {file_name} (values compared as strings); its values: {shown}"
                )
        elif "threshold" in cfg:
            threshold = check_number(where, f"{place}.threshold", cfg["threshold"])
            label = _numeric_column(
                series, column, file_name, f"{place}.threshold needs a numeric label, but label column"
            ) > threshold
        else:
            text = series.astype(str).str.strip().str.lower()
            values = set(text.unique())
            if not values <= _TRUE | _FALSE:
                shown = sorted(values)[:10]
                raise UserInputError(
                    f"binary label column {column!r} in {file_name} has values other than 0/1 (e.g. {shown}); "
                    f"add positive = [...] or threshold = ... to {place}"
                )
            label = text.isin(_TRUE).to_numpy()
        if len(np.unique(label)) < 2:
            raise UserInputError(
                f"binary label column {column!r} in {file_name} has a single class (all {int(label[0])}); "
                "both classes are needed"
            )
    try:
        task = Task(name=name, label=column, kind=kind, weight=float(weight), depends_on=cfg.get("depends_on", ""))
    except ValueError as err:
        raise UserInputError(f"{where}: {' '.join(str(err).split())}") from None
    return task, np.asarray(label, dtype=np.float32)


def _split(
    cfg: dict[str, Any], frame: pd.DataFrame, file_name: str, where: str, feature_cols: set[str]
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], str]:
    n = len(frame)
    check_choice(where, "split.by", cfg.get("by", "random"), SPLIT_BY)
    if "column" in cfg:
        other = sorted(set(cfg) - {"column", "seed", "by"})
        if other:
            raise UserInputError(f"{where}: [split] column = ... cannot be combined with {other[0]!r}")
        column = cfg["column"]
        if not isinstance(column, str):
            raise UserInputError(f"{where}: split.column must be a column name. Received: {column!r}")
        _require_column(frame, column, file_name, where)
        if column in feature_cols:
            raise UserInputError(f"{where}: split column {column!r} is also a feature")
        values = frame[column].astype(str).str.strip().to_numpy()
        unknown = sorted(set(values) - set(SPLITS))
        if unknown:
            raise UserInputError(
                f"split column {column!r} in {file_name} has value {unknown[0]!r}; valid values: {list(SPLITS)}"
            )
        seed = check_int(where, "split.seed", cfg.get("seed", 0), 0)
        rng = np.random.default_rng(seed)
        splits = tuple(rng.permutation(np.flatnonzero(values == s)) for s in SPLITS)
        return splits, f"split given by column {column!r} of {file_name}"
    validation = check_number(where, "split.validation", cfg.get("validation", 0.1), 0.0, 1.0, high_open=True)
    test = check_number(where, "split.test", cfg.get("test", 0.1), 0.0, 1.0, high_open=True)
    if validation + test >= 1:
        raise UserInputError(
            f"{where}: split.validation + split.test must be < 1. Received: {validation} + {test}"
        )
    seed = check_int(where, "split.seed", cfg.get("seed", 0), 0)
    splits = _common.random_split(n, validation, test, seed)
    train_frac = 1 - validation - test
    return splits, (
        f"random split {train_frac:.0%}/{validation:.0%}/{test:.0%} train/validation/test of {n} rows "
        f"of {file_name} (split seed {seed})"
    )


def _by_time(
    config: dict[str, Any], frame: pd.DataFrame, file_name: str, where: str, feature_cols: set[str],
    holdout_cohort: int, holdout_day: int,
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], str, dict[str, np.ndarray]]:
    """Splits, note and ``meta`` (day, cohort, holdout) of a table with a ``[time]`` section."""
    split_cfg, time_cfg = config.get("split", {}), config.get("time")
    if time_cfg is None:
        raise UserInputError(f"{where}: [split] by = \"time\" needs a [time] section with column = \"<time column>\"")
    check_choice(where, "split.by", split_cfg.get("by", "time"), ("time",))
    if "column" in split_cfg:
        raise UserInputError(f"{where}: [split] column = ... cannot be combined with [time] (the split is by time)")
    column = time_cfg.get("column")
    if not isinstance(column, str):
        raise UserInputError(f"{where}: [time] needs column = \"<time column>\". Received: {column!r}")
    _require_column(frame, column, file_name, where)
    unit = check_choice(where, "time.unit", time_cfg.get("unit", "day"), tuple(_timeline.UNITS))
    day = _timeline.periods(frame[column], unit, column, file_name)
    validation = check_int(where, "split.validation (periods, with [time])", split_cfg.get("validation", 1), 1)
    test = check_int(where, "split.test (periods, with [time])", split_cfg.get("test", 1), 1)
    seed = check_int(where, "split.seed", split_cfg.get("seed", 0), 0)
    splits, note = _timeline.time_split(day, validation, test, seed, where)
    note = f"{note} ({unit}s of column {column!r} of {file_name})"
    meta = {"day": day}
    check_int(NAME, "holdout_cohort", holdout_cohort, -1)
    check_int(NAME, "holdout_day", holdout_day, 0)
    cohorts_cfg = config.get("cohorts")
    if cohorts_cfg is not None:
        has_column, has_hash = "column" in cohorts_cfg, "hash" in cohorts_cfg
        if has_column == has_hash:
            raise UserInputError(f"{where}: [cohorts] needs column = \"<column>\" or hash = \"<column>\" with count = <n>")
        if has_column and "count" in cohorts_cfg:
            raise UserInputError(f"{where}: cohorts.count goes with hash = \"<column>\", not with column")
        source = cohorts_cfg["hash"] if has_hash else cohorts_cfg["column"]
        if not isinstance(source, str):
            raise UserInputError(f"{where}: [cohorts] names a column. Received: {source!r}")
        _require_column(frame, source, file_name, where)
        count = check_int(where, "cohorts.count", cohorts_cfg.get("count", 0), 2, 4096) if has_hash else 0
        meta["cohort"], names = _timeline.cohorts(frame[source], source, file_name, count)
        note += "; cohorts " + ", ".join(f"{i} = {n!r}" for i, n in enumerate(names[:12]))
        note += ", ..." if len(names) > 12 else ""
        if holdout_cohort >= 0:
            train_periods = int(day[splits[0]].max()) + 1
            meta["holdout"], held_note = _timeline.holdout(
                day, meta["cohort"], names, holdout_cohort, holdout_day, train_periods, where
            )
            note += f"; {held_note}"
    elif holdout_cohort >= 0:
        raise UserInputError(f"{where}: holdout_cohort needs a [cohorts] section")
    return splits, note, meta
