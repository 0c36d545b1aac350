"""What the probe and the retention measures record, and the catalog that defines every measure once.

``probe`` (the :class:`~mtl_bench.measures.probe.ConflictProbe` callback), ``gradients`` (its arithmetic on
Gram matrices, numpy), ``lookahead`` (its k-step damage counterfactual), ``retention`` (forgetting in
sequential training), ``divergence`` (the measured KL), ``catalog`` (every measure, once).
"""
