"""Mutation testing of the certificate engine, the status rule, recovery and the pattern masks
(issue 18, item 3). Writes ``benchmarks/results/mutation.json``.

Why not mutmut: mutmut 3.x (3.8.1 checked) reads ``[tool.mutmut]`` / ``[mutmut]`` from the
project's own pyproject/setup.cfg, copies the sources into ``./mutants`` inside the working
tree and first runs the selected tests under its trampolines to map tests to functions. Here
the working tree is shared by several people (a ``mutants/`` folder and config edits there
would be in everybody's way), ``convexdual.solvers`` is mapped from ``solvers/`` by
``package-dir`` (the copy in ``mutants/`` would import the un-mutated editable install for
it), and we want to mutate a few *functions* of a file, not whole files. So this is a small
self-contained runner:

* the sources are exported to a private temporary copy (``git archive HEAD`` by default, or
  the working tree's tracked + untracked files with ``--worktree``); nothing under the repo
  is ever modified;
* in each target function, one site at a time is mutated on the AST: comparison operators
  (``<``/``<=``, ``>``/``>=``, ``==``/``!=``, ``is``/``is not``, ``in``/``not in``), arithmetic
  (``+``/``-``, ``*``/``/``), numeric constants (``k -> k + 1`` for ints, ``x -> 2x`` for
  floats, ``0.0 -> 1.0``), boolean operators (``and``/``or``), ``not x -> x``, and return
  values (``return e -> return None``); strings, f-strings, docstrings and logging calls are
  never mutated;
* the mutated module is written into the copy, the target's fast test subset runs there
  (``pytest -x``, ``PYTHONPATH`` = the copy) with a timeout, and the file is restored;
* a mutant is *killed* when the tests fail (or time out: reported separately), *survived*
  when they pass. A baseline run of the same tests on the unmutated copy must pass first.

Usage::

    python benchmarks/mutation.py                       # every target (slow: hours on 2 cores)
    python benchmarks/mutation.py --targets recover     # one target
    python benchmarks/mutation.py --targets recover --list   # list the mutants, run nothing
    python benchmarks/mutation.py --max-mutants 20 --timeout 120

Results of the targets run are merged into the JSON (other targets' entries are kept).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "mutation.json"

FAST = ["-m", "not slow"]
# property tests without the extreme-scale cases (they fail before any mutation until issue 11
# item 12 lands; a failing baseline would make every mutant look killed)
PROPS = ["tests/test_properties.py", "-k", "not extreme and not slow"]


@dataclass
class Target:
    name: str
    path: str  # relative to the repo root, as in the source tree
    functions: list[str] | None  # qualified names ("Class.method"); None = every function in the file
    tests: list[list[str]]  # pytest invocations (each a list of args), run in order, stop at first failure
    why: str = ""


TARGETS: dict[str, Target] = {
    "certificate": Target(
        "certificate", "convexdual/certificate.py", None,
        # one pytest process (one start-up per mutant, -x stops at the first failure, files in this order)
        [["tests/test_certificate_unit.py", "tests/test_status_unit.py", "tests/test_status_rule.py",
          "tests/test_certificate.py", *PROPS]],
        "the certificate: dual bound, gap, ok"),
    "status": Target(
        "status", "convexdual/pipeline.py", ["status_from_certificate", "finalize"],
        [["tests/test_status_unit.py"], ["tests/test_status_rule.py"]],
        "the status rule (finalize)"),
    "recover": Target(
        "recover", "convexdual/recover.py", None,
        [["tests/test_recover.py"], ["tests/test_status_rule.py"],
         ["tests/test_conformance.py", "-k", "multichannel or losses_and_residual"],
         ["tests/test_properties.py", "-k", "matches_independent_model and not slow"]],
        "eq. (5): filters and the network"),
    "masks": Target(
        "masks", "convexdual/patterns.py", ["compute_masks", "SignPatterns.masks_on", "pattern_hashes",
                                            "unique_gates", "patterns_from_gates", "sample_patterns"],
        [["tests/test_pattern_masks.py"], ["tests/test_patterns.py"], ["tests/test_conformance.py", "-k", "losses_and_residual"],
         PROPS],
        "masks 1[X g >= 0] from the gates, dedup"),
    "engine-masks": Target(
        "engine-masks", "convexdual/engine.py", ["PatternEngine.mask", "PatternEngine.masks", "PatternEngine.signs",
                                                 "PatternEngine.cone_violation", "PatternEngine.dual_bound"],
        [["tests/test_engine_masks.py"], ["tests/test_api_engine.py", "-k", "engine_matches"], ["tests/test_status_rule.py"],
         ["tests/test_certificate.py"], PROPS],
        "the engine's masks, signs, violation and dual bound (what the certificate calls)"),
}

_CMP_SWAP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
             ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
_BIN_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult}
_SYM = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.Is: "is",
        ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in", ast.Add: "+", ast.Sub: "-", ast.Mult: "*",
        ast.Div: "/", ast.And: "and", ast.Or: "or"}


@dataclass
class Site:
    index: int
    line: int
    function: str
    kind: str
    description: str
    status: str = ""
    seconds: float = 0.0
    detail: str = ""


def _is_logging_call(node: ast.AST) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name) and node.func.value.id in ("logger", "logging", "warnings"))


class _Sites(ast.NodeVisitor):
    """Finds mutation sites inside the target functions (in a stable order)."""

    def __init__(self, functions: list[str] | None) -> None:
        self.functions = functions
        self.stack: list[str] = []
        self.sites: list[tuple[ast.AST, str, str, str]] = []  # (node, function, kind, description)
        self._in_target = 0

    def _qual(self) -> str:
        return ".".join(self.stack)

    def _enter(self, node, name):
        self.stack.append(name)
        target = self.functions is None or self._qual() in self.functions
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and target:
            self._in_target += 1
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
                body = body[1:]  # skip the docstring
            for stmt in body:
                self.visit(stmt)
            self._in_target -= 1
        else:
            self.generic_visit(node)
        self.stack.pop()

    def visit_ClassDef(self, node):
        self._enter(node, node.name)

    def visit_FunctionDef(self, node):
        if self._in_target:  # nested function of a target: part of it
            self.stack.append(node.name)
            for stmt in node.body:
                self.visit(stmt)
            self.stack.pop()
            return
        self._enter(node, node.name)

    visit_AsyncFunctionDef = visit_FunctionDef

    def _add(self, node, kind, desc):
        if self._in_target:
            q = self._qual()  # the target it belongs to (a nested function belongs to its target)
            fn = next((f for f in (self.functions or []) if q == f or q.startswith(f + ".")), q)
            self.sites.append((node, fn, kind, desc))

    def visit_Call(self, node):
        if _is_logging_call(node):
            return
        self.generic_visit(node)

    def visit_JoinedStr(self, node):  # f-strings: messages, never mutated
        return

    def visit_Compare(self, node):
        for k, op in enumerate(node.ops):
            if type(op) in _CMP_SWAP:
                self._add((node, k), "compare", f"{_SYM[type(op)]} -> {_SYM[_CMP_SWAP[type(op)]]}")
        self.generic_visit(node)

    def visit_BinOp(self, node):
        if type(node.op) in _BIN_SWAP:
            self._add(node, "arith", f"{_SYM[type(node.op)]} -> {_SYM[_BIN_SWAP[type(node.op)]]}")
        self.generic_visit(node)

    def visit_BoolOp(self, node):
        other = "or" if isinstance(node.op, ast.And) else "and"
        self._add(node, "boolean", f"{_SYM[type(node.op)]} -> {other}")
        self.generic_visit(node)

    def visit_UnaryOp(self, node):
        if isinstance(node.op, ast.Not):
            self._add(node, "boolean", "not x -> x")
        self.generic_visit(node)

    def visit_Constant(self, node):
        v = node.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return
        if isinstance(v, int):
            self._add(node, "constant", f"{v} -> {v + 1}")
        else:
            self._add(node, "constant", f"{v!r} -> {(2 * v if v != 0 else 1.0)!r}")

    def visit_Return(self, node):
        if node.value is not None and not (isinstance(node.value, ast.Constant) and node.value.value is None):
            self._add(node, "return", "return <value> -> return None")
        self.generic_visit(node)


def _line(node) -> int:
    return (node[0] if isinstance(node, tuple) else node).lineno


def find_sites(source: str, functions: list[str] | None) -> tuple[ast.Module, list[Site]]:
    tree = ast.parse(source)
    finder = _Sites(functions)
    finder.visit(tree)
    sites = [Site(i, _line(n), fn, kind, desc) for i, (n, fn, kind, desc) in enumerate(finder.sites)]
    return tree, sites


def mutate(source: str, functions: list[str] | None, index: int) -> str:
    """The module's source with site ``index`` mutated (re-found on a fresh tree)."""
    tree = ast.parse(source)
    finder = _Sites(functions)
    finder.visit(tree)
    node, _, kind, _ = finder.sites[index]
    if kind == "compare":
        cmp, k = node
        cmp.ops[k] = _CMP_SWAP[type(cmp.ops[k])]()
    elif kind == "arith":
        node.op = _BIN_SWAP[type(node.op)]()
    elif kind == "boolean" and isinstance(node, ast.BoolOp):
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif kind == "boolean":  # not x -> x: replace the UnaryOp by its operand in its parent
        for parent in ast.walk(tree):
            for fname, value in ast.iter_fields(parent):
                if value is node:
                    setattr(parent, fname, node.operand)
                elif isinstance(value, list):
                    for j, item in enumerate(value):
                        if item is node:
                            value[j] = node.operand
    elif kind == "constant":
        v = node.value
        node.value = v + 1 if isinstance(v, int) else (2 * v if v != 0 else 1.0)
    elif kind == "return":
        node.value = ast.Constant(value=None)
    ast.fix_missing_locations(tree)
    return ast.unparse(tree)


