"""One Customized Gate Control (CGC) level of PLE."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from mtl_bench.models._validation import check_int
from mtl_bench.models.experts import Experts
from mtl_bench.models.gate import Gate, mix
from mtl_bench.validation import check_bool


@keras.saving.register_keras_serializable(package="mtl_bench")
class CGC(keras.layers.Layer):
    """Task-specific and shared experts with per-task gates (Tang et al., RecSys 2020).

    Task ``k`` has ``num_task_experts`` experts reading task ``k``'s input and
    a gate, also reading task ``k``'s input, over its own experts followed by
    the ``num_shared_experts`` shared experts (which read the shared input).
    With ``shared_gate=True`` a shared gate reading the shared input mixes
    every expert (task 0's, ..., task ``T-1``'s, then the shared ones) into the
    shared input of the next level.

    Called on a list ``[input of task 0, ..., input of task T-1, shared input]``,
    it returns a dict with ``"tasks"`` (list of ``(batch, units)``),
    ``"task_gates"`` (list of ``(batch, num_task_experts + num_shared_experts)``)
    and, with a shared gate, ``"shared"`` (``(batch, units)``) and
    ``"shared_gate"`` (``(batch, T * num_task_experts + num_shared_experts)``).

    Args:
        num_tasks: Number of tasks ``T``, in ``[1, 4096]``, as every count below.
        num_task_experts: Experts per task.
        num_shared_experts: Shared experts.
        units: Output width of every expert.
        shared_gate: Whether to compute the shared output (all levels but the last).
        **kwargs: Base layer arguments (``name``, ``dtype``, ...).
    """

    def __init__(
        self,
        num_tasks: int,
        num_task_experts: int,
        num_shared_experts: int,
        units: int,
        shared_gate: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.num_tasks = check_int(owner, "num_tasks", num_tasks, 1)
        self.num_task_experts = check_int(owner, "num_task_experts", num_task_experts, 1)
        self.num_shared_experts = check_int(owner, "num_shared_experts", num_shared_experts, 1)
        self.units = check_int(owner, "units", units, 1)
        self.shared_gate = check_bool(owner, "shared_gate", shared_gate)

    def build(self, input_shape: Sequence[tuple[int | None, ...]]) -> None:
        if len(input_shape) != self.num_tasks + 1:
            raise ValueError(
                f"CGC expects {self.num_tasks + 1} inputs (one per task, then the shared one). "
                f"Received: {len(input_shape)} inputs"
            )
        *task_shapes, shared_shape = input_shape
        self.task_experts = []
        self.task_gates = []
        for k, shape in enumerate(task_shapes):
            experts = Experts(self.num_task_experts, self.units, dtype=self.dtype_policy, name=f"task_{k}_experts")
            experts.build(shape)
            gate = Gate(
                self.num_task_experts + self.num_shared_experts, dtype=self.dtype_policy, name=f"task_{k}_gate"
            )
            gate.build(shape)
            self.task_experts.append(experts)
            self.task_gates.append(gate)
        self.shared_experts = Experts(self.num_shared_experts, self.units, dtype=self.dtype_policy, name="shared_experts")
        self.shared_experts.build(shared_shape)
        self.shared_gate_layer = None
        if self.shared_gate:
            self.shared_gate_layer = Gate(
                self.num_tasks * self.num_task_experts + self.num_shared_experts,
                dtype=self.dtype_policy,
                name="shared_gate",
            )
            self.shared_gate_layer.build(shared_shape)

    def call(self, inputs: Sequence[Any]) -> dict[str, Any]:
        *task_inputs, shared_input = inputs
        shared = self.shared_experts(shared_input)
        own = [experts(x) for experts, x in zip(self.task_experts, task_inputs)]
        task_outputs, task_weights = [], []
        for k, x in enumerate(task_inputs):
            weights = self.task_gates[k](x)
            task_outputs.append(mix(weights, ops.concatenate([own[k], shared], axis=1)))
            task_weights.append(weights)
        result = {"tasks": task_outputs, "task_gates": task_weights}
        if self.shared_gate_layer is not None:
            weights = self.shared_gate_layer(shared_input)
            result["shared"] = mix(weights, ops.concatenate([*own, shared], axis=1))
            result["shared_gate"] = weights
        return result

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "num_tasks": self.num_tasks,
                "num_task_experts": self.num_task_experts,
                "num_shared_experts": self.num_shared_experts,
                "units": self.units,
                "shared_gate": self.shared_gate,
            }
        )
        return config
