"""The versions of Python and of the packages that determine a run's numbers.

The manifest records them; a Dask cluster's workers must match the driver's
(:mod:`mtl_bench.engine.cluster`), or the same seeds would not give the same numbers.
"""

from __future__ import annotations

import platform


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
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
        "optuna": optuna.__version__,
    }
