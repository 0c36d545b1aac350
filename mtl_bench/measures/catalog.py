"""Every measure the report, the remedy table, the plots and the verdict read: defined once, here.

A :class:`Measure` says where a per-unit value comes from (a record of
``probe.csv`` or ``retention.csv``), which explanation of negative transfer it
speaks for, and which way it points. The unit is one task of one training cell
(suite × variant × arch × seed × task).

Families:

* ``conflict``: the other tasks' gradients against this task's on the shared
  weights: gradient cosines, the conflict rate, ``cosine_halves`` and the
  noise-free ``conflict_ratio`` (the verdict's conflict reading), and the TAG
  lookahead affinity (one SGD step of ``lr·g_j``, so
  ``Z_{j→i} ≈ lr·<g_i, g_j>/L_i``: first-order conflict under another name).
* ``forgetting``: damage while the task's signal is absent: ``absence_damage``
  (the rise of its probe loss over training windows without its labels; the
  verdict's forgetting reading compares it with ``absence_floor``, the same
  rise in the task's single-task model over the same windows) and, from
  the sequential regime, ``sequential_forgetting`` (Chaudhry et al.).
* ``descriptive``: recorded and shown, never evidence: the noise floors
  themselves; the k-step ``damage`` and its first-order and excess parts (on
  the planted suite they did not separate the mechanisms: a settled capacity
  conflict leaves the winner's updates nothing to move, and the lookahead's
  random training rows are not a stretch of the log); forgetting events
  (Toneva et al.; they follow the task's own error: Spearman 0.91 with it on
  the old default run, and the same rate in single-task training); retention
  and output drift (the quantity sequential forgetting measures, counted
  again).

``sign`` is +1 when larger values should go with *better* transfer, -1 when
larger values should go with negative transfer. ``floor`` names the measure's
noise floor: the same measure within one task (two disjoint halves of its probe
batch), so a conflict reading means conflict beyond what a task has with itself.

Importing this module never imports TensorFlow.
"""

from __future__ import annotations

import dataclasses

CONFLICT = "conflict"
FORGETTING = "forgetting"
DESCRIPTIVE = "descriptive"
FAMILIES: tuple[str, ...] = (CONFLICT, FORGETTING, DESCRIPTIVE)


@dataclasses.dataclass(frozen=True)
class Measure:
    """A per-unit measure.

    Attributes:
        name: Column name in the unit table, ``report.csv`` and ``contrast.csv``.
        family: :data:`CONFLICT`, :data:`FORGETTING` or :data:`DESCRIPTIVE`.
        source: ``"probe"`` (``probe.csv``, joint regime), ``"retention"``
            (``retention.csv``, sequential regime) or ``"derived"`` (computed
            from probe records by :func:`mtl_bench.analysis.report.unit_table`).
        record: The ``measure`` value of the source rows.
        sign: +1 when larger values should go with better transfer, -1 with worse.
        direction: Probe pairs: ``"out"`` (``task_i`` is the unit's task),
            ``"in"`` (``task_j`` is), ``"self"`` (``task_i == task_j`` or
            ``task_j`` a label such as ``"others"``).
        floor: Name of the measure that is this one's noise floor, or ``""``.
        text: One line for the report's legend.
    """

    name: str
    family: str
    source: str
    record: str
    sign: int
    direction: str = "out"
    floor: str = ""
    text: str = ""


MEASURES: tuple[Measure, ...] = (
    Measure("cosine", CONFLICT, "probe", "cosine", +1,
            text="cosine between the task's gradient and another task's on the shared weights (full probe batch)"),
    Measure("conflict_rate", CONFLICT, "probe", "conflict", -1,
            text="share of probe events with a negative gradient cosine"),
    Measure("cosine_halves", CONFLICT, "probe", "cosine_halves", +1, floor="cosine_floor",
            text="cross-task gradient cosine on disjoint halves of the probe batch (same noise as its floor)"),
    Measure("cosine_floor", DESCRIPTIVE, "probe", "cosine_floor", +1, direction="self",
            text="noise floor: the task's gradient on one half of the probe batch against the other half"),
    Measure("affinity_in", CONFLICT, "probe", "affinity", +1, direction="in",
            text="TAG lookahead affinity from the other tasks: one SGD step, first-order conflict"),
    Measure("conflict_ratio", CONFLICT, "derived", "cosine_halves", +1, floor="cosine_floor",
            text="cosine_halves over the geometric mean of the two tasks' floors: the cosine of the tasks' "
                 "expected gradients, noise removed (-1 = opposed, 0 = unrelated or noise)"),
    Measure("absence_damage", FORGETTING, "derived", "loss_rise", -1, direction="self", floor="absence_floor",
            text="relative rise of the task's probe loss over training windows without any of its labels"),
    Measure("absence_floor", DESCRIPTIVE, "derived", "loss_rise", -1, direction="self",
            text="the same in the task's single-task model over the same windows (its own optimizer's drift, "
                 "no other task): the floor of absence_damage"),
    Measure("presence_rise", DESCRIPTIVE, "derived", "loss_rise", -1, direction="self",
            text="the task's loss change over windows with its labels (mostly its own learning)"),
    Measure("damage_first_order", DESCRIPTIVE, "probe", "damage_first_order", -1, direction="self",
            text="first-order part of the damage: <g_i, Δθ of k real steps of the other tasks> / L_i"),
    Measure("damage_excess", DESCRIPTIVE, "probe", "damage_excess", -1, direction="self",
            text="damage beyond first order: the loss rise under the others' k real steps minus its first-order part"),
    Measure("damage", DESCRIPTIVE, "probe", "damage", -1, direction="self",
            text="relative rise of the task's probe loss under k real optimizer steps of the other tasks alone"),
    Measure("sequential_forgetting", FORGETTING, "retention", "forgetting", -1,
            text="Chaudhry et al.'s forgetting of the task after later sequential phases (headline metric)"),
    Measure("update_conflict", DESCRIPTIVE, "probe", "update_conflict", -1, direction="self",
            text="share of probe events where the update the loss combination would apply raises the task's loss "
                 "to first order; for two equally weighted tasks it is 1 only when the other gradient is both "
                 "opposed and longer, so it is near 0 by construction"),
    Measure("forgetting_events", DESCRIPTIVE, "probe", "forgetting_rate", -1, direction="self",
            text="share of probe rows right at the previous probe and wrong now (follows the task's own error)"),
    Measure("retention", DESCRIPTIVE, "retention", "retention", +1,
            text="the task's metric after later sequential phases over its value when trained"),
    Measure("output_drift", DESCRIPTIVE, "retention", "output_drift", -1,
            text="KL between the task's predictions before and after later sequential phases"),
)
BY_NAME: dict[str, Measure] = {m.name: m for m in MEASURES}


def family(name: str) -> list[Measure]:
    """The measures of one family, in catalog order."""
    return [m for m in MEASURES if m.family == name]
