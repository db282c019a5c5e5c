#!/usr/bin/env python
"""BatchedNeuralSR: neural SR on many problems at once (classes in nsr.estimators; this is a CLI).

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

from nsr.cli import ArgumentParser, configure_threads, positive_int, run_main
from nsr.config import (FILE_DEFAULTS, ROLLOUT_DEFAULTS, EvolutionConfig, RunConfig, SamplingConfig, add_arguments,
                        from_args)
from nsr.datasets import DEFAULT_EXPRESSIONS, file_constants, file_operator_set, load_expressions
from nsr.drivers import file_jobs, run_jobs
from nsr.estimators import DEFAULT_CHECKPOINT, BatchedNeuralSR, NeuralSR, batched_fit
from nsr.evaluation import eval_result
from nsr.metrics import solved_on_data
from nsr.report import table
from nsr.search import Searcher

__all__ = ["BatchedNeuralSR", "NeuralSR", "batched_fit"]


def main(argv):
    p = ArgumentParser(description="Run BatchedNeuralSR on every problem of an expressions file; print a table.")
    p.add_argument("--expressions_file", default=DEFAULT_EXPRESSIONS)
    p.add_argument("--max_expressions", type=positive_int, default=None)
    add_arguments(p.add_argument_group("evolution"), EvolutionConfig, defaults={**ROLLOUT_DEFAULTS, **FILE_DEFAULTS})
    add_arguments(p.add_argument_group("neural SR"), SamplingConfig, defaults={"checkpoint": DEFAULT_CHECKPOINT})
    add_arguments(p.add_argument_group("run"), RunConfig, only=("seed", "batch_size", "threads", "quiet"))
    args = p.parse_args(argv)
    data = load_expressions(args.expressions_file)
    records = data["records"][: args.max_expressions]
    meta = data["metadata"]
    evolution = from_args(EvolutionConfig, args, operator_set=file_operator_set(meta, args.operator_set,
                                                                                args.expressions_file),
                          constants=file_constants(meta, args.constants, args.expressions_file))
    run = from_args(RunConfig, args)
    configure_threads(run.threads)
    searcher = Searcher(evolution, from_args(SamplingConfig, args))
    ck = searcher.load()  # a bad checkpoint fails before any work
    t0 = time.perf_counter()
    results = {j.index: r for j, r in run_jobs(searcher, file_jobs(records, run.seed), eval_result,
                                                run.neural_batch_size)}
    per = (time.perf_counter() - t0) / len(records)
    rows = []
    for i in sorted(results):
        r = results[i]
        rows.append([str(r["target"] or r["id"])[:40], r["found"][:50], r["train_mse"], solved_on_data(r["train_mse"]),
                     "-" if r["r2"] is None else r["r2"], r["generations"]])
    print(table(rows, ["target", "found", "MSE", "solved", "R2 (fresh points)", "generations"]))
    st = searcher.neural.stats
    print(f"\nsolved {sum(r[3] for r in rows)}/{len(rows)}; {per:.3f}s per expression (batch "
          f"{run.neural_batch_size}, {ck.device}); model time {st['model_time']:.2f}s; well-formed "
          f"{100.0 * st['well_formed'] / max(st['proposals'], 1):.1f}% of {st['proposals']} proposals; "
          f"checkpoint {os.path.relpath(ck.path)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
