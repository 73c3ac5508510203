"""Certify a trained two-layer conv ReLU net: is it a global optimum of (2)? (docs/math.md §6)

:func:`certify` takes a network (e.g. trained by Adam), its training data and
``beta`` and reports what can be *shown*:

1. the net's objective (2) (float64, through the network itself) and its own
   stationarity: per-neuron balance ``||u_j|| = |v_j|`` and the gradient of (2);
2. the net as a feasible point of (4): each neuron ``j`` lands in the group of its
   own pattern ``D(u_j) = 1[X u_j >= 0]`` (``w = v_j u_j`` if ``v_j > 0``, else
   ``z = |v_j| u_j``), whose value is ``<=`` objective (2);
3. (4) solved over ``S`` = the net's own patterns + enumerated (exact) or sampled
   ones. A certified lower bound (the solver's certificate and the net's own
   residual scaled to dual feasibility) and the *recovered* net, an explicit better
   network whenever its objective (2), evaluated directly, is lower;
4. global dual feasibility of the net's residual ``r``: a descent neuron ``u`` with
   ``|r^T relu(X u)| > beta ||u||``: exact over an enumerated arrangement, otherwise
   a one-sided search (:func:`convexdual.descent.search_descent`). A found neuron is
   added to the net at its best scale, giving a second explicit better network.

The verdict says exactly what was shown:

* ``"globally optimal (exact enumeration)"``: S holds every sign pattern and the net's
  objective is within ``tolerance`` of a certified lower bound on the global optimum;
* ``"optimal over S; no descent neuron found in K starts (not a proof of global
  optimality)"``: within tolerance of the lower bound over S and the search found nothing;
* ``"not optimal: the objective can drop by X (certified)"``: a network with a lower
  objective (2) was built and evaluated (``improved_network``); X is the drop.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import torch
from torch import nn

from convexdual._validation import as_images, as_targets, check_beta
from convexdual.certificate import dual_lower_bound
from convexdual.descent import DescentSearch, cell_maxima, search_descent
from convexdual.losses import Loss, SquaredLoss, get_loss
from convexdual.nets import TwoLayerConvNet, primal_objective
from convexdual.patterns import SignPatterns, data_key, enumerate_patterns, pattern_hashes, sample_patterns
from convexdual.problem import build_problem

__all__ = ["NetworkCertificate", "CertifyStatus", "NetCheck", "ConvexCheck", "DescentCheck", "GlobalCheck", "certify", "as_two_layer_net", "net_stationarity", "net_to_dual"]

logger = logging.getLogger(__name__)

class CertifyStatus(str, Enum):
    """What :func:`certify` showed (a ``str`` enum like :class:`~convexdual.result.Status`, so
    ``cert.status == "globally_optimal"`` holds)."""

    GLOBALLY_OPTIMAL = "globally_optimal"
    OPTIMAL_OVER_S = "optimal_over_S"
    NOT_OPTIMAL = "not_optimal"
    INCONCLUSIVE = "inconclusive"


GLOBALLY_OPTIMAL = CertifyStatus.GLOBALLY_OPTIMAL
OPTIMAL_OVER_S = CertifyStatus.OPTIMAL_OVER_S
NOT_OPTIMAL = CertifyStatus.NOT_OPTIMAL
INCONCLUSIVE = CertifyStatus.INCONCLUSIVE
ORACLE_SOURCE = "descent neuron (global oracle)"


@dataclass(frozen=True)
class NetCheck:
    """Step 1: the net itself. ``objective`` is (2) (sum over pixels + ``beta/2 sum(||u||^2 + v^2)``),
    ``fit`` and ``penalty`` its two terms; ``width`` filters, ``num_dead`` with ``v_j relu(X u_j) == 0``
    on the data; ``balance_error`` ``max_j | ||u_j|| - |v_j| | / max(||u_j||, |v_j|)`` (0 at any
    stationary point, over filters not both zero); ``gradient_norm`` of (2) in all weights and
    ``relative_gradient_norm = gradient_norm / (beta ||(U, v)||)``."""

    objective: float
    fit: float
    penalty: float
    width: int
    num_dead: int
    balance_error: float
    gradient_norm: float
    relative_gradient_norm: float


@dataclass(frozen=True)
class ConvexCheck:
    """Steps 2-3: program (4) over S. ``mapped_objective``: (4) at the net mapped through its own
    patterns (``<=`` objective (2)); ``num_own_patterns`` distinct patterns of its filters;
    ``num_patterns`` = ``|S|``, ``exact`` when S holds every pattern; ``convex_status`` /
    ``convex_objective`` of the solve over S; ``lower_bound`` certified on its optimum (global when
    exact); ``recovered_objective`` / ``recovered_width`` of the net recovered from the solve."""

    mapped_objective: float
    num_own_patterns: int
    num_patterns: int
    exact: bool
    convex_status: str
    convex_objective: float
    lower_bound: float
    recovered_objective: float
    recovered_width: int


@dataclass(frozen=True, eq=False)
class DescentCheck:
    """Step 4: dual feasibility of the net's residual. ``max_dual_ratio``: largest
    ``|r^T relu(X u)| / (beta ||u||)`` found (exact when ``search_exact``; > 1 is a descent neuron);
    ``descent_neuron`` (unit ``u``, ``(d,)``) and ``descent_sign`` of the best one; ``descent_drop``
    from adding it at its best scale; ``search_starts`` / ``search_gates`` of the search."""

    max_dual_ratio: float
    descent_neuron: np.ndarray | None
    descent_sign: float
    descent_drop: float
    search_exact: bool
    search_starts: int
    search_gates: int


@dataclass(frozen=True)
class GlobalCheck:
    """Step 5: the branch-and-bound oracle (:mod:`convexdual.global_oracle`) over *all* sign
    patterns, run (``checked``) on the ``residual`` "recovered" (the certified optimum over S) or
    "net" when S is not exact. ``status`` ("proved", "descent", "budget") and ``verdict``
    ("feasible", "descent", None); ``upper`` / ``lower``: its certified upper bound on and attained
    value of ``max_{||u||<=1} |r^T relu(X u)|``; ``nodes``, ``seconds``, ``open_regions``.
    ``lower_bound``: certified lower bound on the global optimum of (2) (the residual's dual value
    scaled by ``beta / max(beta, upper)``; with exact enumeration the bound over S; nan when neither
    ran); ``gap`` = objective - lower_bound."""

    checked: bool = False
    status: str = ""
    verdict: str | None = None
    upper: float = math.nan
    lower: float = math.nan
    nodes: int = 0
    seconds: float = 0.0
    open_regions: int = 0
    residual: str = ""
    lower_bound: float = math.nan
    gap: float = math.nan


#: flat names of the fields of the sub-records (``cert.global_gap`` is ``cert.global_check.gap``);
#: ``to_dict`` writes these names
_FLAT: dict[str, tuple[str, str]] = {
    **{f.name: ("net", f.name) for f in dataclasses.fields(NetCheck)},
    **{f.name: ("convex", f.name) for f in dataclasses.fields(ConvexCheck)},
    **{f.name: ("descent", f.name) for f in dataclasses.fields(DescentCheck)},
    **{f"global_{f.name}": ("global_check", f.name) for f in dataclasses.fields(GlobalCheck)},
}


@dataclass(frozen=True, eq=False)
class NetworkCertificate:
    """What :func:`certify` showed about a network, by step.

    Attributes:
        verdict: one sentence, worded as in the module docstring.
        status: a :class:`CertifyStatus`.
        net, convex, descent, global_check: the steps' records (:class:`NetCheck`,
            :class:`ConvexCheck`, :class:`DescentCheck`, :class:`GlobalCheck`). Their fields also
            read flat: ``cert.objective`` is ``cert.net.objective``, ``cert.global_gap`` is
            ``cert.global_check.gap``.
        beta: the weight decay. tolerance: relative tolerance of the verdict.
        improvement: certified drop of objective (2) (``objective - objective of improved_network``, >= 0);
            the verdict counts it only above ``tolerance * |objective|``.
        improvement_source: "convex re-solve over S", "descent neuron", ORACLE_SOURCE or "".
        improved_network: the best explicit network found (None when none beats the net),
            also when its drop is below the tolerance.
        timings: seconds per step.
    """

    verdict: str
    status: CertifyStatus
    net: NetCheck
    convex: ConvexCheck
    descent: DescentCheck
    global_check: GlobalCheck
    beta: float
    tolerance: float
    improvement: float
    improvement_source: str
    improved_network: TwoLayerConvNet | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        where = _FLAT.get(name)
        if where is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(object.__getattribute__(self, where[0]), where[1])

    @property
    def globally_optimal(self) -> bool:
        return self.status is CertifyStatus.GLOBALLY_OPTIMAL

    @property
    def relative_improvement(self) -> float:
        return self.improvement / max(abs(self.objective), 1e-300)

    def summary(self) -> str:
        n, c, s, g = self.net, self.convex, self.descent, self.global_check
        lines = [
            f"verdict     : {self.verdict}",
            f"objective   : {n.objective:.10g} (fit {n.fit:.6g} + penalty {n.penalty:.6g}), "
            f"{n.width} filters ({n.num_dead} dead), beta {self.beta:.6g}",
            f"stationarity: balance error {n.balance_error:.2e}, gradient {n.gradient_norm:.3e} "
            f"(relative {n.relative_gradient_norm:.2e})",
            f"program (4) : net mapped via its {c.num_own_patterns} own patterns {c.mapped_objective:.10g}; "
            f"optimum over S ({c.num_patterns} patterns, {'exact' if c.exact else 'sampled'}) "
            f"{c.convex_objective:.10g} [{c.convex_status}], lower bound {c.lower_bound:.10g}",
            f"recovered   : objective (2) {c.recovered_objective:.10g} with {c.recovered_width} filters",
            f"dual check  : max |r^T relu(Xu)|/(beta||u||) = {s.max_dual_ratio:.6g} "
            + ("(exact over all cells)" if s.search_exact
               else f"(search: {s.search_gates} gates, {s.search_starts} starts)"),
        ]
        if g.checked:
            lines.append(f"global      : B&B oracle on the {g.residual} residual: {g.status}, "
                         f"max |r^T relu(Xu)| in [{g.lower:.8g}, {g.upper:.8g}] "
                         f"(beta {self.beta:.6g}), {g.nodes} nodes, {g.seconds:.3g} s; "
                         f"certified global lower bound {g.lower_bound:.10g}, global gap "
                         f"{g.gap:.3g} ({g.gap / max(abs(n.objective), 1e-300):.2e} relative)")
        if self.improvement > 0:
            lines.append(f"improvement : {self.improvement:.6g} ({self.relative_improvement:.2e} relative) "
                         f"by {self.improvement_source}"
                         + ("" if self.status is NOT_OPTIMAL else f"; below the tolerance {self.tolerance:g}, "
                            "so not counted in the verdict"))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready and flat (the sub-records' fields by their flat names; no network; the
        descent neuron as a list; the status as its string)."""
        from convexdual._io import to_jsonable

        out: dict[str, Any] = {"verdict": self.verdict, "status": self.status.value}
        for name in ("beta", "tolerance", "improvement", "improvement_source"):
            out[name] = getattr(self, name)
        out.update({name: getattr(self, name) for name in _FLAT})
        out["timings"] = dict(self.timings)
        out["relative_improvement"] = self.relative_improvement
        return to_jsonable(out)


