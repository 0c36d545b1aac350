"""The table suite: a CSV plus a TOML description written into tmp_path."""

import gzip
import importlib.util

import numpy as np
import pandas as pd
import pytest

from mtl_bench.errors import UserInputError
from mtl_bench.tasks import table

N = 200

BASE_TOML = """
[data]
path = "clicks.csv"
[features]
numeric = ["row", "price"]
categorical = ["country"]
[tasks.click]
label = "clicked"
kind = "binary"
positive = ["yes", "1"]
[tasks.dwell]
label = "dwell"
kind = "regression"
[tasks.big]
label = "dwell"
kind = "binary"
threshold = 2.5
weight = 0.5
"""


def _frame(n=N):
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "row": np.arange(n),  # identifies the row inside every split
            "price": np.round(rng.normal(10, 2, n), 3),
            "country": rng.choice(["de", "fr", "us"], n),
            "clicked": rng.choice(["yes", "no", "1", "0"], n),
            "dwell": np.round(rng.gamma(2.0, 1.5, n), 3),
        }
    )


def _write(tmp_path, toml=BASE_TOML, frame=None, name="clicks.csv"):
    frame = _frame() if frame is None else frame
    if name.endswith(".gz"):
        with gzip.open(tmp_path / name, "wt") as f:
            frame.to_csv(f, index=False)
    else:
        frame.to_csv(tmp_path / name, index=False)
    path = tmp_path / "clicks.toml"
    path.write_text(toml)
    return str(path)


def _rows(split):
    return split.features["numeric"][:, 0].astype(int)


def test_labels_positive_list_threshold_and_regression(tmp_path):
    frame = _frame()
    data = table.load(table=_write(tmp_path, frame=frame))
    assert data.name == "table" and data.variant == {"table": "clicks"}
    assert [t.name for t in data.tasks] == ["click", "dwell", "big"]
    assert [t.kind for t in data.tasks] == ["binary", "regression", "binary"]
    assert data.task("big").weight == 0.5 and data.task("click").label == "clicked"
    seen = []
    for name in ("train", "validation", "test"):
        split = getattr(data, name)
        rows = _rows(split)
        seen.extend(rows)
        np.testing.assert_array_equal(split.labels["click"], frame.clicked.isin(["yes", "1"]).to_numpy()[rows])
        np.testing.assert_array_equal(split.labels["big"], (frame.dwell > 2.5).to_numpy()[rows])
        np.testing.assert_allclose(split.labels["dwell"], frame.dwell.to_numpy()[rows], rtol=1e-6)
        np.testing.assert_allclose(split.features["numeric"][:, 1], frame.price.to_numpy()[rows], rtol=1e-6)
        assert split.labels["click"].dtype == np.float32
    assert sorted(seen) == list(range(N))
    # Default split 80/10/10.
    assert (len(data.train), len(data.validation), len(data.test)) == (160, 20, 20)
    train_rows = _rows(data.train)
    assert data.features.numeric_mean[1] == pytest.approx(frame.price.to_numpy()[train_rows].mean(), rel=1e-6)
    assert data.features.numeric_std[1] == pytest.approx(frame.price.to_numpy()[train_rows].std(), rel=1e-5)
    assert data.features.vocabulary_sizes == (4,)
    assert any("random split 80%/10%/10%" in n for n in data.notes)


def test_zero_one_labels_without_positive(tmp_path):
    frame = _frame()
    frame["bought"] = (frame.price > 10).astype(int)
    toml = BASE_TOML + '[tasks.buy]\nlabel = "bought"\nkind = "binary"\n'
    data = table.load(table=_write(tmp_path, toml, frame))
    rows = _rows(data.train)
    np.testing.assert_array_equal(data.train.labels["buy"], frame.bought.to_numpy()[rows])


