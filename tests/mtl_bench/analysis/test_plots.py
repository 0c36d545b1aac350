"""Plot functions on small hand-made frames: the expected axes, lines and points follow from the inputs."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure

from mtl_bench import cli

from mtl_bench.analysis import plots

ARCHS = ["shared_bottom", "mmoe"]
CORRELATIONS = [1.0, 0.0]
SEEDS = [0, 1, 2]
TASKS = ["t1", "t2"]
ORDERS = ["t1>t2", "t2>t1"]
STEPS = [0, 50, 100]
GROUPS = ["all", "dense"]
EXPERTS = 4


def _probe() -> pd.DataFrame:
    rows = []
    base = dict(suite="synthetic")
    for corr, arch, seed, step in itertools.product(CORRELATIONS, ARCHS, SEEDS, STEPS):
        cell = dict(base, correlation=corr, arch=arch, regime="joint", order="-", seed=seed, phase=0, step=step)
        for ti, tj in itertools.permutations(TASKS, 2):
            for group in GROUPS:
                rows.append(dict(cell, task_i=ti, task_j=tj, group=group, measure="cosine", value=corr - 0.1 * seed))
                rows.append(dict(cell, task_i=ti, task_j=tj, group=group, measure="conflict", value=0.1 * seed))
            rows.append(dict(cell, task_i=ti, task_j=tj, group="all", measure="affinity", value=0.01 * step))
        for t in TASKS:
            rows.append(dict(cell, task_i=t, task_j=t, group="all", measure="loss", value=1.0))
            if arch == "mmoe":
                rows.append(dict(cell, task_i=t, task_j=t, group="gate", measure="gate_entropy", value=1.0 + seed))
                for e in range(EXPERTS):
                    rows.append(dict(cell, task_i=t, task_j=f"expert{e}", group="gate", measure="gate_weight",
                                     value=1.0 / EXPERTS))
    frame = pd.DataFrame(rows)
    return frame[["suite", "correlation", "arch", "regime", "order", "seed", "phase", "step", "task_i", "task_j",
                  "group", "measure", "value"]]


def _retention() -> pd.DataFrame:
    rows = []
    for corr, arch, seed, order in itertools.product(CORRELATIONS, ARCHS, SEEDS, ORDERS):
        first, second = order.split(">")
        cell = dict(suite="synthetic", correlation=corr, arch=arch, regime="sequential", order=order, seed=seed)
        rows.append(dict(cell, phase=0, task=first, measure="output_drift_new", value=5.0))
        rows.append(dict(cell, phase=1, task=first, measure="output_drift", value=0.1 + seed))
        rows.append(dict(cell, phase=1, task=first, measure="retention_mse", value=corr))
        rows.append(dict(cell, phase=1, task=first, measure="forgetting_mse", value=seed * 0.5))
        rows.append(dict(cell, phase=1, task="(mean)", measure="forgetting_mse", value=seed * 0.25))
        rows.append(dict(cell, phase=1, task="(shared weights)", measure="principal_angle", value=0.3))
    return pd.DataFrame(rows)


def _metrics() -> pd.DataFrame:
    rows = []
    for corr, arch, seed in itertools.product(CORRELATIONS, ARCHS, SEEDS):
        cell = dict(suite="synthetic", correlation=corr, arch=arch, seed=seed, epoch=-1, stage="final",
                    split="validation", metric="mse")
        for order in ORDERS:
            for phase, task in itertools.product([0, 1], TASKS):
                rows.append(dict(cell, regime="sequential", order=order, phase=phase, task=task, value=1.0 + phase))
        for task in TASKS:
            rows.append(dict(cell, regime="joint", order="-", phase=0, task=task, value=1.0))
    frame = pd.DataFrame(rows)
    return frame[["suite", "correlation", "arch", "regime", "order", "seed", "phase", "epoch", "stage", "task",
                  "split", "metric", "value"]]


def _summary() -> pd.DataFrame:
    rows = []
    for corr, arch in itertools.product(CORRELATIONS, ARCHS):
        base = dict(suite="synthetic", correlation=corr, arch=arch, metric="mse", mean=1.0, ci_low=0.9, ci_high=1.1, n=3)
        for split, task in itertools.product(["validation", "test"], TASKS):
            rows.append(dict(base, regime="single", order="-", task=task, split=split))
            rows.append(dict(base, regime="joint", order="-", task=task, split=split, transfer=-0.2,
                             transfer_ci_low=-0.3, transfer_ci_high=-0.1))
            for order in ORDERS:
                rows.append(dict(base, regime="sequential", order=order, task=task, split=split, transfer=0.1,
                                 transfer_ci_low=0.0, transfer_ci_high=0.2))
        rows.append(dict(base, regime="joint", order="-", task="all", split="validation", metric="delta_m"))
    return pd.DataFrame(rows)


def _points(ax) -> int:
    return sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))


def test_conflict_retention_points_pairs_joint_cosine_with_sequential_retention():
    points = plots.conflict_retention_points(_probe(), _retention())
    assert len(points) == len(CORRELATIONS) * len(ARCHS) * len(SEEDS) * 2  # ordered task pairs
    row = points[(points["correlation"] == 0.0) & (points["seed"] == 2) & (points["task_i"] == "t1")].iloc[0]
    assert row["x"] == pytest.approx(0.0 - 0.2)
    assert row["y"] == pytest.approx(0.0)  # retention of t1 in order t1>t2 at correlation 0


def test_conflict_vs_retention_has_one_point_per_pair_arch_seed_and_the_contrast_in_the_title():
    table = pd.DataFrame({"measure": ["cosine", "retention"], "spearman": [0.61, -0.25],
                          "ci_low": [0.3, -0.6], "ci_high": [0.8, 0.1]})
    fig = plots.conflict_vs_retention(_probe(), _retention(), table)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert _points(fig.axes[0]) == len(CORRELATIONS) * len(ARCHS) * len(SEEDS) * 2
    assert len(fig.axes[0].collections) == len(ARCHS)  # one scatter per arch × suite
    title = fig.axes[0].get_title()
    assert "+0.61" in title and "[+0.30, +0.80]" in title and "-0.25" in title


def test_conflict_vs_retention_conflict_rate_and_forgetting_axes():
    table = pd.DataFrame({"measure": ["conflict_rate", "sequential_forgetting"], "spearman": [-0.4, -0.7],
                          "ci_low": [-0.8, -0.9], "ci_high": [0.1, -0.2]})
    fig = plots.conflict_vs_retention(_probe(), _retention(), table, x="conflict", y="forgetting")
    ys = np.concatenate([c.get_offsets()[:, 1] for c in fig.axes[0].collections])
    assert sorted(set(np.round(ys, 6))) == [0.0, 0.5, 1.0]
    assert "-0.40" in fig.axes[0].get_title() and "-0.70" in fig.axes[0].get_title()


def test_negative_transfer_panels_and_bars():
    fig = plots.negative_transfer(_summary())
    panels = (1 + len(ORDERS)) * len(CORRELATIONS)  # joint + each sequential order, per correlation
    assert len(fig.axes) == panels
    for ax in fig.axes:
        assert len(ax.patches) == len(TASKS) * len(ARCHS)
        assert any(abs(h - 0) < 1e-12 for line in ax.get_lines() for h in np.atleast_1d(line.get_ydata()))
    joint = [ax for ax in fig.axes if ax.get_title().endswith("joint")]
    assert len(joint) == len(CORRELATIONS)
    assert all(p.get_height() == pytest.approx(-0.2) for p in joint[0].patches)
    assert "correlation=1.0" in fig.axes[0].get_title()


def test_training_dynamics_lines_per_pair_and_group():
    fig = plots.training_dynamics(_probe(), arch="mmoe")
    # cosine: one panel per group, one line per unordered pair and correlation; affinity: group "all", ordered pairs
    assert len(fig.axes) == len(GROUPS) + 1
    cos_lines = [len([l for l in ax.get_lines() if l.get_label()[0] != "_"]) for ax in fig.axes[: len(GROUPS)]]
    assert cos_lines == [len(CORRELATIONS)] * len(GROUPS)
    affinity = fig.axes[-1]
    assert affinity.get_title() == "affinity · all"
    curves = [l for l in affinity.get_lines() if len(l.get_xdata()) == len(STEPS)]
    assert len(curves) == 2 * len(CORRELATIONS)
    assert list(curves[0].get_ydata()) == pytest.approx([0.01 * s for s in STEPS])


def test_accuracy_matrix_one_heatmap_per_variant_order_and_arch():
    fig = plots.accuracy_matrix(_metrics())
    heatmaps = [ax for ax in fig.axes if ax.images]
    assert len(heatmaps) == len(CORRELATIONS) * len(ORDERS) * len(ARCHS)
    image = heatmaps[0].images[0].get_array()
    assert image.shape == (2, len(TASKS))
    assert np.asarray(image).tolist() == [[1.0, 1.0], [2.0, 2.0]]
    assert "correlation=1.0" in heatmaps[0].get_title()


def test_accuracy_matrix_shares_one_colour_scale_with_a_colour_bar():
    metrics = _metrics()
    # Panels with different ranges: shared_bottom's errors are ten times mmoe's.
    metrics.loc[metrics["arch"] == "shared_bottom", "value"] *= 10
    fig = plots.accuracy_matrix(metrics)
    heatmaps = [ax for ax in fig.axes if ax.images]
    limits = {(ax.images[0].norm.vmin, ax.images[0].norm.vmax) for ax in heatmaps}
    sequential = metrics[metrics["regime"] == "sequential"]["value"]
    assert limits == {(sequential.min(), sequential.max())}  # 1 and 20, for every panel
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1 and "mse" in bars[0].get_ylabel() and "lower is better" in bars[0].get_ylabel()
    assert _fits(fig)


def _fits(fig) -> bool:
    """Everything drawn (titles, tick labels, legends) lies within the saved canvas."""
    fig.canvas.draw()
    box = fig.get_tightbbox(fig.canvas.get_renderer())  # inches
    width, height = fig.get_size_inches()
    return box.x0 >= -0.02 and box.y0 >= -0.02 and box.x1 <= width + 0.02 and box.y1 <= height + 0.02


def test_negative_transfer_of_one_panel_is_wide_enough_for_its_title_and_says_the_suite_once():
    summary = _summary()
    one = summary[(summary["correlation"] == 1.0) & (summary["regime"] != "sequential")].drop(columns="correlation")
    one = one.assign(suite="table", table="logs")[["suite", "table", *[c for c in one.columns if c != "suite"]]]
    fig = plots.negative_transfer(one, variant_columns=["table"])
    assert len(fig.axes) == 1
    assert fig.get_size_inches()[0] * 100 >= 700  # was 400 px, its title cut on both sides
    assert _fits(fig)
    assert fig.axes[0].get_title() == "joint"  # one panel: nothing to tell apart
    assert fig.get_suptitle().startswith("Transfer vs single-task: table=logs\n")  # not "table table=logs"
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ARCHS


def test_every_figure_fits_its_canvas():
    for fig in (plots.negative_transfer(_summary()), plots.training_dynamics(_probe(), arch="mmoe"),
                plots.accuracy_matrix(_metrics()), plots.drift_vs_forgetting(_retention()), plots.gates(_probe()),
                plots.conflict_vs_retention(_probe(), _retention())):
        assert _fits(fig), fig.get_suptitle() or fig.axes[0].get_title()


def test_training_dynamics_marks_few_points_and_explains_its_styles_outside_the_panels():
    probe = _probe()
    probe = probe[probe["step"].isin(STEPS[:2])]  # two probe steps: a line without markers would look like a trend
    fig = plots.training_dynamics(probe, arch="mmoe")
    curves = [l for ax in fig.axes for l in ax.get_lines() if l.get_label()[0] != "_"]
    assert curves and all(l.get_marker() not in (None, "None", "") and len(l.get_xdata()) == 2 for l in curves)
    assert all(ax.get_legend() is None for ax in fig.axes)  # no legend over the data
    legend = fig.legends[0]
    assert legend.get_title().get_text() == "marker, line style: task pair · colour: variant"
    texts = [t.get_text() for t in legend.get_texts()]
    assert "t1 → t2" in texts and "correlation=1.0" in texts and "correlation=0.0" in texts
    one = plots.training_dynamics(probe[probe["correlation"] == 1.0], arch="mmoe")
    assert one.legends[0].get_title().get_text() == "task pair (colour)"
    assert "correlation=1.0" in one.get_suptitle()


def test_drift_vs_forgetting_one_point_per_sequential_cell_and_spearman():
    fig = plots.drift_vs_forgetting(_retention())
    n = len(CORRELATIONS) * len(ARCHS) * len(SEEDS) * len(ORDERS)
    assert _points(fig.axes[0]) == n
    assert "ρ = +1.00" in fig.axes[0].get_title() and f"n = {n}" in fig.axes[0].get_title()


def test_gates_heatmap_and_entropy_for_gated_archs_only():
    fig = plots.gates(_probe())
    assert len([ax for ax in fig.axes if ax.images]) == 1  # mmoe only; the colour bar is an extra axes
    heat = next(ax for ax in fig.axes if ax.images).images[0].get_array()
    assert heat.shape == (len(TASKS), EXPERTS)
    assert np.allclose(heat, 1.0 / EXPERTS)
    entropy = next(ax for ax in fig.axes if "entropy" in ax.get_title())
    task_lines = [l for l in entropy.get_lines() if l.get_label() in TASKS]
    assert len(task_lines) == len(TASKS)
    assert list(task_lines[0].get_ydata()) == pytest.approx([2.0] * len(STEPS))  # mean of 1 + seed over 0..2


def test_empty_inputs_give_a_figure_not_an_error():
    empty = pd.DataFrame()
    for fig in (plots.conflict_vs_retention(empty, empty), plots.drift_vs_forgetting(empty), plots.gates(empty),
                plots.training_dynamics(empty), plots.accuracy_matrix(empty)):
        assert isinstance(fig, Figure)


def _run_dir(tmp_path, probe: bool = True):
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"variant_columns": ["correlation"], "notes": []}))
    metrics = _metrics()
    singles = metrics[metrics["regime"] == "joint"].assign(regime="single", value=0.9)
    pd.concat([metrics, singles]).to_csv(run / "metrics.csv", index=False)
    _summary().to_csv(run / "summary.csv", index=False)
    if probe:
        _probe().to_csv(run / "probe.csv", index=False)
    _retention().to_csv(run / "retention.csv", index=False)
    return run


def test_write_plots_writes_pngs_and_skips_probe_plots_without_probe(tmp_path):
    run = _run_dir(tmp_path, probe=False)
    written, notes = plots.write_plots([run])
    assert {p.name for p in written} == {"negative_transfer.png", "accuracy_matrix.png", "drift_vs_forgetting.png",
                                         "verdict.png"}
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)
    assert any("conflict_vs_retention.png" in n and "--no-probe" in n for n in notes)
    assert not list(run.glob(".*.tmp"))


def test_report_plots_flag(tmp_path, capsys):
    run = _run_dir(tmp_path)
    assert cli.main(["report", str(run), "--plots"]) == 0
    names = {p.name for p in run.glob("*.png")}
    assert {"conflict_vs_retention.png", "gates.png", "training_dynamics_mmoe.png",
            "training_dynamics_shared_bottom.png"} <= names
    assert "written:" in capsys.readouterr().out


def _sparse_dense_dir(tmp_path, dims=(16, 8)):
    """A sparse-dense experiment directory: point runs of one suite variant, told apart only by directory."""
    out = tmp_path / "sd"
    (out / "points").mkdir(parents=True)
    (out / "sparse_dense.md").write_text("# Sparse isolation vs dense scaling\n")
    for dim in dims:
        _run_dir(tmp_path, probe=False).rename(out / "points" / f"embedding_dim={dim}")
    return out


def test_negative_transfer_of_runs_sharing_a_variant_has_a_panel_per_run(tmp_path):
    # Two runs with identical suite/variant/arch/task rows (a sparse-dense sweep's points) once collided
    # in one panel: "cannot reindex on an axis with duplicate labels".
    out = _sparse_dense_dir(tmp_path)
    runs = sorted((out / "points").iterdir())
    fig = plots.figures(runs)["negative_transfer.png"]()
    panels = (1 + len(ORDERS)) * len(CORRELATIONS) * len(runs)
    assert len(fig.axes) == panels
    assert all(len(ax.patches) == len(TASKS) * len(ARCHS) for ax in fig.axes)
    titles = [ax.get_title() for ax in fig.axes]
    assert any("embedding_dim=16" in t for t in titles) and any("embedding_dim=8" in t for t in titles)
    assert not any("run=" in t for t in titles)


def test_negative_transfer_of_one_run_has_no_run_in_the_titles(tmp_path):
    fig = plots.figures([_run_dir(tmp_path)])["negative_transfer.png"]()
    assert len(fig.axes) == (1 + len(ORDERS)) * len(CORRELATIONS)
    assert not any("run" in ax.get_title() for ax in fig.axes)


def test_report_plots_on_a_sparse_dense_directory(tmp_path, capsys):
    out = _sparse_dense_dir(tmp_path)
    assert cli.main(["report", str(out), "--plots"]) == 0
    assert (out / "points" / "embedding_dim=16" / "negative_transfer.png").is_file()


def _verdict_frame() -> pd.DataFrame:
    """Shaped like ``verdict.frame``: two variants × two tasks, one task without a stretch without labels."""
    rows = [
        ("conflict", "task1", "conflict", -40.0, -60.0, -20.0, -0.6, -0.8, -0.4, -0.02, -0.05, 0.01),
        ("conflict", "task2", "undetermined", -30.0, -90.0, 30.0, -0.6, -0.8, -0.4, np.nan, np.nan, np.nan),
        ("forgetting", "task1", "forgetting", -50.0, -70.0, -30.0, 0.5, 0.3, 0.7, 0.12, 0.08, 0.16),
        ("forgetting", "task2", "neither", 20.0, 5.0, 35.0, 0.5, 0.3, 0.7, -0.01, -0.03, 0.005),
    ]
    columns = ["mechanism", "task", "explanation", "log_transfer", "ci_low", "ci_high", "conflict_ratio",
               "conflict_ratio_ci_low", "conflict_ratio_ci_high", "absence_excess", "absence_excess_ci_low",
               "absence_excess_ci_high"]
    frame = pd.DataFrame(rows, columns=columns)
    frame.insert(0, "suite", "planted")
    frame.insert(2, "arch", "shared_bottom")
    return frame.assign(seeds=4)


def _scatter(ax, gid):
    return next(c for c in ax.collections if isinstance(c, PathCollection) and c.get_gid() == gid)


def test_verdict_figure_draws_each_task_with_its_transfer_evidence_and_colour():
    from matplotlib.colors import to_rgba

    from mtl_bench.analysis import verdict as verdict_lib

    table = _verdict_frame()
    fig = plots.verdict(table, ["mechanism"])
    left, right = fig.axes
    labels = [t.get_text() for t in left.get_yticklabels()]
    assert len(labels) == len(table)
    assert labels[0].startswith("mechanism=conflict task1") and labels[-1].startswith("mechanism=forgetting task2")
    assert not any("shared_bottom" in t or "planted" in t for t in labels)  # one arch and suite: no need to say
    transfer = _scatter(left, "transfer")
    offsets = transfer.get_offsets()
    assert offsets[:, 0].tolist() == table["log_transfer"].tolist()
    assert offsets[:, 1].tolist() == [3.0, 2.0, 1.0, 0.0]  # first row on top
    expected = [to_rgba(plots.EXPLANATION_COLORS[e]) for e in table["explanation"]]
    assert [tuple(c) for c in transfer.get_facecolors()] == expected
    # One horizontal error bar per task, spanning its CI.
    bars = [seg for coll in left.collections if not isinstance(coll, PathCollection) for seg in coll.get_segments()]
    spans = sorted((float(s[0][0]), float(s[1][0])) for s in bars)
    assert spans == sorted(zip(table["ci_low"], table["ci_high"]))
    assert any(np.allclose(line.get_xdata(), 0) for line in left.get_lines())
    # The evidence map: measured tasks at (conflict_ratio, absence_excess), the other one hollow at y = 0.
    measured = _scatter(right, "evidence")
    assert measured.get_offsets().tolist() == [[-0.6, -0.02], [0.5, 0.12], [0.5, -0.01]]
    assert [tuple(c) for c in measured.get_facecolors()] == [expected[0], expected[2], expected[3]]
    hollow = _scatter(right, "evidence_no_stretch")
    assert hollow.get_offsets().tolist() == [[-0.6, 0.0]]
    assert len(hollow.get_facecolors()) == 0 and tuple(hollow.get_edgecolors()[0]) == expected[1]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert set(verdict_lib.EXPLANATIONS) <= set(legend)
    assert any("no stretch without labels" in t for t in legend)
    dashed = [line for line in right.get_lines() if line.get_linestyle() == "--"]
    assert sorted(float(np.unique(line.get_xdata() if len(np.unique(line.get_xdata())) == 1 else line.get_ydata())[0])
                  for line in dashed) == [-verdict_lib.CONFLICT_RATIO, verdict_lib.FORGETTING_RISE]
    quadrants = {t.get_text() for t in right.texts}
    assert {"conflict", "forgetting", "both", "neither"} <= quadrants
    assert "validation rows that never selected an epoch, 95% CIs over seeds" in fig.get_suptitle()


def test_verdict_figure_from_verdict_entries_and_empty():
    from mtl_bench.analysis import verdict as verdict_lib

    units = pd.DataFrame({"suite": "s", "arch": "a", "task": np.repeat(["t1", "t2"], 3),
                          "log_transfer": [-30.0, -35.0, -32.0, 1.0, -1.0, 0.5],
                          "conflict_ratio": -0.5, "absence_damage": 0.1, "presence_rise": 0.0})
    entries = verdict_lib.verdicts(units, [])
    fig = plots.verdict(entries, [])
    offsets = _scatter(fig.axes[0], "transfer").get_offsets()
    assert offsets[:, 0].tolist() == pytest.approx([-32.333333, 1 / 6])
    assert isinstance(plots.verdict([], []), Figure)


def test_write_plots_writes_the_verdict_of_a_run_with_verdicts(tmp_path):
    run = _run_dir(tmp_path)
    names = plots.figures([run])
    assert callable(names["verdict.png"])
    assert isinstance(plots.figures([run], verdicts=[])["verdict.png"], str)
    written, _ = plots.write_plots([run])
    assert (run / "verdict.png") in written and (run / "verdict.png").read_bytes()[:4] == b"\x89PNG"
    # No joint regime: no verdict, and the figure is skipped with a note.
    metrics = pd.read_csv(run / "metrics.csv")
    metrics[metrics["regime"] != "joint"].to_csv(run / "metrics.csv", index=False)
    assert isinstance(plots.figures([run])["verdict.png"], str)


def test_policy_arms_draws_each_arm_and_arch_with_its_interval():
    from mtl_bench.analysis.figures_experiments import policy_arms

    summary = pd.DataFrame({"arm": ["logged", "logged", "on_policy", "on_policy"], "arch": ["mmoe", "ple"] * 2,
                            "n_seeds": 3, "auc_click": [0.70, 0.72, 0.75, 0.74],
                            "auc_click_ci_low": [0.68, 0.70, 0.73, 0.70], "auc_click_ci_high": [0.72, 0.74, 0.77, 0.78]})
    fig = policy_arms(summary)
    assert len(fig.axes) == 1  # the forgetting column is absent: no empty panel
    ax = fig.axes[0]
    assert [round(p.get_height(), 6) for p in ax.patches] == [0.70, 0.75, 0.72, 0.74]  # mmoe's arms, then ple's
    assert [t.get_text() for t in ax.get_xticklabels()] == ["logged", "on_policy"]
    assert "last day" in ax.get_ylabel() and "3 seeds" in fig.get_suptitle()
    assert _fits(fig)
    assert isinstance(policy_arms(pd.DataFrame()), Figure)


def test_gates_mark_the_uniform_entropy_of_each_gate_size_and_share_one_scale():
    probe = _probe()
    gated = probe[(probe["measure"] == "gate_weight") & (probe["task_i"] == "t1")]
    # A PLE-like gate: task t1 chooses among experts 0-1 only (weights 0.5), t2 among all four.
    probe = probe[~probe.index.isin(gated[gated["task_j"].isin(["expert2", "expert3"])].index)]
    probe.loc[probe.index.isin(gated.index), "value"] = 0.5
    fig = plots.gates(probe)
    entropy = next(ax for ax in fig.axes if "entropy" in ax.get_title())
    references = sorted(float(l.get_ydata()[0]) for l in entropy.get_lines() if l.get_label().startswith("uniform"))
    assert references == pytest.approx([np.log(2), np.log(EXPERTS)])
    heat = next(ax for ax in fig.axes if ax.images)
    assert "blank: not in that gate" in heat.get_title()
    assert heat.images[0].norm.vmax == pytest.approx(0.5)
    assert len([ax for ax in fig.axes if ax.get_label() == "<colorbar>"]) == 1


def test_policy_arms_labels_each_kl_and_ppo_epochs_setting():
    """The policy summary has one row per arm × kl × epochs × arch: each setting is its own bar and label."""
    from mtl_bench.analysis.figures_experiments import policy_arms

    summary = pd.DataFrame({"arm": ["ppo", "ppo", "ppo", "grpo"], "kl": [0.0, 0.0, 0.2, 0.0], "epochs": [1, 4, 4, 1],
                            "arch": "mmoe", "n_seeds": 1, "forgetting_click": [0.04, 0.07, 0.03, 0.06]})
    fig = policy_arms(summary)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["ppo ×1", "ppo ×4", "ppo ×4 kl=0.2", "grpo"]
    assert [round(p.get_height(), 6) for p in ax.patches] == [0.04, 0.07, 0.03, 0.06]
    assert "1 seed)" in fig.get_suptitle()
