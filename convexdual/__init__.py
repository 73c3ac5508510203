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

from convexdual._registry import available_solvers
from convexdual.api import solve
from convexdual.certificate import Certificate, certify_solution
from convexdual.certify_net import NetworkCertificate, certify
from convexdual.errors import ConvexDualError, DataFormatError, SolverFailedError, SolverUnavailableError
from convexdual.losses import AbsoluteLoss, HuberLoss, Loss, SquaredLoss, get_loss
from convexdual.nets import TwoLayerConvNet, primal_objective
from convexdual.patterns import SignPatterns, enumerate_patterns, patterns_from_gates, sample_patterns
from convexdual.problem import DualProblem, beta_max, build_problem
from convexdual.recover import recover_filters, recover_network
from convexdual.result import SolveResult, Status, Timings

__version__ = "0.1.0"

__all__ = [
    "build_problem", "solve", "DualProblem", "beta_max",
    "sample_patterns", "enumerate_patterns", "patterns_from_gates", "SignPatterns",
    "SolveResult", "Status", "Timings", "Certificate", "certify_solution",
    "certify", "NetworkCertificate",
    "TwoLayerConvNet", "primal_objective", "recover_filters", "recover_network",
    "Loss", "SquaredLoss", "AbsoluteLoss", "HuberLoss", "get_loss",
    "ConvexDualError", "SolverUnavailableError", "SolverFailedError", "DataFormatError",
    "available_solvers", "__version__",
]
