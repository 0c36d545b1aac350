"""Resuming and sharing a study: the sampler continues its stream, the budget is recorded and exact, trials are
distinct, and the number of workers does not change an objective (issue 15, items 3, 19, 25)."""

import random
import re
import subprocess
import sys
import textwrap
import threading
import time

import optuna
import pandas as pd
import pytest

from mtl_bench import cli, tune
from mtl_bench.errors import UserInputError
from mtl_bench.tune import study as study_lib


def _sampled(sampler: optuna.samplers.BaseSampler, study: optuna.Study, n: int) -> None:
    study.sampler = sampler
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_int("k", 0, 100) / 100, n_trials=n)


def test_trial_seeded_sampler_continues_its_stream_after_a_restart():
    # Three sittings of 2 trials, each a new sampler as a new process makes, against one sitting of 6.
    sittings = optuna.create_study(direction="maximize")
    for _ in range(3):
        _sampled(study_lib.TrialSeededTPE(7), sittings, 2)
    whole = optuna.create_study(direction="maximize")
    _sampled(study_lib.TrialSeededTPE(7), whole, 6)
    params = [tuple(t.params.items()) for t in sittings.trials]
    assert len(set(params)) == 6
    assert params == [tuple(t.params.items()) for t in whole.trials]
    # Optuna's own seeded sampler restarts its stream in every sitting: the fault this sampler removes.
    plain = optuna.create_study(direction="maximize")
    for _ in range(3):
        _sampled(optuna.samplers.TPESampler(seed=7), plain, 2)
    assert len({tuple(t.params.items()) for t in plain.trials}) == 2


def test_a_repeat_and_a_trial_past_the_reserved_budget_are_skipped():
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(params={"x": 1}, distributions={"x": optuna.distributions.IntDistribution(0, 9)},
                                              value=0.5))
    study.enqueue_trial({"x": 5})
    running = study.ask()  # trial 1, running in another process
    x_running = running.suggest_int("x", 0, 9)
    assert x_running == 5
    assert study_lib.skip_reason(study, 2, {"x": 1}, 10).startswith("repeats trial 0")
    assert study_lib.skip_reason(study, 2, {"x": x_running}, 10).startswith("repeats trial 1")
    other = next(v for v in range(10) if v not in (1, x_running))
    assert study_lib.skip_reason(study, 2, {"x": other}, 10) is None
    # Trials 0 (finished) and 1 (running) reserve a budget of 2: trial 2 may not run, whatever its parameters.
    assert "budget of 2 trials" in study_lib.skip_reason(study, 2, {"x": other}, 2)
    # A trial whose process died (failed without a reason) frees its place and its parameters.
    study.tell(running, state=optuna.trial.TrialState.FAIL)
    assert study_lib.skip_reason(study, 2, {"x": x_running}, 2) is None


@pytest.mark.slow
def test_resumed_study_tries_new_configurations_and_equals_an_uninterrupted_one(tmp_path, tiny_config):
    for n in (2, 4, 6):
        resumed = tune.tune(tiny_config(), "mmoe", n_trials=n, out=tmp_path / "resumed", progress=None)
    whole = tune.tune(tiny_config(), "mmoe", n_trials=6, out=tmp_path / "whole", progress=None)
    params = [c for c in resumed.trials.columns if c.startswith("params_")]
    assert len(resumed.trials) == 6 and len(resumed.trials.drop_duplicates(params)) == 6
    pd.testing.assert_frame_equal(resumed.trials.drop(columns="duration_s"), whole.trials.drop(columns="duration_s"))


@pytest.mark.parametrize("change, needle", [
    ({"epochs": 2}, "epochs 1 -> 2"),
    ({"max_train_rows": 100}, "max_train_rows 0 -> 100"),
    ({"max_eval_rows": 50}, "max_eval_rows 0 -> 50"),
    ({"patience": 1}, "patience 3 -> 1"),
])
def test_resuming_with_another_budget_is_refused(tmp_path, tiny_config, change, needle):
    tune.tune(tiny_config(), "mmoe", n_trials=1, out=tmp_path / "t", study_name="s", progress=None)
    with pytest.raises(UserInputError, match=re.escape(needle)):
        tune.tune(tiny_config(**change), "mmoe", n_trials=2, out=tmp_path / "t", study_name="s", progress=None)
    assert len(pd.read_csv(tmp_path / "t" / "trials.csv")) == 1  # nothing ran


