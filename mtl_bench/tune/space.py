"""Search spaces: one function per architecture, in Optuna's define-by-run manner, and TOML overrides.

Each space function takes the suite's tasks and returns ``{name: Param}``; names are ``learning_rate``,
``batch_size``, the architecture's keyword-only constructor arguments and, opt-in, ``loss_weight.<task>``.
A TOML file overrides them (see :func:`load_space_overrides`)::

    [common]                      # every arm
    learning_rate = {low = 1e-3, high = 3e-2, log = true}
    batch_size = [128, 256]       # a list is a categorical choice
    dropout = 0.0                 # a scalar is fixed (not searched)
    "loss_weight.y1" = {low = 0.25, high = 4.0, log = true}
    [mmoe]
    num_experts = {low = 2, high = 8}
"""

from __future__ import annotations

import dataclasses
import inspect
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna

from mtl_bench.errors import UserInputError
from mtl_bench.models import ARCHITECTURES
from mtl_bench.schema import SINGLE_ARCH
from mtl_bench.spec import Task

TRAINING_PARAMS = ("learning_rate", "batch_size")
LOSS_WEIGHT = "loss_weight."
COMMON = "common"  # the override table that applies to every architecture


@dataclasses.dataclass(frozen=True)
class Param:
    """One searched (or fixed) hyper-parameter.

    Attributes:
        low: Lower bound of a range (int or float).
        high: Upper bound of a range.
        log: Sample the range on a log scale.
        step: Step of an int range.
        choices: A categorical choice instead of a range.
        value: A fixed value (not searched) when ``fixed`` is true.
        fixed: The parameter is ``value``, not searched.
    """

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: int = 1
    choices: tuple[Any, ...] = ()
    value: Any = None
    fixed: bool = False

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        """The trial's value of this parameter."""
        if self.fixed:
            return self.value
        if self.choices:
            return trial.suggest_categorical(name, list(self.choices))
        if isinstance(self.low, int) and isinstance(self.high, int):
            return trial.suggest_int(name, self.low, self.high, log=self.log, step=1 if self.log else self.step)
        return trial.suggest_float(name, float(self.low), float(self.high), log=self.log)


def _range(low: float, high: float, log: bool = False, step: int = 1) -> Param:
    return Param(low=low, high=high, log=log, step=step)


def _choice(*choices: Any) -> Param:
    return Param(choices=tuple(choices))


def _training_space() -> dict[str, Param]:
    """Optimiser, batch, input and tower parameters shared by every architecture."""
    return {
        "learning_rate": _range(1e-3, 5e-2, log=True),
        "batch_size": _choice(64, 128, 256, 512),
        "embedding_dim": _choice(4, 8, 16),
        "tower_units": _choice(0, 8, 16, 32),
        "dropout": _range(0.0, 0.3),
    }


def single_task_space(tasks: Sequence[Task]) -> dict[str, Param]:
    """Single-task models (one per task): a bottom layer and a tower."""
    return {**_training_space(), "bottom_units": _choice(8, 16, 32, 64)}


def shared_bottom_space(tasks: Sequence[Task]) -> dict[str, Param]:
    """Shared-bottom: the shared layer's width and the towers."""
    return {**_training_space(), "bottom_units": _choice(8, 16, 32, 64, 128)}


def mmoe_space(tasks: Sequence[Task]) -> dict[str, Param]:
    """MMoE (and OMoE): expert count and width."""
    return {**_training_space(), "num_experts": _range(2, 8), "expert_units": _choice(8, 16, 32)}


def ple_space(tasks: Sequence[Task]) -> dict[str, Param]:
    """PLE: levels, task-specific and shared experts, expert width."""
    return {
        **_training_space(),
        "num_levels": _range(1, 3),
        "num_task_experts": _range(1, 3),
        "num_shared_experts": _range(1, 3),
        "expert_units": _choice(8, 16, 32),
    }


