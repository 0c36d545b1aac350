"""Progressive Layered Extraction (Tang et al., RecSys 2020)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from mtl_bench.models._validation import check_int
from mtl_bench.models.base import DENSE, GATE, MultiTaskModel
from mtl_bench.models.cgc import CGC
from mtl_bench.spec import FeatureSpec, Task
from mtl_bench.validation import fail

SHARED = "shared"


@keras.saving.register_keras_serializable(package="mtl_bench")
class PLE(MultiTaskModel):
    """Stacked :class:`~mtl_bench.models.cgc.CGC` levels, then one tower per task.

    At level 1 every expert reads the input block's output. At level ``l``,
    task ``k``'s experts and gate read task ``k``'s output of level ``l - 1``;
    the shared experts read the shared output of level ``l - 1``, produced by
    a shared gate over all experts of that level. The last level has no
    shared gate. Task ``k``'s gate mixes only task ``k``'s experts and the
    shared experts.

    Variable ownership follows the information flow, not the layer names:
    task ``k``'s experts at levels below the last feed the shared gate, so they
    reach every task's output and are **shared** (``"dense"``); likewise task
    ``k``'s gates below level ``num_levels - 1`` feed such experts and are
    shared (``"gate"``). Task ``k`` owns its tower, its last-level experts
    and its gates of the last two levels. With ``num_levels=1`` this is the
    usual split (task experts and gates are the task's own).

    :meth:`gates` returns ``"<task>/level<l>"`` (``(batch, num_task_experts +
    num_shared_experts)``) for every task and level ``l`` (1-based), and
    ``"shared/level<l>"`` (``(batch, T * num_task_experts +
    num_shared_experts)``) for every level but the last.

    Defaults: two levels (the smallest stack that exercises progressive
    extraction) of two experts per task and two shared experts, each of 16
    units as the MMoE defaults, towers of 8 hidden units.

    Args:
        features: The feature spec.
        tasks: The tasks (none may be named ``"shared"``).
        num_levels: Number of CGC levels, in ``[1, 4096]``, as every count and width below.
        num_task_experts: Experts per task and level.
        num_shared_experts: Shared experts per level.
        expert_units: Width of every expert.
        tower_units: Hidden width of each tower (0 = output unit only).
        embedding_dim: Width of each categorical embedding.
        dropout: Dropout rate in the towers, in ``[0, 1)``.
        **kwargs: Base model arguments (``name``, ...).
    """

    def __init__(
        self,
        features: FeatureSpec,
        tasks: Sequence[Task],
        *,
        num_levels: int = 2,
        num_task_experts: int = 2,
        num_shared_experts: int = 2,
        expert_units: int = 16,
        tower_units: int = 8,
        embedding_dim: int = 8,
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            features, tasks, embedding_dim=embedding_dim, tower_units=tower_units, dropout=dropout, **kwargs
        )
        owner = type(self).__name__
        if SHARED in self.task_names:
            raise fail(owner, "tasks", f"named other than {SHARED!r} (its shared gates' name)", list(self.task_names))
        self.num_levels = check_int(owner, "num_levels", num_levels, 1)
        self.num_task_experts = check_int(owner, "num_task_experts", num_task_experts, 1)
        self.num_shared_experts = check_int(owner, "num_shared_experts", num_shared_experts, 1)
        self.expert_units = check_int(owner, "expert_units", expert_units, 1)

    def _build_body(self, input_dim: int) -> None:
        num_tasks = len(self.tasks)
        self.levels = []
        width = input_dim
        for level in range(1, self.num_levels + 1):
            cgc = CGC(
                num_tasks,
                self.num_task_experts,
                self.num_shared_experts,
                self.expert_units,
                shared_gate=level < self.num_levels,
                dtype=self.dtype_policy,
                name=f"level{level}",
            )
            cgc.build([(None, width)] * (num_tasks + 1))
            self.levels.append(cgc)
            width = self.expert_units
        self._build_towers(self.expert_units)

    def _forward(self, inputs: dict[str, Any], training: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        x = self.input_block(inputs)
        task_inputs, shared_input = [x] * len(self.tasks), x
        gates: dict[str, Any] = {}
        for level, cgc in enumerate(self.levels, start=1):
            result = cgc([*task_inputs, shared_input])
            task_inputs = result["tasks"]
            for task, weights in zip(self.tasks, result["task_gates"]):
                gates[f"{task.name}/level{level}"] = weights
            if "shared" in result:
                shared_input = result["shared"]
                gates[f"{SHARED}/level{level}"] = result["shared_gate"]
        return self._apply_towers(task_inputs, training), gates

    def _layer_owners(self) -> list[tuple[keras.layers.Layer, str | None, str]]:
        owners: list[tuple[keras.layers.Layer, str | None, str]] = []
        last = self.num_levels
        for level, cgc in enumerate(self.levels, start=1):
            for task, experts, gate in zip(self.tasks, cgc.task_experts, cgc.task_gates):
                owners.append((experts, task.name if level == last else None, DENSE))
                owners.append((gate, task.name if level >= last - 1 else None, GATE))
            owners.append((cgc.shared_experts, None, DENSE))
            if cgc.shared_gate_layer is not None:
                owners.append((cgc.shared_gate_layer, None, GATE))
        return owners

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "num_levels": self.num_levels,
                "num_task_experts": self.num_task_experts,
                "num_shared_experts": self.num_shared_experts,
                "expert_units": self.expert_units,
            }
        )
        return config
