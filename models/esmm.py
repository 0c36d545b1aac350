"""Entire space multi-task model, ESMM (Ma et al., SIGIR 2018), for a task conditional on another."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from mtl_bench.models.base import MultiTaskModel
from mtl_bench.spec import FeatureSpec, Task
from mtl_bench.validation import fail


@keras.saving.register_keras_serializable(package="mtl_bench")
class ESMM(MultiTaskModel):
    """Input block (shared embeddings) -> one :class:`Tower` per task; the conditional task's output is a product.

    For an impression, the ``ctr_task`` tower gives ``pCTR = P(click)`` and the
    ``ctcvr_task`` tower ``pCVR = P(conversion | click)``; the model's output for
    ``ctcvr_task`` is ``pCTCVR = pCTR * pCVR``, trained against the click-and-conversion
    label on every impression (the entire space), so the CVR tower is never fitted on
    the clicked rows alone (ESMM's remedy for sample-selection bias and sparse
    conversions). ``pCTCVR <= pCTR`` by construction. Any other task has its own
    tower. In recsim, ``conversion`` is already the click-and-conversion label.

    Shared variables: the embeddings (``"embedding"``) and the ``ctr_task`` tower
    (``"dense"``), which reaches both outputs. Task variables: every other tower.
    :meth:`gates` returns ``{}``; :meth:`conversion_rate` returns ``pCVR``.

    Args:
        features: The feature spec.
        tasks: The tasks, one tower each; ``ctr_task`` and ``ctcvr_task`` binary.
        ctr_task: The task the conditional one depends on (the click); default: the ``depends_on`` of
            the task that declares one.
        ctcvr_task: The conditional task, labelled on every impression (click and conversion); default:
            the task that declares ``depends_on`` (recsim's ``conversion``; a table's ``depends_on`` key).
        tower_units: Hidden width of each tower, in ``[0, 4096]``.
        embedding_dim: Width of each categorical embedding.
        dropout: Dropout rate in the towers, in ``[0, 1)``.
        **kwargs: Base model arguments (``name``, ...).
    """

    def __init__(
        self,
        features: FeatureSpec,
        tasks: Sequence[Task],
        *,
        ctr_task: str = "",
        ctcvr_task: str = "",
        tower_units: int = 8,
        embedding_dim: int = 8,
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            features, tasks, embedding_dim=embedding_dim, tower_units=tower_units, dropout=dropout, **kwargs
        )
        owner = type(self).__name__
        binary = [t.name for t in self.tasks if t.kind == "binary"]
        declared = {t.name: t.depends_on for t in self.tasks if t.depends_on}
        if not ctcvr_task and len(declared) == 1:
            ctcvr_task = next(iter(declared))
        if not ctr_task:
            ctr_task = declared.get(ctcvr_task) or (next(iter(declared.values())) if len(declared) == 1 else "")
        if not ctcvr_task or not ctr_task:
            raise fail(owner, "ctcvr_task", "set (with ctr_task), or declared by exactly one task's depends_on "
                       f"(e.g. conversion depends on click); declared: {declared}", ctcvr_task)
        for name, value in (("ctr_task", ctr_task), ("ctcvr_task", ctcvr_task)):
            if value not in binary:
                raise fail(owner, name, f"the name of a binary task, one of {binary}", value)
        if ctr_task == ctcvr_task:
            raise fail(owner, "ctcvr_task", f"a task other than ctr_task={ctr_task!r}", ctcvr_task)
        self.ctr_task, self.ctcvr_task = ctr_task, ctcvr_task
        self._ctr_index = self.task_names.index(ctr_task)

    def _build_body(self, input_dim: int) -> None:
        self._build_towers(input_dim)

    def _forward(self, inputs: dict[str, Any], training: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        hidden = self.input_block(inputs)
        outputs = self._apply_towers([hidden] * len(self.tasks), training)
        outputs[self.ctcvr_task] = outputs[self.ctr_task] * outputs[self.ctcvr_task]
        return outputs, {}

    def conversion_rate(self, inputs: dict[str, Any]) -> Any:
        """``pCVR = P(conversion | click)`` on ``inputs`` (inference mode): the CVR tower alone."""
        self._ensure_built()
        tower = self.towers[self.task_names.index(self.ctcvr_task)]
        return tower(self.input_block(inputs), training=False)

    def _layer_owners(self) -> list[tuple[keras.layers.Layer, str | None, str]]:
        return []

    def _owners(self) -> list[tuple[keras.layers.Layer, str | None, str]]:
        owners = super()._owners()  # builds the model, towers included
        ctr_tower = self.towers[self._ctr_index]
        return [(layer, None if layer is ctr_tower else owner, group) for layer, owner, group in owners]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"ctr_task": self.ctr_task, "ctcvr_task": self.ctcvr_task})
        return config