def loss_weight_space(tasks: Sequence[Task]) -> dict[str, Param]:
    """Loss weights of every task but the first (whose weight 1 fixes the scale).

    Opt-in: name a ``loss_weight.<task>`` in the ``[common]`` table of a space file.
    The best trial's weights become ``task_weights`` of the written ``config.toml``,
    the tuned static-weight baseline (remedy ``none``) of ``mtl-bench run``.
    """
    return {f"{LOSS_WEIGHT}{t.name}": _range(0.25, 4.0, log=True) for t in tasks[1:]}


SEARCH_SPACES: dict[str, Callable[[Sequence[Task]], dict[str, Param]]] = {
    SINGLE_ARCH: single_task_space,
    "shared_bottom": shared_bottom_space,
    "mmoe": mmoe_space,
    "omoe": mmoe_space,
    "ple": ple_space,
}


def _param_from_toml(where: str, value: Any) -> Param:
    if isinstance(value, list):
        if not value:
            raise UserInputError(f"{where}: a choice list must not be empty")
        return Param(choices=tuple(value))
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"low", "high", "log", "step"})
        if unknown or "low" not in value or "high" not in value:
            raise UserInputError(f"{where}: a range is {{low = .., high = .., log = false, step = 1}}. Received: {value!r}")
        low, high = value["low"], value["high"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low > high:
            raise UserInputError(f"{where}: low and high must be numbers with low <= high. Received: {value!r}")
        if value.get("log") and low <= 0:
            raise UserInputError(f"{where}: a log range needs low > 0. Received: {value!r}")
        return Param(low=low, high=high, log=bool(value.get("log", False)), step=int(value.get("step", 1)))
    return Param(value=value, fixed=True)


def load_space_overrides(path: str | Path) -> dict[str, dict[str, Param]]:
    """Reads a space file: ``{"common" | arch: {name: Param}}`` (see the module docstring).

    Raises:
        UserInputError: The file is missing, is not TOML, or holds an unknown table or a malformed value.
    """
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"search space file not found: {path}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise UserInputError(f"search space file {path} is not valid TOML: {err}") from None
    valid = [COMMON, *SEARCH_SPACES]
    out: dict[str, dict[str, Param]] = {}
    for section, table in data.items():
        if section not in valid or not isinstance(table, dict):
            raise UserInputError(f"{path}: unknown table [{section}]; valid tables: {valid}")
        out[section] = {name: _param_from_toml(f"{path} [{section}] {name}", v) for name, v in table.items()}
    return out


def search_space(
    arch: str, tasks: Sequence[Task], overrides: dict[str, dict[str, Param]] | None = None
) -> dict[str, Param]:
    """The architecture's space with the ``common`` and per-arch overrides applied, names checked.

    Raises:
        UserInputError: No space for ``arch``, or an override names a parameter ``arch`` does not have.
    """
    if arch not in SEARCH_SPACES:
        raise UserInputError(f"no search space for architecture {arch!r}; valid: {sorted(SEARCH_SPACES)}")
    space = SEARCH_SPACES[arch](tasks)
    overrides = overrides or {}
    ctor = inspect.signature(ARCHITECTURES[arch].__init__).parameters
    weights = loss_weight_space(tasks) if arch != SINGLE_ARCH else {}
    valid = {*TRAINING_PARAMS, *(n for n, p in ctor.items() if p.kind is p.KEYWORD_ONLY), *weights}
    for section in (COMMON, arch):
        for name, param in overrides.get(section, {}).items():
            if name.startswith(LOSS_WEIGHT) and arch == SINGLE_ARCH:
                continue  # one task per model: a loss weight means nothing
            if name not in valid:
                raise UserInputError(
                    f"search space [{section}]: {arch} has no parameter {name!r}; valid: {sorted(valid)}"
                )
            space[name] = param
    return space


def split_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, float]]:
    """Trial parameters -> (training settings, constructor arguments, loss weights by task)."""
    training = {k: v for k, v in params.items() if k in TRAINING_PARAMS}
    weights = {k[len(LOSS_WEIGHT):]: float(v) for k, v in params.items() if k.startswith(LOSS_WEIGHT)}
    ctor = {k: v for k, v in params.items() if k not in training and not k.startswith(LOSS_WEIGHT)}
    return training, ctor, weights