# ---------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------
def as_two_layer_net(net: Any, kernel_size: int | None = None, in_channels: int | None = None) -> TwoLayerConvNet:
    """A float64 CPU :class:`TwoLayerConvNet` copy of ``net``.

    Accepts a TwoLayerConvNet; an ``nn.Sequential(Conv2d(C, m, k, padding=k//2,
    bias=False), ReLU(), Conv2d(m, 1, 1, bias=False))``; or weights ``(U, v)`` with
    ``U (m, C*k*k)`` or ``(m, C, k, k)`` (``kernel_size`` needed for the flat form).
    """
    if isinstance(net, TwoLayerConvNet):
        U, v = net.filters()
        return TwoLayerConvNet.from_filters(U, v, net.in_channels, net.kernel_size, residual=net.residual,
                                            residual_channel=net.residual_channel)
    if isinstance(net, nn.Sequential):
        mods = list(net)
        ok = (len(mods) == 3 and isinstance(mods[0], nn.Conv2d) and isinstance(mods[1], nn.ReLU)
              and isinstance(mods[2], nn.Conv2d))
        if ok:
            c1, c2 = mods[0], mods[2]
            k = c1.kernel_size[0]
            ok = (c1.bias is None and c2.bias is None and c1.kernel_size == (k, k) and k % 2 == 1
                  and c1.padding == (k // 2, k // 2) and c1.stride == (1, 1) and c1.dilation == (1, 1)
                  and c1.groups == 1 and c2.kernel_size == (1, 1) and c2.out_channels == 1)
        if not ok:
            raise TypeError("an nn.Sequential network must be exactly Conv2d(C, m, k, padding=k//2, bias=False), "
                            "ReLU(), Conv2d(m, 1, 1, bias=False) (the net of docs/math.md eq. 1)")
        U = c1.weight.detach().cpu().double().numpy()
        v = c2.weight.detach().cpu().double().numpy().reshape(-1)
        return TwoLayerConvNet.from_filters(U.reshape(U.shape[0], -1), v, U.shape[1], k)
    if isinstance(net, (tuple, list)) and len(net) == 2:
        U = np.asarray(net[0].detach().cpu() if isinstance(net[0], torch.Tensor) else net[0], dtype=np.float64)
        v = np.asarray(net[1].detach().cpu() if isinstance(net[1], torch.Tensor) else net[1], dtype=np.float64)
        if U.ndim == 4:
            if U.shape[2] != U.shape[3] or U.shape[2] % 2 == 0:
                raise ValueError(f"filters (m, C, k, k) need an odd square kernel; got {U.shape}")
            in_channels, kernel_size = U.shape[1], U.shape[2]
            U = U.reshape(U.shape[0], -1)
        if kernel_size is None:
            raise ValueError("weights given as flat U (m, C*k*k) need kernel_size=")
        C = in_channels if in_channels is not None else U.shape[1] // (kernel_size**2)
        return TwoLayerConvNet.from_filters(U, v.reshape(-1), C, int(kernel_size))
    raise TypeError(f"net must be a TwoLayerConvNet, an nn.Sequential(Conv2d, ReLU, Conv2d) or weights (U, v); "
                    f"got {type(net).__name__}")


def net_stationarity(net: TwoLayerConvNet, inputs: np.ndarray, targets: np.ndarray, beta: float,
                     loss: Loss) -> dict[str, float]:
    """Balance error, gradient norm of (2) and dead filters of a float64 net.

    Shapes:
        inputs ``(N, C, H, W)``, targets ``(N, H, W)``.
    """
    U, v = net.filters()
    nu = np.linalg.norm(U, axis=1)
    av = np.abs(v)
    big = np.maximum(nu, av)
    live = big > 0
    balance = float(np.max(np.abs(nu[live] - av[live]) / big[live], initial=0.0))
    net = net.to(torch.float64)
    x = torch.from_numpy(inputs)
    y = torch.from_numpy(targets)
    params = [net.conv1.weight, net.conv2.weight]
    for p in params:
        p.requires_grad_(True)
    net.zero_grad(set_to_none=True)
    obj = loss.torch_value(net(x)[:, 0] - y) + 0.5 * beta * sum((p * p).sum() for p in params)
    obj.backward()
    g = float(math.sqrt(sum(float((p.grad * p.grad).sum()) for p in params)))
    wn = float(math.sqrt(float((U * U).sum() + (v * v).sum())))
    with torch.no_grad():
        act = torch.relu(net.conv1(x)).sum(dim=(0, 2, 3)).numpy() if net.width > 0 else np.zeros(0)
    dead = int(np.sum((act[: net.width] == 0) | (v[: net.width] == 0))) if net.width > 0 else 0
    for p in params:
        p.requires_grad_(False)
    return {"balance_error": balance, "gradient_norm": g,
            "relative_gradient_norm": g / (beta * wn) if wn > 0 else (0.0 if g == 0 else math.inf),
            "num_dead": dead}


def net_to_dual(net: TwoLayerConvNet, patterns: SignPatterns, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The net as a feasible point ``(W, Z)`` of (4) over ``patterns``.

    Neuron ``j`` goes to the group of its own pattern ``D(u_j)``: ``w_i += v_j u_j``
    (``v_j > 0``) or ``z_i += |v_j| u_j``. Every neuron's pattern must be in the set.

    Shapes:
        ``W, Z`` ``(P, d)``.
    """
    U, v = net.filters()
    P, d = patterns.gates.shape
    W = np.zeros((P, d))
    Z = np.zeros((P, d))
    if U.shape[0] == 0:
        return W, Z
    index: dict[bytes, int] = {}
    for i, key in enumerate(pattern_hashes(inputs, net.kernel_size, patterns.gates)):
        index.setdefault(key, i)
    for j, key in enumerate(pattern_hashes(inputs, net.kernel_size, U)):
        if v[j] == 0 or not np.any(U[j]):
            continue
        if key not in index:
            raise ValueError(f"filter {j}'s sign pattern is not in the pattern set; include the net's own patterns")
        i = index[key]
        if v[j] > 0:
            W[i] += v[j] * U[j]
        else:
            Z[i] += -v[j] * U[j]
    return W, Z


# ---------------------------------------------------------------------------
# certify
# ---------------------------------------------------------------------------
def _pattern_set(x: np.ndarray, k: int, patterns: str | SignPatterns, num_patterns: int, max_enumerate: int,
                 seed: int | None) -> SignPatterns:
    if isinstance(patterns, SignPatterns):
        return patterns
    if patterns not in ("auto", "enumerate", "sample"):
        raise ValueError(f"patterns must be 'auto', 'enumerate', 'sample' or a SignPatterns; got {patterns!r}")
    if patterns in ("auto", "enumerate"):
        try:
            return enumerate_patterns(x, k, max_patterns=max_enumerate)
        except ValueError as exc:
            if patterns == "enumerate":
                raise
            logger.info("exact enumeration not possible (%s); sampling %d patterns", exc, num_patterns)
    return sample_patterns(x, k, num_patterns, seed=seed)


def _descent_witness(net: TwoLayerConvNet, u: np.ndarray, sign: float, inputs: np.ndarray, targets: np.ndarray,
                     beta: float, loss: Loss, r: np.ndarray) -> tuple[TwoLayerConvNet, float]:
    """The net plus neuron ``(sqrt(a) u, sign sqrt(a))`` at the best ``a >= 0``; returns ``(net, objective)``."""
    from scipy.optimize import minimize_scalar

    from convexdual.patches import patch_matrix

    U, v = net.filters()
    q = np.maximum(patch_matrix(inputs, net.kernel_size) @ u, 0.0)
    qq = float(q @ q)
    base = net.predict(inputs).reshape(-1) - targets.reshape(-1)
    # squared loss: a* = (s r^T q - beta) / ||q||^2 in closed form; others: bounded 1-D search
    a_sq = max((sign * float(r @ q) - beta) / max(qq, 1e-300), 0.0)
    if isinstance(loss, SquaredLoss):
        a = a_sq
    else:
        f = lambda a: loss.value(base + a * sign * q) + beta * a  # noqa: E731
        hi = max(4.0 * a_sq, 1e-8)
        for _ in range(60):  # grow the bracket until the objective turns up
            if f(hi) > f(hi / 2):
                break
            hi *= 2.0
        a = float(minimize_scalar(f, bounds=(0.0, hi), method="bounded", options={"xatol": 1e-12 * hi}).x)
    w = math.sqrt(a)
    new = TwoLayerConvNet.from_filters(np.vstack([U, w * u[None]]), np.append(v, sign * w), net.in_channels,
                                       net.kernel_size, residual=net.residual,
                                       residual_channel=net.residual_channel)
    return new, primal_objective(new, inputs, targets, beta, loss)


def _global_note(glob: GlobalCheck, g_gap: float) -> str:
    """The oracle's partial answer, appended to a verdict that it did not settle."""
    if not glob.checked:
        return ""
    if glob.status == "budget":
        what = (f"budget ran out after {glob.nodes} nodes / {glob.seconds:.3g} s "
                f"(max in [{glob.lower:.6g}, {glob.upper:.6g}] vs beta)")
    elif glob.verdict == "descent":
        what = "descent neuron with a drop below the tolerance"
    else:
        what = f"{glob.status} after {glob.nodes} nodes"
    return f"; global oracle: {what}, certified global gap <= {g_gap:.3g}"


def certify(
    net: Any,
    noisy: Any,
    clean: Any,
    beta: float,
    *,
    loss: str | Loss = "squared",
    kernel_size: int | None = None,
    patterns: str | SignPatterns = "auto",
    num_patterns: int = 100,
    max_enumerate: int = 1024,
    solver: str = "auto",
    solver_options: Any = None,
    num_starts: int = 64,
    num_gates: int = 2048,
    search_steps: int = 200,
    seed: int | None = 0,
    tolerance: float = 1e-6,
    device: torch.device | str = "cpu",
    global_time_limit: float | None = 60.0,
    global_max_nodes: int | None = None,
    global_eps: float | None = None,
    global_threads: int | None = None,
) -> NetworkCertificate:
    """Is ``net`` a global optimum of (2) on ``(noisy, clean)`` with weight decay ``beta``?

    Args:
        net: a :class:`TwoLayerConvNet` (residual nets included), an ``nn.Sequential``
            of the same form, or weights ``(U, v)`` (see :func:`as_two_layer_net`).
        noisy, clean: training inputs ``(N, [C,] H, W)`` and targets ``(N, H, W)``.
        beta: the weight decay of (2) the net was trained with (> 0).
        loss: "squared" (default), "huber", "absolute" or a Loss. The descent test is
            the first-order condition of differentiable losses; for "absolute" it is a heuristic.
        kernel_size: only for flat ``(U, v)`` weights.
        patterns: "auto" (enumerate when the arrangement has at most ``max_enumerate``
            cells, else sample ``num_patterns``), "enumerate", "sample", or a SignPatterns
            computed on ``noisy``. The net's own patterns are always added.
        solver, solver_options: passed to :func:`convexdual.solve` for (4) over S.
        num_starts, num_gates, search_steps: the descent search (ignored when exact).
        seed: seeds the sampled patterns and the search.
        tolerance: relative tolerance: the net is "optimal" when its objective is within
            ``tolerance * |objective|`` of the lower bound; an improvement is reported
            when it exceeds that much.
        device: where the descent search's convolutions (and the global oracle's bounds) run.
        global_time_limit: seconds for the branch-and-bound oracle over *all* sign patterns
            (:func:`convexdual.global_oracle.global_max_correlation`), run when S is not an
            exact enumeration on the residual of the recovered optimum over S (if certified,
            else of the net); 0 or None disables it. Whatever it reaches, its certified upper
            bound gives a certified global lower bound (``global_lower_bound``).
        global_max_nodes: optional node budget of the oracle.
        global_eps: the oracle's relative proof tolerance (default ``tolerance / 4``).
        global_threads: torch threads for the oracle (None: leave the setting alone).

    Returns:
        A :class:`NetworkCertificate`.

    Raises:
        TypeError / ValueError: a malformed net, data that do not match it, bad beta.

    Shapes:
        ``n = N*H*W`` pixels, ``d = C*k*k``.
    """
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    f_net, x, y, b, lo = _checked_inputs(net, noisy, clean, beta, loss, kernel_size, tolerance)
    netc = _net_check(f_net, x, y, b, lo)  # 1. objective (2) and stationarity
    times["objective"] = time.perf_counter() - t0
    t = time.perf_counter()  # 2. S = own + enumerated/sampled patterns; the net mapped into (4)
    S, problem, num_own, mapped = _pattern_problem(f_net, x, y, b, lo, netc.objective, patterns, num_patterns,
                                                   max_enumerate, seed)
    times["patterns"] = time.perf_counter() - t
    t = time.perf_counter()  # 3. (4) over S: lower bounds and the recovered net
    res, r, convex, rec_net = _convex_step(problem, S, f_net, x, y, lo, solver, solver_options, mapped, num_own)
    times["solve"] = time.perf_counter() - t
    t = time.perf_counter()  # 4. descent neurons for the net's own residual
    search = _descent_search(f_net, x, k=f_net.kernel_size, r=r, b=b, S=S, tolerance=tolerance, num_starts=num_starts,
                             num_gates=num_gates, steps=search_steps, seed=seed, device=device)
    times["search"] = time.perf_counter() - t
    t = time.perf_counter()  # 5. the branch-and-bound oracle over all sign patterns (issue 16)
    glob, o_drop, o_net = _global_step(problem, res, f_net, rec_net, r, x, y, b, lo, S, netc.objective,
                                       convex.lower_bound, tolerance, global_time_limit, global_max_nodes,
                                       global_eps, global_threads, seed, device)
    if glob.checked:
        times["global"] = time.perf_counter() - t
    descent, d_net = _descent_check(search, f_net, x, y, b, lo, r, netc.objective)
    cands = [(netc.objective - convex.recovered_objective if math.isfinite(convex.recovered_objective) else 0.0,
              "convex re-solve over S", rec_net), (descent.descent_drop, "descent neuron", d_net),
             (o_drop, ORACLE_SOURCE, o_net)]
    improvement, source, improved = max(cands, key=lambda c: c[0])
    if improvement <= 0.0:  # nothing beats the net (any positive drop is real, if tiny)
        improvement, source, improved = 0.0, "", None
    status, verdict = _verdict(netc.objective, convex, descent, glob, improvement, source, tolerance,
                               res.status.value)
    times["total"] = time.perf_counter() - t0
    logger.info("certify: %s", verdict)
    return NetworkCertificate(verdict=verdict, status=status, net=netc, convex=convex, descent=descent,
                              global_check=glob, beta=b, tolerance=float(tolerance), improvement=float(improvement),
                              improvement_source=source, improved_network=improved, timings=times)


def _checked_inputs(net: Any, noisy: Any, clean: Any, beta: float, loss: str | Loss, kernel_size: int | None,
                    tolerance: float) -> tuple[TwoLayerConvNet, np.ndarray, np.ndarray, float, Loss]:
    """The net as a float64 TwoLayerConvNet, checked images and targets, beta and the loss (or raise)."""
    f_net = as_two_layer_net(net, kernel_size)
    bad = {name: int((~torch.isfinite(p.detach())).sum()) for name, p in f_net.named_parameters()}
    bad = {name: c for name, c in bad.items() if c}
    if bad:
        raise ValueError("the network's weights contain NaN/Inf (" + ", ".join(
            f"{name}: {c} value(s)" for name, c in bad.items()) + "); it cannot be certified. A diverged "
            "training run? Retrain with a smaller learning rate, or solve (4) directly with convexdual.solve")
    x = as_images(noisy, "noisy")
    y = as_targets(clean, x, "clean")
    b = check_beta(beta)
    lo = get_loss(loss)
    if not (tolerance > 0):
        raise ValueError(f"tolerance must be > 0, got {tolerance}")
    if f_net.in_channels != x.shape[1]:
        raise ValueError(f"the net expects {f_net.in_channels} input channel(s) but noisy has {x.shape[1]}")
    k = f_net.kernel_size
    if k > min(x.shape[2], x.shape[3]):
        raise ValueError(f"the net's kernel ({k}) is larger than the images {x.shape[2:]}")
    return f_net, x, y, b, lo


def _net_check(f_net: TwoLayerConvNet, x: np.ndarray, y: np.ndarray, b: float, lo: Loss) -> NetCheck:
    """Step 1: objective (2), its terms and the net's stationarity."""
    objective = primal_objective(f_net, x, y, b, lo)
    U, v = f_net.filters()
    penalty = 0.5 * b * float((U * U).sum() + (v * v).sum())
    stat = net_stationarity(f_net, x, y, b, lo)
    return NetCheck(objective=objective, fit=objective - penalty, penalty=penalty, width=f_net.width,
                    num_dead=int(stat["num_dead"]), balance_error=stat["balance_error"],
                    gradient_norm=stat["gradient_norm"], relative_gradient_norm=stat["relative_gradient_norm"])


def _pattern_problem(f_net: TwoLayerConvNet, x: np.ndarray, y: np.ndarray, b: float, lo: Loss, objective: float,
                     patterns: str | SignPatterns, num_patterns: int, max_enumerate: int, seed: int | None
                     ) -> tuple[SignPatterns, Any, int, float]:
    """Step 2: ``(S, problem (4) over S, the net's own pattern count, (4) at the mapped net)``."""
    k = f_net.kernel_size
    U, v = f_net.filters()
    base = _pattern_set(x, k, patterns, num_patterns, max_enumerate, seed)
    live = (np.abs(v) > 0) & np.any(U != 0, axis=1)
    if live.any():
        own = SignPatterns(gates=U[live], exact=False, num_requested=int(live.sum()), source="net",
                           data_key=data_key(x, k), info={"deduplicated": False})
        S = base.union(own)
        num_own = len(set(pattern_hashes(x, k, U[live])))
    else:
        S, num_own = base, 0
    problem = build_problem(x, y, k, b, patterns=S, loss=lo, residual=f_net.residual,
                            residual_channel=f_net.residual_channel)
    Wn, Zn = net_to_dual(f_net, problem.patterns, x)
    mapped = problem.objective(Wn, Zn)
    if mapped > objective + 1e-9 * max(abs(objective), 1.0):  # pragma: no cover - a bug if it happens
        raise RuntimeError(f"the net mapped into (4) has value {mapped} > its objective (2) {objective}")
    return S, problem, num_own, mapped


def _convex_step(problem: Any, S: SignPatterns, f_net: TwoLayerConvNet, x: np.ndarray, y: np.ndarray, lo: Loss, solver: str,
                 solver_options: Any, mapped: float, num_own: int
                 ) -> tuple[Any, np.ndarray, ConvexCheck, TwoLayerConvNet | None]:
    """Step 3: solve (4) over S; the certified lower bound (the solver's certificate or the net's
    residual scaled to dual feasibility) and the recovered net. Returns ``(result, the net's dual
    candidate r, the record, the recovered net)``."""
    from convexdual.api import solve

    res = solve(problem, solver=solver, options=solver_options)
    pred_net = f_net.predict(x).reshape(-1) - problem.skip.reshape(-1)
    r = lo.dual_candidate(pred_net - problem.y)
    lower, _ = dual_lower_bound(problem, r)
    rec_obj, rec_width, rec_net = math.nan, 0, None
    if res.certificate is not None:
        lower = max(lower, res.certificate.dual_bound)
    if res.network is not None:
        rec_net = as_two_layer_net(res.network)
        rec_obj = primal_objective(rec_net, x, y, problem.beta, lo)
        rec_width = rec_net.width
    convex = ConvexCheck(mapped_objective=mapped, num_own_patterns=num_own, num_patterns=S.num_patterns,
                         exact=bool(S.exact), convex_status=res.status.value,
                         convex_objective=float(res.objective) if res.W is not None else math.nan,
                         lower_bound=float(lower), recovered_objective=rec_obj, recovered_width=rec_width)
    return res, r, convex, rec_net


def _descent_search(f_net: TwoLayerConvNet, x: np.ndarray, *, k: int, r: np.ndarray, b: float, S: SignPatterns,
                    tolerance: float, num_starts: int, num_gates: int, steps: int, seed: int | None,
                    device: Any) -> DescentSearch:
    """Step 4: exact over an enumerated S (cell maxima), else the one-sided search."""
    if S.exact:
        return cell_maxima(x, k, r, b, S, margin=tolerance)
    U, _ = f_net.filters()
    return search_descent(x, k, r, b, num_starts=num_starts, num_gates=num_gates, steps=steps,
                          extra_gates=np.concatenate([S.gates, U]) if len(U) else S.gates,
                          seed=seed, margin=tolerance, device=device)


def _descent_check(search: DescentSearch, f_net: TwoLayerConvNet, x: np.ndarray, y: np.ndarray, b: float,
                   lo: Loss, r: np.ndarray, objective: float) -> tuple[DescentCheck, TwoLayerConvNet | None]:
    """Step 4's record, and the net with the best descent neuron added (None without one)."""
    d_u, d_sign, d_drop, d_net = None, 0.0, 0.0, None
    if search.found and search.best is not None:
        d_u, d_sign = search.best.u, float(search.best.sign)
        d_net, d_obj = _descent_witness(f_net, d_u, d_sign, x, y, b, lo, r)
        d_drop = max(objective - d_obj, 0.0)
    return DescentCheck(max_dual_ratio=float(search.max_ratio), descent_neuron=d_u, descent_sign=d_sign,
                        descent_drop=float(d_drop), search_exact=bool(search.exact), search_starts=search.num_starts,
                        search_gates=search.num_gates), d_net


def _global_step(problem: Any, res: Any, f_net: TwoLayerConvNet, rec_net: TwoLayerConvNet | None, r: np.ndarray,
                 x: np.ndarray, y: np.ndarray, b: float, lo: Loss, S: SignPatterns, objective: float, lower: float,
                 tolerance: float, time_limit: float | None, max_nodes: int | None, eps: float | None,
                 threads: int | None, seed: int | None, device: Any
                 ) -> tuple[GlobalCheck, float, TwoLayerConvNet | None]:
    """Step 5 (docs/global_oracle.md): with exact S the bound over S is global; otherwise the
    branch-and-bound oracle on the recovered optimum's residual (if certified, else the net's).
    Returns ``(record, the oracle's descent drop, the net with its neuron added or None)``."""
    if S.exact:
        return GlobalCheck(lower_bound=float(lower), gap=float(objective - lower)), 0.0, None
    if not time_limit:
        return GlobalCheck(), 0.0, None
    from convexdual.global_oracle import global_max_correlation
    from convexdual.patches import patch_matrix

    t = time.perf_counter()
    o_drop, o_net = 0.0, None
    if rec_net is not None and res.status.is_optimal:
        g_src, g_net = "recovered", rec_net
        v0 = lo.dual_candidate(rec_net.predict(x).reshape(-1) - problem.skip.reshape(-1) - problem.y)
    else:
        g_src, g_net, v0 = "net", f_net, r
    Xp = patch_matrix(x, f_net.kernel_size)
    o_eps = 0.25 * tolerance if eps is None else float(eps)
    # the nets' neurons seed the oracle: their neighbouring sign-pattern cells are probed first
    seeds = np.concatenate([n.filters()[0] for n in {id(g_net): g_net, id(f_net): f_net}.values()])
    kw = dict(eps=o_eps, max_nodes=max_nodes, device=device, seed=0 if seed is None else int(seed),
              num_threads=threads, seeds=seeds if len(seeds) else None)
    # decide against beta (1 + eps): a convex optimum over S sits on its active constraints up to the
    # solver's accuracy, and a "descent" of ratio 1 + 1e-9 there would stop the search with nothing proved
    orc = global_max_correlation(Xp, v0, beta=b * (1.0 + o_eps), time_limit=float(time_limit), **kw)
    if orc.verdict == "descent":
        o_net, o_obj = _descent_witness(g_net, np.asarray(orc.argmax, dtype=np.float64), float(orc.sign),
                                        x, y, b, lo, v0)
        o_drop = max(objective - o_obj, 0.0)
        left = float(time_limit) - (time.perf_counter() - t)
        if o_drop <= tolerance * max(abs(objective), 1e-300) and left > 0:
            # a descent neuron too weak to count: bound the maximum itself for a certified global gap
            orc2 = global_max_correlation(Xp, v0, beta=None, time_limit=left, **kw)
            orc = dataclasses.replace(orc2, verdict="descent", nodes=orc.nodes + orc2.nodes,
                                      seconds=orc.seconds + orc2.seconds)
    # any certified upper bound M: v0 * beta / max(beta, M) is dual feasible for the full problem (2)
    g = problem.engine.dual_bound(lo, problem.y, b, v0, max_constraint=max(float(orc.upper), 0.0)).value
    return GlobalCheck(checked=True, status=orc.status, verdict=orc.verdict, upper=float(orc.upper),
                       lower=float(orc.lower), nodes=int(orc.nodes), seconds=float(orc.seconds),
                       open_regions=int(orc.open_regions), residual=g_src, lower_bound=float(g),
                       gap=float(objective - g)), o_drop, o_net


def _verdict(objective: float, convex: ConvexCheck, descent: DescentCheck, glob: GlobalCheck, improvement: float,
             source: str, tolerance: float, solver_status: str) -> tuple[CertifyStatus, str]:
    """The status and sentence of the module docstring, from what the steps showed."""
    scale = max(abs(objective), 1e-300)
    gap = objective - convex.lower_bound
    g_gap = max(glob.gap, 0.0) if glob.checked else math.nan
    if improvement > tolerance * scale:
        how = "descent neuron found, certified" if source == ORACLE_SOURCE else "certified"
        return NOT_OPTIMAL, f"not optimal: the objective can drop by {improvement:.6g} ({how})"
    if gap <= tolerance * scale and convex.exact:
        return GLOBALLY_OPTIMAL, "globally optimal (exact enumeration)"
    if g_gap <= tolerance * scale:  # the oracle's certified global lower bound closes the gap
        return GLOBALLY_OPTIMAL, f"globally optimal (proved, global gap <= {g_gap:.3g})"
    if gap <= tolerance * scale and descent.descent_drop <= tolerance * scale:
        weak = ""
        if descent.max_dual_ratio > 1.0 and descent.descent_drop > 0.0:
            # neurons with |r^T relu(X u)| > beta exist, but adding one improves (2) by less than
            # the tolerance: say so rather than let "no descent neuron found" stand alone
            weak = (f"; the best neuron found has dual ratio {descent.max_dual_ratio:.6g} and improves the "
                    f"objective by only {descent.descent_drop:.3g}, below the tolerance")
        return OPTIMAL_OVER_S, (f"optimal over S; no descent neuron found in {descent.search_starts} starts "
                                f"(not a proof of global optimality){weak}") + _global_note(glob, g_gap)
    return INCONCLUSIVE, (f"inconclusive: the objective is {gap:.3g} above the certified lower bound over S "
                          f"({'exact' if convex.exact else 'sampled'}), but no better network was built "
                          f"(solver status {solver_status})") + _global_note(glob, g_gap)
