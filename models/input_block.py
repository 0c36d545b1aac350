"""Input block: normalised numeric columns and embedded categorical columns."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from mtl_bench.models._validation import as_feature_spec, check_int
from mtl_bench.spec import CATEGORICAL, NUMERIC, FeatureSpec


@keras.saving.register_keras_serializable(package="mtl_bench")
class InputBlock(keras.layers.Layer):
    """Turns a feature dict into one dense vector per example.

    Numeric columns are standardised with the spec's training mean and
    standard deviation (constants, never trained). Categorical columns share
    one embedding table: column ``j`` owns rows ``[offset_j, offset_j +
    vocabulary_sizes[j])``, so all columns are looked up with a single gather.
    Ids outside ``[0, vocabulary_sizes[j])`` are read as 0 (unknown).

    The output is ``concat([normalised numeric, embeddings of column 0, ...,
    embeddings of column n_cat - 1])`` of width
    ``n_num + n_cat * embedding_dim``.

    Args:
        features: The feature spec (or its ``to_dict`` form).
        embedding_dim: Width of each categorical column's embedding, in ``[1, 4096]``.
        **kwargs: Base layer arguments (``name``, ``dtype``, ...).
    """

    def __init__(self, features: FeatureSpec, embedding_dim: int = 8, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        owner = type(self).__name__
        self.features = as_feature_spec(owner, features)
        self.embedding_dim = check_int(owner, "embedding_dim", embedding_dim, 1)
        self.num_numeric = len(self.features.numeric)
        self.num_categorical = len(self.features.categorical)
        self.output_dim = self.num_numeric + self.num_categorical * self.embedding_dim
        self._mean = np.asarray(self.features.numeric_mean, dtype="float32")
        self._std = np.asarray(self.features.numeric_std, dtype="float32")
        sizes = np.asarray(self.features.vocabulary_sizes, dtype="int64")
        self._vocabulary_sizes = sizes.astype("int32")
        self._offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype("int32")
        self._table_size = int(sizes.sum())

    def build(self, input_shape: dict[str, tuple[int | None, ...]] | None = None) -> None:
        expected = {NUMERIC: self.num_numeric, CATEGORICAL: self.num_categorical}
        if isinstance(input_shape, dict):
            for key in self.features.keys:
                if key not in input_shape:
                    raise ValueError(
                        f"InputBlock needs the feature keys {list(self.features.keys)}. "
                        f"Received: keys={sorted(input_shape)}"
                    )
                width = input_shape[key][-1]
                if width is not None and width != expected[key]:
                    raise ValueError(
                        f"InputBlock: features[{key!r}] must have {expected[key]} columns. "
                        f"Received: shape={tuple(input_shape[key])}"
                    )
        self.embedding = None
        if self.num_categorical:
            self.embedding = keras.layers.Embedding(
                self._table_size, self.embedding_dim, dtype=self.dtype_policy, name="embedding"
            )
            self.embedding.build((None, self.num_categorical))

    def call(self, inputs: dict[str, Any]) -> Any:
        parts = []
        if self.num_numeric:
            numeric = ops.cast(inputs[NUMERIC], self.compute_dtype)
            mean = ops.convert_to_tensor(self._mean, dtype=self.compute_dtype)
            std = ops.convert_to_tensor(self._std, dtype=self.compute_dtype)
            parts.append((numeric - mean) / std)
        if self.num_categorical:
            ids = ops.cast(inputs[CATEGORICAL], "int32")
            known = ops.logical_and(ids >= 0, ids < ops.convert_to_tensor(self._vocabulary_sizes))
            ids = ops.where(known, ids, 0) + ops.convert_to_tensor(self._offsets)
            embedded = self.embedding(ids)
            parts.append(ops.reshape(embedded, (-1, self.num_categorical * self.embedding_dim)))
        return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)

    def compute_output_shape(self, input_shape: dict[str, tuple[int | None, ...]]) -> tuple[int | None, int]:
        batch = next(iter(input_shape.values()))[0]
        return (batch, self.output_dim)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"features": self.features.to_dict(), "embedding_dim": self.embedding_dim})
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> InputBlock:
        config = dict(config)
        config["features"] = FeatureSpec.from_dict(config["features"])
        return cls(**config)
