#!/usr/bin/env python
"""BasicSR, the genetic-programming expert (the class lives in nsr.estimators; this is its CLI).

    from basic_sr import BasicSR
    model = BasicSR.for_data().fit(df[["m", "v"]], df["E"])   # a DataFrame: its column names are the variables
    model.best_model_, model.equations_, model.predict(X)

    python basic_sr.py --data datasets/tables/example.csv --target_column y   # your own table (CSV/TSV/parquet)
    python basic_sr.py --target "x0**3 + x0**2 + x0"          # fit data sampled from a formula
    python basic_sr.py --expressions_file datasets/expressions/nguyen_12.pkl.gz
"""
import json
import math
import os
import sys
from dataclasses import fields

import numpy as np

from nsr import safe_io
from nsr.cli import ArgumentParser, positive_int, run_main, run_metadata
from nsr.config import DATA_PRESET, EvolutionConfig, Float, RunConfig, add_arguments, from_args
from nsr.datafit import fit_table
from nsr.datasets import DEFAULT_EXPRESSIONS, file_constants, file_operator_set, load_expressions
from nsr.drivers import file_jobs, run_jobs
from nsr.estimators import BasicSR
from nsr.evaluation import eval_result
from nsr.expressions import arity, evaluate, parse, shorten, variables_used
from nsr.metrics import solved_on_data
from nsr.operators import OPERATOR_SETS
from nsr.report import table as text_table
from nsr.safe_io import InputError, atomic_write_bytes, check_output_file
from nsr.search import Searcher
from nsr.tables import DEFAULT_MAX_ROWS, read_table
from nsr.traces import validate_traces

__all__ = ["BasicSR"]
PRESETS = {"data": DATA_PRESET, "classic": {}}  # classic: BasicSR()'s own defaults, as every earlier release


def main(argv):
    p = ArgumentParser(description="Fit BasicSR to your own table, to a formula's data, or to each problem of an "
                                   "expressions file.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", metavar="FILE", help="a table with a header row: CSV, TSV (.tsv), either gzipped, "
                                                    "or parquet (needs pyarrow)")
    src.add_argument("--target", help="a formula in x0..x9, e.g. 'x0**2 + sin(x1)'")
    src.add_argument("--expressions_file", default=None, help=f"default: {DEFAULT_EXPRESSIONS}")
    d = p.add_argument_group("your own table (--data)")
    d.add_argument("--target_column", metavar="NAME", help="the column to predict (default: the last one)")
    d.add_argument("--features", metavar="NAME", nargs="+", help="the input columns (default: all but the target; "
                                                                 "at most 10)")
    d.add_argument("--test_fraction", type=Float(0.0, 0.9).from_text, default=0.25,
                   help="share of rows held out, seeded by --seed (default: 0.25)")
    d.add_argument("--drop_missing", action="store_true", help="drop rows with missing or non-finite values "
                                                               "(default: they are an error)")
    d.add_argument("--max_rows", type=positive_int, default=DEFAULT_MAX_ROWS,
                   help=f"most rows read; memory is max_rows x columns x 8 bytes (default: {DEFAULT_MAX_ROWS:,})")
    d.add_argument("--subsample", action="store_true", help="a longer file: fit a seeded uniform sample of "
                                                            "--max_rows rows instead of failing")
    d.add_argument("--output", metavar="JSON", help="write the result (formula, front, metrics, settings) as JSON")
    d.add_argument("--traces", metavar="FILE", help="also record the run as a traces file (.pkl.gz; every "
                                                    "generation, with the variable names mapped to the columns)")
    d.add_argument("--overwrite", action="store_true", help="replace an existing --output or --traces")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="default settings: 'data' (fitted constants, linear scaling, polish, population 500, the "
                        "physics operators, 100k evaluations, PySR's model choice; the default for --data) or "
                        "'classic' (BasicSR()'s own, as earlier releases: the default otherwise); flags override")
    p.add_argument("--max_expressions", type=positive_int, default=None)
    p.add_argument("--num_points", type=positive_int, default=100)
    p.add_argument("--x_range", type=Float().from_text, nargs=2, default=[-1.0, 1.0])
    evo = p.add_argument_group("evolution (defaults: the preset's)")
    add_arguments(evo, EvolutionConfig, defaults={f.name: None for f in fields(EvolutionConfig)},
                  unset_help=" (default: the preset's)")
    evo.add_argument("--no_linear_scaling", dest="linear_scaling", action="store_false",
                     help="switch linear scaling off (on in the data preset)")
    add_arguments(p.add_argument_group("run"), RunConfig, only=("seed", "num_workers", "quiet"))
    args = p.parse_args(argv)
    preset = PRESETS[args.preset or ("data" if args.data else "classic")]
    given = {f.name: getattr(args, f.name) for f in fields(EvolutionConfig) if getattr(args, f.name, None) is not None}
    if args.data:
        return fit_data(args, {**preset, **given})
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
        operator_set = given.get("operator_set") or preset.get("operator_set") or (
            "arith" if all(t in arith for t in tokens if arity(t)) else "full")
        constants = args.constants or (1.0,)
    else:
        path = args.expressions_file or DEFAULT_EXPRESSIONS
        data = load_expressions(path)
        records = data["records"][: args.max_expressions]
        operator_set = file_operator_set(data["metadata"], args.operator_set or preset.get("operator_set"), path)
        constants = file_constants(data["metadata"], args.constants, path)
    evolution = EvolutionConfig(**{**preset, **given, "operator_set": operator_set, "constants": constants})
    run = from_args(RunConfig, args)
    print(f"{'target':<45} {'found':<45} {'MSE':>10} {'time':>7}")
    for _job, r in run_jobs(Searcher(evolution), file_jobs(records, run.seed), eval_result,
                            num_workers=run.num_workers or 1):  # as they finish
        mark = " solved" if solved_on_data(r["train_mse"]) else ""
        target = str(r["target"] if r["target"] is not None else r["id"])
        print(f"{target[:45]:<45} {r['found'][:45]:<45} {r['train_mse']:10.3g} {r['time']:6.2f}s{mark}")
    return 0


