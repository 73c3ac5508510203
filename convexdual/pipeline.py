"""The step after every solver: recover the network, certify it, apply the status rule.

``solvers/`` turns a problem into a raw :class:`~convexdual.result.SolveResult`;
:func:`finalize` (called by :func:`convexdual.solve`) recovers the primal network (eq. 5)
and attaches the certificate (docs/math.md §6), and :func:`status_from_certificate` is the
one status rule: OPTIMAL iff the certificate holds.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import torch

from convexdual.certificate import certify_solution
from convexdual.problem import DualProblem
from convexdual.recover import recover_network
from convexdual.result import SolveResult, Status

__all__ = ["finalize", "status_from_certificate"]

logger = logging.getLogger(__name__)


def status_from_certificate(status: Status, cert: Any, message: str, tolerance: float,
                            violation_tolerance: float) -> tuple[Status, str]:
    """The status rule, in one place: a solution is OPTIMAL iff its certificate holds at the
    requested tolerances (relative gap, cone violation and recovery error), whatever the backend
    said; an OPTIMAL / OPTIMAL_INACCURATE point whose certificate fails is OPTIMAL_INACCURATE with
    the reason. Early stops (time or iteration limits, interruptions, errors) keep their status."""
    if cert is None or status not in (Status.OPTIMAL, Status.OPTIMAL_INACCURATE):
        return status, message
    if cert.ok:
        if status is Status.OPTIMAL:
            return status, message
        note = (f"backend reported an inaccurate solve, but the point is certified: relative gap "
                f"{cert.relative_gap:.2e} <= {tolerance:g}, violation {cert.max_violation:.2e} "
                f"<= {violation_tolerance:g}")
        return Status.OPTIMAL, f"{message}; {note}" if message else note
    why = []
    if cert.relative_gap < -tolerance:
        why.append(f"negative gap {cert.relative_gap:.2e}: the point is not a point of (4) or a bound is broken")
    if not (cert.relative_gap <= tolerance):
        why.append(f"relative gap {cert.relative_gap:.2e} > {tolerance:g}")
    if not (cert.max_violation <= violation_tolerance):
        why.append(f"cone violation {cert.max_violation:.2e} > {violation_tolerance:g}")
    if cert.recovery_error is not None and not (cert.recovery_error <= tolerance):
        why.append(f"recovered net's objective differs by {cert.recovery_error:.2e} (> {tolerance:g})")
    note = ("not certified: " + ", ".join(why)) if why else "not certified"
    if status is Status.OPTIMAL:
        note = f"solver reported optimal but the certificate disagrees ({note})"
        logger.warning(note)
    return Status.OPTIMAL_INACCURATE, f"{message}; {note}" if message else note


#: largest relative cone violation that :func:`finalize` polishes away (interior-point points: ~1e-9)
POLISH_MAX_VIOLATION = 1e-5


def finalize(problem: DualProblem, raw: SolveResult, *, recover: bool = True, certify: bool = True,
             device: torch.device | str = "cpu", tolerance: float = 1e-6,
             violation_tolerance: float = 1e-7, progress: bool = False) -> SolveResult:
    """Recover the network and certify a raw result; returns a new SolveResult.

    The status follows the certificate (:func:`status_from_certificate`): OPTIMAL iff the
    certificate holds at ``tolerance`` / ``violation_tolerance``.
    """
    if raw.W is None or raw.Z is None or not raw.status.has_solution:
        return raw
    t0 = time.perf_counter()

    def recover_and_certify(res: SolveResult) -> tuple[Any, Any, float]:
        net = recover_network(problem, res.W, res.Z, device=device) if recover else None
        t = time.perf_counter()
        if not certify:
            return net, None, t
        net_cpu = None
        if net is not None:
            net_cpu = net if str(device) == "cpu" else recover_network(problem, res.W, res.Z)
        return net, certify_solution(problem, res.W, res.Z, network=net_cpu, dual=res.dual, tolerance=tolerance,
                                     violation_tolerance=violation_tolerance, progress=progress), t

    net, cert, t1 = recover_and_certify(raw)
    if cert is not None and not cert.ok and 1e-13 < cert.max_violation <= POLISH_MAX_VIOLATION:
        # interior-point points leave their cones by ~1e-9; projecting those groups exactly makes the
        # recovered ReLU net reproduce (4). The projected point is kept when its certificate holds.
        # A point far outside its cones (a first-order iterate stopped early, violation ~0.1) is not
        # polished: projecting every group exactly (an NNLS over all n rows each; 16,000 dense groups
        # of adam_hinge at the paper's MNIST size) costs hours and cannot make it certify.
        W, Z, moved = problem.engine.polish(raw.W, raw.Z, scale=problem.weight_scale)
        if moved:
            obj = problem.objective(W, Z)
            note = (f"{moved} group(s) projected exactly onto their cones before recovery (objective "
                    f"{raw.objective:.10g} -> {obj:.10g})")
            cand = dataclasses.replace(raw, W=W, Z=Z, objective=obj,
                                       message=f"{raw.message}; {note}" if raw.message else note)
            net2, cert2, t1 = recover_and_certify(cand)
            if cert2.ok:
                raw, net, cert = cand, net2, cert2
    if cert is not None and not cert.ok and recover and (cert.recovery_error or 0.0) > tolerance:
        # the net keeps only the groups above recover's threshold (1e-6 of the largest); for a loss linear
        # in the residual (absolute, Huber's tails) the dropped groups can move the objective by more than
        # the tolerance. Recover every group above 1e-10 instead, and keep that net if it certifies.
        net2 = recover_network(problem, raw.W, raw.Z, device=device, rel_tol=1e-10)
        net2_cpu = net2 if str(device) == "cpu" else recover_network(problem, raw.W, raw.Z, rel_tol=1e-10)
        cert2 = certify_solution(problem, raw.W, raw.Z, network=net2_cpu, dual=raw.dual, tolerance=tolerance,
                                 violation_tolerance=violation_tolerance, progress=progress)
        t1 = time.perf_counter()
        if cert2.ok:
            note = (f"recovered with every group above 1e-10 of the largest ({net2.width} neurons): the "
                    "default threshold (1e-6) dropped groups that move the objective")
            raw = dataclasses.replace(raw, message=f"{raw.message}; {note}" if raw.message else note)
            net, cert = net2, cert2
    status, message = raw.status, raw.message
    if cert is not None:
        status, message = status_from_certificate(status, cert, message, tolerance, violation_tolerance)
    t2 = time.perf_counter()
    timings = dataclasses.replace(raw.timings, recover=t1 - t0, certify=t2 - t1)
    return dataclasses.replace(raw, network=net, certificate=cert, timings=timings, status=status,
                               message=message)
