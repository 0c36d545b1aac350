"""Experiment 2 of the recommender simulator: sparse isolation vs dense scaling.

The conjecture: embedding tables isolate what each user (and task) learnt,
because a row only changes when its id is in the batch, while dense shared
layers change on every batch; scaling the dense part up at the embeddings'
expense removes the isolation and should bring forgetting. The sweep moves
parameters from the embedding tables into the dense layers at roughly equal
totals: for each ``embedding_dim`` of :data:`EMBEDDING_DIMS`, each
architecture gets the width (``WIDTH_PARAMETER``) whose total parameter count
is closest to the count at the first dimension with the architecture's
default width.

Every point is a run of its own (``points/embedding_dim=<e>/``: the single,
joint and daily regimes with the cohort experiment), so the usual report works
on each. ``sparse_dense.csv`` gathers per point and architecture:

* the parameter split: ``params_embedding``, ``params_dense`` (everything
  else), ``dense_share``;
* negative transfer: joint-vs-single Δm on validation, mean and 95% CI over seeds;
* the probe's interference split into the ``embedding`` and ``dense`` groups
  (joint regime): ``conflict_rate_<group>``, ``cosine_<group>``;
* cohort forgetting (daily regime, headline task ``click``, on the unbiased
  ``uniform`` evaluation sample the cohort experiment adds): the change in
  AUC lift of the held-out and of the control cohort over the days after the
  holdout, and ``forgetting`` = control change − held-out change (how much
  more the held-out cohort lost than a cohort that kept training).

``sparse_dense.md`` adds, per architecture, the Spearman correlation of
``forgetting`` with ``dense_share`` over the points. ``points.csv`` holds the
sweep's plan; ``manifest.json`` the run's status (``--resume`` continues the
points, each a resumable run).
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd
from scipy import stats

from mtl_bench import experiments, io
from mtl_bench.analysis import cohorts as cohort_report
from mtl_bench.config import RunConfig
from mtl_bench.engine import cells
from mtl_bench.engine import executor as executor_lib
from mtl_bench.engine.executor import Executor
from mtl_bench.errors import UserInputError
from mtl_bench.experiments import grid, rundir
from mtl_bench.models import ARCHITECTURES
from mtl_bench.schema import DAILY, DELTA_M, JOINT, SINGLE, SPLIT

EMBEDDING_DIMS: tuple[int, ...] = (16, 8, 4, 2)
WIDTH_PARAMETER: dict[str, str] = {
    "shared_bottom": "bottom_units",
    "mmoe": "expert_units",
    "omoe": "expert_units",
    "ple": "expert_units",
}
HEADLINE_TASK = "click"
POINTS_DIR = "points"


def parameter_split(model: Any) -> tuple[int, int]:
    """``(embedding parameters, all other trainable parameters)`` of a built model."""
    embedding = sum(int(np.prod(v.shape)) for v in model.variable_groups.get("embedding", []))
    total = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    return embedding, total - embedding


def matched_points(config: RunConfig, data: Any, dims: tuple[int, ...] | None = None) -> pd.DataFrame:
    """The sweep: for each architecture and embedding dimension, the width that keeps the total parameters.

    Returns:
        One row per (embedding_dim, arch): ``width``, ``params_embedding``,
        ``params_dense``, ``params_total``, ``dense_share``.
    """
    dims = tuple(dims or EMBEDDING_DIMS)

    def split(arch: str, dim: int, width: int | None) -> tuple[int, int]:
        params = {**config.arch_params.get(arch, {}), "embedding_dim": dim}
        if width is not None:
            params[WIDTH_PARAMETER[arch]] = width
        return parameter_split(ARCHITECTURES[arch](features=data.features, tasks=data.tasks, **params))

    rows = []
    for arch in config.archs:
        if arch not in WIDTH_PARAMETER:
            raise UserInputError(f"sparse-dense: no width parameter for {arch!r}; valid: {sorted(WIDTH_PARAMETER)}")
        reference = sum(split(arch, dims[0], config.arch_params.get(arch, {}).get(WIDTH_PARAMETER[arch])))
        for dim in dims:
            low, high = 1, 4096  # total parameters grow with the width: bisect for the closest total
            while high - low > 1:
                mid = (low + high) // 2
                low, high = (mid, high) if sum(split(arch, dim, mid)) <= reference else (low, mid)
            width = min((low, high), key=lambda w: abs(sum(split(arch, dim, w)) - reference))
            emb, dense = split(arch, dim, width)
            rows.append({"embedding_dim": dim, "arch": arch, "width": width, "params_embedding": emb,
                         "params_dense": dense, "params_total": emb + dense, "dense_share": dense / (emb + dense)})
    return pd.DataFrame(rows)


def resolve(config: RunConfig) -> RunConfig:
    """``config``, checked: the sweep needs the ``recsim`` suite and one suite variant.

    Raises:
        UserInputError: Otherwise.
    """
    if config.suite != "recsim":
        raise UserInputError(f"experiment {experiments.SPARSE_DENSE!r} needs the recsim suite. "
                             f"Received: suite={config.suite!r}")
    if any(isinstance(v, list) for v in config.suite_params.values()):
        raise UserInputError(f"experiment {experiments.SPARSE_DENSE!r} needs one suite variant; "
                             f"suite_params sweeps {config.suite_params}")
    return config


def _base(config: RunConfig) -> RunConfig:
    """The configuration every point shares: the cohort experiment with the single, joint and daily regimes."""
    base = dataclasses.replace(config, experiment=experiments.COHORT, regimes=[SINGLE, JOINT, DAILY],
                               single_baseline="same_arch")
    return grid.resolve(base)


def plan(config: RunConfig) -> pd.DataFrame:
    """The sweep's points (:func:`matched_points` on the suite's first seed)."""
    base = _base(config)
    return matched_points(base, cells.load_suite(base, tuple(sorted(base.suite_params.items())), base.first_seed))


def run(
    config: RunConfig,
    *,
    out: str | Path | None = None,
    runs_root: str | Path = "runs",
    progress: TextIO | None = sys.stderr,
    in_process: bool = False,
    executor: Executor | None = None,
) -> Path:
    """Runs every point of the sweep into ``out`` and writes ``sparse_dense.csv`` / ``.md``.

    Args:
        config: The configuration (``experiment = "sparse-dense"``); each point runs it as the cohort
            experiment.
        out: The experiment directory; default ``<runs_root>/<run-id>``. It must not exist or be empty.
        runs_root: Parent of generated directories.
        progress: Stream for the points' progress, or None.
        in_process: Run the points' cells in this process (see :func:`mtl_bench.experiments.grid.run`).
        executor: Where the points' cells run (see :func:`mtl_bench.experiments.grid.run`).

    Raises:
        UserInputError: For an invalid configuration (nothing is written then).
    """
    config = resolve(config)
    points = plan(config)
    where = executor_lib.ready(executor, jobs=config.jobs, in_process=in_process)
    out = rundir.new_dir(config, out, runs_root)
    io.write_text(out / experiments.CONFIG, config.to_toml())
    io.write_csv(out / "points.csv", points)
    manifest = rundir.start(out, config, config_sha256=rundir.config_digest(config))
    return _execute(config, points, out, manifest, progress, where)


def resume(run_dir: str | Path, *, progress: TextIO | None = sys.stderr, in_process: bool = False,
           executor: Executor | None = None) -> Path:
    """Continues the sweep: finished points are kept, interrupted ones resumed, missing ones run."""
    run_dir = Path(run_dir)
    config = resolve(RunConfig.from_toml(run_dir / experiments.CONFIG))
    where = executor_lib.ready(executor, jobs=config.jobs, in_process=in_process)
    manifest = rundir.restart(run_dir, config)  # writes a manifest into a directory that has none
    rundir.check_unchanged(run_dir, manifest, config)
    points = plan(config)
    io.write_csv(run_dir / "points.csv", points)
    return _execute(config, points, run_dir, manifest, progress, where)


def _execute(config: RunConfig, points: pd.DataFrame, out: Path, manifest: dict[str, Any],
             progress: TextIO | None, where: Executor) -> Path:
    base = _base(config)
    run_dirs = []
    with rundir.recorded(out, manifest):
        for dim, group in points.groupby("embedding_dim", sort=False):
            arch_params = {r.arch: {**config.arch_params.get(r.arch, {}), "embedding_dim": int(dim),
                                    WIDTH_PARAMETER[r.arch]: int(r.width)} for r in group.itertuples()}
            sub = dataclasses.replace(base, arch_params=arch_params)
            run_dir = out / POINTS_DIR / f"embedding_dim={dim}"
            if progress:
                progress.write(f"sparse-dense: embedding_dim={dim}\n")
            if (run_dir / experiments.MANIFEST).is_file():
                grid.resume(run_dir, progress=progress, executor=where)
            else:
                grid.run(sub, out=run_dir, progress=progress, executor=where)
            run_dirs.append(run_dir)
        table = summarize(points, run_dirs)
        io.write_csv(out / "sparse_dense.csv", table)
        io.write_text(out / "sparse_dense.md", describe(table))
    return out


def summary(run_dir: Path) -> str:
    """The closing summary: ``sparse_dense.md``."""
    path = run_dir / "sparse_dense.md"
    return path.read_text() if path.is_file() else ""


def runs(run_dir: Path) -> list[Path]:
    """The points' run directories (each a cohort-experiment grid run) that ``mtl-bench report`` reads."""
    return [p.parent for p in sorted((run_dir / POINTS_DIR).glob(f"*/{experiments.MANIFEST}"))]


