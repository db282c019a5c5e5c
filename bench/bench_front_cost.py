#!/usr/bin/env python
"""What keeping the Pareto front every generation costs BasicSR (issue 21).

tree:  individuals/s of BasicSR without fitting (16 Nguyen problems, population 200 x 200 generations, early stop
       off) for the tree at PATH; run it for a checkout before the front and for this one, alternating, pinned:
           for r in 1 2 3; do for t in /path/to/2edc6af .; do OMP_NUM_THREADS=1 taskset -c 0 \
               python bench/bench_front_cost.py tree $t; done; done
small: the smallest runs (a few ms each), with the front's offer and with it switched off, 7 rounds alternating.
"""
import os
import statistics
import sys
import time


def tree(path):
    sys.path.insert(0, os.path.abspath(path))
    from nsr.datasets import load_expressions
    from nsr.estimators import BasicSR

    recs = load_expressions(os.path.join(path, "datasets/expressions/nguyen_12.pkl.gz"))["records"]
    BasicSR(population_size=20, num_generations=3, seed=0).fit(recs[0]["X"], recs[0]["y"])  # warm the kernels
    t, n = time.perf_counter(), 0
    for i in range(16):
        r = recs[i % len(recs)]
        BasicSR(population_size=200, num_generations=200, operator_set="full", early_stop=False, seed=i).fit(r["X"], r["y"])
        n += 200 * 200
    print(f"{path}: {n / (time.perf_counter() - t):,.0f} individuals/s")


def small():
    import numpy as np

    from nsr import pareto
    from nsr.estimators import BasicSR

    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (500, 3))
    y = X[:, 0] * X[:, 1] + np.sin(X[:, 2]) * 1.3
    offer = pareto.Front.offer

    def run(**kw):
        t = time.perf_counter()
        BasicSR(seed=0, early_stop=False, **kw).fit(X, y)
        return time.perf_counter() - t

    cases = {"population 100 x 50": {}, "population 20 x 200": dict(population_size=20, num_generations=200),
             "population 500 x 20, fitting 10": dict(population_size=500, num_generations=20, constant_fitting=10,
                                                     linear_scaling=True, operator_set="physics")}
    for name, kw in cases.items():
        run(**kw)
        on, off = [], []
        for _ in range(7):
            pareto.Front.offer = offer
            on.append(run(**kw))
            pareto.Front.offer = lambda *a, **k: None
            off.append(run(**kw))
        pareto.Front.offer = offer
        a, b = statistics.median(on), statistics.median(off)
        print(f"{name}: with the front {a * 1e3:.2f} ms, without {b * 1e3:.2f} ms: {a / b:.3f}x")


if __name__ == "__main__":
    tree(sys.argv[2]) if sys.argv[1] == "tree" else small()
