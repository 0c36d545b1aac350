"""Single-task baseline: the shared-bottom model with one task."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from mtl_bench.models.shared_bottom import SharedBottom
from mtl_bench.spec import FeatureSpec, Task
from mtl_bench.validation import fail


@keras.saving.register_keras_serializable(package="mtl_bench")
class SingleTask(SharedBottom):
    """Input block -> ``Dense(bottom_units, relu)`` -> :class:`Tower`, for exactly one task.

    Every trainable variable belongs to the task: ``shared_variables`` and
    ``variable_groups`` are empty. :meth:`gates` returns ``{}``.

    Args:
        features: The feature spec.
        tasks: A sequence holding exactly one task.
        bottom_units: Width of the hidden layer; ``None`` = the shared-bottom
            default for one task, i.e. matched to a one-task MMoE of 8 experts
            of 16 units (:func:`~mtl_bench.models.shared_bottom.matched_bottom_units`).
        tower_units: Hidden width of the tower (0 = output unit only).
        embedding_dim: Width of each categorical embedding.
        dropout: Dropout rate in the tower, in ``[0, 1)``.
        **kwargs: Base model arguments (``name``, ...).
    """

    def __init__(
        self,
        features: FeatureSpec,
        tasks: Sequence[Task],
        *,
        bottom_units: int | None = None,
        tower_units: int = 8,
        embedding_dim: int = 8,
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            features,
            tasks,
            bottom_units=bottom_units,
            tower_units=tower_units,
            embedding_dim=embedding_dim,
            dropout=dropout,
            **kwargs,
        )
        if len(self.tasks) != 1:
            raise fail(type(self).__name__, "tasks", "exactly one task", list(self.task_names))
