import json

import numpy as np
import pandas as pd
import pytest

from mtl_bench import cli

from mtl_bench.analysis import report

from mtl_bench.experiments import grid as runner
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
        archs=["shared_bottom", "mmoe"], seeds=2, epochs=2, batch_size=128, probe_every=2, lookahead_steps=2,
    )
    run_dir = runner.run(config, out=tmp_path / "run", progress=None, in_process=True)
    assert cli.main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "Contrast" in out and "Spearman" in out
    tasks = pd.read_csv(run_dir / "report.csv")
    # 2 correlations × 2 archs × 2 tasks, each with its joint transfer and every measure
    assert len(tasks) == 8 and tasks["n"].eq(2).all()
    # Every label is in every batch: no stretch without a task's signal, so the absence measures cannot exist.
    stretch = {"absence_damage", "absence_floor", "presence_rise"}
    assert tasks[[m.name for m in report.MEASURES if m.name not in stretch | {"conflict_ratio"}]].notna().all().all()
    # No conflict ratio exactly where a cell's within-task floor is noise (below FLOOR_MIN).
    units = report.unit_table(*report.load_runs([run_dir])[:3], ["correlation"])
    noisy = units.groupby(["correlation", "arch", "seed"])["cosine_floor"].transform("min") < report.FLOOR_MIN
    assert (units["conflict_ratio"].isna() == noisy).all()
    assert tasks[sorted(stretch)].isna().all().all()
    contrast = pd.read_csv(run_dir / "contrast.csv")
    assert set(contrast.measure) == {m.name for m in report.MEASURES} - stretch
    n = contrast.set_index("measure")["n"]
    assert (n.drop("conflict_ratio") == 16).all() and n["conflict_ratio"] == units["conflict_ratio"].notna().sum()
    md = (run_dir / "report.md").read_text()
    assert "## Verdict" in md
    verdicts = json.loads((run_dir / "verdict.json").read_text())
    assert sorted((v["correlation"], v["arch"]) for v in verdicts) == [
        (0.0, "mmoe"), (0.0, "shared_bottom"), (1.0, "mmoe"), (1.0, "shared_bottom")]
    for v in verdicts:  # 2 seeds: fewer than the 3 a verdict needs
        assert v["negative_transfer"] == "undetermined" and v["explanation"] == "undetermined"
        assert all(t["readings"]["forgetting"] == "not measurable" for t in v["tasks"].values())


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


def _probe_rows(regime, rows):
    base = {"run": "r", "suite": "s", "arch": "a", "regime": regime, "remedy": "none", "order": "-", "seed": 0,
            "phase": 0, "group": "all"}
    return [{**base, "step": step, "task_i": ti, "task_j": tj, "measure": m, "value": v} for step, ti, tj, m, v in rows]


def test_derived_measures_against_hand_computation():
    units = pd.DataFrame({"run": "r", "suite": "s", "arch": "a", "seed": 0, "task": ["t1", "t2"],
                          "cosine_halves": [-0.3, -0.3], "cosine_floor": [0.9, 0.4]})
    probe = pd.DataFrame(_probe_rows("joint", [
        # t1 lacks labels in the windows ending at steps 10 and 30, has them at 20
        (10, "t1", "t1", "loss_rise", 0.2), (10, "t1", "t1", "window_signal", 0.0),
        (20, "t1", "t1", "loss_rise", -0.1), (20, "t1", "t1", "window_signal", 1.0),
        (30, "t1", "t1", "loss_rise", 0.4), (30, "t1", "t1", "window_signal", 0.0),
        (10, "t2", "t2", "loss_rise", 0.5),  # t2 never misses labels: no window_signal, no absence measures
    ]) + _probe_rows("single", [
        (10, "t1", "t1", "loss_rise", -0.05), (10, "t1", "t1", "window_signal", 0.0),
        (30, "t1", "t1", "loss_rise", 0.05), (30, "t1", "t1", "window_signal", 0.0),
    ]))
    table = report._derived(units.copy(), probe, ["run", "suite", "arch", "seed", "task"]).set_index("task")
    # conflict ratio: cosine_halves / sqrt(own floor · other task's floor)
    assert table.loc["t1", "conflict_ratio"] == pytest.approx(-0.3 / np.sqrt(0.9 * 0.4))
    assert table.loc["t1", "absence_damage"] == pytest.approx((0.2 + 0.4) / 2)
    assert table.loc["t1", "presence_rise"] == pytest.approx(-0.1)
    assert table.loc["t1", "absence_floor"] == pytest.approx(0.0)  # the single-task model's mean over the same windows
    assert np.isnan(table.loc["t2", "absence_damage"]) and np.isnan(table.loc["t2", "absence_floor"])
    # A floor below FLOOR_MIN is noise: no ratio rather than an inflated one.
    noisy = report._derived(units.assign(cosine_floor=[0.9, 0.01]), probe, ["run", "suite", "arch", "seed", "task"])
    assert noisy["conflict_ratio"].isna().all()


