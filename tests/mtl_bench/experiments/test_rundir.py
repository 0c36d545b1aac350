"""A run directory's lifecycle: a new directory, the manifest and its status transitions."""

import time

import pytest

from mtl_bench import io
from mtl_bench.config import RunConfig
from mtl_bench.errors import UserInputError
from mtl_bench.experiments import rundir


def test_new_dir_is_created_empty_and_refuses_a_used_one(tmp_path):
    config = RunConfig(seeds=2)
    assert rundir.new_dir(config, tmp_path / "a" / "run", "unused").is_dir()
    generated = rundir.new_dir(config, None, tmp_path / "runs")
    assert generated.parent == tmp_path / "runs" and generated.name.startswith("synthetic-")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    with pytest.raises(UserInputError, match="exists and is not empty; use --resume"):
        rundir.new_dir(config, tmp_path / "used", "unused")
    (tmp_path / "file").write_text("")
    with pytest.raises(UserInputError, match="is a file, not a directory"):
        rundir.new_dir(config, tmp_path / "file", "unused")


def test_manifest_records_experiment_seeds_and_status(tmp_path):
    config = RunConfig(seeds=2, first_seed=5, experiment="")
    manifest = rundir.start(tmp_path, config, notes=["n"])
    on_disk = io.read_json(tmp_path / "manifest.json")
    assert on_disk == manifest
    assert manifest["experiment"] == "grid" and manifest["seeds"] == [5, 6] and manifest["notes"] == ["n"]
    assert manifest["status"] == "running" and manifest["started"] and "tensorflow" in manifest["versions"]

    rundir.stop(tmp_path, manifest, KeyboardInterrupt())
    assert io.read_json(tmp_path / "manifest.json")["status"] == "interrupted"
    rundir.stop(tmp_path, manifest, ValueError("first line\nsecond line"))
    stopped = io.read_json(tmp_path / "manifest.json")
    assert (stopped["status"], stopped["reason"]) == ("failed", "ValueError: first line")

    again = rundir.restart(tmp_path, config)
    assert (again["status"], again["reason"]) == ("running", "")
    again["wall_seconds"] = 1.0  # an earlier stretch of the run
    rundir.finish(tmp_path, again, time.perf_counter() - 2.0)
    done = io.read_json(tmp_path / "manifest.json")
    assert done["status"] == "complete" and done["finished"]
    assert 3.0 <= done["wall_seconds"] < 4.0  # both stretches


def test_restart_names_the_experiment_of_a_directory_from_before(tmp_path):
    config = RunConfig(suite="recsim", experiment="policy")
    fresh = rundir.restart(tmp_path, config)  # no manifest yet: the policy experiment wrote none
    assert fresh["experiment"] == "policy" and (tmp_path / "manifest.json").is_file()
    io.write_json(tmp_path / "manifest.json", {"status": "interrupted", "reason": "x", "cells": {}})
    assert rundir.restart(tmp_path, RunConfig(experiment="cohort", suite="recsim"))["experiment"] == "cohort"