def fit_data(args, settings):
    """``--data``: read, split, fit, print the front and the held-out metrics; ``--output`` as JSON."""
    for out in (args.output, args.traces):
        if out:
            if os.path.exists(out) and not args.overwrite:
                raise InputError(f"{out}: exists (pass --overwrite to replace it)")
            check_output_file(out)
    table = read_table(args.data, args.target_column, args.features, args.drop_missing, args.max_rows,
                       args.subsample, args.seed)
    estimator = BasicSR(**settings, collect_trajectory=bool(args.traces))
    say = (lambda *a: None) if args.quiet else print
    kept = f"{len(table.y):,} rows" + (f" ({table.rows_dropped:,} with missing values dropped)"
                                       if table.rows_dropped else "")
    if table.subsampled:
        kept += f", a seeded sample of the file's {table.rows_in_file:,}"
    say(f"data: {args.data}: {kept}; predicting {table.target!r} from {', '.join(map(repr, table.features))}")
    if table.renamed:
        say("variables: " + ", ".join(f"{n} = {c!r}" for c, n in table.renamed.items()))
    result = fit_table(table, estimator, args.test_fraction, args.seed, progress=not args.quiet)
    say(f"fitted on {result['data']['train_rows']:,} rows, held out {result['data']['test_rows']:,} "
        f"(seed {args.seed}); {result['search']['model_evaluations']:,} model evaluations, "
        f"{result['search']['seconds']:.1f} s\n")
    test = "test_mse" in result["model"]
    rows = [[">>>" if e["selected"] else "", e["complexity"], e["loss"], e["score"]]
            + ([e["test_mse"]] if test else []) + [e["equation"]] for e in result["front"]]
    say("Pareto front (complexity: nodes; loss: training MSE; score: -dlog(loss)/dcomplexity; >>> the chosen "
        f"model, by --model_selection {settings.get('model_selection', 'accuracy')})")
    say(text_table(rows, ["", "complexity", "loss", "score"] + (["test MSE"] if test else []) + ["equation"]))
    m = result["model"]
    print(f"\n{table.target} = {m['equation']}")
    say(f"sympy: {m['sympy']}\nLaTeX: {m['latex']}")
    line = f"size {m['size']}, train R2 {m['train_r2']:.6g}, train MSE {m['train_mse']:.6g}"
    if test:
        r2 = "-" if m["test_r2"] is None else f"{m['test_r2']:.6g}"
        line += f"; test R2 {r2}, test MSE {m['test_mse']:.6g}"
    print(line)
    if args.output:
        text = json.dumps(_finite(result), indent=1, allow_nan=False) + "\n"
        atomic_write_bytes(args.output, text.encode())
        say(f"wrote {args.output}")
    if args.traces:
        meta = dict(run_metadata(args), source="basic_sr", params=result["settings"], seed=args.seed,
                    num_records=1, data=result["data"])
        safe_io.save(args.traces, "traces", meta, [estimator.trace_], validate_traces)
        say(f"wrote {args.traces}")
    return 0


def _finite(o):
    """JSON has no inf/NaN: they are written as null."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


if __name__ == "__main__":
    sys.exit(run_main(main))
