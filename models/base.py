"""The base class of every architecture: the contract the engine and the probes rely on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from mtl_bench.models._validation import as_feature_spec, as_tasks, check_int, check_rate
from mtl_bench.models.input_block import InputBlock
from mtl_bench.models.tower import Tower
from mtl_bench.spec import CATEGORICAL, NUMERIC, FeatureSpec, Task

# Groups of shared variables, in the order of ``shared_variables``.
EMBEDDING = "embedding"
DENSE = "dense"
GATE = "gate"
VARIABLE_GROUPS: tuple[str, ...] = (EMBEDDING, DENSE, GATE)


@keras.saving.register_keras_serializable(package="mtl_bench")
class MultiTaskModel(keras.Model):
    """Maps a feature dict to ``{task name: (batch, 1) prediction}``.

    Every architecture reads an :class:`InputBlock` and ends in one
    :class:`Tower` per task, both built here (:meth:`_build_towers`,
    :meth:`_apply_towers`). Subclasses implement :meth:`_build_body` (create
    and build the layers between the two), :meth:`_forward` (outputs and gate
    weights) and :meth:`_layer_owners` (which task, or ``None`` for shared,
    uses each of those layers' variables). Everything else — ownership of
    variables, serialisation, building from the feature spec — lives here.

    The model builds itself from the feature spec (the input widths are known
    in advance), on the first call or when a variable list is first read.

    Args:
        features: The feature spec (or its ``to_dict`` form).
        tasks: The tasks, one output each (or their ``to_dict`` forms).
        embedding_dim: Width of each categorical column's embedding, in ``[1, 4096]``.
        tower_units: Hidden width of each tower, in ``[0, 4096]`` (0 = output unit only).
        dropout: Dropout rate in the towers, in ``[0, 1)``.
        **kwargs: Base model arguments (``name``, ``trainable``, ``dtype``).
    """

    def __init__(
        self,
        features: FeatureSpec,
        tasks: Sequence[Task],
        *,
        embedding_dim: int = 8,
        tower_units: int = 8,
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        owner = type(self).__name__
        self._features = as_feature_spec(owner, features)
        self._tasks = as_tasks(owner, tasks)
        self.embedding_dim = check_int(owner, "embedding_dim", embedding_dim, 1)
        self.tower_units = check_int(owner, "tower_units", tower_units, 0)
        self.dropout = check_rate(owner, "dropout", dropout)

    # ----------------------------------------------------------------- contract

    @property
    def features(self) -> FeatureSpec:
        return self._features

    @property
    def tasks(self) -> tuple[Task, ...]:
        return self._tasks

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self._tasks)

    @property
    def input_dim(self) -> int:
        """Width of the input block's output: ``n_num + n_cat * embedding_dim``."""
        return len(self._features.numeric) + len(self._features.categorical) * self.embedding_dim

    def call(self, inputs: dict[str, Any], training: bool = False) -> dict[str, Any]:
        outputs, _ = self._forward(inputs, training=training)
        return outputs

    def gates(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Gate weights on ``inputs`` (inference mode); ``{}`` for gate-less models.

        Each value is ``(batch, number of experts the gate mixes)`` and sums to 1
        over the last axis. Keys are documented by each architecture.
        """
        self._ensure_built()
        _, gates = self._forward(inputs, training=False)
        return gates

    @property
    def variable_groups(self) -> dict[str, list[keras.Variable]]:
        """``shared_variables`` split into ``"embedding"``, ``"dense"`` and ``"gate"`` (non-empty groups only)."""
        groups: dict[str, list[keras.Variable]] = {g: [] for g in VARIABLE_GROUPS}
        for layer, owner, group in self._owners():
            if owner is None:
                groups[group].extend(layer.trainable_variables)
        return {g: v for g, v in groups.items() if v}

    @property
    def shared_variables(self) -> list[keras.Variable]:
        """Trainable variables whose value reaches the outputs of two or more tasks."""
        return [v for group in self.variable_groups.values() for v in group]

    @property
    def task_variables(self) -> dict[str, list[keras.Variable]]:
        """``{task name: trainable variables that reach only that task's output}``."""
        result: dict[str, list[keras.Variable]] = {name: [] for name in self.task_names}
        for layer, owner, _ in self._owners():
            if owner is not None:
                result[owner].extend(layer.trainable_variables)
        return result

    # ---------------------------------------------------------------- building

    def build(self, input_shape: dict[str, Any] | None = None) -> None:
        self.input_block = InputBlock(
            self._features, self.embedding_dim, dtype=self.dtype_policy, name="input_block"
        )
        self.input_block.build(input_shape if isinstance(input_shape, dict) else self._feature_shapes())
        self._build_body(self.input_block.output_dim)

    def _build_towers(self, input_dim: int) -> None:
        """Creates and builds ``towers``: one :class:`Tower` per task, ``tower_<task>``, on ``input_dim`` features."""
        self.towers = []
        for task in self._tasks:
            tower = Tower(task.kind, self.tower_units, self.dropout, dtype=self.dtype_policy, name=f"tower_{task.name}")
            tower.build((None, input_dim))
            self.towers.append(tower)

    def _apply_towers(self, inputs: Sequence[Any], training: bool) -> dict[str, Any]:
        """``{task name: that task's tower on inputs[k]}``, ``inputs`` holding one tensor per task, in task order."""
        return {t.name: tower(x, training=training) for t, tower, x in zip(self._tasks, self.towers, inputs)}

    def _feature_shapes(self) -> dict[str, tuple[None, int]]:
        widths = {NUMERIC: len(self._features.numeric), CATEGORICAL: len(self._features.categorical)}
        return {key: (None, widths[key]) for key in self._features.keys}

    def _ensure_built(self) -> None:
        if not self.built:
            self.build(self._feature_shapes())

    def _owners(self) -> list[tuple[keras.layers.Layer, str | None, str]]:
        self._ensure_built()
        owners = [
            (self.input_block, None, EMBEDDING),
            *self._layer_owners(),
            *((tower, t.name, DENSE) for t, tower in zip(self._tasks, self.towers)),
        ]
        if len(self._tasks) == 1:
            # With one task nothing is used by two tasks: everything is that task's.
            owners = [(layer, self._tasks[0].name, group) for layer, _, group in owners]
        return owners

    # ------------------------------------------------------- subclass interface

    def _build_body(self, input_dim: int) -> None:
        """Creates and builds every layer after the input block (which outputs ``input_dim`` features), towers too.

        The towers come last, from :meth:`_build_towers`, so that they are the last variables of the model.
        """
        raise NotImplementedError

    def _forward(self, inputs: dict[str, Any], training: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        """Returns ``({task name: (batch, 1)}, {gate key: (batch, experts)})``."""
        raise NotImplementedError

    def _layer_owners(self) -> list[tuple[keras.layers.Layer, str | None, str]]:
        """``(layer, owning task name or None when shared, group)`` for every layer but the input block and towers.

        ``group`` (one of :data:`VARIABLE_GROUPS`) only matters for shared layers.
        """
        raise NotImplementedError

    # ----------------------------------------------------------- serialisation

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "features": self._features.to_dict(),
                "tasks": [t.to_dict() for t in self._tasks],
                "embedding_dim": self.embedding_dim,
                "tower_units": self.tower_units,
                "dropout": self.dropout,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> MultiTaskModel:
        config = dict(config)
        config["features"] = FeatureSpec.from_dict(config["features"])
        config["tasks"] = tuple(Task.from_dict(t) for t in config["tasks"])
        return cls(**config)
