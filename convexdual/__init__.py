"""convexdual: two-layer convolutional ReLU denoisers trained through their exact convex dual.

Quick start::

    import convexdual as cd
    problem = cd.build_problem(noisy, clean, kernel_size=3, beta=2.0, num_patterns=100, seed=0)
    result = cd.solve(problem, solver="clarabel")
    result.status, result.objective, result.certificate.relative_gap
    denoised = result.network.predict(noisy)

``import convexdual`` imports no solver backend, no MOSEK and no CUDA: solvers are
loaded by name when ``solve`` needs them.
"""

import importlib as _importlib
from typing import TYPE_CHECKING

# name -> module: imported on first use (PEP 562), so `import convexdual` (and `convexdual --help`)
# loads neither torch nor a solver backend until something needs them
_EXPORTS = {
    "available_solvers": "convexdual._registry",
    "solve": "convexdual.api",
    "Certificate": "convexdual.certificate", "certify_solution": "convexdual.certificate",
    "NetworkCertificate": "convexdual.certify_net", "certify": "convexdual.certify_net",
    "ConvexDualError": "convexdual.errors", "DataFormatError": "convexdual.errors",
    "SolverFailedError": "convexdual.errors", "SolverUnavailableError": "convexdual.errors",
    "CheckpointError": "convexdual.errors",
    "AbsoluteLoss": "convexdual.losses", "HuberLoss": "convexdual.losses", "Loss": "convexdual.losses",
    "SquaredLoss": "convexdual.losses", "get_loss": "convexdual.losses",
    "TwoLayerConvNet": "convexdual.nets", "primal_objective": "convexdual.nets",
    "SignPatterns": "convexdual.patterns", "enumerate_patterns": "convexdual.patterns",
    "patterns_from_gates": "convexdual.patterns", "sample_patterns": "convexdual.patterns",
    "DualProblem": "convexdual.problem", "beta_max": "convexdual.problem", "build_problem": "convexdual.problem",
    "recover_filters": "convexdual.recover", "recover_network": "convexdual.recover",
    "SolveResult": "convexdual.result", "Status": "convexdual.result", "Timings": "convexdual.result",
    "MemoryBudgetError": "convexdual.engine", "PatternEngine": "convexdual.engine",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(_importlib.import_module(module), name)
        globals()[name] = value
        return value
    try:  # submodules as attributes (cd.patterns, cd.api, ...)
        return _importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module 'convexdual' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # for type checkers and IDEs
    from convexdual._registry import available_solvers  # noqa: F401
    from convexdual.api import solve  # noqa: F401
    from convexdual.certificate import Certificate, certify_solution  # noqa: F401
    from convexdual.certify_net import NetworkCertificate, certify  # noqa: F401
    from convexdual.engine import MemoryBudgetError, PatternEngine  # noqa: F401
    from convexdual.errors import (CheckpointError, ConvexDualError, DataFormatError,  # noqa: F401
                                   SolverFailedError, SolverUnavailableError)
    from convexdual.losses import AbsoluteLoss, HuberLoss, Loss, SquaredLoss, get_loss  # noqa: F401
    from convexdual.nets import TwoLayerConvNet, primal_objective  # noqa: F401
    from convexdual.patterns import SignPatterns, enumerate_patterns, patterns_from_gates, sample_patterns  # noqa: F401
    from convexdual.problem import DualProblem, beta_max, build_problem  # noqa: F401
    from convexdual.recover import recover_filters, recover_network  # noqa: F401
    from convexdual.result import SolveResult, Status, Timings  # noqa: F401

__version__ = "0.1.0"

__all__ = [
    "build_problem", "solve", "DualProblem", "beta_max",
    "sample_patterns", "enumerate_patterns", "patterns_from_gates", "SignPatterns",
    "SolveResult", "Status", "Timings", "Certificate", "certify_solution",
    "certify", "NetworkCertificate",
    "TwoLayerConvNet", "primal_objective", "recover_filters", "recover_network",
    "Loss", "SquaredLoss", "AbsoluteLoss", "HuberLoss", "get_loss",
    "ConvexDualError", "SolverUnavailableError", "SolverFailedError", "DataFormatError",
    "available_solvers", "__version__", "CheckpointError", "MemoryBudgetError", "PatternEngine",
]
