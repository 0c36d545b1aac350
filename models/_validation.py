"""Argument checks shared by the layers and models (errors name the received value)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mtl_bench.spec import FeatureSpec, Task


def check_int(name: str, value: Any, minimum: int) -> int:
    """Returns ``value`` as an ``int`` or raises when it is not an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}")
    return int(value)


def check_rate(name: str, value: Any) -> float:
    """Returns ``value`` as a ``float`` or raises when it is not a number in ``[0, 1)``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not 0.0 <= float(value) < 1.0
    ):
        raise ValueError(f"`{name}` must be a number in [0, 1). Received: {name}={value!r}")
    return float(value)


def as_feature_spec(features: Any) -> FeatureSpec:
    """A :class:`FeatureSpec`, from itself or from its ``to_dict`` form."""
    if isinstance(features, dict):
        features = FeatureSpec.from_dict(features)
    if not isinstance(features, FeatureSpec):
        raise ValueError(f"`features` must be a FeatureSpec. Received: features={features!r}")
    return features


def as_tasks(tasks: Any) -> tuple[Task, ...]:
    """A non-empty tuple of uniquely named :class:`Task`, from tasks or their ``to_dict`` forms."""
    if isinstance(tasks, (Task, dict, str)) or not isinstance(tasks, Sequence):
        raise ValueError(f"`tasks` must be a sequence of Task. Received: tasks={tasks!r}")
    result = tuple(Task.from_dict(t) if isinstance(t, dict) else t for t in tasks)
    if not result or not all(isinstance(t, Task) for t in result):
        raise ValueError(f"`tasks` must be a non-empty sequence of Task. Received: tasks={tasks!r}")
    names = [t.name for t in result]
    if len(set(names)) != len(names):
        raise ValueError(f"Task names must be unique. Received: task names={names}")
    return result
