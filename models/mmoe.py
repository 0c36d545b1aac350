"""Multi-gate Mixture-of-Experts (Ma et al., KDD 2018) and its one-gate variant OMoE."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from mtl_bench.models._validation import check_int
from mtl_bench.models.base import DENSE, GATE, MultiTaskModel
from mtl_bench.models.experts import Experts
from mtl_bench.models.gate import Gate, mix
from mtl_bench.spec import FeatureSpec, Task
from mtl_bench.validation import check_bool


@keras.saving.register_keras_serializable(package="mtl_bench")
class MMoE(MultiTaskModel):
    """Shared experts mixed by one softmax gate per task, then one tower per task.

    ``y_k = tower_k(sum_e gate_k(x)[e] * expert_e(x))`` where ``x`` is the input
    block's output. Defaults follow the paper's §5.1: 8 experts of 16 units,
    towers of 8 hidden units.

    Shared variables: embeddings (``"embedding"``), experts (``"dense"``) and,
    with ``shared_gate=True``, the single gate (``"gate"``). Task variables:
    the task's gate and tower. :meth:`gates` returns ``{task name: (batch,
    num_experts)}``.

    Args:
        features: The feature spec.
        tasks: The tasks, one gate and one tower each.
        num_experts: Number of experts, in ``[1, 4096]``.
        expert_units: Width of each expert, in ``[1, 4096]``.
        tower_units: Hidden width of each tower, in ``[0, 4096]`` (0 = output unit only).
        embedding_dim: Width of each categorical embedding.
        dropout: Dropout rate in the towers, in ``[0, 1)``.
        shared_gate: One gate shared by every task (OMoE) instead of one per task.
        **kwargs: Base model arguments (``name``, ...).
    """

    def __init__(
        self,
        features: FeatureSpec,
        tasks: Sequence[Task],
        *,
        num_experts: int = 8,
        expert_units: int = 16,
        tower_units: int = 8,
        embedding_dim: int = 8,
        dropout: float = 0.0,
        shared_gate: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            features, tasks, embedding_dim=embedding_dim, tower_units=tower_units, dropout=dropout, **kwargs
        )
        owner = type(self).__name__
        self.num_experts = check_int(owner, "num_experts", num_experts, 1)
        self.expert_units = check_int(owner, "expert_units", expert_units, 1)
        self.shared_gate = check_bool(owner, "shared_gate", shared_gate)

    def _build_body(self, input_dim: int) -> None:
        self.experts = Experts(self.num_experts, self.expert_units, dtype=self.dtype_policy, name="experts")
        self.experts.build((None, input_dim))
        gate_names = ["gate"] if self.shared_gate else [f"gate_{t.name}" for t in self.tasks]
        self.gate_layers = []
        for name in gate_names:
            gate = Gate(self.num_experts, dtype=self.dtype_policy, name=name)
            gate.build((None, input_dim))
            self.gate_layers.append(gate)
        self._build_towers(self.expert_units)

    def _forward(self, inputs: dict[str, Any], training: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        x = self.input_block(inputs)
        experts = self.experts(x)
        weights = [gate(x) for gate in self.gate_layers]
        gates = {t.name: weights[0] if self.shared_gate else weights[k] for k, t in enumerate(self.tasks)}
        return self._apply_towers([mix(w, experts) for w in gates.values()], training), gates

    def _layer_owners(self) -> list[tuple[keras.layers.Layer, str | None, str]]:
        owners: list[tuple[keras.layers.Layer, str | None, str]] = [(self.experts, None, DENSE)]
        if self.shared_gate:
            owners.append((self.gate_layers[0], None, GATE))
        else:
            owners.extend((gate, t.name, GATE) for t, gate in zip(self.tasks, self.gate_layers))
        return owners

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "num_experts": self.num_experts,
                "expert_units": self.expert_units,
                "shared_gate": self.shared_gate,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="mtl_bench")
class OMoE(MMoE):
    """One-gate Mixture-of-Experts: :class:`MMoE` with a single gate shared by every task.

    :meth:`gates` still returns one entry per task (the same weights).
    Arguments are those of :class:`MMoE` without ``shared_gate``.
    """

    def __init__(
        self,
        features: FeatureSpec,
        tasks: Sequence[Task],
        *,
        num_experts: int = 8,
        expert_units: int = 16,
        tower_units: int = 8,
        embedding_dim: int = 8,
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            features,
            tasks,
            num_experts=num_experts,
            expert_units=expert_units,
            tower_units=tower_units,
            embedding_dim=embedding_dim,
            dropout=dropout,
            shared_gate=True,
            **kwargs,
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("shared_gate")
        return config
