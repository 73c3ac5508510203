"""Tests of pattern generation (column generation over sign patterns)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import convexdual as cd
from convexdual.data import add_noise, load_digits_dataset
from convexdual.pattern_generation import GenerationOptions, generate_patterns


@pytest.fixture(scope="module")
def tiny():
    clean = load_digits_dataset(2, 0, seed=0).train[:1, 2:5, 2:5]
    noisy = add_noise(clean, "gaussian", 0.5, seed=1)
    pats = cd.enumerate_patterns(noisy, 3)
    beta = 0.1 * cd.beta_max(noisy, clean, 3, pats)
    exact = cd.solve(cd.build_problem(noisy, clean, 3, beta, patterns=pats), solver="clarabel")
    return noisy, clean, beta, pats, exact


def test_generation_reaches_the_exact_global_optimum_with_few_patterns(tiny):
    noisy, clean, beta, pats, exact = tiny
    start = cd.build_problem(noisy, clean, 3, beta, num_patterns=2, seed=0)
    rounds = []
    g = generate_patterns(start, solver="clarabel", options=GenerationOptions(num_starts=32, num_gates=256),
                          callback=rounds.append)
    assert g.converged and g.result.status.is_optimal
    assert g.num_patterns < len(pats)
    # the exact optimum over all 512 cells, from an independent full solve
    assert g.result.objective == pytest.approx(exact.objective, rel=1e-7)
    assert g.result.certificate.network_objective == pytest.approx(exact.objective, rel=1e-7)
    objs = [r["objective"] for r in g.rounds]
    assert all(b <= a * (1 + 1e-7) for a, b in zip(objs, objs[1:]))  # S only grows: never worse
    assert rounds == list(g.rounds) and g.rounds[-1]["added"] == 0 and g.rounds[-1]["max_ratio"] <= 1 + 1e-6
    # the generated net passes the (exact) network certificate
    c = cd.certify(g.result.network, noisy, clean, beta, patterns=pats)
    assert c.verdict == "globally optimal (exact enumeration)"


def test_checkpoint_and_resume(tiny, tmp_path):
    noisy, clean, beta, _, _ = tiny
    start = cd.build_problem(noisy, clean, 3, beta, num_patterns=2, seed=0)
    ck = tmp_path / "gen.npz"
    opts = GenerationOptions(num_starts=16, num_gates=128, patterns_per_round=2, checkpoint_path=str(ck))
    first = generate_patterns(start, solver="clarabel", options=GenerationOptions(**{**opts.__dict__, "max_rounds": 2}))
    assert not first.converged and len(first.rounds) == 2 and ck.is_file()
    saved = np.load(ck)
    assert len(json.loads(str(saved["rounds"]))) == 2 and saved["gates"].shape[1] == 9
    resumed = generate_patterns(start, solver="clarabel",
                                options=GenerationOptions(**{**opts.__dict__, "resume_from": str(ck)}))
    full = generate_patterns(start, solver="clarabel",
                             options=GenerationOptions(**{**opts.__dict__, "checkpoint_path": None}))
    assert resumed.converged and full.converged
    # the resumed run must retrace the uninterrupted one (another run, not the checkpoint itself):
    # same rounds, the same patterns added in each, the same objectives, the same final pattern set
    timing = {"solve_seconds", "search_seconds", "elapsed"}

    def same(a, b):
        assert set(a) == set(b)
        for key in set(a) - timing:
            assert a[key] == (pytest.approx(b[key], rel=1e-9) if isinstance(b[key], float) else b[key]), key

    assert len(resumed.rounds) == len(full.rounds) > 2
    for a, b in zip(resumed.rounds, full.rounds):
        same(a, b)
    assert np.array_equal(resumed.patterns.gates, full.patterns.gates)
    assert resumed.result.objective == pytest.approx(full.result.objective, rel=1e-9)
    # the checkpoint now holds a finished run: resuming it runs no further round (one would search
    # with another seed), it solves once over the loaded set and says so
    again = generate_patterns(start, solver="clarabel",
                              options=GenerationOptions(**{**opts.__dict__, "resume_from": str(ck), "max_rounds": 99}))
    assert again.converged and "resumed a finished run" in again.message
    assert len(again.rounds) == len(full.rounds) and np.array_equal(again.patterns.gates, full.patterns.gates)
    assert again.result.status.is_optimal
    assert again.result.objective == pytest.approx(full.result.objective, rel=1e-9)


def test_bad_options_are_refused(tiny):
    with pytest.raises(ValueError, match="max_rounds"):
        GenerationOptions(max_rounds=0)
    with pytest.raises(ValueError, match="num_starts > 0 or num_gates > 0"):
        GenerationOptions(num_starts=0, num_gates=0)
    with pytest.raises(ValueError, match="resume_from"):
        GenerationOptions(resume_from="/nonexistent/gen.npz")
    with pytest.raises(TypeError, match="DualProblem"):
        generate_patterns("problem")


def test_cli_solve_patterns_generate(tiny, tmp_path):
    from convexdual.cli import main

    noisy, clean, beta, _, exact = tiny
    np.savez(tmp_path / "d.npz", noisy=noisy, clean=clean)
    rc = main(["solve", "--data", str(tmp_path / "d.npz"), "--patterns", "generate", "--beta", repr(beta),
               "--solver", "clarabel", "--out", str(tmp_path / "out")])
    rep = json.loads((tmp_path / "out" / "result.json").read_text())
    assert rc == 0 and rep["problem"]["pattern_source"] == "generated"
    assert rep["result"]["objective"] == pytest.approx(exact.objective, rel=1e-6)


@pytest.mark.parametrize("search", [dict(num_starts=32, num_gates=256), dict(num_starts=0, num_gates=1)])
def test_global_oracle_generation_proves_the_enumerated_global_optimum(tiny, search, tmp_path):
    """oracle="global": column generation ends with a *proved* global optimum of (2), equal to the
    enumerated one; with a near-useless search the oracle's descent neurons do the pricing."""
    noisy, clean, beta, pats, exact = tiny
    start = cd.build_problem(noisy, clean, 3, beta, num_patterns=2, seed=0)
    ck = tmp_path / "gen.npz"
    g = generate_patterns(start, solver="clarabel",
                          options=GenerationOptions(oracle="global", oracle_time_limit=30, checkpoint_path=str(ck),
                                                    **search))
    # resuming the finished run keeps the proof and the oracle's certified global bound
    again = generate_patterns(start, solver="clarabel",
                              options=GenerationOptions(oracle="global", oracle_time_limit=30, resume_from=str(ck),
                                                        **search))
    assert again.info["proved_global"] and "resumed a finished run" in again.message
    assert again.info["global_lower_bound"] == g.info["global_lower_bound"]
    assert again.info["global_gap"] == pytest.approx(g.info["global_gap"], abs=1e-6 * g.result.objective)
    assert again.info["oracle_verdict"] == "feasible"
    assert g.converged and g.info["proved_global"] and g.result.status.is_optimal
    assert g.message.startswith("converged: certified global optimum of (2) (proved by the branch-and-bound oracle")
    assert g.result.objective == pytest.approx(exact.objective, rel=1e-6)
    last = g.rounds[-1]
    assert last["added"] == 0 and last["oracle_status"] == "proved" and last["oracle_verdict"] == "feasible"
    assert last["oracle_upper"] <= beta * (1 + 2e-6)
    # the certified global lower bound is below the true optimum and the gap is within the tolerance
    assert g.info["global_lower_bound"] <= exact.objective * (1 + 1e-8)
    assert 0 <= g.info["global_gap"] <= 1e-6 * g.result.objective + 1e-12
    if search["num_starts"] == 0:  # the oracle found descent neurons the search missed
        assert any(r.get("oracle_verdict") == "descent" and r["added"] == 1 for r in g.rounds)
    with pytest.raises(ValueError, match="oracle must be"):
        GenerationOptions(oracle="exact")
    with pytest.raises(ValueError, match="oracle_time_limit"):
        GenerationOptions(oracle="global", oracle_time_limit=0)
