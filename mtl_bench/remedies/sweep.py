"""The static-weight sweep: the honest baseline every loss-combination method is read against.

Xin et al. 2022 ("Do current multi-task optimization methods in deep learning even
help?") and Kurin et al. 2022 ("In defense of the unitary scalarization") found that a
tuned static weighting matches most methods; a method only helps when it lands
beyond the Pareto front of the static weightings. ``sweep-0`` ... ``sweep-10`` are
the remedies of :data:`POINTS` points of the weight simplex, scaled to sum to ``T``
(so the equal-weight sum, the ``equal`` baseline, is a point of the two-task sweep):

* two tasks: point ``k`` weighs the tasks ``2 (k/10, 1 - k/10)``: the grid of the simplex;
* more tasks: point ``k`` is ``T p`` for ``p ~ Dirichlet(1, ..., 1)`` (uniform on the
  simplex) drawn by ``numpy.random.default_rng(k)``: a documented random sample, the
  same in every run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mtl_bench.remedies.combination import LossCombination
from mtl_bench.spec import Task
from mtl_bench.validation import check_int

POINTS = 11


def sweep_weights(point: int, num_tasks: int) -> np.ndarray:
    """The task weights of sweep point ``point`` (0 .. ``POINTS - 1``) for ``num_tasks`` tasks; they sum to ``num_tasks``."""
    check_int("sweep", "point", point, 0, POINTS - 1)
    if num_tasks == 2:
        p = point / (POINTS - 1)
        return np.array([2.0 * p, 2.0 * (1.0 - p)])
    return num_tasks * np.random.default_rng(point).dirichlet(np.ones(num_tasks))


class SweepPoint(LossCombination):
    """The weighted sum with the weights of one sweep point (:func:`sweep_weights`), in place of the static ones.

    Args:
        point: Which point of the sweep, 0 .. ``POINTS - 1``.
    """

    name = "sweep"

    def __init__(self, point: int = 0) -> None:
        super().__init__()
        self.point = check_int("SweepPoint", "point", point, 0, POINTS - 1)

    def build(self, tasks: Sequence[Task], weights: Sequence[float], seed: int = 0) -> None:
        super().build(tasks, sweep_weights(self.point, len(tasks)).tolist(), seed)
