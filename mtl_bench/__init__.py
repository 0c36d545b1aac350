"""mtl-bench: does a multi-task model suffer negative transfer, and is it gradient conflict or forgetting?

Importing the package imports no TensorFlow: the engine, models and tasks load it when they are imported.
"""

import os

# TensorFlow's C++ start-up chatter hides the benchmark's own output; users can still override it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN reorders float sums (results then differ across CPUs) and announces itself before logging can be silenced.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from mtl_bench.errors import UserInputError
from mtl_bench.spec import FeatureSpec, Split, SuiteData, Task

__version__ = "0.1.0"

__all__ = ["FeatureSpec", "Split", "SuiteData", "Task", "UserInputError", "__version__"]
