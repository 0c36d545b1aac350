"""Shared-bottom model: one shared hidden layer under one tower per task (Caruana, 1997)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from mtl_bench.models._validation import check_int
from mtl_bench.models.base import DENSE, MultiTaskModel
from mtl_bench.spec import FeatureSpec, Task
from mtl_bench.validation import check_choice

# The default MMoE the shared bottom is matched against (Ma et al., KDD 2018, §5.1).
MATCHED_NUM_EXPERTS = 8
MATCHED_EXPERT_UNITS = 16


def matched_bottom_units(
    input_dim: int,
    num_tasks: int,
    tower_units: int = 8,
    num_experts: int = MATCHED_NUM_EXPERTS,
    expert_units: int = MATCHED_EXPERT_UNITS,
) -> int:
    """Bottom width that gives a shared-bottom model the parameter count of an MMoE.

    With input width ``d``, ``T`` tasks, ``E`` experts of ``u`` units and
    towers whose first layer has ``c`` outputs (``c = tower_units``, or 1 when
    the tower has no hidden layer), the parameters that differ between the two
    models are (input block and the rest of the towers are identical):

    * MMoE: experts ``E * u * (d + 1)`` + gates ``T * E * (d + 1)`` + towers' first layer ``T * c * u``;
    * shared bottom of width ``b``: bottom ``b * (d + 1)`` + towers' first layer ``T * c * b``.

    Equating them gives ``b = (E*u*(d+1) + T*E*(d+1) + T*c*u) / (d + 1 + T*c)``,
    rounded to the nearest integer (so the counts differ by at most
    ``(d + 1 + T*c) / 2``).
    """
    d, t = input_dim, num_tasks
    c = tower_units if tower_units > 0 else 1
    numerator = num_experts * expert_units * (d + 1) + t * num_experts * (d + 1) + t * c * expert_units
    return max(1, int(numerator / (d + 1 + t * c) + 0.5))


BOTTOM_ACTIVATIONS: tuple[str, ...] = ("relu", "linear", "tanh")


@keras.saving.register_keras_serializable(package="mtl_bench")
class SharedBottom(MultiTaskModel):
    """Input block -> ``Dense(bottom_units, bottom_activation)`` (shared) -> one :class:`Tower` per task.

    Shared variables: the embeddings (``"embedding"``) and the bottom
    (``"dense"``). Task variables: the task's tower. :meth:`gates` returns ``{}``.

    Args:
        features: The feature spec.
        tasks: The tasks, one tower each.
        bottom_units: Width of the shared hidden layer, in ``[1, 4096]``; ``None`` = parameter-matched
            to an MMoE of 8 experts of 16 units with the same input width, tasks
            and towers (:func:`matched_bottom_units`).
        tower_units: Hidden width of each tower, in ``[0, 4096]`` (0 = linear/sigmoid head only).
        bottom_activation: Activation of the shared layer, one of
            :data:`BOTTOM_ACTIVATIONS`; ``"linear"`` makes it the narrow linear
            bottleneck of the planted suite (a one-unit ReLU can die).
        embedding_dim: Width of each categorical embedding.
        dropout: Dropout rate in the towers, in ``[0, 1)``.
        **kwargs: Base model arguments (``name``, ...).
    """

    def __init__(
        self,
        features: FeatureSpec,
        tasks: Sequence[Task],
        *,
        bottom_units: int | None = None,
        tower_units: int = 8,
        bottom_activation: str = "relu",
        embedding_dim: int = 8,
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        check_choice(owner, "bottom_activation", bottom_activation, BOTTOM_ACTIVATIONS)
        super().__init__(
            features, tasks, embedding_dim=embedding_dim, tower_units=tower_units, dropout=dropout, **kwargs
        )
        self.bottom_activation = bottom_activation
        self.bottom_units = None if bottom_units is None else check_int(owner, "bottom_units", bottom_units, 1)

    @property
    def resolved_bottom_units(self) -> int:
        """The bottom width in use (``bottom_units`` or the parameter-matched default)."""
        if self.bottom_units is not None:
            return self.bottom_units
        return matched_bottom_units(self.input_dim, len(self.tasks), self.tower_units)

    def _build_body(self, input_dim: int) -> None:
        units = self.resolved_bottom_units
        self.bottom = keras.layers.Dense(units, activation=self.bottom_activation, dtype=self.dtype_policy, name="bottom")
        self.bottom.build((None, input_dim))
        self._build_towers(units)

    def _forward(self, inputs: dict[str, Any], training: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        hidden = self.bottom(self.input_block(inputs))
        return self._apply_towers([hidden] * len(self.tasks), training), {}

    def _layer_owners(self) -> list[tuple[keras.layers.Layer, str | None, str]]:
        return [(self.bottom, None, DENSE)]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"bottom_units": self.bottom_units, "bottom_activation": self.bottom_activation})
        return config
