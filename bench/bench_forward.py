#!/usr/bin/env python
"""The model forward sampling runs, before and after (issue 22): time per expression side by side.

The same batch (the first --problems held-out arith expressions, population 20, 10 generations, early stop off,
fitting 10: `bench_neural.py speed`'s workload) is run with each forward/dtype in turn, --rounds times,
alternating in one process so that a shared machine's load falls on every arm alike. Reported: the median
seconds per expression and the model's seconds per batch, and whether each arm's final populations are
identical to the first arm's (same seeds: they should be, up to floating point, for the same dtype).

    python bench/bench_forward.py --rounds 5 --json bench/results/compute/forward_cpu.json

--quality instead runs each arm on the held-out families (the first --problems of each, --seeds, 50
generations, fitting 10: `bench_neural.py compare`'s settings) and counts solved runs, with the runs solved by
one arm and not the first: whether a dtype changes results beyond sampling noise.

    python bench/bench_forward.py --quality --problems 50 --seeds 0 1 --json bench/results/compute/forward_quality.json
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nsr.config import EvolutionConfig, SamplingConfig  # noqa: E402
from nsr.datasets import HELDOUT_EXPRESSIONS, load_expressions  # noqa: E402
from nsr.drivers import file_jobs, run_batch  # noqa: E402
from nsr.estimators import DEFAULT_CHECKPOINT  # noqa: E402
from nsr.search import Searcher  # noqa: E402


def quality(args):
    from nsr.evaluation import evaluate, summarize

    from bench.bench_neural import COMPARE_SETS, load_set
    from nsr.datasets import EXPRESSIONS_DIR

    rows = []
    for set_name in ("arith", "full", "physics"):
        _, opset, consts, recs = load_set(os.path.join(EXPRESSIONS_DIR, COMPARE_SETS[set_name] + ".pkl.gz"),
                                          args.problems)
        recs = [dict(r, X=r["X"][:1000], y=r["y"][:1000]) for r in recs]
        evo = EvolutionConfig(population_size=20, num_generations=50, operator_set=opset, constants=consts,
                              constant_fitting=10)
        first = None
        for arm in args.arms:
            forward, dtype = arm.split(":")
            sampling = SamplingConfig(checkpoint=args.checkpoint, device=args.device, forward=forward, dtype=dtype)
            t0 = time.perf_counter()
            res = evaluate(Searcher(evo, sampling), recs, args.seeds, 32, num_workers=1)
            solved = {(r["index"], r["seed"]): bool(r["solved"]) for r in res}
            first = first or solved
            row = {"set": set_name, "arm": arm, "solved": sum(solved.values()), "runs": len(res),
                   "only_this": sum(v and not first[k] for k, v in solved.items()),
                   "only_first": sum(first[k] and not v for k, v in solved.items()),
                   "well_formed_pct": summarize(res)["well_formed_pct"], "wall_s": time.perf_counter() - t0}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n| set | arm | solved / runs | solved only by this arm | only by {args.arms[0]} | well-formed % |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['set']} | {r['arm']} | {r['solved']}/{r['runs']} | {r['only_this']} | {r['only_first']} | "
              f"{r['well_formed_pct']:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows, "torch_threads": torch.get_num_threads()}, f, indent=2)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    p.add_argument("--arms", nargs="+", default=["transformers:float32", "tree:float32", "tree:bfloat16"],
                   help="FORWARD:DTYPE pairs; the first is the reference the others' populations are compared to")
    p.add_argument("--problems", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--generations", type=int, default=10)
    p.add_argument("--constant_fitting", type=int, default=10)
    p.add_argument("--device", default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--quality", action="store_true", help="solve counts on the held-out families instead of time")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="--quality: seeds")
    args = p.parse_args(argv)
    if args.quality:
        return quality(args)

    recs = load_expressions(HELDOUT_EXPRESSIONS)["records"][:args.problems]
    evo = EvolutionConfig(population_size=20, num_generations=args.generations, early_stop=False,
                          constant_fitting=args.constant_fitting)
    arms = []
    for arm in args.arms:
        forward, dtype = arm.split(":")
        s = Searcher(evo, SamplingConfig(checkpoint=args.checkpoint, device=args.device, forward=forward, dtype=dtype))
        run_batch(s, file_jobs(recs[:2], 0), lambda *a: None)  # warm up: load, allocator, kernels
        arms.append({"arm": arm, "searcher": s, "per_expression": [], "model_s": [], "identical": []})
    for rnd in range(args.rounds):
        reference = None
        for a in arms:
            s = a["searcher"]
            s.neural.reset_stats()
            jobs = file_jobs(recs, rnd)
            t0 = time.perf_counter()
            # each problem's final population, as bytes: equal only if every sampled child was
            finals = run_batch(s, jobs, lambda _s, _j, prob, _t: prob.codes.tobytes() + prob.lengths.tobytes())
            wall = time.perf_counter() - t0
            a["per_expression"].append(wall / len(recs))
            a["model_s"].append(s.neural.stats["model_time"])
            if reference is None:
                reference = finals
            a["identical"].append(int(sum(x == y for x, y in zip(finals, reference))))
            print(json.dumps({"round": rnd, "arm": a["arm"], "s_per_expression": round(wall / len(recs), 4),
                              "model_s": round(s.neural.stats["model_time"], 3),
                              "identical_to_first": a["identical"][-1]}), flush=True)
    base = statistics.median(arms[0]["per_expression"])
    rows = []
    print(f"\n| arm | s / expression (median of {args.rounds}) | speed-up vs {arms[0]['arm']} | model s / batch | "
          f"results identical to {arms[0]['arm']} |")
    print("|---|---:|---:|---:|---:|")
    for a in arms:
        med = statistics.median(a["per_expression"])
        row = {"arm": a["arm"], "median_s_per_expression": med, "runs": a["per_expression"],
               "median_model_s": statistics.median(a["model_s"]), "speedup": base / med,
               "identical": a["identical"], "problems": len(recs)}
        rows.append(row)
        print(f"| {a['arm']} | {med:.4f} | {base / med:.2f}x | {row['median_model_s']:.2f} | "
              f"{sum(a['identical'])}/{len(recs) * args.rounds} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows, "torch_threads": torch.get_num_threads()}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
