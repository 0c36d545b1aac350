"""Task tower: a small MLP ending in the task's output unit."""

from __future__ import annotations

from typing import Any

import keras

from mtl_bench.models._validation import check_int, check_rate
from mtl_bench.spec import TASK_KINDS
from mtl_bench.validation import check_choice


@keras.saving.register_keras_serializable(package="mtl_bench")
class Tower(keras.layers.Layer):
    """``Dense(hidden_units, relu) -> Dropout -> Dense(1, sigmoid | linear)``.

    Input shape ``(batch, input_dim)``; output shape ``(batch, 1)``: a
    probability for a binary task, a value for a regression task.

    Args:
        kind: The task kind, ``"binary"`` (sigmoid output) or ``"regression"`` (linear).
        hidden_units: Width of the hidden layer, in ``[0, 4096]``; 0 = no hidden layer (and no dropout).
        dropout: Dropout rate after the hidden layer, in ``[0, 1)``.
        **kwargs: Base layer arguments (``name``, ``dtype``, ...).
    """

    def __init__(self, kind: str, hidden_units: int = 8, dropout: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.kind = check_choice(owner, "kind", kind, TASK_KINDS)
        self.hidden_units = check_int(owner, "hidden_units", hidden_units, 0)
        self.dropout = check_rate(owner, "dropout", dropout)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        width = input_shape[-1]
        self.hidden = None
        self.dropout_layer = None
        if self.hidden_units:
            self.hidden = keras.layers.Dense(
                self.hidden_units, activation="relu", dtype=self.dtype_policy, name="hidden"
            )
            self.hidden.build((None, width))
            width = self.hidden_units
            if self.dropout:
                self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy, name="dropout")
        self.output_layer = keras.layers.Dense(
            1, activation="sigmoid" if self.kind == "binary" else None, dtype=self.dtype_policy, name="output"
        )
        self.output_layer.build((None, width))

    def call(self, inputs: Any, training: bool = False) -> Any:
        x = inputs
        if self.hidden is not None:
            x = self.hidden(x)
            if self.dropout_layer is not None:
                x = self.dropout_layer(x, training=training)
        return self.output_layer(x)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, int]:
        return (input_shape[0], 1)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"kind": self.kind, "hidden_units": self.hidden_units, "dropout": self.dropout})
        return config
