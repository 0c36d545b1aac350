"""The sparse-dense sweep's text claims a trend only from replicated points that support it."""

from __future__ import annotations

import pandas as pd

from mtl_bench.experiments import sparse_dense


def _table(points: int, seeds: int) -> pd.DataFrame:
    share = [0.4 + 0.5 * k / (points - 1) for k in range(points)]
    return pd.DataFrame({"arch": "mmoe", "embedding_dim": range(points), "dense_share": share,
                         "forgetting": [0.01 * k for k in range(points)], "n_seeds": seeds})


def test_one_seed_claims_no_trend():
    text = sparse_dense.describe(_table(4, 1))
    assert "- mmoe: one seed: no trend can be claimed; run --seeds 3 (4 points, dense share 0.40–0.90)." in text
    assert "grows" not in text and "shrinks" not in text


def test_four_points_cannot_reach_significance_even_in_perfect_order():
    # Exact permutation p of a perfect rank order of 4 points: 2 of 4! = 24 orders reach |rho| = 1.
    text = sparse_dense.describe(_table(4, 3))
    assert "no trend can be claimed (Spearman +1.00, p = 0.083, over 4 points of 3 seeds each" in text
    assert "grows" not in text.split("|")[0]


def test_enough_replicated_points_in_order_state_the_trend():
    # 6 points in perfect order: p = 2 / 6! = 0.0028.
    text = sparse_dense.describe(_table(6, 3))
    assert "- mmoe: forgetting of the held-out cohort grows with the dense share (Spearman +1.00, p = 0.0028" in text
