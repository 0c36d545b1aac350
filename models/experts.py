"""A group of feed-forward experts evaluated in one batched contraction."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from mtl_bench.models._validation import check_int


def _initializer_for_expert(initializer: keras.initializers.Initializer, index: int) -> Any:
    """An initializer that draws expert ``index``'s values independently of the other experts.

    A Keras random initializer returns the same values on every call (its seed
    is fixed at construction), so each expert gets a fresh copy: a new default
    seed when none was given, or ``seed + index`` when an integer was.
    """
    config = initializer.get_config()
    if "seed" not in config or not (config["seed"] is None or isinstance(config["seed"], int)):
        return initializer  # deterministic (e.g. zeros) or a stateful SeedGenerator
    if isinstance(config["seed"], int):
        config["seed"] += index
    return type(initializer).from_config(config)


@keras.saving.register_keras_serializable(package="mtl_bench")
class Experts(keras.layers.Layer):
    """``num_experts`` dense layers applied to the same input at once.

    Holds a kernel of shape ``(num_experts, input_dim, units)`` and a bias of
    shape ``(num_experts, units)``; expert ``e`` computes
    ``activation(x @ kernel[e] + bias[e])``. Each expert is initialised as its
    own ``Dense(units)`` would be (fan-in ``input_dim``, not
    ``num_experts * input_dim``) and with its own random draw.

    Input shape ``(batch, input_dim)``; output shape ``(batch, num_experts, units)``.

    Args:
        num_experts: Number of experts, in ``[1, 4096]``.
        units: Output width of each expert, in ``[1, 4096]``.
        activation: Activation applied to each expert's output.
        kernel_initializer: Initializer of one expert's ``(input_dim, units)`` kernel.
        bias_initializer: Initializer of one expert's bias.
        **kwargs: Base layer arguments (``name``, ``dtype``, ...).
    """

    def __init__(
        self,
        num_experts: int,
        units: int,
        activation: str | None = "relu",
        kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        bias_initializer: str | keras.initializers.Initializer = "zeros",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.num_experts = check_int(owner, "num_experts", num_experts, 1)
        self.units = check_int(owner, "units", units, 1)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(f"Experts needs a known input width. Received: input_shape={input_shape}")
        kernel_inits = [_initializer_for_expert(self.kernel_initializer, e) for e in range(self.num_experts)]
        bias_inits = [_initializer_for_expert(self.bias_initializer, e) for e in range(self.num_experts)]

        def kernel_init(shape: tuple[int, ...], dtype: Any = None) -> Any:
            return ops.stack([init(shape[1:], dtype=dtype) for init in kernel_inits])

        def bias_init(shape: tuple[int, ...], dtype: Any = None) -> Any:
            return ops.stack([init(shape[1:], dtype=dtype) for init in bias_inits])

        self.kernel = self.add_weight(
            name="kernel", shape=(self.num_experts, int(input_dim), self.units), initializer=kernel_init
        )
        self.bias = self.add_weight(name="bias", shape=(self.num_experts, self.units), initializer=bias_init)

    def call(self, inputs: Any) -> Any:
        outputs = ops.einsum("bi,eiu->beu", inputs, self.kernel) + self.bias
        return self.activation(outputs) if self.activation is not None else outputs

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, int, int]:
        return (input_shape[0], self.num_experts, self.units)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "num_experts": self.num_experts,
                "units": self.units,
                "activation": keras.activations.serialize(self.activation) if self.activation else None,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
