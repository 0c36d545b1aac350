"""Optuna tuning on tiny synthetic slices: studies per arch, resume, pruning, failures, PostgreSQL, round trip."""

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from mtl_bench import cli, tune
from mtl_bench.config import RunConfig
from mtl_bench.errors import UserInputError

ROWS = {"train_rows": 256, "validation_rows": 128, "test_rows": 64}
TINY = ["--param", "train_rows=256", "--param", "validation_rows=128", "--param", "test_rows=64"]


def _config(**kw) -> RunConfig:
    return RunConfig(**{"suite": "synthetic", "suite_params": dict(ROWS), "epochs": 1, "jobs": 1, **kw})


def _space(tmp_path, text: str) -> str:
    path = tmp_path / "space.toml"
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.mark.parametrize("arch", ["single", "shared_bottom", "mmoe", "ple"])
def test_three_trial_study_per_arch(tmp_path, arch):
    result = tune.tune(_config(), arch, n_trials=3, out=tmp_path / "t", progress=None)
    trials = pd.read_csv(tmp_path / "t" / "trials.csv")
    assert len(trials) == 3 and set(trials.state) == {"COMPLETE"}
    assert {"value", "duration_s", "params_learning_rate", "params_batch_size", "state"} <= set(trials.columns)
    assert (tmp_path / "t" / "study.db").is_file() and (tmp_path / "t" / "plots" / "history.png").is_file()
    best = RunConfig.from_toml(result.config_path)
    arch_name = tune._arm(arch, "joint")[0]
    assert list(best.arch_params) == [arch_name] and best.learning_rate == result.best_params["learning_rate"]
    assert best.regimes == (["single"] if arch == "single" else ["joint"])
    assert set(best.arch_params[arch_name]) == set(result.best_params) - set(tune.TRAINING_PARAMS)
    assert result.best_values[0] == trials.value.max()


