"""``run_benchmark``: every available solver on every instance of a suite, one budget, resumable.

Order of work: for each instance, its reference (stored or computed once), then each solver's
cell. Cells run in one worker process (``isolate=True``, the command's default: a hard wall
limit of ``2 * time_limit + 30`` s and a memory cap kill a cell that overruns, the worker is
restarted, and its RSS is sampled from outside) or in this process (``isolate=False``: tests).
Every finished cell is written at once to ``<out>/cells/<instance>/<solver>.json``
(atomic); with ``resume`` a cell whose file matches the instance's fingerprint and the run's
settings is reused instead of run again.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from convexdual.benchmark.instances import INSTANCES, SUITES
from convexdual.benchmark.profiles import ACCURACIES, relative_error, time_to_accuracy

__all__ = ["DEFAULT_TIME_LIMIT", "all_solver_names", "resolve_instances", "resolve_solvers", "solver_availability",
           "evaluate_cell", "run_benchmark", "STATUS_TOLERANCE"]

#: per-cell budget (seconds) of each suite when --time-limit is not given
DEFAULT_TIME_LIMIT = {"small": 5.0, "full": 15.0}
#: a solver reporting "optimal" must be this close (relative) to the certified reference
STATUS_TOLERANCE = 1e-6
#: memory cap of an isolated cell (MB of worker RSS): above it the cell is killed
DEFAULT_MEMORY_CAP_MB = 8000.0
_CELL_FORMAT = "convexdual-benchmark-cell"


def all_solver_names() -> list[str]:
    from convexdual._registry import SOLVERS
    from convexdual.benchmark.peers import PEERS

    return list(SOLVERS) + list(PEERS)


def solver_availability() -> dict[str, str]:
    """``{name: "ok" or why it cannot run}`` for every registry solver and peer."""
    from convexdual._registry import available_solvers
    from convexdual.benchmark.peers import PEERS, peer_available

    out = dict(available_solvers())
    for p in PEERS:
        ok, why = peer_available(p)
        out[p] = "ok" if ok else why
    return out


def _names(value: Sequence[str] | str | None) -> list[str] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    return [x.strip() for item in items for x in str(item).split(",") if x.strip()]


def resolve_instances(suite: str, instances: Sequence[str] | str | None = None) -> list[str]:
    """The instance names to run; ValueError naming the allowed suites / instances."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; the suites are: {', '.join(SUITES)}")
    names = _names(instances)
    if names is None:
        return list(SUITES[suite])
    bad = [n for n in names if n not in INSTANCES]
    if bad:
        raise ValueError(f"unknown instance(s) {', '.join(map(repr, bad))}; the instances are: {', '.join(INSTANCES)}")
    return list(dict.fromkeys(names))


def resolve_solvers(solvers: Sequence[str] | str | None = None) -> list[str]:
    """The solver names asked for (default: all registry solvers and peers); ValueError listing the allowed."""
    allowed = all_solver_names()
    names = _names(solvers)
    if names is None:
        return allowed
    bad = [n for n in names if n not in allowed]
    if bad:
        raise ValueError(f"unknown solver(s) {', '.join(map(repr, bad))}; the solvers are: {', '.join(allowed)}")
    return list(dict.fromkeys(names))


