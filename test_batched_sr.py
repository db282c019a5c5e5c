#!/usr/bin/env python
"""Smoke test: BatchedNeuralSR and BasicSR side by side on a few fresh problems.

    python test_batched_sr.py                                  # shipped checkpoint, 3 arith problems
    python test_batched_sr.py --num_problems 5 --num_generations 100 --operator_set full
    python test_batched_sr.py --autoregressive                 # shipped autoregressive checkpoint

Prints target, expression found (sympy-simplified), MSE, solved and time for
both methods; exit status 0 when every neural proposal was well-formed.
(A CLI, not a unit test: pytest collects only tests/.)
"""
import os
import sys
import time


from nsr.cli import ArgumentParser, add_sampling_args, nonneg_int, population_size, positive_int, run_main
from nsr.datasets import generate_dataset, load_expressions
from nsr.expressions import OPERATOR_SETS
from nsr.neural_sr import DEFAULT_AR_CHECKPOINT, DEFAULT_CHECKPOINT, BatchedNeuralSR
from nsr.report import simplified, table
from nsr.sr import BasicSR
from nsr.traces import SOLVED_MSE, seed_for


def main(argv):
    p = ArgumentParser(description="BatchedNeuralSR vs BasicSR on a few problems.")
    p.add_argument("--checkpoint", default=None, help=f"default: {os.path.relpath(DEFAULT_CHECKPOINT)} "
                                                      f"({os.path.relpath(DEFAULT_AR_CHECKPOINT)} with --autoregressive)")
    p.add_argument("--num_problems", type=positive_int, default=3)
    p.add_argument("--expressions_file", default=None, help="take the problems from this file instead")
    p.add_argument("--population_size", type=population_size, default=20)
    p.add_argument("--num_generations", type=positive_int, default=50)
    p.add_argument("--operator_set", choices=sorted(OPERATOR_SETS), default="arith")
    p.add_argument("--batch_size", type=positive_int, default=None, help="default: all problems in one batch")
    p.add_argument("--seed", type=nonneg_int, default=0)
    add_sampling_args(p, beta=False)
    args = p.parse_args(argv)
    checkpoint = args.checkpoint or (DEFAULT_AR_CHECKPOINT if args.autoregressive else DEFAULT_CHECKPOINT)
    if args.expressions_file:
        records = load_expressions(args.expressions_file)["records"][: args.num_problems]
    else:  # fresh problems; this seed range is not used by any shipped or training set
        records = generate_dataset(args.num_problems, args.operator_set, 0.5, seed=10_000 + args.seed)
    X_list, y_list = [r["X"] for r in records], [r["y"] for r in records]

    neural = BatchedNeuralSR(checkpoint, population_size=args.population_size, num_generations=args.num_generations,
                             operator_set=args.operator_set, autoregressive=True if args.autoregressive else None,
                             temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, device=args.device,
                             seed=args.seed)
    neural.neural.ck  # load the checkpoint once (reported apart from the runs)
    t0 = time.perf_counter()
    models, mses, trajs = neural.batched_fit(X_list, y_list, batch_size=args.batch_size)
    neural_time = (time.perf_counter() - t0) / len(records)

    rows, solved_n, solved_b = [], 0, 0
    for i, r in enumerate(records):
        t1 = time.perf_counter()
        sr = BasicSR(population_size=args.population_size, num_generations=args.num_generations,
                     operator_set=args.operator_set).fit(r["X"], r["y"], rng=seed_for(args.seed, i))
        basic_time = time.perf_counter() - t1
        ok_n, ok_b = mses[i] <= SOLVED_MSE, sr.get_final_mse() <= SOLVED_MSE
        solved_n += ok_n
        solved_b += ok_b
        rows.append([simplified(r["expression"], 30), "neural", simplified(str(models[i]), 40), mses[i], ok_n,
                     round(neural_time, 3)])
        rows.append(["", "basic", simplified(str(sr.best_model_), 40), sr.get_final_mse(), ok_b,
                     round(basic_time, 3)])
    print(table(rows, ["target", "method", "found (simplified)", "MSE", "solved", "time/expr s"]))
    st = neural.neural.stats
    wf = 100.0 * st["well_formed"] / max(st["proposals"], 1)
    print(f"\nneural: solved {solved_n}/{len(records)}, well-formed {wf:.1f}% of {st['proposals']} proposals, "
          f"model time {st['model_time']:.2f}s, {neural_time:.3f}s per expression (batch of "
          f"{args.batch_size or len(records)}, {neural.neural.ck.device})")
    print(f"basic:  solved {solved_b}/{len(records)}")
    return 0 if st["well_formed"] == st["proposals"] else 1


if __name__ == "__main__":
    sys.exit(run_main(main))
