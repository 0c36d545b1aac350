"""End-to-end runs on small slices: every suite × architecture × regime for one epoch."""

import os

import pandas as pd
import pytest

from mtl_bench import experiments
from mtl_bench.experiments import grid as runner
from mtl_bench.config import RunConfig
from mtl_bench.errors import UserInputError
from mtl_bench.engine.regimes import REGIMES
from mtl_bench.analysis.summary import SUMMARY_STATS
from mtl_bench.engine.training import TrainingDiverged

ARCHS = ["shared_bottom", "mmoe", "omoe", "ple"]
METRIC_COLUMNS = ["suite", "arch", "regime", "order", "seed", "phase", "epoch", "task", "split", "metric", "value"]


def _small(**kw) -> RunConfig:
    base = dict(
        suite="synthetic",
        suite_params={"correlation": 0.5, "train_rows": 512, "validation_rows": 256, "test_rows": 256},
        archs=ARCHS,
        seeds=1,
        epochs=1,
        batch_size=128,
        jobs=1,
        single_baseline="single_task",
    )
    base.update(kw)
    return RunConfig(**base)


def _run(config, **kw):
    """In this process, so tests can patch regimes; the worker-pool path has its own test below."""
    return runner.run(config, in_process=True, **kw)


def _table(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    n = 600
    frame = pd.DataFrame(
        {
            "price": rng.normal(size=n),
            "country": rng.choice(["de", "fr", "us"], n),
            "clicked": rng.choice(["yes", "no"], n),
            "dwell": rng.gamma(2.0, size=n),
        }
    )
    frame.to_csv(tmp_path / "logs.csv", index=False)
    spec = tmp_path / "logs.toml"
    spec.write_text(
        '[data]\npath = "logs.csv"\n[features]\nnumeric = ["price"]\ncategorical = ["country"]\n'
        '[tasks.click]\nlabel = "clicked"\nkind = "binary"\npositive = ["yes"]\n'
        '[tasks.dwell]\nlabel = "dwell"\nkind = "regression"\n'
    )
    return str(spec)


def _check_run(run_dir, n_cells, regimes=("single", "joint", "sequential")):
    manifest = runner.io.read_json(run_dir / "manifest.json")
    assert manifest["status"] == "complete", manifest["reason"]
    assert len(manifest["cells"]) == n_cells
    metrics = pd.read_csv(run_dir / "metrics.csv", keep_default_na=False, na_values=[""])
    assert set(METRIC_COLUMNS) <= set(metrics.columns)
    final = metrics[metrics.stage == "final"]
    assert set(final.split) == {"validation", "test"}
    summary = pd.read_csv(run_dir / "summary.csv", keep_default_na=False, na_values=[""])
    assert set(SUMMARY_STATS) <= set(summary.columns)
    multi = summary[(summary.arch != "single_task") & (summary.task != "all")]
    assert multi["transfer"].notna().all()
    assert set(summary.regime) == set(regimes)
    assert (run_dir / "config.toml").is_file()
    return metrics, summary


def test_synthetic_every_arch_and_regime(tmp_path):
    config = _small()
    run_dir = _run(config, out=tmp_path / "run", progress=None)
    metrics, summary = _check_run(run_dir, 1 + len(ARCHS) * 3)
    assert "correlation" in metrics.columns and "correlation" in summary.columns
    seq = metrics[(metrics.regime == "sequential") & (metrics.stage == "final") & (metrics.split == "validation")]
    # the accuracy matrix: every task evaluated after every phase, for each order
    assert set(seq.order) == {"task1>task2", "task2>task1"}
    assert len(seq.groupby(["arch", "order", "phase", "task"])) == len(ARCHS) * 2 * 2 * 2


def test_census_every_arch_and_regime(tmp_path, census_dir):
    config = _small(
        suite="census-income",
        suite_params={"group": "income", "data_dir": str(census_dir)},
        max_train_rows=1000,
        max_eval_rows=500,
    )
    run_dir = _run(config, out=tmp_path / "run", progress=None)
    metrics, _ = _check_run(run_dir, 1 + len(ARCHS) * 3)
    assert set(metrics[metrics.metric == "auc"].task) == {"income", "marital"}
    assert runner.io.read_json(run_dir / "manifest.json")["notes"], "the test-split-only note must be recorded"


def test_table_every_arch_and_regime(tmp_path):
    config = _small(suite="table", suite_params={"table": _table(tmp_path)})
    run_dir = _run(config, out=tmp_path / "run", progress=None)
    metrics, _ = _check_run(run_dir, 1 + len(ARCHS) * 3)
    assert set(metrics.task) == {"click", "dwell"}


def test_same_seed_gives_identical_summary(tmp_path):
    config = _small(archs=["mmoe"], regimes=["single", "joint"], epochs=2)
    a = _run(config, out=tmp_path / "a", progress=None)
    b = _run(config, out=tmp_path / "b", progress=None)
    assert (a / "summary.csv").read_text() == (b / "summary.csv").read_text()
    assert (a / "metrics.csv").read_text() == (b / "metrics.csv").read_text()


def test_config_toml_reproduces_the_run(tmp_path):
    config = _small(archs=["shared_bottom"], regimes=["single", "joint"])
    a = _run(config, out=tmp_path / "a", progress=None)
    again = RunConfig.from_toml(a / "config.toml")
    b = _run(again, out=tmp_path / "b", progress=None)
    assert (a / "summary.csv").read_text() == (b / "summary.csv").read_text()


def test_resume_skips_finished_cells(tmp_path, monkeypatch):
    config = _small(archs=["shared_bottom", "mmoe"], regimes=["single", "joint"])
    joint = REGIMES["joint"]
    original = joint.run
    calls = []

    def killed_on_second_joint(job):
        calls.append(job.arch)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(job)

    monkeypatch.setattr(joint, "run", killed_on_second_joint)
    with pytest.raises(KeyboardInterrupt):
        _run(config, out=tmp_path / "run", progress=None)
    run_dir = tmp_path / "run"
    manifest = runner.io.read_json(run_dir / "manifest.json")
    assert manifest["status"] == "interrupted" and manifest["experiment"] == "grid"
    done = sorted(os.listdir(run_dir / "cells"))
    assert len([f for f in done if f.endswith(".metrics.csv")]) == 2  # single + first joint
    mtimes = {f: os.stat(run_dir / "cells" / f).st_mtime_ns for f in done}
    calls.clear()
    del manifest["experiment"]  # as a run directory from before manifests named their experiment
    runner.io.write_json(run_dir / "manifest.json", manifest)
    experiments.resume(run_dir, progress=None, in_process=True)
    assert calls == ["mmoe"]  # only the cell in flight is redone
    assert runner.io.read_json(run_dir / "manifest.json")["experiment"] == "grid"
    assert {f: os.stat(run_dir / "cells" / f).st_mtime_ns for f in done} == mtimes
    _check_run(run_dir, 3, regimes=("single", "joint"))


def _run_failing_mmoe(tmp_path, monkeypatch, error: Exception):
    """A single + joint grid of shared_bottom and mmoe whose joint mmoe cell raises ``error``."""
    joint = REGIMES["joint"]
    original = joint.run

    def fail_for_mmoe(job):
        if job.arch == "mmoe":
            raise error
        return original(job)

    monkeypatch.setattr(joint, "run", fail_for_mmoe)
    config = _small(archs=["shared_bottom", "mmoe"], regimes=["single", "joint"])
    return _run(config, out=tmp_path / "run", progress=None)


def test_diverged_cell_is_recorded_and_grid_continues(tmp_path, monkeypatch):
    run_dir = _run_failing_mmoe(tmp_path, monkeypatch,
                                TrainingDiverged("training loss of ['task1'] is not finite at epoch 1, step 3"))
    manifest = runner.io.read_json(run_dir / "manifest.json")
    failed = {k: v for k, v in manifest["cells"].items() if v["status"] == "failed"}
    assert len(failed) == 1 and "not finite" in next(iter(failed.values()))["reason"]
    assert manifest["status"] == "complete" and "1 cell(s) failed" in manifest["reason"]
    assert len(manifest["cells"]) == 3


def test_real_nan_loss_fails_the_cell(tmp_path):
    config = _small(archs=["shared_bottom"], regimes=["joint"], learning_rate=1e12,
                    suite_params={"correlation": 0.5, "train_rows": 512, "validation_rows": 256,
                                  "test_rows": 256, "scale": 1e6})
    run_dir = _run(config, out=tmp_path / "run", progress=None)
    cells = runner.io.read_json(run_dir / "manifest.json")["cells"]
    assert [v["status"] for v in cells.values()] == ["failed"]


@pytest.mark.parametrize(
    "kw, needle",
    [
        (dict(suite="nope"), "valid suites"),
        (dict(archs=["transformer"]), "valid architectures"),
        (dict(regimes=["joint", "multi"]), "valid regimes"),
        (dict(suite_params={"corelation": 0.5}), "valid parameters"),
        (dict(orders=[["task1", "task3"]]), "each task once"),
        (dict(arch_params={"mmoe": {"num_experts": 0}}), "num_experts"),
    ],
)
def test_bad_config_writes_nothing(tmp_path, kw, needle):
    with pytest.raises(UserInputError, match=needle):
        _run(_small(**kw), out=tmp_path / "run", progress=None)
    assert not (tmp_path / "run").exists()


def test_same_arch_baseline_compares_like_with_like(tmp_path):
    config = _small(archs=["shared_bottom", "mmoe"], regimes=["single", "joint"], single_baseline="same_arch")
    run_dir = _run(config, out=tmp_path / "run", progress=None)
    metrics = pd.read_csv(run_dir / "metrics.csv", keep_default_na=False, na_values=[""])
    summary = pd.read_csv(run_dir / "summary.csv", keep_default_na=False, na_values=[""])
    final = metrics[(metrics.stage == "final") & (metrics.split == "test") & (metrics.metric == "mse")]
    assert set(final[final.regime == "single"].arch) == {"shared_bottom", "mmoe"}
    for arch in ("shared_bottom", "mmoe"):
        single = final[(final.regime == "single") & (final.arch == arch) & (final.task == "task1")].value.item()
        joint = final[(final.regime == "joint") & (final.arch == arch) & (final.task == "task1")].value.item()
        row = summary[(summary.regime == "joint") & (summary.arch == arch) & (summary.task == "task1")
                      & (summary.split == "test") & (summary.metric == "mse")]
        assert row.transfer.item() == pytest.approx(single - joint, abs=1e-9)  # mse: lower is better


@pytest.mark.slow
def test_worker_count_does_not_change_results(tmp_path):
    config = _small(archs=["mmoe"], regimes=["single", "joint"], epochs=2, seeds=2)
    a = runner.run(config, out=tmp_path / "a", progress=None)
    config.jobs = 2
    b = runner.run(config, out=tmp_path / "b", progress=None)
    assert (a / "summary.csv").read_text() == (b / "summary.csv").read_text()
    assert (a / "probe.csv").read_text() == (b / "probe.csv").read_text()


PROBE_COLUMNS = ["suite", "arch", "regime", "seed", "phase", "step", "task_i", "task_j", "group", "measure", "value"]
RETENTION_COLUMNS = ["suite", "arch", "order", "seed", "phase", "task", "measure", "value"]


def test_probe_records_without_changing_training(tmp_path):
    config = _small(archs=["mmoe", "ple"], epochs=2, probe_every=2)
    probed = _run(config, out=tmp_path / "probed", progress=None)
    config.probe_every = 0
    plain = _run(config, out=tmp_path / "plain", progress=None)
    # The probe restores every weight it perturbs: training is bit-for-bit the same.
    assert (probed / "metrics.csv").read_text() == (plain / "metrics.csv").read_text()
    assert not (plain / "probe.csv").exists()
    probe = pd.read_csv(probed / "probe.csv")
    assert set(PROBE_COLUMNS) <= set(probe.columns)
    assert set(probe.regime) == {"joint", "sequential"}  # single-task models share nothing
    steps = sorted(set(probe[(probe.arch == "mmoe") & (probe.regime == "joint")].step))
    assert steps == list(range(0, steps[-1] + 1, 2))  # every 2 global steps, from step 0
    assert {"cosine", "conflict", "affinity", "gate_entropy"} <= set(probe.measure)
    cos = probe[probe.measure == "cosine"].value
    assert ((cos >= -1 - 1e-6) & (cos <= 1 + 1e-6)).all()
    retention = pd.read_csv(probed / "retention.csv")
    assert set(RETENTION_COLUMNS) <= set(retention.columns)
    assert set(retention.regime) == {"sequential"}
    assert {"forgetting_mse", "retention_mse", "backward_transfer_mse", "output_drift", "principal_angle"} <= set(
        retention.measure
    )


@pytest.mark.slow
def test_unrelated_tasks_forget_more_than_identical_tasks(tmp_path):
    # Linear tasks (no sines): p = 1 makes the two tasks the same task, p = 0 makes them unrelated.
    config = _small(
        suite_params={"correlation": [0.0, 1.0], "num_sines": 0, "train_rows": 2000, "validation_rows": 500,
                      "test_rows": 256},
        archs=["mmoe"], regimes=["sequential"], seeds=3, epochs=8, probe_every=0,
    )
    run_dir = _run(config, out=tmp_path / "run", progress=None)
    r = pd.read_csv(run_dir / "retention.csv")
    forgetting = r[(r.measure == "forgetting_mse") & (r.task != "(mean)")].groupby("correlation").value.mean()
    assert forgetting[0.0] > 0
    assert forgetting[0.0] > 1.5 * forgetting[1.0]


def test_a_cell_that_raises_fails_alone_and_the_grid_goes_on(tmp_path, monkeypatch):
    """A bug report: one failing cell (an unexpected exception) aborted the whole grid and marked the run failed."""
    run_dir = _run_failing_mmoe(tmp_path, monkeypatch, RuntimeError("something unexpected\nsecond line"))
    manifest = runner.io.read_json(run_dir / "manifest.json")
    failed = {k: v for k, v in manifest["cells"].items() if v["status"] == "failed"}
    assert list(failed.values())[0]["reason"] == "RuntimeError: something unexpected"
    assert "traceback" not in list(failed.values())[0]  # the manifest stays short...
    record = runner.io.read_json(run_dir / "cells" / f"{next(iter(failed))}.failed.json")
    assert "Traceback" in record["traceback"] and "fail_for_mmoe" in record["traceback"]  # ...the record has it
    assert manifest["status"] == "complete" and len(manifest["cells"]) == 3
    assert set(pd.read_csv(run_dir / "metrics.csv")["arch"]) == {"single_task", "shared_bottom"}


def test_every_cell_failed_exits_1(tmp_path, capsys):
    """A bug report: a run whose every cell failed said `failed` but exited 0, so scripts could not see it."""
    from mtl_bench import cli

    code = cli.main(["run", "--suite", "synthetic", "--param", "train_rows=512", "--param", "validation_rows=256",
                     "--param", "test_rows=256", "--param", "scale=1e6", "--learning-rate", "1e12",
                     "--arch", "shared_bottom", "--regime", "joint", "--seeds", "1", "--epochs", "1", "--jobs", "1",
                     "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 1
    assert capsys.readouterr().out.strip().endswith("(failed)")


def test_resume_refuses_an_edited_config(tmp_path):
    run_dir = _run(_small(archs=["shared_bottom"], regimes=["joint"]), out=tmp_path / "run", progress=None)
    text = (run_dir / "config.toml").read_text()
    (run_dir / "config.toml").write_text(text.replace("epochs = 1", "epochs = 2"))
    with pytest.raises(UserInputError, match="changed since the run started"):
        experiments.resume(run_dir, progress=None, in_process=True)


def test_a_run_directory_in_use_is_refused(tmp_path):
    import subprocess
    import sys

    run_dir = _run(_small(archs=["shared_bottom"], regimes=["joint"]), out=tmp_path / "run", progress=None)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom mtl_bench import io\nwith io.locked(sys.argv[1]):\n"
         "    print('locked', flush=True); time.sleep(60)\n", str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserInputError, match=f"is in use by pid {holder.pid}"):
            experiments.resume(run_dir, progress=None, in_process=True)
    finally:
        holder.kill()
        holder.wait()
    experiments.resume(run_dir, progress=None, in_process=True)  # free again


def test_tensorboard_without_the_package_is_refused_at_once(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(UserInputError, match=r"pip install 'mtl-bench\[tensorboard\]'"):
        _run(_small(tensorboard=str(tmp_path / "tb")), out=tmp_path / "run", progress=None)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_sigterm_stops_a_run_its_workers_and_resume_finishes_it(tmp_path):
    """Bug reports: SIGTERM left the manifest `running` and no metrics.csv; Ctrl-C let workers train queued cells
    for minutes; workers outlived a killed parent. Now: exit 130 within seconds, the finished cells' CSVs written,
    the manifest `interrupted`, no process left, and --resume completes the grid."""
    import signal
    import subprocess
    import sys
    import time
    import uuid

    mark = f"MTL_BENCH_TEST_{uuid.uuid4().hex}"
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "mtl_bench.cli", "run", "--suite", "synthetic", "--param", "train_rows=1024",
            "--param", "validation_rows=256", "--param", "test_rows=256", "--param", "correlation=0.5",
            "--arch", "shared_bottom,mmoe", "--regime", "single,joint", "--seeds", "4", "--epochs", "3",
            "--jobs", "2", "--out", str(run_dir), "--quiet"]
    proc = subprocess.Popen(args, env={**os.environ, mark: "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def marked():
        found = []
        for p in os.listdir("/proc"):
            try:
                if p.isdigit() and mark.encode() in open(f"/proc/{p}/environ", "rb").read():
                    if open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
                        found.append(p)
            except OSError:
                pass
        return found

    deadline = time.time() + 300
    while time.time() < deadline and not list(run_dir.glob("cells/*.metrics.csv")):
        time.sleep(0.5)
    committed = len(list((run_dir / "cells").glob("*.metrics.csv")))
    assert committed >= 1
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    assert time.time() - t0 < 30
    end = time.time() + 15
    while marked() and time.time() < end:
        time.sleep(0.3)
    assert not marked(), "worker processes outlived the run"
    manifest = runner.io.read_json(run_dir / "manifest.json")
    assert manifest["status"] == "interrupted"
    finished = len(list((run_dir / "cells").glob("*.metrics.csv")))
    assert finished < 16 and len(pd.read_csv(run_dir / "metrics.csv").groupby(["arch", "regime", "seed"])) == finished
    assert not list((run_dir / "cells").glob(".*.tmp"))
    done = subprocess.run([sys.executable, "-m", "mtl_bench.cli", "run", "--resume", str(run_dir), "--quiet"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = runner.io.read_json(run_dir / "manifest.json")
    assert manifest["status"] == "complete" and len(manifest["cells"]) == 16  # 4 seeds × (2 single + 2 joint)


def test_a_swept_default_value_is_a_column_for_every_value(tmp_path):
    """A bug report: --param scale=1.0,1e25 (1.0 the default, 1e25's cells fail) ended in KeyError: 'scale'."""
    params = {"train_rows": 512, "validation_rows": 256, "test_rows": 256, "scale": [1.0, 1e25]}
    config = _small(suite_params=params, archs=["shared_bottom"], regimes=["joint"])
    assert "scale" in runner.plan(runner.resolve(config)).variant_columns
    run_dir = _run(config, out=tmp_path / "run", progress=None)
    manifest = runner.io.read_json(run_dir / "manifest.json")
    assert "scale" in manifest["variant_columns"]
    assert sorted(v["status"] for v in manifest["cells"].values()) == ["complete", "failed"]
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert metrics["scale"].notna().all() and set(metrics["scale"]) == {1.0}
    assert set(pd.read_csv(run_dir / "summary.csv")["scale"]) == {1.0}
    experiments.resume(run_dir, progress=None, in_process=True)  # crashed the same way before
    assert runner.io.read_json(run_dir / "manifest.json")["status"] == "complete"


def test_pretraining_must_leave_days_to_train(tmp_path):
    # 4 days minus one validation and one test day leave 2 training days.
    config = RunConfig(suite="recsim", suite_params={"days": 4, "impressions_per_day": 300}, archs=["mmoe"],
                       regimes=["daily"], seeds=1, epochs=1, jobs=1, pretrain_days=2)
    with pytest.raises(UserInputError, match=r"pretrain_days must be fewer than the 2 training days"):
        _run(config, out=tmp_path / "run", progress=None)
    assert not (tmp_path / "run").exists()


def test_a_grid_beyond_the_bound_is_refused_before_any_suite_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(runner.cell_lib, "load_suite", lambda *a, **k: pytest.fail("loaded a suite"))
    # 40 variants × 1000 seeds × 3 regimes = 120,000 cells at least.
    config = _small(suite_params={"correlation": [i / 100 for i in range(40)]}, seeds=1000,
                    regimes=["single", "joint", "sequential"])
    with pytest.raises(UserInputError, match="more than 100,000 cells"):
        _run(config, out=tmp_path / "run", progress=None)
    assert not (tmp_path / "run").exists()


def test_a_full_disk_stops_the_run_and_marks_it_failed(tmp_path, monkeypatch):
    import errno

    def full(path, frame):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(runner.io, "write_csv", full)
    with pytest.raises(OSError):
        _run(_small(archs=["shared_bottom"], regimes=["joint"]), out=tmp_path / "run", progress=None)
    manifest = runner.io.read_json(tmp_path / "run" / "manifest.json")
    assert manifest["status"] == "failed" and "No space left on device" in manifest["reason"]


def test_resume_may_change_the_number_of_jobs(tmp_path):
    run_dir = _run(_small(archs=["shared_bottom"], regimes=["joint"]), out=tmp_path / "run", progress=None)
    before = (run_dir / "config.toml").read_text()
    runner.resume(run_dir, progress=None, in_process=True, jobs=2)
    assert (run_dir / "config.toml").read_text() == before
    assert runner.io.read_json(run_dir / "manifest.json")["status"] == "complete"


@pytest.mark.parametrize("load, expected", [(0.0, 2), (0.4, 2), (0.6, 1), (1.2, 1), (7.0, 1), (None, 2)])
def test_default_jobs_leaves_busy_cores_alone(monkeypatch, load, expected):
    """One worker per core not busy: the cores (2) minus the rounded 1-minute load average, at least one."""
    from mtl_bench.engine import executor

    def getloadavg():
        if load is None:
            raise OSError("no load average")
        return (load, load, load)

    monkeypatch.setattr(executor.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(executor.os, "getloadavg", getloadavg)
    assert executor.default_jobs() == expected


def test_cells_whose_workers_died_are_failed_with_the_reason_and_the_run_ends(tmp_path, workers_keep_dying):
    """A bug report: the progress line formatted a died cell's wall time (None) and crashed the run."""
    import io as std_io

    progress = std_io.StringIO()
    config = _small(archs=["shared_bottom"], regimes=["single", "joint"])
    run_dir = runner.run(config, out=tmp_path / "run", progress=progress, executor=workers_keep_dying)
    manifest = runner.io.read_json(run_dir / "manifest.json")
    assert manifest["status"] == "failed" and len(manifest["cells"]) == 2
    for key, status in manifest["cells"].items():
        assert status == {"status": "failed", "reason": "the worker process running it died (killed, or out of memory)",
                          "wall_seconds": None}
        assert runner.io.read_json(run_dir / "cells" / f"{key}.failed.json") == status
    assert progress.getvalue().count("FAILED") == 2
    # Their workers' deaths are no verdict on the cells: resuming tries them again, and they complete.
    runner.resume(run_dir, progress=None, in_process=True)
    manifest = runner.io.read_json(run_dir / "manifest.json")
    assert manifest["status"] == "complete" and {v["status"] for v in manifest["cells"].values()} == {"complete"}
    assert not list((run_dir / "cells").glob("*.failed.json"))


def test_a_cell_computes_its_results_without_writing_and_the_driver_commits_them(tmp_path, monkeypatch):
    """Workers never need the run directory: a cell returns its frames, and only commit() writes them."""
    from mtl_bench.experiments import cell_files

    config = runner.resolve(_small(archs=["shared_bottom"], regimes=["joint"]))
    cell = runner.plan(config).cells[0]
    writes = []
    monkeypatch.setattr(runner.io, "write_bytes", lambda path, data: writes.append(path))
    outcome = cell_files.compute(config, (), cell)
    assert outcome.status["status"] == "complete" and writes == []
    metrics = outcome.frames["metrics"]
    assert metrics.columns[0] == "suite" and {"arch", "regime", "remedy", "order", "seed"} <= set(metrics.columns)
    assert set(metrics["arch"]) == {"shared_bottom"} and set(metrics["seed"]) == {0}
    monkeypatch.undo()
    cells_dir = tmp_path / "cells"
    assert cell_files.commit(cells_dir, cell, outcome) == outcome.status
    assert cell_files.committed(cells_dir, cell)
    pd.testing.assert_frame_equal(cell_files.read(tmp_path), metrics, check_dtype=False)
