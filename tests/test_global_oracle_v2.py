"""Options of the v2 oracle (issue 16): every setting keeps the bracket sound.

The 100-instance agreement with brute force in both directions (tests/test_global_oracle.py)
runs with the defaults (slack split rule, lambda refinement only for regions with <= 8
undecided r_p < 0 rows, top-128 lower-bound candidates).  Here the other settings are
checked against the same independent reference on fewer instances.
"""

from __future__ import annotations

import numpy as np
import pytest

from convexdual.global_oracle import evaluate_correlation, global_max_correlation

from test_global_oracle import INSTANCES, REFERENCE, _check_bracket


@pytest.mark.parametrize("opts", [
    dict(split_rule="width", lam_max_rows=None, eval_top=None),     # the rules before v2
    dict(lam_max_rows=None),
    dict(eval_top=1),
    dict(batch=3),
])
def test_options_agree_with_brute_force(opts):
    for (X, r), ref in list(zip(INSTANCES, REFERENCE))[:30]:
        res = global_max_correlation(X, r, eps=1e-8, **opts)
        _check_bracket(X, r, ref, res)
        assert res.status == "proved"
        if ref > 1e-9:
            above = global_max_correlation(X, r, beta=ref * (1 + 1e-3), **opts)
            assert above.verdict == "feasible"
            below = global_max_correlation(X, r, beta=ref * (1 - 1e-3), **opts)
            assert below.verdict == "descent"


def test_no_lambda_refinement_is_sound_but_weaker():
    # lam_max_rows=0 keeps the box-centre lambda: still a valid bound everywhere, the search
    # converges, but regions whose maximiser is on a kink of r_p < 0 rows close slowly
    for (X, r), ref in list(zip(INSTANCES, REFERENCE))[:30]:
        res = global_max_correlation(X, r, eps=1e-6, lam_max_rows=0, max_nodes=20000)
        _check_bracket(X, r, ref, res)


def test_both_split_rules_bound_a_medium_instance():
    # 40 rows in R^4: too many cells for the brute force; the certified upper bound must
    # still be above every sampled value, whatever the split rule
    rng = np.random.default_rng(7)
    X = rng.standard_normal((40, 4))
    r = rng.standard_normal(40)
    U = rng.standard_normal((4, 50000))
    U /= np.linalg.norm(U, axis=0)
    sampled = np.abs(evaluate_correlation(X, r, U)).max()
    for rule in ("slack", "width"):
        res = global_max_correlation(X, r, eps=1e-9, split_rule=rule, max_nodes=4000)
        assert sampled <= res.upper and res.lower <= res.upper


def test_batch_is_sized_to_the_rows():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5000, 3))
    r = rng.standard_normal(5000)
    res = global_max_correlation(X, r, max_nodes=1)
    assert res.stats["batch"] == (2 ** 21) // 5000
    res = global_max_correlation(X[:50], r[:50], max_nodes=1)
    assert res.stats["batch"] == 1024
    with pytest.raises(ValueError):
        global_max_correlation(X, r[:10])


def test_option_validation():
    X, r = INSTANCES[0]
    with pytest.raises(ValueError, match="split_rule"):
        global_max_correlation(X, r, split_rule="random")
    with pytest.raises(ValueError, match="eval_top"):
        global_max_correlation(X, r, eval_top=0)
    with pytest.raises(ValueError, match="lam_max_rows"):
        global_max_correlation(X, r, lam_max_rows=-1)
