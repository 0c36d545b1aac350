"""How the probe reads a Keras model and its losses: named outputs, compiled-function cache, loss kinds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras

from mtl_bench.validation import fail

_CACHE_ATTR = "_mtl_bench_probe_fns"


def name_outputs(out: Any, model: Any, names: Sequence[str]) -> Mapping[str, Any]:
    """The model's outputs as ``{output name: tensor}``."""
    if isinstance(out, Mapping):
        return out
    if isinstance(out, (list, tuple)):
        out_names = list(getattr(model, "output_names", None) or [])
        if len(out_names) == len(out):
            return dict(zip(out_names, out))
    elif len(names) == 1:
        return {names[0]: out}
    raise ValueError(
        "ConflictProbe: cannot name the model's outputs; return a dict or give the outputs names. "
        f"Received an output of type {type(out).__name__}"
    )


def cache(model: keras.Model) -> dict:
    """The model's cache of compiled probe functions (one trace per model and settings)."""
    found = model.__dict__.get(_CACHE_ATTR)
    if found is None:
        found = {}
        object.__setattr__(model, _CACHE_ATTR, found)
    return found


def num_rows(value: Any, owner: str, name: str) -> int:
    """Length of the batch axis of the array ``name`` (an argument of ``owner``)."""
    shape = getattr(value, "shape", None)
    if shape is None or len(shape) == 0:
        raise fail(owner, f"{name}.shape", "the shape of an array with a batch axis, (n, ...)", shape)
    return int(shape[0])


def keras_loss(name: str, loss: Any) -> Any:
    """A callable ``(y_true, y_pred) -> loss`` from a Keras loss object, name or function (mean taken by the caller)."""
    if isinstance(loss, str):
        loss = keras.losses.get(loss)
    if not callable(loss):
        raise fail("ConflictProbe", f"losses[{name!r}]", "a keras.losses.Loss, a loss name or a loss function", loss)
    return loss


def loss_key(loss: Any) -> str:
    """A string that is equal for equal losses (part of the compiled-function cache key)."""
    if isinstance(loss, keras.losses.Loss):
        return f"{type(loss).__qualname__}:{sorted(loss.get_config().items())!r}"
    return f"{getattr(loss, '__module__', '')}.{getattr(loss, '__qualname__', repr(loss))}"


def is_binary_loss(loss: Any) -> bool:
    """Whether ``loss`` is a binary cross-entropy (its task counts as binary for forgetting events)."""
    if isinstance(loss, (keras.losses.BinaryCrossentropy, keras.losses.BinaryFocalCrossentropy)):
        return True
    return "binary" in getattr(loss, "__name__", getattr(loss, "name", "")).lower()


def from_logits(loss: Any) -> bool:
    """Whether a Keras loss object takes logits."""
    if isinstance(loss, keras.losses.Loss):
        return bool(loss.get_config().get("from_logits", False))
    return False
