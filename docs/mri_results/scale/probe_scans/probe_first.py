"""Scans and certified solves with entering='largest' vs 'first' on the simulated MRI slices (R = 4)."""
import sys, time, json, resource, numpy as np
import convexdual as cd
from convexdual.mri.prepare import SliceCache
path, P, nsl = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
solve = len(sys.argv) > 4 and sys.argv[4] == "solve"
with SliceCache(path) as c:
    x, y = c.examples(slice(0, nsl))
cpu = time.process_time
t = cpu(); pats = cd.sample_patterns(x, 7, P, seed=0); print("n", x.shape, "sample", round(cpu() - t, 1), flush=True)
t = cpu(); bm = cd.beta_max(x, y, 7, pats, residual=True); print("beta_max", bm, round(cpu() - t, 1), flush=True)
pr = cd.build_problem(x, y, 7, 0.1 * bm, patterns=pats, residual=True)
eng = pr.engine
C = eng.adjoint(pr.y.reshape(-1))
out = {"n": int(pr.n), "P": P, "beta": pr.beta}
for name, kw in [("zero_test_largest", dict(threshold=pr.beta, limit=1)), ("zero_test_first", dict(threshold=pr.beta, limit=1, first=True)),
                 ("identify_largest", dict(threshold=0.0, limit=32)), ("identify_first", dict(threshold=pr.beta, limit=32, first=True))]:
    eng.forget(["dual"])
    t = cpu(); r = eng.scan(C=C, tag="dual", **kw); dt = cpu() - t
    out[name] = {"cpu_s": dt, "projections": r.projections, "found": len(r.found), "max_value": r.max_value,
                 "found_min": min((f[0] for f in r.found), default=None)}
    print(name, out[name], flush=True)
if solve:
    opts = {"init_groups": 32, "groups_per_round": 32, "init_rows": 256, "rows_per_round": 256, "drop_after": 0}
    for ent in ("first", "largest"):
        eng.forget(["dual", "polish"])
        t = cpu(); w = time.perf_counter()
        r = cd.solve(pr, solver="active_set", options={**opts, "entering": ent})
        out["solve_" + ent] = {"cpu_s": cpu() - t, "wall_s": time.perf_counter() - w, "status": r.status.value,
                               "objective": r.objective, "rounds": r.iterations, "projections": r.info.get("projections"),
                               "gap": r.certificate.relative_gap if r.certificate else None, "message": r.message}
        print(ent, out["solve_" + ent], flush=True)
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out, indent=1))
