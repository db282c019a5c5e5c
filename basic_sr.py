#!/usr/bin/env python
"""BasicSR, the genetic-programming expert (the class lives in nsr.estimators; this is its CLI).

    from basic_sr import BasicSR
    model = BasicSR(population_size=100, num_generations=50, seed=0).fit(X, y)
    model.best_model_, model.get_final_mse(), model.predict(X)

    python basic_sr.py --target "x0**3 + x0**2 + x0"          # fit data sampled from a formula
    python basic_sr.py --expressions_file datasets/expressions/nguyen_12.pkl.gz
"""
import sys

import numpy as np

from nsr.cli import ArgumentParser, positive_int, run_main
from nsr.config import FILE_DEFAULTS, EvolutionConfig, Float, RunConfig, add_arguments, from_args
from nsr.datasets import DEFAULT_EXPRESSIONS, file_constants, file_operator_set, load_expressions
from nsr.drivers import file_jobs, run_jobs
from nsr.estimators import BasicSR
from nsr.evaluation import eval_result
from nsr.expressions import arity, evaluate, parse, shorten, variables_used
from nsr.metrics import solved_on_data
from nsr.operators import OPERATOR_SETS
from nsr.safe_io import InputError
from nsr.search import Searcher

__all__ = ["BasicSR"]


def main(argv):
    p = ArgumentParser(description="Fit BasicSR to a formula's data or to each problem of an expressions file.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--target", help="a formula in x0..x9, e.g. 'x0**2 + sin(x1)'")
    src.add_argument("--expressions_file", default=None, help=f"default: {DEFAULT_EXPRESSIONS}")
    p.add_argument("--max_expressions", type=positive_int, default=None)
    p.add_argument("--num_points", type=positive_int, default=100)
    p.add_argument("--x_range", type=Float().from_text, nargs=2, default=[-1.0, 1.0])
    add_arguments(p.add_argument_group("evolution"), EvolutionConfig, defaults=FILE_DEFAULTS)
    add_arguments(p.add_argument_group("run"), RunConfig, only=("seed", "num_workers"))
    args = p.parse_args(argv)
    if args.num_points > 10_000_000:
        p.error(f"--num_points must be at most 10000000, got {args.num_points}")
    if args.target is not None:
        tokens = parse(args.target)
        nv = 1 + max((int(v[1:]) for v in variables_used(tokens)), default=0)
        rng = np.random.default_rng(args.seed)
        X = rng.uniform(args.x_range[0], args.x_range[1], size=(args.num_points, nv))
        y = evaluate(tokens, X)
        if not np.all(np.isfinite(y)):
            raise InputError(f"target {shorten(args.target)} is not finite on the sampled inputs")
        records = [{"id": 0, "expression": args.target, "X": X, "y": y,
                    "x_range": (args.x_range[0], args.x_range[1])}]
        arith = set(OPERATOR_SETS["arith"])
        operator_set = args.operator_set or ("arith" if all(t in arith for t in tokens if arity(t)) else "full")
        constants = args.constants or (1.0,)
    else:
        path = args.expressions_file or DEFAULT_EXPRESSIONS
        data = load_expressions(path)
        records = data["records"][: args.max_expressions]
        operator_set = file_operator_set(data["metadata"], args.operator_set, path)
        constants = file_constants(data["metadata"], args.constants, path)
    evolution = from_args(EvolutionConfig, args, operator_set=operator_set, constants=constants)
    run = from_args(RunConfig, args)
    print(f"{'target':<45} {'found':<45} {'MSE':>10} {'time':>7}")
    for _job, r in run_jobs(Searcher(evolution), file_jobs(records, run.seed), eval_result,
                            num_workers=run.num_workers or 1):  # as they finish
        mark = " solved" if solved_on_data(r["train_mse"]) else ""
        target = str(r["target"] if r["target"] is not None else r["id"])
        print(f"{target[:45]:<45} {r['found'][:45]:<45} {r['train_mse']:10.3g} {r['time']:6.2f}s{mark}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
