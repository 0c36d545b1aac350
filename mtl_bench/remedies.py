"""The remedies of the contrast grid: a loss combination, a forgetting aid, or neither.

``REMEDIES`` maps each name of ``mtl-bench run --remedy`` to a :class:`Remedy`.
A remedy is a recipe: each training phase gets fresh objects from it, with the
run's ``remedy_params`` for that remedy name passed to the constructor.

* ``none``: the static-weight sum (the task weights, or the run's tuned
  ``task_weights``): the baseline of every comparison.
* ``equal``: the equal-weight sum, the other baseline (Xin et al. 2022;
  Kurin et al. 2022).
* ``uncertainty``: Kendall et al. 2018 weighting.
* ``pcgrad``, ``gradvac``, ``cagrad``: conflict remedies (joint regime).
* ``replay`` (sequential regime), ``distill``, ``kl-anchor`` (joint and
  sequential): forgetting remedies.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

from mtl_bench import combination as comb
from mtl_bench import forgetting

BASELINE = "none"
EQUAL = "equal"
CONFLICT, FORGETTING, WEIGHTING = "conflict", "forgetting", "weighting"


@dataclasses.dataclass(frozen=True)
class Remedy:
    """How one remedy trains.

    Attributes:
        name: The ``remedy`` column's value.
        family: ``"conflict"``, ``"forgetting"`` or ``"weighting"`` (baselines and uncertainty).
        regimes: Regimes the remedy changes; its cells run only there.
        combination: Factory of the loss combination.
        aid: Factory of the forgetting aid, or None.
    """

    name: str
    family: str
    regimes: tuple[str, ...]
    combination: Callable[..., comb.LossCombination] = comb.Static
    aid: Callable[..., forgetting.ForgettingAid] | None = None

    @property
    def factory(self) -> Callable[..., Any]:
        """The class whose constructor takes this remedy's parameters."""
        return self.aid if self.aid is not None else self.combination

    def parameters(self) -> list[str]:
        """Names of the constructor arguments ``remedy_params`` may set."""
        return [p for p in inspect.signature(self.factory).parameters if p != "self"]

    def build(self, params: dict[str, Any]) -> tuple[comb.LossCombination, forgetting.ForgettingAid | None]:
        """Fresh (combination, aid) for one training phase."""
        if self.aid is not None:
            return comb.Static(), self.aid(**params)
        return self.combination(**params), None


_ALL = ("single", "joint", "sequential", "daily")

REMEDIES: dict[str, Remedy] = {
    r.name: r
    for r in (
        Remedy(BASELINE, WEIGHTING, _ALL),
        Remedy(EQUAL, WEIGHTING, ("joint",), comb.Equal),
        Remedy("uncertainty", WEIGHTING, ("joint",), comb.Uncertainty),
        Remedy("pcgrad", CONFLICT, ("joint",), comb.PCGrad),
        Remedy("gradvac", CONFLICT, ("joint",), comb.GradVac),
        Remedy("cagrad", CONFLICT, ("joint",), comb.CAGrad),
        Remedy("replay", FORGETTING, forgetting.Replay.applies_to, aid=forgetting.Replay),
        Remedy("distill", FORGETTING, forgetting.Distill.applies_to, aid=forgetting.Distill),
        Remedy("kl-anchor", FORGETTING, forgetting.KLAnchor.applies_to, aid=forgetting.KLAnchor),
    )
}
