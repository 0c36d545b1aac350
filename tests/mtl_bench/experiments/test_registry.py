"""The experiment registry: names, dispatch on the manifest, directories from before, and no TensorFlow to read it."""

import subprocess
import sys

import pandas as pd
import pytest

from mtl_bench import cli, experiments, io
from mtl_bench.config import RunConfig
from mtl_bench.errors import UserInputError

RECSIM = {"users": 100, "items": 50, "categories": 5, "days": 5, "impressions_per_day": 600}


def test_names_and_lookup():
    assert list(experiments.EXPERIMENTS) == ["grid", "cohort", "sparse-dense", "policy"]
    assert all(name == e.name for name, e in experiments.EXPERIMENTS.items())
    assert experiments.get("") is experiments.EXPERIMENTS["grid"]  # config.toml files from before the registry
    with pytest.raises(UserInputError, match=r"valid experiments: \['grid', 'cohort', 'sparse-dense', 'policy'\]"):
        experiments.get("bogus")
    assert [e.name for e in experiments.EXPERIMENTS.values() if e.on_grid] == ["grid", "cohort"]


def test_config_validates_against_the_registry():
    assert RunConfig().experiment == ""  # the default stays the grid, spelled as before
    assert RunConfig(experiment="grid").experiment == "grid"
    with pytest.raises(UserInputError) as err:
        RunConfig(experiment="bogus")
    assert str(err.value) == ("config: experiment must be one of ['grid', 'cohort', 'sparse-dense', 'policy']. "
                              "Received: experiment='bogus'")