def test_report_pools_runs_with_different_variant_columns(tmp_path, capsys):
    """A bug report: `report` on a synthetic run (variant column `correlation`) and a planted run (`mechanism`)
    failed with pandas' "merge on object and float64 columns", because a measure present in one run only
    (here the synthetic run's sequential measures) came out of a groupby with the other run's string column
    as float; and verdicts named the other run's column as "mechanism=nan"."""
    small = {"train_rows": 512, "validation_rows": 256, "test_rows": 256}
    common = dict(archs=["shared_bottom"], seeds=1, epochs=2, batch_size=128, probe_every=2)
    synthetic = runner.run(RunConfig(suite="synthetic", suite_params={"correlation": 0.5, **small}, **common),
                           out=tmp_path / "synthetic", progress=None, in_process=True)
    # No sequential regime in the planted run: its rows have no retention measures, the synthetic run's do.
    planted = runner.run(RunConfig(suite="planted", suite_params={"mechanism": "forgetting", **small},
                                   regimes=["single", "joint"], **common),
                         out=tmp_path / "planted", progress=None, in_process=True)
    assert cli.main(["report", str(synthetic), str(planted)]) == 0
    out = capsys.readouterr().out
    tasks = pd.read_csv(synthetic / "report.csv")
    assert sorted(tasks.groupby("suite").size().items()) == [("planted", 2), ("synthetic", 2)]
    # The planted run's window measures reach its rows; the synthetic run has every label in every batch.
    assert tasks[tasks["suite"] == "planted"]["absence_damage"].notna().any()
    assert tasks[tasks["suite"] == "synthetic"]["absence_damage"].isna().all()
    # Each verdict names only its own run's variant column.
    verdicts = json.loads((synthetic / "verdict.json").read_text())
    assert sorted(v["suite"] for v in verdicts) == ["planted", "synthetic"]
    lines = [line for line in out.splitlines() if line.startswith("- ")]
    heads = sorted(line.split(":")[0] for line in lines)
    sizes = "train_rows=512 validation_rows=256 test_rows=256"
    # Variant columns in the order the runs first name them: correlation, the sizes, then mechanism.
    assert heads == [f"- planted {sizes} mechanism=forgetting shared_bottom",
                     f"- synthetic correlation=0.5 {sizes} shared_bottom"], heads


def test_runs_without_a_single_regime_report_without_crashing():
    """A bug report: `report` on a joint-only run (e.g. a static-weight sweep) raised KeyError 'metric': filtering
    an empty frame with an empty Python list selected no columns instead of no rows."""
    from mtl_bench.analysis import remedies as remedy_report

    rows = [dict(run="r", suite="s", arch="mmoe", regime="joint", remedy=r, order="-", seed=seed, phase=0, epoch=1,
                 stage="final", task=t, split="validation", metric="mse", value=0.5 + seed)
            for r in ("none", "pcgrad") for seed in (0, 1) for t in ("a", "b")]
    metrics = pd.DataFrame(rows)
    assert remedy_report.remedy_table(metrics, pd.DataFrame(), pd.DataFrame(), []).empty
    units = report.unit_table(metrics, pd.DataFrame(), pd.DataFrame(), [])
    assert units["transfer"].isna().all()  # no single-task value to compare with
