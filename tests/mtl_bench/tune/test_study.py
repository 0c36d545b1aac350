"""Running a study: the pruning callback, pruned/failed/killed trials, resume, and PostgreSQL with workers."""

import fcntl
import functools
import glob
import json
import math
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
import types
from pathlib import Path

import optuna
import pytest

from mtl_bench import tune
from mtl_bench.config import RunConfig
from mtl_bench.errors import UserInputError
from mtl_bench.tune import storage as storage_lib
from mtl_bench.tune import study as study_lib
from mtl_bench.tune.study import PruningCallback

class _Always(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


def _fit(callback: PruningCallback, values: list[float | None]) -> None:
    """What the trainer does with its callbacks over one fit, one epoch per value."""
    callback.on_train_begin()
    for epoch, value in enumerate(values):
        callback.on_epoch_end(epoch, {"val_selection_loss": 1.0} if value is None else {"val_x": value})


def test_pruning_callback_reports_each_fit_on_its_own_steps():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    callback = PruningCallback(trial, "val_x", epochs_per_fit=3)
    _fit(callback, [0.1, 0.2])  # stopped early after 2 of 3 epochs
    _fit(callback, [0.3, None, math.nan])  # a missing and a non-finite value are not reported
    study.tell(trial, 0.0)
    assert study.trials[0].intermediate_values == {1: 0.1, 2: 0.2, 4: 0.3}
    # A function of the logs as the monitor; one fit reports epochs 1, 2, ... as Optuna's callback does.
    trial = study.ask()
    callback = PruningCallback(trial, lambda logs: 2 * logs["val_x"] if "val_x" in logs else None)
    _fit(callback, [0.1, None, 0.4])
    study.tell(trial, 0.0)
    assert study.trials[1].intermediate_values == {1: 0.2, 3: 0.8}


def test_pruning_callback_raises_trial_pruned_when_told():
    study = optuna.create_study(direction="maximize", pruner=_Always())
    callback = PruningCallback(study.ask(), "val_x")
    callback.on_train_begin()
    with pytest.raises(optuna.TrialPruned, match="step 1"):
        callback.on_epoch_end(0, {"val_x": 0.5})


def test_pruning_signal_is_read_on_the_selection_rows_and_the_value_on_the_outcome_rows(tmp_path, tiny_config):
    # One epoch: the selected weights are the epoch's, so where selection and outcome rows coincide
    # (selection_share = 0) the reported epoch-1 value is the trial's value; with a split they differ.
    for share in (0.0, 0.5):
        result = tune.tune(tiny_config(selection_share=share), "mmoe", n_trials=1, out=tmp_path / f"t{share}",
                           pruner="none", progress=None)
        study = optuna.load_study(study_name=result.study_name, storage=result.storage)
        (trial,) = study.trials
        assert list(trial.intermediate_values) == [1]
        if share == 0.0:
            assert trial.intermediate_values[1] == pytest.approx(trial.value, rel=1e-9)
        else:
            assert trial.intermediate_values[1] != pytest.approx(trial.value, rel=1e-6)


def test_deliberately_bad_trial_is_pruned(tmp_path, tiny_config, write_space):
    space = write_space("""
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
        tiny_config(epochs=3, patience=0), "mmoe", n_trials=2, out=tmp_path / "t", space_file=space, progress=None,
        pruner="median", pruner_params={"n_startup_trials": 1, "n_warmup_steps": 0},
        enqueue=[{"learning_rate": 1e-2}, {"learning_rate": 1e-6}],
    )
    trials = result.trials.set_index("number")
    assert trials.loc[0, "state"] == "COMPLETE" and trials.loc[0, "last_step"] == 3
    assert trials.loc[1, "state"] == "PRUNED" and trials.loc[1, "last_step"] == 1


def test_invalid_and_diverged_trials_fail_with_reason_and_the_study_goes_on(tmp_path, tiny_config, write_space):
    space = write_space("""
        [common]
        learning_rate = [1e9, 1e-2]
        [mmoe]
        expert_units = [0, 16]
    """)
    result = tune.tune(
        tiny_config(), "mmoe", n_trials=3, out=tmp_path / "t", space_file=space, progress=None,
        enqueue=[{"learning_rate": 1e9, "expert_units": 16}, {"learning_rate": 1e-2, "expert_units": 0},
                 {"learning_rate": 1e-2, "expert_units": 16}],
    )
    trials = result.trials.set_index("number")
    assert list(trials.state) == ["FAIL", "FAIL", "COMPLETE"]
    assert trials.loc[0, "reason"].startswith("diverged: training loss")
    assert trials.loc[1, "reason"].startswith("invalid configuration") and "expert_units" in trials.loc[1, "reason"]
    assert result.best_params["expert_units"] == 16


@pytest.mark.slow
def test_resume_after_kill_loses_only_the_inflight_trial(tmp_path, tiny_config):
    out = tmp_path / "t"
    script = textwrap.dedent(f"""
        import os, signal, sqlite3, time
        from mtl_bench import tune
        from mtl_bench.config import RunConfig
        from mtl_bench.tune import study
        real = study.evaluate_trial
        def beating(trial_id):
            with sqlite3.connect({str(out / "study.db")!r}, timeout=60) as db:
                return db.execute("SELECT count(*) FROM trial_heartbeats WHERE trial_id = ?", (trial_id,)).fetchone()[0]
        def dying(trial, setup):
            if trial.number == 1:
                deadline = time.time() + 120
                while not beating(trial._trial_id) and time.time() < deadline:  # the running trial is recorded
                    time.sleep(0.1)
                os.kill(os.getpid(), signal.SIGKILL)  # killed mid-trial, as by the OOM killer or kill -9
            return real(trial, setup)
        study.evaluate_trial = dying
        config = RunConfig(suite="synthetic", suite_params={tiny_config().suite_params!r}, epochs=1, jobs=1)
        tune.tune(config, "mmoe", n_trials=3, out={str(out)!r}, heartbeat_interval=1, grace_period=1, progress=None)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    time.sleep(2)  # past the grace period: the killed trial's heartbeat is stale
    result = tune.tune(tiny_config(), "mmoe", n_trials=3, out=out, heartbeat_interval=1, grace_period=1, progress=None)
    trials = result.trials.set_index("number")
    assert list(trials.state) == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert trials.loc[1, "reason"] == tune.INTERRUPTED
    # Trial 0 survived the kill unchanged; the budget counts finished trials only.
    assert (trials.state == "COMPLETE").sum() == 3
    # The resumed process continues the sampler's stream: no finished trial repeats another's parameters.
    done = trials[trials.state == "COMPLETE"]
    assert len(done.drop_duplicates([c for c in done.columns if c.startswith("params_")])) == 3


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
def test_postgresql_two_workers_lose_and_duplicate_no_trial(tmp_path, postgres_url, tiny_config):
    n = 6
    result = tune.tune(tiny_config(), "shared_bottom", n_trials=n, workers=2, storage=postgres_url,
                       study_name="pg-two-workers", out=tmp_path / "t", progress=None)
    trials = result.trials
    driver = postgres_url.replace("postgresql://", "postgresql+psycopg2://")  # psycopg 3 may be absent
    study = optuna.load_study(study_name="pg-two-workers", storage=driver)
    done = [t for t in study.trials if study_lib.is_counted(t)]
    assert len(done) == n  # the budget exactly: none lost, none over
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in done)
    assert len({tuple(sorted(t.params.items())) for t in done}) == n  # distinct
    assert all(study_lib.SKIPPED in t.user_attrs for t in study.trials if not study_lib.is_counted(t))
    assert result.storage == postgres_url
    # The study is in PostgreSQL: a fresh process-independent load sees the same trials.
    again = tune.tune(tiny_config(), "shared_bottom", n_trials=n, workers=2, storage=postgres_url,
                      study_name="pg-two-workers", out=tmp_path / "t2", progress=None)
    assert sorted(again.trials.number) == sorted(trials.number)


@pytest.mark.slow
def test_processes_creating_one_new_sqlite_study_at_the_same_instant_all_open_it(tmp_path, tiny_config):
    # Optuna creates its tables and version rows check-then-insert: without a guard, 4 twins on one new file
    # failed in 14 of 32 openings ("table studies already exists", a UNIQUE failure on the version row); a
    # twin could also read a signature half written by another and refuse it as "made for another arm".
    n_procs, rounds = 4, 5
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from mtl_bench.config import RunConfig
        from mtl_bench.tune import study
        tmp = Path({str(tmp_path)!r})
        config = RunConfig(suite="synthetic", suite_params={tiny_config().suite_params!r}, epochs=1, jobs=1)
        (tmp / f"ready{{sys.argv[1]}}").touch()
        while not (tmp / "go").exists():
            time.sleep(0.01)
        start = float((tmp / "go").read_text())
        for r in range({rounds}):
            while time.time() < start + r:
                pass
            setup = study.StudySetup(config=config, arch="mmoe", regime="joint", objective="mean_auc", space={{}},
                                     storage=f"sqlite:///{{tmp}}/s{{r}}.db", study_name="twins", n_trials=1)
            try:
                study.open_study(setup, create=True)
                print("ok", flush=True)
            except Exception as err:
                print("FAIL", err, flush=True)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i)], stdout=subprocess.PIPE, text=True)
             for i in range(n_procs)]
    deadline = time.time() + 300
    while len(list(tmp_path.glob("ready*"))) < n_procs and time.time() < deadline:
        time.sleep(0.05)
    (tmp_path / "go.tmp").write_text(str(time.time() + 1.0))
    os.replace(tmp_path / "go.tmp", tmp_path / "go")  # whole: a twin must never read it half written
    lines = [line for proc in procs for line in proc.communicate(timeout=300)[0].splitlines()]
    assert lines == ["ok"] * (n_procs * rounds)
    for r in range(rounds):
        studies = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/s{r}.db").get_all_studies()
        assert [(s.study_name, s.user_attrs["arch"]) for s in studies] == [("twins", "mmoe")]


