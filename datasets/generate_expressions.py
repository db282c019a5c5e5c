#!/usr/bin/env python
"""Sample random target expressions into an expressions file.

    python datasets/generate_expressions.py --operator_set arith --num_expressions 1000 --complexity 0.5

writes ``datasets/expressions/arith_1k_c05_<timestamp>.pkl.gz``. ``--nguyen``
writes the Nguyen-1..12 benchmark instead.
"""
import datetime
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tqdm import tqdm  # noqa: E402

from nsr import safe_io  # noqa: E402
from nsr.cli import (ArgumentParser, finite_float, nonneg_int, positive_int, probability, run_main,  # noqa: E402
                     run_metadata)
from nsr.datasets import (EXPRESSIONS_DIR, count_label, function_signature, generate_dataset,  # noqa: E402
                          load_expressions, nguyen_records, target_tokens)
from nsr.expressions import OPERATOR_SETS  # noqa: E402


def parse_args(argv):
    p = ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--operator_set", choices=sorted(OPERATOR_SETS), default="arith")
    p.add_argument("--num_expressions", type=positive_int, default=10)
    p.add_argument("--complexity", type=probability, default=0.5, help="0..1, drives the number of operators")
    p.add_argument("--min_vars", type=positive_int, default=1)
    p.add_argument("--max_vars", type=positive_int, default=3)
    p.add_argument("--constants", type=finite_float, nargs="+", default=[1.0])
    p.add_argument("--num_points", type=positive_int, default=100)
    p.add_argument("--x_min", type=finite_float, default=-2.0)
    p.add_argument("--x_max", type=finite_float, default=2.0)
    p.add_argument("--noise", type=finite_float, default=0.0, help="Gaussian noise, as a fraction of std(y)")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--exclude", nargs="*", default=[], metavar="FILE",
                   help="expressions files whose functions must not be sampled (keeps sets disjoint)")
    p.add_argument("--nguyen", action="store_true", help="write the Nguyen-1..12 benchmark instead")
    p.add_argument("--output_dir", default=EXPRESSIONS_DIR)
    p.add_argument("--output", default=None, help="explicit output path (default: a name from the parameters)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.min_vars > args.max_vars or args.max_vars > 10:
        p.error(f"need 1 <= --min_vars <= --max_vars <= 10, got {args.min_vars}..{args.max_vars}")
    if not args.x_min < args.x_max:
        p.error(f"--x_min must be below --x_max, got {args.x_min} and {args.x_max}")
    if args.noise < 0:
        p.error(f"--noise must be >= 0, got {args.noise}")
    return args


def main(argv):
    args = parse_args(argv)
    exclude = set()
    for path in args.exclude:
        for r in load_expressions(path)["records"]:
            tokens = target_tokens(r)
            if tokens is not None:
                exclude.add(r["expression"])
                exclude.add(function_signature(tokens, r["X"].shape[1]))
    if args.nguyen:
        records = nguyen_records(args.seed)
        name = "nguyen_12.pkl.gz"
        params = {"benchmark": "Nguyen-1..12", "operator_set": "full", "constants": [1.0], "seed": args.seed}
    else:
        with tqdm(total=args.num_expressions, disable=args.quiet, desc="expressions") as bar:
            records = generate_dataset(
                args.num_expressions, args.operator_set, args.complexity, (args.min_vars, args.max_vars),
                tuple(args.constants), args.num_points, (args.x_min, args.x_max), args.noise, args.seed,
                exclude=exclude, progress=bar.update)
        stamp = datetime.datetime.now().strftime("%Y%m%d_%H%M%S")
        name = (f"{args.operator_set}_{count_label(args.num_expressions)}_c{round(args.complexity * 10):02d}"
                f"_{stamp}.pkl.gz")
        params = {"operator_set": args.operator_set, "num_expressions": args.num_expressions,
                  "complexity": args.complexity, "num_vars": [args.min_vars, args.max_vars],
                  "constants": list(args.constants), "num_points": args.num_points,
                  "x_range": [args.x_min, args.x_max], "noise": args.noise, "seed": args.seed,
                  "excluded_files": [os.path.basename(p) for p in args.exclude]}
    path = args.output or os.path.join(args.output_dir, name)
    safe_io.check_output_file(path)
    meta = run_metadata(args)
    meta.update(params)
    safe_io.save(path, "expressions", meta, records)
    if not args.quiet:
        print(f"wrote {len(records)} expressions to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
