"""Cells on a real Dask cluster (a scheduler and two worker processes on localhost) give the local pool's
files byte for byte, also when a worker is killed mid-cell; the executor refuses what it cannot run."""

import filecmp
import os
import pickle
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import tensorflow as tf

from mtl_bench import cli, io
from mtl_bench.config import RunConfig
from mtl_bench.engine import executor
from mtl_bench.engine import cells
from mtl_bench.errors import RunStopped, UserInputError
from mtl_bench.experiments import grid, policy

distributed = pytest.importorskip("distributed")
from mtl_bench.engine import cluster as cluster_lib  # noqa: E402  (needs distributed)

pytestmark = pytest.mark.slow

ROWS = {"train_rows": 3000, "validation_rows": 600, "test_rows": 600}
# single, joint and sequential in both orders (the retention files) on two seeds: 8 cells
GRID = ["--arch", "mmoe", "--regime", "single,joint,sequential", "--seeds", "2", "--epochs", "2",
        "--param", "correlation=0.5", *[x for k, v in ROWS.items() for x in ("--param", f"{k}={v}")], "--quiet"]
RESULTS = ("summary.csv", "metrics.csv", "probe.csv", "retention.csv")
TINY_WORLD = {"users": 100, "items": 50, "categories": 5, "days": 5, "impressions_per_day": 600,
              "arms": ["logged", "ppo"]}


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as c:
        yield c


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "run"
    assert cli.main(["run", *GRID, "--jobs", "2", "--out", str(out)]) == 0
    return out


def _same_files(a: Path, b: Path) -> None:
    for name in RESULTS:
        assert (a / name).is_file() and filecmp.cmp(a / name, b / name, shallow=False), name
    cells = sorted(p.name for p in (a / "cells").iterdir())
    assert cells == sorted(p.name for p in (b / "cells").iterdir()) and len(cells) >= 8
    for name in cells:
        assert filecmp.cmp(a / "cells" / name, b / "cells" / name, shallow=False), name


def test_a_grid_on_the_cluster_equals_the_local_pool_byte_for_byte(cluster, local_run, tmp_path):
    out = tmp_path / "run"
    code = cli.main(["run", *GRID, "--executor", "dask", "--scheduler", cluster.scheduler_address, "--out", str(out)])
    assert code == 0
    manifest = io.read_json(out / "manifest.json")
    assert manifest["status"] == "complete" and len(manifest["cells"]) == 8
    _same_files(local_run, out)
    # The cell processes run TensorFlow on one thread, as a local worker does; the Dask workers never load it.
    threads = {}
    cluster_lib.DaskCluster(cluster.scheduler_address).run(
        lambda item: tf.config.threading.get_intra_op_parallelism_threads(), [0, 1], threads.__setitem__,
        initializer=cells.init_worker)
    assert threads == {0: 1, 1: 1}
    with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
        assert set(client.run(lambda: "tensorflow" in sys.modules).values()) == {False}


def test_a_worker_killed_mid_cell_loses_only_that_cell(cluster, local_run, tmp_path):
    client = distributed.Client(cluster.scheduler_address, set_as_default=False)
    out = tmp_path / "run"
    config = RunConfig.from_toml(local_run / "config.toml")
    killed: dict[str, int] = {}
    done = threading.Event()  # a failed run must not leave the killer loose on the next tests' workers

    def kill_one_running_worker() -> None:
        deadline = time.time() + 300
        # After the first committed cell both workers are warm and busy with the next ones.
        while time.time() < deadline and not done.is_set() and not list((out / "cells").glob("*.metrics.csv")):
            time.sleep(0.2)
        while time.time() < deadline and not done.is_set() and not killed:
            pids = client.run(os.getpid)
            for address, keys in client.processing().items():
                if any(str(k).startswith("mtl-bench-") and "check" not in str(k) for k in keys):
                    killed[address] = pids[address]
                    os.kill(pids[address], signal.SIGKILL)
                    break
            time.sleep(0.2)

    killer = threading.Thread(target=kill_one_running_worker, daemon=True)
    killer.start()
    started = time.time()
    try:
        grid.run(config, out=out, progress=None, executor=cluster_lib.DaskCluster(client=client))
    finally:
        done.set()
    killer.join(5)
    assert killed, "no worker was running a cell"
    # Only the dead worker's cells ran again: the (at most 2) it had been given with one thread and the
    # scheduler's default saturation of 1.1, and at most one result it held that the driver had not taken yet.
    processing = [t.key for t in cluster.scheduler.transition_log
                  if t.timestamp >= started and t.finish == "processing" and str(t.key).startswith("mtl-bench-")
                  and "check" not in str(t.key)]
    again = {key for key in processing if processing.count(key) > 1}
    assert len(set(processing)) == 8 and 1 <= len(again) <= 3, again
    with pytest.raises(ProcessLookupError):
        os.kill(next(iter(killed.values())), 0)
    manifest = io.read_json(out / "manifest.json")
    assert manifest["status"] == "complete"
    assert {v["status"] for v in manifest["cells"].values()} == {"complete"} and len(manifest["cells"]) == 8
    _same_files(local_run, out)
    client.close()


