"""Softmax gate over experts, and the mixture it weights."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from mtl_bench.models._validation import check_int


def mix(weights: Any, experts: Any) -> Any:
    """Gate-weighted sum of expert outputs.

    Args:
        weights: ``(batch, num_experts)`` gate weights.
        experts: ``(batch, num_experts, units)`` expert outputs.

    Returns:
        ``(batch, units)``: ``sum_e weights[:, e] * experts[:, e, :]``.
    """
    return ops.einsum("be,beu->bu", weights, experts)


@keras.saving.register_keras_serializable(package="mtl_bench")
class Gate(keras.layers.Layer):
    """``softmax(x @ kernel + bias)``: one weight per expert, summing to 1.

    Input shape ``(batch, input_dim)``; output shape ``(batch, num_experts)``.

    Args:
        num_experts: Number of experts the gate weights, in ``[1, 4096]``.
        kernel_initializer: Initializer of the ``(input_dim, num_experts)`` kernel.
        bias_initializer: Initializer of the ``(num_experts,)`` bias.
        **kwargs: Base layer arguments (``name``, ``dtype``, ...).
    """

    def __init__(
        self,
        num_experts: int,
        kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        bias_initializer: str | keras.initializers.Initializer = "zeros",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_experts = check_int(type(self).__name__, "num_experts", num_experts, 1)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(f"Gate needs a known input width. Received: input_shape={input_shape}")
        self.kernel = self.add_weight(
            name="kernel", shape=(int(input_dim), self.num_experts), initializer=self.kernel_initializer
        )
        self.bias = self.add_weight(name="bias", shape=(self.num_experts,), initializer=self.bias_initializer)

    def call(self, inputs: Any) -> Any:
        logits = ops.matmul(inputs, self.kernel) + self.bias
        if self.num_experts == 1:
            # softmax over one expert is 1 (with a zero gradient); skip Keras's warning about it.
            return ops.ones_like(logits)
        return ops.softmax(logits, axis=-1)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, int]:
        return (input_shape[0], self.num_experts)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "num_experts": self.num_experts,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
