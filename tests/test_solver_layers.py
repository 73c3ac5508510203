"""The layering of solvers/ (issue 13): the one direct-Clarabel module, declared capabilities,
no solver module importing another, one "auto" policy."""

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from convexdual._registry import SOLVERS, get_solver
from convexdual.api import AUTO_ORDER, choose_solver
from convexdual.result import Status
from convexdual.solvers import _clarabel

SOLVER_MODULES = {spec.split(":")[0] for spec in SOLVERS.values()}
ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


@pytest.mark.parametrize("module", sorted(SOLVER_MODULES))
def test_no_solver_module_imports_another(module):
    path = ROOT / "solvers" / (module.rsplit(".", 1)[1] + ".py")
    others = (SOLVER_MODULES - {module}) & _imports(path)
    assert not others, f"{module} imports solver module(s) {sorted(others)}; share a primitive module instead"


def test_solvers_package_is_problem_to_raw_result():
    """Nothing under solvers/ recovers networks or applies the status rule: that is the API
    layer's (convexdual.pipeline.finalize)."""
    for path in (ROOT / "solvers").glob("*.py"):
        bad = {"convexdual.recover", "convexdual.pipeline", "convexdual.api"} & _imports(path)
        assert not bad, f"solvers/{path.name} imports {sorted(bad)}"


def test_clarabel_status_map_and_settings():
    assert _clarabel.map_clarabel_status("SolverStatus.Solved") is Status.OPTIMAL
    assert _clarabel.map_clarabel_status("Unheard") is Status.SOLVER_ERROR
    kw = _clarabel.settings_dict(gap_tol=1e-9, feas_tol=1e-8, max_iter=7.0, kkt="qdldl", time_limit=3)
    assert kw == {"tol_gap_abs": 1e-9, "tol_gap_rel": 1e-9, "tol_feas": 1e-8, "max_iter": 7,
                  "direct_solve_method": "qdldl", "time_limit": 3.0}
    with pytest.raises(ValueError, match="clarabel_kkt"):
        _clarabel.settings_dict(gap_tol=1e-9, feas_tol=1e-8, max_iter=7, kkt="mkl")
    st = _clarabel.make_settings(kw, {"equilibrate_enable": False})
    assert st.tol_feas == 1e-8 and st.max_iter == 7 and st.equilibrate_enable is False
    with pytest.raises(ValueError, match="unknown Clarabel setting 'no_such'"):
        _clarabel.make_settings(kw, {"no_such": 1})
    with pytest.raises(ValueError, match="'max_iter' in options.native refused"):
        _clarabel.make_settings(kw, {"max_iter": "many"})


def test_capabilities_drive_accepts(small_problem):
    from convexdual.losses import get_loss

    absolute = dataclasses.replace(small_problem, loss=get_loss("absolute"))
    for name in SOLVERS:
        s = get_solver(name)
        ok, why = s.accepts(absolute)
        assert ok == (s.losses is None or "absolute" in s.losses), (name, why)
        if not ok:
            assert "supports the squared loss only" in why
            with pytest.raises(ValueError, match="squared loss only"):
                s.check_problem(absolute)
        assert s.accepts(small_problem) == (True, "")
    tiny = dataclasses.replace(small_problem, memory_limit_mb=1e-3)
    ok, why = get_solver("clarabel").accepts(tiny)
    assert not ok and "explicit SOCP" in why
    assert get_solver("active_set").accepts(tiny) == (True, "")  # works from the gates


def test_auto_follows_capabilities(small_problem):
    from convexdual.losses import get_loss

    assert choose_solver(small_problem)[0].name == AUTO_ORDER[0] == "active_set"
    absolute = dataclasses.replace(small_problem, loss=get_loss("absolute"))
    chosen = choose_solver(absolute)[0]
    assert chosen.name in AUTO_ORDER[1:] and chosen.accepts(absolute)[0]
    assert choose_solver(None)[0].losses is None


HARNESS = {"fista": dict(max_iter=30, check_every=5), "augmented_lagrangian": dict(max_iter=3, inner_iter=5),
           "adam_hinge": dict(max_iter=4, check_every=2, batch_size=5),
           "active_set": dict(max_iter=3, init_groups=2, groups_per_round=1)}
SCHEMA = ["iteration", "time", "objective", "dual_bound", "relative_gap", "violation"]


@pytest.mark.parametrize("name", sorted(HARNESS))
def test_harness_history_schema_and_limits(name, small_problem, monkeypatch):
    from convexdual.solvers._harness import IterativeSolver

    s = get_solver(name)
    assert isinstance(s, IterativeSolver)
    r = s.solve(small_problem, s.options_class(tol=1e-12, **HARNESS[name]))
    assert r.status is Status.MAX_ITERATIONS and r.history
    assert all(list(row)[:len(SCHEMA)] == SCHEMA for row in r.history)
    assert [row["iteration"] for row in r.history] == sorted({row["iteration"] for row in r.history})
    assert r.iterations == HARNESS[name]["max_iter"] and r.W is not None
    # Ctrl-C in the third step: INTERRUPTED, with the point reached so far
    real = type(s)._step

    def interrupted(self, state, it, left):
        if it == 2:
            raise KeyboardInterrupt
        return real(self, state, it, left)

    monkeypatch.setattr(type(s), "_step", interrupted)
    r2 = s.solve(small_problem, s.options_class(tol=1e-12, **HARNESS[name]))
    assert r2.status is Status.INTERRUPTED and r2.message.startswith("interrupted by the user")
    assert r2.iterations == 2 and r2.W is not None  # two steps completed and np.isfinite(r2.objective)
    monkeypatch.setattr(type(s), "_step", real)
    r3 = s.solve(small_problem, s.options_class(tol=1e-12, time_limit=1e-9, **HARNESS[name]))
    assert r3.status is Status.TIME_LIMIT and r3.iterations == 0 and r3.W is not None
