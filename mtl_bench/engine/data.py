"""Input pipelines built from :class:`~mtl_bench.spec.Split`.

Training data stays resident as tensors; each epoch is a seeded permutation cut
into equal batches, and the compiled training loop gathers a batch at a time
inside the graph. On these small models, per-step dispatch dominates, so one
graph call running many steps beats an iterator-fed loop (see ``mtl-bench bench``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow as tf

from mtl_bench.spec import Split

STREAM_BLOCK = "stream_block"  # meta key: the time block a training row belongs to


def steps_per_epoch(split: Split, batch_size: int) -> int:
    """Full batches per epoch (the remainder rows sit out, a different random few each epoch)."""
    return max(len(split) // batch_size, 1)


def resident(split: Split, tasks: Sequence[str]) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
    """The split's features and the given tasks' labels as tensors."""
    return (
        {k: tf.constant(v) for k, v in split.features.items()},
        {t: tf.constant(split.labels[t].astype(np.float32)) for t in tasks},
    )


def epoch_batches(
    n: int, batch_size: int, rng: np.random.Generator, blocks: np.ndarray | None = None
) -> np.ndarray:
    """Row indices of one epoch, shape ``(steps, batch)``: a fresh permutation cut into full batches.

    With fewer rows than ``batch_size``, the single batch is the whole (permuted) split.

    Args:
        blocks: Optional time block per row (a split's ``meta["stream_block"]``):
            the epoch then reads the log in time order, block after block in
            increasing order, each block's rows in a fresh random order, as a
            production model reads its logs (and as labels that arrive late
            are missing from the latest blocks). Without it, the epoch is one
            permutation of all rows.
    """
    if blocks is None:
        order = rng.permutation(n).astype(np.int32)
    else:
        order = np.concatenate([rng.permutation(np.flatnonzero(blocks == b)) for b in np.unique(blocks)]).astype(np.int32)
    if n < batch_size:
        return order[None, :]
    steps = n // batch_size
    return order[: steps * batch_size].reshape(steps, batch_size)


def feature_batches(split: Split, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """The split's features in order, in slices of ``batch_size`` rows (for prediction)."""
    for start in range(0, len(split), batch_size):
        yield {k: v[start : start + batch_size] for k, v in split.features.items()}
