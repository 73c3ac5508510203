"""One benchmark cell: one solver on one instance under a time budget.

Registry solvers (ours and the CVXPY backends) run through the public ``cd.solve``
(recover + certify, so the reported status is the one a user gets); peers through
:mod:`convexdual.benchmark.peers`. A cell records the reported status and message, the
time-to-accuracy trace (every logged iterate the solver's history has, then the final
point), timings, the certificate, and peak memory.

Memory is **resident set size (RSS) sampled every 20 ms** from ``/proc/<pid>/status``
(not tracemalloc: torch, Clarabel and SCS allocate outside Python's allocator). With
process isolation (the default of ``convexdual benchmark``) the runner samples the worker
process; in-process runs sample this process. ``peak_rss_mb`` is the peak during the cell,
``peak_rss_increase_mb`` that minus the RSS when the cell started.

:func:`worker_main` is the loop of the isolated worker process: it builds instances
(cached), computes references and runs cells sent over a pipe.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import traceback
from pathlib import Path
from typing import Any

__all__ = ["RSSSampler", "run_cell", "solver_kind", "FIRST_ORDER", "worker_main"]

#: our iterative solvers: their iteration limit is lifted so the time budget is what stops them
FIRST_ORDER = ("fista", "augmented_lagrangian", "adam_hinge")


def solver_kind(name: str) -> str:
    """"cvxpy backend", "convexdual", "peer" or "paper baseline" (for tables and ratios)."""
    if name in ("clarabel", "mosek", "scs", "ecos"):
        return "CVXPY backend"
    if name.startswith("scnn"):
        return "peer (pyscnn)"
    if name == "adam_hinge":
        return "paper baseline (Adam + hinge)"
    return "convexdual"


# --------------------------------------------------------------------------------------------- memory
def _rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class RSSSampler:
    """Peak RSS of process ``pid`` sampled every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid, self.interval = pid, interval
        self.start_kb = _rss_kb(pid) or 0
        self.peak_kb = self.start_kb
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            kb = _rss_kb(self.pid)
            if kb is not None and kb > self.peak_kb:
                self.peak_kb = kb
            self._stop.wait(self.interval)

    def __enter__(self) -> "RSSSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def result(self) -> dict[str, float]:
        return {"peak_rss_mb": self.peak_kb / 1024.0, "peak_rss_increase_mb": (self.peak_kb - self.start_kb) / 1024.0,
                "memory_method": f"RSS sampled every {self.interval * 1000:.0f} ms (/proc/<pid>/status VmRSS)"}


# --------------------------------------------------------------------------------------------- one cell
def _scale_of_history(result: Any, problem: Any) -> float:
    """Factor from a rescaled solve's history objectives to the problem's units (1 when not rescaled)."""
    sc = result.info.get("unit_scales") if isinstance(result.info, dict) else None
    if not sc:
        return 1.0
    b = float(sc["targets"])
    return b if problem.loss.name == "absolute" else b * b


