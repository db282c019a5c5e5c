#!/usr/bin/env python
"""Run SR on every expression of an expressions file and record its evolution.

    python generate_traces.py                       # BasicSR expert on the shipped default file
    python generate_traces.py --expressions_file F --num_generations 50 --num_workers 8
    python generate_traces.py --checkpoint training/checkpoints/default --batch_size 32     # neural SR

Writes ``{output_dir}/gen{N}_{input basename}[_neural[_betaB]][_shard{i}of{n}].pkl.gz``
(see README: trace format). An existing output is never replaced without --overwrite.
"""
import os
import sys

from nsr.cli import ArgumentParser, configure_threads, parse_shard, positive_int, run_main, run_metadata
from nsr.config import (FILE_DEFAULTS, ROLLOUT_DEFAULTS, EvolutionConfig, RunConfig, SamplingConfig, add_arguments,
                        from_args)
from nsr.datasets import DEFAULT_EXPRESSIONS, count_label, file_constants, file_operator_set, load_expressions
from nsr.drivers import file_jobs, merge_traces, run_fingerprint, write_traces
from nsr.safe_io import InputError
from nsr.search import Searcher


def parse_args(argv):
    p = ArgumentParser(description="Run BasicSR (or neural SR) on an expressions file and save the traces.")
    p.add_argument("--merge", nargs="+", default=None, metavar=("OUT", "SHARD"),
                   help="instead of running: merge the shard files SHARD... of one --shard i/n run into OUT")
    p.add_argument("--expressions_file", default=DEFAULT_EXPRESSIONS)
    p.add_argument("--output_dir", default=os.path.join("datasets", "traces"))
    p.add_argument("--output", default=None, help="explicit output path (overrides the derived name)")
    p.add_argument("--max_expressions", type=positive_int, default=None)
    p.add_argument("--shard", type=parse_shard, default=None, metavar="i/n",
                   help="process every n-th expression starting at i")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from OUTPUT.partial/")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output (and discard OUTPUT.partial/)")
    add_arguments(p.add_argument_group("evolution"), EvolutionConfig, defaults={**ROLLOUT_DEFAULTS, **FILE_DEFAULTS})
    add_arguments(p.add_argument_group("neural SR (with --checkpoint)"), SamplingConfig)
    add_arguments(p.add_argument_group("run"), RunConfig)
    args = p.parse_args(argv)
    if args.merge is not None and len(args.merge) < 2:
        p.error("--merge needs OUT and at least one shard file")
    if args.checkpoint is None:
        for flag, given in (("--batch_size", args.batch_size is not None), ("--beta", args.beta > 0),
                            ("--autoregressive", args.autoregressive)):
            if given:
                p.error(f"{flag} needs --checkpoint (the expert runs expressions in parallel processes)")
    return args


def default_name(args, sampling) -> str:
    base = os.path.basename(args.expressions_file)
    for ext in (".pkl.gz", ".gz", ".pkl"):
        if base.endswith(ext):
            base = base[: -len(ext)]
            break
    name = f"gen{count_label(args.num_generations)}_{base}"
    if sampling.checkpoint:  # expert and neural traces of one file must not share a name
        name += "_neural" + (f"_beta{sampling.beta:g}" if sampling.beta > 0 else "")
    if args.shard:
        name += f"_shard{args.shard[0]}of{args.shard[1]}"
    return name + ".pkl.gz"


def main(argv):
    args = parse_args(argv)
    if args.merge:
        out, shards = args.merge[0], args.merge[1:]
        meta = merge_traces(shards, out, overwrite=args.overwrite)
        if not args.quiet:
            print(f"merged {len(shards)} shards: {meta['num_records']} records, solved {meta['solved']}; wrote {out}")
        return 0
    data = load_expressions(args.expressions_file)
    meta_in = data["metadata"]
    evolution = from_args(EvolutionConfig, args, collect_trajectory=True,
                          operator_set=file_operator_set(meta_in, args.operator_set, args.expressions_file),
                          constants=file_constants(meta_in, args.constants, args.expressions_file))
    sampling, run = from_args(SamplingConfig, args), from_args(RunConfig, args)
    configure_threads(run.threads)
    indices = list(range(len(data["records"])))[: args.max_expressions]
    searcher = Searcher(evolution, sampling)
    run_id = run_fingerprint(searcher, file_jobs([data["records"][i] for i in indices], run.seed, indices))
    meta = run_metadata(args)
    meta.update(input_file=os.path.abspath(args.expressions_file), input_metadata=meta_in,
                expressions_total=len(indices))
    if args.shard:
        i, n = args.shard
        indices = indices[i::n]
        meta["shard"] = [i, n]
        if not indices:
            raise InputError(f"shard {i}/{n} of {args.expressions_file} holds no expressions")
    output = args.output or os.path.join(args.output_dir, default_name(args, sampling))
    jobs = file_jobs([data["records"][i] for i in indices], run.seed, indices)
    write_traces(searcher, jobs, output, meta, run, resume=args.resume, overwrite=args.overwrite,
                 inputs=[args.expressions_file], run_id=run_id)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
