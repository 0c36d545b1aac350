import os

import pandas as pd
import pytest

from mtl_bench import io


def test_write_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "a" / "x.csv"
    io.write_csv(path, pd.DataFrame({"a": [1]}))
    io.write_csv(path, pd.DataFrame({"a": [2]}))
    assert pd.read_csv(path)["a"].tolist() == [2]
    assert os.listdir(path.parent) == ["x.csv"]


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "x.txt"
    io.write_text(path, "old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        io.write_text(path, "new")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["x.txt"]