def export_sources(dest: Path, worktree: bool) -> str:
    """A private copy of the sources; returns a description (commit or 'working tree')."""
    if worktree:
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                               capture_output=True, text=True).stdout.split("\n")
        for f in filter(None, files):
            src = REPO / f
            if src.is_file():
                (dest / f).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / f)
        what = "working tree"
    else:
        arch = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=arch, check=True)
        what = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, check=True, capture_output=True,
                              text=True).stdout.strip()
    # convexdual.solvers lives in solvers/ (package-dir): make it importable from the copy
    link = dest / "convexdual" / "solvers"
    if not link.exists():
        link.symlink_to(dest / "solvers", target_is_directory=True)
    return what


def run_tests(copy_dir: Path, tests: list[list[str]], timeout: float) -> tuple[str, float, str]:
    """('pass' | 'fail' | 'timeout', seconds, last lines of output)."""
    env = dict(os.environ, PYTHONPATH=str(copy_dir), PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1",
               CONVEXDUAL_MUTATION_RUN="1")  # tests/test_properties.py: no shrinking, a failure is enough
    t0 = time.perf_counter()
    for args in tests:
        left = timeout - (time.perf_counter() - t0)
        if left <= 0:
            return "timeout", time.perf_counter() - t0, ""
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-W", "ignore", *FAST, *args]
        try:
            p = subprocess.run(cmd, cwd=copy_dir, env=env, capture_output=True, text=True, timeout=left)
        except subprocess.TimeoutExpired:
            return "timeout", time.perf_counter() - t0, " ".join(args)
        if p.returncode != 0:
            tail = (p.stdout + p.stderr).strip().splitlines()[-3:]
            return "fail", time.perf_counter() - t0, " | ".join(tail)
    return "pass", time.perf_counter() - t0, ""