def test_cli_takes_its_choices_and_help_from_the_registry(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    assert "--experiment {grid,cohort,sparse-dense,policy}" in out
    for e in experiments.EXPERIMENTS.values():
        assert f"{e.name}: {e.help}" in out


def test_registry_config_and_cli_answers_import_no_tensorflow(tmp_path):
    (tmp_path / "policy.md").write_text("# On-policy vs logged data\n")
    code = (
        "import sys\n"
        "from mtl_bench import cli, experiments\n"
        "from mtl_bench.config import RunConfig\n"
        f"assert experiments.of({str(tmp_path)!r}).name == 'policy'\n"
        "RunConfig(experiment='cohort')\n"
        "assert cli.main(['run', '--experiment', 'bogus']) == 2\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _manifest(run_dir, **data):
    run_dir.mkdir(parents=True, exist_ok=True)
    io.write_json(run_dir / "manifest.json", data)


@pytest.mark.parametrize(
    "files, expected",
    [
        ({"manifest.json": {"experiment": "policy"}, "metrics.csv": ""}, "policy"),  # the manifest decides
        ({"manifest.json": {"experiment": ""}}, "grid"),
        # Written before manifests named their experiment:
        ({"manifest.json": {}, "config.toml": 'experiment = "cohort"\n'}, "cohort"),
        ({"manifest.json": {}, "config.toml": 'experiment = ""\n'}, "grid"),
        ({"manifest.json": {}}, "grid"),
        ({"config.toml": 'experiment = "sparse-dense"\n', "points.csv": ""}, "sparse-dense"),  # interrupted sweep
        ({"sparse_dense.md": ""}, "sparse-dense"),
        ({"config.toml": 'experiment = "policy"\n', "policy.md": ""}, "policy"),
        ({"config.toml": 'experiment = "policy"\n'}, "policy"),  # interrupted before it wrote anything else
    ],
)
def test_of_reads_the_manifest_or_recognises_older_directories(tmp_path, files, expected):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name, content in files.items():
        if name == "manifest.json":
            io.write_json(run_dir / name, content)
        else:
            (run_dir / name).write_text(content)
    assert experiments.of(run_dir).name == expected


def test_of_refuses_what_is_no_run_directory(tmp_path):
    with pytest.raises(UserInputError, match="is not a run directory"):
        experiments.of(tmp_path)
    (tmp_path / "config.toml").write_text("epochs = = 3")
    with pytest.raises(UserInputError, match="not valid TOML"):
        experiments.of(tmp_path)


def test_the_grid_runs_only_experiments_on_the_grid(tmp_path):
    from mtl_bench.experiments import grid

    for name in ("sparse-dense", "policy"):
        config = RunConfig(suite="recsim", suite_params=dict(RECSIM), experiment=name)
        with pytest.raises(UserInputError, match=f"experiment '{name}' does not run on the grid"):
            grid.run(config, out=tmp_path / name, progress=None)
        assert not (tmp_path / name).exists()


def _fake_arms(config, arch, seed):
    """``policy.run_arms``-shaped output without training: constant values on two days, no RL updates."""
    from mtl_bench.experiments import policy
    from mtl_bench.tasks import recsim

    rows = []
    for arm in policy.ARMS:
        for day in (2, 3):
            head = dict(arm=arm, kl=0.0, epochs=1, arch=arch, seed=seed, day=day)
            for task in recsim.BEHAVIOURS:
                for measure in ("auc", "auc_heldout", "auc_control", "auc_probe", "output_drift"):
                    rows.append({**head, "task": task, "measure": measure, "value": 0.5})
            for measure in ("click_rate", "coverage", "gini"):
                rows.append({**head, "task": "all", "measure": measure, "value": 0.25})
    return pd.DataFrame(rows), pd.DataFrame()  # policy.csv rows, no policy_updates.csv rows


@pytest.fixture
def policy_config():
    return RunConfig(suite="recsim", suite_params=dict(RECSIM), archs=["mmoe", "ple"], seeds=2, first_seed=3,
                     epochs=1, experiment="policy")


def test_policy_experiment_writes_a_manifest_and_resumes_on_it(tmp_path, monkeypatch, policy_config, capsys):
    from mtl_bench.experiments import policy

    calls = []

    def interrupted_on_the_third(config, arch, seed):
        calls.append((arch, seed))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return _fake_arms(config, arch, seed)

    monkeypatch.setattr(policy, "run_arms", interrupted_on_the_third)
    with pytest.raises(KeyboardInterrupt):  # in this process, so that the patch applies
        experiments.run(policy_config, out=tmp_path / "run", progress=None, in_process=True)
    run_dir = tmp_path / "run"
    manifest = io.read_json(run_dir / "manifest.json")
    assert (manifest["experiment"], manifest["status"], manifest["seeds"]) == ("policy", "interrupted", [3, 4])
    assert manifest["started"] and "finished" not in manifest
    assert not (run_dir / "policy.csv").exists()

    calls.clear()
    monkeypatch.setattr(policy, "run_arms", lambda config, arch, seed: calls.append((arch, seed)) or _fake_arms(config, arch, seed))
    assert experiments.resume(run_dir, progress=None, in_process=True) == run_dir
    assert calls == [("ple", 3), ("ple", 4)]  # the two pairs finished before the interruption are kept
    assert cli.main(["report", str(run_dir)]) == 0
    assert "# On-policy vs logged data" in capsys.readouterr().out
    manifest = io.read_json(run_dir / "manifest.json")
    assert manifest["status"] == "complete" and manifest["finished"] and manifest["wall_seconds"] >= 0
    rows = pd.read_csv(run_dir / "policy.csv")
    assert sorted(set(zip(rows["arch"], rows["seed"]))) == [("mmoe", 3), ("mmoe", 4), ("ple", 3), ("ple", 4)]
    assert cli.main(["report", str(run_dir)]) == 0
    assert "# On-policy vs logged data" in capsys.readouterr().out


def test_policy_directory_from_before_resumes_as_policy(tmp_path, monkeypatch, policy_config):
    from mtl_bench.experiments import policy

    monkeypatch.setattr(policy, "run_arms", _fake_arms)
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    (run_dir / "config.toml").write_text(policy_config.to_toml())  # all an interrupted run left
    assert experiments.resume(run_dir, progress=None) == run_dir
    assert io.read_json(run_dir / "manifest.json")["experiment"] == "policy"
    assert (run_dir / "policy.md").is_file()


def test_policy_refuses_before_writing(tmp_path, policy_config):
    import dataclasses

    for kw, needle in ((dict(archs=["single_task"]), "unknown multi-task architecture 'single_task'"),
                       (dict(suite_params={**RECSIM, "days": [5, 6]}), "needs one suite variant")):
        with pytest.raises(UserInputError, match=needle):
            experiments.run(dataclasses.replace(policy_config, **kw), out=tmp_path / "x", progress=None)
        assert not (tmp_path / "x").exists()
