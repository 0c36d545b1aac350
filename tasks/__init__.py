"""Task suites (installed as ``mtl_bench.tasks``).

Every suite is a factory ``load(*, seed: int = 0, **params) -> SuiteData`` with
keyword-only, typed parameters that all have defaults (so the engine can check
parameter names with :func:`inspect.signature`):

* ``synthetic``: the MMoE paper's controlled-correlation regression tasks
  (:mod:`mtl_bench.tasks.synthetic`).
* ``census-income``: UCI Census-Income (KDD), the MMoE paper's two task groups
  (:mod:`mtl_bench.tasks.census_income`).
* ``table``: a user's CSV/Parquet file described by a TOML file
  (:mod:`mtl_bench.tasks.table`).
* ``planted``: two tasks with a planted cause of negative transfer (none,
  conflict, forgetting or both), to check the verdict (:mod:`mtl_bench.tasks.planted`).
* ``recsim``: a multi-behaviour recommender simulator with days, cohorts,
  scenarios and a logging policy (:mod:`mtl_bench.tasks.recsim`).
* ``movielens``: MovieLens-100K ratings with users, items, weeks and cohorts
  (:mod:`mtl_bench.tasks.movielens`).
"""

from __future__ import annotations

from collections.abc import Callable

from mtl_bench.spec import SuiteData
from mtl_bench.tasks import census_income, movielens, planted, recsim, synthetic, table

SUITES: dict[str, Callable[..., SuiteData]] = {
    "synthetic": synthetic.load,
    "census-income": census_income.load,
    "table": table.load,
    "recsim": recsim.load,
    "planted": planted.load,
    "movielens": movielens.load,
}

__all__ = ["SUITES", "census_income", "movielens", "planted", "recsim", "synthetic", "table"]
