"""The remedies of the contrast grid: a loss combination, a forgetting aid, or neither.

``REMEDIES`` maps each name of ``mtl-bench run --remedy`` to a :class:`Remedy`.
A remedy is a recipe: each training phase gets fresh objects from it, with the
run's ``remedy_params`` for that remedy name passed to the constructor. Loss
combinations live in :mod:`mtl_bench.remedies.combination`, forgetting anchors
(replay, distillation, KL anchor) in :mod:`mtl_bench.remedies.anchors`; the
registry names their classes, so reading it (as the analysis does) imports no
TensorFlow.

* ``none``: the static-weight sum (the task weights, or the run's tuned
  ``task_weights``): the baseline of every comparison.
* ``equal``: the equal-weight sum, the other baseline (Xin et al. 2022;
  Kurin et al. 2022).
* ``uncertainty``: Kendall et al. 2018 weighting.
* ``pcgrad``, ``gradvac``, ``cagrad``, ``mgda``, ``imtl`` (IMTL-G), ``nash-mtl``,
  ``aligned-mtl``: conflict remedies (joint regime); the last four in
  :mod:`mtl_bench.remedies.multiobjective`.
* ``gradnorm``, ``dwa``, ``rlw``, ``famo`` (:mod:`mtl_bench.remedies.weighting`) and
  ``db-mtl``: weighting methods (joint regime).
* ``sweep-0`` ... ``sweep-10``: the static-weight sweep (:mod:`mtl_bench.remedies.sweep`),
  the Pareto front the other methods are read against.
* ``replay`` (sequential regime), ``distill``, ``kl-anchor`` (joint and
  sequential): forgetting remedies.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from typing import Any

from mtl_bench.schema import BASELINE, DAILY, EQUAL, JOINT, SEQUENTIAL, SINGLE

CONFLICT, FORGETTING, WEIGHTING = "conflict", "forgetting", "weighting"


def _load(name: str) -> Any:
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(f"mtl_bench.remedies.{module}"), attr)


@dataclasses.dataclass(frozen=True)
class Remedy:
    """How one remedy trains.

    Attributes:
        name: The ``remedy`` column's value.
        family: ``"conflict"``, ``"forgetting"`` or ``"weighting"`` (baselines and uncertainty).
        regimes: Regimes the remedy changes; its cells run only there.
        combination: ``module.Class`` (in this package) of the loss combination.
        aid: ``module.Class`` of the forgetting aid, or ``""``.
        fixed: Constructor arguments the remedy fixes (a sweep point's index); not ``remedy_params``.
    """

    name: str
    family: str
    regimes: tuple[str, ...]
    combination: str = "combination.Static"
    aid: str = ""
    fixed: tuple[tuple[str, Any], ...] = ()

    @property
    def factory(self) -> Any:
        """The class whose constructor takes this remedy's parameters."""
        return _load(self.aid or self.combination)

    def parameters(self) -> list[str]:
        """Names of the constructor arguments ``remedy_params`` may set."""
        fixed = dict(self.fixed)
        return [p for p in inspect.signature(self.factory).parameters if p != "self" and p not in fixed]

    def build(self, params: dict[str, Any]) -> tuple[Any, Any]:
        """Fresh (combination, aid or None) for one training phase."""
        if self.aid:
            return _load("combination.Static")(), _load(self.aid)(**params)
        return _load(self.combination)(**dict(self.fixed), **params), None


_ALL = (SINGLE, JOINT, SEQUENTIAL, DAILY)
SWEEP_POINTS = 11  # mtl_bench.remedies.sweep.POINTS (not imported: that module loads TensorFlow)
SWEEP: tuple[str, ...] = tuple(f"sweep-{k}" for k in range(SWEEP_POINTS))
"""The static-weight sweep's remedies (:mod:`mtl_bench.remedies.sweep`): ``--remedy sweep-0,...,sweep-10``."""
_ANCHORED = (JOINT, SEQUENTIAL)  # mtl_bench.remedies.anchors.ForgettingAid.applies_to

REMEDIES: dict[str, Remedy] = {
    r.name: r
    for r in (
        Remedy(BASELINE, WEIGHTING, _ALL),
        Remedy(EQUAL, WEIGHTING, (JOINT,), "combination.Equal"),
        Remedy("uncertainty", WEIGHTING, (JOINT,), "combination.Uncertainty"),
        Remedy("pcgrad", CONFLICT, (JOINT,), "combination.PCGrad"),
        Remedy("gradvac", CONFLICT, (JOINT,), "combination.GradVac"),
        Remedy("cagrad", CONFLICT, (JOINT,), "combination.CAGrad"),
        Remedy("mgda", CONFLICT, (JOINT,), "multiobjective.MGDA"),
        Remedy("imtl", CONFLICT, (JOINT,), "multiobjective.IMTLG"),
        Remedy("nash-mtl", CONFLICT, (JOINT,), "multiobjective.NashMTL"),
        Remedy("aligned-mtl", CONFLICT, (JOINT,), "multiobjective.AlignedMTL"),
        Remedy("gradnorm", WEIGHTING, (JOINT,), "weighting.GradNorm"),
        Remedy("db-mtl", WEIGHTING, (JOINT,), "multiobjective.DBMTL"),
        Remedy("dwa", WEIGHTING, (JOINT,), "weighting.DWA"),
        Remedy("rlw", WEIGHTING, (JOINT,), "weighting.RLW"),
        Remedy("famo", WEIGHTING, (JOINT,), "weighting.FAMO"),
        *(Remedy(name, WEIGHTING, (JOINT,), "sweep.SweepPoint", fixed=(("point", k),)) for k, name in enumerate(SWEEP)),
        Remedy("replay", FORGETTING, (SEQUENTIAL,), aid="anchors.Replay"),
        Remedy("distill", FORGETTING, _ANCHORED, aid="anchors.Distill"),
        Remedy("kl-anchor", FORGETTING, _ANCHORED, aid="anchors.KLAnchor"),
    )
}
