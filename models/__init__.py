"""Keras architectures (installed as ``mtl_bench.models``)."""