def test_policy_pairs_on_the_cluster_equal_the_local_pool(cluster, tmp_path):
    config = RunConfig(suite="recsim", suite_params=TINY_WORLD, archs=["shared_bottom"], seeds=2, epochs=1,
                       batch_size=64, experiment="policy", jobs=2)
    local = policy.run(config, out=tmp_path / "local", progress=None)
    there = policy.run(config, out=tmp_path / "dask", progress=None,
                       executor=cluster_lib.DaskCluster(cluster.scheduler_address))
    for name in ("policy.csv", "policy_updates.csv", "policy_summary.csv", "policy.md"):
        assert filecmp.cmp(local / name, there / name, shallow=False), name
    assert sorted(p.name for p in (there / policy.PAIRS_DIR).iterdir()) == [
        "shared_bottom__s0.policy.csv", "shared_bottom__s0.updates.csv",
        "shared_bottom__s1.policy.csv", "shared_bottom__s1.updates.csv"]


def test_workers_with_other_versions_are_refused_before_anything_runs(cluster, monkeypatch, tmp_path):
    mine = cluster_lib.versions()
    monkeypatch.setattr(cluster_lib, "versions", lambda: {**mine, "tensorflow": "0.0"})
    marker = tmp_path / "ran"
    with pytest.raises(UserInputError, match=r"has other versions than this process.*tensorflow .* \(driver 0\.0\)"):
        cluster_lib.DaskCluster(cluster.scheduler_address).run(Path.touch, [marker], lambda item, result: None)
    assert not marker.exists()
    config = RunConfig(archs=["mmoe"])
    with pytest.raises(UserInputError, match="has other versions"):
        grid.run(config, out=tmp_path / "run", progress=None, executor=cluster_lib.DaskCluster(cluster.scheduler_address))
    assert not (tmp_path / "run").exists()  # refused before the run directory is written


def test_a_worker_that_joins_with_other_versions_stops_at_its_first_cell(monkeypatch):
    """The check inside a cell process, for workers that join after the run began."""
    monkeypatch.setattr(cluster_lib, "_INITIALIZED", set())
    driver = {**cluster_lib.versions(), "numpy": "0.0"}
    payload = cluster_lib._payload((abs, None, -3, driver))
    with pytest.raises(cluster_lib.WorkerMismatch, match=r"numpy \S+ \(driver 0\.0\)"):
        cluster_lib._run_pickled(payload)
    assert pickle.loads(cluster_lib._run_pickled(cluster_lib._payload((abs, None, -3, cluster_lib.versions())))) == 3


def test_a_closure_initializer_runs_once_per_cell_process(cluster, tmp_path):
    # A closure unpickles as a new object for every item: known by identity, it would run before every item.
    log = tmp_path / "initialized"

    def initializer():
        with log.open("a") as f:
            f.write(f"{os.getpid()}\n")

    results = {}
    cluster_lib.DaskCluster(cluster.scheduler_address).run(abs, list(range(-8, 0)), results.__setitem__,
                                                           initializer=initializer)
    assert results == {i: -i for i in range(-8, 0)}
    pids = log.read_text().split()
    assert 1 <= len(pids) == len(set(pids)), pids


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:9", "http://127.0.0.1:9", "localhost"])
def test_an_unreachable_or_malformed_scheduler_is_one_line_and_writes_nothing(address, monkeypatch, tmp_path):
    monkeypatch.setattr(cluster_lib, "CONNECT_SECONDS", 1.0)
    with pytest.raises(UserInputError, match=rf"^cannot reach the Dask scheduler at {re.escape(address)}: ") as err:
        grid.run(RunConfig(archs=["mmoe"]), out=tmp_path / "run", progress=None, executor=cluster_lib.DaskCluster(address))
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()


def test_workers_inside_the_driver_are_refused():
    with distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as in_process:
        with pytest.raises(UserInputError, match=r"run inside this process \(processes=False\)"):
            cluster_lib.DaskCluster(in_process.scheduler_address).prepare()


def test_a_lost_scheduler_stops_the_run_in_one_line():
    import concurrent.futures

    class Cancelled:
        status = "cancelled"

        def result(self):
            raise concurrent.futures.CancelledError("scheduler-connection-lost")

    with pytest.raises(RunStopped, match=r"^lost the Dask scheduler or the run's tasks \(scheduler-connection-lost\); .* --resume$"):
        cluster_lib._result(distributed, Cancelled(), "item", None)


def test_an_item_whose_workers_keep_dying_is_reported_failed(cluster):
    results = {}
    cluster_lib.DaskCluster(cluster.scheduler_address).run(
        os._exit, [3], results.__setitem__, failed=lambda item, reason: ("failed", reason))
    assert results == {3: ("failed", executor.WORKER_DIED)}


def test_the_executors_benchmark_runs_at_a_small_size(capsys):
    """``mtl-bench bench --executors`` (one seed here): both executors run the grid and give the same summary."""
    from mtl_bench import bench

    figures = bench.executors(workers=2, seeds=1)
    assert figures["identical"] == 1.0 and figures["local_seconds"] > 0 and figures["dask_seconds"] > 0
    assert figures["speedup"] == pytest.approx(figures["local_seconds"] / figures["dask_seconds"], rel=0.01)
    assert "speed-up dask / local" in capsys.readouterr().out