def test_a_storage_whose_creation_races_a_twin_is_retried_and_a_persistent_failure_is_one_line(monkeypatch):
    import sqlalchemy

    calls = []

    def racing(url, **kwargs):
        calls.append(url)
        if len(calls) < 2:
            raise sqlalchemy.exc.IntegrityError("INSERT INTO version_info", {}, Exception("duplicate key"))
        return "storage"

    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    monkeypatch.setattr(storage_lib.time, "sleep", lambda seconds: None)
    open_ = functools.partial(storage_lib.open_storage, "postgresql://u@h/db", heartbeat_interval=10, grace_period=30)
    assert open_() == "storage" and len(calls) == 2

    calls.clear()
    monkeypatch.setattr(storage_lib, "_INIT_ATTEMPTS", 1)
    one_line = r"^cannot open storage 'postgresql://u@h/db': \(builtins.Exception\) duplicate key$"
    with pytest.raises(UserInputError, match=one_line):
        open_()
    assert len(calls) == 1


def test_a_signature_half_written_by_a_twin_is_read_again_until_whole(monkeypatch):
    partial, whole = {"suite": "synthetic"}, {"suite": "synthetic", "arch": "mmoe"}
    reads = iter([partial, partial, partial, whole])

    class Study:
        @property
        def user_attrs(self):  # each access is one query of the storage
            return dict(next(reads))

    monkeypatch.setattr(study_lib.time, "sleep", lambda seconds: None)
    assert study_lib._settled(Study(), ["suite", "arch"]) == whole
    assert next(reads, "none left") == "none left"