def test_resuming_with_other_suite_params_regime_or_objective_is_refused_in_one_line(tmp_path, capsys, tiny_args):
    base = ["tune", "--suite", "synthetic", *tiny_args, "--arch", "mmoe", "--trials", "1", "--epochs", "1",
            "--study", "s", "--out", str(tmp_path / "t")]
    assert cli.main(base) == 0
    for extra, needle in [(["--param", "correlation=0.1"], "variant"), (["--regime", "sequential"], "regime"),
                          (["--objective", "main_auc"], "objective 'mean_auc' -> 'main_auc'"),
                          (["--epochs", "2"], "epochs 1 -> 2")]:
        capsys.readouterr()
        assert cli.main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err and err.startswith("mtl-bench: error: study 's'")


def test_the_best_score_prints_as_a_number_named_by_its_objective(tmp_path, capsys, tiny_args):
    assert cli.main(["tune", "--suite", "synthetic", *tiny_args, "--arch", "mmoe", "--trials", "1", "--epochs", "1",
                     "--out", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"best mean_auc -?\d+\.\d{4} \{", out) and "[0." not in out, out
    assert "param_importances not drawn: 1 complete trial(s)" in out
    assert not (tmp_path / "t" / "plots" / "param_importances.png").exists()


_SPACE = """
[common]
learning_rate = [0.01, 0.02, 0.03]
batch_size = 64
embedding_dim = 4
tower_units = 8
dropout = 0.0
[mmoe]
num_experts = [2, 3]
expert_units = 8
"""


@pytest.mark.slow
def test_two_processes_on_one_sqlite_study_run_distinct_trials_and_the_exact_budget(tmp_path, tiny_config):
    # Six configurations, a budget of four: a sampler restarting its stream or racing its twin repeats some.
    space = tmp_path / "space.toml"
    space.write_text(_SPACE)
    out, n = tmp_path / "t", 4
    script = textwrap.dedent(f"""
        from mtl_bench import tune
        from mtl_bench.config import RunConfig
        config = RunConfig(suite="synthetic", suite_params={tiny_config().suite_params!r}, epochs=1, jobs=1)
        tune.tune(config, "mmoe", n_trials={n}, out={str(out)!r}, study_name="shared", space_file={str(space)!r},
                  progress=None)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        assert proc.wait(timeout=600) == 0, proc.stderr.read()[-2000:]
    study = optuna.load_study(study_name="shared", storage=f"sqlite:///{out / 'study.db'}")
    done = [t for t in study.trials if study_lib.is_counted(t)]
    assert len(done) == n
    assert len({tuple(sorted(t.params.items())) for t in done}) == n
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in study.trials)
    skipped = [t for t in study.trials if not study_lib.is_counted(t)]
    assert all(study_lib.SKIPPED in t.user_attrs for t in skipped)  # anything not counted says why


@pytest.mark.slow
def test_objectives_do_not_depend_on_the_number_of_workers(tmp_path, tiny_config):
    # The start-up trials' parameters depend only on (seed, trial number), so both runs train the same two.
    one = tune.tune(tiny_config(), "mmoe", n_trials=2, workers=1, out=tmp_path / "w1", progress=None)
    two = tune.tune(tiny_config(), "mmoe", n_trials=2, workers=2, out=tmp_path / "w2", progress=None)
    counted = two.trials[two.trials.state == "COMPLETE"].sort_values("number").reset_index(drop=True)
    columns = [c for c in one.trials.columns if c.startswith(("params_", "score_")) or c in ("number", "value")]
    pd.testing.assert_frame_equal(one.trials[columns], counted[columns], check_exact=True)


@pytest.mark.slow
def test_another_thread_drawing_from_pythons_random_does_not_change_the_trials(tmp_path, tiny_config):
    # A Dask client left reconnecting drew from the global random, which seeds Keras' initializers: a study
    # run in this process after the cluster tests pruned a trial that its twin completed.
    stop = threading.Event()

    def draw() -> None:
        while not stop.is_set():
            random.random()
            time.sleep(0.0005)

    quiet = tune.tune(tiny_config(), "mmoe", n_trials=2, out=tmp_path / "quiet", progress=None)
    drawer = threading.Thread(target=draw, daemon=True)
    drawer.start()
    try:
        busy = tune.tune(tiny_config(), "mmoe", n_trials=2, out=tmp_path / "busy", progress=None)
    finally:
        stop.set()
        drawer.join()
    pd.testing.assert_frame_equal(quiet.trials.drop(columns="duration_s"), busy.trials.drop(columns="duration_s"))
