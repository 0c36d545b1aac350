"""Experiments: the grid (mtl-bench run), cohort, sparse-dense, policy and calibration."""
