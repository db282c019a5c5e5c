#!/usr/bin/env python
"""Real tables (issue 21): BasicSR's data preset against Operon and gplearn at the same evaluation budget, and a
linear model and gradient-boosted trees as references; test R^2 and model size over seeded train/test splits.

Data sets, all offline: scikit-learn's diabetes (442 x 10), and from statsmodels (bench/requirements.txt) grunfeld
(invest ~ value, capital, year; 220 rows), engel (food expenditure ~ income; 235), macrodata (real investment ~ real
GDP, T-bill rate, unemployment, inflation; 203 quarters). Each seed is one shuffle: 75% train, 25% test, the same rows for every method.

Size: nodes of the model as a formula (BasicSR: its reported model, linear scaling included; Operon: its model
parsed back; gplearn: its program's length; linear: 4p + 1 for p inputs; boosted trees: total tree nodes).

    python bench/bench_real.py --seeds 0 1 2 3 4 --json bench/results/data/real.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from bench.common import CpuMonitor, code_state, machine  # noqa: E402


def load(name):
    """(X, y, feature names, target name)."""
    if name == "diabetes":
        from sklearn.datasets import load_diabetes

        d = load_diabetes()
        return d.data, d.target, list(d.feature_names), "progression"
    import statsmodels.api as sm

    spec = {"grunfeld": ("invest", ["value", "capital", "year"]), "engel": ("foodexp", ["income"]),
            "macrodata": ("realinv", ["realgdp", "tbilrate", "unemp", "infl"])}[name]
    df = getattr(sm.datasets, name).load_pandas().data
    return df[spec[1]].to_numpy(float), df[spec[0]].to_numpy(float), spec[1], spec[0]


SETS = ("diabetes", "grunfeld", "engel", "macrodata")


def r2(y, p):
    from nsr.metrics import r2_score

    return r2_score(y, np.asarray(p, dtype=np.float64))


def run_basicsr(X, y, seed, a):
    from nsr.estimators import BasicSR

    m = BasicSR.for_data(max_evaluations=a.budget, seed=seed).fit(X, y)
    return m.predict, m.best_model_.size, str(m.best_model_), int(m.problem_.stats["model_evaluations"])


def run_operon(X, y, seed, a):
    from bench.operon_runner import run_operon as fit
    from nsr.expressions import Expression

    r = fit(X, y, operators="physics", population_size=1000, max_evaluations=a.budget, lm_iterations=10, seed=seed,
            max_length=50)
    expr = Expression.parse(r["expression"])
    return expr.evaluate, expr.size, str(expr), int(r["evaluations"])


def run_gplearn(X, y, seed, a):
    import warnings

    from gplearn.genetic import SymbolicRegressor

    # gplearn evaluates each individual once (no constant fitting): population x generations = the budget
    gp = SymbolicRegressor(population_size=1000, generations=max(1, a.budget // 1000), random_state=seed, n_jobs=1,
                           function_set=("add", "sub", "mul", "div", "sqrt", "log", "sin", "cos"),
                           parsimony_coefficient=0.001, metric="mse")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gp.fit(X, y)
    return gp.predict, int(gp._program.length_), str(gp._program), a.budget


def run_linear(X, y, seed, a):
    from sklearn.linear_model import LinearRegression

    m = LinearRegression().fit(X, y)
    return m.predict, 4 * X.shape[1] + 1, "linear", 0


def run_gbt(X, y, seed, a):
    from sklearn.ensemble import GradientBoostingRegressor

    m = GradientBoostingRegressor(random_state=seed).fit(X, y)
    return m.predict, int(sum(t[0].tree_.node_count for t in m.estimators_)), "boosted trees", 0


METHODS = {"basicsr": run_basicsr, "operon": run_operon, "gplearn": run_gplearn, "linear": run_linear,
           "gbt": run_gbt}


def one_run(task):
    method, name, seed, a = task
    X, y, features, target = load(name)
    perm = np.random.default_rng(seed).permutation(len(y))
    n_test = len(y) // 4
    te, tr = perm[:n_test], perm[n_test:]
    t0 = time.perf_counter()
    predict, size, text, evals = METHODS[method](X[tr], y[tr], seed, a)
    seconds = time.perf_counter() - t0
    with np.errstate(all="ignore"):
        return dict(method=method, set=name, seed=seed, test_r2=r2(y[te], predict(X[te])),
                    train_r2=r2(y[tr], predict(X[tr])), size=size, model=text[:300], evaluations=evals,
                    time=seconds)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    p.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=list(METHODS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--budget", type=int, default=100_000, help="model evaluations per GP run (fitting included)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    t0, mon = time.time(), CpuMonitor()
    tasks = [(m, s, seed, a) for s in a.sets for seed in a.seeds for m in a.methods]
    with ProcessPoolExecutor(a.workers) as pool:
        rows = list(pool.map(one_run, tasks, chunksize=1))
    for r in rows:
        print(f"{r['set']:10s} {r['method']:8s} seed {r['seed']} test R2 {r['test_r2']:.4f} size {r['size']:5d} "
              f"{r['time']:6.1f}s  {r['model'][:80]}")
    print("\n| data set | method | median test R² | test R² per seed | median size | median s |")
    print("|---|---|---:|---|---:|---:|")
    for s in a.sets:
        for m in a.methods:
            rs = sorted((r for r in rows if r["set"] == s and r["method"] == m), key=lambda r: r["seed"])
            per_seed = " ".join(f"{r['test_r2']:.3f}" for r in rs)
            print(f"| {s} | {m} | {statistics.median(r['test_r2'] for r in rs):.3f} | "
                  f"{per_seed} | {statistics.median(r['size'] for r in rs):g} | "
                  f"{statistics.median(r['time'] for r in rs):.1f} |")
    out = dict(rows=rows, args=vars(a), code=code_state(), machine=machine(), load=mon.stop(), wall=time.time() - t0,
               date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    print(f"\nother processes used {out['load']['other_cpu']:.0f} CPU-s over {out['wall']:.0f} s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1, default=float)


if __name__ == "__main__":
    main()
