"""The result vocabulary: names every result file and every module agree on (no TensorFlow).

A value here is written into CSVs and read back by the analysis, so it is defined once.
"""

from __future__ import annotations

# Regimes (the ``regime`` column; keys of ``mtl_bench.engine.regimes.REGIMES``).
SINGLE, JOINT, SEQUENTIAL, DAILY = "single", "joint", "sequential", "daily"
REGIME_NAMES: tuple[str, ...] = (SINGLE, JOINT, SEQUENTIAL, DAILY)
SINGLE_ARCH = "single_task"  # the one-tower architecture of single-task baselines

# Remedies (the ``remedy`` column).
BASELINE = "none"  # the static-weight sum: the baseline of every comparison
EQUAL = "equal"  # the equal-weight sum, the other baseline

# Splits. Every reported number and the verdict are read on validation (outcome rows); test is printed only.
SPLIT = "validation"
TEST_SPLIT = "test"

# Pseudo-task and pseudo-group names (not valid task names, so they never collide with one).
ALL = "all"  # every task / every shared weight / every variant pooled
MEAN_TASK = "(mean)"
SHARED_WEIGHTS = "(shared weights)"

# The ``order`` column.
NO_ORDER = "-"
ORDER_SEPARATOR = ">"

# The clip of every predicted probability before a log: log-loss, KL measure and KL loss (Keras clips alike).
PROB_EPS = 1e-7

DELTA_M = "delta_m"  # the multi-task performance change over tasks (Maninis et al. 2019), percent
CELL_COLUMNS = ["arch", "regime", "remedy", "order", "seed"]