def test_split_is_deterministic_and_seeded_by_the_toml(tmp_path):
    path = _write(tmp_path)
    a, b = table.load(table=path), table.load(table=path, seed=3)
    for name in ("train", "validation", "test"):
        np.testing.assert_array_equal(_rows(getattr(a, name)), _rows(getattr(b, name)))
    (tmp_path / "clicks.toml").write_text(BASE_TOML + "[split]\nseed = 1\nvalidation = 0.25\ntest = 0.25\n")
    c = table.load(table=path)
    assert (len(c.train), len(c.validation), len(c.test)) == (100, 50, 50)
    assert not np.array_equal(np.sort(_rows(a.test)), np.sort(_rows(c.test)))


def test_split_column_and_train_only_vocabulary(tmp_path):
    frame = _frame()
    frame["part"] = np.where(frame.row < 150, "train", np.where(frame.row < 175, "validation", "test"))
    frame.loc[frame.row >= 190, "country"] = "jp"  # a category only in test
    data = table.load(table=_write(tmp_path, BASE_TOML + '[split]\ncolumn = "part"\n', frame))
    assert sorted(_rows(data.train)) == list(range(150))
    assert sorted(_rows(data.validation)) == list(range(150, 175))
    assert sorted(_rows(data.test)) == list(range(175, 200))
    assert data.features.vocabulary_sizes == (4,)  # de, fr, us + unknown
    test_rows = _rows(data.test)
    ids = data.test.features["categorical"][:, 0]
    np.testing.assert_array_equal(ids == 0, test_rows >= 190)
    assert (data.train.features["categorical"] > 0).all()


def test_vocabulary_order_and_limits(tmp_path):
    frame = _frame()
    frame["part"] = "train"
    frame.loc[:9, "part"] = "validation"
    frame.loc[10:19, "part"] = "test"
    frame["country"] = ["a"] * 100 + ["b"] * 60 + ["c"] * 38 + ["d"] * 2
    toml = BASE_TOML.replace('categorical = ["country"]', 'categorical = ["country"]\nmin_count = 3')
    data = table.load(table=_write(tmp_path, toml + '[split]\ncolumn = "part"\n', frame))
    # Ids by descending training frequency; "d" (2 rows) falls below min_count.
    assert data.features.vocabulary_sizes == (4,)
    rows = _rows(data.train)
    expected = frame.country.map({"a": 1, "b": 2, "c": 3, "d": 0}).to_numpy()[rows]
    np.testing.assert_array_equal(data.train.features["categorical"][:, 0], expected)
    toml = BASE_TOML.replace('categorical = ["country"]', 'categorical = ["country"]\nmax_vocabulary = 1')
    data = table.load(table=_write(tmp_path, toml + '[split]\ncolumn = "part"\n', frame))
    assert data.features.vocabulary_sizes == (2,)


def test_missing_numeric_values_filled_with_train_mean(tmp_path):
    frame = _frame()
    frame["price"] = frame.price.astype(object)
    frame.loc[[3, 50, 120], "price"] = None
    data = table.load(table=_write(tmp_path, frame=frame))
    mean = data.features.numeric_mean[1]
    rows = _rows(data.train)
    present = frame.price.to_numpy()[rows]
    assert mean == pytest.approx(np.mean([float(v) for v in present if v is not None]), rel=1e-6)
    for name in ("train", "validation", "test"):
        split = getattr(data, name)
        missing = np.isin(_rows(split), [3, 50, 120])
        np.testing.assert_allclose(split.features["numeric"][missing, 1], mean, rtol=1e-6)
        assert np.isfinite(split.features["numeric"]).all()
    assert any("price (3)" in n for n in data.notes)


def test_csv_gz(tmp_path):
    data = table.load(table=_write(tmp_path, BASE_TOML.replace("clicks.csv", "clicks.csv.gz"), name="clicks.csv.gz"))
    assert len(data.train) + len(data.validation) + len(data.test) == N


