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


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--arch", "mmoe,bogus"], "unknown multi-task architecture 'bogus'; valid architectures"),
        (["--regime", "hourly"], "unknown regime 'hourly'; valid regimes"),
        (["--remedy", "aspirin"], "unknown remedy 'aspirin'; valid remedies"),
        (["--suite", "nope"], "unknown suite 'nope'; valid suites"),
        (["--arch", "mmoe,mmoe"], "archs must be a list that names each arch once"),
        (["--seeds", "100000000"], "seeds must be an integer in [1, 1000]"),
        (["--jobs", "-1"], "jobs must be an integer >= 0"),
        (["--probe-every", "-5"], "probe_every must be an integer >= 0"),
    ],
)
def test_bad_names_and_sizes_are_refused_before_tensorflow_loads(tmp_path, argv, needle):
    """A bug report: every bad-input error waited 13-22 s for TensorFlow to import."""
    import subprocess
    import sys

    script = ("import sys\nfrom mtl_bench import cli\ncode = cli.main(sys.argv[1:])\n"
              "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\nsys.exit(code)")
    done = subprocess.run([sys.executable, "-c", script, "run", *argv, "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-1500:]
    assert needle in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_run_help_shows_the_configurations_defaults(capsys):
    from mtl_bench.config import RunConfig

    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split("\noptions:")[1].split())  # argparse wraps lines
    d = RunConfig()
    for flag, shown in [("--epochs N", d.epochs), ("--seeds N", d.seeds), ("--patience N", d.patience),
                        ("--batch-size N", d.batch_size), ("--learning-rate LR", d.learning_rate),
                        ("--probe-every N", d.probe_every), ("--selection-share S", d.selection_share),
                        ("--arch A,B,..", ",".join(d.archs)), ("--regime R,..", ",".join(d.regimes))]:
        start = out.index(flag)
        assert f"(default: {shown})" in out[start:out.index(" --", start + len(flag))], flag


def test_report_help_prints_a_plain_percent(capsys):
    with pytest.raises(SystemExit):
        cli.main(["report", "--help"])
    out = capsys.readouterr().out
    assert "95% CI" in " ".join(out.split()) and "%%" not in out


def test_dry_run_counts_the_cells_and_writes_nothing(tmp_path, capsys):
    # 2 variants × 2 seeds × (single + joint, one architecture each with the same_arch baseline) = 8 cells.
    code = cli.main(["run", "--arch", "mmoe", "--regime", "single,joint", "--param", "correlation=0.5,0.0",
                     "--param", "train_rows=400", "--seeds", "2", "--dry-run", "--out", str(tmp_path / "run")])
    assert code == 0
    assert "8 cell(s) planned" in capsys.readouterr().out
    assert not (tmp_path / "run").exists() and not any(tmp_path.iterdir())


def test_resume_refuses_run_flags(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "manifest.json").write_text('{"experiment": "grid"}')
    code = cli.main(["run", "--resume", str(run_dir), "--epochs", "2", "--arch", "ple", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "takes only --jobs, --executor, --scheduler and --quiet. Received: --arch --epochs" in err


def test_an_out_under_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code = cli.main(["run", "--arch", "mmoe", "--regime", "joint", *SMALL, "--out", str(tmp_path / "file" / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and err.startswith("mtl-bench: error: cannot write") and "file" in err


def test_a_full_disk_is_one_line_and_exit_1(monkeypatch, capsys):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "runs/x/metrics.csv")

    monkeypatch.setattr(cli.experiments, "run", full)
    assert cli.main(["run", "--arch", "mmoe", "--quiet"]) == 1
    assert capsys.readouterr().err.strip() == "mtl-bench: error: cannot write runs/x/metrics.csv: No space left on device"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    code = cli.main(["run", "--arch", "mmoe", "--regime", "single,joint", "--param", "correlation=0.5",
                     *SMALL[:-6], "--seeds", "2", "--batch-size", "128", "--jobs", "1", "--out", str(out), "--quiet"])
    assert code == 0
    return out


def _copy(run_dir, tmp_path):
    import shutil

    return shutil.copytree(run_dir, tmp_path / "copy")


def test_report_warns_of_an_unfinished_run_and_of_too_few_seeds(finished_run, tmp_path, capsys):
    import json

    run_dir = _copy(finished_run, tmp_path)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["planned_cells"] == 4 and len(manifest["cells"]) == 4  # 2 seeds × (single + joint)
    manifest.update(status="interrupted", reason="interrupted by the user; continue with --resume", planned_cells=24)
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    assert cli.main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "run interrupted, 4 of 24 cells finished" in out
    assert "2 seed(s): an interval over seeds needs at least 3" in out
    report = (run_dir / "report.md").read_text()
    assert "4 of 24 cells finished" in report and "needs at least 3" in report


def _cut(text):
    """The file cut off in its 11th row, before the task field (as a full disk or a killed copy leaves it)."""
    lines = text.splitlines()
    return "\n".join(lines[:10] + [lines[10][:lines[10].index(",task")]])


@pytest.mark.parametrize(
    "damage, needle",
    [
        (lambda d: (d / "metrics.csv").write_text(""), "metrics.csv is not a result table"),
        (lambda d: (d / "metrics.csv").write_text("a,b\n1,2\n"), "is not a metrics table written by mtl-bench run"),
        (lambda d: (d / "metrics.csv").write_text(_cut((d / "metrics.csv").read_text())),
         "metrics.csv is truncated or edited: row 11 lacks fields"),
        (lambda d: (d / "manifest.json").write_text('{"status": "compl'), "manifest.json is not valid JSON"),
    ],
)
def test_report_on_damaged_files_is_one_line(finished_run, tmp_path, capsys, damage, needle):
    run_dir = _copy(finished_run, tmp_path)
    damage(run_dir)
    assert cli.main(["report", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err


def test_resume_of_a_corrupt_manifest_is_one_line(finished_run, tmp_path, capsys):
    run_dir = _copy(finished_run, tmp_path)
    (run_dir / "manifest.json").write_text("{")
    assert cli.main(["run", "--resume", str(run_dir), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "manifest.json is not valid JSON" in err and "\n" not in err


@pytest.mark.parametrize("flags, needle", [
    (["--scheduler", "tcp://127.0.0.1:8786"], "--scheduler needs --executor dask"),
    (["--executor", "dask", "--scheduler", "tcp://127.0.0.1:8786", "--jobs", "2"], "--jobs sets local worker processes"),
    (["--executor", "dask"], "needs a scheduler address: --scheduler tcp://HOST:PORT"),
])
def test_executor_flags_that_cannot_run_are_one_line(flags, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    code = cli.main(["run", "--arch", "mmoe", *flags, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and needle in err
    assert not (tmp_path / "run").exists()


def test_the_dask_executor_without_the_extra_says_what_to_install(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed now raises ImportError
    code = cli.main(["run", "--arch", "mmoe", "--executor", "dask", "--scheduler", "tcp://127.0.0.1:8786",
                     "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == ("mtl-bench: error: the dask executor needs the dask extra on the driver and every "
                                 "worker: pip install 'mtl-bench[dask]' (or pip install distributed)")
    assert not (tmp_path / "run").exists()


def test_a_run_stopped_by_its_surroundings_is_one_line_and_exit_1(monkeypatch, capsys):
    from mtl_bench.errors import RunStopped

    def stopped(*args, **kwargs):
        raise RunStopped("lost the Dask scheduler or the run's tasks (scheduler-connection-lost); the finished work "
                         "is kept: continue with --resume")

    monkeypatch.setattr(cli.experiments, "run", stopped)
    assert cli.main(["run", "--arch", "mmoe", "--quiet"]) == 1
    assert capsys.readouterr().err.strip() == (
        "mtl-bench: error: lost the Dask scheduler or the run's tasks (scheduler-connection-lost); the finished work "
        "is kept: continue with --resume")
