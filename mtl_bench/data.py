"""tf.data input pipelines built from :class:`~mtl_bench.spec.Split`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow as tf

from mtl_bench.spec import Split


def steps_per_epoch(split: Split, batch_size: int) -> int:
    return -(-len(split) // batch_size)


def training_dataset(split: Split, batch_size: int, seed: int, tasks: Sequence[str]) -> tf.data.Dataset:
    """An endless, reshuffled-every-epoch stream of ``(features, labels)`` batches.

    Each epoch is exactly :func:`steps_per_epoch` batches (the last one may be
    smaller). Rows are gathered a whole batch at a time from in-memory tensors,
    which is far cheaper than slicing and re-batching single rows.
    """
    features = {k: tf.constant(v) for k, v in split.features.items()}
    labels = {t: tf.constant(split.labels[t].astype(np.float32)) for t in tasks}

    def gather(index: tf.Tensor) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
        return (
            {k: tf.gather(v, index) for k, v in features.items()},
            {k: tf.gather(v, index) for k, v in labels.items()},
        )

    n = len(split)
    return (
        tf.data.Dataset.range(n)
        .shuffle(n, seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .repeat()
        .prefetch(tf.data.AUTOTUNE)
    )


def feature_batches(split: Split, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """The split's features in order, in slices of ``batch_size`` rows (for prediction)."""
    for start in range(0, len(split), batch_size):
        yield {k: v[start : start + batch_size] for k, v in split.features.items()}
