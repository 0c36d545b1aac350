"""Plot functions on small hand-made frames: the expected axes, lines and points follow from the inputs."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure

from mtl_bench import cli, plots

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
    assert len(fig.axes) == len(CORRELATIONS) * len(ORDERS) * len(ARCHS)
    image = fig.axes[0].images[0].get_array()
    assert image.shape == (2, len(TASKS))
    assert np.asarray(image).tolist() == [[1.0, 1.0], [2.0, 2.0]]
    assert "correlation=1.0" in fig.axes[0].get_title()


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
    assert {p.name for p in written} == {"negative_transfer.png", "accuracy_matrix.png", "drift_vs_forgetting.png"}
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
