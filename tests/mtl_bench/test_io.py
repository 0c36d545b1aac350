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


def test_written_files_get_the_mode_a_plain_write_would(tmp_path):
    # The temporary file is private (0o600); the result must be readable as if written by open(path, "w").
    old = os.umask(0o022)
    try:
        io.write_text(tmp_path / "a.txt", "x")
        io.write_bytes(tmp_path / "b.png", b"\x89PNG")
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    expected = (tmp_path / "plain.txt").stat().st_mode & 0o777
    assert expected == 0o644
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == expected
    assert (tmp_path / "b.png").stat().st_mode & 0o777 == expected
    assert os.umask(old) == old  # the umask is left as it was


def test_a_locked_directory_refuses_a_second_holder(tmp_path):
    import os
    import subprocess
    import sys

    from mtl_bench.errors import UserInputError

    with io.locked(tmp_path):
        # Another process (flock locks belong to open files, so a second open in this process would also
        # conflict; a subprocess is what a second `mtl-bench run --resume` is).
        code = ("import sys; from mtl_bench import io\n"
                "try:\n    io.locked(sys.argv[1]).__enter__()\n"
                "except Exception as e:\n    print(type(e).__name__, e); sys.exit(2)\n")
        done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
        assert done.returncode == 2
        assert done.stdout.startswith("UserInputError run directory") and f"pid {os.getpid()}" in done.stdout
    with io.locked(tmp_path):  # released on exit
        pass
    with pytest.raises(UserInputError, match="not valid JSON"):
        (tmp_path / "m.json").write_text('{"status": "runn')
        io.read_json(tmp_path / "m.json")
