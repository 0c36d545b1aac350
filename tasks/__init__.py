"""Task suites (installed as ``mtl_bench.tasks``)."""