def _registry_cell(problem: Any, solver: str, *, time_limit: float | None, device: str,
                   threads: int | None) -> dict[str, Any]:
    import convexdual as cd
    from convexdual._registry import get_solver

    backend = get_solver(solver)
    fields = {f.name for f in dataclasses.fields(backend.options_class)}
    opts: dict[str, Any] = {}
    if time_limit is not None:
        opts["time_limit"] = float(time_limit)
    if "num_threads" in fields and threads is not None:
        opts["num_threads"] = int(threads)
    if "device" in fields:
        opts["device"] = device
    if solver in FIRST_ORDER and time_limit is not None:
        opts["max_iter"] = 1_000_000
    notes = []
    t0 = time.perf_counter()
    try:
        try:
            res = cd.solve(problem, solver, options=dict(opts), device=device)
        except ValueError as exc:
            if "time_limit" not in str(exc) or "time_limit" not in opts:
                raise
            opts.pop("time_limit")
            notes.append(f"no time limit: {exc} (the runner's hard limit applies)")
            t0 = time.perf_counter()
            res = cd.solve(problem, solver, options=dict(opts), device=device)
    except (ValueError, TypeError) as exc:
        return {"status": "not_applicable", "message": f"{type(exc).__name__}: {exc}", "trace": [], "options": opts}
    except MemoryError as exc:
        return {"status": "refused_memory", "message": f"{type(exc).__name__}: {exc}", "trace": [], "options": opts}
    wall = time.perf_counter() - t0
    build = float(res.timings.build)
    scale = _scale_of_history(res, problem)
    trace = []
    for h in res.history:
        if "time" in h and "objective" in h and h["objective"] is not None:
            v = h.get("violation")
            trace.append({"time": build + float(h["time"]), "objective": float(h["objective"]) * scale,
                          "violation": None if v is None else float(v), "source": "solver history"})
    c = res.certificate
    final_v = float(c.max_violation) if c is not None else (
        problem.cone_violation(res.W, res.Z) if res.W is not None else None)
    if res.W is not None:
        trace.append({"time": build + float(res.timings.solve), "objective": float(res.objective),
                      "violation": final_v, "source": "final point"})
    rec: dict[str, Any] = {
        "status": res.status.value, "message": "; ".join(notes + [res.message]) if notes else res.message,
        "objective": float(res.objective), "iterations": int(res.iterations), "trace": trace,
        "timings": res.timings.to_dict(), "wall_seconds": wall, "options": opts,
        "native_status": res.info.get("native_status") if isinstance(res.info, dict) else None,
    }
    if c is not None:
        rec["certificate"] = {"relative_gap": float(c.relative_gap), "max_violation": float(c.max_violation),
                              "dual_bound": float(c.dual_bound), "num_neurons": int(c.num_neurons), "ok": bool(c.ok),
                              "scope": c.scope}
    return rec


def run_cell(problem: Any, solver: str, *, time_limit: float | None, device: str = "cpu",
             threads: int | None = 1, sample_memory: bool = True) -> dict[str, Any]:
    """Run ``solver`` (a registry name or a peer) on ``problem``; the cell record (no reference check)."""
    import os

    from convexdual.benchmark.peers import PEERS, run_peer

    sampler = RSSSampler(os.getpid()) if sample_memory else None
    t0 = time.perf_counter()
    try:
        if sampler is not None:
            sampler.__enter__()
        try:
            if solver in PEERS:
                rec = run_peer(solver, problem, time_limit=time_limit)
            else:
                rec = _registry_cell(problem, solver, time_limit=time_limit, device=device, threads=threads)
        except Exception as exc:  # a crashing solver is a result, not the end of the benchmark
            rec = {"status": "error", "message": f"{type(exc).__name__}: {exc}", "trace": [],
                   "traceback": traceback.format_exc(limit=8)}
    finally:
        if sampler is not None:
            sampler.__exit__(None, None, None)
    rec.setdefault("wall_seconds", time.perf_counter() - t0)
    if sampler is not None:
        rec.update(sampler.result())
    return rec


# --------------------------------------------------------------------------------------------- worker
def worker_main(conn: Any) -> None:
    """Loop of the isolated worker: jobs ``{"kind": "reference" | "cell", ...}`` in, records out."""
    from convexdual._io import to_jsonable
    from convexdual.benchmark.instances import build_instance
    from convexdual.benchmark.reference import get_reference
    from convexdual.checkpoint import problem_fingerprint

    problems: dict[str, Any] = {}
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        try:
            name = job["instance"]
            if name not in problems:
                problems.clear()  # one instance at a time: memory stays that of one problem
                problems[name] = build_instance(name)
            problem = problems[name]
            if job["kind"] == "reference":
                ref, computed = get_reference(problem, name, Path(job["folder"]), device=job.get("device", "cpu"))
                out = {"reference": ref, "computed": computed}
            else:
                out = run_cell(problem, job["solver"], time_limit=job["time_limit"], device=job["device"],
                               threads=job["threads"], sample_memory=False)
                out["fingerprint"] = problem_fingerprint(problem)
            conn.send(to_jsonable(out))
        except Exception as exc:
            conn.send({"status": "error", "message": f"{type(exc).__name__}: {exc}",
                       "traceback": traceback.format_exc(limit=8), "trace": []})
