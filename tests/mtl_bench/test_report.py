import numpy as np
import pandas as pd
import pytest

from mtl_bench import cli, report, runner
from mtl_bench.config import RunConfig


def _ranks_corr(x, y):
    """Spearman's rho computed independently: Pearson correlation of average ranks."""
    def rank(v):
        order = np.argsort(v, kind="mergesort")
        r = np.empty(len(v))
        r[order] = np.arange(1, len(v) + 1)
        for value in np.unique(v):  # average ranks of ties
            r[v == value] = r[v == value].mean()
        return r
    return float(np.corrcoef(rank(x), rank(y))[0, 1])


def _units(n, signal):
    rng = np.random.default_rng(0)
    transfer = rng.normal(size=n)
    noise = lambda: rng.normal(size=n)  # noqa: E731
    cols = {m.name: noise() for m in report.MEASURES}
    if signal == "forgetting":
        cols["sequential_forgetting"] = -transfer + 0.05 * noise()  # more forgetting, more negative transfer
    elif signal == "conflict":
        cols["conflict_rate"] = -transfer + 0.05 * noise()
    return pd.DataFrame({"transfer": transfer, **cols})


def test_spearman_and_support_match_independent_computation():
    units = _units(40, "forgetting")
    table = report.contrast(units, n_boot=200).table.set_index("measure")
    for name in ("cosine", "sequential_forgetting"):
        rho = _ranks_corr(units[name].to_numpy(), units["transfer"].to_numpy())
        assert table.loc[name, "spearman"] == pytest.approx(rho, abs=1e-12)
        sign = next(m.sign for m in report.MEASURES if m.name == name)
        assert table.loc[name, "support"] == pytest.approx(sign * rho, abs=1e-12)
        assert table.loc[name, "ci_low"] <= rho <= table.loc[name, "ci_high"]


@pytest.mark.parametrize(
    "signal, expected",
    [
        ("forgetting", "Forgetting predicts negative transfer better"),
        ("conflict", "Gradient conflict predicts negative transfer better"),
        ("none", "Neither explanation"),
    ],
)
def test_verdict_follows_the_evidence(signal, expected):
    assert expected in report.contrast(_units(60, signal), n_boot=300).verdict


def test_too_few_units_make_no_claim():
    assert report.contrast(_units(4, "forgetting"), n_boot=50).verdict.startswith("Too few")


def test_units_without_transfer_make_no_claim():
    units = _units(40, "forgetting").assign(transfer=np.nan)
    assert report.contrast(units, n_boot=50).verdict.startswith("Too few")


def test_bootstrap_resamples_whole_cells():
    # Two tasks per cell carry the same conflict value: 20 cells, not 40 independent units.
    units = _units(40, "none").assign(run="r", suite="s", arch="a", seed=np.repeat(np.arange(20), 2),
                                      task=np.tile(["t1", "t2"], 20), metric="mse")
    units["relative_transfer"] = units["transfer"]
    wide = report.contrast(units, n_boot=400).table.set_index("measure")
    flat = report.contrast(units.drop(columns=["seed"]), n_boot=400).table.set_index("measure")
    # Without the seed column every unit of the run is one cell: the bootstrap can only resample it whole.
    assert (flat["ci_high"] - flat["ci_low"]).max() == pytest.approx(0.0, abs=1e-12)
    assert (wide["ci_high"] - wide["ci_low"]).min() > 0


def test_report_on_real_runs(tmp_path, capsys):
    config = RunConfig(
        suite="synthetic",
        suite_params={"correlation": [1.0, 0.0], "train_rows": 512, "validation_rows": 256, "test_rows": 256},
        archs=["shared_bottom", "mmoe"], seeds=2, epochs=2, batch_size=128, probe_every=2,
    )
    run_dir = runner.run(config, out=tmp_path / "run", progress=None, in_process=True)
    assert cli.main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "Contrast" in out and "Spearman" in out
    tasks = pd.read_csv(run_dir / "report.csv")
    # 2 correlations × 2 archs × 2 tasks, each with its joint transfer and every measure
    assert len(tasks) == 8 and tasks["n"].eq(2).all()
    assert tasks[[m.name for m in report.MEASURES]].notna().all().all()
    contrast = pd.read_csv(run_dir / "contrast.csv")
    assert set(contrast.measure) == {m.name for m in report.MEASURES}
    assert (contrast.n == 16).all()
    md = (run_dir / "report.md").read_text()
    assert "## Verdict" in md


def test_same_run_twice_is_refused(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "manifest.json").write_text("{}")
    (run_dir / "metrics.csv").write_text("x\n")
    assert cli.main(["report", str(run_dir), str(tmp_path / "." / "run")]) == 2
    assert "more than once" in capsys.readouterr().err


def test_report_bad_dir_exits_2(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a finished run directory" in err and "\n" not in err
