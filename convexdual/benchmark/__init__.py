"""``convexdual benchmark``: a standard instance suite of program (4), every available solver under
one budget, time-to-accuracy curves, Dolan-Moré performance profiles and a summary table.

* :mod:`~convexdual.benchmark.instances`: the named instances and suites (offline real data);
* :mod:`~convexdual.benchmark.reference`: reference optima, solved exactly once, certified, stored as JSON;
* :mod:`~convexdual.benchmark.cells`: one solver on one instance (``cd.solve`` or a peer), memory sampling;
* :mod:`~convexdual.benchmark.peers`: pyscnn (augmented Lagrangian, R-FISTA) on the same problem;
* :mod:`~convexdual.benchmark.profiles`: time to accuracy, performance ratios and profiles;
* :mod:`~convexdual.benchmark.runner`: :func:`run_benchmark` (resumable, isolated cells);
* :mod:`~convexdual.benchmark.report`: JSON, PNG (through :mod:`convexdual.plotting`), summary.md.

Nothing heavy is imported here.
"""

from __future__ import annotations

import importlib as _importlib

__all__ = ["run_benchmark", "SUITES", "INSTANCES", "build_instance", "performance_profile", "time_to_accuracy"]

_LAZY = {"run_benchmark": "convexdual.benchmark.runner", "SUITES": "convexdual.benchmark.instances",
         "INSTANCES": "convexdual.benchmark.instances", "build_instance": "convexdual.benchmark.instances",
         "performance_profile": "convexdual.benchmark.profiles", "time_to_accuracy": "convexdual.benchmark.profiles"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(_importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'convexdual.benchmark' has no attribute {name!r}")