def run_target(t: Target, copy_dir: Path, timeout: float, max_mutants: int | None, list_only: bool,
               log=print) -> dict:
    path = copy_dir / t.path
    original = path.read_text()
    _, sites = find_sites(original, t.functions)
    if max_mutants is not None:
        sites = sites[:max_mutants]
    log(f"[{t.name}] {t.path}: {len(sites)} mutants in {t.functions or 'every function'}")
    entry = {"file": t.path, "functions": t.functions or "all", "tests": [" ".join(a) for a in t.tests],
             "what": t.why, "mutants": len(sites)}
    if list_only:
        entry["sites"] = [{"line": s.line, "function": s.function, "mutation": s.description} for s in sites]
        for s in sites:
            log(f"  {t.path}:{s.line} {s.function}: {s.description}")
        return entry
    status, secs, detail = run_tests(copy_dir, t.tests, timeout * 4)
    entry["baseline_seconds"] = round(secs, 2)
    if status != "pass":
        entry["error"] = f"baseline tests do not pass on the unmutated copy ({status}): {detail}"
        log(entry["error"])
        return entry
    log(f"[{t.name}] baseline passes in {secs:.1f} s")
    try:
        for s in sites:
            try:
                mutated = mutate(original, t.functions, s.index)
                compile(mutated, str(path), "exec")
            except Exception as exc:  # a mutation that does not compile is not a mutant
                s.status, s.detail = "invalid", f"{type(exc).__name__}: {exc}"
                continue
            path.write_text(mutated)
            try:
                res, s.seconds, s.detail = run_tests(copy_dir, t.tests, timeout)
            finally:
                path.write_text(original)
            s.status = {"fail": "killed", "timeout": "timeout", "pass": "survived"}[res]
            log(f"  {t.path}:{s.line} {s.function}: {s.description:32s} {s.status} ({s.seconds:.1f} s)")
    finally:
        path.write_text(original)
    valid = [s for s in sites if s.status != "invalid"]
    killed = [s for s in valid if s.status in ("killed", "timeout")]
    survived = [s for s in valid if s.status == "survived"]
    entry.update({
        "mutants": len(valid), "killed": len(killed), "timeouts": sum(s.status == "timeout" for s in valid),
        "survived": len(survived), "invalid": len(sites) - len(valid),
        "score": round(len(killed) / len(valid), 4) if valid else None,
        "seconds": round(sum(s.seconds for s in valid), 1),
        "seconds_per_mutant": round(sum(s.seconds for s in valid) / len(valid), 2) if valid else None,
        "survivors": [{"where": f"{t.path}:{s.line}", "function": s.function, "mutation": s.description}
                      for s in survived],
    })
    return entry


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", nargs="+", choices=sorted(TARGETS), default=sorted(TARGETS))
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant (all its tests)")
    ap.add_argument("--max-mutants", type=int, default=None, help="first N sites per target only")
    ap.add_argument("--worktree", action="store_true", help="mutate a copy of the working tree, not HEAD")
    ap.add_argument("--list", action="store_true", help="list the mutants; run nothing")
    ap.add_argument("--functions", nargs="+", default=None,
                    help="mutate only these functions of the target (a partial run: its entry says so and is "
                         "stored as '<target>@<functions>', beside the target's full entry)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="convexdual-mutation-"))
    try:
        source = export_sources(tmp, args.worktree)
        t0 = time.perf_counter()
        targets_run = {name: TARGETS[name] for name in args.targets}
        if args.functions:
            targets_run = {f"{name}@{'+'.join(args.functions)}": dataclasses.replace(t, functions=list(args.functions))
                           for name, t in targets_run.items()}
        entries = {name: run_target(t, tmp, args.timeout, args.max_mutants, args.list)
                   for name, t in targets_run.items()}
        for name, e in entries.items():
            if "@" in name:
                e["partial"] = True
        if args.list:
            return 0
        old = json.loads(args.out.read_text()) if args.out.is_file() else {}
        targets = dict(old.get("targets", {}))
        targets.update(entries)
        done = [e for e in targets.values() if e.get("score") is not None and not e.get("partial")]
        total = sum(e["mutants"] for e in done)
        killed = sum(e["killed"] for e in done)
        for e in entries.values():  # targets are run at different commits: say which, per target
            e["source"] = source
        report = {
            **{k: v for k, v in old.items() if k not in ("targets", "totals")},  # e.g. post_run_review
            "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "source": source, "runner": "benchmarks/mutation.py (AST, one site at a time, private copy)",
            "command": "python benchmarks/mutation.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "last_run_seconds": round(time.perf_counter() - t0, 1),
            "targets": targets,
            "totals": {"mutants": total, "killed": killed,
                       "survived": sum(e["survived"] for e in done),
                       "score": round(killed / total, 4) if total else None,
                       "targets_done": sorted(k for k, e in targets.items() if e.get("score") is not None),
                       "targets_pending": sorted(k for k in TARGETS if targets.get(k, {}).get("score") is None)},
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = args.out.with_suffix(".json.tmp")
        tmp_out.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(tmp_out, args.out)
        print(json.dumps(report["totals"], indent=2))
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
