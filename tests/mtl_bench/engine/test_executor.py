"""The local executor stops when told to, leaves no orphans and survives killed workers."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from mtl_bench.engine import executor

SCRIPT = """
import sys, time
from mtl_bench.engine import executor

if __name__ == "__main__":
    print("started", flush=True)
    try:
        executor.run(time.sleep, [60, 61, 62, 63], lambda item, result: None, jobs=2)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
"""


def _marked(mark: str) -> list[int]:
    """Processes whose environment holds ``mark`` (the script and every worker it spawned)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if mark.encode() in (proc / "environ").read_bytes():
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _start(tmp_path: Path):
    mark = f"MTL_BENCH_TEST_{uuid.uuid4().hex}"
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, mark: "1"}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "started"
    deadline = time.time() + 60
    while len(_workers(mark)) < 2 and time.time() < deadline:
        time.sleep(0.2)
    assert len(_workers(mark)) == 2, "workers did not start"
    return proc, mark


def _workers(mark: str) -> list[int]:
    """The pool's workers among the marked processes (not the script, nor multiprocessing's resource tracker)."""
    workers = []
    for pid in _marked(mark):
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                workers.append(pid)
        except OSError:
            continue
    return workers


def _gone(mark: str, seconds: float) -> bool:
    deadline = time.time() + seconds
    while _marked(mark) and time.time() < deadline:
        time.sleep(0.2)
    return not _marked(mark)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_run_and_its_workers_within_seconds(tmp_path, sig):
    proc, mark = _start(tmp_path)
    t0 = time.time()
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == 130
    assert proc.stdout.read().strip() == "interrupted"
    assert _gone(mark, 10), "workers outlived the run"
    assert time.time() - t0 < 20  # the items sleep 60 s: nobody waited for them


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_die_with_a_killed_parent(tmp_path):
    proc, mark = _start(tmp_path)
    proc.kill()  # SIGKILL: no handler runs in the parent
    proc.wait(timeout=10)
    assert _gone(mark, 10), "orphaned workers kept running"


def test_a_worker_whose_parent_is_not_the_one_that_started_it_exits_at_once():
    # An orphan adopted by init or by a subreaper (a container's init, systemd --user) before it could ask to
    # die with its parent: here its parent is the test, not the process 1 it is told started it.
    script = "from mtl_bench.engine import executor; executor.start_worker(None, 1); print('alive')"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", "")  # exited, not a crash


def test_killed_workers_fail_their_items_after_the_pool_broke_three_times():
    results = {}
    # os._exit ends the worker process: every pool breaks, as when the kernel kills a worker for memory.
    executor.run(os._exit, [3], results.__setitem__, jobs=1, failed=lambda item, reason: ("failed", reason))
    assert results == {3: ("failed", executor.WORKER_DIED)}


def test_results_of_every_item_whatever_the_number_of_jobs():
    for jobs in (1, 2):
        results = {}
        executor.run(abs, [-3, -1, 2, -7, 5], results.__setitem__, jobs=jobs)
        assert results == {-3: 3, -1: 1, 2: 2, -7: 7, 5: 5}


def test_workers_are_renewed_between_waves(monkeypatch):
    """Each worker runs at most TASKS_PER_WORKER items: 7 items, 1 job, waves of 3 -> 3 worker processes."""
    monkeypatch.setattr(executor, "TASKS_PER_WORKER", 3)
    results = {}
    executor.run(_pid_of, list(range(7)), results.__setitem__, jobs=1)
    pids = [results[i] for i in range(7)]
    assert len(set(pids)) == 3 and pids[:3] == [pids[0]] * 3 and pids[3:6] == [pids[3]] * 3


def _pid_of(item):
    return os.getpid()
