"""The contrast grid: every remedy for one epoch on a small slice, its files, planning and the report's table."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mtl_bench.engine import cells
from mtl_bench import cli

from mtl_bench.analysis import report

from mtl_bench.experiments import grid as runner
from mtl_bench.config import RunConfig
from mtl_bench.errors import UserInputError
from mtl_bench.remedies import REMEDIES
from mtl_bench.analysis.remedies import remedy_table, remedy_verdict

# The remedies whose cells the grid fixture runs; the newer methods and the sweep are tested in test_methods.py
# and test_sweep.py (one grid over all of them takes minutes).
ALL = ["none", "equal", "uncertainty", "pcgrad", "gradvac", "cagrad", "replay", "distill", "kl-anchor"]


def _small(**kw) -> RunConfig:
    base = dict(
        suite="synthetic",
        suite_params={"correlation": 0.5, "train_rows": 512, "validation_rows": 256, "test_rows": 256},
        archs=["mmoe"],
        seeds=2,
        epochs=2,
        batch_size=128,
        probe_every=2,
        jobs=1,
        remedies=ALL,
    )
    base.update(kw)
    return RunConfig(**base)


def _expected_cells(config: RunConfig, orders: int = 2) -> int:
    per_seed = 0
    for regime in config.regimes:
        n_orders = orders if regime == "sequential" else 1
        per_seed += sum(n_orders * len(config.archs) for r in config.remedies if regime in REMEDIES[r].regimes)
    return per_seed * config.seeds


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    out = tmp_path_factory.mktemp("grid") / "run"
    return runner.run(_small(), out=out, in_process=True, progress=None)


def test_every_remedy_runs_where_it_applies(grid):
    manifest = runner.io.read_json(grid / "manifest.json")
    assert manifest["status"] == "complete", manifest["reason"]
    assert len(manifest["cells"]) == _expected_cells(_small())
    metrics = pd.read_csv(grid / "metrics.csv")
    seen = set(zip(metrics["regime"], metrics["remedy"]))
    expected = {(g, r) for r, rem in REMEDIES.items() if r in ALL for g in rem.regimes if g in _small().regimes}
    assert seen == expected
    for name in ("metrics", "summary", "probe", "retention"):
        assert "remedy" in pd.read_csv(grid / f"{name}.csv").columns, name


def test_update_conflict_follows_the_gram_of_the_probe(grid):
    probe = pd.read_csv(grid / "probe.csv")
    update = probe[probe["measure"] == "update_conflict"]
    assert set(update["remedy"]) == {r for r, rem in REMEDIES.items() if r in ALL and "joint" in rem.regimes}
    assert set(update["regime"]) == {"joint"}  # sequential phases train one task: no combination to probe
    cos = probe[probe["measure"] == "update_cosine"].set_index(["remedy", "seed", "step", "task_i"])["value"]
    flags = update.set_index(["remedy", "seed", "step", "task_i"])["value"]
    pd.testing.assert_series_equal((cos < 0).astype(float), flags, check_names=False)
    # PCGrad's update never raises a task's loss to first order (two tasks): its update conflict is 0.
    assert update[update["remedy"] == "pcgrad"]["value"].max() == 0.0


def test_single_baseline_is_shared_by_every_remedy(grid):
    summary = pd.read_csv(grid / "summary.csv")
    multi = summary[(summary["regime"] != "single") & (summary["task"] != "all")]
    assert multi["transfer"].notna().all()
    assert set(summary[summary["regime"] == "single"]["remedy"]) == {"none"}


def _delta_m_by_seed(final, single, regime, remedy):
    """Δm of each cell (mean relative MSE change vs the same seed's single task), then the mean per seed."""
    cells = final[(final["regime"] == regime) & (final["remedy"] == remedy)]
    base = single.loc[list(zip(cells["seed"], cells["task"]))].to_numpy()
    cells = cells.assign(rel=100 * (base - cells["value"].to_numpy()) / np.abs(base))
    per_cell = cells.groupby(["seed", "order"])["rel"].mean()
    return per_cell.groupby("seed").mean()


def test_remedy_table_pairs_cells_with_the_baselines(grid):
    metrics, probe, retention, variants = report.load_runs([grid])
    table = remedy_table(metrics, probe, retention, variants)
    joint = table[table["regime"] == "joint"]
    # The synthetic tasks have weight 1, so "equal" runs only because it was asked for, and is a baseline.
    assert set(joint["baseline"]) == {"none", "equal"}
    assert set(joint[joint["baseline"] == "none"]["remedy"]) == {"equal", "uncertainty", "pcgrad", "gradvac", "cagrad",
                                                                 "distill", "kl-anchor"}
    seq = table[table["regime"] == "sequential"]
    assert set(seq["remedy"]) == {"replay", "distill", "kl-anchor"}
    assert (table["n"] == 2).all()  # clusters are seeds: the two orders of a seed share data and baselines
    # Independent recomputation from metrics.csv: Δm per cell, averaged per seed, paired, t-interval over seeds.
    final = metrics[(metrics["stage"] == "final") & (metrics["split"] == "validation") & (metrics["metric"] == "mse")]
    final = final[final["phase"] == final.groupby(["regime", "remedy", "order", "seed"])["phase"].transform("max")]
    single = final[final["regime"] == "single"].set_index(["seed", "task"])["value"]
    for regime, remedy in (("joint", "pcgrad"), ("sequential", "replay")):
        change = _delta_m_by_seed(final, single, regime, remedy) - _delta_m_by_seed(final, single, regime, "none")
        row = table[(table["regime"] == regime) & (table["remedy"] == remedy) & (table["baseline"] == "none")].iloc[0]
        assert row["delta_m_change"] == pytest.approx(change.mean())
        half = stats.t.ppf(0.975, len(change) - 1) * change.std(ddof=1) / np.sqrt(len(change))
        assert row["ci_low"] == pytest.approx(change.mean() - half)
        assert row["ci_high"] == pytest.approx(change.mean() + half)
        assert row["median_change"] == pytest.approx(change.median())
        assert row["wins"] == (change > 0).sum()
        assert np.isnan(row["median_ci_low"]) and not row["helps"]  # two seeds: too few for a sign-test interval


def test_report_writes_the_remedy_table_and_its_reading(grid):
    _, result, out = report.write_report([grid])
    written = pd.read_csv(out / "remedies.csv")
    assert len(written) == len(result.remedies) > 0
    text = (out / "report.md").read_text()
    assert "## Remedies" in text and "## What the interventions say" in text
    for remedy in ("pcgrad", "gradvac", "cagrad", "distill", "kl-anchor", "replay"):
        assert f", {remedy}:" in result.remedy_verdict


def _row(**kw):
    base = dict(regime="joint", remedy="pcgrad", family="conflict", baseline="none", n=9, wins=4, delta_m_change=0.0,
                ci_low=-1.0, ci_high=1.0, median_change=0.0, median_ci_low=-1.0, median_ci_high=1.0, helps=False, conflict_rate_change=0.0, cosine_change=0.0,
                update_conflict_change=0.0, forgetting_events_change=0.0, affinity_in_change=0.0,
                sequential_forgetting_change=float("nan"), output_drift_change=float("nan"), baseline_update_conflict=0.3,
                lowers_conflict=False, lowers_forgetting=False)
    base.update(kw)
    return base


@pytest.mark.parametrize(
    "row, phrase",
    [
        (_row(lowers_conflict=True, median_ci_low=-2.0, median_ci_high=-0.5), "evidence against gradient conflict"),
        (_row(lowers_conflict=True), "no support for gradient conflict"),
        (_row(lowers_conflict=True, median_ci_low=0.5, median_ci_high=2.0, helps=True),
         "evidence for gradient conflict"),
        (_row(baseline_update_conflict=0.0), "no conflict to remove"),
        (_row(remedy="distill", family="forgetting", lowers_forgetting=True, median_ci_low=0.1,
              median_ci_high=3.0, helps=True), "evidence for forgetting"),
        (_row(median_ci_low=float("nan"), median_ci_high=float("nan"), n=2), "too few paired seeds"),
    ],
)
def test_verdict_reading(row, phrase):
    assert phrase in remedy_verdict(pd.DataFrame([row]))


def test_a_remedy_helps_only_against_every_baseline():
    rows = [_row(median_ci_low=0.5, median_ci_high=2.0, helps=True, lowers_conflict=True),
            _row(baseline="equal", median_ci_low=-0.5, median_ci_high=2.0, helps=False, lowers_conflict=True)]
    assert "evidence for" not in remedy_verdict(pd.DataFrame(rows))


def test_plan_adds_the_baselines():
    weighted = _small(remedies=["pcgrad"], task_weights={"task1": 2.0})
    the_plan = runner.plan(weighted)
    assert {c.remedy for c in the_plan.cells} == {"none", "equal", "pcgrad"}
    assert any("equal-weight baseline" in n for n in the_plan.notes)
    unweighted = runner.plan(_small(remedies=["replay"], regimes=["joint", "sequential"]))
    assert {(c.regime, c.remedy) for c in unweighted.cells} == {("joint", "none"), ("sequential", "none"), ("sequential", "replay")}
    # "equal" is a joint baseline: a sequential-only remedy does not bring it in.
    replay_only = runner.plan(_small(remedies=["replay"], task_weights={"task1": 2.0}))
    assert "equal" not in {c.remedy for c in replay_only.cells}


def test_plan_warns_that_joint_anchors_need_two_epochs():
    notes = runner.plan(_small(remedies=["distill"], epochs=1)).notes
    assert any("do nothing in the joint regime" in n for n in notes)
    assert not any("do nothing" in n for n in runner.plan(_small(remedies=["distill"], epochs=2)).notes)


def test_task_weights_reach_the_tasks():
    data = cells.load_suite(_small(task_weights={"task2": 3.0}), (("correlation", 0.5),), 0)
    assert [t.weight for t in data.tasks] == [1.0, 3.0]


@pytest.mark.parametrize(
    "kw, needle",
    [
        (dict(remedies=["pcgrad", "nope"]), "unknown remedy 'nope'; valid remedies:"),
        (dict(remedy_params={"replay": {"size": 3}}), "unknown parameter(s) ['size']; valid: ['share', 'weight']"),
        (dict(remedy_params={"replay": {"share": 2.0}}), "remedy_params for 'replay': Replay: share must be a number in (0, 1]"),
        (dict(remedy_params={"nope": {}}), "remedy_params names unknown remedy 'nope'"),
        (dict(task_weights={"task9": 1.0}), "task_weights names unknown task(s) ['task9']"),
    ],
)
def test_bad_remedy_config_writes_nothing(tmp_path, kw, needle):
    out = tmp_path / "run"
    with pytest.raises(UserInputError) as err:
        runner.run(_small(**kw), out=out, in_process=True, progress=None)
    assert needle in str(err.value)
    assert not out.exists()


@pytest.mark.parametrize(
    "kw",
    [dict(task_weights={"task1": -1.0}), dict(remedies=["pcgrad", "pcgrad"]), dict(remedy_params={"replay": 3})],
)
def test_bad_remedy_values_fail_at_once(kw):
    with pytest.raises(UserInputError, match="Received"):
        _small(**kw)


def test_cli_unknown_remedy_exits_2(tmp_path, capsys):
    code = cli.main(["run", "--remedy", "pcgrad,magic", "--out", str(tmp_path / "r"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown remedy 'magic'" in err[0]
    assert not (tmp_path / "r").exists()


def test_cli_remedy_and_task_weight_reach_the_config():
    args = cli._build_parser().parse_args(["run", "--remedy", "pcgrad,replay", "--task-weight", "task2=2.5"])
    config = cli._run_config(args)
    assert config.remedies == ["pcgrad", "replay"] and config.task_weights == {"task2": 2.5}


def test_remedy_figure_has_one_point_per_compared_remedy(grid):
    from mtl_bench.analysis import plots

    metrics, probe, retention, variants = report.load_runs([grid])
    table = remedy_table(metrics, probe, retention, variants)
    fig = plots.remedy_effects(table)
    left = fig.axes[0]
    vs_none = table[table["baseline"] == "none"]
    assert len(left.get_yticklabels()) == len(vs_none)
    names = plots.figures([grid])
    assert callable(names["remedies.png"])
    # The other figures describe the baseline cells only.
    assert not isinstance(names["negative_transfer.png"], str)


def _hand_made(seeds=8):
    """One joint cell per seed and remedy: pcgrad raises the cosine, distill lowers the forgetting events."""
    metrics, probe = [], []
    for seed in range(seeds):
        base = dict(run="r", suite="s", arch="a", order="-", seed=seed, phase=0, epoch=-1, stage="final",
                    split="validation", metric="mse")
        for task in ("t1", "t2"):
            metrics.append(dict(base, regime="single", remedy="none", task=task, value=1.0))
            for remedy, value in (("none", 1.2), ("pcgrad", 1.1), ("distill", 1.3)):
                metrics.append(dict(base, regime="joint", remedy=remedy, task=task, value=value + 0.01 * seed))
        for remedy, cosine, events in (("none", -0.3, 0.2), ("pcgrad", -0.1, 0.2), ("distill", -0.3, 0.1)):
            cell = dict(run="r", suite="s", arch="a", regime="joint", remedy=remedy, order="-", seed=seed, phase=0,
                        step=10, group="all")
            for ti, tj in (("t1", "t2"), ("t2", "t1")):
                probe.append(dict(cell, task_i=ti, task_j=tj, measure="cosine", value=cosine + 0.01 * seed))
            for task in ("t1", "t2"):
                probe.append(dict(cell, task_i=task, task_j=task, measure="forgetting_rate", value=events))
                probe.append(dict(cell, task_i=task, task_j="update", measure="update_conflict", value=0.0))
    return pd.DataFrame(metrics), pd.DataFrame(probe)


def test_remedy_columns_are_the_catalogs_per_cell_measures():
    from mtl_bench.analysis import remedies as remedy_report
    from mtl_bench.measures.catalog import BY_NAME, MEASURES

    assert [m.name for m in remedy_report.CHANGES] == [m.name for m in MEASURES if m.source != "derived"]
    changes = [c for c in remedy_report.COLUMNS
               if c.endswith("_change") and c not in ("delta_m_change", "median_change")]
    assert changes == [f"{m.name}_change" for m in remedy_report.CHANGES]
    assert {"forgetting_events_change", "affinity_in_change", "update_conflict_change"} <= set(changes)
    assert not {"forgetting_rate_change", "affinity_change"} & set(remedy_report.COLUMNS)
    assert BY_NAME["update_conflict"].family == "descriptive" and BY_NAME["update_conflict"].direction == "self"
    assert {m.name for m in remedy_report.FORGETTING_MEASURES} == {"sequential_forgetting"}
    assert "update_conflict" in {m.name for m in remedy_report.CONFLICT_MEASURES}


def test_lowers_flags_are_sign_aware_and_ignore_descriptive_measures():
    metrics, probe = _hand_made()
    table = remedy_table(metrics, probe, pd.DataFrame(), []).set_index("remedy")
    table = table[table["baseline"] == "none"]
    pcgrad, distill = table.loc["pcgrad"], table.loc["distill"]
    assert pcgrad["cosine_change"] == pytest.approx(0.2)
    # The cosine (sign +1) went up in every seed: less conflict, though no sign -1 measure went down.
    assert pcgrad["lowers_conflict"] and not pcgrad["lowers_forgetting"]
    assert pcgrad["target_measure"] == "conflict_rate" and np.isnan(pcgrad["conflict_rate_change"])
    # Fewer forgetting events in every seed: descriptive, so no evidence that forgetting was removed.
    assert distill["forgetting_events_change"] == pytest.approx(-0.1)
    assert not distill["lowers_forgetting"] and not distill["lowers_conflict"]
    assert distill["target_measure"] == "" and np.isnan(distill["target_lowered_share"])
    assert np.isnan(distill["sequential_forgetting_change"])
    reading = remedy_verdict(table.reset_index())
    assert "distill: increases negative transfer" in reading
    assert "no per-cell forgetting measure in this regime" in reading
