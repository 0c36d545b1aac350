"""The Census-Income suite on the UCI test split that CI provides beside the repository.

Expected numbers are computed here from the raw gzip with the csv module, independently of the loader.
"""

import csv
import gzip
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from mtl_bench.errors import UserInputError
from mtl_bench.tasks import census_income

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
TEST_GZ = SHARED_DATA / "census-income" / "census-income.test.gz"
COLUMNS = [c.strip() for c in """
age class_worker det_ind_code det_occ_code education wage_per_hour hs_college marital_stat major_ind_code
major_occ_code race hisp_origin sex union_member unemp_reason full_or_part_emp capital_gains capital_losses
stock_dividends tax_filer_stat region_prev_res state_prev_res det_hh_fam_stat det_hh_summ instance_weight
mig_chg_msa mig_chg_reg mig_move_reg mig_same mig_prev_sunbelt num_emp fam_under_18 country_father
country_mother country_self citizenship own_or_self vet_question vet_benefits weeks_worked year income_50k
""".split()]
COLLEGE = {  # education "at least college": attended college, with or without a degree
    "Some college but no degree", "Associates degree-occup /vocational", "Associates degree-academic program",
    "Bachelors degree(BA AB BS)", "Masters degree(MA MS MEng MEd MSW MBA)",
    "Prof school degree (MD DDS DVM LLB JD)", "Doctorate degree(PhD EdD)",
}

pytestmark = pytest.mark.skipif(not TEST_GZ.is_file(), reason=f"shared census data not found at {TEST_GZ}")


@pytest.fixture(scope="module")
def raw():
    """Rows of the raw test split as dicts of stripped strings."""
    with gzip.open(TEST_GZ, "rt", newline="") as f:
        rows = [[v.strip() for v in row] for row in csv.reader(f, skipinitialspace=True)]
    assert all(len(r) == 42 for r in rows)
    return [dict(zip(COLUMNS, r)) for r in rows]


@pytest.fixture(scope="module")
def income():
    return census_income.load(data_dir=str(SHARED_DATA))


def _all(data, key):
    return np.concatenate([getattr(data, s).labels[key] for s in ("train", "validation", "test")])


def test_rows_and_split_sizes(income):
    n = 99_762
    assert len(income.train) + len(income.validation) + len(income.test) == n
    # 60/20/20: validation and test get round(0.2 n) rows each.
    assert len(income.validation) == len(income.test) == round(0.2 * n)
    assert income.name == "census-income" and income.variant == {"task_group": "income"}
    assert any("only the UCI test split" in note and "60/20/20" in note for note in income.notes)


def test_label_base_rates_match_the_raw_file(raw, income):
    rich = sum(r["income_50k"] == "50000+." for r in raw)
    never = sum(r["marital_stat"] == "Never married" for r in raw)
    assert rich == 6186  # the README's count
    assert [t.name for t in income.tasks] == ["income", "marital"]
    assert all(t.kind == "binary" for t in income.tasks)
    assert _all(income, "income").sum() == rich
    assert _all(income, "marital").sum() == never
    assert len(income.train.labels["income"]) == len(income.train)


def test_education_group(raw):
    data = census_income.load(group="education", data_dir=str(SHARED_DATA))
    assert [t.name for t in data.tasks] == ["education", "marital"]
    assert data.variant == {"task_group": "education"}
    assert _all(data, "education").sum() == sum(r["education"] in COLLEGE for r in raw)
    assert _all(data, "marital").sum() == sum(r["marital_stat"] == "Never married" for r in raw)
    # Both groups see the same inputs.
    income = census_income.load(group="income", data_dir=str(SHARED_DATA))
    np.testing.assert_array_equal(data.train.features["categorical"], income.train.features["categorical"])


def test_features_exclude_labels_and_weight(income):
    spec = income.features
    names = set(spec.numeric) | set(spec.categorical)
    assert not names & {"education", "marital_stat", "income_50k", "instance_weight"}
    assert names == set(COLUMNS) - {"education", "marital_stat", "income_50k", "instance_weight"}
    assert spec.numeric == ("age", "wage_per_hour", "capital_gains", "capital_losses", "stock_dividends",
                            "num_emp", "weeks_worked")
    for code in ("det_ind_code", "det_occ_code", "own_or_self", "vet_benefits", "year"):
        assert code in spec.categorical
    assert income.train.features["numeric"].dtype == np.float32
    assert income.train.features["categorical"].dtype == np.int32


def test_rows_line_up_with_the_raw_file_and_preprocessing_is_train_only(raw, income):
    train_idx, val_idx, test_idx = census_income.only_test_split_rows(0)
    spec = income.features
    splits = {"train": train_idx, "validation": val_idx, "test": test_idx}
    for name, idx in splits.items():
        split = getattr(income, name)
        ages = np.array([float(raw[i]["age"]) for i in idx], dtype=np.float32)
        np.testing.assert_array_equal(split.features["numeric"][:, 0], ages)
        gains = np.array([np.log1p(float(raw[i]["capital_gains"])) for i in idx], dtype=np.float32)
        np.testing.assert_allclose(split.features["numeric"][:, 2], gains, rtol=1e-6)
        labels = np.array([raw[i]["income_50k"] == "50000+." for i in idx], dtype=np.float32)
        np.testing.assert_array_equal(split.labels["income"], labels)
    # Numeric statistics are those of the training rows.
    train_ages = np.array([float(raw[i]["age"]) for i in train_idx])
    assert spec.numeric_mean[0] == pytest.approx(train_ages.mean(), rel=1e-9)
    assert spec.numeric_std[0] == pytest.approx(train_ages.std(), rel=1e-9)
    # Vocabularies: one id per distinct training value plus 0 = unknown; values never seen in training get 0.
    unseen = 0
    for j, column in enumerate(spec.categorical):
        train_values = {raw[i][column] for i in train_idx}
        assert spec.vocabulary_sizes[j] == len(train_values) + 1, column
        assert (income.train.features["categorical"][:, j] > 0).all(), column
        for name in ("validation", "test"):
            ids = getattr(income, name).features["categorical"][:, j]
            new = np.array([raw[i][column] not in train_values for i in splits[name]])
            np.testing.assert_array_equal(ids == 0, new, err_msg=column)
            unseen += int(new.sum())
    assert unseen > 0  # the test split has categories the training rows lack