def summarize(points: pd.DataFrame, run_dirs: list[Path]) -> pd.DataFrame:
    """One row per point and architecture: parameters, negative transfer, interference and forgetting."""
    rows = []
    for run_dir in run_dirs:
        dim = int(run_dir.name.split("=")[1])
        table = pd.read_csv(run_dir / "summary.csv", keep_default_na=False, na_values=[""])
        probe_path = run_dir / "probe.csv"
        probe = pd.read_csv(probe_path, keep_default_na=False, na_values=[""]) if probe_path.is_file() else pd.DataFrame()
        cohorts = cohort_report.half_life_table(cohort_report.read([str(run_dir)], []))
        for point in points[points["embedding_dim"] == dim].itertuples():
            row = {k: getattr(point, k) for k in points.columns}
            dm = table[(table["arch"] == point.arch) & (table["regime"] == JOINT)
                       & (table["metric"] == DELTA_M) & (table["split"] == SPLIT)]
            row["delta_m"] = float(dm["mean"].iloc[0]) if len(dm) else np.nan
            row["delta_m_ci_low"] = float(dm["ci_low"].iloc[0]) if len(dm) else np.nan
            row["delta_m_ci_high"] = float(dm["ci_high"].iloc[0]) if len(dm) else np.nan
            for group in ("embedding", "dense"):
                for measure, name in (("conflict", "conflict_rate"), ("cosine", "cosine")):
                    sel = probe[(probe["arch"] == point.arch) & (probe["regime"] == JOINT) & (probe["group"] == group)
                                & (probe["measure"] == measure) & (probe["task_i"] != probe["task_j"])] \
                        if not probe.empty else probe
                    row[f"{name}_{group}"] = float(sel["value"].mean()) if len(sel) else np.nan
            mine = cohorts[(cohorts["arch"] == point.arch) & (cohorts["task"] == HEADLINE_TASK)] \
                if not cohorts.empty else cohorts
            if not mine.empty:
                # The unbiased sample when the run has one: exposure bias hides forgetting on rarely shown items.
                sample = "uniform" if (mine["sample"] == "uniform").any() else "logged"
                mine = mine[mine["sample"] == sample].set_index("role")
                row["sample"] = sample
                row["n_seeds"] = int(mine["n_seeds"].min())
            for role in ("heldout", "control"):
                ok = not mine.empty and role in mine.index
                row[f"{role}_lift_change"] = float(mine.loc[role, "end_lift"] - mine.loc[role, "start_lift"]) if ok else np.nan
                row[f"{role}_half_life_days"] = float(mine.loc[role, "half_life_days"]) if ok else np.nan
            row["forgetting"] = row["control_lift_change"] - row["heldout_lift_change"]
            rows.append(row)
    return pd.DataFrame(rows)


