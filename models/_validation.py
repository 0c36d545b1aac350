"""Argument checks of the layers and models: :mod:`mtl_bench.validation`'s, with the bounds layers need.

Every error is a :class:`~mtl_bench.errors.UserInputError` (a ``ValueError``, as Keras layers raise) reading
``"<layer or model class>: <argument> must be <constraint>. Received: <argument>=<value>"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mtl_bench import validation
from mtl_bench.spec import FeatureSpec, Task

MAX_SIZE = 4096
"""Upper bound of every count or width argument (experts, units, levels, embedding width).

Generous for a benchmark model (the paper defaults are 8 experts of 16 units), and it turns a typo such as
``num_experts=100000000``, which hung a run allocating its kernel, into an error.
"""


def check_int(owner: str, name: str, value: Any, minimum: int, maximum: int = MAX_SIZE) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]``."""
    return validation.check_int(owner, name, value, minimum, maximum)


def check_rate(owner: str, name: str, value: Any) -> float:
    """``value`` as a ``float`` in ``[0, 1)`` (a dropout rate)."""
    return validation.check_number(owner, name, value, 0.0, 1.0, high_open=True)


def as_feature_spec(owner: str, features: Any) -> FeatureSpec:
    """A :class:`FeatureSpec`, from itself or from its ``to_dict`` form."""
    if isinstance(features, dict):
        features = FeatureSpec.from_dict(features)
    if not isinstance(features, FeatureSpec):
        raise validation.fail(owner, "features", "a FeatureSpec", features)
    return features


def as_tasks(owner: str, tasks: Any) -> tuple[Task, ...]:
    """A non-empty tuple of uniquely named :class:`Task`, from tasks or their ``to_dict`` forms."""
    if isinstance(tasks, (Task, dict, str)) or not isinstance(tasks, Sequence):
        raise validation.fail(owner, "tasks", "a sequence of Task", tasks)
    result = tuple(Task.from_dict(t) if isinstance(t, dict) else t for t in tasks)
    if not result or not all(isinstance(t, Task) for t in result):
        raise validation.fail(owner, "tasks", "a non-empty sequence of Task", tasks)
    names = [t.name for t in result]
    if len(set(names)) != len(names):
        raise validation.fail(owner, "tasks", "uniquely named", names)
    return result
