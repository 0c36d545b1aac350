import pandas as pd
import pytest

from mtl_bench import cli

SMALL = ["--param", "train_rows=400", "--param", "validation_rows=200", "--param", "test_rows=200",
         "--epochs", "1", "--seeds", "1", "--batch-size", "128", "--jobs", "1"]


def test_help_is_complete(capsys):
    with pytest.raises(SystemExit) as err:
        cli.main(["run", "--help"])
    assert err.value.code == 0
    out = capsys.readouterr().out
    for flag in ["--suite", "--group", "--table", "--arch", "--regime", "--epochs", "--seeds", "--config", "--out", "--resume",
                 "--selection", "--selection-share", "--lookahead-steps"]:
        assert flag in out


def test_run_writes_run_dir_and_prints_table(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["run", "--arch", "mmoe", "--regime", "single,joint", "--param", "correlation=0.5,0.0",
                     *SMALL, "--out", str(out), "--quiet"])
    assert code == 0
    summary = pd.read_csv(out / "summary.csv")
    assert sorted(summary.correlation.unique()) == [0.0, 0.5]
    code = cli.main(["run", "--config", str(out / "config.toml"), "--out", str(tmp_path / "again")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "mmoe" in printed and "transfer" in printed
    assert (out / "summary.csv").read_text() == (tmp_path / "again" / "summary.csv").read_text()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["run", "--suite", "nope"], "valid suites"),
        (["run", "--arch", "mmoe,bogus"], "bogus"),
        (["run", "--regime", "hourly"], "valid regimes"),
        (["run", "--regime", "daily"], "regime 'daily' needs a suite with days"),
        (["run", "--epochs", "0"], "epochs"),
        (["run", "--epochs", "three"], "--epochs"),
        (["run", "--suite", "census-income", "--group", "age"], "group"),
        (["run", "--suite", "table", "--table", "missing.toml"], "missing.toml"),
        (["run", "--config", "nope.toml"], "nope.toml"),
        (["run", "--resume", "no/such/run"], "not a run directory"),
        (["run", "--suite", "planted", "--param", "mechanism=gradient"], "mechanism must be one of"),
        (["run", "--selection", "best"], "invalid choice"),
        (["run", "--selection-share", "1.5"], "selection_share must be a number in [0, 1)"),
        (["calibrate", "--draws", "0"], "draws must be an integer >= 1"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, needle):
    out = tmp_path / "run"
    code = cli.main([*argv, "--out", str(out)] if argv[0] == "run" else argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert needle in err and "\n" not in err and err.startswith("mtl-bench")
    assert not out.exists()


def test_run_planted_fills_in_the_suites_model(tmp_path):
    out = tmp_path / "run"
    code = cli.main(["run", "--suite", "planted", "--param", "mechanism=conflict", "--param", "train_rows=512",
                     "--param", "validation_rows=256", "--param", "test_rows=128", "--arch", "shared_bottom",
                     "--regime", "joint", "--epochs", "1", "--seeds", "1", "--jobs", "1", "--out", str(out), "--quiet"])
    assert code == 0
    from mtl_bench.config import RunConfig
    from mtl_bench.tasks import planted

    assert RunConfig.from_toml(out / "config.toml").arch_params == planted.ARCH_PARAMS


def test_version(capsys):
    import mtl_bench

    with pytest.raises(SystemExit) as err:
        cli.main(["--version"])
    assert err.value.code == 0
    assert capsys.readouterr().out.strip() == f"mtl-bench {mtl_bench.__version__}"


def test_resume_dispatches_on_the_manifests_experiment(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "manifest.json").write_text('{"experiment": "hourly"}')
    assert cli.main(["run", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("mtl-bench: error: unknown experiment 'hourly'; valid experiments: "
                   "['grid', 'cohort', 'sparse-dense', 'policy']")
