"""Scans at n = 1.28 million (100 slices, R = 4), P = 100: the code given by sys.argv[1] (a source tree) or the installed one."""
import sys, time, json
if sys.argv[1] != "installed":
    sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    sys.path.insert(0, sys.argv[1])
import numpy as np
import convexdual as cd
from convexdual.mri.prepare import SliceCache
print("convexdual from", cd.__file__, flush=True)
with SliceCache("/work/main/runs/mri_full/cache/train_R4.h5") as c:
    x, y = c.examples(slice(0, 100))
pats = cd.sample_patterns(x, 7, 100, seed=0)
bm = cd.beta_max(x, y, 7, pats, residual=True)
pr = cd.build_problem(x, y, 7, 0.05 * bm, patterns=pats, residual=True)
eng = pr.engine
C = eng.adjoint(pr.y.reshape(-1))
cpu = time.process_time
for name, kw in [("zero_test_largest", dict(threshold=pr.beta, limit=1)), ("identify_largest", dict(threshold=0.0, limit=20))]:
    eng.forget(["dual"])
    t = cpu(); r = eng.scan(C=C, tag="dual", **kw)
    print(name, json.dumps({"cpu_s": cpu() - t, "projections": r.projections, "pruned": r.pruned, "max": r.max_value,
                            "found": len(r.found)}), flush=True)
