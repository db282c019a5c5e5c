#!/usr/bin/env python
"""BasicSR, the genetic-programming expert (the class lives in nsr.sr; this is its CLI).

    from basic_sr import BasicSR
    model = BasicSR(population_size=100, num_generations=50, seed=0).fit(X, y)
    model.best_model_, model.get_final_mse(), model.predict(X)

    python basic_sr.py --target "x0**3 + x0**2 + x0"          # fit data sampled from a formula
    python basic_sr.py --expressions_file datasets/expressions/nguyen_12.pkl.gz
"""
import sys
import time

import numpy as np

from nsr.cli import ArgumentParser, finite_float, nonneg_int, population_size, positive_int, run_main
from nsr.datasets import DEFAULT_EXPRESSIONS, file_constants, file_operator_set, load_expressions
from nsr.expressions import OPERATOR_SETS, arity, evaluate, parse, variables_used
from nsr.safe_io import InputError
from nsr.sr import BasicSR, validate_xy
from nsr.traces import SOLVED_MSE, seed_for

__all__ = ["BasicSR"]


def main(argv):
    p = ArgumentParser(description="Fit BasicSR to a formula's data or to each problem of an expressions file.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--target", help="a formula in x0..x9, e.g. 'x0**2 + sin(x1)'")
    src.add_argument("--expressions_file", default=None, help=f"default: {DEFAULT_EXPRESSIONS}")
    p.add_argument("--max_expressions", type=positive_int, default=None)
    p.add_argument("--num_points", type=positive_int, default=100)
    p.add_argument("--x_range", type=finite_float, nargs=2, default=[-1.0, 1.0])
    p.add_argument("--population_size", type=population_size, default=100)
    p.add_argument("--num_generations", type=positive_int, default=50)
    p.add_argument("--max_size", type=positive_int, default=25)
    p.add_argument("--operator_set", choices=sorted(OPERATOR_SETS), default=None)
    p.add_argument("--constants", type=finite_float, nargs="+", default=None)
    p.add_argument("--seed", type=nonneg_int, default=42)
    args = p.parse_args(argv)
    if args.target is not None:
        tokens = parse(args.target)
        nv = 1 + max((int(v[1:]) for v in variables_used(tokens)), default=0)
        rng = np.random.default_rng(args.seed)
        X = rng.uniform(args.x_range[0], args.x_range[1], size=(args.num_points, nv))
        y = evaluate(tokens, X)
        if not np.all(np.isfinite(y)):
            raise InputError(f"target {args.target!r} is not finite on the sampled inputs")
        problems = [(args.target, X, y)]
        arith = set(OPERATOR_SETS["arith"])
        operator_set = args.operator_set or ("arith" if all(t in arith for t in tokens if arity(t)) else "full")
        constants = args.constants or [1.0]
    else:
        path = args.expressions_file or DEFAULT_EXPRESSIONS
        data = load_expressions(path)
        recs = data["records"][: args.max_expressions]
        problems = [(r.get("expression", str(r["id"])), r["X"], r["y"]) for r in recs]
        operator_set = file_operator_set(data["metadata"], args.operator_set, path)
        constants = file_constants(data["metadata"], args.constants, path)
    print(f"{'target':<45} {'found':<45} {'MSE':>10} {'time':>7}")
    for i, (target, X, y) in enumerate(problems):
        try:
            X, y = validate_xy(X, y)
        except ValueError as e:
            raise InputError(f"problem {i}: {e}") from None
        t0 = time.perf_counter()
        sr = BasicSR(population_size=args.population_size, num_generations=args.num_generations,
                     max_size=args.max_size, operator_set=operator_set, constants=constants)
        sr.fit(X, y, rng=seed_for(args.seed, i))
        dt = time.perf_counter() - t0
        mse = sr.get_final_mse()
        mark = " solved" if mse <= SOLVED_MSE else ""
        print(f"{target[:45]:<45} {str(sr.best_model_)[:45]:<45} {mse:10.3g} {dt:6.2f}s{mark}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
