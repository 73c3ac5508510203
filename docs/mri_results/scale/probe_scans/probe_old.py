"""The same certified solve with the code before the change (commit aca6a77): entering = largest, no early stop."""
import sys, time, json, resource
sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]  # the old tree, not the editable install
import convexdual as cd
import convexdual.solvers.active_set as _a
print("convexdual from", cd.__file__, _a.__file__, flush=True)
from convexdual.mri.prepare import SliceCache
path, P, nsl = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with SliceCache(path) as c:
    x, y = c.examples(slice(0, nsl))
cpu = time.process_time
pats = cd.sample_patterns(x, 7, P, seed=0)
bm = cd.beta_max(x, y, 7, pats, residual=True)
pr = cd.build_problem(x, y, 7, 0.1 * bm, patterns=pats, residual=True)
eng = pr.engine
C = eng.adjoint(pr.y.reshape(-1))
out = {}
for name, kw in [] and [("zero_test_largest", dict(threshold=pr.beta, limit=1)), ("identify_largest", dict(threshold=0.0, limit=32))]:
    eng.forget(["dual"])
    t = cpu(); r = eng.scan(C=C, tag="dual", **kw); out[name] = {"cpu_s": cpu() - t, "projections": r.projections}
    print(name, out[name], flush=True)
opts = {"init_groups": 32, "groups_per_round": 32, "init_rows": 256, "rows_per_round": 256, "drop_after": 0}
eng.forget(["dual", "polish"])
t = cpu(); w = time.perf_counter()
r = cd.solve(pr, solver="active_set", options=opts)
out["solve_before"] = {"cpu_s": cpu() - t, "wall_s": time.perf_counter() - w, "status": r.status.value, "objective": r.objective,
                       "rounds": r.iterations, "projections": r.info.get("projections"), "message": r.message}
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out, indent=1))
