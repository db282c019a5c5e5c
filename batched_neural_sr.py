#!/usr/bin/env python
"""BatchedNeuralSR: neural SR on many problems at once (classes in nsr.neural_sr; this is a CLI).

    from batched_neural_sr import BatchedNeuralSR, NeuralSR, batched_fit
    models, mses, trajectories = batched_fit(X_list, y_list, checkpoint="training/checkpoints/default",
                                             population_size=20, num_generations=50, seed=0)
    sr = BatchedNeuralSR("training/checkpoints/default", population_size=20, device="cuda")
    models, mses, trajectories = sr.batched_fit(X_list, y_list)   # the checkpoint loads once, on first use

    python batched_neural_sr.py --expressions_file datasets/expressions/heldout_arith_100_c05.pkl.gz --batch_size 32
"""
import os
import sys
import time

from nsr.cli import (ArgumentParser, add_sampling_args, finite_float, nonneg_int, population_size, positive_int,
                     run_main)
from nsr.datasets import DEFAULT_EXPRESSIONS, file_constants, file_operator_set, load_expressions
from nsr.expressions import OPERATOR_SETS, format_infix
from nsr.neural_sr import DEFAULT_CHECKPOINT, BatchedNeuralSR, NeuralSR, batched_fit
from nsr.report import table
from nsr.traces import SOLVED_MSE, seed_for

__all__ = ["BatchedNeuralSR", "NeuralSR", "batched_fit"]


def main(argv):
    p = ArgumentParser(description="Run BatchedNeuralSR on every problem of an expressions file; print a table.")
    p.add_argument("--expressions_file", default=DEFAULT_EXPRESSIONS)
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    p.add_argument("--max_expressions", type=positive_int, default=None)
    p.add_argument("--batch_size", type=positive_int, default=32)
    p.add_argument("--population_size", type=population_size, default=20)
    p.add_argument("--num_generations", type=positive_int, default=50)
    p.add_argument("--operator_set", choices=sorted(OPERATOR_SETS), default=None)
    p.add_argument("--constants", type=finite_float, nargs="+", default=None)
    add_sampling_args(p)
    p.add_argument("--seed", type=nonneg_int, default=0)
    args = p.parse_args(argv)
    data = load_expressions(args.expressions_file)
    records = data["records"][: args.max_expressions]
    sr = BatchedNeuralSR(args.checkpoint, population_size=args.population_size,
                         num_generations=args.num_generations,
                         operator_set=file_operator_set(data["metadata"], args.operator_set, args.expressions_file),
                         constants=file_constants(data["metadata"], args.constants, args.expressions_file),
                         temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, beta=args.beta,
                         autoregressive=True if args.autoregressive else None, device=args.device)
    sr.neural.ck  # load and check the checkpoint now, so a bad one fails before any work
    problems = sr.make_problems([r["X"] for r in records], [r["y"] for r in records],
                                rngs=[seed_for(args.seed, i) for i in range(len(records))])
    t0 = time.perf_counter()
    sr.run_problems(problems, args.batch_size)
    per = (time.perf_counter() - t0) / len(records)
    rows = []
    for r, pr in zip(records, problems):
        mse = float(pr.mse[pr.best_index()])
        rows.append([str(r.get("expression", r["id"]))[:40], format_infix(pr.best_tokens())[:50], mse,
                     mse <= SOLVED_MSE, len(pr.best_progression)])
    print(table(rows, ["target", "found", "MSE", "solved", "generations"]))
    st = sr.neural.stats
    print(f"\nsolved {sum(r[3] for r in rows)}/{len(rows)}; {per:.3f}s per expression (batch {args.batch_size}, "
          f"{sr.neural.ck.device}); model time {st['model_time']:.2f}s; well-formed "
          f"{100.0 * st['well_formed'] / max(st['proposals'], 1):.1f}% of {st['proposals']} proposals; "
          f"checkpoint {os.path.relpath(sr.neural.ck.path)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
