import math

import pytest

from mtl_bench import bench, cli
from mtl_bench.errors import UserInputError

TINY = dict(arch="mmoe", rows=256, batch_size=64, epochs=1, repeats=1)


def test_bench_runs_end_to_end_on_a_tiny_setting(capsys):
    # Goes through probe_event_cost, which calls Trainer._run_steps directly with its positional signature.
    results = bench.main(**TINY)
    printed = capsys.readouterr().out
    for key in ["mtl-bench engine", "keras.Model.fit", "ratio", "probe_overhead", "probe_event_steps", "lookahead_overhead"]:
        assert math.isfinite(results[key]) and results[key] > 0, (key, results[key])
    assert "ratio engine / fit" in printed and "one probe event =" in printed


def test_bench_cli_exits_zero(capsys):
    code = cli.main(["bench", "--rows", "256", "--batch-size", "64", "--epochs", "1", "--repeats", "1"])
    assert code == 0
    assert "one probe event =" in capsys.readouterr().out


def test_bench_rejects_bad_sizes():
    with pytest.raises(UserInputError, match="--repeats must be >= 1"):
        bench.main(**{**TINY, "repeats": 0})