@pytest.mark.parametrize("url", ["sqlite:x.db", "sqlite", "sqlite:///file:x?mode=memory&uri=true"])
def test_a_malformed_or_uri_sqlite_url_is_left_to_the_storage_and_creates_no_file(url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with storage_lib.creating_alone(url):
        pass
    assert list(tmp_path.iterdir()) == []
    if url != "sqlite:///file:x?mode=memory&uri=true":
        with pytest.raises(UserInputError, match=rf"^cannot open storage {re.escape(repr(url))}: "):
            storage_lib.open_storage(url, heartbeat_interval=10, grace_period=30)


def test_creating_a_study_waits_for_a_twin_then_says_so_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(storage_lib, "_CREATE_WAIT_SECONDS", 0.3)
    twin = os.open(tmp_path, os.O_RDONLY)
    fcntl.flock(twin, fcntl.LOCK_EX)  # another open file description: as another process holds it
    try:
        with pytest.raises(UserInputError, match=r"another process has been creating a study in .* for over 0 s"):
            with storage_lib.creating_alone(f"sqlite:///{tmp_path}/s.db"):
                pass
    finally:
        os.close(twin)
    with storage_lib.creating_alone(f"sqlite:///{tmp_path}/s.db"):
        assert not (tmp_path / "s.db").exists()  # the directory is locked, not the database file


def test_the_lock_leaves_sqlites_own_locks_held_by_this_process(tmp_path):
    # Closing any descriptor of a file drops every POSIX lock the process holds on it, SQLite's included: a
    # lock taken on the database file itself let another process write while this one held the write lock.
    db = tmp_path / "s.db"
    writer = sqlite3.connect(db, timeout=0, isolation_level=None)
    writer.execute("CREATE TABLE t (x)")
    writer.execute("BEGIN IMMEDIATE")
    with storage_lib.creating_alone(f"sqlite:///{db}"):
        pass
    other = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None); c.execute('BEGIN IMMEDIATE')"
    done = subprocess.run([sys.executable, "-c", other, str(db)], capture_output=True, text=True, timeout=60)
    writer.execute("ROLLBACK")
    assert done.returncode == 1 and "database is locked" in done.stderr


def test_a_study_tuned_before_paths_were_recorded_as_run_records_them_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    current = {"table": str(tmp_path / "clicks.toml"), "sha256": "ab:cd", "seed": 0}
    setup = types.SimpleNamespace(config=RunConfig(suite="table"), variant=tuple(sorted(current.items())),
                                  arch="mmoe", regime="joint", objective="mean_auc", study_name="s", storage="memory")
    study = optuna.create_study()
    legacy = {**study_lib._signature(setup), "variant": json.dumps({"seed": 0, "table": "clicks.toml"}, sort_keys=True)}
    for key, value in legacy.items():
        study.set_user_attr(key, value)
    study_lib._sign(study, setup)
    assert json.loads(study.user_attrs["variant"]) == current  # recorded as run records it from now on
    elsewhere = {**legacy, "variant": json.dumps({"seed": 0, "table": "other/clicks.toml"}, sort_keys=True)}
    study = optuna.create_study()
    for key, value in elsewhere.items():
        study.set_user_attr(key, value)
    with pytest.raises(UserInputError, match="was made for another arm or suite variant"):
        study_lib._sign(study, setup)