# --------------------------------------------------------------------------------------------- evaluation
def evaluate_cell(record: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """Scores of a cell against the reference: errors per point, times to accuracy, the status check."""
    f_ref = float(reference["objective"])
    trace = sorted(record.get("trace") or [], key=lambda p: float(p["time"]))
    for p in trace:
        p["relative_error"] = relative_error(p.get("objective"), f_ref)
    out: dict[str, Any] = {f"time_to_{eps:.0e}": time_to_accuracy(trace, f_ref, eps) for eps in ACCURACIES}
    final = trace[-1] if trace else None
    out["final_relative_error"] = None if final is None else final["relative_error"]
    out["final_violation"] = None if final is None else final.get("violation")
    status = record.get("status")
    check: dict[str, Any] = {"claim": status}
    obj = record.get("objective")
    if status == "optimal":
        err = relative_error(obj, f_ref)
        check["relative_error"] = err
        check["ok"] = bool(err <= STATUS_TOLERANCE)
        if not check["ok"]:
            check["problem"] = (f"reports optimal but its objective {obj!r} is {err:.2e} (relative) from the "
                                f"certified reference {f_ref!r} (tolerance {STATUS_TOLERANCE:g})")
    else:
        check["ok"] = None  # no optimality claim to check
    lb = reference.get("dual_bound")
    if obj is not None and lb is not None and final is not None and math.isfinite(float(obj)):
        v = final.get("violation")
        # below the certified bound by more than the benchmark's resolution (a point with a tiny violation
        # may lie slightly below it: that is not a contradiction)
        if v is not None and float(v) <= 1e-7 and float(obj) < float(lb) - STATUS_TOLERANCE * abs(float(lb)):
            check["ok"] = False
            check["problem"] = (f"a feasible point (violation {float(v):.1e}) with objective {obj!r} below the "
                                f"reference's certified lower bound {lb!r}: the reference or the certificate is wrong")
    out["status_check"] = check
    return out


# --------------------------------------------------------------------------------------------- execution
class _Worker:
    """One spawned worker process running jobs; killed and restarted when a job overruns."""

    def __init__(self, threads: int | None) -> None:
        self.threads = threads
        self.proc: Any = None
        self.conn: Any = None

    def _start(self) -> None:
        from convexdual.benchmark.cells import worker_main

        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        saved = dict(os.environ)
        if self.threads is not None:
            for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS",
                      "NUMBA_NUM_THREADS"):
                os.environ[k] = str(self.threads)
        try:
            self.proc = ctx.Process(target=worker_main, args=(child,), daemon=True)
            self.proc.start()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        child.close()
        self.conn = parent

    def stop(self) -> None:
        if self.proc is not None:
            try:
                self.conn.send(None)
            except (OSError, BrokenPipeError):
                pass
            self.proc.join(5)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(5)
        self.proc = self.conn = None

    def _kill(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()
            self.proc.join(10)
        self.proc = self.conn = None

    def run(self, job: dict[str, Any], hard_limit: float | None, memory_cap_mb: float) -> dict[str, Any]:
        from convexdual.benchmark.cells import RSSSampler

        if self.proc is None or not self.proc.is_alive():
            self._start()
        t0 = time.perf_counter()
        self.conn.send(job)
        with RSSSampler(self.proc.pid) as sampler:
            while True:
                if self.conn.poll(0.1):
                    try:
                        out = self.conn.recv()
                    except EOFError:
                        out = None
                    break
                if not self.proc.is_alive():
                    out = None
                    break
                elapsed = time.perf_counter() - t0
                if hard_limit is not None and elapsed > hard_limit:
                    self._kill()
                    out = {"status": "killed", "message": f"killed at the runner's hard limit ({hard_limit:.0f} s "
                           f"wall): no result within the budget", "trace": []}
                    break
                if sampler.peak_kb / 1024.0 > memory_cap_mb:
                    self._kill()
                    out = {"status": "killed", "message": f"killed: worker RSS above the memory cap "
                           f"({memory_cap_mb:.0f} MB)", "trace": []}
                    break
        if out is None:
            code = None if self.proc is None else self.proc.exitcode
            self._kill()
            out = {"status": "error", "message": f"the worker process died (exit code {code})", "trace": []}
        if job["kind"] == "cell":
            out.update(sampler.result())
            out.setdefault("wall_seconds", time.perf_counter() - t0)
        return out


class _InProcess:
    """Jobs in this process (no hard limit; memory sampled on this process)."""

    def __init__(self) -> None:
        self.problems: dict[str, Any] = {}

    def problem(self, name: str) -> Any:
        from convexdual.benchmark.instances import build_instance

        if name not in self.problems:
            self.problems.clear()
            self.problems[name] = build_instance(name)
        return self.problems[name]

    def run(self, job: dict[str, Any], hard_limit: float | None, memory_cap_mb: float) -> dict[str, Any]:
        from convexdual._io import to_jsonable
        from convexdual.benchmark.cells import run_cell
        from convexdual.benchmark.reference import get_reference
        from convexdual.checkpoint import problem_fingerprint

        problem = self.problem(job["instance"])
        if job["kind"] == "reference":
            ref, computed = get_reference(problem, job["instance"], Path(job["folder"]), device=job["device"])
            return to_jsonable({"reference": ref, "computed": computed})
        out = run_cell(problem, job["solver"], time_limit=job["time_limit"], device=job["device"],
                       threads=job["threads"])
        out["fingerprint"] = problem_fingerprint(problem)
        return to_jsonable(out)

    def stop(self) -> None:
        self.problems.clear()


def _cell_path(out: Path, instance: str, solver: str) -> Path:
    return out / "cells" / instance / f"{solver}.json"


def _load_cell(path: Path, fingerprint: str, settings: dict[str, Any]) -> dict[str, Any] | None:
    import json

    if not path.is_file():
        return None
    try:
        cell = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if cell.get("format") != _CELL_FORMAT or cell.get("fingerprint") != fingerprint or cell.get("settings") != settings:
        return None
    return cell


def run_benchmark(suite: str = "small", *, instances: Sequence[str] | str | None = None,
                  solvers: Sequence[str] | str | None = None, time_limit: float | None = None, device: str = "cpu",
                  out: str | os.PathLike = "benchmark-results", resume: bool = False,
                  references: str | os.PathLike | None = None, isolate: bool = True, threads: int | None = 1,
                  memory_cap_mb: float = DEFAULT_MEMORY_CAP_MB, write: bool = True,
                  log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the report (also written to ``out`` unless ``write`` is false).

    Args:
        suite: "small" or "full" (:data:`~convexdual.benchmark.instances.SUITES`).
        instances, solvers: subsets by name (lists or comma-separated strings); unknown names
            raise ValueError listing the allowed ones. Unavailable solvers are reported, not run.
        time_limit: seconds per cell (default :data:`DEFAULT_TIME_LIMIT` of the suite).
        device: torch device of our torch solvers and the recovered networks.
        out: output folder (``benchmark.json``, ``summary.md``, PNGs, ``cells/``, ``references/``).
        resume: reuse finished cells of an earlier run with the same settings.
        references: folder of stored reference optima (default ``<out>/references``).
        isolate: run cells in a worker process (hard limit, memory cap).
        threads: BLAS/torch threads of the solvers (None: leave as they are).
    """
    from convexdual._io import atomic_write_json, to_jsonable

    names = resolve_instances(suite, instances)
    wanted = resolve_solvers(solvers)
    if time_limit is None:
        time_limit = DEFAULT_TIME_LIMIT[suite]
    if not (float(time_limit) > 0):
        raise ValueError(f"time_limit must be > 0 seconds, got {time_limit!r}")
    time_limit = float(time_limit)
    say = log or (lambda s: print(s, file=sys.stderr, flush=True))
    out = Path(out)
    ref_dir = Path(references) if references is not None else out / "references"
    availability = solver_availability()
    runnable = [s for s in wanted if availability.get(s) == "ok"]
    unavailable = {s: availability.get(s, "unknown") for s in wanted if availability.get(s) != "ok"}
    settings = {"time_limit": time_limit, "device": str(device), "threads": threads, "isolated": bool(isolate)}
    hard_limit = 2 * time_limit + 30.0 if isolate else None
    execu: Any = _Worker(threads) if isolate else _InProcess()
    t_start = time.perf_counter()
    report: dict[str, Any] = {
        "format": "convexdual-benchmark", "version": 1, "suite": suite, "settings": settings,
        "accuracies": list(ACCURACIES), "status_tolerance": STATUS_TOLERANCE,
        "machine": {"cpus": os.cpu_count(), "load_avg_start": list(os.getloadavg()), "platform": sys.platform},
        "solvers": {s: {"available": availability.get(s) == "ok", "reason": availability.get(s),
                        "kind": _kind(s)} for s in wanted},
        "unavailable": unavailable, "instances": {}, "cells": {}, "status_violations": [],
    }
    from convexdual.benchmark.instances import get_instance

    try:
        for name in names:
            spec = get_instance(name)
            t0 = time.perf_counter()
            got = execu.run({"kind": "reference", "instance": name, "folder": str(ref_dir), "device": str(device)},
                            None, memory_cap_mb)
            if "reference" not in got:
                raise RuntimeError(f"no reference for {name}: {got.get('message')}")
            ref = got["reference"]
            say(f"[{name}] reference {ref['objective']:.12g} by {ref['solver']} (gap {ref['relative_gap']:.1e}"
                f"{', computed now in %.1f s' % (time.perf_counter() - t0) if got['computed'] else ', stored'})")
            report["instances"][name] = {"description": spec.description, "spec": spec, "problem": ref["problem"],
                                         "fingerprint": ref["fingerprint"], "reference": ref}
            report["cells"][name] = {}
            for solver in runnable:
                path = _cell_path(out, name, solver)
                cell = _load_cell(path, ref["fingerprint"], settings) if resume else None
                reused = cell is not None
                if cell is None:
                    job = {"kind": "cell", "instance": name, "solver": solver, "time_limit": time_limit,
                           "device": str(device), "threads": threads}
                    rec = execu.run(job, hard_limit, memory_cap_mb)
                    rec.pop("fingerprint", None)
                    cell = {"format": _CELL_FORMAT, "instance": name, "solver": solver,
                            "fingerprint": ref["fingerprint"], "settings": settings, "record": rec}
                    if write:
                        atomic_write_json(path, to_jsonable(cell))
                rec = cell["record"]
                ev = evaluate_cell(rec, ref)
                entry = {**rec, **ev, "reused": reused, "kind": _kind(solver)}
                report["cells"][name][solver] = entry
                chk = ev["status_check"]
                if chk.get("ok") is False:
                    v = {"instance": name, "solver": solver, "problem": chk["problem"]}
                    report["status_violations"].append(v)
                    say(f"!!! STATUS VIOLATION [{name}] {solver}: {chk['problem']}")
                t6 = ev.get("time_to_1e-06")
                say(f"[{name}] {solver:22s} {rec.get('status', '?'):18s} "
                    f"final err {_fmt(ev['final_relative_error'])} viol {_fmt(ev['final_violation'])} "
                    f"t(1e-6) {_fmt(t6, 's')}{' (reused)' if reused else ''}")
    finally:
        execu.stop()
    report["wall_seconds"] = time.perf_counter() - t_start
    from convexdual.benchmark.report import add_analysis, write_outputs

    add_analysis(report)
    if write:
        write_outputs(report, out)
    return report


def _kind(s: str) -> str:
    from convexdual.benchmark.cells import solver_kind

    return solver_kind(s)


def _fmt(x: Any, unit: str = "") -> str:
    if x is None:
        return "-"
    try:
        return f"{float(x):.2e}{unit}" if not unit else f"{float(x):.3g}{unit}"
    except (TypeError, ValueError):
        return str(x)
