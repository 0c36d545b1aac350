"""The sparse-dense sweep: parameter matching by formula and a tiny end-to-end sweep."""

import shutil

import pandas as pd
import pytest

from mtl_bench import cli, experiments, io
from mtl_bench.experiments import sparse_dense
from mtl_bench.config import RunConfig
from mtl_bench.engine.executor import InProcess
from mtl_bench.errors import UserInputError
from mtl_bench.tasks import recsim

TINY = {"users": 150, "items": 60, "categories": 5, "days": 5, "impressions_per_day": 600}


def _config(**kw) -> RunConfig:
    base = dict(suite="recsim", suite_params=dict(TINY), archs=["mmoe"], seeds=1, epochs=1, batch_size=128,
                probe_every=2, jobs=1, experiment="sparse-dense")
    base.update(kw)
    return RunConfig(**base)


def test_points_keep_the_total_and_move_parameters_into_the_dense_layers():
    data = recsim.load(seed=0, **TINY)
    config = _config(archs=["shared_bottom", "mmoe", "ple"])
    points = sparse_dense.matched_points(config, data, dims=(16, 8, 2))
    vocab = sum(data.features.vocabulary_sizes)
    for arch, group in points.groupby("arch"):
        group = group.set_index("embedding_dim")
        # Embedding tables hold one row of width e per id of every categorical column.
        assert (group["params_embedding"] == vocab * group.index).all()
        reference = group.loc[16, "params_total"]
        assert (abs(group["params_total"] - reference) <= 0.02 * reference).all(), arch
        assert group.loc[2, "dense_share"] > group.loc[8, "dense_share"] > group.loc[16, "dense_share"]
        assert group.loc[2, "width"] > group.loc[16, "width"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setattr(sparse_dense, "EMBEDDING_DIMS", (8, 2))
    out = tmp_path_factory.mktemp("sd") / "exp"
    return experiments.run(_config(), out=out, executor=RECORDING, progress=None)


class _Recording:
    """This process, recording the items it was given: the sweep's cells go through the run's executor."""

    def __init__(self) -> None:
        self.items: list = []

    def prepare(self) -> None:
        pass

    def run(self, fn, items, on_result, **kw):
        self.items += list(items)
        InProcess().run(fn, items, on_result, **kw)


RECORDING = _Recording()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_sweep_writes_one_run_per_point_and_the_table(sweep):
    assert sorted(p.name for p in (sweep / "points").iterdir()) == ["embedding_dim=2", "embedding_dim=8"]
    table = pd.read_csv(sweep / "sparse_dense.csv")
    assert len(table) == 2 and set(table["arch"]) == {"mmoe"}
    for column in ("dense_share", "delta_m", "conflict_rate_embedding", "conflict_rate_dense", "forgetting"):
        assert column in table.columns
    assert table["delta_m"].notna().all() and table["conflict_rate_dense"].notna().all()
    row = table.set_index("embedding_dim").loc[8]
    assert row["forgetting"] == pytest.approx(row["control_lift_change"] - row["heldout_lift_change"])
    config = RunConfig.from_toml(sweep / "points" / "embedding_dim=2" / "config.toml")
    assert config.arch_params["mmoe"]["embedding_dim"] == 2 and config.experiment == "cohort"
    assert "too few points" in (sweep / "sparse_dense.md").read_text()
    # Every cell of both points went through the executor the sweep was given.
    cells = sum(len(io.read_json(sweep / "points" / p / "manifest.json")["cells"]) for p in ("embedding_dim=2", "embedding_dim=8"))
    assert cells > 0 and len(RECORDING.items) == cells


def test_manifests_name_the_sweep_and_its_points(sweep):
    manifest = io.read_json(sweep / "manifest.json")
    assert (manifest["experiment"], manifest["status"]) == ("sparse-dense", "complete")
    assert manifest["finished"] and manifest["seeds"] == [0]
    for point in sweep_points(sweep):
        assert io.read_json(point / "manifest.json")["experiment"] == "cohort"
    assert experiments.of(sweep).runs(sweep) == sweep_points(sweep)


def sweep_points(sweep):
    return [sweep / "points" / "embedding_dim=2", sweep / "points" / "embedding_dim=8"]


def test_resume_reuses_the_points(sweep):
    before = (sweep / "points" / "embedding_dim=8" / "metrics.csv").read_text()
    assert experiments.resume(sweep, in_process=True, progress=None) == sweep
    assert (sweep / "points" / "embedding_dim=8" / "metrics.csv").read_text() == before


class _Unreachable:
    def prepare(self) -> None:
        raise UserInputError("cannot reach the Dask scheduler at tcp://h:1")

    def run(self, fn, items, on_result, **kw):
        raise AssertionError("an unprepared executor ran items")


def _files(directory):
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(directory.rglob("*")) if p.is_file()}


def test_resume_checks_the_executor_and_the_config_before_it_writes(sweep, tmp_path):
    copy = shutil.copytree(sweep, tmp_path / "exp")
    before = _files(copy)
    with pytest.raises(UserInputError, match="cannot reach"):
        experiments.resume(copy, executor=_Unreachable(), progress=None)
    assert _files(copy) == before
    config = copy / "config.toml"
    assert "epochs = 1\n" in config.read_text()
    config.write_text(config.read_text().replace("epochs = 1\n", "epochs = 2\n"))
    with pytest.raises(UserInputError, match="changed since the run started"):
        experiments.resume(copy, in_process=True, progress=None)


def test_sparse_dense_needs_recsim(tmp_path, capsys):
    code = cli.main(["run", "--suite", "synthetic", "--experiment", "sparse-dense", "--out", str(tmp_path / "x")])
    assert code == 2 and "needs the recsim suite" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_report_on_the_sweep_prints_it_and_reports_its_points(sweep, capsys):
    assert cli.main(["report", str(sweep)]) == 0
    printed = capsys.readouterr().out
    assert "# Sparse isolation vs dense scaling" in printed and "Cohort forgetting" in printed
    assert (sweep / "points" / "embedding_dim=2" / "report.md").is_file()
