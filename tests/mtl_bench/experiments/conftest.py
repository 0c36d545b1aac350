"""A fake executor the experiments' tests share."""

import pytest

from mtl_bench.engine.executor import WORKER_DIED


class WorkersKeepDying:
    """An executor whose every worker dies: each item gets the ``failed`` result, as after three broken pools."""

    def prepare(self) -> None:
        pass

    def run(self, fn, items, on_result, *, initializer=None, failed=None):
        for item in items:
            on_result(item, failed(item, WORKER_DIED))


@pytest.fixture
def workers_keep_dying() -> WorkersKeepDying:
    return WorkersKeepDying()
