#!/usr/bin/env python
"""BasicSR throughput in the checkout this runs in (the current directory), for bench/before_after.sh: 16 problems
(arith and full), population 200 x 200 generations, no early stop. Prints one JSON line: seconds, individuals per
second and the formulas found (equal formulas in both checkouts show the same runs were timed)."""
import json
import sys
import time

import numpy as np

sys.path.insert(0, ".")  # the checkout under test, not this one
from basic_sr import BasicSR  # noqa: E402  (both releases export it there)


def problems():
    rng = np.random.default_rng(0)
    out = []
    for i in range(16):
        X = rng.uniform(-2, 2, (100, 2))
        y = [X[:, 0] * X[:, 1] + X[:, 1], X[:, 0] ** 3 + X[:, 0], np.sin(X[:, 0]) + X[:, 1] ** 2,
             X[:, 0] / (1 + X[:, 1] ** 2)][i % 4]
        out.append((X, y, "full" if i % 4 in (2, 3) else "arith"))
    return out


def main():
    probs = problems()
    BasicSR(population_size=20, num_generations=2, seed=0).fit(*probs[0][:2])  # compile the kernels first
    t0, found = time.perf_counter(), []
    for i, (X, y, ops) in enumerate(probs):
        m = BasicSR(population_size=200, num_generations=200, early_stop=False, operator_set=ops, seed=i).fit(X, y)
        found.append(str(m.best_model_))
    dt = time.perf_counter() - t0
    print(json.dumps({"seconds": dt, "individuals_per_s": len(probs) * 200 * 201 / dt, "found": found}))


if __name__ == "__main__":
    main()
