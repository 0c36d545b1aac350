"""Multi-gate Mixture-of-Experts (Ma et al., KDD 2018) and its one-gate variant OMoE."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from mtl_bench.models._validation import check_int, check_rate
from mtl_bench.models.base import DENSE, GATE, MultiTaskModel
from mtl_bench.models.experts import Experts
from mtl_bench.models.gate import Gate, mix
from mtl_bench.models.tower import Tower
from mtl_bench.spec import FeatureSpec, Task


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
        num_experts: Number of experts, >= 1.
        expert_units: Width of each expert, >= 1.
        tower_units: Hidden width of each tower (0 = output unit only).
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
        super().__init__(features, tasks, embedding_dim=embedding_dim, **kwargs)
        self.num_experts = check_int("num_experts", num_experts, 1)
        self.expert_units = check_int("expert_units", expert_units, 1)
        self.tower_units = check_int("tower_units", tower_units, 0)
        self.dropout = check_rate("dropout", dropout)
        if not isinstance(shared_gate, bool):
            raise ValueError(f"`shared_gate` must be a bool. Received: shared_gate={shared_gate!r}")
        self.shared_gate = shared_gate

    def _build_body(self, input_dim: int) -> None:
        self.experts = Experts(self.num_experts, self.expert_units, dtype=self.dtype_policy, name="experts")
        self.experts.build((None, input_dim))
        gate_names = ["gate"] if self.shared_gate else [f"gate_{t.name}" for t in self.tasks]
        self.gate_layers = []
        for name in gate_names:
            gate = Gate(self.num_experts, dtype=self.dtype_policy, name=name)
            gate.build((None, input_dim))
            self.gate_layers.append(gate)
        self.towers = []
        for task in self.tasks:
            tower = Tower(task.kind, self.tower_units, self.dropout, dtype=self.dtype_policy, name=f"tower_{task.name}")
            tower.build((None, self.expert_units))
            self.towers.append(tower)

    def _forward(self, inputs: dict[str, Any], training: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        x = self.input_block(inputs)
        experts = self.experts(x)
        weights = [gate(x) for gate in self.gate_layers]
        outputs, gates = {}, {}
        for k, (task, tower) in enumerate(zip(self.tasks, self.towers)):
            w = weights[0] if self.shared_gate else weights[k]
            outputs[task.name] = tower(mix(w, experts), training=training)
            gates[task.name] = w
        return outputs, gates

    def _layer_owners(self) -> list[tuple[keras.layers.Layer, str | None, str]]:
        owners: list[tuple[keras.layers.Layer, str | None, str]] = [(self.experts, None, DENSE)]
        if self.shared_gate:
            owners.append((self.gate_layers[0], None, GATE))
        else:
            owners.extend((gate, t.name, GATE) for t, gate in zip(self.tasks, self.gate_layers))
        owners.extend((tower, t.name, DENSE) for t, tower in zip(self.tasks, self.towers))
        return owners

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "num_experts": self.num_experts,
                "expert_units": self.expert_units,
                "tower_units": self.tower_units,
                "dropout": self.dropout,
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
