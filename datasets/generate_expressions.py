#!/usr/bin/env python
"""Sample random target expressions into an expressions file.

    python datasets/generate_expressions.py --operator_set arith --num_expressions 1000 --complexity 0.5

writes ``datasets/expressions/arith_1k_c05_<timestamp>.pkl.gz``. ``--nguyen``
writes the Nguyen-1..12 benchmark instead, ``--feynman [CSV]`` the AI Feynman
equations (``feynman_100.pkl.gz``; a malformed row is reported and skipped). An
existing output is never replaced without --overwrite, and the output may not
be one of the --exclude files.
"""
import datetime
import os
import sys

from tqdm import tqdm

from nsr import safe_io
from nsr.cli import ArgumentParser, run_main, run_metadata
from nsr.config import add_arguments, from_args
from nsr.datasets import (EXPRESSIONS_DIR, FEYNMAN_CSV, DatasetConfig, count_label, feynman_records,
                          function_signature, generate_dataset, load_expressions, nguyen_records, target_tokens)
from nsr.drivers import check_output


def parse_args(argv):
    p = ArgumentParser(description=__doc__.split("\n")[1])
    add_arguments(p, DatasetConfig)
    p.add_argument("--exclude", nargs="*", default=[], metavar="FILE",
                   help="expressions files whose functions must not be sampled (keeps sets disjoint)")
    bench = p.add_mutually_exclusive_group()
    bench.add_argument("--nguyen", action="store_true", help="write the Nguyen-1..12 benchmark instead")
    bench.add_argument("--feynman", nargs="?", const=FEYNMAN_CSV, default=None, metavar="CSV",
                       help=f"write the AI Feynman equations of this table instead (default table: {FEYNMAN_CSV}); "
                            f"--num_points points per equation, uniform in each variable's range")
    p.add_argument("--output_dir", default=EXPRESSIONS_DIR)
    p.add_argument("--output", default=None, help="explicit output path (default: a name from the parameters)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    cfg = from_args(DatasetConfig, args)
    if args.nguyen:
        name = "nguyen_12.pkl.gz"
    elif args.feynman:
        name = "feynman_100.pkl.gz"
    else:
        stamp = datetime.datetime.now().strftime("%Y%m%d_%H%M%S")
        name = f"{cfg.operator_set}_{count_label(cfg.num_expressions)}_c{round(cfg.complexity * 10):02d}_{stamp}.pkl.gz"
    path = args.output or os.path.join(args.output_dir, name)
    check_output(path, args.overwrite, args.exclude)
    exclude = set()
    for ex in args.exclude:
        for r in load_expressions(ex)["records"]:
            tokens = target_tokens(r)
            if tokens is not None:
                exclude.add(r["expression"])
                exclude.add(function_signature(tokens, r["X"].shape[1]))
    if args.nguyen:
        records = nguyen_records(cfg.seed)
        params = {"benchmark": "Nguyen-1..12", "operator_set": "full", "constants": [1.0], "seed": cfg.seed}
    elif args.feynman:
        warn = (lambda m: None) if args.quiet else (lambda m: print(f"note: {m}", file=sys.stderr))
        records, notes = feynman_records(args.feynman, cfg.num_points, cfg.seed, warn=warn)
        params = {"benchmark": "AI Feynman (Udrescu & Tegmark 2020), SRBench ground-truth Feynman problems",
                  "source_table": os.path.basename(args.feynman), "operator_set": "physics", "constants": [1.0],
                  "num_points": cfg.num_points, "seed": cfg.seed, "notes": notes}
    else:
        with tqdm(total=cfg.num_expressions, disable=args.quiet, desc="expressions") as bar:
            records = generate_dataset(cfg, exclude=exclude, progress=bar.update)
        params = cfg.to_dict()
        params.update(num_vars=[cfg.min_vars, cfg.max_vars], x_range=[cfg.x_min, cfg.x_max],
                      excluded_files=[os.path.basename(p) for p in args.exclude])
    meta = run_metadata(args)
    meta.update(params)
    safe_io.save(path, "expressions", meta, records)
    if not args.quiet:
        print(f"wrote {len(records)} expressions to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
