"""Pattern generation: solve (4) by column generation over sign patterns (docs/math.md §6).

Random sampling needs thousands of patterns before the restricted program (4) stops
improving (the paper: about 4,000 at sigma = 0.5). Most of them end up with zero
groups. Column generation builds the pattern set from the problem instead:

1. solve (4) over a few patterns S (any registered solver);
2. with the optimal residual ``r = y - yhat`` (``-dL/dyhat`` for other losses),
   search all of R^d for descent neurons ``|r^T relu(X u)| > beta ||u||``
   (:func:`convexdual.descent.search_descent`): they are exactly the violated dual
   constraints of the full program, i.e. patterns whose groups would enter;
3. add the cells of the best violators to S and re-solve; stop when the search finds
   no violator outside S.

Each round's solve is a full solve over the grown S (Clarabel has no warm start; the
default inner solver ``"clarabel-ws"`` keeps each re-solve small with its own working
set). When the loop stops, the last solve is certified over S and the search found no
descent neuron in its starts: optimal over S, with no evidence of a better pattern
(a search, not a proof; exact enumeration is the proof on tiny data).

With ``GenerationOptions(oracle="global")`` the pricing step ends with the branch-and-bound
oracle over *all* sign patterns (:mod:`convexdual.global_oracle`, issue 16): a round in
which the search adds nothing calls it on the optimal residual; its descent neuron's gate
is added, and when it proves dual feasibility the loop ends with a *certified global
optimum of (2)* (the residual scaled by ``beta / max(beta, upper)`` is feasible for the
dual of the full problem; ``info["global_gap"]`` is the certified global gap).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from convexdual._validation import check_fields
from convexdual.descent import search_descent
from convexdual.patterns import SignPatterns, pattern_hashes, patterns_from_gates
from convexdual.problem import DualProblem
from convexdual.result import SolveResult

__all__ = ["GenerationOptions", "PatternGenerationResult", "generate_patterns"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationOptions:
    """Options of :func:`generate_patterns`.

    Attributes:
        max_rounds: solves before giving up (``converged`` stays False).
        patterns_per_round: most new cells added per round (best violators first).
        num_starts, num_gates, search_steps: the descent search of each round.
        margin: a cell is a violator when its ratio exceeds ``1 + margin``.
        seed: seeds every round's search (round ``t`` uses ``seed + t``).
        time_limit: seconds for the whole loop (checked between rounds), or None.
        device: where the search's convolutions run.
        checkpoint_path: ``.npz`` written after every round (the gates of S and the
            history); ``resume_from`` restarts from such a file.
        resume_from: a checkpoint of a run on the same data and kernel size.
        oracle: the pricing step. "search": the descent search only (converges to "no
            violator found", not a proof). "global": the search first, and in a round where
            it adds nothing, the branch-and-bound oracle over *all* sign patterns
            (:func:`convexdual.global_oracle.global_max_correlation`): its descent neuron's
            gate is added; when it proves ``max |r^T relu(Xu)| <= beta (1 + margin)(1 + eps)``
            the loop ends with a certified global optimum of (2).
        oracle_time_limit: seconds per oracle call (None: unlimited); when one runs out the
            loop stops with the certified global gap reached (``info["global_gap"]``).
        oracle_eps: the oracle's relative tolerance (None: ``margin / 4``).
    """

    max_rounds: int = 40
    patterns_per_round: int = 8
    num_starts: int = 64
    num_gates: int = 1024
    search_steps: int = 200
    margin: float = 1e-6
    seed: int = 0
    time_limit: float | None = None
    device: str = "cpu"
    checkpoint_path: str | None = None
    resume_from: str | None = None
    oracle: str = "search"
    oracle_time_limit: float | None = 60.0
    oracle_eps: float | None = None

    def __post_init__(self) -> None:
        if self.oracle not in ("search", "global"):
            raise ValueError(f"oracle must be 'search' or 'global', got {self.oracle!r}")
        if self.oracle_time_limit is not None and not (self.oracle_time_limit > 0):
            raise ValueError(f"oracle_time_limit must be > 0 seconds or None, got {self.oracle_time_limit}")
        if self.oracle_eps is not None and not (self.oracle_eps > 0):
            raise ValueError(f"oracle_eps must be > 0 or None, got {self.oracle_eps}")
        check_fields(self, ("max_rounds", "patterns_per_round"), ">=", 1)
        check_fields(self, ("num_starts", "num_gates", "search_steps"), ">=", 0)
        if self.num_starts + self.num_gates == 0:
            raise ValueError("the search needs num_starts > 0 or num_gates > 0")
        if not (self.margin >= 0):
            raise ValueError(f"margin must be >= 0, got {self.margin}")
        if self.time_limit is not None and not (self.time_limit > 0):
            raise ValueError(f"time_limit must be > 0 seconds or None, got {self.time_limit}")
        if self.resume_from is not None and not Path(self.resume_from).is_file():
            raise ValueError(f"resume_from={self.resume_from!r} is not a file; give a checkpoint_path of an earlier run")


@dataclass(frozen=True, eq=False)
class PatternGenerationResult:
    """Outcome of :func:`generate_patterns`.

    Attributes:
        result: the final solve (network and certificate over the final S attached).
        problem: program (4) over the final pattern set S.
        patterns: the final S.
        converged: the last search found no violator outside S.
        rounds: per round: ``round, patterns, objective, dual_bound, status,
            max_ratio, added, solve_seconds, search_seconds``.
        message: why the loop stopped.
        seconds: wall time of the whole loop.
    """

    result: SolveResult
    problem: DualProblem
    patterns: SignPatterns
    converged: bool
    rounds: tuple[dict[str, Any], ...]
    message: str
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_patterns(self) -> int:
        return self.patterns.num_patterns

    def summary(self) -> str:
        last = self.rounds[-1] if self.rounds else {}
        return (f"pattern generation: {'converged' if self.converged else 'NOT converged'} after "
                f"{len(self.rounds)} round(s), {self.num_patterns} patterns, objective "
                f"{self.result.objective:.10g}, last max ratio {last.get('max_ratio', float('nan')):.9g} "
                f"({self.seconds:.1f} s): {self.message}")


def _with_patterns(problem: DualProblem, patterns: SignPatterns) -> DualProblem:
    return dataclasses.replace(problem, patterns=patterns)


def _save(path: str, patterns: SignPatterns, rounds: list[dict[str, Any]]) -> None:
    from convexdual._io import atomic_save_npz

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_save_npz(path, gates=patterns.gates, rounds=np.array(json.dumps(rounds)))


def _add_cells(prob: DualProblem, S: SignPatterns, gates: list[np.ndarray], limit: int
               ) -> tuple[SignPatterns, int]:
    """``S`` plus the best ``limit`` cells of ``gates`` (best first) that are genuinely new, and how many."""
    if not len(gates):
        return S, 0
    new = patterns_from_gates(prob.inputs, prob.kernel_size, np.array(gates), source="generated")
    have = set(pattern_hashes(prob.inputs, prob.kernel_size, S.gates))
    fresh = [j for j, h in enumerate(pattern_hashes(prob.inputs, prob.kernel_size, new.gates)) if h not in have][:limit]
    if not fresh:
        return S, 0
    return SignPatterns(gates=np.concatenate([S.gates, new.gates[fresh]]), exact=False,
                        num_requested=S.num_patterns + len(fresh), source="generated",
                        data_key=new.data_key), len(fresh)


def _oracle_message(orc: Any, glob: dict[str, Any], result: SolveResult, t: int, beta: float) -> str:
    """Why the loop ends after the branch-and-bound oracle priced round ``t`` and added nothing."""
    rel = glob["global_gap"] / max(abs(float(result.objective)), 1e-300)
    if orc.verdict == "feasible" and result.status.is_optimal:
        return ("converged: certified global optimum of (2) (proved by the branch-and-bound oracle; "
                f"certified global gap {glob['global_gap']:.3g}, {rel:.2e} relative, "
                f"{orc.nodes} nodes, {orc.seconds:.3g} s)")
    if orc.verdict == "feasible":
        return (f"the oracle proved dual feasibility, but the solve over S is {result.status.value}, "
                f"not certified (certified global gap {glob['global_gap']:.3g})")
    if orc.verdict == "descent":
        return (f"round {t}: the oracle's descent neuron (ratio {orc.lower / beta:.9g}) has a "
                "pattern already in S (the solve over S is not accurate enough); certified global "
                f"gap {glob['global_gap']:.3g}")
    return (f"oracle budget ran out ({orc.nodes} nodes, {orc.seconds:.3g} s, max in "
            f"[{orc.lower:.6g}, {orc.upper:.6g}] vs beta {beta:.6g}): certified global gap "
            f"{glob['global_gap']:.3g} ({rel:.2e} relative); not proved")


def _price_globally(prob: DualProblem, Xp: np.ndarray, r: np.ndarray, opts: GenerationOptions, t: int,
                    seeds: np.ndarray | None = None) -> Any:
    """The branch-and-bound oracle at the residual's dual point ``r``, against ``beta (1 + margin)``;
    ``seeds``: the current net's neurons, whose neighbouring sign-pattern cells it probes first."""
    from convexdual.global_oracle import global_max_correlation

    o_eps = 0.25 * opts.margin if opts.oracle_eps is None else float(opts.oracle_eps)
    o_eps = o_eps if o_eps > 0 else 1e-9
    return global_max_correlation(Xp, r, beta=prob.beta * (1.0 + opts.margin), eps=o_eps,
                                  time_limit=opts.oracle_time_limit, device=opts.device, seed=opts.seed + t,
                                  seeds=seeds)


def _round_record(prob: DualProblem, result: SolveResult, search: Any, orc: Any, r: np.ndarray, t: int, added: int,
                  solve_s: float, search_s: float, elapsed: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """Round ``t``'s row of ``rounds`` and the oracle's numbers (``{}`` when it did not run)."""
    cert = result.certificate
    rec = {"round": t, "patterns": prob.P, "objective": float(result.objective),
           "dual_bound": float(cert.dual_bound) if cert is not None else float("nan"),
           "status": result.status.value, "max_ratio": float(search.max_ratio), "added": added,
           "solve_seconds": solve_s, "search_seconds": search_s, "elapsed": elapsed}
    glob: dict[str, Any] = {}
    if orc is not None:
        g = prob.engine.dual_bound(prob.loss, prob.y, prob.beta, r, max_constraint=max(float(orc.upper), 0.0))
        glob = {"oracle_status": orc.status, "oracle_verdict": orc.verdict, "oracle_upper": float(orc.upper),
                "oracle_lower": float(orc.lower), "oracle_nodes": int(orc.nodes),
                "oracle_seconds": float(orc.seconds), "global_lower_bound": float(g.value),
                "global_gap": float(result.objective - g.value)}
        rec.update(glob)
        rec["max_ratio"] = max(rec["max_ratio"], float(orc.lower) / prob.beta)
    return rec, glob


def generate_patterns(
    problem: DualProblem,
    *,
    solver: str | None = None,
    solver_options: Any = None,
    options: GenerationOptions | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> PatternGenerationResult:
    """Solve (4) by column generation, starting from ``problem.patterns``.

    Args:
        problem: the data, beta, loss and the *initial* patterns (a few sampled ones,
            e.g. ``build_problem(..., num_patterns=8)``).
        solver: inner solver name for every round; default "auto"
            (:func:`convexdual.api.choose_solver`).
        solver_options: that solver's options dataclass (None: its defaults).
        options: :class:`GenerationOptions`.
        callback: called with each round's record.

    Returns:
        A :class:`PatternGenerationResult`; ``result`` is the final certified solve.

    Length: the round loop (solve, search, price, record, checkpoint, stop) is still written
    here, over the house's ~60 lines, until it moves onto the iteration harness
    (``solvers/_harness.py``, issue 13); its pieces are :func:`_add_cells`,
    :func:`_price_globally`, :func:`_round_record` and :func:`_oracle_message`.

    Raises:
        TypeError: ``problem`` is not a DualProblem.
        ValueError: a checkpoint that does not fit the data.
    """
    from convexdual.api import solve

    if not isinstance(problem, DualProblem):
        raise TypeError(f"problem must be a DualProblem from convexdual.build_problem(); got {type(problem).__name__}")
    opts = options if options is not None else GenerationOptions()
    name = solver or "auto"
    t0 = time.perf_counter()
    S = problem.patterns
    rounds: list[dict[str, Any]] = []
    if opts.resume_from is not None:
        blob = np.load(opts.resume_from)
        gates = np.asarray(blob["gates"], dtype=np.float64)
        if gates.ndim != 2 or gates.shape[1] != problem.d:
            raise ValueError(f"checkpoint {opts.resume_from} holds gates of shape {gates.shape}, "
                             f"but this problem has d = {problem.d}")
        S = patterns_from_gates(problem.inputs, problem.kernel_size, gates, source="generated")
        rounds = list(json.loads(str(blob["rounds"])))
        logger.info("resumed pattern generation from %s: %d patterns, %d rounds", opts.resume_from, len(S),
                    len(rounds))
    converged = proved = False
    message = ""
    Xp = None
    glob: dict[str, Any] = {}
    result: SolveResult | None = None
    prob = _with_patterns(problem, S)
    # a checkpoint whose last round added nothing holds a finished run: resuming it runs no round
    # (another round would search with another seed and could go on where the run had stopped)
    finished = bool(rounds) and int(rounds[-1].get("added", 1)) == 0
    if finished:
        last = rounds[-1]
        if opts.oracle == "global" and "oracle_verdict" in last:
            converged = proved = last["oracle_verdict"] == "feasible" and last.get("status") == "optimal"
            # the oracle's numbers of that round (its lower bound holds for (2) whatever S is)
            glob = {k: last[k] for k in ("oracle_status", "oracle_verdict", "oracle_upper", "oracle_lower",
                                         "oracle_nodes", "oracle_seconds", "global_lower_bound") if k in last}
        else:
            converged = True
        message = (f"resumed a finished run: round {last['round']} added no pattern (max ratio "
                   f"{float(last['max_ratio']):.9g}{'' if proved else '; a search, not a proof'})")
    for t in range(len(rounds), int(opts.max_rounds) if not finished else 0):
        prob = _with_patterns(problem, S)
        ts = time.perf_counter()
        result = solve(prob, solver=name, options=solver_options)
        solve_s = time.perf_counter() - ts
        if result.W is None or not result.status.has_solution:
            message = f"round {t}: solver {name!r} ended with status {result.status.value} and no solution"
            break
        r = prob.loss.dual_candidate(prob.predict(result.W, result.Z) - prob.y)
        ts = time.perf_counter()
        extra = [S.gates]
        if result.network is not None and result.network.width > 0:
            extra.append(result.network.filters()[0])
        search = search_descent(prob.inputs, prob.kernel_size, r, prob.beta, num_starts=opts.num_starts,
                                num_gates=opts.num_gates, steps=opts.search_steps, extra_gates=np.concatenate(extra),
                                seed=opts.seed + t, margin=opts.margin, device=opts.device)
        search_s = time.perf_counter() - ts
        orc = None
        S, added = _add_cells(prob, S, [c.gate for c in search.violators], int(opts.patterns_per_round))
        if opts.oracle == "global" and added == 0:
            # pricing over all sign patterns, with a proof (docs/global_oracle.md)
            if Xp is None:
                from convexdual.patches import patch_matrix

                Xp = patch_matrix(prob.inputs, prob.kernel_size)
            to = time.perf_counter()
            orc = _price_globally(prob, Xp, r, opts, t, seeds=extra[-1] if len(extra) > 1 else None)
            search_s += time.perf_counter() - to
            if orc.verdict == "descent":
                S, added = _add_cells(prob, S, [np.asarray(orc.argmax)], 1)
        rec, glob = _round_record(prob, result, search, orc, r, t, added, solve_s, search_s, time.perf_counter() - t0)
        rounds.append(rec)
        logger.info("generation round %d: P=%d objective %.10g max ratio %.9g, +%d patterns",
                    t, prob.P, result.objective, search.max_ratio, added)
        if callback is not None:
            callback(rec)
        if opts.checkpoint_path is not None:
            _save(opts.checkpoint_path, S, rounds)
        if added == 0 and orc is not None:
            converged = proved = orc.verdict == "feasible" and result.status.is_optimal
            message = _oracle_message(orc, glob, result, t, prob.beta)
            break
        if added == 0:
            converged = True
            message = (f"no descent neuron outside S found in {search.num_starts} starts and "
                       f"{search.num_gates} gates (max ratio {search.max_ratio:.9g}; a search, not a proof)")
            break
        if opts.time_limit is not None and time.perf_counter() - t0 > opts.time_limit:
            message = f"time limit {opts.time_limit} s reached after round {t}"
            break
    else:
        message = message or f"max_rounds={opts.max_rounds} reached with violators still found"
    if result is None:  # resumed a finished run, or at or beyond max_rounds: solve once over the loaded set
        prob = _with_patterns(problem, S)
        result = solve(prob, solver=name, options=solver_options)
        message = message or "no round left to run (resumed at max_rounds); solved over the loaded patterns"
        if proved and not result.status.is_optimal:
            converged = proved = False
        if "global_lower_bound" in glob:
            glob["global_gap"] = float(result.objective) - float(glob["global_lower_bound"])
    elif not converged and prob.P != S.num_patterns and result.status.has_solution:
        # the last round added patterns: solve once more so the result matches S
        prob = _with_patterns(problem, S)
        result = solve(prob, solver=name, options=solver_options)
    secs = time.perf_counter() - t0
    logger.info("pattern generation: %s", message)
    return PatternGenerationResult(result=result, problem=prob, patterns=prob.patterns, converged=converged,
                                   rounds=tuple(rounds), message=message, seconds=secs,
                                   info={"solver": name, "initial_patterns": problem.P, "oracle": opts.oracle,
                                         "proved_global": proved, **glob})