@pytest.mark.slow
def test_resume_after_kill_loses_only_the_inflight_trial(tmp_path):
    out = tmp_path / "t"
    script = textwrap.dedent(f"""
        import os, signal, time
        from mtl_bench import tune
        from mtl_bench.config import RunConfig
        real = tune._evaluate_trial
        def dying(trial, setup):
            if trial.number == 1:
                time.sleep(1.5)  # let the heartbeat thread record the running trial
                os.kill(os.getpid(), signal.SIGKILL)  # killed mid-trial, as by the OOM killer or kill -9
            return real(trial, setup)
        tune._evaluate_trial = dying
        config = RunConfig(suite="synthetic", suite_params={ROWS!r}, epochs=1, jobs=1)
        tune.tune(config, "mmoe", n_trials=3, out={str(out)!r}, heartbeat_interval=1, grace_period=1, progress=None)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    time.sleep(2)  # past the grace period: the killed trial's heartbeat is stale
    result = tune.tune(_config(), "mmoe", n_trials=3, out=out, heartbeat_interval=1, grace_period=1, progress=None)
    trials = result.trials.set_index("number")
    assert list(trials.state) == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert trials.loc[1, "reason"] == tune.INTERRUPTED
    # Trial 0 survived the kill unchanged; the budget counts finished trials only.
    assert (trials.state == "COMPLETE").sum() == 3


def test_deliberately_bad_trial_is_pruned(tmp_path):
    space = _space(tmp_path, """
        [common]
        learning_rate = {low = 1e-6, high = 1e-1, log = true}
        batch_size = 64
        embedding_dim = 8
        tower_units = 8
        dropout = 0.0
        [mmoe]
        num_experts = 4
        expert_units = 16
    """)
    result = tune.tune(
        _config(epochs=3, patience=0), "mmoe", n_trials=2, out=tmp_path / "t", space_file=space, progress=None,
        pruner="median", pruner_params={"n_startup_trials": 1, "n_warmup_steps": 0},
        enqueue=[{"learning_rate": 1e-2}, {"learning_rate": 1e-6}],
    )
    trials = result.trials.set_index("number")
    assert trials.loc[0, "state"] == "COMPLETE" and trials.loc[0, "last_step"] == 3
    assert trials.loc[1, "state"] == "PRUNED" and trials.loc[1, "last_step"] == 1


def test_invalid_and_diverged_trials_fail_with_reason_and_the_study_goes_on(tmp_path):
    space = _space(tmp_path, """
        [common]
        learning_rate = [1e9, 1e-2]
        [mmoe]
        expert_units = [0, 16]
    """)
    result = tune.tune(
        _config(), "mmoe", n_trials=3, out=tmp_path / "t", space_file=space, progress=None,
        enqueue=[{"learning_rate": 1e9, "expert_units": 16}, {"learning_rate": 1e-2, "expert_units": 0},
                 {"learning_rate": 1e-2, "expert_units": 16}],
    )
    trials = result.trials.set_index("number")
    assert list(trials.state) == ["FAIL", "FAIL", "COMPLETE"]
    assert trials.loc[0, "reason"].startswith("diverged: training loss")
    assert trials.loc[1, "reason"].startswith("invalid configuration") and "expert_units" in trials.loc[1, "reason"]
    assert result.best_params["expert_units"] == 16


@pytest.mark.slow
def test_per_task_objective_reports_the_pareto_front(tmp_path):
    result = tune.tune(_config(), "shared_bottom", n_trials=3, objective="per_task", out=tmp_path / "t", progress=None)
    assert result.pareto and len(result.best_values) == 2
    pareto = pd.read_csv(tmp_path / "t" / "pareto.csv")
    assert set(pareto.number) == set(result.pareto) and {"value_0", "value_1"} <= set(pareto.columns)
    assert (tmp_path / "t" / "plots" / "pareto_front.png").is_file()


def test_best_config_round_trips_into_mtl_bench_run(tmp_path, capsys):
    out = tmp_path / "t"
    code = cli.main(["tune", "--suite", "synthetic", *TINY, "--arch", "ple", "--trials", "2", "--epochs", "1",
                     "--retrain-seeds", "1", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    best = RunConfig.from_toml(out / "config.toml")
    code = cli.main(["run", "--config", str(out / "config.toml"), "--jobs", "1", "--no-probe",
                     "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 0
    ran = RunConfig.from_toml(tmp_path / "run" / "config.toml")
    assert ran.arch_params == best.arch_params and ran.learning_rate == best.learning_rate
    assert set(pd.read_csv(tmp_path / "run" / "metrics.csv").arch) == {"ple"}


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--arch", "mmoe", "--objective", "ndcg"], "valid objectives"),
        (["--arch", "bogus"], "bogus"),
        (["--arch", "mmoe", "--pruner", "coin"], "valid pruners"),
        (["--arch", "mmoe", "--main-task", "nope"], "nope"),
        (["--arch", "mmoe", "--space", "missing.toml"], "missing.toml"),
        (["--arch", "mmoe", "--param", "correlation=0.5,0.0"], "one suite variant"),
    ],
)
def test_bad_tune_input_exits_2_with_one_line(tmp_path, capsys, argv, needle):
    code = cli.main(["tune", "--suite", "synthetic", *TINY, *argv, "--out", str(tmp_path / "t")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and "\n" not in err


def test_unknown_space_parameter_is_a_user_error(tmp_path):
    space = _space(tmp_path, "[mmoe]\nnum_levels = 2\n")
    with pytest.raises(UserInputError, match="num_levels"):
        tune.tune(_config(), "mmoe", n_trials=1, out=tmp_path / "t", space_file=space, progress=None)


@pytest.mark.slow
def test_equal_budget_arms_retrain_for_report(tmp_path):
    from mtl_bench.analysis.report import build_report

    result = tune.tune_arms(_config(), ["single", "mmoe"], n_trials=2, objective="transfer", retrain_seeds=2,
                            out=tmp_path / "t", progress=None)
    assert set(result.studies) == {"single", "mmoe"}
    assert all(len(r.trials) == 2 for r in result.studies.values())
    assert result.studies["mmoe"].trials.value.notna().all()
    assert set(result.run_dirs) == {"single", "mmoe"}
    seeds = {arm: set(pd.read_csv(d / "metrics.csv").seed) for arm, d in result.run_dirs.items()}
    assert seeds == {"single": {0, 1}, "mmoe": {0, 1}}
    tasks, _ = build_report([result.run_dirs["mmoe"], result.run_dirs["single"]])
    assert not tasks.empty


# --------------------------------------------------------------------------- PostgreSQL


def _initdb() -> str | None:
    found = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))), None)
    return found


def _missing(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI installs PostgreSQL via make test; a skip would hide the test)")
    pytest.skip(reason)


@pytest.fixture
def postgres_url():
    """A throw-away PostgreSQL server on a free local port; yields its SQLAlchemy URL."""
    initdb = _initdb()
    if initdb is None:
        _missing("PostgreSQL is not installed (apt-get install postgresql; make test does it as root)")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        _missing("psycopg2 is not installed (pip install -e '.[dev]')")
    bindir = Path(initdb).resolve().parent
    root = Path(tempfile.mkdtemp(prefix="mtl-bench-pg-", dir="/tmp"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = root / "data"
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True, timeout=120)  # noqa: E731
    run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "start",
        "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1")
    try:
        run(str(bindir / "createdb") if (bindir / "createdb").exists() else "createdb",
            "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "optuna")
        yield f"postgresql://postgres@127.0.0.1:{port}/optuna"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_postgresql_two_workers_lose_and_duplicate_no_trial(tmp_path, postgres_url):
    n = 6
    result = tune.tune(_config(), "shared_bottom", n_trials=n, workers=2, storage=postgres_url,
                       study_name="pg-two-workers", out=tmp_path / "t", progress=None)
    trials = result.trials
    assert sorted(trials.number) == list(range(n))  # none lost, none duplicated
    assert set(trials.state) <= {"COMPLETE", "PRUNED"}  # every trial finished; none failed or left running
    assert trials.drop_duplicates([c for c in trials.columns if c.startswith("params_")]).shape[0] == n
    assert result.storage == postgres_url
    # The study is in PostgreSQL: a fresh process-independent load sees the same trials.
    again = tune.tune(_config(), "shared_bottom", n_trials=n, workers=2, storage=postgres_url,
                      study_name="pg-two-workers", out=tmp_path / "t2", progress=None)
    assert sorted(again.trials.number) == list(range(n))