SEEDS_FOR_A_TREND = 3  # what describe() asks for when a sweep ran one seed


def _spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Spearman's rho and its two-sided p; exact (every permutation) up to 8 points, where the t-approximation
    calls a perfect rank order of 4 points p = 0 although 2 of the 24 orders reach it."""
    rho = float(stats.spearmanr(x, y).statistic)
    if len(x) > 8:
        return rho, float(stats.spearmanr(x, y).pvalue)
    ranks = stats.rankdata(y)
    perms = [float(stats.spearmanr(x, ranks[list(order)]).statistic) for order in itertools.permutations(range(len(y)))]
    return rho, float(np.mean(np.abs(perms) >= abs(rho) - 1e-12))


def describe(table: pd.DataFrame) -> str:
    """Markdown: the table and, per architecture, whether forgetting grows with the dense share.

    A trend is claimed only from replicated points (``n_seeds`` of at least 2) whose Spearman correlation
    with the dense share has a two-sided p below 0.05; otherwise the text says why no trend can be claimed.
    """
    lines = ["# Sparse isolation vs dense scaling", ""]
    for arch, group in table.groupby("arch", sort=False):
        ok = group[["dense_share", "forgetting"]].dropna()
        seeds = int(group["n_seeds"].min()) if "n_seeds" in group and group["n_seeds"].notna().any() else 0
        span = (f"dense share {ok['dense_share'].min():.2f}–{ok['dense_share'].max():.2f}" if len(ok) else "")
        if len(ok) < 3 or np.ptp(ok["forgetting"]) == 0:
            lines.append(f"- {arch}: too few points with a forgetting value to correlate.")
        elif seeds < 2:
            lines.append(f"- {arch}: one seed: no trend can be claimed; run --seeds {SEEDS_FOR_A_TREND} "
                         f"({len(ok)} points, {span}).")
        else:
            rho, p = _spearman(ok["dense_share"].to_numpy(float), ok["forgetting"].to_numpy(float))
            said = f"Spearman {rho:+.2f}, p = {p:.2g}, over {len(ok)} points of {seeds} seeds each; {span}"
            if p < 0.05:
                trend = "grows" if rho > 0 else "shrinks"
                lines.append(f"- {arch}: forgetting of the held-out cohort {trend} with the dense share ({said}).")
            else:
                lines.append(f"- {arch}: no trend can be claimed ({said}; with 4 points even a perfect rank "
                             "order has p = 0.083: add points or seeds).")
    lines += ["", "| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    fmt = lambda v: f"{v:.4g}" if isinstance(v, (float, np.floating)) else str(v)  # noqa: E731
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"
