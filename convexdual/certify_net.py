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

__all__ = ["NetworkCertificate", "certify", "as_two_layer_net", "net_stationarity", "net_to_dual"]

logger = logging.getLogger(__name__)

GLOBALLY_OPTIMAL = "globally_optimal"
OPTIMAL_OVER_S = "optimal_over_S"
NOT_OPTIMAL = "not_optimal"
INCONCLUSIVE = "inconclusive"
ORACLE_SOURCE = "descent neuron (global oracle)"


@dataclass(frozen=True, eq=False)
class NetworkCertificate:
    """What :func:`certify` showed about a network.

    Attributes:
        verdict: one sentence, worded as in the module docstring.
        status: "globally_optimal", "optimal_over_S", "not_optimal" or "inconclusive".
        objective: the net's objective (2) (sum over pixels + ``beta/2 sum(||u||^2 + v^2)``).
        fit, penalty: its two terms.
        width, num_dead: filters, and filters with ``v_j relu(X u_j) == 0`` on the data.
        balance_error: ``max_j | ||u_j|| - |v_j| | / max(||u_j||, |v_j|)`` (0 at any
            stationary point of (2)); over filters that are not both zero.
        gradient_norm: Euclidean norm of the gradient of (2) in all weights.
        relative_gradient_norm: ``gradient_norm / (beta ||(U, v)||)`` (the weight-decay
            term's size; 0 at a stationary point).
        mapped_objective: value of (4) at the net mapped through its own patterns
            (``<= objective``; equal when balanced and no two neurons share a pattern and sign).
        num_own_patterns: distinct patterns of the net's filters.
        num_patterns: ``|S|``. exact: S holds every pattern (the arrangement was enumerated).
        convex_status, convex_objective: the solve of (4) over S.
        lower_bound: certified lower bound on the optimum of (4) over S (global when ``exact``).
        recovered_objective, recovered_width: objective (2) of the net recovered from the solve.
        improvement: certified drop of objective (2) (``objective - objective of improved_network``, >= 0);
            the verdict counts it only above ``tolerance * |objective|``.
        improvement_source: "convex re-solve over S", "descent neuron" or "".
        max_dual_ratio: largest ``|r^T relu(X u)| / (beta ||u||)`` found for the net's
            residual (exact when ``search_exact``); > 1 means a descent neuron.
        descent_neuron: unit ``u`` ``(d,)`` and ``descent_sign`` of the best one, if > 1.
        descent_drop: objective drop from adding it at its best scale (0 if none).
        search_exact, search_starts, search_gates: how the dual feasibility was checked.
        tolerance: relative tolerance of the verdict.
        improved_network: the best explicit network found (None when none beats the net),
            also when its drop is below the tolerance.
        timings: seconds per step.
        global_checked: the branch-and-bound oracle (:mod:`convexdual.global_oracle`) ran on
            the residual named by ``global_residual`` ("recovered": the certified optimum over
            S; "net": the net itself) over *all* sign patterns (only when S is not exact).
        global_status, global_verdict: the oracle's ``status`` ("proved", "descent", "budget")
            and ``verdict`` ("feasible", "descent", None).
        global_upper, global_lower: its certified upper bound on and attained value of
            ``max_{||u||<=1} |r^T relu(X u)|`` (compare with ``beta``).
        global_nodes, global_seconds, global_open_regions: its regions bounded, wall time and
            regions left open.
        global_lower_bound: certified lower bound on the global optimum of (2): the dual
            value of the residual scaled by ``beta / max(beta, global_upper)`` (with exact
            enumeration: ``lower_bound``); nan when neither ran.
        global_gap: ``objective - global_lower_bound`` (certified global gap of the net).
    """

    verdict: str
    status: str
    objective: float
    fit: float
    penalty: float
    width: int
    num_dead: int
    balance_error: float
    gradient_norm: float
    relative_gradient_norm: float
    mapped_objective: float
    num_own_patterns: int
    num_patterns: int
    exact: bool
    convex_status: str
    convex_objective: float
    lower_bound: float
    recovered_objective: float
    recovered_width: int
    improvement: float
    improvement_source: str
    max_dual_ratio: float
    descent_neuron: np.ndarray | None
    descent_sign: float
    descent_drop: float
    search_exact: bool
    search_starts: int
    search_gates: int
    beta: float
    tolerance: float
    improved_network: TwoLayerConvNet | None = None
    timings: dict[str, float] = field(default_factory=dict)
    global_checked: bool = False
    global_status: str = ""
    global_verdict: str | None = None
    global_upper: float = math.nan
    global_lower: float = math.nan
    global_nodes: int = 0
    global_seconds: float = 0.0
    global_open_regions: int = 0
    global_residual: str = ""
    global_lower_bound: float = math.nan
    global_gap: float = math.nan

    @property
    def globally_optimal(self) -> bool:
        return self.status == GLOBALLY_OPTIMAL

    @property
    def relative_improvement(self) -> float:
        return self.improvement / max(abs(self.objective), 1e-300)

    def summary(self) -> str:
        lines = [
            f"verdict     : {self.verdict}",
            f"objective   : {self.objective:.10g} (fit {self.fit:.6g} + penalty {self.penalty:.6g}), "
            f"{self.width} filters ({self.num_dead} dead), beta {self.beta:.6g}",
            f"stationarity: balance error {self.balance_error:.2e}, gradient {self.gradient_norm:.3e} "
            f"(relative {self.relative_gradient_norm:.2e})",
            f"program (4) : net mapped via its {self.num_own_patterns} own patterns {self.mapped_objective:.10g}; "
            f"optimum over S ({self.num_patterns} patterns, {'exact' if self.exact else 'sampled'}) "
            f"{self.convex_objective:.10g} [{self.convex_status}], lower bound {self.lower_bound:.10g}",
            f"recovered   : objective (2) {self.recovered_objective:.10g} with {self.recovered_width} filters",
            f"dual check  : max |r^T relu(Xu)|/(beta||u||) = {self.max_dual_ratio:.6g} "
            + ("(exact over all cells)" if self.search_exact
               else f"(search: {self.search_gates} gates, {self.search_starts} starts)"),
        ]
        if self.global_checked:
            lines.append(f"global      : B&B oracle on the {self.global_residual} residual: {self.global_status}, "
                         f"max |r^T relu(Xu)| in [{self.global_lower:.8g}, {self.global_upper:.8g}] "
                         f"(beta {self.beta:.6g}), {self.global_nodes} nodes, {self.global_seconds:.3g} s; "
                         f"certified global lower bound {self.global_lower_bound:.10g}, global gap "
                         f"{self.global_gap:.3g} ({self.global_gap / max(abs(self.objective), 1e-300):.2e} relative)")
        if self.improvement > 0:
            lines.append(f"improvement : {self.improvement:.6g} ({self.relative_improvement:.2e} relative) "
                         f"by {self.improvement_source}"
                         + ("" if self.status == NOT_OPTIMAL else f"; below the tolerance {self.tolerance:g}, "
                            "so not counted in the verdict"))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (no network; the descent neuron as a list)."""
        out: dict[str, Any] = {}
        for k in self.__dataclass_fields__:
            if k == "improved_network":
                continue
            v = getattr(self, k)
            if isinstance(v, np.ndarray):
                v = [float(a) for a in v]
            elif isinstance(v, (np.floating, np.integer, np.bool_)):
                v = v.item()
            if isinstance(v, float) and not math.isfinite(v):
                v = str(v)
            out[k] = v
        out["relative_improvement"] = self.relative_improvement
        return out


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


def _global_note(glob: dict[str, Any], g_gap: float) -> str:
    """The oracle's partial answer, appended to a verdict that it did not settle."""
    if not glob.get("global_checked"):
        return ""
    if glob["global_status"] == "budget":
        what = (f"budget ran out after {glob['global_nodes']} nodes / {glob['global_seconds']:.3g} s "
                f"(max in [{glob['global_lower']:.6g}, {glob['global_upper']:.6g}] vs beta)")
    elif glob["global_verdict"] == "descent":
        what = "descent neuron with a drop below the tolerance"
    else:
        what = f"{glob['global_status']} after {glob['global_nodes']} nodes"
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
    from convexdual.api import solve

    times: dict[str, float] = {}
    t0 = time.perf_counter()
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

    # 1. objective (2) and stationarity
    objective = primal_objective(f_net, x, y, b, lo)
    U, v = f_net.filters()
    penalty = 0.5 * b * float((U * U).sum() + (v * v).sum())
    stat = net_stationarity(f_net, x, y, b, lo)
    times["objective"] = time.perf_counter() - t0

    # 2. pattern set S = own + enumerated/sampled; the net mapped into (4)
    t = time.perf_counter()
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
    times["patterns"] = time.perf_counter() - t

    # 3. solve (4) over S; lower bounds; the recovered net
    t = time.perf_counter()
    res = solve(problem, solver=solver, options=solver_options)
    times["solve"] = time.perf_counter() - t
    pred_net = f_net.predict(x).reshape(-1) - problem.skip.reshape(-1)
    r = lo.dual_candidate(pred_net - problem.y)
    lb_net, _ = dual_lower_bound(problem, r)
    lower = lb_net
    convex_obj = float(res.objective) if res.W is not None else math.nan
    rec_obj, rec_width, rec_net = math.nan, 0, None
    if res.certificate is not None:
        lower = max(lower, res.certificate.dual_bound)
    if res.network is not None:
        rec_net = as_two_layer_net(res.network)
        rec_obj = primal_objective(rec_net, x, y, b, lo)
        rec_width = rec_net.width

    # 4. descent neurons for the net's own residual
    t = time.perf_counter()
    if S.exact:
        search: DescentSearch = cell_maxima(x, k, r, b, S, margin=tolerance)
    else:
        search = search_descent(x, k, r, b, num_starts=num_starts, num_gates=num_gates, steps=search_steps,
                                extra_gates=np.concatenate([S.gates, U]) if len(U) else S.gates,
                                seed=seed, margin=tolerance, device=device)
    times["search"] = time.perf_counter() - t

    # 5. the branch-and-bound oracle over all sign patterns (issue 16; docs/global_oracle.md)
    glob: dict[str, Any] = {}
    o_drop, o_net = 0.0, None
    if S.exact:
        glob = {"global_lower_bound": float(lower), "global_gap": float(objective - lower)}
    elif global_time_limit:
        t = time.perf_counter()
        from convexdual.global_oracle import global_max_correlation
        from convexdual.patches import patch_matrix

        if rec_net is not None and res.status.is_optimal:
            g_src, g_net = "recovered", rec_net
            v0 = lo.dual_candidate(rec_net.predict(x).reshape(-1) - problem.skip.reshape(-1) - problem.y)
        else:
            g_src, g_net, v0 = "net", f_net, r
        Xp = patch_matrix(x, k)
        o_eps = 0.25 * tolerance if global_eps is None else float(global_eps)
        kw = dict(eps=o_eps, max_nodes=global_max_nodes, device=device, seed=0 if seed is None else int(seed),
                  num_threads=global_threads)
        # decide against beta (1 + eps): a convex optimum over S sits on its active constraints up to the
        # solver's accuracy, and a "descent" of ratio 1 + 1e-9 there would stop the search with nothing proved
        orc = global_max_correlation(Xp, v0, beta=b * (1.0 + o_eps), time_limit=float(global_time_limit), **kw)
        if orc.verdict == "descent":
            o_net, o_obj = _descent_witness(g_net, np.asarray(orc.argmax, dtype=np.float64), float(orc.sign),
                                            x, y, b, lo, v0)
            o_drop = max(objective - o_obj, 0.0)
            left = float(global_time_limit) - (time.perf_counter() - t)
            if o_drop <= tolerance * max(abs(objective), 1e-300) and left > 0:
                # a descent neuron too weak to count: bound the maximum itself for a certified global gap
                orc2 = global_max_correlation(Xp, v0, beta=None, time_limit=left, **kw)
                orc = dataclasses.replace(orc2, verdict="descent", nodes=orc.nodes + orc2.nodes,
                                          seconds=orc.seconds + orc2.seconds)
        # any certified upper bound M: v0 * beta / max(beta, M) is dual feasible for the full problem (2)
        g = problem.engine.dual_bound(lo, problem.y, b, v0, max_constraint=max(float(orc.upper), 0.0)).value
        glob = {"global_checked": True, "global_status": orc.status, "global_verdict": orc.verdict,
                "global_upper": float(orc.upper), "global_lower": float(orc.lower), "global_nodes": int(orc.nodes),
                "global_seconds": float(orc.seconds), "global_open_regions": int(orc.open_regions),
                "global_residual": g_src, "global_lower_bound": float(g), "global_gap": float(objective - g)}
        times["global"] = time.perf_counter() - t
    d_u, d_sign, d_drop, d_net = None, 0.0, 0.0, None
    if search.found and search.best is not None:
        d_u, d_sign = search.best.u, float(search.best.sign)
        d_net, d_obj = _descent_witness(f_net, d_u, d_sign, x, y, b, lo, r)
        d_drop = max(objective - d_obj, 0.0)

    # verdict
    scale = max(abs(objective), 1e-300)
    candidates = [(objective - rec_obj if math.isfinite(rec_obj) else 0.0, "convex re-solve over S", rec_net),
                  (d_drop, "descent neuron", d_net), (o_drop, ORACLE_SOURCE, o_net)]
    improvement, source, improved = max(candidates, key=lambda c: c[0])
    if improvement <= 0.0:  # nothing beats the net (any positive drop is real, if tiny)
        improvement, source, improved = 0.0, "", None
    significant = improvement > tolerance * scale
    gap = objective - lower
    K = search.num_starts
    g_gap = max(glob.get("global_gap", math.nan), 0.0) if glob.get("global_checked") else math.nan
    if significant:
        status = NOT_OPTIMAL
        how = "descent neuron found, certified" if source == ORACLE_SOURCE else "certified"
        verdict = f"not optimal: the objective can drop by {improvement:.6g} ({how})"
    elif gap <= tolerance * scale and S.exact:
        status = GLOBALLY_OPTIMAL
        verdict = "globally optimal (exact enumeration)"
    elif g_gap <= tolerance * scale:  # the oracle's certified global lower bound closes the gap
        status = GLOBALLY_OPTIMAL
        verdict = f"globally optimal (proved, global gap <= {g_gap:.3g})"
    elif gap <= tolerance * scale and d_drop <= tolerance * scale:
        status = OPTIMAL_OVER_S
        verdict = (f"optimal over S; no descent neuron found in {K} starts "
                   f"(not a proof of global optimality)") + _global_note(glob, g_gap)
    else:
        status = INCONCLUSIVE
        verdict = (f"inconclusive: the objective is {gap:.3g} above the certified lower bound over S "
                   f"({'exact' if S.exact else 'sampled'}), but no better network was built "
                   f"(solver status {res.status.value})") + _global_note(glob, g_gap)
    times["total"] = time.perf_counter() - t0
    logger.info("certify: %s", verdict)
    return NetworkCertificate(
        verdict=verdict, status=status, objective=objective, fit=objective - penalty, penalty=penalty,
        width=f_net.width, num_dead=int(stat["num_dead"]), balance_error=stat["balance_error"],
        gradient_norm=stat["gradient_norm"], relative_gradient_norm=stat["relative_gradient_norm"],
        mapped_objective=mapped, num_own_patterns=num_own, num_patterns=S.num_patterns, exact=bool(S.exact),
        convex_status=res.status.value, convex_objective=convex_obj, lower_bound=float(lower),
        recovered_objective=rec_obj, recovered_width=rec_width, improvement=float(improvement),
        improvement_source=source, max_dual_ratio=float(search.max_ratio), descent_neuron=d_u,
        descent_sign=d_sign, descent_drop=float(d_drop), search_exact=bool(search.exact),
        search_starts=K, search_gates=search.num_gates, beta=b, tolerance=float(tolerance),
        improved_network=improved, timings=times, **glob,
    )