def _error(tmp_path, toml=BASE_TOML, frame=None, **kw):
    with pytest.raises(UserInputError) as info:
        table.load(table=_write(tmp_path, toml, frame, **kw))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_files(tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        table.load(table=str(tmp_path / "none.toml"))
    with pytest.raises(UserInputError, match="table"):
        table.load()
    message = _error(tmp_path, BASE_TOML.replace("clicks.csv", "other.csv"))
    assert "other.csv" in message and "not found" in message


@pytest.mark.parametrize(
    "old, new, fragments",
    [
        ("[data]", "colour = 1\n[data]", ["'colour'", "valid keys"]),
        ('path = "clicks.csv"', 'path = "clicks.csv"\nsep = ";"', ["'sep'", "[data]", "delimiter"]),
        ('kind = "regression"', 'kind = "regression"\nlable = "x"', ["'lable'", "tasks.dwell"]),
        ('numeric = ["row", "price"]', 'numeric = ["row", "price", "size"]', ["'size'", "clicks.csv"]),
        ('label = "clicked"', 'label = "clicks"', ["'clicks'", "clicks.csv"]),
        ('kind = "regression"', 'kind = "ranking"', ["'ranking'", "binary", "regression"]),
        ('categorical = ["country"]', 'categorical = ["country", "dwell"]', ["'dwell'", "also a feature"]),
        ("threshold = 2.5", 'threshold = 2.5\npositive = ["1"]', ["positive or threshold"]),
        ("[tasks.big]", "[tasks.big-one]", ["big-one"]),
    ],
)
def test_description_errors(tmp_path, old, new, fragments):
    assert old in BASE_TOML
    message = _error(tmp_path, BASE_TOML.replace(old, new, 1))
    for fragment in fragments:
        assert fragment in message, message


def test_single_class_binary_label(tmp_path):
    frame = _frame()
    frame["clicked"] = "0"
    message = _error(tmp_path, BASE_TOML.replace('positive = ["yes", "1"]\n', ""), frame)
    assert "'clicked'" in message and "single class" in message


def test_single_class_in_one_split(tmp_path):
    frame = _frame()
    frame["part"] = np.where(frame.row < 150, "train", np.where(frame.row < 175, "validation", "test"))
    frame["clicked"] = np.where(frame.row < 175, frame.clicked, "no")
    message = _error(tmp_path, BASE_TOML + '[split]\ncolumn = "part"\n', frame)
    assert "'clicked'" in message and "test split" in message


def test_nan_labels_name_the_column_and_count(tmp_path):
    frame = _frame()
    frame["dwell"] = frame.dwell.astype(object)
    frame.loc[[1, 2, 3, 4], "dwell"] = None
    message = _error(tmp_path, frame=frame)
    assert "'dwell'" in message and "4 missing" in message


def test_binary_label_that_is_not_zero_one(tmp_path):
    toml = BASE_TOML.replace('positive = ["yes", "1"]\n', "")
    message = _error(tmp_path, toml)
    assert "'clicked'" in message and "positive" in message


def test_empty_split(tmp_path):
    message = _error(tmp_path, BASE_TOML + "[split]\nvalidation = 0.0\n")
    assert "validation split is empty" in message
    message = _error(tmp_path, BASE_TOML + "[split]\nvalidation = 0.6\ntest = 0.5\n")
    assert "split.validation + split.test" in message
    frame = _frame()
    frame["part"] = np.where(frame.row < 150, "train", "test")
    message = _error(tmp_path, BASE_TOML + '[split]\ncolumn = "part"\n', frame)
    assert "validation split is empty" in message
    frame["part"] = np.where(frame.row < 150, "train", "holdout")
    message = _error(tmp_path, BASE_TOML + '[split]\ncolumn = "part"\n', frame)
    assert "'holdout'" in message and "validation" in message


def test_non_numeric_value_in_numeric_column(tmp_path):
    frame = _frame()
    frame["price"] = frame.price.astype(object)
    frame.loc[7, "price"] = "cheap"
    message = _error(tmp_path, frame=frame)
    assert "'price'" in message and "clicks.csv" in message and "'cheap'" in message
    frame = _frame()
    frame["dwell"] = frame.dwell.astype(object)
    frame.loc[7, "dwell"] = "long"
    message = _error(tmp_path, frame=frame)
    assert "'dwell'" in message and "'long'" in message


def test_unsupported_file_type(tmp_path):
    message = _error(tmp_path, BASE_TOML.replace("clicks.csv", "clicks.xlsx"), name="clicks.xlsx")
    assert ".parquet" in message


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is not None, reason="pyarrow is installed")
def test_parquet_without_pyarrow(tmp_path):
    (tmp_path / "clicks.parquet").write_bytes(b"PAR1")
    (tmp_path / "clicks.toml").write_text(BASE_TOML.replace("clicks.csv", "clicks.parquet"))
    with pytest.raises(UserInputError, match="pip install pyarrow"):
        table.load(table=str(tmp_path / "clicks.toml"))


