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

from nsr.cli import ArgumentParser, configure_threads, positive_int, run_main
from nsr.config import ROLLOUT_DEFAULTS, EvolutionConfig, RunConfig, SamplingConfig, add_arguments, from_args
from nsr.datasets import DatasetConfig, generate_dataset, load_expressions
from nsr.drivers import file_jobs, run_jobs
from nsr.estimators import DEFAULT_AR_CHECKPOINT, DEFAULT_CHECKPOINT
from nsr.evaluation import eval_result
from nsr.metrics import solved_on_data
from nsr.report import simplified, table
from nsr.search import Searcher


def main(argv):
    p = ArgumentParser(description="BatchedNeuralSR vs BasicSR on a few problems.")
    p.add_argument("--num_problems", type=positive_int, default=3)
    p.add_argument("--expressions_file", default=None, help="take the problems from this file instead")
    add_arguments(p.add_argument_group("evolution"), EvolutionConfig, defaults=ROLLOUT_DEFAULTS,
                  only=("population_size", "num_generations", "operator_set", "max_size"))
    add_arguments(p.add_argument_group("neural SR"), SamplingConfig, exclude=("beta",))
    add_arguments(p.add_argument_group("run"), RunConfig, only=("seed", "batch_size", "threads"))
    args = p.parse_args(argv)
    checkpoint = args.checkpoint or (DEFAULT_AR_CHECKPOINT if args.autoregressive else DEFAULT_CHECKPOINT)
    if args.expressions_file:
        records = load_expressions(args.expressions_file)["records"][: args.num_problems]
    else:  # fresh problems; this seed range is not used by any shipped or training set
        records = generate_dataset(DatasetConfig(operator_set=args.operator_set, num_expressions=args.num_problems,
                                                 seed=10_000 + args.seed))
    evolution, run = from_args(EvolutionConfig, args), from_args(RunConfig, args)
    configure_threads(run.threads)
    neural = Searcher(evolution, from_args(SamplingConfig, args, checkpoint=checkpoint))
    ck = neural.load()  # loaded once, reported apart from the runs
    jobs = file_jobs(records, run.seed)
    batch = run.batch_size or len(records)
    out = {}
    for name, searcher in (("neural", neural), ("basic", Searcher(evolution))):
        out[name] = {j.index: r for j, r in run_jobs(searcher, jobs, eval_result, batch)}
    rows = []
    for j in jobs:
        for name in ("neural", "basic"):
            r = out[name][j.index]
            rows.append([simplified(j.record.get("expression"), 30) if name == "neural" else "", name,
                         simplified(r["found"], 40), r["train_mse"], solved_on_data(r["train_mse"]), round(r["time"], 3)])
    print(table(rows, ["target", "method", "found (simplified)", "MSE", "solved", "time/expr s"]))
    st = neural.neural.stats
    wf = 100.0 * st["well_formed"] / max(st["proposals"], 1)
    solved = {n: sum(solved_on_data(r["train_mse"]) for r in out[n].values()) for n in out}
    print(f"\nneural: solved {solved['neural']}/{len(records)}, well-formed {wf:.1f}% of {st['proposals']} proposals, "
          f"model time {st['model_time']:.2f}s, {sum(r['time'] for r in out['neural'].values()) / len(records):.3f}s "
          f"per expression (batch of {batch}, {ck.device}, {os.path.relpath(ck.path)})")
    print(f"basic:  solved {solved['basic']}/{len(records)}")
    return 0 if st["well_formed"] == st["proposals"] else 1


if __name__ == "__main__":
    sys.exit(run_main(main))
