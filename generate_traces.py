#!/usr/bin/env python
"""Run SR on every expression of an expressions file and record its evolution.

    python generate_traces.py                       # BasicSR expert on the shipped default file
    python generate_traces.py --expressions_file F --num_generations 50 --num_workers 8
    python generate_traces.py --checkpoint training/checkpoints/default/checkpoint-N --batch_size 32

Writes ``{output_dir}/gen{N}_{input basename}.pkl.gz`` (see README: trace format).
"""
import os
import sys

from nsr import safe_io
from nsr.cli import (ArgumentParser, add_sampling_args, finite_float, nonneg_int, population_size, positive_float,
                     positive_int, probability, run_main, run_metadata)
from nsr.datasets import DEFAULT_EXPRESSIONS, count_label, file_constants, file_operator_set, load_expressions
from nsr.expressions import OPERATOR_SETS
from nsr.runner import RunSpec, run_traces
from nsr.safe_io import InputError


def parse_shard(text):
    import argparse

    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"need 0 <= i < n, got {text!r}")
    return i, n


def parse_args(argv):
    p = ArgumentParser(description="Run BasicSR (or neural SR) on an expressions file and save the traces.")
    p.add_argument("--expressions_file", default=DEFAULT_EXPRESSIONS)
    p.add_argument("--output_dir", default=os.path.join("datasets", "traces"))
    p.add_argument("--output", default=None, help="explicit output path (overrides the derived name)")
    p.add_argument("--max_expressions", type=positive_int, default=None)
    p.add_argument("--population_size", type=population_size, default=20)
    p.add_argument("--num_generations", type=positive_int, default=50)
    p.add_argument("--max_depth", type=positive_int, default=4)
    p.add_argument("--max_size", type=positive_int, default=25)
    p.add_argument("--tournament_size", type=positive_int, default=3)
    p.add_argument("--crossover_prob", type=probability, default=0.7)
    p.add_argument("--parsimony", type=finite_float, default=1e-3)
    p.add_argument("--operator_set", choices=sorted(OPERATOR_SETS), default=None,
                   help="default: the expressions file's own, else arith")
    p.add_argument("--constants", type=finite_float, nargs="+", default=None,
                   help="default: the expressions file's own, else 1.0")
    p.add_argument("--no_early_stop", action="store_true")
    p.add_argument("--seed", type=nonneg_int, default=42)
    p.add_argument("--num_workers", type=positive_int, default=None, help="processes (default: all cores)")
    p.add_argument("--shard", type=parse_shard, default=None, metavar="i/n",
                   help="process every n-th expression starting at i")
    # neural SR
    p.add_argument("--checkpoint", default=None, help="run neural SR with this checkpoint")
    p.add_argument("--batch_size", type=positive_int, default=None,
                   help="problems per model call (neural SR; default 1)")
    add_sampling_args(p)
    # long runs
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its partial file")
    p.add_argument("--save_every", type=positive_float, default=60.0, help="seconds between partial saves")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.batch_size is not None and args.checkpoint is None:
        p.error("--batch_size needs --checkpoint (the expert runs expressions in parallel processes)")
    if args.beta > 0 and args.checkpoint is None:
        p.error("--beta needs --checkpoint")
    if args.parsimony < 0:
        p.error(f"--parsimony must be >= 0, got {args.parsimony}")
    return args


def main(argv):
    args = parse_args(argv)
    data = load_expressions(args.expressions_file)
    meta_in = data["metadata"]
    operator_set = file_operator_set(meta_in, args.operator_set, args.expressions_file)
    constants = file_constants(meta_in, args.constants, args.expressions_file)
    indexed = list(enumerate(data["records"]))
    if args.max_expressions:
        indexed = indexed[: args.max_expressions]
    if args.shard:
        i, n = args.shard
        indexed = indexed[i::n]
        if not indexed:
            raise InputError(f"shard {i}/{n} of {args.expressions_file} holds no expressions")
    base = os.path.basename(args.expressions_file)
    for ext in (".pkl.gz", ".gz", ".pkl"):
        if base.endswith(ext):
            base = base[: -len(ext)]
            break
    name = f"gen{count_label(args.num_generations)}_{base}"
    if args.shard:
        name += f"_shard{args.shard[0]}of{args.shard[1]}"
    output = args.output or os.path.join(args.output_dir, name + ".pkl.gz")
    if os.path.abspath(output) == os.path.abspath(args.expressions_file):
        raise InputError(f"{output}: the output path is the input file")
    safe_io.check_output_file(output)

    spec = RunSpec(
        population_size=args.population_size, num_generations=args.num_generations, max_depth=args.max_depth,
        max_size=args.max_size, tournament_size=args.tournament_size, crossover_prob=args.crossover_prob,
        parsimony=args.parsimony, operator_set=operator_set, constants=tuple(float(c) for c in constants),
        early_stop=not args.no_early_stop, seed=args.seed, checkpoint=args.checkpoint,
        batch_size=args.batch_size or 1, device=args.device, temperature=args.temperature, top_k=args.top_k,
        top_p=args.top_p, autoregressive=args.autoregressive, beta=args.beta)
    meta = run_metadata(args)
    meta.update(input_file=os.path.abspath(args.expressions_file), input_metadata=meta_in)
    records, meta = run_traces(spec, indexed, output, meta, num_workers=args.num_workers, resume=args.resume,
                               save_every=args.save_every, quiet=args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
