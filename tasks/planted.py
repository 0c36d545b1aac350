"""Planted mechanisms: two tasks whose negative transfer has a known cause.

The verdict of ``mtl-bench report`` must be checked on data where the truth
is known. This suite plants one mechanism at a time (``mechanism``), on its
own model (:data:`ARCH_PARAMS`: a shared linear bottleneck of
:data:`BOTTOM_UNITS` unit with linear heads; one unit represents one direction
of the input):

* ``identical``: the same task twice (same function, independent noise).
* ``none``: related tasks (``task2 = RELATED · u1ᵀx``: the same direction,
  another head), every label present.
* ``delayed``: ``none`` with ``task1``'s labels delayed (below): the control
  of the forgetting reading, a stretch without labels and nothing to
  overwrite what ``task1`` needs.
* ``conflict``: ``task2 = u2ᵀx`` with ``u2 ⊥ u1``: two directions, one unit.
  The shared weights sit at a compromise, where the two tasks' gradients on
  them point in opposite directions, at every step.
* ``forgetting``: ``task1``'s labels are *delayed*: the most recent part of
  the log (the last ``delay`` share of the training periods) has no ``task1``
  labels yet, as conversions attributed days after the click. Training reads
  the log in time order (the split's ``stream_block`` meta), so every epoch
  ends with a stretch where only ``task2`` trains; in that stretch ``task2``
  reads ``u2`` (a short-lived behaviour, e.g. a holiday), elsewhere and now
  (validation, test) ``RELATED · u1`` as in ``none``. The stretch turns the
  unit away from ``u1`` and nothing pulls it back: ``task1`` is forgotten.
  On the rows the probe reads (now) the tasks want the same representation,
  so their gradients do not oppose.
* ``both``: ``task2 = 0.8 u1ᵀx + 0.6 u2ᵀx`` (a partial conflict, cos 0.8 with
  ``task1``'s direction) and ``task1``'s labels delayed.

Generator (``d`` = ``dim`` inputs; ``np.random.default_rng([seed, m])``
streams with ``m`` the mechanism's index, one per component, so mechanisms
never share a data draw):

1. Orthonormal ``u1, u2`` in ``R^d`` (Q of a Gaussian ``d × 2`` matrix).
2. ``x ~ N(0, I_d)``.
3. ``task1 = u1ᵀx + noise_std · ε1``.
4. ``task2`` as above ``+ task2_noise_std · ε2`` (``identical``: ``noise_std``).
5. Training rows are cut into ``periods`` equal periods in time order; with
   ``forgetting``, ``both`` and ``delayed`` the ``task1`` labels of the last
   ``floor(delay · periods + 0.5)`` periods are missing (NaN), at least one
   and fewer than all. Validation and test rows are "now", after the last
   period, and have every label.

A single-task model of ``task1`` sees the same rows and the same missing
labels, so negative transfer measures what ``task2`` does to ``task1``, not
how many labels ``task1`` has.

Features: numeric ``x0 .. x{d-1}``. Tasks ``task1``, ``task2``: regression, MSE.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mtl_bench.errors import UserInputError
from mtl_bench.spec import SuiteData, Task
from mtl_bench.tasks import _common
from mtl_bench.tasks._common import MAX_DIM, MAX_ROWS
from mtl_bench.validation import check_choice, check_int, check_number, fail

NAME = "planted"
MECHANISMS: tuple[str, ...] = ("identical", "none", "conflict", "forgetting", "both", "delayed")
# What each mechanism plants: (task2 reads u2 instead of u1, task1 labels delayed).
_PLANTS: dict[str, tuple[bool, bool]] = {
    "identical": (False, False),
    "none": (False, False),
    "conflict": (True, False),
    "forgetting": (False, True),
    "both": (True, True),
    "delayed": (False, True),
}
# The model this suite is calibrated with: a shared linear bottleneck of one unit and linear heads.
# One linear unit represents one direction of the input: two tasks on different directions must
# share it (a flat valley: at any compromise their gradients on it point in opposite directions).
BOTTOM_UNITS = 1
RELATED = -0.5  # task2 = RELATED · u1ᵀx in the related worlds: the same representation, another head
PARTIAL = (0.8, 0.6)  # both: task2 = 0.8 u1ᵀx + 0.6 u2ᵀx, a direction at cos 0.8 to task1's: partial conflict
ARCH = "shared_bottom"
ARCH_PARAMS: dict[str, dict[str, Any]] = {
    ARCH: {"bottom_units": BOTTOM_UNITS, "tower_units": 0, "bottom_activation": "linear"}
}
DEFAULTS: dict[str, Any] = {
    "mechanism": "none",
    "dim": 8,
    "noise_std": 0.3,
    "task2_noise_std": 0.3,
    "delay": 0.5,
    "periods": 8,
    "train_rows": 8192,
    "validation_rows": 4096,
    "test_rows": 4096,
}


def load(
    *,
    seed: int = 0,
    mechanism: str = "none",
    dim: int = 8,
    noise_std: float = 0.3,
    task2_noise_std: float = 0.3,
    delay: float = 0.5,
    periods: int = 8,
    train_rows: int = 8192,
    validation_rows: int = 4096,
    test_rows: int = 4096,
) -> SuiteData:
    """Generates one planted mechanism (see the module docstring for the formulas).

    Args:
        seed: Seed of every draw; each mechanism draws from its own streams.
        mechanism: One of :data:`MECHANISMS`.
        dim: Input dimension ``d``, in ``[2, 4096]``.
        noise_std: Label noise of ``task1``.
        task2_noise_std: Label noise of ``task2`` (``identical`` uses ``noise_std``).
        delay: Share of the training periods, the most recent ones, without
            ``task1`` labels (``forgetting``, ``both``), in ``[0, 1)``.
        periods: Number of training periods the log is read in, in time order, in ``[2, 4096]``.
        train_rows, validation_rows, test_rows: Rows of each split, in ``[2, 10 000 000]``.

    Raises:
        UserInputError: For any invalid parameter.
    """
    seed = check_int(NAME, "seed", seed, 0)
    check_choice(NAME, "mechanism", mechanism, MECHANISMS)
    dim = check_int(NAME, "dim", dim, 2, MAX_DIM)
    periods = check_int(NAME, "periods", periods, 2, MAX_DIM)
    rows = {n: check_int(NAME, n, v, 2, MAX_ROWS) for n, v in
            (("train_rows", train_rows), ("validation_rows", validation_rows), ("test_rows", test_rows))}
    noise_std = check_number(NAME, "noise_std", noise_std, 0.0)
    task2_noise_std = check_number(NAME, "task2_noise_std", task2_noise_std, 0.0)
    delay = check_number(NAME, "delay", delay, 0.0, 1.0, high_open=True)
    if rows["train_rows"] < periods:
        raise fail(NAME, "train_rows", f"an integer >= periods ({periods})", rows["train_rows"])

    conflict, delayed = _PLANTS[mechanism]
    delayed_periods = int(np.floor(delay * periods + 0.5))  # round half up, the same for every periods
    if delayed and not 1 <= delayed_periods < periods:
        raise UserInputError(
            f"delay · periods must round to between 1 and periods - 1 delayed periods, so that task1 has labels "
            f"and misses some. Received: delay={delay!r}, periods={periods!r} ({delayed_periods} of {periods})"
        )
    index = MECHANISMS.index(mechanism)
    rng_vectors, rng_inputs, rng_noise = np.random.default_rng([seed, index]).spawn(3)
    q, r = np.linalg.qr(rng_vectors.standard_normal((dim, 2)))
    u = (q * np.sign(np.diag(r))[None, :]).T  # (2, d), orthonormal rows
    n = sum(rows.values())
    n_train, n_val = rows["train_rows"], rows["validation_rows"]
    x = rng_inputs.standard_normal((n, dim))
    eps = rng_noise.standard_normal((n, 2))
    z = x @ u.T  # (n, 2): u_kᵀx
    period = np.full(n, periods, np.int64)  # validation and test rows: "now", after the last period
    period[:n_train] = np.minimum(np.arange(n_train) * periods // n_train, periods - 1)
    late = (period >= periods - delayed_periods) & (period < periods)  # the delayed training periods
    y1 = z[:, 0] + noise_std * eps[:, 0]
    if mechanism == "identical":
        y2 = z[:, 0] + noise_std * eps[:, 1]
    elif mechanism == "conflict":
        y2 = z[:, 1] + task2_noise_std * eps[:, 1]
    elif mechanism == "both":
        y2 = PARTIAL[0] * z[:, 0] + PARTIAL[1] * z[:, 1] + task2_noise_std * eps[:, 1]
    elif mechanism == "forgetting":
        y2 = np.where(late, z[:, 1], RELATED * z[:, 0]) + task2_noise_std * eps[:, 1]
    else:
        y2 = RELATED * z[:, 0] + task2_noise_std * eps[:, 1]
    if delayed:
        y1[late] = np.nan
    splits = (np.arange(0, n_train), np.arange(n_train, n_train + n_val), np.arange(n_train + n_val, n))
    meta = {"stream_block": period.astype(np.int32)}
    tasks = (Task(name="task1", label="task1", kind="regression"), Task(name="task2", label="task2", kind="regression"))
    params = {"dim": dim, "noise_std": noise_std, "task2_noise_std": task2_noise_std, "delay": delay,
              "periods": periods, **rows}
    variant: dict[str, Any] = {"mechanism": mechanism}
    variant.update({k: v for k, v in params.items() if v != DEFAULTS[k]})
    return _common.assemble(
        name=NAME,
        variant=variant,
        tasks=tasks,
        labels={"task1": y1, "task2": y2},
        splits=splits,
        numeric={f"x{i}": x[:, i] for i in range(dim)},
        meta=meta,
    )
