"""Keras architectures (installed as ``mtl_bench.models``).

Every architecture is a :class:`MultiTaskModel` built as
``ARCHITECTURES[name](features=spec, tasks=tasks, **hyper_params)``.
"""

from mtl_bench.models.base import VARIABLE_GROUPS, MultiTaskModel
from mtl_bench.models.cgc import CGC
from mtl_bench.models.esmm import ESMM
from mtl_bench.models.experts import Experts
from mtl_bench.models.gate import Gate, mix
from mtl_bench.models.input_block import InputBlock
from mtl_bench.models.mmoe import MMoE, OMoE
from mtl_bench.models.ple import PLE
from mtl_bench.models.shared_bottom import SharedBottom, matched_bottom_units
from mtl_bench.models.single_task import SingleTask
from mtl_bench.models.tower import Tower
from mtl_bench.schema import SINGLE_ARCH

ARCHITECTURES: dict[str, type[MultiTaskModel]] = {
    SINGLE_ARCH: SingleTask,
    "shared_bottom": SharedBottom,
    "mmoe": MMoE,
    "omoe": OMoE,
    "ple": PLE,
    "esmm": ESMM,
}

__all__ = [
    "ARCHITECTURES",
    "CGC",
    "ESMM",
    "Experts",
    "Gate",
    "InputBlock",
    "MMoE",
    "MultiTaskModel",
    "OMoE",
    "PLE",
    "SharedBottom",
    "SingleTask",
    "Tower",
    "VARIABLE_GROUPS",
    "matched_bottom_units",
    "mix",
]