def test_invalid_toml(tmp_path):
    (tmp_path / "bad.toml").write_text("[data\npath = 1")
    with pytest.raises(UserInputError, match="invalid TOML"):
        table.load(table=str(tmp_path / "bad.toml"))


@pytest.mark.parametrize("toml", [BASE_TOML, BASE_TOML.replace('positive = ["yes", "1"]\n', "")], ids=["positive", "zero_one"])
def test_header_only_csv_says_it_has_no_rows(tmp_path, toml):
    message = _error(tmp_path, toml, _frame(0))
    assert (tmp_path / "clicks.csv").read_text().count("\n") == 1  # the header line and nothing else
    assert "clicks.csv" in message and "no rows" in message


def test_header_only_csv_on_the_command_line(tmp_path, capsys):
    from mtl_bench import cli

    path = _write(tmp_path, frame=_frame(0))
    assert cli.main(["run", "--suite", "table", "--table", path, "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "clicks.csv" in err and "no rows" in err, err
    assert not (tmp_path / "run").exists()


# Issue 15 item 15: errors that misled a user.


def test_positive_matching_nothing_lists_the_values_seen(tmp_path):
    message = _error(tmp_path, BASE_TOML.replace('positive = ["yes", "1"]', 'positive = ["Yes"]'))
    assert "'Yes'" in message and "matches no value" in message and "'clicked'" in message
    for value in ("'0'", "'1'", "'no'", "'yes'"):
        assert value in message, message


def test_semicolon_csv_hints_at_the_delimiter(tmp_path):
    frame = _frame()
    path = tmp_path / "clicks.toml"
    frame.to_csv(tmp_path / "clicks.csv", index=False, sep=";")
    path.write_text(BASE_TOML)
    with pytest.raises(UserInputError) as info:
        table.load(table=str(path))
    assert "delimiter = ';'" in str(info.value) and "[data]" in str(info.value)
    path.write_text(BASE_TOML.replace('path = "clicks.csv"', 'path = "clicks.csv"\ndelimiter = ";"'))
    assert len(table.load(table=str(path)).train) == 160


def test_threshold_on_a_string_label_says_the_label_is_not_numeric(tmp_path):
    toml = BASE_TOML.replace('positive = ["yes", "1"]', "threshold = 0.5")
    message = _error(tmp_path, toml)
    assert "tasks.click.threshold needs a numeric label" in message and "'clicked'" in message
    assert "numeric column" not in message


def test_a_single_task_is_refused(tmp_path):
    toml = BASE_TOML.split("[tasks.dwell]")[0]
    message = _error(tmp_path, toml)
    assert "at least two tasks" in message and "'click'" in message


@pytest.mark.parametrize("text", ["NaN", "nan", " NAN"])
def test_nan_text_in_a_binary_label_is_missing_not_negative(tmp_path, text):
    frame = _frame()
    frame.loc[[5, 6], "clicked"] = text
    message = _error(tmp_path, frame=frame)
    assert "'clicked'" in message and "2 missing" in message


# Issue 15 item 8: a run's config.toml reproduces a table run from another directory.


def _cli_config(argv):
    from mtl_bench import cli

    return cli._run_config(cli._build_parser().parse_args(argv))


def test_config_toml_reproduces_a_table_run_from_another_directory(tmp_path, monkeypatch):
    first, other = tmp_path / "first", tmp_path / "other"
    first.mkdir(), other.mkdir()
    _write(first)
    monkeypatch.chdir(first)
    config = _cli_config(["run", "--suite", "table", "--table", "clicks.toml"])
    toml_path = first / "clicks.toml"
    assert config.suite_params["table"] == str(toml_path.resolve())
    import hashlib

    full = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (toml_path, first / "clicks.csv")]
    expected = ":".join(h[:16] for h in full)
    assert config.suite_params["sha256"] == expected
    (first / "config.toml").write_text(config.to_toml())

    monkeypatch.chdir(other)
    again = _cli_config(["run", "--config", str(first / "config.toml")])
    assert again.suite_params == config.suite_params
    data = table.load(**again.suite_params)
    assert any(full[0] in note and full[1] in note for note in data.notes)
    assert not any("changed" in note for note in data.notes)

    frame = _frame()
    frame.loc[0, "price"] = 99.0
    frame.to_csv(first / "clicks.csv", index=False)
    again = _cli_config(["run", "--config", str(first / "config.toml")])
    assert again.suite_params["sha256"] == expected  # the recorded fingerprint, not today's
    notes = table.load(**again.suite_params).notes
    warning = [note for note in notes if "changed" in note]
    assert len(warning) == 1 and expected in warning[0], notes
    # A table given anew on the command line is fingerprinted anew: no warning.
    fresh = _cli_config(["run", "--config", str(first / "config.toml"), "--table", str(toml_path)])
    assert fresh.suite_params["sha256"] != expected
    assert not any("changed" in note for note in table.load(**fresh.suite_params).notes)


def test_tune_records_the_table_as_run_does_so_its_best_config_runs_from_another_directory(tmp_path, monkeypatch):
    from mtl_bench import cli

    _write(tmp_path)
    monkeypatch.chdir(tmp_path)
    parser = cli._build_parser()
    tuned = cli._tune_config(parser.parse_args(["tune", "--suite", "table", "--table", "clicks.toml", "--arch", "mmoe"]))
    assert tuned.suite_params == _cli_config(["run", "--suite", "table", "--table", "clicks.toml"]).suite_params
    assert tuned.suite_params["table"] == str((tmp_path / "clicks.toml").resolve())
    assert tuned.suite_params["sha256"] == table.fingerprint(str(tmp_path / "clicks.toml"))


def test_depends_on_declares_a_conditional_task_and_its_labels_must_nest(tmp_path):
    """A conversion labelled on every impression is 1 only where the click is 1 (ESMM's entire space)."""
    from mtl_bench.errors import UserInputError
    from mtl_bench.tasks import table

    rows = ["x,click,buy"] + [f"{i},{int(i % 2 == 0)},{int(i % 4 == 0)}" for i in range(200)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    toml = ('[data]\npath = "d.csv"\n[features]\nnumeric = ["x"]\n[tasks.click]\nlabel = "click"\nkind = "binary"\n'
            '[tasks.buy]\nlabel = "buy"\nkind = "binary"\ndepends_on = "click"\n')
    (tmp_path / "t.toml").write_text(toml)
    data = table.load(table=str(tmp_path / "t.toml"))
    assert [t.depends_on for t in data.tasks] == ["", "click"]
    # i % 4 == 1 rows have click = 0: a conversion there breaks the nesting.
    rows = ["x,click,buy"] + [f"{i},{int(i % 2 == 0)},{int(i % 4 in (0, 1))}" for i in range(200)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(UserInputError, match=r"depends_on = 'click', but 50 row\(s\) have buy = 1 where click = 0"):
        table.load(table=str(tmp_path / "t.toml"))
    (tmp_path / "t.toml").write_text(toml.replace('depends_on = "click"', 'depends_on = "nope"'))
    with pytest.raises(UserInputError, match="depends_on must be the name of another binary task"):
        table.load(table=str(tmp_path / "t.toml"))
