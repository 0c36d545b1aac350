"""One validator for arguments and settings, in the manner of scikit-learn's parameter constraints.

Every check raises :class:`~mtl_bench.errors.UserInputError` (a ``ValueError``, as Keras layers raise) with
one message format::

    <owner>: <name> must be <constraint>. Received: <name>=<value>

so a layer argument, a remedy parameter and a configuration key fail alike, and the CLI prints the line as is.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

import numpy as np

from mtl_bench.errors import UserInputError


def fail(owner: str, name: str, constraint: str, value: Any) -> UserInputError:
    """The error for ``value`` of ``name`` breaking ``constraint`` (returned, for ``raise fail(...)``)."""
    prefix = f"{owner}: " if owner else ""
    return UserInputError(f"{prefix}{name} must be {constraint}. Received: {name}={value!r}")


def _is_int(value: Any) -> bool:
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, np.integer))


def _is_number(value: Any) -> bool:
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, float, np.integer, np.floating))


def check_int(owner: str, name: str, value: Any, low: int = 0, high: int | None = None) -> int:
    """``value`` as an ``int`` in ``[low, high]`` (``high`` None: no upper bound)."""
    if not _is_int(value) or value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise fail(owner, name, f"an integer {bound}", value)
    return int(value)


def check_number(
    owner: str,
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite ``float`` in the interval from ``low`` to ``high`` (closed unless ``*_open``)."""
    ok = _is_number(value) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        if low == -math.inf and high == math.inf:
            constraint = "a finite number"
        elif high == math.inf:
            constraint = f"a finite number {'>' if low_open else '>='} {low:g}"
        elif low == -math.inf:
            constraint = f"a finite number {'<' if high_open else '<='} {high:g}"
        else:
            constraint = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise fail(owner, name, constraint, value)
    return float(value)


def check_bool(owner: str, name: str, value: Any) -> bool:
    """``value`` when it is a ``bool`` (a numpy bool too; 0 and 1 are not)."""
    if not isinstance(value, (bool, np.bool_)):
        raise fail(owner, name, "a bool", value)
    return bool(value)


def check_choice(owner: str, name: str, value: Any, choices: Collection[Any]) -> Any:
    """``value`` when it is one of ``choices``."""
    if value not in choices:
        raise fail(owner, name, f"one of {list(choices)}", value)
    return value
