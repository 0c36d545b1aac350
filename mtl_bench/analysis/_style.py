"""The figures' shared look and helpers: palettes, markers, an Agg figure, variant labels and keys.

Private to :mod:`mtl_bench.analysis`; the figures are in :mod:`~mtl_bench.analysis.figures_grid` and
:mod:`~mtl_bench.analysis.figures_experiments`, and :mod:`~mtl_bench.analysis.plots` writes them.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mtl_bench.analysis.summary import headline_metric

RUN_COLUMN = "run"  # which run directory a row of several runs' summaries came from
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray")
# The verdict figure: one colour per explanation, the same in every run.
EXPLANATION_COLORS = {"conflict": "tab:red", "forgetting": "tab:blue", "both": "tab:purple", "neither": "tab:green",
                      "undetermined": "tab:gray"}


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure on its own Agg canvas (no pyplot state)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def variant_columns_of(frame: pd.DataFrame) -> list[str]:
    """The variant columns of a run-directory frame: those between ``suite`` and ``arch``."""
    cols = list(frame.columns)
    if "suite" not in cols or "arch" not in cols:
        return []
    return cols[cols.index("suite") + 1 : cols.index("arch")]


def variant_keys(frame: pd.DataFrame, variant_columns: Sequence[str] | None) -> list[str]:
    """``suite`` and the variant columns (default: inferred from ``frame``)."""
    return ["suite", *(variant_columns_of(frame) if variant_columns is None else variant_columns)]


def variant_label(keys: Sequence[str], values: Sequence) -> str:
    """``"<suite> k=v ..."`` for the values of :func:`variant_keys`.

    The suite's name is left out when a variant column repeats it (the table suite's ``table=logs``).
    """
    suite, *rest = values
    # A run's directory name (e.g. a sparse-dense point, ``embedding_dim=16``) labels itself.
    parts = [str(v) if k == RUN_COLUMN else f"{k}={v}" for k, v in zip(keys[1:], rest) if not pd.isna(v)]
    named = keys[0] != "suite" or any(k == str(suite) for k in keys[1:])
    return " ".join(parts if named else [str(suite), *parts])


def panel_labels(keys: Sequence[str], panels: Sequence[Sequence]) -> tuple[list[str], str]:
    """Each panel's label from what tells it apart, and the label of what all panels share.

    Args:
        keys: The label's columns (e.g. :func:`variant_keys`), ``suite`` first.
        panels: One tuple of ``keys`` values per panel.

    Returns:
        ``(labels, common)``: per panel the :func:`variant_label` of the keys whose values differ between
        panels (``""`` when none does), and that of the keys every panel shares (said once, e.g. in the title).
    """
    same = lambda i: len({"<NA>" if pd.isna(p[i]) else p[i] for p in panels}) <= 1  # noqa: E731
    varying = [i for i in range(len(keys)) if not same(i)]
    constant = [i for i in range(len(keys)) if same(i)]

    def label(indices: list[int], values: Sequence) -> str:
        if not indices:
            return ""
        ks = [keys[i] for i in indices]
        vs = [values[i] for i in indices]
        if ks[0] != "suite":  # variant_label reads its first key as the suite
            return variant_label(["", *ks], ["", *vs]).strip()
        return variant_label(ks, vs)

    # The suite repeated by a variant column (``table table=logs``) is said once, by the column.
    common = label(constant, panels[0]) if panels else ""
    return [label(varying, p) for p in panels], common


def scatter_by_arch_and_suite(ax: Axes, points: pd.DataFrame, x: str, y: str) -> None:
    """One scatter series per architecture (colour) and suite (marker)."""
    colors = styles_of(points["arch"], COLORS)
    markers = styles_of(points["suite"], MARKERS)
    for (arch, suite), group in points.groupby(["arch", "suite"], sort=False):
        ax.scatter(group[x], group[y], c=colors[arch], marker=markers[suite], label=f"{arch} · {suite}", alpha=0.8)


def styles_of(values: Sequence, palette: Sequence[str]) -> dict:
    """Each distinct value (in first-seen order) -> the next style of ``palette``, cycling."""
    return {v: palette[i % len(palette)] for i, v in enumerate(dict.fromkeys(values))}


def headline_of(frame: pd.DataFrame, prefix: str) -> dict[str, str]:
    """Each task's headline metric, from measure names such as ``retention_auc``."""
    metrics: dict[str, set[str]] = {}
    for task, measure in zip(frame["task"], frame["measure"]):
        if isinstance(measure, str) and measure.startswith(prefix + "_"):
            metrics.setdefault(task, set()).add(measure[len(prefix) + 1 :])
    return {t: headline_metric(m) for t, m in metrics.items()}


def last_phase(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """The rows of each ``keys`` group's last phase."""
    last = frame.groupby(list(keys), dropna=False)["phase"].transform("max")
    return frame[frame["phase"] == last]


def empty_figure(fig: Figure, text: str) -> Figure:
    """``fig`` with ``text`` in place of a plot (a figure whose inputs are missing)."""
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return fig