def test_split_is_deterministic_and_ignores_the_training_seed(income):
    again = census_income.load(data_dir=str(SHARED_DATA), seed=5)
    other = census_income.load(data_dir=str(SHARED_DATA), split_seed=1)
    for name in ("train", "validation", "test"):
        np.testing.assert_array_equal(getattr(income, name).features["numeric"],
                                      getattr(again, name).features["numeric"])
        np.testing.assert_array_equal(getattr(income, name).labels["income"], getattr(again, name).labels["income"])
    assert not np.array_equal(income.test.features["numeric"], other.test.features["numeric"])
    assert other.variant == {"task_group": "income", "split_seed": 1}


def test_environment_variable_and_uncompressed_file(tmp_path, monkeypatch, income):
    monkeypatch.setenv("MTL_BENCH_DATA", str(SHARED_DATA))
    via_env = census_income.load()
    np.testing.assert_array_equal(via_env.test.labels["marital"], income.test.labels["marital"])
    monkeypatch.delenv("MTL_BENCH_DATA")
    with gzip.open(TEST_GZ, "rb") as src, open(tmp_path / "census-income.test", "wb") as dst:
        shutil.copyfileobj(src, dst)
    plain = census_income.load(data_dir=str(tmp_path))  # file directly in the folder, not gzipped
    np.testing.assert_array_equal(plain.test.features["categorical"], income.test.features["categorical"])


def test_unknown_group_lists_valid_groups():
    with pytest.raises(UserInputError, match=r"group must be one of \['education', 'income'\]"):
        census_income.load(group="age", data_dir=str(SHARED_DATA))


def test_missing_file_in_data_dir(tmp_path):
    with pytest.raises(UserInputError, match="census-income.test"):
        census_income.load(data_dir=str(tmp_path))
    with pytest.raises(UserInputError, match="not a directory"):
        census_income.load(data_dir=str(tmp_path / "nope"))


def test_sha256_mismatch(tmp_path):
    with gzip.open(tmp_path / "census-income.test.gz", "wt") as f:
        f.write("1, 2, 3\n")
    with pytest.raises(UserInputError, match="sha256") as info:
        census_income.load(data_dir=str(tmp_path))
    assert "\n" not in str(info.value)


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("MTL_BENCH_DATA", raising=False)
    calls = []

    def offline(**kwargs):
        calls.append(kwargs)
        raise OSError("URL fetch failure: no network")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(UserInputError, match="could not download .*census-income.test.gz.*data_dir") as info:
        census_income.load(cache_dir=str(tmp_path))
    assert "\n" not in str(info.value)
    assert calls[0]["file_hash"] == census_income.TEST_SHA256 and calls[0]["cache_dir"] == str(tmp_path)


def _fake_download(tmp_path, monkeypatch, train_lines):
    """get_file that "downloads" the real test split and a training split made of ``train_lines``."""
    monkeypatch.delenv("MTL_BENCH_DATA", raising=False)
    folder = tmp_path / "datasets" / "census-income"
    folder.mkdir(parents=True)
    shutil.copy(TEST_GZ, folder / "census-income.test.gz")
    with gzip.open(folder / "census-income.data.gz", "wb", compresslevel=1) as f:
        f.writelines(train_lines)

    def get_file(*, fname, origin, file_hash, cache_subdir, cache_dir):
        assert origin.endswith("/census-income-mld/" + fname)
        return str(Path(cache_dir) / cache_subdir / fname)

    monkeypatch.setattr(keras.utils, "get_file", get_file)


def test_downloaded_training_split_gives_the_papers_split(tmp_path, monkeypatch):
    with gzip.open(TEST_GZ, "rb") as f:
        lines = f.readlines()
    train_lines = (lines + lines)[:199_523]  # a stand-in with the training split's row count
    _fake_download(tmp_path, monkeypatch, train_lines)
    data = census_income.load(cache_dir=str(tmp_path))
    assert len(data.train) == 199_523
    assert len(data.validation) + len(data.test) == 99_762
    assert abs(len(data.validation) - len(data.test)) <= 1
    assert any("paper" in note and "halved" in note for note in data.notes)
    rich_train = sum(line.rstrip().endswith(b"50000+.") for line in train_lines)
    assert data.train.labels["income"].sum() == rich_train
    assert data.validation.labels["income"].sum() + data.test.labels["income"].sum() == 6186


def test_downloaded_training_split_with_wrong_shape(tmp_path, monkeypatch):
    with gzip.open(TEST_GZ, "rb") as f:
        lines = [next(f) for _ in range(10)]
    _fake_download(tmp_path, monkeypatch, lines)
    with pytest.raises(UserInputError, match="199,523"):
        census_income.load(cache_dir=str(tmp_path))
