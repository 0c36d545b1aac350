"""The versions of Python and of the packages that determine a run's numbers.

The manifest records them; a Dask cluster's workers must match the driver's
(:mod:`mtl_bench.engine.cluster`), or the same seeds would not give the same numbers.
"""

from __future__ import annotations

import functools
import hashlib
import platform
from pathlib import Path


def versions() -> dict[str, str]:
    """The versions of Python and of the packages that determine the numbers."""
    import keras
    import numpy as np
    import optuna
    import pandas as pd
    import sklearn
    import tensorflow as tf

    import mtl_bench

    return {
        "mtl_bench": mtl_bench.__version__,
        "mtl_bench_source": source_digest(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
        "optuna": optuna.__version__,
    }


@functools.cache
def source_digest() -> str:
    """The first 16 hex digits of the SHA-256 of mtl-bench's Python sources (``mtl_bench``, its models and tasks).

    Two checkouts of the same version number can hold different code; this tells them apart.
    """
    import mtl_bench
    import mtl_bench.models
    import mtl_bench.tasks

    digest = hashlib.sha256()
    for package in (mtl_bench, mtl_bench.models, mtl_bench.tasks):
        root = Path(next(iter(package.__path__)))
        for path in sorted(root.rglob("*.py")):
            if package is mtl_bench and path.relative_to(root).parts[0] in ("models", "tasks"):
                continue  # installed as their own packages above
            digest.update(f"{package.__name__}/{path.relative_to(root).as_posix()}\n".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
